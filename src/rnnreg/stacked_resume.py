"""A stacked group's resume file (`<sweep>/.stacked/group_N.pt`, written at each epoch's end and at a stop): what
it holds of a group trainer (group_state, apply_group_state); read as tensors and plain data only, and checked
before anything is trained or written: its fingerprint (the group key and its members' overrides), the program,
device and width it was written with, its counts; and why it cannot go on where it cannot. The launcher reads it
before its jobs start, the group trainer again before it goes on. A group without one whose members all ended in
an earlier run of the sweep hands on their results (group_done)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rnnreg.errors import CheckpointError, ConfigError, TrainingDiverged, first_line
from rnnreg.multirun_jobs import same_overrides
from rnnreg.resumed_run import checked_labels
from rnnreg.run_record import recorded_metrics
from rnnreg.stacked_settings import padded_size

if TYPE_CHECKING:
    from rnnreg.resume_checks import ResumedData
    from rnnreg.stacked_launcher import Job
    from rnnreg.stacked_train import GroupTrainer, HostCopies


MEMBER_STATUSES = ("running", "stopped", "failed", "completed")


@dataclass
class Member:
    """One member's bookkeeping in a group trainer (plain data: it goes into the group's resume file as it is)."""

    status: str = "running"  # one of MEMBER_STATUSES (stopped: by early stopping)
    error: str | None = None
    epochs: int = 0
    val_ppl: float | None = None
    best_val: float = math.inf
    early_stopping: dict | None = None  # its EarlyStopping's state_dict after the last epoch
    words: int = 0
    rows: list = field(default_factory=list)  # csv/metrics.csv rows, as Lightning's CSVLogger writes them
    train_seconds: float = 0.0  # the group's time while the member trained (an early-stopped one's stops)
    fit_seconds: float = 0.0


def group_state(trainer: GroupTrainer, copies: HostCopies) -> dict:
    """What group `trainer`'s resume file holds now (`copies`: its weights and momentum buffers on the host,
    unpadded): everything it needs to go on exactly, with the fingerprint and the program, device and width that
    read_group_resume checks."""
    import torch  # (only a group trainer calls this: grouping is plain Hydra and OmegaConf)

    from rnnreg.checkpoint_contents import layer_norm_record

    host, step, names = trainer.host, trainer.step, trainer.names
    return {
        "fingerprint": trainer.fingerprint(),
        "data_fingerprint": trainer.datamodule.load().fingerprints(),  # the splits it trained and validated on
        **layer_norm_record(trainer.model.layer_norm),
        "vocab": trainer.vocab,  # as a run's checkpoint: a resume on another (a reordered train file) says so
        "program": step.name,
        "device": trainer.device.type,
        "units": trainer.model.units,  # everything here unpadded; the program's rounding is that width's
        "pad_hidden_to": trainer.pad_hidden_to,
        "params": dict(zip(names, copies.weights)),
        "momentum_buffers": None if copies.buffers is None else dict(zip(names, copies.buffers)),
        "best_params": trainer.unpadded_on_host(trainer.best_params),
        "generators": [host(g) for g in trainer.model.generator_states()],
        "rng": torch.get_rng_state(),
        "active": host(step.active),
        "members": [asdict(m) for m in trainer.members],
        "epoch": trainer.epoch,
        "window": trainer.window,
        "global_step": trainer.global_step,
        "state": None if trainer.window == 0 else tuple(host(t) for t in step.state()),
        "nll_sum": host(step.nll_sum),
        "tokens": trainer.tokens,
        "train_seconds": trainer.train_seconds,
        "fit_seconds": trainer.fit_seconds,
        "epoch_seconds_before": trainer.epoch_seconds_before,
        "wandb_runs": [folder.wandb_id for folder in trainer.folders],  # a resumed group logs on into them
        "wandb_labels": [folder.wandb_labels for folder in trainer.folders],  # under their groups and names
    }


def apply_group_state(trainer: GroupTrainer, state: dict) -> None:
    """Group `trainer` as its resume file holds it (`state`: read_group_resume's; any value that does not fit
    raises)."""
    import torch

    step = trainer.step
    trainer.pad_into(trainer.params, state["params"])
    if trainer.best_params is not None:
        trainer.pad_into(trainer.best_params, state["best_params"])
    if step.buffers is not None:
        trainer.pad_into(step.buffers, state["momentum_buffers"])
    trainer.model.set_generator_states(state["generators"])
    torch.set_rng_state(state["rng"])
    trainer.members = [Member(**m) for m in state["members"]]
    trainer.epoch, trainer.window, trainer.global_step = state["epoch"], state["window"], state["global_step"]
    step.active.copy_(state["active"])
    step.global_step.fill_(trainer.global_step)
    step.carry(state["state"])
    step.nll_sum.copy_(state["nll_sum"])
    trainer.tokens = state["tokens"]
    trainer.train_seconds, trainer.fit_seconds = state["train_seconds"], state["fit_seconds"]
    trainer.epoch_seconds_before = state["epoch_seconds_before"]


def group_done(jobs: list[Job]) -> list[tuple[str, object]] | None:
    """A group whose every member finished in an earlier run of the sweep (resume): their results (None where one
    did not, or its metrics.json is unreadable, as the launcher's grouping reads it: rnnreg.run_record)."""
    results = []
    for job in jobs:
        metrics = recorded_metrics(job.output_dir)
        if metrics.get("status") == "completed":  # a NaN best, written as null (rnnreg.io), is handed on as NaN
            if "best_val_ppl" not in metrics:  # no validation ran: nothing to hand on, as from a run
                results.append(("completed", None))
                continue
            best = metrics["best_val_ppl"]
            results.append(("completed", math.nan if best is None else best))
        elif metrics.get("status") == "failed":
            results.append(("failed", TrainingDiverged(metrics.get("error", "failed"))))
        else:
            return None
    return results


def load_resume_file(path: Path, mmap: bool = False) -> dict:
    """A group's resume file as tensors and plain data only: torch's weights_only loader, so that unpickling a file
    from elsewhere (untrusted, as a checkpoint is) cannot run its code. `mmap`: read tensors only when used."""
    import torch  # (only a resume reads one: grouping is plain Hydra and OmegaConf)

    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def resume_fingerprints(stacked_dir: Path) -> list[tuple[int, Path, list]]:
    """(number, path, fingerprint: group key and members' overrides) of each resume file of a stacked sweep."""
    found = []
    for path in sorted(stacked_dir.glob("group_*.pt")):
        number = path.stem.removeprefix("group_")
        if not number.isdigit():
            continue
        try:
            state = load_resume_file(path, mmap=True)
            found.append((int(number), path, checked_fingerprint(state)))
        except Exception as err:
            raise unreadable_resume(path, err) from None
    return found


def checked_wandb_labels(labels, members: int, path: Path) -> list[dict]:
    """A resume file's `wandb_labels` (each member's W&B group and name, untrusted input like the whole file) as
    rnnreg.loggers.wandb_logger takes them (resumed_group, resumed_name), checked as a checkpoint's are."""
    if not (isinstance(labels, list) and len(labels) == members and all(isinstance(x, dict) for x in labels)):
        raise unreadable_resume(path, ValueError("wandb_labels: not one dict per member"))
    checked = []
    for k, member in enumerate(labels):
        try:
            checked.append(checked_labels(member, path))
        except CheckpointError:
            why = f"member {k}: its W&B group or name is not a line of printable text"
            raise unreadable_resume(path, ValueError(why)) from None
    return checked


def unreadable_resume(path: Path, why) -> CheckpointError:
    """A group's resume file that cannot be read (cut short, edited): one line, and the way on."""
    return CheckpointError(
        f"{path} is not a readable resume file ({first_line(why)}): move it away to train its group again from "
        f"its start"
    )


def checked_fingerprint(state) -> list:
    """A resume file's fingerprint (its group key, JSON, and each member's overrides), checked with the width its
    group held; a ValueError where the file holds something else."""
    fingerprint = state.get("fingerprint") if isinstance(state, dict) else None
    if not (isinstance(fingerprint, (list, tuple)) and len(fingerprint) == 2):
        raise ValueError("no fingerprint of its group")
    key, members = fingerprint
    try:
        json.loads(key)  # (setting_differences reads it)
    except (TypeError, ValueError):
        raise ValueError("its group key is not JSON") from None
    if not isinstance(members, (list, tuple)) or not all(
        isinstance(m, (list, tuple)) and all(isinstance(o, str) for o in m) for m in members
    ):
        raise ValueError("its members' overrides are not lists of overrides")
    for name in ("units", "pad_hidden_to"):
        value = state.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not a whole number of at least 1")
    return [key, [list(m) for m in members]]


def resume_refusal(resume_file: Path, written: dict, program: str, device: str, hidden: int, pad: int) -> str | None:
    """Why a group's resume file (`written`: its program, device and hidden width) cannot go on exactly in a run
    of `program` on `device` (a device type) holding its `hidden` units padded to a multiple of `pad`; None when it
    can."""
    if written.get("program", program) != program:  # the other program would not go on exactly
        return (
            f"{resume_file} was written by the {written['program']} program and this run would go on with {program}, "
            f"not exactly: resume with hydra.launcher.program={written['program']} (in_turn: on a CPU)"
        )
    if written.get("device", device) != device:  # its masks' generators are that device's
        return (
            f"{resume_file} was written on {written['device']} and this run is on {device}: resume with "
            f"trainer.accelerator={'gpu' if written['device'] == 'cuda' else written['device']}"
        )
    units, held = padded_size(hidden, pad), written.get("units", hidden)  # (a file from before padding: unpadded)
    if held != units:  # other GEMM shapes: other rounding
        return (
            f"{resume_file} was written holding the hidden units as {held} and this run holds them as {units}, not "
            f"exactly: resume with hydra.launcher.pad_hidden_to={written.get('pad_hidden_to', 1)}"
        )
    return None


def same_fingerprint(a: list, b: list) -> bool:
    """Two groups' fingerprints (group key, members' overrides) name one group: each member's overrides in
    whatever order its command gave them."""
    (key_a, jobs_a), (key_b, jobs_b) = a, b
    return key_a == key_b and len(jobs_a) == len(jobs_b) and all(map(same_overrides, jobs_a, jobs_b))


def read_group_resume(path: Path, fingerprint: list, group: int, run: tuple, max_epochs: int) -> dict:
    """Group `group`'s resume file, checked against this run (`fingerprint`: its group key and members' overrides;
    `run`: its program, device type, hidden size and pad_hidden_to; its trainer.max_epochs): a ConfigError where it
    belongs to another sweep or cannot go on exactly in this run, a CheckpointError where it cannot be read or
    holds counts no run writes (edited by hand). Its tensors are checked as they are put in place."""
    try:
        state = load_resume_file(path)
        written = checked_fingerprint(state)
    except Exception as err:
        raise unreadable_resume(path, err) from None
    if not same_fingerprint(written, fingerprint):  # (the launcher's resumed_groups says which, up front)
        key, now = written[0], fingerprint[0]
        what = f"settings ({setting_differences(key, now)})" if key != now else "jobs"
        raise ConfigError(
            f"{path} was written by another sweep (other {what} in group {group}): "
            f"resume with the same command and hydra.sweep.dir, or start a new sweep"
        )
    if why := resume_refusal(path, state, *run):
        raise ConfigError(why)
    from rnnreg.checkpoint_contents import layer_norm_problem  # (torch: at a resume only)

    layer_norm = isinstance(state.get("params"), dict) and any("_norms_" in name for name in state["params"])
    if why := layer_norm_problem(state, layer_norm, path):
        raise CheckpointError(why)
    state.setdefault("epoch_seconds_before", 0.0)  # (a file from before it was kept)
    try:
        check_counts(state, max_epochs, len(fingerprint[1]))
    except (KeyError, TypeError, ValueError) as err:
        raise unreadable_resume(path, err) from None
    return state


def check_counts(state: dict, max_epochs: int, members: int) -> None:
    """A ValueError (KeyError where one is missing) where the file's position, seconds or members are not what a
    group of `members` training for `max_epochs` epochs writes."""
    counts = {name: state[name] for name in ("epoch", "window", "global_step", "tokens")}
    seconds = {name: state[name] for name in ("train_seconds", "fit_seconds", "epoch_seconds_before")}
    for name, value in (counts | seconds).items():
        whole = name in counts
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value < 0:
            raise ValueError(f"{name}={value!r} is not a {'whole ' if whole else ''}number of at least 0")
    if state["epoch"] > max_epochs:  # (the group key holds max_epochs: edited by hand)
        raise ValueError(f"epoch={state['epoch']} is beyond the group's trainer.max_epochs={max_epochs}")
    if not isinstance(state["members"], list) or len(state["members"]) != members:
        raise ValueError(f"members: not the group's {members}")
    from rnnreg.checkpoint_contents import briefly, data_fingerprint_problem
    from rnnreg.resume_checks import callback_state_problem  # (torch and Lightning: at a resume only)

    if "data_fingerprint" in state and (why := data_fingerprint_problem(state["data_fingerprint"])):
        raise ValueError(why.removeprefix("its "))
    vocab = state.get("vocab", [])
    if not (isinstance(vocab, list) and all(isinstance(w, str) for w in vocab)):
        raise ValueError(f"vocab {briefly(vocab)} is not a list of words")
    for k, member in enumerate(state["members"]):  # what a member's epochs read: its status, early stopping, counts
        if not isinstance(member, dict) or member.get("status", "running") not in MEMBER_STATUSES:
            raise ValueError(
                f"member {k}: not a member's bookkeeping (its status: one of {', '.join(MEMBER_STATUSES)})"
            )
        stopping = member.get("early_stopping")
        if stopping is not None and (why := callback_state_problem({"EarlyStopping": stopping})):
            raise ValueError(f"member {k}: {why.removeprefix('its ')}")
        for name in ("epochs", "words"):
            if isinstance(member.get(name, 0), bool) or not isinstance(member.get(name, 0), int):
                raise ValueError(f"member {k}: {name}={member[name]!r} is not a whole number")


def check_group_data(state: dict, corpus, path: Path, run: Path, max_epochs: int) -> list[str]:
    """A group's resume file `path` (read_group_resume's `state`) against the data it goes on with (`corpus`), by a
    run's rules (rnnreg.resume_checks): a CheckpointError where it trained on another vocabulary (`run`: a member's
    folder, whose record names its train file), a ConfigError where its train split changed and it stopped inside an
    epoch; else the lines to warn with. A group with nothing left to train (group_trains: stopped in its final test) is
    compared on its test split only, as a run stopped in its final test is: its train and valid splits are unused."""
    from rnnreg.resume_checks import (  # (torch and Lightning: at a resume only)
        check_resume_data,
        check_resume_vocabulary,
    )

    check_resume_vocabulary(state.get("vocab"), corpus, path, run)
    resumed = resumed_group_data(state, corpus.itos)
    return check_resume_data(resumed, corpus, path, trains=group_trains(state, max_epochs))


def trains_on(epoch: int, max_epochs: int, statuses: Iterable[str]) -> bool:
    """Whether a group at 0-based `epoch` trains another epoch (GroupTrainer.fit's loop): one of its trainer.max_epochs
    left and a member whose status is still "running"."""
    return epoch < max_epochs and any(status == "running" for status in statuses)


def group_trains(state: dict, max_epochs: int) -> bool:
    """Whether a group resumed from its resume file (read_group_resume's `state`) trains any window (trains_on); else
    only its final test is left."""
    return trains_on(state["epoch"], max_epochs, (member.get("status", "running") for member in state["members"]))


def resumed_group_data(state: dict, vocab: list[str]) -> ResumedData:
    """What a group's resume file (read_group_resume's `state`) gives a check of the data it goes on with
    (rnnreg.resume_checks.check_resume_data): its data fingerprint (None in a file from before it was kept), its
    vocabulary (a file from before it was kept: the group's own, `vocab`), where it stopped, and its members' best
    validation scores."""
    from rnnreg.resume_checks import ResumedData  # (torch and Lightning: at a resume only)

    best = [m.get("best_val") for m in state["members"]]
    scores = [f"{b:.2f}" for b in best if isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)]
    said = f"its members' best_val_ppl ({', '.join(scores)})" if scores else None
    return ResumedData(state.get("data_fingerprint"), state.get("vocab", vocab), state["window"], state["epoch"], said)


def setting_differences(before: str, now: str) -> str:
    """Where two group keys differ, as `key=value where this command has key=value` (the first such key)."""

    def first(a, b, path: str):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if (found := first(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))) is not None:
                    return found
            return None
        return None if a == b else (path, a, b)

    found = first(json.loads(before), json.loads(now), "")
    if found is None:
        return "other settings"
    path, a, b = found
    return f"{path}={json.dumps(a)} where this command has {path}={json.dumps(b)}"
