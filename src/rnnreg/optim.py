"""The paper's optimisation: plain SGD on the clipped gradient, lr decayed per epoch.

`clip_and_sgd_` is the one update rule, for K models at once, each with its own lr, clip and weight decay:
the plain step (Lightning calls `ClippedSGD.step`), the fast step (its CUDA graph calls `ClippedSGD.update`
with a device lr), a stacked group's members trained in turn (K = 1 each) and its batched program (K members)
all run it, so they round alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def paper_lr_factor(epoch: int, decay: float, decay_start: int) -> float:
    """lr multiplier of 1-based `epoch`: 1 / decay^max(0, epoch - decay_start) (paper / TensorFlow rule)."""
    return decay ** -max(0, epoch - decay_start)


def one_member(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A single model's tensors as the one member of a stack: views (1, ...) of them."""
    return [t[None] for t in tensors]


def per_member(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (K,) value as (K, 1, ...) to broadcast against the stacked tensor `like`."""
    return value.view(-1, *[1] * (like.dim() - 1))


def scale_(tensors: Sequence[torch.Tensor], value: float | torch.Tensor) -> None:
    """Stacked `tensors` times each member's `value` in place: a float or a one-element tensor in one foreach
    call (one multi-tensor launch on CUDA), a (K,) tensor broadcast over each tensor's member dimension."""
    if isinstance(value, torch.Tensor) and value.numel() > 1:
        for t in tensors:
            t.mul_(per_member(value, t))
    else:
        torch._foreach_mul_(tensors, value.view(()) if isinstance(value, torch.Tensor) else value)


@torch.no_grad()
def clip_and_sgd_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    lr: float | torch.Tensor,
    clip: float | torch.Tensor,
    weight_decay: float | torch.Tensor = 0.0,
    momentum: float | torch.Tensor = 0.0,
    buffers: Sequence[torch.Tensor] | None = None,
    active: torch.Tensor | None = None,
    orders: Sequence[Sequence[int]] | None = None,
    triton_update: bool = False,
) -> torch.Tensor:
    """Each member's clip_grad_norm_ (its global L2 norm clipped to `clip`), coupled weight decay and momentum
    (as torch.optim.SGD, no dampening), and step p -= lr * g. As tensor ops with no host sync: capturable in a
    CUDA graph. Returns each member's gradient norm before clipping (K,).

    params, grads: (K, ...) tensors, member k's part at [k]; a single model is one member (`one_member`). The
    grads are overwritten, so none may share memory with another (each parameter's own .grad). lr, clip,
    weight_decay, momentum: floats (every member the same) or (K,) tensors; momentum needs `buffers` like
    params. active: (K,) bool or None; an inactive member (diverged, stopped) keeps its weights and its
    momentum buffers exactly. triton_update: the paper's recipe (no weight decay or momentum) as
    rnnreg.triton_update's kernel, one pass a parameter that rounds as the torch ops do and leaves the grads as they
    were.
    orders: member k's grads (indices) in its single model's parameter order, None: as given. Nothing mixes
    members, so a non-finite gradient of one member never reaches another's weights.
    """
    members = grads[0].size(0)
    orders = orders or [range(len(grads))] * members
    # each member's slices' norms in one foreach call, then the norm of each member's norms: clip_grad_norm_'s
    # reduction per member in its order, so the norm (and with it the clipped update) rounds as a single model's
    slice_norms = torch._foreach_norm([grads[i][k] for k in range(members) for i in orders[k]])
    norms = torch.linalg.vector_norm(torch.stack(slice_norms).view(members, -1), dim=1)
    # as clip_grad_norm_, whose float / tensor is Tensor.__rtruediv__: reciprocal, then times the clip
    clip_coef = ((norms + 1e-6).reciprocal() * clip).clamp(max=1.0)
    decays = isinstance(weight_decay, torch.Tensor) or weight_decay != 0.0
    moves = isinstance(momentum, torch.Tensor) or momentum != 0.0
    if triton_update and not (decays or moves):
        from rnnreg.triton_update import clipped_step_  # imports Triton: only when asked for

        clipped_step_(params, grads, clip_coef * lr, active)
        return norms
    # (a CUDA graph cannot branch on a device value; on a CPU reading it costs nothing and saves passes)
    frozen = None if active is None or (active.device.type == "cpu" and bool(active.all())) else ~active
    steps = grads
    if not (decays or moves):  # the paper's recipe: one pass over the gradients fewer
        scale_(grads, clip_coef * lr)
    else:
        scale_(grads, clip_coef)
        if isinstance(weight_decay, torch.Tensor):  # g + p * wd: one fused multiply-add, as alpha= below
            for g, p in zip(grads, params):
                g.addcmul_(p, per_member(weight_decay, p))
        elif weight_decay:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        if moves:  # the buffers carry on unscaled: the step is a copy
            if frozen is not None:  # an inactive member's buffer times 1 plus an exact 0: unchanged
                momentum = torch.where(active, momentum, 1.0)
                for g in grads:
                    g.masked_fill_(per_member(frozen, g), 0.0)
            scale_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            steps = [b.clone() for b in buffers]
        scale_(steps, lr)  # in place without momentum: no second copy of K members' gradients
    if frozen is not None:
        # an inactive member subtracts an exact 0, filled in (not multiplied: NaN * 0 is NaN)
        for step in steps:
            step.masked_fill_(per_member(frozen, step), 0.0)
    # p - g as its own op: a fused p - lr * g rounds once instead of twice, and SGD at lr 1 grows that
    # last-bit difference into another run within tens of windows
    torch._foreach_sub_(params, steps)
    return norms


class ClippedSGD(torch.optim.Optimizer):
    """torch.optim.SGD with the paper's global-norm clip inside the step, so that clip and update are one
    rule (clip_and_sgd_). `grad_norm` holds the latest norm before clipping (a device tensor); `triton_update`:
    speed.triton_update (not in its state: how fast, not what it computes)."""

    def __init__(
        self,
        params,
        lr: float,
        clip: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        triton_update: bool = False,
    ):
        super().__init__(params, {"lr": lr, "clip": clip, "momentum": momentum, "weight_decay": weight_decay})
        self.grad_norm = torch.zeros(())
        self.triton_update = triton_update

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
            one_member(params),
            one_member([p.grad for p in params]),
            group["lr"] if lr is None else lr,
            group["clip"],
            group["weight_decay"],
            group["momentum"],
            None if buffers is None else one_member(buffers),
            triton_update=self.triton_update,
        )[0]
        return self.grad_norm


def paper_schedule(optimizer: torch.optim.Optimizer, decay: float, decay_start: int):
    """lr = lr0 / decay^max(0, epoch - decay_start), stepped once per epoch (LambdaLR counts from 0)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: paper_lr_factor(done + 1, decay, decay_start))


def paper_optimizer(
    params, optim: dict, triton_update: bool = False
) -> tuple[ClippedSGD, torch.optim.lr_scheduler.LambdaLR]:
    """The recipe's optimiser and lr schedule from the optim config (with `clip`, trainer.gradient_clip_val):
    what a run trains with, and what a stacked member's checkpoint records. triton_update: speed.triton_update."""
    optimizer = ClippedSGD(
        params,
        lr=optim["lr"],
        clip=optim["clip"],
        momentum=optim.get("momentum", 0.0),
        weight_decay=optim.get("weight_decay", 0.0),
        triton_update=triton_update,
    )
    return optimizer, paper_schedule(optimizer, optim["decay"], optim["decay_start"])
