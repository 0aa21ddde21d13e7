"""The stacked model (rnnreg.stacked): each of K members computes what a single LSTMLanguageModel with its
hyperparameters computes, with its own masks, and no member can change another."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import rnnreg.lstm_layer as lstm_layer
import rnnreg.model as model_module
import rnnreg.stacked as stacked_module
from helpers import counted_calls, needs_triton, same_bits
from rnnreg.lstm_layer import LSTMLayerFunction
from rnnreg.model import LSTMLanguageModel
from rnnreg.optim import ClippedSGD, clip_and_sgd_
from rnnreg.run_record import MAX_NLL
from rnnreg.stacked import (
    MemberSpec,
    StackedLanguageModel,
    StackedLinearFunction,
    member_nll,
)
from rnnreg.stacked_step import InTurnStep, group_step

V, H, L, T, B = 40, 12, 2, 5, 4
P = 0.5
PLACEMENTS = {  # as conf/dropout/*, one site at a time where the placement allows
    "none": {},
    "non_recurrent": {"dropout_input": P, "dropout_between": P, "dropout_output": P},
    "recurrent": {"dropout_recurrent": P},
    "variational": {
        "dropout_input": P,
        "dropout_between": P,
        "dropout_output": P,
        "dropout_recurrent": P,
        "variational": True,
    },
    "weight_drop": {"weight_drop": P},
    "embedding": {"embedding_dropout": P},
}
EVERYWHERE = {
    "dropout_input": 0.3,
    "dropout_between": 0.3,
    "dropout_output": 0.3,
    "dropout_recurrent": 0.3,
    "weight_drop": 0.3,
    "embedding_dropout": 0.2,
}


def single(spec: MemberSpec, lstm: str | None = None, shape: dict | None = None) -> LSTMLanguageModel:
    """The member's job run alone: its LSTM is the spec's (model.lstm) unless `lstm` says otherwise; `shape`:
    the group's (one of SHAPES)."""
    torch.manual_seed(spec.seed)
    kwargs = spec.model_kwargs() | ({"lstm": lstm} if lstm else {})
    return LSTMLanguageModel(V, H, L, **kwargs, **(shape or {}))


def load_member(net: StackedLanguageModel, k: int, state_dict: dict[str, torch.Tensor]) -> None:
    """Set member k's weights from a single LSTMLanguageModel's state dict (step or fused LSTM): member_state_dict's
    inverse, for tests that give a member weights of their own."""
    assert set(state_dict) == set(net.state_names[k])
    with torch.no_grad():
        for name, single_name in net.single_names.items():
            net.pad_into(getattr(net, name)[k], state_dict[single_name], name)


# what a group's members share beyond their sizes: layer norm adds parameters, tied weights take one away
SHAPES = {"plain": {}, "layer_norm": {"layer_norm": True}, "tied": {"tie_weights": True}}
EVERY_SHAPE = pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))


def windows(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (input, target) windows of one token stream, as the data module cuts them."""
    data = torch.randint(V, (count * T + 1, B), generator=torch.Generator().manual_seed(seed))
    return [(data[i * T : (i + 1) * T], data[i * T + 1 : (i + 1) * T + 1]) for i in range(count)]


def vec(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.get_default_dtype())


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def train_stacked(net, data, lr, clip, weight_decay=0.0, active=None, state=None):
    """Windows of stacked training as the launcher will run them: per-window (losses, norms), final state."""
    active = torch.ones(net.num_members, dtype=torch.bool) if active is None else active
    params = list(net.parameters())
    history = []
    for x, y in data:
        logits, state = net(x, state)
        nll = member_nll(logits, y)
        (nll * x.size(-2)).sum().backward()  # each parameter its own .grad, as the launcher's loop
        grads = [p.grad for p in params]
        norms = clip_and_sgd_(params, grads, lr, clip, weight_decay, active=active, orders=net.member_orders)
        for p in params:
            p.grad = None
        history.append((nll.detach(), norms))
    return history, state


def train_single(net, data, lr, clip, weight_decay=0.0):
    """The plain step: summed-over-time objective, clip_grad_norm_, torch SGD; per-window (loss, norm)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=weight_decay)
    history, state = [], None
    for x, y in data:
        logits, state = net(x, state)
        nll = torch.nn.functional.cross_entropy(logits.view(-1, V), y.reshape(-1))
        optimizer.zero_grad()
        (nll * x.size(0)).backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip, foreach=True)
        optimizer.step()
        history.append((nll.detach(), norm))
    return history


def grads_of(net: StackedLanguageModel, k: int) -> dict[str, torch.Tensor]:
    return {net.single_names[n]: p.grad[k] for n, p in net.named_parameters()}


def train_in_turn(net, data, lr, clip, weight_decay=None):
    """Windows of the CPU's program (InTurnStep), as the launcher runs it: per-window losses, the step."""
    decays = None if weight_decay is None else weight_decay.tolist()
    step = InTurnStep(net, (T, B), clip.tolist(), decays, torch.device("cpu"))
    return train_program(step, data, lr.tolist()), step


def train_clipped(net, data, lr, clip, weight_decay=0.0, momentum=0.0, norms=None, buffers=None):
    """A job's plain step (rnnreg.task): the summed-over-time objective, then ClippedSGD; per-window losses
    (and each window's gradient norm before clipping appended to `norms`, its momentum buffers at the end put
    in the dict `buffers` by parameter name)."""
    optimizer = ClippedSGD(net.parameters(), lr=lr, clip=clip, momentum=momentum, weight_decay=weight_decay)
    losses, state = [], None
    for x, y in data:
        optimizer.zero_grad()
        logits, state = net(x, state)
        nll = torch.nn.functional.cross_entropy(logits.view(-1, V), y.reshape(-1))
        (nll * x.size(0)).backward()
        optimizer.step()
        losses.append(nll.detach())
        if norms is not None:
            norms.append(optimizer.grad_norm.clone())
    if buffers is not None:
        buffers.update({n: optimizer.state[p]["momentum_buffer"] for n, p in net.named_parameters()})
    return losses


def program_group(specs, clips, program, momentums=None, triton_update=False):
    """A group and its window as the launcher builds them (group_step): program "batched" (a GPU's, eager here)
    or "in_turn" (a CPU's), each member with its clip and momentum; triton_update: speed.triton_update."""
    net = StackedLanguageModel(V, H, L, specs).train()
    cpu = torch.device("cpu")
    step = group_step(net, (T, B), clips, None, cpu, False, program, momentums, triton_update=triton_update)
    return net, step


def train_program(step, data, lrs, before=None) -> list[torch.Tensor]:
    """Windows of a group's program as its loop runs them (`before(window)` ahead of each): each window's losses."""
    losses = []
    for window, (x, y) in enumerate(data):
        if before is not None:
            before(window)
        step(x, y, lrs)
        step.clear_grads()
        losses.append(step.loss.clone())
    return losses


# -- the layer functions (the GPU's path) ----------------------------------------------------------------
@pytest.fixture(params=["as held", "held transposed"])
def weight_layout(request, monkeypatch):
    """W_hh as a CPU holds it, or held transposed for the recurrent GEMMs as on a CUDA device with aligned rows
    (lstm_layer.aligned_on_cuda); gives the layout and the dtypes of the transposed copies the layer makes."""
    copies = []
    if request.param == "held transposed":
        original = lstm_layer.transposed_storage

        def counted(weight, dtype=None):
            copies.append(dtype or weight.dtype)
            return original(weight, dtype)

        monkeypatch.setattr(lstm_layer, "aligned_on_cuda", lambda weight: True)
        monkeypatch.setattr(lstm_layer, "transposed_storage", counted)
    return request.param, copies


@pytest.mark.parametrize("masks", ["none", "mixed"])
def test_stacked_layer_function_backward_is_the_gradient(masks, weight_layout):
    """float64 gradcheck of the hand-written backward; "mixed": one member drops h_{t-1} fresh per step,
    the other multiplies it by ones (no recurrent dropout). With W_hh held transposed the backward reads a copy."""
    gen = torch.Generator().manual_seed(0)
    K, steps, streams, units = 2, 4, 3, 3

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)

    gates_x, h, c, weight = (
        randn(K, steps, streams, 4 * units),
        randn(K, streams, units),
        randn(K, streams, units),
        randn(K, 4 * units, units),
    )
    mask = None
    if masks == "mixed":
        mask = torch.ones(K, steps, streams, units, dtype=torch.float64)
        mask[0] = (torch.rand(steps, streams, units, generator=gen) > 0.5).double() * 2
    assert torch.autograd.gradcheck(LSTMLayerFunction.apply, (gates_x, h, c, weight, mask))
    layout, copies = weight_layout
    assert set(copies) == ({torch.float64} if layout == "held transposed" else set())  # each backward made one


def mixed_layer_reference(gates_x, h, c, weight, masks):
    """The layer under autocast as autograd differentiates it: the recurrent GEMM's inputs in bf16, the gates' sum,
    the cell and the carried state in float32."""
    weight16, outputs = weight.to(torch.bfloat16), []
    for t in range(gates_x.size(-3)):
        h_in = h if masks is None else h * masks.select(-3, t)
        h, c = model_module.lstm_cell(gates_x.select(-3, t) + torch.matmul(h_in.bfloat16(), weight16.mT), c)
        outputs.append(h)
    return torch.stack(outputs, -3), h, c


@pytest.mark.parametrize("triton_cell", [False, pytest.param(True, marks=needs_triton)], ids=["torch", "triton"])
@pytest.mark.parametrize("masks", ["none", "fresh"])
def test_layer_function_under_autocast_runs_its_gemms_in_bf16(masks, triton_cell, weight_layout):
    """trainer.precision=bf16-mixed: the hand-written layer (3 members) computes what autograd computes of the
    layer with bf16 GEMMs and a float32 cell: outputs and the gradients of gates_x, h and c to float32 rounding
    (the float32 layer is 1e-3 away), and W_hh's gradient, one bf16 GEMM over the window, within a bf16 rounding
    of the exact sum of the steps' bf16 products. Held transposed, W_hh's bf16 cast is the one copy a window."""
    gen = torch.Generator().manual_seed(1)
    K, steps, streams, units = 3, 6, 4, 8
    gates_x, h, c = (
        torch.randn(*shape, generator=gen)
        for shape in ((K, steps, streams, 4 * units), (K, streams, units), (K, streams, units))
    )
    weight = torch.randn(K, 4 * units, units, generator=gen) * 0.3
    mask = None if masks == "none" else (torch.rand(K, steps, streams, units, generator=gen) > 0.3).float() / 0.7
    seeds = [
        torch.randn(shape, generator=gen)
        for shape in ((K, steps, streams, units), (K, streams, units), (K, streams, units))
    ]

    def run(function, autocast):
        inputs = [t.clone().requires_grad_() for t in (gates_x, h, c, weight)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outs = function(*inputs, mask)
        return outs, torch.autograd.grad(sum((o * s).sum() for o, s in zip(outs, seeds)), inputs)

    def layer(*args):
        return LSTMLayerFunction.apply(*args, triton_cell)

    (outs, grads), (ref_outs, ref_grads) = run(layer, True), run(mixed_layer_reference, False)
    torch.testing.assert_close(outs, ref_outs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[:3], ref_grads[:3], rtol=1e-5, atol=1e-6)
    float32_outs, float32_grads = run(layer, False)
    assert max((a - b).abs().max() for a, b in zip(float32_outs, ref_outs)) > 1e-4  # the bf16 GEMMs matter
    assert max((a - b).abs().max() for a, b in zip(float32_grads[:3], ref_grads[:3])) > 1e-4
    # W_hh's gradient: the steps' products of bf16-rounded gate gradients and inputs, summed exactly (float64)
    inputs = [h.clone().requires_grad_(), c.clone().requires_grad_()]
    gates = gates_x.clone().requires_grad_()
    outs = mixed_layer_reference(gates, *inputs, weight, mask)
    d_gates = torch.autograd.grad(sum((o * s).sum() for o, s in zip(outs, seeds)), gates)[0]
    h_ins, state = [], h
    for t in range(steps):
        h_ins.append(state if mask is None else state * mask[:, t])
        state = outs[0][:, t].detach()
    exact = sum(d_gates[:, t].bfloat16().double().mT @ h_ins[t].bfloat16().double() for t in range(steps))
    assert (grads[3].double() - exact).abs().max() <= 2**-8 * exact.abs().max()
    # as the models pass it: the input projection from autocast's GEMM, in bf16; its gradient comes back in bf16
    gates16 = gates_x.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = layer(gates16, h, c, weight, mask)
    (d_gates16,) = torch.autograd.grad(sum((o * s).sum() for o, s in zip(outs, seeds)), gates16)
    reference = gates16.detach().float().requires_grad_()
    ref_outs = mixed_layer_reference(reference, h, c, weight, mask)
    (d_reference,) = torch.autograd.grad(sum((o * s).sum() for o, s in zip(ref_outs, seeds)), reference)
    torch.testing.assert_close(outs, ref_outs, rtol=1e-5, atol=1e-6)
    assert d_gates16.dtype == torch.bfloat16
    torch.testing.assert_close(d_gates16, d_reference.bfloat16(), rtol=2**-7, atol=1e-6)
    layout, copies = weight_layout
    # held transposed: the autocast forwards' casts (their backwards read them), the float32 run's backward's copy
    expected = [torch.bfloat16, torch.float32, torch.bfloat16] if layout == "held transposed" else []
    assert copies == expected


def test_layer_function_under_fp16_autocast_sums_the_weight_gradient_in_float32():
    """trainer.precision=16-mixed (a single run): the recurrent GEMMs in fp16, but W_hh's gradient, a sum over the
    window's T x B rows that loss scaling can push past fp16's range (65,504), in float32: scaled as a loss scaler
    scales it, it stays finite beyond that range."""
    gen = torch.Generator().manual_seed(3)
    K, steps, streams, units = 2, 8, 4, 6
    gates_x = torch.randn(K, steps, streams, 4 * units, generator=gen)
    h, c = torch.randn(K, streams, units, generator=gen), torch.randn(K, streams, units, generator=gen)
    weight = (torch.randn(K, 4 * units, units, generator=gen) * 0.3).requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        outputs, *_ = LSTMLayerFunction.apply(gates_x, h, c, weight, None)
    (outputs.sum() * 4e4).backward()
    assert weight.grad.dtype == torch.float32 and torch.isfinite(weight.grad).all()
    assert weight.grad.abs().max() > 65504, weight.grad.abs().max()


def test_layer_function_under_fp16_autocast_runs_its_gemms_in_fp16():
    """trainer.precision=16-mixed: the recurrent GEMMs in autocast's dtype, fp16 (not bf16, which a GPU without it
    would emulate), the cell in float32: the outputs are those of fp16 GEMMs to float32 rounding, and bf16's are
    further off than that."""
    gen = torch.Generator().manual_seed(6)
    steps, streams, units = 6, 4, 8
    gates_x = torch.randn(steps, streams, 4 * units, generator=gen)
    h0, c0 = torch.randn(streams, units, generator=gen), torch.randn(streams, units, generator=gen)
    weight = torch.randn(4 * units, units, generator=gen) * 0.3
    with torch.autocast("cpu", dtype=torch.float16):
        outputs, h_end, c_end = LSTMLayerFunction.apply(gates_x, h0, c0, weight, None)

    def reference(dtype):
        h, c, hs = h0, c0, []
        for t in range(steps):
            h, c = model_module.lstm_cell(gates_x[t] + torch.matmul(h.to(dtype), weight.to(dtype).mT).float(), c)
            hs.append(h)
        return torch.stack(hs), h, c

    torch.testing.assert_close((outputs, h_end, c_end), reference(torch.float16), rtol=1e-5, atol=1e-6)
    assert (outputs - reference(torch.bfloat16)[0]).abs().max() > 1e-4


def test_layer_function_under_bf16_autocast_computes_the_weight_gradient_in_one_bf16_gemm():
    """trainer.precision=bf16-mixed: W_hh's window gradient is one bf16 GEMM, as autocast computes a weight's
    gradient in F.linear (fp16 sums it in float32: the test above), handed back as float32: bf16's values. In
    float32 the same layer's is not."""
    gen = torch.Generator().manual_seed(4)
    K, steps, streams, units = 2, 8, 4, 6
    gates_x = torch.randn(K, steps, streams, 4 * units, generator=gen)
    h, c = torch.randn(K, streams, units, generator=gen), torch.randn(K, streams, units, generator=gen)
    grads = {}
    for autocast in (True, False):
        weight = (torch.randn(K, 4 * units, units, generator=torch.Generator().manual_seed(5)) * 0.3).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs, *_ = LSTMLayerFunction.apply(gates_x, h, c, weight, None)
        outputs.sum().backward()
        grads[autocast] = weight.grad
    assert grads[True].dtype == torch.float32
    assert torch.equal(grads[True], grads[True].bfloat16().float())
    assert not torch.equal(grads[False], grads[False].bfloat16().float())
    torch.testing.assert_close(grads[True], grads[False], rtol=0.05, atol=0.05)  # the same gradient, bf16-rounded


def test_stacked_linear_function_backward_is_the_gradient():
    gen = torch.Generator().manual_seed(2)
    x, weight, bias = (
        torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((3, 4, 5), (3, 6, 5), (3, 6))
    )
    args = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(StackedLinearFunction.apply, args)
    out = StackedLinearFunction.apply(*args)
    torch.testing.assert_close(out, torch.stack([torch.nn.functional.linear(*args) for args in zip(x, weight, bias)]))
    out.sum().backward()
    assert weight.grad.is_contiguous()  # so a member's gradient norm reduces in the single model's order


def test_stacked_layer_is_the_single_layer_per_member():
    """Forward and backward of K stacked members equal LSTMLayerFunction on each member's slice (to float32
    tolerance: a batched GEMM rounds as it likes)."""
    gen = torch.Generator().manual_seed(1)
    K, units = 3, 5
    gates_x, h, c = (
        torch.randn(K, T, B, 4 * units, generator=gen),
        torch.randn(K, B, units, generator=gen),
        torch.randn(K, B, units, generator=gen),
    )
    weight = torch.randn(K, 4 * units, units, generator=gen) * 0.3
    masks = (torch.rand(K, T, B, units, generator=gen) > 0.3).float() / 0.7
    inputs = [t.requires_grad_() for t in (gates_x, h, c, weight)]
    outs = LSTMLayerFunction.apply(*inputs, masks)
    seeds = [torch.randn(o.shape, generator=gen) for o in outs]
    grads = torch.autograd.grad(sum((o * s).sum() for o, s in zip(outs, seeds)), inputs)
    for k in range(K):
        alone = [t[k].detach().requires_grad_() for t in (gates_x, h, c, weight)]
        outs_k = LSTMLayerFunction.apply(*alone, masks[k])
        grads_k = torch.autograd.grad(sum((o * s[k]).sum() for o, s in zip(outs_k, seeds)), alone)
        torch.testing.assert_close([o[k] for o in outs], list(outs_k), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close([g[k] for g in grads], list(grads_k), rtol=1e-5, atol=1e-6)


# -- members are single models -------------------------------------------------------------------------
@EVERY_SHAPE
def test_member_k_starts_as_the_single_model_seeded_with_its_seed(shape):
    specs = [MemberSpec(3, 0.1), MemberSpec(11, 0.05), MemberSpec(3, 0.2, **PLACEMENTS["variational"])]
    rng = torch.get_rng_state()
    net = StackedLanguageModel(V, H, L, specs, **shape)
    assert torch.equal(torch.get_rng_state(), rng)  # building the group leaves the global stream alone
    assert any("norms" in name for name in net.single_names.values()) == ("layer_norm" in shape)
    assert hasattr(net, "decoder_weight") != ("tie_weights" in shape)
    for k, spec in enumerate(specs):
        expected = single(spec, shape=shape).state_dict()
        got = net.member_state_dict(k)
        assert list(got) == list(expected)
        assert all(torch.equal(got[n], v) for n, v in expected.items())


MIXED_KERNELS = [MemberSpec(1, 0.1), MemberSpec(2, 0.3, lstm="step"), MemberSpec(5, 0.05)]  # fused, step, fused


def test_member_model_is_the_single_model_on_views_of_its_slices():
    """On a CPU member k trains as member_model(k): its job's LSTM (fused for model.lstm=auto without recurrent
    dropout, the step loop otherwise), its single model's outputs bit for bit, and parameters that are member
    k's slices (a change to one is a change to the other)."""
    specs = [
        *MIXED_KERNELS,
        MemberSpec(3, 0.1, **PLACEMENTS["recurrent"]),
        MemberSpec(4, 0.1, **PLACEMENTS["non_recurrent"]),
    ]
    net = StackedLanguageModel(V, H, L, specs)
    assert net.fused == (True, False, True, False, True) == tuple(single(s).fused for s in specs)
    x = windows(1)[0][0]
    for k, spec in enumerate(specs):
        member = net.member_model(k)
        assert member.fused == net.fused[k] and member.training is net.training
        member.eval()
        assert [n for n, _ in member.named_parameters()] == [n for n, _ in single(spec).named_parameters()]
        assert torch.equal(member(x)[0], single(spec).eval()(x)[0])
        with torch.no_grad():
            member.decoder.bias[0] = 7.0 + k
        assert [j for j in range(len(specs)) if net.decoder_bias[j, 0] == 7.0 + k] == [k]
    with pytest.raises(ValueError, match="model.lstm=fused must be auto, fused, layers or step"):
        StackedLanguageModel(V, H, L, [MemberSpec(1, 0.1, lstm="fused", **PLACEMENTS["recurrent"])])


def test_group_without_dropout_computes_each_members_logits_and_gradients():
    """Three seeds and init scales, members whose jobs run the fused or the step LSTM: the stacked forward's
    (a GPU's program, every member on the step loop) first-window logits and gradients are each member's
    alone, to float32 tolerance (a batched GEMM rounds as it likes)."""
    specs = MIXED_KERNELS
    x, y = windows(1)[0]
    net = StackedLanguageModel(V, H, L, specs).train()
    logits, _ = net(x)
    (member_nll(logits, y) * T).sum().backward()
    for k, spec in enumerate(specs):
        alone = single(spec).train()
        logits_k, _ = alone(x)
        torch.nn.functional.cross_entropy(logits_k.view(-1, V), y.reshape(-1)).mul(T).backward()
        tolerance = {"rtol": 1e-5, "atol": 1e-6}
        torch.testing.assert_close(logits[k], logits_k, **tolerance)
        torch.testing.assert_close(grads_of(net, k), {n: p.grad for n, p in alone.named_parameters()}, **tolerance)


def test_group_under_autocast_computes_each_step_loop_members_logits_and_gradients():
    """trainer.precision=bf16-mixed: the stacked forward under bf16 autocast (the GPU's program) gives each member
    whose job runs the step loop (one without dropout, one with dropout on h_{t-1}: its masks are its job's on a
    CPU) its job's first-window logits and gradients under autocast to float32 rounding; the group in float32 is
    bf16's rounding away."""
    specs = [MemberSpec(2, 0.3, lstm="step"), MemberSpec(3, 0.1, dropout_recurrent=0.3, dropout_output=0.2)]
    x, y = windows(1)[0]

    def first_window(net, nll, autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits, _ = net(x)
            loss = nll(logits, y)
        (loss.sum() * T).backward()
        return logits.float()

    results = {}
    for autocast in (True, False):
        net = StackedLanguageModel(V, H, L, specs).train()
        results[autocast] = net, first_window(net, member_nll, autocast)
    for k, spec in enumerate(specs):
        alone = single(spec).train()  # seeded: its masks come from the global stream, as the member's from its own
        logits_k = first_window(alone, model_module.mean_nll, True)
        net, logits = results[True]
        torch.testing.assert_close(logits[k], logits_k, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            grads_of(net, k), {n: p.grad for n, p in alone.named_parameters()}, rtol=1e-5, atol=1e-6
        )
        assert (results[False][1][k] - logits_k).abs().max() > 1e-4


SCHEDULES = {  # lr, clip (member 1 clipped on every window), weight decay
    "lr_one": ([1.0, 1.0, 1.0], [5.0, 0.05, 1.0], None),
    "per_member_lr": ([1.0, 0.7, 1.3], [5.0, 0.05, 1.0], None),
    "weight_decay": ([1.0, 0.7, 1.3], [5.0, 0.05, 1.0], [0.0, 1e-3, 1e-2]),
}


@EVERY_SHAPE
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_group_without_dropout_trains_as_each_member_alone(schedule, shape):
    """A GPU's program (the stacked forward, clip_and_sgd_ over the members): ten windows with carried state, members
    whose jobs run the fused or the step LSTM (with layer norm: all the step loop, on autograd); each member's
    losses, gradient norms and weights are those of the single model trained alone (clip_grad_norm_ + torch
    SGD), to float32 tolerance. Layer norm divides by a spread that can be small, which lifts rounding that
    ten windows of training grow past that tolerance (1.3e-6 in one weight): its group and its single models
    run in float64 here. There the losses agree to 1e-14 and the weights to 1.6e-11 (the embedding of the member
    whose W_ih x has the smallest spread: the gates' biases after the norms, as Ba et al. place them, leave that
    spread W_ih x's own; with them inside it was the biases', and the weights agreed to 1e-15), compared at 1e-10."""
    specs = MIXED_KERNELS
    lr, clip, weight_decay = SCHEDULES[schedule]
    layer_norm = "layer_norm" in shape
    tolerance = {"rtol": 1e-10, "atol": 1e-10} if layer_norm else {"rtol": 1e-5, "atol": 1e-6}
    data = windows(10)
    with default_dtype(torch.float64 if layer_norm else torch.float32):
        net = StackedLanguageModel(V, H, L, specs, **shape).train()
        assert net.decoder_bias.dtype == torch.get_default_dtype()
        history, _ = train_stacked(net, data, vec(lr), vec(clip), 0.0 if weight_decay is None else vec(weight_decay))
        assert all(norms[1] > 0.05 for _, norms in history)  # clipping at work on member 1
        for k, spec in enumerate(specs):
            alone = single(spec, shape=shape).train()
            expected = train_single(alone, data, lr[k], clip[k], weight_decay[k] if weight_decay else 0.0)
            losses = [nll[k] for nll, _ in history], [nll for nll, _ in expected]
            torch.testing.assert_close(*losses, rtol=tolerance["rtol"], atol=0)
            norms = [n[k] for _, n in history], [n for _, n in expected]
            torch.testing.assert_close(*norms, rtol=tolerance["rtol"], atol=0)
            got = net.member_state_dict(k)
            for name, value in alone.state_dict().items():
                torch.testing.assert_close(got[name], value, **tolerance)


@pytest.mark.parametrize("shape", ["plain", "tied"])
def test_the_batched_program_trains_each_member_as_its_job(shape):
    """StackedStep itself, the GPU's program (eager here): the objective it sums, each member's clip, lr, weight
    decay and momentum, the carried state. Six windows give each member the losses, gradient norms and weights of
    its job's plain step (ClippedSGD), to float32 tolerance. Member 0 is never clipped, so an objective scaled
    otherwise (a mean over the window's steps, or over the members) changes its weights; member 1 is clipped on
    every window."""
    from rnnreg.stacked_step import StackedStep

    specs = MIXED_KERNELS
    lrs, clips, decays, momentums = [1.0, 0.7, 1.3], [1e9, 0.05, 1.0], [0.0, 1e-3, 1e-2], [0.0, 0.5, 0.9]
    data = windows(6)
    net = StackedLanguageModel(V, H, L, specs, **SHAPES[shape]).train()
    step = StackedStep(net, (T, B), vec(clips), vec(decays), torch.device("cpu"), graph=False, momentums=momentums)
    losses, norms = [], []
    for x, y in data:
        step(x, y, lrs)
        step.clear_grads()
        losses.append(step.loss.clone())
        norms.append(step.grad_norm.clone())
    assert step.global_step.item() == 6 and step.active.all()
    assert all(n[1] > clips[1] for n in norms)  # member 1 clipped on every window
    tolerance = {"rtol": 1e-5, "atol": 1e-6}
    for k, spec in enumerate(specs):
        alone = single(spec, shape=SHAPES[shape]).train()
        expected_norms = []
        expected = train_clipped(alone, data, lrs[k], clips[k], decays[k], momentums[k], expected_norms)
        torch.testing.assert_close([loss[k] for loss in losses], expected, **tolerance)
        torch.testing.assert_close([n[k] for n in norms], expected_norms, **tolerance)
        got = net.member_state_dict(k)
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(got[name], value, **tolerance, msg=f"member {k}: {name}")


@EVERY_SHAPE
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_members_in_turn_train_as_each_member_alone_bit_for_bit(schedule, shape):
    """A CPU's program (InTurnStep): each member's losses and weights after ten windows with carried state are
    its job's plain step (ClippedSGD) to the last bit, for every schedule, clipping and weight decay included."""
    specs = MIXED_KERNELS
    lr, clip, weight_decay = SCHEDULES[schedule]
    data = windows(10)
    net = StackedLanguageModel(V, H, L, specs, **shape).train()
    losses, step = train_in_turn(net, data, vec(lr), vec(clip), None if weight_decay is None else vec(weight_decay))
    assert step.global_step.item() == 10 and step.active.all()
    for k, spec in enumerate(specs):
        alone = single(spec, shape=shape).train()
        expected = train_clipped(alone, data, lr[k], clip[k], weight_decay[k] if weight_decay else 0.0)
        assert [loss[k].item() for loss in losses] == [loss.item() for loss in expected]
        got = net.member_state_dict(k)
        assert list(got) == list(alone.state_dict())
        assert all(torch.equal(got[name], value) for name, value in alone.state_dict().items())


def test_members_in_turn_keep_their_own_momentum_buffers():
    """A CPU's program with momentum 0.5, 0.9 and 0.7 by member: each member's velocity is its own, carried from
    window to window in its slices of the group's buffers (what its checkpoint and the resume file save): after
    five windows each member's losses, weights and buffers are its job's plain step's (ClippedSGD with its
    momentum) to the last bit."""
    lrs, clips, momentums = [1.0, 0.7, 0.5], [5.0, 0.5, 1.0], [0.5, 0.9, 0.7]
    data = windows(5)
    net, step = program_group(MIXED_KERNELS, clips, "in_turn", momentums)
    losses = train_program(step, data, lrs)
    for k, spec in enumerate(MIXED_KERNELS):
        alone = single(spec).train()
        buffers = {}
        expected = train_clipped(alone, data, lrs[k], clips[k], momentum=momentums[k], buffers=buffers)
        assert [loss[k].item() for loss in losses] == [loss.item() for loss in expected], k
        got = net.member_state_dict(k)
        assert [n for n, value in alone.state_dict().items() if not torch.equal(got[n], value)] == [], k
        ours = {net.single_names[n]: b[k] for (n, _), b in zip(net.named_parameters(), step.buffers)}
        assert [n for n, value in buffers.items() if not torch.equal(ours[n], value)] == [], k


def test_one_member_is_the_single_model():
    """A group of one on a GPU's program: the single model trained alone, to float32 tolerance."""
    spec = MemberSpec(4, 0.1)
    data = windows(6, seed=2)
    net = StackedLanguageModel(V, H, L, [spec]).train()
    history, _ = train_stacked(net, data, vec([1.0]), vec([0.5]))
    alone = single(spec).train()
    expected = train_single(alone, data, 1.0, 0.5)
    torch.testing.assert_close([nll[0] for nll, _ in history], [nll for nll, _ in expected], rtol=1e-5, atol=0)
    got = net.member_state_dict(0)
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "lstm, shape", [("step", "plain"), ("fused", "plain"), ("step", "layer_norm"), ("step", "tied")]
)
def test_member_weights_load_into_a_single_model_and_back(lstm, shape):
    shape = SHAPES[shape]
    specs = [MemberSpec(1, 0.1), MemberSpec(2, 0.2)]
    net = StackedLanguageModel(V, H, L, specs, **shape).train()
    train_stacked(net, windows(2), vec([1.0, 1.0]), vec([5.0, 5.0]))  # weights no initialisation explains
    x = windows(1, seed=3)[0][0]
    logits = net.eval()(x)[0]
    for k in range(2):
        alone = LSTMLanguageModel(V, H, L, 0.1, lstm=lstm, **shape)
        alone.load_state_dict(net.member_state_dict(k))
        torch.testing.assert_close(alone.eval()(x)[0], logits[k], rtol=1e-5, atol=1e-6)
    other = single(MemberSpec(9, 0.1), lstm, shape).state_dict()
    load_member(net, 0, other)
    assert all(torch.equal(net.member_state_dict(0)[n], v) for n, v in other.items())
    assert torch.equal(net.eval()(x)[0][1], logits[1])  # member 1 untouched


def test_bad_member_specs_rejected():
    with pytest.raises(ValueError, match=r"dropout.input=1.5 is outside \[0, 1\)"):
        StackedLanguageModel(V, H, L, [MemberSpec(1, 0.1), MemberSpec(2, 0.1, dropout_input=1.5)])
    with pytest.raises(ValueError, match="model.init_scale=0"):
        StackedLanguageModel(V, H, L, [{"seed": 1, "init_scale": 0}])


# -- members are independent ----------------------------------------------------------------------------
def run_group(specs, data, lr, clip, active=None, member1=None, per_member_tokens=None):
    net = StackedLanguageModel(V, H, L, specs).train()
    if member1 is not None:
        load_member(net, 1, member1)
    if per_member_tokens is not None:  # member 1 reads other data
        data = [(torch.stack([x, x2, x]), torch.stack([y, y2, y])) for (x, y), (x2, y2) in zip(data, per_member_tokens)]
    history, _ = train_stacked(net, data, lr, clip, active=active)
    return net, history


def assert_members_equal(a, b, members):
    (net_a, hist_a), (net_b, hist_b) = a, b
    for k in members:
        assert all(
            torch.equal(ha[0][k], hb[0][k]) and torch.equal(ha[1][k], hb[1][k]) for ha, hb in zip(hist_a, hist_b)
        )
        sa, sb = net_a.member_state_dict(k), net_b.member_state_dict(k)
        assert all(torch.equal(sa[n], sb[n]) for n in sa), k


@pytest.mark.parametrize("change", ["data", "lr", "weights", "dropout"])
def test_changing_member_1_leaves_members_0_and_2_bitwise_unchanged(change):
    specs = [MemberSpec(1, 0.1, **EVERYWHERE), MemberSpec(2, 0.1), MemberSpec(3, 0.05, **PLACEMENTS["variational"])]
    data, lr, clip = windows(4), vec([1.0, 1.0, 0.5]), vec([0.5, 5.0, 5.0])
    base = run_group(specs, data, lr, clip)
    changed = {
        "data": {"per_member_tokens": windows(4, seed=9)},
        "lr": {"lr": vec([1.0, 0.01, 0.5])},
        "weights": {"member1": single(MemberSpec(8, 0.3)).state_dict()},
        "dropout": {},
    }[change]
    if change == "dropout":
        specs[1] = MemberSpec(2, 0.1, **EVERYWHERE)
    other = run_group(specs, data, changed.pop("lr", lr), clip, **changed)
    assert_members_equal(base, other, [0, 2])
    assert not torch.equal(base[1][-1][0][1], other[1][-1][0][1])  # member 1 did change


@pytest.mark.parametrize("how", ["nan_weights", "inf_weights", "huge_lr"])
def test_a_diverging_member_leaves_the_others_bitwise_unchanged(how):
    specs = [MemberSpec(1, 0.1, **PLACEMENTS["non_recurrent"]), MemberSpec(2, 0.1), MemberSpec(3, 0.1)]
    data, lr, clip = windows(4), vec([1.0, 1.0, 0.5]), vec([0.5, 5.0, 1e9])  # member 2 unclipped
    base = run_group(specs, data, lr, clip)
    bad = single(specs[1]).state_dict()
    if how != "huge_lr":
        bad["decoder.bias"][3] = float("nan") if how == "nan_weights" else float("inf")
    if how == "huge_lr":  # unclipped, the first update overflows member 1's weights
        lr, clip = vec([1.0, 1e38, 0.5]), vec([0.5, 1e9, 1e9])
    diverging = run_group(specs, data, lr, clip, member1=bad)
    nll, norms = diverging[1][-1]
    assert not torch.isfinite(nll[1]) and not torch.isfinite(norms[1])
    assert_members_equal(base, diverging, [0, 2])


def test_an_inactive_member_keeps_its_weights_even_with_non_finite_gradients():
    specs = [MemberSpec(1, 0.1), MemberSpec(2, 0.1), MemberSpec(3, 0.1)]
    bad = single(specs[1]).state_dict()
    bad["decoder.weight"][0, 0] = float("nan")
    active = torch.tensor([True, False, True])
    net, history = run_group(specs, windows(3), vec([1.0, 1.0, 1.0]), vec([5.0, 5.0, 5.0]), active, member1=bad)
    assert not torch.isfinite(history[0][1][1])
    after = net.member_state_dict(1)
    assert all(torch.equal(after[n].view(torch.int32), v.view(torch.int32)) for n, v in bad.items())  # NaN too
    fresh = StackedLanguageModel(V, H, L, specs).member_state_dict(0)
    assert not torch.equal(net.member_state_dict(0)["decoder.weight"], fresh["decoder.weight"])  # 0 trained


def blow_up(net: StackedLanguageModel, k: int) -> dict[str, torch.Tensor]:
    """Member k's weights with a decoder bias that puts its loss above MAX_NLL, finite (as are its gradients):
    it diverges at its next window. Returns the weights it enters that window with."""
    weights = net.member_state_dict(k)
    weights["decoder.bias"][0] = 4 * MAX_NLL
    load_member(net, k, weights)
    return weights


def test_the_batched_program_switches_a_diverging_member_off_before_its_update():
    """StackedStep (the GPU's program, eager here): member 1's loss passes MAX_NLL (finite) at window 2 of 4. It
    is switched off before that window's update: its weights and momentum buffers stay those it entered the window
    with, bit for bit; failures() names it with global step 2 and that window's loss (not a later one's); members 0
    and 2 train on bit for bit as in the group where member 1 never diverged."""
    specs = [MemberSpec(1, 0.1, **PLACEMENTS["non_recurrent"]), MemberSpec(2, 0.1), MemberSpec(3, 0.1)]
    lrs, clips, momentums = [1.0, 1.0, 0.5], [0.5, 5.0, 1e9], [0.0, 0.5, 0.9]
    data = windows(4)
    base_net, base_step = program_group(specs, clips, "batched", momentums)
    base_losses = train_program(base_step, data, lrs)
    net, step = program_group(specs, clips, "batched", momentums)
    entered = {}

    def diverge(window):
        if window == 2:
            entered["weights"] = blow_up(net, 1)
            entered["buffers"] = [b[1].clone() for b in step.buffers]

    losses = train_program(step, data, lrs, diverge)
    assert step.active.tolist() == [True, False, True]
    assert MAX_NLL < losses[2][1] < math.inf and losses[1][1] < MAX_NLL
    assert step.failures([True] * 3) == {1: (2, losses[2][1].item())}
    kept = net.member_state_dict(1)
    assert [n for n, v in entered["weights"].items() if not torch.equal(kept[n], v)] == []  # not updated
    assert all(torch.equal(b[1], v) for b, v in zip(step.buffers, entered["buffers"]))
    for k in (0, 2):
        assert [loss[k].item() for loss in losses] == [loss[k].item() for loss in base_losses]
        ours, theirs = net.member_state_dict(k), base_net.member_state_dict(k)
        assert all(torch.equal(ours[n], theirs[n]) for n in ours), k


@needs_triton
@pytest.mark.parametrize("program", ["batched", "in_turn"])
def test_a_group_on_the_triton_update_trains_its_members_to_the_bit_as_on_the_torch_ops(program, monkeypatch):
    """speed.triton_update (in Triton's interpreter here): each program's update runs the kernel, and every member,
    the one that diverges at window 1 and is switched off included, ends with the same weights and losses, bit for
    bit, as on the torch ops' update."""
    import rnnreg.triton_update as triton_update  # (imports Triton)

    calls = counted_calls(monkeypatch, triton_update, "clipped_step_")
    specs = [MemberSpec(1, 0.1, **PLACEMENTS["non_recurrent"]), MemberSpec(2, 0.1), MemberSpec(3, 0.1)]
    runs = []
    for fused in (False, True):
        net, step = program_group(specs, [0.5, 5.0, 1e9], program, triton_update=fused)

        def diverge(window, net=net):
            if window == 1:
                blow_up(net, 1)

        losses = train_program(step, windows(3), [1.0, 1.0, 0.5], diverge)
        runs.append((net, losses, step.active.tolist()))
    assert runs[0][2] == runs[1][2] == [True, False, True]
    assert all(same_bits(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    for k in range(3):
        ours, theirs = runs[1][0].member_state_dict(k), runs[0][0].member_state_dict(k)
        assert all(torch.equal(ours[n], theirs[n]) for n in ours), k
    assert len(calls) == (3 if program == "batched" else 3 + 2 + 2)  # a window's, or each active member's


@pytest.mark.parametrize("program", ["batched", "in_turn"])
def test_failures_name_only_members_the_host_still_counts_as_running(program):
    """GroupStep.failures(running), as the group's loop reads it: member 1 diverges at window 0 and the host marks
    it failed; early stopping stops member 2 (stop(2)); member 0 diverges at window 2. Each failure is named once,
    at the check after it; a member the host no longer counts as running (failed before, or stopped, which
    switches it off with no failure recorded) is never named."""
    specs = [MemberSpec(1, 0.1), MemberSpec(2, 0.1), MemberSpec(3, 0.1)]
    net, step = program_group(specs, [5.0] * 3, program)
    data, lrs, running = windows(4), [1.0] * 3, [True] * 3

    def failed() -> dict[int, int]:
        """The members failures() names, with the window each diverged at (its loss past MAX_NLL, finite)."""
        failures = step.failures(running)
        assert all(MAX_NLL < loss < math.inf for _, loss in failures.values()), failures
        return {k: window for k, (window, _) in failures.items()}

    blow_up(net, 1)
    train_program(step, data[:1], lrs)
    assert failed() == {1: 0}
    running[1] = False  # the host marks it failed
    train_program(step, data[1:2], lrs)
    assert failed() == {}
    step.stop(2)  # an epoch's end: early stopping
    running[2] = False
    assert failed() == {}
    blow_up(net, 0)
    train_program(step, data[2:3], lrs)
    assert failed() == {0: 2}
    running[0] = False
    train_program(step, data[3:], lrs)
    assert failed() == {}
    assert step.active.tolist() == [False] * 3


@pytest.mark.parametrize("change", ["lr", "weights", "dropout", "diverge"])
def test_members_in_turn_are_independent(change):
    """A CPU's program: changing member 1 (its lr, its weights, its dropout, or NaN weights that make it
    diverge) leaves members 0 and 2 bitwise unchanged; a diverging member is switched off as failed at its
    first window and keeps its weights."""
    specs = [MemberSpec(1, 0.1, **EVERYWHERE), MemberSpec(2, 0.1), MemberSpec(3, 0.05, **PLACEMENTS["variational"])]
    data, lr, clip = windows(4), vec([1.0, 1.0, 0.5]), vec([0.5, 5.0, 5.0])

    def run(specs, lr, member1=None):
        net = StackedLanguageModel(V, H, L, specs).train()
        if member1 is not None:
            load_member(net, 1, member1)
        losses, step = train_in_turn(net, data, lr, clip)
        return net, losses, step

    base_net, base_losses, _ = run(specs, lr)
    member1 = None
    if change == "lr":
        lr = vec([1.0, 0.01, 0.5])
    elif change == "weights":
        member1 = single(MemberSpec(8, 0.3)).state_dict()
    elif change == "dropout":
        specs[1] = MemberSpec(2, 0.1, **EVERYWHERE)
    else:
        member1 = single(specs[1]).state_dict()
        member1["decoder.bias"][3] = float("nan")
    net, losses, step = run(specs, lr, member1)
    for k in (0, 2):
        assert [loss[k].item() for loss in losses] == [loss[k].item() for loss in base_losses]
        ours, theirs = net.member_state_dict(k), base_net.member_state_dict(k)
        assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    if change == "diverge":
        assert step.active.tolist() == [True, False, True]
        ((member, (window, loss)),) = step.failures([True] * 3).items()
        assert member == 1 and window == 0 and math.isnan(loss)
        kept = net.member_state_dict(1)
        assert all(torch.equal(kept[n].view(torch.int32), v.view(torch.int32)) for n, v in member1.items())
    else:
        assert losses[-1][1] != base_losses[-1][1]  # member 1 did change


@EVERY_SHAPE
def test_members_in_turn_are_their_jobs_dropout_and_all(shape):
    """A CPU's program: a member's masks are its single model's (the sites and draws of rnnreg.model), drawn
    from its job's own stream (seeded with its seed, after its model's initial draws) in place of the global
    one: each member with dropout (fused: non_recurrent and weight drop; step: everywhere, variational)
    trains as its job alone (torch.manual_seed(seed), build, train), to the last bit, whatever its group.
    The global stream is left as it was."""
    specs = [
        MemberSpec(1, 0.1, **EVERYWHERE),
        MemberSpec(2, 0.05, **PLACEMENTS["variational"]),
        MemberSpec(3, 0.1, **PLACEMENTS["non_recurrent"], weight_drop=0.2),
        MemberSpec(4, 0.1),
    ]
    data, lr, clip = windows(4), vec([1.0, 0.7, 1.0, 1.0]), vec([0.5, 5.0, 5.0, 5.0])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    net = StackedLanguageModel(V, H, L, specs, **shape).train()
    losses, _ = train_in_turn(net, data, lr, clip)
    assert torch.equal(torch.get_rng_state(), before)
    for k, spec in enumerate(specs):
        alone = single(spec, shape=shape).train()  # its job: seeded, built, trained on the global stream
        expected = train_clipped(alone, data, lr[k].item(), clip[k].item())
        assert [loss[k].item() for loss in losses] == [loss.item() for loss in expected], k
        got = net.member_state_dict(k)
        assert all(torch.equal(got[name], value) for name, value in alone.state_dict().items()), k
        assert torch.equal(net.generator_states()[k], torch.get_rng_state()), k  # the job's stream, where it stands


@pytest.mark.parametrize("placement", ["weight_drop", "embedding"])
def test_members_in_turn_draw_weight_drop_and_embedding_masks_from_their_jobs_stream(placement):
    """A CPU's program: a member whose only dropout is weight drop or embedding dropout (no dropout.p) draws those
    masks from its job's own stream as well, not from the global one: beside a member that draws masks every
    window, it trains as its job alone (torch.manual_seed(seed), build, train) to the last bit, and the global
    stream is left as it was."""
    specs = [MemberSpec(1, 0.1, **PLACEMENTS[placement]), MemberSpec(2, 0.1, **PLACEMENTS["non_recurrent"])]
    data, lr, clip = windows(3), vec([1.0, 1.0]), vec([5.0, 5.0])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    net = StackedLanguageModel(V, H, L, specs).train()
    losses, _ = train_in_turn(net, data, lr, clip)
    global_stream = torch.get_rng_state()
    alone = single(specs[0]).train()  # its job: seeded, built, trained on the global stream
    expected = train_clipped(alone, data, 1.0, 5.0)
    assert [loss[0].item() for loss in losses] == [loss.item() for loss in expected]
    got = net.member_state_dict(0)
    assert all(torch.equal(got[name], value) for name, value in alone.state_dict().items())
    assert torch.equal(net.generator_states()[0], torch.get_rng_state())  # the job's stream, where it stands
    assert torch.equal(global_stream, before)


def test_members_in_turn_evaluate_as_their_single_models():
    """The CPU's evaluation pass: each member's summed NLL is its single model's in eval mode, the state carried
    over the windows, to the last bit; a member that is not wanted (stopped, failed) is skipped (NaN)."""
    specs = [MemberSpec(1, 0.1, **EVERYWHERE), MemberSpec(2, 0.1), MemberSpec(3, 0.05, **PLACEMENTS["variational"])]
    net = StackedLanguageModel(V, H, L, specs).train()
    _, step = train_in_turn(net, windows(2), vec([1.0] * 3), vec([5.0] * 3))
    data = windows(3, seed=4)
    totals = step.nll_sums(data)
    for k in range(3):
        alone = LSTMLanguageModel(V, H, L, **specs[k].model_kwargs()).eval()
        alone.load_state_dict(net.member_state_dict(k))
        state, expected = None, torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for x, y in data:
                logits, state = alone(x, state)
                expected += torch.nn.functional.cross_entropy(logits.view(-1, V), y.reshape(-1)).double() * y.numel()
        assert totals[k].item() == expected.item()
    some = step.nll_sums(data, [True, False, True])
    assert math.isnan(some[1]) and some[0] == totals[0] and some[2] == totals[2]
    assert all(net.training for net in step.nets)  # back in training mode


@pytest.mark.parametrize("program", ["batched", "in_turn"])
def test_the_epochs_nll_sum_is_each_windows_mean_loss_times_its_tokens(program):
    """GroupStep.nll_sum, the epoch's training NLL sum (train ppl: it over the epoch's words): each window's mean
    loss times the window's T x B tokens, summed over the windows, for every member, in both programs (T != B:
    a count of either alone is off)."""
    assert T != B
    net, step = program_group(MIXED_KERNELS, [5.0, 0.5, 1.0], program)
    losses = train_program(step, windows(3), [1.0, 0.7, 1.3])
    expected = sum(loss.double() * (T * B) for loss in losses)
    torch.testing.assert_close(step.nll_sum, expected, rtol=1e-12, atol=0)


# -- dropout placements (the stacked forward: a GPU's program) -------------------------------------------
class Recorder:
    """Records every mask a member draws (per member, from its generator) and what each layer multiplies."""

    def __init__(self, monkeypatch, net: StackedLanguageModel):
        self.net, self.draws, self.layers = net, [], []
        draw, layer = stacked_module.fill_dropout_mask_, net.lstm_layer
        recorder = self

        def recording_mask(out, p, generator):
            m = draw(out, p, generator)
            recorder.draws.append((recorder.member_of(generator), tuple(m.shape), m.clone()))
            return m

        def recording_layer(x, h, c, weights, recurrent, norms=None):
            recorder.layers.append((weights[2].detach().clone(), recurrent))  # W_hh as used, masks on h_{t-1}
            return layer(x, h, c, weights, recurrent, norms)

        monkeypatch.setattr(stacked_module, "fill_dropout_mask_", recording_mask)
        monkeypatch.setattr(net, "lstm_layer", recording_layer)

    def member_of(self, generator) -> int:
        return next(k for k, g in enumerate(self.net.mask_generators) if g is generator)

    def shapes(self, k: int) -> list[tuple[int, ...]]:
        return [shape for member, shape, _ in self.draws if member == k]

    def recurrent(self, k: int) -> list[torch.Tensor | None]:
        """Member k's mask on h_{t-1} in each layer, (T, B, H), None where no member had one."""
        return [None if masks is None else masks[k] for _, masks in self.layers]


def placement_group() -> tuple[StackedLanguageModel, list[str]]:
    names = list(PLACEMENTS)
    return StackedLanguageModel(V, H, L, [MemberSpec(k, 0.1, **PLACEMENTS[n]) for k, n in enumerate(names)]), names


def test_each_member_gets_its_own_placement_in_one_group(monkeypatch):
    net, names = placement_group()
    rec = Recorder(monkeypatch, net.train())
    net(windows(1)[0][0])
    member = {n: k for k, n in enumerate(names)}
    ones = torch.ones(T, B, H)
    # no dropout: nothing drawn, h_{t-1} multiplied by ones
    assert rec.shapes(member["none"]) == []
    assert all(m is None or torch.equal(m, ones) for m in rec.recurrent(member["none"]))
    # the paper: L+1 sites on the non-recurrent connections, a fresh mask element per step, nothing on h_{t-1}
    assert rec.shapes(member["non_recurrent"]) == [(T, B, H)] * (L + 1)
    assert all(torch.equal(m, ones) for m in rec.recurrent(member["non_recurrent"]))
    # recurrent: one fresh mask per step on h_{t-1} in every layer, nothing elsewhere
    assert rec.shapes(member["recurrent"]) == [(T, B, H)] * L
    drawn = [d for k, _, d in rec.draws if k == member["recurrent"]]
    for m, mask in zip(rec.recurrent(member["recurrent"]), drawn):
        assert torch.equal(m, mask) and set(m.unique().tolist()) == {0.0, 1 / (1 - P)}
        assert all(not torch.equal(m[t], m[t + 1]) for t in range(T - 1))
    # variational: one (B, H) mask per site for the whole window, the recurrent one included
    assert rec.shapes(member["variational"]) == [(B, H)] * (2 * L + 1)
    for m in rec.recurrent(member["variational"]):
        assert all(torch.equal(m[0], m[t]) for t in range(T)) and not torch.equal(m[0], torch.ones(B, H))
    # weight drop: one (4H, H) DropConnect mask per layer per window, on a copy of W_hh
    assert rec.shapes(member["weight_drop"]) == [(4 * H, H)] * L
    w_masks = [d for k, _, d in rec.draws if k == member["weight_drop"]]
    for layer, ((weight_hh, _), mask) in enumerate(zip(rec.layers, w_masks)):
        real = getattr(net, f"lstm_weight_hh_l{layer}")[member["weight_drop"]]
        assert torch.equal(weight_hh[member["weight_drop"]], real * mask)
        assert torch.equal(weight_hh[member["none"]], getattr(net, f"lstm_weight_hh_l{layer}")[member["none"]])
    # embedding dropout: whole vocabulary rows, once per window
    assert rec.shapes(member["embedding"]) == [(V, 1)]


@EVERY_SHAPE
@pytest.mark.parametrize("variational", [False, True])
def test_a_members_masks_sit_where_the_single_model_puts_them(monkeypatch, variational, shape):
    """Member 1's masks, replayed into the single model's dropout sites (model.drop, model.dropout_mask) in
    the order it meets them, give member 1's logits and gradients: every mask sits at the single model's site,
    with layer norm too (its step loop masks h_{t-1} itself). (Weight drop, drawn by F.dropout there, is
    checked on W_hh above.)"""
    rates = {"dropout_input": 0.2, "dropout_between": 0.3, "dropout_output": 0.4, "dropout_recurrent": 0.25}
    # a site's rate shows in its mask
    spec = MemberSpec(3, 0.1, embedding_dropout=0.1, variational=variational, **rates)
    net = StackedLanguageModel(V, H, L, [MemberSpec(1, 0.1, **EVERYWHERE), spec], **shape).train()
    rec = Recorder(monkeypatch, net)
    x, y = windows(1)[0]
    logits, _ = net(x)
    (member_nll(logits, y) * T).sum().backward()
    queue, steps = iter([m for k, _, m in rec.draws if k == 1]), []

    def next_mask(p: float) -> torch.Tensor:
        mask = next(queue)
        assert set(mask.unique().tolist()) == {0.0, torch.tensor(1 / (1 - p)).item()}  # this site's rate
        return mask

    def replay_mask(shape, p, like):  # embedding rows, h_{t-1}: a fresh recurrent mask is served step by step
        if not steps:
            mask = next_mask(p)
            if mask.shape != (T, B, H):
                return mask
            steps.extend(mask.unbind(0))
        return steps.pop(0)

    monkeypatch.setattr(model_module, "dropout_mask", replay_mask)
    monkeypatch.setattr(model_module, "drop", lambda x, p, training, per_window: x * next_mask(p) if p else x)
    alone = single(spec, shape=shape).train()
    logits_k, _ = alone(x)
    torch.nn.functional.cross_entropy(logits_k.view(-1, V), y.reshape(-1)).mul(T).backward()
    assert next(queue, None) is None and steps == []  # every mask used
    torch.testing.assert_close(logits[1], logits_k, rtol=1e-5, atol=1e-6)
    # a layer-norm member applies its gain and shift apart from the normalisation (nn.LayerNorm: one kernel), whose
    # backward grows that rounding: a looser float32 tolerance there, still far below what a misplaced mask moves
    # (measured per CPU in docs/measurements.md, 2026-12-01)
    tolerance = {"rtol": 1e-4, "atol": 1e-6} if shape.get("layer_norm") else {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(grads_of(net, 1), {n: p.grad for n, p in alone.named_parameters()}, **tolerance)


def test_placements_draw_new_masks_every_window_and_keep_the_weights(monkeypatch):
    net, names = placement_group()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    rec = Recorder(monkeypatch, net.train())
    x = windows(1)[0][0]
    first, _ = net(x)
    first_draws = list(rec.draws)
    rec.draws.clear()
    second, _ = net(x)
    assert [(k, s) for k, s, _ in first_draws] == [(k, s) for k, s, _ in rec.draws]
    assert all(not torch.equal(a, b) for (_, _, a), (_, _, b) in zip(first_draws, rec.draws))
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())  # weight drop on copies only
    # the member without dropout computes the same in both windows; every other member does not
    assert torch.equal(first[names.index("none")], second[names.index("none")])
    assert all(not torch.equal(first[k], second[k]) for k, n in enumerate(names) if n != "none")


def test_eval_drops_nothing(monkeypatch):
    net, names = placement_group()
    rec = Recorder(monkeypatch, net.eval())
    x = windows(1)[0][0]
    logits, _ = net(x)
    assert rec.draws == [] and all(masks is None for _, masks in rec.layers)
    for k in range(len(names)):
        alone = LSTMLanguageModel(V, H, L, 0.1, lstm="step").eval()
        alone.load_state_dict(net.member_state_dict(k))
        torch.testing.assert_close(logits[k], alone(x)[0], rtol=1e-5, atol=1e-6)


def test_a_members_masks_do_not_depend_on_its_group():
    """Seed 5 with dropout everywhere, in [5, a] and in [5, b, c]: the same outputs, gradients and state
    over two windows in training mode (its masks come from its own generator only)."""
    member = MemberSpec(5, 0.1, **EVERYWHERE)
    groups = [
        [member, MemberSpec(6, 0.1, **PLACEMENTS["variational"])],
        [member, MemberSpec(7, 0.1, **EVERYWHERE), MemberSpec(8, 0.1, **PLACEMENTS["recurrent"])],
    ]
    results = []
    for specs in groups:
        net = StackedLanguageModel(V, H, L, specs).train()
        state, seen = None, []
        for x, y in windows(2):
            logits, state = net(x, state)
            (member_nll(logits, y) * T).sum().backward()
            seen.append((logits[0].detach(), state[0][0], state[1][0], grads_of(net, 0)))
            net.zero_grad()
        results.append(seen)
    for a, b in zip(*results):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
        assert all(torch.equal(a[3][n], b[3][n]) for n in a[3])


@pytest.mark.parametrize("layers", [2, 3])
def test_the_stacked_forward_draws_weight_drop_masks_in_the_single_models_order(layers):
    """On a CPU a member's masks are its job's only when drawn in its single model's order: every layer's W_hh
    mask up front (LSTMLanguageModel.run_lstm), then the dropout between the layers and on h_{t-1} layer by layer
    (before: layer l's W_hh mask after layer l-1's between-layer mask). Each member's first window in training
    gives its job's logits (seeded, built, a window on the global stream), fused and step-loop members alike."""
    specs = [
        MemberSpec(1, 0.1, **PLACEMENTS["non_recurrent"], weight_drop=0.3),  # dropout=weight_drop
        MemberSpec(2, 0.1, **EVERYWHERE),
        MemberSpec(3, 0.1, **PLACEMENTS["variational"], weight_drop=0.3),
    ]
    net = StackedLanguageModel(V, H, layers, specs).train()
    x = windows(1)[0][0]
    logits, _ = net(x)
    for k, spec in enumerate(specs):
        torch.manual_seed(spec.seed)
        alone = LSTMLanguageModel(V, H, layers, **spec.model_kwargs()).train()
        torch.testing.assert_close(logits[k], alone(x)[0], rtol=1e-5, atol=1e-6, msg=f"member {k}")


def test_generator_states_restore_every_members_masks():
    net = StackedLanguageModel(
        V, H, L, [MemberSpec(1, 0.1, **EVERYWHERE), MemberSpec(2, 0.1, **PLACEMENTS["variational"])]
    )
    x = windows(1)[0][0]
    net.train()(x)
    states = net.generator_states()
    expected, _ = net(x)
    net(x)  # the streams move on
    net.set_generator_states(states)
    assert torch.equal(net(x)[0], expected)


# -- the hidden units padded (the batched program on a GPU: hydra.launcher.pad_hidden_to) ------------------
PADDED = 16  # H = 12 held as 16: every weight, activation and mask with a padded slice


def padding_of(net: StackedLanguageModel, tensor: torch.Tensor, name) -> torch.Tensor:
    """`tensor` (laid out as parameter `name`, or with hidden units last) with the members' values zeroed:
    what is left is the padding."""
    rest = tensor.detach().clone()
    net.pad_into(rest, torch.zeros_like(net.unpadded(tensor.detach(), name)), name)
    return rest


@pytest.mark.parametrize("shape", ["plain", "tied"])
def test_a_padded_group_trains_as_the_unpadded_one(shape):
    """The batched program (StackedStep: masks, clip, weight decay, momentum, carried state) with the hidden
    units held as 16 instead of 12: every member's losses, gradient norms, weights, momentum buffers, carried
    state and evaluation are the unpadded group's to float32 rounding, its masks the same draws (the members'
    generators end in the same state), and the padding is exactly zero throughout."""
    from rnnreg.stacked_step import StackedStep

    specs = [
        MemberSpec(1, 0.1, **EVERYWHERE),
        MemberSpec(2, 0.1, **PLACEMENTS["variational"]),
        MemberSpec(3, 0.1, **PLACEMENTS["recurrent"]),
        MemberSpec(4, 0.1, lstm="step"),
    ]
    lrs, clips, decays, momentums = [1.0, 0.7, 1.5, 0.3], [5.0, 0.1, 1.0, 2.0], [0.0, 1e-3, 0.0, 0.0], [0, 0.5, 0, 0.9]
    runs = []
    for pad in (1, 8):
        net = StackedLanguageModel(V, H, L, specs, pad_hidden_to=pad, **SHAPES[shape]).train()
        step = StackedStep(net, (T, B), vec(clips), vec(decays), torch.device("cpu"), graph=False, momentums=momentums)
        losses, norms = [], []
        for x, y in windows(6):
            step(x, y, lrs)
            assert pad == 1 or all(not padding_of(net, p.grad, n).any() for n, p in net.named_parameters())
            step.clear_grads()
            losses.append(step.loss.clone())
            norms.append(step.grad_norm.clone())
        evaluation = step.nll_sums(windows(2, seed=1))
        runs.append((net, step, losses, norms, evaluation))
    (net, step, *results), (padded, padded_step, *padded_results) = runs
    assert (net.units, padded.units) == (H, PADDED) and padded.decoder_bias.shape == net.decoder_bias.shape
    assert padded.lstm_weight_hh_l0.shape == (len(specs), 4 * PADDED, PADDED)
    assert max(norm[1] for norm in results[1]) > clips[1]  # member 1 clipped
    for ours, theirs in zip(padded_results, results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for k in range(len(specs)):
        got, expected = padded.member_state_dict(k), net.member_state_dict(k)
        assert list(got) == list(expected)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
    for ours, theirs in zip(padded_step.state(), step.state()):  # unpadded, as a resume file holds it
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for name, buffer, theirs in zip(padded.single_names, padded_step.buffers, step.buffers):
        torch.testing.assert_close(padded.unpadded(buffer, name), theirs, rtol=1e-5, atol=1e-6)
        assert not padding_of(padded, buffer, name).any()
    assert all(torch.equal(a, b) for a, b in zip(padded.generator_states(), net.generator_states()))
    assert all(not padding_of(padded, p, name).any() for name, p in padded.named_parameters())
    assert not padding_of(padded, padded_step.h, (stacked_module.UNITS,)).any()
    assert not padding_of(padded, padded_step.c, (stacked_module.UNITS,)).any()


def test_a_padded_members_weights_are_its_single_models():
    """Padded, a member starts from its single model's weights (the same draws), loads a single model's state
    dict and gives it back unchanged, counts its single model's parameters, and is not a single model itself
    (the members in turn never run padded); layer norm, which normalises over the hidden units, is not padded."""
    specs = [MemberSpec(1, 0.1), MemberSpec(2, 0.2, lstm="step")]
    net, padded = StackedLanguageModel(V, H, L, specs), StackedLanguageModel(V, H, L, specs, pad_hidden_to=16)
    assert padded.units == PADDED
    for k, spec in enumerate(specs):
        alone = single(spec).state_dict()
        assert all(torch.equal(padded.member_state_dict(k)[n], v) for n, v in alone.items())
        assert all(torch.equal(padded.member_state_dict(k)[n], v) for n, v in net.member_state_dict(k).items())
    other = single(MemberSpec(9, 0.1)).state_dict()
    load_member(padded, 0, other)
    assert all(torch.equal(padded.member_state_dict(0)[n], v) for n, v in other.items())
    assert all(not padding_of(padded, p, name).any() for name, p in padded.named_parameters())
    count = sum(p.numel() for p in single(specs[0]).parameters())
    assert padded.parameters_per_member == net.parameters_per_member == count
    with pytest.raises(ValueError, match="not single models"):
        padded.member_model(0)
    with pytest.raises(ValueError, match="cannot pad 12 hidden units to a multiple of 8"):
        StackedLanguageModel(V, H, L, specs, layer_norm=True, pad_hidden_to=8)
    assert StackedLanguageModel(V, H, L, specs, layer_norm=True, pad_hidden_to=4).units == H  # nothing to pad
