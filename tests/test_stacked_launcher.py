"""hydra/launcher=stacked as users run it: real `rnnreg-train -m` processes on the tiny corpus. Each member of a
stacked group computes what its job run alone computes (basic launcher), writes the same
outputs, stops alone when it diverges, and an interrupted sweep resumes exactly."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

import warm_start
from helpers import (
    BIN,
    TINY,
    RunsCode,
    compose_config,
    folder_contents,
    named_sweep_group,
    needs_triton,
    run,
    run_signal_at_import,
    run_with_sitecustomize,
    signal_at,
    speed_state,
    srun_env,
    wandb_run_parts,
    wandb_runs,
    write_corpus,
)
from rnnreg import (
    stacked_outputs,
    stacked_progress,
    stacked_resume,
    stacked_settings,
    stacked_stop,
    stacked_train,
)
from rnnreg.command_line import validate_args
from rnnreg.console import cpu_model
from rnnreg.errors import CheckpointError, ConfigError, DataError, OutputError, TrainingDiverged
from rnnreg.io import load_checkpoint, save_atomically, write_json_atomic
from rnnreg.member_checkpoint import member_checkpoint
from rnnreg.model import cpu_runs_fused_lstm_in_bf16, net_kwargs
from rnnreg.recorded_commands import go_on_command
from rnnreg.run_record import STOPPED_BY, unfinished_record
from rnnreg.schema import trainer_arguments
from rnnreg.stacked import MemberSpec, StackedLanguageModel
from rnnreg.stacked_launcher import Job, check_resume_files, describe, group_jobs, group_key, resumed_groups
from rnnreg.stacked_settings import check_stackable
from rnnreg.stacked_step import group_step
from rnnreg.trainer_rules import trainer_precision

# Members differ in everything a member can hold: seed, lr, clip, weight decay, momentum, schedule, early
# stopping, dropout and the LSTM (a: the paper's dropout on oneDNN's fused LSTM, with momentum; b: no dropout on
# the step loop; c: dropout on h_{t-1}, the step loop; es: no dropout, fused; each as its job alone runs it on a
# CPU). wd (the batched program's sweeps only): DropConnect on both layers' W_hh beside the paper's dropout, fused.
MEMBERS = {
    "a": "defaults:\n  - override /dropout: non_recurrent\nseed: 1\ndropout: {p: 0.3}\n"
    "optim: {lr: 1.0, momentum: 0.5}\ntrainer: {gradient_clip_val: 5.0}\n",
    "b": "seed: 2\noptim: {lr: 0.5}\ntrainer: {gradient_clip_val: 0.25}\nmodel: {lstm: step}\n",
    "c": "defaults:\n  - override /dropout: recurrent\nseed: 3\ndropout: {p: 0.2}\n"
    "optim: {lr: 2.0, weight_decay: 0.001, decay_start: 1}\ntrainer: {gradient_clip_val: 1.0}\n",
    "es": "defaults:\n  - override /callbacks: early_stopping\nseed: 4\ncallbacks: {early_stopping: {patience: 1}}\n",
    "diverge": "seed: 5\noptim: {lr: 1000.0}\n",
    "wd": "defaults:\n  - override /dropout: weight_drop\nseed: 6\ndropout: {p: 0.3}\n",
}
GOOD = ["a", "b", "c", "es"]
ALONE = [*GOOD, "wd"]  # the jobs run alone (`alone`), in its folders' order


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("stacked")
    corpus = write_corpus(root / "corpus", lines=(400, 20, 8))  # short validation and test passes: cheap members
    conf = root / "conf" / "member"
    conf.mkdir(parents=True)
    for name, text in MEMBERS.items():
        (conf / f"{name}.yaml").write_text("# @package _global_\n" + text)
    cli = [
        "experiment=paper_small",
        *TINY,
        "logger=csv",
        f"data.data_dir={corpus}",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=6",
        "trainer.log_every_n_steps=1",
        "data.eval_bptt=10",  # evaluation in several windows, the last shorter: perplexities are per word
        f"hydra.searchpath=[file://{root / 'conf'}]",
    ]
    return SimpleNamespace(root=root, corpus=corpus, cli=cli)


def with_tensorboard(cli: list[str]) -> list[str]:
    """The setup's command line with TensorBoard's logger beside the CSV one."""
    return [arg if arg != "logger=csv" else "logger=tensorboard" for arg in cli]


@pytest.fixture(scope="module")
def stacked(setup) -> Path:
    """The reference: one stacked group of five members, one of which diverges."""
    sweep = setup.root / "stacked"
    proc = run(
        "rnnreg-train",
        "-m",
        *with_tensorboard(setup.cli),
        "hydra/launcher=stacked",
        "+member=a,b,c,es,diverge",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert "5 jobs in 1 group\n" in proc.stdout and "group 0: jobs [0, 1, 2, 3, 4], 5 members" in proc.stdout
    # a failed member fails the sweep as a failed basic job does: its line, the others go on, the list at the end
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0].startswith("error: job 4 (+member=diverge) failed: training loss became")
    assert errors[1] == f"error: 1 job(s) of the multirun in {sweep} failed: 4 (+member=diverge)"
    assert (sweep / "4" / "error.txt").read_text() == errors[0].split(" failed: ", 1)[1] + "\n"
    (setup.root / "stacked_stdout.txt").write_text(proc.stdout)
    return sweep


@pytest.fixture(scope="module")
def alone(setup) -> Path:
    """The same good jobs (and wd, a batched sweep's), each run alone by the basic launcher."""
    sweep = setup.root / "alone"
    proc = run(
        "rnnreg-train", "-m", *with_tensorboard(setup.cli), f"+member={','.join(ALONE)}", f"hydra.sweep.dir={sweep}"
    )
    (setup.root / "alone_stdout.txt").write_text(proc.stdout)
    return sweep


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def losses(job: Path, key: str = "train/loss") -> list[float]:
    with open(job / "csv" / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def steps(job: Path, key: str) -> list[int]:
    with open(job / "csv" / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get(key)]


def columns(job: Path) -> list[str]:
    with open(job / "csv" / "metrics.csv") as f:
        return next(csv.reader(f))


def tensorboard_scalars(job: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from a run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(job / "tensorboard")).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def weights(job: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return load_checkpoint(job / "checkpoints" / name)["state_dict"]


def evaluate_last(setup, job: Path, folder: Path, *overrides: str) -> dict:
    """rnnreg-eval of a job's last.ckpt on the setup's corpus (into `folder`): its metrics.json."""
    run(
        "rnnreg-eval",
        f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}",
        "data=text",
        f"data.data_dir={setup.corpus}",
        "data.batch_size=4",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        *overrides,
        f"hydra.run.dir={folder}",
    )
    return json.loads((folder / "metrics.json").read_text())


def assert_same_optimizer_state(ours: dict, theirs: dict) -> None:
    """Two checkpoints' optimiser states are equal to the bit: param groups and momentum buffers."""
    ours, theirs = ours["optimizer_states"][0], theirs["optimizer_states"][0]
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()
    for index, state in theirs["state"].items():
        assert state.keys() == ours["state"][index].keys() == {"momentum_buffer"}, index
        assert torch.equal(ours["state"][index]["momentum_buffer"], state["momentum_buffer"]), index


# -- grouping (in process) --------------------------------------------------------------------------------
def test_grouping_by_shape_and_max_members(tmp_path, tiny_corpus):
    def job(*overrides: str, run_dir: str = "job"):
        cfg = compose_config(
            ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", *overrides], tmp_path / run_dir
        )
        return SimpleNamespace(key=group_key(cfg), cfg=cfg)

    sweep = [
        job(f"seed={seed}", f"dropout={placement}", "dropout.p=0.3", f"optim.lr={lr}", run_dir=f"{seed}{placement}{lr}")
        for seed in (1, 2)
        for placement in ("none", "non_recurrent", "variational", "weight_drop")
        for lr in (0.5, 1.0)
    ]
    sweep += [
        job(
            "model.init_scale=0.05",
            "trainer.gradient_clip_val=1",
            "callbacks=early_stopping",
            "model.lstm=step",
            "optim.momentum=0.9",
        )
    ]
    # ... and what only names a job or says where it writes: its experiment name (the run plan's title),
    # tags, its loggers (logger=wandb: test_wandb_one_run_per_member)
    sweep += [job("experiment_name=another_name", "tags=[x]", "logger=tensorboard")]
    assert len(sweep) == 18 and len(group_jobs(sweep, 32)) == 1  # everything a member holds may differ
    wider = [job("model.hidden_size=24", f"seed={s}") for s in (1, 2)]
    groups = group_jobs(sweep + wider, 32)
    assert [len(g) for g in groups] == [18, 2] and groups[1] == wider
    assert [len(g) for g in group_jobs(sweep + wider, 16)] == [16, 2, 2]
    assert [len(g) for g in group_jobs(sweep + wider, 5)] == [5, 5, 5, 3, 2]
    # what the members' update rules, schedules and regularisers hold, one at a time
    one_each = [
        job(setting, run_dir=f"one{k}")
        for k, setting in enumerate(
            (
                "optim.weight_decay=0.001",
                "optim.decay=1.5",
                "optim.decay_start=2",
                "regularizer=embedding_dropout",
                "dropout=recurrent",
                "test_ckpt=best",
            )
        )
    ]
    assert len(group_jobs(sweep + one_each, 32)) == 1
    other_corpus = write_corpus(tmp_path / "other_corpus", seed=1)
    for other in (
        f"data.data_dir={other_corpus}",  # another corpus (its vocabulary may even be the same size)
        "data.bptt=7",
        "data.batch_size=2",
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=2",  # a group validates on its jobs' epochs: one n per group
        "model.num_layers=1",
        "model.layer_norm=true",
        "model.tie_weights=true",
    ):
        assert job(other).key != sweep[0].key, other


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=paper_medium"],  # init 0.05, p 0.5 on the fused LSTM
        ["experiment=paper_large", "seed=7"],  # init 0.04, p 0.65
        ["experiment=paper_small", "dropout=variational", "dropout.p=0.3", "model.init_scale=0.07"],
        ["experiment=paper_small", "dropout=weight_drop", "dropout.p=0.4"],
        ["experiment=paper_small", "dropout=recurrent", "dropout.p=0.2", "model.lstm=step"],
        ["experiment=paper_medium", "regularizer=embedding_dropout", "dropout=both"],
    ],
)
def test_a_member_is_its_jobs_model(overrides, tmp_path):
    """MemberSpec.from_config takes every model argument a member holds from its job's config (not a default):
    with the group's (sizes, layer norm, tying) they are the job's single model's arguments, each of them."""
    cfg = compose_config(overrides, tmp_path)
    spec = MemberSpec.from_config(cfg)
    job = net_kwargs(cfg.model, cfg.dropout)
    shared = {key: job[key] for key in ("hidden_size", "num_layers", "layer_norm", "tie_weights")}
    assert spec.model_kwargs() | shared == job and not spec.model_kwargs().keys() & shared.keys()
    assert spec.seed == cfg.seed


def test_a_bad_launcher_setting_is_one_line_before_anything_is_written(tmp_path, tiny_corpus):
    """hydra.launcher's values are checked when the multirun starts, before its sweep folder is made."""
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "hydra/launcher=stacked", "seed=1,2"]
    for setting, line in (
        ("max_members=abc", "max_members=abc must be a whole number of at least 1 (the most jobs trained as one "),
        ("resume=maybe", "resume=maybe must be true or false"),
        ("program=gpu", "program=gpu must be one of auto, batched, in_turn"),
        ("pad_hidden_to=0", "pad_hidden_to=0 must be auto or a whole number of at least 1 (1: no padding)"),
        ("pad_hidden_to=wide", "pad_hidden_to=wide must be auto or a whole number of at least 1"),
    ):
        proc = run("rnnreg-train", *args, f"hydra.launcher.{setting}", f"hydra.sweep.dir={sweep}", check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"error: hydra.launcher.{line}"), proc.stderr
        assert not sweep.exists()
    # a resume into the default folder, new and dated at every start, could never find the sweep (before: it
    # trained every job anew there, with no word)
    outputs = tmp_path / "outputs"
    proc = run("rnnreg-train", *args, "hydra.launcher.resume=true", f"paths.output_root={outputs}", check=False)
    assert proc.returncode == 2 and proc.stderr == (
        "error: hydra.launcher.resume=true goes on with the sweep in hydra.sweep.dir, and here that is a new folder "
        "at every start (dated: ${now:...}): add hydra.sweep.dir=<the sweep's folder, which its first command wrote>\n"
    ), proc.stderr
    assert not outputs.exists()


@pytest.mark.parametrize(
    "setting, says",
    [
        ("max_members=0", "max_members=0 must be a whole number of at least 1"),
        ("max_members=true", "max_members=True must be a whole number of at least 1"),
        ("pad_hidden_to=true", "pad_hidden_to=True must be auto or a whole number of at least 1"),
        ("stop_after_windows=0", "stop_after_windows=0 must be null or a whole number of at least 1"),
        ("stop_after_windows=true", "stop_after_windows=True must be null or a whole number of at least 1"),
    ],
)
def test_a_launcher_setting_out_of_range_or_a_flag_is_refused(setting, says):
    """hydra.launcher's whole numbers as Hydra composes them: 0 is below the least, and true (a YAML flag, which
    Python counts as 1) is no number (test_a_bad_launcher_setting_is_one_line_before_anything_is_written: the
    command's line, before anything is written)."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        default = compose("train", ["hydra/launcher=stacked"], return_hydra_config=True)
        cfg = compose("train", ["hydra/launcher=stacked", f"hydra.launcher.{setting}"], return_hydra_config=True)
    stacked_settings.check_launcher_settings(default.hydra.launcher)
    with pytest.raises(ConfigError, match=f"^hydra.launcher.{re.escape(says)}"):
        stacked_settings.check_launcher_settings(cfg.hydra.launcher)


def group_jobs_here(tmp_path: Path, tiny_corpus: Path, *overrides: str, members: int = 2) -> list[Job]:
    """`members` jobs of one group (seeds 0, 1, ...) on the tiny corpus, composed as the launcher composes them."""
    jobs = []
    for k in range(members):
        folder = tmp_path / str(k)
        folder.mkdir(parents=True, exist_ok=True)  # as the launcher makes it
        cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", f"seed={k}", *overrides]
        jobs.append(
            Job(
                idx=k,
                overrides=[f"seed={k}"],
                cfg=compose_config(cli, folder),
                hydra_cfg=None,
                output_dir=folder,
                key="0",
            )
        )
    return jobs


@needs_triton
@pytest.mark.parametrize("key", ["speed.triton_cell", "speed.triton_update"])
def test_a_group_asked_for_triton_kernels_runs_them_or_is_refused_in_one_line(tmp_path, tiny_corpus, monkeypatch, key):
    """speed.triton_cell or speed.triton_update in a stacked group: refused in one line naming the key where the
    kernels cannot run (a CPU without Triton's interpreter), and given to the group's program where they can."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, f"{key}=true")
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match=rf"^{key}=true runs Triton kernels on a CUDA device .* set {key}=false"):
        stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched")
    assert (trainer.model.triton_cell, trainer.step.triton_update) == (
        key == "speed.triton_cell",
        key != "speed.triton_cell",
    )


def test_files_written_in_the_background_hold_the_state_they_were_handed(tmp_path, tiny_corpus, monkeypatch):
    """The batched (GPU's) program writes the members' checkpoints and the group's resume file in the
    background while the next epoch trains. What lands on disk is the state when they were handed over, not
    what training has made of it since. The writes are held here until every tensor of the group has changed."""
    # tested on their best weights (kept), with momentum (its buffers written too)
    jobs = group_jobs_here(tmp_path, tiny_corpus, "test_ckpt=best", "optim.momentum=0.9")
    gate, written = threading.Event(), []

    def held(obj, path):  # the writer thread waits until training "went on"
        assert gate.wait(timeout=60)
        save_atomically(obj, path)
        written.append(Path(path).name)

    monkeypatch.setattr(stacked_train, "save_atomically", held)
    monkeypatch.setattr(stacked_outputs, "save_atomically", held)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt", program="batched")
    assert trainer.writer.copies  # the batched program writes in the background
    trainer.n_train, trainer.n_val = 3, 1
    with torch.no_grad():
        for b in trainer.step.buffers:
            b.uniform_()
    before = [p.detach().clone() for p in trainer.params]
    best_before = [b.clone() for b in trainer.best_params]
    buffers_before = [b.clone() for b in trainer.step.buffers]
    copies = trainer.host_copies()
    for k, folder in enumerate(trainer.folders):
        trainer.writer.submit(folder.save_checkpoint, "last.ckpt", member_checkpoint(trainer, k, copies))
    trainer.save_resume(copies)
    with torch.no_grad():  # the next epoch trains: every tensor the files hold changes in place
        for t in [*trainer.params, *trainer.best_params, *trainer.step.buffers, trainer.step.nll_sum]:
            t.add_(1.0)
        trainer.step.active.fill_(False)
    gate.set()
    trainer.writer.wait()
    trainer.writer.close()
    assert sorted(written) == ["group_0.pt", "last.ckpt", "last.ckpt"]
    resume = torch.load(tmp_path / ".stacked" / "group_0.pt", weights_only=True)
    assert all(torch.equal(resume["params"][n], b) for n, b in zip(trainer.names, before))
    assert all(torch.equal(saved, b) for saved, b in zip(resume["best_params"], best_before))
    assert all(torch.equal(resume["momentum_buffers"][n], b) for n, b in zip(trainer.names, buffers_before))
    assert resume["active"].all() and not resume["nll_sum"].any()
    for k in range(2):
        checkpoint = load_checkpoint(tmp_path / str(k) / "checkpoints" / "last.ckpt")
        state = checkpoint["state_dict"]
        for name, b in zip(trainer.names, before):
            assert torch.equal(state["net." + trainer.model.single_names[name]], b[k])
        momentum = checkpoint["optimizer_states"][0]["state"]
        for j, i in enumerate(trainer.model.member_orders[k]):  # its optimiser's order: its single model's
            assert torch.equal(momentum[j]["momentum_buffer"], buffers_before[i][k])
        # its own weights and buffers only: a view of the stack would have saved every member's
        tensors = [*state.values(), *(m["momentum_buffer"] for m in momentum.values())]
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)


def test_a_members_checkpoint_inside_an_epoch_holds_its_own_carry_and_words(tmp_path, tiny_corpus):
    """Stopped inside an epoch, each member's last.ckpt holds its own carried state and NLL sum (not another
    member's: ckpt_path= goes on from them), the epoch's tokens and window, and the words it trained with the
    epoch's so far, and the seconds it trained in all and in the stopped epoch so far, not in the last whole one
    (SpeedMonitor's, which the run that goes on divides its words/s by), and the group's time in fit (which the
    run's train_seconds goes on from)."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, members=3)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt", program="batched")
    step = trainer.step
    trainer.n_train, trainer.n_val = 6, 1
    trainer.epoch, trainer.window, trainer.global_step, trainer.tokens = 1, 2, 8, 40  # 2 windows of 5 x 4
    trainer.train_seconds, trainer.epoch_seconds, trainer.epoch_seconds_before = 12.5, 10.0, 2.5
    trainer.fit_seconds = 14.0
    for m in trainer.members:
        m.epochs, m.words = 1, 120
    with torch.no_grad():
        step.carry(tuple(torch.rand_like(t) for t in step.state()))
        step.nll_sum.uniform_(1, 2)
    copies = trainer.host_copies()
    h, c = step.state()
    for k in range(3):
        checkpoint = member_checkpoint(trainer, k, copies)
        carry = checkpoint["train_carry"]
        assert checkpoint["train_window"] == 2 and carry["tokens"].item() == 40
        assert torch.equal(carry["state"][0], h[k]) and torch.equal(carry["state"][1], c[k]), k
        assert torch.equal(carry["nll_sum"], step.nll_sum[k]), k
        speed = speed_state(checkpoint)
        assert speed["train_words"] == 120 + 40
        assert (speed["train_seconds"], speed["epoch_words"], speed["epoch_seconds"]) == (12.5, 40, 2.5)
        assert speed["fit_seconds"] == 14.0


def test_a_members_checkpoint_holds_its_own_momentum_buffers_in_its_models_order(tmp_path, tiny_corpus):
    """Member 1 (optim.momentum, model.lstm=step) beside member 0 (model.lstm=fused: nn.LSTM orders its parameters
    otherwise): member 1's checkpoint holds its own momentum buffers, each under the index its single model's
    optimiser gives that parameter (StepLSTM's order), not in member 0's order."""
    jobs = group_jobs_here(tmp_path, tiny_corpus)
    for k, own in enumerate([("model.lstm=fused",), ("model.lstm=step", "optim.momentum=0.9")]):
        cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", f"seed={k}", *own]
        jobs[k].cfg = compose_config(cli, jobs[k].output_dir)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    assert trainer.model.member_orders[0] != trainer.model.member_orders[1]  # the premise
    trainer.n_train, trainer.n_val = 6, 1
    for m in trainer.members:
        m.epochs = 1
    with torch.no_grad():
        for buffer in trainer.step.buffers:
            buffer.uniform_(-1, 1)
    state = member_checkpoint(trainer, 1, trainer.host_copies())["optimizer_states"][0]["state"]
    with torch.device("meta"):
        names = [name for name, _ in trainer.model.single_model(trainer.model.members[1]).named_parameters()]
    assert sorted(state) == list(range(len(names)))
    for i, name in enumerate(names):
        buffer = trainer.step.buffers[trainer.names.index(name.replace(".", "_"))][1]
        assert torch.equal(state[i]["momentum_buffer"], buffer), name


def test_best_weights_are_kept_only_for_a_test_on_them(tmp_path, tiny_corpus):
    """A copy of every member's best validation weights (K models' memory, and half of each resume file) is
    kept only when some member's test uses them: test_ckpt=best, or auto with early stopping."""
    for overrides, kept in (
        ((), False),
        (("test_ckpt=auto",), False),
        (("test_ckpt=best",), True),
        (("test_ckpt=auto", "callbacks=early_stopping"), True),
    ):
        trainer = stacked_train.GroupTrainer(
            group_jobs_here(tmp_path, tiny_corpus, *overrides), 0, tmp_path / "group_0.pt", program="batched"
        )
        assert (trainer.best_params is not None) == kept, overrides
        trainer.save_resume(trainer.host_copies())
        trainer.writer.close()
        assert (torch.load(tmp_path / "group_0.pt", weights_only=True)["best_params"] is not None) == kept


def test_resume_file_from_another_program_or_device_is_one_line(tmp_path, tiny_corpus):
    """A resume file holds its program's state and its device's mask generators: one written by the batched
    program, resumed with in_turn (which would not go on exactly), or one from a GPU, resumed on a CPU, is
    refused with the fix, and left as it was."""
    jobs = group_jobs_here(tmp_path, tiny_corpus)
    resume_file = tmp_path / "group_0.pt"
    saved = written_resume(stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched"))
    assert_resume_refused(
        stacked_train.GroupTrainer(jobs, 0, resume_file, program="in_turn"),
        "written by the batched program and this run would go on with in_turn, "
        "not exactly: resume with hydra.launcher.program=batched",
        saved,
    )
    state = torch.load(resume_file, weights_only=True)
    torch.save(state | {"device": "cuda"}, resume_file)  # as a GPU's group writes it
    assert_resume_refused(
        stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched"),
        "was written on cuda and this run is on cpu: resume with trainer.accelerator=gpu",
        resume_file.read_bytes(),
    )


def assert_resume_refused(trainer: stacked_train.GroupTrainer, match: str, saved: bytes) -> None:
    """The trainer's load of its resume file is refused with `match`, the file left as it was (`saved`)."""
    with pytest.raises(ConfigError, match=match):
        trainer.load_resume()
    assert trainer.resume_file.read_bytes() == saved


def written_resume(trainer: stacked_train.GroupTrainer) -> bytes:
    """The group's resume file as its trainer writes it (the write waited for): its bytes."""
    trainer.save_resume(trainer.host_copies())
    trainer.writer.close()
    return trainer.resume_file.read_bytes()


def test_resume_file_with_other_padding_is_one_line(tmp_path, tiny_corpus):
    """A resume file holds every member's values unpadded, but a group goes on exactly only at the width it
    computed at (other GEMM shapes round otherwise): one written holding 16 hidden units as 24 is refused by
    a run that holds them as they are, and the other way round, with the fix; at its own padding it loads."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "optim.momentum=0.9", "test_ckpt=best")
    resume_file = tmp_path / "group_0.pt"
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched", pad_hidden_to=12)
    assert trainer.model.units == 24
    with torch.no_grad():  # weights, best weights and momentum no initialisation explains
        for tensors in (trainer.params, trainer.best_params, trainer.step.buffers):
            for name, t in zip(trainer.names, tensors):
                trainer.model.pad_into(t, torch.rand_like(trainer.model.unpadded(t.detach(), name)), name)
    saved = written_resume(trainer)
    state = torch.load(resume_file, weights_only=True)
    assert (state["units"], state["pad_hidden_to"]) == (24, 12)
    assert state["params"]["lstm_weight_hh_l0"].shape == (2, 64, 16)  # unpadded
    assert_resume_refused(
        stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched"),
        "written holding the hidden units as 24 and this run holds them as 16, not exactly: resume with "
        "hydra.launcher.pad_hidden_to=12",
        saved,
    )
    again = stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched", pad_hidden_to=12)
    again.load_resume()
    for ours, theirs in ((again.params, trainer.params), (again.best_params, trainer.best_params)):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert all(torch.equal(a, b) for a, b in zip(again.step.buffers, trainer.step.buffers))
    saved = written_resume(stacked_train.GroupTrainer(jobs, 0, tmp_path / "unpadded.pt", program="batched"))
    assert_resume_refused(
        stacked_train.GroupTrainer(jobs, 0, tmp_path / "unpadded.pt", program="batched", pad_hidden_to=12),
        "holds them as 24, not exactly: resume with hydra.launcher.pad_hidden_to=1",
        saved,
    )
    state = torch.load(tmp_path / "unpadded.pt", weights_only=True)  # as written before padding: no width recorded
    torch.save({k: v for k, v in state.items() if k not in ("units", "pad_hidden_to")}, tmp_path / "unpadded.pt")
    assert_resume_refused(
        stacked_train.GroupTrainer(jobs, 0, tmp_path / "unpadded.pt", program="batched", pad_hidden_to=12),
        "written holding the hidden units as 16 and this run holds them as 24, not exactly: resume with "
        "hydra.launcher.pad_hidden_to=1",
        (tmp_path / "unpadded.pt").read_bytes(),
    )


def test_a_resume_file_gives_the_group_back_where_it_stopped(tmp_path, tiny_corpus):
    """Inside an epoch, what a group's resume file holds comes back as it was written: the window reached and its
    carried state, the epoch's NLL sums and words so far (the epoch's train/ppl and words trained), the group's
    seconds (metrics.json's train_seconds and words/s), the program's window count (the step a divergence names),
    which members the program still trains (an early-stopped one's weights stay as they stopped), the members'
    records, their masks' streams and the global random stream."""
    jobs = group_jobs_here(tmp_path, tiny_corpus)
    resume_file = tmp_path / "group_0.pt"
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched")
    step = trainer.step
    trainer.epoch, trainer.window, trainer.global_step = 1, 2, 8
    trainer.tokens, trainer.train_seconds, trainer.fit_seconds = 40, 3.5, 4.25
    trainer.members[1] = stacked_train.Member(status="stopped", epochs=1, best_val=90.5, words=120)
    with torch.no_grad():
        step.carry(tuple(torch.rand_like(t) for t in step.state()))
        step.nll_sum.uniform_(1, 2)
        step.stop(1)
        step.global_step.fill_(trainer.global_step)
    for generator in trainer.model.generators():  # masks drawn
        torch.rand(5, generator=generator)
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    written_resume(trainer)
    torch.manual_seed(8)
    again = stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched")
    again.load_resume()
    for name in ("epoch", "window", "global_step", "tokens", "train_seconds", "fit_seconds", "members"):
        assert getattr(again, name) == getattr(trainer, name), name
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(again.step.state(), step.state()))
    for name in ("nll_sum", "active", "global_step"):
        assert torch.equal(getattr(again.step, name), getattr(step, name)), name
    assert all(map(torch.equal, again.model.generator_states(), trainer.model.generator_states()))
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_resume_file_on_a_corpus_changed_since_is_refused_inside_an_epoch_and_said_at_its_end(
    tmp_path, tiny_corpus, capsys
):
    """A group's resume file records its data's fingerprint, as a run's checkpoint does: a train file given words
    since (of its vocabulary: nothing else notices) is refused where the group stopped inside an epoch, the file left
    as it was; at an epoch's end it goes on, with a warning on the console and in each member's train.log for the
    train split and for a valid split changed since (the members' best scores were measured on the other)."""
    jobs = group_jobs_here(tmp_path, tiny_corpus)
    inside = stacked_train.GroupTrainer(jobs, 0, tmp_path / "inside.pt", program="batched")
    at_end = stacked_train.GroupTrainer(jobs, 0, tmp_path / "at_end.pt", program="batched")
    inside.epoch, inside.window, inside.global_step = 1, 2, 8
    at_end.epoch, at_end.global_step = 1, 6
    at_end.members[0].best_val, at_end.members[0].epochs = 90.5, 1
    saved = written_resume(inside)
    written_resume(at_end)
    fingerprint = torch.load(tmp_path / "inside.pt", weights_only=True)["data_fingerprint"]
    assert fingerprint == inside.datamodule.load().fingerprints()
    for split in ("train", "valid"):
        with open(tiny_corpus / f"{split}.txt", "a") as f:
            f.write("w1 w2 w3\n")
    assert_resume_refused(
        stacked_train.GroupTrainer(jobs, 0, tmp_path / "inside.pt", program="batched"),
        re.escape(
            f"{tmp_path / 'inside.pt'} was stopped inside epoch 2 after 2 windows and this data's train split "
            f"{tiny_corpus / 'train.txt'} is not the one its run trained on (changed since the checkpoint: its words "
            "or their order differ): the resume would go on at window 3 of streams cut from other text; resume it "
            "on that file as it was (restore it), or from a checkpoint taken at an epoch's end, or train a new run"
        ),
        saved,
    )
    capsys.readouterr()
    again = stacked_train.GroupTrainer(jobs, 0, tmp_path / "at_end.pt", program="batched")
    again.load_resume()
    assert (again.epoch, again.window) == (1, 0)
    lines = [
        f"{tmp_path / 'at_end.pt'} was trained on another train split than {tiny_corpus / 'train.txt'} (changed "
        "since the checkpoint: its words or their order differ): the resumed run trains on other text than its "
        "run's",
        f"{tmp_path / 'at_end.pt'}: its members' best_val_ppl (90.50) and best.ckpt were measured on another "
        f"validation split than {tiny_corpus / 'valid.txt'} (changed since the checkpoint): the resumed run's "
        "best.ckpt and early stopping compare them with perplexities of this one",
    ]
    assert capsys.readouterr().err.splitlines() == [f"warning: group 0: {line}" for line in lines]
    for job in jobs:
        logged = (job.output_dir / "train.log").read_text().splitlines()
        assert [line.split(" - ", 1)[1] for line in logged if "[WARNING]" in line] == lines


def test_a_sweeps_resume_files_are_each_checked_against_the_data_before_its_first_group_trains(tmp_path, tiny_corpus):
    """The launcher checks every interrupted group's resume file against its data as it plans the groups, before the
    first one trains (before: each group only as it loaded its file, so group 0, stopped at an epoch's end, trained on
    before group 1, stopped inside an epoch, was refused): the later group's refusal comes first, in one line."""
    sweep = tmp_path / "sweep"
    first, second = (group_jobs_here(tmp_path / name, tiny_corpus, members=1) for name in ("a", "b"))
    at_end = stacked_train.GroupTrainer(first, 0, sweep / ".stacked" / "group_0.pt", program="batched")
    at_end.epoch, at_end.global_step = 1, 6
    inside = stacked_train.GroupTrainer(second, 1, sweep / ".stacked" / "group_1.pt", program="batched")
    inside.epoch, inside.window, inside.global_step = 1, 2, 8
    written_resume(at_end)
    written_resume(inside)
    groups, pads = [(0, first), (1, second)], {0: 1, 1: 1}
    check_resume_files(sweep, groups, "batched", True, pads, 1)  # the data as it was: both go on
    train_file = tiny_corpus / "train.txt"
    with open(train_file, "a") as f:
        f.write("w1 w2 w3\n")  # words it knows: the same vocabulary, other streams
    with pytest.raises(ConfigError) as refused:
        check_resume_files(sweep, groups, "batched", True, pads, 1)
    assert str(refused.value) == (
        f"{describe(second, 1)}: {sweep / '.stacked' / 'group_1.pt'} was stopped inside epoch 2 after 2 windows and "
        f"this data's train split {train_file} is not the one its run trained on (changed since the checkpoint: its "
        "words or their order differ): the resume would go on at window 3 of streams cut from other text; resume it "
        "on that file as it was (restore it), or from a checkpoint taken at an epoch's end, or train a new run"
    )
    check_resume_files(sweep, groups[:1], "batched", True, pads, 1)  # (at an epoch's end: said as it loads its file)


def test_a_resume_file_on_a_reordered_train_file_is_refused_as_a_runs_checkpoint_is(tmp_path, tiny_corpus):
    """A group's resume file records its vocabulary, as a run's checkpoint does: a train file whose lines were
    reordered since (the same words, first seen in another order: every word id means another word) is refused with
    a run's line, naming the member's recorded train file (before: read as a changed train split, and at an epoch's
    end trained on with a warning), the file left as it was."""
    from omegaconf import OmegaConf

    jobs = group_jobs_here(tmp_path, tiny_corpus)
    for job in jobs:  # each member's record, as the launcher writes it
        (job.output_dir / ".hydra").mkdir()
        OmegaConf.save(job.cfg, job.output_dir / ".hydra" / "config.yaml")
    resume_file = tmp_path / "group_0.pt"
    stopped = stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched")
    stopped.epoch, stopped.global_step = 1, 6
    saved = written_resume(stopped)
    assert torch.load(resume_file, weights_only=True)["vocab"] == stopped.vocab
    train_file = tiny_corpus / "train.txt"
    train_file.write_text("\n".join(reversed(train_file.read_text().splitlines())) + "\n")
    with pytest.raises(CheckpointError) as refused:
        stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched").load_resume()
    words = len(stopped.vocab)
    now = stacked_train.GroupTrainer(jobs, 0, resume_file).vocab
    moved = sum(a != b for a, b in zip(stopped.vocab, now, strict=True))
    assert moved and str(refused.value) == (
        f"{resume_file} was trained on another vocabulary than this data (both {words} words, {moved} words at "
        "another id): its run "
        f"trained on this train file {train_file} (its .hydra/config.yaml), which has changed since, now with its "
        "words first seen in another order: resume it on that file as it was (restore it), or train a new run on the "
        "corpus as it is"
    )
    assert resume_file.read_bytes() == saved


def test_a_resume_file_on_a_test_split_changed_since_warns_that_the_final_test_scores_the_new_one(
    tmp_path, tiny_corpus, capsys
):
    """A test file changed since the group's resume file (before: its members' final test ran on it without a word):
    the resumed group warns on the console and in each member's train.log, as of a changed valid split. A group with
    nothing left to train (stopped in its final test: its last epoch done) warns of that test split only, as a run
    stopped in its final test does (before: of its train and valid splits changed since too, which it no longer
    uses)."""
    jobs = group_jobs_here(tmp_path, tiny_corpus)
    at_end = stacked_train.GroupTrainer(jobs, 0, tmp_path / "at_end.pt", program="batched")
    at_end.epoch, at_end.global_step = 1, 6
    written_resume(at_end)
    done = group_jobs_here(tmp_path / "done", tiny_corpus, "trainer.max_epochs=1")
    in_test = stacked_train.GroupTrainer(done, 0, tmp_path / "in_test.pt", program="batched")
    in_test.epoch, in_test.global_step = 1, 6  # the resume file of its last epoch's end: only the test is left
    in_test.members[0].best_val, in_test.members[0].epochs = 90.5, 1
    written_resume(in_test)
    with open(tiny_corpus / "test.txt", "a") as f:
        f.write("w1 w2 w3\n")
    capsys.readouterr()
    stacked_train.GroupTrainer(jobs, 0, tmp_path / "at_end.pt", program="batched").load_resume()

    def line(resume_file: Path) -> str:
        return (
            f"{resume_file}: the test split {tiny_corpus / 'test.txt'} is not the one its run had (changed since the "
            "checkpoint: its words or their order differ): the resumed run's final test scores this one, not "
            "comparable with a test on its run's"
        )

    assert capsys.readouterr().err.splitlines() == [f"warning: group 0: {line(tmp_path / 'at_end.pt')}"]
    for job in jobs:
        logged = (job.output_dir / "train.log").read_text().splitlines()
        assert [entry.split(" - ", 1)[1] for entry in logged if "[WARNING]" in entry] == [line(tmp_path / "at_end.pt")]
    for split in ("train", "valid"):
        with open(tiny_corpus / f"{split}.txt", "a") as f:
            f.write("w1 w2 w3\n")
    stacked_train.GroupTrainer(done, 0, tmp_path / "in_test.pt", program="batched").load_resume()
    assert capsys.readouterr().err.splitlines() == [f"warning: group 0: {line(tmp_path / 'in_test.pt')}"]
    for job in done:
        logged = (job.output_dir / "train.log").read_text().splitlines()
        assert [entry.split(" - ", 1)[1] for entry in logged if "[WARNING]" in entry] == [line(tmp_path / "in_test.pt")]


def test_a_group_is_on_a_cpu_where_its_trainer_puts_it():
    """The launcher's "on a CPU" (which program auto runs, whether auto pads) is the group trainer's placement:
    gpu and cuda on the GPU, auto where CUDA is, anything else on the CPU."""
    import torch

    on_a_cpu = stacked_settings.on_a_cpu
    assert [on_a_cpu(a) for a in ("cpu", "gpu", "cuda", "mps", "tpu")] == [True, False, False, True, True]
    assert on_a_cpu("auto") == (not torch.cuda.is_available())


def test_the_auto_program_runs_the_members_in_turn_on_a_cpu_and_batched_elsewhere():
    """hydra.launcher.program=auto: the members in turn on a CPU, batched on a GPU; a program named runs anywhere."""
    running = stacked_settings.running_program
    assert [running("auto", on_cpu=True), running("auto", on_cpu=False)] == ["in_turn", "batched"]
    assert [running(p, on_cpu=c) for p in ("in_turn", "batched") for c in (True, False)] == ["in_turn"] * 2 + [
        "batched"
    ] * 2


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda s: s | {"fingerprint": "x"}, "no fingerprint of its group"),
        (lambda s: s | {"fingerprint": ["not json", s["fingerprint"][1]]}, "its group key is not JSON"),
        (lambda s: s | {"fingerprint": [s["fingerprint"][0], [[5]]]}, "members' overrides are not lists of overrides"),
        (lambda s: s | {"pad_hidden_to": "x"}, "pad_hidden_to='x' is not a whole number of at least 1"),
        (lambda s: s | {"units": 0}, "units=0 is not a whole number of at least 1"),
        (lambda s: {k: v for k, v in s.items() if k != "params"}, "'params'"),
        (lambda s: s | {"epoch": "x"}, "epoch='x' is not a whole number of at least 0"),
        (lambda s: s | {"window": -3}, "window=-3 is not a whole number of at least 0"),
        (lambda s: s | {"epoch": 1.0}, "epoch=1.0 is not a whole number of at least 0"),  # (range() takes no float)
        (lambda s: s | {"global_step": True}, "global_step=True is not a whole number of at least 0"),
        (lambda s: s | {"train_seconds": "x"}, "train_seconds='x' is not a number of at least 0"),
        (lambda s: s | {"epoch": 99}, "epoch=99 is beyond the group's trainer.max_epochs="),
        (lambda s: s | {"members": s["members"][:1]}, "members: not the group's 2"),
        (lambda s: s | {"active": torch.ones(5, dtype=torch.bool)}, "must match the size"),
        (lambda s: s | {"generators": s["generators"][:1]}, "1 generator states for 2 members"),
        # a member's bookkeeping, read at its epochs' ends (before: taken as it was, a traceback there)
        (lambda s: s | {"members": [s["members"][0] | {"status": "x"}, s["members"][1]]}, "member 0: not a member's"),
        (
            lambda s: s | {"members": [s["members"][0], s["members"][1] | {"early_stopping": {"wait_count": "x"}}]},
            "member 1: callbacks['EarlyStopping']['wait_count'] is 'x', not a whole number",
        ),
        (lambda s: s | {"members": [s["members"][0] | {"epochs": 1.5}, s["members"][1]]}, "epochs=1.5 is not a whole"),
        (lambda s: s | {"members": [s["members"][0], s["members"][1] | {"words": True}]}, "words=True is not a whole"),
        # the members' W&B groups and names, which a resumed group's runs go on under
        (lambda s: s | {"wandb_labels": [{}]}, "wandb_labels: not one dict per member"),
        # the data's fingerprint, which a resumed group compares with its corpus
        (lambda s: s | {"data_fingerprint": ["x"]}, "data_fingerprint ['x'] is not a mapping of train, valid and"),
        (lambda s: s | {"vocab": "x"}, "vocab 'x' is not a list of words"),
        (
            lambda s: s | {"wandb_labels": [{}, {"wandb_group": "sweep\n$(touch pwned)"}]},
            "member 1: its W&B group or name is not a line of printable text",
        ),
    ],
)
def test_a_resume_file_edited_by_hand_is_one_line(tmp_path, tiny_corpus, change, why):
    """A group's resume file whose contents do not fit (edited, or from another version): the launcher's first
    read of it (its fingerprint and width) or the group's load says which value, in one line with the way on,
    and the file is left as it is."""
    jobs = group_jobs_here(tmp_path, tiny_corpus)
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    written_resume(stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched"))
    torch.save(change(torch.load(resume_file, weights_only=True)), resume_file)
    saved = resume_file.read_bytes()
    message = f"{re.escape(str(resume_file))} is not a readable resume file \\(.*{re.escape(why)}.*\\): move it away"
    with pytest.raises(CheckpointError, match=message):
        stacked_resume.resume_fingerprints(resume_file.parent)
        stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched").load_resume()
    assert resume_file.read_bytes() == saved


def test_a_layer_norm_groups_resume_file_from_before_its_biases_moved_is_one_line(tmp_path, tiny_corpus):
    """A layer-norm group's resume file records that its gate biases sit after the norms; one from before (none
    recorded: they sat inside) would go on training another function of its weights, so it is refused in one line
    and left as it is. A group without layer norm records nothing of it."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "model.layer_norm=true")
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    written_resume(stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched"))
    state = torch.load(resume_file, weights_only=True)
    assert state["layer_norm_biases"] == "after_norms"
    stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched").load_resume()  # its own loads
    torch.save({k: v for k, v in state.items() if k != "layer_norm_biases"}, resume_file)
    saved = resume_file.read_bytes()
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(resume_file))} is a layer-norm model from an rnnreg "):
        stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched").load_resume()
    assert resume_file.read_bytes() == saved
    plain = group_jobs_here(tmp_path / "plain", tiny_corpus)
    plain_file = tmp_path / "plain" / "group_0.pt"
    written_resume(stacked_train.GroupTrainer(plain, 0, plain_file, program="batched"))
    assert "layer_norm_biases" not in torch.load(plain_file, weights_only=True)


def test_padding_a_group_cannot_have_is_one_line(tmp_path, tiny_corpus):
    """hydra.launcher.pad_hidden_to: auto pads only the batched program on a GPU without layer norm; asked for,
    a padding is refused where the members run as their own models (in turn) or layer norm normalises over the
    hidden units, with the fix, before anything is written."""
    cfg = group_jobs_here(tmp_path, tiny_corpus, members=1)[0].cfg  # hidden 16
    norm = group_jobs_here(tmp_path / "norm", tiny_corpus, "model.layer_norm=true", members=1)[0].cfg
    pad = stacked_settings.pad_hidden_to
    assert [pad(cfg, "auto", "batched", on_cpu=False), pad(cfg, "auto", "batched", on_cpu=True)] == [8, 1]
    assert [pad(cfg, "auto", "in_turn", on_cpu=True), pad(norm, "auto", "batched", on_cpu=False)] == [1, 1]
    assert [pad(cfg, 12, "batched", on_cpu=True), pad(norm, 8, "batched", on_cpu=False)] == [12, 8]  # 8: none
    with pytest.raises(ConfigError, match="would pad model.hidden_size=16, which layer norm normalises over"):
        pad(norm, 12, "batched", on_cpu=True)
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "hydra/launcher=stacked", "seed=1,2"]
    proc = run("rnnreg-train", *args, "hydra.launcher.pad_hidden_to=12", f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(
        "error: hydra.launcher.pad_hidden_to=12: the members in turn run as their own models, unpadded; set "
        "hydra.launcher.pad_hidden_to=1 (or auto), or hydra.launcher.program=batched"
    ), proc.stderr
    assert not sweep.exists()  # (before: its multirun.yaml and sweep.yaml written, the launcher's refusal)


def test_train_file_shorter_than_a_window_is_the_fix_a_run_alone_gives(tmp_path, tiny_corpus):
    """data.bptt longer than the train split: the single run's line (rnnreg.data's check_splits, with the
    data.bptt that fits), not a limit_*_batches one."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "data.bptt=1000")
    with pytest.raises(DataError, match=r"is shorter than one training window: .* set data\.bptt=\d+ or less"):
        stacked_train.GroupTrainer(jobs, 0, tmp_path / "group_0.pt")


@pytest.mark.parametrize("program", ["in_turn", "batched"])
def test_an_early_stopped_member_stops_changing(tmp_path, tiny_corpus, program):
    """A member that early stopping stops keeps the weights it stopped with while the others train on: the
    weights it is tested on (test_ckpt=last) are its last.ckpt's, from the epoch it stopped in."""
    budget = ("trainer.max_epochs=4", "trainer.limit_train_batches=3", "test_ckpt=last")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget)
    # member 0 improves once (from no score), then by less than 1e9: patience 1 stops it after epoch 2
    stop = ("callbacks=early_stopping", "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1e9")
    cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "seed=0", *budget, *stop]
    jobs[0].cfg = compose_config(cli, jobs[0].output_dir)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt", program=program)
    trainer.run(resume=False)
    assert [metrics(job.output_dir)["epochs"] for job in jobs] == [2, 4]
    for k in range(2):
        saved = weights(jobs[k].output_dir)
        for name, p in zip(trainer.names, trainer.params):
            assert torch.equal(saved["net." + trainer.model.single_names[name]], p[k].detach()), (k, name)


@pytest.mark.parametrize("program", ["in_turn", "batched"])
def test_each_member_stops_early_on_its_own_validation(tmp_path, tiny_corpus, program):
    """Early stopping is each member's own: its EarlyStopping (its patience) reads its own validation perplexity,
    not another member's nor the group's. Member 0 (lr 0.1) improves every epoch and never stops; members 1 and 2
    (lr 1 on 3 windows an epoch) get worse after their first epoch, and stop after patience 1 and 2 epochs of it:
    epochs 2 and 3. A stopped member's weights stay as they were at its stop while the others train on."""
    budget = ("trainer.max_epochs=4", "trainer.limit_train_batches=3", "test_ckpt=last", "callbacks=early_stopping")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget, members=3)
    for k, (lr, patience) in enumerate([(0.1, 1), (1.0, 1), (1.0, 2)]):
        own = (f"optim.lr={lr}", f"callbacks.early_stopping.patience={patience}")
        cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", f"seed={k}", *budget, *own]
        jobs[k].cfg = compose_config(cli, jobs[k].output_dir)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt", program=program)
    end_epoch, epochs = trainer.end_epoch, [[p.detach().clone() for p in trainer.params]]  # [0]: the initial

    def ended(*args) -> None:  # every member's weights at each epoch's end
        end_epoch(*args)
        epochs.append([p.detach().clone() for p in trainer.params])

    trainer.end_epoch = ended
    trainer.run(resume=False)
    vals = [[row["val/ppl"] for row in m.rows if "val/ppl" in row] for m in trainer.members]
    # the premise: member 0's perplexity falls every epoch, 1's and 2's rise after their first
    assert all(b < a for a, b in zip(vals[0], vals[0][1:])), vals
    assert all(b > a for k in (1, 2) for a, b in zip(vals[k], vals[k][1:])), vals
    assert [len(v) for v in vals] == [4, 2, 3]
    assert [metrics(job.output_dir)["epochs"] for job in jobs] == [4, 2, 3]
    assert [s.stopped_epoch for s in trainer.stoppers] == [0, 1, 2]  # (0-based; 0: never stopped)
    for k, stop in ((1, 2), (2, 3)):
        log = (jobs[k].output_dir / "train.log").read_text()
        assert log.count("early stopping after epoch") == 1 and f"early stopping after epoch {stop}:" in log, k
    assert "early stopping" not in (jobs[0].output_dir / "train.log").read_text()
    for k, stopped_after in enumerate([4, 2, 3]):  # each trained every epoch up to its stop, then not at all
        for epoch in range(1, 5):
            same = all(torch.equal(p[k], q[k]) for p, q in zip(epochs[epoch - 1], epochs[epoch]))
            assert same == (epoch > stopped_after), (k, epoch)


@pytest.mark.parametrize("stop_after_windows", [None, 5], ids=["whole", "stopped-and-resumed"])
def test_each_member_is_tested_on_its_own_best_weights(tmp_path, tiny_corpus, stop_after_windows):
    """test_ckpt=best: each member is tested on its own best validation weights, its best.ckpt's. Member 1 (lr 1 on
    3 windows an epoch) is best after epoch 1 and worse after it; member 0 (lr 0.1) improves every epoch: its
    improvements copy its own weights only, not member 1's, and a group stopped in epoch 2 (window 5) and resumed
    keeps member 1's best from its resume file, not the weights it started from."""
    budget = ("trainer.max_epochs=3", "trainer.limit_train_batches=3", "test_ckpt=best")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget)
    for k, lr in enumerate([0.1, 1.0]):
        cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", f"seed={k}", *budget, f"optim.lr={lr}"]
        jobs[k].cfg = compose_config(cli, jobs[k].output_dir)
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    if stop_after_windows:
        with pytest.raises(SystemExit):
            stacked_train.GroupTrainer(jobs, 0, resume_file, stop_after_windows=stop_after_windows).run(resume=False)
        assert resume_file.is_file()
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file)
    trainer.run(resume=bool(stop_after_windows))
    records = [metrics(job.output_dir) for job in jobs]
    # the premise: member 0's last validation is its best, member 1's best is an earlier one
    assert records[0]["best_val_ppl"] == records[0]["val_ppl"] and records[1]["best_val_ppl"] < records[1]["val_ppl"]
    tested = trainer.test_params()
    for k, job in enumerate(jobs):
        best = weights(job.output_dir, "best.ckpt")
        for name, p in zip(trainer.names, tested):
            assert torch.equal(best["net." + trainer.model.single_names[name]], p[k]), (k, name)


def test_a_members_train_log_has_a_runs_lines_and_levels(tmp_path, tiny_corpus):
    """Each line of a member's train.log is written as Hydra's logging writes a run's (time, logger, level, message),
    appended to what is there, and a warning is at WARNING (grep WARNING finds what a run alone warns of): here,
    that no validation ran in its one epoch (trainer.check_val_every_n_epoch=2)."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=2")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget, "test=false")
    stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt").run(resume=False)
    lines = (tmp_path / "0" / "train.log").read_text().splitlines()
    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[rnnreg\]"
    assert len(lines) >= 4 and all(re.match(stamp + r"\[(INFO|WARNING)\] - \S", line) for line in lines), lines
    assert "(stacked group 0, member 0 of 2)" in lines[0] and lines[-1].split("] - ")[1].startswith("metrics: ")
    (warned,) = [line for line in lines if "no validation ran" in line]
    assert warned.endswith(
        "][WARNING] - no validation ran (1 epoch trained, trainer.check_val_every_n_epoch=2): metrics.json has no "
        "val_ppl and no best_val_ppl"
    ), warned


def test_only_a_member_that_ended_without_a_validation_warns_of_it(tmp_path, tiny_corpus):
    """No validation in a group's one epoch (trainer.check_val_every_n_epoch=2): each member that ended warns of it
    as a run alone does, the one tested on its best weights (test_ckpt=best) also that it tests the final ones;
    a member that failed (diverged) has its error, not these warnings (stacked_outputs.warn_unvalidated)."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=2")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget, "test_ckpt=last", members=3)
    cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", *budget]
    jobs[1].cfg = compose_config([*cli, "seed=1", "test_ckpt=best"], jobs[1].output_dir)
    jobs[2].cfg = compose_config([*cli, "seed=2", "test_ckpt=last", "optim.lr=1e20"], jobs[2].output_dir)
    results = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt").run(resume=False)
    assert [status for status, _ in results] == ["completed", "completed", "failed"]
    assert [best for _, best in results[:2]] == [None, None]  # no best val ppl to hand on, as a run's main()
    assert metrics(tmp_path / "2")["resume"] == "no checkpoint was written"  # (it failed in its first epoch)
    logs = [(tmp_path / str(k) / "train.log").read_text() for k in range(3)]
    no_best = "no validation ran, so there is no best checkpoint: testing the final weights"
    assert [log.count("][WARNING] - no validation ran (") for log in logs] == [1, 1, 0]
    assert "][WARNING] - no validation ran (1 epoch trained, trainer.check_val_every_n_epoch=2)" in logs[0]
    assert [no_best in log for log in logs] == [False, True, False]


def test_a_member_that_diverges_after_an_epoch_says_to_go_on_from_its_last_good_checkpoint(tmp_path, tiny_corpus):
    """Member 1's lr is 1e20 from epoch 2 on: it fails alone in epoch 2, and its metrics.json, as a run alone's,
    names the command that goes on from its last.ckpt (epoch 1's finite weights), which rnnreg-report gives."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=2", "test=false")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget)
    cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "seed=1", *budget]
    jobs[1].cfg = compose_config([*cli, "optim.decay=1e-20", "optim.decay_start=1"], jobs[1].output_dir)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    results = trainer.run(resume=False)
    assert [status for status, _ in results] == ["completed", "failed"]
    # its words/s over its training time, its validations left out (not over its fit's seconds)
    completed = trainer.members[0]
    assert metrics(tmp_path / "0")["words_per_second"] == round(completed.words / completed.train_seconds, 1)
    failed, last = metrics(tmp_path / "1"), tmp_path / "1" / "checkpoints" / "last.ckpt"
    assert failed["status"] == "failed" and "at epoch 2" in failed["error"] and failed["epochs"] == 1
    assert failed["resume"] == f"rnnreg-train ... ckpt_path={last}"
    assert load_checkpoint(last)["epoch"] == 0


def test_a_signal_after_a_member_failed_records_each_members_own_end(tmp_path, tiny_corpus, capsys):
    """SIGTERM in epoch 2, after member 1 diverged in it (stacked_outputs.record_stop): member 0 interrupted with the
    signal's words, its csv holding the windows it trained in the stopped epoch (written at the stop, not only at an
    epoch's end), member 1 failed with its own error, said on the console as the group's end would have said it
    (before: only the command to go on); each train.log ends with where the group stopped."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=3", "test=false", "logger=csv")
    budget += ("trainer.log_every_n_steps=1",)
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget)
    cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "seed=1", *budget]
    jobs[1].cfg = compose_config([*cli, "optim.decay=1e-20", "optim.decay_start=1"], jobs[1].output_dir)
    with pytest.raises(SystemExit) as stopped:
        stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt", stop_after_windows=5).run(
            resume=False
        )
    assert stopped.value.code == 128 + signal.SIGTERM
    interrupted, failed = metrics(tmp_path / "0"), metrics(tmp_path / "1")
    assert (interrupted["status"], interrupted["error"]) == ("interrupted", STOPPED_BY[signal.SIGTERM])
    assert failed["status"] == "failed" and re.match(r"training loss became \S+ at epoch 2, ", failed["error"])
    said = capsys.readouterr()
    assert said.err.splitlines()[-1] == f"error: job 1 (seed=1) failed: {failed['error']}", said.err
    assert said.out.splitlines()[-1].startswith(f"{STOPPED_BY[signal.SIGTERM]}: the stacked group 0 stopped; ")
    assert steps(tmp_path / "0", "train/loss") == [0, 1, 2, 3, 4]
    for k in (0, 1):
        last = (tmp_path / str(k) / "train.log").read_text().splitlines()[-1]
        assert last.endswith(f"] - {STOPPED_BY[signal.SIGTERM]}: stopped at epoch 2, window 2"), last
    # the failed member goes on by itself, from its last good checkpoint (before: the group's resume, which trains
    # nothing of it); resumed, the group leaves its record and loggers as they ended (before: they were opened again,
    # an empty part of its W&B run; found by a probe)
    assert failed["resume"] == f"rnnreg-train ... ckpt_path={tmp_path / '1' / 'checkpoints' / 'last.ckpt'}"
    logged = [(tmp_path / str(k) / "csv" / "hparams.yaml").stat().st_mtime_ns for k in (0, 1)]
    log_lines = (tmp_path / "1" / "train.log").read_text()
    time.sleep(0.01)
    results = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt").run(resume=True)
    assert [status for status, _ in results] == ["completed", "failed"]
    assert (tmp_path / "0" / "csv" / "hparams.yaml").stat().st_mtime_ns != logged[0]  # its loggers opened again
    assert (tmp_path / "1" / "csv" / "hparams.yaml").stat().st_mtime_ns == logged[1]
    added = (tmp_path / "1" / "train.log").read_text().removeprefix(log_lines).splitlines()
    assert len(added) == 1 and "] - metrics: {'status': 'failed'" in added[0], added  # (no "resuming ..." line)
    ended = metrics(tmp_path / "1")
    assert {k: ended[k] for k in ("status", "error", "epochs", "resume")} == {
        k: failed[k] for k in ended if k != "stacked"
    }


def test_a_signal_after_a_member_stopped_early_records_it_interrupted_and_the_resume_completes_it(
    tmp_path, tiny_corpus
):
    """Member 0 stops early after epoch 2 (it waits for the group's end), then SIGTERM in epoch 3: its metrics.json
    says interrupted with the signal's words, as a single run stopped before its test says it (before: "stopped",
    no status a run's metrics.json has, with no error), and the group's resume completes both members."""
    budget = ("trainer.max_epochs=3", "trainer.limit_train_batches=3", "test=false")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget)
    stop = ("callbacks=early_stopping", "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1e9")
    cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "seed=0", *budget, *stop]
    jobs[0].cfg = compose_config(cli, jobs[0].output_dir)
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file, stop_after_windows=7)  # (epoch 3, window 1)
    with pytest.raises(SystemExit) as stopped:
        trainer.run(resume=False)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert [m.status for m in trainer.members] == ["stopped", "running"]  # (member 0 early, as the signal came)
    for k in (0, 1):
        record = metrics(tmp_path / str(k))
        assert (record["status"], record["error"]) == ("interrupted", STOPPED_BY[signal.SIGTERM]), k
    assert metrics(tmp_path / "0")["epochs"] == 2
    resumed = stacked_train.GroupTrainer(jobs, 0, resume_file)
    results = resumed.run(resume=True)
    assert [status for status, _ in results] == ["completed"] * 2 and not resume_file.exists()
    assert [metrics(tmp_path / str(k))["epochs"] for k in (0, 1)] == [2, 3]
    # stopped in the resumed group too: member 0 did not train on, its weights are those it stopped with
    saved = weights(tmp_path / "0")
    for name, param in zip(resumed.names, resumed.params):
        assert torch.equal(saved["net." + resumed.model.single_names[name]], param[0].detach()), name


def test_a_checkpoint_that_cannot_be_written_fails_every_training_member_with_its_error(tmp_path, tiny_corpus):
    """Member 0's checkpoints/ is a file (a real write that fails, as a full or read-only disk's): the group
    raises the OutputError, and each member still training says in its metrics.json and train.log that it failed
    with it, with how the sweep goes on (stacked_outputs.output_failed); a member whose folder takes no
    more writes (its metrics.json a folder) is passed over, the group's error raised as it was."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=1", "test=false")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget, members=3)
    (tmp_path / "0" / "checkpoints").write_text("not a folder")
    (tmp_path / "1" / "metrics.json").mkdir()  # member 1's folder takes no more records: passed over
    with pytest.raises(OutputError, match=r"^could not write best\.ckpt in ") as failed:
        stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt").run(resume=False)
    assert (tmp_path / "1" / "metrics.json").is_dir()
    for k in (0, 2):
        record = metrics(tmp_path / str(k))
        assert record["status"] == "failed" and record["error"] == str(failed.value), k
        # (on a CPU the files are written in line: the epoch's checkpoint fails before its resume file is handed over)
        assert record["resume"] == "no resume file was written: run the sweep again", record
        assert record["stacked"]["member"] == k and record["stacked"]["members"] == 3
    for k in (0, 1, 2):
        assert (tmp_path / str(k) / "train.log").read_text().splitlines()[-1].endswith(f"stopped: {failed.value}")


def test_a_failed_members_folder_ends_its_loggers_as_a_failed_run_does(tmp_path, no_wandb_credentials):
    """A member's metrics.json that says it failed ends its loggers as Lightning ends a failed run's
    (JobFolder.write_metrics): its TensorBoard events flushed and closed, its W&B run finished with exit code 1
    and the record as its summary (real loggers, W&B offline)."""
    import wandb
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    folder = stacked_outputs.JobFolder(SimpleNamespace(output_dir=tmp_path))
    folder.wandb = WandbLogger(save_dir=str(tmp_path), offline=True, reinit="create_new")
    board = TensorBoardLogger(str(tmp_path), name="tensorboard", version="")
    folder.others.append(board)
    # (a csv row as read back: "" where nothing was logged, which no logger takes)
    folder.log_metrics({"epoch": 0, "step": 0, "train/loss": 5.0, "val/ppl": ""})
    folder.write_metrics(unfinished_record("failed", "training loss became nan", 0, "no checkpoint was written"))
    # run.finish hands the run's closing to W&B's service without waiting for it: its .wandb file is complete once
    # the service ends, as at the process's exit (read before, under load it held its header alone: KeyError 'start')
    wandb.teardown()
    (part,) = wandb_run_parts(tmp_path)
    assert (part["exit_code"], part["summary"]["status"]) == (1, "failed")
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["train/loss"] == [(0, 5.0)] and "val/ppl" not in scalars
    assert board.experiment.file_writer is None  # its SummaryWriter closed (a group's run goes on after the member)
    assert folder.wandb is None and folder.others == []  # (closed once)


def test_a_write_that_fails_after_a_member_stopped_early_fails_that_member_too(tmp_path, tiny_corpus):
    """Member 0 stops early after epoch 2 (it waits for the group's test), then member 1's checkpoints/ becomes a
    file: epoch 3's checkpoint cannot be written, and both members fail with that error, the stopped one too (it
    would never be tested)."""
    budget = ("trainer.max_epochs=3", "trainer.limit_train_batches=3", "test=false")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget)
    stop = ("callbacks=early_stopping", "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1e9")
    cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "seed=0", *budget, *stop]
    jobs[0].cfg = compose_config(cli, jobs[0].output_dir)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    end_epoch = trainer.end_epoch

    def ended(*args) -> None:
        end_epoch(*args)
        if trainer.epoch == 2:  # (member 0 stopped at this end)
            trainer.writer.wait()
            shutil.rmtree(tmp_path / "1" / "checkpoints")
            (tmp_path / "1" / "checkpoints").write_text("not a folder")

    trainer.end_epoch = ended
    with pytest.raises(OutputError, match=r"^could not write \S+ in ") as failed:
        trainer.run(resume=False)
    assert [m.status for m in trainer.members] == ["stopped", "running"]  # as the write failed
    for k in (0, 1):
        record = metrics(tmp_path / str(k))
        assert (record["status"], record["error"]) == ("failed", str(failed.value)), k
        assert record["resume"] == f"{trainer.go_on()} (from the group's last resume file)", k


def test_stop_at_an_epochs_end_writes_its_files_once(tmp_path, tiny_corpus, monkeypatch):
    """SIGTERM in an epoch's last window: the epoch's end writes the resume file and the members' checkpoints,
    and the stop writes them no second time (at paper scale, gigabytes within the scheduler's grace period)."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "trainer.limit_train_batches=3", "trainer.max_epochs=2")
    written = []

    def counted(obj, path):
        save_atomically(obj, path)
        written.append(Path(path).relative_to(tmp_path).as_posix())

    monkeypatch.setattr(stacked_train, "save_atomically", counted)
    monkeypatch.setattr(stacked_outputs, "save_atomically", counted)
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file, stop_after_windows=3, program="batched")
    with pytest.raises(SystemExit) as stopped:
        trainer.run(resume=False)
    assert stopped.value.code == 128 + signal.SIGTERM
    # best.ckpt written, last.ckpt its hard link: one write per member, one resume file
    assert sorted(written) == [".stacked/group_0.pt", "0/checkpoints/best.ckpt", "1/checkpoints/best.ckpt"]
    state = torch.load(resume_file, weights_only=True)
    assert (state["epoch"], state["window"], state["device"]) == (1, 0, "cpu")
    for k in range(2):
        assert metrics(tmp_path / str(k))["status"] == "interrupted"
        last = tmp_path / str(k) / "checkpoints" / "last.ckpt"
        assert last.stat().st_ino == (tmp_path / str(k) / "checkpoints" / "best.ckpt").stat().st_ino


class SignalOnRead:
    """A split's windows that send this process each of `signums` (10 ms apart) when window `window` is read."""

    def __init__(self, windows, signums: list[int], window: int = 0):
        self.windows, self.signums, self.window = windows, signums, window

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        if i == self.window:
            for signum in self.signums:
                os.kill(os.getpid(), signum)
                time.sleep(0.01)  # its handler runs before the next one is sent
        return self.windows[i]


def signal_in(trainer, monkeypatch, split: str, signums: list[int]) -> None:
    """`trainer`'s `split` sends `signums` when its first window is read."""
    windows = trainer.windows

    def signalled(name, *args):
        found, count = windows(name, *args)
        return (SignalOnRead(found, signums) if name == split else found), count

    monkeypatch.setattr(trainer, "windows", signalled)


@pytest.fixture
def unhandled_signals_fail():
    """SIGTERM and SIGINT that reach no handler of the group fail the test rather than kill or stop pytest."""

    def unhandled(signum, frame) -> None:
        raise AssertionError(f"{signal.Signals(signum).name} reached no handler of the group")

    saved = {s: signal.signal(s, unhandled) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_in_the_final_test_interrupts_the_members(
    tmp_path, tiny_corpus, monkeypatch, capsys, unhandled_signals_fail, signum
):
    """SIGTERM or Ctrl-C while the group's members are tested (before: its handlers were gone by then: SIGTERM killed
    it, Ctrl-C was a traceback, no metrics.json, rnnreg-report said unfinished): each member interrupted, with a
    single run's words, one line that says how to go on, and the resume tests them. Under SLURM its SIGUSR1 (the
    warning before its time limit) too (before: it killed the group)."""
    if signum == signal.SIGUSR1:
        for key, value in srun_env().items():
            monkeypatch.setenv(key, value)
    jobs = group_jobs_here(tmp_path, tiny_corpus, "trainer.limit_train_batches=3", "trainer.max_epochs=1")
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file)
    signal_in(trainer, monkeypatch, "test", [signum])
    with pytest.raises(SystemExit) as stopped:
        trainer.run(resume=False)
    assert stopped.value.code == 128 + signum
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if "go on with: " in line]
    assert len(said) == 1 and said[0].endswith(f"hydra.launcher.resume=true hydra.sweep.dir={tmp_path}")
    stopping = f"{signal.Signals(signum).name}: stopping the stacked group now (the final test runs again when it goes"
    assert any(line.startswith(stopping) for line in out), out  # not "after this window": no window is left
    for k in range(2):
        interrupted = metrics(tmp_path / str(k))
        assert interrupted["status"] == "interrupted" and interrupted["error"] == STOPPED_BY[signum]
        assert interrupted["epochs"] == 1 and "test_ppl" not in interrupted
    results = stacked_train.GroupTrainer(jobs, 0, resume_file).run(resume=True)
    assert [status for status, _ in results] == ["completed"] * 2 and not resume_file.exists()
    assert all(math.isfinite(metrics(tmp_path / str(k))["test_ppl"]) for k in range(2))


def test_a_signal_in_the_final_test_stops_the_members_in_turn_within_a_window(
    tmp_path, tiny_corpus, unhandled_signals_fail
):
    """The members in turn (a CPU's program) are tested window by window: a SIGTERM as member 0 evaluates its first
    test window stops the group before any member evaluates another window (before: the split's windows were read
    first, then each member's whole test ran, so the group stopped "now" only after every member's test of the
    split: minutes on PTB)."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "trainer.limit_train_batches=3", "trainer.max_epochs=1", members=3)
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    assert trainer.step.name == "in_turn"
    after = []  # the member of each test forward from the one that sent the signal on

    def forward(k):
        def hook(module, args, output) -> None:
            if trainer.stop.stage != "test":
                return
            if after or k == 0 and trainer.stop.signal is None:
                after.append(k)
            if k == 0 and trainer.stop.signal is None:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)  # its handler runs before the next window

        return hook

    for k, net in enumerate(trainer.step.nets):
        net.register_forward_hook(forward(k))
    windows, count = trainer.windows("test", 1, trainer.datamodule.eval_bptt, False, None)
    assert count > 1  # a window left after the first, which no member may evaluate
    with pytest.raises(SystemExit) as stopped:
        trainer.run(resume=False)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert after == [0, 1, 2]  # the first window's, for each member: none after it
    assert all(metrics(tmp_path / str(k))["status"] == "interrupted" for k in range(3))


def test_a_member_without_a_test_or_a_csv_logger_writes_what_its_run_alone_writes(tmp_path, tiny_corpus):
    """No validation in the group's one epoch, test=false with test_ckpt=best, logger=none: each member warns that no
    validation ran, not that it tests its final weights (it tests nothing, as its run alone, which never picks the
    weights to test), and writes no csv/ (a run with no CSV logger has none)."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=2")
    jobs = group_jobs_here(tmp_path, tiny_corpus, *budget, "test=false", "test_ckpt=best", "logger=none")
    results = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt").run(resume=False)
    assert [status for status, _ in results] == ["completed"] * 2
    for k in range(2):
        log = (tmp_path / str(k) / "train.log").read_text()
        assert log.count("][WARNING] - no validation ran (") == 1 and "testing the final weights" not in log, log
        assert not (tmp_path / str(k) / "csv").exists() and metrics(tmp_path / str(k))["status"] == "completed"


def test_a_signal_as_a_group_starts_stops_it_before_its_first_window(
    tmp_path, tiny_corpus, monkeypatch, capsys, unhandled_signals_fail
):
    """SIGTERM as the group starts (while it makes its windows, before it trains any): it stops before its first
    window, with the resume file of its start and no member checkpoint, and the command that goes on trains the group
    as if it had never stopped (before: it trained a window first; its resume file and last.ckpt at global step 1)."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=1", "test=false", "dropout=non_recurrent")
    whole = group_jobs_here(tmp_path / "whole", tiny_corpus, *budget, "dropout.p=0.3")
    stacked_train.GroupTrainer(whole, 0, tmp_path / "whole" / ".stacked" / "group_0.pt").run(resume=False)
    jobs = group_jobs_here(tmp_path / "stopped", tiny_corpus, *budget, "dropout.p=0.3")
    resume_file = tmp_path / "stopped" / ".stacked" / "group_0.pt"
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file)
    windows = trainer.windows

    def signalled(split, *args):  # the training split's windows, made as fit starts
        if split == "train":
            os.kill(os.getpid(), signal.SIGTERM)
        return windows(split, *args)

    monkeypatch.setattr(trainer, "windows", signalled)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        trainer.run(resume=False)
    assert stopped.value.code == 128 + signal.SIGTERM
    state = torch.load(resume_file, weights_only=True)
    assert (state["epoch"], state["window"], state["global_step"]) == (0, 0, 0)
    assert "SIGTERM: stopping the stacked group before its first window" in capsys.readouterr().out
    for k in range(2):
        interrupted = metrics(tmp_path / "stopped" / str(k))
        assert interrupted["status"] == "interrupted" and interrupted["epochs"] == 0
        assert not (tmp_path / "stopped" / str(k) / "checkpoints").exists()
    results = stacked_train.GroupTrainer(jobs, 0, resume_file).run(resume=True)
    assert [status for status, _ in results] == ["completed"] * 2 and not resume_file.exists()
    for k in range(2):
        alone, resumed = tmp_path / "whole" / str(k), tmp_path / "stopped" / str(k)
        assert metrics(resumed)["val_ppl"] == metrics(alone)["val_ppl"]
        assert all(torch.equal(value, weights(resumed)[name]) for name, value in weights(alone).items())


def test_a_signal_as_a_group_reads_its_resume_file_keeps_it_and_the_resume_is_exact(
    tmp_path, tiny_corpus, monkeypatch, capsys, unhandled_signals_fail
):
    """SIGTERM as a group that goes on reads its resume file (before: no handler of the group was in yet, SIGTERM
    killed the sweep): it stops at once, its resume file and checkpoints as they were, each member interrupted with
    the epochs it had trained; the next resume ends every member where the group never stopped ends, to the bit."""
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=2", "test=false", "dropout=non_recurrent")
    budget += ("logger=csv", "trainer.log_every_n_steps=1")
    whole = group_jobs_here(tmp_path / "whole", tiny_corpus, *budget)
    stacked_train.train_group(whole, 0, tmp_path / "whole" / ".stacked" / "group_0.pt")
    jobs = group_jobs_here(tmp_path / "stopped", tiny_corpus, *budget)
    resume_file = tmp_path / "stopped" / ".stacked" / "group_0.pt"
    with pytest.raises(SystemExit):  # in its second epoch
        stacked_train.train_group(jobs, 0, resume_file, stop_after_windows=4)
    kept = {p: p.read_bytes() for p in [resume_file, *(tmp_path / "stopped").glob("*/checkpoints/*.ckpt")]}
    assert {p.name for p in kept} == {"group_0.pt", "best.ckpt", "last.ckpt"} and len(kept) == 5
    read = stacked_train.read_group_resume

    def signalled(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return read(*args)

    monkeypatch.setattr(stacked_train, "read_group_resume", signalled)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        stacked_train.train_group(jobs, 0, resume_file, resume=True)
    assert stopped.value.code == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert "SIGTERM: stopping the stacked group now, as it is built (nothing it trained is lost)" in out
    assert sum("the stacked group 0 stopped; go on with: " in line for line in out.splitlines()) == 1
    assert {p: p.read_bytes() for p in kept} == kept
    for k in range(2):
        interrupted = metrics(tmp_path / "stopped" / str(k))
        assert (interrupted["status"], interrupted["error"]) == ("interrupted", STOPPED_BY[signal.SIGTERM])
        assert interrupted["epochs"] == 1 and interrupted["stacked"]["member"] == k
    monkeypatch.setattr(stacked_train, "read_group_resume", read)
    results = stacked_train.train_group(jobs, 0, resume_file, resume=True)
    assert [status for status, _ in results] == ["completed"] * 2 and not resume_file.exists()
    for k in range(2):
        alone, resumed = tmp_path / "whole" / str(k), tmp_path / "stopped" / str(k)
        assert metrics(resumed)["val_ppl"] == metrics(alone)["val_ppl"]
        assert losses(resumed) == losses(alone)
        assert all(torch.equal(value, weights(resumed)[name]) for name, value in weights(alone).items())


def test_a_second_ctrl_c_aborts_the_group_at_once_and_says_ctrl_c(tmp_path, tiny_corpus, monkeypatch, capsys):
    """Two Ctrl-C 10 ms apart while the group trains (before: a KeyboardInterrupt traceback, no metrics.json,
    rnnreg-report said unfinished): exit 130 at once, each member interrupted by Ctrl-C, no file half-written."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "trainer.limit_train_batches=3", "trainer.max_epochs=1")
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    signal_in(trainer, monkeypatch, "train", [signal.SIGINT, signal.SIGINT])
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a user's: Ctrl-C is KeyboardInterrupt
    try:
        with pytest.raises(SystemExit) as stopped:
            trainer.run(resume=False)
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C escaped the group: a traceback")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.code == 128 + signal.SIGINT
    assert sum("go on with: " in line for line in capsys.readouterr().out.splitlines()) == 1
    for k in range(2):
        interrupted = metrics(tmp_path / str(k))
        assert interrupted["status"] == "interrupted" and interrupted["error"] == STOPPED_BY[signal.SIGINT]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_after_a_groups_first_signal_a_second_ctrl_c_aborts_at_once(capsys, first):
    """The group's handler only asks it to stop at its next safe point (after the window under way: at paper scale,
    seconds; in a validation, minutes), and hands Ctrl-C back to the handler it replaced: a second Ctrl-C is the
    KeyboardInterrupt that aborts the group at once, not one more request to stop later."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a user's: Ctrl-C is KeyboardInterrupt
    request = stacked_stop.StopRequest()
    handlers = request.install()
    try:
        os.kill(os.getpid(), first)
        time.sleep(0.01)  # its handler runs
        assert request.signal == first
        assert f"{signal.Signals(first).name}: stopping the stacked group after this window" in capsys.readouterr().out
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        request.restore(handlers)
        signal.signal(signal.SIGINT, previous)


def test_a_second_sigterm_while_a_stopped_group_writes_its_records_is_only_noted(
    tmp_path, tiny_corpus, monkeypatch, capsys, unhandled_signals_fail
):
    """SIGTERM as the group is built, and a second one as it writes its members' records of the stop (a scheduler
    that sends SIGTERM twice): the group still exits 128 + SIGTERM with each member interrupted (the second signal
    only noted, not a StoppedBuilding escaping the group's handling of the first)."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "trainer.limit_train_batches=3", "trainer.max_epochs=1")
    apply_speed, write_records = stacked_train.apply_speed, stacked_train.stopped_while_built

    def signalled_as_built(*args, **kwargs):  # as the group starts to build
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # its handler raises here
        return apply_speed(*args, **kwargs)

    def signalled_again(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # its handler runs
        return write_records(*args)

    monkeypatch.setattr(stacked_train, "apply_speed", signalled_as_built)
    monkeypatch.setattr(stacked_train, "stopped_while_built", signalled_again)
    with pytest.raises(SystemExit) as stopped:
        stacked_train.train_group(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    assert stopped.value.code == 128 + signal.SIGTERM
    for k in range(2):
        interrupted = metrics(tmp_path / str(k))
        assert (interrupted["status"], interrupted["error"]) == ("interrupted", STOPPED_BY[signal.SIGTERM])


def test_under_slurm_a_group_leaves_sigusr1_as_it_found_it(monkeypatch):
    """Under SLURM a group handles SIGUSR1 (the warning before its time limit) while it trains; once it is done,
    SIGUSR1 reaches the handler it replaced (the launcher's next step, a user's), not the ended group's."""
    for key, value in srun_env().items():
        monkeypatch.setenv(key, value)

    def mine(signum, frame) -> None:
        pass

    previous = signal.signal(signal.SIGUSR1, mine)
    try:
        request = stacked_stop.StopRequest()
        handlers = request.install()
        assert signal.getsignal(signal.SIGUSR1) is not mine  # the group's, while it trains
        request.restore(handlers)
        assert signal.getsignal(signal.SIGUSR1) is mine
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_second_ctrl_c_aborts_a_group_the_launcher_trains_at_once(tmp_path, tiny_corpus, monkeypatch, capsys):
    """Two Ctrl-C while a group trains as the launcher trains it (train_group, whose handlers the group's trainer
    keeps rather than installing its own over them): the second aborts at once, exit 130, not one more request to
    stop after the window."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "trainer.limit_train_batches=3", "trainer.max_epochs=1")
    windows = stacked_train.GroupTrainer.windows

    def signalled(self, name, *args):
        found, count = windows(self, name, *args)
        return (SignalOnRead(found, [signal.SIGINT, signal.SIGINT]) if name == "train" else found), count

    monkeypatch.setattr(stacked_train.GroupTrainer, "windows", signalled)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a user's: Ctrl-C is KeyboardInterrupt
    try:
        with pytest.raises(SystemExit) as stopped:
            stacked_train.train_group(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C escaped the group: a traceback")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.code == 128 + signal.SIGINT
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("SIGINT: stopping the stacked group") for line in out) == 1, out
    assert sum("go on with: " in line for line in out) == 1


def test_a_signal_in_a_validation_stops_the_group_after_it(
    tmp_path, tiny_corpus, monkeypatch, capsys, unhandled_signals_fail
):
    """SIGTERM while the group validates (minutes at paper scale): it says it stops after this epoch's validation
    (not after a window), and does: each member interrupted with that epoch trained, before the next."""
    jobs = group_jobs_here(tmp_path, tiny_corpus, "trainer.limit_train_batches=3", "trainer.max_epochs=2")
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    signal_in(trainer, monkeypatch, "valid", [signal.SIGTERM])
    with pytest.raises(SystemExit) as stopped:
        trainer.run(resume=False)
    assert stopped.value.code == 128 + signal.SIGTERM
    out = capsys.readouterr().out.splitlines()
    assert "SIGTERM: stopping the stacked group after this epoch's validation" in out, out
    for k in range(2):
        interrupted = metrics(tmp_path / str(k))
        assert (interrupted["status"], interrupted["epochs"]) == ("interrupted", 1)


@pytest.mark.parametrize("name", ["my sweep", "o u't"])
def test_the_command_that_goes_on_is_the_sweeps_own_in_its_folder(tmp_path, name):
    """What a stopped group prints and writes in its members' metrics.json: the sweep's own overrides (from its
    multirun.yaml) with hydra.launcher.resume=true and its folder, without its mode, its old folder or resume setting
    and the test-only stop, quoted for a shell (a folder with a space); without a readable multirun.yaml, the
    command's shape."""
    sweep = tmp_path / name
    sweep.mkdir()
    hydra = ["hydra/launcher=stacked", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path / 'old'}"]
    hydra += ["hydra.launcher.resume=false", "hydra.launcher.stop_after_windows=8"]
    task = ["experiment=paper_small", f"data.data_dir={tmp_path / 'my corpus'}", "seed=1,2"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"hydra": hydra, "task": task}}}))
    *command, folder = shlex.split(go_on_command(sweep))
    assert command == ["rnnreg-train", "-m", "hydra/launcher=stacked", *task, "hydra.launcher.resume=true"]
    assert OverridesParser.create().parse_override(folder).value() == str(sweep)  # (Hydra reads a quote in it)
    (sweep / "multirun.yaml").unlink()
    *command, again = shlex.split(go_on_command(sweep))
    assert command == ["rnnreg-train", "-m", "...", "hydra/launcher=stacked", "hydra.launcher.resume=true"]
    assert again == folder


def test_the_command_that_goes_on_keeps_the_config_folder_and_name_the_sweep_was_started_with(tmp_path):
    """A stacked sweep started with --config-dir, --config-name and hydra.searchpath (the first two Hydra records
    outside the sweep's overrides): the command that goes on gives each once, before the sweep's overrides."""
    sweep, mine = tmp_path / "sweep", tmp_path / "mine"
    sweep.mkdir()
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'lab'}]"
    sources = [{"path": "hydra.conf", "provider": "hydra"}, {"path": str(mine), "provider": "command-line"}]
    hydra = {
        "job": {"config_name": "lab_train"},
        "runtime": {"config_sources": sources},
        "overrides": {"hydra": ["hydra/launcher=stacked", searchpath, "hydra.mode=MULTIRUN"], "task": ["seed=1,2"]},
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    *command, folder = shlex.split(go_on_command(sweep))
    assert command == [
        "rnnreg-train", "-m", "--config-dir", str(mine), "--config-name", "lab_train", searchpath,
        "hydra/launcher=stacked", "seed=1,2", "hydra.launcher.resume=true",
    ]  # fmt: skip
    assert OverridesParser.create().parse_override(folder).value() == str(sweep)


@pytest.mark.parametrize("folder", ["${oc.env:HOME}/lab", "${hydra:runtime.cwd}/lab"])
def test_the_command_that_goes_on_gives_a_searchpath_with_an_interpolation_once_as_given(tmp_path, folder):
    """A stacked sweep started with hydra.searchpath=[file://${...}/lab]: the command that goes on gives it once, as
    the sweep's command gave it (before: resolved, then again as given; or, for ${hydra:...}, which resolves inside a
    run only, the command's shape with `...`)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    searchpath = f"hydra.searchpath=[file://{folder}]"
    hydra = {"job": {"config_name": "train"}, "runtime": {"config_sources": []}}
    hydra["overrides"] = {"hydra": ["hydra/launcher=stacked", searchpath, "hydra.mode=MULTIRUN"], "task": ["seed=1,2"]}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    *command, _ = shlex.split(go_on_command(sweep))
    assert command == [
        "rnnreg-train",
        "-m",
        searchpath,
        "hydra/launcher=stacked",
        "seed=1,2",
        "hydra.launcher.resume=true",
    ]


@pytest.mark.parametrize("record", [b"hydra: [overrides\n", b"hydra: {overrides: \xff}\n", b"- hydra\n", None])
def test_the_command_that_goes_on_from_a_sweep_record_cut_short_is_the_commands_shape(tmp_path, record):
    """A stopped group whose sweep's multirun.yaml is not YAML, not UTF-8, not a mapping or a folder: the command's
    shape, as without the file (its reading through record_yaml raises nothing of its own on the way)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    if record is None:
        (sweep / "multirun.yaml").mkdir()
    else:
        (sweep / "multirun.yaml").write_bytes(record)
    *command, _ = shlex.split(go_on_command(sweep))
    assert command == ["rnnreg-train", "-m", "...", "hydra/launcher=stacked", "hydra.launcher.resume=true"]


def test_a_resume_that_gives_the_sweeps_overrides_in_another_order_goes_on_with_its_jobs(tmp_path):
    """hydra.launcher.resume=true with the sweep's overrides written in another order (the same key=value pairs, a
    command typed again): each job's folder holds the job this command runs, so it goes on (no refusal)."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.sweep import check_resumed_jobs

    overrides = ["experiment=smoke", "seed=1", "dropout=none", "hydra/launcher=stacked", "hydra.launcher.resume=true"]
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- dropout=none\n- experiment=smoke\n- seed=1\n")
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        config = compose(
            "train", [*overrides, "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True
        )
        check_resumed_jobs(config)


def test_a_group_leaves_the_callers_signal_handlers_as_it_found_them(tmp_path, tiny_corpus):
    """After a group that completed and one that a signal stopped (the launcher trains its groups one after another
    in one process, a library user in theirs), SIGTERM and Ctrl-C do what they did before: a SIGTERM while the next
    group is set up, or after the sweep, is not a request to an ended group that nothing reads."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    before = {s: signal.getsignal(s) for s in signals}
    budget = ("trainer.limit_train_batches=3", "trainer.max_epochs=1", "test=false")
    jobs = group_jobs_here(tmp_path / "completed", tiny_corpus, *budget)
    stacked_train.GroupTrainer(jobs, 0, tmp_path / "completed" / ".stacked" / "group_0.pt").run(resume=False)
    assert {s: signal.getsignal(s) for s in signals} == before
    jobs = group_jobs_here(tmp_path / "stopped", tiny_corpus, *budget)
    resume_file = tmp_path / "stopped" / ".stacked" / "group_0.pt"
    trainer = stacked_train.GroupTrainer(jobs, 0, resume_file, stop_after_windows=2)
    with pytest.raises(SystemExit):
        trainer.run(resume=False)
    assert metrics(tmp_path / "stopped" / "0")["status"] == "interrupted"
    assert {s: signal.getsignal(s) for s in signals} == before


def test_a_resumed_sweep_reads_a_null_best_of_a_completed_member_as_nan(tmp_path):
    """A completed member whose best_val_ppl was NaN has null in its metrics.json (rnnreg.io: JSON has no NaN); a
    resumed sweep that finds its group done hands it on as NaN, as the run that wrote it did (not None)."""
    jobs = [SimpleNamespace(output_dir=tmp_path / str(k)) for k in range(2)]
    for job, best in zip(jobs, (math.nan, 120.5)):
        write_json_atomic(job.output_dir / "metrics.json", {"best_val_ppl": best, "status": "completed"})
    [(status, best), second] = stacked_resume.group_done(jobs)
    assert status == "completed" and math.isnan(best) and second == ("completed", 120.5)
    (jobs[1].output_dir / "metrics.json").write_text('{"status": "compl')  # cut short: not a member that finished
    assert stacked_resume.group_done(jobs) is None


def test_a_resumed_sweep_hands_on_a_finished_groups_failed_and_unvalidated_members(tmp_path):
    """A group that ended in an earlier run of the sweep (its resume file gone) is not trained again: a member that
    diverged hands on its failure (its error), one that ran no validation (trainer.check_val_every_n_epoch past its
    epochs) its completion with no best, as the run that wrote them did."""
    jobs = [SimpleNamespace(output_dir=tmp_path / str(k)) for k in range(3)]
    error = "training loss became nan at epoch 1, step 3 (global step 3)"
    records = [{"status": "completed", "best_val_ppl": 120.5}, {"status": "failed", "error": error}]
    records.append({"status": "completed"})  # no best_val_ppl: no validation ran
    for job, record in zip(jobs, records):
        write_json_atomic(job.output_dir / "metrics.json", record)
    [first, (status, failure), third] = stacked_resume.group_done(jobs)
    assert first == ("completed", 120.5) and third == ("completed", None)
    assert status == "failed" and isinstance(failure, TrainingDiverged) and str(failure) == error


def resumable_sweep(sweep: Path, seeds: int, statuses: dict[int, str]) -> list[SimpleNamespace]:
    """`seeds` jobs of one group key (seed=1, 2, ...) in `sweep`, each with a metrics.json saying its status in
    `statuses` ({job: status}) from stacked group `job // 2` (an earlier run's max_members=2)."""
    jobs = [
        SimpleNamespace(idx=k, overrides=["experiment=x", f"seed={k + 1}"], key='{"a": 1}', output_dir=sweep / str(k))
        for k in range(seeds)
    ]
    for k, status in statuses.items():
        write_json_atomic(jobs[k].output_dir / "metrics.json", {"status": status, "stacked": {"group": k // 2}})
    return jobs


def resume_file(sweep: Path, number: int, members: list[list[str]], key: str = '{"a": 1}') -> Path:
    path = sweep / ".stacked" / f"group_{number}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": [key, members]}, path)
    return path


def test_resume_skips_finished_jobs_and_resumes_interrupted_groups_as_they_ran(tmp_path):
    """hydra.launcher.resume=true never trains a finished job again nor an interrupted one from its start,
    whatever max_members it is given: an interrupted group goes on as its resume file holds it (its members'
    overrides in any order), finished jobs keep their group, only jobs that never trained are grouped anew."""
    interrupted = tmp_path / "interrupted"  # max_members=2: group 0 [0, 1] completed, group 1 [2, 3] interrupted
    jobs = resumable_sweep(interrupted, 4, {0: "completed", 1: "completed", 2: "interrupted", 3: "interrupted"})
    resume_file(interrupted, 1, [["seed=3", "experiment=x"], ["experiment=x", "seed=4"]])
    groups = resumed_groups(jobs, 16, 0, interrupted)
    assert [(n, [j.idx for j in g]) for n, g in groups] == [(0, [0, 1]), (1, [2, 3])]
    assert [(n, [j.idx for j in g]) for n, g in resumed_groups(jobs, 1, 0, interrupted)] == [(0, [0, 1]), (1, [2, 3])]
    finished = tmp_path / "finished"  # seeds 1-4 finished as one group, resumed with seeds 5 and 6 added
    jobs = resumable_sweep(finished, 6, {0: "completed", 1: "failed", 2: "completed", 3: "completed"})
    for job in jobs[2:4]:
        write_json_atomic(job.output_dir / "metrics.json", {"status": "completed", "stacked": {"group": 0}})
    groups = resumed_groups(jobs, 16, 0, finished)
    assert [(n, [j.idx for j in g]) for n, g in groups] == [(0, [0, 1, 2, 3]), (1, [4, 5])]


def test_resume_refuses_a_group_it_would_train_from_its_start(tmp_path):
    """A resume file whose group is not this command's (another setting, a job it does not run), or a job with a
    checkpoint but no resume file: one line naming it, before anything is written."""
    sweep = tmp_path / "sweep"
    jobs = resumable_sweep(sweep, 4, {})
    path = resume_file(sweep, 0, [["seed=1", "experiment=x"], ["seed=2", "experiment=x"]], '{"a": 2}')
    with pytest.raises(
        ConfigError, match=re.escape(f"{path} holds group 0 trained with a=2 where this command has a=1")
    ):
        resumed_groups(jobs, 16, 0, sweep)
    path = resume_file(sweep, 0, [["seed=1", "experiment=x"], ["seed=9", "experiment=x"]])
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{path} holds an interrupted group with a job this command does not run (seed=9 experiment=x)"
        ),
    ):
        resumed_groups(jobs[:2], 16, 0, sweep)
    path.unlink()
    (jobs[1].output_dir / "checkpoints").mkdir(parents=True)
    (jobs[1].output_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^job 1 has a checkpoint \(.*\) but no resume file of its group"):
        resumed_groups(jobs, 16, 0, sweep)


def test_a_resume_file_holding_code_is_refused_and_its_code_never_runs(setup, tmp_path, tiny_corpus):
    """A group's resume file is untrusted input, as a checkpoint is: one holding a pickled payload is one line at
    every read of it (the launcher's first, before anything is written; the group trainer's), and never runs."""
    marker = tmp_path / "pwned"
    sweep = tmp_path / "sweep"
    path = sweep / ".stacked" / "group_0.pt"
    path.parent.mkdir(parents=True)
    torch.save({"fingerprint": ["{}", [["seed=1"]]], "evil": RunsCode(marker)}, path)
    written = path.read_bytes()
    refused = rf"^{re.escape(str(path))} is not a readable resume file \(Weights only load failed"
    with pytest.raises(CheckpointError, match=refused):
        stacked_resume.resume_fingerprints(path.parent)
    with pytest.raises(CheckpointError, match=refused):
        stacked_train.GroupTrainer(group_jobs_here(tmp_path / "jobs", tiny_corpus), 0, path).load_resume()
    resume = ["hydra/launcher=stacked", "hydra.launcher.resume=true", f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-train", "-m", *setup.cli, "seed=1,2", *resume, check=False)
    (line,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and re.match(refused.replace("^", "^error: "), line), proc.stderr[-2000:]
    assert not marker.exists() and not any(p.name.isdigit() for p in sweep.iterdir()), sorted(sweep.iterdir())
    assert path.read_bytes() == written  # kept as it was


def test_resume_file_of_other_settings_names_the_setting(tmp_path, tiny_corpus):
    jobs = group_jobs_here(tmp_path, tiny_corpus)
    for job in jobs:
        job.key = '{"trainer": {"max_epochs": 30}}'
    path = resume_file(tmp_path, 0, [job.overrides for job in jobs], '{"trainer": {"max_epochs": 20}}')
    with pytest.raises(ConfigError, match=re.escape("(other settings (trainer.max_epochs=20 where this command has ")):
        stacked_train.GroupTrainer(jobs, 0, path).load_resume()


def test_paper_table_sweep_is_one_group_per_size(tmp_path):
    """The paper's table with 3 seeds (README): experiment=paper_small,paper_medium,paper_large seed=1234,1,2
    is three groups, each a size's three seeds with its recipe (dropout p, clip, schedule)."""
    jobs = []
    for size in ("small", "medium", "large"):
        for seed in (1234, 1, 2):
            cfg = compose_config([f"experiment=paper_{size}", f"seed={seed}"], tmp_path / f"{size}{seed}")
            jobs.append(SimpleNamespace(key=group_key(cfg), cfg=cfg))
    groups = group_jobs(jobs, 16)
    assert [[job.cfg.seed for job in group] for group in groups] == [[1234, 1, 2]] * 3
    assert [group[0].cfg.model.hidden_size for group in groups] == [200, 650, 1500]
    assert [group[0].cfg.dropout.p for group in groups] == [0.0, 0.5, 0.65]


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.precision=16-mixed", "trainer.precision=16-mixed .*set trainer.precision=32-true or bf16-mixed"),
        ("trainer.precision=bf16-true", "trainer.precision=bf16-true .*set trainer.precision=32-true or bf16-mixed"),
        ("trainer.precision=64-true", "trainer.precision=64-true "),
        # trainer settings a stacked group would not honour (it steps every window of every epoch, and validates at
        # the end of an epoch)
        ("+trainer.max_steps=25", "trainer.max_steps=25 .*set trainer.max_steps=-1"),
        ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches=2 "),
        ("+trainer.val_check_interval=1", "trainer.val_check_interval=1 "),  # every window, not 1.0: each epoch
        ("+trainer.val_check_interval=0.5", "trainer.val_check_interval=0.5 "),
        ("+trainer.min_epochs=3", "trainer.min_epochs=3 "),
        ("+trainer.max_time=00:00:01:00", "trainer.max_time=00:00:01:00 "),
        ("+trainer.overfit_batches=2", "trainer.overfit_batches=2 "),
        ("+trainer.detect_anomaly=true", "trainer.detect_anomaly=true "),
        ("+trainer.profiler=simple", "trainer.profiler=simple "),
    ],
)
def test_unsupported_member_settings_are_one_line_errors(tiny_cfg, override, key):
    with pytest.raises(ConfigError, match=key) as err:
        check_stackable(tiny_cfg(override))
    assert "\n" not in str(err.value) and "drop hydra/launcher=stacked" in str(err.value)


def test_a_callback_of_ones_own_is_refused_as_a_stacked_group_would_not_run_it(tiny_cfg):
    """A stacked group trains without Lightning's Trainer: a callback a user adds would never run (before: the sweep
    completed without it, and without a word); rnnreg's own callbacks, whose work the group does, stack."""
    with pytest.raises(ConfigError) as err:
        check_stackable(tiny_cfg("+callbacks.mine._target_=helpers.RaiseAtFirstWindow"))
    assert str(err.value) == (
        "callbacks.mine (helpers.RaiseAtFirstWindow) is not run by hydra/launcher=stacked, which trains its groups "
        "without Lightning's Trainer and runs only rnnreg's own callbacks: drop it (~callbacks.mine), or drop "
        "hydra/launcher=stacked to run these jobs with Hydra's basic launcher"
    )
    check_stackable(tiny_cfg("callbacks=early_stopping", "callbacks.lr_monitor=null"))


@pytest.mark.parametrize(
    "overrides, refused",
    [
        (["trainer.devices=1"], False),
        (["trainer.devices=auto"], False),  # the group's one device, however many GPUs this machine has
        (["+trainer.num_nodes=1"], False),
        (["+trainer.num_nodes='1'"], False),
        (["trainer.devices=2", "trainer.accelerator=cpu"], True),
        (["trainer=ddp"], True),  # (strategy=ddp, devices=auto)
        (["trainer=ddp", "trainer.devices=1"], True),
        (["trainer.devices=-1"], True),  # every GPU: not the one the group picks
        (["trainer.devices=[1]"], True),  # a GPU of the user's choice: the group does not follow it
    ],
)
def test_a_stacked_group_takes_jobs_of_one_process_on_one_device(tiny_cfg, overrides, refused):
    if not refused:
        check_stackable(tiny_cfg(*overrides))
        return
    with pytest.raises(ConfigError, match=r"^trainer.devices=\S+ / trainer.strategy=\S+: a stacked group runs on one"):
        check_stackable(tiny_cfg(*overrides))


@pytest.mark.parametrize("nodes", ["2", "'2'"])
def test_a_stacked_group_on_several_machines_is_refused_naming_num_nodes(tiny_cfg, nodes):
    """trainer.num_nodes > 1 (one device each): the line names num_nodes, the setting to change, not devices=1."""
    with pytest.raises(ConfigError) as err:
        check_stackable(tiny_cfg("+trainer.num_nodes=" + nodes))
    assert str(err.value) == (
        "trainer.num_nodes=2: a stacked group runs on one device of one machine; set trainer.num_nodes=1"
    )


def test_unstackable_jobs_are_refused_before_hydra_writes(tmp_path, tiny_corpus):
    """The command line's check (rnnreg.command_line.validate_args, before Hydra makes the sweep folder and its
    multirun.yaml) refuses what a stacked member cannot hold, naming the job; the basic launcher runs them."""
    torch.save({"state_dict": {}}, tmp_path / "a.ckpt")
    args = ["-m", "hydra/launcher=stacked", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "seed=1,2"]
    for setting, line in (
        ("trainer.precision=bf16-true", "trainer.precision=bf16-true is not supported by hydra/launcher=stacked"),
        (f"ckpt_path={tmp_path / 'a.ckpt'}", f"ckpt_path={tmp_path / 'a.ckpt'} is not supported by hydra/launcher="),
        ("+trainer.max_steps=25", "trainer.max_steps=25 is not honoured by hydra/launcher="),
    ):
        with pytest.raises(ConfigError) as err:
            validate_args("train", [*args, setting])
        assert str(err.value).startswith(line) and str(err.value).endswith("(sweep job seed=1)"), err.value
        assert validate_args("train", [a for a in args if a != "hydra/launcher=stacked"] + [setting]) == 2


def test_jobs_the_command_line_cannot_check_are_checked_by_the_launcher(setup, tmp_path):
    """With a search path (or an Optuna trial) the command line's check before Hydra cannot compose the jobs: the
    stacked launcher checks each against the schema, as a run checks itself, before any job's folder is written."""
    sweep = tmp_path / "sweep"
    for setting, line in (
        ("optim.weight_decay=-1", "error: optim.weight_decay=-1 must be a number >= 0"),
        ("dropout.p=1.5", "error: dropout.p=1.5 must be a number in [0, 1)"),
    ):
        proc = run(
            "rnnreg-train",
            "-m",
            *setup.cli,
            "hydra/launcher=stacked",
            "+member=a,b",
            setting,
            f"hydra.sweep.dir={sweep}",
            check=False,
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(line) and proc.stderr.rstrip().endswith("(sweep job +member=a)")
        assert not (sweep / "0").exists() and not (sweep / ".stacked").exists()


@pytest.mark.parametrize(
    "override",
    [
        "+trainer.val_check_interval=1.0",
        "+trainer.max_steps=-1",
        "+trainer.min_epochs=1",
        "trainer.check_val_every_n_epoch=2",  # (test_members_validating_every_second_epoch_are_their_jobs_run_alone)
        "trainer.precision=bf16-mixed",  # (test_bf16_member_equals_its_job_run_alone)
        "trainer.precision=32",
        "trainer.gradient_clip_algorithm=null",  # (Lightning's default, norm; rnnreg clips the norm either way)
    ],
)
def test_trainer_settings_that_do_what_a_stacked_group_does_are_stackable(tiny_cfg, override):
    check_stackable(tiny_cfg(override))


def test_a_trainer_config_without_precision_is_a_float32_group_as_lightning_runs_its_jobs(tiny_cfg):
    """trainer.precision left out (~trainer.precision, or a user's own trainer file): Lightning runs each job in
    32-true, so a stacked group takes it and trains in float32, not under bf16 autocast (trainer_rules.trainer_precision
    reads Lightning's default in one place)."""
    import lightning as L

    cfg = tiny_cfg("~trainer.precision")
    assert "precision" not in cfg.trainer
    check_stackable(cfg)
    lightning = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    assert trainer_precision(cfg.trainer) == lightning.precision == "32-true"
    assert not stacked_settings.under_bf16_autocast(cfg.trainer) and stacked_train.autocast_dtype(cfg.trainer) is None


def test_every_trainer_argument_is_read_unused_or_checked_by_the_stacked_launcher():
    """A Lightning Trainer argument the stacked launcher knows nothing of would be ignored silently."""
    known = {*stacked_settings.TRAINER_READ, *stacked_settings.TRAINER_UNUSED, *stacked_settings.TRAINER_ASSUMED}
    assert trainer_arguments() <= known, sorted(trainer_arguments() - known)


def test_a_group_that_cannot_train_fails_its_jobs_and_the_others_train(tmp_path, tiny_corpus):
    """A group's bad data (a folder without the corpus) fails its jobs as it fails basic jobs (their line,
    error.txt); the other groups train, and the sweep exits 1 at its end."""
    sweep, empty = tmp_path / "sweep", tmp_path / "empty"
    empty.mkdir()
    proc = run(
        "rnnreg-train",
        "-m",
        "hydra/launcher=stacked",
        "experiment=paper_small",
        *TINY,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        f"data.data_dir={empty},{tiny_corpus}",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    failure = f"missing train file {empty / 'train.txt'}"
    assert errors[0].startswith(f"error: job 0 (data.data_dir={empty}) failed: {failure}"), errors
    assert errors[1] == f"error: 1 job(s) of the multirun in {sweep} failed: 0 (data.data_dir={empty})"
    assert (sweep / "0" / "error.txt").read_text().startswith(failure)
    assert (sweep / "1" / "metrics.json").exists() and not (sweep / "1" / "error.txt").exists()


@pytest.mark.parametrize("launcher", ["basic", "stacked"])
def test_a_failed_job_of_a_multirun_that_varies_nothing_is_named_by_its_number(tmp_path, launcher):
    """A multirun of one job (nothing swept) whose data is missing: its lines name the job by its number alone, not
    by an empty list of the overrides that tell it apart (`job 0 ()`)."""
    sweep, empty = tmp_path / "sweep", tmp_path / "empty"
    empty.mkdir()
    proc = run(
        "rnnreg-train",
        "-m",
        f"hydra/launcher={launcher}",
        "experiment=paper_small",
        *TINY,
        "trainer.max_epochs=1",
        f"data.data_dir={empty}",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith(f"error: job 0 failed: missing train file {empty / 'train.txt'}: "), errors
    assert errors[1] == f"error: 1 job(s) of the multirun in {sweep} failed: 0", errors


def test_optuna_batch_of_trials_is_one_group(setup):
    """hparams_search=optuna with hydra.sweeper.n_jobs=3: each batch of trials the sampler proposes (other
    dropout rates, lr decays, init scales: all member settings) trains as one group, and the study reads each
    trial's best validation perplexity from its member."""
    sweep = setup.root / "optuna"
    proc = run(
        "rnnreg-train",
        *setup.cli,
        "hydra/launcher=stacked",
        "hparams_search=optuna",
        "dropout=non_recurrent",  # a placement that drops at dropout.p, which the study varies
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=3",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.stdout.count("3 jobs in 1 group\n") == 2  # two batches of three trials
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())
    results = [metrics(job) for job in jobs]
    assert len(jobs) == 6 and {r["status"] for r in results} == {"completed"}
    rates = {yaml.safe_load((job / ".hydra/config.yaml").read_text())["dropout"]["p"] for job in jobs}
    assert len(rates) == 6
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(r["best_val_ppl"] for r in results))


def test_members_are_labelled_on_the_console_by_what_their_sweep_varies():
    """A member's console label is its overrides of the keys its sweep varies, as its W&B run is named: a group of
    one, or one a resume regrouped (its members share a placement), says them too (before: `#12`, and `seed=1`
    without its placement; found by a probe). Where the sweep is not known, what tells the group's members apart."""
    labels = stacked_progress.member_labels
    assert labels([["dropout=weight_drop", "seed=1", "model.hidden_size=16"]], [12], ["dropout", "seed"]) == [
        "dropout=weight_drop seed=1"
    ]
    regrouped = [["dropout=weight_drop", "seed=1"], ["dropout=weight_drop", "seed=2"]]
    swept = ["dropout", "seed"]
    assert labels(regrouped, [8, 9], swept) == ["dropout=weight_drop seed=1", "dropout=weight_drop seed=2"]
    assert labels(regrouped, [8, 9], None) == ["seed=1", "seed=2"]
    assert labels([["seed=1"]], [12], None) == ["#12"]
    assert labels([["+member=a"], ["+member=b"]], [0, 1], ["member"]) == ["+member=a", "+member=b"]


def test_group_says_its_estimate_each_epoch_and_its_test_on_the_console(stacked, setup):
    """A stacked sweep's console: the group's estimated time once its first windows are timed, then after every
    epoch each member's validation perplexity (labelled by the override that tells it apart) and the time left;
    before the final test what it runs (the failed member is not tested), after it each member's test perplexity."""
    lines = (setup.root / "stacked_stdout.txt").read_text().splitlines()
    (estimate,) = [line for line in lines if " s per window (over " in line]
    assert (
        estimate.startswith("group 0: ") and "estimated total " in estimate and "for 3 epochs x 6 windows" in estimate
    )
    test_part = re.search(r" \+ test ([^)]+)\)$", estimate).group(1)  # the final test, measured with the estimate
    epochs = [line for line in lines if line.startswith("group 0, epoch ")]
    assert [line.split(" in ")[0] for line in epochs] == [f"group 0, epoch {e}/3" for e in (1, 2, 3)]
    assert all("left" in line for line in epochs[:2]) and "left" not in epochs[2]
    for e, line in enumerate(epochs):
        for k, name in enumerate(GOOD):
            if e < len(losses(stacked / str(k), "val/ppl")):
                assert f"+member={name} {losses(stacked / str(k), 'val/ppl')[e]:.2f}" in line
        assert "+member=diverge failed" in line  # it diverged in epoch 1
    assert metrics(stacked / "3")["epochs"] < 3 and "(stopped early)" in epochs[metrics(stacked / "3")["epochs"] - 1]
    # its time is the group's until it stopped, not the group's whole time (which made its words/s fall)
    assert metrics(stacked / "3")["train_seconds"] < metrics(stacked / "0")["train_seconds"]
    testing = lines.index(
        f"group 0: testing 4 of 5 members: one stream (the paper's protocol), then 4 streams (about {test_part})"
    )
    assert lines[testing + 1].startswith("group 0, test in ")  # the next line
    assert lines.index(epochs[-1]) < testing  # after the last epoch's line
    tested = lines[testing + 1].split(": test ppl ")[1].split(" | ")
    good = [f"+member={name} {metrics(stacked / str(k))['test_ppl']:.2f}" for k, name in enumerate(GOOD)]
    assert tested == [*good, "+member=diverge failed"]


def test_a_completed_multirun_ends_with_the_command_that_compares_its_jobs(stacked, alone, setup):
    """A training multirun whose jobs all completed ends with rnnreg-report's command for its folder (the basic
    launcher's here); one with a failed job ends with the failed jobs' list instead (the stacked fixture's)."""
    last = (setup.root / "alone_stdout.txt").read_text().splitlines()[-1]
    assert last == f"the multirun's jobs completed in {alone}: rnnreg-report path={alone} compares them"
    assert "compares them" not in (setup.root / "stacked_stdout.txt").read_text()


# -- each member is its job run alone ------------------------------------------------------------------------
def test_layer_norm_and_tied_members_are_their_jobs_run_alone(setup, alone):
    """Layer norm and tied embeddings are a group's shape (its own group: test_grouping_by_shape_and_max_members):
    two members with both, one with the paper's dropout and one with dropout on h_{t-1}, each equal its job run
    alone bit for bit: losses, perplexities, weights (the layer norms' gains and shifts, the decoder weight
    as the embedding under its own name) and the training state its checkpoint holds (the optimiser's
    parameters: one fewer, tied; member a's momentum buffers)."""
    stacked, single = setup.root / "shape_stacked", setup.root / "shape_alone"
    sweep = [*setup.cli, "+member=a,c", "regularizer=[layer_norm,tied_embeddings]"]
    proc = run("rnnreg-train", "-m", *sweep, "hydra/launcher=stacked", f"hydra.sweep.dir={stacked}")
    assert "2 members, 2 x 16 LSTM with layer norm, tied embedding, batch 4 x bptt 5" in proc.stdout
    run("rnnreg-train", "-m", *sweep, f"hydra.sweep.dir={single}")
    for index in range(2):
        mine, theirs = metrics(stacked / str(index)), metrics(single / str(index))
        assert mine["status"] == theirs["status"] == "completed"
        for key in ("val_ppl", "test_ppl", "epochs"):
            assert mine[key] == theirs[key], key
        assert losses(stacked / str(index)) == losses(single / str(index))
        assert mine["test_ppl"] != metrics(alone / str(GOOD.index("ac"[index])))["test_ppl"]  # another model
        ours, its_job = (
            load_checkpoint(sweep / str(index) / "checkpoints" / "last.ckpt") for sweep in (stacked, single)
        )
        assert ours.keys() - {"stacked"} == its_job.keys()
        assert ours["layer_norm_biases"] == its_job["layer_norm_biases"] == "after_norms"  # (rnnreg-eval reads it)
        assert_same_optimizer_state(ours, its_job)
        # member a has momentum: a buffer per parameter (the tied decoder weight is the embedding, one parameter)
        assert len(ours["optimizer_states"][0]["state"]) == (len(ours["state_dict"]) - 1 if index == 0 else 0)
        state, expected = ours["state_dict"], its_job["state_dict"]
        assert list(state) == list(expected) and any(".norms." in key for key in state)
        assert all(torch.equal(state[key], expected[key]) for key in state)
        assert torch.equal(state["net.decoder.weight"], state["net.embedding.weight"])


@pytest.mark.parametrize("index", range(len(GOOD)))
def test_member_equals_its_job_run_alone(stacked, alone, index):
    """On a CPU the members train in turn, each as its single model with its job's LSTM (fused or step loop),
    objective and update rule (rnnreg.stacked_step.InTurnStep), its masks drawn from its job's own stream: a
    member, with dropout or without, is its job run alone bit for bit: losses, perplexities and weights."""
    mine, theirs = metrics(stacked / str(index)), metrics(alone / str(index))
    assert mine["status"] == theirs["status"] == "completed"
    assert mine["stacked"] == {"group": 0, "members": 5, "member": index, "program": "in_turn", "units": 16}
    assert mine.keys() - {"stacked"} == theirs.keys()  # a run's metrics.json, and the member's group
    assert mine["words_per_second_median_step"] > 0
    assert mine["epochs"] == theirs["epochs"]
    for key in ("val_ppl", "val_epoch", "best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert mine[key] == theirs[key], key
    assert losses(stacked / str(index)) == losses(alone / str(index))
    assert steps(stacked / str(index), "test/ppl") == steps(alone / str(index), "test/ppl")  # early stopping: its own
    assert columns(stacked / str(index)) == columns(alone / str(index))  # its csv has a run's columns ...
    # ... and its TensorBoard events are its job's: tags, steps, values (but for the times)
    member, single = tensorboard_scalars(stacked / str(index)), tensorboard_scalars(alone / str(index))
    assert member.keys() == single.keys() and "train/grad_norm" in member
    for tag in member.keys() - {"train/epoch_seconds", "train/words_per_sec"}:
        assert member[tag] == single[tag], tag
    assert [step for step, _ in member["train/epoch_seconds"]] == [step for step, _ in single["train/epoch_seconds"]]
    # every logger records its job's hyperparameters: the config, then the task's (but for where it writes)
    for name in ("csv/hparams.yaml", "tensorboard/hparams.yaml"):
        hparams = [(sweep / str(index) / name).read_text().replace(str(sweep), "") for sweep in (stacked, alone)]
        assert hparams[0] == hparams[1] and "vocab_size: " in hparams[0], name

    # its config tree: its job's, but for where it writes (the config's output_dir, under the other sweep folder)
    def tree(sweep: Path) -> str:  # (rich pads and wraps its lines at the console's width: long paths wrap)
        return re.sub(r"[\s│]", "", (sweep / str(index) / "config_tree.log").read_text()).replace(str(sweep), "")

    assert tree(stacked) == tree(alone)
    for key in ("train/grad_norm", "train/ppl", "train/lr", "val/ppl"):  # ... and a run's values
        assert losses(stacked / str(index), key) == losses(alone / str(index), key), key
    for name in ("last.ckpt", "best.ckpt"):
        ours, single = weights(stacked / str(index), name), weights(alone / str(index), name)
        assert ours.keys() == single.keys()
        for key in ours:
            assert torch.equal(ours[key], single[key]), key


BF16 = "trainer.precision=bf16-mixed"
# the jobs under bf16 autocast; where this CPU's oneDNN has no bf16 LSTM (rnnreg.model.cpu_runs_fused_lstm_in_bf16:
# AVX2 alone), every member on the step loop, which runs under bf16 autocast on any CPU
BF16_JOBS = [BF16, *([] if cpu_runs_fused_lstm_in_bf16() else ["model.lstm=step"])]


@pytest.fixture(scope="module")
def stacked_bf16(setup) -> Path:
    """The good jobs under bf16 autocast as one stacked group (on this CPU: the members in turn)."""
    sweep = setup.root / "stacked_bf16"
    members = f"+member={','.join(GOOD)}"
    proc = run(
        "rnnreg-train", "-m", *setup.cli, *BF16_JOBS, "hydra/launcher=stacked", members, f"hydra.sweep.dir={sweep}"
    )
    assert "group 0: jobs [0, 1, 2, 3], 4 members, 2 x 16 LSTM, batch 4 x bptt 5, bf16 autocast\n" in proc.stdout
    return sweep


@pytest.fixture(scope="module")
def alone_bf16(setup) -> Path:
    """The same jobs under bf16 autocast, each run alone by the basic launcher."""
    sweep = setup.root / "alone_bf16"
    run("rnnreg-train", "-m", *setup.cli, *BF16_JOBS, f"+member={','.join(GOOD)}", f"hydra.sweep.dir={sweep}")
    return sweep


@pytest.mark.parametrize("index", range(len(GOOD)))
def test_bf16_member_equals_its_job_run_alone(stacked_bf16, alone_bf16, stacked, index):
    """trainer.precision=bf16-mixed: each member's forward and loss run under bf16 autocast as Lightning runs its
    job's (its weight-cast cache off), the backward and the update in float32: a member is its job run alone bit
    for bit (losses, gradient norms, perplexities, weights), and not its float32 member."""
    mine, theirs = metrics(stacked_bf16 / str(index)), metrics(alone_bf16 / str(index))
    assert mine["status"] == theirs["status"] == "completed"
    for key in ("epochs", "val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert mine[key] == theirs[key], key
    for key in ("train/loss", "train/grad_norm", "val/ppl"):
        assert losses(stacked_bf16 / str(index), key) == losses(alone_bf16 / str(index), key), key
    for name in ("last.ckpt", "best.ckpt"):
        ours, single = weights(stacked_bf16 / str(index), name), weights(alone_bf16 / str(index), name)
        assert ours.keys() == single.keys() and all(torch.equal(ours[key], single[key]) for key in ours), name
    assert mine["test_ppl"] != metrics(stacked / str(index))["test_ppl"]  # (6e-6 apart for es: not a tolerance)


@pytest.mark.parametrize("index", range(len(GOOD)))
def test_member_checkpoint_holds_its_jobs_training_state(stacked, alone, index):
    """A member's last.ckpt holds what its job run alone saves: loops, optimiser (member a: its momentum
    buffers), schedule, callbacks."""
    ours = assert_same_training_state(stacked, alone, str(index), "last.ckpt")
    assert bool(ours["optimizer_states"][0]["state"]) == (GOOD[index] == "a")  # momentum: member a only


def assert_same_training_state(stacked: Path, alone: Path, job: str, file: str) -> dict:
    """The member's checkpoint holds what its job's (run alone) holds: loops, optimiser, schedule, callbacks, the
    masks' random state; paths each in its own sweep. Returns the member's."""
    ours, theirs = (load_checkpoint(sweep / job / "checkpoints" / file) for sweep in (stacked, alone))
    assert ours.keys() - {"stacked"} == theirs.keys()
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])  # the masks' stream where the job's stands
    keys = ("epoch", "global_step", "loops", "lr_schedulers", "hparams_name", "train_window", "hyper_parameters")
    for key in (*keys, "data_fingerprint"):
        assert ours[key] == theirs[key], key
    assert_same_optimizer_state(ours, theirs)
    assert ours["callbacks"].keys() == theirs["callbacks"].keys()
    for key, state in theirs["callbacks"].items():
        for name, value in state.items():
            if isinstance(value, str) and value.startswith(str(alone)):  # paths: each in its own job folder
                assert ours["callbacks"][key][name] == value.replace(str(alone), str(stacked)), (key, name)
            elif isinstance(value, torch.Tensor):
                torch.testing.assert_close(ours["callbacks"][key][name], value, rtol=1e-5, atol=0), (key, name)
            elif name not in ("train_seconds", "epoch_seconds", "fit_seconds", "best_k_models"):  # (times: its own)
                assert ours["callbacks"][key][name] == value, (key, name)
    return ours


def csv_rows(job: Path) -> list[dict]:
    """A job's csv/metrics.csv rows, its times (which differ from run to run) only said to be there."""
    with open(job / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    timed = ("train/epoch_seconds", "train/words_per_sec")
    return [{key: ("timed" if key in timed and value else value) for key, value in row.items()} for row in rows]


def test_members_validating_every_second_epoch_are_their_jobs_run_alone(setup):
    """trainer.check_val_every_n_epoch=2: a group validates where its jobs do, after epoch 2 of 3 (a one-epoch
    group never), and each member is its job run alone bit for bit (member a: dropout and momentum; es: early
    stopping, tested on its best weights): metrics.json, the csv's rows, both checkpoints' weights and training
    state (best.ckpt as a run saves it as its validation ends, before the epoch's end; last.ckpt at the end of
    epoch 3, which has no validation). With no validation metrics.json has no val_ppl and the test takes the final
    weights, with a run's warnings."""
    stacked, single = setup.root / "every2_stacked", setup.root / "every2_alone"
    cli = [arg for arg in setup.cli if not arg.startswith("trainer.max_epochs=")]
    sweep = [*cli, "trainer.check_val_every_n_epoch=2", "+member=a,es", "trainer.max_epochs=1,3"]
    proc = run("rnnreg-train", "-m", *sweep, "hydra/launcher=stacked", f"hydra.sweep.dir={stacked}")
    assert "4 jobs in 2 groups\n" in proc.stdout  # one per max_epochs: jobs 0 and 2 (1 epoch), 1 and 3 (3 epochs)
    run("rnnreg-train", "-m", *sweep, f"hydra.sweep.dir={single}")
    epochs = [line.split(" in ")[0] for line in proc.stdout.splitlines() if line.startswith("group 1, epoch ")]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("group 1, epoch ")]
    assert epochs == [f"group 1, epoch {e}/3" for e in (1, 2, 3)]
    assert ["val ppl" in line for line in lines] == [False, True, False]
    assert all("no validation" in line for line in lines[::2]) and "validation " in lines[1]
    for job in ("0", "1", "2", "3"):
        mine, theirs = metrics(stacked / job), metrics(single / job)
        assert mine["status"] == theirs["status"] == "completed"
        for key in ("val_ppl", "val_epoch", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
            assert mine.get(key, "absent") == theirs.get(key, "absent"), (job, key)
        assert csv_rows(stacked / job) == csv_rows(single / job), job
        files = ("last.ckpt", "best.ckpt") if job in "13" else ("last.ckpt",)
        assert sorted(p.name for p in (stacked / job / "checkpoints").glob("*.ckpt")) == sorted(files)
        for file in files:
            ours, its_job = weights(stacked / job, file), weights(single / job, file)
            assert ours.keys() == its_job.keys() and all(torch.equal(ours[k], its_job[k]) for k in ours), (job, file)
            assert_same_training_state(stacked, single, job, file)
    assert metrics(stacked / "1")["val_epoch"] == 2 and metrics(stacked / "1")["epochs"] == 3
    assert "val_ppl" not in metrics(stacked / "0") and "best_val_ppl" not in metrics(stacked / "2")
    assert losses(stacked / "3", "val/ppl") == [metrics(stacked / "3")["best_val_ppl"]]  # es: tested on epoch 2's
    assert steps(stacked / "3", "val/ppl") == [11]
    for job in ("0", "2"):
        for sweep in (stacked, single):
            log = (sweep / job / "train.log").read_text()
            assert "no validation ran (1 epoch trained, trainer.check_val_every_n_epoch=2)" in log, (sweep, job)
    assert "there is no best checkpoint: testing the final weights" in (stacked / "2" / "train.log").read_text()


def test_a_groups_estimate_follows_the_run_plans_settings(tmp_path, tiny_corpus, capsys):
    """callbacks.run_plan's windows, as a run's RunPlan reads them: timed after its warm-up (and the program's
    own eager windows), over its measured windows; without a run plan, no estimate, as a run has none."""
    budget = ("trainer.max_epochs=1", "trainer.limit_train_batches=8", "test=false")
    for plan, says in (
        (("callbacks.run_plan.warmup_windows=1", "callbacks.run_plan.measure_windows=3"), "(over 3 windows after"),
        (("callbacks.run_plan.warmup_windows=0", "callbacks.run_plan.measure_windows=5"), "(over 5 windows, warm-up"),
        (("~callbacks.run_plan",), None),
    ):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        jobs = group_jobs_here(folder, tiny_corpus, *budget, *plan)
        stacked_train.GroupTrainer(jobs, 0, folder / ".stacked" / "group_0.pt").run(resume=False)
        estimates = [line for line in capsys.readouterr().out.splitlines() if " s per window (over " in line]
        if says is None:
            assert estimates == []
        else:
            assert len(estimates) == 1 and says in estimates[0], estimates


def test_a_group_says_the_validations_it_will_run(capsys):
    """The group's estimate counts the validations of trainer.check_val_every_n_epoch (here 1 of 3 epochs)."""
    from rnnreg.console import format_duration
    from rnnreg.stacked_progress import GroupProgress
    from rnnreg.timing import VALIDATION_COST

    for every, validations in ((1, 3), (2, 1)):
        progress = GroupProgress(0, ["a"], 3, 10, 30.0, torch.device("cpu"), 0, 4, val_every=every)
        progress.timer.windows = 4  # 4 windows timed (from the start)
        progress.estimate(1.0, 0, 4)
        line = capsys.readouterr().out
        assert line.endswith(f"+ validation {format_duration(validations * 30 * VALIDATION_COST)})\n"), line


def test_a_groups_estimate_holds_its_test_and_the_test_says_how_long(capsys):
    """The final test, measured once with the estimate: in the estimated total and its parts, in the time left
    after each epoch but the last, and in the line before the test; without a test (test=false) none of it."""
    from rnnreg.stacked_progress import GroupProgress

    for time_test in (lambda: 100.0, None):
        progress = GroupProgress(0, ["a"], 3, 10, 0.0, torch.device("cpu"), 0, 4, time_test=time_test)
        progress.timer.windows = 4
        progress.estimate(2.0, 0, 4)  # 3 epochs x 10 windows at 2 s, no validation windows: 1 min of training
        progress.epoch_done(0, 20.0, 0.0, 1.0, [50.0], ["running"])  # 2 epochs left: 40 s
        progress.epoch_done(2, 20.0, 0.0, 1.0, [40.0], ["running"])  # the last epoch: nothing after it but the test
        progress.test_started(["running"], 4)
        estimate, first, last, testing = capsys.readouterr().out.splitlines()
        if time_test is not None:
            assert estimate.endswith(
                "estimated total 2 min 40 s for 3 epochs x 10 windows (training 1 min 00 s + "
                "validation 0 s + test 1 min 40 s)"
            ), estimate
            assert first.endswith("val ppl a 50.00; about 2 min 20 s left") and last.endswith("a 40.00"), (first, last)
            assert testing.endswith("then 4 streams (about 1 min 40 s)"), testing
        else:
            assert estimate.endswith(
                "estimated total 1 min 00 s for 3 epochs x 10 windows (training 1 min 00 s + validation 0 s)"
            )
            assert first.endswith("; about 40 s left") and testing.endswith("then 4 streams"), (first, testing)


@pytest.mark.parametrize("limit", [None, 30])
def test_a_groups_test_estimate_counts_each_protocols_windows_timed_on_validation_windows(
    tmp_path, tiny_corpus, monkeypatch, limit
):
    """The test's estimate: each protocol's test windows (one stream, then data.batch_size streams; at most
    trainer.limit_test_batches) times what one window takes at its streams, timed on the validation split's
    windows at those streams (the test's own windows are not read before the test): here 1 s a window timed."""
    import rnnreg.timing
    from rnnreg.data import batchify

    jobs = group_jobs_here(
        tmp_path, tiny_corpus, "data.eval_bptt=7", f"trainer.limit_test_batches={'null' if limit is None else limit}"
    )
    trainer = stacked_train.GroupTrainer(jobs, 0, tmp_path / ".stacked" / "group_0.pt")
    timed = []

    def one_second_a_window(evaluate, windows, clock, measure=2):
        timed.append(windows)
        evaluate([windows[0]])  # the group's evaluation of the window runs (every member's NLL)
        return 1.0

    monkeypatch.setattr(rnnreg.timing, "seconds_per_eval_window", one_second_a_window)
    ids = trainer.datamodule.load().ids
    streams = (trainer.cfg.data.test_batch_size, trainer.cfg.data.batch_size)
    assert streams == (1, 4)
    counts = [math.ceil((ids["test"].numel() // b - 1) / 7) for b in streams]  # the last partial window kept
    assert counts[0] > 30 >= counts[1] > 1  # the limit cuts the one-stream protocol only
    expected = sum(counts) if limit is None else min(counts[0], limit) + min(counts[1], limit)
    assert trainer.time_test() == expected
    assert [w.bptt for w in timed] == [7, 7]
    for windows, b in zip(timed, streams):
        assert torch.equal(windows.streams, batchify(ids["valid"], b))


def test_member_checkpoint_continues_as_a_separate_run(stacked, setup, tmp_path):
    """ckpt_path= a member's checkpoint: its job goes on as a single run, from the member's epoch."""
    job = stacked / "1"
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())  # the job's, +member=b
    run(
        "rnnreg-train",
        *overrides,
        f"hydra.searchpath=[file://{setup.root / 'conf'}]",
        "trainer.max_epochs=4",
        f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'continued'}",
    )
    continued = json.loads((tmp_path / "continued" / "metrics.json").read_text())
    assert continued["status"] == "completed" and continued["epochs"] == 4
    lrs = losses(tmp_path / "continued", "train/lr")
    assert lrs == [0.5]  # the member's lr for its 4th epoch, the schedule restored (lr 0.5, no decay yet)
    assert continued["best_val_ppl"] <= metrics(job)["best_val_ppl"]  # the member's best score carried over


def test_interrupted_member_checkpoint_is_its_jobs_mid_epoch_checkpoint(setup, alone, tmp_path):
    """SIGTERM after window 2 of epoch 2: the member's last.ckpt (member a: dropout and momentum on) holds what its
    job run alone saves there, to the last bit (loops, the validation's counts after an epoch's one included, the
    window reached, the carried state, NLL sums, the masks' random state, the momentum buffers), so ckpt_path=
    continues it alone exactly as its job runs uninterrupted."""
    stacked, solo = setup.root / "sigterm_stacked", setup.root / "sigterm_alone"
    args = ["rnnreg-train", *setup.cli, "+member=a"]
    proc = run(
        args[0],
        "-m",
        *args[1:],
        "hydra/launcher=stacked",
        "hydra.launcher.stop_after_windows=8",  # (6 windows an epoch)
        f"hydra.sweep.dir={stacked}",
        check=False,
    )
    assert proc.returncode == 128 + signal.SIGTERM
    proc = run(
        *args,
        *signal_at(signal.SIGTERM, 2, epoch=1),
        f"hydra.run.dir={solo}",
        check=False,
    )
    assert proc.returncode == 128 + signal.SIGTERM
    ours, theirs = (
        load_checkpoint(stacked / "0/checkpoints/last.ckpt"),
        load_checkpoint(solo / "checkpoints/last.ckpt"),
    )
    assert ours["train_window"] == theirs["train_window"] == 2 and ours["epoch"] == 1
    for key in ("epoch", "global_step", "loops", "lr_schedulers", "train_bptt"):
        assert ours[key] == theirs[key], key
    assert_same_optimizer_state(ours, theirs)  # member a's momentum buffers mid-epoch
    for mine, single in zip(ours["train_carry"]["state"], theirs["train_carry"]["state"]):
        assert torch.equal(mine, single)
    for key in ("nll_sum", "tokens"):
        assert ours["train_carry"][key].double().item() == theirs["train_carry"][key].double().item(), key
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])
    assert all(torch.equal(ours["state_dict"][k], v) for k, v in theirs["state_dict"].items())
    # the words trained, and the stopped epoch's words and time so far (a resumed epoch's words/s goes on from them)
    mine, single = (speed_state(c) for c in (ours, theirs))
    assert mine.keys() == single.keys() and mine["epoch_seconds"] > 0
    assert mine["train_words"] == single["train_words"] and mine["epoch_words"] == single["epoch_words"] > 0
    continued = tmp_path / "continued"
    run(*args, f"ckpt_path={stacked / '0/checkpoints/last.ckpt'}", f"hydra.run.dir={continued}")
    uninterrupted = metrics(alone / "0")  # member a's job, run alone without a stop
    for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
        assert metrics(continued)[key] == uninterrupted[key], key


def test_early_stopping_member_tested_on_its_best_weights(stacked, alone):
    es = GOOD.index("es")
    history = losses(stacked / str(es), "val/ppl")
    assert len(history) == metrics(stacked / str(es))["epochs"] == metrics(alone / str(es))["epochs"]
    assert metrics(stacked / str(es))["best_val_ppl"] == min(history)
    assert losses(stacked / "0", "train/lr") == [1.0, 1.0, 1.0] and losses(stacked / "2", "train/lr") == [2.0, 1.0, 0.5]


def test_diverged_member_fails_alone(stacked, setup, tmp_path):
    failed = metrics(stacked / "4")
    assert failed["status"] == "failed" and failed["error"].startswith("training loss became")
    assert all(metrics(stacked / str(i))["status"] == "completed" for i in range(4))  # and are their runs alone
    single = tmp_path / "run"
    alone = run("rnnreg-train", *with_tensorboard(setup.cli), "+member=diverge", f"hydra.run.dir={single}", check=False)
    assert alone.returncode == 2, alone.stderr[-2000:]
    # its job run alone stops at the same window, counted alike, and says so in the same words
    assert alone.stderr.strip().splitlines()[-1] == f"error: {failed['error']}"
    # its TensorBoard folder is its failed run's: every value logged up to the divergence (flushed, not left in
    # the writer's queue when the group went on) and the hparams.yaml a run writes at its start
    member, its_run = tensorboard_scalars(stacked / "4"), tensorboard_scalars(single)
    assert member.keys() == its_run.keys() and "train/loss" in member
    assert member["train/loss"] == its_run["train/loss"]
    hparams = [
        (job / "tensorboard" / "hparams.yaml").read_text().replace(str(job), "") for job in (stacked / "4", single)
    ]
    assert hparams[0] == hparams[1] and yaml.safe_load(hparams[0])["optim"]["lr"] == 1000.0  # (but for its folder)


# -- outputs as separate runs ---------------------------------------------------------------------------------
def test_outputs_eval_and_report(stacked, setup, tmp_path):
    for i in range(4):
        job = stacked / str(i)
        for name in (
            ".hydra/config.yaml",
            ".hydra/hydra.yaml",
            ".hydra/overrides.yaml",
            "metrics.json",
            "csv/metrics.csv",
            "train.log",
            "config_tree.log",
            "checkpoints/best.ckpt",
            "checkpoints/last.ckpt",
        ):
            assert (job / name).is_file(), (job, name)
        assert f"+member={GOOD[i]}" in yaml.safe_load((job / ".hydra/overrides.yaml").read_text())
        assert yaml.safe_load((job / ".hydra/hydra.yaml").read_text())["hydra"]["job"]["num"] == i
        # where it ran, as a run alone says it: the CPU's model and thread count change a CPU run's digits
        first = (job / "train.log").read_text().splitlines()[0]
        where = re.escape(f"(stacked group 0, member {i} of 5) on cpu ({cpu_model()}, ") + r"\d+ threads?\)$"
        assert re.search(where, first), first
    job = stacked / "1"  # tested on its final weights (no early stopping)
    evaluated = evaluate_last(setup, job, tmp_path / "eval")
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert evaluated[key] == pytest.approx(metrics(job)[key], rel=1e-5), key
    run("rnnreg-report", f"path={stacked}")
    written = (stacked / "report.md").read_text()
    above, table = written.split("| run |", 1)  # (above it, on a line of its own, what every job was given)
    assert above == "" or re.fullmatch(r"every run: [^\n]+\n\n", above), above
    rows = table.split("\n\n")[0].splitlines()[2:]  # the table: up to the first blank line
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[2] for c in cells] == ["completed"] * 4 + ["failed"]
    assert f"Failed, and why:\n\n- 4: {metrics(stacked / '4')['error']}\n" in written
    assert cells[0][3] == f"{metrics(stacked / '0')['best_val_ppl']:.2f}"


# -- interrupt and exact resume -------------------------------------------------------------------------------
def test_interrupt_and_resume_is_exact(stacked, setup):
    sweep = setup.root / "interrupted"
    # two shapes and max_members=2: groups [0, 1], [2] (hidden 16), [3, 4], [5] (hidden 8); SIGTERM after
    # 8 windows: mid-way through the second epoch of group 0
    args = [
        "rnnreg-train",
        "-m",
        *setup.cli,
        "hydra/launcher=stacked",
        "hydra.launcher.max_members=2",
        "model.hidden_size=16,8",
        "+member=a,c,diverge",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run(*args, "hydra.launcher.stop_after_windows=8", check=False)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "6 jobs in 4 groups" in proc.stdout and "group 1: jobs [2], 1 member, 2 x 16 LSTM" in proc.stdout
    assert "group 2: jobs [3, 4], 2 members, 2 x 8 LSTM" in proc.stdout
    assert (sweep / ".stacked" / "group_0.pt").is_file()
    # the stopped epoch's training time so far, which its words/s goes on from
    before = stacked_resume.load_resume_file(sweep / ".stacked" / "group_0.pt")["epoch_seconds_before"]
    assert before > 0
    for i in range(2):
        stopped = metrics(sweep / str(i))
        assert stopped["status"] == "interrupted" and stopped["epochs"] == 1
        assert (sweep / str(i) / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "2" / "metrics.json").exists()  # the later groups had not started
    # going on with other jobs than the sweep's own: one line before anything is written, each job's record kept,
    # and the sweep's (multirun.yaml: the command that goes on, and the jobs the report expects)
    records = {p: p.read_bytes() for p in [*sweep.glob("*/.hydra/*.yaml"), sweep / "multirun.yaml"]}
    other = run(
        *[a if a != "+member=a,c,diverge" else "+member=a,c,b" for a in args], "hydra.launcher.resume=true", check=False
    )
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert other.stderr.startswith(
        f"error: hydra.launcher.resume=true goes on with the sweep in {sweep} as it was started, and its job 2 ran "
        "with +member=diverge where this command has +member=b: resume with the sweep's own command"
    ), other.stderr
    # its sweep overrides swapped (+member before model.hidden_size, whose place is its first override's, in
    # setup.cli): the same jobs, numbered otherwise (each folder would hold another job)
    swapped = [*args[:2], "+member=a,c,diverge", *[a for a in args[2:] if a != "+member=a,c,diverge"]]
    other = run(*swapped, "hydra.launcher.resume=true", check=False)
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert other.stderr.startswith(
        f"error: hydra.launcher.resume=true: this command numbers the jobs of the sweep in {sweep} otherwise (its "
        "job 1 ran with "
    ), other.stderr
    assert "give the sweep overrides in the order of the sweep's own command" in other.stderr
    assert {p: p.read_bytes() for p in [*sweep.glob("*/.hydra/*.yaml"), sweep / "multirun.yaml"]} == records
    # a job's record cut short (a folder copied from elsewhere): one line naming it, nothing changed
    recorded = sweep / "2" / ".hydra" / "overrides.yaml"
    recorded.write_text("- +member=diverge\n- model.hidden_size: [\n")
    cut = run(*args, "hydra.launcher.resume=true", check=False)
    assert cut.returncode == 2 and cut.stderr.count("\n") == 1, cut.stderr
    assert cut.stderr.startswith(f"error: {recorded} is not readable (while parsing a flow"), cut.stderr
    assert cut.stderr.endswith("): restore it, or move the job's folder away\n")
    recorded.write_bytes(records[recorded])
    assert {p: p.read_bytes() for p in [*sweep.glob("*/.hydra/*.yaml"), sweep / "multirun.yaml"]} == records
    # a plain file where a job's folder goes: one line, nothing changed
    (sweep / "5").rename(sweep / "5.moved")
    (sweep / "5").write_text("not a folder\n")
    in_the_way = run(*args, "hydra.launcher.resume=true", check=False)
    assert in_the_way.returncode == 2 and in_the_way.stderr.count("\n") == 1, in_the_way.stderr
    assert in_the_way.stderr.startswith(f"error: {sweep / '5'} is a file where job 5's folder goes: move it away")
    (sweep / "5").unlink()
    (sweep / "5.moved").rename(sweep / "5")
    assert {p: p.read_bytes() for p in [*sweep.glob("*/.hydra/*.yaml"), sweep / "multirun.yaml"]} == records
    # going on with another program: the command's own mistake, found as the group starts, is one line, exit 2,
    # and nothing in the sweep folder changes
    files = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and ".rnnreg.lock" not in p.name}
    other = run(*args, "hydra.launcher.resume=true", "hydra.launcher.program=batched", check=False)
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert other.stderr.startswith("error: group 0: jobs [0, 1], 2 members, ") and other.stderr.rstrip().endswith(
        "was written by the in_turn program and this run would go on with batched, not exactly: resume with "
        "hydra.launcher.program=in_turn (in_turn: on a CPU)"
    ), other.stderr
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and ".rnnreg.lock" not in p.name} == files
    # the sweep's own command, an override moved after its sweep overrides (the same jobs, in the same order),
    # and hydra.launcher.max_members forgotten: the interrupted group goes on as it ran, the others grouped anew
    reordered = [a for a in args if a not in ("trainer.log_every_n_steps=1", "hydra.launcher.max_members=2")]
    proc = run(*reordered, "trainer.log_every_n_steps=1", "hydra.launcher.resume=true", check=False)
    assert proc.returncode != 0 and "training loss became" in proc.stderr  # the diverging member, as before
    assert "6 jobs in 3 groups" in proc.stdout and "group 0: jobs [0, 1], 2 members, 2 x 16 LSTM" in proc.stdout
    assert "group 1: jobs [2], 1 member" in proc.stdout and "group 2: jobs [3, 4, 5], 3 members" in proc.stdout
    # group 0's estimate counts what is left of it, timed to the end of its resumed second epoch
    (estimate,) = [line for line in proc.stdout.splitlines() if line.startswith("group 0: ") and " per window " in line]
    assert "estimated time left " in estimate
    assert "for the 6 windows left of 3 epochs x 6 windows (from window 1 of epoch 3)" in estimate, estimate
    assert not (sweep / ".stacked" / "group_0.pt").exists()
    for i, name in enumerate(["a", "c", "diverge"]):
        mine, reference = metrics(sweep / str(i)), metrics(stacked / str(list(MEMBERS).index(name)))
        assert mine["status"] == reference["status"], i
        if mine["status"] != "completed":
            # alone in its group here (K=1 vs 5): the same window, its huge loss not to the last bit
            assert mine["error"].split(" at ")[1] == reference["error"].split(" at ")[1]
            continue
        for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
            assert mine[key] == reference[key], (i, key)
        reference_job = stacked / str(list(MEMBERS).index(name))
        assert losses(sweep / str(i)) == losses(reference_job)
        # the stopped epoch's training NLL sum goes on from the resume file: its train/ppl is the uninterrupted one's
        for key in ("train/ppl", "val/ppl", "train/grad_norm"):
            assert losses(sweep / str(i), key) == losses(reference_job, key), (i, key)
        # every epoch's words/s x its time is an epoch's words, the resumed epoch's too (its windows before the stop
        # counted with their time; the rest alone would be 4 of its 6 windows)
        timed = [
            r * s
            for r, s in zip(
                losses(sweep / str(i), "train/words_per_sec"), losses(sweep / str(i), "train/epoch_seconds")
            )
        ]
        whole = losses(reference_job, "train/words_per_sec")[0] * losses(reference_job, "train/epoch_seconds")[0]
        assert len(timed) == 3 and timed == pytest.approx([whole] * 3, rel=1e-6), i
        assert losses(sweep / str(i), "train/epoch_seconds")[1] > before, i
        ours, uninterrupted = weights(sweep / str(i)), weights(reference_job)
        assert all(torch.equal(ours[k], uninterrupted[k]) for k in ours), i
    assert metrics(sweep / "4")["status"] == "completed" and metrics(sweep / "5")["status"] == "failed"


@pytest.mark.parametrize(
    ("module", "signum", "when"),
    [
        ("rnnreg.stacked_train", signal.SIGTERM, "before it starts"),
        ("encodings.utf_8_sig", signal.SIGINT, "now, as it is built (nothing it trained is lost)"),
    ],
    ids=["SIGTERM-as-the-launcher-imports-training", "Ctrl-C-as-the-group-reads-its-corpus"],
)
def test_a_signal_before_a_group_trains_stops_the_sweep_and_resume_finishes_it(
    stacked, setup, tmp_path, module, signum, when
):
    """A real SIGTERM or Ctrl-C once the launcher has written the jobs' folders, before the first group trains: as
    the launcher imports the training code, or as the group reads its corpus (the process sends it to itself as it
    imports `module`). Before: SIGTERM killed the sweep and Ctrl-C ended it with a line of its own, with no
    metrics.json in the members' folders. Now as a group stopped in training: its member says interrupted, with a
    single run's words, the group's two lines, exit 128 + the signal, the later group does not start; rnnreg-report
    gives the command that goes on, and it ends each member where the sweep run without the signal ends, to the bit."""
    sweep = tmp_path / "sweep"
    args = [*setup.cli, "hydra/launcher=stacked", "hydra.launcher.max_members=1", "+member=a,c"]
    proc = run_signal_at_import(
        signum, module, tmp_path / "hook", "rnnreg-train", "-m", *args, f"hydra.sweep.dir={sweep}"
    )
    assert proc.returncode == 128 + signum and proc.stderr == "", proc.stderr[-3000:]
    assert "2 jobs in 2 groups" in proc.stdout
    assert f"\n{signal.Signals(signum).name}: stopping the stacked group {when}\n" in proc.stdout
    (go_on,) = [
        line.split("go on with: ", 1)[1]
        for line in proc.stdout.splitlines()
        if line.startswith(f"{STOPPED_BY[signum]}: the stacked group 0 stopped; go on with: ")
    ]
    assert go_on.endswith(f"hydra.launcher.resume=true hydra.sweep.dir={sweep}")
    stacked_record = {"group": 0, "members": 1, "member": 0, "program": "in_turn", "units": 16}
    assert metrics(sweep / "0") == {
        "status": "interrupted",
        "error": STOPPED_BY[signum],
        "epochs": 0,
        "resume": go_on,
        "stacked": stacked_record,
    }
    assert not (sweep / "0" / "checkpoints").exists() and not (sweep / ".stacked").exists()
    assert (sweep / "1" / ".hydra" / "overrides.yaml").is_file() and not (sweep / "1" / "metrics.json").exists()
    report = run("rnnreg-report", f"path={sweep}").stdout
    assert report.count("| interrupted |") == 1 and report.count("| unfinished |") == 1, report
    (line,) = [line for line in report.splitlines() if "the stacked sweep goes on with `" in line]
    assert line == f"- 0, 1: the stacked sweep goes on with `{go_on}` (from the start: no epoch had ended)"
    run(*shlex.split(go_on))  # the sweep's own command with hydra.launcher.resume=true
    for job, name in (("0", "a"), ("1", "c")):
        reference = stacked / str(list(MEMBERS).index(name))
        mine, uninterrupted = metrics(sweep / job), metrics(reference)
        assert mine["status"] == "completed"
        for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
            assert mine[key] == uninterrupted[key], (job, key)
        assert losses(sweep / job) == losses(reference)
        assert losses(sweep / job, "val/ppl") == losses(reference, "val/ppl")
        for checkpoint in ("last.ckpt", "best.ckpt"):
            ours, theirs = weights(sweep / job, checkpoint), weights(reference, checkpoint)
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), (job, checkpoint)


# SIGTERM, sent by the process to itself as the first stacked group's train_group returns (its members' files
# written, the next group not yet begun), after it copies that group's metrics.json into the hook's folder
SIGNAL_AFTER_THE_FIRST_GROUP = """
import importlib.abc, importlib.machinery, json, os, signal, sys
class SignalAfterTheFirstGroup(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "rnnreg.stacked_train":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        execute = spec.loader.exec_module
        def exec_module(module):
            execute(module)
            train_group = module.train_group
            def train_then_signal(jobs, group, *args, **kwargs):
                results = train_group(jobs, group, *args, **kwargs)
                if group == 0:
                    written = {{job.idx: (job.output_dir / "metrics.json").read_text() for job in jobs}}
                    with open({snapshot!r}, "w") as out:
                        json.dump(written, out)
                    os.kill(os.getpid(), signal.SIGTERM)
                return results
            module.train_group = train_then_signal
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, SignalAfterTheFirstGroup())
"""


def test_a_signal_between_two_groups_stops_the_next_and_resume_finishes_it(setup, tmp_path):
    """A real SIGTERM after the first group of a sweep has finished (its members' metrics.json completed) and
    before the second trains: the first stays completed, its folder untouched by the stop and by the resume; the
    second's members say interrupted with the command that goes on, exit 128 + 15; that command trains the second
    group alone and ends it where the sweep run without the signal ends, to the bit."""
    sizes = [arg for arg in setup.cli if arg != "model.hidden_size=16"] + ["model.hidden_size=16,24"]
    args = [*sizes, "hydra/launcher=stacked", "trainer.max_epochs=1"]  # two groups: one per hidden size
    reference = tmp_path / "uninterrupted"
    run("rnnreg-train", "-m", *args, f"hydra.sweep.dir={reference}")
    sweep, hook = tmp_path / "sweep", tmp_path / "hook"
    hooks = SIGNAL_AFTER_THE_FIRST_GROUP.format(snapshot=str(hook / "group_0.json"))
    proc = run_with_sitecustomize(hooks, hook, "rnnreg-train", "-m", *args, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 128 + signal.SIGTERM and proc.stderr == "", proc.stderr[-3000:]
    assert "2 jobs in 2 groups" in proc.stdout
    assert "\nSIGTERM: stopping the stacked group before it starts\n" in proc.stdout
    (go_on,) = [
        line.split("go on with: ", 1)[1]
        for line in proc.stdout.splitlines()
        if line.startswith(f"{STOPPED_BY[signal.SIGTERM]}: the stacked group 1 stopped; go on with: ")
    ]
    assert go_on.endswith(f"hydra.launcher.resume=true hydra.sweep.dir={sweep}")
    # the first group as it ended, before the signal: completed, its metrics.json not written again
    (written,) = json.loads((hook / "group_0.json").read_text()).values()
    assert (sweep / "0" / "metrics.json").read_text() == written and metrics(sweep / "0")["status"] == "completed"
    first_group = folder_contents(sweep / "0")
    stacked_record = {"group": 1, "members": 1, "member": 0, "program": "in_turn", "units": 24}
    assert metrics(sweep / "1") == {
        "status": "interrupted",
        "error": STOPPED_BY[signal.SIGTERM],
        "epochs": 0,
        "resume": go_on,
        "stacked": stacked_record,
    }
    assert not (sweep / "1" / "checkpoints").exists() and not list((sweep / ".stacked").iterdir())
    resumed = run(*shlex.split(go_on))
    assert "group 0: completed in an earlier run of this sweep" in resumed.stdout
    assert folder_contents(sweep / "0") == first_group
    for job in ("0", "1"):
        mine, uninterrupted = metrics(sweep / job), metrics(reference / job)
        assert mine["status"] == "completed"
        for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
            assert mine[key] == uninterrupted[key], (job, key)
        assert losses(sweep / job) == losses(reference / job)
        assert losses(sweep / job, "val/ppl") == losses(reference / job, "val/ppl")
        for checkpoint in ("last.ckpt", "best.ckpt"):
            ours, theirs = weights(sweep / job, checkpoint), weights(reference / job, checkpoint)
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), (job, checkpoint)


def test_killed_group_resumes_from_its_last_epoch_exactly(setup, tmp_path):
    """SIGKILL mid-epoch (the OOM killer, a lost node, a scheduler's hard kill): no handler runs and nothing is
    written then. The members' folders say so (`rnnreg-report`: unfinished, not failed); the group's resume
    file from its last epoch's end is intact, and the same command with hydra.launcher.resume=true ends every
    member where the sweep run without the kill ends, to the bit. While the sweep lives, its folder is its
    own: a resume started too soon stops with one line and writes nothing, and the report says running."""
    args = [*setup.cli, "hydra/launcher=stacked", "+member=a,b", "trainer.limit_train_batches=null"]
    args += ["trainer.max_epochs=2"]  # killed in the second, resumed from the first's end
    reference = tmp_path / "uninterrupted"
    run("rnnreg-train", "-m", *args, f"hydra.sweep.dir={reference}")
    sweep = tmp_path / "killed"
    command = [str(BIN / "rnnreg-train"), "-m", *args, f"hydra.sweep.dir={sweep}"]
    proc = warm_start.popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resume_file, log = sweep / ".stacked" / "group_0.pt", sweep / "1" / "train.log"
    deadline = time.monotonic() + 300
    while not (resume_file.is_file() and log.is_file() and "epoch 1:" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the group ended before its first epoch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGSTOP)  # alive, holding its sweep folder, while we look
    multirun_yaml = (sweep / "multirun.yaml").read_bytes()
    too_soon = run("rnnreg-train", *command[1:], "hydra.launcher.resume=true", check=False)
    assert too_soon.returncode == 2 and too_soon.stderr.count("\n") == 1, too_soon.stderr
    assert too_soon.stderr.startswith(f"error: {sweep} is in use by another live rnnreg run (pid {proc.pid}@")
    assert "(hydra.sweep.dir=...)" in too_soon.stderr
    assert (sweep / "multirun.yaml").read_bytes() == multirun_yaml
    assert run("rnnreg-report", f"path={sweep}").stdout.count("| running |") == 2
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read()[-2000:]
    for job in ("0", "1"):
        assert not (sweep / job / "metrics.json").exists()
        assert "epoch 2:" not in (sweep / job / "train.log").read_text()  # killed before the end
    report = run("rnnreg-report", f"path={sweep}").stdout
    assert report.count("| unfinished |") == 2 and "failed" not in report
    # how to go on: the report's command, pasted (before: "the stacked sweep's command with ...")
    (line,) = [line for line in report.splitlines() if "the stacked sweep goes on with `" in line]
    pasted = shlex.split(line.split("`")[1])
    assert pasted[:2] == ["rnnreg-train", "-m"] and pasted[-1] == f"hydra.sweep.dir={sweep}"
    assert set(pasted) == {"rnnreg-train", "-m", *args, "hydra.launcher.resume=true", f"hydra.sweep.dir={sweep}"}
    run(*pasted)
    assert not resume_file.exists()
    for job in ("0", "1"):
        mine, uninterrupted = metrics(sweep / job), metrics(reference / job)
        assert mine["status"] == "completed"
        # where the resumed part ran: another machine's CPU would give other digits
        text = (sweep / job / "train.log").read_text()
        resumed = re.search(
            r"resuming the stacked group 0 at epoch \d+, window \d+, on cpu \((.+), \d+ threads?\)\n", text
        )
        assert resumed and resumed.group(1) == cpu_model()
        for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
            assert mine[key] == uninterrupted[key], (job, key)
        assert losses(sweep / job) == losses(reference / job)
        assert losses(sweep / job, "val/ppl") == losses(reference / job, "val/ppl")  # each epoch once
        for name in ("last.ckpt", "best.ckpt"):
            ours, theirs = weights(sweep / job, name), weights(reference / job, name)
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), (job, name)


# -- W&B and TensorBoard: one run per job, as the basic launcher's -------------------------------------------
def test_wandb_one_run_per_member(setup, no_wandb_credentials):
    """logger=many: each member's W&B run, and its TensorBoard events as its job run alone writes them."""
    sweep = setup.root / "wandb"
    proc = run(
        "rnnreg-train",
        "-m",
        *setup.cli,
        "hydra/launcher=stacked",
        "hydra.launcher.resume=true",  # on a folder with nothing yet: the sweep starts (an sbatch script's way)
        "logger=many",
        "logger.wandb.log_model=true",
        "trainer.max_epochs=2",
        "tags=[stacked]",
        "dropout=none,non_recurrent,recurrent",
        "dropout.p=0.3",
        f"hydra.sweep.dir={sweep}",
    )
    # the jobs' W&B runs differ (name, job type: the placement), their training does not: one program
    assert "3 jobs in 1 group\n" in proc.stdout
    runs = wandb_runs(sweep)  # exactly one offline run in each job's folder
    placements = ["none", "non_recurrent", "recurrent"]
    assert {r["group"] for r in runs.values()} == {f"paper_small/{named_sweep_group(sweep)}"}  # one per sweep
    assert [runs[job]["job_type"] for job in "012"] == placements
    assert [runs[job]["name"] for job in "012"] == [f"dropout={p}" for p in placements]
    for job, placement in zip("012", placements):
        wandb_run, result = runs[job], metrics(sweep / job)
        assert wandb_run["exit_code"] == 0 and wandb_run["summary"]["status"] == "completed"
        assert wandb_run["config"]["choices"]["dropout"] == placement and wandb_run["config"]["tags"] == ["stacked"]
        dropout = wandb_run["config"]["dropout"]  # the job's own resolved config
        expected = {"none": (0.0, 0.0), "non_recurrent": (0.3, 0.0), "recurrent": (0.0, 0.3)}[placement]
        assert (dropout["output"], dropout["recurrent"]) == expected
        assert wandb_run["summary"]["test_ppl"] == result["test_ppl"]
        val = [row["val/ppl"] for row in wandb_run["history"] if "val/ppl" in row]
        assert val == losses(sweep / job, "val/ppl") and len(val) == 2  # the member's own, as in its csv
        assert [row["train/lr"] for row in wandb_run["history"] if "train/lr" in row] == [1.0, 1.0]
        # offline, log_model keeps the member's checkpoints: one version when last is best, else two
        artifacts = wandb_run["artifacts"]
        assert {a["type"] for a in artifacts} == {"model"} and len({a["name"] for a in artifacts}) == 1
        aliases = [alias for a in artifacts for alias in a["aliases"]]
        assert "best" in aliases and "last" in aliases
        same = (sweep / job / "checkpoints/best.ckpt").samefile(sweep / job / "checkpoints/last.ckpt")
        assert len(artifacts) == (1 if same else 2)
        scalars = tensorboard_scalars(sweep / job)
        assert [value for _, value in scalars["val/ppl"]] == pytest.approx(val)  # (TensorBoard keeps float32)
        assert [value for _, value in scalars["train/loss"]] == pytest.approx(losses(sweep / job))
    assert len({runs[job]["summary"]["test_ppl"] for job in "012"}) == 3


def test_ctrl_c_stops_the_group_and_resume_finishes_it(setup, tmp_path, no_wandb_credentials):
    """A real Ctrl-C (SIGINT from outside) during the second epoch: every member saved and `interrupted`,
    exit 130; the same command with hydra.launcher.resume=true finishes every member, each logging on into
    its job's W&B run under its group and name, the sweep's folder moved elsewhere first (its path names the
    group: before, the resumed parts went into another group)."""
    sweep = tmp_path / "ctrl_c"
    args = [
        str(BIN / "rnnreg-train"),
        "-m",
        *setup.cli,
        "hydra/launcher=stacked",
        "+member=a,b",
        "logger=wandb",
        "trainer.limit_train_batches=null",
        "trainer.max_epochs=3",  # stopped in the second: one more after it
        f"hydra.sweep.dir={sweep}",
    ]
    proc = warm_start.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = sweep / "0" / "train.log"
    deadline = time.monotonic() + 300
    while not (log.is_file() and "epoch 1:" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the group ended before its first epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "SIGINT: stopping the stacked group after this window" in out
    # one line says how to go on: the sweep's own command with hydra.launcher.resume=true, in its folder
    (go_on,) = [line.split("go on with: ", 1)[1] for line in out.splitlines() if "go on with: " in line]
    assert go_on.endswith(f"hydra.launcher.resume=true hydra.sweep.dir={sweep}")
    for job in ("0", "1"):
        stopped = metrics(sweep / job)
        # a single run's words (before: "SIGINT")
        assert stopped["status"] == "interrupted" and stopped["error"] == "Ctrl-C (stopped by the user)"
        assert stopped["epochs"] < 3 and stopped["resume"] == go_on
        assert load_checkpoint(sweep / job / "checkpoints" / "last.ckpt")["stacked"]["member"] == int(job)
    # the sweep's folder moved (a cluster's scratch copied home): the command printed, in its new folder, goes on
    moved = tmp_path / "elsewhere" / sweep.name
    moved.parent.mkdir()
    sweep.rename(moved)
    first, sweep, go_on = sweep, moved, go_on.replace(str(sweep), str(moved))
    resumed = run(*shlex.split(go_on))
    ids = set()
    for job in ("0", "1"):
        done = metrics(sweep / job)
        assert done["status"] == "completed" and done["epochs"] == 3
        assert len(losses(sweep / job, "val/ppl")) == 3  # every epoch once, across the interruption
        # one W&B run per job: the resumed group went on in it (offline: a second part with the run's id)
        stopped_part, done_part = wandb_run_parts(sweep / job)
        assert (
            stopped_part["id"] == done_part["id"]
            and stopped_part["name"] == done_part["name"] == f"+member={'ab'[int(job)]}"
            and stopped_part["group"] == done_part["group"]
            and stopped_part["group"].endswith(f"/{named_sweep_group(first)}")
        )
        assert (stopped_part["exit_code"], stopped_part["summary"]["status"]) == (1, "interrupted")
        assert (done_part["exit_code"], done_part["summary"]["status"]) == (0, "completed")
        val = [row["val/ppl"] for part in (stopped_part, done_part) for row in part["history"] if "val/ppl" in row]
        assert val == losses(sweep / job, "val/ppl")
        checkpoint = load_checkpoint(sweep / job / "checkpoints" / "last.ckpt")
        assert checkpoint["wandb_run_id"] == done_part["id"]
        # the command printed uploads both parts into the one run, in the order they ran
        folders = sorted(str(path) for path in (sweep / job / "wandb").glob("offline-run-*"))
        assert checkpoint["wandb_parts"] == folders and len(folders) == 2
        assert f"wandb sync {folders[0]} {folders[1]}\n" in resumed.stdout
        ids.add(done_part["id"])
    assert len(ids) == 2  # each job its own run


# -- the GPU's program on this CPU (hydra.launcher.program=batched) ----------------------------------------
# What a GPU runs (rnnreg.stacked_step.StackedStep: batched GEMMs, every member on the stacked step loop,
# clip_and_sgd_ over the members, the members' state read at log intervals, a sync on CUDA), driven by the same
# launcher and group loop. Log every 5 windows: the member that diverges (window 3) is read two windows late.
BATCHED_LOG_EVERY = 5
# the batched sweeps' members, in their folders' order: the reference group, and wd, whose masks (every layer's on
# W_hh, then the dropout between the layers) come in its job's order only if the stacked model draws them so
BATCHED = [*GOOD, "diverge", "wd"]


def batched_member(sweep: Path, name: str) -> Path:
    return sweep / str(BATCHED.index(name))


def job_alone(alone: Path, name: str) -> Path:
    return alone / str(ALONE.index(name))


def batched_args(setup, sweep: Path) -> list[str]:
    cli = [arg for arg in setup.cli if not arg.startswith("trainer.log_every_n_steps=")]
    return [
        "rnnreg-train",
        "-m",
        *cli,
        f"trainer.log_every_n_steps={BATCHED_LOG_EVERY}",
        "hydra/launcher=stacked",
        "hydra.launcher.program=batched",
        f"+member={','.join(BATCHED)}",
        f"hydra.sweep.dir={sweep}",
    ]


@pytest.fixture(scope="module")
def batched(setup) -> Path:
    sweep = setup.root / "batched"
    proc = run(*batched_args(setup, sweep), check=False)
    assert proc.returncode != 0 and "training loss became" in proc.stderr
    assert "runs the GPU's stacked program on a CPU" in proc.stdout
    return sweep


def logged_losses(job: Path) -> dict[int, float]:
    with open(job / "csv" / "metrics.csv") as f:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")}


@pytest.mark.parametrize("name", ALONE)
def test_batched_program_member_equals_its_job_to_float32_rounding(batched, alone, name):
    """The batched program computes each member's job (its masks too: on a CPU they come from its job's
    stream, drawn in its single model's order; wd: every layer's W_hh mask before the dropout between the layers)
    with other float32 rounding: batched GEMMs, the step loop where the job ran oneDNN's fused LSTM."""
    assert_member_is_its_job_to_float32_rounding(batched_member(batched, name), job_alone(alone, name))


def assert_member_is_its_job_to_float32_rounding(member: Path, job: Path) -> None:
    """A batched member's perplexities, logged losses (every BATCHED_LOG_EVERY windows) and checkpoints equal its
    job's to float32 rounding."""
    mine, theirs = metrics(member), metrics(job)
    assert mine["status"] == theirs["status"] == "completed"
    assert mine["epochs"] == theirs["epochs"]
    for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
    ours, single = logged_losses(member), logged_losses(job)
    assert list(ours) == [s for s in single if (s + 1) % BATCHED_LOG_EVERY == 0]
    assert list(ours.values()) == pytest.approx([single[s] for s in ours], rel=1e-5)
    assert losses(member, "train/grad_norm") == pytest.approx(losses(job, "train/grad_norm"), rel=1e-4)
    for name in ("last.ckpt", "best.ckpt"):
        ours, single = weights(member, name), weights(job, name)
        for key in single:
            torch.testing.assert_close(ours[key], single[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def batched_padded(setup) -> Path:
    """The GPU's program holding the members' 16 hidden units as 24 (hydra.launcher.pad_hidden_to=12; on a GPU
    auto pads to a multiple of 8)."""
    sweep = setup.root / "batched_padded"
    proc = run(*batched_args(setup, sweep), "hydra.launcher.pad_hidden_to=12", check=False)
    assert proc.returncode != 0 and "training loss became" in proc.stderr
    assert "group 0: jobs [0, 1, 2, 3, 4, 5], 6 members, 2 x 16 (held as 24) LSTM" in proc.stdout
    return sweep


@pytest.mark.parametrize("name", ALONE)
def test_batched_program_padded_member_equals_its_job(batched_padded, batched, alone, name):
    """Padded, every member computes its job to float32 rounding as unpadded, and writes its job's files: its
    checkpoints hold its own (unpadded) weights."""
    member = batched_member(batched_padded, name)
    assert_member_is_its_job_to_float32_rounding(member, job_alone(alone, name))
    assert metrics(member)["stacked"] | {"member": 0} == {
        "group": 0,
        "members": len(BATCHED),
        "member": 0,
        "program": "batched",
        "units": 24,
    }
    assert metrics(member)["test_ppl"] == pytest.approx(metrics(batched_member(batched, name))["test_ppl"], rel=1e-5)


@pytest.fixture(scope="module")
def batched_triton(setup) -> Path:
    """The GPU's program with speed.triton_cell=true: the stacked step loop's cell as Triton kernels (in
    Triton's interpreter on this CPU: conftest)."""
    sweep = setup.root / "batched_triton"
    proc = run(*batched_args(setup, sweep), "speed.triton_cell=true", check=False)
    assert proc.returncode != 0 and "training loss became" in proc.stderr
    return sweep


@needs_triton
@pytest.mark.parametrize("name", ALONE)
def test_batched_program_on_the_triton_cell_member_equals_its_job(batched_triton, batched, alone, name):
    """Every member on the Triton cell computes its job to float32 rounding, as on the torch ops, and differs
    from the torch ops' batched run in the last bits (the Triton cell ran)."""
    assert_member_is_its_job_to_float32_rounding(batched_member(batched_triton, name), job_alone(alone, name))
    ours, torch_ops = weights(batched_member(batched_triton, name)), weights(batched_member(batched, name))
    assert any(not torch.equal(ours[key], torch_ops[key]) for key in ours)


def test_bf16_member_checkpoint_evaluates_to_its_perplexities(stacked_bf16, setup, tmp_path):
    """A bf16 member's checkpoint is an ordinary one: rnnreg-eval under the precision it trained in gives its
    metrics.json perplexities (and float32 evaluation another, nearby figure)."""
    job = stacked_bf16 / "1"  # tested on its final weights (no early stopping)
    evaluated = evaluate_last(setup, job, tmp_path / "eval", BF16)
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert evaluated[key] == pytest.approx(metrics(job)[key], rel=1e-6), key
    in_float32 = evaluate_last(setup, job, tmp_path / "eval32")["test_ppl"]
    assert in_float32 != evaluated["test_ppl"] and in_float32 == pytest.approx(evaluated["test_ppl"], rel=1e-2)


@pytest.fixture(scope="module")
def batched_bf16(setup) -> Path:
    """The GPU's program under bf16 autocast, with the members whose jobs run the step loop (b, c)."""
    sweep = setup.root / "batched_bf16"
    args = [arg for arg in batched_args(setup, sweep) if not arg.startswith("+member=")]
    run(*args, *BF16_JOBS, "+member=b,c")
    return sweep


@pytest.mark.parametrize("index", [0, 1])
def test_batched_program_under_bf16_autocast_member_equals_its_job(batched_bf16, alone_bf16, index):
    """Under bf16 autocast the batched program computes what a step-loop job computes there (bf16 GEMMs, the
    LSTM's hand-written layer with a float32 cell), to float32 rounding. (A member whose job runs oneDNN's fused
    LSTM differs from it by bf16's rounding: the two LSTMs round at other places.)"""
    assert_member_is_its_job_to_float32_rounding(batched_bf16 / str(index), alone_bf16 / str(GOOD.index("bc"[index])))


def test_batched_program_diverged_member_fails_at_its_window(batched, stacked):
    """Read two windows late, the member's failure still names the window where its loss went bad, the one its
    job run alone stops at; it keeps its last finite weights (no checkpoint: no epoch completed)."""
    failed, reference = metrics(batched_member(batched, "diverge")), metrics(stacked / "4")
    assert failed["status"] == "failed" and failed["error"].startswith("training loss became")
    assert failed["error"].split(" at ")[1] == reference["error"].split(" at ")[1]
    assert "at epoch 1, step 4 (global step 4)" in failed["error"]  # as a run alone counts it; read at step 5
    assert not (batched_member(batched, "diverge") / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_batched_program_interrupt_and_resume_is_exact(request, setup, padded):
    """SIGTERM in the first epoch's last window (the epoch's own files are the resume point); the same command with
    hydra.launcher.resume=true, stopped again mid-way through the second epoch (the resume point: the window
    reached); then once more: every member's perplexities, logged losses and weights equal the uninterrupted
    batched run's to the last bit, with the hidden units padded too (the resume file unpadded, padded again; the last
    resume with hydra.launcher.pad_hidden_to left at auto, which goes on at the file's padding). Resuming with the
    other program is refused (test_resume_file_from_another_program_or_device_is_one_line)."""
    batched = request.getfixturevalue("batched_padded" if padded else "batched")
    sweep = setup.root / f"batched_interrupted_{'padded' if padded else 'unpadded'}"
    args = batched_args(setup, sweep) + (["hydra.launcher.pad_hidden_to=12"] if padded else [])
    for stop, resume in ((6, "false"), (8, "true")):  # (6 windows an epoch)
        proc = run(*args, f"hydra.launcher.resume={resume}", f"hydra.launcher.stop_after_windows={stop}", check=False)
        assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
        checkpoint = load_checkpoint(sweep / "0" / "checkpoints" / "last.ckpt")
        assert (checkpoint["global_step"], checkpoint["train_window"]) == ((6, 0) if stop == 6 else (8, 2))
    auto = [arg for arg in args if not arg.startswith("hydra.launcher.pad_hidden_to=")]
    proc = run(*auto, "hydra.launcher.resume=true", check=False)
    assert proc.returncode != 0 and "training loss became" in proc.stderr
    assert ("(held as 24)" in proc.stdout) == padded
    for i in range(len(BATCHED)):
        mine, reference = metrics(sweep / str(i)), metrics(batched / str(i))
        assert mine["status"] == reference["status"], i
        if mine["status"] == "failed":
            assert mine["error"] == reference["error"]
            continue
        for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
            assert mine[key] == reference[key], (i, key)
        assert logged_losses(sweep / str(i)) == logged_losses(batched / str(i))
        ours, uninterrupted = weights(sweep / str(i)), weights(batched / str(i))
        assert all(torch.equal(ours[k], uninterrupted[k]) for k in ours), i


def test_unknown_program_is_one_line_error(setup, tmp_path):
    proc = run(
        "rnnreg-train",
        "-m",
        *setup.cli,
        "hydra/launcher=stacked",
        "hydra.launcher.program=fast",
        "+member=b",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hydra.launcher.program=fast must be one of auto, batched, in_turn" in errors[0]
    assert not (tmp_path / "sweep" / "0" / "metrics.json").exists()
    model = StackedLanguageModel(10, 4, 1, [MemberSpec(seed=1, init_scale=0.1)])
    with pytest.raises(ConfigError, match="in_turn runs on a CPU only, this group is on meta: use auto or batched"):
        group_step(model, (3, 2), [5.0], None, torch.device("meta"), program="in_turn")


def test_a_stacked_group_warns_of_words_read_as_unk(tmp_path):
    """A stacked group builds no Lightning run (rnnreg.training warns there): valid or test words outside the
    training vocabulary, read as <unk>, are warned of on the console and in each member's train.log as well."""
    corpus = write_corpus(tmp_path / "corpus", lines=(400, 20, 8))
    with open(corpus / "valid.txt", "a") as f:
        f.write("unseen words here\n")
    sweep = tmp_path / "sweep"
    args = ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", "trainer.max_epochs=1", "test=false"]
    proc = run(
        "rnnreg-train",
        "-m",
        "hydra/launcher=stacked",
        *args,
        "trainer.limit_train_batches=2",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    )
    note = f"{corpus / 'valid.txt'}: 3 of its "
    assert f"warning: group 0: {note}" in proc.stderr, proc.stderr[-3000:]
    for job in ("0", "1"):
        assert f"[rnnreg][WARNING] - {note}" in (sweep / job / "train.log").read_text()


def test_a_resumed_stacked_group_warns_of_words_read_as_unk_again(tmp_path, capsys):
    """A run warns of valid or test words read as <unk> at every start, a resumed one's too; so does a stacked group
    (before: only as it started fresh, a resumed group's console and train.log said nothing of them)."""
    corpus = write_corpus(tmp_path / "corpus", lines=(400, 20, 8))
    with open(corpus / "valid.txt", "a") as f:
        f.write("unseen words here\n")
    jobs = group_jobs_here(tmp_path, corpus, "trainer.max_epochs=1", "test=false")
    resume_file = tmp_path / ".stacked" / "group_0.pt"
    stopped = stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched")
    stopped.epoch, stopped.global_step = 1, 6  # at its last epoch's end: the resumed group trains no window
    written_resume(stopped)
    capsys.readouterr()
    stacked_train.GroupTrainer(jobs, 0, resume_file, program="batched").run(resume=True)
    note = f"{corpus / 'valid.txt'}: 3 of its "
    assert f"warning: group 0: {note}" in capsys.readouterr().err
    for job in jobs:
        assert f"[rnnreg][WARNING] - {note}" in (job.output_dir / "train.log").read_text()
