"""The arithmetic of a run's timing, shared by a single run's callbacks (rnnreg.callbacks) and a stacked group's
progress (rnnreg.stacked_progress): words/s over the median window, the time a run has left, the first windows
timed for the run's plan, an evaluation pass's windows timed (and what its loop adds to each), and a clock that
waits for the device where it must."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch


def device_clock(device: torch.device) -> float:
    """time.perf_counter() once `device`'s queued work is done (a CUDA device: a host sync, so seldom called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def median_step_words_per_second(words_per_step: int, step_seconds: list[float], queued: bool = False) -> float | None:
    """Robust to bursts of machine noise: words per step over the median step time (0 without steps). None where
    the device queues its steps (`queued`, CUDA): a step's host time is then the time to queue it, not to run it."""
    if queued:
        return None
    steps = sorted(step_seconds)
    return words_per_step / steps[len(steps) // 2] if steps else 0.0


# Validation runs the forward pass only: per word, about a third of a training window's forward + backward.
VALIDATION_COST = 1 / 3


def estimate_run_seconds(
    seconds_per_window: float,
    windows_per_epoch: int,
    epochs: int,
    val_seconds: float = 0.0,
    val_every: int = 1,
    epoch: int = 0,
    windows_done: int = 0,
) -> tuple[float, float]:
    """(training, validation) seconds left of a run of `epochs` x `windows_per_epoch` windows at
    `seconds_per_window`, with a validation pass of `val_seconds` after every `val_every`-th epoch, when
    `windows_done` windows of epoch `epoch` (counted from 0) are done; from the start by default."""
    windows_left = max(0, (epochs - epoch) * windows_per_epoch - windows_done)
    validations_left = sum(1 for e in range(epoch + 1, epochs + 1) if e % max(1, val_every) == 0)
    return windows_left * seconds_per_window, validations_left * val_seconds


def seconds_per_eval_window(
    evaluate: Callable[[list], object], windows: Sequence, clock: Callable[[], float], measure: int = 2
) -> float:
    """Seconds one window of an evaluation pass takes: `evaluate(batches)` (a pass over them from zeros) timed
    over `measure` of `windows` after one untimed (the first call at a shape allocates); over all where fewer."""
    batches = [windows[i] for i in range(min(len(windows), 1 + measure))]
    if len(batches) > 1:
        evaluate(batches[:1])
        batches = batches[1:]
    start = clock()
    evaluate(batches)
    return (clock() - start) / len(batches)


def eval_loop_seconds(window_seconds: float, forward_seconds: float) -> float:
    """What an evaluation loop adds to each window beyond the network's forward (Lightning's hooks, logging and
    data loading, the metric's update): `window_seconds` a window measured through the loop, less
    `forward_seconds`, the same windows' forward timed bare; never below 0."""
    return max(0.0, window_seconds - forward_seconds)


def timed_test_protocols(
    datamodule, limit_test_batches, evaluate: Callable[[list], object], clock, on_device=None
) -> list[tuple[int, float]]:
    """The final test's protocols (datamodule.test_batch_size streams, the paper's one, then
    datamodule.batch_size): each one's windows (`limit_test_batches` applied) and the seconds one window's forward
    takes at its streams, timed on a few validation windows there (the test's own windows stay unread until the
    test). `evaluate(batches)`: a pass's forward over them from zeros; `on_device`: moves a split's streams where
    `evaluate` wants them (None: as they are)."""
    from rnnreg.data import BPTTWindows, limit_batches

    protocols = []
    for streams in (datamodule.test_batch_size, datamodule.batch_size):
        test = BPTTWindows(datamodule.streams("test", streams), datamodule.eval_bptt, False)
        valid = datamodule.streams("valid", streams)
        valid = BPTTWindows(valid if on_device is None else on_device(valid), datamodule.eval_bptt, False)
        protocols.append(
            (limit_batches(len(test), limit_test_batches), seconds_per_eval_window(evaluate, valid, clock))
        )
    return protocols


def testing_seconds(protocols: Sequence[tuple[int, float]], loop_seconds: float = 0.0) -> float:
    """The final test's seconds: each protocol's windows (timed_test_protocols) at its forward's seconds a window
    plus `loop_seconds`, what the evaluation loop adds to every window (eval_loop_seconds)."""
    return sum(windows * (forward + loop_seconds) for windows, forward in protocols)


def estimated_test_seconds(
    datamodule, limit_test_batches, evaluate: Callable[[list], object], clock, on_device=None
) -> float:
    """The final test's seconds at what `evaluate` takes a window (timed_test_protocols), nothing added: for a test
    whose loop is `evaluate` itself (a stacked group's)."""
    return testing_seconds(timed_test_protocols(datamodule, limit_test_batches, evaluate, clock, on_device))


class FirstWindows:
    """Times a run's first `measure` windows after `warmup` (graph capture, first calls), once; an epoch that
    ends sooner is timed whole, from `begin`, warm-up included. `clock` waits for the device where it must.
    Shared by a run's plan (rnnreg.callbacks.RunPlan) and a stacked group's (rnnreg.stacked_progress)."""

    def __init__(self, warmup: int, measure: int, clock: Callable[[], float]) -> None:
        self.warmup, self.measure, self.clock = warmup, measure, clock
        self.windows = 0  # trained since `begin`
        self.start, self.start_windows = 0.0, 0
        self.done = False

    def begin(self) -> None:
        self.start, self.start_windows = self.clock(), 0

    def window_done(self, last: bool) -> float | None:
        """After a window (`last`: its epoch's last): the seconds per window when the timing ends, else None."""
        if self.done:
            return None
        self.windows += 1
        if self.windows == self.warmup and not last:
            self.start, self.start_windows = self.clock(), self.windows
        elif self.windows >= self.warmup + self.measure or last:
            self.done = True
            return (self.clock() - self.start) / self.timed
        return None

    @property
    def timed(self) -> int:
        return self.windows - self.start_windows

    @property
    def after_warmup(self) -> str:
        return " after warm-up" if self.start_windows else ", warm-up included"
