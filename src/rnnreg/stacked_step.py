"""One training window of a stacked group on static buffers, with no host synchronisation: the stacked
model's forward, the members' summed objective, backward, each member's divergence check and clipped SGD
update, the carried state. On CUDA it is captured as one CUDA graph after `warmup` eager windows, as
rnnreg.fast.FastStep does for a single model (both are a GraphedStep); on a CPU the same program runs eagerly.

A member whose loss is non-finite or above MAX_NLL is switched off on the device before the update (its
weights stay the last finite ones); the window and the loss at which it happened are recorded on the
device, for the host to read when it next looks (`failures`).
"""

from __future__ import annotations

import torch

from rnnreg.fast import GraphedStep
from rnnreg.signals import MAX_NLL
from rnnreg.stacked import StackedLanguageModel, member_nll, stacked_clip_and_sgd_


class StackedStep(GraphedStep):
    def __init__(
        self,
        model: StackedLanguageModel,
        window: tuple[int, int],
        clip: torch.Tensor,
        weight_decay: torch.Tensor | None,
        device: torch.device,
        graph: bool,
        warmup: int = 3,
    ):
        super().__init__(device, graph, warmup)
        self.model, self.clip, self.weight_decay = model, clip, weight_decay
        self.params = list(model.parameters())
        members = model.num_members

        def zeros(*shape, dtype=torch.float32):
            return torch.zeros(shape, dtype=dtype, device=device)

        self.x, self.y = zeros(*window, dtype=torch.long), zeros(*window, dtype=torch.long)
        self.h, self.c = (zeros(members, model.num_layers, window[1], model.hidden_size) for _ in range(2))
        self.lr = zeros(members)
        self.lr_values: list[float] | None = None
        self.active = torch.ones(members, dtype=torch.bool, device=device)  # training and not failed
        self.loss = zeros(members)  # the last window's NLL per member
        self.nll_sum = zeros(members, dtype=torch.float64)  # the epoch's training NLL sums
        self.step = zeros(dtype=torch.long)  # windows trained (the group's global step)
        self.failed_step = torch.full((members,), -1, dtype=torch.long, device=device)
        self.failed_loss = zeros(members)

    def program(self) -> None:
        """One window on the static buffers. Only device work, no host sync: capturable."""
        logits, (h, c) = self.model(self.x, (self.h, self.c))
        nll = member_nll(logits, self.y)
        (nll * self.x.size(0)).sum().backward()  # each member's own objective: summed over the window's steps
        with torch.no_grad():
            loss = nll.detach()
            bad = (~torch.isfinite(loss) | (loss > MAX_NLL)) & self.active
            self.active.logical_and_(~bad)  # before the update: a diverged member keeps its last finite weights
            self.failed_step.copy_(torch.where(bad, self.step, self.failed_step))
            self.failed_loss.copy_(torch.where(bad, loss, self.failed_loss))
        params, orders = self.params, self.model.member_orders
        stacked_clip_and_sgd_(
            params, [p.grad for p in params], self.lr, self.clip, self.weight_decay, self.active, orders
        )
        with torch.no_grad():
            self.h.copy_(h)
            self.c.copy_(c)
            self.loss.copy_(loss)
            self.nll_sum.add_(loss.double() * self.y.numel())
            self.step.add_(1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float]) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if lrs != self.lr_values:  # once per epoch
            self.lr.copy_(torch.tensor(lrs, dtype=torch.float32))
            self.lr_values = list(lrs)
        self.run()

    def clear_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def before_capture(self, graph: torch.cuda.CUDAGraph) -> None:
        # each member's mask generator advances on every replay as it would eagerly
        for generator in self.model.generators(self.x.device):
            graph.register_generator_state(generator)

    # -- what the host sets and reads between windows -------------------------------------------------------
    def carry(self, state: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """The carried state: zeros at an epoch's start (None), a resume file's mid-epoch."""
        if state is None:
            self.h.zero_()
            self.c.zero_()
        else:
            self.h.copy_(state[0])
            self.c.copy_(state[1])

    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.h.clone(), self.c.clone()

    def stop(self, member: int) -> None:
        """Member `member` stops changing (early stopping)."""
        self.active[member] = False

    def failures(self, running: list[bool]) -> dict[int, tuple[int, float]]:
        """Members the host still counts as running that diverged on the device: {k: (global step, loss)}.
        A host sync on CUDA: read at logging intervals and at an epoch's end."""
        active = self.active.tolist()
        failed = [k for k, (on, run) in enumerate(zip(active, running)) if run and not on]
        if not failed:
            return {}
        steps, losses = self.failed_step.tolist(), self.failed_loss.tolist()
        return {k: (steps[k], losses[k]) for k in failed}
