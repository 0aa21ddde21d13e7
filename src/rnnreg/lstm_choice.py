"""Which LSTM a model config runs (model.lstm): nn.LSTM's fused kernel (cuDNN on a GPU, oneDNN on a CPU), called
whole (fused) or a layer per call (layers), or rnnreg's step loop (step, StepLSTM), which alone can drop h_{t-1},
keep one mask per window or normalise the gates. Torch-free: the config check reads it before any import of torch."""

from __future__ import annotations

LSTM_CHOICES = ("auto", "fused", "layers", "step")  # auto: fused where nothing needs the step loop


def step_loop_settings(dropout_recurrent: float, variational: bool, layer_norm: bool) -> list[str]:
    """The settings, as overrides, that only the step loop runs (dropout on h_{t-1}, variational masks, layer
    norm): nn.LSTM's kernel has no place for them."""
    return [
        *([f"dropout.recurrent={dropout_recurrent}"] if dropout_recurrent else []),
        *(["dropout.variational=true"] if variational else []),
        *(["model.layer_norm=true"] if layer_norm else []),
    ]


def runs_fused(lstm: str, dropout_recurrent: float, variational: bool, layer_norm: bool) -> bool:
    """Whether a model's LSTM runs nn.LSTM's kernel rather than StepLSTM: model.lstm=fused or layers, or auto
    where nothing needs the step loop."""
    return lstm in ("fused", "layers") or (
        lstm == "auto" and not step_loop_settings(dropout_recurrent, variational, layer_norm)
    )
