"""speed.triton_cell: the step-loop LSTM's cell as one Triton kernel per step each way (rnnreg.triton_cell). On
this CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set by conftest): the same kernels a GPU
compiles, on numpy. They compute what the torch ops compute, rounded otherwise."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import TINY, needs_triton, run
from rnnreg.errors import ConfigError
from rnnreg.io import load_checkpoint
from rnnreg.lstm_layer import LSTMLayerFunction, layer_backward, layer_forward
from rnnreg.speed_settings import require_triton
from rnnreg.stacked import MemberSpec, StackedLanguageModel, member_nll

pytestmark = needs_triton

SHAPES = {"single": (), "stacked": (3,)}


def layer_inputs(lead: tuple[int, ...], masked: str, dtype: torch.dtype, size: tuple[int, int, int] = (5, 3, 6)):
    """gates_x, h, c (slices of a (..., layers, B, H) state, as the models pass them), weight_hh, masks;
    size: (steps, streams, units)."""
    gen = torch.Generator().manual_seed(0)
    steps, streams, units = size

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    state = randn(*lead, 2, streams, units)  # h and c of layer 1 of 2: rows contiguous, members apart
    h, c = state.select(-3, 1).clone(), randn(*lead, 2, streams, units).select(-3, 1)
    masks = None
    if masked == "fresh":
        masks = (torch.rand(*lead, steps, streams, units, generator=gen) > 0.4).to(dtype) / 0.6
    elif masked == "per_window":  # variational: one mask expanded over the window (stride 0), as StepLSTM's
        masks = ((torch.rand(*lead, 1, streams, units, generator=gen) > 0.4).to(dtype) / 0.6).expand(
            *lead, steps, streams, units
        )
    return randn(*lead, steps, streams, 4 * units), h, c, randn(*lead, 4 * units, units) * 0.4, masks


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", ["none", "fresh", "per_window"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_cell_computes_the_torch_steps(shape, masked, dtype):
    """Every tensor the forward saves (activations, cells, tanh of the cells, outputs, masked inputs) and
    every gradient equal the torch ops' step loop: to float64 rounding in float64, to float32 rounding in
    float32."""
    gates_x, h, c, weight, masks = layer_inputs(SHAPES[shape], masked, dtype)
    torch_saved = layer_forward(gates_x, h, c, weight, masks)
    triton_saved = layer_forward(gates_x, h, c, weight, masks, triton_cell=True)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-6, "atol": 2e-6}
    for ours, theirs in zip(triton_saved, torch_saved):
        if theirs is None:
            assert ours is None
        else:
            torch.testing.assert_close(ours, theirs, **tol)
    gen = torch.Generator().manual_seed(1)
    d_outputs = torch.randn(torch_saved[3].shape, generator=gen, dtype=dtype)
    d_h, d_c = torch.randn(h.shape, generator=gen, dtype=dtype), torch.randn(c.shape, generator=gen, dtype=dtype)
    expected = layer_backward(torch_saved, d_outputs, d_h, d_c)
    got = layer_backward(triton_saved, d_outputs, d_h, d_c, triton_cell=True)
    for name, ours, theirs in zip(("gates_x", "h", "c", "weight_hh"), got, expected):
        torch.testing.assert_close(ours, theirs, **tol, msg=name)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", ["none", "fresh", "per_window"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_cell_computes_16_bit_tensors(shape, masked, dtype):
    """bf16 / fp16 tensors (trainer.precision=bf16-true): the kernels compute in float32 and store in the
    tensors' type, so the saved tensors and the gradients are the float64 computation from the same inputs to a
    few roundings of that type, as the torch ops' are."""
    inputs = layer_inputs(SHAPES[shape], masked, dtype)
    wide = [None if t is None else t.double() for t in inputs]
    exact = layer_forward(*wide)
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in (exact[3], inputs[1], inputs[2])]
    exact += layer_backward(exact, *(g.double() for g in grads))
    bound = 6 * torch.finfo(dtype).eps  # relative to |exact| + 1: a few roundings of the type
    for triton_cell in (True, False):
        saved = layer_forward(*inputs, triton_cell=triton_cell)
        got = saved + layer_backward(saved, *grads, triton_cell=triton_cell)
        for ours, theirs in zip(got, exact):
            if theirs is not None:
                assert ours.dtype == dtype
                error = ((ours.double() - theirs).abs() / (theirs.abs() + 1)).max()
                assert error <= bound, f"triton_cell={triton_cell}: {error / torch.finfo(dtype).eps:.1f} eps"


@pytest.mark.parametrize("shape", SHAPES)
def test_triton_cell_backward_is_the_gradient(shape):
    """float64 gradcheck of the layer functions on the Triton cell, h_{t-1} dropped (small: every kernel call
    is interpreted; fast mode: the backward against finite differences along random directions, not along every
    input element: seconds, not 15; a 1 % error in the gate gradients fails it)."""
    lead = (2,) if shape == "stacked" else ()
    gates_x, h, c, weight, masks = layer_inputs(lead, "fresh", torch.float64, size=(3, 2, 2))
    inputs = tuple(t.detach().clone().requires_grad_() for t in (gates_x, h, c, weight))
    layer = lambda *args: LSTMLayerFunction.apply(*args, masks, True)  # noqa: E731
    assert torch.autograd.gradcheck(layer, inputs, fast_mode=True)


def test_triton_cell_leaves_the_callers_gradients_alone():
    """The backward updates the cell's gradient in place in its own buffer, not in the one autograd hands it."""
    gates_x, h, c, weight, masks = layer_inputs((2,), "fresh", torch.float32)
    saved = layer_forward(gates_x, h, c, weight, masks, triton_cell=True)
    d_outputs, d_h, d_c = torch.ones_like(saved[3]), torch.ones_like(h), torch.ones_like(c)
    layer_backward(saved, d_outputs, d_h, d_c, triton_cell=True)
    assert torch.equal(d_c, torch.ones_like(c)) and torch.equal(d_h, torch.ones_like(h))


def test_stacked_model_on_the_triton_cell_trains_as_on_torch_ops():
    """A group of five placements (masks from the members' own streams): the same loss and gradients per
    member with the Triton cell as with the torch ops, window after window of SGD."""
    members = [
        MemberSpec(seed=1, init_scale=0.1),
        MemberSpec(seed=2, init_scale=0.1, dropout_input=0.3, dropout_between=0.3, dropout_output=0.3),
        MemberSpec(seed=3, init_scale=0.1, dropout_recurrent=0.3, lstm="step"),
        MemberSpec(seed=4, init_scale=0.1, dropout_input=0.3, dropout_recurrent=0.3, variational=True, lstm="step"),
        MemberSpec(seed=5, init_scale=0.1, weight_drop=0.3, lstm="step"),
    ]
    models = [StackedLanguageModel(30, 8, 2, members) for _ in range(2)]
    models[1].triton_cell = True
    tokens = torch.randint(0, 30, (6, 6, 3), generator=torch.Generator().manual_seed(0))
    histories = []
    for model in models:
        history = []
        for x, y in zip(tokens[:-1], tokens[1:]):
            logits, _ = model(x[:5], None)
            nll = member_nll(logits, y[:5])
            (nll * 5).sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad
                    p.grad = None
            history.append(nll.detach())
        histories.append(torch.stack(history))
    torch.testing.assert_close(histories[1], histories[0], rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(models[1].parameters(), models[0].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_single_run_on_the_triton_cell_is_the_torch_run(tmp_path, tiny_corpus):
    """rnnreg-train with speed.triton_cell=true on the step-loop LSTM (recurrent dropout): the run's
    perplexities and weights equal the run on torch ops to float32 rounding, and differ from them in the last
    bits (the Triton cell ran)."""
    common = [*TINY, "experiment=paper_small", f"data.data_dir={tiny_corpus}", "dropout=recurrent", "dropout.p=0.3"]
    common += ["trainer.max_epochs=2", "trainer.limit_train_batches=8", "model.lstm=step"]
    # one test window a stream, two validation windows, of 5 steps (not data/ptb's 200): the interpreter runs
    # each step in Python
    common += ["trainer.limit_test_batches=1", "trainer.limit_val_batches=2", "data.eval_bptt=5"]
    results, weights = {}, {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        run("rnnreg-train", *common, f"speed.triton_cell={flag}", f"hydra.run.dir={out}")
        results[flag] = json.loads((out / "metrics.json").read_text())
        weights[flag] = load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    for key in ("val_ppl", "test_ppl"):
        assert results["true"][key] == pytest.approx(results["false"][key], rel=1e-5), key
    for key, theirs in weights["false"].items():
        torch.testing.assert_close(weights["true"][key], theirs, rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.equal(weights["true"][key], theirs) for key, theirs in weights["false"].items())


@pytest.mark.parametrize("key", ["speed.triton_cell", "speed.triton_update"])
def test_triton_kernels_where_they_cannot_run_are_one_line(tmp_path, tiny_corpus, monkeypatch, key):
    """On a CPU without Triton's interpreter: one line naming the key and the fix, exit 2, nothing written."""
    out = tmp_path / "run"
    proc = run(
        "rnnreg-train", *TINY, "experiment=paper_small", f"data.data_dir={tiny_corpus}", "model.lstm=step",
        f"{key}=true", f"hydra.run.dir={out}", check=False, env={"TRITON_INTERPRET": "0"},
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"{key}=true runs Triton kernels on a CUDA device" in errors[0], errors
    assert f"set {key}=false" in errors[0]
    assert not (out / "metrics.json").exists() and not (out / "checkpoints").exists()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="this run is on cpu"):
        require_triton(torch.device("cpu"), key)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    require_triton(torch.device("cpu"), key)
