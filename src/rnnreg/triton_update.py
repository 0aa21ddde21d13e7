"""The paper's clipped SGD step for K stacked members as one Triton kernel per parameter (`speed.triton_update`).

After the gradients' norm, rnnreg.optim.clip_and_sgd_ in torch ops makes three elementwise passes that move seven
tensors' worth of memory: scale by clip coefficient x lr (read g, write g), zero an inactive member's step (read,
write), p - step (read p and g, write p); for 15 medium members a tensor's worth is about 1.2 GB. Here the step is
one pass that moves three (read p and g, write p), with the same arithmetic rounded the same way: step =
g * (clip coefficient x lr), then p - step, two roundings (fp fusion off: no fused multiply-add). An inactive member
(diverged, stopped) is not read or written at all, so its NaN gradients never reach its weights. The paper's recipe
only (no weight decay or momentum: those keep the torch ops).

`TRITON_INTERPRET=1` runs the kernel on a CPU (for tests); rnnreg.speed_settings.require_triton says where it
cannot run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _member_step(param, grad, scale, member, member_numel, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offsets < member_numel
    start = member.to(tl.int64) * member_numel
    step = tl.load(grad + start + offsets, mask=live) * tl.load(scale + member)
    tl.store(param + start + offsets, tl.load(param + start + offsets, mask=live) - step, mask=live)


@triton.jit
def _clipped_step(param, grad, scale, active, member_numel, BLOCK: tl.constexpr, EVERY_MEMBER: tl.constexpr):
    member = tl.program_id(1)
    if EVERY_MEMBER:  # (a single model: no flag to read)
        _member_step(param, grad, scale, member, member_numel, BLOCK)
    elif tl.load(active + member) != 0:  # an inactive member's weights are not read or written
        _member_step(param, grad, scale, member, member_numel, BLOCK)


@torch.no_grad()
def clipped_step_(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], scale: torch.Tensor, active: torch.Tensor | None
) -> None:
    """p[k] -= grads[k] * scale[k] for every member k that is active, in place; params and grads (K, ...) with the
    members leading, scale (K,) (clip coefficient x lr), active (K,) bool or None (every member: a single model,
    nothing to read). The grads are not changed."""
    flags = scale if active is None else active.to(torch.int8)  # (with every member the kernel reads no flag)
    for param, grad in zip(params, grads):
        if not param.is_contiguous():
            raise ValueError(
                f"clipped_step_ updates parameters in place, and one {tuple(param.shape)} is not contiguous"
            )
        grad = grad.contiguous()  # (autograd gives a gradient its parameter's layout: no copy)
        members, numel = param.size(0), param[0].numel()
        grid = (triton.cdiv(numel, BLOCK), members)
        _clipped_step[grid](
            param,
            grad,
            scale.to(param.dtype),
            flags,
            numel,
            BLOCK=BLOCK,
            EVERY_MEMBER=active is None,
            enable_fp_fusion=False,
        )
