"""SIGTERM (pre-emption, Ctrl-C turned into it): one decision for every DDP rank, taken at window boundaries.

Lightning 2.x's own SIGTERM handler broadcasts to the other ranks from inside the handler, wherever each
rank happens to be, and its loops then stop on each rank's own flag. Under DDP the ranks then wait in
different collectives (a rank blocked in a gradient all-reduce never answers the broadcast; a rank that
stopped gathers the mid-epoch carry for its checkpoint while another still broadcasts): the run hangs. Here
the handler only notes the signal; at window (and evaluation batch) boundaries, every
trainer.log_every_n_steps of them under DDP, the ranks agree whether any of them has noted one, and all set
Lightning's flag together, so its loops stop every rank after the same window and the interrupt checkpoint's
collectives meet. A signal noted before training (in Lightning's sanity check, as the fit starts) stops every
rank before the first window: Lightning's sanity check stops only between its batches, and its training loop
only after a window.

Under SLURM, SIGUSR1 (its warning before the time limit: `#SBATCH --signal=SIGUSR1@90`) stops a run as SIGTERM
does. Lightning's own handler for it (SLURMEnvironment's auto-requeue) would write an hpc_ckpt_N.ckpt from inside
the signal handler (mid-step; under DDP a barrier there), finalize the loggers and run `scontrol requeue`, and a
later fit or test given ckpt_path=None would load that file: both are off; rnnreg resumes through ckpt_path= only.

In a submitit job (hydra/launcher=slurm, submitit_local), submitit's signal (SIGUSR2: before the time limit, and on
pre-emption) stops a run the same way. submitit's own handler, which would requeue the job or give up from inside
the signal handler, mid-window, is called only once the run has written its last.ckpt and metrics.json (naming the
job); the requeued job (the same submitit job id, in the folder its stopped run left) goes on from that last.ckpt
(requeued_checkpoint).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from rnnreg.checkpoints import stopped_by_ctrl_c
from rnnreg.run_record import last_checkpoint_path, recorded_metrics


class NoHpcResume(_CheckpointConnector):
    """Lightning's checkpoint connector without its SLURM auto-resume: a fit or test given ckpt_path=None never
    loads an hpc_ckpt_*.ckpt found in the run's folder."""

    @property
    def _hpc_resume_path(self) -> None:
        return None


def submitit_job() -> tuple[int, object, str] | None:
    """In a submitit job whose handler is on: its signal, that handler and the job's id (the same in a job that
    submitit requeued); else None. Asked before anything replaces the handler (Preemption.__enter__)."""
    if "submitit" not in sys.modules:  # a submitit job imported it before calling the task
        return None
    from submitit import JobEnvironment
    from submitit.core.job_environment import SignalHandler

    try:
        signum = JobEnvironment._usr_sig()
        handler = signal.getsignal(signum)
        if not isinstance(getattr(handler, "__self__", None), SignalHandler):
            return None
        return signum, handler, str(JobEnvironment().job_id)
    except Exception:  # not in a job after all (no submitit environment)
        return None


def requeued_checkpoint(folder: str | Path, job_id: str | None) -> str | None:
    """The run folder's own checkpoints/last.ckpt when this process is submitit job `job_id` (Preemption.submitit),
    requeued by submitit after its signal stopped the job's run in `folder` (metrics.json says interrupted, in
    this same job), else None."""
    last = last_checkpoint_path(folder)
    if job_id is None or not last.is_file():
        return None
    stopped = recorded_metrics(folder)
    same = stopped.get("status") == "interrupted"
    return str(last.resolve()) if same and stopped.get("submitit_job") == job_id else None


class Preemption(L.Callback):
    """SIGTERM (and SLURM's SIGUSR1, submitit's SIGUSR2) at any point of a run stops it like inside Lightning's
    loops: metrics.json says so and the exit status is 128 + the signal (143, 138, 140; submitit's requeue exits
    on its own). Inside fit, validate and test it is only noted, and every rank stops after the first window (or
    evaluation batch) where the ranks agree (stop_together) that any rank has noted one (a resumable checkpoint);
    outside them (building, data loading, between fit and test) this raises at once."""

    def __init__(self) -> None:
        self.trainer: L.Trainer | None = None
        self.previous: dict = {}
        self.noted = False  # a SIGTERM inside Lightning's loops, not yet agreed on by every rank
        self.signum: int | None = None  # the first stop signal (SIGTERM, SIGUSR1, SIGUSR2): exit status, words
        self.submitit: tuple[int, object, str] | None = None  # in a submitit job: its signal, handler and job id

    def __call__(self, signum, frame) -> None:
        if self.noted:
            return  # noted inside Lightning's loops: every rank stops at the next agreed boundary
        self.signum = self.signum or signum
        raise SIGTERMException()

    def note(self, signum, frame) -> None:
        """Lightning's SIGTERM notifier, replaced: no collective inside a signal handler, and no forwarding to
        the other ranks (a signal to rank 0 alone stops them too: they agree at the next boundary)."""
        self.signum = self.signum or signum
        self.noted = True

    def time_limit(self, signum, frame) -> None:
        """SLURM's SIGUSR1 or submitit's signal, handled by the SIGTERM handler in place: Lightning's inside its
        loops (which notes it), ours outside them (which raises)."""
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signum, frame)

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C's, put back as found: Lightning ignores it once a KeyboardInterrupt stopped a fit, and restores
            # what it found only if that came once its own handlers were in (so, the caller's for good before then)
            self.previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
            self.submitit = submitit_job()
            self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self)
            if SLURMEnvironment.detect():  # SLURM (Lightning's test): SIGUSR1 is its warning before the time limit
                self.previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self.time_limit)
            if self.submitit is not None:  # submitit's signal (SIGUSR2): its handler is called once the run stopped
                previous = signal.signal(self.submitit[0], self.time_limit)
                self.previous.setdefault(self.submitit[0], previous)  # SUBMITIT_PREEMPT_SIGNAL=USR1 under SLURM
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self.previous.items():
            if previous is not None:
                signal.signal(signum, previous)

    @property
    def submitit_job_id(self) -> str | None:
        return self.submitit[2] if self.submitit is not None else None

    def submitit_stop(self) -> str | None:
        """The submitit job's id when a stop signal stopped the run in a submitit job (metrics.json names it: if
        the job runs again, requeued by submitit after its signal or by SLURM after a pre-emption's SIGTERM, it
        goes on from there), else None."""
        return self.submitit_job_id if self.signum is not None else None

    def hand_to_submitit(self) -> None:
        """Once a run that submitit's signal stopped has written its checkpoint and metrics.json: submitit's own
        handler, outside any signal handler, does what it would have done (requeue the job, exiting, or raise
        UncompletedJobError when it gives up); it returns on a rank other than 0. Nothing otherwise."""
        if self.submitit is not None and self.signum == self.submitit[0]:
            self.submitit[1](self.submitit[0], None)

    def ends_submitit_job(self) -> bool:
        """Whether a stop signal other than submitit's own (a SIGTERM: SLURM's pre-emption, scancel; or SLURM's
        SIGUSR1) stopped the run in a submitit job: the run's end is then the job's result, which submitit records,
        so the multirun collects it and goes on to its end. (Exiting, the job would leave no result: submitit waits
        15 s for one and the multirun ends in its UncompletedJobError traceback. A job that SLURM requeues runs
        again in its folder and goes on from its last.ckpt: requeued_checkpoint.)"""
        return self.submitit is not None and self.signum is not None and self.signum != self.submitit[0]

    def watch(self, trainer: L.Trainer) -> None:
        """Handle `trainer`'s stop signals (SIGTERM, SLURM's SIGUSR1, submitit's): its handler only notes them, and
        this callback agrees on them. Lightning's SLURM requeue and its resume from hpc_ckpt_*.ckpt are off."""
        self.trainer = trainer
        # the handler Lightning registers at each fit/validate/test calls the connector's notifier: ours
        trainer._signal_connector._sigterm_notifier_fn = self.note
        # no requeue handler on SIGUSR1 (a checkpoint, a collective and `scontrol requeue` inside a signal handler)
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment):
            environment.auto_requeue = False
        trainer._checkpoint_connector = NoHpcResume(trainer)  # nothing is loaded before fit, validate or test
        trainer.callbacks.append(self)
        # first: a stop before training ends the fit before any other callback's on_train_start (the run plan's line)
        trainer.callbacks.insert(0, StopBeforeTraining(self))

    def agree(self, trainer: L.Trainer) -> bool:
        """Whether any rank has noted a SIGTERM (a collective: every rank calls it at the same point)."""
        return trainer.strategy.reduce_boolean_decision(self.noted, all=False)

    def stop_together(
        self, trainer: L.Trainer, batch_idx: int, last: bool = False, when: str = "after this step"
    ) -> None:
        """Every rank sets Lightning's flag at the same boundary: its loops stop them all after this window. Under
        DDP the ranks agree every trainer.log_every_n_steps windows and at an epoch's last (a collective and a
        host sync: not every window); one process asks every window, for free. `when`: where they stop, in the
        line that says so."""
        due = trainer.world_size == 1 or last or (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0
        if due and not trainer.received_sigterm and self.agree(trainer):
            name = signal.Signals(self.signum or signal.SIGTERM).name  # rank 0's (None: a rank not signalled)
            if not stopped_by_ctrl_c(trainer):  # (a Ctrl-C said so, in its words)
                rank_zero_info(f"{name}: every process stops {when}")
            trainer._signal_connector.received_sigterm = True

    def before_training(self, trainer: L.Trainer) -> None:
        """As training starts (StopBeforeTraining): a stop noted before it (in Lightning's sanity check, whose last
        batch does not stop, or as the fit started) stops every rank here, before the first window: the ranks agree
        (every rank comes here once), and Lightning's handling of the SIGTERMException writes the checkpoint of the
        state training starts from (rnnreg.checkpoints.CheckpointOnInterrupt)."""
        self.stop_together(trainer, 0, last=True, when="before training")
        if trainer.received_sigterm:
            raise SIGTERMException()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.stop_together(trainer, batch_idx, last=batch_idx + 1 >= trainer.num_training_batches)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        # its last batch: training's next window (before_training after the sanity check), or check(), agrees
        self.stop_together(trainer, batch_idx, when="before training" if trainer.sanity_checking else "after this step")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.stop_together(trainer, batch_idx)  # after the last: check()

    def check(self) -> None:
        """A SIGTERM noted after the ranks last agreed (during the last window or test batch): all stop now."""
        if self.trainer is not None and (self.trainer.received_sigterm or self.agree(self.trainer)):
            raise SIGTERMException()


class StopBeforeTraining(L.Callback):
    """Preemption.before_training as training starts, the first callback called (Preemption.watch puts it first; its
    own window-end hooks come after the other callbacks')."""

    def __init__(self, preemption: Preemption) -> None:
        self.preemption = preemption

    def on_train_start(self, trainer, pl_module) -> None:
        self.preemption.before_training(trainer)
