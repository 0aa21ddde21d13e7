"""The fast training step (`speed.fast_step`): one window's forward, backward, clip, SGD update and state
carry as one function of static buffers, with no host synchronisation, replayed as a CUDA graph.

What it computes is the plain step's (LanguageModelTask.training_step + Lightning's clip + SGD): the
summed-over-time objective, global-norm clipping, lr (a device tensor, set from the optimiser's lr, so
the scheduler still drives it) and weight decay, the carried (h, c) detached between windows. Training
NLL and token sums stay on the device and reach the Perplexity metric once per epoch; a non-finite or
overflowing loss is recorded on the device (LossWatch: first window and value) and checked at log intervals.

On CUDA the step is captured in a CUDA graph after `warmup` eager windows (real training windows, run
on a side stream as graph capture requires); `replay()` then launches the whole step at once. Without
CUDA (`graph=False`, or the CPU tests) the same function runs eagerly on the same static buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Above this mean NLL per word exp(NLL) overflows float64: the run has diverged.
MAX_NLL = 700.0


class LossWatch:
    """The first non-finite or overflowing training loss, recorded on the device: no host sync per window
    (capturable in a CUDA graph), read at log intervals. One per run, shared by the plain and the fast step."""

    def __init__(self, device: torch.device):
        self.windows = torch.zeros((), dtype=torch.long, device=device)
        self.bad_window = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor) -> None:
        self.windows.add_(1)
        bad = (~torch.isfinite(loss) | (loss > MAX_NLL)) & (self.bad_window < 0)
        self.bad_window.copy_(torch.where(bad, self.windows, self.bad_window))
        self.bad_loss.copy_(torch.where(bad, loss.float(), self.bad_loss))

    def first(self) -> tuple[int, float] | None:
        """(windows before the latest one, loss) of the first bad loss, or None. Syncs."""
        window = int(self.bad_window)
        return None if window < 0 else (int(self.windows) - window, float(self.bad_loss))


def unshared(grads: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The gradients, none overlapping another in memory. autograd.grad may hand two parameters one tensor
    (b_ih and b_hh of the step-loop LSTM share their sum's gradient); the in-place clip and update below
    would then scale it twice. (.backward() gives each parameter its own .grad.) Disjoint views of one
    buffer (cuDNN's LSTM weight gradients) are left as they are: no copy."""
    taken: list[tuple[int, int, int]] = []  # (storage, first byte, last byte + 1) of each kept gradient
    out = []
    for g in grads:
        storage, first = g.untyped_storage().data_ptr(), g.storage_offset() * g.element_size()
        extent = 1 + sum((size - 1) * stride for size, stride in zip(g.shape, g.stride())) if g.numel() else 0
        span = (storage, first, first + extent * g.element_size())
        if any(s == span[0] and lo < span[2] and span[1] < hi for s, lo, hi in taken):
            g = g.clone()
            span = (g.untyped_storage().data_ptr(), 0, g.numel() * g.element_size())
        taken.append(span)
        out.append(g)
    return out


class FastWindowStep:
    def __init__(self, net: nn.Module, window: tuple[int, int], clip: float, weight_decay: float,
                 device: torch.device, graph: bool, warmup: int = 3, watch: LossWatch | None = None):
        self.net, self.clip, self.weight_decay = net, clip, weight_decay
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.graph = graph and device.type == "cuda"
        self.warmup = warmup
        self.cuda_graph: torch.cuda.CUDAGraph | None = None
        self.windows_run = 0
        zeros = lambda *shape, dtype=torch.float32: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        self.x, self.y = zeros(*window, dtype=torch.long), zeros(*window, dtype=torch.long)
        layers, units = net.lstm.num_layers, net.lstm.hidden_size
        state_dtype = next(net.lstm.parameters()).dtype  # the weights' (bf16 under trainer.precision=bf16-true)
        self.h, self.c = (zeros(layers, window[1], units, dtype=state_dtype) for _ in range(2))
        self.lr = zeros()
        self.lr_value: float | None = None
        # on-device accounting, read only at log intervals and at the end of the epoch
        self.loss, self.grad_norm = zeros(), zeros()
        self.nll_sum, self.tokens = zeros(dtype=torch.float64), zeros(dtype=torch.float64)
        self.watch = watch or LossWatch(device)

    # -- the step ----------------------------------------------------------------------------------
    def step(self) -> None:
        """One window on the static buffers. Only device work, no host sync: capturable."""
        logits, (h, c) = self.net(self.x, (self.h, self.c))
        nll = F.cross_entropy(logits.view(-1, logits.size(-1)), self.y.view(-1))
        grads = unshared(torch.autograd.grad(nll * self.x.size(0), self.params))
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            self.grad_norm.copy_(norm)
            clip_coef = (self.clip / (norm + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_
            if self.weight_decay:
                torch._foreach_mul_(grads, clip_coef)
                torch._foreach_add_(grads, self.params, alpha=self.weight_decay)
                torch._foreach_mul_(grads, self.lr)
            else:  # one pass over the gradients fewer
                torch._foreach_mul_(grads, clip_coef * self.lr)
            # p - g as a separate op: at lr 1 this rounds as the plain step (clip, then SGD) does, to the last
            # bit. A fused p - coef * g (addcmul_) rounds once instead; SGD at lr 1 amplifies that last-bit
            # difference into another run (7 % of the final perplexity of a 300-window smoke run).
            torch._foreach_sub_(self.params, grads)
            self.h.copy_(h)
            self.c.copy_(c)
            loss = nll.detach()
            self.loss.copy_(loss)
            self.nll_sum.add_(loss.double() * self.y.numel())
            self.tokens.add_(self.y.numel())
            self.watch.record(loss)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if lr != self.lr_value:  # once per epoch: a fill, no sync
            self.lr.fill_(lr)
            self.lr_value = lr
        if self.cuda_graph is not None:
            self.cuda_graph.replay()
        elif self.graph and self.windows_run >= self.warmup:
            self.capture()
            self.cuda_graph.replay()
        elif self.graph:  # warm-up windows: eager, on a side stream (cuDNN and autograd set up there)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            self.step()
        self.windows_run += 1

    def capture(self) -> None:
        torch.cuda.synchronize()
        self.cuda_graph = torch.cuda.CUDAGraph()
        # under trainer.precision=bf16-mixed: autocast's weight-cast cache must be off while capturing
        autocast = torch.is_autocast_enabled("cuda")
        with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=autocast, cache_enabled=False):
            with torch.cuda.graph(self.cuda_graph):  # records the step; replay() runs it
                self.step()

    # -- state and accounting ----------------------------------------------------------------------
    def reset_state(self) -> None:
        self.h.zero_()
        self.c.zero_()

    def load_state(self, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.h.copy_(state[0])
        self.c.copy_(state[1])

    def take_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training NLL and token sums since the last call (then zeroed)."""
        sums = self.nll_sum.clone(), self.tokens.clone()
        self.nll_sum.zero_()
        self.tokens.zero_()
        return sums
