"""K same-shape language models trained as one program: a hyperparameter sweep (seeds, dropout placements,
rates) stacked along a leading member dimension, so that every matmul runs once for all members (one batched
GEMM per time step and layer) instead of once per member.

Member k computes exactly what a single `LSTMLanguageModel(lstm="step")` with its hyperparameters computes:
the same initial weights (drawn from its own generator seeded with its seed, in the single model's order),
the same dropout placements (masks from its own generator, so they do not depend on the other members), the
same objective and the same clipped SGD update (`stacked_clip_and_sgd_`, per member lr, clip and weight
decay). Members share no parameters and no reduction, so a member that diverges never touches another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rnnreg.model import LSTMLanguageModel

State = tuple[torch.Tensor, torch.Tensor]

# A member's masks come from a generator seeded with seed + this, away from the stream that drew its weights.
MASK_SEED_OFFSET = 7_919_000


@dataclass(frozen=True)
class MemberSpec:
    """One member's hyperparameters; the fields after `seed` are LSTMLanguageModel's keyword arguments."""

    seed: int
    init_scale: float = 0.1
    dropout_input: float = 0.0
    dropout_between: float = 0.0
    dropout_output: float = 0.0
    dropout_recurrent: float = 0.0
    variational: bool = False
    weight_drop: float = 0.0
    embedding_dropout: float = 0.0

    def model_kwargs(self) -> dict:
        """The keyword arguments of the equivalent single LSTMLanguageModel."""
        kwargs = asdict(self)
        del kwargs["seed"]
        return kwargs


def member_mask(shape: tuple[int, ...], p: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """A {0, 1/(1-p)} mask (inverted dropout) drawn from one member's generator."""
    return like.new_empty(shape).bernoulli_(1 - p, generator=generator).div_(1 - p)


class StackedLinearFunction(torch.autograd.Function):
    """F.linear of K members: x (K, N, in), weight (K, out, in), bias (K, out) -> (K, N, out). Written out so
    that the weight's gradient is contiguous, as F.linear's (autograd's bmm hands back a transposed view):
    each member's gradient norm then reduces its elements in the single model's order, to the last bit."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, d_out):
        x, weight = ctx.saved_tensors
        d_x = torch.bmm(d_out, weight) if ctx.needs_input_grad[0] else None
        return d_x, torch.bmm(d_out.transpose(1, 2), x), d_out.sum(1)


class StackedLSTMLayerFunction(torch.autograd.Function):
    """One LSTM layer of K members over a window: model.LSTMLayerFunction with a leading member dimension.
    Each step is one batched matmul for all members; the hand-written backward keeps no autograd graph per
    step and gets each member's recurrent weight gradient from one batched matmul over the whole window.

    gates_x: (K, T, B, 4H) input projections with both biases; h, c: (K, B, H); weight_hh: (K, 4H, H);
    masks: (K, T, B, H) multiplying h_{t-1} (ones for a member without recurrent dropout) or None.
    Returns the outputs (K, T, B, H) and the final h, c. Gate order (i, f, g, o) as nn.LSTM.
    """

    @staticmethod
    def forward(ctx, gates_x, h, c, weight_hh, masks):
        units, steps = h.size(-1), gates_x.size(1)
        acts = torch.empty_like(gates_x)  # sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
        outputs, cells, tanh_cells = (h.new_empty(h.size(0), steps, *h.shape[1:]) for _ in range(3))
        inputs = None if masks is None else torch.empty_like(outputs)  # h_{t-1} after its mask
        weight_t = weight_hh.transpose(1, 2)
        h0, c0 = h, c
        for t in range(steps):
            h_in = h if masks is None else torch.mul(h, masks[:, t], out=inputs[:, t])
            gates = torch.baddbmm(gates_x[:, t], h_in, weight_t)
            act = acts[:, t]
            torch.sigmoid(gates, out=act)
            torch.tanh(gates[..., 2 * units : 3 * units], out=act[..., 2 * units : 3 * units])
            i, f, g, o = act.chunk(4, -1)
            c = torch.addcmul(f * c, i, g, out=cells[:, t])
            h = torch.mul(o, torch.tanh(c, out=tanh_cells[:, t]), out=outputs[:, t])
        ctx.save_for_backward(acts, h0, c0, outputs, cells, tanh_cells, weight_hh, masks, inputs)
        return outputs, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, d_outputs, d_h, d_c):
        acts, h0, c0, outputs, cells, tanh_cells, weight_hh, masks, inputs = ctx.saved_tensors
        d_gates = torch.empty_like(acts)
        dh, dc = d_h, d_c
        for t in reversed(range(acts.size(1))):
            i, f, g, o = acts[:, t].chunk(4, -1)
            di, df, dg, do = d_gates[:, t].chunk(4, -1)
            dh = dh + d_outputs[:, t]
            tc = tanh_cells[:, t]
            torch.mul(dh * tc, o * (1 - o), out=do)
            dc = dc + dh * o * (1 - tc * tc)
            torch.mul(dc * g, i * (1 - i), out=di)
            torch.mul(dc * (cells[:, t - 1] if t else c0), f * (1 - f), out=df)
            torch.mul(dc * i, 1 - g * g, out=dg)
            dc = dc * f
            dh = torch.bmm(d_gates[:, t], weight_hh)  # the gradient of h_in
            if masks is not None:
                dh = dh * masks[:, t]
        if inputs is None:  # unmasked, h_{t-1} entered step t as it was: h0, then the outputs
            inputs = torch.cat([h0[:, None], outputs[:, :-1]], 1)
        d_weight = torch.bmm(d_gates.flatten(1, 2).transpose(1, 2), inputs.flatten(1, 2))
        return d_gates, dh, dc, d_weight, None


class StackedLanguageModel(nn.Module):
    """K language models of one shape (vocab_size, hidden_size, num_layers), each with its own MemberSpec.

    Every parameter of the single model (`embedding.weight`, `lstm.weight_ih_l0`, ..., `decoder.bias`) is
    one parameter here with a leading member dimension, named with `_` for `.` (`lstm_weight_ih_l0`:
    (K, 4H, H)). Dropout follows each member's own spec exactly as LSTMLanguageModel places it; its masks
    come from the member's own generator (seed + MASK_SEED_OFFSET, on the device of the first mask drawn).
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, members: Sequence[MemberSpec | dict]):
        super().__init__()
        if not members:
            raise ValueError("a stacked model needs at least one member")
        self.members = tuple(m if isinstance(m, MemberSpec) else MemberSpec(**m) for m in members)
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        with torch.device("meta"):  # the single model's names, shapes and init order; checks every spec
            singles = [
                LSTMLanguageModel(vocab_size, hidden_size, num_layers, lstm="step", **m.model_kwargs())
                for m in self.members
            ]
        self.single_names = {}  # stacked parameter name -> the single model's name
        for name, param in singles[0].named_parameters():
            stacked = name.replace(".", "_")
            self.single_names[stacked] = name
            self.register_parameter(stacked, nn.Parameter(torch.empty(len(self.members), *param.shape)))
        self.mask_generators: list[torch.Generator] | None = None  # created with the first mask
        with torch.no_grad():
            for k, spec in enumerate(self.members):
                self.initialise_member(k, spec)

    @property
    def num_members(self) -> int:
        return len(self.members)

    def initialise_member(self, k: int, spec: MemberSpec) -> None:
        """Member k's weights as `torch.manual_seed(seed); LSTMLanguageModel(..., lstm="step")` draws them,
        from the member's own generator: the modules' default initialisations first (the single model draws
        them, then overwrites them), then U(-init_scale, init_scale) for every parameter in its order."""
        generator = torch.Generator().manual_seed(spec.seed)
        vocab, units = self.vocab_size, self.hidden_size
        torch.empty(vocab, units).normal_(generator=generator)  # nn.Embedding
        nn.init.kaiming_uniform_(torch.empty(vocab, units), a=math.sqrt(5), generator=generator)  # nn.Linear
        torch.empty(vocab).uniform_(generator=generator)  # nn.Linear's bias
        for param in self.parameters():
            param[k].uniform_(-spec.init_scale, spec.init_scale, generator=generator)

    # -- members' weights under the single model's names ---------------------------------------------
    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights (copies) under LSTMLanguageModel's names, for its load_state_dict."""
        return {single: getattr(self, name)[k].detach().clone() for name, single in self.single_names.items()}

    def load_member(self, k: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Set member k's weights from a single LSTMLanguageModel's state dict (step or fused LSTM)."""
        expected = set(self.single_names.values())
        if set(state_dict) != expected:
            raise KeyError(
                f"member state dict keys differ: missing {sorted(expected - set(state_dict))}, "
                f"unexpected {sorted(set(state_dict) - expected)}"
            )
        with torch.no_grad():
            for name, single in self.single_names.items():
                getattr(self, name)[k].copy_(state_dict[single])

    # -- dropout masks ---------------------------------------------------------------------------------
    def generators(self, device: torch.device) -> list[torch.Generator]:
        """The members' mask generators, made on `device` when first needed (masks are drawn where they are used)."""
        if self.mask_generators is None:
            self.mask_generators = [
                torch.Generator(device=device).manual_seed(m.seed + MASK_SEED_OFFSET) for m in self.members
            ]
        elif self.mask_generators[0].device != torch.device(device):
            raise RuntimeError(
                f"the members' mask generators live on {self.mask_generators[0].device}, the "
                f"model on {device}: move the model before its first training window"
            )
        return self.mask_generators

    def generator_states(self) -> list[torch.Tensor]:
        """Every member's mask generator state (for an exact resume)."""
        return [g.get_state() for g in self.generators(self.decoder_bias.device)]

    def set_generator_states(self, states: Sequence[torch.Tensor]) -> None:
        generators = self.generators(self.decoder_bias.device)
        if len(states) != len(generators):
            raise ValueError(f"{len(states)} generator states for {len(generators)} members")
        for generator, state in zip(generators, states):
            generator.set_state(state)

    def site_masks(
        self, rate: str, shape: tuple[int, ...], like: torch.Tensor, over_time: bool = False
    ) -> torch.Tensor | None:
        """(K, *shape) masks of one dropout site (`rate`: a MemberSpec field), member k's from its own
        generator, ones for a member that does not drop here; None in eval or when no member drops here.
        over_time: shape[0] is time, and a variational member draws one mask for the whole window."""
        rates = [getattr(m, rate) for m in self.members]
        if not (self.training and any(rates)):
            return None
        generators = self.generators(like.device)
        masks = like.new_ones(len(rates), *shape)
        for k, (member, p) in enumerate(zip(self.members, rates)):
            if p:  # a member draws only for its own sites: its masks do not depend on the other members
                masks[k] = member_mask(shape[1:] if over_time and member.variational else shape, p, generators[k], like)
        return masks

    def drop(self, x: torch.Tensor, rate: str) -> torch.Tensor:
        """Dropout of (K, T, B, H) activations: fresh per element, or one mask per window if variational."""
        masks = self.site_masks(rate, x.shape[1:], x, over_time=True)
        return x if masks is None else x * masks

    # -- the window ----------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens: (T, B) ids shared by all members, or (K, T, B) -> logits (K, T, B, V) and the final (h, c),
        each (K, L, B, H), detached."""
        members, vocab, units = self.num_members, self.vocab_size, self.hidden_size
        if tokens.dim() == 2:
            tokens = tokens.expand(members, *tokens.shape)
        steps, streams = tokens.shape[1:]
        weight = self.embedding_weight
        masks = self.site_masks("embedding_dropout", (vocab, 1), weight)  # whole-word dropout: rows per window
        if masks is not None:
            weight = weight * masks
        offsets = torch.arange(members, device=tokens.device).view(-1, 1, 1) * vocab  # member k's rows
        x = self.drop(F.embedding(tokens + offsets, weight.reshape(-1, units)), "dropout_input")
        if state is None:
            zeros = x.new_zeros(members, self.num_layers, streams, units)
            state = (zeros, zeros)
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer > 0:
                x = self.drop(x, "dropout_between")
            weight_ih, bias_ih, weight_hh, bias_hh = (
                getattr(self, f"lstm_{name}_l{layer}") for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")
            )
            masks = self.site_masks("weight_drop", weight_hh.shape[1:], weight_hh)  # DropConnect, one per window
            if masks is not None:  # on a copy: the parameters stay intact
                weight_hh = weight_hh * masks
            gates_x = StackedLinearFunction.apply(x.reshape(members, -1, units), weight_ih, bias_ih + bias_hh)
            recurrent = self.site_masks("dropout_recurrent", (steps, streams, units), x, over_time=True)
            x, h, c = StackedLSTMLayerFunction.apply(
                gates_x.view(members, steps, streams, -1), state[0][:, layer], state[1][:, layer], weight_hh, recurrent
            )
            hs.append(h)
            cs.append(c)
        x = self.drop(x, "dropout_output")
        logits = StackedLinearFunction.apply(x.reshape(members, -1, units), self.decoder_weight, self.decoder_bias)
        return logits.view(members, steps, streams, vocab), (torch.stack(hs, 1).detach(), torch.stack(cs, 1).detach())


def member_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean NLL per predicted token of each member: logits (K, T, B, V), targets (T, B) or (K, T, B) -> (K,).
    The training objective is (member_nll * T).sum(): members share no parameter, so its gradient is every
    member's own objective's gradient."""
    members, vocab = logits.size(0), logits.size(-1)
    targets = targets.expand(logits.shape[:-1])
    nll = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
    return nll.view(members, -1).mean(1)


def per_member(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (K,) value as (K, 1, ...) to broadcast against the stacked tensor `like`."""
    return value.view(-1, *[1] * (like.dim() - 1))


@torch.no_grad()
def stacked_clip_and_sgd_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    lr: torch.Tensor,
    clip: torch.Tensor,
    weight_decay: torch.Tensor | None,
    active: torch.Tensor,
) -> torch.Tensor:
    """Each member's clip_grad_norm_ + SGD step, as tensor ops with no host sync (capturable in a CUDA graph).

    params, grads: stacked (K, ...) tensors; the grads are scaled in place, so none may share memory with
    another (each parameter's own .grad, as backward() gives them). lr, clip, weight_decay: (K,)
    (weight_decay None: none for anyone, one pass fewer); active: (K,) bool, an inactive member (diverged,
    stopped) keeps its weights exactly. Returns each member's global gradient norm (K,). Nothing mixes
    members, so a non-finite gradient of one member never reaches another's weights.
    """
    members = grads[0].size(0)
    # each member's slices' norms in one foreach call, then the norm of each member's norms: clip_grad_norm_'s
    # reduction per member, so the norm (and with it the clipped update) rounds as the single model's
    slice_norms = torch._foreach_norm([g[k] for k in range(members) for g in grads])
    norms = torch.linalg.vector_norm(torch.stack(slice_norms).view(members, -1), dim=1)
    # as clip_grad_norm_, whose float / tensor is Tensor.__rtruediv__: reciprocal, then times the float
    clip_coef = ((norms + 1e-6).reciprocal() * clip).clamp(max=1.0)
    if weight_decay is None:
        scale = clip_coef * lr
        for g in grads:
            g.mul_(per_member(scale, g))
    else:  # coupled: the clipped gradient plus wd * p, then times lr
        for g, p in zip(grads, params):
            g.mul_(per_member(clip_coef, g)).addcmul_(p, per_member(weight_decay, p)).mul_(per_member(lr, g))
    inactive = ~active
    for p, g in zip(params, grads):
        # an inactive member subtracts an exact 0, filled in (not multiplied: NaN * 0 is NaN): bitwise unchanged
        g.masked_fill_(per_member(inactive, g), 0.0)
        # p - g as a separate op rounds as the single model's step (see rnnreg.fast)
        p.sub_(g)
    return norms
