"""Callbacks: words/s and epoch timing, the run's plan and time estimate, progress bar, and never losing a
run (NaN guard, interrupts)."""

from __future__ import annotations

import math
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from rnnreg.console import counted, device_name, format_duration
from rnnreg.cpu_threads import threads_said
from rnnreg.errors import TrainingDiverged
from rnnreg.run_record import MAX_NLL, best_checkpoint_path, last_checkpoint_path
from rnnreg.schema import SITES
from rnnreg.timing import (
    VALIDATION_COST,
    FirstWindows,
    device_clock,
    estimate_run_seconds,
    eval_loop_seconds,
    median_step_words_per_second,
    testing_seconds,
    timed_test_protocols,
)
from rnnreg.training_signals import divergence_message


class SpeedMonitor(L.Callback):
    """Training words/s and seconds per epoch, timed over the training windows only (no validation).

    Reads only host clocks per step; on a GPU it waits for the device once, at the epoch's last window,
    so the epoch time includes all queued work. The totals feed `metrics.json`.
    """

    def __init__(self, warmup_windows: int = 3) -> None:
        self.train_seconds = 0.0  # the ended epochs' (state_dict adds the epoch under way)
        self.train_words = 0
        self.epoch_open = False  # an epoch's windows trained and not yet added to the totals
        self.epoch_start = self.last_batch_end = time.perf_counter()
        self.epoch_words = 0
        # the run's time in fit (metrics.json's train_seconds): this fit's from its start (None outside a fit: a
        # stacked member's state, built), a resumed run's earlier parts' (a member's) from its checkpoint
        self.fit_start: float | None = None
        self.fit_seconds_before = 0.0
        # the epoch under way's words and seconds before a resume inside it: its words/s and time count them
        self.words_before, self.seconds_before = 0, 0.0
        self.step_seconds: list[float] = []  # batch end to batch end: the whole loop, hooks included
        self.steps_queued = False  # on CUDA: a step's host time is the time to queue it (no median step)
        self.words_per_step = 0
        # seconds per window for the run's ETA: the windows of this epoch after its first `warmup_windows`
        # (graph capture, allocator warm-up), else the last whole epoch's
        self.warmup_windows = warmup_windows
        self.epoch_windows = 0
        self.warm_start: float | None = None
        self.last_epoch_seconds_per_window: float | None = None
        self.val_start = 0.0
        self.val_seconds: float | None = None  # the latest validation pass (sanity check excluded)
        self.val_windows = 0  # that pass's windows
        self.pass_windows = 0  # the validation pass under way's
        # the sanity check's window ends (the device waited for), and the seconds a window past its first took
        self.sanity_ends: list[float] = []
        self.sanity_seconds_per_window: float | None = None
        self.sanity_pass_seconds: float | None = None  # a validation pass's windows at that time a window

    @property
    def seconds_per_window(self) -> float | None:
        """Measured seconds per training window (None before any measurement)."""
        warm = self.epoch_windows - self.warmup_windows
        if self.warm_start is not None and warm >= 2:
            return (self.last_batch_end - self.warm_start) / warm
        return self.last_epoch_seconds_per_window

    @property
    def eval_window_seconds(self) -> float | None:
        """Seconds a validation window takes through Lightning's evaluation loop (the test's loop too): the latest
        validation pass's, else the sanity check's past its first window (first calls); None before either."""
        if self.val_seconds is not None and self.val_windows:
            return self.val_seconds / self.val_windows
        return self.sanity_seconds_per_window

    @property
    def words_per_second(self) -> float:
        return self.train_words / self.train_seconds if self.train_seconds else 0.0

    @property
    def epoch_seconds(self) -> float:
        """The epoch's training time so far (a resumed epoch's before its stop included)."""
        return self.seconds_before + self.last_batch_end - self.epoch_start

    @property
    def epoch_words_per_second(self) -> float:
        elapsed = self.epoch_seconds
        return (self.words_before + self.epoch_words) / elapsed if elapsed > 0 else 0.0

    @property
    def median_words_per_second(self) -> float | None:
        return median_step_words_per_second(self.words_per_step, self.step_seconds, self.steps_queued)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:  # a mid-epoch resume has no epoch start
        self.steps_queued = pl_module.device.type == "cuda"
        self.epoch_start = self.last_batch_end = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_words = 0
        self.words_before, self.seconds_before = 0, 0.0
        self.epoch_windows = 0
        self.warm_start = None
        self.step_seconds = []
        self.epoch_start = self.last_batch_end = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.words_per_step = batch[1].numel() * trainer.world_size
        self.epoch_words += self.words_per_step
        if batch_idx + 1 >= trainer.num_training_batches and self.steps_queued:
            torch.cuda.synchronize(pl_module.device)  # the epoch's queued GPU work counts in its time
        now = time.perf_counter()
        self.step_seconds.append(now - self.last_batch_end)
        self.last_batch_end = now
        self.epoch_windows += 1
        self.epoch_open = True
        if self.epoch_windows == self.warmup_windows:
            self.warm_start = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_seconds += self.last_batch_end - self.epoch_start
        self.train_words += self.epoch_words
        self.epoch_open = False
        if self.epoch_windows:
            self.last_epoch_seconds_per_window = (self.last_batch_end - self.epoch_start) / self.epoch_windows
        pl_module.log_dict(
            {
                "train/words_per_sec": self.epoch_words_per_second,
                "train/epoch_seconds": self.epoch_seconds,
                "train/grad_norm": pl_module.signals.grad_norm.float(),
            },
            rank_zero_only=True,
        )

    def on_validation_start(self, trainer, pl_module) -> None:
        self.val_start = time.perf_counter()
        self.pass_windows, self.sanity_ends = 0, []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:  # a few windows: a host sync each on CUDA
            self.sanity_ends.append(device_clock(pl_module.device))
        else:
            self.pass_windows += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_seconds, self.val_windows = time.perf_counter() - self.val_start, self.pass_windows
        elif len(self.sanity_ends) > 1:
            ends = self.sanity_ends
            self.sanity_seconds_per_window = (ends[-1] - ends[0]) / (len(ends) - 1)
            windows = validation_windows(trainer)  # (counted once: the ETA asks every few windows)
            self.sanity_pass_seconds = windows * self.sanity_seconds_per_window if windows else None

    def state_dict(self) -> dict:
        """The totals so far, the epoch under way included: a checkpoint saved inside an epoch (a stop) or as its
        validation ends goes on from its words and seconds, not from the last epoch's end; and the run's time in fit
        so far, which a resumed run's train_seconds goes on from."""
        fit = {"fit_seconds": self.fit_seconds_before}
        if self.fit_start is not None:
            fit["fit_seconds"] += time.perf_counter() - self.fit_start
        if not self.epoch_open:
            return {"train_seconds": self.train_seconds, "train_words": self.train_words} | fit
        seconds = self.train_seconds + self.last_batch_end - self.epoch_start
        return {
            "train_seconds": seconds,
            "train_words": self.train_words + self.epoch_words,
            "epoch_seconds": self.epoch_seconds,  # (in the totals above too)
            "epoch_words": self.words_before + self.epoch_words,
        } | fit

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_seconds, self.train_words = state_dict["train_seconds"], state_dict["train_words"]
        # (none in a checkpoint from before it was kept: its training windows' time)
        self.fit_seconds_before = state_dict.get("fit_seconds", self.train_seconds)
        self.words_before = state_dict.get("epoch_words", 0)  # (none in a checkpoint from an epoch's end)
        self.seconds_before = state_dict.get("epoch_seconds", 0.0)


class LMProgressBar(RichProgressBar):
    """Rich progress bar with the running training loss, perplexity, words/s and the whole run's ETA
    (training and validation of every remaining epoch, from SpeedMonitor's measured times).

    Lightning asks for the metrics after every window; the loss is read every `refresh_rate` windows on a
    CPU, and on a GPU (where a read is a host sync that drains the queued windows) every
    `log_every_n_steps` windows, as the logger reads it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_text: dict[str, str] = {}
        self.loss_step = -1  # trainer.global_step when loss_text was read

    def _get_train_description(self, current_epoch: int) -> str:
        """The bar's title, "Epoch 1/39" in the first of 39: counted from 1, as train.log and metrics.json count
        (Lightning's own bar says "Epoch 0/38")."""
        text = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            text += f"/{self.trainer.max_epochs}"
        return f"{text:{len(self.validation_description)}}"  # as wide as "Validation": no flicker

    def read_interval(self, trainer) -> int:
        if trainer.strategy.root_device.type != "cpu":
            return max(1, trainer.log_every_n_steps)
        return max(1, min(self.refresh_rate or trainer.log_every_n_steps, trainer.log_every_n_steps))

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if trainer.training:
            if not self.loss_text or trainer.global_step - self.loss_step >= self.read_interval(trainer):
                loss = float(pl_module.signals.loss)
                self.loss_text = {"loss": f"{loss:.3f}", "ppl": f"{min(math.exp(min(loss, MAX_NLL)), 1e9):.1f}"}
                self.loss_step = trainer.global_step
                speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None)
                if speed is not None:
                    self.loss_text["wps"] = f"{speed.epoch_words_per_second:,.0f}"
                    left = run_seconds_left(trainer, speed)
                    if left is not None:
                        self.loss_text["run ETA"] = format_duration(left)
            metrics.update(self.loss_text)
        return metrics


def planned_epochs(trainer) -> int | None:
    """The epochs this fit will run: max_epochs, or fewer when max_steps ends it first (None: unbounded)."""
    windows = trainer.num_training_batches
    epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
    if trainer.max_steps is not None and trainer.max_steps > 0 and windows and math.isfinite(windows):
        by_steps = math.ceil(trainer.max_steps / windows)
        epochs = by_steps if epochs is None else min(epochs, by_steps)
    return epochs


def validation_words(trainer) -> int | None:
    """Words in one validation pass (limit_val_batches applied), for an LMDataModule; else None."""
    data = trainer.datamodule
    if data is None or not hasattr(data, "load") or trainer.limit_val_batches == 0:
        return None
    words = data.load().ids["valid"].numel() - 1
    limit = trainer.limit_val_batches
    if isinstance(limit, int):
        return min(words, limit * data.eval_bptt * data.batch_size)
    return int(words * limit)


def validation_windows(trainer) -> int | None:
    """Windows in one validation pass (limit_val_batches applied), for an LMDataModule; else None."""
    from rnnreg.data import BPTTWindows, limit_batches

    data = trainer.datamodule
    if data is None or not hasattr(data, "streams") or trainer.limit_val_batches == 0:
        return None
    windows = BPTTWindows(data.streams("valid", data.batch_size), data.eval_bptt, False)
    return limit_batches(len(windows), trainer.limit_val_batches)


def validation_seconds(trainer, speed: SpeedMonitor, seconds_per_window: float) -> float:
    """The measured latest validation pass; before one, its windows at what the sanity check's took (the same
    loop: its cost a window counts, which a small model's forward is far below); else an estimate from the
    training speed per word."""
    if speed.val_seconds is not None:
        return speed.val_seconds
    if speed.sanity_pass_seconds is not None:
        return speed.sanity_pass_seconds
    words = validation_words(trainer)
    if not words or not speed.words_per_step:
        return 0.0
    return words * seconds_per_window / (speed.words_per_step / trainer.world_size) * VALIDATION_COST


def run_seconds_left(trainer, speed: SpeedMonitor) -> float | None:
    """The whole run's remaining seconds (training and validation, and the final test once the run plan has
    measured it), or None before any measurement."""
    per_window, epochs, windows = speed.seconds_per_window, planned_epochs(trainer), trainer.num_training_batches
    if per_window is None or epochs is None or not windows or not math.isfinite(windows):
        return None
    train, val = estimate_run_seconds(
        per_window,
        windows,
        epochs,
        validation_seconds(trainer, speed, per_window),
        trainer.check_val_every_n_epoch or 1,
        trainer.current_epoch,
        speed.epoch_windows,
    )
    plan = next((c for c in trainer.callbacks if isinstance(c, RunPlan)), None)
    test = plan.test_estimate(speed) if plan is not None else None
    return train + val + (test or 0.0)


def final_test_protocols(trainer, pl_module) -> list[tuple[int, float]] | None:
    """The final test's protocols, each one's windows and its forward's seconds a window
    (rnnreg.timing.timed_test_protocols), run through the task's own evaluation step; None for a datamodule that
    is not an LMDataModule. A host sync on CUDA."""
    from rnnreg.data import LMDataModule

    data, net, device = trainer.datamodule, pl_module.net, pl_module.device
    if not isinstance(data, LMDataModule):
        return None

    @torch.no_grad()
    def evaluate(batches) -> None:
        training, state = net.training, None
        net.eval()
        with trainer.precision_plugin.forward_context():
            for x, y in batches:
                _, state = pl_module.window_nll((x.to(device), y.to(device)), state)
        net.train(training)

    return timed_test_protocols(data, trainer.limit_test_batches, evaluate, lambda: device_clock(device))


class RunPlan(L.Callback):
    """Says up front what will run and for how long: when training starts, the experiment, model, device and
    number of windows; after the first `measure_windows` windows past `warmup_windows` (graph capture and
    warm-up), the measured seconds per window and the whole run's estimated time (with `tested`, the final
    test's too: its forward timed on a few validation windows, plus what Lightning's evaluation loop adds to a
    window, measured on the validation windows already run). On a CPU, when that is over `cpu_hint_minutes`, a
    hint to the CPU-sized experiments. Logged once, on rank 0 (train.log too)."""

    def __init__(
        self, experiment: str, *, warmup_windows: int, measure_windows: int, cpu_hint_minutes: float, tested: bool
    ) -> None:
        # (no defaults: conf/callbacks/default.yaml holds them)
        self.experiment = experiment
        self.warmup_windows, self.measure_windows = warmup_windows, measure_windows
        self.cpu_hint_minutes = cpu_hint_minutes
        self.tested = tested
        self.test_seconds: float | None = None  # the final test's, estimated with the plan
        self.test_protocols: list[tuple[int, float]] | None = None  # its windows and forward seconds a window
        self.timer: FirstWindows | None = None
        self.done = False
        self.message = ""  # the estimate block, once logged

    def on_train_start(self, trainer, pl_module) -> None:
        if self.done or trainer.fast_dev_run:
            self.done = True
            return
        rank_zero_info(
            f"rnnreg: training {self.describe(trainer, pl_module)} on {device_name(pl_module.device)}: "
            f"{self.plan(trainer, planned_epochs(trainer))}; estimating the run's time from the first windows ..."
        )
        self.timer = FirstWindows(self.warmup_windows, self.measure_windows, lambda: device_clock(pl_module.device))
        self.timer.begin()

    def describe(self, trainer, pl_module) -> str:
        model = pl_module.hparams.get("model") or {}
        dropout = pl_module.hparams.get("dropout") or {}
        size = f"LSTM {model.get('num_layers', '?')} x {model.get('hidden_size', '?')}"
        # a run's shape as the stacked launcher names a group's: without it a layer-norm run's log reads as a plain one
        size += " with layer norm" if model.get("layer_norm") else ""
        size += ", tied embedding" if model.get("tie_weights") else ""
        sites = [k for k in SITES if dropout.get(k)]
        if model.get("num_layers") == 1:  # no layer above another: nothing between them is dropped
            sites = [k for k in sites if k != "between"]
        # each site's own rate (dropout.p is only what the placement's sites default to)
        rates = {dropout[k] for k in sites}
        if len(rates) == 1:
            drop = f"dropout {rates.pop()} on {'/'.join(sites)}"
        else:
            drop = ("dropout " + ", ".join(f"{k} {dropout[k]}" for k in sites)) if sites else "no dropout"
        drop += " (variational)" if sites and dropout.get("variational") else ""
        name = f"{self.experiment} " if self.experiment else ""
        return f"{name}({size}, {pl_module.num_params:,} parameters, {drop})"

    @staticmethod
    def plan(trainer, epochs: int | None) -> str:
        windows = trainer.num_training_batches
        shown = f"{windows:,}" if math.isfinite(windows) else "all"
        return f"{'? epochs' if epochs is None else counted(epochs, 'epoch')} x {shown} windows per epoch"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.done:
            return
        seconds_per_window = self.timer.window_done(last=batch_idx + 1 >= trainer.num_training_batches)
        if seconds_per_window is not None:
            self.report(trainer, pl_module, seconds_per_window, batch_idx)

    def report(self, trainer, pl_module, seconds_per_window: float, batch_idx: int = -1) -> None:
        self.done = True
        speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None) or SpeedMonitor()
        if not speed.words_per_step:
            speed.words_per_step = self.words_per_window(trainer)
        epochs = planned_epochs(trainer)
        windows = trainer.num_training_batches
        if epochs is None or not math.isfinite(windows):
            return
        val = validation_seconds(trainer, speed, seconds_per_window) if trainer.limit_val_batches else 0.0
        # a fresh run: the whole run from its start; resumed from a checkpoint: what is left of it
        fresh = trainer.current_epoch == 0 and batch_idx + 1 == self.timer.windows
        epoch, done = (0, 0) if fresh else (trainer.current_epoch, batch_idx + 1)
        checks = validations_per_epoch(trainer)
        train, val = estimate_run_seconds(
            seconds_per_window, windows, epochs, val * checks, trainer.check_val_every_n_epoch or 1, epoch, done
        )
        self.test_protocols = final_test_protocols(trainer, pl_module) if self.tested else None
        test = self.test_seconds = self.test_estimate(speed)
        parts = f"training {format_duration(train)} + validation {format_duration(val)}"
        if test is not None:
            parts += f" + test {format_duration(test)}"
        elif self.tested:
            parts += "; the final test comes on top"
        device = device_name(pl_module.device)
        lines = [
            f"rnnreg: {self.describe(trainer, pl_module)}",
            f"  device: {device}",
            *([f"  threads: {threads_said(trainer.world_size)}"] if pl_module.device.type == "cpu" else []),
            f"  plan: {self.plan(trainer, epochs)}, {validation_beat(trainer, checks)}",
            f"  measured: {seconds_per_window:.3g} s per window "
            f"(over {self.timer.timed} windows{self.timer.after_warmup})",
            f"  estimated {'total' if fresh else 'time left'}: {format_duration(train + val + (test or 0.0))} "
            f"({parts})",
        ]
        if pl_module.device.type == "cpu" and train + val + (test or 0.0) > self.cpu_hint_minutes * 60:
            lines.append(f"  hint: {cpu_hint(self.experiment)}")
        self.message = "\n".join(lines)
        rank_zero_info(self.message)

    def test_estimate(self, speed: SpeedMonitor) -> float | None:
        """The final test's seconds: its protocols' windows at their forward's seconds a window plus what the
        evaluation loop adds to one, from the validation windows' latest timing (SpeedMonitor.eval_window_seconds)
        less their forward's (the last protocol's: the validation's streams and window); nothing added before any
        is timed. None without a test, or before the plan has timed it."""
        if self.test_protocols is None:
            return None
        window = speed.eval_window_seconds
        loop = 0.0 if window is None else eval_loop_seconds(window, self.test_protocols[-1][1])
        return testing_seconds(self.test_protocols, loop)

    @staticmethod
    def words_per_window(trainer) -> int:
        data = trainer.datamodule
        return getattr(data, "batch_size", 0) * getattr(data, "bptt", 0)


def cpu_hint(experiment: str) -> str:
    """The plan's hint for a long CPU run: the CPU-sized recipes shorter than the one running. experiment=smoke,
    the shortest, is long only on cores other processes share or with overrides that lengthen it."""
    if experiment == "smoke":
        return (
            "this is long for a CPU: experiment=smoke as it is takes under a minute on 2 free cores; other processes "
            "on this CPU or overrides that lengthen the run make it slower"
        )
    shorter = "rnnreg-train experiment=smoke (under a minute)"
    if experiment != "paper_small":
        shorter += " or experiment=paper_small (the paper's small model)"
    return f"this is long for a CPU: try {shorter}, or run on a GPU"


def validations_per_epoch(trainer) -> int:
    """The validations an epoch that validates makes: more than one with +trainer.val_check_interval below the epoch
    (Lightning validates after every val_check_batch-th window, and not again at the epoch's end)."""
    beat, windows = trainer.val_check_batch, trainer.num_training_batches
    if not (math.isfinite(beat) and math.isfinite(windows)) or beat < 1:
        return 1
    return max(1, int(windows // beat))


def validation_beat(trainer, per_epoch: int) -> str:
    """validation every epoch; validation every 5 windows (2 an epoch) every 2 epochs."""
    epochs = every(trainer.check_val_every_n_epoch or 1)
    if per_epoch == 1:
        return f"validation every {epochs}"
    beat = f"validation every {counted(int(trainer.val_check_batch), 'window')} ({per_epoch} an epoch)"
    return beat if epochs == "epoch" else f"{beat} every {epochs}"


def every(epochs: int) -> str:
    """every epoch, every 2 epochs."""
    return "epoch" if epochs == 1 else f"{epochs} epochs"


class NonFiniteLossGuard(L.Callback):
    """Stop at the first non-finite (or overflowing) training loss, naming the epoch and step. The failing
    epoch is never checkpointed, so checkpoints/last.ckpt stays the last good state.

    Both steps record the first bad window on the device (no host sync per window, rnnreg.training_signals);
    the record is read every `trainer.log_every_n_steps` windows and at the epoch's end, and under DDP the
    ranks agree before stopping (all stop together: none is left waiting in a collective)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not (trainer.global_step % trainer.log_every_n_steps == 0 or batch_idx + 1 >= trainer.num_training_batches):
            return
        bad = pl_module.signals.divergence(batch_idx)
        if not trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            return
        where = "on another DDP process"
        if bad is not None:
            step, loss = bad
            where = (
                f"{loss} at epoch {trainer.current_epoch + 1}, step {step} "
                f"(global step {trainer.global_step - (batch_idx + 1 - step)})"
            )
        last, best = last_checkpoint_path(trainer.default_root_dir), best_checkpoint_path(trainer.default_root_dir)
        raise TrainingDiverged(divergence_message(where, *(path if path.exists() else None for path in (last, best))))
