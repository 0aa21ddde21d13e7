"""Each DDP rank's own dropout masks. Every process is seeded with the run's seed (its weights start equal), so
without this every rank draws the same masks, and stream j of every rank meets the same mask at every step: the
global batch's masks would not be independent per stream, as the paper's one process draws them."""

from __future__ import annotations

import hashlib

import lightning as L
import torch


def rank_window_seed(seed: int, rank: int, step: int, window: int) -> int:
    """The seed of a rank's masks in one training window (its optimizer step and its window in the epoch: windows
    that accumulate into one step differ in the second): distinct per (seed, rank, step, window), and a function of
    them alone, so a resumed run draws the masks the uninterrupted one drew."""
    digest = hashlib.sha256(f"{seed}/{rank}/{step}/{window}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch.manual_seed takes up to 2**63 - 1


class RankDropoutStreams(L.Callback):
    """Under DDP (world size > 1): before each training window, the global generators (CPU and CUDA, where the
    masks are drawn) reseeded with `rank_window_seed`. One process is left as it is."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.world_size > 1:
            torch.manual_seed(rank_window_seed(self.seed, trainer.global_rank, trainer.global_step, batch_idx))
