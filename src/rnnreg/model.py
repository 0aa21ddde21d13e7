"""The language model: embedding -> L LSTM layers -> linear decoder, with configurable dropout placement.

Dropout sites (each rate separately configurable, see conf/dropout/):
- `input`, `between`, `output`: the non-recurrent connections (embedding output, between layers, top output).
  Zaremba et al. (2014) use exactly these, with a fresh mask at every time step.
- `recurrent`: h_{t-1} entering the recurrence, the placement the paper argues against (fresh mask per step).
- `variational`: Gal & Ghahramani (2016): every mask above is drawn once per window and reused at every step.
- `weight_drop`: DropConnect on the hidden-to-hidden weights W_hh, one mask per window (AWD-LSTM).
- `embedding`: whole words (rows of the embedding matrix) dropped, one mask per window (AWD-LSTM).

Whatever nn.LSTM can express (input/between/output dropout, weight drop) runs on the fused cuDNN/oneDNN
kernel; recurrent or variational dropout and layer normalisation run on `StepLSTM`, a step loop.
`LayerByLayerLSTM` (model.lstm=layers) is the fused kernel one layer per call, with torch's dropout between.
"""

from __future__ import annotations

import functools
import numbers

import torch
import torch.nn.functional as F
from torch import _VF, nn
from torch.func import functional_call

from rnnreg.errors import ConfigError
from rnnreg.lstm_choice import LSTM_CHOICES, runs_fused, step_loop_settings
from rnnreg.lstm_layer import LSTMLayerFunction
from rnnreg.schema import paper_values

State = tuple[torch.Tensor, torch.Tensor]


def scored_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits as an NLL is computed from them: bf16/fp16 ones (autocast's decoder, trainer.precision=bf16-true) in
    float32, as autocast scores them: a bf16 NLL near 5 is 1/32 apart, and the perplexity would come in steps of 3 %."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean NLL per predicted token of a window: logits (T, B, V), targets (T, B). The paper's objective is this
    times the window's length T (the sum over its time steps of the batch-mean NLL)."""
    logits = scored_logits(logits)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def paper_objective(nll: torch.Tensor, steps: int) -> torch.Tensor:
    """The paper's training objective from a window's mean NLL per token (mean_nll; one per member, stacked): the
    sum over the window's `steps` time steps of the batch-mean NLL. Its gradient is clipped at
    trainer.gradient_clip_val, so the scale matters: a token mean would clip T times later."""
    return nll * steps


def fill_dropout_mask_(out: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """`out` filled with a {0, 1/(1-p)} mask (inverted dropout: each unit kept with probability 1 - p and scaled up,
    so the expected input is unchanged), drawn from `generator` where given (a stacked member's own stream)."""
    return out.bernoulli_(1 - p, generator=generator).div_(1 - p)


def dropout_mask(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """A new {0, 1/(1-p)} mask of `shape` (fill_dropout_mask_), on `like`'s device and dtype."""
    return fill_dropout_mask_(like.new_empty(shape), p)


def drop(x: torch.Tensor, p: float, training: bool, per_window: bool) -> torch.Tensor:
    """Dropout on (time, batch, units): a fresh mask per element, or one (batch, units) mask for all steps."""
    if not training or p == 0:
        return x
    if per_window:
        return x * dropout_mask((1, *x.shape[1:]), p, x)
    return F.dropout(x, p, training=True)


def lstm_cell(gates: torch.Tensor, c: torch.Tensor, cell_norm=None) -> State:
    """One LSTM step on autograd from its gate pre-activations (i, f, g, o along the last axis) and the cell:
    (h, c). `cell_norm`: the cell's layer norm, before its tanh. (The step loop without layer norm runs
    rnnreg.lstm_layer's hand-written cell instead.)"""
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c if cell_norm is None else cell_norm(c)), c


class StepLSTM(nn.Module):
    """A multi-layer LSTM as an explicit step loop, for what the fused kernel cannot do.

    Parameters are named and shaped as in nn.LSTM (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ...)
    and the gate order is nn.LSTM's (i, f, g, o), so weights move between the two unchanged and, with all
    dropout off and no layer norm, both compute the same function. The input projection of every step is
    one matmul per layer; only the recurrent matmul and the cell run per step. Without layer norm a layer runs
    as rnnreg.lstm_layer.LSTMLayerFunction (its own backward; under autocast its GEMMs in 16 bits); with it as plain
    autograd ops.
    """

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        between: float = 0.0,
        recurrent: float = 0.0,
        variational: bool = False,
        layer_norm: bool = False,
    ):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.between, self.recurrent, self.variational = between, recurrent, variational
        self.triton_cell = False  # speed.triton_cell (training only): the cell as rnnreg.triton_cell's kernels
        self.layer_norm = layer_norm
        for k in range(num_layers):
            for kind in ("ih", "hh"):
                self.register_parameter(f"weight_{kind}_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
                self.register_parameter(f"bias_{kind}_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
        if layer_norm:  # Ba et al. (2016): normalise both gate pre-activations and the cell (StepLSTM.layer)
            self.norms = nn.ModuleList(
                nn.ModuleList([nn.LayerNorm(4 * hidden_size), nn.LayerNorm(4 * hidden_size), nn.LayerNorm(hidden_size)])
                for _ in range(num_layers)
            )

    def layer(
        self, k: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight_hh: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weight_ih, bias_ih, bias_hh = (getattr(self, f"{name}_l{k}") for name in ("weight_ih", "bias_ih", "bias_hh"))
        p = self.recurrent if self.training else 0.0
        window_mask = dropout_mask(h.shape, p, h) if p and self.variational else None
        if not self.layer_norm:
            masks = None
            if p:  # dropout on h_{t-1} -> h_t: a fresh mask every step, or the window's mask at every step
                masks = (
                    window_mask.expand(x.size(0), *h.shape)
                    if window_mask is not None
                    else torch.stack([dropout_mask(h.shape, p, h) for _ in range(x.size(0))])
                )
            gates_x = F.linear(x, weight_ih, bias_ih + bias_hh)
            return LSTMLayerFunction.apply(gates_x, h, c, weight_hh, masks, self.triton_cell)
        # layer norm (Ba et al. 2016): the two gate pre-activations normalised apart, the biases added after the
        # norms (inside them a norm would scale them up where W h is small), and the cell; autograd, step by step
        norm_x, norm_h, norm_c = self.norms[k]
        gates_x = norm_x(F.linear(x, weight_ih)) + (bias_ih + bias_hh)
        outputs = []
        for t in range(x.size(0)):
            h_in = h
            if p:  # dropout on h_{t-1} -> h_t: the recurrent connection
                h_in = h * (window_mask if window_mask is not None else dropout_mask(h.shape, p, h))
            h, c = lstm_cell(gates_x[t] + norm_h(F.linear(h_in, weight_hh)), c, norm_c)
            outputs.append(h)
        return torch.stack(outputs), h, c

    def forward(
        self, x: torch.Tensor, state: State | None = None, weights_hh: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, State]:
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.size(1), self.hidden_size)
            state = (zeros, zeros)
        hs, cs = [], []
        for k in range(self.num_layers):
            if k > 0:
                x = drop(x, self.between, self.training, self.variational)
            name = f"weight_hh_l{k}"
            weight_hh = weights_hh[name] if weights_hh else getattr(self, name)
            x, h, c = self.layer(k, x, state[0][k], state[1][k], weight_hh)
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))


class LayerByLayerLSTM(nn.LSTM):
    """nn.LSTM's parameters and fused kernel, called one layer at a time with torch's dropout between the layers.
    nn.LSTM's own dropout between them is drawn on a GPU by cuDNN from a state of its own, which no checkpoint
    holds, so a resumed run draws other masks; torch's generator is in every checkpoint. On a CPU both draw the
    same masks from torch's generator (the same function, to the bit)."""

    def __init__(self, hidden_size: int, num_layers: int, dropout_between: float):
        super().__init__(hidden_size, hidden_size, num_layers)
        self.dropout_between = dropout_between

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.size(1), self.hidden_size)
            state = (zeros, zeros)
        self._update_flat_weights()  # (as nn.LSTM's forward: weights functional_call swapped in)
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout_between:
                x = F.dropout(x, self.dropout_between, training=True)
            weights = self._flat_weights[4 * layer : 4 * layer + 4]  # W_ih, W_hh, b_ih, b_hh
            carried = (state[0][layer : layer + 1], state[1][layer : layer + 1])
            x, h, c = _VF.lstm(x, carried, weights, True, 1, 0.0, self.training, False, False)
            hs.append(h)
            cs.append(c)
        return x, (torch.cat(hs), torch.cat(cs))


@functools.cache
def cpu_runs_fused_lstm_in_bf16() -> bool:
    """Whether this CPU runs nn.LSTM under bf16 autocast (trainer.precision=bf16-mixed): oneDNN's bf16 LSTM needs
    AVX512-BF16 or AMX, and with AVX2 alone it cannot create its primitive (a RuntimeError at the first window)."""
    lstm = nn.LSTM(8, 8, 2)
    try:
        with torch.autocast("cpu", torch.bfloat16):
            lstm(torch.zeros(3, 2, 8))
    except RuntimeError:
        return False
    return True


class LSTMLanguageModel(nn.Module):
    """Embedding -> dropout -> L-layer LSTM -> dropout -> decoder.

    With the defaults of conf/dropout/non_recurrent.yaml this is Zaremba et al. (2014): L+1 dropout sites
    on the non-recurrent connections, each drawing an independent mask element per (time step, stream,
    unit) - a fresh mask at every step - while h_{t-1} -> h_t and the cell are never dropped.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int,
        init_scale: float,
        dropout_input: float = 0.0,
        dropout_between: float = 0.0,
        dropout_output: float = 0.0,
        dropout_recurrent: float = 0.0,
        variational: bool = False,
        weight_drop: float = 0.0,
        embedding_dropout: float = 0.0,
        layer_norm: bool = False,
        tie_weights: bool = False,
        lstm: str = "auto",
    ):
        super().__init__()
        rates = {
            "dropout.input": dropout_input,
            "dropout.between": dropout_between,
            "dropout.output": dropout_output,
            "dropout.recurrent": dropout_recurrent,
            "dropout.weight_drop": weight_drop,
            "dropout.embedding": embedding_dropout,
        }
        for name, p in rates.items():
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name}={p} is outside [0, 1): use a drop probability like 0.5")
        for name, size in (
            ("vocab_size", vocab_size),
            ("model.hidden_size", hidden_size),
            ("model.num_layers", num_layers),
        ):
            if not isinstance(size, numbers.Integral) or size < 1:  # nn.LSTM checks two of them, StepLSTM none
                raise ConfigError(f"{name}={size} must be an integer >= 1")
        if init_scale <= 0:
            raise ConfigError(f"model.init_scale={init_scale} must be positive ({paper_values('model.init_scale')})")
        self.drops = any(p > 0 for p in rates.values())  # (Monte-Carlo dropout samples only a model that drops)
        self.dropout_input, self.dropout_output = dropout_input, dropout_output
        self.variational, self.weight_drop, self.embedding_dropout = variational, weight_drop, embedding_dropout
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        step_only = step_loop_settings(dropout_recurrent, variational, layer_norm)
        if lstm not in LSTM_CHOICES or (lstm in ("fused", "layers") and step_only):
            raise ConfigError(
                f"model.lstm={lstm} must be {', '.join(LSTM_CHOICES[:-1])} or {LSTM_CHOICES[-1]} (recurrent or "
                f"variational dropout and layer norm need step or auto)"
            )
        self.fused = runs_fused(lstm, dropout_recurrent, variational, layer_norm)
        if lstm == "layers":
            self.lstm = LayerByLayerLSTM(hidden_size, num_layers, dropout_between)
        elif self.fused:
            # one layer has no site between layers: torch would warn of a rate it never uses, at every run
            between = dropout_between if num_layers > 1 else 0.0
            self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers, dropout=between)
        else:
            self.lstm = StepLSTM(hidden_size, num_layers, dropout_between, dropout_recurrent, variational, layer_norm)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for param in self.parameters():  # every tensor, biases and embedding included, as in the paper
            nn.init.uniform_(param, -init_scale, init_scale)
        if layer_norm:
            for norm in self.lstm.norms.modules():
                if isinstance(norm, nn.LayerNorm):
                    nn.init.ones_(norm.weight)
                    nn.init.zeros_(norm.bias)
        if tie_weights:  # Press & Wolf (2017): decoder weight = embedding (embedding size = hidden size)
            self.decoder.weight = self.embedding.weight

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        weight = self.embedding.weight
        if self.training and self.embedding_dropout:  # whole-word dropout: drop vocabulary rows per window
            weight = weight * dropout_mask((weight.size(0), 1), self.embedding_dropout, weight)
        return F.embedding(tokens, weight)

    def run_lstm(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        if not (self.training and self.weight_drop):
            return self.lstm(x, state)
        # DropConnect on W_hh: one mask per window, applied to a copy; the parameters stay intact, so
        # evaluation (and the optimiser) always see the real weights.
        dropped = {
            n: F.dropout(p, self.weight_drop, training=True)
            for n, p in self.lstm.named_parameters()
            if n.startswith("weight_hh")
        }
        if self.fused:
            return functional_call(self.lstm, dropped, (x, state), strict=False)
        return self.lstm(x, state, dropped)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens: (time, streams) ids -> logits (time, streams, vocab) and the final (h, c), detached."""
        x = drop(self.embed(tokens), self.dropout_input, self.training, self.variational)
        hidden, (h, c) = self.run_lstm(x, state)
        logits = self.decoder(drop(hidden, self.dropout_output, self.training, self.variational))
        return logits, (h.detach(), c.detach())


def net_kwargs(model, dropout) -> dict:
    """LSTMLanguageModel's arguments but the vocabulary size, from a run's model and dropout config groups."""
    return dict(
        hidden_size=model["hidden_size"],
        num_layers=model["num_layers"],
        init_scale=model["init_scale"],
        dropout_input=dropout["input"],
        dropout_between=dropout["between"],
        dropout_output=dropout["output"],
        dropout_recurrent=dropout.get("recurrent", 0.0),
        variational=dropout.get("variational", False),
        weight_drop=dropout.get("weight_drop", 0.0),
        embedding_dropout=dropout.get("embedding", 0.0),
        layer_norm=model.get("layer_norm", False),
        tie_weights=model.get("tie_weights", False),
        lstm=model.get("lstm", "auto"),
    )


def build_net(vocab_size: int, model: dict, dropout: dict) -> LSTMLanguageModel:
    return LSTMLanguageModel(vocab_size, **net_kwargs(model, dropout))
