"""Callbacks: words/s and epoch timing, progress bar, and never losing a run (NaN guard, interrupts)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SpeedMonitor(L.Callback):
    """Training words/s and seconds per epoch, timed over the training windows only (no validation).

    Reads only host clocks per step (no device sync); the totals feed `metrics.json`.
    """

    def __init__(self) -> None:
        self.train_seconds = 0.0
        self.train_words = 0
        self.epoch_start = self.last_batch_end = time.perf_counter()
        self.epoch_words = 0
        self.step_seconds: list[float] = []  # batch end to batch end: the whole loop, hooks included
        self.words_per_step = 0

    @property
    def words_per_second(self) -> float:
        return self.train_words / self.train_seconds if self.train_seconds else 0.0

    @property
    def epoch_words_per_second(self) -> float:
        elapsed = self.last_batch_end - self.epoch_start
        return self.epoch_words / elapsed if elapsed > 0 else 0.0

    @property
    def median_words_per_second(self) -> float:
        """Robust to bursts of machine noise: words per step over the median step time."""
        steps = sorted(self.step_seconds)
        return self.words_per_step / steps[len(steps) // 2] if steps else 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_words = 0
        self.step_seconds = []
        self.epoch_start = self.last_batch_end = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.words_per_step = batch[1].numel() * trainer.world_size
        self.epoch_words += self.words_per_step
        now = time.perf_counter()
        self.step_seconds.append(now - self.last_batch_end)
        self.last_batch_end = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_seconds += self.last_batch_end - self.epoch_start
        self.train_words += self.epoch_words
        pl_module.log_dict({"train/words_per_sec": self.epoch_words_per_second,
                            "train/epoch_seconds": self.last_batch_end - self.epoch_start,
                            "train/grad_norm": pl_module.grad_norm.float()}, rank_zero_only=True)

    def state_dict(self) -> dict:
        return {"train_seconds": self.train_seconds, "train_words": self.train_words}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_seconds, self.train_words = state_dict["train_seconds"], state_dict["train_words"]


class LMProgressBar(RichProgressBar):
    """Rich progress bar with the running training loss, perplexity and words/s."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if trainer.training:
            speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None)
            loss = float(pl_module.last_loss)
            metrics.update({"loss": f"{loss:.3f}", "ppl": f"{min(2.718281828 ** loss, 1e9):.1f}"})
            if speed is not None:
                metrics["wps"] = f"{speed.epoch_words_per_second:,.0f}"
        return metrics


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


# Above this mean NLL per word the perplexity exp(NLL) overflows float64: the run has diverged.
MAX_NLL = 700.0


class NonFiniteLossGuard(L.Callback):
    """Stop at the first non-finite (or overflowing) training loss, naming the epoch and step. The failing
    epoch is never checkpointed, so checkpoints/last.ckpt stays the last good state."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = pl_module.last_loss
        if not torch.isfinite(loss) or loss > MAX_NLL:
            raise TrainingDiverged(
                f"training loss became {loss.item()} at epoch {trainer.current_epoch + 1}, step {batch_idx + 1} "
                f"(global step {trainer.global_step}): lower optim.lr or optim.clip; {self.last_good(trainer)}")

    @staticmethod
    def last_good(trainer) -> str:
        path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        return f"the last good checkpoint is {path}" if path.exists() else "no epoch completed, no checkpoint"


class CheckpointOnInterrupt(L.Callback):
    """Ctrl-C or SIGTERM (pre-emption): save a resumable checkpoints/last.ckpt before exiting. Other
    exceptions (a diverged loss, a bug) leave the last good checkpoint alone. (Lightning's
    OnExceptionCheckpoint saves on every exception and makes fit resume from "last" implicitly.)"""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            trainer.save_checkpoint(self.path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: a crash mid-write never leaves a
    truncated .ckpt where a good one was."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)
