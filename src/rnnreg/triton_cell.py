"""The LSTM cell's elementwise work as one Triton kernel per time step, forward and backward (`speed.triton_cell`).

rnnreg.lstm_layer's step loop runs, per step and layer, one GEMM and 6-7 small elementwise kernels forward
(mask, gate activations, the cell, tanh, h) and 5-6 backward. At our shapes a GPU finishes each in a few
microseconds, so launches set the pace; here a step is the GEMM and one kernel each way. The arithmetic is the
torch path's (gate order i, f, g, o), rounded differently: float32 rounding, not bit for bit. bf16 and fp16
tensors (trainer.precision=bf16-true) are computed in float32 and rounded to their type once, at the store.

Tensors are one step's slices: ([K,] B, W) with rows of W = H or 4H contiguous, members `stride(0)` apart
(a member stride of 0 for a single layer). `TRITON_INTERPRET=1` runs the kernels on a CPU (slowly: for tests);
rnnreg.speed_settings.require_triton says where they cannot run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _sigmoid(x):
    # tl.sigmoid's formula; tl's own jit functions are compiled, not interpreted, if Triton was imported before
    # TRITON_INTERPRET was set (Lightning imports it): ours are decorated when this module is imported
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # as exp(-2|x|) in (0, 1]: no overflow; tl has no tanh on every backend (the interpreter included)
    t = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - t) / (1.0 + t)
    return tl.where(x < 0, -y, y)


@triton.jit
def _load(pointer, live, COMPUTE: tl.constexpr):
    # bf16/fp16 tensors are computed in float32 (tl.exp takes no 16-bit type) and rounded once, at the store
    return tl.load(pointer, mask=live).to(COMPUTE)


@triton.jit
def _cell_forward(
    # the step's tensors ([K,] B, 4H or H; the masked pair only when MASKED)
    gates_x,
    gates_h,
    c_prev,
    acts,
    cells,
    tanh_cells,
    outputs,
    mask_next,
    inputs_next,
    # elements in all, per member, hidden units
    n,
    per_member,
    units,
    # each tensor's distance between members (0: one model)
    s_gates_x,
    s_gates_h,
    s_c_prev,
    s_acts,
    s_state,
    s_mask,
    # compile-time: a masked h_{t-1} to write, the arithmetic type, elements per program
    MASKED: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n
    k = (offs // per_member).to(tl.int64)  # the member
    r = offs % per_member  # row * units + unit within the member
    quarter = (r // units) * 4 * units + r % units  # the unit's i gate in a row of 4H
    at_x, at_h, at_acts = k * s_gates_x + quarter, k * s_gates_h + quarter, k * s_acts + quarter
    # the pre-activations: the input projection (with both biases) plus the recurrent GEMM's product
    i = _sigmoid(_load(gates_x + at_x, live, COMPUTE) + _load(gates_h + at_h, live, COMPUTE))
    f = _sigmoid(_load(gates_x + at_x + units, live, COMPUTE) + _load(gates_h + at_h + units, live, COMPUTE))
    g = _tanh(_load(gates_x + at_x + 2 * units, live, COMPUTE) + _load(gates_h + at_h + 2 * units, live, COMPUTE))
    o = _sigmoid(_load(gates_x + at_x + 3 * units, live, COMPUTE) + _load(gates_h + at_h + 3 * units, live, COMPUTE))
    c = f * _load(c_prev + k * s_c_prev + r, live, COMPUTE) + i * g
    tanh_c = _tanh(c)
    h = o * tanh_c
    tl.store(acts + at_acts, i, mask=live)
    tl.store(acts + at_acts + units, f, mask=live)
    tl.store(acts + at_acts + 2 * units, g, mask=live)
    tl.store(acts + at_acts + 3 * units, o, mask=live)
    at_state = k * s_state + r
    tl.store(cells + at_state, c, mask=live)
    tl.store(tanh_cells + at_state, tanh_c, mask=live)
    tl.store(outputs + at_state, h, mask=live)
    if MASKED:  # the next step's h_{t-1} after its recurrent dropout mask
        tl.store(inputs_next + at_state, h * _load(mask_next + k * s_mask + r, live, COMPUTE), mask=live)


@triton.jit
def _cell_backward(
    # the step's tensors (as in _cell_forward), sizes, member strides, compile-time switches
    dh_next,
    mask_next,
    d_out,
    dc,
    acts,
    c_prev,
    tanh_cells,
    d_gates,
    n,
    per_member,
    units,
    s_dh,
    s_mask,
    s_d_out,
    s_dc,
    s_acts,
    s_c_prev,
    s_tanh,
    s_d_gates,
    MASKED: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n
    k = (offs // per_member).to(tl.int64)
    r = offs % per_member
    quarter = (r // units) * 4 * units + r % units
    dh = _load(dh_next + k * s_dh + r, live, COMPUTE)  # the gradient of the next step's h_{t-1}
    if MASKED:
        dh = dh * _load(mask_next + k * s_mask + r, live, COMPUTE)
    dh = dh + _load(d_out + k * s_d_out + r, live, COMPUTE)
    at_acts = k * s_acts + quarter
    i = _load(acts + at_acts, live, COMPUTE)
    f = _load(acts + at_acts + units, live, COMPUTE)
    g = _load(acts + at_acts + 2 * units, live, COMPUTE)
    o = _load(acts + at_acts + 3 * units, live, COMPUTE)
    tanh_c = _load(tanh_cells + k * s_tanh + r, live, COMPUTE)
    d_c = _load(dc + k * s_dc + r, live, COMPUTE) + dh * o * (1.0 - tanh_c * tanh_c)
    at = k * s_d_gates + quarter
    tl.store(d_gates + at, d_c * g * i * (1.0 - i), mask=live)
    tl.store(d_gates + at + units, d_c * _load(c_prev + k * s_c_prev + r, live, COMPUTE) * f * (1.0 - f), mask=live)
    tl.store(d_gates + at + 2 * units, d_c * i * (1.0 - g * g), mask=live)
    tl.store(d_gates + at + 3 * units, dh * tanh_c * o * (1.0 - o), mask=live)
    tl.store(dc + k * s_dc + r, d_c * f, mask=live)  # the gradient of c_{t-1}


def compute_type(x: torch.Tensor):
    """The kernels' arithmetic type for tensors of x's dtype: float64 stays float64, anything else is float32."""
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def member_stride(x: torch.Tensor, width: int) -> int:
    """The distance between members of a step slice ([K,] B, width) whose rows are contiguous."""
    if x.stride(-1) != 1 or (x.size(-2) > 1 and x.stride(-2) != width):
        raise ValueError(f"a step slice of shape {tuple(x.shape)} needs contiguous rows, has strides {x.stride()}")
    return x.stride(0) if x.dim() == 3 else 0


def cell_forward(
    gates_x: torch.Tensor,
    gates_h: torch.Tensor,
    c_prev: torch.Tensor,
    act: torch.Tensor,
    cell: torch.Tensor,
    tanh_cell: torch.Tensor,
    output: torch.Tensor,
    mask_next: torch.Tensor | None = None,
    input_next: torch.Tensor | None = None,
) -> None:
    """One step: from the gate pre-activations gates_x + gates_h (the input projection and the recurrent
    GEMM's product, ([K,] B, 4H) each: the GEMM needs no addend, which cuBLAS would copy first) and c_{t-1},
    write the activations `act` (i, f, g, o), the cell, tanh of the cell and h (`output`), and h times
    `mask_next` into `input_next` (the next step's masked h_{t-1}) when a mask is given."""
    units = c_prev.size(-1)
    n = output.numel()
    masked = mask_next is not None
    state = member_stride(cell, units)
    if member_stride(tanh_cell, units) != state or member_stride(output, units) != state:
        raise ValueError("the cell, tanh of the cell and h must be slices of tensors of one shape")
    if masked and member_stride(input_next, units) != state:
        raise ValueError("the masked h_{t-1} must be a slice of a tensor of the cells' shape")
    _cell_forward[(triton.cdiv(n, BLOCK),)](
        gates_x,
        gates_h,
        c_prev,
        act,
        cell,
        tanh_cell,
        output,
        mask_next if masked else output,
        input_next if masked else output,
        n,
        output.size(-2) * units,
        units,
        member_stride(gates_x, 4 * units),
        member_stride(gates_h, 4 * units),
        member_stride(c_prev, units),
        member_stride(act, 4 * units),
        state,
        member_stride(mask_next, units) if masked else 0,
        MASKED=masked,
        COMPUTE=compute_type(output),
        BLOCK=BLOCK,
    )


def cell_backward(
    dh_next: torch.Tensor,
    mask_next: torch.Tensor | None,
    d_output: torch.Tensor,
    dc: torch.Tensor,
    act: torch.Tensor,
    c_prev: torch.Tensor,
    tanh_cell: torch.Tensor,
    d_gates: torch.Tensor,
) -> None:
    """One step back: dh = dh_next (the gradient of the next step's h_{t-1}, times its mask when given) plus
    the output's gradient; from it and `dc` (the gradient of c_t, updated in place to c_{t-1}'s) write the
    gradient of the gate pre-activations into `d_gates`."""
    units = c_prev.size(-1)
    n = dc.numel()
    masked = mask_next is not None
    _cell_backward[(triton.cdiv(n, BLOCK),)](
        dh_next,
        mask_next if masked else dh_next,
        d_output,
        dc,
        act,
        c_prev,
        tanh_cell,
        d_gates,
        n,
        dc.size(-2) * units,
        units,
        member_stride(dh_next, units),
        member_stride(mask_next, units) if masked else 0,
        member_stride(d_output, units),
        member_stride(dc, units),
        member_stride(act, 4 * units),
        member_stride(c_prev, units),
        member_stride(tanh_cell, units),
        member_stride(d_gates, 4 * units),
        MASKED=masked,
        COMPUTE=compute_type(dc),
        BLOCK=BLOCK,
    )
