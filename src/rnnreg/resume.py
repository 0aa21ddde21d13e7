"""Exact resume: what a checkpoint holds beyond weights, optimiser and loops, and how it is restored.

- the vocabulary (rnnreg-eval and rnnreg-generate need it; training refuses another vocabulary's checkpoint),
- the data's fingerprint (each split's sha256: a resume stopped inside an epoch refuses a train split changed since,
  one at an epoch's end and rnnreg-eval say which split changed),
- the RNG state (dropout masks after a resume continue the uninterrupted run's random stream),
- the W&B run's id (a resumed run logs on into the same W&B run), its group and name (it goes on under them,
  wherever it is resumed) and, offline, the folders of its parts,
- mid-epoch (SIGTERM, Ctrl-C): the window reached, every stream's carried (h, c) gathered from all DDP
  ranks in stream order, and the epoch's training NLL and token sums so far,
- stopped inside an epoch's validation: the epoch's training sums and that its validation is still to run,
- stopped before training (in Lightning's sanity check, or as the fit started): the state it starts from, at global
  step 0 (none of the sanity check's batches counts).

The optimiser's state (momentum buffers) is restored by parameter name, so that a run may resume with
another LSTM implementation (model.lstm). What a resume is checked against before anything is written (the
checkpoint's training state, the command, the data, the model): rnnreg.resume_checks.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from rnnreg.checkpoint_contents import check_data_fingerprint, layer_norm_problem, layer_norm_record
from rnnreg.errors import CheckpointError
from rnnreg.loggers import offline_run_parts, wandb_run_id, wandb_run_labels
from rnnreg.resume_checks import (
    check_resume_against,
    check_resume_optim,
    check_resume_streams,
    check_resume_vocabulary,
    resumed_data,
    trained_parameter_order,
)


def windows_done(trainer) -> int:
    """Training windows completed in this epoch when a checkpoint is taken mid-epoch, else 0."""
    if trainer is None or trainer.state.fn != "fit":
        return 0
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    return done if 0 < done < trainer.num_training_batches else 0


def save_resume_state(task, trainer, checkpoint: dict) -> None:
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None and getattr(datamodule, "corpus", None) is not None:
        task.vocab = datamodule.corpus.itos
    checkpoint["vocab"] = task.vocab
    if task.seed is not None:  # a resume given another is refused (check_resume_settings)
        checkpoint["seed"] = task.seed
    checkpoint |= layer_norm_record(bool(task.hparams["model"].get("layer_norm")))
    if datamodule is not None and callable(getattr(getattr(datamodule, "corpus", None), "fingerprints", None)):
        checkpoint["data_fingerprint"] = datamodule.corpus.fingerprints()  # the splits it was trained and validated on
    run_id = wandb_run_id(trainer.loggers) if trainer is not None else None
    if run_id is not None:
        checkpoint["wandb_run_id"] = run_id
        checkpoint |= wandb_run_labels(trainer.loggers)
        parts = offline_run_parts(trainer.loggers) if trainer.is_global_zero else None
        if parts:  # offline: a resume from here names every part in its `wandb sync` command
            checkpoint["wandb_parts"] = [str(part) for part in parts]
    checkpoint["rng"] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    window = windows_done(trainer)
    checkpoint["train_window"] = window
    validating = in_validation(trainer)
    if window or validating:  # the epoch's training sums (its train/ppl) go on in the resumed run
        checkpoint["train_carry"] = mid_epoch_carry(task, trainer)
        if datamodule is not None and hasattr(datamodule, "bptt"):  # the window reached counts windows of this length
            checkpoint["train_bptt"] = datamodule.bptt
    if window and not validating:
        # trainer.max_steps inside an epoch ends its epoch loop as if the epoch were done: counted as one stopped in
        # it, as a signal's checkpoint is, a resume trains the epoch's other windows (before: it skipped them)
        for counts in checkpoint["loops"]["fit_loop"]["epoch_progress"].values():
            counts["processed"] = counts["completed"]
    if validating:
        checkpoint["validation_pending"] = True
    if validating or (trainer is not None and trainer.sanity_checking):  # (a stop in Lightning's sanity check)
        # none of its validation batches counts (their sums are not saved): the resumed run validates from the first
        checkpoint["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"] = validation_not_started()


def in_validation(trainer) -> bool:
    """The checkpoint is taken inside a training epoch's validation, before its last batch (a stop, SIGTERM or
    Ctrl-C): the epoch's windows are all done (windows_done says 0), its validation and its end are not."""
    if trainer is None or trainer.state.fn != "fit" or not trainer.validating or trainer.sanity_checking:
        return False
    return not trainer.fit_loop.epoch_loop.val_loop.batch_progress.is_last_batch


def validation_not_started() -> dict:
    """Lightning's progress of a validation that has not started (its loop's batch_progress state dict)."""
    counts = {part: dict.fromkeys(("ready", "started", "processed", "completed"), 0) for part in ("total", "current")}
    return counts | {"is_last_batch": False}


def validate_again(trainer) -> None:
    """Resumed from a checkpoint taken inside an epoch's validation (validation_pending): Lightning takes a checkpoint
    whose epoch has all its windows done for one taken after its validation, and skips that; restarted as if in the
    middle of an evaluation, its epoch loop runs the validation (from its first batch) before ending the epoch. Called
    once the loops have set their restart stages (on_train_start). Lightning's restart stages are private (2.5 on,
    hence the pin in pyproject.toml); tests/test_resume.py checks that the validation runs."""
    from lightning.pytorch.loops.evaluation_loop import RestartStage

    trainer.fit_loop.epoch_loop.val_loop._restart_stage = RestartStage.RESTARTED_MID_EVALUATION


def mid_epoch_carry(task, trainer) -> dict:
    task.flush_train_sums()
    h, c = task.train_state
    total, tokens = task.train_ppl.mean_value.clone(), task.train_ppl.weight.clone()
    if trainer.world_size > 1:  # (world, layers, streams per rank, units) -> (layers, streams, units)
        h, c = (torch.cat(list(task.all_gather(t)), dim=1) for t in (h, c))
        total, tokens = task.all_gather(total).sum(), task.all_gather(tokens).sum()
    return {"state": (h.cpu(), c.cpu()), "nll_sum": total.cpu(), "tokens": tokens.cpu()}


def restore_resume_state(task, trainer, checkpoint: dict) -> None:
    """Before training resumes: the RNG, the stream position and this rank's share of the carried state."""
    source = getattr(trainer, "ckpt_path", None) or "the checkpoint"  # (a library user's own trainer.fit/test too)
    if why := layer_norm_problem(checkpoint, bool(task.hparams["model"].get("layer_norm")), source):
        raise CheckpointError(why)
    task.vocab = checkpoint.get("vocab")
    task.data_fingerprint = checkpoint.get("data_fingerprint")  # (None: a checkpoint from before it was recorded)
    if trainer is None:  # loaded for evaluation
        return
    datamodule = getattr(trainer, "datamodule", None)
    corpus = getattr(datamodule, "load", None)
    if corpus is not None:
        check_resume_vocabulary(task.vocab, corpus(), getattr(trainer, "ckpt_path", None))  # (fit's checkpoint)
    ours = task.state_dict()
    theirs = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    if theirs != {k: tuple(v.shape) for k, v in ours.items()}:
        differ = sorted(
            k for k in theirs.keys() | ours.keys() if theirs.get(k) != tuple(getattr(ours.get(k), "shape", ()))
        )
        raise CheckpointError(
            f"the checkpoint holds another model shape ({differ[0]}: {theirs.get(differ[0])} vs "
            f"{tuple(ours[differ[0]].shape) if differ[0] in ours else None} here): resume it with "
            f"the model config it was trained with"
        )
    optimizer_state_by_name(task, checkpoint)
    if trainer.state.fn != "fit":  # trainer.test(ckpt_path=...): its weights, not the RNG or the data's position
        return
    if not task.resume_data_checked and corpus is not None:  # a library user's fit (rnnreg-train checked before)
        ckpt_path = getattr(trainer, "ckpt_path", None)
        check_data_fingerprint(checkpoint, str(ckpt_path))  # (a fingerprint edited by hand: one line, not a KeyError)
        check_resume_optim(task.hparams.get("optim") or {}, checkpoint, ckpt_path)
        check_resume_streams(
            checkpoint, ckpt_path, getattr(datamodule, "batch_size", None), getattr(datamodule, "bptt", None)
        )
        limit = getattr(trainer, "limit_train_batches", None)
        for line in check_resume_against(resumed_data(checkpoint), corpus(), datamodule, limit, ckpt_path):
            rank_zero_warn(line)
    if "rng" in checkpoint:
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if checkpoint["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    if datamodule is not None:
        datamodule.resume_window = checkpoint.get("train_window", 0)
    task.validation_pending = bool(checkpoint.get("validation_pending"))
    if "train_carry" in checkpoint:
        carry = checkpoint["train_carry"]
        streams = carry["state"][0].size(1) // trainer.world_size
        rank = trainer.global_rank
        task.train_state = tuple(t[:, rank * streams : (rank + 1) * streams] for t in carry["state"])
        if rank == 0 and carry["tokens"] > 0:  # the epoch's sums so far (reduced over ranks at its end)
            task.train_ppl.update(carry["nll_sum"] / carry["tokens"], carry["tokens"])


def optimizer_state_by_name(task, checkpoint: dict) -> None:
    """The saved optimiser state (momentum buffers) put in this model's parameter order. An optimiser keeps it by
    position, and nn.LSTM (weight_ih, weight_hh, bias_ih, bias_hh per layer) and StepLSTM (weight_ih, bias_ih,
    weight_hh, bias_hh) order the same parameters differently: resumed with another model.lstm, each parameter
    would be given another one's buffer."""
    theirs, ours = trained_parameter_order(checkpoint), [name for name, _ in task.named_parameters()]
    if theirs is None or theirs == ours:
        return
    if sorted(theirs) != sorted(ours):  # model.tie_weights: the decoder's weight is a parameter of its own or not
        name = sorted(set(theirs) ^ set(ours))[0]
        tied = str(checkpoint["hyper_parameters"]["model"].get("tie_weights", False)).lower()
        raise CheckpointError(
            f"the checkpoint's optimiser holds another model's parameters ({name} is a parameter of its own "
            f"{'there, not here' if name in theirs else 'here, not there'}): resume it with the model config it "
            f"was trained with (model.tie_weights={tied})"
        )
    position = {name: i for i, name in enumerate(theirs)}
    for saved in checkpoint.get("optimizer_states") or []:
        ids = [i for group in saved["param_groups"] for i in group["params"]]  # the ids its state is keyed by
        state = saved["state"]
        moved = {ids[i]: ids[position[name]] for i, name in enumerate(ours)}
        saved["state"] = {new: state[old] for new, old in moved.items() if old in state}
