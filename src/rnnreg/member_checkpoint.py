"""A stacked member's checkpoint with the training state of a separate run: the loops' progress, the
optimiser and lr schedule, the callbacks' states (best checkpoint and score, early stopping) and, mid-epoch,
the window reached and its carried state, as Lightning and rnnreg.resume write them for the job run alone.
So `rnnreg-train ckpt_path=<member checkpoint>` continues the job as a single run: from a CPU group with the
masks the member would have drawn next (its stream's state goes in too), from a GPU group with masks from the
run's own stream (the same recipe, not the same masks), in the job's W&B run."""

from __future__ import annotations

import copy
import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig

from rnnreg.callbacks import SpeedMonitor
from rnnreg.checkpoint_contents import layer_norm_record
from rnnreg.instantiation import instantiate_callbacks
from rnnreg.loggers import offline_run_parts
from rnnreg.optim import paper_optimizer
from rnnreg.run_record import BEST_CHECKPOINT, LAST_CHECKPOINT, best_checkpoint_path, last_checkpoint_path
from rnnreg.stacked import UNITS
from rnnreg.task_config import optim_settings

if TYPE_CHECKING:
    from rnnreg.stacked_train import GroupTrainer, HostCopies


def member_checkpoint(group: GroupTrainer, k: int, copies: HostCopies, validation_end: bool = False) -> dict:
    """Member k of `group` now (its weights: `copies`, the group's host_copies()) as an ordinary single-run
    checkpoint, with the training state of its job run alone at this point, its momentum buffers included:
    ckpt_path= continues it as a separate run. Its own copies throughout: the writer may write it later.
    `validation_end`: the state as the epoch's validation ends, before the epoch's end hooks."""
    state = group.model.member_state_dict(k, copies.weights)
    m, folder, step = group.members[k], group.folders[k], group.step
    best = best_checkpoint_path(folder.path)
    window = group.window if group.window < group.n_train else 0  # n_train: at the epoch's end
    progress = Progress(
        epochs=m.epochs,
        window=window,
        windows_per_epoch=group.n_train,
        val_windows=group.n_val,
        best_val=m.best_val,
        best_path=str(best) if math.isfinite(m.best_val) else "",
        early_stopping=m.early_stopping,
        words=m.words + (group.tokens if window else 0),  # a stop inside an epoch: its words so far too
        seconds=group.train_seconds,
        fit_seconds=group.fit_seconds,
        epoch_words=group.tokens,
        epoch_seconds=group.epoch_seconds_before if window else group.epoch_seconds,
        last_path=str(last_checkpoint_path(folder.path)),
        val_every=group.val_every,
        validation_end=validation_end,
    )
    carry = None
    if window:  # mid-epoch: the member's carried state and its epoch's NLL sums so far
        carry = {
            "state": tuple(group.model.unpadded(t[k], (UNITS,)).cpu().clone() for t in (step.h, step.c)),
            "nll_sum": step.nll_sum[k].cpu().clone(),
            "tokens": torch.tensor(float(group.tokens), dtype=torch.float64),
        }
    if group.callbacks[k] is None:  # what a run of the job would have, to hold the member's state
        group.callbacks[k] = instantiate_callbacks(group.jobs[k].cfg)
    buffers = None
    if step.momentums[k]:  # ClippedSGD's state: member k's slices (copies) in its parameters' order
        buffers = [copies.buffers[i][k].clone() for i in group.model.member_orders[k]]
    extra = training_state(group.jobs[k].cfg, group.callbacks[k], len(group.names), progress, carry, buffers)
    extra["stacked"] = group.stacked_record(k)
    extra["seed"] = group.jobs[k].cfg.seed  # as a run's own checkpoint records it (rnnreg.resume.save_resume_state)
    extra["data_fingerprint"] = group.datamodule.load().fingerprints()  # as rnnreg.resume records a run's
    extra |= layer_norm_record(group.model.layer_norm)
    if folder.wandb_id is not None:  # ckpt_path= goes on in the job's W&B run, as a run's own checkpoint does
        extra["wandb_run_id"] = folder.wandb_id
        extra |= folder.wandb_labels
        if parts := offline_run_parts([folder.wandb]):
            extra["wandb_parts"] = [str(part) for part in parts]
    generator = group.model.generators()[k]
    if generator.device.type == "cpu":  # its job's stream (StackedLanguageModel.generators): ckpt_path= goes on
        extra["rng"] = {"torch": generator.get_state(), "cuda": None}  # with the masks the group would draw
    return folder.checkpoint(state, group.vocab, **extra)


@dataclass
class Progress:
    """Where a member stands: `epochs` completed, `window` windows into the next (0 at an epoch's end); with
    `validation_end`, as its last epoch's validation ends (where a run validating every `val_every` > 1 epochs
    saves best.ckpt: before the epoch's end hooks). `words`: the words it trained, the epoch under way's too."""

    epochs: int
    window: int
    windows_per_epoch: int
    val_windows: int
    best_val: float
    best_path: str
    early_stopping: dict | None  # the member's EarlyStopping state (rnnreg.stacked_train runs Lightning's)
    words: int
    seconds: float
    epoch_words: int  # the epoch under way's (at a stop inside it) or the last one's
    epoch_seconds: float
    fit_seconds: float = 0.0  # the group's time in fit (metrics.json's train_seconds), validation included
    last_path: str = ""  # the job's checkpoints/last.ckpt
    val_every: int = 1  # trainer.check_val_every_n_epoch: a validation after each val_every-th epoch
    validation_end: bool = False

    @property
    def inside_epoch(self) -> bool:
        """Where the job's run saves inside its epoch: at a stop in it, or as its validation ends."""
        return self.window > 0 or self.validation_end

    def validations(self, epochs: int) -> int:
        """Validations run in `epochs` epochs."""
        return epochs // self.val_every


def counts(total: int, current: int, *fields: str) -> dict:
    return {"total": dict.fromkeys(fields, total), "current": dict.fromkeys(fields, current)}


ALL = ("ready", "completed", "started", "processed")


@functools.cache
def fresh_loops() -> dict:
    """The loops' state dicts of a trainer that has run nothing (a Trainer takes a while to make: once)."""
    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # no "GPU available" lines mid-sweep
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        template = L.Trainer(
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
        )
    finally:
        quiet.setLevel(level)
    return {
        "fit_loop": template.fit_loop.state_dict(),
        "validate_loop": template.validate_loop.state_dict(),
        "test_loop": template.test_loop.state_dict(),
        "predict_loop": template.predict_loop.state_dict(),
    }


def loops_state(p: Progress) -> dict:
    """The loops' progress as Lightning saves it at that point: at an epoch's end, after its validation if it
    had one (the epoch processed, not yet completed), or as its validation ends (`p.validation_end`: the epoch
    not yet processed, its last window not yet counted as stepped), or after `window` windows of the next
    epoch."""
    loops = copy.deepcopy(fresh_loops())
    fit = loops["fit_loop"]
    mid = p.window > 0
    current = p.window if mid else p.windows_per_epoch
    steps = p.epochs * p.windows_per_epoch + p.window
    fit["epoch_loop.state_dict"]["_batches_that_stepped"] = steps - 1 if p.validation_end else steps
    fit["epoch_loop.batch_progress"] = counts(steps, current, *ALL) | {"is_last_batch": not mid}
    scheduler = p.epochs
    fit["epoch_loop.scheduler_progress"] = counts(scheduler, 1 if p.epochs and not mid else 0, "ready", "completed")
    optim = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
    optim["step"] = counts(steps, current, "ready", "completed")
    optim["zero_grad"] = counts(steps, current, "ready", "completed", "started")
    # the validation's batches: its last pass's (`current`), and this epoch's (`total`: reset as an epoch starts)
    validated = p.validations(p.epochs) > 0  # a validation ran before this point
    val_current = p.val_windows if validated else 0
    val_total = val_current if not mid and p.validations(p.epochs) > p.validations(p.epochs - 1) else 0
    fit["epoch_loop.val_loop.batch_progress"] = {
        "total": dict.fromkeys(ALL, val_total),
        "current": dict.fromkeys(ALL, val_current),
        "is_last_batch": validated,
    }
    epochs = p.epochs + 1 if mid else p.epochs  # the epoch under way counts as ready and started
    processed = p.epochs - 1 if p.validation_end else p.epochs
    completed = p.epochs if mid else p.epochs - 1
    fit["epoch_progress"] = {
        part: {"ready": epochs, "completed": completed, "started": epochs, "processed": processed}
        for part in ("total", "current")
    }
    return loops


def optimizer_states(
    cfg: DictConfig, num_params: int, epochs: int, momentum_buffers: list[torch.Tensor] | None = None
) -> tuple[dict, dict]:
    """ClippedSGD's and the paper schedule's state dicts after `epochs` epochs, from the real classes, with
    `momentum_buffers` (one per parameter, in the optimiser's order) as its state."""
    params = [torch.zeros(1, requires_grad=True) for _ in range(num_params)]
    optimizer, schedule = paper_optimizer(params, optim_settings(cfg))
    for _ in range(epochs):
        optimizer.step(update=False)  # no weights move: the schedule's step count after an update, as in training
        schedule.step()
    for p, buffer in zip(params, momentum_buffers or []):
        optimizer.state[p]["momentum_buffer"] = buffer
    return optimizer.state_dict(), schedule.state_dict()


def callback_states(callbacks: list, p: Progress) -> dict:
    """The job's callbacks (instantiated from its config), set to the member's state, under their own keys."""
    states = {}
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and p.best_path:
            best = torch.tensor(p.best_val, dtype=torch.float64)  # val/ppl is logged in float64
            callback.best_model_score, callback.best_model_path = best, p.best_path
            callback.best_k_models = {p.best_path: best}
            callback.kth_best_model_path, callback.kth_value = p.best_path, best
            callback.current_score = best  # set when it last saved: at the best score (save_top_k=1)
        elif isinstance(callback, ModelCheckpoint) and not callback.monitor and p.epochs - p.validation_end > 0:
            # last.ckpt's callback (no monitor), from its first save on (at the first epoch's end)
            callback.best_model_path = p.last_path or p.best_path.replace(BEST_CHECKPOINT, LAST_CHECKPOINT)
        elif isinstance(callback, EarlyStopping) and p.early_stopping is not None:
            callback.load_state_dict(p.early_stopping)
        elif isinstance(callback, SpeedMonitor):
            callback.train_seconds, callback.train_words = p.seconds, p.words
            callback.fit_seconds_before = p.fit_seconds
            if p.inside_epoch:  # the epoch's part so far, which a resumed run's epoch words/s goes on from
                callback.epoch_open = True
                callback.words_before, callback.seconds_before = p.epoch_words, p.epoch_seconds
        state = callback.state_dict()
        if state:
            states[callback.state_key] = state
    return states


def training_state(
    cfg: DictConfig,
    callbacks: list,
    num_params: int,
    p: Progress,
    carry: dict | None = None,
    momentum_buffers: list[torch.Tensor] | None = None,
) -> dict:
    """What a separate run's checkpoint holds beyond weights, vocabulary and hyperparameters; `callbacks`:
    instantiate_callbacks(cfg), made once per member; `momentum_buffers`: the member's, in its single model's
    parameter order (None: it has no momentum)."""
    optimizer, schedule = optimizer_states(cfg, num_params, p.epochs, momentum_buffers)
    state = {
        "epoch": p.epochs if p.window else max(p.epochs - 1, 0),
        "global_step": p.epochs * p.windows_per_epoch + p.window,
        "loops": loops_state(p),
        # LastValidation's (rnnreg.training adds it to a run's callbacks): the lowest val/ppl, None before any
        "callbacks": callback_states(callbacks, p) | {"LastValidation": {"best": p.best_val if p.best_path else None}},
        "optimizer_states": [optimizer],
        "lr_schedulers": [schedule],
        "hparams_name": "kwargs",
        "train_window": p.window,
    }
    if p.window:  # as rnnreg.resume saves a single run's, stopped inside an epoch
        state["train_carry"], state["train_bptt"] = carry, cfg.data.bptt
    return state
