"""DDP on CPU (gloo), two real processes: the same training as one process over the same global batch."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from rnnreg.train import train
from test_cli import run

COMMON = ("trainer.max_epochs=2", "trainer.limit_train_batches=30", "dropout=none", "logger=csv",
          "trainer.log_every_n_steps=1")


def step_losses(run_dir) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_cfg, tiny_corpus, tmp_path):
    from conftest import TINY
    ddp_dir = tmp_path / "ddp"
    run("rnnreg-train", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", *COMMON,
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={ddp_dir}")
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    single = train(tiny_cfg(*COMMON, run="single"))
    for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
    ddp_losses, single_losses = step_losses(ddp_dir), step_losses(tmp_path / "single")
    assert len(ddp_losses) == len(single_losses) == 60
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)  # every step, not just the end
    a = torch.load(ddp_dir / "checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "single/checkpoints/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 60  # every window of the 4 streams, split 2 + 2
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][name], rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_world_size_is_an_error(tiny_corpus, tmp_path):
    from conftest import TINY
    proc = run("rnnreg-train", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "data.batch_size=3",
               "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={tmp_path}",
               check=False)
    assert proc.returncode != 0 and "batch size 3 is not divisible by the 2 DDP processes" in proc.stderr
    assert not (tmp_path / "metrics.json").exists()
