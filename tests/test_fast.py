"""speed.fast_step: the static-buffer step (a CUDA graph on a GPU; eager here) computes the plain step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from rnnreg.errors import TrainingDiverged
from rnnreg.report_runs import history
from rnnreg.train import build, train

LOGGED = ("logger=csv", "trainer.log_every_n_steps=1", "trainer.max_epochs=2", "trainer.limit_train_batches=25")
PLACEMENTS = {
    "non_recurrent": ("dropout=non_recurrent", "dropout.p=0.3"),  # fused nn.LSTM
    "variational+wd": ("dropout=variational", "dropout.p=0.3", "optim.weight_decay=1e-3"),  # StepLSTM
    "weight_drop+ln": ("dropout=weight_drop", "dropout.p=0.3", "regularizer=layer_norm"),
    # the step-loop layer's two biases get their gradients from one sum; clipping on every window
    "recurrent+clipped": ("dropout=recurrent", "dropout.p=0.3", "trainer.gradient_clip_val=0.05"),
    "momentum": ("dropout=non_recurrent", "dropout.p=0.3", "optim.momentum=0.9"),
}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_fast_step_computes_the_plain_step(tiny_cfg, tmp_path, placement):
    """Same seed, so the same dropout masks in the same order: per-window losses, grad norms, the epoch
    perplexities, lr and final weights agree to float32 tolerance."""
    runs = {}
    for fast in (False, True):
        runs[fast] = train(tiny_cfg(*PLACEMENTS[placement], *LOGGED, f"speed.fast_step={fast}", run=f"fast={fast}"))
    plain_dir, fast_dir = tmp_path / "fast=False", tmp_path / "fast=True"
    assert len(history(fast_dir, "train/loss")) == 50
    assert history(fast_dir, "train/loss") == pytest.approx(history(plain_dir, "train/loss"), rel=1e-5)
    for key in ("train/ppl", "train/grad_norm", "train/lr"):
        assert history(fast_dir, key) == pytest.approx(history(plain_dir, key), rel=1e-5), key
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-5), key
    a = torch.load(plain_dir / "checkpoints/last.ckpt", weights_only=False)
    b = torch.load(fast_dir / "checkpoints/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 50
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-4, atol=1e-6)


def test_fast_step_rounds_as_the_plain_step_at_lr_one(tiny_cfg, tmp_path):
    """At lr 1 (the paper's first epochs) without weight decay the fast step rounds exactly as the plain
    step, clipping included: the same losses and weights to the last bit. (SGD at lr 1 grows a last-bit
    difference into a different run within tens of windows, so float32 tolerance alone would let the two
    runs part.)"""
    for fast in (False, True):
        train(
            tiny_cfg(
                "dropout=non_recurrent",
                "dropout.p=0.3",
                "trainer.gradient_clip_val=0.05",
                *LOGGED,
                f"speed.fast_step={fast}",
                run=f"fast={fast}",
            )
        )
    plain, fast = (history(tmp_path / f"fast={f}", "train/loss") for f in (False, True))
    assert len(fast) == 50 and fast == plain
    assert history(tmp_path / "fast=True", "train/lr") == [1.0, 1.0]
    assert min(history(tmp_path / "fast=True", "train/grad_norm")) > 0.05  # clipped
    a, b = (torch.load(tmp_path / f"fast={f}/checkpoints/last.ckpt", weights_only=False) for f in (False, True))
    for name, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][name], value), name


class RecordState(L.Callback):
    def __init__(self):
        self.states = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append(tuple(t.clone() for t in pl_module.train_state))


def test_fast_step_with_bf16_weights(tiny_cfg, tmp_path):
    """trainer.precision=bf16-true: the weights, and so the carried state, are bf16; the fast step still
    computes the plain step."""
    for fast in (False, True):
        train(tiny_cfg("trainer.precision=bf16-true", *LOGGED, f"speed.fast_step={fast}", run=f"fast={fast}"))
    plain, fast = (history(tmp_path / f"fast={f}", "train/loss") for f in (False, True))
    assert len(fast) == 50 and fast == pytest.approx(plain, rel=1e-3)
    a, b = (torch.load(tmp_path / f"fast={f}/checkpoints/last.ckpt", weights_only=False) for f in (False, True))
    for name, weight in a["state_dict"].items():
        assert weight.dtype == b["state_dict"][name].dtype == torch.bfloat16
        torch.testing.assert_close(b["state_dict"][name], weight)  # bf16 tolerance


def test_carried_state_matches_step_by_step(tiny_cfg):
    recorded = {}
    for fast in (False, True):
        L.seed_everything(0, verbose=False)
        datamodule, task, trainer = build(
            tiny_cfg(
                "trainer.max_epochs=2",
                "trainer.limit_train_batches=10",
                "dropout=non_recurrent",
                "dropout.p=0.3",
                "test=false",
                f"speed.fast_step={fast}",
                run=f"fast={fast}",
            )
        )
        trainer.callbacks.append(recorder := RecordState())
        trainer.fit(task, datamodule=datamodule)
        assert task.automatic_optimization is not fast
        recorded[fast] = recorder.states
    assert len(recorded[True]) == len(recorded[False]) == 20
    for (h, c), (h2, c2) in zip(recorded[False], recorded[True]):
        torch.testing.assert_close(h2, h, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c2, c, rtol=1e-5, atol=1e-6)
    # every epoch starts from zeros: the state after window 1 of epoch 2 equals that of a fresh start's
    assert not torch.equal(recorded[True][10][0], recorded[True][9][0])


def test_divergence_is_reported_at_the_same_window(tiny_cfg):
    """Both steps check the loss record at log intervals, yet name the window that diverged: what a check after
    every window names."""
    messages = []
    for fast, every in ((False, 1), (False, 50), (True, 50)):
        with pytest.raises(TrainingDiverged) as err:
            train(
                tiny_cfg(
                    "trainer.max_epochs=3",
                    "optim.decay=1e-20",
                    "optim.decay_start=1",
                    f"trainer.log_every_n_steps={every}",
                    f"speed.fast_step={fast}",
                    run=f"fast={fast}_every={every}",
                )
            )
        messages.append(str(err.value).split(":")[0])
    assert messages[0].startswith("training loss became") and "at epoch 2, step" in messages[0]
    assert messages[1] == messages[2] == messages[0]


def test_fast_step_refuses_fp16_loss_scaling(tiny_cfg, tmp_path):
    """trainer.precision=16-mixed on a GPU brings a GradScaler; the fast step updates the weights itself and
    would leave the scaler without gradients (an AssertionError mid-step). True says so before training;
    auto keeps Lightning's step, which scales and unscales (here: a real GradScaler on the CPU)."""

    def with_scaler(*overrides, run):
        cfg = tiny_cfg(
            "~trainer.precision", "model.lstm=step", "trainer.max_epochs=1", "test=false", *overrides, run=run
        )
        with open_dict(cfg):
            cfg.trainer.plugins.append(
                {
                    "_target_": "lightning.pytorch.plugins.precision.MixedPrecision",
                    "precision": "16-mixed",
                    "device": "cpu",
                    "scaler": {"_target_": "torch.amp.GradScaler", "device": "cpu"},
                }
            )
        return cfg

    with pytest.raises(
        ValueError, match=r"no fp16 loss scaling \(trainer.precision=16-mixed\) .*has fp16 loss scaling:"
    ):
        train(with_scaler("speed.fast_step=true", run="true"))
    assert not (tmp_path / "true" / "metrics.json").exists() and not (tmp_path / "true" / "checkpoints").exists()
    datamodule, task, trainer = build(with_scaler("speed.fast_step=auto", run="auto"))
    trainer.fit(task, datamodule=datamodule)
    assert task.automatic_optimization and trainer.precision_plugin.scaler._scale is not None  # it scaled


def test_fast_step_auto_is_off_on_cpu_and_true_refuses_what_it_cannot_run(tiny_cfg, tmp_path):
    datamodule, task, trainer = build(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"))
    trainer.fit(task, datamodule=datamodule)
    assert task.automatic_optimization and task.fast is None
    with pytest.raises(ValueError, match="=1, and this run has trainer.accumulate_grad_batches=2: set speed.fast_step"):
        train(tiny_cfg("speed.fast_step=true", "+trainer.accumulate_grad_batches=2", run="accumulate"))
    assert not (tmp_path / "accumulate" / "metrics.json").exists()  # stopped before training
    with pytest.raises(ValueError, match="speed.fast_step=sometimes must be one of auto, true, false"):
        train(tiny_cfg("speed.fast_step=sometimes", run="bad"))
