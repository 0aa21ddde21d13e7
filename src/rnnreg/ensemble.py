"""Model averaging (the paper's ensemble rows) and Monte-Carlo dropout, as one language model.

`PredictiveAverage` predicts the average of the distributions of several models and/or of `mc_samples`
stochastic (dropout on) passes per model (Gal & Ghahramani 2016): their predictions are averaged, not their
weights (as torch.optim.swa_utils.AveragedModel's are). Each pass carries its own hidden state. It returns
log-probabilities, which the task's cross-entropy reads as logits (they are normalised already).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rnnreg.errors import ConfigError


class PredictiveAverage(nn.Module):
    def __init__(self, nets: list[nn.Module], mc_samples: int = 1):
        super().__init__()
        if mc_samples < 1:
            raise ConfigError(f"mc_samples={mc_samples} must be >= 1 (1 = deterministic evaluation)")
        self.members = nn.ModuleList(nets)
        self.passes = [(k, mc_samples > 1) for k in range(len(nets)) for _ in range(mc_samples)]

    def forward(self, tokens: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        state = state or [None] * len(self.passes)
        summed, carried = None, []
        for (k, stochastic), pass_state in zip(self.passes, state):
            net = self.members[k].train(stochastic)  # dropout on for Monte-Carlo passes only
            logits, new_state = net(tokens, pass_state)
            log_prob = F.log_softmax(logits.float(), dim=-1)
            # summed as the passes go: memory of one window's distributions, however many passes (mc_samples=1000)
            summed = log_prob if summed is None else torch.logaddexp(summed, log_prob)
            carried.append(new_state)
        return summed - math.log(len(self.passes)), carried
