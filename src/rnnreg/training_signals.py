"""What the training step tells the callbacks (progress bar, words/s, divergence guard).

The plain step (task.py) and the fast step (fast.py) write one `TrainingSignals` in place; callbacks read
`pl_module.signals` and nothing else of the step. Values stay on the device: reading one is a host sync,
so callbacks read them only at log intervals.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from rnnreg.run_record import MAX_NLL


def diverged(loss: torch.Tensor | float) -> torch.Tensor | bool:
    """Whether a training loss (a tensor: elementwise, on its device, no sync) ends the training: not finite,
    or above MAX_NLL."""
    if isinstance(loss, torch.Tensor):
        return ~torch.isfinite(loss) | (loss > MAX_NLL)
    return not math.isfinite(loss) or loss > MAX_NLL


def divergence_message(where: str, last_checkpoint: Path | None, best_checkpoint: Path | None = None) -> str:
    """The line a diverged run (or stacked member) stops with: where its loss went, the fix, what it keeps (a run
    validating within its epoch may hold best.ckpt before any last.ckpt: a resume into a new folder copies it too)."""
    if last_checkpoint:
        kept = f"the last good checkpoint is {last_checkpoint}"
    elif best_checkpoint:
        kept = f"no epoch completed here; the best validation so far is {best_checkpoint}"
    else:
        kept = "no epoch completed, no checkpoint"
    return f"training loss became {where}: lower optim.lr or trainer.gradient_clip_val; {kept}"


class LossWatch:
    """The first non-finite or overflowing training loss, recorded on the device: no host sync per window
    (capturable in a CUDA graph), read at log intervals."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.windows = torch.zeros((), dtype=torch.long, device=device)
        self.bad_window = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor) -> None:
        self.windows.add_(1)
        bad = diverged(loss) & (self.bad_window < 0)
        self.bad_window.copy_(torch.where(bad, self.windows, self.bad_window))
        self.bad_loss.copy_(torch.where(bad, loss.float(), self.bad_loss))

    def first(self) -> tuple[int, float] | None:
        """(windows before the latest one, loss) of the first bad loss, or None. Syncs."""
        window = int(self.bad_window)
        return None if window < 0 else (int(self.windows) - window, float(self.bad_loss))


class TrainingSignals:
    """The latest window's loss and gradient norm and the divergence record, on the step's device."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.loss = torch.zeros((), device=device)  # mean NLL per token of the latest window
        self.grad_norm = torch.zeros((), device=device)  # its global gradient norm before clipping
        self.watch = LossWatch(device)

    def record(self, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> None:
        """In place (the fast step's CUDA graph writes these same tensors)."""
        self.loss.copy_(loss)
        if grad_norm is not None:
            self.grad_norm.copy_(grad_norm)
        self.watch.record(loss)

    def divergence(self, batch_idx: int) -> tuple[int, float] | None:
        """(step in this epoch, loss) of the first non-finite or overflowing training loss, or None. Syncs."""
        bad = self.watch.first()
        return None if bad is None else (batch_idx + 1 - bad[0], bad[1])
