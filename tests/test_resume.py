"""Resume: 1 epoch + resume to 2 equals 2 uninterrupted epochs (weights, lr, metrics), dropout on."""

from __future__ import annotations

import pytest
import torch

from rnnreg.evaluate import load_task
from rnnreg.train import train

DROPOUT = ("dropout=non_recurrent", "model.dropout_rate=0.3")


def test_resume_is_exact(tiny_cfg, tmp_path):
    whole = train(tiny_cfg(*DROPOUT, "trainer.max_epochs=2", run="whole"))
    train(tiny_cfg(*DROPOUT, "trainer.max_epochs=1", "test=false", run="first"))
    resumed = train(tiny_cfg(*DROPOUT, "trainer.max_epochs=2", f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt",
                             run="second"))
    for key in ("val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
        assert resumed[key] == whole[key], key
    a = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "second/checkpoints/last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"]  # last.ckpt = after epoch 2
    assert a["lr_schedulers"][0]["_last_lr"] == b["lr_schedulers"][0]["_last_lr"]
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    assert (tmp_path / "first/checkpoints/last.ckpt").is_file()  # the earlier run is left as it was


def test_resume_last_finds_the_newest_earlier_run(tiny_cfg, tmp_path):
    overrides = ("trainer.max_epochs=1", "test=false", f"paths.output_root={tmp_path}")
    cfg = tiny_cfg(*overrides, run="train/paper_small/2026-01-01")
    train(cfg)
    resumed = train(tiny_cfg(*overrides[1:], "trainer.max_epochs=2", "ckpt_path=last",
                             run="train/paper_small/2026-01-02"))
    assert resumed["epochs"] == 2
    task = load_task(str(tmp_path / "train/paper_small/2026-01-02/checkpoints/last.ckpt"))
    assert task.vocab is not None


def test_resume_last_without_earlier_run_is_a_clear_error(tiny_cfg, tmp_path):
    from rnnreg.runtime import ConfigError
    with pytest.raises(ConfigError, match="ckpt_path=last: no earlier run of paper_small"):
        train(tiny_cfg(f"paths.output_root={tmp_path}/empty", "ckpt_path=last"))
