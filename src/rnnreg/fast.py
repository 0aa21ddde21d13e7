"""The fast training step (`speed.fast_step`): one window's forward, backward, update and state carry on
static buffers with no host synchronisation, replayed as a CUDA graph on a GPU.

It computes the plain step: the same objective, and the optimiser's own update rule (ClippedSGD.update,
with the lr as a device tensor that the scheduler's value is copied into). Training NLL and token sums
stay on the device and reach the Perplexity metric once per epoch; the loss, the gradient norm and the
divergence record go to the task's TrainingSignals in place. On CUDA the step is captured after
`warmup` eager windows (real training windows, on a side stream as capture requires); without CUDA the
same program runs eagerly.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnreg.cuda_graph import WARMUP_WINDOWS, GraphedStep
from rnnreg.errors import ConfigError
from rnnreg.model import mean_nll, paper_objective
from rnnreg.optim import ClippedSGD
from rnnreg.trainer_rules import fast_step_refusal
from rnnreg.training_signals import TrainingSignals

MODES = ("auto", True, False)


def fast_step_wanted(mode, trainer) -> bool:
    """auto: on for a single-GPU run; true: wherever it can run (CPU: eager); false: never. It needs one
    process, one window per update and no fp16 loss scaling; true where it cannot run is an error."""
    if mode not in MODES:
        raise ConfigError(f"speed.fast_step={mode} must be auto, true or false")
    scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # trainer.precision=16-mixed
    why = fast_step_refusal(trainer.world_size, scaled, trainer.accumulate_grad_batches)
    if mode is True and why:
        raise ConfigError(why)
    return why is None and (mode is True or (mode == "auto" and trainer.strategy.root_device.type == "cuda"))


class FastStep(GraphedStep):
    def __init__(
        self,
        net: nn.Module,
        optimizer: ClippedSGD,
        window: tuple[int, int],
        signals: TrainingSignals,
        device: torch.device,
        graph: bool,
        warmup: int = WARMUP_WINDOWS,
    ):
        super().__init__(device, graph, warmup)
        self.net, self.optimizer, self.signals = net, optimizer, signals

        def zeros(*shape, dtype=torch.float32):
            return torch.zeros(shape, dtype=dtype, device=device)

        self.x, self.y = zeros(*window, dtype=torch.long), zeros(*window, dtype=torch.long)
        layers, units = net.lstm.num_layers, net.lstm.hidden_size
        state_dtype = next(net.lstm.parameters()).dtype  # the weights' (bf16 under trainer.precision=bf16-true)
        self.h, self.c = (zeros(layers, window[1], units, dtype=state_dtype) for _ in range(2))
        self.lr = zeros()
        self.lr_value: float | None = None
        # the epoch's training NLL and token sums, read once per epoch
        self.nll_sum, self.tokens = zeros(dtype=torch.float64), zeros(dtype=torch.float64)

    def program(self) -> None:
        """One window on the static buffers. Only device work, no host sync: capturable."""
        logits, (h, c) = self.net(self.x, (self.h, self.c))
        nll = mean_nll(logits, self.y)
        paper_objective(nll, self.x.size(0)).backward()
        norm = self.optimizer.update(lr=self.lr)
        with torch.no_grad():
            self.h.copy_(h)
            self.c.copy_(c)
            loss = nll.detach()
            self.signals.record(loss, norm)
            self.nll_sum.add_(loss.double() * self.y.numel())
            self.tokens.add_(self.y.numel())

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if lr != self.lr_value:  # once per epoch: a fill, no sync
            self.lr.fill_(lr)
            self.lr_value = lr
        self.run()

    def clear_grads(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def capture_context(self):
        # under trainer.precision=bf16-mixed: autocast's weight-cast cache must be off while capturing
        autocast = torch.is_autocast_enabled("cuda")
        return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=autocast, cache_enabled=False)

    def carry(self, state: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's carried state as the static buffers: zeros at the start of an epoch (None), the
        checkpoint's after a mid-epoch resume."""
        if state is None:
            self.h.zero_()
            self.c.zero_()
        elif state[0] is not self.h:
            self.h.copy_(state[0])
            self.c.copy_(state[1])
        return self.h, self.c

    def take_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training NLL and token sums since the last call (then zeroed)."""
        sums = self.nll_sum.clone(), self.tokens.clone()
        self.nll_sum.zero_()
        self.tokens.zero_()
        return sums
