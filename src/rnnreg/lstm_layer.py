"""One LSTM layer over a window as a step loop with a hand-written backward: no autograd graph per time step,
and the recurrent weight's gradient is one matmul over the whole window instead of one small matmul per step.
h_{t-1} is optionally multiplied by a dropout mask (recurrent or variational dropout).

The arithmetic is written once, for a single layer (gates_x (T, B, 4H)) and for K members' layers stacked
along a leading dimension (gates_x (K, T, B, 4H)): time is dim -3 in both, and a matmul is a GEMM or a
batched GEMM, and one `LSTMLayerFunction` serves both. Gate order (i, f, g, o) as nn.LSTM. `triton_cell`: a
step's elementwise work as one Triton kernel each way (rnnreg.triton_cell; a CUDA device or
TRITON_INTERPRET=1), the same arithmetic rounded otherwise.

Under autocast (trainer.precision=bf16-mixed) the layer's GEMMs run in 16 bits, as autocast runs a GEMM: W_hh is
cast once a window (autocast's weight cache, off inside a CUDA graph's capture, would cast it at every step), h_{t-1}
and the gate gradients at each step, the window's weight gradient in one bf16 GEMM (float32 under fp16, whose range
a window's sum could exceed); the gates' sum, the cell and everything carried from step to step stay in float32.
"""

from __future__ import annotations

import torch


def transposed_storage(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """weight ([K,] 4H, H) as the same values held transposed in memory, an (H, 4H) row-major copy viewed as
    (4H, H), cast to `dtype` in the same pass."""
    shape = (*weight.shape[:-2], weight.size(-1), weight.size(-2))
    held = weight.new_empty(shape, dtype=dtype or weight.dtype).copy_(weight.transpose(-1, -2))
    return held.transpose(-1, -2)


def aligned_on_cuda(weight: torch.Tensor) -> bool:
    """A CUDA weight with 16-byte aligned rows (H a multiple of 8). There cuBLAS runs the recurrent GEMMs faster on W_hh
    held transposed in bf16 (the forward's) and for float32's backward (TF32 too), and no faster for float32's forward
    or in fp16 (docs/measurements.md, "The window's GEMMs")."""
    return weight.is_cuda and weight.size(-1) % 8 == 0


def layer_forward(
    gates_x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    weight_hh: torch.Tensor,
    masks: torch.Tensor | None,
    triton_cell: bool = False,
) -> tuple[torch.Tensor, ...]:
    """gates_x: ([K,] T, B, 4H) input projections with both biases; h, c: ([K,] B, H); weight_hh: ([K,] 4H, H);
    masks: ([K,] T, B, H) multiplying h_{t-1}, or None. Returns what backward needs: (acts, h0, c0, outputs,
    cells, tanh_cells, weight_hh, masks, inputs); the final h, c are outputs[..., -1, :, :] and
    cells[..., -1, :, :]."""
    shape = (*h.shape[:-2], gates_x.size(-3), *h.shape[-2:])
    acts = torch.empty_like(gates_x)  # sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    outputs, cells, tanh_cells = h.new_empty(shape), h.new_empty(shape), h.new_empty(shape)
    inputs = None if masks is None else h.new_empty(shape)  # h_{t-1} after its mask
    saved = acts, h, c, outputs, cells, tanh_cells, weight_hh, masks, inputs
    (steps_forward_triton if triton_cell else steps_forward)(gates_x, saved)
    return saved


def steps_forward(gates_x: torch.Tensor, saved: tuple[torch.Tensor, ...]) -> None:
    """The window step by step in torch ops, into layer_forward's buffers."""
    acts, h, c, outputs, cells, tanh_cells, weight_hh, masks, inputs = saved
    units = h.size(-1)
    addmm = torch.addmm if h.dim() == 2 else torch.baddbmm
    weight_t = weight_hh.transpose(-1, -2)
    mixed = weight_hh.dtype != h.dtype  # autocast: a 16-bit GEMM, its product added in float32
    for t in range(gates_x.size(-3)):
        h_in = h if masks is None else torch.mul(h, masks.select(-3, t), out=inputs.select(-3, t))
        if mixed:
            gates = torch.add(gates_x.select(-3, t), torch.matmul(h_in.to(weight_t.dtype), weight_t))
        else:
            gates = addmm(gates_x.select(-3, t), h_in, weight_t)
        act = acts.select(-3, t)
        torch.sigmoid(gates, out=act)
        torch.tanh(gates[..., 2 * units : 3 * units], out=act[..., 2 * units : 3 * units])
        i, f, g, o = act.chunk(4, -1)
        c = torch.addcmul(f * c, i, g, out=cells.select(-3, t))
        h = torch.mul(o, torch.tanh(c, out=tanh_cells.select(-3, t)), out=outputs.select(-3, t))


def steps_forward_triton(gates_x: torch.Tensor, saved: tuple[torch.Tensor, ...]) -> None:
    """`steps_forward` with a step's elementwise work as one Triton kernel (rnnreg.triton_cell): two kernels a step, the
    GEMM and the cell's, which adds gates_x and masks h for the next step."""
    from rnnreg.triton_cell import cell_forward  # imports Triton: only when asked for

    acts, h0, c0, outputs, cells, tanh_cells, weight_hh, masks, inputs = saved
    count = gates_x.size(-3)
    weight_t = weight_hh.transpose(-1, -2)
    h_in = h0 if masks is None else torch.mul(h0, masks.select(-3, 0), out=inputs.select(-3, 0))
    for t in range(count):
        gates_h = torch.matmul(h_in.to(weight_t.dtype), weight_t)  # (autocast: in 16 bits; the kernel adds in float32)
        ahead = masks is not None and t + 1 < count
        cell_forward(
            gates_x.select(-3, t),
            gates_h,
            c0 if t == 0 else cells.select(-3, t - 1),
            acts.select(-3, t),
            cells.select(-3, t),
            tanh_cells.select(-3, t),
            outputs.select(-3, t),
            masks.select(-3, t + 1) if ahead else None,
            inputs.select(-3, t + 1) if ahead else None,
        )
        h_in = inputs.select(-3, t + 1) if ahead else outputs.select(-3, t)


def layer_backward(
    saved: tuple[torch.Tensor, ...],
    d_outputs: torch.Tensor,
    d_h: torch.Tensor,
    d_c: torch.Tensor,
    triton_cell: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of gates_x, h, c and weight_hh from layer_forward's `saved` and the gradients of the
    outputs and the final h, c. Only dh and dc go step by step; the recurrent weight's gradient is one matmul
    over the window."""
    weight_hh = saved[6]
    held_as_is = weight_hh.stride(-1) == 1  # (a bf16 cast under autocast may be held transposed already)
    if held_as_is and weight_hh.dtype != torch.float16 and aligned_on_cuda(weight_hh):  # one copy for T GEMMs
        saved = (*saved[:6], transposed_storage(weight_hh), *saved[7:])
    d_gates, dh, dc = (steps_back_triton if triton_cell else steps_back)(saved, d_outputs, d_h, d_c)
    _, h0, _, outputs, _, _, _, _, inputs = saved
    if inputs is None:  # unmasked, h_{t-1} entered step t as it was: h0, then the outputs
        inputs = torch.cat([h0.unsqueeze(-3), outputs.narrow(-3, 0, outputs.size(-3) - 1)], -3)
    # bf16 autocast: the weight gradient's GEMM in bf16 too, as autocast's F.linear has it; fp16's: in float32, as
    # its sum over the window's T x B rows (T times a step's) could overflow fp16's range under loss scaling
    gemm = weight_hh.dtype if weight_hh.dtype != torch.float16 else h0.dtype
    d_weight = torch.matmul(d_gates.flatten(-3, -2).transpose(-1, -2).to(gemm), inputs.flatten(-3, -2).to(gemm))
    return d_gates, dh.to(h0.dtype), dc, d_weight.to(h0.dtype)


def steps_back(
    saved: tuple[torch.Tensor, ...], d_outputs: torch.Tensor, d_h: torch.Tensor, d_c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The window's gate gradients and the initial h's and c's, step by step back, in torch ops: every factor
    that multiplies dh and dc is computed for the whole window first, so a step is six kernels on a GPU (seven
    with masks), not two dozen."""
    acts, h0, c0, outputs, cells, tanh_cells, weight_hh, masks, inputs = saved
    units, steps = h0.size(-1), acts.size(-3)
    i, f, g, o = acts.chunk(4, -1)
    c_prev = torch.cat([c0.unsqueeze(-3), cells.narrow(-3, 0, steps - 1)], -3)
    slopes = acts * (1 - acts)  # the sigmoid gates' derivative (g's quarter unused)
    slope_i, slope_f, _, slope_o = slopes.chunk(4, -1)
    factors = torch.empty_like(acts)  # d gate pre-activation per unit of dc (i, f, g) and of dh (o)
    factor_i, factor_f, factor_g, factor_o = factors.chunk(4, -1)
    torch.mul(g, slope_i, out=factor_i)
    torch.mul(c_prev, slope_f, out=factor_f)
    torch.mul(i, 1 - g * g, out=factor_g)
    torch.mul(tanh_cells, slope_o, out=factor_o)
    dc_per_dh = o * (1 - tanh_cells * tanh_cells)
    split = (*acts.shape[:-3], acts.size(-2), 3, units)  # a step's (i, f, g) quarters as one dimension
    d_gates = torch.empty_like(acts)
    dh, dc = d_h, d_c
    for t in reversed(range(steps)):
        d_gates_t, factors_t = d_gates.select(-3, t), factors.select(-3, t)
        dh = dh + d_outputs.select(-3, t)
        dc = torch.addcmul(dc, dh, dc_per_dh.select(-3, t))
        torch.mul(
            dc.unsqueeze(-2), factors_t[..., : 3 * units].view(split), out=d_gates_t[..., : 3 * units].view(split)
        )
        torch.mul(dh, factors_t[..., 3 * units :], out=d_gates_t[..., 3 * units :])
        dc = dc * f.select(-3, t)
        dh = torch.matmul(d_gates_t.to(weight_hh.dtype), weight_hh)  # the gradient of h_in (autocast: 16 bits)
        if masks is not None:
            dh = dh * masks.select(-3, t)
    return d_gates, dh, dc


def steps_back_triton(
    saved: tuple[torch.Tensor, ...], d_outputs: torch.Tensor, d_h: torch.Tensor, d_c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """steps_back with a step's elementwise work as one Triton kernel (rnnreg.triton_cell): two kernels a step,
    the GEMM and the cell's; step t's kernel masks the gradient coming back from step t + 1."""
    from rnnreg.triton_cell import cell_backward

    acts, _, c0, _, cells, tanh_cells, weight_hh, masks, _ = saved
    steps = acts.size(-3)
    d_outputs = d_outputs.contiguous()
    d_gates = torch.empty_like(acts)
    dh, dc = d_h.contiguous(), d_c.clone(memory_format=torch.contiguous_format)  # dc: updated in place
    for t in reversed(range(steps)):
        ahead = masks is not None and t + 1 < steps
        cell_backward(
            dh,
            masks.select(-3, t + 1) if ahead else None,
            d_outputs.select(-3, t),
            dc,
            acts.select(-3, t),
            c0 if t == 0 else cells.select(-3, t - 1),
            tanh_cells.select(-3, t),
            d_gates.select(-3, t),
        )
        dh = torch.matmul(d_gates.select(-3, t).to(weight_hh.dtype), weight_hh)  # the gradient of h_in
    if masks is not None:
        dh = dh * masks.select(-3, 0)
    return d_gates, dh, dc


class LSTMLayerFunction(torch.autograd.Function):
    """One LSTM layer over a window, or K members' layers at once: gates_x ([K,] T, B, 4H) input projections
    with both biases; h, c: ([K,] B, H); weight_hh: ([K,] 4H, H); masks: ([K,] T, B, H) multiplying h_{t-1}
    (ones for a member without them), or None; triton_cell: the cell as rnnreg.triton_cell's kernels.
    Returns the outputs ([K,] T, B, H) and the final h, c."""

    @staticmethod
    def forward(ctx, gates_x, h, c, weight_hh, masks, triton_cell=False):
        device = gates_x.device.type
        if torch.is_autocast_enabled(device):  # the GEMMs in 16 bits, the rest in float32 (the module's docstring)
            gates_x = gates_x.to(h.dtype)  # (autocast's input projection gave it in 16 bits)
            dtype = torch.get_autocast_dtype(device)
            if dtype == torch.bfloat16 and aligned_on_cuda(weight_hh):
                weight_hh = transposed_storage(weight_hh, dtype)  # the cast's one copy, laid out for its GEMMs
            else:
                weight_hh = weight_hh.to(dtype)
        saved = layer_forward(gates_x, h, c, weight_hh, masks, triton_cell)
        ctx.save_for_backward(*saved)
        ctx.triton_cell = triton_cell
        outputs, cells = saved[3], saved[4]
        return outputs, outputs.select(-3, -1).clone(), cells.select(-3, -1).clone()

    @staticmethod
    def backward(ctx, d_outputs, d_h, d_c):
        return *layer_backward(ctx.saved_tensors, d_outputs, d_h, d_c, ctx.triton_cell), None, None
