"""DDP on CPU (gloo), two real processes: the same training as one process over the same global batch."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from helpers import TINY, assert_diverges_in_epoch_2, run, write_corpus
from rnnreg.report import history
from rnnreg.train import train

COMMON = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=30",
    "dropout=none",
    "logger=csv",
    "trainer.log_every_n_steps=1",
)


class SaveAt(L.Callback):
    """Saves a mid-epoch checkpoint `path` on every rank just before window `window` + 1 of the first epoch."""

    def __init__(self, path: str, window: int):
        self.path, self.window = path, window

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.window:
            trainer.save_checkpoint(self.path)


def ddp_args(corpus: Path) -> list[str]:
    return ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", *COMMON, "trainer=ddp", "trainer.devices=2"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> SimpleNamespace:
    """Two DDP processes (gloo) on the tiny corpus, which also save a checkpoint after window 7 (a callback:
    the run goes on unchanged); both tests below read this one run."""
    root = tmp_path_factory.mktemp("ddp")
    corpus, whole, mid = write_corpus(root / "corpus"), root / "whole", root / "mid.ckpt"
    run(
        "rnnreg-train",
        *ddp_args(corpus),
        "+callbacks.save_at._target_=test_ddp.SaveAt",
        f"+callbacks.save_at.path={mid}",
        "+callbacks.save_at.window=7",
        f"hydra.run.dir={whole}",
    )
    return SimpleNamespace(corpus=corpus, whole=whole, mid=mid)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(ddp_run, tiny_cfg, tmp_path):
    ddp_dir = ddp_run.whole
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    single = train(tiny_cfg(*COMMON, run="single"))  # the same corpus (write_corpus is seeded), one process
    for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
    ddp_losses, single_losses = history(ddp_dir, "train/loss"), history(tmp_path / "single", "train/loss")
    assert len(ddp_losses) == len(single_losses) == 60
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)  # every step, not just the end
    a = torch.load(ddp_dir / "checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "single/checkpoints/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 60  # every window of the 4 streams, split 2 + 2
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][name], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_ddp_mid_epoch_checkpoint_resumes_exactly(ddp_run, tmp_path):
    """A checkpoint taken after window 7 by 2 DDP processes gathers the carried state of all 4 streams from
    both ranks; 2 processes resumed from it = the 2 processes that went on (per-step losses, weights).
    (The checkpoint is saved by a callback, not a signal: Lightning's SIGTERM handler itself broadcasts
    between ranks, which can deadlock a local 2-process run; single-process stops are tested with signals.)"""
    whole, resumed, mid = ddp_run.whole, tmp_path / "resumed", ddp_run.mid
    carry = torch.load(mid, weights_only=False)["train_carry"]
    assert carry["state"][0].shape == (2, 4, 16) and carry["tokens"] == 7 * 5 * 4  # both ranks' streams and sums
    run("rnnreg-train", *ddp_args(ddp_run.corpus), f"ckpt_path={mid}", f"hydra.run.dir={resumed}")
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, resumed))
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
    assert history(resumed, "train/loss") == pytest.approx(history(whole, "train/loss")[7:], rel=1e-6)
    a, b = (torch.load(d / "checkpoints/last.ckpt", weights_only=False) for d in (whole, resumed))
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_ddp_evaluation_logs_and_writes_its_metrics_once(ddp_run, tmp_path):
    """rnnreg-eval trainer=ddp says its batch-size warning and its metrics once, as one process does (before: every
    process said both and wrote metrics.json), and its one-stream test perplexity is the run's."""
    folder, last = tmp_path / "eval", ddp_run.whole / "checkpoints" / "last.ckpt"
    args = ["data=text", f"data.data_dir={ddp_run.corpus}", "data.batch_size=2", "trainer.enable_progress_bar=false"]
    args += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"ckpt_path={last}"]
    proc = run("rnnreg-eval", *args, f"hydra.run.dir={folder}")
    ours = [line.split(" - ", 1)[1] for line in proc.stdout.splitlines() if "][rnnreg][" in line]
    assert [line.split(":")[0] for line in ours] == [
        f"{last} was trained with data.batch_size=4 and is evaluated with 2",
        "metrics",
    ]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert ours[1] == f"metrics: {metrics}"
    trained = json.loads((ddp_run.whole / "metrics.json").read_text())
    assert metrics["test_ppl"] == pytest.approx(trained["test_ppl"], rel=1e-5)  # one stream: any batch size


def test_batch_not_divisible_by_world_size_is_an_error(tiny_corpus, tmp_path):
    proc = run(
        "rnnreg-train",
        "experiment=paper_small",
        *TINY,
        f"data.data_dir={tiny_corpus}",
        "data.batch_size=3",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={tmp_path}/run",
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: data.batch_size=3 is not divisible by the 2 DDP processes (trainer.devices x trainer.num_nodes): "
        "set data.batch_size to a multiple of 2"
    ]
    assert not (tmp_path / "run").exists()  # refused before Hydra created anything


@pytest.mark.slow
def test_ddp_divergence_stops_every_process(tiny_corpus, tmp_path):
    """The ranks agree on a diverged loss before stopping: both stop with the error, none hangs in a collective."""
    assert_diverges_in_epoch_2(tiny_corpus, tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
