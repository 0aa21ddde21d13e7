"""Tracking and sweeps as users run them: real processes, offline W&B runs, multirun, Optuna, joblib, report."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml
from omegaconf import OmegaConf

import warm_start
from helpers import (
    BIN,
    TINY,
    compose_config,
    ctrl_c_group,
    named_sweep_group,
    run,
    signal_at,
    wandb_run_parts,
    wandb_runs,
)
from rnnreg.io import load_checkpoint
from rnnreg.preemption import requeued_checkpoint
from rnnreg.report_figures import plot_groups
from rnnreg.report_runs import by_epoch, collect, history
from rnnreg.run_record import STOPPED_BY
from rnnreg.training import train


@pytest.fixture
def tiny_cli(tiny_corpus: Path) -> list[str]:
    return [
        "experiment=paper_small",
        *TINY,
        f"data.data_dir={tiny_corpus}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=20",
    ]


def test_wandb_offline_multirun_with_joblib_answers_recurrent_vs_non_recurrent(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """Three placements through the joblib launcher (two jobs at once, each in a process of its own), each job
    one offline W&B run with its resolved config, every epoch's metrics and its summary. One group per sweep,
    the placement as job type, Hydra's choices and tags in the config, names from the swept overrides only;
    offline, log_model keeps the checkpoints as the run's model artifact."""
    sweep = tmp_path / "placements"
    proc = run(
        "rnnreg-train",
        "-m",
        *tiny_cli,
        "logger=wandb",
        "logger.wandb.log_model=true",
        "tags=[ablation,tiny]",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "dropout=none,non_recurrent,recurrent",
        "dropout.p=0.3",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.stdout.count("wandb sync") == 3
    runs = wandb_runs(sweep)  # exactly one offline run in each job's folder
    assert len(runs) == 3 and {r["group"] for r in runs.values()} == {f"paper_small/{named_sweep_group(sweep)}"}
    placements = ["none", "non_recurrent", "recurrent"]
    assert [runs[job]["job_type"] for job in "012"] == placements
    assert [runs[job]["name"] for job in "012"] == [f"dropout={p}" for p in placements]
    for job, placement in zip("012", placements):
        wandb_run = runs[job]
        assert wandb_run["exit_code"] == 0 and wandb_run["summary"]["status"] == "completed"
        assert wandb_run["config"]["model"]["hidden_size"] == 16  # the resolved Hydra config is the run config
        assert wandb_run["config"]["vocab_size"] > 0 and wandb_run["config"]["optim"]["clip"] == 5.0  # the task's
        assert wandb_run["tags"] == ["ablation", "tiny"] and wandb_run["config"]["tags"] == ["ablation", "tiny"]
        choices = wandb_run["config"]["choices"]
        assert choices["dropout"] == placement and choices["model"] == "small" and choices["data"] == "text"
        assert choices["experiment"] == "paper_small" and choices["regularizer"] == "none"
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert wandb_run["summary"]["test_ppl"] == pytest.approx(metrics["test_ppl"])
        history = wandb_run["history"]
        val = [row["val/ppl"] for row in history if "val/ppl" in row]
        assert len(val) == 2 and val[-1] == pytest.approx(metrics["val_ppl"])
        assert any("train/words_per_sec" in row for row in history) and any("train/lr" in row for row in history)
        # the checkpoints, stored in place: one version when the last model is the best (W&B adds latest), else two
        checkpoints = sweep / job / "checkpoints"
        artifacts = wandb_run["artifacts"]
        assert {a["type"] for a in artifacts} == {"model"} and len({a["name"] for a in artifacts}) == 1
        aliases = [alias for a in artifacts for alias in a["aliases"]]
        assert aliases.count("best") == aliases.count("last") == 1 and "latest" in aliases
        assert len(artifacts) == (1 if (checkpoints / "best.ckpt").samefile(checkpoints / "last.ckpt") else 2)
        for artifact in artifacts:
            ((path, size),) = artifact["files"]
            assert Path(path).parent == checkpoints and size == Path(path).stat().st_size
        # the CSV logger gets the tags and choices too
        hparams = yaml.safe_load((sweep / job / "csv" / "hparams.yaml").read_text())
        assert hparams["tags"] == ["ablation", "tiny"] and hparams["choices"]["dropout"] == placement
    # the placements differ: dropout.p=0.3 reaches where each one puts dropout
    assert len({runs[job]["summary"]["test_ppl"] for job in "012"}) == 3


def test_wandb_id_names_a_fresh_run_and_a_resume_keeps_its_own(tiny_cli, tmp_path, no_wandb_credentials):
    """+logger.wandb.id: a fresh run's W&B id; a resume goes on in its checkpoint's run, and another id given with it
    is refused in one line, before anything is written."""
    first, second = tmp_path / "first", tmp_path / "second"
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    run("rnnreg-train", *tiny, "+logger.wandb.id=myrun123", f"hydra.run.dir={first}")
    (part1,) = wandb_run_parts(first)
    assert part1["id"] == "myrun123"
    resume = f"ckpt_path={first}/checkpoints/last.ckpt"
    proc = run(
        "rnnreg-train",
        *tiny,
        "trainer.max_epochs=2",
        "+logger.wandb.id=other",
        resume,
        f"hydra.run.dir={second}",
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: logger.wandb.id=other, but {first}/checkpoints/last.ckpt goes on in W&B run myrun123: leave "
        "logger.wandb.id out to resume that run, or start a fresh run (no ckpt_path) with id other"
    ]
    assert not (second / "wandb").exists() and not (second / "checkpoints").exists()
    # a version too (Lightning's WandbLogger takes it before the id: the resume would log into a run of its own)
    third, fourth = tmp_path / "third", tmp_path / "fourth"
    version = "+logger.wandb.version=other"
    proc = run("rnnreg-train", *tiny, "trainer.max_epochs=2", version, resume, f"hydra.run.dir={third}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: logger.wandb.version=other, but {first}/checkpoints/last.ckpt goes on in W&B run myrun123: leave "
        "logger.wandb.version out to resume that run, or start a fresh run (no ckpt_path) with id other"
    ]
    assert not (third / "wandb").exists() and not (third / "checkpoints").exists()
    # an empty id is none, as for a fresh run: the resume goes on in its checkpoint's run
    run("rnnreg-train", *tiny, "trainer.max_epochs=2", "+logger.wandb.id=''", resume, f"hydra.run.dir={fourth}")
    assert [part["id"] for part in wandb_run_parts(fourth)] == ["myrun123"]


def test_wandb_mode_disabled_writes_no_wandb_run(tiny_cli, tmp_path, no_wandb_credentials):
    """WANDB_MODE=disabled turns W&B off for logger=wandb: no W&B files, no `wandb sync` line; the run as usual."""
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    proc = run("rnnreg-train", *tiny, f"hydra.run.dir={tmp_path}", env={"WANDB_MODE": "disabled"})
    assert "wandb sync" not in proc.stdout + proc.stderr and not (tmp_path / "wandb").exists()
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "csv" / "metrics.csv").is_file()
    assert "wandb_run_id" not in torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    # a multirun's one id shares no run when W&B is off: not refused
    sweep = ["-m", "+logger.wandb.id=myid", "seed=1,2", f"hydra.sweep.dir={tmp_path}/sweep"]
    run("rnnreg-train", *sweep, *tiny, env={"WANDB_MODE": "disabled"})
    assert not list((tmp_path / "sweep").rglob("wandb")) and len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2


def test_wandb_is_online_only_with_credentials_for_its_host(tmp_path, monkeypatch, no_wandb_credentials):
    """logger.wandb.offline=null: online where ~/.netrc (NETRC) holds a login for W&B's host (WANDB_BASE_URL's, else
    api.wandb.ai), offline with logins for other hosts only, and offline again for a W&B server of its own."""
    from rnnreg.loggers import wandb_logger

    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))

    def offline(*machines: str) -> bool:
        netrc.write_text("".join(f"machine {host} login user password {'k' * 40}\n" for host in machines))
        netrc.chmod(0o600)
        return wandb_logger(project="p", save_dir=str(tmp_path / "wandb"))._offline

    assert offline("github.com") and not offline("github.com", "api.wandb.ai")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert offline("api.wandb.ai") and not offline("wandb.example.org")


def test_wandb_disabled_true_in_any_case_writes_no_wandb_run(tiny_cli, tmp_path, no_wandb_credentials):
    """WANDB_DISABLED=True (as `true`, in any case) turns W&B off for logger=wandb too: no W&B files, no
    `wandb sync` line."""
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    proc = run("rnnreg-train", *tiny, f"hydra.run.dir={tmp_path}", env={"WANDB_DISABLED": "True"})
    assert "wandb sync" not in proc.stdout + proc.stderr and not (tmp_path / "wandb").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


SHARED_ID_FIX = "leave logger.wandb.id out (each job then gets a run of its own), or make it differ per job"


@pytest.mark.parametrize(
    "overrides,env,line",
    [
        (
            ["-m", "+logger.wandb.id=myid", "seed=1,2"],
            {},
            "logger.wandb.id=myid puts jobs 0 (seed=1) and 1 (seed=2) in one W&B run (myid), each logging over "
            f"another's history: {SHARED_ID_FIX} ('+logger.wandb.id=myid_${{seed}}')",
        ),
        (
            ["-m", "hydra/launcher=stacked", "+logger.wandb.id=myid", "seed=1,2"],
            {},
            "logger.wandb.id=myid puts jobs 0 (seed=1) and 1 (seed=2) in one W&B run (myid), each logging over "
            f"another's history: {SHARED_ID_FIX} ('+logger.wandb.id=myid_${{seed}}')",
        ),
        (
            ["-m", "seed=1,2"],
            {"WANDB_RUN_ID": "envid"},
            "WANDB_RUN_ID=envid puts jobs 0 (seed=1) and 1 (seed=2) in one W&B run, each logging over another's "
            "history: unset WANDB_RUN_ID (each job then gets a run of its own), or give each job its own id "
            "('+logger.wandb.id=envid_${seed}')",
        ),
        (
            ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=2", "+logger.wandb.id=myid"],
            {},
            "logger.wandb.id=myid puts every job of the multirun in one W&B run (myid), each logging over another's "
            f"history: {SHARED_ID_FIX} ('+logger.wandb.id=myid_${{dropout.p}}_${{optim.decay}}_${{model.init_scale}}')",
        ),
        (
            ["-m", "+logger.wandb.id=run_${nope}", "seed=1,2"],
            {},
            "logger.wandb.id=run_${nope} cannot be resolved (Interpolation key 'nope' not found) (sweep job seed=1)",
        ),
        (  # a list group's options have no choice to read: the job's number tells them apart
            ["-m", "+logger.wandb.id=x", "regularizer=[],[weight_decay]", "seed=1,2"],
            {},
            "logger.wandb.id=x puts jobs 0 (regularizer=[] seed=1) and 1 (regularizer=[] seed=2) in one W&B run (x), "
            f"each logging over another's history: {SHARED_ID_FIX} ('+logger.wandb.id=x_${{seed}}_${{hydra:job.num}}')",
        ),
        (  # an id interpolated from a key the study does not search: one run all the same
            [
                "hparams_search=optuna",
                "dropout=non_recurrent",
                "hydra.sweeper.n_trials=2",
                "+logger.wandb.id=r${optim.momentum}",
            ],
            {},
            "logger.wandb.id=r${optim.momentum} puts every job of the multirun in one W&B run (r0.0), each logging "
            f"over another's history: {SHARED_ID_FIX} "
            "('+logger.wandb.id=run_${dropout.p}_${optim.decay}_${model.init_scale}')",
        ),
        (  # the choice of a group the study does not search: one for every trial
            [
                "hparams_search=optuna",
                "dropout=non_recurrent",
                "hydra.sweeper.n_trials=2",
                "+logger.wandb.id=r_${hydra:runtime.choices.model}",
            ],
            {},
            "logger.wandb.id=r_${hydra:runtime.choices.model} puts every job of the multirun in one W&B run (r_small), "
            f"each logging over another's history: {SHARED_ID_FIX} "
            "('+logger.wandb.id=run_${dropout.p}_${optim.decay}_${model.init_scale}')",
        ),
        (  # only a budget is swept, which no id names: the job's number tells them apart
            ["-m", "+logger.wandb.id=x", "trainer.limit_val_batches=1,2"],
            {},
            "logger.wandb.id=x puts jobs 0 (trainer.limit_val_batches=1) and 1 (trainer.limit_val_batches=2) in one "
            "W&B run (x), each logging over another's history: "
            f"{SHARED_ID_FIX} ('+logger.wandb.id=x_${{hydra:job.num}}')",
        ),
        (  # W&B's logger takes `version` before `id`: one version for every job is one run too
            ["-m", "+logger.wandb.version=v", "seed=1,2"],
            {},
            "logger.wandb.version=v puts jobs 0 (seed=1) and 1 (seed=2) in one W&B run (v), each logging over "
            "another's history: leave logger.wandb.version out (each job then gets a run of its own), or make it "
            "differ per job ('+logger.wandb.version=v_${seed}')",
        ),
    ],
    ids=[
        "basic",
        "stacked",
        "env",
        "optuna",
        "unresolved",
        "list-group",
        "optuna-unsearched-key",
        "optuna-choice",
        "budget-only",
        "version",
    ],
)
def test_a_multirun_whose_jobs_would_share_one_wandb_run_is_one_line_before_any_runs(
    tiny_cli, tmp_path, no_wandb_credentials, overrides, env, line
):
    """A wandb id that every job of a multirun would have (given once, or WANDB_RUN_ID) puts them all in one W&B
    run, each logging over the others: refused in one line, before the sweep folder is made; so is an id that a
    job cannot resolve."""
    sweep = tmp_path / "new" / "sweep"
    proc = run("rnnreg-train", *overrides, *tiny_cli, "logger=wandb", f"hydra.sweep.dir={sweep}", check=False, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {line}"], proc.stderr[-3000:]
    assert not (tmp_path / "new").exists()  # (nor the folders above the sweep's: the check comes before its lock)


@pytest.fixture(scope="module")
def resumable(tmp_path_factory) -> dict:
    """Real checkpoints to resume, written once for the module: the two jobs of a multirun under logger=wandb (W&B
    runs w1 and w2, each with best.ckpt and last.ckpt) in the folder of runs of experiment=paper_small under
    `root`, where ckpt_path=last finds the newer, w2's; and a run without W&B (no wandb_run_id)."""
    from helpers import write_corpus

    tmp = tmp_path_factory.mktemp("resumable")
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={write_corpus(tmp / 'corpus')}"]
    tiny += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    with pytest.MonkeyPatch.context() as env:  # (no_wandb_credentials' settings, for the module)
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID"):
            env.delenv(name, raising=False)
        env.setenv("NETRC", str(tmp / "no-netrc"))
        runs = tmp / "root" / "train" / "paper_small"
        ids = "+logger.wandb.id=w${seed}"
        run("rnnreg-train", "-m", *tiny, "logger=wandb", ids, "seed=1,2", f"hydra.sweep.dir={runs}")
        run("rnnreg-train", *tiny, f"hydra.run.dir={tmp / 'plain'}")
    w1, w2 = runs / "0" / "checkpoints", runs / "1" / "checkpoints"
    assert [torch.load(w / "last.ckpt", weights_only=True)["wandb_run_id"] for w in (w1, w2)] == ["w1", "w2"]
    plain = tmp / "plain" / "checkpoints" / "last.ckpt"
    assert "wandb_run_id" not in torch.load(plain, weights_only=True)
    os.utime(w2 / "last.ckpt")  # (the newest, whatever the file system's clock)
    return {"root": tmp / "root", "w1": w1, "w2": w2, "plain": plain, "tiny": tiny}


RESUMED_RUN = "a resume goes on in the W&B run its checkpoint was written in, and in no other"
GIVEN_RESUMED_FIX = "a resume goes on in its checkpoint's run without it, and each other job gets a run of its own"


def resumed_run_cases(ckpts: dict[str, Path]) -> dict[str, tuple[list[str], dict, str]]:
    """Multiruns whose jobs resume checkpoints and would share one W&B run: overrides, environment, the line."""
    best, last, w2, plain = (
        ckpts["w1"] / "best.ckpt",
        ckpts["w1"] / "last.ckpt",
        ckpts["w2"] / "last.ckpt",
        ckpts["plain"],
    )
    return {
        "two-checkpoints-of-one-run": (
            ["-m", f"ckpt_path={best},{last}"],
            {},
            f"jobs 0 (ckpt_path={best}) and 1 (ckpt_path={last}) resume {best} and {last}, checkpoints of one W&B run "
            "(w1), so both would go on in it, each logging over the other's history: resume one of them with "
            f"logger=wandb, and the other with logger=csv, in a command of its own ({RESUMED_RUN})",
        ),
        "one-checkpoint-twice": (
            ["-m", f"ckpt_path={last}", "trainer.max_epochs=2,3"],
            {},
            f"jobs 0 (trainer.max_epochs=2) and 1 (trainer.max_epochs=3) both resume {last}, so both would go on in "
            "its W&B run (w1), each logging over the other's history: resume it with logger=wandb in one job only, "
            f"and in the others with logger=csv, in a command of their own ({RESUMED_RUN})",
        ),
        "fixed-id-on-a-checkpoint-without-wandb": (
            ["-m", f"ckpt_path={plain}", "trainer.max_epochs=2,3", "+logger.wandb.id=myid"],
            {},
            "logger.wandb.id=myid puts jobs 0 (trainer.max_epochs=2) and 1 (trainer.max_epochs=3) in one W&B run "
            f"(myid), each logging over another's history: {SHARED_ID_FIX} "
            "('+logger.wandb.id=myid_${trainer.max_epochs}')",
        ),
        "fresh-job-given-a-resumed-run": (
            ["-m", f"ckpt_path={last},null", "+logger.wandb.id=w1"],
            {},
            f"logger.wandb.id=w1 puts job 1 (ckpt_path=null) in W&B run w1, which job 0 (ckpt_path={last}) goes on in "
            f"from its checkpoint {last}, each logging over the other's history: leave logger.wandb.id out "
            f"({GIVEN_RESUMED_FIX}), or give job 1 an id of its own",
        ),
        "resume-without-wandb-given-a-resumed-run": (
            ["-m", f"ckpt_path={plain},{last}", "+logger.wandb.id=w1"],
            {},
            f"logger.wandb.id=w1 puts job 0 (ckpt_path={plain}) in W&B run w1, which job 1 (ckpt_path={last}) goes on "
            f"in from its checkpoint {last}, each logging over the other's history: leave logger.wandb.id out "
            f"({GIVEN_RESUMED_FIX}), or give job 0 an id of its own",
        ),
        "environment-given-a-resumed-run": (
            ["-m", f"ckpt_path={last},{plain}"],
            {"WANDB_RUN_ID": "w1"},
            f"WANDB_RUN_ID=w1 puts job 1 (ckpt_path={plain}) in W&B run w1, which job 0 (ckpt_path={last}) goes on in "
            f"from its checkpoint {last}, each logging over the other's history: unset WANDB_RUN_ID "
            f"({GIVEN_RESUMED_FIX}), or give job 1 an id of its own",
        ),
        "last-finds-one-checkpoint": (
            ["-m", "ckpt_path=last", f"paths.output_root={ckpts['root']}", "trainer.max_epochs=2,3"],
            {},
            f"jobs 0 (trainer.max_epochs=2) and 1 (trainer.max_epochs=3) both resume {w2} (ckpt_path=last), so both "
            "would go on in its W&B run (w2), each logging over the other's history: resume it with logger=wandb in "
            f"one job only, and in the others with logger=csv, in a command of their own ({RESUMED_RUN})",
        ),
        "optuna-trials-resume-one-checkpoint": (
            ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=2", f"ckpt_path={last}"],
            {},
            f"ckpt_path={last} puts every job of the multirun in one W&B run (w1, the run {last} was written in), each "
            "logging over another's history: search from it with logger=csv, or resume it with logger=wandb in a "
            f"single run (no -m) ({RESUMED_RUN})",
        ),
        "optuna-searches-checkpoints-of-one-run": (
            ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=2"]
            + [f"+hydra.sweeper.params.ckpt_path='choice({best},{last})'"],
            {},
            f"hydra.sweeper.params.ckpt_path=choice({best},{last}) lets two trials resume {best} and {last}, "
            "checkpoints of one W&B run (w1), so both would go on in it, each logging over the other's history: "
            "search from them with logger=csv, or resume each with logger=wandb in a single run (no -m) "
            f"({RESUMED_RUN})",
        ),
        "optuna-grid-searches-checkpoints-of-one-run": (
            ["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", f"ckpt_path={best},{last}"],
            {},
            f"ckpt_path={best},{last} lets two trials resume {best} and {last}, checkpoints of one W&B run (w1), so "
            "both would go on in it, each logging over the other's history: search from them with logger=csv, or "
            f"resume each with logger=wandb in a single run (no -m) ({RESUMED_RUN})",
        ),
        "optuna-grid-holds-one-checkpoint-in-two-points": (
            ["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", f"ckpt_path={last},{w2}"]
            + ["trainer.max_epochs=2,3"],
            {},
            f"ckpt_path={last},{w2} lets two trials both resume {last} (Optuna's grid holds it once for each value of "
            "trainer.max_epochs), so both would go on in its W&B run (w1), each logging over the other's history: "
            f"search from it with logger=csv, or resume it with logger=wandb in a single run (no -m) ({RESUMED_RUN})",
        ),
        "optuna-grid-of-a-kept-study": (
            ["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", f"ckpt_path={last},{w2}"]
            + ["hydra.sweeper.storage=sqlite:///study.db"],
            {},
            f"ckpt_path={last},{w2} lets two trials both resume {last} (a study kept in hydra.sweeper.storage draws "
            "its grid's points again once it has visited them all), so both would go on in its W&B run (w1), each "
            "logging over the other's history: search from it with logger=csv, or resume it with logger=wandb in a "
            f"single run (no -m) ({RESUMED_RUN})",
        ),
        "optuna-may-draw-one-checkpoint-twice": (
            ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=2", f"ckpt_path={last},{w2}"],
            {},
            f"ckpt_path={last},{w2} lets two trials both resume {last} (Optuna draws each trial's choice anew), so "
            "both would go on in its W&B run (w1), each logging over the other's history: search from it with "
            f"logger=csv, or resume it with logger=wandb in a single run (no -m) ({RESUMED_RUN})",
        ),
    }


@pytest.mark.parametrize("case", list(resumed_run_cases({k: Path() for k in ("root", "w1", "w2", "plain")})))
def test_a_multirun_whose_resumed_jobs_would_share_one_wandb_run_is_one_line_before_any_runs(
    resumable, tmp_path, no_wandb_credentials, case
):
    """Jobs that resume go on in their checkpoint's W&B run (its wandb_run_id), else in the run their config (or
    WANDB_RUN_ID) names: two checkpoints of one run, one checkpoint resumed twice (ckpt_path=last finding it for
    both, too), a fixed id on a checkpoint without a run, an id (or WANDB_RUN_ID) that names another job's
    resumed run, an Optuna study resuming one checkpoint in every trial, or searching checkpoints two trials can
    share a run through: refused in one line naming both jobs, the run and the fix, before the sweep folder is made
    (before: jobs with a ckpt_path were left out of the check; then a searched one was)."""
    overrides, env, line = resumed_run_cases(resumable)[case]
    sweep = tmp_path / "new" / "sweep"
    flags, overrides = [o for o in overrides if o == "-m"], [o for o in overrides if o != "-m"]
    # a budget each resume trains on with (a case's own max_epochs after it)
    args = [*flags, *resumable["tiny"], "trainer.max_epochs=2", "logger=wandb", *overrides, f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-train", *args, check=False, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {line}"], proc.stderr[-3000:]
    assert not (tmp_path / "new").exists()  # no job's folder, nor the sweep's


def test_resumed_jobs_of_two_wandb_runs_each_go_on_in_their_own(resumable, tmp_path, no_wandb_credentials):
    """Two checkpoints of two W&B runs resumed in one multirun: not refused; each job goes on in its own run."""
    sweep = tmp_path / "sweep"
    resumes = f"ckpt_path={resumable['w1'] / 'last.ckpt'},{resumable['w2'] / 'last.ckpt'}"
    tiny = [*resumable["tiny"], "trainer.max_epochs=2"]
    run("rnnreg-train", "-m", *tiny, resumes, "logger=wandb", f"hydra.sweep.dir={sweep}")
    assert {job: wandb_run["id"] for job, wandb_run in wandb_runs(sweep).items()} == {"0": "w1", "1": "w2"}


def test_a_grid_study_of_checkpoints_of_two_wandb_runs_goes_on_in_each(resumable, tmp_path, no_wandb_credentials):
    """An Optuna study on a grid (hydra/sweeper/sampler=grid) gives each point to one trial: searching checkpoints
    of two W&B runs, and nothing else, each trial goes on in its own checkpoint's run, WANDB_RUN_ID or not (a
    resume's own id comes first in wandb.init). Not refused (before: as a random sampler's study, one checkpoint
    said drawn twice; then, with WANDB_RUN_ID, every trial said in its run); a fresh start beside them starts a run
    of its own."""
    sweep, fresh = tmp_path / "sweep", tmp_path / "fresh"
    grid = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "logger=wandb"]
    tiny = [*resumable["tiny"], "trainer.max_epochs=2", *grid]
    resumes = f"ckpt_path={resumable['w1'] / 'last.ckpt'},{resumable['w2'] / 'last.ckpt'}"
    run("rnnreg-train", "-m", *tiny, resumes, f"hydra.sweep.dir={sweep}", env={"WANDB_RUN_ID": "envid"})
    assert sorted(wandb_run["id"] for wandb_run in wandb_runs(sweep).values()) == ["w1", "w2"]
    run("rnnreg-train", "-m", *tiny, f"ckpt_path={resumable['w1'] / 'last.ckpt'},null", f"hydra.sweep.dir={fresh}")
    ids = sorted(wandb_run["id"] for wandb_run in wandb_runs(fresh).values())
    assert len(ids) == 2 and "w1" in ids and ids.count("w1") == 1


def test_wandb_run_id_with_a_grid_study_of_checkpoints_is_refused_only_for_its_fresh_trials(
    resumable, monkeypatch, no_wandb_credentials
):
    """WANDB_RUN_ID with a grid study whose trials resume checkpoints of distinct W&B runs: each resume goes on in its
    own run (wandb.init takes its id first), so only the trials that resume no run take WANDB_RUN_ID's. Not refused
    for resumes alone, nor with one fresh trial beside them; refused where two fresh trials would share it, or the
    fresh one would log into a resumed run (before: every such study refused as one run). Not refused where it names
    a resumed run and no trial is fresh, nor with W&B off, nor without WANDB_RUN_ID (each fresh trial draws its own);
    a grid that resumes no W&B run is every job in one."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.sweep_wandb import check_wandb_runs

    w1, w2, plain = resumable["w1"] / "last.ckpt", resumable["w2"] / "last.ckpt", resumable["plain"]

    def grid(*ckpt_paths: object):
        given = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "logger=wandb"]
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            study = compose("train", given, return_hydra_config=True)
        with open_dict(study):  # as Hydra records `-m ckpt_path=a,b` (choice() takes no null)
            study.hydra.overrides.task.append(f"ckpt_path={','.join(map(str, ckpt_paths))}")
        return study

    monkeypatch.setenv("WANDB_RUN_ID", "envid")
    check_wandb_runs(grid(w1, w2))
    check_wandb_runs(grid(w1, w2, "null"))
    fresh = rf"the trials that resume no W&B run \(ckpt_path={plain}, ckpt_path=null\)"
    with pytest.raises(ConfigError, match=rf"^WANDB_RUN_ID=envid puts {fresh} in one W&B run, each logging over"):
        check_wandb_runs(grid(w1, plain, "null"))
    monkeypatch.setenv("WANDB_RUN_ID", "w1")
    with pytest.raises(
        ConfigError,
        match=rf"^WANDB_RUN_ID=w1 puts the trial of ckpt_path=null and the one that resumes {w1} in one W&B run",
    ):
        check_wandb_runs(grid(w1, w2, "null"))
    check_wandb_runs(grid(w1, w2))  # (no trial is left to take it)
    monkeypatch.setenv("WANDB_RUN_ID", "envid")
    with pytest.raises(ConfigError, match=r"^WANDB_RUN_ID=envid puts every job of the multirun in one W&B run"):
        check_wandb_runs(grid(plain, "null"))  # (no trial resumes a W&B run)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    check_wandb_runs(grid(w1, plain, "null"))  # (no trial logs to W&B)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_RUN_ID")
    check_wandb_runs(grid(w1, plain, "null"))  # (each fresh trial draws an id of its own)


def test_wandb_run_id_with_a_grid_study_of_last_and_null_is_refused_only_where_null_takes_lasts_run(
    resumable, monkeypatch, no_wandb_credentials
):
    """A grid study over ckpt_path=last (the newest checkpoint of the experiment's runs: w2's) beside a checkpoint and
    null: the trial of last goes on in w2, so WANDB_RUN_ID is the null trial's only: not refused, but refused where it
    names w2, the run the trial of last goes on in."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.sweep_wandb import check_wandb_runs

    def grid(*ckpt_paths: object):
        given = ["experiment=paper_small", f"paths.output_root={resumable['root']}", "logger=wandb"]
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            study = compose(
                "train", [*given, "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid"], return_hydra_config=True
            )
        with open_dict(study):  # as Hydra records `-m ckpt_path=a,b`
            study.hydra.overrides.task.append(f"ckpt_path={','.join(map(str, ckpt_paths))}")
        return study

    monkeypatch.setenv("WANDB_RUN_ID", "envid")
    check_wandb_runs(grid(resumable["w1"] / "last.ckpt", "last", "null"))
    monkeypatch.setenv("WANDB_RUN_ID", "w2")
    w2 = resumable["w2"] / "last.ckpt"
    with pytest.raises(
        ConfigError, match=rf"^WANDB_RUN_ID=w2 puts the trial of ckpt_path=null and the one that resumes {w2} in one"
    ):
        check_wandb_runs(grid("last", "null"))


@pytest.mark.parametrize("given", [[], ["+logger.wandb.id=myid"]], ids=["no-id", "one-id"])
def test_a_checkpoint_the_check_cannot_read_is_left_to_its_jobs_own_line(
    resumable, tmp_path, no_wandb_credentials, given
):
    """A checkpoint whose W&B run id is none (`a/b`) resumed by two jobs: the sweep's check does not stop on it (nor
    refuse the two as one run, nor their one logger.wandb.id as shared: neither logs); each job stops on it with its
    own line, and the sweep lists them."""
    checkpoint = torch.load(resumable["w1"] / "last.ckpt", weights_only=True)
    checkpoint["wandb_run_id"] = "a/b"
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    sweep = tmp_path / "sweep"
    args = ["-m", *resumable["tiny"], "logger=wandb", f"ckpt_path={bad}", *given, "trainer.max_epochs=2,3"]
    proc = run("rnnreg-train", *args, f"hydra.sweep.dir={sweep}", check=False)
    refused = f"{bad} holds 'a/b' as its W&B run id, which is not one"
    assert proc.returncode == 1 and proc.stderr.count(refused) == 2, proc.stderr[-3000:]
    assert "failed: 0 (trainer.max_epochs=2), 1 (trainer.max_epochs=3)" in proc.stderr


def test_a_study_that_surely_resumes_a_checkpoint_it_cannot_read_is_refused_and_a_grid_point_fails_alone(
    resumable, tmp_path, monkeypatch, no_wandb_credentials
):
    """A study whose every trial resumes a file that is no rnnreg checkpoint is refused with the line a single run
    with that ckpt_path gives (before: with WANDB_RUN_ID, as every job in one W&B run). An Optuna grid (each point
    one trial's) of checkpoints, one of them no rnnreg checkpoint or one whose W&B run id is none, runs under
    logger=wandb as without W&B (check_study_checkpoints' rule: a study with one good choice runs): that point's
    trial fails alone with its line, logging into no W&B run, and the others go on in their runs (before: under
    logger=wandb the W&B check refused the whole study, exit 2). A sampler that may never draw it is refused for
    what it may draw twice, as before."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.optuna_study import check_study_checkpoints
    from rnnreg.sweep_wandb import check_wandb_runs

    w1, w2 = resumable["w1"] / "last.ckpt", resumable["w2"] / "last.ckpt"
    other, no_run_id = tmp_path / "other.ckpt", tmp_path / "no_run_id.ckpt"
    torch.save({"weights": torch.zeros(2)}, other)
    checkpoint = torch.load(w1, weights_only=True)
    checkpoint["wandb_run_id"] = "a/b"
    torch.save(checkpoint, no_run_id)
    not_ours = f"{other} is not a rnnreg checkpoint (no state_dict and hyper_parameters): give a checkpoint written by"
    not_a_run = f"{no_run_id} holds 'a/b' as its W&B run id, which is not one"

    def study(*given: str, ckpt_paths: tuple = ()):
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            config = compose("train", ["logger=wandb", *given], return_hydra_config=True)
        if ckpt_paths:
            with open_dict(config):  # as Hydra records `-m ckpt_path=a,b`
                config.hydra.overrides.task.append(f"ckpt_path={','.join(map(str, ckpt_paths))}")
        return config

    grid = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid"]
    for env in ({"WANDB_RUN_ID": "envid"}, {}):
        with monkeypatch.context() as patched:
            for name, value in env.items():
                patched.setenv(name, value)
            for ckpt_paths in ((w1, w2, other), (w1, no_run_id, "null")):  # (one rule: each check lets it run)
                check_study_checkpoints(study(*grid, ckpt_paths=ckpt_paths))
                check_wandb_runs(study(*grid, ckpt_paths=ckpt_paths))
            every = f"ckpt_path={no_run_id},{other}: every trial would stop on the checkpoint it draws: {not_a_run}"
            with pytest.raises(ConfigError, match=f"^{re.escape(every)}"):  # (every point stops on its own line)
                check_study_checkpoints(study(*grid, ckpt_paths=(no_run_id, other)))
    every_trial = ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=2"]
    with pytest.raises(ConfigError, match=f"^{re.escape(not_ours)}"):
        check_wandb_runs(study(*every_trial, f"ckpt_path={other}"))
    with pytest.raises(ConfigError, match=re.escape(f"lets two trials both resume {w1} (Optuna draws each")):
        check_wandb_runs(study(*every_trial, f"+hydra.sweeper.params.ckpt_path='choice({w1},{w2},{other})'"))

    # the bad point's trial fails alone, as without W&B
    # (test_an_optuna_grid_whose_last_point_fails_on_its_checkpoint_ends_as_a_basic_sweep_does)
    sweep = tmp_path / "sweep"
    args = ["-m", *resumable["tiny"], "trainer.max_epochs=2", "logger=wandb", *grid, f"ckpt_path={w1},{other}"]
    proc = run("rnnreg-train", *args, f"hydra.sweep.dir={sweep}", check=False, env={"WANDB_RUN_ID": "envid"})
    drawn = {yaml.safe_load((job / ".hydra/config.yaml").read_text())["ckpt_path"]: job for job in sweep.glob("?")}
    assert proc.returncode == 1 and sorted(drawn) == sorted([str(w1), str(other)]), proc.stderr[-3000:]
    failed = f"error: job {drawn[str(other)].name} (ckpt_path={other}) failed: {not_ours}"
    assert failed in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: 1 job(s)")
    assert json.loads((drawn[str(w1)] / "metrics.json").read_text())["status"] == "completed"
    assert [[part["id"] for part in wandb_run_parts(drawn[point])] for point in (str(w1), str(other))] == [["w1"], []]


def test_a_study_of_checkpoints_searched_through_an_interpolation_is_checked_as_optunas_plugin_reads_it(
    resumable, monkeypatch, no_wandb_credentials
):
    """A search space's value that reads ${oc.env:...} is the search it holds, as Optuna's plugin reads its params
    (Hydra resolves them as it makes the plugin): a ckpt_path so searched over two checkpoints of one W&B run is
    refused as two trials that may go on in it, and on a grid, checkpoints of two runs beside a seed so searched (each
    checkpoint once for each seed). Before: read as written, a fixed ckpt_path and a fixed seed, neither refused (the
    first study's two trials went on in w1). A seed so given one value leaves each checkpoint to one trial."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.sweep_wandb import check_wandb_runs

    best, w1, w2 = resumable["w1"] / "best.ckpt", resumable["w1"] / "last.ckpt", resumable["w2"] / "last.ckpt"

    def study(*given: str, ckpt_paths: tuple = ()):
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            config = compose("train", ["logger=wandb", "dropout=non_recurrent", *given], return_hydra_config=True)
        if ckpt_paths:
            with open_dict(config):  # as Hydra records `-m ckpt_path=a,b`
                config.hydra.overrides.task.append(f"ckpt_path={','.join(map(str, ckpt_paths))}")
        return config

    monkeypatch.setenv("CKPTS", f"choice({best},{w1})")
    searched = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "+hydra.sweeper.params.ckpt_path=${oc.env:CKPTS}"]
    with pytest.raises(
        ConfigError,
        match="^" + re.escape(f"hydra.sweeper.params.ckpt_path=choice({best},{w1}) lets two trials resume {best} and "),
    ):
        check_wandb_runs(study(*searched))
    space = "{dropout.p:'choice(0.3)',optim.decay:'choice(1.2)',model.init_scale:'choice(0.05)'}"
    grid = ["hparams_search=optuna", "hydra/sweeper/sampler=grid", f"hydra.sweeper.params={space}"]
    grid.append("+hydra.sweeper.params.seed=${oc.env:SEEDS}")
    monkeypatch.setenv("SEEDS", "choice(1,2)")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"lets two trials both resume {w1} (Optuna's grid holds it once for each value of seed)"),
    ):
        check_wandb_runs(study(*grid, ckpt_paths=(w1, w2)))
    monkeypatch.setenv("SEEDS", "choice(1)")
    check_wandb_runs(study(*grid, ckpt_paths=(w1, w2)))


def test_an_optuna_study_whose_every_checkpoint_an_interpolation_gives_stops_its_trials_is_refused(
    tmp_path, monkeypatch
):
    """A space's ckpt_path that reads ${oc.env:CKPTS} is the search CKPTS holds, as Optuna's plugin reads its params
    (resolved): where every choice is a checkpoint a trial stops on, refused with their lines as one written out is
    (before: a space's ckpt_path that read ${...} was left to its trials, each running to its failure); one with a
    choice a trial goes on from (null) is left to its trials."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.optuna_study import check_study_checkpoints

    not_ours, also_not_ours = tmp_path / "x1.ckpt", tmp_path / "x2.ckpt"
    torch.save({"x": torch.zeros(1)}, not_ours)
    torch.save({"x": 2}, also_not_ours)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        study = compose(
            "train",
            ["experiment=paper_small", "hparams_search=optuna", "+hydra.sweeper.params.ckpt_path=${oc.env:CKPTS}"],
            return_hydra_config=True,
        )
    monkeypatch.setenv("CKPTS", f"choice({not_ours},{also_not_ours})")
    searched = f"hydra.sweeper.params.ckpt_path=choice({not_ours},{also_not_ours})"
    with pytest.raises(ConfigError) as refused:
        check_study_checkpoints(study)
    line = str(refused.value)
    assert line.startswith(f"{searched}: every trial would stop on the checkpoint it draws: {not_ours} is not a "), line
    assert f"; {also_not_ours} is not a rnnreg checkpoint" in line
    monkeypatch.setenv("CKPTS", f"choice({not_ours},null)")
    check_study_checkpoints(study)


@pytest.mark.parametrize("version", [[], ["+logger.wandb.version=w1"]], ids=["id", "version-and-id"])
def test_jobs_resuming_a_checkpoint_with_another_wandb_id_are_left_to_their_own_line(
    resumable, tmp_path, no_wandb_credentials, version
):
    """Two jobs that resume one checkpoint, given a logger.wandb.id that is not its W&B run: neither logs into that
    run (each stops on the id, with its own line that says to leave it out or start fresh), so the sweep's check
    does not refuse them as both going on in it; also where the version they are given (which W&B takes before an
    id) is the checkpoint's run: the job checks both."""
    last = resumable["w1"] / "last.ckpt"
    args = ["-m", *resumable["tiny"], "logger=wandb", f"ckpt_path={last}", *version, "+logger.wandb.id=other"]
    proc = run("rnnreg-train", *args, "trainer.max_epochs=2,3", f"hydra.sweep.dir={tmp_path / 'sweep'}", check=False)
    refused = f"logger.wandb.id=other, but {last} goes on in W&B run w1: leave logger.wandb.id out"
    assert proc.returncode == 1 and proc.stderr.count(refused) == 2, proc.stderr[-3000:]
    assert "failed: 0 (trainer.max_epochs=2), 1 (trainer.max_epochs=3)" in proc.stderr


def test_a_checkpoints_wandb_run_is_read_as_data_only_with_its_tensors_mapped(resumable, tmp_path):
    """The sweep's check reads a checkpoint's W&B run without reading its tensors, and as data only: a file that
    would run code when unpickled is not run (it is unreadable, as is garbage); one without W&B has no run."""
    from rnnreg.resumed_run import Unreadable, checkpoint_run_id

    assert checkpoint_run_id(resumable["w1"] / "best.ckpt") == "w1" and checkpoint_run_id(resumable["plain"]) is None
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "wandb_run_id": Payload()}, crafted)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (crafted, garbage):
        with pytest.raises(Unreadable):
            checkpoint_run_id(path)
    assert not marker.exists()


def test_a_studys_wandb_id_differs_per_trial_where_it_reads_what_the_study_varies():
    """Optuna's trials come one by one: whether an id differs per trial is read from the id as given (searched keys,
    the job's number, keys that read them; keys no trial changes, the time and the environment do not differ)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.sweep_wandb import varies_per_job

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        study = compose("train", ["hparams_search=optuna", "dropout=non_recurrent"], return_hydra_config=True)
    varies = ["${dropout.p}", "${hydra:job.num}", "${optim}", "${oc.env:X,${optim.decay}}", "${paths.output_dir}"]
    same = ["${optim.momentum}", "${now:%H}", "${oc.env:HOME}", "${experiment_name}", "${hydra:runtime.choices.model}"]
    assert [varies_per_job(study, f"r_{given}") for given in varies + same] == [True] * 5 + [False] * 5
    with open_dict(study):  # a searched group may set any key
        study.hydra.sweeper.params.experiment = "choice(paper_small,paper_medium)"
    assert varies_per_job(study, "r_${optim.momentum}")


def test_a_one_trial_study_keeps_its_fixed_wandb_id_and_two_trials_are_refused():
    """A study of one trial (hydra.sweeper.n_trials=1) shares its fixed logger.wandb.id with no other job: not
    refused; from two trials on, each would log over the other's history in that one run."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.sweep_wandb import check_wandb_runs

    def study(trials: int):
        given = ["hparams_search=optuna", "dropout=non_recurrent", "logger=wandb", "+logger.wandb.id=myid"]
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            return compose("train", [*given, f"hydra.sweeper.n_trials={trials}"], return_hydra_config=True)

    check_wandb_runs(study(1))
    with pytest.raises(ConfigError, match=r"^logger\.wandb\.id=myid puts every job of the multirun in one W&B run"):
        check_wandb_runs(study(2))


def test_a_studys_wandb_id_that_reads_a_sibling_key_is_read_where_it_stands():
    """A relative interpolation in a study's logger.wandb.id (`${.project}`: the logger's own project) reads what it
    stands beside: a key no trial changes gives every trial one run (refused), one the study searches (`${..x}`
    climbs to a key it varies) each its own; where the value's place is not known, it may differ."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.sweep_wandb import absolute_key, check_wandb_runs, varies_per_job

    given = ["hparams_search=optuna", "dropout=non_recurrent", "logger=wandb", "+logger.wandb.id=r_${.project}"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        study = compose("train", given, return_hydra_config=True)
    with pytest.raises(ConfigError, match=r"^logger\.wandb\.id=r_\$\{\.project\} puts every job .* in one W&B run"):
        check_wandb_runs(study)
    assert not varies_per_job(study, "r_${.project}", at="logger.wandb.id")
    assert varies_per_job(study, "r_${...dropout.p}", at="logger.wandb.id")  # (the root's dropout.p: searched)
    assert varies_per_job(study, "r_${.project}")  # (no place: in doubt)
    assert (
        absolute_key("..x", "a.b.c") == "a.x" and absolute_key(".x", "a") == "x" and absolute_key("...x", "a") is None
    )


def test_a_study_with_wandb_off_or_its_wandb_id_searched_is_not_refused(monkeypatch):
    """A study's fixed logger.wandb.id is one run for every trial, but not with W&B off (WANDB_MODE=disabled: no
    trial logs to W&B), nor where the study searches the id (each trial draws its own)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.sweep_wandb import check_wandb_runs

    given = ["hparams_search=optuna", "dropout=non_recurrent", "logger=wandb", "+logger.wandb.id=myid"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        study = compose("train", given, return_hydra_config=True)
    with monkeypatch.context() as off:
        off.setenv("WANDB_MODE", "disabled")
        check_wandb_runs(study)
    with open_dict(study):  # as a search space file writes it
        study.hydra.sweeper.params["logger.wandb.id"] = "choice(a,b)"
    check_wandb_runs(study)


def test_a_study_is_refused_only_where_two_trials_can_resume_checkpoints_of_one_wandb_run(
    resumable, no_wandb_credentials
):
    """A study's ckpt_path as Optuna reads it: a fixed one in its params is every trial's; a choice may give two
    trials one checkpoint's run. Not refused: one trial, choices of checkpoints without a run (or a fresh start),
    and a search that is no choice (an interval of a path: a trial stops on the number it draws, with its own line)."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.sweep_wandb import check_wandb_runs

    last, plain = resumable["w1"] / "last.ckpt", resumable["plain"]

    def study(ckpt_path: str, trials: int = 2):
        given = ["hparams_search=optuna", "dropout=non_recurrent", "logger=wandb", f"hydra.sweeper.n_trials={trials}"]
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            return compose(
                "train", [*given, f"+hydra.sweeper.params.ckpt_path='{ckpt_path}'"], return_hydra_config=True
            )

    with pytest.raises(ConfigError, match=rf"^ckpt_path={last} puts every job of the multirun in one W&B run \(w1,"):
        check_wandb_runs(study(str(last)))
    for ckpt_path, trials in [(f"choice({last},{last})", 1), (f"choice({plain},null)", 2), ("interval(1,2)", 2)]:
        check_wandb_runs(study(ckpt_path, trials))


def test_a_study_resuming_a_checkpoint_with_another_wandb_id_is_left_to_its_trials_own_line(
    resumable, no_wandb_credentials
):
    """A study whose every trial resumes one checkpoint, given a logger.wandb.id that is not its W&B run: no trial
    logs into that run (each stops on the id, with its own line), so the study is not refused as one run."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.sweep_wandb import check_wandb_runs

    given = ["hparams_search=optuna", "dropout=non_recurrent", "logger=wandb", "hydra.sweeper.n_trials=2"]
    resume = f"+hydra.sweeper.params.ckpt_path='{resumable['w1'] / 'last.ckpt'}'"
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        study = compose("train", [*given, resume, "+logger.wandb.id=other"], return_hydra_config=True)
    check_wandb_runs(study)


def test_experiments_that_set_one_wandb_id_swept_together_are_one_line_before_any_runs(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """Two experiment files that each select W&B with the same fixed id, swept (`experiment=wa,wb`): nothing on the
    command line names W&B, yet both jobs would log into one run: refused before the sweep folder is made (before:
    the check looked for W&B on the command line and in the sweep's own config only)."""
    experiments = tmp_path / "mine" / "experiment"
    experiments.mkdir(parents=True)
    for name in ("wa", "wb"):
        (experiments / f"{name}.yaml").write_text(
            "# @package _global_\ndefaults:\n  - paper_small\n  - override /logger: wandb\n"
            "logger:\n  wandb:\n    id: fixed\n"
        )
    tiny = [a for a in tiny_cli if a not in ("logger=none", "experiment=paper_small")]
    sweep = tmp_path / "sweep"
    args = ["-m", "--config-dir", str(tmp_path / "mine"), "experiment=wa,wb", *tiny, f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-train", *args, "experiment_name=mine", check=False)
    fix = "'++logger.wandb.id=fixed_${hydra:runtime.choices.experiment}'"
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: logger.wandb.id=fixed puts jobs 0 (experiment=wa) and 1 (experiment=wb) in one W&B run (fixed), each "
        "logging over another's history: take logger.wandb.id out of the config file that sets it (or "
        f"~logger.wandb.id) (each job then gets a run of its own), or make it differ per job ({fix})"
    ], proc.stderr[-3000:]
    assert not sweep.exists()
    # the fix it gives: each job its own run (experiment's choice in its id)
    args.append(fix.strip("'"))
    run("rnnreg-train", *args, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false")
    assert [r["id"] for r in wandb_runs(sweep).values()] == ["fixed_wa", "fixed_wb"]


def test_an_experiment_that_sets_one_wandb_id_with_seeds_swept_is_one_line_before_any_runs(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """An experiment file that selects W&B with a fixed id, its seeds swept: nothing on the command line names W&B
    and no config group is swept, yet both jobs would log into one run: refused before the sweep folder is made."""
    experiments = tmp_path / "mine" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "wa.yaml").write_text(
        "# @package _global_\ndefaults:\n  - paper_small\n  - override /logger: wandb\n"
        "logger:\n  wandb:\n    id: fixed\n"
    )
    tiny = [a for a in tiny_cli if a not in ("logger=none", "experiment=paper_small")]
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "--config-dir",
        str(tmp_path / "mine"),
        "experiment=wa",
        "seed=1,2",
        *tiny,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run("rnnreg-train", *args, "experiment_name=mine", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: logger.wandb.id=fixed puts jobs 0 (seed=1) and 1 (seed=2) in one W&B run (fixed), each logging over "
        "another's history: take logger.wandb.id out of the config file that sets it (or ~logger.wandb.id) (each job "
        "then gets a run of its own), or make it differ per job ('++logger.wandb.id=fixed_${seed}')"
    ], proc.stderr[-3000:]
    assert not sweep.exists()


def test_a_wandb_id_that_differs_per_job_names_each_jobs_own_run(tiny_cli, tmp_path, no_wandb_credentials):
    """An id interpolated from what tells the jobs apart (a swept key, the job's number) is each job's own
    W&B run."""
    sweep = tmp_path / "sweep"
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    ids = "+logger.wandb.id=s${seed}_${hydra:job.num}"
    run("rnnreg-train", "-m", *tiny, ids, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert {job: wandb_run["id"] for job, wandb_run in wandb_runs(sweep).items()} == {"0": "s1_0", "1": "s2_1"}


@pytest.mark.parametrize(
    "sweep_args", [["-m", "seed=1,2"], ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=2"]]
)
def test_a_wandb_id_that_resolves_to_null_lets_each_job_draw_its_own(
    tiny_cli, tmp_path, no_wandb_credentials, sweep_args
):
    """An id that resolves to null (`${oc.env:RUN,null}` with RUN unset) is no id: W&B draws each job its own run,
    as without one (before: refused as every job sharing the run `None`)."""
    sweep = tmp_path / "sweep"
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    run(
        "rnnreg-train",
        *sweep_args,
        *tiny,
        "+logger.wandb.id=${oc.env:RNNREG_NO_SUCH_RUN,null}",
        f"hydra.sweep.dir={sweep}",
    )
    assert len(wandb_runs(sweep)) == 2  # (two ids, neither `None`: wandb_runs checks they differ)
    assert "None" not in [r["id"] for r in wandb_runs(sweep).values()]


def test_a_stacked_member_keeps_its_jobs_wandb_id(tiny_cli, tmp_path, no_wandb_credentials):
    """A stacked member's W&B run has its job's logger.wandb.id, as the job run alone has (here swept, one of
    them interpolated); the command that goes on with the sweep gives the override as the sweep's command did."""
    from rnnreg.recorded_commands import go_on_command

    sweep = tmp_path / "sweep"
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    ids = "+logger.wandb.id=a,b_${seed}"
    run("rnnreg-train", "-m", "hydra/launcher=stacked", *tiny, "seed=3", ids, f"hydra.sweep.dir={sweep}")
    assert {job: wandb_run["id"] for job, wandb_run in wandb_runs(sweep).items()} == {"0": "a", "1": "b_3"}
    assert f"'{ids}'" in go_on_command(sweep).split(" ")


def test_wandb_environment_applies_where_the_command_line_sets_no_key(tiny_cli, tmp_path, no_wandb_credentials):
    """WANDB_PROJECT, WANDB_ENTITY and WANDB_DIR apply, as W&B's convention has it: the run files in
    $WANDB_DIR/wandb, where a resume finds its earlier part (one id, both parts in its `wandb sync` line); a key
    given on the command line wins over its variable."""
    first, second, third, wandb_dir = (tmp_path / name for name in ("first", "second", "third", "wandb_dir"))
    env = {"WANDB_PROJECT": "envproj", "WANDB_ENTITY": "envteam", "WANDB_DIR": str(wandb_dir)}
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    run("rnnreg-train", *tiny, f"hydra.run.dir={first}", env=env)
    resume = f"ckpt_path={first}/checkpoints/last.ckpt"
    proc = run("rnnreg-train", *tiny, "trainer.max_epochs=2", resume, f"hydra.run.dir={second}", env=env)
    parts = wandb_run_parts(wandb_dir)
    assert [(p["project"], p["entity"]) for p in parts] == [("envproj", "envteam")] * 2
    assert parts[0]["id"] == parts[1]["id"] and not (first / "wandb").exists() and not (second / "wandb").exists()
    folders = sorted(str(folder) for folder in (wandb_dir / "wandb").glob("offline-run-*"))
    assert f"wandb sync {folders[0]} {folders[1]}\n" in proc.stdout, (folders, proc.stdout[-3000:], proc.stderr[-3000:])
    given = ["logger.wandb.project=cliproj", "logger.wandb.entity=cliteam", f"logger.wandb.save_dir={third}"]
    run("rnnreg-train", *tiny, *given, f"hydra.run.dir={third}", env=env)
    ((project, entity),) = [(p["project"], p["entity"]) for p in wandb_run_parts(third)]
    assert (project, entity) == ("cliproj", "cliteam") and len(folders) == 2


def test_a_key_given_twice_is_in_the_wandb_run_name_once_with_its_last_value(tiny_cli, tmp_path, no_wandb_credentials):
    """The run's name (its overrides) names a key given twice on the command line once, with the value that
    counts: the last."""
    tiny = [*tiny_cli, "logger=wandb", "trainer.limit_train_batches=2", "test=false"]
    run("rnnreg-train", *tiny, "trainer.max_epochs=2", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}")
    (wandb_run,) = wandb_run_parts(tmp_path)
    epochs = [part for part in wandb_run["name"].split(",") if part.startswith("trainer.max_epochs")]
    assert epochs == ["trainer.max_epochs=1"] and json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1
    assert "test=false" not in wandb_run["name"].split(",")  # (a switch: it names no run)


@pytest.mark.parametrize(
    "overrides,swept,name",
    [
        # a run alone: what it computes (test_ckpt: which weights it tests), not whether it tests nor how fast
        (
            ["dropout.p=0.3", "test=false", "test_ckpt=best", "optimized_metric=val_ppl", "speed.tf32=true"],
            None,
            "experiment=paper_small,dropout.p=0.3,test_ckpt=best",
        ),
        (
            ["seed=2", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=5", "hydra/launcher=joblib"],
            None,
            "experiment=paper_small,seed=2",
        ),
        # a sweep's job: its swept overrides; those of a sweep of what names no run as they are, which tell it apart
        (["seed=2", "dropout.p=0.3", "test=false"], ["seed"], "seed=2"),
        (["speed.tf32=true", "dropout.p=0.3"], ["speed.tf32"], "speed.tf32=true"),
    ],
)
def test_a_wandb_run_is_named_by_what_it_computes_not_by_its_switches(overrides, swept, name, tmp_path):
    """A W&B run's name lists the overrides that change what it computes (seed, dropout, rates, which weights it
    tests), not switches that leave that alone (test=, optimized_metric=, speed.*, the sanity check, the log interval,
    Hydra's): before, a run alone was named `...,test=false,...` beside a run that tested. Composed by Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from rnnreg import CONF_DIR
    from rnnreg.loggers import run_name

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper_small", *overrides], return_hydra_config=True)
    if swept is not None:  # (the sweep whose job it is: its record of the keys it varies)
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"swept": swept}))
    hydra, before = HydraConfig.instance(), HydraConfig.instance().cfg
    hydra.set_config(cfg)
    try:
        assert run_name("paper_small", tmp_path if swept is not None else None) == name
    finally:
        hydra.cfg = before


def test_offline_log_model_keeps_one_version_when_the_last_checkpoint_is_the_best(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """One epoch: its last.ckpt is its best.ckpt (one file, linked), kept as one version of the run's model
    artifact with both aliases, not uploaded twice."""
    tiny = [*tiny_cli, "logger=wandb", "logger.wandb.log_model=true", "trainer.max_epochs=1", "test=false"]
    run("rnnreg-train", *tiny, "trainer.limit_train_batches=2", f"hydra.run.dir={tmp_path}")
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "best.ckpt").samefile(checkpoints / "last.ckpt")
    (wandb_run,) = wandb_run_parts(tmp_path)
    (artifact,) = wandb_run["artifacts"]
    assert artifact["type"] == "model" and sorted(artifact["aliases"]) == ["best", "last", "latest"]
    ((path, size),) = artifact["files"]
    assert Path(path).parent == checkpoints and size == (checkpoints / "last.ckpt").stat().st_size


def test_a_failed_stacked_member_keeps_no_model_artifact(tiny_cli, tmp_path, no_wandb_credentials):
    """logger.wandb.log_model=true offline in a stacked group: the member that completed keeps its checkpoints as its
    run's model artifact; the member that diverged (W&B exit code 1) keeps none (its last.ckpt is no model of the
    finished run)."""
    sweep = tmp_path / "sweep"
    tiny = [*tiny_cli, "logger=wandb", "logger.wandb.log_model=true", "trainer.limit_train_batches=3", "test=false"]
    diverge = ["optim.decay=1.2,1e-20", "optim.decay_start=1"]
    proc = run("rnnreg-train", "-m", "hydra/launcher=stacked", *tiny, *diverge, f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    runs = wandb_runs(sweep)
    assert [runs[job]["exit_code"] for job in "01"] == [0, 1]
    assert runs["0"]["artifacts"] and runs["1"]["artifacts"] == []
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()


def test_resumed_run_goes_on_in_its_wandb_run(tiny_cli, tmp_path, no_wandb_credentials):
    """The checkpoint keeps the W&B run's id; a run resumed from it logs on into that run (offline: a second
    run folder with the same id, which `wandb sync` uploads into the one run after the first), from the
    step where the first part stopped: one W&B run per job, not one per attempt. The first run's folder was moved
    before the resume (its checkpoint names its part where it was written): the part is found beside the
    checkpoint; a copy of the checkpoint with no part beside it says, in one line, which part its sync leaves out."""
    first, second = tmp_path / "first", tmp_path / "second"
    written = tmp_path / "written_here"
    run("rnnreg-train", *tiny_cli, "logger=wandb", "trainer.max_epochs=1", "test=false", f"hydra.run.dir={written}")
    written.rename(first)  # (before: its part left out of the sync command, without a word)
    (part1,) = wandb_run_parts(first)
    assert torch.load(first / "checkpoints/last.ckpt", weights_only=True)["wandb_run_id"] == part1["id"]
    resume = f"ckpt_path={first}/checkpoints/last.ckpt"
    proc = run("rnnreg-train", *tiny_cli, "logger=wandb", resume, f"hydra.run.dir={second}")
    assert "anonymous" not in proc.stdout + proc.stderr  # W&B's warning of a setting we never chose
    (part2,) = wandb_run_parts(second)
    assert part2["id"] == part1["id"] and part1["exit_code"] == part2["exit_code"] == 0
    checkpoint = torch.load(second / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["wandb_run_id"] == part1["id"]
    # the command printed uploads both parts, in one call and in the order they ran (the first part's folder
    # came from its checkpoint); the checkpoint names both, for a resume from it
    folders = [str(next((folder / "wandb").glob("offline-run-*"))) for folder in (first, second)]
    assert checkpoint["wandb_parts"] == folders
    assert (
        f"W&B run {part1['id']} saved offline in 2 parts (it was resumed); upload them into the one run" in proc.stdout
    )
    assert f"wandb sync {folders[0]} {folders[1]}\n" in proc.stdout, (folders, proc.stdout[-3000:], proc.stderr[-3000:])
    val = [[row["val/ppl"] for row in part["history"] if "val/ppl" in row] for part in (part1, part2)]
    assert val == [history(first, "val/ppl"), history(second, "val/ppl")]
    assert len(val[0]) == len(val[1]) == 1  # epoch 1 in the first part, epoch 2 in the second
    assert list(by_epoch(second)) == [2]  # the report draws the second part at its epoch, not at epoch 1
    # the x-axis (Lightning's trainer/global_step) of the second part follows the first's
    steps = [[row["trainer/global_step"] for row in part["history"]] for part in (part1, part2)]
    assert max(steps[0]) < min(steps[1])
    assert part2["summary"]["test_ppl"] == pytest.approx(json.loads((second / "metrics.json").read_text())["test_ppl"])
    # a copy of the first checkpoint alone: its part is in neither place; the run goes on and says so, once
    lone = tmp_path / "lone.ckpt"
    shutil.copy(first / "checkpoints/last.ckpt", lone)
    third = tmp_path / "third"
    proc = run("rnnreg-train", *tiny_cli, "logger=wandb", f"ckpt_path={lone}", "test=false", f"hydra.run.dir={third}")
    stale = f"{written}/wandb/{Path(folders[0]).name}"
    missing = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if stale in line]
    assert len(missing) == 1 and missing[0].endswith(
        f"{stale}, an earlier part of W&B run {part1['id']} that {lone} names, is not there, nor beside the "
        "checkpoint: the wandb sync command printed at the run's end leaves it out (add its folder there, in the "
        "order the parts ran)"
    ), missing
    assert f"wandb sync {next((third / 'wandb').glob('offline-run-*'))}\n" in proc.stdout


def test_a_sweeps_jobs_run_alone_in_their_folders_stay_in_its_wandb_group_under_their_names(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """A basic sweep under logger=wandb stopped by Ctrl-C in its first job: the commands its report gives (the
    stopped job goes on in its folder, the job that never started starts in its) log into the sweep's W&B group under
    the names the sweep gives its jobs, the resumed part as its first part did (before: as single runs, in the
    experiment's group and named by all their overrides, so that a synced job left its sweep's group)."""
    ctrl_c_group(tmp_path / "lab")  # (+stop=at2 / +stop=never)
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.searchpath=[file://{tmp_path / 'lab'}]", *tiny_cli, "logger=wandb", "trainer.max_epochs=1"]
    args += ["test=false", f"paths.output_root={tmp_path}", "+stop=at2,never", f"hydra.sweep.dir={sweep}"]
    stopped = run("rnnreg-train", *args, check=False)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-2000:]
    table = run("rnnreg-report", f"path={sweep}").stdout
    commands = re.findall(r"^- \d \((?:interrupted|never started: no folder)\): `(rnnreg-train [^`]*)`$", table, re.M)
    assert len(commands) == 2, table
    for command in commands:
        run(*shlex.split(command))
    parts = {job: wandb_run_parts(sweep / job) for job in ("0", "1")}
    assert [len(p) for p in parts.values()] == [2, 1]
    assert {p["group"] for job in parts.values() for p in job} == {f"paper_small/{named_sweep_group(sweep)}"}
    assert [[p["name"] for p in job] for job in parts.values()] == [["+stop=at2", "+stop=at2"], ["+stop=never"]]
    assert parts["0"][0]["id"] == parts["0"][1]["id"] and parts["0"][1]["exit_code"] == 0


def test_a_run_stopped_in_its_final_test_tests_on_in_its_wandb_run_at_its_last_step(
    tiny_corpus, tmp_path, no_wandb_credentials
):
    """SIGTERM in the final test of a run under logger=wandb (offline), its training completed: the command it prints
    tests on in its folder, in the same W&B run (a second part with its id, both named by the sync line), with the
    test perplexities in its summary and their row at the step and epoch where training ended, as an uninterrupted
    run's test (W&B's trainer/global_step and epoch); its csv/metrics.csv keeps the training's rows before that row.
    Before: the test's row was logged at step 0, epoch 0, and csv/metrics.csv lost every row of the training."""
    stop = tmp_path / "lab" / "stop"  # (a group of the user's, emptied before the command that goes on runs)
    stop.mkdir(parents=True)
    (stop / "in_test.yaml").write_text(
        "# @package _global_\ncallbacks:\n  signal_in_test:\n    _target_: helpers.SignalInTest\n"
        f"    signum: {int(signal.SIGTERM)}\n"
    )
    first = tmp_path / "first"
    args = [f"hydra.searchpath=[file://{tmp_path / 'lab'}]", "experiment=paper_small", *TINY, "logger=wandb"]
    args += [f"data.data_dir={tiny_corpus}", "trainer.max_epochs=2", "trainer.limit_train_batches=3"]
    args += ["trainer.limit_test_batches=3", "+stop=in_test", f"hydra.run.dir={first}"]
    proc = run("rnnreg-train", *args, check=False)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    said = "its training completed: test it in its folder with: "
    command = proc.stdout.strip().splitlines()[-1].split(said)[1]
    (stop / "in_test.yaml").write_text("# @package _global_\n{}\n")  # (the test goes on unstopped this time)
    resumed = run(*shlex.split(command))
    part1, part2 = wandb_run_parts(first)
    assert part1["id"] == part2["id"] and [part1["exit_code"], part2["exit_code"]] == [1, 0]
    folders = sorted(map(str, (first / "wandb").glob("offline-run-*")))
    assert (
        f"in 2 parts (it was resumed); upload them into the one run, in order, with: wandb sync {' '.join(folders)}\n"
        in (resumed.stdout)
    ), resumed.stdout[-3000:]
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["status"] == "completed" and part2["summary"]["status"] == "completed"
    assert part2["summary"]["test_ppl"] == pytest.approx(metrics["test_ppl"])
    assert part2["summary"]["test_ppl_batched"] == pytest.approx(metrics["test_ppl_batched"])
    (row,) = [row for row in part2["history"] if "test/ppl" in row]
    steps = load_checkpoint(first / "checkpoints" / "last.ckpt")["global_step"]  # 2 epochs x 3 windows
    assert (row["trainer/global_step"], row["epoch"]) == (steps, 2) == (6, 2)
    assert max(r["trainer/global_step"] for r in part1["history"]) < steps
    assert len(history(first, "val/ppl")) == 2 and history(first, "test/ppl") == [pytest.approx(metrics["test_ppl"])]


def test_an_optuna_trial_resumed_in_new_folders_keeps_its_wandb_run_group_and_name(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """An Optuna study's trial under logger=wandb stopped by Ctrl-C, resumed from its checkpoint in a new folder (not
    its numbered one), and that resume resumed in another: each part logs into the trial's W&B run (its id), under
    its study's group and the trial's name, which its checkpoints keep; a name given on the command line is the one
    it takes. Before: a resume in a new folder was a single run's, in the experiment's group (`paper_small`) and named
    by all its overrides, so that, synced, the trial left its study's group."""
    ctrl_c_group(tmp_path / "lab")  # (+stop=at2)
    study, first, second = tmp_path / "study", tmp_path / "first", tmp_path / "second"
    args = [f"hydra.searchpath=[file://{tmp_path / 'lab'}]", *tiny_cli, "logger=wandb", "test=false"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "dropout=non_recurrent"]
    search = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "+stop=at2", f"hydra.sweep.dir={study}"]
    stopped = run("rnnreg-train", *args, *search, check=False)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-2000:]
    searched = ("dropout.p", "optim.decay", "model.init_scale")  # (conf/hparams_search/optuna.yaml)
    recorded = yaml.safe_load((study / "0" / ".hydra" / "overrides.yaml").read_text())
    trial = [o for o in recorded if o.split("=")[0] in searched]  # the values it sampled, as the trial ran them
    assert len(trial) == 3
    run("rnnreg-train", *args, *trial, f"ckpt_path={study / '0/checkpoints/last.ckpt'}", f"hydra.run.dir={first}")
    resume = [f"ckpt_path={first / 'checkpoints/last.ckpt'}", "trainer.max_epochs=2", f"hydra.run.dir={second}"]
    run("rnnreg-train", *args, *trial, *resume, "logger.wandb.name=renamed")
    (part0,), (part1,), (part2,) = (wandb_run_parts(folder) for folder in (study / "0", first, second))
    assert part0["id"] == part1["id"] == part2["id"]
    assert part0["group"] == part1["group"] == part2["group"] == f"paper_small/{named_sweep_group(study)}"
    assert part0["name"] == part1["name"] and part2["name"] == "renamed"
    assert set(part0["name"].split(",")) == set(trial)  # (its name in the study: what it sampled)
    checkpoint = load_checkpoint(second / "checkpoints" / "last.ckpt")
    assert (checkpoint["wandb_group"], checkpoint["wandb_name"]) == (part0["group"], "renamed")


def test_a_resume_stopped_before_its_first_window_leaves_no_wandb_part_the_next_sync_misses(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """A resumed run stopped by a signal before its first window writes no checkpoint (it goes on from the one it
    resumed), and leaves no offline W&B part either: it logged nothing since that checkpoint (its part held the
    config and its interrupted status), and no resume would name it. The line it prints names the parts there
    are, and the next resume's `wandb sync` line names every part of the run on disk. Before, its part stayed in
    its folder, named by no later line. A resume stopped once it has logged keeps its part."""
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    tiny = [*tiny_cli, "logger=wandb", "test=false", "trainer.limit_train_batches=4"]
    proc = run("rnnreg-train", *tiny, *signal_at(signal.SIGTERM, 2), f"hydra.run.dir={first}", check=False)
    assert proc.returncode == 143, proc.stderr[-3000:]
    (part1,) = (first / "wandb").glob("offline-run-*")
    resumed = first / "checkpoints" / "last.ckpt"
    stop = ["+callbacks.stop._target_=helpers.SignalAsFitStarts", f"+callbacks.stop.signum={int(signal.SIGTERM)}"]
    proc = run("rnnreg-train", *tiny, f"ckpt_path={resumed}", *stop, f"hydra.run.dir={second}", check=False)
    assert proc.returncode == 143, proc.stderr[-3000:]
    # the command the console gave: the run's own overrides (before: "rnnreg-train ... ckpt_path=..."), its checkpoint
    # the one it resumed from, as it wrote none
    go_on = json.loads((second / "metrics.json").read_text())["resume"]
    assert go_on.startswith("rnnreg-train experiment=paper_small ") and go_on.endswith(f" ckpt_path={resumed}")
    assert go_on in proc.stdout
    assert not (second / "wandb").exists()
    said = proc.stdout + proc.stderr  # (W&B's own closing lines too)
    assert said.count("wandb sync") == 1 and f"wandb sync {part1}\n" in proc.stdout, said[-3000:]
    proc = run("rnnreg-train", *tiny, f"ckpt_path={resumed}", f"hydra.run.dir={third}")
    parts = sorted(tmp_path.glob("*/wandb/offline-run-*"), key=lambda part: part.name)
    assert [part.parent.parent for part in parts] == [first, third]
    assert f"wandb sync {' '.join(map(str, parts))}\n" in proc.stdout, proc.stdout[-3000:]
    assert [p["exit_code"] for p in wandb_run_parts(first) + wandb_run_parts(third)] == [1, 0]
    # a resume stopped after it logged (an epoch's validation) keeps its part, named with the others
    fourth = tmp_path / "fourth"
    stop = signal_at(signal.SIGTERM, 1, epoch=1)
    proc = run("rnnreg-train", *tiny, f"ckpt_path={resumed}", *stop, f"hydra.run.dir={fourth}", check=False)
    (part4,) = (fourth / "wandb").glob("offline-run-*")
    assert proc.returncode == 143 and f"wandb sync {part1} {part4}\n" in proc.stdout, proc.stdout[-3000:]


def test_a_wandb_that_refuses_to_be_quiet_still_closes_the_run_and_removes_its_empty_part(
    tmp_path, monkeypatch, no_wandb_credentials
):
    """W&B (0.31, as pinned) has no public way to keep a started run's closing lines, which name its offline folder,
    off the console: finish_wandb sets `quiet` in the run's private settings before it removes an empty part. A W&B
    that refuses that (the field renamed or frozen: pydantic's ValueError, made here as a later release would)
    closes the run with its own lines, and the part is still removed. Before, the refusal left the run open and
    its part on disk (training's caller only warned that it could not close the W&B run)."""
    import wandb

    from rnnreg.loggers import finish_wandb, wandb_logger

    logger = wandb_logger(offline=True, group_by_sweep=False, name="empty", project="p", save_dir=str(tmp_path))
    run = logger.experiment
    part = Path(run.dir).parent
    settings = type(run._settings)
    assign = settings.__setattr__

    def refuse_quiet(self, name, value):
        if name == "quiet":
            raise ValueError(f'"{settings.__name__}" object has no field "quiet"')  # pydantic's words
        assign(self, name, value)

    monkeypatch.setattr(settings, "__setattr__", refuse_quiet)
    try:
        finish_wandb([logger], {"status": "interrupted"}, exit_code=1, drop_empty_part=True)
        assert wandb.run is None and not part.exists()
    finally:
        wandb.teardown()  # (W&B's service started in this process ends with it: no other test finds it)


def test_sync_command_names_only_the_runs_own_parts(tmp_path):
    """The earlier parts come from a checkpoint (untrusted): a folder it names that is not a part of this run
    (another name, or no `run-<id>.wandb` in it) never gets into the printed `wandb sync` command."""
    from rnnreg.loggers import offline_parts

    def part(where: str, stamp: str, run_id: str = "abc", wandb_file: bool = True) -> Path:
        folder = tmp_path / where / "wandb" / f"offline-run-{stamp}-{run_id}"
        folder.mkdir(parents=True)
        if wandb_file:
            (folder / f"run-{run_id}.wandb").write_bytes(b"")
        return folder

    first, second, third = part("a", "20261129_101010"), part("b", "20261129_111111"), part("b", "20261129_121212")
    other_run = part("c", "20261129_090909", run_id="xyz")
    no_log = part("d", "20261129_080808", wandb_file=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    earlier = [str(p) for p in (first, other_run, no_log, secrets, tmp_path / "gone", Path("/etc"))]
    # the current part is `third`; `second` (beside it, the same run) is found without the checkpoint's help
    assert offline_parts(third, "abc", earlier) == [first, second, third]


def test_sync_command_takes_parts_started_in_the_same_second_in_order(tmp_path):
    """W&B names a part started in the same second as an earlier one offline-run-<stamp>-<id>-<n> (a resume within a
    second of its first part's start: tiny runs): it is a part too, after the earlier ones (-10 after -2)."""
    from rnnreg.loggers import offline_parts

    def part(suffix: str, stamp: str = "20261205_174224") -> Path:
        folder = tmp_path / "wandb" / f"offline-run-{stamp}-abc{suffix}"
        folder.mkdir(parents=True)
        (folder / "run-abc.wandb").write_bytes(b"")
        return folder

    parts = [part(""), part("-1"), part("-2"), part("-10"), part("", stamp="20261205_174225")]
    part("-x")  # not W&B's suffix: no part
    assert offline_parts(parts[3], "abc") == parts


def test_the_sync_command_for_a_folder_with_a_space_runs_as_printed(tiny_cli, tmp_path, no_wandb_credentials):
    """A run folder whose path has a space: the printed `wandb sync` command quotes it, so that the shell gives
    wandb the run's folder as one argument."""
    import shlex

    folder = tmp_path / "my runs" / "first"
    tiny = [*tiny_cli, "logger=wandb", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    proc = run("rnnreg-train", *tiny, f"hydra.run.dir={folder}")
    (line,) = [line for line in proc.stdout.splitlines() if "upload it with: " in line]
    command = shlex.split(line.split("upload it with: ", 1)[1])
    assert command[:2] == ["wandb", "sync"] and [Path(part) for part in command[2:]] == list(
        (folder / "wandb").glob("offline-run-*")
    )


def test_report_gives_mean_and_sd_over_seeds(tiny_cli, tmp_path):
    sweep = tmp_path / "seeds"
    run(
        "rnnreg-train",
        "-m",
        *tiny_cli,
        "trainer.max_epochs=1",
        "model.init_scale=0.1,0.05",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    )
    run("rnnreg-report", f"path={sweep}")
    over_seeds, paired = (sweep / "report.md").read_text().split("Over seeds:")[1].split("\nPaired by seed, ")
    table = over_seeds.strip().splitlines()
    assert len(table) == 2 + 2  # one row per init scale, over its two seeds
    assert len(paired.strip().splitlines()) == 2 + 2 + 1  # and the other against the better, seed by seed
    jobs = [p for p in sweep.iterdir() if (p / "metrics.json").exists()]
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        mine = [
            json.loads((j / "metrics.json").read_text())
            for j in jobs
            if cells[0] in yaml.safe_load((j / ".hydra/overrides.yaml").read_text())
        ]
        assert cells[0].startswith("model.init_scale=") and cells[1] == "2" and len(mine) == 2
        for cell, key in zip(cells[2:], ("best_val_ppl", "test_ppl", "test_ppl_batched")):
            values = [m[key] for m in mine]
            assert values[0] != values[1]  # the seed changed the run
            mean, sd = (sum(values) / 2, abs(values[0] - values[1]) / 2**0.5)
            assert cell == f"{mean:.2f} ± {sd:.2f}"
    # the plots draw one mean curve and one bar per init scale, over its two seeds
    groups = plot_groups(collect(sweep))
    assert sorted(groups) == ["model.init_scale=0.05 (2 seeds)", "model.init_scale=0.1 (2 seeds)"]
    assert all(len({r["differs"] for r in runs}) == 2 for runs in groups.values())


def test_submitit_local_launcher_stops_on_its_signal_and_the_requeued_job_goes_on_exactly(tiny_cli, tmp_path):
    """Job 0: submitit's signal (SIGUSR2: its warning before the time limit, and on pre-emption) after window 7: the
    run stops after that window with its last.ckpt and metrics.json, then submitit requeues the job (its handler ran
    inside the signal handler: no checkpoint, and the requeued job was refused the folder), and the requeued job
    goes on from that last.ckpt: the uninterrupted run's results and weights.
    Job 1 (beside it: submitit runs them at once): SIGTERM (SLURM's pre-emption; SLURM may requeue the job itself,
    with the same id): the run stops with its last.ckpt and metrics.json names the job, as for submitit's own
    signal, so that the requeued job goes on from there (requeued_checkpoint) rather than being refused its folder."""
    sweep = tmp_path / "submitit"
    overrides = [*tiny_cli, "trainer.max_epochs=1", "seed=1"]
    signals = [o for o in signal_at(signal.SIGUSR2, 7) if ".signum=" not in o]
    proc = run(
        "rnnreg-train",
        "-m",
        *overrides,
        *signals,
        f"+callbacks.signal_at.signum={int(signal.SIGUSR2)},{int(signal.SIGTERM)}",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    # job 1 is not requeued here (no SLURM): its stopped run is its result, and the sweep's end names it (before:
    # submitit waited 15 s for a result and the multirun ended in its UncompletedJobError traceback)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == (
        f"error: 1 job(s) of the multirun in {sweep} were stopped by a signal: 1 (+callbacks.signal_at.signum="
        f"{int(signal.SIGTERM)}) (rnnreg-report path={sweep} gives the commands that go on)"
    )
    job = sweep / "0"
    log = (job / "train.log").read_text()
    assert "SIGUSR2: every process stops after this step" in log, proc.stderr[-2000:]
    assert f"resuming from {job / 'checkpoints' / 'last.ckpt'}" in log
    requeued = json.loads((job / "metrics.json").read_text())
    assert requeued["status"] == "completed" and requeued["epochs"] == 1
    stopped = json.loads((sweep / "1" / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["error"] == STOPPED_BY[signal.SIGTERM]
    last = str((sweep / "1" / "checkpoints" / "last.ckpt").resolve())
    assert requeued_checkpoint(sweep / "1", stopped["submitit_job"]) == last  # its own job, run again
    assert requeued_checkpoint(sweep / "1", "another job") is None  # a job that is not this one starts afresh
    logs = {d.name: "".join(p.read_text() for p in d.glob("*_0_log.*")) for d in (sweep / ".submitit").iterdir()}
    assert stopped["submitit_job"] in logs and "Requeued job" not in logs[stopped["submitit_job"]]
    assert any("Requeued job" in text for text in logs.values())  # job 0's
    # job 0 uninterrupted, in this process
    alone = train(compose_config([*overrides], tmp_path / "alone"))
    for key in ("best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert requeued[key] == alone[key], key
    weights = [load_checkpoint(d / "checkpoints/last.ckpt")["state_dict"] for d in (job, tmp_path / "alone")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


def test_ctrl_c_in_a_submitit_local_multirun_stops_its_job_after_the_window_with_its_checkpoint(tiny_corpus, tmp_path):
    """The terminal's Ctrl-C (SIGINT to every process of the command: the multirun's, the job's submitit controller
    and its task) while the job's window takes 2 s: the job stops after that window with its exact last.ckpt and
    metrics.json (interrupted by Ctrl-C, with the command that goes on), and the multirun waits for it, then ends
    naming it, exit 130. Before: submitit's controller, stopped by the Ctrl-C too, sent the task a second SIGINT (which
    aborts at once) and SIGKILL 1 s later: the job was killed before it wrote its checkpoint (or wrote one from the
    middle of its window), the multirun exited at once, and the controller's traceback came on the console."""
    sweep, started = tmp_path / "sweep", tmp_path / "started"
    slow = ["+callbacks.slow._target_=helpers.SlowWindows", "+callbacks.slow.seconds=2"]
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "test=false"]
    args += ["trainer.limit_train_batches=4", *slow, f"+callbacks.slow.started={started}"]
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=2", f"hydra.sweep.dir={sweep}"]
    proc = warm_start.popen(
        [str(BIN / "rnnreg-train"), "-m", *args, *launcher],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"HYDRA_FULL_ERROR": "0"},
        start_new_session=True,  # (its own process group, as a terminal's foreground command has)
    )
    deadline = time.monotonic() + 300
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C, as the job's first window trains
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the multirun stopped by Ctrl-C hung")
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "Ctrl-C: each job stops after its current window and saves a resumable checkpoint" in out
    assert err.strip().splitlines()[-1] == (
        f"error: 1 job(s) of the multirun in {sweep} were stopped by a signal: 0 (rnnreg-report path={sweep} gives "
        "the commands that go on)"
    )
    job = sweep / "0"
    stopped = json.loads((job / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["error"] == STOPPED_BY[signal.SIGINT]
    assert stopped["resume"].endswith(f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}")
    last = load_checkpoint(job / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 1 and last["train_window"] == 1  # after the window the Ctrl-C came in
    assert not (job / ".rnnreg.lock").exists()


# a sitecustomize: a submitit_local task, as it starts (before Hydra starts its job), touches the file STARTED names
# and waits START_DELAY seconds
SLOW_TASK_START = """
import os, time
if os.environ.get("SUBMITIT_LOCAL_GLOBALID"):
    open(os.environ["STARTED"], "w").close()
    time.sleep(float(os.environ["START_DELAY"]))
"""


@pytest.mark.parametrize("presses", [1, 2], ids=["once", "twice"])
def test_ctrl_c_as_a_submitit_local_task_starts_stops_its_job_before_it_starts(presses, tiny_corpus, tmp_path):
    """The terminal's Ctrl-C while the job's task is starting (it ignores Ctrl-C until Hydra starts its job, as its
    controller does): the job stops before it starts, its error.txt saying so, and the multirun ends within seconds
    of it, naming it among the jobs to run again, exit 130 (not running the whole job; before: submitit waited 15 s
    for the result that job never writes). Pressed twice, the multirun ends at once, and the job, starting after it,
    stops all the same (before: it ran to its end, unseen)."""
    sweep, started, hook = tmp_path / "sweep", tmp_path / "started", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_TASK_START)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "test=false"]
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=2", f"hydra.sweep.dir={sweep}"]
    # the presses come in the task's delay (the second 1 s after the first), and it loads its job for seconds more
    # before Hydra starts it and it takes Ctrl-C back
    delay = "1" if presses == 1 else "3"
    proc = subprocess.Popen(  # (cold: a sitecustomize on its PYTHONPATH)
        [str(BIN / "rnnreg-train"), "-m", *args, "trainer.limit_train_batches=4", *launcher],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": path, "STARTED": str(started), "START_DELAY": delay},
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for press in range(presses):
        time.sleep(press)  # (the second once the first has been handled)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C, as the task starts
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the multirun stopped by Ctrl-C hung")
    exited = time.time()
    job = sweep / "0"
    # (a multirun that ended at once leaves its job's controller and task to end on their own)
    while not any((job / name).exists() for name in ("error.txt", "metrics.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "interrupted: rnnreg-train stopped by Ctrl-C before it finished"
        if presses == 2
        else f"error: 1 job(s) of the multirun in {sweep} were stopped by a signal before they wrote a result: 0 (run "
        "them again)"
    )
    assert (job / "error.txt").read_text().startswith("stopped by Ctrl-C before it finished")
    assert not (job / "metrics.json").exists() and not (job / "checkpoints").exists()
    if presses == 1:  # the multirun waited for the job's end, and not for the result it will never write
        assert exited - (job / "error.txt").stat().st_mtime < 5


# a sitecustomize: the task of the submitit_local job whose submission matches MARKER (a regular expression), as it
# starts (before Hydra starts its job), waits for the file WINDOW names (another job's first window) and 1 s more
TASK_STARTS_AFTER_A_WINDOW = """
import os, re, sys, time
from pathlib import Path
if os.environ.get("SUBMITIT_LOCAL_GLOBALID"):  # (`python -u -m submitit.core._submit <folder>`)
    from submitit.core.utils import JobPaths
    job = JobPaths(sys.argv[-1], os.environ["SUBMITIT_LOCAL_JOB_ID"], 0)
    if re.search(os.environ["MARKER"].encode(), job.submitted_pickle.read_bytes()):
        while not Path(os.environ["WINDOW"]).exists():
            time.sleep(0.05)
        time.sleep(1)
"""


def test_a_ctrl_c_multirun_waits_for_its_later_jobs_after_one_that_wrote_no_result(tiny_corpus, tmp_path):
    """Ctrl-C while job 0's task is starting and job 1 is in a 6 s window: job 0 stops before it starts (no
    result), and the multirun still waits for job 1 to stop after its window with its checkpoint, then ends naming
    both, exit 130. Before: the first job without a result ended the wait (submitit's UncompletedJobError), and the
    multirun exited while job 1 was still in its window, its checkpoint not yet written nor its job named."""
    sweep, window, hook = tmp_path / "sweep", tmp_path / "window", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(TASK_STARTS_AFTER_A_WINDOW)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    slow = ["+callbacks.slow._target_=helpers.SlowWindows", f"+callbacks.slow.started={window}"]
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "test=false"]
    args += ["trainer.limit_train_batches=4", *slow, "+callbacks.slow.seconds=0.01,6"]
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=2", f"hydra.sweep.dir={sweep}"]
    # job 0's own override, not the sweep's "+callbacks.slow.seconds=0.01,6", which every job's submission holds
    marker = r"seconds=0\.01(?![,\d])"
    env = {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": path, "WINDOW": str(window), "MARKER": marker}
    proc = subprocess.Popen(  # (cold: a sitecustomize on its PYTHONPATH)
        [str(BIN / "rnnreg-train"), "-m", *args, *launcher],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not window.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: job 0 still starting, job 1 in its first window
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the multirun stopped by Ctrl-C hung")
    stopped = sweep / "1" / "metrics.json"
    written = stopped.exists() and json.loads(stopped.read_text())  # as the multirun ended
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert (sweep / "0" / "error.txt").read_text().startswith("stopped by Ctrl-C before it finished")
    assert written and written["status"] == "interrupted" and written["error"] == STOPPED_BY[signal.SIGINT]
    last = load_checkpoint(sweep / "1" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 1 and last["train_window"] == 1  # after the window the Ctrl-C came in
    assert err.strip().splitlines()[-2:] == [
        f"error: 1 job(s) of the multirun in {sweep} were stopped by a signal: 1 (+callbacks.slow.seconds=6) "
        f"(rnnreg-report path={sweep} gives the commands that go on)",
        f"error: 1 job(s) of the multirun in {sweep} were stopped by a signal before they wrote a result: 0 "
        "(+callbacks.slow.seconds=0.01) (run them again)",
    ]


def job_threads(sweep: Path) -> dict[str, tuple[int, str]]:
    """Each job's torch threads as its train.log says them: the count its device line names, and the line that says
    where it came from (`1 torch thread, from ...`)."""
    said = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        log = (job / "train.log").read_text()
        (device,) = re.findall(r"^  device: cpu \(.*, (\d+) threads?\)$", log, re.M)
        (threads,) = re.findall(r"^  threads: (.*)$", log, re.M) or [None]
        said[job.name] = (int(device), threads)
    return said


@pytest.mark.parametrize(
    ("launcher", "why"),
    [
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "cores // hydra.launcher.n_jobs"),
        (["hydra/launcher=submitit_local"], "cores // the processes it starts at once"),
    ],
    ids=["joblib", "submitit_local"],
)
def test_two_jobs_at_once_on_one_machine_share_its_cores(launcher, why, tiny_cli, tmp_path, monkeypatch):
    """Two jobs side by side, each a process of its own, take half the cores each (torch would take every core in
    each: on 2 cores, 2 threads each ran smoke at a quarter of its speed, docs/cpu_2026-12-06/threads_under_load):
    joblib's workers as loky starts them, submitit_local's jobs as rnnreg-train starts them (before: every core
    each). Each job's train.log says its thread count and why."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # (make test's workers set it for the processes they start)
        monkeypatch.delenv(name, raising=False)
    cores = len(os.sched_getaffinity(0))
    if "joblib" in launcher[0]:  # loky's count, asked of a process of its own: importing joblib sets
        # KMP_INIT_AT_FORK in its process, which would then differ from what tests/warm_start.py's server started with
        count = "from joblib import cpu_count; print(cpu_count())"
        cores = int(subprocess.run([sys.executable, "-c", count], capture_output=True, text=True, check=True).stdout)
    half = max(1, cores // 2)
    sweep = tmp_path / "sweep"
    overrides = ["-m", *tiny_cli, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    run("rnnreg-train", *overrides, *launcher, "seed=1,2", f"hydra.sweep.dir={sweep}")
    threads = "1 torch thread" if half == 1 else f"{half} torch threads"
    said = f"{threads}, from OMP_NUM_THREADS={half} ({launcher[0]} sets it to {why} where it was not set)"
    assert job_threads(sweep) == {"0": (half, said), "1": (half, said)}


def test_an_omp_num_threads_the_user_set_is_what_each_joblib_job_takes(tiny_cli, tmp_path, monkeypatch):
    """OMP_NUM_THREADS given where rnnreg-train starts is each job's: here every core, where a job of
    hydra.launcher.n_jobs=2 would take half of them (torch takes no more than the cores from it). Under joblib it was
    lost: loky set MKL_NUM_THREADS to cores // n_jobs in each worker, and torch takes MKL_NUM_THREADS over
    OMP_NUM_THREADS. (One job: loky's count is by n_jobs, not by the jobs that run, and a second job cost a second
    worker, a cold process. submitit_local's jobs take this process's environment as it is:
    test_submitit_local_keeps_the_users_threads.)"""
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    why = "cores // hydra.launcher.n_jobs"
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    sweep = tmp_path / "sweep"
    overrides = ["-m", *tiny_cli, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    run(
        "rnnreg-train",
        *overrides,
        *launcher,
        "seed=1",
        f"hydra.sweep.dir={sweep}",
        env={"OMP_NUM_THREADS": str(cores)},
    )
    threads = "1 torch thread" if cores == 1 else f"{cores} torch threads"
    said = f"{threads}, from OMP_NUM_THREADS={cores} ({launcher[0]} sets it to {why} where it was not set)"
    assert job_threads(sweep) == {"0": (cores, said)}


@pytest.mark.parametrize(
    ("overrides", "at_once"),
    [
        (["seed=1,2,3"], 3),  # the basic sweeper: every job in one batch
        (["seed=1,2,3", "hydra.sweeper.max_batch_size=2"], 2),
        (["hparams_search=optuna", "hydra.sweeper.n_jobs=2"], 2),  # Optuna: n_jobs trials a batch
        (["hparams_search=optuna", "hydra.sweeper.n_jobs=4", "hydra.sweeper.n_trials=3"], 3),
        (["hydra.launcher.tasks_per_node=2", "seed=1,2"], 4),  # a process a task
    ],
)
def test_submitit_local_counts_the_processes_it_starts_at_once(overrides, at_once):
    """The processes whose threads share the cores out under submitit_local (cpu_threads.jobs_at_once); none to
    count for a launcher that shares them itself (joblib) or runs a job at a time (basic)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from rnnreg import CONF_DIR
    from rnnreg.cpu_threads import jobs_at_once

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        multirun = loader.load_configuration("train", ["hydra/launcher=submitit_local", *overrides], RunMode.MULTIRUN)
        assert jobs_at_once(multirun) == at_once
        for launcher in ("joblib", "basic"):
            other = loader.load_configuration("train", [f"hydra/launcher={launcher}", "seed=1,2"], RunMode.MULTIRUN)
            assert jobs_at_once(other) is None


@pytest.mark.parametrize("given", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_submitit_local_keeps_the_users_threads(given, monkeypatch):
    """A thread count the user gave (either variable torch reads) is left as it is for submitit_local's jobs, which
    take the multirun's environment: nothing set, nothing to take back (cpu_threads.share_cores). Without it, the
    multirun sets OMP_NUM_THREADS for them."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from rnnreg import CONF_DIR
    from rnnreg.cpu_threads import share_cores

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        multirun = loader.load_configuration("train", ["hydra/launcher=submitit_local", "seed=1,2"], RunMode.MULTIRUN)
        monkeypatch.setenv(given, "7")
        assert share_cores(multirun) == [] and os.environ.get(given) == "7"
        assert {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} == {
            "OMP_NUM_THREADS": "7" if given == "OMP_NUM_THREADS" else None,
            "MKL_NUM_THREADS": "7" if given == "MKL_NUM_THREADS" else None,
        }
        monkeypatch.delenv(given)
        assert share_cores(multirun) == ["OMP_NUM_THREADS"]
        assert os.environ["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
        monkeypatch.delenv("OMP_NUM_THREADS")


def test_the_multiruns_thread_variables_by_launcher(monkeypatch, caplog):
    """What cpu_threads.share_cores sets in the multirun's process, by launcher: under joblib the user's
    OMP_NUM_THREADS copied to MKL_NUM_THREADS (and handed back to be taken back), unless MKL_NUM_THREADS was set
    too; under the basic launcher nothing; under submitit_local at least one thread a process, however many it
    starts at once, said in one line."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from rnnreg import CONF_DIR
    from rnnreg.cpu_threads import cores, share_cores

    def thread_variables() -> dict:
        return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def multirun(*overrides: str):
            return loader.load_configuration("train", [*overrides, "seed=1,2"], RunMode.MULTIRUN)

        joblib, basic = multirun("hydra/launcher=joblib"), multirun("hydra/launcher=basic")
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert share_cores(basic) == [] and thread_variables() == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": None}
        monkeypatch.setenv("MKL_NUM_THREADS", "1")
        assert share_cores(joblib) == [] and thread_variables() == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}
        monkeypatch.delenv("MKL_NUM_THREADS")
        assert share_cores(joblib) == ["MKL_NUM_THREADS"]
        assert thread_variables() == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS")
        # more processes at once than cores: one thread each, not none
        many = multirun("hydra/launcher=submitit_local", f"hydra.launcher.tasks_per_node={cores() + 1}")
        with caplog.at_level(logging.INFO, logger="rnnreg"):
            assert share_cores(many) == ["OMP_NUM_THREADS"]
        assert thread_variables() == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": None}
        processes = 2 * (cores() + 1)
        assert caplog.messages == [
            f"hydra/launcher=submitit_local starts {processes} processes at once on {cores()} core"
            f"{'s' if cores() > 1 else ''}: OMP_NUM_THREADS=1 for each (set OMP_NUM_THREADS to choose another count)"
        ]
        monkeypatch.delenv("OMP_NUM_THREADS")
    # the cores are those this process may run on (taskset, a container's cpuset), not the machine's
    one_core = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from rnnreg.cpu_threads import cores"
    )
    proc = subprocess.run([sys.executable, "-c", f"{one_core}; print(cores())"], capture_output=True, text=True)
    assert proc.stdout == "1\n", proc.stderr[-2000:]


def test_a_runs_threads_line_names_the_variable_torch_took(monkeypatch):
    """torch takes MKL_NUM_THREADS over OMP_NUM_THREADS: the line names the one it took (outside a multirun: no
    launcher's reason; under DDP, Lightning's)."""
    from rnnreg.cpu_threads import threads_said

    threads = f"{torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() > 1 else ''}"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert threads_said() == f"{threads}, torch's own count (no OMP_NUM_THREADS set: set it to choose another)"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads_said() == f"{threads}, from OMP_NUM_THREADS=2"
    assert threads_said(world_size=2) == (
        f"{threads} in each of the 2 DDP processes, from OMP_NUM_THREADS=2 (DDP on a CPU: Lightning sets it to "
        "cores // trainer.devices where it was not set)"
    )
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    assert threads_said() == f"{threads}, from MKL_NUM_THREADS=1 (over OMP_NUM_THREADS=2)"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads_said() == f"{threads}, from MKL_NUM_THREADS=1"


def test_a_requeued_submitit_job_that_resumed_a_checkpoint_goes_on_from_its_own(tiny_cli, tmp_path):
    """A job that started from an earlier run's checkpoint (ckpt_path=...), stopped by submitit's signal in its
    second epoch and requeued, goes on from its own last.ckpt: the result of that resume run without a stop. Before,
    the requeued job resumed ckpt_path's checkpoint again and was refused its own folder (it holds results)."""
    first, alone, sweep = tmp_path / "first", tmp_path / "alone", tmp_path / "submitit"
    train(compose_config([*tiny_cli, "trainer.max_epochs=1", "seed=1"], first))  # (in this process: any first run)
    resume = [*tiny_cli, "trainer.max_epochs=2", "seed=1", f"ckpt_path={first}/checkpoints/last.ckpt"]
    signals = signal_at(signal.SIGUSR2, 7, epoch=1)
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-train", "-m", *resume, *signals, *launcher, check=False)
    job = sweep / "0"
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (job / "train.log").read_text()
    assert "SIGUSR2: every process stops after this step" in log and "Requeued job" in "".join(
        p.read_text() for p in (sweep / ".submitit").rglob("*_0_log.*")
    )
    assert f"resuming from {job / 'checkpoints' / 'last.ckpt'}" in log
    requeued = json.loads((job / "metrics.json").read_text())
    assert requeued["status"] == "completed" and requeued["epochs"] == 2
    train(compose_config(resume, alone))  # the same resume without a stop, in this process
    expected = json.loads((alone / "metrics.json").read_text())
    for key in ("best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert requeued[key] == expected[key], key
    weights = [load_checkpoint(d / "checkpoints/last.ckpt")["state_dict"] for d in (job, alone)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


def test_a_diverged_job_fails_alone_the_sweep_goes_on_and_the_report_lists_it(tiny_cli, tmp_path, no_wandb_credentials):
    """Job 1's lr becomes 1e20 after epoch 1: it fails (metrics.json, W&B exit code 1), jobs 0 and 2 still
    run; the sweep ends with one line naming the failed job and exit 1. W&B alone still feeds the report,
    which lists every job, the failed one as failed."""
    sweep = tmp_path / "sweep"
    proc = run(
        "rnnreg-train",
        "-m",
        *tiny_cli,
        "logger=wandb",
        "optim.decay=1.2,1e-20,1.5",
        "optim.decay_start=1",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors[0].startswith("error: job 1 (optim.decay=1e-20) failed: training loss became")
    assert errors[-1] == f"error: 1 job(s) of the multirun in {sweep} failed: 1 (optim.decay=1e-20)"
    status = {job: json.loads((sweep / job / "metrics.json").read_text()) for job in "012"}
    assert [status[job]["status"] for job in "012"] == ["completed", "failed", "completed"]
    assert [(sweep / job / "error.txt").exists() for job in "012"] == [False, True, False]
    # the resume hint names the checkpoint left by epoch 1, which exists
    checkpoint = sweep / "1" / "checkpoints" / "last.ckpt"
    assert status["1"]["resume"].endswith(f" optim.decay_start=1 ckpt_path={checkpoint}") and checkpoint.is_file()
    assert status["1"]["resume"].startswith("rnnreg-train experiment=paper_small ")  # (its own overrides: no "...")
    runs = wandb_runs(sweep)
    assert [runs[job]["exit_code"] for job in "012"] == [0, 1, 0]
    assert runs["1"]["summary"]["status"] == "failed" and "training loss became" in runs["1"]["summary"]["error"]
    # logger=wandb keeps the CSV logger: the report draws every job's validation curve
    rows = collect(sweep)
    assert [len(r["val_history"]) for r in rows] == [2, 1, 2]
    assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
    report = run("rnnreg-report", f"path={sweep}").stdout
    assert "failed" in report
    written = (sweep / "report.md").read_text()
    shared, _, written = written.partition("\n\n")  # what every job was given, once above the table
    assert shared.startswith("every run: experiment=paper_small ") and shared.endswith(" optim.decay_start=1"), shared
    table, _, rest = written.partition("\n\n")
    table = table.splitlines()
    assert len(table) == 2 + 3
    why = json.loads((sweep / "1" / "metrics.json").read_text())["error"]  # the divergence
    assert rest.startswith(f"Failed, and why:\n\n- 1: {why.splitlines()[0]}\n") and why.startswith("training loss")
    for job, line in zip("012", table[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:2] == [job, f"optim.decay={['1.2', '1e-20', '1.5'][int(job)]}"]
        if job == "1":
            assert cells[2] == "failed" and cells[4] == "—"
            continue
        metrics = status[job]
        assert cells[3] == f"{metrics['best_val_ppl']:.2f}" and cells[4] == f"{metrics['test_ppl']:.2f}"
        assert cells[5] == f"{metrics['test_ppl_batched']:.2f}" and cells[6] == "2"
    for png in ("val_ppl.png", "test_ppl.png"):
        image = matplotlib.image.imread(sweep / png)
        assert image.ndim == 3 and image.shape[0] > 100
    # no seeds repeat: the plots draw each run on its own, the failed one marked
    assert list(plot_groups(rows)) == ["optim.decay=1.2", "optim.decay=1e-20 (failed)", "optim.decay=1.5"]


def test_a_grid_of_an_optuna_search_with_intervals_is_one_line_before_any_runs(tiny_cli, tmp_path):
    """hparams_search=optuna on Optuna's grid (hydra/sweeper/sampler=grid) searches intervals, which no grid holds:
    refused in one line naming each interval left and the fix, before the sweep folder is made (before: the plugin's
    ValueError traceback, exit 1). Each searched as a choice or a range, the grid is known and not refused."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.optuna_grid import check_grid_search_space

    sweep = tmp_path / "new" / "sweep"
    grid = ["hparams_search=optuna", "hydra/sweeper/sampler=grid", "dropout=non_recurrent", "dropout.p=choice(0.3,0.5)"]
    proc = run("rnnreg-train", *tiny_cli, *grid, f"hydra.sweep.dir={sweep}", check=False)
    line = (
        "hydra/sweeper/sampler=grid visits a finite grid, but optim.decay=interval(1.1, 2.0) and "
        "model.init_scale=interval(0.02, 0.1) are intervals: search each as a choice ('optim.decay=choice(1.1,2.0)') "
        "or a range with a step, or use another sampler (leave out hydra/sweeper/sampler=grid)"
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {line}"], proc.stderr[-3000:]
    assert not (tmp_path / "new").exists()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        study = compose("train", grid[:3], return_hydra_config=True)
    with open_dict(study):  # as Hydra records the command line's searches
        study.hydra.overrides.task += [
            grid[3],
            "optim.decay=range(1.2,1.6,step=0.2)",
            "model.init_scale=choice(0.05,0.1)",
        ]
    check_grid_search_space(study)


def test_a_grid_is_refused_an_interval_optuna_cannot_list_even_one_fixed_later_and_takes_one_of_ints():
    """Optuna's grid lists an interval of ints (int(interval(1,3))), not one of floats, nor a log one (tag(log, ..)),
    which the plugin stops on; one interval is named alone, and a fixed value given after a search leaves the search
    in the plugin's grid (hparams_search=optuna's optim.decay with optim.decay=1.5 on the command line)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.optuna_grid import check_grid_search_space

    def study(given: list[str], *searches: str):
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            config = compose("train", [*given, "hydra/sweeper/sampler=grid"], return_hydra_config=True)
        with open_dict(config):  # as Hydra records the command line's searches
            config.hydra.overrides.task += list(searches)
        return config

    grid = ["hydra/sweeper=optuna", "dropout=non_recurrent"]
    check_grid_search_space(study(grid, "model.num_layers=int(interval(1,3))"))

    def refused(line: str) -> str:
        return "^" + re.escape(f"hydra/sweeper/sampler=grid visits a finite grid, but {line}")

    log_ints = "model.num_layers=tag(log,int(interval(1,4)))"
    with pytest.raises(
        ConfigError, match=refused(f"{log_ints} is an interval: search it as a choice ('model.num_layers=choice(1,4)')")
    ):
        check_grid_search_space(study(grid, log_ints))
    fixed = ["dropout.p=choice(0.3,0.5)", "optim.decay=1.5", "model.init_scale=choice(0.05,0.1)"]
    with pytest.raises(
        ConfigError, match=refused("optim.decay=interval(1.1, 2.0) is an interval: search it as a choice")
    ):
        check_grid_search_space(study(["hparams_search=optuna", *grid[1:]], *fixed))


def test_a_grid_of_a_range_optuna_counts_otherwise_is_one_line_before_any_runs(tiny_cli, tmp_path):
    """Optuna's grid counts a range's points in floating point, below its end: range(0.3,0.6) (a step of 1) has
    none, and range(0.3,0.6,step=0.1) only 0.3 and 0.4. Refused in one line saying which points each would run and
    the choice that runs the range's, before the sweep folder is made (before: a study of no trial and its best
    trial's ValueError traceback, exit 1; a study silently without 0.5). A range the grid counts as meant (of floats
    or ints; range(1.2,1.6,step=0.2) is 1.2, 1.4, where Hydra's own basic sweeper adds 1.5999999999999999) is not."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.optuna_grid import check_grid_search_space

    sweep = tmp_path / "new" / "sweep"
    grid = ["hparams_search=optuna", "hydra/sweeper/sampler=grid", "dropout=non_recurrent"]
    searches = ["optim.decay=choice(1.2,1.5)", "model.init_scale=choice(0.05,0.1)"]
    proc = run(
        "rnnreg-train", *tiny_cli, *grid, *searches, "dropout.p=range(0.3,0.6)", f"hydra.sweep.dir={sweep}", check=False
    )
    why = (
        "(Optuna's grid counts a range's points in floating point, below its end; a range without a step has a step "
        "of 1)"
    )
    line = f"hydra/sweeper/sampler=grid would run dropout.p=range(0.3,0.6) at no point, not at 0.3 {why}: " \
        "give the points you mean as a choice ('dropout.p=choice(0.3)': the range's, its end left out)"  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {line}"], proc.stderr[-3000:]
    assert not (tmp_path / "new").exists()

    def study(*ranges: str):
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            config = compose("train", grid, return_hydra_config=True)
        with open_dict(config):  # as Hydra records the command line's searches
            config.hydra.overrides.task += [*searches, *ranges]
        return config

    with pytest.raises(ConfigError) as refused:
        check_grid_search_space(study("dropout.p=range(0.3,0.6,step=0.1)", "optim.decay=range(1.1,1.5,step=0.2)"))
    assert str(refused.value) == (
        "hydra/sweeper/sampler=grid would run dropout.p=range(0.3,0.6,step=0.1) at 0.3, 0.4, not at 0.3, 0.4, 0.5; "
        f"optim.decay=range(1.1,1.5,step=0.2) at 1.1, not at 1.1, 1.3 {why}: give the points you mean as "
        "choices ('dropout.p=choice(0.3,0.4,0.5)': the range's, its end left out)"
    )
    check_grid_search_space(study("dropout.p=range(0.1,0.5,step=0.1)", "optim.decay=range(1.2,1.6,step=0.2)"))
    ints = ("dropout.p=choice(0.3,0.5)", "model.num_layers=range(1,3)")
    check_grid_search_space(study(*ints, "seed=range(1,9,step=4)"))
    # the grid's points as the range's are written (0.30000000000000004 is the plugin's 0.1 + 0.2)
    with pytest.raises(ConfigError, match=r"dropout.p=range\(0.1,0.7,step=0.2\) at 0.1, 0.3, not at 0.1, 0.3, 0.5 "):
        check_grid_search_space(study("dropout.p=range(0.1,0.7,step=0.2)"))
    # a shuffled range is a choice of its points to the plugin: all of them, in another order
    check_grid_search_space(study(*ints, "seed=shuffle(range(1,10,step=4))"))
    # of ints too, where the span is no multiple of the step: the plugin's grid ends a step early
    ended_early = r"^hydra/sweeper/sampler=grid would run seed=range\(1,10,step=4\) at 1, 5, not at 1, 5, 9 \(.*\): "
    with pytest.raises(
        ConfigError, match=ended_early + r"give the points you mean as a choice \('seed=choice\(1,5,9\)'"
    ):
        check_grid_search_space(study(*ints, "seed=range(1,10,step=4)"))


def test_a_grid_searched_through_an_interpolation_is_checked_as_optunas_plugin_reads_it(
    tiny_cli, tmp_path, monkeypatch
):
    """Hydra resolves the sweeper's config as it makes Optuna's plugin, so a search space's value that reads
    ${oc.env:SPACE} is the search SPACE holds: an interval on the grid is refused in one line, exit 2, before the
    sweep folder is made, as one written out is (before: read as written, a fixed value, the grid was not checked:
    the plugin's ValueError traceback, exit 1, its folder made); a choice so given is not refused."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.optuna_grid import check_grid_search_space

    sweep = tmp_path / "new" / "sweep"
    space = "{dropout.p:'choice(0.3,0.5)',optim.decay:'choice(1.2)',model.init_scale:'${oc.env:SPACE}'}"
    grid = [
        "hparams_search=optuna",
        "hydra/sweeper/sampler=grid",
        "dropout=non_recurrent",
        f"hydra.sweeper.params={space}",
    ]
    proc = run(
        "rnnreg-train", *tiny_cli, *grid, f"hydra.sweep.dir={sweep}", check=False, env={"SPACE": "interval(0.05,0.1)"}
    )
    line = (
        "hydra/sweeper/sampler=grid visits a finite grid, but model.init_scale=interval(0.05,0.1) is an interval: "
        "search it as a choice ('model.init_scale=choice(0.05,0.1)') or a range with a step, or use another sampler "
        "(leave out hydra/sweeper/sampler=grid)"
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {line}"], proc.stderr[-3000:]
    assert not (tmp_path / "new").exists()
    monkeypatch.setenv("SPACE", "choice(0.05,0.1)")
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        check_grid_search_space(compose("train", grid, return_hydra_config=True))


def test_optuna_study_goes_on_past_a_failed_trial(tiny_cli, tmp_path):
    """A trial that diverges is a FAIL trial (the sweeper logs `Failed experiment: <why>` as it tells Optuna),
    the next trials run, and the best value comes from the completed ones."""
    sweep = tmp_path / "optuna"
    proc = run(
        "rnnreg-train",
        *tiny_cli,
        "hparams_search=optuna",
        "dropout=non_recurrent",  # the search space's dropout.p drops something
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.params={optim.decay:'choice(1.2,1e-20)'}",  # merged into the default search space
        "optim.decay_start=1",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    statuses = {
        job.name: json.loads((job / "metrics.json").read_text())["status"] for job in sweep.iterdir() if job.is_dir()
    }
    assert len(statuses) == 3 and "failed" in statuses.values() and "completed" in statuses.values()
    # each trial its own dropout rate from the default search space, into which the decay choice merged
    rates = {yaml.safe_load((sweep / job / ".hydra/config.yaml").read_text())["dropout"]["p"] for job in statuses}
    assert len(rates) == 3 and all(0.2 <= r <= 0.7 for r in rates)
    failed = sorted(job for job, status in statuses.items() if status == "failed")
    for job in failed:
        assert yaml.safe_load((sweep / job / ".hydra/config.yaml").read_text())["optim"]["decay"] == 1e-20
    assert proc.stdout.count("Failed experiment: training loss became") == len(failed)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {len(failed)} job(s)")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    completed = [j for j, s in statuses.items() if s == "completed"]
    best_val = min(json.loads((sweep / j / "metrics.json").read_text())["best_val_ppl"] for j in completed)
    assert best["best_value"] == pytest.approx(best_val) and best["best_params"]["optim.decay"] == 1.2


@pytest.mark.parametrize(
    "stop",
    [[], ["hydra.sweeper.max_failure_rate=0"]],
    ids=["every-trial-fails", "max-failure-rate-stops-it"],
)
def test_an_optuna_study_whose_trials_fail_on_their_checkpoints_ends_as_a_basic_sweep_does(resumable, tmp_path, stop):
    """A study whose trials draw checkpoints they stop on (a file torch reads that is no rnnreg checkpoint, one of
    another model size): each is a FAIL trial with its line and its error.txt, and the study ends as a basic sweep
    ends, its failed jobs listed on the last line, exit 1, where no trial completed (before: Optuna's `No trials are
    completed yet` traceback, without the list) and where more of a batch failed than hydra.sweeper.max_failure_rate
    allows (before: the first failed trial's traceback), then with the trials after it not run."""
    not_ours = tmp_path / "not_ours.ckpt"
    torch.save({"x": torch.zeros(1)}, not_ours)
    plain = resumable["plain"]  # (of hidden size 16: another shape for these trials' 24)
    lines = {
        str(not_ours): f"{not_ours} is not a rnnreg checkpoint (no state_dict and hyper_parameters): give a checkpoint "
        "written by rnnreg-train",
        str(plain): f"model.hidden_size=24 where {plain} was trained with model.hidden_size=16: ",
    }
    sweep = tmp_path / "optuna"
    study = [
        "hparams_search=optuna",
        "dropout=non_recurrent",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=2",
    ]
    args = [
        *resumable["tiny"],
        "trainer.max_epochs=2",
        "model.hidden_size=24",
        *study,
        *stop,
        f"ckpt_path=choice({not_ours},{plain})",
    ]
    proc = run("rnnreg-train", *args, f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Error executing job" not in proc.stderr  # (Hydra's second line for a failed job: a basic sweep has one)
    jobs = sorted((job for job in sweep.iterdir() if job.is_dir()), key=lambda job: int(job.name))
    assert [job.name for job in jobs] == (["0"] if stop else ["0", "1"])
    for job in jobs:
        drawn = yaml.safe_load((job / ".hydra/config.yaml").read_text())["ckpt_path"]
        assert (job / "error.txt").read_text().startswith(lines[drawn])
        assert re.search(rf"^error: job {job.name} \(.*\) failed: {re.escape(lines[drawn])}", proc.stderr, re.M)
    listed = ", ".join(rf"{job.name} \(dropout\.p=[^)]*\)" for job in jobs)
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"error: {len(jobs)} job\(s\) of the multirun in {re.escape(str(sweep))} failed: {listed}", last
    )
    assert not (sweep / "optimization_results.yaml").exists()  # (no trial completed: no best one)


def test_an_optuna_grid_whose_last_point_fails_on_its_checkpoint_ends_as_a_basic_sweep_does(resumable, tmp_path):
    """Optuna's grid sampler stops its study once the trial of its last point is told (Study.stop), which raised
    where that trial failed, here on a checkpoint it stops on: the study ended with that RuntimeError's traceback.
    Each trial is now a FAIL trial with its line and its error.txt, and the study ends as a basic sweep ends."""
    not_ours = tmp_path / "not_ours.ckpt"
    torch.save({"x": torch.zeros(1)}, not_ours)
    plain = resumable["plain"]  # (of hidden size 16: another shape for these trials' 24)
    sweep = tmp_path / "grid"
    grid = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", f"ckpt_path={not_ours},{plain}"]
    args = ["-m", *resumable["tiny"], "trainer.max_epochs=2", "model.hidden_size=24", *grid]
    proc = run("rnnreg-train", *args, f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Error executing job" not in proc.stderr  # (Hydra's second line for a failed job: a basic sweep has one)
    drawn = {job: yaml.safe_load((sweep / job / ".hydra/config.yaml").read_text())["ckpt_path"] for job in ("0", "1")}
    assert sorted(drawn.values()) == sorted([str(not_ours), str(plain)])
    for job, checkpoint in drawn.items():
        line = (sweep / job / "error.txt").read_text().strip()
        assert line.startswith(
            f"{not_ours} is not a rnnreg checkpoint"
            if checkpoint == str(not_ours)
            else f"model.hidden_size=24 where {plain} was trained with model.hidden_size=16: "
        )
        assert f"error: job {job} (ckpt_path={checkpoint}) failed: {line}" in proc.stderr.splitlines()
    listed = f"0 (ckpt_path={drawn['0']}), 1 (ckpt_path={drawn['1']})"
    assert proc.stderr.strip().splitlines()[-1] == f"error: 2 job(s) of the multirun in {sweep} failed: {listed}"


def test_an_optuna_study_whose_every_checkpoint_stops_its_trials_is_refused_before_it_starts(
    resumable, tmp_path, monkeypatch
):
    """A study whose every ckpt_path (its fixed one, or each choice of a searched one) is one a trial stops on (a
    file that is no rnnreg checkpoint, a missing file or a folder, `last` that finds none, under logger=wandb one
    whose W&B run id is none) is refused with the lines its trials would stop on, exit 2, before the sweep folder
    is made (before: each trial ran to its failure, exit 1). A study with one choice a trial may go on from (null,
    a checkpoint it reads, one whose bad run id a trial without W&B never reads) is left to its trials, and a basic
    sweep to its jobs, each failing alone (test_a_checkpoint_the_check_cannot_read_is_left_to_its_jobs_own_line)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnreg import CONF_DIR
    from rnnreg.errors import ConfigError
    from rnnreg.optuna_study import check_study_checkpoints

    not_ours, also_not_ours, no_run_id = tmp_path / "x1.ckpt", tmp_path / "x2.ckpt", tmp_path / "no_run_id.ckpt"
    torch.save({"x": torch.zeros(1)}, not_ours)
    torch.save({"x": 2}, also_not_ours)
    checkpoint = torch.load(resumable["w1"] / "last.ckpt", weights_only=True)
    checkpoint["wandb_run_id"] = "a/b"
    torch.save(checkpoint, no_run_id)
    missing, folder, plain = tmp_path / "missing.ckpt", tmp_path, resumable["plain"]

    def ours(path: Path) -> str:
        return f"{path} is not a rnnreg checkpoint (no state_dict and hyper_parameters): give a checkpoint written by"

    def study(*given: str, ckpt_path: str | None = None, sweeper: tuple = ("hparams_search=optuna",)):
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            config = compose("train", ["experiment=paper_small", *sweeper, *given], return_hydra_config=True)
        if ckpt_path is not None:
            with open_dict(config):  # as Hydra records the command line's search
                config.hydra.overrides.task.append(f"ckpt_path={ckpt_path}")
        return config

    searched = f"choice({not_ours},{no_run_id})"
    with pytest.raises(ConfigError) as refused:
        check_study_checkpoints(study("logger=wandb", ckpt_path=searched))
    every = f"ckpt_path={searched}: every trial would stop on the checkpoint it draws: "
    assert str(refused.value).startswith(f"{every}{ours(not_ours)} rnnreg-train; {no_run_id} holds 'a/b' as its W&B")
    with pytest.raises(ConfigError, match=f"^{re.escape(ours(not_ours))} rnnreg-train$"):
        check_study_checkpoints(study(f"ckpt_path={not_ours}"))  # (every trial's: a single run's line)
    marker, crafted = tmp_path / "ran", tmp_path / "crafted.ckpt"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state_dict": {}, "hyper_parameters": {}, "wandb_run_id": Payload()}, crafted)
    with pytest.raises(ConfigError, match=re.escape(f"{crafted} is not a rnnreg checkpoint: it contains objects")):
        check_study_checkpoints(study(ckpt_path=f"choice({not_ours},{crafted})"))
    assert not marker.exists()  # (read as data only)
    with pytest.raises(ConfigError, match=f"^{re.escape(every.replace(searched, f'choice({missing},{folder})'))}"):
        check_study_checkpoints(study(ckpt_path=f"choice({missing},{folder})"))
    empty = tmp_path / "no_runs"
    with pytest.raises(ConfigError, match=f"^ckpt_path=last: no earlier run of paper_small .* under {empty}/train"):
        check_study_checkpoints(study(f"paths.output_root={empty}", "ckpt_path=last"))
    grid = ("hydra/sweeper=optuna", "hydra/sweeper/sampler=grid")
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path=last,{not_ours}: every trial would stop")):
        check_study_checkpoints(study(f"paths.output_root={empty}", ckpt_path=f"last,{not_ours}", sweeper=grid))
    for left, given in [
        (f"choice({not_ours},{no_run_id})", ["logger=csv"]),  # (a trial without W&B reads no run id)
        (f"choice({not_ours},{plain})", []),
        (f"choice({not_ours},null)", []),
        (f"choice({not_ours},last)", [f"paths.output_root={resumable['root']}"]),  # (it finds w2's)
        (f"choice({not_ours},{tmp_path}/${{dropout.p}}.ckpt)", []),  # (a searched key: known as a trial runs)
    ]:
        check_study_checkpoints(study(*given, ckpt_path=left))
    check_study_checkpoints(study(ckpt_path=f"{not_ours},{also_not_ours}", sweeper=()))  # (a basic sweep's)
    with monkeypatch.context() as off:  # W&B off: no trial has a W&B logger, none reads the run id
        off.setenv("WANDB_MODE", "disabled")
        check_study_checkpoints(study("logger=wandb", ckpt_path=searched))
    # a space's ${...} that the plugin resolves to a search (its params read resolved), of one good checkpoint
    monkeypatch.setenv("SEARCHED_CKPTS", f"choice({not_ours},{plain})")
    check_study_checkpoints(study("+hydra.sweeper.params.ckpt_path=${oc.env:SEARCHED_CKPTS}"))

    sweep = tmp_path / "new" / "study"
    args = [*resumable["tiny"], "hparams_search=optuna", "dropout=non_recurrent", "hydra/sweeper/sampler=random"]
    searched = f"choice({not_ours},{also_not_ours})"
    proc = run("rnnreg-train", *args, f"ckpt_path={searched}", f"hydra.sweep.dir={sweep}", check=False)
    lines = f"{ours(not_ours)} rnnreg-train; {ours(also_not_ours)} rnnreg-train"
    expected = f"error: ckpt_path={searched}: every trial would stop on the checkpoint it draws: {lines}"
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [expected], proc.stderr[-3000:]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("rate", [0, 1], ids=["max-failure-rate-stops-it", "no-trial-completed"])
def test_an_optuna_study_with_a_trial_that_crashed_keeps_the_plugins_traceback(resumable, tmp_path, rate):
    """A batch of two trials, one failed on its line (a file that is no rnnreg checkpoint), then one that crashed
    (a bug in a callback, in the epoch it resumes): the crash keeps Hydra's line for it and the plugin's traceback,
    where more of the batch failed than max_failure_rate allows and where no trial completed; it is not ended as a
    basic sweep ends."""
    not_ours = tmp_path / "not_ours.ckpt"
    torch.save({"x": torch.zeros(1)}, not_ours)
    plain = resumable["plain"]  # (of this model's shape, its one epoch completed: the crash is in the second)
    sweep = tmp_path / "optuna"
    study = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0"]
    study += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", f"hydra.sweeper.max_failure_rate={rate}"]
    crash = ["+callbacks.crash._target_=helpers.RaiseAtFirstWindow", "trainer.max_epochs=2"]
    args = ["-m", *resumable["tiny"], *crash, *study, f"ckpt_path=choice({plain},{not_ours})"]
    proc = run("rnnreg-train", *args, f"hydra.sweep.dir={sweep}", check=False)
    drawn = [yaml.safe_load((sweep / job / ".hydra/config.yaml").read_text())["ckpt_path"] for job in ("0", "1")]
    assert drawn == [str(not_ours), str(plain)]  # (the seed's draws: the plugin raises the first failed trial's error)
    assert (sweep / "0" / "error.txt").read_text().startswith(f"{not_ours} is not a rnnreg checkpoint")
    assert re.search(
        rf"^Error executing job with overrides: \[.*'ckpt_path={re.escape(str(plain))}'", proc.stderr, re.M
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "of the multirun in" not in proc.stderr


def test_the_optuna_sweeps_end_is_changed_once_in_a_process(monkeypatch):
    """A process that runs a second multirun (the API, a notebook) asks again: the plugin's sweep is wrapped once
    (twice, the inner wrapper's end took back the launcher's launch and the outer one's then failed)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    from rnnreg.optuna_study import end_studies_as_sweeps_end

    monkeypatch.setattr(OptunaSweeperImpl, "sweep", OptunaSweeperImpl.sweep)  # (the plugin's own after the test)
    end_studies_as_sweeps_end()
    once = OptunaSweeperImpl.sweep
    end_studies_as_sweeps_end()
    assert OptunaSweeperImpl.sweep is once and once.ends_as_a_sweep


def test_an_optuna_study_shows_no_alembic_lines_and_records_its_command(tiny_corpus, tmp_path):
    """hparams_search=optuna began with seven `[HYDRA] setup plugin alembic...` lines: Optuna's database layer logs
    at INFO as it is imported, through Hydra's console handler. Its folder has the study's command and search space
    in multirun.yaml, as a basic sweep's has (Optuna's sweeper wrote none)."""
    tiny = [
        *TINY,
        f"data.data_dir={tiny_corpus}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "test=false",
    ]
    study = ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=1"]
    proc = run("rnnreg-train", *tiny, *study, f"hydra.sweep.dir={tmp_path}/optuna")
    assert "Study name:" in proc.stdout and "alembic" not in proc.stdout + proc.stderr
    record = OmegaConf.load(tmp_path / "optuna/multirun.yaml")
    assert record.hydra.sweeper.n_trials == 1 and "dropout.p" in record.hydra.sweeper.params
    assert list(record.hydra.overrides.task) == [*tiny, *study[:2]]


def test_an_optuna_trial_that_completed_with_no_validation_fails_on_its_line(tiny_corpus, tmp_path):
    """A trial whose run validated no epoch (trainer.check_val_every_n_epoch over its epochs) gives the study no
    best_val_ppl: it fails with its line and its error.txt, and the study ends as a basic sweep ends (before: Optuna
    was told FAIL, `Return value must be float-castable. Got 'None'`, and where no trial completed the study ended
    in Optuna's `No trials are completed yet` traceback, its sweep's end never reached)."""
    tiny = [*TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    tiny += ["test=false", "trainer.check_val_every_n_epoch=2"]
    sweep = tmp_path / "optuna"
    study = ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=1"]
    proc = run("rnnreg-train", *tiny, *study, f"hydra.sweep.dir={sweep}", check=False)
    line = (
        "it completed with no best_val_ppl, the value the study minimises (no validation ran: its train.log says "
        "why): validate at least once (trainer.check_val_every_n_epoch at most trainer.max_epochs)"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(rf"^error: job 0 \(dropout\.p=[^)]*\) failed: {re.escape(line)}$", proc.stderr, re.M)
    assert (sweep / "0" / "error.txt").read_text() == f"{line}\n"
    assert re.fullmatch(
        rf"error: 1 job\(s\) of the multirun in {re.escape(str(sweep))} failed: 0 \(dropout\.p=[^)]*\)",
        proc.stderr.strip().splitlines()[-1],
    )


def test_a_run_resumed_in_its_folder_keeps_its_earlier_csv_rows(tiny_cli, tmp_path):
    """SIGTERM in epoch 1, then `ckpt_path=last` in the same folder: csv/metrics.csv keeps the rows logged before
    the stop (Lightning's CSVLogger deleted them) and no row twice; the report has every epoch's validation."""
    job, overrides = tmp_path / "job", [*tiny_cli, "logger=csv", "trainer.log_every_n_steps=10", "test=false"]
    signal = ["+callbacks.stop._target_=helpers.SignalAt", "+callbacks.stop.signum=15", "+callbacks.stop.window=15"]
    stopped = run("rnnreg-train", *overrides, *signal, f"hydra.run.dir={job}", check=False)
    assert stopped.returncode == 143 and json.loads((job / "metrics.json").read_text())["status"] == "interrupted"
    before = (job / "csv" / "metrics.csv").read_text().splitlines()
    assert len(before) > 2  # rows of the stopped part
    run("rnnreg-train", *overrides, f"hydra.run.dir={job}", "ckpt_path=last")
    after = (job / "csv" / "metrics.csv").read_text().splitlines()
    rows = [dict(zip(after[0].split(","), line.split(","))) for line in after[1:]]
    kept = [dict(zip(before[0].split(","), line.split(","))) for line in before[1:]]
    assert [row["train/loss"] for row in rows[: len(kept)]] == [row["train/loss"] for row in kept]
    steps = [int(row["step"]) for row in rows if row["train/loss"]]
    assert steps == sorted(set(steps)) and steps[0] == 9  # from the first window on, none twice
    assert list(by_epoch(job)) == [1, 2] and collect(job)[0]["status"] == "completed"


def test_a_resumed_csv_keeps_only_the_earlier_rows_before_its_first_step(tmp_path):
    """KeptRowsWriter: the earlier part's rows at or after the resumed part's first logged step (written after
    the checkpoint it goes on from, by a run killed hard) are redone by the resumed part: each step once, the earlier
    rows before them."""
    import csv

    from rnnreg.loggers import KeptRowsWriter

    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n0,9,4.0\n0,19,3.5\n0,29,3.0\n")
    writer = KeptRowsWriter(str(tmp_path), keep=True)
    writer.log_metrics({"epoch": 0, "train/loss": 3.4}, step=19)
    writer.log_metrics({"epoch": 0, "train/loss": 2.9}, step=29)
    writer.save()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = [(row["step"], row["train/loss"]) for row in csv.DictReader(f)]
    assert rows == [("9", "4.0"), ("19", "3.4"), ("29", "2.9")]


def test_a_csv_kept_on_a_resume_is_not_warned_of_as_deleted(tmp_path):
    """KeptRowsWriter with rows to keep says nothing of Lightning's "previous log files ... will be deleted" (they
    are kept); a fresh writer over an old file still warns of it, as Lightning's does."""
    import warnings

    from rnnreg.loggers import KeptRowsWriter

    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n0,9,4.0\n")
    for keep, warned in ((True, False), (False, True)):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            KeptRowsWriter(str(tmp_path), keep=keep)
        assert any("will be deleted" in str(w.message) for w in said) == warned, [str(w.message) for w in said]


def test_seeds_added_two_sweeps_deep_join_the_outermost_sweeps_group(tmp_path):
    """A sweep run into a folder inside a sweep that is itself inside another (study/more_seeds/again) joins the
    outermost sweep's W&B group, as one level down does."""
    from rnnreg.loggers import sweep_group

    study = tmp_path / "study"
    (study / "more_seeds" / "again").mkdir(parents=True)
    (study / "sweep.yaml").write_text("swept: [seed]\n")
    (study / "more_seeds" / "multirun.yaml").write_text("hydra: {}\n")
    assert [sweep_group(study / sub) for sub in ("more_seeds/again", "more_seeds", ".")] == [
        named_sweep_group(study)
    ] * 3


def test_sweeps_in_folders_of_one_name_are_two_wandb_groups_and_a_dated_sweep_keeps_its_name(tmp_path):
    """Two sweeps into folders of one name (hydra.sweep.dir=<parent>/ablation from two parents) are two W&B groups,
    each the name and a short hash of its real path (the same folder reached through a link: the same group); a sweep
    in its default dated folder keeps that name alone, unique and readable. Before: both were `ablation`, one group
    whose mean mixed two sweeps."""
    from rnnreg.loggers import sweep_group

    first, second = tmp_path / "lab_a" / "ablation", tmp_path / "lab_b" / "ablation"
    assert sweep_group(first) == named_sweep_group(first) != sweep_group(second) == named_sweep_group(second)
    assert re.fullmatch(r"ablation-[0-9a-f]{6}", sweep_group(first))
    first.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "lab_a")
    assert sweep_group(tmp_path / "link" / "ablation") == sweep_group(first)
    dated = tmp_path / "train" / "multirun" / "paper_small" / "2026-12-06_15-40-00-123456"
    assert sweep_group(dated) == "2026-12-06_15-40-00-123456"


def test_stacked_seeds_added_in_a_sweep_join_its_wandb_group_named_and_tagged_in_csv(
    tiny_cli, tmp_path, no_wandb_credentials
):
    """More seeds in a folder inside a sweep (hydra.sweep.dir=<sweep>/more_seeds) join that sweep's W&B group,
    not a `more_seeds` group that another study shares, named as that sweep names its jobs: by its swept keys and
    their own (before: `dropout=none` beside the sweep's `dropout=none,seed=1`, its seed left out; found by a probe);
    a stacked job's csv/hparams.yaml has the tags and choices, as a job run alone."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "sweep.yaml").write_text("swept: [dropout, seed]\n")  # the sweep the seeds are added to
    sweep = study / "more_seeds"
    run(
        "rnnreg-train",
        "-m",
        *tiny_cli,
        "hydra/launcher=stacked",
        "logger=wandb",
        "tags=[ablation,tiny]",
        "trainer.max_epochs=1",
        "test=false",
        "dropout=none,recurrent",
        "dropout.p=0.3",
        "seed=3",
        f"hydra.sweep.dir={sweep}",
    )
    runs = wandb_runs(sweep)
    assert {r["group"] for r in runs.values()} == {f"paper_small/{named_sweep_group(study)}"}
    assert [runs[job]["name"] for job in "01"] == ["dropout=none,seed=3", "dropout=recurrent,seed=3"]
    wandb_run = runs["0"]
    hparams = yaml.safe_load((sweep / "0" / "csv" / "hparams.yaml").read_text())
    assert hparams["tags"] == ["ablation", "tiny"] and hparams["choices"]["dropout"] == "none"
    assert hparams["seed"] == 3 and hparams["vocab_size"] > 0 and hparams["optim"]["clip"] == 5.0
    # its W&B run's config is what its csv/hparams.yaml holds: the config, then the task's hyperparameters
    config = {key: value for key, value in wandb_run["config"].items() if key != "_wandb"}
    assert config == hparams


@pytest.mark.parametrize(
    "overrides,logged",
    [
        (["regularizer=[layer_norm,weight_decay]"], "layer_norm+weight_decay"),  # Hydra leaves a list group out
        (["regularizer=layer_norm"], "layer_norm"),
        (["dropout=recurrent"], "none"),
        (["regularizer=[]"], "none"),
    ],
)
def test_logged_choices_name_every_regularizer(overrides, logged):
    """The `choices` every logger records (one W&B column each): the regularizers a run combines, by name."""
    from hydra import compose, initialize_config_dir

    from rnnreg import CONF_DIR
    from rnnreg.loggers import group_choices

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    choices = group_choices(cfg.hydra)
    assert choices["regularizer"] == logged and choices["experiment"] == "paper_medium"
    assert choices["dropout"] == ("recurrent" if "dropout=recurrent" in overrides else "non_recurrent")
