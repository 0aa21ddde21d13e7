"""One training window of a stacked group, and its evaluation pass; `group_step` picks the program
(hydra.launcher.program: auto = in turn on a CPU, batched elsewhere).

Both are a `GroupStep`: the buffers and methods the group's loop (rnnreg.stacked_train) sets and reads.

`StackedStep` (a GPU): on static buffers with no host synchronisation, the stacked model's forward, the
members' summed objective, backward, each member's divergence check and clipped SGD update, the carried
state. On CUDA it is captured as one CUDA graph after `warmup` eager windows, as rnnreg.fast.FastStep does
for a single model (both are a rnnreg.cuda_graph.GraphedStep).

`InTurnStep` (a CPU): the same window member by member, each member trained as its job alone trains it, on
its single model (StackedLanguageModel.member_model): its forward, the paper's objective (rnnreg.task) and
ClippedSGD's rule (rnnreg.optim.clip_and_sgd_) with its lr, clip, weight decay and momentum. A member's window
runs from forward to update before the next member's starts, so one single run's activations are live at a
time, and a stopped or failed member costs nothing. Its masks come from its job's own stream (StackedLanguageModel.
generators), swapped in for the global generator around its forward: a member is its job run alone, bit for bit.

Under trainer.precision=bf16-mixed both run the forward and the loss under autocast (`forward_context`), as Lightning
runs a job's training_step, and the backward and the update outside it: the weights, gradients and update stay in
float32.

A member whose loss diverges (rnnreg.training_signals.diverged: non-finite, or above MAX_NLL) is switched off
before the update (its weights stay the last finite ones); the window and the loss at which it happened are
recorded (on the device: the host reads them when it next looks, `failures`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

import torch

from rnnreg.cuda_graph import WARMUP_WINDOWS, GraphedStep
from rnnreg.errors import ConfigError
from rnnreg.model import mean_nll, paper_objective
from rnnreg.optim import clip_and_sgd_, one_member
from rnnreg.stacked import UNITS, StackedLanguageModel, member_nll
from rnnreg.stacked_settings import PROGRAMS, running_program
from rnnreg.training_signals import diverged

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class GroupStep(GraphedStep):
    """What the group's loop sets and reads between windows, whichever program runs the window: the window's
    tokens, every member's carried state, whether it still trains, its last loss, its epoch's NLL sum, its
    momentum buffers, and where and how it failed. `__call__` runs one window with each member's lr."""

    name = ""  # hydra.launcher.program
    host_reads_are_free = False  # on a GPU reading a member's state is a sync: the host reads at log intervals
    # the group's checkpoints and resume file written by a thread while the next epoch trains (rnnreg.io.FileWriter):
    # on a GPU the host is idle then; on a CPU every core trains, a writer thread only competed with training
    # (docs/measurements.md) and held a second copy of the weights
    files_in_background = True

    def __init__(
        self,
        model: StackedLanguageModel,
        window: tuple[int, int],
        device: torch.device,
        graph: bool,
        warmup: int,
        momentums: Sequence[float] | None = None,
        autocast: torch.dtype | None = None,
        triton_update: bool = False,
    ):
        super().__init__(device, graph, warmup)
        self.model = model
        self.autocast = autocast  # trainer.precision=bf16-mixed: torch.bfloat16; None: float32
        self.triton_update = triton_update  # speed.triton_update: the paper's update as rnnreg.triton_update's kernel
        members = model.num_members
        # each member's SGD momentum buffers, laid out as the stacked parameters (None: no member has momentum);
        # a member without momentum has zeros here that nothing reads
        self.momentums = [0.0] * members if momentums is None else list(momentums)
        self.buffers = None if momentums is None else [torch.zeros_like(p) for p in model.parameters()]

        def zeros(*shape, dtype=torch.float32):
            return torch.zeros(shape, dtype=dtype, device=device)

        self.x, self.y = zeros(*window, dtype=torch.long), zeros(*window, dtype=torch.long)
        self.h, self.c = (zeros(members, model.num_layers, window[1], model.units) for _ in range(2))  # padded
        self.lr_values: list[float] | None = None
        self.active = torch.ones(members, dtype=torch.bool, device=device)  # training and not failed
        self.loss = zeros(members)  # the last window's NLL per member
        self.grad_norm = zeros(members)  # its last update's gradient norm before clipping (a run's train/grad_norm)
        self.nll_sum = zeros(members, dtype=torch.float64)  # the epoch's training NLL sums
        self.global_step = zeros(dtype=torch.long)  # windows trained (on the device: read without a sync)
        self.failed_step = torch.full((members,), -1, dtype=torch.long, device=device)
        self.failed_loss = zeros(members)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float]) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if lrs != self.lr_values:  # once per epoch
            self.lr_values = list(lrs)
            self.lrs_changed()
        self.run()

    def lrs_changed(self) -> None:
        """The members' lrs (`lr_values`) changed: what the program reads them from follows."""

    def forward_context(self) -> contextlib.AbstractContextManager:
        """Where the forward and the loss run: under autocast to `autocast` (bf16-mixed) as Lightning's
        MixedPrecision runs a job's steps (its weight-cast cache off, as a CUDA graph's capture needs it), or as
        they are (float32)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.x.device.type, dtype=self.autocast, cache_enabled=False)

    def nll_sums(self, batches: Batches, members: list[bool] | None = None) -> torch.Tensor:
        """Every member's summed NLL (K,) float64 over the (input, target) windows, in eval mode, the state
        carried from zeros: a window's mean NLL times its tokens, as the Perplexity metric sums it. `members`:
        the ones whose sums are wanted (the others may be skipped: NaN)."""
        raise NotImplementedError

    def carry(self, state: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """The carried state: zeros at an epoch's start (None), a resume file's mid-epoch (unpadded)."""
        self.h.zero_()
        self.c.zero_()
        if state is not None:
            self.model.pad_into(self.h, state[0], (UNITS,))
            self.model.pad_into(self.c, state[1], (UNITS,))

    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The carried state, unpadded (K, L, B, H)."""
        return tuple(self.model.unpadded(t, (UNITS,)).clone() for t in (self.h, self.c))

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


class StackedStep(GroupStep):
    """The batched program (a GPU's; see the module's docstring)."""

    name = "batched"

    def __init__(
        self,
        model: StackedLanguageModel,
        window: tuple[int, int],
        clip: torch.Tensor,
        weight_decay: torch.Tensor | float,
        device: torch.device,
        graph: bool,
        warmup: int = WARMUP_WINDOWS,
        momentums: Sequence[float] | None = None,
        autocast: torch.dtype | None = None,
        triton_update: bool = False,
    ):
        super().__init__(model, window, device, graph, warmup, momentums, autocast, triton_update)
        self.clip, self.weight_decay = clip, weight_decay
        self.momentum = 0.0 if momentums is None else torch.tensor(momentums, dtype=torch.float32, device=device)
        self.params = list(model.parameters())
        self.lr = torch.zeros(model.num_members, device=device)

    def program(self) -> None:
        """One window on the static buffers. Only device work, no host sync: capturable."""
        with self.forward_context():
            logits, (h, c) = self.model(self.x, (self.h, self.c))
            nll = member_nll(logits, self.y)
        paper_objective(nll, self.x.size(0)).sum().backward()  # each member's own: their sum's gradient
        with torch.no_grad():
            loss = nll.detach()
            bad = diverged(loss) & self.active
            self.active.logical_and_(~bad)  # before the update: a diverged member keeps its last finite weights
            self.failed_step.copy_(torch.where(bad, self.global_step, self.failed_step))
            self.failed_loss.copy_(torch.where(bad, loss, self.failed_loss))
        params, orders = self.params, self.model.member_orders
        grads = [p.grad for p in params]
        norms = clip_and_sgd_(
            params,
            grads,
            self.lr,
            self.clip,
            self.weight_decay,
            self.momentum,
            self.buffers,
            active=self.active,
            orders=orders,
            triton_update=self.triton_update,
        )
        with torch.no_grad():
            self.grad_norm.copy_(torch.where(self.active, norms, self.grad_norm))  # a frozen member's stays
            self.h.copy_(h)
            self.c.copy_(c)
            self.loss.copy_(loss)
            self.nll_sum.add_(loss.double() * self.y.numel())
            self.global_step.add_(1)

    def lrs_changed(self) -> None:
        self.lr.copy_(torch.tensor(self.lr_values, dtype=torch.float32))

    def clear_grads(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def nll_sums(self, batches: Batches, members: list[bool] | None = None) -> torch.Tensor:
        """All members at once (`members` does not matter)."""
        self.model.eval()
        total, state = torch.zeros(self.model.num_members, dtype=torch.float64, device=self.x.device), None
        for x, y in batches:
            with self.forward_context():
                logits, state = self.model(x, state)
                nll = member_nll(logits, y)
            total += nll.double() * y.numel()
        self.model.train()
        return total

    def before_capture(self, graph: torch.cuda.CUDAGraph) -> None:
        # each member's mask generator advances on every replay as it would eagerly
        for generator in self.model.generators():
            graph.register_generator_state(generator)


@contextlib.contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[None]:
    """The global CPU generator draws from `generator`'s stream (which advances); its own stream is restored."""
    default = torch.default_generator
    saved = default.get_state()
    default.set_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(default.get_state())
        default.set_state(saved)


class InTurnStep(GroupStep):
    """The window on a CPU, member by member (see the module's docstring), with each member's lr, clip,
    weight decay and momentum as host floats, as ClippedSGD has them."""

    name = "in_turn"
    host_reads_are_free = True
    files_in_background = False

    def __init__(
        self,
        model: StackedLanguageModel,
        window: tuple[int, int],
        clips: Sequence[float],
        weight_decays: Sequence[float] | None,
        device: torch.device,
        momentums: Sequence[float] | None = None,
        autocast: torch.dtype | None = None,
        triton_update: bool = False,
    ):
        super().__init__(model, window, device, False, 0, momentums, autocast, triton_update)
        self.nets = [model.member_model(k) for k in range(model.num_members)]
        self.net_params = [list(net.parameters()) for net in self.nets]  # ClippedSGD's order
        self.clips = list(clips)
        self.decays = [0.0] * model.num_members if weight_decays is None else list(weight_decays)
        # member k's momentum buffers as ClippedSGD's state holds them: views of its slices, in its params' order
        self.net_buffers = [
            None if not self.momentums[k] else [self.buffers[i][k] for i in model.member_orders[k]]
            for k in range(model.num_members)
        ]

    def masks_of(self, k: int) -> contextlib.AbstractContextManager:
        """Member k's dropout draws from its own generator (nothing to swap without dropout)."""
        if not self.model.members[k].drops:
            return contextlib.nullcontext()
        return drawing_from(self.model.generators()[k])

    def program(self) -> None:
        x, y, steps = self.x, self.y, self.x.size(0)
        active = self.active.tolist()  # a CPU tensor: no sync
        for k, net in enumerate(self.nets):
            if not active[k]:  # stopped or failed: its weights stay as they are
                continue
            with self.masks_of(k), self.forward_context():
                logits, (h, c) = net(x, (self.h[k], self.c[k]))
                nll = mean_nll(logits, y)
            loss = nll.item()
            if diverged(loss):  # before the update: it keeps its last finite weights
                self.active[k] = False
                self.failed_step[k], self.failed_loss[k] = self.global_step, loss
                continue
            paper_objective(nll, steps).backward()
            params = self.net_params[k]
            grads = one_member([p.grad for p in params])
            buffers = None if self.net_buffers[k] is None else one_member(self.net_buffers[k])
            lr, clip, decay, momentum = self.lr_values[k], self.clips[k], self.decays[k], self.momentums[k]
            step = clip_and_sgd_(
                one_member(params), grads, lr, clip, decay, momentum, buffers, triton_update=self.triton_update
            )
            self.grad_norm[k] = step[0]
            for p in params:
                p.grad = None
            self.h[k].copy_(h)
            self.c[k].copy_(c)
            self.loss[k] = nll.detach()
            self.nll_sum[k] += nll.detach().double() * y.numel()
        self.global_step.add_(1)

    def clear_grads(self) -> None:
        """Each member's gradients live only within its turn."""

    @torch.no_grad()
    def nll_sums(self, batches: Batches, members: list[bool] | None = None) -> torch.Tensor:
        """Each member's windows as its single model evaluates them, window by window: each window read once, for
        every member (a signal's Stopped, raised as a window is read, stops them all within a window; member by
        member, a Ctrl-C in the final test waited for every member's test of the split); a member `members` does
        not want (stopped, failed) costs nothing and gets NaN."""
        wanted = [k for k in range(len(self.nets)) if members is None or members[k]]
        total = torch.full((len(self.nets),), math.nan, dtype=torch.float64)
        total[wanted] = 0.0
        states = dict.fromkeys(wanted)
        for k in wanted:
            self.nets[k].eval()
        try:
            for x, y in batches:
                for k in wanted:
                    with self.forward_context():
                        logits, states[k] = self.nets[k](x, states[k])
                        nll = mean_nll(logits, y)
                    total[k] += nll.double() * y.numel()
        finally:
            for k in wanted:
                self.nets[k].train()
        return total


def group_step(
    model: StackedLanguageModel,
    window: tuple[int, int],
    clips: Sequence[float],
    weight_decays: Sequence[float] | None,
    device: torch.device,
    graph: bool = True,
    program: str = "auto",
    momentums: Sequence[float] | None = None,
    autocast: torch.dtype | None = None,
    triton_update: bool = False,
) -> GroupStep:
    """The group's window, each member with its clip, weight decay and momentum (None: no member has one):
    `program` auto is the members in turn on a CPU and the stacked program (a CUDA graph) elsewhere; batched on
    a CPU runs the GPU's program there (slower: to check it without a GPU). `autocast`: the forward's 16-bit type
    under trainer.precision=bf16-mixed (GroupStep.forward_context), None in float32. `triton_update`: the paper's
    update as one Triton kernel a parameter (speed.triton_update)."""
    if program not in PROGRAMS:
        raise ConfigError(f"hydra.launcher.program={program} must be one of {', '.join(PROGRAMS)}")
    if program == "in_turn" and device.type != "cpu":
        raise ConfigError(
            f"hydra.launcher.program=in_turn runs on a CPU only, this group is on {device.type}: use auto or batched"
        )
    if running_program(program, device.type == "cpu") == "in_turn":
        return InTurnStep(model, window, clips, weight_decays, device, momentums, autocast, triton_update)

    def each_member(values):
        return torch.tensor(values, dtype=torch.float32, device=device)

    decays = 0.0 if weight_decays is None else each_member(weight_decays)  # 0.0: one pass over the grads fewer
    return StackedStep(
        model,
        window,
        each_member(clips),
        decays,
        device,
        graph,
        momentums=momentums,
        autocast=autocast,
        triton_update=triton_update,
    )
