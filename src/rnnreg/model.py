"""The language model: embedding -> L LSTM layers -> linear decoder, with the paper's dropout placement."""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]


class LSTMLanguageModel(nn.Module):
    """Zaremba et al. (2014): dropout only on the non-recurrent connections.

    The L+1 dropout sites are the embedding output (input to layer 1), the output of every layer below
    the top (nn.LSTM's own `dropout`, applied between layers only), and the top output before the
    decoder. nn.Dropout draws an independent mask element for every (time step, stream, unit), so each
    time step gets a fresh mask; h_{t-1} -> h_t and the cell are never dropped. This keeps the fused
    cuDNN / oneDNN `nn.LSTM` kernel.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, init_scale: float,
                 dropout_input: float = 0.0, dropout_between: float = 0.0, dropout_output: float = 0.0):
        super().__init__()
        for name, p in {"input": dropout_input, "between": dropout_between, "output": dropout_output}.items():
            if not 0.0 <= p < 1.0:
                raise ValueError(f"dropout.{name}={p} is outside [0, 1): use a drop probability like 0.5")
        if init_scale <= 0:
            raise ValueError(f"model.init_scale={init_scale} must be positive (the paper uses 0.1/0.05/0.04)")
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.input_dropout = nn.Dropout(dropout_input)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers, dropout=dropout_between)
        self.output_dropout = nn.Dropout(dropout_output)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for param in self.parameters():  # every tensor, biases and embedding included, as in the paper
            nn.init.uniform_(param, -init_scale, init_scale)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens: (time, streams) ids -> logits (time, streams, vocab) and the final (h, c), detached."""
        hidden, (h, c) = self.lstm(self.input_dropout(self.embedding(tokens)), state)
        logits = self.decoder(self.output_dropout(hidden))
        return logits, (h.detach(), c.detach())
