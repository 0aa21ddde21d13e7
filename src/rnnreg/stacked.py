"""K same-shape language models trained as one program: a hyperparameter sweep (seeds, dropout placements,
rates) stacked along a leading member dimension. On a GPU every matmul runs once for all members (one batched
GEMM per time step and layer, every member on the step-loop LSTM) instead of once per member: a step's kernels
are small and launch-bound. On a CPU the work is compute-bound and a batched GEMM runs below a plain one at
our shapes (benchmarks/bench_member_gemm.py), so there the members train in turn, each as its own single model
on views of its slices (`member_model`, rnnreg.stacked_step.InTurnStep).

Member k computes what a single `LSTMLanguageModel` with its hyperparameters computes: the same initial
weights (drawn from its own generator seeded with its seed, in the single model's order), the same dropout
placements (masks from its own generator, so they do not depend on the other members), the same objective
and the same clipped SGD update (rnnreg.optim.clip_and_sgd_, per member lr, clip and weight decay). Members
share no parameters and no reduction, so a member that diverges never touches another.

`pad_hidden_to`: the batched program (a GPU's) may hold and compute the hidden units padded to a multiple
(650 as 656): rows of 2,600 bytes are not 16-byte aligned, and cuBLAS then picks GEMM kernels that load one
element at a time. The padded units have zero weights in and out, so they stay exactly zero, get exactly zero
gradients and change nothing a member computes; everything that leaves the model (a member's weights, its
carried state, a resume file) is unpadded (`unpadded`, `pad_into`), and its masks are drawn at the members'
own size, so they are the unpadded model's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from rnnreg.lstm_layer import LSTMLayerFunction
from rnnreg.model import LSTMLanguageModel, fill_dropout_mask_, lstm_cell, net_kwargs, scored_logits
from rnnreg.stacked_settings import padded_size

State = tuple[torch.Tensor, torch.Tensor]

# On a GPU a member's masks come from a CUDA generator seeded with seed + this.
MASK_SEED_OFFSET = 7_919_000


@dataclass(frozen=True)
class MemberSpec:
    """One member's hyperparameters; the fields after `seed` are LSTMLanguageModel's keyword arguments.
    `lstm` (model.lstm) picks the member's LSTM on a CPU, where it runs as its single model; on a GPU every
    member runs the stacked step loop."""

    seed: int
    init_scale: float  # no default: each recipe's own (LSTMLanguageModel has none either)
    dropout_input: float = 0.0
    dropout_between: float = 0.0
    dropout_output: float = 0.0
    dropout_recurrent: float = 0.0
    variational: bool = False
    weight_drop: float = 0.0
    embedding_dropout: float = 0.0
    lstm: str = "auto"

    @property
    def drops(self) -> bool:
        """Whether the member draws any dropout mask in training."""
        rates = (self.dropout_input, self.dropout_between, self.dropout_output, self.dropout_recurrent)
        return any(rates + (self.weight_drop, self.embedding_dropout))

    @classmethod
    def from_config(cls, cfg) -> MemberSpec:
        """The member a job's composed config (its seed, model and dropout groups) trains as."""
        held = {f.name for f in fields(cls)}  # what the group shares (sizes, layer norm, tying) is not a member's
        return cls(seed=cfg.seed, **{k: v for k, v in net_kwargs(cfg.model, cfg.dropout).items() if k in held})

    def model_kwargs(self) -> dict:
        """The keyword arguments of the equivalent single LSTMLanguageModel."""
        kwargs = asdict(self)
        del kwargs["seed"]
        return kwargs


# What each dimension of a single model's parameter counts, for padding: "units" (hidden_size), "gates" (four
# blocks of hidden_size: i, f, g, o) or None; the trailing dimensions of everything padded
UNITS, GATES = "units", "gates"
Axes = tuple[str | None, ...]


def unit_axes(single_name: str, dims: int) -> Axes:
    """The axes of a single model's parameter (`embedding.weight`, `lstm.weight_hh_l0`, ...) for padding."""
    if single_name in ("embedding.weight", "decoder.weight"):
        return (None, UNITS)
    if single_name.startswith("lstm.weight_"):
        return (GATES, UNITS)
    if single_name.startswith("lstm.bias_"):
        return (GATES,)
    return (None,) * dims  # the decoder's bias; layer norms (never padded)


class StackedLinearFunction(torch.autograd.Function):
    """F.linear of K members as batched GEMMs: x (K, N, in), weight (K, out, in), bias (K, out) -> (K, N, out).
    Written out so that the weight's gradient is contiguous, as F.linear's (autograd's bmm hands back a
    transposed view): each member's gradient norm then reduces its elements in the single model's order."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, d_out):
        x, weight = ctx.saved_tensors
        d_x = torch.bmm(d_out, weight) if ctx.needs_input_grad[0] else None
        return d_x, torch.bmm(d_out.transpose(1, 2), x), d_out.sum(1) if ctx.needs_input_grad[2] else None


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear of K members (bias None: none): StackedLinearFunction, or under autocast (trainer.precision=bf16-mixed)
    the batched GEMM autocast casts to 16 bits, as it casts a single model's F.linear, with autograd's backward."""
    if torch.is_autocast_enabled(x.device.type):
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
    return StackedLinearFunction.apply(x, weight, bias)


class StackedLanguageModel(nn.Module):
    """K language models of one shape (vocab_size, hidden_size, num_layers, layer_norm, tie_weights), each with
    its own MemberSpec.

    Every parameter of the single model (`embedding.weight`, `lstm.weight_ih_l0`, ..., `decoder.bias`) is
    one parameter here with a leading member dimension, named with `_` for `.` (`lstm_weight_ih_l0`:
    (K, 4H, H)). Dropout follows each member's own spec exactly as LSTMLanguageModel places it; its masks
    come from the member's own generator (`generators`: on a CPU its job's stream).
    `fused[k]`: member k's single model runs nn.LSTM's fused kernel (model.lstm=auto without recurrent or
    variational dropout, or fused), and member k starts from nn.LSTM's draws (and runs it on a CPU).
    `layer_norm` (model.layer_norm, the group's: it adds parameters): every member's LSTM normalises its gate
    pre-activations and its cell as StepLSTM does, with its own gains and shifts (`lstm_norms_0_0_weight`, ...).
    `tie_weights` (model.tie_weights, the group's: it removes one): every member's decoder weight is its
    embedding; there is no `decoder_weight`, and a member's state dict has `decoder.weight` as a single tied
    model's has it, the embedding under a second name.
    `pad_hidden_to`: the hidden units held and computed as `units`, hidden_size rounded up to a multiple of it
    (the module's docstring; not with layer norm, which normalises over them); 1: as they are.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int,
        members: Sequence[MemberSpec | dict],
        layer_norm: bool = False,
        tie_weights: bool = False,
        pad_hidden_to: int = 1,
    ):
        super().__init__()
        if not members:
            raise ValueError("a stacked model needs at least one member")
        if pad_hidden_to < 1 or (layer_norm and padded_size(hidden_size, pad_hidden_to) != hidden_size):
            raise ValueError(f"cannot pad {hidden_size} hidden units to a multiple of {pad_hidden_to} (layer norm: 1)")
        self.units = padded_size(hidden_size, pad_hidden_to)  # the hidden width held and computed
        self.members = tuple(m if isinstance(m, MemberSpec) else MemberSpec(**m) for m in members)
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.layer_norm, self.tie_weights = layer_norm, tie_weights
        with torch.device("meta"):  # the single model's names, shapes, init order and LSTM; checks every spec
            singles = [self.single_model(spec) for spec in self.members]
        self.fused = tuple(single.fused for single in singles)
        self.single_names = {}  # stacked parameter name -> the single model's name
        self.axes: dict[str, Axes] = {}  # stacked parameter name -> its unit axes (padding)
        for name, param in singles[0].named_parameters():
            stacked = name.replace(".", "_")
            self.single_names[stacked] = name
            self.axes[stacked] = unit_axes(name, param.dim())
            shape = self.shape_at(param.shape, self.axes[stacked])
            # zeros: the padding's weights (in and out) are zero, so the padded units stay zero
            self.register_parameter(stacked, nn.Parameter(torch.zeros(len(self.members), *shape)))
        # member k's parameters (indices into self.parameters()) in its single model's order, which its
        # initialisation draws in and its gradient norm sums in: nn.LSTM and StepLSTM order theirs apart
        index = {name: i for i, name in enumerate(self.single_names)}
        self.member_orders = tuple(
            tuple(index[name.replace(".", "_")] for name, _ in single.named_parameters()) for single in singles
        )
        # the single model's state dict keys, in its order: its parameters' names and, tied, decoder.weight
        self.state_names = tuple(tuple(single.state_dict()) for single in singles)
        self.mask_generators: list[torch.Generator] | None = None  # created with the first mask
        self.triton_cell = False  # speed.triton_cell: the step loop's cell as rnnreg.triton_cell's kernels
        with torch.no_grad():  # each member's stream after its initialisation: its masks' on a CPU
            self.job_streams = [self.initialise_member(k, spec) for k, spec in enumerate(self.members)]

    @property
    def num_members(self) -> int:
        return len(self.members)

    @property
    def padded(self) -> bool:
        return self.units != self.hidden_size

    @property
    def parameters_per_member(self) -> int:
        """A member's parameter count, its single model's (the padding not counted)."""
        shapes = (self.shape_at(p.shape[1:], self.axes[name], self.hidden_size) for name, p in self.named_parameters())
        return sum(math.prod(shape) for shape in shapes)

    # -- padding: the members' values in the padded layout and back --------------------------------------
    def shape_at(self, shape: Sequence[int], axes: Axes, units: int | None = None) -> tuple[int, ...]:
        """`shape` (its trailing dimensions `axes`) at `units` hidden units, by default the width held (`units`)."""
        units = self.units if units is None else units
        lead = len(shape) - len(axes)
        width = {UNITS: units, GATES: 4 * units}
        return (*shape[:lead], *(width[a] if a else n for n, a in zip(shape[lead:], axes)))

    def unit_view(self, tensor: torch.Tensor, axes: Axes | str) -> torch.Tensor:
        """The view of a padded `tensor` (its trailing dimensions `axes`, or a stacked parameter's name) that
        holds the members' values, each gate dimension split in two (4, hidden_size)."""
        axes = self.axes[axes] if isinstance(axes, str) else axes
        lead = tensor.dim() - len(axes)
        split, index = list(tensor.shape[:lead]), [slice(None)] * lead
        for size, axis in zip(tensor.shape[lead:], axes):
            if axis == GATES:
                split += [4, size // 4]
                index += [slice(None), slice(0, self.hidden_size)]
            else:
                split.append(size)
                index.append(slice(0, self.hidden_size) if axis == UNITS else slice(None))
        return tensor.view(split)[tuple(index)]

    def unpadded(self, tensor: torch.Tensor, axes: Axes | str) -> torch.Tensor:
        """The members' values of a padded `tensor`: `tensor` itself when nothing is padded, else a new tensor or a
        view of `tensor` (copy it before `tensor` changes)."""
        if not self.padded:
            return tensor
        view = self.unit_view(tensor, axes)
        axes = self.axes[axes] if isinstance(axes, str) else axes
        return view.reshape(self.shape_at(tensor.shape, axes, self.hidden_size))

    def pad_into(self, tensor: torch.Tensor, values: torch.Tensor, axes: Axes | str) -> None:
        """Copy the members' `values` (unpadded) into a padded `tensor`; its padding is left as it is."""
        view = self.unit_view(tensor, axes)
        view.copy_(values.reshape(view.shape))

    def single_model(self, spec: MemberSpec) -> LSTMLanguageModel:
        """The member's job's model (built on the current device: `meta` for its names and shapes only)."""
        return LSTMLanguageModel(
            self.vocab_size,
            self.hidden_size,
            self.num_layers,
            layer_norm=self.layer_norm,
            tie_weights=self.tie_weights,
            **spec.model_kwargs(),
        )

    def initialise_member(self, k: int, spec: MemberSpec) -> torch.Generator:
        """Member k's weights as `torch.manual_seed(seed); LSTMLanguageModel(...)` draws them, from the member's
        own generator: the modules' default initialisations first (the single model draws them, then
        overwrites them; nn.LSTM draws, StepLSTM does not), then U(-init_scale, init_scale) for every parameter
        in its order (tied, the decoder weight's too, before it is tied), then the layer norms' gains 1 and
        shifts 0. Returns the generator, where its job's global stream stands once the model is built."""
        generator = torch.Generator().manual_seed(spec.seed)
        vocab, units = self.vocab_size, self.hidden_size
        # drawn at the member's own shapes, then placed (padded: into the padded layout)
        params = [(name, self.unpadded(getattr(self, name)[k], name).clone()) for name in self.single_names]
        params = [params[i] for i in self.member_orders[k]]
        torch.empty(vocab, units).normal_(generator=generator)  # nn.Embedding
        if self.fused[k]:  # nn.LSTM's reset_parameters: U(-1/sqrt(H), 1/sqrt(H)) for each of its parameters
            for name, param in params:
                if name.startswith("lstm_"):
                    torch.empty_like(param).uniform_(-1 / math.sqrt(units), 1 / math.sqrt(units), generator=generator)
        nn.init.kaiming_uniform_(torch.empty(vocab, units), a=math.sqrt(5), generator=generator)  # nn.Linear
        torch.empty(vocab).uniform_(generator=generator)  # nn.Linear's bias
        for name, param in params:
            if name == "decoder_bias" and self.tie_weights:  # the decoder weight, drawn then tied to the embedding
                torch.empty(vocab, units).uniform_(-spec.init_scale, spec.init_scale, generator=generator)
            param.uniform_(-spec.init_scale, spec.init_scale, generator=generator)
            if name.startswith("lstm_norms_"):  # drawn as every parameter is, then set (no draw)
                param.fill_(1.0 if name.endswith("_weight") else 0.0)
            self.pad_into(getattr(self, name)[k], param, name)
        return generator

    # -- members' weights under the single model's names ---------------------------------------------
    def member_state_dict(self, k: int, values: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Member k's weights (copies) under LSTMLanguageModel's names, in its state dict's order, for its
        load_state_dict (tied: decoder.weight is the embedding's copy, one tensor under two names, as a single
        tied model's state dict has it). `values`: the stacked parameters' values in their order (host copies
        for a checkpoint: unpadded, `unpadded`); by default the parameters."""
        if values is None:
            values = [self.unpadded(p.detach(), name) for name, p in self.named_parameters()]
        # clone: member k's slice alone (torch.save of a view writes its whole storage: every member's weights)
        weights = {single: value[k].clone() for single, value in zip(self.single_names.values(), values)}
        tied = {"decoder.weight": "embedding.weight"} if self.tie_weights else {}
        return {name: weights[tied.get(name, name)] for name in self.state_names[k]}

    def member_model(self, k: int) -> LSTMLanguageModel:
        """Member k as its own LSTMLanguageModel (its spec, its LSTM) whose parameters are views of member k's
        slices: training it trains member k in place, and what it computes is its single model's, bit for bit.
        Its dropout draws from the global generator, as a single model's does; rnnreg.stacked_step.InTurnStep
        swaps the member's own generator in around its forward. Not padded (the members in turn never are)."""
        if self.padded:
            raise ValueError("a padded stacked model's members are not single models: pad_hidden_to=1")
        with torch.device("meta"):  # no storage of its own: every parameter is replaced below
            single = self.single_model(self.members[k])
        for stacked, name in self.single_names.items():
            *path, attr = name.split(".")
            module = single.get_submodule(".".join(path))
            # setattr: nn.LSTM's __setattr__ also points its kernel's weight list at the view
            setattr(module, attr, nn.Parameter(getattr(self, stacked).detach()[k]))
        if self.tie_weights:
            single.decoder.weight = single.embedding.weight
        return single.train(self.training)

    # -- dropout masks ---------------------------------------------------------------------------------
    def generators(self) -> list[torch.Generator]:
        """The members' mask generators, on the model's device from the first mask on (masks are drawn where they
        are used). On a CPU member k's job run alone draws its masks from the global stream, seeded with its seed,
        after its model's initial draws: member k's generator is that stream (`job_streams`), so its masks are its
        job's. On a GPU a CUDA generator seeded with seed + MASK_SEED_OFFSET (the stacked program draws its masks
        in its own order, so no seed would give the job's)."""
        # the parameters' device names its index (cuda:0); torch.device("cuda") would compare unequal to it
        device = self.decoder_bias.device
        if self.mask_generators is None:
            if device.type == "cpu":
                self.mask_generators = self.job_streams
            else:
                self.mask_generators = [
                    torch.Generator(device=device).manual_seed(m.seed + MASK_SEED_OFFSET) for m in self.members
                ]
        elif self.mask_generators[0].device != device:
            raise RuntimeError(
                f"the members' mask generators live on {self.mask_generators[0].device}, the "
                f"model on {device}: move the model before its first training window"
            )
        return self.mask_generators

    def generator_states(self) -> list[torch.Tensor]:
        """Every member's mask generator state (for an exact resume)."""
        return [g.get_state() for g in self.generators()]

    def set_generator_states(self, states: Sequence[torch.Tensor]) -> None:
        generators = self.generators()
        if len(states) != len(generators):
            raise ValueError(f"{len(states)} generator states for {len(generators)} members")
        for generator, state in zip(generators, states):
            generator.set_state(state)

    def site_masks(
        self, rate: str, shape: tuple[int, ...], like: torch.Tensor, over_time: bool = False, axes: Axes = ()
    ) -> torch.Tensor | None:
        """(K, *shape) masks of one dropout site (`rate`: a MemberSpec field), member k's from its own
        generator, ones for a member that does not drop here; None in eval or when no member drops here.
        over_time: shape[0] is time, and a variational member draws one mask for the whole window. `shape` is
        the members' own; padded, the masks are placed in the padded layout (`axes`: its trailing dimensions'),
        ones on the padding."""
        rates = [getattr(m, rate) for m in self.members]
        if not (self.training and any(rates)):
            return None
        generators = self.generators()
        # ones for a member that does not drop here; the others' masks drawn in place (on a GPU: no copy kernel)
        masks = like.new_empty(len(rates), *shape) if all(rates) else like.new_ones(len(rates), *shape)
        for k, (member, p) in enumerate(zip(self.members, rates)):
            if not p:  # a member draws only for its own sites: its masks do not depend on the other members
                continue
            if over_time and member.variational:  # one mask for every step of the window
                fill_dropout_mask_(masks[k, 0], p, generators[k])
                masks[k, 1:] = masks[k, 0]
            else:
                fill_dropout_mask_(masks[k], p, generators[k])
        if self.padded and axes:
            padded = like.new_ones(self.shape_at(masks.shape, axes))
            self.pad_into(padded, masks, axes)
            return padded
        return masks

    def drop(self, x: torch.Tensor, rate: str) -> torch.Tensor:
        """Dropout of (K, T, B, H) activations: fresh per element, or one mask per window if variational."""
        masks = self.site_masks(rate, (*x.shape[1:-1], self.hidden_size), x, over_time=True, axes=(UNITS,))
        return x if masks is None else x * masks

    def dropped_weights_hh(self) -> list[torch.Tensor]:
        """Every layer's W_hh (K, 4H, H) as the window uses it: DropConnect (one mask per window) on a copy, so the
        parameters stay intact. Every layer's masks are drawn before the first layer runs, as the single model
        draws them (LSTMLanguageModel.run_lstm): a member's draws then come in its job's order, the layers'
        masks ahead of the dropout between them (on a CPU, its job's masks)."""
        single = (4 * self.hidden_size, self.hidden_size)
        weights = []
        for layer in range(self.num_layers):
            weight_hh = getattr(self, f"lstm_weight_hh_l{layer}")
            masks = self.site_masks("weight_drop", single, weight_hh, axes=(GATES, UNITS))
            weights.append(weight_hh if masks is None else weight_hh * masks)
        return weights

    # -- the window ----------------------------------------------------------------------------------
    def lstm_layer(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        recurrent: torch.Tensor | None,
        norms: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One LSTM layer of every member, one step loop for all: x (K, T, B, H); h, c (K, B, H); weights:
        (weight_ih, bias_ih, weight_hh, bias_hh), each (K, ...); recurrent: (K, T, B, H) masks on h_{t-1} (ones
        for a member without them) or None; norms: the layer norms' (gain, shift) of the input gates, the
        recurrent gates and the cell, each (K, N), or None. Returns the outputs (K, T, B, H) and the final h, c
        (K, B, H)."""
        if norms is not None:
            return self.normalised_layer(x, h, c, weights, recurrent, norms)
        weight_ih, bias_ih, weight_hh, bias_hh = weights
        members, steps, streams, units = x.shape
        gates_x = stacked_linear(x.reshape(members, -1, units), weight_ih, bias_ih + bias_hh)
        return LSTMLayerFunction.apply(
            gates_x.view(members, steps, streams, -1), h, c, weight_hh, recurrent, self.triton_cell
        )

    @staticmethod
    def normalised_layer(x, h, c, weights, recurrent, norms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`lstm_layer` with layer norm, as StepLSTM computes it (the two gate pre-activations apart, and the
        cell), each member with its own gains and shifts: autograd step by step, on torch ops (no hand-written
        backward, no Triton cell), as the single model runs it."""
        weight_ih, bias_ih, weight_hh, bias_hh = weights
        gain_x, shift_x, gain_h, shift_h, gain_c, shift_c = norms
        members, steps, streams, units = x.shape
        gates_x = member_layer_norm(stacked_linear(x.reshape(members, -1, units), weight_ih, None), gain_x, shift_x)
        gates_x = (gates_x + (bias_ih + bias_hh).unsqueeze(1)).view(members, steps, streams, -1)  # after the norms
        outputs = []
        for t in range(steps):
            h_in = h if recurrent is None else h * recurrent[:, t]  # dropout on h_{t-1}: the recurrent connection
            gates_h = member_layer_norm(stacked_linear(h_in, weight_hh, None), gain_h, shift_h)
            h, c = lstm_cell(gates_x[:, t] + gates_h, c, lambda cell: member_layer_norm(cell, gain_c, shift_c))
            outputs.append(h)
        return torch.stack(outputs, 1), h, c

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens: (T, B) ids shared by all members, or (K, T, B) -> logits (K, T, B, V) and the final (h, c),
        each (K, L, B, units), detached (`state` too: padded, as held)."""
        members, vocab, units = self.num_members, self.vocab_size, self.units
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
        weights_hh = self.dropped_weights_hh()
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer > 0:
                x = self.drop(x, "dropout_between")
            weight_ih, bias_ih, bias_hh = (
                getattr(self, f"lstm_{name}_l{layer}") for name in ("weight_ih", "bias_ih", "bias_hh")
            )
            weight_hh = weights_hh[layer]
            recurrent = self.site_masks(
                "dropout_recurrent", (steps, streams, self.hidden_size), x, over_time=True, axes=(UNITS,)
            )
            norms = None
            if self.layer_norm:  # (gain, shift) of the input gates', the recurrent gates' and the cell's norms
                norms = tuple(
                    getattr(self, f"lstm_norms_{layer}_{site}_{name}")
                    for site in range(3)
                    for name in ("weight", "bias")
                )
            x, h, c = self.lstm_layer(
                x, state[0][:, layer], state[1][:, layer], (weight_ih, bias_ih, weight_hh, bias_hh), recurrent, norms
            )
            hs.append(h)
            cs.append(c)
        x = self.drop(x, "dropout_output")
        decoder = self.embedding_weight if self.tie_weights else self.decoder_weight  # the weight, not its dropped rows
        logits = stacked_linear(x.reshape(members, -1, units), decoder, self.decoder_bias)
        return logits.view(members, steps, streams, vocab), (torch.stack(hs, 1).detach(), torch.stack(cs, 1).detach())


def member_layer_norm(x: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each member's nn.LayerNorm over the last dimension: x (K, N, F), gain and shift (K, F)."""
    return torch.addcmul(shift.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), gain.unsqueeze(1))


def member_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean NLL per predicted token of each member: logits (K, T, B, V), targets (T, B) or (K, T, B) -> (K,).
    The training objective is (member_nll * T).sum(): members share no parameter, so its gradient is every
    member's own objective's gradient."""
    members, vocab, logits = logits.size(0), logits.size(-1), scored_logits(logits)
    targets = targets.expand(logits.shape[:-1])
    nll = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
    return nll.view(members, -1).mean(1)
