"""The one update rule (rnnreg.optim): what torch's clip_grad_norm_ + SGD compute, and the lr schedule."""

from __future__ import annotations

import pytest
import torch

from rnnreg.optim import ClippedSGD, clip_and_sgd_, paper_lr_factor


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


def test_at_lr_one_the_rule_subtracts_the_clipped_gradient_exactly():
    """The paper's first epochs: p - clip_coef * g, rounded once for the product and once for the
    difference, whether lr is a float (plain step) or a device tensor (the fast step's graph)."""
    params, grads = params_and_grads()
    by_float, by_tensor = [p.clone() for p in params], [p.clone() for p in params]
    norm = clip_and_sgd_(by_float, [g.clone() for g in grads], 1.0, 0.5)
    clip_and_sgd_(by_tensor, [g.clone() for g in grads], torch.tensor(1.0), 0.5)
    coef = (0.5 / (norm + 1e-6)).clamp(max=1.0)
    for p, a, b, g in zip(params, by_float, by_tensor, grads):
        assert torch.equal(a, p - g * coef) and torch.equal(b, a)


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
