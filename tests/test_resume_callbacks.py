"""Resume and the callbacks' states: a state edited by hand or crafted (checkpoints are untrusted input) is one line
before anything is written, and early stopping goes on with the command line's patience."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from helpers import TINY, folder_contents, run, write_corpus
from rnnreg.errors import CheckpointError, ConfigError
from rnnreg.resume_checks import check_training_state
from rnnreg.train import train

STOPPING = ("callbacks=early_stopping", "trainer.limit_train_batches=3", "test=false")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> dict:
    """A real (tiny) run of 1 epoch with early stopping, in its own folder, and its corpus."""
    root = tmp_path_factory.mktemp("callback_states")
    corpus = write_corpus(root / "corpus")
    args = ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", *STOPPING]
    run("rnnreg-train", *args, "trainer.max_epochs=1", f"hydra.run.dir={root}/run")
    return {"root": root, "run": root / "run", "args": args}


def state_of(checkpoint: dict, callback: str) -> dict:
    """The state of the callback of that class (its key is the class's name and its settings)."""
    (key,) = [key for key in checkpoint["callbacks"] if key.split("{")[0] == callback]
    return checkpoint["callbacks"][key]


def edited(checkpoint: dict, callback: str, field: str, value) -> dict:
    state = state_of(checkpoint, callback)
    if value is DELETED:
        del state[field]
    else:
        state[field] = value
    return checkpoint


DELETED = object()
WHOLE, SCORE, TEXT, PATH = "a whole number", "a 0-dim float tensor", "a string", "a local path without '..'"
SCORES = "a mapping of local paths (without '..') to 0-dim float tensors"
# a 1-number tensor of more dimensions: Lightning formats best_score with :.3f, which only a 0-dim tensor takes
MATRIX = torch.tensor([[1e9]], dtype=torch.float64)
# (callback, field, value, what it must be): values Lightning's or rnnreg's load_state_dict reads on a resume
WRONGLY_TYPED = [
    ("EarlyStopping", "patience", "x", WHOLE),
    ("EarlyStopping", "wait_count", None, WHOLE),
    ("EarlyStopping", "best_score", "abc", SCORE),
    ("EarlyStopping", "best_score", 40.0, SCORE),  # a float: Lightning calls best_score.to(device)
    ("EarlyStopping", "best_score", MATRIX, SCORE),
    ("EarlyStopping", "stopped_epoch", -1, WHOLE),
    ("EarlyStopping", "stopping_reason", 9, "an EarlyStoppingReason's value"),
    ("EarlyStopping", "wait_count", DELETED, None),
    ("BestCheckpoint", "best_model_score", "x", f"{SCORE} or None"),
    ("BestCheckpoint", "dirpath", 5, f"{PATH} or None"),
    ("BestCheckpoint", "best_model_path", None, PATH),
    ("BestCheckpoint", "best_k_models", ["a"], SCORES),
    ("BestCheckpoint", "kth_value", torch.tensor([40.0]), SCORE),
    ("LastCheckpoint", "kth_value", "x", SCORE),
    ("LastCheckpoint", "last_model_path", 3, PATH),
    # a path Lightning deletes once it saves the next checkpoint, where checkpoints/ is among its parents unresolved:
    # checkpoints/../metrics.json (or ../../.bashrc) would pass, and go
    ("LastCheckpoint", "last_model_path", "/r/checkpoints/../metrics.json", PATH),
    ("BestCheckpoint", "kth_best_model_path", "/r/checkpoints/../../x", PATH),
    (
        "BestCheckpoint",
        "best_k_models",
        {"/r/checkpoints/../y": torch.tensor(1.0)},
        SCORES,
    ),
    ("LastCheckpoint", "last_model_path", "s3://bucket/key", PATH),  # (Lightning deletes a remote previous file)
    # a score that is no tensor: Lightning compares it with the next checkpoint's (a traceback at the first save)
    ("BestCheckpoint", "best_k_models", {"/r/checkpoints/a.ckpt": "x"}, SCORES),
    ("SpeedMonitor", "train_words", "x", WHOLE),
    ("SpeedMonitor", "train_seconds", None, "a number"),
    ("LastValidation", "best", "x", "a number or None"),
]


def problem(callback: str, field: str, value, what: str | None) -> str:
    """The error's words after "its callbacks[<key>]"."""
    return f" has no {field!r}" if what is None else f"[{field!r}] is {value!r}, not {what}"


@pytest.mark.parametrize("callback, field, value, what", WRONGLY_TYPED)
def test_a_callback_state_of_the_wrong_type_is_refused_by_the_training_state_check(
    stopped_run, callback, field, value, what
):
    checkpoint = torch.load(stopped_run["run"] / "checkpoints/last.ckpt", weights_only=True)
    check_training_state(checkpoint, "good.ckpt")
    key = next(k for k in checkpoint["callbacks"] if k.split("{")[0] == callback)
    why = f"its callbacks[{key!r}]{problem(callback, field, value, what)}"
    with pytest.raises(CheckpointError, match=f"^x.ckpt is not a checkpoint rnnreg-train wrote: {re.escape(why)}; "):
        check_training_state(edited(checkpoint, callback, field, value), "x.ckpt")


def test_an_early_stop_recorded_without_its_reason_is_read_from_its_stopped_epoch(stopped_run):
    """An EarlyStopping state without stopping_reason (as Lightning before 2.6 wrote it, and a hand-edited file) that
    stopped (stopped_epoch > 0) is a run early stopping ended: its resume is refused, not trained on as if it had not
    stopped; one that did not stop goes on. An empty state, which Lightning does not load, is not checked."""
    from rnnreg.resume_checks import callback_state_problem, check_resume_settings

    checkpoint = torch.load(stopped_run["run"] / "checkpoints/last.ckpt", weights_only=True)
    state = state_of(checkpoint, "EarlyStopping")
    for field in ("stopping_reason", "stopping_reason_message"):
        del state[field]
    check_resume_settings({}, 5, checkpoint, "x.ckpt", patience=3)  # (stopped_epoch 0: not stopped)
    state |= {"stopped_epoch": 1, "wait_count": 1}
    with pytest.raises(ConfigError, match=r"^x.ckpt is from a run that early stopping ended after epoch 2: "):
        check_resume_settings({}, 5, checkpoint, "x.ckpt", patience=3)
    assert callback_state_problem({"EarlyStopping{'monitor': 'val/ppl'}": {}, "BestCheckpoint{}": {}}) is None


@pytest.mark.parametrize(
    "callback, field, value, what",
    [
        ("EarlyStopping", "patience", "x", WHOLE),
        ("EarlyStopping", "wait_count", None, WHOLE),
        ("EarlyStopping", "best_score", "abc", SCORE),
        ("EarlyStopping", "best_score", MATRIX, SCORE),
        ("EarlyStopping", "stopping_reason", 9, "an EarlyStoppingReason's value"),
        ("BestCheckpoint", "dirpath", 5, f"{PATH} or None"),
        ("LastCheckpoint", "last_model_path", "checkpoints/../metrics.json", PATH),
        ("BestCheckpoint", "best_model_score", "x", f"{SCORE} or None"),
        ("SpeedMonitor", "train_words", "x", WHOLE),
    ],
)
def test_resuming_a_callback_state_of_the_wrong_type_is_one_line_and_loses_nothing(
    stopped_run, tmp_path, callback, field, value, what
):
    """rnnreg-train ckpt_path=<its folder's last.ckpt> in the run's own folder, one callback value edited (before: a
    traceback from inside Lightning's restore, and metrics.json rewritten "failed"): exit 2, one line naming the
    value, and every file of the run as it was."""
    checkpoint = edited(
        torch.load(stopped_run["run"] / "checkpoints/last.ckpt", weights_only=True), callback, field, value
    )
    key = next(k for k in checkpoint["callbacks"] if k.split("{")[0] == callback)
    refused_in_one_line(
        stopped_run, tmp_path, checkpoint, f"its callbacks[{key!r}]{problem(callback, field, value, what)}"
    )


def resumed_in_its_folder(stopped_run, tmp_path, checkpoint: dict):
    """rnnreg-train ckpt_path=<its folder's last.ckpt> in a copy of the run's folder, last.ckpt replaced by
    `checkpoint`: the process, the folder, last.ckpt's path, and the folder's files before."""
    folder = tmp_path / "run"
    shutil.copytree(stopped_run["run"], folder)
    last = folder / "checkpoints/last.ckpt"
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    os.replace(tmp_path / "edited.ckpt", last)  # (last.ckpt may be a hard link to best.ckpt: that stays as it was)
    before = folder_contents(folder, leave_out=("train.log",))
    args = (*stopped_run["args"], "trainer.max_epochs=2", f"ckpt_path={last}", f"hydra.run.dir={folder}")
    return run("rnnreg-train", *args, check=False), folder, last, before


def refused_in_one_line(stopped_run, tmp_path, checkpoint: dict, why: str) -> None:
    """Resumed in its folder from `checkpoint`: exit 2, the one line `why`, no traceback, every file as it was."""
    proc, folder, last, before = resumed_in_its_folder(stopped_run, tmp_path, checkpoint)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert [line for line in lines if line.startswith("error")] == lines[-1:], proc.stderr[-3000:]
    assert lines[-1] == f"error: {last} is not a checkpoint rnnreg-train wrote: {why}; give a checkpoint it wrote"
    assert folder_contents(folder, leave_out=("train.log",)) == before


def test_resuming_a_callback_state_under_a_key_not_a_string_is_one_line_and_loses_nothing(stopped_run, tmp_path):
    """A state under an int key (Lightning names every state with a string; before: a traceback from LastValidation's
    on_load_checkpoint, key.startswith)."""
    checkpoint = torch.load(stopped_run["run"] / "checkpoints/last.ckpt", weights_only=True)
    checkpoint["callbacks"][5] = {"best_model_score": torch.tensor(1.0)}
    refused_in_one_line(stopped_run, tmp_path, checkpoint, "its callbacks key 5 is not a callback's name (a string)")


def test_a_state_of_a_callback_the_run_has_not_is_left_alone(stopped_run, tmp_path):
    """A state whose key only begins with BestCheckpoint (no callback of the run reads it, as Lightning leaves the
    states of callbacks a resume has not): the run trains on (before: LastValidation read its score by the key's
    prefix, float('x'), a traceback)."""
    checkpoint = torch.load(stopped_run["run"] / "checkpoints/last.ckpt", weights_only=True)
    checkpoint["callbacks"]["BestCheckpointOfAnother{}"] = {"best_model_score": "x"}
    proc, folder, _, _ = resumed_in_its_folder(stopped_run, tmp_path, checkpoint)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads((folder / "metrics.json").read_text())["epochs"] == 2


# -- early stopping's patience on a resume: the command line's ---------------------------------------------------
WORSE_LATER = (  # lr x2 an epoch after epoch 1: epochs 2 to 5 are worse than epoch 1 (and finite)
    "optim.decay=0.5",
    "optim.decay_start=1",
    "trainer.gradient_clip_val=100",
    "trainer.limit_train_batches=10",
    "callbacks=early_stopping",
    "test=false",
)
TIMING = {"train_seconds", "words_per_second", "words_per_second_median_step", "words_per_second_last_epoch"}


def early_stopping_state(path: Path) -> dict:
    return state_of(torch.load(path, weights_only=True), "EarlyStopping")


def test_a_resume_stops_early_on_the_command_lines_lower_patience(tiny_cfg, tmp_path):
    """Trained 2 epochs with patience 5 (epoch 2 worse than epoch 1), resumed with patience 1: epoch 3 is worse
    again, and the run stops there (before: Lightning kept the checkpoint's patience 5 and trained on)."""
    train(tiny_cfg(*WORSE_LATER, "callbacks.early_stopping.patience=5", "trainer.max_epochs=2", run="first"))
    first = early_stopping_state(tmp_path / "first/checkpoints/last.ckpt")
    assert first["wait_count"] == 1 and first["stopped_epoch"] == 0 and first["patience"] == 5
    ckpt = f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt"
    resumed = train(tiny_cfg(*WORSE_LATER, "callbacks.early_stopping.patience=1", "trainer.max_epochs=5", ckpt))
    assert resumed["epochs"] == 3
    state = early_stopping_state(tmp_path / "run/checkpoints/last.ckpt")
    assert state["patience"] == 1 and state["wait_count"] == 2 and state["stopped_epoch"] == 2  # (from 0)


def test_a_run_early_stopping_ended_trains_on_with_a_higher_patience_as_if_it_had_had_it(tiny_cfg, tmp_path):
    """Stopped by early stopping (patience 1, after epoch 2), resumed with patience 3: it trains on, and ends as the
    run with patience 3 throughout (before: refused as ended, and had it trained on, with the old patience and the
    old stop in its checkpoints)."""
    patience = ("callbacks.early_stopping.patience=3", "trainer.max_epochs=3")
    whole = train(tiny_cfg(*WORSE_LATER, *patience, run="whole"))
    assert whole["epochs"] == 3
    stopped = train(tiny_cfg(*WORSE_LATER, "callbacks.early_stopping.patience=1", "trainer.max_epochs=5", run="first"))
    assert stopped["epochs"] == 2
    state = early_stopping_state(tmp_path / "first/checkpoints/last.ckpt")
    assert state["stopped_epoch"] == 1 and state["wait_count"] == 1
    ckpt = f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt"
    with pytest.raises(
        ConfigError, match=r"ended after epoch 2: .*, or train on with callbacks.early_stopping.patience "
    ):
        train(tiny_cfg(*WORSE_LATER, "callbacks.early_stopping.patience=1", "trainer.max_epochs=3", ckpt, run="same"))
    assert not (tmp_path / "same" / "checkpoints").exists()
    without = r", or train on with callbacks=early_stopping and callbacks.early_stopping.patience above 1 \("
    with pytest.raises(ConfigError, match=without):  # resumed without early stopping: its patience needs it back
        train(tiny_cfg(*WORSE_LATER, "callbacks=default", "trainer.max_epochs=3", ckpt, run="same"))
    resumed = train(tiny_cfg(*WORSE_LATER, *patience, ckpt))
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in whole.items() if k not in TIMING}
    a, b = (early_stopping_state(tmp_path / f"{run}/checkpoints/last.ckpt") for run in ("whole", "run"))
    assert a == b and b["stopped_epoch"] == 0 and b["patience"] == 3 and b["wait_count"] == 2


def test_a_crafted_checkpoint_path_deletes_no_file_outside_the_run(stopped_run, tmp_path):
    """Resumed in its own folder, Lightning deletes the previous best.ckpt / last.ckpt it reads from the checkpoint,
    where the run's checkpoints/ is among that path's parents, `..` unresolved: a crafted
    `<run>/checkpoints/../../victim.txt` deleted victim.txt beside the run (before: exit 0 and the file gone)."""
    folder = tmp_path / "run"
    shutil.copytree(stopped_run["run"], folder)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    last = folder / "checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    crafted = str(folder / "checkpoints" / ".." / ".." / "victim.txt")
    for key, state in checkpoint["callbacks"].items():
        if key.startswith(("BestCheckpoint", "LastCheckpoint")):
            state["best_model_path"] = state["last_model_path"] = crafted
            scores = list(state.get("best_k_models", {}).values())
            state["best_k_models"] = {crafted: scores[0]} if scores else {}
            state["kth_best_model_path"] = crafted if state.get("kth_best_model_path") else ""
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    os.replace(tmp_path / "edited.ckpt", last)
    args = (*stopped_run["args"], "trainer.max_epochs=2", f"ckpt_path={last}", f"hydra.run.dir={folder}")
    proc = run("rnnreg-train", *args, check=False)
    assert proc.returncode == 2 and "not a local path without '..'" in proc.stderr, proc.stderr[-3000:]
    assert victim.read_text() == "keep me"
