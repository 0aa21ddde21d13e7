"""Issue 14 (sections 1-3): a checkpoint never runs code, resume keeps the best checkpoint and refuses a foreign
one, pre-emption is always recorded, and concurrent runs, full disks and file-size limits lose nothing.

The command-line refusals run as real processes, started together (one fixture) to keep the file short."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

import warm_start
from helpers import BIN, TINY, RunsCode, compose_config, folder_contents, started_with, write_corpus
from rnnreg import run_folder_check
from rnnreg.checkpoints import AtomicCheckpointIO
from rnnreg.command_line import check_command_line
from rnnreg.errors import CheckpointError, OutputError
from rnnreg.evaluate import evaluate
from rnnreg.io import load_checkpoint, replace_atomically
from rnnreg.report_runs import collect
from rnnreg.resume_checks import check_training_state
from rnnreg.run_folder_check import cannot_make_a_folder_in
from rnnreg.run_lock import RunLock
from rnnreg.task import load_task
from rnnreg.train import train


def popen(script: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = os.environ | {"HYDRA_FULL_ERROR": "0"} | (env or {})
    return warm_start.popen(
        [str(BIN / script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs
    )


def finish(proc: subprocess.Popen, timeout: float = 300, error: bool = True) -> tuple[int, list[str]]:
    """The exit status and the error: the one `error:` line, the last on stderr (Lightning's info lines before
    it, if training started), no traceback."""
    _, err = proc.communicate(timeout=timeout)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert "Traceback" not in err and errors == (lines[-1:] if error else []), err[-3000:]
    return proc.returncode, errors


def train_args(corpus: Path, run_dir: Path | str, *overrides: str) -> list[str]:
    return ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", f"hydra.run.dir={run_dir}", *overrides]


@contextmanager
def paused_at_its_second_epoch(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen]:
    """A real `rnnreg-train *args` process, held at the start of its second epoch while the block runs (its
    run folder locked, its first epoch's files written); it goes on when the block ends, however it ends."""
    paused, go = tmp_path / "paused", tmp_path / "go"
    proc = popen(
        "rnnreg-train",
        *args,
        "+callbacks.pause._target_=helpers.PauseAtEpoch",
        f"+callbacks.pause.paused={paused}",
        f"+callbacks.pause.go={go}",
    )
    try:
        deadline = time.time() + 240
        while not paused.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert paused.exists(), proc.communicate()[1][-3000:]
        yield proc
    finally:
        go.touch()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A real (tiny) checkpoint of rnnreg-train, and attacks on / foreign uses of it."""
    root = tmp_path_factory.mktemp("trust")
    corpus = write_corpus(root / "corpus")
    cfg = compose_config(
        ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", "trainer.max_epochs=1"]
        + ["trainer.limit_train_batches=3", "test=false"],
        root / "run",
    )
    train(cfg)
    good = root / "run/checkpoints/last.ckpt"
    files = {"good": good, "corpus": corpus, "root": root, "marker": root / "pwned"}
    checkpoint = torch.load(good, weights_only=True)  # our own checkpoint is plain data
    checkpoint["callbacks"]["evil"] = RunsCode(files["marker"])
    torch.save(checkpoint, root / "evil.ckpt")
    raw = good.read_bytes()
    (root / "truncated.ckpt").write_bytes(raw[: len(raw) // 2])
    (root / "text.ckpt").write_text("this is not a checkpoint\n")
    torch.save(torch.zeros(3), root / "tensor.ckpt")
    foreign = torch.load(good, weights_only=True)
    foreign["wandb_run_id"] = "../../elsewhere"  # not a W&B run id: a path out of the run folder
    torch.save(foreign, root / "run_id.ckpt")
    foreign = torch.load(good, weights_only=True)
    foreign["wandb_parts"] = "$(touch pwned)"  # the earlier parts' folders: a list of paths, not a string
    torch.save(foreign, root / "parts.ckpt")
    weights_only = torch.load(good, weights_only=True)  # as Lightning's save_weights_only writes one
    del weights_only["optimizer_states"], weights_only["lr_schedulers"]
    torch.save(weights_only, root / "weights_only.ckpt")
    # the same words in another order (another vocabulary of the same size), and another model shape
    write_corpus(root / "reordered", seed=5)
    procs = {
        "eval": popen(
            "rnnreg-eval",
            "data=text",
            f"data.data_dir={corpus}",
            f"ckpt_path={root}/evil.ckpt",
            f"hydra.run.dir={root}/eval",
        ),
        "generate": popen("rnnreg-generate", f"ckpt_path={root}/evil.ckpt"),
        "train": popen("rnnreg-train", *train_args(corpus, root / "train", f"ckpt_path={root}/evil.ckpt")),
        "truncated": popen("rnnreg-generate", f"ckpt_path={root}/truncated.ckpt"),
        "vocab": popen("rnnreg-train", *train_args(root / "reordered", root / "vocab", f"ckpt_path={good}")),
        "shape": popen(
            "rnnreg-train", *train_args(corpus, root / "shape", f"ckpt_path={good}", "model.hidden_size=24")
        ),
        "weights_only": popen(
            "rnnreg-train", *train_args(corpus, root / "weights_only", f"ckpt_path={root}/weights_only.ckpt")
        ),
        "run_id": popen(
            "rnnreg-train",
            *train_args(corpus, root / "run_id", f"ckpt_path={root}/run_id.ckpt", "logger=wandb"),
            env={"WANDB_MODE": "offline"},
        ),
        "parts": popen(
            "rnnreg-train",
            *train_args(corpus, root / "parts", f"ckpt_path={root}/parts.ckpt", "logger=wandb"),
            env={"WANDB_MODE": "offline"},
        ),
    }
    files["cli"] = {name: finish(proc) for name, proc in procs.items()}
    files["ran_code"] = files["marker"].exists()
    torch.load(root / "evil.ckpt", weights_only=False)  # the attack is real: the old loader runs the payload
    files["payload_is_live"] = files["marker"].exists()
    files["marker"].unlink(missing_ok=True)
    return files


NOT_ALLOWED = "is not a rnnreg checkpoint: it contains objects that are not allowed, or is damaged"


@pytest.mark.parametrize("script", ["eval", "generate", "train"])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_of_it_runs(trained, script):
    assert trained["payload_is_live"]
    status, stderr = trained["cli"][script]
    assert status == 2 and len(stderr) == 1, stderr
    assert (
        stderr[0] == f"error: {trained['root']}/evil.ckpt {NOT_ALLOWED} (only tensors and plain data are loaded; "
        "nothing in it was run)"
    )
    assert not trained["ran_code"]
    if script == "train":  # refused before anything was written
        assert not (trained["root"] / "train/checkpoints").exists()
        assert not (trained["root"] / "train/metrics.json").exists()


def test_model_averaging_and_a_resume_whatever_the_checkpoint_io_load_data_only(trained, tmp_path):
    root = trained["root"]
    cfg = compose_config(
        ["data=text", f"data.data_dir={trained['corpus']}", f"ckpt_path=[{trained['good']},{root}/evil.ckpt]"],
        tmp_path / "eval",
        config_name="eval",
    )
    with pytest.raises(CheckpointError, match=NOT_ALLOWED):
        evaluate(cfg)
    # without rnnreg's checkpoint IO (Lightning's own loader), ckpt_path= is still read as data only first
    cfg = compose_config(
        ["experiment=paper_small", *TINY, f"data.data_dir={trained['corpus']}", f"ckpt_path={root}/evil.ckpt"]
        + ["~trainer.plugins"],
        tmp_path / "train",
    )
    with pytest.raises(CheckpointError, match=NOT_ALLOWED):
        train(cfg)
    assert not trained["marker"].exists() and not (tmp_path / "train/checkpoints").exists()


def test_the_trainers_checkpoint_io_reads_checkpoints_as_data_only(trained):
    """rnnreg's checkpoint IO (every run's trainer.plugins) reads what Lightning loads after the checks before
    training, files no earlier check read: the final test's best.ckpt (test_ckpt=best) among them. A file that would
    run code is refused as rnnreg.io refuses it, and nothing of it runs; a checkpoint of rnnreg-train loads."""
    checkpoint_io = AtomicCheckpointIO()
    with pytest.raises(CheckpointError, match=NOT_ALLOWED):
        checkpoint_io.load_checkpoint(trained["root"] / "evil.ckpt")
    assert not trained["marker"].exists()
    loaded = checkpoint_io.load_checkpoint(trained["good"])
    assert loaded["state_dict"].keys() == torch.load(trained["good"], weights_only=True)["state_dict"].keys()


@pytest.mark.parametrize(
    "name,message",
    [
        ("truncated", r"is not a readable checkpoint \(truncated or another format"),
        ("text", r"is not a readable checkpoint \(truncated or another format"),
        ("tensor", r"is not a rnnreg checkpoint \(no state_dict and hyper_parameters\)"),
    ],
    ids=["truncated", "text", "tensor"],
)
def test_unreadable_or_foreign_files_are_one_line_errors(trained, name, message):
    with pytest.raises(CheckpointError, match=message):
        load_task(str(trained["root"] / f"{name}.ckpt"))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("hidden_size", 10**6, r"net\.embedding\.weight has shape \(\d+, 16\) where its hyper_parameters give"),
        ("num_layers", 10**6, r"model\.num_layers=1000000 for 11 weights"),
        ("state_dict", {5: torch.zeros(1)}, r"its state_dict is not a mapping of names to tensors"),
    ],
)
def test_a_checkpoint_declaring_a_model_its_weights_are_not_is_refused_before_it_is_built(trained, key, value, message):
    """Sizes in hyper_parameters are the file's word: a model of 10**6 units (terabytes) or layers (hours of building)
    is checked against the weights the file holds before it is built, as one line (it was an allocator's traceback, or
    a hang); a state_dict keyed by something else than names too."""
    checkpoint = torch.load(trained["good"], weights_only=True)
    if key == "state_dict":
        checkpoint["state_dict"] = checkpoint["state_dict"] | value
    else:
        checkpoint["hyper_parameters"]["model"][key] = value
    path = trained["root"] / f"declared_{key}.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=message):
        load_task(str(path))


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda c: c.update(hyper_parameters=[1, 2]), "its hyper_parameters are [1, 2], not a mapping"),
        (lambda c: c["hyper_parameters"].pop("model"), "its hyper_parameters hold no 'model'"),
    ],
    ids=["a-list", "no-model"],
)
def test_hyper_parameters_that_are_no_mapping_or_lack_the_model_say_so(trained, edit, why):
    """hyper_parameters not a mapping, or without its model: the entry named (before: Python's own words,
    "list indices must be integers or slices, not str", or "of this version ('model')"; found by a probe)."""
    checkpoint = torch.load(trained["good"], weights_only=True)
    edit(checkpoint)
    path = trained["root"] / "edited_hyper_parameters.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=f"is not a checkpoint rnnreg-train wrote: {re.escape(why)}; give"):
        load_task(str(path))


def test_a_checkpoints_w_and_b_run_id_is_checked_before_anything_is_written(trained):
    """The id a resumed run goes on in (logger=wandb) comes from the checkpoint: one that is no W&B run id is
    one line and exit 2, before anything of the run's or of W&B's is written."""
    status, stderr = trained["cli"]["run_id"]
    assert status == 2 and len(stderr) == 1, stderr
    assert stderr[0] == (
        f"error: {trained['root']}/run_id.ckpt holds '../../elsewhere' as its W&B run id, which is not one "
        "(1-128 printable characters, none of :;,#?/'\\): resume it without logger=wandb, or from a checkpoint "
        "rnnreg-train wrote"
    )
    run = trained["root"] / "run_id"  # Hydra's own files only (.hydra/, train.log), as for any bad input
    assert not list(run.rglob("*.ckpt")) and not (run / "metrics.json").exists() and not (run / "wandb").exists()
    assert not (trained["root"] / "elsewhere").exists()


def test_a_checkpoints_w_and_b_parts_are_checked_before_anything_is_written(trained):
    """Offline, a checkpoint names the folders of its W&B run's parts so far (for the resumed run's `wandb sync`
    command): anything but a list of paths is one line and exit 2, before anything is written."""
    status, stderr = trained["cli"]["parts"]
    assert status == 2 and len(stderr) == 1, stderr
    assert stderr[0] == (
        f"error: {trained['root']}/parts.ckpt holds '$(touch pwned)' as its W&B run's offline folders, which is "
        "not a list of paths: resume it without logger=wandb, or from a checkpoint rnnreg-train wrote"
    )
    run = trained["root"] / "parts"
    assert not list(run.rglob("*.ckpt")) and not (run / "metrics.json").exists() and not (run / "wandb").exists()


@pytest.mark.parametrize(
    "key,value,said",
    [
        ("wandb_run_id", "abc ", "as its W&B run id, which is not one"),  # W&B's own check refuses it, later
        ("wandb_run_id", "x" * 129, "as its W&B run id, which is not one"),
        ("wandb_parts", ["wandb/offline-run-x\n$(touch pwned)"], "as its W&B run's offline folders"),
        ("wandb_group", "paper_small\n$(touch pwned)", "as its W&B run's group, which is not one"),
        ("wandb_name", ["seed=1"], "as its W&B run's name, which is not one"),
    ],
    ids=["trailing-space", "129-characters", "line-break", "group-line-break", "name-not-text"],
)
def test_a_checkpoints_w_and_b_run_id_or_parts_w_and_b_cannot_take_are_refused_before_anything_is_written(
    tiny_cfg, tmp_path, no_wandb_credentials, key, value, said
):
    """Whatever is no W&B run id (space around it, over 128 characters), no list of printable paths, or no group or
    name (a line of printable text), in a checkpoint a run resumes with logger=wandb, is refused naming the file,
    before any W&B or run file is written (before: a space or a long id got to W&B, which refused it once the run had
    started)."""
    budget = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false")
    train(tiny_cfg(*budget))
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint[key] = value
    torch.save(checkpoint, tmp_path / "foreign.ckpt")
    resumed = tiny_cfg(*budget, "trainer.max_epochs=2", "logger=wandb", f"ckpt_path={tmp_path}/foreign.ckpt", run="go")
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path}/foreign.ckpt holds ") + ".*" + re.escape(said)):
        train(resumed)
    assert not (tmp_path / "go" / "wandb").exists() and not (tmp_path / "go" / "metrics.json").exists()
    assert not list((tmp_path / "go").rglob("*.ckpt"))


def test_a_truncated_checkpoint_is_one_line_on_the_command_line(trained):
    status, stderr = trained["cli"]["truncated"]
    assert status == 2 and len(stderr) == 1, stderr
    # the config check (rnnreg.schema) sees it is no file torch.save finished, before Hydra starts: a zip archive cut
    # short is said to be one (it was "not a file torch.save wrote"), as rnnreg.io.load_checkpoint says it
    assert stderr[0] == (
        f"error: ckpt_path={trained['root']}/truncated.ckpt is not a readable checkpoint (truncated or damaged: a zip "
        "archive as torch.save writes, whose end cannot be read): give a whole checkpoint written by rnnreg-train"
    )


def test_a_file_pickle_dump_wrote_is_one_line_from_every_command(tiny_corpus, tmp_path):
    """A plain pickle.dump file as ckpt_path (pickle protocol 4): each command's one error line, without torch's
    two-line "UserWarning: Detected pickle protocol 4 ..." before it (rnnreg-eval and rnnreg-train printed it)."""
    path = tmp_path / "pickled.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "hyper_parameters": {}}, protocol=4))
    procs = {
        "eval": popen(
            "rnnreg-eval",
            "data=text",
            f"data.data_dir={tiny_corpus}",
            f"ckpt_path={path}",
            f"hydra.run.dir={tmp_path}/e",
        ),
        "train": popen("rnnreg-train", *train_args(tiny_corpus, tmp_path / "train", f"ckpt_path={path}")),
        "generate": popen("rnnreg-generate", f"ckpt_path={path}"),
    }
    for script, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and len(err.splitlines()) == 1, (script, err[-3000:])
        assert err.startswith(f"error: {path} is not a rnnreg checkpoint"), (script, err)


@pytest.mark.parametrize(
    "case,message",
    [
        (
            "vocab",
            r"{good} was trained on another vocabulary than this data \(both \d+ words, \d+ words? at another id\): "
            r"resume it .*",
        ),
        # named as a setting, with the model overrides of the checkpoint's run (before: two tensors' shapes, once the
        # run had begun)
        (
            "shape",
            r"model\.hidden_size=24 where {good} was trained with model\.hidden_size=16: its weights fit that model "
            r"only: resume with the model it was trained with \(model\.hidden_size=16\)",  # (its run: no record)
        ),
    ],
)
def test_resume_refuses_another_vocabulary_or_model_shape(trained, case, message):
    root = trained["root"]
    if case == "vocab":  # the same words in another order: the same size, other ids
        ours = (trained["corpus"] / "train.txt").read_text().split()
        theirs = (root / "reordered/train.txt").read_text().split()
        assert set(ours) == set(theirs) and list(dict.fromkeys(ours)) != list(dict.fromkeys(theirs))
    status, stderr = trained["cli"][case]
    assert status == 2 and len(stderr) == 1, stderr
    message = message.replace("{good}", re.escape(str(trained["good"])))
    assert re.fullmatch(f"error: {message}", stderr[0]), stderr[0]
    assert not list((root / case).rglob("*.ckpt"))  # nothing trained
    assert not (root / case / "metrics.json").exists()  # bad input writes nothing (README, Errors)


def test_a_checkpoint_of_the_weights_only_is_not_resumed_and_says_what_to_do(trained):
    """A weights-only checkpoint (no optimiser state) cannot be resumed: one line with what can be done with it,
    before anything is written (it was Lightning's KeyError)."""
    root = trained["root"]
    status, stderr = trained["cli"]["weights_only"]
    assert status == 2 and len(stderr) == 1, stderr
    assert stderr[0] == (
        f"error: {root}/weights_only.ckpt holds no optimiser state (a checkpoint of the weights only), which a resume "
        "needs: evaluate it with rnnreg-eval, or resume from the run's checkpoints/last.ckpt"
    )
    assert not (root / "weights_only" / "metrics.json").exists() and not list((root / "weights_only").rglob("*.ckpt"))


@pytest.mark.parametrize(
    "key, value, why",
    [
        ("epoch", "x", "its epoch is 'x'"),
        ("epoch", None, "it holds no epoch, which a training state has"),  # None: the key removed
        ("train_window", -5, "its train_window is -5"),
        ("train_bptt", 0, "its train_bptt is 0"),  # (its resume line would have said: resume with data.bptt=0)
        ("seed", "x", "its seed is 'x'"),  # (compared with the command line's: check_resume_settings)
        ("callbacks", "x", "its callbacks is 'x'"),
        ("rng", "x", "its rng is 'x'"),
        ("rng", {"torch": torch.zeros(3)}, "its rng is {'torch': tensor([0., 0., 0.])}"),  # not a generator's bytes
        ("rng", {"torch": None}, "its rng is {'torch': None}"),
        ("global_step", "x", "its global_step is 'x'"),
        ("loops", "x", "its loops is 'x'"),
        ("pytorch-lightning_version", None, "it holds no pytorch-lightning_version, which a training state has"),
        ("optimizer_states", [{}], "its optimizer_states are not an optimiser's state"),
        # what Lightning's restore or our own checks read before training: a traceback, metrics.json "failed"
        ("callbacks", {"LastValidation": "x"}, "its callbacks['LastValidation'] is 'x'"),
        ("lr_schedulers", "x", "its lr_schedulers is 'x'"),
        ("lr_schedulers", None, "it holds no lr_schedulers, which a training state has"),  # Lightning's KeyError
        ("lr_schedulers", [], "its lr_schedulers is []"),  # (the schedule not restored: lr 1 again)
        ("loops", {"fit_loop": "x"}, "its loops['fit_loop'] is 'x'"),
        # without its loops (or the fit loop's) Lightning trained the epochs anew on top of the checkpoint's
        ("loops", None, "it holds no loops, which a training state has"),
        ("loops", {}, "its loops hold no 'fit_loop', which a training state's have"),
        ("hyper_parameters", {"optim": {"lr": "x"}}, "its hyper_parameters['optim']['lr'] is 'x'"),
        ("hyper_parameters", {"optim": "x"}, "its hyper_parameters['optim'] is 'x'"),
        ("hyper_parameters", "x", "its hyper_parameters is 'x'"),
        ("train_carry", "x", "its train_carry is 'x'"),
        ("data_fingerprint", {"train": "x"}, "its data_fingerprint {'train': 'x'} is not a mapping of train, valid"),
        ("state_dict", {"net.encoder.weight": "x"}, "its state_dict is {'net.encoder.weight': 'x'}"),
        (
            "rng",
            {"torch": torch.zeros(3, dtype=torch.uint8)},
            "its rng is {'torch': tensor([0, 0, 0], dtype=torch.uint8)}",
        ),
    ],
)
def test_a_training_state_edited_by_hand_is_one_line(trained, key, value, why):
    """What a resume reads from a checkpoint beyond its weights (Lightning's loops and optimiser, our window and
    random state), checked before anything is written: the key that does not fit, not a traceback from inside
    Lightning's restore (KeyError, ValueError, TypeError, a teardown error hiding the first)."""
    checkpoint = torch.load(trained["good"], weights_only=True)
    check_training_state(checkpoint, "good.ckpt")
    if value is None:
        del checkpoint[key]
    else:
        checkpoint[key] = value
    with pytest.raises(CheckpointError, match=f"^x.ckpt is not a checkpoint rnnreg-train wrote: {re.escape(why)}"):
        check_training_state(checkpoint, "x.ckpt")


def edit_rng(checkpoint: dict) -> None:
    checkpoint["rng"] = None


def edit_lr(checkpoint: dict) -> None:
    checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] = "x"


def edit_groups(checkpoint: dict) -> None:
    (group,) = checkpoint["optimizer_states"][0]["param_groups"]
    checkpoint["optimizer_states"][0]["param_groups"] = [group, dict(group, params=[])]


def edit_params(checkpoint: dict) -> None:
    checkpoint["optimizer_states"][0]["param_groups"][0]["params"].pop()


def edit_momentum(checkpoint: dict) -> None:
    checkpoint["optimizer_states"][0]["state"] = {0: {"momentum_buffer": torch.zeros(3)}}


def edit_carry(checkpoint: dict) -> None:  # a stop inside an epoch, its state of other units than the model's
    model = checkpoint["hyper_parameters"]["model"]
    state = torch.zeros(model["num_layers"], 4, model["hidden_size"] + 1)
    checkpoint["train_carry"] = {"state": (state, state), "nll_sum": torch.tensor(1.0), "tokens": torch.tensor(1)}


@pytest.mark.parametrize(
    "edit, why",
    [
        (edit_rng, "its rng is None"),  # (it was rng["torch"] of None: a TypeError once the run had begun)
        (edit_lr, "its optimizer_states[0]['param_groups'][0]['lr'] is 'x', not a number"),
        (edit_groups, "its optimizer_states[0]['param_groups'] is [{"),  # torch's ValueError at its restore
        (edit_params, "its optimizer_states[0] holds the state of 10 parameters, not of its model's 11"),
        (edit_momentum, "its optimizer_states[0]['state'][0] is {'momentum_buffer': tensor([0., 0., 0.])}, not a "),
        (edit_carry, "its train_carry is {'state': (tensor([[[0., 0., 0."),  # a RuntimeError at its first window
    ],
)
def test_an_optimiser_rng_or_carried_state_edited_by_hand_is_one_line(trained, edit, why):
    """The optimiser's state, the random state and the carried state as a resume loads them (found by a probe:
    each was a traceback from inside torch once the run had begun, metrics.json "failed"): one line before
    anything is written, naming the entry."""
    checkpoint = torch.load(trained["good"], weights_only=True)
    check_training_state(checkpoint, "good.ckpt")
    edit(checkpoint)
    with pytest.raises(CheckpointError, match=f"^x.ckpt is not a checkpoint rnnreg-train wrote: {re.escape(why)}"):
        check_training_state(checkpoint, "x.ckpt")


# -- resume into a new folder equals the uninterrupted run: best score, best model, early stopping ---------------
WORSE_LATER = (  # lr x10 after epoch 1: epochs 2 and 3 are worse than epoch 1 (and 3 worse than 2)
    "optim.decay=0.1",
    "optim.decay_start=1",
    "trainer.gradient_clip_val=100",
    "trainer.limit_train_batches=10",
    "callbacks=early_stopping",
    "callbacks.early_stopping.patience=2",
    "test_ckpt=best",
)
SIGTERM = int(signal.SIGTERM)
TIMING = {"train_seconds", "words_per_second", "words_per_second_median_step", "words_per_second_last_epoch"}


def test_resume_in_a_new_folder_keeps_the_best_checkpoint_and_early_stopping(tiny_cfg, tmp_path):
    whole = train(tiny_cfg(*WORSE_LATER, "trainer.max_epochs=4", run="whole"))
    assert whole["epochs"] == 3 and whole["best_val_ppl"] < whole["val_ppl"]  # stopped: 2 epochs worse than 1
    train(tiny_cfg(*WORSE_LATER, "trainer.max_epochs=1", "test=false", run="first"))
    resumed = train(
        tiny_cfg(
            *WORSE_LATER, "trainer.max_epochs=4", f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt", run="second"
        )
    )
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {k: v for k, v in whole.items() if k not in TIMING}
    on_disk = json.loads((tmp_path / "second/metrics.json").read_text())
    assert {k: v for k, v in on_disk.items() if k not in TIMING} == {
        k: v for k, v in json.loads((tmp_path / "whole/metrics.json").read_text()).items() if k not in TIMING
    }
    # the best model is in the new folder (a copy: the earlier run may be deleted), and it is epoch 1's
    a, b = (torch.load(tmp_path / f"{run}/checkpoints/best.ckpt", weights_only=True) for run in ("whole", "second"))
    assert a["epoch"] == b["epoch"] == 0
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    last = torch.load(tmp_path / "second/checkpoints/last.ckpt", weights_only=True)
    best = last["callbacks"][next(k for k in last["callbacks"] if k.startswith("BestCheckpoint"))]
    assert best["best_model_path"] == str(tmp_path / "second/checkpoints/best.ckpt")
    stopping = last["callbacks"][next(k for k in last["callbacks"] if k.startswith("EarlyStopping"))]
    assert stopping["wait_count"] == 2 and float(stopping["best_score"]) == whole["best_val_ppl"]


def test_resume_in_a_new_folder_without_the_earlier_best_checkpoint_warns_and_goes_on(tiny_cfg, tmp_path, caplog):
    """The earlier run's last.ckpt copied elsewhere without its best.ckpt (the run's own still there): the run
    resumed into another folder says, in one line of its log, that no best.ckpt is beside the checkpoint it resumes
    and that its best checkpoint counts only its own epochs from here on (best_val_ppl, every epoch's), and trains
    them (it does not stop on a file it cannot copy). Before, a two-line Python warning said the run's best.ckpt "is
    gone", which was not so (found by a probe)."""
    budget = ("trainer.limit_train_batches=2", "test=false")
    train(tiny_cfg(*budget, "trainer.max_epochs=1", run="first"))
    sent = tmp_path / "sent" / "last.ckpt"
    sent.parent.mkdir()
    shutil.copyfile(tmp_path / "first/checkpoints/last.ckpt", sent)
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        resumed = train(tiny_cfg(*budget, "trainer.max_epochs=2", f"ckpt_path={sent}", run="second"))
    said = [r.getMessage() for r in caplog.records if r.name == "rnnreg" and r.levelno == logging.WARNING]
    assert (
        f"no best.ckpt beside {sent}, its run's best checkpoint (rnnreg-train keeps it beside last.ckpt): "
        f"test_ckpt=best will count only the epochs from here on (best_val_ppl counts them all); to keep it, copy it "
        f"beside {sent} and resume again"
    ) in said
    assert resumed["status"] == "completed" and resumed["epochs"] == 2
    assert torch.load(tmp_path / "second/checkpoints/best.ckpt", weights_only=True)["epoch"] == 1  # its own epoch
    assert (tmp_path / "first/checkpoints/best.ckpt").is_file()


def test_a_resumed_checkpoint_copies_no_file_but_the_best_checkpoints_beside_it(tiny_cfg, tmp_path, caplog):
    """A checkpoint names its best checkpoint's path (best.ckpt's callback state): a crafted one naming a private
    file elsewhere (an ssh key, a token) must not have it copied into the new run's folder (world-readable, where W&B
    uploads the best checkpoint): only files beside the resumed checkpoint are carried over; the others are gone."""
    budget = ("trainer.limit_train_batches=2", "test=false")
    train(tiny_cfg(*budget, "trainer.max_epochs=1", run="first"))
    secret = tmp_path / "private/token.txt"
    secret.parent.mkdir()
    secret.write_text("a secret\n")
    secret.chmod(0o600)
    checkpoint = torch.load(tmp_path / "first/checkpoints/last.ckpt", weights_only=True)
    state = checkpoint["callbacks"][next(k for k in checkpoint["callbacks"] if k.startswith("BestCheckpoint"))]
    state |= {"dirpath": str(secret.parent), "best_model_path": str(secret), "kth_best_model_path": str(secret)}
    state["best_k_models"] = {str(secret): state["best_model_score"]}
    torch.save(checkpoint, tmp_path / "shared.ckpt")
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        resumed = train(tiny_cfg(*budget, "trainer.max_epochs=2", f"ckpt_path={tmp_path}/shared.ckpt", run="second"))
    assert resumed["status"] == "completed"
    said = [r.getMessage() for r in caplog.records if r.name == "rnnreg" and r.levelno == logging.WARNING]
    assert any(
        line.startswith(f"no token.txt beside {tmp_path}/shared.ckpt, its run's best checkpoint") for line in said
    )
    copied = [p for p in (tmp_path / "second").rglob("*") if p.is_file() and p.read_bytes() == secret.read_bytes()]
    assert copied == []


def test_a_run_folder_copied_elsewhere_resumes_with_its_own_best_checkpoint(tiny_cfg, tmp_path, caplog):
    """A run folder copied (or moved) elsewhere: its checkpoints name the folder they were written in; resumed from the
    copy, the best checkpoint of that name beside it is carried over (before: the original's path was required, and
    the copy's best.ckpt was warned of as gone)."""
    budget = ("trainer.limit_train_batches=2", "test=false")
    train(tiny_cfg(*budget, "trainer.max_epochs=1", run="first"))
    shutil.move(tmp_path / "first", tmp_path / "copied")
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        resumed = train(
            tiny_cfg(
                *budget, "trainer.max_epochs=2", f"ckpt_path={tmp_path}/copied/checkpoints/last.ckpt", run="second"
            )
        )
    assert resumed["status"] == "completed" and (tmp_path / "second" / "checkpoints" / "best.ckpt").is_file()
    assert not [r for r in caplog.records if "best checkpoint" in r.getMessage()]


def test_a_run_resumed_through_a_link_to_its_checkpoint_keeps_its_best_and_warns_of_nothing(tiny_cfg, tmp_path, caplog):
    """ckpt_path a link to a run's last.ckpt (`latest.ckpt` kept beside the runs): the best checkpoint carried over is
    the one beside the file the link names, and the resume into another folder warns of nothing (no best checkpoint
    said gone, no Lightning "dirpath has changed" for last.ckpt, which is written anew)."""
    budget = ("trainer.limit_train_batches=2", "test=false")
    train(tiny_cfg(*budget, "trainer.max_epochs=1", run="first"))
    (tmp_path / "latest.ckpt").symlink_to(tmp_path / "first" / "checkpoints" / "last.ckpt")
    with warnings.catch_warnings(record=True) as said, caplog.at_level(logging.WARNING, logger="rnnreg"):
        warnings.simplefilter("always")
        resumed = train(tiny_cfg(*budget, "trainer.max_epochs=2", f"ckpt_path={tmp_path}/latest.ckpt", run="second"))
    assert resumed["status"] == "completed" and resumed["epochs"] == 2
    warned = [str(w.message) for w in said if "checkpoint" in str(w.message) or "dirpath" in str(w.message)]
    assert warned == [] and not [r for r in caplog.records if "best checkpoint" in r.getMessage()]
    best = tmp_path / "second" / "checkpoints" / "best.ckpt"
    assert best.is_file() and not best.is_symlink()


def test_a_checkpoint_refused_after_training_began_leaves_metrics_json_saying_failed(tiny_cfg, tmp_path):
    """A run resumed in its own folder trains epoch 2 (its last.ckpt moves on), then its final test refuses the
    best.ckpt someone swapped for a file that would run code (test_ckpt=best): nothing of it runs, and metrics.json
    says the run failed, naming the file, at epoch 2 (it used to keep the earlier "completed" after 1 epoch, as bad
    input found before any training writes nothing)."""
    train(tiny_cfg(*WORSE_LATER, "trainer.max_epochs=1", "test=false", run="run"))
    run, marker = tmp_path / "run", tmp_path / "pwned"
    best = run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["callbacks"]["evil"] = RunsCode(marker)
    torch.save(checkpoint, tmp_path / "swapped.ckpt")
    os.replace(tmp_path / "swapped.ckpt", best)  # a file of its own (last.ckpt was a hard link to the same epoch's)
    with pytest.raises(CheckpointError, match=NOT_ALLOWED):  # epoch 2 is worse: best.ckpt stays the swapped file
        train(tiny_cfg(*WORSE_LATER, "trainer.max_epochs=2", f"ckpt_path={run}/checkpoints/last.ckpt", run="run"))
    assert not marker.exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # epoch 2's (from 0)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["epochs"] == 2, metrics
    assert metrics["error"].startswith(f"{best} {NOT_ALLOWED}"), metrics["error"]


# -- pre-emption at any point: a non-zero exit and metrics.json saying what happened --------------------------
def test_sigterm_while_the_run_is_being_set_up_is_recorded(tiny_cfg, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        train(tiny_cfg("+callbacks.stop._target_=helpers.SignalWhileBuilding", f"+callbacks.stop.signum={SIGTERM}"))
    assert exit_.value.code == 143
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["resume"] == "no checkpoint was written"
    assert not (tmp_path / "run" / RunLock.NAME).exists()


# -- one live run per folder ------------------------------------------------------------------------------------
def test_a_second_run_in_a_live_runs_folder_stops_and_sigterm_during_the_test_is_recorded(tiny_corpus, tmp_path):
    """Two real processes on one hydra.run.dir: the first (paused at the start of epoch 2) owns it, the second
    stops at once with one line and writes nothing there. The first then gets SIGTERM during its final test:
    exit 143 and metrics.json "interrupted" (it used to exit 0 without metrics.json)."""
    run_dir = tmp_path / "run"
    with paused_at_its_second_epoch(
        tmp_path,
        *train_args(tiny_corpus, run_dir, "trainer.max_epochs=2", "trainer.limit_train_batches=3"),
        "+callbacks.stop._target_=helpers.SignalInTest",
        f"+callbacks.stop.signum={SIGTERM}",
    ) as first:
        before = snapshot(run_dir)
        assert (run_dir / RunLock.NAME).read_text().startswith(f"pid {first.pid}@")
        # the folder as given, another spelling of it, and an interpolation that Hydra resolves to it
        for where, *also in (
            (run_dir,),
            (f"{run_dir}/sub/..",),
            ("${paths.output_root}/run", f"paths.output_root={tmp_path}"),
        ):
            status, stderr = finish(
                popen("rnnreg-train", *train_args(tiny_corpus, where, "trainer.max_epochs=1", *also))
            )
            assert status == 2 and stderr == [
                f"error: {run_dir} is in use by another live rnnreg run (pid {first.pid}@{os.uname().nodename}): give "
                f"this run another folder (hydra.run.dir=...), or wait for that run to end"
            ]
        assert snapshot(run_dir) == before  # nothing of the second run there (not even Hydra's .hydra/ or log)
    status, _ = finish(first, error=False)
    assert status == 143
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["error"].startswith("SIGTERM") and metrics["epochs"] == 2
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 1
    assert not (run_dir / RunLock.NAME).exists()  # released at the end, on failure too


def test_a_multirun_owns_its_sweep_folder_whatever_its_launcher(tiny_corpus, tmp_path):
    """A basic-launcher multirun (two real jobs, the first paused at the start of epoch 2) holds its sweep folder:
    a second multirun there, named through an interpolation the command-line check does not resolve, stops with
    one line before Hydra writes multirun.yaml or sweep.yaml; rnnreg-report says the paused job is running (it
    said unfinished: only a stacked sweep held its folder). At the end the lock is released."""
    sweep = tmp_path / "sweep"
    common = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "test=false"]
    with paused_at_its_second_epoch(
        tmp_path,
        *common,
        "seed=1,2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        f"hydra.sweep.dir={sweep}",
    ) as first:
        before = snapshot(sweep)
        assert (sweep / RunLock.NAME).read_text().startswith(f"pid {first.pid}@")
        interpolated = ("seed=3", f"paths.output_root={tmp_path}", "hydra.sweep.dir=${paths.output_root}/sweep")
        status, stderr = finish(popen("rnnreg-train", *common, *interpolated))
        assert status == 2 and stderr == [
            f"error: {sweep} is in use by another live rnnreg run (pid {first.pid}@{os.uname().nodename}): give "
            f"this run another folder (hydra.sweep.dir=...), or wait for that run to end"
        ]
        assert snapshot(sweep) == before  # its multirun.yaml and sweep.yaml not written over, no job folder
        assert {row["run"]: row["status"] for row in collect(sweep)} == {"0": "running"}
    status, _ = finish(first, error=False)
    assert status == 0 and not (sweep / RunLock.NAME).exists()
    assert [json.loads((sweep / job / "metrics.json").read_text())["status"] for job in "01"] == ["completed"] * 2
    assert not (sweep / "2").exists()


# -- an ended run's folder stays its own ------------------------------------------------------------------------
def test_an_earlier_runs_results_are_its_outcome_and_its_weights(tmp_path):
    """What a new run in a folder would write over (run_folder_check.earlier_results): metrics.json, any checkpoint (a
    best.ckpt alone too) and a stacked group's resume file; in a sweep folder, its jobs' too. Hydra's .hydra/ and
    the log, which a run refused for bad input leaves, are not results: such a folder takes a new run."""
    from rnnreg.run_folder_check import check_no_earlier_results, earlier_results

    def folder(name: str, *files: str) -> Path:
        for file in files:
            (tmp_path / name / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / file).write_text("x")
        return tmp_path / name

    refused_only = folder("refused", ".hydra/config.yaml", ".hydra/overrides.yaml", "train.log")
    assert earlier_results(refused_only) == []
    check_no_earlier_results(refused_only, "hydra.run.dir")  # a new run may go there
    for files in (["metrics.json"], ["checkpoints/best.ckpt"], ["checkpoints/epoch=3.ckpt"], [".stacked/group_0.pt"]):
        ended = folder(files[0].replace("/", "_"), ".hydra/config.yaml", *files)
        assert earlier_results(ended) == files
        with pytest.raises(OutputError, match="holds an earlier run's results"):
            check_no_earlier_results(ended, "hydra.run.dir")
    sweep = folder("sweep", "0/.hydra/config.yaml", "0/metrics.json", "1/checkpoints/last.ckpt", ".stacked/group_0.pt")
    assert earlier_results(sweep) == [".stacked/group_0.pt"]
    assert earlier_results(sweep, below=True) == [".stacked/group_0.pt", "0/metrics.json", "1/checkpoints/last.ckpt"]


def test_a_run_that_failed_in_a_folder_of_a_refused_command_keeps_its_own_record(tmp_path):
    """A folder that holds only a refused command's record (.hydra/, which takes a new run): a run there that trained
    and then stopped with one of rnnreg's errors (here a divergence, before any last.ckpt) keeps its own record,
    which its metrics.json's "failed" belongs to; the earlier command's record is put back only over a command that
    wrote nothing (before: both stamps were "no last.ckpt", and the refused command's overrides came back)."""
    corpus, folder = write_corpus(tmp_path / "corpus"), tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=99\n")  # a refused command's
    diverging = ("trainer.max_epochs=3", "optim.decay=1e-20", "optim.decay_start=1", "callbacks.last_checkpoint=null")
    status, errors = finish(popen("rnnreg-train", *train_args(corpus, folder, *diverging)))
    assert status == 2 and errors[0].startswith("error: training loss became"), errors
    assert json.loads((folder / "metrics.json").read_text())["status"] == "failed"
    assert not (folder / "checkpoints" / "last.ckpt").exists()
    assert "optim.decay=1e-20" in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())


def test_a_run_that_wrote_a_checkpoint_and_no_metrics_keeps_its_own_record(tmp_path):
    """As above, where the run's metrics.json could not be written (here a folder of that name is in its way): the
    best.ckpt it wrote is its result, so its own record stays (before: the put-back's stamp was last.ckpt and
    metrics.json, neither changed, and the refused command's overrides came back over the checkpoint's run)."""
    corpus, folder = write_corpus(tmp_path / "corpus"), tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=99\n")  # a refused command's
    (folder / "metrics.json").mkdir()
    (folder / "metrics.json" / "kept").write_text("")  # (a folder no file replaces)
    diverging = ("trainer.max_epochs=3", "optim.decay=1e-20", "optim.decay_start=1", "callbacks.last_checkpoint=null")
    status, errors = finish(popen("rnnreg-train", *train_args(corpus, folder, *diverging)))
    assert status == 2 and errors[0].startswith("error: training loss became"), errors
    assert (folder / "checkpoints" / "best.ckpt").is_file() and (folder / "metrics.json").is_dir()
    assert "optim.decay=1e-20" in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())


@pytest.mark.parametrize("linked", ["checkpoints/last.ckpt", "checkpoints"])
def test_a_run_folder_whose_checkpoint_is_a_link_elsewhere_is_not_gone_on_in(tmp_path, linked):
    """A run folder (someone else's, shared) whose last.ckpt, or whose checkpoints/ folder, is a link to files
    elsewhere: going on in that folder (ckpt_path=last hydra.run.dir=<it>) would write through the link. Refused in
    one line naming the link's target, exit 2; neither the folder nor the files the link points at change."""
    corpus, run_dir, elsewhere = write_corpus(tmp_path / "corpus"), tmp_path / "run", tmp_path / "elsewhere"
    finish(popen("rnnreg-train", *train_args(corpus, run_dir, "trainer.max_epochs=1")), error=False)
    elsewhere.mkdir()
    shutil.move(run_dir / linked, elsewhere / "moved")
    (run_dir / linked).symlink_to(elsewhere / "moved")
    before = (folder_contents(run_dir), folder_contents(elsewhere))
    status, errors = finish(
        popen("rnnreg-train", *train_args(corpus, run_dir, "trainer.max_epochs=2", "ckpt_path=last"))
    )
    assert status == 2 and errors == [  # (found before Hydra writes its record: none to put back)
        f"error: hydra.run.dir={run_dir} holds {linked}, a link to {elsewhere / 'moved'}: a run in that folder would "
        f"write through it, elsewhere: give the run another folder (hydra.run.dir=...), or put what it points at in "
        f"the link's place"
    ]
    assert (folder_contents(run_dir), folder_contents(elsewhere)) == before


def test_a_run_folder_with_a_link_where_a_run_writes_is_not_run_in(tmp_path):
    """A run folder (someone else's, shared) whose lock file, Hydra record or log is a link to a file elsewhere:
    going on there (ckpt_path=last hydra.run.dir=<it>) opened them through the link, and wrote over the file it
    points at (the lock truncated it, Hydra rewrote it, the log appended to it); or whose checkpoints/ holds a link
    deeper down, through which the resume deleted the earlier best checkpoint its state names. Refused in one line
    before Hydra writes, exit 2; neither the folder nor the linked files change."""
    corpus, run_dir, elsewhere = write_corpus(tmp_path / "corpus"), tmp_path / "run", tmp_path / "elsewhere"
    finish(popen("rnnreg-train", *train_args(corpus, run_dir, "trainer.max_epochs=1")), error=False)
    elsewhere.mkdir()
    linked = [RunLock.NAME, ".hydra/config.yaml", "train.log", "config_tree.log", ".hydra", "checkpoints/sub/deep"]
    folders = {name: tmp_path / f"run{i}" for i, name in enumerate(linked)}
    for name, folder in folders.items():
        shutil.copytree(run_dir, folder)
        target = elsewhere / f"{name.replace('/', '_')}"
        if (folder / name).is_dir():
            shutil.move(folder / name, target)
        elif name == "checkpoints/sub/deep":  # a best checkpoint, worse than any, that a better one replaces
            (folder / "checkpoints" / "sub").mkdir()
            target.mkdir()
            (target / "victim.ckpt").write_text("someone's file\n")
            last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
            best = next(state for key, state in last["callbacks"].items() if key.startswith("BestCheckpoint"))
            victim, worst = str(folder / name / "victim.ckpt"), torch.tensor(1e9)
            best.update(dirpath=str(folder / "checkpoints"), best_model_path=victim, best_model_score=worst)
            best.update(best_k_models={victim: worst}, kth_best_model_path=victim, kth_value=worst)
            (folder / "checkpoints" / "last.ckpt").unlink()
            torch.save(last, folder / "checkpoints" / "last.ckpt")
        else:
            (folder / name).unlink(missing_ok=True)
            target.write_text("someone's file\n")
        (folder / name).symlink_to(target)
    before = {name: folder_contents(folder) for name, folder in folders.items()}, folder_contents(elsewhere)
    procs = {
        name: popen("rnnreg-train", *train_args(corpus, folder, "trainer.max_epochs=2", "ckpt_path=last"))
        for name, folder in folders.items()
    }
    for name, proc in procs.items():
        status, errors = finish(proc)
        assert status == 2 and errors == [
            f"error: hydra.run.dir={folders[name]} holds {name}, a link to {elsewhere / name.replace('/', '_')}: a "
            f"run in that folder would write through it, elsewhere: give the run another folder (hydra.run.dir=...), "
            f"or put what it points at in the link's place"
        ]
    assert ({name: folder_contents(folder) for name, folder in folders.items()}, folder_contents(elsewhere)) == before


@pytest.mark.parametrize("given", ["{sweep}", "${{paths.output_root}}/sweep"])
def test_a_sweep_folder_with_a_link_in_a_jobs_folder_is_not_run_in(tmp_path, tiny_corpus, given):
    """A sweep folder given again (hydra.sweep.dir=<it>) whose job folder holds a link where its job writes (here
    Hydra's record): refused in one line before Hydra writes, exit 2; the linked file is as it was. A folder the
    command's check cannot name (an interpolation) is refused when the multirun starts."""
    sweep, target = tmp_path / "sweep", tmp_path / "someones.yaml"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    target.write_text("someone's file\n")
    (sweep / "0" / ".hydra" / "config.yaml").symlink_to(target)
    args = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "test=false", "seed=1,2"]
    given = given.format(sweep=sweep)
    status, errors = finish(popen("rnnreg-train", *args, f"paths.output_root={tmp_path}", f"hydra.sweep.dir={given}"))
    assert status == 2 and errors == [
        f"error: hydra.sweep.dir={sweep} holds 0/.hydra/config.yaml, a link to {target}: a run in that folder would "
        f"write through it, elsewhere: give the run another folder (hydra.sweep.dir=...), or put what it points at in "
        f"the link's place"
    ]
    assert target.read_text() == "someone's file\n" and sorted(p.name for p in sweep.iterdir()) == ["0"]
    assert sorted(p.name for p in (sweep / "0" / ".hydra").iterdir()) == ["config.yaml"]


def test_a_run_started_from_python_in_a_folder_with_a_link_is_refused(tiny_cfg, tmp_path):
    """rnnreg.train.train(cfg) has no command line checked before it (nor does a folder the check could not name):
    a link where the run writes (here its config tree) is refused when training starts, before anything is
    written; the linked file is as it was."""
    folder, target = tmp_path / "run", tmp_path / "someones.txt"
    folder.mkdir()
    target.write_text("someone's file\n")
    (folder / "config_tree.log").symlink_to(target)
    with pytest.raises(OutputError, match="^hydra.run.dir=.* holds config_tree.log, a link to "):
        train(tiny_cfg("trainer.max_epochs=1", "extras.print_config=true"))
    assert target.read_text() == "someone's file\n" and [p.name for p in folder.iterdir()] == ["config_tree.log"]


def test_a_lock_file_that_is_a_link_is_not_written_through(tmp_path):
    """RunLock never opens its file through a link (a run whose folder was not checked before it, a link made
    after the check): the file the link points at was truncated and given the owner's pid."""
    folder, target = tmp_path / "run", tmp_path / "someones.txt"
    folder.mkdir()
    target.write_text("someone's file\n")
    (folder / RunLock.NAME).symlink_to(target)
    with pytest.raises(OutputError, match=f"^could not lock {folder}: "):
        RunLock(folder).acquire()
    assert target.read_text() == "someone's file\n" and (folder / RunLock.NAME).is_symlink()


def test_a_refused_resume_in_the_run_folder_a_config_file_pins_keeps_that_runs_record(tmp_path):
    """A run folder an experiment file of the user's pins (hydra.run.dir in the file, not on the command line): a
    resume there that is refused (nothing left to train) puts that run's .hydra/ record back, as for a folder given
    on the command line (before: the refused command's record, ckpt_path=last and all, took its place)."""
    corpus, run_dir, yours = write_corpus(tmp_path / "corpus"), tmp_path / "run", tmp_path / "my_configs"
    (yours / "experiment").mkdir(parents=True)
    (yours / "experiment" / "pinned.yaml").write_text(
        f"# @package _global_\ndefaults: [paper_small]\nexperiment_name: pinned\nhydra: {{run: {{dir: {run_dir}}}}}\n"
    )
    args = ["--config-dir", str(yours), "experiment=pinned", *TINY, f"data.data_dir={corpus}", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=3", "test=false"]
    assert finish(popen("rnnreg-train", *args), error=False)[0] == 0
    before = folder_contents(run_dir, leave_out=("train.log",))
    status, errors = finish(popen("rnnreg-train", *args, "ckpt_path=last"))
    assert status == 2 and "nothing is left to train" in errors[0], errors
    assert folder_contents(run_dir, leave_out=("train.log",)) == before


def test_a_refusal_names_the_first_four_results_and_counts_the_others(tmp_path):
    """A folder with many results (a checkpoint per epoch): the refusal names the first four and says how many
    more there are."""
    from rnnreg.run_folder_check import check_no_earlier_results

    (tmp_path / "checkpoints").mkdir()
    for epoch in range(5):
        (tmp_path / "checkpoints" / f"epoch={epoch}.ckpt").write_text("x")
    (tmp_path / "metrics.json").write_text('{"status": "completed"}')
    with pytest.raises(OutputError) as refused:
        check_no_earlier_results(tmp_path, "hydra.run.dir")
    shown = ", ".join(f"checkpoints/epoch={epoch}.ckpt" for epoch in range(4))
    assert f"holds an earlier run's results (in {shown} and 2 more), which" in str(refused.value)


def test_the_run_folder_checked_is_the_one_hydra_uses(tmp_path):
    """The folder the command line's check reads (single_run_dir, one composition where Hydra's run composes
    once): hydra.run.dir resolved as Hydra resolves it; "" for a config that is a multirun by itself, with sweep
    values on its command line or without (its jobs go under hydra.sweep.dir); None for a command line that does
    not compose (Hydra's own line says why)."""
    run_dir = f"hydra.run.dir={tmp_path}/r${{seed}}"
    assert run_folder_check.single_run_dir("train", [run_dir, "seed=7"], "train") == f"{tmp_path}/r7"
    ablation = "experiment=ablation_placement_small"
    assert run_folder_check.single_run_dir("train", [ablation, run_dir], "train") == ""
    assert run_folder_check.single_run_dir("train", [ablation, "seed=1,2", run_dir], "train") == ""
    assert run_folder_check.single_run_dir("train", ["seed=1,2", run_dir], "train") is None  # a sweep without -m
    assert run_folder_check.single_run_dir("train", ["experiment=no_such_experiment", run_dir], "train") is None


def test_a_plain_run_folder_is_checked_without_composing_again(tmp_path, monkeypatch):
    """rnnreg-train's check of its run folder (run_dir_used) gives single_run_dir's answer. Where hydra.run.dir is
    a plain value (no interpolation; quoted or not) and check_command_line's compositions found the mode, it
    composes nothing more (single_run_dir, a composition, is not called): "" for a config that is a multirun by
    itself."""
    folder, ablation = f"{tmp_path}/r", "experiment=ablation_placement_small"
    plain = {
        (f"hydra.run.dir={folder}", "seed=7"): folder,
        (ablation, f"hydra.run.dir={folder}"): "",
        (f"hydra.run.dir='{folder} a,b'",): f"{folder} a,b",
    }
    composed = {  # an interpolation; the later of two values
        (f"hydra.run.dir={folder}${{seed}}", "seed=7"): f"{folder}7",
        (f"hydra.run.dir={folder}", f"hydra.run.dir={folder}2"): f"{folder}2",
    }
    modes = {args: check_command_line("train", list(args)).multirun for args in plain | composed}
    assert modes == {args: ablation in args for args in plain | composed}
    assert {args: run_folder_check.single_run_dir("train", list(args), "train") for args in plain} == plain

    def composes(*args):
        raise AssertionError("composed again")

    with monkeypatch.context() as patched:
        patched.setattr(run_folder_check, "single_run_dir", composes)
        for args, expected in plain.items():
            assert run_folder_check.run_dir_used(list(args), "train", "train", modes[args]) == expected
    for args, expected in composed.items():
        assert run_folder_check.run_dir_used(list(args), "train", "train", modes[args]) == expected
    (args,) = [args for args in plain if ablation in args]  # the mode not known: composed, as before
    assert run_folder_check.run_dir_used(list(args), "train", "train", None) == ""


def test_the_output_root_checked_is_the_one_hydra_uses(monkeypatch):
    """output_root, the folder a run's default folder goes below (checked before Hydra makes it): the command line's
    last paths.output_root (Hydra's: the later override wins), ++ or not, over $RNNREG_OUTPUT_DIR; else that; else
    outputs/."""
    monkeypatch.delenv("RNNREG_OUTPUT_DIR", raising=False)
    assert run_folder_check.output_root(["seed=1"]) == ("paths.output_root", "outputs")
    monkeypatch.setenv("RNNREG_OUTPUT_DIR", "/env")
    assert run_folder_check.output_root(["seed=1"]) == ("RNNREG_OUTPUT_DIR", "/env")
    given = ["paths.output_root=/a", "seed=1", "++paths.output_root=/b"]
    assert run_folder_check.output_root(given) == ("paths.output_root", "/b")


def test_a_run_never_writes_over_an_earlier_runs_results(tiny_corpus, tiny_cfg, tmp_path):
    """A run into the folder of an ended one stops with one line (exit 2) and changes nothing there, before Hydra
    writes .hydra/ (hydra.run.dir given, or through an interpolation, resolved as Hydra will), or when training
    starts (a config composed by a library user). An interrupted run's line says how to go on from it, and going
    on from its own last.ckpt in its folder is allowed (before: both wrote over). rnnreg-eval, which writes
    metrics.json, is refused there too; a multirun experiment, which does not use hydra.run.dir, is not."""
    run_dir = tmp_path / "run"
    stop = (
        "+callbacks.stop._target_=helpers.SignalAt",
        f"+callbacks.stop.signum={int(SIGTERM)}",
        "+callbacks.stop.window=2",
    )
    with pytest.raises(SystemExit):
        train(tiny_cfg("trainer.max_epochs=1", "test=false", *stop))
    last = run_dir / "checkpoints/last.ckpt"
    refused = (
        f"error: {run_dir} holds an earlier run's results (in checkpoints/last.ckpt, metrics.json), which this run "
        f"would write over: give it another folder (hydra.run.dir=...), go on from that run with ckpt_path={last}, "
        f"or remove that folder first"
    )
    before = snapshot(run_dir)
    status, stderr = finish(popen("rnnreg-train", *train_args(tiny_corpus, run_dir, "trainer.max_epochs=1")))
    assert status == 2 and stderr == [refused]
    assert snapshot(run_dir) == before  # .hydra/ too: refused before Hydra started
    interpolated = train_args(tiny_corpus, "${paths.output_root}/run", f"paths.output_root={tmp_path}")
    status, stderr = finish(popen("rnnreg-train", *interpolated, "trainer.max_epochs=1"))
    assert status == 2 and stderr == [refused]
    assert snapshot(run_dir) == before  # the folder Hydra will make of the interpolation, checked before it does
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    status, stderr = finish(popen("rnnreg-eval", f"ckpt_path={last}", f"hydra.run.dir={run_dir}"))  # its metrics.json
    assert status == 2 and stderr == [refused.replace(f", go on from that run with ckpt_path={last}", "")]
    assert snapshot(run_dir) == before
    # the folder set by a config file (an experiment of the user's pins it), or hydra.run.dir='' run in the folder
    # (Hydra's Path("") is the current folder): checked as one on the command line (before, Hydra wrote .hydra/ first)
    yours = tmp_path / "my_configs" / "experiment"
    yours.mkdir(parents=True)
    pinned = (
        f"# @package _global_\ndefaults: [paper_small]\nexperiment_name: pinned\nhydra: {{run: {{dir: {run_dir}}}}}\n"
    )
    (yours / "pinned.yaml").write_text(pinned)
    args = ["--config-dir", str(yours.parent), "experiment=pinned", *TINY, f"data.data_dir={tiny_corpus}"]
    status, stderr = finish(popen("rnnreg-train", *args, "trainer.max_epochs=1"))
    assert status == 2 and stderr == [refused]
    status, stderr = finish(popen("rnnreg-train", *train_args(tiny_corpus, "''", "trainer.max_epochs=1"), cwd=run_dir))
    assert status == 2 and stderr == [refused]
    assert snapshot(run_dir) == before
    # an experiment that is a multirun by itself does not use hydra.run.dir: its jobs go under hydra.sweep.dir
    multirun = [
        "experiment=ablation_placement_small",
        *TINY,
        f"data.data_dir={tiny_corpus}",
        f"hydra.run.dir={run_dir}",
    ]
    multirun += [
        f"hydra.sweep.dir={tmp_path}/sweep",
        "hydra/launcher=stacked",
        "hydra.sweeper.params.dropout='none,both'",
    ]
    multirun += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    assert finish(popen("rnnreg-train", *multirun), error=False)[0] == 0
    assert snapshot(run_dir) == before and (tmp_path / "sweep/1/metrics.json").exists()
    # going on from another run's checkpoint into this folder would write over it all the same
    with pytest.raises(SystemExit):
        train(tiny_cfg("trainer.max_epochs=1", "test=false", *stop, run="other"))
    other = tmp_path / "other" / "checkpoints/last.ckpt"
    args = train_args(tiny_corpus, run_dir, "trainer.max_epochs=1", f"ckpt_path={other}")
    status, stderr = finish(popen("rnnreg-train", *args))
    assert status == 2 and stderr == [refused]
    with pytest.raises(OutputError, match=re.escape(refused.removeprefix("error: "))):
        train(tiny_cfg("trainer.max_epochs=1", "test=false", f"ckpt_path={other}"))
    assert snapshot(run_dir) == before
    metrics = train(tiny_cfg("trainer.max_epochs=1", "test=false", f"ckpt_path={last}"))  # going on from it: its own
    assert metrics["status"] == "completed"
    with pytest.raises(OutputError) as err:  # a completed run: nothing to go on with
        train(tiny_cfg("trainer.max_epochs=1", "test=false"))
    assert str(err.value) == (
        f"{run_dir} holds an earlier run's results (in checkpoints/best.ckpt, checkpoints/last.ckpt, metrics.json), "
        f"which this run would write over: give it another folder (hydra.run.dir=...), or remove that folder first"
    )


def test_train_leaves_the_callers_signal_handlers_as_it_found_them(tiny_cfg):
    """A library or notebook user calls train() in their own process: after a run that completed and one a SIGTERM
    stopped, SIGINT and SIGTERM do what they did before (a Ctrl-C later is not turned into a SIGTERM, a SIGTERM
    later does not stop a run that has ended)."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    before = {s: signal.getsignal(s) for s in signals}
    train(tiny_cfg("trainer.max_epochs=1", "test=false"))
    assert {s: signal.getsignal(s) for s in signals} == before
    stop = (
        "+callbacks.stop._target_=helpers.SignalAt",
        f"+callbacks.stop.signum={int(SIGTERM)}",
        "+callbacks.stop.window=2",
    )
    with pytest.raises(SystemExit):
        train(tiny_cfg("trainer.max_epochs=1", "test=false", *stop, run="stopped"))
    assert {s: signal.getsignal(s) for s in signals} == before


def test_a_multirun_never_writes_over_an_earlier_multiruns_results(tiny_corpus, tmp_path):
    """The same multirun command twice into one sweep folder (Hydra numbers the jobs from 0 again): the second
    stops with one line, whatever its launcher, before the sweeper writes multirun.yaml. Going on with
    hydra.launcher.resume=true is a stacked sweep's own: over jobs that Hydra's basic launcher ran it stops too
    (a stacked group would train them again from their start). Jobs that would share one folder
    (hydra.sweep.subdir without the job in it) are refused before anything is made, and jobs in folders of their own
    (hydra.sweep.subdir=s${seed}) into a used sweep folder too, with that reason."""
    sweep = tmp_path / "sweep"
    common = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "test=false", "seed=1,2"]
    common += ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    assert finish(popen("rnnreg-train", *common, f"hydra.sweep.dir={sweep}"), error=False)[0] == 0
    before = snapshot(sweep)
    for launcher in ("basic", "stacked"):  # the earlier sweep was not stacked: no offer to go on with it so
        status, stderr = finish(
            popen("rnnreg-train", *common, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}")
        )
        assert status == 2 and stderr == [
            f"error: {sweep} holds an earlier multirun's results (in 0, 1), which this multirun would write over: "
            f"give it another folder (hydra.sweep.dir=...), or remove that folder first"
        ]
        assert snapshot(sweep) == before
    # jobs in folders of their own (s10) write over no result, but the sweep's multirun.yaml would be replaced
    own = [
        *(a for a in common if a != "seed=1,2"),
        "seed=10",
        "hydra.sweep.subdir=s${seed}",
        f"hydra.sweep.dir={sweep}",
    ]
    status, stderr = finish(popen("rnnreg-train", *own))
    assert status == 2 and stderr == [
        f"error: {sweep} holds an earlier multirun's results (in 0, 1): this multirun would replace its multirun.yaml, "
        "and rnnreg-report would read the two as one sweep: give it another folder (hydra.sweep.dir=...), or remove "
        "that folder first"
    ]
    assert snapshot(sweep) == before
    resume = ["hydra/launcher=stacked", "hydra.launcher.resume=true", f"hydra.sweep.dir={sweep}"]
    status, stderr = finish(popen("rnnreg-train", *common, *resume))
    assert status == 2 and len(stderr) == 1
    assert stderr[0].startswith(
        f"error: {sweep}/0 holds the results of job 0 run by BasicLauncher (in checkpoints/best.ckpt, "
        "checkpoints/last.ckpt, metrics.json), which a stacked sweep would train again from its start, writing "
        f"over them: go on with that job alone (rnnreg-train <its overrides> ckpt_path={sweep}/0/checkpoints/last.ckpt"
    ), stderr[0]
    assert snapshot(sweep) == before
    for subdir in ("", "."):
        status, stderr = finish(
            popen("rnnreg-train", *common, f"hydra.sweep.dir={tmp_path}/other", f"hydra.sweep.subdir={subdir}")
        )
        assert status == 2 and stderr == [
            f"error: hydra.sweep.subdir={subdir} puts every job of the multirun in one folder, each writing over the "
            "last one's files: give each job its own (the default is hydra.sweep.subdir=${hydra.job.num})"
        ]
        assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("launcher", ["basic", "stacked"])
def test_a_sweep_over_experiments_puts_every_job_in_one_folder_named_after_them(tiny_corpus, tmp_path, launcher):
    """`-m experiment=a,b` with the default sweep folder, which reads ${experiment_name}: Hydra resolves it once for
    the sweep (its lock, multirun.yaml, sweep.yaml, the closing line) and again in each job, so each job went under
    its own experiment's folder and the record under the default experiment's, which held no job. Every job now goes
    in one folder named after the swept experiments, each job keeping its experiment's name."""
    args = ["-m", "experiment=paper_small,smoke", *TINY, f"data.data_dir={tiny_corpus}", "test=false", "seed=1"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2"]
    proc = popen("rnnreg-train", *args, f"paths.output_root={tmp_path}", f"hydra/launcher={launcher}")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    (named,) = (tmp_path / "train" / "multirun").iterdir()
    assert named.name == "paper_small+smoke"
    (sweep,) = named.iterdir()
    assert {"0", "1", "multirun.yaml", "sweep.yaml"} <= {p.name for p in sweep.iterdir()}
    for job, experiment in (("0", "paper_small"), ("1", "smoke")):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "completed"
        assert yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())["experiment_name"] == experiment
        hydra = yaml.safe_load((sweep / job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["sweep"]["dir"] == str(sweep)  # where the job looks for its sweep's record (sweep.yaml)
    assert out.strip().splitlines()[-1] == (
        f"the multirun's jobs completed in {sweep}: rnnreg-report path={sweep} compares them"
    )


def test_a_sweep_folder_that_differs_between_jobs_is_one_line_before_anything_is_made(tiny_corpus, tmp_path):
    """A hydra.sweep.dir that reads a swept key (the command's own): the jobs would go to folders of their own and
    the sweep's record, lock and summary to none of them. One line, which says where the jobs go instead."""
    args = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "test=false", "seed=1,2"]
    status, stderr = finish(popen("rnnreg-train", *args, f"hydra.sweep.dir={tmp_path}/sweep/${{seed}}"))
    assert status == 2 and stderr == [
        f"error: hydra.sweep.dir={tmp_path}/sweep/${{seed}} differs between the multirun's jobs (job 0 (seed=1) would "
        f"go to {tmp_path}/sweep/1, the sweep's record to {tmp_path}/sweep/1234): give a folder that no swept key "
        "changes, and tell the jobs apart in hydra.sweep.subdir (each job's folder inside it)"
    ]
    assert not (tmp_path / "sweep").exists()
    # one job whose folder is the sweep's own (the default seed's) leaves the other's differing all the same
    args[-1] = "seed=1234,2"
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]  # (were it run)
    status, stderr = finish(popen("rnnreg-train", *args, *short, f"hydra.sweep.dir={tmp_path}/sweep/${{seed}}"))
    assert status == 2 and stderr[0].startswith(
        f"error: hydra.sweep.dir={tmp_path}/sweep/${{seed}} differs between the multirun's jobs (job 1 (seed=2) would "
        f"go to {tmp_path}/sweep/2, the sweep's record to {tmp_path}/sweep/1234): "
    )
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_folder_named_by_the_time_to_the_microsecond_is_one_folder(tiny_corpus, tmp_path):
    """`hydra.sweep.dir=.../${now:...%f}` (as the default's): the sweep resolves its folder once, before its jobs are
    composed, so every job shares it (the check of the jobs' folders once resolved the time in each job, and
    refused the sweep as one whose folder differs between jobs); a folder no swept key changes is left as given."""
    args = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "test=false", "seed=1,2"]
    args += [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        f"hydra.sweep.dir={tmp_path}/s/${{now:%H-%M-%S-%f}}",
    ]
    status, _ = finish(popen("rnnreg-train", *args), error=False)
    assert status == 0
    (sweep,) = (tmp_path / "s").iterdir()
    assert {"0", "1", "multirun.yaml"} <= {p.name for p in sweep.iterdir()}
    hydra = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]
    given = [o for o in hydra["overrides"]["hydra"] if o.startswith("hydra.sweep.dir=")]
    assert given == [f"hydra.sweep.dir={tmp_path}/s/${{now:%H-%M-%S-%f}}"]  # the command's own, not pinned


@pytest.mark.parametrize("folder", ["/tmp/a\\x/b", "/tmp/o u't/x", "/tmp/e\\'q", "/tmp/end\\", "/tmp/a+b/2026"])
def test_a_pinned_sweep_folder_reads_back_as_itself(folder):
    """The sweep folder given to every job as a Hydra override (quoted_for_hydra) is the folder, character for
    character: a backslash, a quote, a space, a backslash at its end."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rnnreg.sweep_folder import quoted_for_hydra

    (override,) = OverridesParser.create().parse_overrides([f"hydra.sweep.dir={quoted_for_hydra(folder)}"])
    assert override.value() == folder


@pytest.mark.parametrize(
    ("searched", "name"),
    [
        (["experiment=choice(paper_medium,paper_large)"], "paper_medium+paper_large"),
        # a fixed value beside the search: Optuna's plugin takes the key out of its search, every trial's is it
        (
            ["+hydra.sweeper.params.experiment='choice(paper_medium,paper_large)'", "experiment=paper_small"],
            "paper_small",
        ),
    ],
)
def test_a_search_over_experiments_puts_its_trials_in_one_folder_named_after_them(
    tiny_corpus, tmp_path, searched, name
):
    """Optuna's trials come one by one (no job is known before): its search space names the experiments, those
    its trials compose."""
    args = ["-m", "hparams_search=optuna", *searched, *TINY]
    args += [f"data.data_dir={tiny_corpus}", "test=false", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    args += ["trainer.limit_val_batches=2", "hydra.sweeper.n_trials=2", f"paths.output_root={tmp_path}"]
    status, _ = finish(popen("rnnreg-train", *args), error=False)
    assert status == 0
    (named,) = (tmp_path / "train" / "multirun").iterdir()
    assert named.name == name
    (sweep,) = named.iterdir()
    assert {"0", "1", "optimization_results.yaml"} <= {p.name for p in sweep.iterdir()}


def test_a_given_sweep_folder_that_differs_between_a_searchs_trials_is_one_line_before_anything_is_made(
    tiny_corpus, tmp_path
):
    """Optuna's search over experiments with a hydra.sweep.dir given that reads ${experiment_name}: the trials of
    another experiment than the sweep's own went to a folder of their own (multirun/smoke/3 beside the record in
    multirun/paper_medium), as Hydra's basic sweeper's jobs would, which are refused. One line, nothing made; a
    folder no searched key changes is left as given."""
    args = ["-m", "hparams_search=optuna", "experiment=choice(paper_medium,smoke)", *TINY]
    args += [f"data.data_dir={tiny_corpus}", "test=false", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    args += ["trainer.limit_val_batches=2", "hydra.sweeper.n_trials=2"]
    status, stderr = finish(popen("rnnreg-train", *args, f"hydra.sweep.dir={tmp_path}/sweep/${{experiment_name}}"))
    assert status == 2 and stderr == [
        f"error: hydra.sweep.dir={tmp_path}/sweep/${{experiment_name}} differs between the search's trials (a trial "
        f"of experiment=smoke would go to {tmp_path}/sweep/smoke, the sweep's record to {tmp_path}/sweep/paper_medium)"
        ": give a folder that no searched key changes, and tell the trials apart in hydra.sweep.subdir (each trial's "
        "folder inside it)"
    ]
    assert not (tmp_path / "sweep").exists()
    status, _ = finish(popen("rnnreg-train", *args, f"hydra.sweep.dir={tmp_path}/fixed"), error=False)
    assert status == 0 and {"0", "1", "optimization_results.yaml"} <= {p.name for p in (tmp_path / "fixed").iterdir()}


@pytest.mark.parametrize(
    ("search", "folder_key", "trial", "sweeps"),
    [
        # the space's interval (hparams_search=optuna: dropout.p in [0.2, 0.7]): a trial at its start
        ([], "dropout.p", "dropout.p=0.2", "0.5"),
        (["optim.lr=choice(1.0,0.5)"], "optim.lr", "optim.lr=0.5", "1.0"),  # a choice the command line searches
    ],
    ids=["interval", "choice"],
)
def test_a_given_sweep_folder_that_reads_a_searched_key_is_one_line_before_anything_is_made(
    search, folder_key, trial, sweeps, tiny_corpus, tmp_path
):
    """Not only experiments: a hydra.sweep.dir given to an Optuna search that reads any key it searches would put
    the trials in folders of their own beside the study's record. One line, nothing made."""
    args = ["-m", "hparams_search=optuna", *search, *TINY, f"data.data_dir={tiny_corpus}", "hydra.sweeper.n_trials=2"]
    template = f"{tmp_path}/sweep/${{{folder_key}}}"
    status, stderr = finish(popen("rnnreg-train", *args, f"hydra.sweep.dir={template}"))
    value = trial.partition("=")[2]
    assert status == 2 and stderr == [
        f"error: hydra.sweep.dir={template} differs between the search's trials (a trial of {trial} would go to "
        f"{tmp_path}/sweep/{value}, the sweep's record to {tmp_path}/sweep/{sweeps}): give a folder that no searched "
        "key changes, and tell the trials apart in hydra.sweep.subdir (each trial's folder inside it)"
    ]
    assert not (tmp_path / "sweep").exists()


def test_a_given_sweep_folder_that_reads_a_key_searched_through_an_interpolation_is_one_line(tiny_corpus, tmp_path):
    """A search space's value that reads ${oc.env:SEEDS} is the search SEEDS holds (Hydra resolves the sweeper's
    config as it makes Optuna's plugin): a hydra.sweep.dir that reads ${seed} would put the trials beside the study's
    record, refused as one written out is, nothing made (before: read as written, the seed fixed; the trials went
    to sweep/1, the record to sweep/1234)."""
    args = ["-m", "hparams_search=optuna", *TINY, f"data.data_dir={tiny_corpus}", "hydra.sweeper.n_trials=2"]
    args += ["test=false", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    template = f"{tmp_path}/sweep/${{seed}}"
    searched = "+hydra.sweeper.params.seed=${oc.env:SEEDS}"
    proc = popen("rnnreg-train", *args, searched, f"hydra.sweep.dir={template}", env={"SEEDS": "choice(1,2)"})
    status, stderr = finish(proc)
    assert status == 2 and stderr == [
        f"error: hydra.sweep.dir={template} differs between the search's trials (a trial of seed=1 would go to "
        f"{tmp_path}/sweep/1, the sweep's record to {tmp_path}/sweep/1234): give a folder that no searched key "
        "changes, and tell the trials apart in hydra.sweep.subdir (each trial's folder inside it)"
    ]
    assert not (tmp_path / "sweep").exists()


def test_a_search_space_value_that_cannot_be_resolved_is_one_line_before_anything_is_made(
    tiny_corpus, tmp_path, monkeypatch
):
    """Hydra resolves a search sweeper's params as it makes Optuna's plugin: one that cannot be resolved (a variable
    not set) is one line naming the key as given and why, exit 2, before the sweep folder is made (before: OmegaConf's
    traceback, exit 1, from the sweep folder's reading of the space, or from the plugin once the folder was made)."""
    monkeypatch.delenv("RNNREG_NOT_SET", raising=False)
    args = ["-m", "hparams_search=optuna", *TINY, f"data.data_dir={tiny_corpus}", "hydra.sweeper.n_trials=1"]
    searched = "+hydra.sweeper.params.seed=${oc.env:RNNREG_NOT_SET}"
    status, stderr = finish(popen("rnnreg-train", *args, searched, f"hydra.sweep.dir={tmp_path}/sweep"))
    assert status == 2 and stderr == [
        "error: hydra.sweeper.params.seed=${oc.env:RNNREG_NOT_SET}: KeyError raised while resolving interpolation: "
        "\"Environment variable 'RNNREG_NOT_SET' not found\""
    ]
    assert not (tmp_path / "sweep").exists()


LONG_NAMES = ("an_experiment_named_at_length_to_say_what_it_is", "another_named_at_length_to_say_what_it_is")
OPTUNA = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "dropout=non_recurrent"]


@pytest.mark.parametrize(
    ("swept", "name"),
    [
        (["experiment_name=a,b", "seed=1,2"], "a+b"),  # each experiment once, however many jobs it has
        ([f"experiment_name={','.join(LONG_NAMES)}"], "2_experiments"),  # past LONGEST_NAME: how many
        # the command line's search after the space's: Optuna's plugin searches the last
        (
            [
                *OPTUNA,
                "+hydra.sweeper.params.experiment='choice(paper_medium,paper_large)'",
                "experiment=choice(paper_small,smoke)",
            ],
            "paper_small+smoke",
        ),
        ([*OPTUNA, "experiment=choice(paper_small,smoke)", "experiment_name=choice(a,b)"], "a+b"),  # the name given
        # a fixed value beside the space's search: Optuna's plugin takes the key out of its search
        ([*OPTUNA, "+hydra.sweeper.params.experiment='choice(paper_medium,paper_large)'", "experiment=smoke"], "smoke"),
        ([*OPTUNA, "experiment_name=interval(1,2)"], "experiments"),  # a search that lists none
        # the space's params resolved, as the plugin reads them: the search the variable holds, the config's seed
        ([*OPTUNA, "+hydra.sweeper.params.experiment=${oc.env:SEARCHED}"], "paper_small+smoke"),
        ([*OPTUNA, "+hydra.sweeper.params.experiment_name='choice(a_${seed},b)'"], "a_1234+b"),
    ],
)
def test_a_sweep_over_experiments_names_its_folder_after_them_before_anything_runs(
    tiny_corpus, tmp_path, monkeypatch, swept, name
):
    """The folder a sweep over experiments goes to, seen where it stops before any job (a file where the folder
    goes): named after each swept or searched experiment once, or after how many where their names are long, or
    after none that a search lists."""
    monkeypatch.setenv("SEARCHED", "choice(paper_small,smoke)")
    blocker = tmp_path / "train" / "multirun" / name
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    args = ["-m", *swept, *TINY, f"data.data_dir={tiny_corpus}", "test=false", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]  # (were it run)
    status, stderr = finish(popen("rnnreg-train", *args, f"paths.output_root={tmp_path}"))
    assert status == 2 and len(stderr) == 1, stderr
    assert stderr[0].startswith(f"error: could not lock {blocker}/") and stderr[0].endswith(
        ": Not a directory: give hydra.sweep.dir a folder you can write in"
    ), stderr[0]


@pytest.mark.parametrize("sweeper", ["basic", "optuna"])
def test_a_sweep_record_that_cannot_be_written_is_one_line_before_any_job(tiny_corpus, tmp_path, sweeper):
    """The sweep's own records (sweep.yaml, the keys it varies; multirun.yaml for Optuna, whose sweeper writes
    none) are written as it starts: a folder in the way is one line naming it and the fix, exit 2, no job run."""
    sweep = tmp_path / "sweep"
    (sweep / ("sweep.yaml" if sweeper == "basic" else "multirun.yaml")).mkdir(parents=True)
    search = ["seed=1,2"] if sweeper == "basic" else ["hparams_search=optuna", "hydra.sweeper.n_trials=2"]
    args = ["-m", "experiment=paper_medium", *TINY, f"data.data_dir={tiny_corpus}", "test=false", *search]
    status, stderr = finish(popen("rnnreg-train", *args, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"))
    name = "sweep.yaml" if sweeper == "basic" else "multirun.yaml"
    assert status == 2 and stderr == [
        f"error: could not write {name} in {sweep}: Is a directory; move the folder {name} away (the previous "
        f"{name}, if any, is intact)"
    ]
    assert {p.name for p in sweep.iterdir()} <= {"sweep.yaml", "multirun.yaml", ".lock"}  # no job's folder


def test_jobs_whose_subdir_would_share_a_folder_are_refused_before_any_is_made(tiny_corpus, tmp_path):
    """A hydra.sweep.subdir that does not tell two jobs apart (a key they share; Hydra's override_dirname without
    the swept key) is refused with both jobs named, as Hydra would resolve it, whatever the launcher; one that
    does not resolve is one line too. One that tells the jobs apart runs, each job in its folder."""
    common = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "test=false", "seed=1,2"]
    common += ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    sweep = tmp_path / "sweep"
    shared = {  # the folder's name after the sweep folder: the model's size; every override but the seed
        "${model.hidden_size}": ["hydra/launcher=basic"],
        "${hydra.job.override_dirname}": [
            "hydra/launcher=stacked",
            "hydra.job.config.override_dirname.exclude_keys=[seed]",
        ],
    }
    for subdir, args in shared.items():
        status, stderr = finish(
            popen("rnnreg-train", *common, *args, f"hydra.sweep.dir={sweep}", f"hydra.sweep.subdir={subdir}")
        )
        assert status == 2 and len(stderr) == 1
        assert re.fullmatch(
            re.escape(f"error: hydra.sweep.subdir={subdir} gives jobs 0 (seed=1) and 1 (seed=2) one folder, {sweep}/")
            + (r"16" if "hidden" in subdir else r".*experiment=paper_small.*")
            + re.escape(", each writing over the other's files: name each job's folder apart (with the keys it ")
            + re.escape("sweeps, or ${hydra.job.num})"),
            stderr[0],
        ), stderr[0]
        assert not sweep.exists()
    for key, value in (("hydra.sweep.subdir", "${hydra.job.num}_${nope}"), ("hydra.sweep.dir", f"{sweep}/${{nope}}")):
        status, stderr = finish(popen("rnnreg-train", *common, f"hydra.sweep.dir={sweep}", f"{key}={value}"))
        prefix = f"{key}={value}" if key.endswith("subdir") else key
        assert status == 2 and stderr == [f"error: {prefix}: Interpolation key 'nope' not found"]
        assert not sweep.exists()
    single = [a for a in common if a not in ("-m", "seed=1,2")]
    status, stderr = finish(popen("rnnreg-train", *single, f"hydra.run.dir={tmp_path}/${{nope}}"))
    assert status == 2 and stderr == ["error: hydra.run.dir: Interpolation key 'nope' not found"]
    # ${hydra:job.name} is the command's own name (train) before Hydra starts too: an ended run there is kept as it was
    ended = tmp_path / "train"
    ended.mkdir()
    (ended / "metrics.json").write_text('{"status": "completed"}')
    status, stderr = finish(popen("rnnreg-train", *single, f"hydra.run.dir={tmp_path}/${{hydra:job.name}}"))
    assert status == 2 and stderr[0].startswith(f"error: {ended} holds an earlier run's results (in metrics.json)")
    assert sorted(p.name for p in ended.iterdir()) == ["metrics.json"]  # no .hydra/ written into it
    status, _ = finish(
        popen("rnnreg-train", *common, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=seed_${seed}"), error=False
    )
    assert status == 0
    for seed in (1, 2):
        assert json.loads((sweep / f"seed_{seed}" / "metrics.json").read_text())["status"] == "completed"
        assert f"seed={seed}" in (sweep / f"seed_{seed}" / ".hydra" / "overrides.yaml").read_text()


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_lock_left_by_a_dead_run_is_taken_over_and_a_live_one_is_refused(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RunLock.NAME).write_text("pid 999999@elsewhere\n")  # a run killed with SIGKILL leaves its file
    metrics = train(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"))
    assert metrics["status"] == "completed" and not (run_dir / RunLock.NAME).exists()
    with RunLock(tmp_path / "live"):  # a live owner (this process, through another open file)
        in_use = f"{tmp_path}/live is in use by another live rnnreg run \\(pid {os.getpid()}@"
        with pytest.raises(OutputError, match=in_use):
            train(tiny_cfg("trainer.max_epochs=1", run="live"))
        assert sorted(p.name for p in (tmp_path / "live").iterdir()) == [RunLock.NAME]
    with pytest.raises(ValueError, match="optim.lr=0 must be a number > 0"):  # a failed run releases it too
        train(tiny_cfg("optim.lr=0", run="failed"))
    assert not (tmp_path / "failed" / RunLock.NAME).exists()


def test_concurrent_writers_of_one_file_never_tear_it_nor_fail(tmp_path):
    target, stop, seen, errors = tmp_path / "metrics.json", threading.Event(), set(), []
    contents = {name: name * 200_000 for name in "ab"}

    def writer(name: str) -> None:
        def slowly(tmp: Path) -> None:
            with open(tmp, "w") as f:
                for i in range(0, len(contents[name]), 20_000):
                    f.write(contents[name][i : i + 20_000])
                    f.flush()

        try:
            for _ in range(40):
                replace_atomically(target, slowly)
        except Exception as err:  # a rename of a temporary file the other writer took, with a shared name
            errors.append(err)

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(target.read_text())
            except FileNotFoundError:
                pass

    threads = [threading.Thread(target=writer, args=(name,)) for name in "ab"]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert not errors and seen <= set(contents.values()) and seen
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


# -- a write that fails: one line naming the folder and the cause, the previous checkpoint intact --------------
CHECKPOINT = r"(?:best|last)\.ckpt"


def write_error(name: str, folder: Path, cause: str, where: str = "") -> str:
    """The one line a failed write stops with (rnnreg.io.replace_atomically), as a regex; `name`: a regex of
    the file's name, `where`: of what comes before "could not write" (a stacked group's description)."""
    return (
        rf"error: {where}could not write ({name}) in {re.escape(str(folder))}: {cause}; free space or fix the "
        rf"folder's permissions \(the previous \1, if any, is intact\)"
    )


def test_a_file_size_limit_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_corpus, tmp_path):
    """From epoch 2 no file may grow past 16 KiB (RLIMIT_FSIZE: writes fail with EFBIG, as on a full disk or
    over a quota): the epoch-2 checkpoint cannot be written. Checkpoints are written beside their final name,
    never in $TMPDIR (an empty folder here, still empty after), and no temporary file is left."""
    run_dir, tmpdir = tmp_path / "run", tmp_path / "tmpdir"
    tmpdir.mkdir()
    with started_with(umask=0o022):
        proc = popen(
            "rnnreg-train",
            *train_args(tiny_corpus, run_dir, "trainer.max_epochs=2", "trainer.limit_train_batches=3", "test=false"),
            "+callbacks.limit._target_=helpers.FileSizeLimitFromEpoch",
            "+callbacks.limit.limit=16384",
            env={"TMPDIR": str(tmpdir)},
        )
    status, stderr = finish(proc)
    assert status == 2
    assert re.fullmatch(write_error(CHECKPOINT, run_dir / "checkpoints", "File too large"), stderr[0]), stderr
    for name in ("best", "last"):
        good = torch.load(run_dir / f"checkpoints/{name}.ckpt", weights_only=True)
        assert good["epoch"] == 0 and all(torch.isfinite(v).all() for v in good["state_dict"].values())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "File too large" in metrics["error"]
    assert not any(tmpdir.iterdir())
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    for path in (run_dir / "metrics.json", run_dir / "checkpoints/last.ckpt"):  # as open() makes them (umask)
        assert path.stat().st_mode & 0o777 == 0o644, path


@pytest.mark.parametrize("program", ["in_turn", "batched"])
def test_a_stacked_group_that_cannot_write_stops_with_one_line_and_keeps_what_it_wrote(tiny_corpus, tmp_path, program):
    """A stacked group's checkpoints and resume file: the batched (GPU's) program writes them in the background
    while training goes on, the members in turn at once. A write that fails stops the sweep with one line and
    exit 2 (in the background: at the next epoch's end). Here the
    group's resume file (every member's weights, twice) is over a file-size limit that the members'
    checkpoints stay under. The checkpoints written before the failure are intact. Each member's
    metrics.json says it failed, and why. No temporary file is left."""
    sweep = tmp_path / "sweep"
    with started_with(file_size=96 * 1024):  # writes past it fail with EFBIG
        proc = popen(
            "rnnreg-train",
            "-m",
            "hydra/launcher=stacked",
            *train_args(tiny_corpus, tmp_path / "run", "seed=1,2,3,4", "trainer.max_epochs=3", "test=false"),
            "trainer.limit_train_batches=3",
            f"hydra.sweep.dir={sweep}",
            f"hydra.launcher.program={program}",
        )
    status, stderr = finish(proc)
    assert status == 2
    group = r"group 0: jobs \[0, 1, 2, 3\], .*: "
    assert re.fullmatch(write_error(r"group_0\.pt", sweep / ".stacked", "File too large", group), stderr[0]), stderr
    for k in range(4):
        job = sweep / str(k)
        best = load_checkpoint(job / "checkpoints/best.ckpt")
        assert best["epoch"] == 0 and all(torch.isfinite(v).all() for v in best["state_dict"].values())
        assert os.path.samefile(job / "checkpoints/best.ckpt", job / "checkpoints/last.ckpt")
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "failed" and "File too large" in metrics["error"] and metrics["epochs"] == 1
    assert not list(sweep.rglob("*.tmp")) and not (sweep / ".stacked" / "group_0.pt").exists()


def root_can(*command: str) -> bool:
    """Whether this machine lets the test do `command` (as root in a sandbox: chattr, mount)."""
    return os.geteuid() == 0 and shutil.which(command[0]) is not None


@pytest.mark.skipif(not root_can("chattr"), reason="needs root and chattr: the immutable flag is refused even to root")
def test_a_read_only_checkpoint_folder_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    proc = popen(
        "rnnreg-train",
        *train_args(tiny_corpus, run_dir, "trainer.max_epochs=2", "trainer.limit_train_batches=3", "test=false"),
        "+callbacks.readonly._target_=helpers.ReadOnlyFromEpoch",
        f"+callbacks.readonly.folder={checkpoints}",
    )
    try:
        status, stderr = finish(proc)
    finally:
        subprocess.run(["chattr", "-i", str(checkpoints)], check=False)
    assert status == 2
    assert re.fullmatch(write_error(CHECKPOINT, checkpoints, "Operation not permitted"), stderr[0]), stderr
    good = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert good["epoch"] == 0 and sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"


def test_a_folder_that_cannot_be_made_is_one_line_and_nothing_is_made(tiny_corpus, tmp_path):
    """A run or sweep folder through a file, in a folder nobody may write in (immutable: refused even to root; for
    another user, no write permission), or on a pseudo-filesystem that makes no folder though access(2) lets root
    write there (/proc, /sys); the same for the default folders' root (paths.output_root: outputs/ in the working
    folder, or $RNNREG_OUTPUT_DIR): one line naming the setting and the fix, exit 2, nothing made. Hydra's own
    answer was a traceback and exit 1."""
    blocker, locked = tmp_path / "a_file", tmp_path / "locked"
    blocker.write_text("")
    locked.mkdir()
    fix = "give {} a folder you can write in"
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}"]
    sweep = ["-m", *tiny, "seed=1,2"]
    # root may write in /proc and /sys as access(2) sees it, yet no folder can be made there; another user may not
    root = os.geteuid() == 0
    in_proc = (
        "no folder can be made in /proc (No such file or directory)" if root else "this user cannot write in /proc"
    )
    in_sys = "no folder can be made in /sys (Operation not permitted)" if root else "this user cannot write in /sys"
    cases = {
        "run": (
            [*tiny, f"hydra.run.dir={blocker}/run"],
            {},
            f"hydra.run.dir={blocker}/run: {blocker} is a file, not a folder: {fix.format('hydra.run.dir')}",
        ),
        "sweep": (
            [*sweep, f"hydra.sweep.dir={blocker}/s"],
            {},
            f"hydra.sweep.dir={blocker}/s: {blocker} is a file, not a folder: {fix.format('hydra.sweep.dir')}",
        ),
        "locked": (
            [*tiny, f"hydra.run.dir={locked}/run"],
            {},
            f"hydra.run.dir={locked}/run: this user cannot write in {locked}: {fix.format('hydra.run.dir')}",
        ),
        "proc": (  # access(2) allows it to root, mkdir does not: found by making a folder there
            [*sweep, "hydra.sweep.dir=/proc/rnnreg_sweep"],
            {},
            f"hydra.sweep.dir=/proc/rnnreg_sweep: {in_proc}: {fix.format('hydra.sweep.dir')}",
        ),
        "proc_run": (
            [*tiny, "hydra.run.dir=/proc/rnnreg_run"],
            {},
            f"hydra.run.dir=/proc/rnnreg_run: {in_proc}: {fix.format('hydra.run.dir')}",
        ),
        "sys_default": (
            tiny,
            {"env": {"RNNREG_OUTPUT_DIR": "/sys/rnnreg_out"}},
            f"RNNREG_OUTPUT_DIR=/sys/rnnreg_out: {in_sys}: {fix.format('RNNREG_OUTPUT_DIR')}",
        ),
        "default": (
            tiny,
            {"cwd": locked},
            f"paths.output_root=outputs: this user cannot write in {locked}: {fix.format('paths.output_root')}",
        ),
        "env": (
            sweep,
            {"env": {"RNNREG_OUTPUT_DIR": f"{blocker}/out"}},
            f"RNNREG_OUTPUT_DIR={blocker}/out: {blocker} is a file, not a folder: {fix.format('RNNREG_OUTPUT_DIR')}",
        ),
    }
    immutable = root_can("chattr")
    if immutable:
        subprocess.run(["chattr", "+i", str(locked)], check=True)
    elif os.geteuid() == 0:  # root without chattr may write anywhere
        del cases["locked"], cases["default"]
    else:
        locked.chmod(0o555)
    try:
        assert_each_refused_in_one_line(cases)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "corpus", "locked"]
    assert blocker.read_text() == "" and not any(locked.iterdir())
    assert not any(os.path.exists(p) for p in ("/proc/rnnreg_sweep", "/proc/rnnreg_run", "/sys/rnnreg_out"))


def test_a_folder_that_starts_with_a_tilde_is_one_line_with_the_folder_meant(tiny_corpus, tmp_path):
    """A shell expands ~ only at a word's start, unquoted: `hydra.run.dir=~/runs` reaches Hydra as it is (its grammar
    refuses it), and the quoting the line gave for it, "hydra.run.dir='~/runs'", ran the whole run in a folder named ~
    in the working folder, as did paths.output_root, $RNNREG_OUTPUT_DIR and hydra.sweep.dir given so. Each is one
    line that gives the folder meant, $HOME's, exit 2, nothing made (ckpt_path and data.data_dir, which are read,
    expand a ~ themselves)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    at = {"cwd": work, "env": {"HOME": str(home)}}
    made = (
        "would make a folder named ~ in {}, for nothing expands its ~ (a shell does only at a word's start, unquoted)"
    )
    cases = {
        "unquoted": (
            [*tiny, "hydra.run.dir=~/runs"],
            at,
            "hydra.run.dir=~/runs is not an override Hydra can read (LexerNoViableAltException), and a shell expands "
            f"~ only at a word's start: give hydra.run.dir={home}/runs",
        ),
        "run": (
            [*tiny, "hydra.run.dir='~/runs'"],
            at,
            f"hydra.run.dir=~/runs {made.format(work)}: give hydra.run.dir={home}/runs",
        ),
        "root": (
            [*tiny, "paths.output_root='~/out'"],
            at,
            f"paths.output_root=~/out {made.format(work)}: give paths.output_root={home}/out",
        ),
        "env": (
            tiny,
            {"cwd": work, "env": {"HOME": str(home), "RNNREG_OUTPUT_DIR": "~/out"}},
            f"RNNREG_OUTPUT_DIR=~/out {made.format(work)}: give RNNREG_OUTPUT_DIR={home}/out",
        ),
        "sweep": (
            ["-m", *tiny, "seed=1,2", "hydra.sweep.dir='~/sweep'"],
            at,
            f"hydra.sweep.dir=~/sweep {made.format(work)}: give hydra.sweep.dir={home}/sweep",
        ),
    }
    assert_each_refused_in_one_line(cases)
    assert not any(work.iterdir()) and not any(home.iterdir())


@pytest.mark.skipif(not root_can("mount"), reason="needs root to mount a tmpfs")
def test_a_folder_on_a_filesystem_out_of_inodes_is_one_line_and_nothing_is_made(tiny_corpus, tmp_path):
    """A filesystem with no inode left (as a full disk or a quota: permissions allow it, mkdir does not) for a run's
    folder, a sweep's and the default folders' root: one line with the system's reason, exit 2, nothing made (Hydra's
    answer was a traceback, exit 1)."""
    with tmpfs(tmp_path / "disk", "size=1m,nr_inodes=2") as disk:
        (disk / "the_last_inode").write_text("")  # the root folder holds one inode, this file the other
        full = f"no folder can be made in {disk} (No space left on device): give {{}} a folder you can write in"
        tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}"]
        cases = {
            "run": (
                [*tiny, f"hydra.run.dir={disk}/run"],
                {},
                f"hydra.run.dir={disk}/run: " + full.format("hydra.run.dir"),
            ),
            "sweep": (
                ["-m", *tiny, "seed=1,2", f"hydra.sweep.dir={disk}/s"],
                {},
                f"hydra.sweep.dir={disk}/s: " + full.format("hydra.sweep.dir"),
            ),
            "default": (tiny, {"cwd": disk}, "paths.output_root=outputs: " + full.format("paths.output_root")),
        }
        assert_each_refused_in_one_line(cases)
        assert sorted(p.name for p in disk.iterdir()) == ["the_last_inode"]


def test_the_folder_check_leaves_the_folder_as_it_found_it(tmp_path):
    """The check that a folder can be made in a folder makes one there and removes it: nothing is left, and the
    folder's times are put back (a build tool or `ls -t` would otherwise see it changed at every run's start)."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "earlier.txt").write_text("")
    os.utime(folder, ns=(1_000_000_000_123, 2_000_000_000_456))
    assert cannot_make_a_folder_in(folder) is None
    after = folder.stat()  # (before listing it, which sets its access time)
    assert (after.st_atime_ns, after.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)
    assert [p.name for p in folder.iterdir()] == ["earlier.txt"]


def assert_each_refused_in_one_line(cases: dict[str, tuple[list[str], dict, str]]) -> None:
    """Each case's rnnreg-train (its arguments, its process's cwd or env), all at once: exit 2 and its one line."""
    procs = {name: popen("rnnreg-train", *args, **kwargs) for name, (args, kwargs, _) in cases.items()}
    results = {name: finish(proc) for name, proc in procs.items()}
    assert results == {name: (2, [f"error: {line}"]) for name, (*_, line) in cases.items()}


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs of `options` (its size, its number of inodes) mounted on `folder` (made here) for the while."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a whole filesystem that can fill up."""
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        yield disk


@pytest.mark.skipif(not root_can("mount"), reason="needs root to mount a small tmpfs")
def test_a_full_disk_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_corpus, small_disk):
    run_dir = small_disk / "run"
    proc = popen(
        "rnnreg-train",
        *train_args(tiny_corpus, run_dir, "trainer.max_epochs=2", "trainer.limit_train_batches=3", "test=false"),
        "+callbacks.fill._target_=helpers.FillDiskFromEpoch",
        f"+callbacks.fill.filler={small_disk / 'filler'}",
    )
    status, stderr = finish(proc)
    assert status == 2
    assert re.fullmatch(write_error(CHECKPOINT, run_dir / "checkpoints", "No space left on device"), stderr[0]), stderr
    good = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert good["epoch"] == 0 and all(torch.isfinite(v).all() for v in good["state_dict"].values())
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


# -- from a mutation audit of run_lock, run_folder_check and resume ---------------------------------------------
def test_a_dead_runs_longer_lock_line_is_replaced_whole(tmp_path):
    """A lock file a killed run left, its owner line longer than the new one's: the new owner's line replaces it
    whole, so a second run is told the live owner alone (not the new line followed by the rest of the old)."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / RunLock.NAME).write_text("pid 999999@a-much-longer-host-name.cluster.example.org\n")
    with RunLock(folder):
        owner = f"pid {os.getpid()}@{os.uname().nodename}"
        assert (folder / RunLock.NAME).read_text() == f"{owner}\n"
        assert RunLock.in_use(folder) == (
            f"{folder} is in use by another live rnnreg run ({owner}): give this run another folder "
            "(hydra.run.dir=...), or wait for that run to end"
        )


@pytest.mark.parametrize("beside", [".hydra", "metrics.json"])
def test_a_runs_checkpoints_folder_without_a_checkpoint_is_still_a_folder_of_checkpoints(tmp_path, beside):
    """A run's checkpoints/ that holds no checkpoint yet (the run stopped before its first) is known by the run's
    .hydra/ or metrics.json beside it: rnnreg-eval's or rnnreg-train's folder there, or inside it, is refused as
    for one that holds checkpoints. A folder named checkpoints beside neither is any folder."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    if beside == ".hydra":
        (run_dir / ".hydra").mkdir()
    else:
        (run_dir / "metrics.json").write_text('{"status": "interrupted"}\n')
    folder = run_dir / "checkpoints"
    with pytest.raises(OutputError, match=f"^hydra.run.dir={folder} is a folder of checkpoints, and rnnreg-eval "):
        run_folder_check.check_run_dir_free([f"hydra.run.dir={folder}"], "eval", "evaluate")
    with pytest.raises(OutputError, match=f"^hydra.run.dir={folder}/e is inside {folder}, a folder of checkpoints"):
        run_folder_check.check_run_dir_free([f"hydra.run.dir={folder}/e"], "train", "train")
    (tmp_path / "other" / "checkpoints").mkdir(parents=True)
    run_folder_check.check_run_dir_free([f"hydra.run.dir={tmp_path}/other/checkpoints"], "eval", "evaluate")


def test_a_runs_record_or_a_sweeps_own_folder_is_no_folder_for_a_run(tmp_path):
    """rnnreg-eval's or rnnreg-train's folder in a run's .hydra/ or csv/, or a sweep's own folder (its
    multirun.yaml), is refused before anything is written, as a folder of checkpoints is: its metrics.json would
    read as another run of that run or sweep (before: written there; found by a probe, which rnnreg-report then
    listed as a completed run of the sweep). A job's folder in a sweep, and a sweep folder for a multirun, are not."""
    run_dir, sweep = tmp_path / "run", tmp_path / "sweep"
    for folder in (run_dir / ".hydra", run_dir / "csv", sweep / "0" / ".hydra"):
        folder.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for folder, where in (
        (run_dir / ".hydra", f"is the record of the run in {run_dir} (.hydra/)"),
        (run_dir / "csv" / "x", f"is inside {run_dir}/csv, the record of the run in {run_dir} (csv/)"),
        (sweep, "is a sweep's folder (its multirun.yaml)"),
    ):
        for config_name, job_name, program in (("eval", "evaluate", "rnnreg-eval"), ("train", "train", "rnnreg-train")):
            with pytest.raises(OutputError, match=f"^hydra.run.dir={re.escape(f'{folder} {where}')}, and {program} "):
                run_folder_check.check_run_dir_free([f"hydra.run.dir={folder}"], config_name, job_name)
    assert not (run_dir / "csv" / "x").exists()
    run_folder_check.check_run_dir_free([f"hydra.run.dir={sweep}/1"], "train", "train")  # a job's folder of its own
    run_folder_check.check_run_dir_free(["-m", f"hydra.sweep.dir={tmp_path}/new"], "train", "train")


def test_an_empty_run_folder_setting_is_the_current_folder_and_its_results_are_kept(tiny_corpus, tmp_path):
    """`hydra.run.dir=` (empty: Hydra runs in the current folder) where that folder holds an earlier run's results:
    refused with one line before Hydra writes there (the earlier run's .hydra/ record kept, no log written)."""
    earlier = tmp_path / "earlier"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / ".hydra" / "overrides.yaml").write_text("- seed=5\n")
    (earlier / "metrics.json").write_text('{"status": "completed"}\n')
    before = snapshot(earlier)
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "hydra.run.dir="]
    status, stderr = finish(popen("rnnreg-train", *args, cwd=earlier))
    assert status == 2 and stderr == [
        f"error: {earlier} holds an earlier run's results (in metrics.json), which this run would write over: give "
        "it another folder (hydra.run.dir=...), or remove that folder first"
    ]
    assert snapshot(earlier) == before


def test_a_run_goes_on_in_its_own_folder_with_ckpt_path_last(tiny_cfg, tiny_corpus, tmp_path):
    """`rnnreg-train ... ckpt_path=last hydra.run.dir=<its folder>` (the guide's resume in place): the command
    line's check leaves its folder's results to the run, which goes on from that folder's last.ckpt."""
    train(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false", run="run"))
    args = train_args(tiny_corpus, tmp_path / "run", "trainer.max_epochs=2", "trainer.limit_train_batches=2")
    status, _ = finish(popen("rnnreg-train", *args, "test=false", "ckpt_path=last"), error=False)
    assert status == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2


def test_a_config_that_is_a_multirun_by_itself_has_its_sweep_folder_checked_as_with_m(tiny_corpus, tmp_path):
    """An experiment whose config is a multirun (hydra.mode: MULTIRUN), run without -m, with a hydra.sweep.dir
    below a file: the line says why no folder can be made there, as for `-m` (not a failed lock)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = ["experiment=ablation_placement_small", *TINY, f"data.data_dir={tiny_corpus}"]
    status, stderr = finish(popen("rnnreg-train", *args, f"hydra.sweep.dir={blocker}/s"))
    assert status == 2 and stderr == [
        f"error: hydra.sweep.dir={blocker}/s: {blocker} is a file, not a folder: give hydra.sweep.dir a folder you "
        "can write in"
    ]


@pytest.mark.parametrize("program", ["generate", "report"])
def test_generate_and_report_run_in_a_folder_that_holds_a_link(tmp_path, monkeypatch, program):
    """rnnreg-generate and rnnreg-report run in the current folder (hydra.run.dir=.) and write nothing there (no
    .hydra/, no log): a link in it (a corpus linked in beside one's runs) is no reason to refuse them, as it is for
    a run that writes in its folder."""
    (tmp_path / "corpus").symlink_to(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["ckpt_path=/x/best.ckpt"] if program == "generate" else ["path=/x"]
    # (own_run_dir: their configs set hydra.run.dir=., as check_command_line finds)
    run_folder_check.check_run_dir_free(args, program, program, False, own_run_dir=True)
    with pytest.raises(OutputError, match="^hydra.run.dir=. holds corpus, a link to "):  # (a run there writes)
        run_folder_check.check_run_dir_free(["hydra.run.dir=."], "train", "train", False)
