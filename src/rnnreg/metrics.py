"""Perplexity as the paper defines it: exp(total NLL / predicted tokens) over a whole split."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric


class Perplexity(MeanMetric):
    """update(mean_nll, num_tokens), token-weighted; never a mean of per-batch perplexities.

    Accumulates in float64 (MeanMetric would cast inputs to the module's float32) with no NaN check (a
    host sync on a GPU); under DDP the sums of NLL and token counts are reduced exactly across ranks.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.set_dtype(torch.float64)

    def _apply(self, fn, exclude_state=""):
        # Module.to(dtype) (Lightning's trainer.precision=bf16-true) narrows metric states too, and bf16 counts
        # tokens exactly only up to 256: the sums move with the module and stay float64
        this = super()._apply(fn, exclude_state)
        if not self._dtype_convert and this.mean_value.dtype != torch.float64:
            this.set_dtype(torch.float64)
        return this

    def update(self, value: torch.Tensor | float, weight: torch.Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=torch.float64, device=self.mean_value.device)
        weight = torch.as_tensor(weight, dtype=torch.float64, device=self.mean_value.device)
        self.mean_value += value * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return super().compute().exp()
