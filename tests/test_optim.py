"""The one update rule (rnnreg.optim): what torch's clip_grad_norm_ + SGD compute, for one model and for a
stack of members each with its own values, and the lr schedule."""

from __future__ import annotations

import pytest
import torch

from helpers import needs_triton, same_bits
from rnnreg.optim import ClippedSGD, clip_and_sgd_, one_member, paper_lr_factor, paper_optimizer


def params_and_grads(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 4), (4,), (3, 3, 2)]
    params = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 3 for s in shapes]
    return params, grads


@pytest.mark.parametrize("clip", [0.5, 100.0], ids=["clipped", "unclipped"])
@pytest.mark.parametrize(
    "lr,weight_decay,momentum", [(1.0, 0.0, 0.0), (0.37, 0.0, 0.0), (0.5, 1e-2, 0.0), (0.5, 1e-2, 0.9)]
)
def test_clipped_sgd_computes_torch_clip_and_sgd(clip, lr, weight_decay, momentum):
    """Three steps of ClippedSGD equal clip_grad_norm_ + torch.optim.SGD (float rounding aside)."""
    ours, theirs = ([p.clone().requires_grad_() for p in params_and_grads()[0]] for _ in range(2))
    opt = ClippedSGD(ours, lr=lr, clip=clip, momentum=momentum, weight_decay=weight_decay)
    ref = torch.optim.SGD(theirs, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for step in range(3):
        grads = params_and_grads(step + 1)[1]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        norm = torch.nn.utils.clip_grad_norm_(theirs, clip)
        ref.step()
        torch.testing.assert_close(opt.grad_norm, norm)
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_paper_optimizer_trains_with_every_optim_setting_and_the_papers_schedule():
    """paper_optimizer (what a run trains with) from the optim config: each epoch's step is clip_grad_norm_ at
    optim.clip, then torch.optim.SGD at optim.lr / decay^max(0, epoch - decay_start) (epochs from 1), with
    optim.momentum and optim.weight_decay; every value differs from its default, so none may be dropped."""
    optim = {"lr": 0.5, "clip": 0.3, "momentum": 0.9, "weight_decay": 0.05, "decay": 2.0, "decay_start": 2}
    ours, theirs = ([p.clone().requires_grad_() for p in params_and_grads()[0]] for _ in range(2))
    optimizer, schedule = paper_optimizer(ours, optim)
    ref = torch.optim.SGD(theirs, lr=0.5, momentum=0.9, weight_decay=0.05)
    for epoch, lr in enumerate([0.5, 0.5, 0.25, 0.125], start=1):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr), epoch
        ref.param_groups[0]["lr"] = lr
        for p, q, g in zip(ours, theirs, params_and_grads(epoch)[1]):
            p.grad, q.grad = g.clone(), g.clone()
        optimizer.step()
        assert torch.nn.utils.clip_grad_norm_(theirs, 0.3) > 0.3  # clipped
        ref.step()
        schedule.step()  # once per epoch, as Lightning steps it
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_at_lr_one_the_rule_subtracts_the_clipped_gradient_exactly():
    """The paper's first epochs: p - clip_coef * g, rounded once for the product and once for the
    difference, whether lr is a float (plain step) or a device tensor (the fast step's graph)."""
    params, grads = params_and_grads()
    by_float, by_tensor = [p.clone() for p in params], [p.clone() for p in params]
    (norm,) = clip_and_sgd_(one_member(by_float), one_member([g.clone() for g in grads]), 1.0, 0.5)
    clip_and_sgd_(one_member(by_tensor), one_member([g.clone() for g in grads]), torch.tensor(1.0), 0.5)
    coef = (0.5 / (norm + 1e-6)).clamp(max=1.0)
    for p, a, b, g in zip(params, by_float, by_tensor, grads):
        assert torch.equal(a, p - g * coef) and torch.equal(b, a)


MEMBERS = {  # (lr, clip, weight decay) of three members: clipped, unclipped, clipped and decayed
    "lr": [1.0, 0.37, 0.5],
    "clip": [0.5, 100.0, 0.25],
    "weight_decay": [0.0, 0.0, 1e-2],
}


def stack_of(seeds: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Members' params and grads stacked (K, ...): member k is params_and_grads(seeds[k])."""
    members = [params_and_grads(seed) for seed in seeds]
    return [torch.stack(ts) for ts in zip(*(m[0] for m in members))], [
        torch.stack(ts) for ts in zip(*(m[1] for m in members))
    ]


@pytest.mark.parametrize("decays", [True, False], ids=["weight_decay", "none_decays"])
def test_each_member_of_a_stack_steps_as_it_would_alone_to_the_bit(decays):
    """K members with their own lr, clip and weight decay in one call: each member's norm and new weights
    are exactly those of its own call with its values as floats (as ClippedSGD and the in-turn program make
    it), so the batched program's update rounds as its jobs' runs do."""
    seeds = [3, 4, 5]
    params, grads = stack_of(seeds)
    wd = torch.tensor(MEMBERS["weight_decay"]) if decays else 0.0
    norms = clip_and_sgd_(params, grads, torch.tensor(MEMBERS["lr"]), torch.tensor(MEMBERS["clip"]), wd)
    for k, seed in enumerate(seeds):
        alone, alone_grads = params_and_grads(seed)
        decay = MEMBERS["weight_decay"][k] if decays else 0.0
        (norm,) = clip_and_sgd_(one_member(alone), one_member(alone_grads), MEMBERS["lr"][k], MEMBERS["clip"][k], decay)
        assert torch.equal(norms[k], norm)
        for p, q in zip(params, alone):
            assert torch.equal(p[k], q)


def test_an_inactive_member_keeps_its_weights_and_a_nan_stays_in_its_member():
    """active=False keeps a member's weights exactly, even with a NaN gradient; the others step as alone."""
    params, grads = stack_of([3, 4, 5])
    before = [p.clone() for p in params]
    grads[0][1].view(-1)[0] = float("nan")
    active = torch.tensor([True, False, True])
    norms = clip_and_sgd_(params, grads, 1.0, 0.5, active=active)
    assert norms[1].isnan() and norms[[0, 2]].isfinite().all()
    for p, b in zip(params, before):
        assert torch.equal(p[1], b[1])
    for k, seed in ((0, 3), (2, 5)):
        alone, alone_grads = params_and_grads(seed)
        clip_and_sgd_(one_member(alone), one_member(alone_grads), 1.0, 0.5)
        assert all(torch.equal(p[k], q) for p, q in zip(params, alone))


@needs_triton
@pytest.mark.parametrize("active", ["all", "one off"])
def test_the_fused_update_is_the_torch_ops_update_to_the_bit(active):
    """speed.triton_update (rnnreg.triton_update, in Triton's interpreter here): three members with their own lr and
    clip, one of them inactive with a NaN gradient, step to exactly the torch ops' weights and norms over three
    steps, and the fused update leaves the grads as they were."""
    on = torch.tensor([True, active == "all", True])
    fused, ops = stack_of([3, 4, 5])[0], stack_of([3, 4, 5])[0]
    lrs, clips = torch.tensor(MEMBERS["lr"]), torch.tensor(MEMBERS["clip"])
    for step in range(3):
        grads = stack_of([6 + step, 9 + step, 12 + step])[1]
        if active == "one off":
            grads[0][1].view(-1)[0] = float("nan")
        given = [g.clone() for g in grads]
        norms = clip_and_sgd_(fused, given, lrs, clips, active=on, triton_update=True)
        assert all(same_bits(g, h) for g, h in zip(given, grads))
        assert same_bits(norms, clip_and_sgd_(ops, grads, lrs, clips, active=on))
        assert all(torch.equal(p, q) for p, q in zip(fused, ops))
    assert not any(torch.equal(p, q) for p, q in zip(fused, stack_of([3, 4, 5])[0]))  # they did step


@needs_triton
@pytest.mark.parametrize("lr", [0.37, torch.tensor(0.37)], ids=["float", "device tensor"])
def test_a_single_models_fused_update_is_its_torch_ops_update_to_the_bit(lr):
    """ClippedSGD with speed.triton_update steps a single model exactly as without it, whether the lr is
    the plain step's float or the fast step's device tensor; with momentum it keeps the torch ops (exact too), which
    scale the grads in place (the kernel leaves them)."""
    for momentum in (0.0, 0.9):
        fused, ops = ([p.clone().requires_grad_() for p in params_and_grads()[0]] for _ in range(2))
        optimizers = [
            ClippedSGD(ps, lr=0.37, clip=0.5, momentum=momentum, triton_update=on)
            for ps, on in ((fused, True), (ops, False))
        ]
        for step in range(3):
            for ps, optimizer in zip((fused, ops), optimizers):
                for p, g in zip(ps, params_and_grads(step + 1)[1]):
                    p.grad = g.clone()
                optimizer.update(lr if isinstance(lr, torch.Tensor) else None)
            assert torch.equal(optimizers[0].grad_norm, optimizers[1].grad_norm)
            assert all(torch.equal(p, q) for p, q in zip(fused, ops)), (momentum, step)
            kept = [torch.equal(p.grad, g) for p, g in zip(fused, params_and_grads(step + 1)[1])]
            assert all(kept) if not momentum else not any(kept)


def test_each_members_momentum_carries_as_it_would_alone_to_the_bit():
    """Per-member momentum (a (K,) tensor, one member at 0) over three steps: each member's weights and
    momentum buffers are exactly those of its own calls with its values as floats (ClippedSGD's), the member
    without momentum's weights too."""
    seeds, momentum = [3, 4, 5], [0.9, 0.5, 0.0]
    lr, clip, wd = (torch.tensor(MEMBERS[key]) for key in ("lr", "clip", "weight_decay"))
    params = stack_of(seeds)[0]
    buffers = [torch.zeros_like(p) for p in params]
    alone = [params_and_grads(seed)[0] for seed in seeds]
    alone_buffers = [[torch.zeros_like(p) for p in member] for member in alone]
    for step in range(3):
        grads = stack_of([s + 10 * (step + 1) for s in seeds])[1]
        clip_and_sgd_(params, grads, lr, clip, wd, torch.tensor(momentum), buffers)
        for k, seed in enumerate(seeds):
            alone_grads = params_and_grads(seed + 10 * (step + 1))[1]
            values = (MEMBERS[key][k] for key in ("lr", "clip", "weight_decay"))
            clip_and_sgd_(
                one_member(alone[k]), one_member(alone_grads), *values, momentum[k], one_member(alone_buffers[k])
            )
    for k in range(len(seeds)):
        assert all(torch.equal(p[k], q) for p, q in zip(params, alone[k])), k
        if momentum[k]:  # (member 2 has none: alone it keeps no buffer, and its slice here is never read)
            assert all(torch.equal(b[k], c) for b, c in zip(buffers, alone_buffers[k])), k
            assert all(c.abs().sum() > 0 for c in alone_buffers[k])


def test_an_inactive_member_keeps_its_momentum_buffers():
    """A stopped member's buffers stay as they were (its checkpoint holds them), its weights too."""
    params, grads = stack_of([3, 4])
    buffers = [torch.rand_like(p) for p in params]
    before, before_params = [b.clone() for b in buffers], [p.clone() for p in params]
    clip_and_sgd_(params, grads, 1.0, 0.5, 0.0, torch.tensor([0.9, 0.9]), buffers, active=torch.tensor([True, False]))
    for b, old, p, old_p in zip(buffers, before, params, before_params):
        assert torch.equal(b[1], old[1]) and torch.equal(p[1], old_p[1])
        assert not torch.equal(b[0], old[0])


def test_orders_reduce_each_member_in_its_own_order():
    """orders: member k's norm reduces its slices in its order, as its single model's clip would."""
    params, grads = stack_of([3, 4])
    order = [2, 0, 1]
    norms = clip_and_sgd_([p.clone() for p in params], [g.clone() for g in grads], 1.0, 0.5, orders=[order, order])
    for k in range(2):
        expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grads[i][k]) for i in order]))
        torch.testing.assert_close(norms[k], expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "decay,k,expected",
    [
        (2.0, 4, [1, 1, 1, 1, 0.5, 0.25, 0.125, 0.0625, 0.03125, 2**-6, 2**-7, 2**-8, 2**-9]),
        (1.2, 6, [1] * 6 + [1.2**-i for i in range(1, 34)]),
        (1.15, 14, [1] * 14 + [1.15**-i for i in range(1, 42)]),
    ],
)
def test_lr_schedule_factor(decay: float, k: int, expected: list[float]):
    assert [paper_lr_factor(e, decay, k) for e in range(1, len(expected) + 1)] == pytest.approx(expected)
