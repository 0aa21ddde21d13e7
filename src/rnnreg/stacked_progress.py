"""What a stacked group says on the console while it trains (each job's train.log has the details): once the
first windows past warm-up are timed, the group's estimated time (the final test's measured on a few windows);
after every epoch, each member's validation perplexity, labelled by the overrides that tell it from the group's
other members, and the time left; before the final test, what it runs and about how long (on a CPU the paper's one
stream takes a while), and after it each member's test perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from rnnreg.console import counted, format_duration
from rnnreg.multirun_jobs import differing
from rnnreg.timing import VALIDATION_COST, FirstWindows, device_clock, estimate_run_seconds


def member_labels(
    overrides: Sequence[Sequence[str]], indices: Sequence[int], swept: Sequence[str] | None = None
) -> list[str]:
    """Each member's overrides of the keys its sweep varies (`swept`: `dropout=both seed=2`, as its W&B run is
    named), where the sweep is known; else those that not every member of the group shares; else its job number
    (`#3`). (By the group alone, a group of one was `#12`, and one a resume regrouped lost what its members share.)"""
    shared = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    labels = []
    for own, idx in zip(overrides, indices):
        told_apart = differing(list(own), list(swept)) if swept else []
        told_apart = told_apart or [o for o in own if o not in shared and not o.startswith("hydra")]
        labels.append(" ".join(told_apart) or f"#{idx}")
    return labels


class GroupProgress:
    """The console lines of one group's training (the stacked counterpart of rnnreg.callbacks.RunPlan and the
    progress bar); `warmup_windows`: windows before the timing starts (graph capture and first calls)."""

    def __init__(
        self,
        group: int,
        labels: list[str],
        epochs: int,
        windows_per_epoch: int,
        validation_windows: float,
        device: torch.device,
        warmup_windows: int | None,
        measure_windows: int | None,
        time_test: Callable[[], float] | None = None,
        val_every: int = 1,
    ):
        """`validation_windows`: one validation pass in training windows' worth of words (its windows' words
        over a training window's); `warmup_windows`, `measure_windows`: the estimate's timing (None: no estimate,
        as a run without callbacks.run_plan); `time_test`: measures the final test's seconds, with the estimate
        (None: no test follows, cfg.test false); `val_every`: the group validates after every `val_every`-th epoch
        (trainer.check_val_every_n_epoch)."""
        self.group, self.labels, self.epochs = group, labels, epochs
        self.windows_per_epoch, self.validation_windows = windows_per_epoch, validation_windows
        self.val_every = val_every
        self.val_seconds: float | None = None  # the latest validation pass's
        self.device = device
        self.time_test = time_test
        self.test_seconds: float | None = None  # measured with the estimate
        self.timer = None
        if warmup_windows is not None and measure_windows is not None:  # three syncs a run
            self.timer = FirstWindows(warmup_windows, measure_windows, lambda: device_clock(device))

    def started(self) -> None:
        if self.timer is not None:
            self.timer.begin()

    def window_done(self, epoch: int, window: int) -> None:
        """After a training window: `window` windows of 0-based `epoch` done."""
        if self.timer is None:
            return
        seconds_per_window = self.timer.window_done(last=window >= self.windows_per_epoch)
        if seconds_per_window is not None:
            self.estimate(seconds_per_window, epoch, window)

    def estimate(self, seconds_per_window: float, epoch: int, window: int) -> None:
        val_seconds = self.validation_windows * seconds_per_window * VALIDATION_COST
        fresh = epoch == 0 and window == self.timer.windows  # else resumed: what is left of the run
        epoch, window = (0, 0) if fresh else (epoch, window)
        train, val = estimate_run_seconds(
            seconds_per_window, self.windows_per_epoch, self.epochs, val_seconds, self.val_every, epoch, window
        )
        if self.time_test is not None:
            self.test_seconds = self.time_test()
        test = self.test_seconds or 0.0
        print(
            f"group {self.group}: {seconds_per_window:.3g} s per window (over {self.timer.timed} windows"
            f"{self.timer.after_warmup}): "
            f"estimated {'total' if fresh else 'time left'} {format_duration(train + val + test)} for "
            f"{self.what_is_left(epoch, window)} "
            f"(training {format_duration(train)} + validation {format_duration(val)}"
            f"{f' + test {format_duration(test)}' if self.time_test is not None else ''})",
            flush=True,
        )

    def what_is_left(self, epoch: int, window: int) -> str:
        """The windows the estimate counts, from `window` windows of 0-based `epoch` done."""
        plan = f"{counted(self.epochs, 'epoch')} x {self.windows_per_epoch:,} windows"
        if epoch == 0 and window == 0:
            return plan
        left = (self.epochs - epoch) * self.windows_per_epoch - window
        if window >= self.windows_per_epoch:  # timed to an epoch's last window: the next epoch is next
            epoch, window = epoch + 1, 0
        return f"the {left:,} windows left of {plan} (from window {window + 1:,} of epoch {epoch + 1})"

    def epoch_done(
        self,
        epoch: int,
        train_seconds: float,
        val_seconds: float,
        words_per_second: float,
        val_ppl: list[float] | None,
        statuses: list[str],
    ) -> None:
        """After 0-based `epoch` (and its validation: `val_ppl`, None on an epoch without one); `statuses`: each
        member's after it (running, stopped, failed)."""
        if val_ppl is not None:
            self.val_seconds = val_seconds
        # the epochs left and the validations among them, at the last pass's cost (before any: estimated)
        val_cost = self.val_seconds
        if val_cost is None:
            val_cost = train_seconds / self.windows_per_epoch * self.validation_windows * VALIDATION_COST
        train_left, val_left = estimate_run_seconds(train_seconds, 1, self.epochs, val_cost, self.val_every, epoch + 1)
        # the test as measured with the estimate (after the last epoch the test's own line says it)
        test = self.test_seconds or 0.0
        left = f"; about {format_duration(train_left + val_left + test)} left" if train_left + val_left > 0 else ""
        head = f"group {self.group}, epoch {epoch + 1}/{self.epochs} in {format_duration(train_seconds)} "
        head += f"({words_per_second:,.0f} words/s a member)"
        if val_ppl is None:
            failed = [f"{label} failed" for label, status in zip(self.labels, statuses) if status == "failed"]
            nxt = ((epoch + 1) // self.val_every + 1) * self.val_every  # the next validated epoch, from 1
            when = f"next after epoch {nxt}" if nxt <= self.epochs else "none left"
            print(
                f"{head}, no validation (every {counted(self.val_every, 'epoch')}: {when})"
                + (f": {' | '.join(failed)}" if failed else "")
                + left,
                flush=True,
            )
            return
        members = []
        for label, ppl, status in zip(self.labels, val_ppl, statuses):
            if status == "failed" or not math.isfinite(ppl):
                members.append(f"{label} {status}")
            else:
                members.append(f"{label} {ppl:.2f}" + (" (stopped early)" if status == "stopped" else ""))
        print(
            f"{head} + validation {format_duration(val_seconds)}: val ppl {' | '.join(members)}{left}",
            flush=True,
        )

    def test_started(self, statuses: list[str], streams: int) -> None:
        """Before the final test (a single run shows Lightning's test progress bar instead); `statuses`: each
        member's (a failed member is not tested), `streams`: the second protocol's (data.batch_size)."""
        tested = sum(status != "failed" for status in statuses)
        members = counted(tested, "member") if tested == len(statuses) else f"{tested} of {len(statuses)} members"
        # (measured with the estimate: None without one)
        about = f" (about {format_duration(self.test_seconds)})" if self.test_seconds is not None else ""
        print(
            f"group {self.group}: testing {members}: one stream (the paper's protocol), then {streams} streams{about}",
            flush=True,
        )

    def test_done(self, seconds: float, test_ppl: list[float], statuses: list[str]) -> None:
        """After the final test: each member's test perplexity in the paper's protocol (metrics.json's test_ppl)."""
        members = [
            f"{label} failed" if status == "failed" else f"{label} {ppl:.2f}"
            for label, ppl, status in zip(self.labels, test_ppl, statuses)
        ]
        print(f"group {self.group}, test in {format_duration(seconds)}: test ppl {' | '.join(members)}", flush=True)
