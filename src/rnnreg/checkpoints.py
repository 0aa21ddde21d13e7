"""Checkpoint callbacks: best.ckpt carried over a resume into a new folder, last.ckpt written once per
state (a hard link to best.ckpt when both hold it), and a resumable last.ckpt on Ctrl-C or SIGTERM; and
the trainer's checkpoint IO (atomic writes, data-only reads)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from weakref import proxy

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only

from rnnreg.io import link_atomically, load_checkpoint, replace_atomically, save_atomically
from rnnreg.run_record import LAST_CHECKPOINT
from rnnreg.runtime import log


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name and renamed (never a truncated .ckpt where a good one
    was, nothing left in $TMPDIR), and read as data only (rnnreg.io)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location if map_location is not None else "cpu")


def tests_best(test_ckpt: str, early_stopping: bool) -> bool:
    """Whether a run's final test takes its best validation weights rather than its final ones (the paper's
    choice): test_ckpt=best, or test_ckpt=auto with early stopping on."""
    return test_ckpt == "best" or (test_ckpt == "auto" and early_stopping)


class CheckpointOnInterrupt(L.Callback):
    """Ctrl-C or SIGTERM (pre-emption): save a resumable checkpoints/last.ckpt before exiting.

    From Lightning's sanity check on (the validation batches it runs before training) the first Ctrl-C is turned into
    Lightning's SIGTERM stop: training ends after the current window, or before the first one when it comes before
    training (rnnreg.preemption), and the checkpoint holds an exact position (weights, stream position, carried
    state, RNG; at global step 0 before any window); a second Ctrl-C interrupts at once. A resumed run stopped
    before its first window writes none: nothing was trained since the checkpoint it resumed from, which is where it
    goes on (rnnreg.training.record_failure names it); nor does a run stopped while Lightning sets the fit up (before
    on_fit_start: no optimiser yet, a resumed checkpoint not yet restored). Other exceptions (a diverged loss, a bug)
    leave the last good checkpoint alone. (Lightning's OnExceptionCheckpoint saves on every exception and makes fit
    resume from "last" implicitly.)

    The handler is installed once Lightning has taken note of the handlers it puts back as its fit ends (one of ours
    installed earlier would be put back after we restored the caller's)."""

    def __init__(self, dirpath: str, filename: str = Path(LAST_CHECKPOINT).stem) -> None:
        self.path = Path(dirpath) / f"{filename}{ModelCheckpoint.FILE_EXTENSION}"  # (as LastCheckpoint names it)
        self.ctrl_c = False  # the run was stopped by Ctrl-C (exit status 130 rather than 143)
        self.previous_handler = None
        self.set_up = False  # the fit is set up (on_fit_start): its optimiser made, a resumed checkpoint's weights in
        self.resumed = False  # this fit resumed a checkpoint (ckpt_path)
        self.started = False  # training has started (a stop comes after a window)
        self.trained = False  # a training window has started in this fit

    def on_fit_start(self, trainer, pl_module) -> None:
        self.set_up, self.resumed = True, trainer.ckpt_path is not None  # (its checkpoint is being restored)
        self.started = self.trained = False

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self.install()

    def on_train_start(self, trainer, pl_module) -> None:
        self.install()  # (a fit without a sanity check: a resumed one, trainer.num_sanity_val_steps=0)
        self.started = True  # (after rnnreg.preemption.StopBeforeTraining)

    def install(self) -> None:
        # (once: after a first Ctrl-C in the sanity check, a second one still aborts at once)
        if threading.current_thread() is threading.main_thread() and self.previous_handler is None and not self.ctrl_c:
            self.previous_handler = signal.signal(signal.SIGINT, self.first_ctrl_c)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.trained = True

    def first_ctrl_c(self, signum, frame) -> None:
        self.restore_handler()  # a second Ctrl-C raises KeyboardInterrupt at once
        self.ctrl_c = True
        if self.started:
            stopping = "stopping after this window and saving a resumable checkpoint"
        elif self.resumed:  # (nothing trained since its checkpoint: no new one)
            stopping = "stopping before training starts (it goes on from the checkpoint it resumed)"
        else:
            stopping = "stopping before training starts and saving a resumable checkpoint"
        rank_zero_info(f"\nCtrl-C: {stopping} (Ctrl-C again to abort at once)")
        os.kill(os.getpid(), signal.SIGTERM)  # the graceful stop every rank agrees on (rnnreg.preemption)

    def restore_handler(self) -> None:
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
            self.previous_handler = None

    def on_train_end(self, trainer, pl_module) -> None:
        self.restore_handler()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.restore_handler()  # (a fit with nothing to train has no on_train_end)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.restore_handler()
        # during fit only: a stop in the final test (whose weights may be best.ckpt's) must not replace last.ckpt
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and trainer.state.fn == TrainerFn.FITTING:
            if not self.set_up or (self.resumed and not self.trained):  # (a resumed run: its checkpoint's state)
                return
            trainer.save_checkpoint(self.path, weights_only=False)  # a full, resumable checkpoint


def stopped_by_ctrl_c(trainer: L.Trainer | None) -> bool:
    """Whether a Ctrl-C started the run's stop (CheckpointOnInterrupt turns it into the SIGTERM stop)."""
    return any(getattr(c, "ctrl_c", False) for c in (trainer.callbacks if trainer is not None else []))


class BestCheckpoint(ModelCheckpoint):
    """checkpoints/best.ckpt, kept across a resume into another folder. Lightning forgets the best score when
    the run folder changes ("dirpath has changed ... won't be reloaded"), so a resumed run would report
    another best and test another model than the uninterrupted run. Here the earlier run's best checkpoint
    file(s) are copied into this run's checkpoints/ and the score and paths restored pointing at the copies:
    best_val_ppl and test_ckpt=best are those of the uninterrupted run. When the earlier files are gone, it
    warns and starts a new best (as Lightning does)."""

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._resuming_trainer = trainer  # load_state_dict, called next, is not given the trainer

    def load_state_dict(self, state_dict: dict) -> None:
        trainer = getattr(self, "_resuming_trainer", None)
        old = state_dict.get("dirpath")
        if (
            trainer is None
            or old is None
            or self.dirpath is None
            or os.path.abspath(old) == os.path.abspath(self.dirpath)
        ):
            return super().load_state_dict(state_dict)

        def moved(path: str) -> str:
            return os.path.join(self.dirpath, os.path.basename(path)) if path else path

        sources = [p for p in state_dict.get("best_k_models", {}) if p] or [state_dict.get("best_model_path", "")]
        sources = [p for p in sources if p]
        # a checkpoint from elsewhere names these paths: only the files of their names beside it are copied (a run
        # folder copied elsewhere keeps its best.ckpt beside its last.ckpt), never a file elsewhere
        local = [beside_resumed(trainer, p) for p in sources]
        found = all(path is not None and os.path.isfile(path) for path in local)
        if trainer.is_global_zero and found:
            for source in local:
                replace_atomically(moved(source), lambda tmp, source=source: shutil.copyfile(source, tmp))
        found = trainer.strategy.broadcast(found)
        trainer.strategy.barrier("best_checkpoint_copied")
        if not found:  # (in the run's log, one line: a Python warning was two, and said a file was gone that is not)
            names = ", ".join(sorted({os.path.basename(p) for p in sources}))
            resumed = getattr(trainer, "ckpt_path", None)
            rank_zero_only(log.warning)(
                f"no {names} beside {resumed}, its run's best checkpoint (rnnreg-train keeps it beside last.ckpt): "
                f"test_ckpt=best will count only the epochs from here on (best_val_ppl counts them all); to keep it, "
                f"copy it beside {resumed} and resume again"
            )
            return
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = moved(state_dict["best_model_path"])
        self.best_k_models = {moved(p): v for p, v in state_dict.get("best_k_models", {}).items()}
        self.kth_best_model_path = moved(state_dict.get("kth_best_model_path", ""))
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.current_score = state_dict.get("current_score")


def beside_resumed(trainer, path) -> str | None:
    """The file of `path`'s name (read from a resumed checkpoint) in the resumed checkpoint's own folder, where
    rnnreg-train writes best.ckpt beside last.ckpt; None without one."""
    resumed = getattr(trainer, "ckpt_path", None)
    if not isinstance(path, str) or not resumed or not os.path.basename(path):
        return None
    return os.path.join(os.path.dirname(os.path.realpath(resumed)), os.path.basename(path))


class LastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt after every epoch, written once per state: when another checkpoint callback
    (best.ckpt) has just saved this same step, last.ckpt becomes a hard link to that file instead of a
    second copy of the model. It links only when every write goes to a new file that is renamed into
    place (AtomicCheckpointIO, the default), so that a later write of either name leaves the other's
    contents as they were; with another checkpoint IO, or where the filesystem has no hard links, it
    writes its own copy."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        saved = [
            path
            for c in trainer.checkpoint_callbacks
            if c is not self
            and getattr(c, "_last_global_step_saved", None) == trainer.global_step
            and (path := getattr(c, "_last_checkpoint_saved", ""))
        ]
        atomic = isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
        if not (saved and atomic and self.link(trainer, saved[0], filepath)):
            return super()._save_checkpoint(trainer, filepath)
        self._last_global_step_saved, self._last_checkpoint_saved = trainer.global_step, filepath
        if trainer.is_global_zero:  # as after a write (W&B's log_model uploads it)
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath")
        if old is None or self.dirpath is None or os.path.abspath(old) == os.path.abspath(self.dirpath):
            super().load_state_dict(state_dict)
        # resumed into another folder: nothing to keep (last.ckpt is written again at the next epoch's end)

    @staticmethod
    def link(trainer, source: str, filepath: str) -> bool:
        linked = link_atomically(source, filepath) if trainer.is_global_zero else True
        return trainer.strategy.broadcast(linked)
