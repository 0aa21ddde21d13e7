"""Tracking and sweeps as users run them: real processes, offline W&B runs, multirun, Optuna, joblib, report."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from helpers import TINY, run
from rnnreg.report import collect, plot_groups


@pytest.fixture
def tiny_cli(tiny_corpus: Path) -> list[str]:
    return [
        "experiment=paper_small",
        *TINY,
        f"data.data_dir={tiny_corpus}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=20",
    ]


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def wandb_log_records(raw: bytes):
    """Payloads of a .wandb transaction log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
    records (crc32, little-endian u16 length, type 1 full / 2 first / 3 middle / 4 last)."""
    assert raw[:4] == b":W&B", "not a W&B transaction log"
    pos, block, pending = 7, 32 * 1024, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        payload = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            yield pending
            pending = b""


def read_wandb_run(run_dir: Path) -> dict:
    """Config, metric history, summary and exit status, read back from the run's own .wandb file with
    wandb's reader (offline runs keep them there until `wandb sync`)."""
    from wandb.proto import wandb_internal_pb2

    def key(item) -> str:
        return item.key or ".".join(item.nested_key)

    run = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for data in wandb_log_records(next(run_dir.glob("*.wandb")).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run["history"].append({key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "config":
            run["config"] |= {key(item): json.loads(item.value_json) for item in record.config.update}
        elif kind == "summary":
            run["summary"] |= {key(item): json.loads(item.value_json) for item in record.summary.update}
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def test_wandb_offline_multirun_with_joblib(tiny_cli, tmp_path, no_wandb_credentials):
    sweep = tmp_path / "sweep"
    proc = run(
        "rnnreg-train",
        "-m",
        *tiny_cli,
        "logger=wandb",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "dropout=none,non_recurrent",
        "dropout.p=0.3",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.stdout.count("wandb sync") == 2
    dropouts = set()
    for job in ("0", "1"):
        runs = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, job  # one W&B run per job
        wandb_run = read_wandb_run(runs[0])
        assert wandb_run["exit_code"] == 0  # finished cleanly
        assert wandb_run["config"]["model"]["hidden_size"] == 16  # the resolved Hydra config is the run config
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert wandb_run["summary"]["test_ppl"] == pytest.approx(metrics["test_ppl"])
        history = wandb_run["history"]
        val = [row["val/ppl"] for row in history if "val/ppl" in row]
        assert len(val) == 2 and val[-1] == pytest.approx(metrics["val_ppl"])
        assert any("train/words_per_sec" in row for row in history) and any("train/lr" in row for row in history)
        dropouts.add(wandb_run["config"]["dropout"]["input"])
    assert dropouts == {0.0, 0.3}  # each job's own resolved config


def test_multirun_report_lists_runs_and_failures(tiny_cli, tmp_path):
    sweep = tmp_path / "sweep"
    # the third job's lr makes training diverge: it fails, and the sweep stops there (an impossible value
    # would stop the whole sweep before its first job: rnnreg.schema)
    proc = run("rnnreg-train", "-m", *tiny_cli, "optim.lr=1.0,0.5,1e+30", f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 2 and "training loss became" in proc.stderr
    report = run("rnnreg-report", f"path={sweep}").stdout
    table = (sweep / "report.md").read_text().strip().splitlines()
    assert len(table) == 2 + 3
    for job, line in zip("012", table[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == job
        if job == "2":
            assert cells[2] == "failed" and cells[4] == "—"
            continue
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert cells[1] == f"optim.lr={['1.0', '0.5'][int(job)]}"
        assert cells[3] == f"{metrics['best_val_ppl']:.2f}" and cells[4] == f"{metrics['test_ppl']:.2f}"
        assert cells[5] == f"{metrics['test_ppl_batched']:.2f}" and cells[6] == "2"
    for png in ("val_ppl.png", "test_ppl.png"):
        image = matplotlib.image.imread(sweep / png)
        assert image.ndim == 3 and image.shape[0] > 100
    assert "failed" in report
    # no seeds repeat: the plots draw each run on its own, the failed one marked
    assert list(plot_groups(collect(sweep))) == [
        "optim.lr=1.0",
        "optim.lr=0.5",
        "optim.lr=1e+30 (failed)",
    ]


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
    table = (sweep / "report.md").read_text().split("Over seeds:")[1].strip().splitlines()
    assert len(table) == 2 + 2  # one row per init scale, over its two seeds
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


def test_optuna_search_runs_three_trials(tiny_cli, tmp_path):
    sweep = tmp_path / "optuna"
    run(
        "rnnreg-train",
        *tiny_cli,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep}",
        "trainer.max_epochs=1",
    )
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert len(jobs) == 3
    rates = {yaml.safe_load((j / ".hydra/config.yaml").read_text())["dropout"]["p"] for j in jobs}
    assert len(rates) == 3 and all(0.2 <= r <= 0.7 for r in rates)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_val = min(json.loads((j / "metrics.json").read_text())["best_val_ppl"] for j in jobs)
    assert best["best_value"] == pytest.approx(best_val)


def test_submitit_local_launcher(tiny_cli, tmp_path):
    sweep = tmp_path / "submitit"
    run(
        "rnnreg-train",
        "-m",
        *tiny_cli,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "trainer.max_epochs=1",
        "seed=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert json.loads((sweep / "0" / "metrics.json").read_text())["epochs"] == 1
