"""The paper's optimisation: plain SGD on the clipped gradient, lr decayed per epoch.

`clip_and_sgd_` is the one update rule: the plain step (Lightning calls `ClippedSGD.step`) and the fast
step (its CUDA graph calls `ClippedSGD.update` with a device lr) both run it, so they round alike.
"""

from __future__ import annotations

import torch


def paper_lr_factor(epoch: int, decay: float, decay_start: int) -> float:
    """lr multiplier of 1-based `epoch`: 1 / decay^max(0, epoch - decay_start) (paper / TensorFlow rule)."""
    return decay ** -max(0, epoch - decay_start)


@torch.no_grad()
def clip_and_sgd_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    lr: float | torch.Tensor,
    clip: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    buffers: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Clip the gradients to global L2 norm `clip` (as clip_grad_norm_), add coupled weight decay and
    momentum (as torch.optim.SGD, no dampening), and step: p -= lr * g. Overwrites `grads`; no host sync
    (capturable). Returns the norm before clipping."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    clip_coef = (clip / (norm + 1e-6)).clamp(max=1.0)
    if not (weight_decay or momentum):  # the paper's recipe: one pass over the gradients fewer
        torch._foreach_mul_(grads, clip_coef * lr)
        steps = grads
    else:
        torch._foreach_mul_(grads, clip_coef)
        if weight_decay:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        if momentum:
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            grads = buffers
        steps = torch._foreach_mul(grads, lr)
    # p - g as its own op: a fused p - lr * g rounds once instead of twice, and SGD at lr 1 grows that
    # last-bit difference into another run within tens of windows
    torch._foreach_sub_(params, steps)
    return norm


class ClippedSGD(torch.optim.Optimizer):
    """torch.optim.SGD with the paper's global-norm clip inside the step, so that clip and update are one
    rule (clip_and_sgd_). `grad_norm` holds the latest norm before clipping (a device tensor)."""

    def __init__(self, params, lr: float, clip: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "clip": clip, "momentum": momentum, "weight_decay": weight_decay})
        self.grad_norm = torch.zeros(())

    @torch.no_grad()
    def step(self, closure=None, update: bool = True):
        """Run `closure` (forward and backward), then the update. update=False: the closure ran the update
        itself (the fast step, whose CUDA graph holds it); the call only counts the step for Lightning."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if update:
            self.update()
        return loss

    @torch.no_grad()
    def update(self, lr: torch.Tensor | None = None) -> torch.Tensor:
        """The update of every parameter that has a gradient; `lr`: a device tensor in place of the group's
        float (the fast step's CUDA graph reads the lr from memory)."""
        (group,) = self.param_groups
        params = [p for p in group["params"] if p.grad is not None]
        buffers = None
        if group["momentum"]:
            buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
        self.grad_norm = clip_and_sgd_(
            params,
            [p.grad for p in params],
            group["lr"] if lr is None else lr,
            group["clip"],
            group["weight_decay"],
            group["momentum"],
            buffers,
        )
        return self.grad_norm


def paper_schedule(optimizer: torch.optim.Optimizer, decay: float, decay_start: int):
    """lr = lr0 / decay^max(0, epoch - decay_start), stepped once per epoch (LambdaLR counts from 0)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: paper_lr_factor(done + 1, decay, decay_start))


def paper_optimizer(params, optim: dict) -> tuple[ClippedSGD, torch.optim.lr_scheduler.LambdaLR]:
    """The recipe's optimiser and lr schedule from the optim config (with `clip`, trainer.gradient_clip_val):
    what a run trains with, and what a stacked member's checkpoint records."""
    optimizer = ClippedSGD(
        params,
        lr=optim["lr"],
        clip=optim["clip"],
        momentum=optim.get("momentum", 0.0),
        weight_decay=optim.get("weight_decay", 0.0),
    )
    return optimizer, paper_schedule(optimizer, optim["decay"], optim["decay_start"])
