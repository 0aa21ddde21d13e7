"""A resume checked before anything is written: the checkpoint holds a training state as rnnreg-train writes it
(check_training_state: the optimiser's, the loops', the callbacks' states, the seed, the carried state), and the
command, the data and the model a resume is given agree with it (check_resume_*: the settings its optimiser state
would replace, the streams and windows it stopped in, the data it trained on, its model's shapes and vocabulary); one
line naming the key and the fix where they do not. Restoring the state is rnnreg.resume's."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import NamedTuple

import torch
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from rnnreg.checkpoint_contents import briefly, check_data_fingerprint, layer_norm_problem, not_written_by_train
from rnnreg.console import counted
from rnnreg.data import limit_batches
from rnnreg.errors import CheckpointError, ConfigError, DataError
from rnnreg.model import build_net
from rnnreg.multirun_jobs import override_key
from rnnreg.record_yaml import read_yaml, recorded_choice, recorded_overrides, section
from rnnreg.recorded_commands import recorded_run_command

# optimiser settings a resume takes from the checkpoint's optimiser state, not from the command line (clip:
# trainer.gradient_clip_val, which rnnreg.optim.ClippedSGD keeps in its parameter group)
SAVED_WITH_THE_OPTIMISER = ("lr", "momentum", "weight_decay", "clip")
# the lr schedule's: the epochs trained so far followed the checkpoint's, and a resume starts from the lr it saved
SCHEDULE = ("decay", "decay_start")
RESUMED_OPTIM = SAVED_WITH_THE_OPTIMISER + SCHEDULE  # what a resume's optim is compared in (check_resume_optim)


def check_training_state(checkpoint: dict, ckpt_path: str) -> None:
    """A CheckpointError before anything is written where a checkpoint lacks, or holds in another form, the
    training state a resume goes on from (weights alone, a file edited by hand): the key that does not fit."""

    optimizers = checkpoint.get("optimizer_states")
    if not optimizers:
        raise CheckpointError(
            f"{ckpt_path} holds no optimiser state (a checkpoint of the weights only), which a resume needs: evaluate "
            f"it with rnnreg-eval, or resume from the run's checkpoints/last.ckpt"
        )
    if not isinstance(optimizers, list) or not all(
        isinstance(o, dict) and isinstance(o.get("param_groups"), list) and isinstance(o.get("state"), dict)
        for o in optimizers
    ):
        raise not_written_by_train(ckpt_path, "its optimizer_states are not an optimiser's state")

    def mapping_of_mappings(value) -> bool:
        return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())

    def number(value) -> bool:
        return isinstance(value, int | float | torch.Tensor) and not isinstance(value, bool)

    hparams, carry = checkpoint.get("hyper_parameters"), checkpoint.get("train_carry", {})
    optim = hparams.get("optim", {}) if isinstance(hparams, dict) else None
    model = hparams.get("model") if isinstance(hparams, dict) else None
    checks = {
        "pytorch-lightning_version": isinstance(checkpoint.get("pytorch-lightning_version"), str),
        "epoch": whole(checkpoint.get("epoch")),
        "global_step": whole(checkpoint.get("global_step")),
        "train_window": whole(checkpoint.get("train_window", 0)),
        "train_bptt": whole(checkpoint.get("train_bptt", 1)) and checkpoint.get("train_bptt", 1) > 0,
        "seed": whole(checkpoint.get("seed", 0)),
        "callbacks": mapping_of_mappings(checkpoint.get("callbacks", {})),
        # Lightning resumes the loops' progress from it; without it a resume trains its epochs anew from the first
        "loops": mapping_of_mappings(checkpoint.get("loops")) and "fit_loop" in checkpoint["loops"],
        "lr_schedulers": isinstance(checkpoint.get("lr_schedulers"), list)
        and len(checkpoint["lr_schedulers"]) == len(optimizers)
        and all(isinstance(s, dict) for s in checkpoint["lr_schedulers"]),
        # what a resume compares with the command line's optim (check_resume_settings): numbers
        "hyper_parameters": isinstance(optim, dict) and all(number(optim[k]) for k in RESUMED_OPTIM if k in optim),
        "state_dict": isinstance(checkpoint["state_dict"], dict)
        and all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values()),
        # a stop inside an epoch: every stream's carried (h, c), of the model's layers and units, and the epoch's sums
        "train_carry": isinstance(carry, dict)
        and (
            not carry
            or isinstance(carry.get("state"), tuple | list)
            and len(carry["state"]) == 2
            and all(isinstance(t, torch.Tensor) and t.dim() == 3 for t in carry["state"])
            and carry["state"][0].shape == carry["state"][1].shape
            and carried_shape_fits(carry["state"][0].shape, model)
            and all(isinstance(carry.get(k), torch.Tensor) for k in ("nll_sum", "tokens"))
        ),
    }
    if "rng" in checkpoint:  # torch's generator state is a byte tensor
        rng = checkpoint["rng"]
        state = rng.get("torch") if isinstance(rng, dict) else None
        checks["rng"] = isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and "cuda" in rng
    if bad := [key for key, fits in checks.items() if not fits]:
        key, value = bad[0], checkpoint.get(bad[0])
        if key not in checkpoint:
            raise not_written_by_train(ckpt_path, f"it holds no {key}, which a training state has")
        if key == "hyper_parameters" and isinstance(optim, dict):  # name the entry that is off
            name = next(k for k in RESUMED_OPTIM if k in optim and not number(optim[k]))
            key, value = f"hyper_parameters['optim'][{name!r}]", optim[name]
        elif key == "hyper_parameters" and isinstance(hparams, dict):
            key, value = "hyper_parameters['optim']", optim
        elif key in ("callbacks", "loops") and isinstance(value, dict):
            name = next((k for k, v in value.items() if not isinstance(v, dict)), None)
            if name is None:  # (loops without the fit loop's)
                raise not_written_by_train(ckpt_path, f"its {key} hold no 'fit_loop', which a training state's have")
            key, value = f"{key}[{name!r}]", value[name]
        raise not_written_by_train(ckpt_path, f"its {key} is {briefly(value)}, not a training state's")
    if problem := optimizer_state_problem(checkpoint):
        raise not_written_by_train(ckpt_path, problem)
    if problem := callback_state_problem(checkpoint.get("callbacks", {})):
        raise not_written_by_train(ckpt_path, problem)
    if why := layer_norm_problem(checkpoint, isinstance(model, dict) and bool(model.get("layer_norm")), ckpt_path):
        raise CheckpointError(why)
    check_data_fingerprint(checkpoint, ckpt_path)


def carried_shape_fits(shape: torch.Size, model) -> bool:
    """A stop inside an epoch carries (layers, streams, units) of state: the layers and units of its model."""
    if not isinstance(model, dict):  # (hyper_parameters without a model: trained_net's line says so)
        return True
    return shape[0] == model.get("num_layers", shape[0]) and shape[2] == model.get("hidden_size", shape[2])


# what ClippedSGD reads of its one parameter group, besides the parameters
GROUP_NUMBERS = ("lr", "clip", "momentum", "weight_decay")


def optimizer_state_problem(checkpoint: dict) -> str | None:
    """The first entry of a checkpoint's optimiser state (check_training_state checked its form) that a resume would
    load and that is not as rnnreg-train writes it, said as "its optimizer_states[0]... is value, not kind": one
    parameter group, numbers where ClippedSGD reads them, as many parameters as its model has, a momentum buffer of
    its parameter's shape; None where all fit. (Before: a traceback from inside torch once the run had begun.)"""
    order = trained_parameter_order(checkpoint)  # (None where its hyper_parameters build no model: trained_net's line)
    weights = checkpoint["state_dict"]
    for i, saved in enumerate(checkpoint["optimizer_states"]):
        where = f"optimizer_states[{i}]"
        if len(saved["param_groups"]) != 1 or not isinstance(saved["param_groups"][0], dict):
            return f"its {where}['param_groups'] is {briefly(saved['param_groups'])}, not one parameter group"
        (group,) = saved["param_groups"]
        ids = group.get("params")
        if not (isinstance(ids, list) and all(whole(i) for i in ids) and len(set(ids)) == len(ids)):
            return f"its {where}['param_groups'][0]['params'] is {briefly(ids)}, not a list of parameter ids"
        for name in GROUP_NUMBERS:
            if not NUMBER.fits(group.get(name)):
                return f"its {where}['param_groups'][0][{name!r}] is {briefly(group.get(name))}, not a number"
        if order is not None and len(ids) != len(order):
            return f"its {where} holds the state of {len(ids)} parameters, not of its model's {len(order)}"
        shapes = {i: tuple(weights[name].shape) for i, name in zip(ids, order or []) if name in weights}
        for i, state in saved["state"].items():
            buffer = state.get("momentum_buffer") if isinstance(state, dict) else None
            fits = isinstance(buffer, torch.Tensor) and tuple(buffer.shape) == shapes.get(i, tuple(buffer.shape))
            if i not in ids or not fits:
                return f"its {where}['state'][{briefly(i)}] is {briefly(state)}, not a momentum buffer of its parameter"
    return None


def trained_parameter_order(checkpoint: dict) -> list[str] | None:
    """The parameter names of the model a checkpoint was trained with, in its optimiser's order (the model built
    from its hyper_parameters on the meta device: no memory, no initialisation); None when they build none."""
    if not checkpoint.get("optimizer_states"):
        return None
    hparams = checkpoint.get("hyper_parameters") or {}
    try:
        with torch.device("meta"):
            net = build_net(hparams["vocab_size"], hparams["model"], hparams["dropout"])
    except (KeyError, TypeError, ValueError):
        return None
    return [f"net.{name}" for name, _ in net.named_parameters()]


class Kind(NamedTuple):
    """What a value of a callback's state must be: `fits` says whether it is, `what` names it in the error."""

    fits: Callable[[object], bool]
    what: str


def whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def recorded_seed(checkpoint: dict, ckpt_path) -> int | None:
    """The seed a checkpoint records (its run's: a resume goes on with that seed's random state), None where it
    records none (an older rnnreg's, a library user's); a CheckpointError where it is not a seed."""
    seed = checkpoint.get("seed")
    if seed is not None and not whole(seed):
        raise not_written_by_train(ckpt_path, f"its seed is {briefly(seed)}, not a training state's")
    return seed


def or_none(kind: Kind) -> Kind:
    return Kind(lambda v: v is None or kind.fits(v), f"{kind.what} or None")


WHOLE = Kind(whole, "a whole number")
NUMBER = Kind(lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number")
TEXT = Kind(lambda v: isinstance(v, str), "a string")
# a checkpoint path Lightning may delete once a newer one is saved: any URL (s3://...), or a file whose parents, `..`
# unresolved, hold the run's checkpoints/ (checkpoints/../metrics.json); rnnreg-train writes local paths, no `..`
PATH = Kind(
    lambda v: isinstance(v, str) and "://" not in v and ".." not in PurePath(v).parts, "a local path without '..'"
)
# a monitored value as Lightning keeps it (compared with tensors, moved with .to, formatted with :.3f: 0-dim only)
SCORE = Kind(lambda v: isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() == 0, "a 0-dim float tensor")
SCORES = Kind(
    lambda v: isinstance(v, dict) and all(PATH.fits(p) and SCORE.fits(s) for p, s in v.items()),
    "a mapping of local paths (without '..') to 0-dim float tensors",
)
REASON = Kind(lambda v: whole(v) and v in {r.value for r in EarlyStoppingReason}, "an EarlyStoppingReason's value")
MODEL_CHECKPOINT = {  # Lightning's ModelCheckpoint.load_state_dict, and BestCheckpoint's and LastValidation's reads
    "best_model_score": (or_none(SCORE), True),
    "best_model_path": (PATH, True),
    "current_score": (or_none(SCORE), False),
    "dirpath": (or_none(PATH), False),
    "best_k_models": (SCORES, False),
    "kth_best_model_path": (PATH, False),
    "kth_value": (SCORE, False),
    "last_model_path": (PATH, False),
}
# what a resume reads of the state of each callback rnnreg configures (load_state_dict, on_load_checkpoint), by the
# class its state key names: field -> (its kind, whether it is read where absent: Lightning's state[field])
CALLBACK_STATES: dict[str, dict[str, tuple[Kind, bool]]] = {
    "EarlyStopping": {
        "wait_count": (WHOLE, True),
        "stopped_epoch": (WHOLE, True),
        "best_score": (SCORE, True),
        "patience": (WHOLE, True),
        "stopping_reason": (REASON, False),
        "stopping_reason_message": (or_none(TEXT), False),
    },
    "ModelCheckpoint": MODEL_CHECKPOINT,
    "BestCheckpoint": MODEL_CHECKPOINT,
    "LastCheckpoint": MODEL_CHECKPOINT,
    "SpeedMonitor": {
        "train_seconds": (NUMBER, True),
        "train_words": (WHOLE, True),
        "epoch_seconds": (NUMBER, False),
        "epoch_words": (WHOLE, False),
        "fit_seconds": (NUMBER, False),
    },
    "LastValidation": {"best": (or_none(NUMBER), True)},
}


def callback_class(key: str) -> str:
    """The class a callback state's key names: "EarlyStopping{'monitor': ...}" -> "EarlyStopping"."""
    return key.split("{", 1)[0]


def recorded_best_val(checkpoint: dict) -> float | None:
    """The lowest val/ppl of a checkpoint's run: its LastValidation state's (rnnreg.training; None before any
    validation), else, in a checkpoint from before that state was kept, its best.ckpt callback's score."""
    states = checkpoint.get("callbacks") or {}
    for key, state in states.items():
        if callback_class(key) == "LastValidation" and "best" in state:
            return None if state["best"] is None else float(state["best"])
    for key, state in states.items():
        if callback_class(key) == "BestCheckpoint" and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    return None


def callback_state_problem(callbacks: dict) -> str | None:
    """The first value in a checkpoint's callback states (a mapping of mappings) that a resume reads and that is not
    of the kind rnnreg-train writes (CALLBACK_STATES), said as "its callbacks[key][field] is value, not kind"; None
    where all fit. (Wrongly typed, it stopped the resumed run with a traceback from inside Lightning.)"""
    for key, state in callbacks.items():
        if not isinstance(key, str):  # Lightning keys every state by its callback's state_key, a string
            return f"its callbacks key {briefly(key)} is not a callback's name (a string)"
        fields = CALLBACK_STATES.get(callback_class(key), {})
        for field, (kind, read_where_absent) in fields.items() if state else ():  # Lightning loads no empty state
            if field not in state:
                if read_where_absent:
                    return f"its callbacks[{key!r}] has no {field!r}"
            elif not kind.fits(state[field]):
                return f"its callbacks[{key!r}][{field!r}] is {briefly(state[field])}, not {kind.what}"
    return None


def check_resume_settings(
    optim: dict,
    max_epochs: int,
    checkpoint: dict,
    ckpt_path: str,
    batch_size: int | None = None,
    bptt: int | None = None,
    patience: int | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
) -> None:
    """A ConfigError before anything is written when resuming from `checkpoint` would not do what the command
    says: nothing left to train (the run's last epoch done: in its folder it rewrote metrics.json without its
    validation; or trainer.max_steps, `max_steps`, reached), a run early stopping ended (Lightning would train on)
    unless it ran out of a patience below `patience` (callbacks.early_stopping.patience, None without early
    stopping), an update rule or lr schedule other than the checkpoint's (check_resume_optim), another `seed`
    than the one it was trained with (where it records one: it goes on with that seed's random state), or, stopped
    inside an epoch, another data.batch_size than the streams its carried state holds or another data.bptt than
    the windows it counted (the resumed run would go on from another place in the stream)."""
    check_training_state(checkpoint, ckpt_path)
    # epochs trained, at an epoch's end (no window of the next); at global step 0 none (stopped before training:
    # in Lightning's sanity check, or as the fit started)
    done = int(checkpoint.get("epoch", -1)) + 1 if checkpoint.get("global_step") else 0
    if checkpoint.get("train_window", 0) == 0 and "train_carry" not in checkpoint and done >= max_epochs:
        raise ConfigError(
            f"{ckpt_path} holds {counted(done, 'trained epoch')} and trainer.max_epochs={max_epochs}: nothing is "
            f"left to train: raise trainer.max_epochs to train on, or evaluate it with rnnreg-eval"
        )
    steps = checkpoint.get("global_step", 0)
    if max_steps is not None and 0 <= max_steps <= steps:
        raise ConfigError(
            f"{ckpt_path} holds {counted(steps, 'trained window')} and trainer.max_steps={max_steps}: nothing is left "
            f"to train: raise trainer.max_steps (or leave it out: trainer.max_epochs) to train on, or evaluate it "
            f"with rnnreg-eval"
        )
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if callback_class(name) == "EarlyStopping" and state:  # (check_training_state checked its values)
            stopped = state.get("stopping_reason") or 0
            if not (stopped if "stopping_reason" in state else state["stopped_epoch"] > 0):
                continue
            # out of patience, a larger one trains on (CommandLinePatience undoes the stop); any other stop would recur
            by_patience = stopped == EarlyStoppingReason.PATIENCE_EXHAUSTED.value
            if by_patience and NUMBER.fits(patience) and patience > state["wait_count"]:
                continue
            wait = f"above {state['wait_count']} (the epochs it went without improving)"
            given = "" if patience is not None else "callbacks=early_stopping and "  # (no early stopping: no patience)
            longer = f", or train on with {given}callbacks.early_stopping.patience {wait}" if by_patience else ""
            raise ConfigError(
                f"{ckpt_path} is from a run that early stopping ended after epoch {state['stopped_epoch'] + 1}: "
                f"nothing is left to train (a resume would train on): evaluate it with rnnreg-eval, or start a "
                f"new run{longer}"
            )
    check_resume_streams(checkpoint, ckpt_path, batch_size, bptt)
    if seed is not None and checkpoint.get("seed", seed) != seed:
        raise ConfigError(
            f"seed={seed} where {ckpt_path} was trained with seed={checkpoint['seed']}: a resume goes on with the "
            f"random state it saved (seed {checkpoint['seed']}'s dropout masks), so its record would name a seed it "
            f"did not use: resume with seed={checkpoint['seed']}"
        )
    check_resume_optim(optim, checkpoint, ckpt_path)


def check_resume_optim(optim: dict, checkpoint: dict, ckpt_path) -> None:
    """A ConfigError where this run's update rule (`optim`: rnnreg.task_config.optim_settings, the clip included) is
    not the one `checkpoint` was trained with, in a setting a resume cannot change: one its optimiser state holds
    (the new value would not be used) or the lr schedule's (its epochs so far followed the old schedule, and it goes
    on from the lr it saved: the run would follow neither). Its record would name values it did not train with."""
    saved = (checkpoint.get("hyper_parameters") or {}).get("optim") or {}
    for key in RESUMED_OPTIM:
        if key not in saved or key not in optim or float(saved[key]) == float(optim[key]):
            continue
        name = "trainer.gradient_clip_val" if key == "clip" else f"optim.{key}"
        why = (
            "a resumed run goes on with the optimiser state it saved, so the new value would not be used"
            if key in SAVED_WITH_THE_OPTIMISER
            else "its epochs so far followed that lr schedule and a resume goes on from the lr it saved, so the run "
            "would follow neither schedule"
        )
        raise ConfigError(
            f"{name}={optim[key]} where {ckpt_path} was trained with {saved[key]}: {why}: resume with "
            f"{name}={saved[key]}, or start a new run"
        )


def check_resume_streams(checkpoint: dict, ckpt_path, batch_size: int | None, bptt: int | None) -> None:
    """A ConfigError where `checkpoint` stopped inside an epoch and this run's data.batch_size is not the streams its
    carried state holds, or its data.bptt not the windows it counted: it would go on from another place in the stream
    (rnnreg-train's check_resume_settings, and a library user's own fit: before, a traceback at its first step)."""
    carry = checkpoint.get("train_carry")
    streams = carry["state"][0].size(1) if carry else None
    if batch_size is not None and streams is not None and streams != batch_size:
        raise ConfigError(
            f"data.batch_size={batch_size} where {ckpt_path} was stopped inside an epoch trained with "
            f"data.batch_size={streams} (its carried state holds {streams} streams): resume with "
            f"data.batch_size={streams}"
        )
    counted_in = checkpoint.get("train_bptt")
    if bptt is not None and counted_in is not None and counted_in != bptt:
        raise ConfigError(
            f"data.bptt={bptt} where {ckpt_path} was stopped inside an epoch after "
            f"{counted(checkpoint.get('train_window', 0), 'window')} of data.bptt={counted_in}: resume with "
            f"data.bptt={counted_in} (or from an epoch's end)"
        )


def check_resume_window(checkpoint_window: int, epoch: int, datamodule, limit, ckpt_path: str) -> None:
    """A ConfigError before training where a checkpoint stopped inside epoch `epoch` (counted from 0) after
    `checkpoint_window` windows and this run's epochs have no more windows than that (another
    trainer.limit_train_batches, `limit`): the resumed epoch would train none and end as if complete."""
    if not checkpoint_window or not hasattr(datamodule, "train_windows"):
        return
    total = datamodule.train_windows()
    windows = limit_batches(total, limit)
    corpus = getattr(datamodule, "corpus", None)
    if checkpoint_window >= total and corpus is not None:  # no limit's doing: the train split itself is shorter
        raise ConfigError(
            f"{ckpt_path} was stopped inside epoch {epoch + 1} after {counted(checkpoint_window, 'window')} and this "
            f"data's train split {corpus.paths['train']} has {counted(total, 'window')} in an epoch "
            f"(data.batch_size={datamodule.batch_size} streams of data.bptt={datamodule.bptt}): it is shorter than the "
            f"train file the run trained on (changed since?): resume it on that file as it was, or train a new run"
        )
    if checkpoint_window >= windows:
        raise ConfigError(
            f"{ckpt_path} was stopped inside epoch {epoch + 1} after {counted(checkpoint_window, 'window')} and "
            f"this run's epochs have {counted(windows, 'window')} (trainer.limit_train_batches={limit}): the resumed "
            f"epoch would train none; resume with the trainer.limit_train_batches it was trained with"
        )


class ResumedData(NamedTuple):
    """What a resume compares with the data it is given (check_resume_data): the data fingerprint its checkpoint (or
    resume file) records (None: one from before it was recorded), its vocabulary, the window and epoch it stopped at,
    and its best validation score in words ("its run's best_val_ppl 123.45"; None before any validation)."""

    fingerprint: dict | None
    vocab: list | None
    window: int
    epoch: int
    best: str | None


def resumed_data(checkpoint: dict) -> ResumedData:
    """A checkpoint's ResumedData (its training state checked: check_training_state)."""
    best = recorded_best_val(checkpoint)
    return ResumedData(
        checkpoint.get("data_fingerprint"),
        checkpoint.get("vocab"),
        checkpoint.get("train_window", 0),
        checkpoint.get("epoch", 0),
        None if best is None else f"its run's best_val_ppl {best:.2f}",
    )


def check_resume_data(resumed: ResumedData, corpus, ckpt_path, trains: bool = True) -> list[str]:
    """Where the data a resume is given is not the data its checkpoint `ckpt_path` was trained on (rnnreg.data.Corpus's
    fingerprints against the checkpoint's): a ConfigError before anything is written where the train split changed
    and the checkpoint was stopped inside an epoch (its window would be counted in streams cut from other text); else
    the lines to warn with: a train split changed at an epoch's end (training goes on over other text), a validation
    split changed (the run's best score was measured on the other), a test split changed (the final test scores it).
    [] for a checkpoint without a fingerprint, or of another vocabulary (restore_resume_state refuses it, saying
    why). Where the resume `trains` nothing (a run stopped in its final test), only its test split is said."""
    fingerprints = getattr(corpus, "fingerprints", None)
    if resumed.fingerprint is None or fingerprints is None or resumed.vocab != corpus.itos:
        return []
    ours, theirs = fingerprints(), resumed.fingerprint
    lines = []
    if ours["train"] != theirs["train"] and trains:
        train = corpus.paths["train"]
        if resumed.window:
            raise ConfigError(
                f"{ckpt_path} was stopped inside epoch {resumed.epoch + 1} after "
                f"{counted(resumed.window, 'window')} and this data's train split {train} is not the one its run "
                f"trained on (changed since the checkpoint: its words or their order differ): the resume would go on "
                f"at window {resumed.window + 1} of streams cut from other text; resume it on that file as it was "
                f"(restore it), or from a checkpoint taken at an epoch's end, or train a new run"
            )
        lines.append(
            f"{ckpt_path} was trained on another train split than {train} (changed since the checkpoint: its words "
            f"or their order differ): the resumed run trains on other text than its run's"
        )
    if ours["valid"] != theirs["valid"] and resumed.best is not None and trains:
        lines.append(
            f"{ckpt_path}: {resumed.best} and best.ckpt were measured on another validation split than "
            f"{corpus.paths['valid']} (changed since the checkpoint): the resumed run's best.ckpt and early stopping "
            f"compare them with perplexities of this one"
        )
    if ours["test"] != theirs["test"]:
        lines.append(
            f"{ckpt_path}: the test split {corpus.paths['test']} is not the one its run had (changed since the "
            f"checkpoint: its words or their order differ): the resumed run's final test scores this one, not "
            f"comparable with a test on its run's"
        )
    return lines


def check_resume_against(resumed: ResumedData, corpus, datamodule, limit, ckpt_path, trains: bool = True) -> list[str]:
    """The checks of a resume against the data and the trainer it is given, one function for rnnreg-train (before
    its fit) and a library user's own trainer.fit(..., ckpt_path=...) (restore_resume_state), so that the two cannot
    drift: check_resume_data's (its ConfigError, else the lines to warn with, returned), then check_resume_window's
    (`limit`: the trainer's limit_train_batches). Where the resume `trains` nothing (a run stopped in its final
    test), only its test split is compared: it trains no window."""
    lines = check_resume_data(resumed, corpus, ckpt_path, trains)
    if trains:
        check_resume_window(resumed.window, resumed.epoch, datamodule, limit, ckpt_path)
    return lines


# the overrides that choose a run's corpus (its words): the data option, its folder, its files
CORPUS_OVERRIDES = ("data=", "data.data_dir=", "data.files.")


def data_overrides(run: Path) -> str:
    """The overrides of the run in folder `run` that chose its corpus (data=..., data.data_dir, data.files: not its
    data.bptt, say, which reads the same words), after the command-line flags its record keeps (--config-dir ...),
    or "" (none, or no record it can read: the refusal it adds to says enough without them)."""
    return with_recorded_flags(run, recorded_overrides_of(run, CORPUS_OVERRIDES))


def with_recorded_flags(run: Path, overrides: str) -> str:
    """`overrides` of the run in folder `run` after the flags its command had that Hydra keeps apart (--config-dir
    of the user's own configs, which its experiment= or data= options may need); "" where `overrides` is."""
    flags = recorded_run_command(run)[1:]
    return " ".join([*map(shlex.quote, flags), overrides]) if overrides else ""


def recorded_overrides_of(run: Path, prefixes: tuple[str, ...]) -> str:
    """The overrides of the run in folder `run` that start with one of `prefixes`, a key given twice once, as Hydra
    applied it (its last value), or "" (none, or no record it can read)."""
    try:
        overrides = recorded_overrides(run) or []
    except (DataError, OSError):  # (OSError: recorded_overrides lets a file it may not open through)
        return ""
    applied = {override_key(o): o for o in overrides if o.startswith(prefixes)}
    return " ".join(applied.values())


# the model settings that decide its weights' shapes, and the option that sets each where one does
MODEL_SHAPE = {
    "hidden_size": None,
    "num_layers": None,
    "layer_norm": "regularizer=layer_norm",
    "tie_weights": "regularizer=tied_embeddings",  # (the decoder's weight a parameter of its own or the embedding's)
}


def check_resume_model(model: dict, checkpoint: dict, ckpt_path) -> None:
    """A ConfigError before anything is written where this run's `model` config is not the one `checkpoint` was
    trained with in a setting that shapes its weights (a resume goes on with them): the line names the setting, and
    the model overrides of the checkpoint's run (experiment=paper_large, say) where its record gives them (before:
    a tensor's shapes, once the run had begun)."""
    hparams = checkpoint.get("hyper_parameters")
    saved = hparams.get("model") if isinstance(hparams, dict) else None
    if not isinstance(saved, dict):  # (a file not written by rnnreg-train: check_training_state says what is off)
        return
    for key, option in MODEL_SHAPE.items():
        if key not in saved or key not in model or saved[key] == model[key]:
            continue
        was, given = (str(v).lower() if isinstance(v, bool) else v for v in (saved[key], model[key]))
        run = Path(str(ckpt_path)).parent.parent
        recorded = with_recorded_flags(
            run, recorded_overrides_of(run, ("experiment=", "model=", "model.", "regularizer="))
        )
        fix = f"{recorded}, from its run's .hydra/overrides.yaml" if recorded else f"model.{key}={was}"
        raise ConfigError(
            f"model.{key}={given} where {ckpt_path} was trained with model.{key}={was}"
            + (f" ({option})" if option and saved[key] else "")
            + f": its weights fit that model only: resume with the model it was trained with ({fix})"
        )


def vocabulary_refusal(
    ckpt_path: str | None, trained: list[str], vocab: list[str], train_file, verb: str, run: Path | None = None
) -> str:
    """The line refusing to `verb` (evaluate, resume) a checkpoint trained on the vocabulary `trained` with this
    data's `vocab`, read from `train_file`. Where its run's record (in `run`, its run's folder: by default the one
    above its checkpoints/) gives this very train file, the file changed since the run: the line says so and how,
    rather than naming the data the command already gives."""
    if run is None and ckpt_path:
        run = Path(str(ckpt_path)).parent.parent
    if len(trained) == len(vocab):  # (a word in two places, or words in another order: the sizes say nothing)
        moved = sum(a != b for a, b in zip(trained, vocab, strict=True))
        sizes = f" than this data (both {len(vocab)} words, {counted(moved, 'word')} at another id)"
    else:
        sizes = f" ({len(trained)} words) than this data ({len(vocab)} words)"
    head = f"{ckpt_path or 'the checkpoint'} was trained on another vocabulary{sizes}"
    recorded = recorded_train_file(run) if run is not None else None
    if recorded is not None and train_file is not None and same_file(recorded, train_file):
        known, ours = set(trained), set(vocab)
        added, lost = [w for w in vocab if w not in known], [w for w in trained if w not in ours]
        change = "; ".join(
            f"{counted(len(words), 'word')} {what} (e.g. {', '.join(words[:3])})"
            for words, what in ((added, "its vocabulary lacks"), (lost, "of its vocabulary gone"))
            if words
        )
        return (
            f"{head}: its run trained on this train file {train_file} (its .hydra/config.yaml), which has changed "
            f"since, now with {change or 'its words first seen in another order'}: {verb} it on that file as it was "
            f"(restore it), or train a new run on the corpus as it is"
        )
    data = data_overrides(run) if run is not None else ""
    if not data and run is not None and (choice := default_data(run)):
        given = with_recorded_flags(run, f"data={choice}")
        return f"{head}: {verb} it on the data it was trained on ({given}, its run's .hydra/hydra.yaml records)"
    return f"{head}: {verb} it on the data it was trained on" + (
        f" ({data}, from its run's .hydra/overrides.yaml)" if data else ""
    )


def default_data(run: Path) -> str | None:
    """The data option the run in folder `run` ran with where its overrides chose no corpus (its config's default,
    PTB, or its experiment's), as its hydra.yaml records it; None where its overrides chose its corpus, or its
    record cannot be read."""
    try:
        overrides = recorded_overrides(run)
    except (DataError, OSError):  # (OSError: recorded_overrides lets a file it may not open through)
        return None
    if overrides is None or any(o.lstrip("+").startswith(CORPUS_OVERRIDES) for o in overrides):
        return None
    return recorded_choice(run, "data")


def recorded_train_file(run: Path) -> Path | None:
    """The train file of the run in folder `run`, from its .hydra/config.yaml, or None where that does not say it
    plainly."""
    config_file = run / ".hydra" / "config.yaml"
    try:
        data = section(read_yaml(config_file), config_file, "data")
        folder, name = data.get("data_dir"), section(data, config_file, "files", "train").get("name")
    except (DataError, OSError):
        return None
    if not (isinstance(folder, str) and isinstance(name, str)) or "${" in folder + name:
        return None  # (PTB's folder is an interpolation: its files are checked against their sums)
    if not Path(folder).expanduser().is_absolute():
        return None  # (relative to the folder the run started in, which this command need not be in)
    return Path(folder).expanduser() / name


def same_file(a: Path, b) -> bool:
    try:
        return a.resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def check_resume_vocabulary(trained: list[str] | None, corpus, ckpt_path, run: Path | None = None) -> None:
    """A CheckpointError where the checkpoint (or group resume file) `ckpt_path` was trained on another vocabulary,
    `trained` (None: one that records none), than this data's `corpus`: vocabulary_refusal's line (`run`: the folder
    whose .hydra/config.yaml names the train file it trained on; by default the one above its checkpoints/)."""
    if trained is not None and trained != corpus.itos:
        raise CheckpointError(
            vocabulary_refusal(ckpt_path, trained, corpus.itos, corpus.paths.get("train"), "resume", run)
        )
