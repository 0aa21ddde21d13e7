"""SIGTERM (pre-emption, Ctrl-C turned into it): one decision for every DDP rank, taken at window boundaries.

Lightning 2.x's own SIGTERM handler broadcasts to the other ranks from inside the handler, wherever each
rank happens to be, and its loops then stop on each rank's own flag. Under DDP the ranks then wait in
different collectives (a rank blocked in a gradient all-reduce never answers the broadcast; a rank that
stopped gathers the mid-epoch carry for its checkpoint while another still broadcasts): the run hangs. Here
the handler only notes the signal; at window (and evaluation batch) boundaries, every
trainer.log_every_n_steps of them under DDP, the ranks agree whether any of them has noted one, and all set
Lightning's flag together, so its loops stop every rank after the same window and the interrupt checkpoint's
collectives meet.
"""

from __future__ import annotations

import signal
import threading

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info


class Preemption(L.Callback):
    """SIGTERM at any point of a run stops it like inside Lightning's loops: metrics.json says so and the
    exit status is 143. Inside fit, validate and test it is only noted, and every rank stops after the first
    window (or evaluation batch) where the ranks agree (stop_together) that any rank has noted one (a resumable
    checkpoint); outside them (building, data loading, between fit and test) this raises at once."""

    def __init__(self) -> None:
        self.trainer: L.Trainer | None = None
        self.previous = None
        self.noted = False  # a SIGTERM inside Lightning's loops, not yet agreed on by every rank

    def __call__(self, signum, frame) -> None:
        if self.noted:
            return  # noted inside Lightning's loops: every rank stops at the next agreed boundary
        raise SIGTERMException()

    def note(self, signum, frame) -> None:
        """Lightning's SIGTERM notifier, replaced: no collective inside a signal handler, and no forwarding to
        the other ranks (a signal to rank 0 alone stops them too: they agree at the next boundary)."""
        self.noted = True

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def watch(self, trainer: L.Trainer) -> None:
        """Handle `trainer`'s SIGTERMs: its handler only notes them, and this callback agrees on them."""
        self.trainer = trainer
        # the handler Lightning registers at each fit/validate/test calls the connector's notifier: ours
        trainer._signal_connector._sigterm_notifier_fn = self.note
        trainer.callbacks.append(self)

    def agree(self, trainer: L.Trainer) -> bool:
        """Whether any rank has noted a SIGTERM (a collective: every rank calls it at the same point)."""
        return trainer.strategy.reduce_boolean_decision(self.noted, all=False)

    def stop_together(self, trainer: L.Trainer, batch_idx: int, last: bool = False) -> None:
        """Every rank sets Lightning's flag at the same boundary: its loops stop them all after this window. Under
        DDP the ranks agree every trainer.log_every_n_steps windows and at an epoch's last (a collective and a
        host sync: not every window); one process asks every window, for free."""
        due = trainer.world_size == 1 or last or (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0
        if due and not trainer.received_sigterm and self.agree(trainer):
            rank_zero_info("SIGTERM: every process stops after this step")
            trainer._signal_connector.received_sigterm = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.stop_together(trainer, batch_idx, last=batch_idx + 1 >= trainer.num_training_batches)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.stop_together(trainer, batch_idx)  # its last batch: training's next window, or check(), agrees

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.stop_together(trainer, batch_idx)  # after the last: check()

    def check(self) -> None:
        """A SIGTERM noted after the ranks last agreed (during the last window or test batch): all stop now."""
        if self.trainer is not None and (self.trainer.received_sigterm or self.agree(self.trainer)):
            raise SIGTERMException()
