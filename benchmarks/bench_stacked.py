"""Stacked sweep vs the same jobs one after another: training words/s of K members on one device.

The same training step as rnnreg-train and hydra/launcher=stacked (forward, the summed-over-time objective,
backward, clipped SGD, state carried), on random token windows, timed over `--windows` windows after
`--warmup` (and after the CUDA graph's capture). "sequential" trains K single models (LSTMLanguageModel,
model.lstm=step and the fused nn.LSTM) one after another; "stacked" trains them as one StackedLanguageModel
with the launcher's step (rnnreg.stacked_step.group_step: a CUDA graph on a GPU; on a CPU the members in turn,
each as its single model with the LSTM model.lstm=auto picks for it); "stacked_triton" the same on the batched
program with speed.triton_cell=true (the cell as rnnreg.triton_cell's kernels; asked for, not by default);
"stacked_triton_update" that with speed.triton_update=true too (the clipped SGD step as rnnreg.triton_update's
kernel), timed only after it is checked exact against the torch ops' update (triton_update_check in the JSON).
`--bf16`: the stacked kinds' forward under bf16 autocast (trainer.precision=bf16-mixed), the check's too.
Words/s counts every member's words.
Each timing runs in a fresh process, the kinds in a rotated order on each of `--repeats` rounds, and the
median counts: in one process the later timings ran up to 5 % slower on our 2-core VM, whichever they were.

    python benchmarks/bench_stacked.py --members 1 4 8 --hidden 200 --bptt 20 --batch 20 --windows 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError
from rnnreg.model import LSTMLanguageModel, mean_nll, paper_objective
from rnnreg.optim import clip_and_sgd_, one_member
from rnnreg.recipes import compose_config
from rnnreg.speed_settings import keep_freed_memory, require_triton
from rnnreg.stacked import MemberSpec, StackedLanguageModel
from rnnreg.stacked_settings import padded_size
from rnnreg.stacked_step import StackedStep, group_step


def windows(vocab: int, bptt: int, batch: int, count: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = torch.randint(vocab, (count * bptt + 1, batch), generator=torch.Generator().manual_seed(0)).to(device)
    return [(data[i * bptt : (i + 1) * bptt], data[i * bptt + 1 : (i + 1) * bptt + 1]) for i in range(count)]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_single(args, lstm: str, data, device) -> float:
    """Seconds for K single models trained one after another over the timed windows."""
    total = 0.0
    for k, spec in enumerate(member_specs(args)):
        torch.manual_seed(k)
        net = LSTMLanguageModel(args.vocab, args.hidden, args.layers, **(spec.model_kwargs() | {"lstm": lstm}))
        net.to(device)
        net.train()
        params = list(net.parameters())
        state = None
        for i, (x, y) in enumerate(data):
            if i == args.warmup:
                sync(device)
                start = time.perf_counter()
            logits, state = net(x, state)
            state = tuple(s.detach() for s in state)
            paper_objective(mean_nll(logits, y), x.size(0)).backward()
            clip_and_sgd_(one_member(params), one_member([p.grad for p in params]), 1.0, 5.0)
            for p in params:
                p.grad = None
        sync(device)
        total += time.perf_counter() - start
    return total


def ablation_members(experiment: str = "ablation_placement_full") -> list[MemberSpec]:
    """The members of an ablation experiment's sweep (its conf/experiment file's hydra.sweeper.params:
    placements x seeds, placement-major), as the stacked launcher makes them from each job's composed config."""
    params = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    return [
        MemberSpec.from_config(compose_config(f"experiment={experiment}", f"dropout={placement}", f"seed={seed}"))
        for placement in str(params.dropout).split(",")
        for seed in str(params.seed).split(",")
    ]


def member_specs(args) -> list[MemberSpec]:
    """K members, no dropout; with --placements the ablation's placements (experiment=ablation_placement:
    p = 0.5) in turn, member k with seed k."""
    if not args.placements:
        return [MemberSpec(seed=k, init_scale=0.05) for k in range(args.members_now)]
    ablation = ablation_members("ablation_placement")
    placements = ablation[:: len(ablation) // 5]  # one member per placement
    return [dataclasses.replace(placements[k % len(placements)], seed=k) for k in range(args.members_now)]


def time_stacked(args, data, device, triton_cell: bool = False, triton_update: bool = False) -> float:
    k = args.members_now
    model = StackedLanguageModel(args.vocab, args.hidden, args.layers, member_specs(args), pad_hidden_to=args.pad)
    model.to(device)
    model.triton_cell = triton_cell
    # on a CPU too: the members-in-turn program has no stacked cell and is never padded
    program = "batched" if triton_cell or triton_update or args.pad > 1 else "auto"
    graph = not args.no_graph
    step = group_step(
        model,
        (args.bptt, args.batch),
        [5.0] * k,
        None,
        device,
        graph,
        program,
        autocast=autocast(args),
        triton_update=triton_update,
    )
    lrs = [1.0] * k
    # a graphed step records its graph at its window step.warmup: the timed windows come after that one-off
    # host work (recording every op), which no training window repeats
    untimed = max(args.warmup, step.warmup + 1) if step.graph else args.warmup
    for i in range(untimed + args.windows):
        if i == untimed:
            sync(device)
            start = time.perf_counter()
        step(*data[i % len(data)], lrs)
    sync(device)
    return time.perf_counter() - start


def autocast(args) -> torch.dtype | None:
    """The stacked step's forward type under --bf16 (trainer.precision=bf16-mixed), None: float32."""
    return torch.bfloat16 if args.bf16 else None


def in_float32(args) -> argparse.Namespace:
    """The same arguments without --bf16: the forward in float32."""
    return argparse.Namespace(**(vars(args) | {"bf16": False}))


# --check: one member per placement, so that every mask site draws from a member generator inside the graph
CHECK_MEMBERS = [
    MemberSpec(seed=1, init_scale=0.1),
    MemberSpec(seed=2, init_scale=0.1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5),
    MemberSpec(seed=3, init_scale=0.1, dropout_recurrent=0.5),
    MemberSpec(seed=4, init_scale=0.1, dropout_input=0.3, dropout_recurrent=0.3, variational=True),
    MemberSpec(seed=5, init_scale=0.1, weight_drop=0.5, embedding_dropout=0.1),
]


SHAPE_CHECK = {"layer_norm": True, "tie_weights": True}


def run_check_members(
    args,
    data,
    device,
    graph: bool,
    triton_cell: bool = False,
    shape: dict | None = None,
    pad: int | None = None,
    triton_update: bool = False,
):
    """The check's members (CHECK_MEMBERS) trained over `data` from fixed weights and mask generators: the
    per-window losses, final weights and generator states, and the CUDA graph (None where it ran eagerly). `pad`:
    the hidden units padded to a multiple of it (default --pad); triton_update: speed.triton_update."""
    shape = shape or {}
    pad = 1 if shape.get("layer_norm") else args.pad if pad is None else pad  # (layer norm is never padded)
    model = StackedLanguageModel(args.vocab, args.hidden, args.layers, CHECK_MEMBERS, **shape, pad_hidden_to=pad)
    model.to(device)
    model.triton_cell = triton_cell
    clip = torch.full((len(CHECK_MEMBERS),), 5.0, device=device)
    # weight decay 0.0, as group_step passes it: the training's update path (one pass over the gradients)
    step = StackedStep(
        model,
        (args.bptt, args.batch),
        clip,
        0.0,
        device,
        graph=graph,
        warmup=args.warmup,
        autocast=autocast(args),
        triton_update=triton_update,
    )
    losses = []
    for x, y in data:
        step(x, y, [1.0] * len(CHECK_MEMBERS))
        losses.append(step.loss.clone())
    sync(device)
    weights = [p.detach().cpu() for p in model.parameters()]
    return torch.stack(losses).cpu(), weights, step.cuda_graph, [g.cpu() for g in model.generator_states()]


def check_graph(args, data, device, triton_cell: bool = False, shape: dict | None = None) -> tuple[dict, torch.Tensor]:
    """The stacked step replayed as a CUDA graph against the same program run eagerly, from the same weights
    and mask generators: per-window losses, final weights, generator states after (each member's masks
    advanced as eagerly). Without CUDA both runs are eager (checks the script only). `shape`: the group's
    layer_norm / tie_weights. Returns the result and the eager run's losses."""
    eager_loss, eager_w, _, eager_g = run_check_members(args, data, device, False, triton_cell, shape)
    graph_loss, graph_w, captured, graph_g = run_check_members(args, data, device, True, triton_cell, shape)
    result = {
        "captured": captured is not None,
        "max_loss_difference": float((eager_loss - graph_loss).abs().max()),
        "max_weight_difference": max(float((a - b).abs().max()) for a, b in zip(eager_w, graph_w)),
        "generators_equal": all(torch.equal(a, b) for a, b in zip(eager_g, graph_g)),
        "windows": len(data),
    }
    result["same"] = result["generators_equal"] and result["max_loss_difference"] <= 1e-4
    print(f"graph vs eager{' (Triton cell)' if triton_cell else ''}{f' {shape}' if shape else ''}: {result}")
    return result, eager_loss


class StrictFloat32:
    """Matmuls in strict float32 inside (TF32 off), as they were outside after."""

    def __enter__(self) -> None:
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def check_triton_cell(args, data, device, torch_losses: torch.Tensor) -> dict:
    """check_graph on the Triton cell (with the matmul precision the sweep runs), and the Triton cell's eager
    losses against the torch ops' in strict float32, where the two cells' rounding differences stay at float32's
    size. Under TF32 they do not: a one-ulp difference in a cell's output can round a GEMM input to another
    TF32 value (10 mantissa bits), a relative step of about 1e-3, so two correct cells drift apart within a few
    windows (recorded, not decisive; docs/measurements.md has the figure)."""
    result, losses = check_graph(args, data, device, triton_cell=True)
    result["max_loss_difference_vs_torch_cell"] = float((losses - torch_losses).abs().max())
    with StrictFloat32():
        torch_fp32 = run_check_members(args, data, device, graph=False)[0]
        triton_fp32 = run_check_members(args, data, device, graph=False, triton_cell=True)[0]
    result["max_loss_difference_vs_torch_cell_fp32"] = float((triton_fp32 - torch_fp32).abs().max())
    result["same"] = result["same"] and result["max_loss_difference_vs_torch_cell_fp32"] <= 1e-3
    print(
        f"Triton cell vs torch ops, eager: {result['max_loss_difference_vs_torch_cell_fp32']:.3g} in strict float32, "
        f"{result['max_loss_difference_vs_torch_cell']:.3g} with the sweep's matmuls"
    )
    return result


def check_triton_update(args, data, device) -> dict:
    """speed.triton_update on the Triton cell: the check's members with the update as one Triton kernel a parameter
    against the torch ops' update, eagerly with the sweep's matmuls; the kernel rounds as the torch ops do, so the
    losses and weights must be equal to the bit. Then its CUDA graph against its eager step (check_graph's)."""
    ops_loss, ops_w, _, _ = run_check_members(args, data, device, False, triton_cell=True)
    fused_loss, fused_w, _, _ = run_check_members(args, data, device, False, triton_cell=True, triton_update=True)
    result = {
        "same_as_torch_update": torch.equal(ops_loss, fused_loss) and all(map(torch.equal, ops_w, fused_w)),
        "max_weight_difference_vs_torch_update": max(float((a - b).abs().max()) for a, b in zip(ops_w, fused_w)),
    }
    print(f"Triton update vs torch ops' update, eager: {result}")
    if result["same_as_torch_update"]:  # (without CUDA both runs are eager: checks the script only)
        graph_loss, graph_w, captured, _ = run_check_members(args, data, device, True, True, triton_update=True)
        result["captured"] = captured is not None
        result["graph_same_as_eager"] = torch.equal(fused_loss, graph_loss) and all(map(torch.equal, fused_w, graph_w))
        print(f"Triton update, graph vs eager: the same {result['graph_same_as_eager']}")
    result["same"] = result["same_as_torch_update"] and result.get("graph_same_as_eager", False)
    return result


def check_padding(args, data, device) -> dict:
    """The check's members padded (--pad) against unpadded, eagerly, in strict float32: the same masks (drawn at
    the members' own shapes) and the same arithmetic but for the padding's zeros, so the losses agree to float32
    rounding (TF32 would grow that, as for the Triton cell). `padded`: whether --hidden at --pad holds any padding
    at all (650 at 8: 656; a width already a multiple of --pad checks nothing, and decides nothing)."""
    args = in_float32(args)  # (--bf16: its forward's rounding is not checked here)
    with StrictFloat32():
        padded = run_check_members(args, data, device, graph=False)[0]
        unpadded = run_check_members(args, data, device, graph=False, pad=1)[0]
    difference = float((padded - unpadded).abs().max())
    units = padded_size(args.hidden, args.pad)
    result = {
        "pad": args.pad,
        "units": units,
        "padded": units > args.hidden,
        "max_loss_difference_vs_unpadded_fp32": difference,
        "same": difference <= 1e-3,
    }
    print(f"padded (--pad {args.pad}: {args.hidden} units as {units}) vs unpadded, strict float32: {difference:.3g}")
    return result


def profile_stacked(args, data, device, triton_cell: bool = False, triton_update: bool = False) -> str:
    """Where a stacked window's GPU time goes: the stacked step run eagerly (the same kernels its CUDA graph
    replays) over 5 windows after 3 of warm-up, under torch.profiler. Returns the kernels grouped by name
    (total ms per window, calls per window, share), the kernel count and device time per window, and
    torch.profiler's table of ops by self device time (which op launched what)."""
    k = args.members_now
    model = StackedLanguageModel(args.vocab, args.hidden, args.layers, member_specs(args), pad_hidden_to=args.pad)
    model.to(device)
    model.triton_cell = triton_cell
    step = group_step(
        model,
        (args.bptt, args.batch),
        [5.0] * k,
        None,
        device,
        False,
        "batched",
        autocast=autocast(args),
        triton_update=triton_update,
    )
    for i in range(3):
        step(*data[i % len(data)], [1.0] * k)
    sync(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    runs = 5
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(runs):
            step(*data[(3 + i) % len(data)], [1.0] * k)
        sync(device)
    wall = (time.perf_counter() - start) / runs
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(event.name, []).append(event.time_range.elapsed_us() / 1000)
    total = sum(sum(t) for t in kernels.values()) / runs
    count = sum(len(t) for t in kernels.values()) / runs
    title = f"K = {k}, {args.hidden} units, bptt {args.bptt}, batch {args.batch}, tf32 {args.tf32}, " \
        f"bf16 {args.bf16}, {'Triton' if triton_cell else 'torch-ops'} cell, " \
        f"{'Triton' if triton_update else 'torch-ops'} update, eager"  # fmt: skip
    lines = [f"== {title}: {count:.0f} kernels, {total:.2f} ms of kernels a window (eager wall {wall * 1000:.1f} ms)"]
    lines.append(f"{'ms/window':>10} {'calls':>7} {'share':>6}  kernel")
    for name, times in sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:40]:
        ms = sum(times) / runs
        lines.append(f"{ms:10.3f} {len(times) / runs:7.1f} {ms / total:6.1%}  {name[:150]}")
    events = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            lines.append(events.table(sort_by=key, row_limit=30))
            break
        except Exception:  # noqa: BLE001 - the key's name differs between torch versions
            continue
    text = "\n".join(lines)
    print(text)
    return text


KINDS = ["step", "fused", "stacked", "stacked_triton", "stacked_triton_update"]
DEFAULT_KINDS = KINDS[:3]
TRITON_KINDS = {"stacked_triton": "speed.triton_cell", "stacked_triton_update": "speed.triton_update"}
# a row's ratios of words/s: stacked over the best sequential kind, Triton cell over torch ops, Triton update over
# the torch ops' update (both on the Triton cell)
SPEEDUPS = ["speedup_vs_best_sequential", "triton_cell_speedup", "triton_update_speedup"]


def time_kind(args, kind: str, data, device) -> float:
    if kind.startswith("stacked"):
        return time_stacked(args, data, device, kind in TRITON_KINDS, triton_update=kind == "stacked_triton_update")
    return time_single(args, "step" if kind == "step" else "auto" if args.placements else "fused", data, device)


def fresh_timing(kind: str, members: int) -> float | None:
    """One timing (seconds) in a fresh process: this command line with --only kind --members members. None
    where a Triton kind failed (the other kinds' failures stop the benchmark)."""
    argv, skip = [], False
    for arg in sys.argv[1:]:  # drop --members's values and --check
        if skip and not arg.startswith("--"):
            continue
        skip = arg == "--members"
        if not skip and arg != "--check":
            argv.append(arg)
    command = [sys.executable, __file__, *argv, "--members", str(members), "--only", kind]
    proc = subprocess.run(command, check=kind not in TRITON_KINDS, capture_output=True, text=True)
    if proc.returncode:
        print(f"{kind} failed at K = {members}:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="*", default=[1, 4, 8], help="K to time (none: --check only)")
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--bptt", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--windows", type=int, default=20, help="timed windows per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-graph", action="store_true", help="on CUDA: the stacked step eagerly, no CUDA graph")
    parser.add_argument(
        "--pad",
        type=int,
        default=1,
        help="the stacked models hold the hidden units padded to a multiple of this (hydra.launcher.pad_hidden_to; "
        "auto is 8 on a GPU); 1: unpadded",
    )
    parser.add_argument(
        "--placements",
        action="store_true",
        help="members in turn none, non_recurrent, recurrent, both, variational (p 0.5); sequential: each with "
        "the LSTM rnnreg-train picks (auto: fused where the placement allows)",
    )
    parser.add_argument("--check", action="store_true", help="first: the CUDA graph against the eager step")
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=DEFAULT_KINDS, help="what to time (default: step fused stacked)"
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="TF32 matmuls and cuDNN (speed.tf32=true); without it PyTorch's defaults: float32 matmuls, TF32 cuDNN",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="the stacked kinds' forward under bf16 autocast (trainer.precision=bf16-mixed); the single models "
        "(step, fused) stay float32",
    )
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the timings (the median counts)")
    parser.add_argument("--only", choices=KINDS, help=argparse.SUPPRESS)  # one timing: what each fresh process runs
    parser.add_argument(
        "--profile",
        help="instead of timings: write the kernels of K = --members's first members' eager stacked step (torch "
        "ops cell; also the Triton cell, the Triton cell with the Triton update, where --kinds names "
        "stacked_triton, stacked_triton_update) to this text file",
    )
    parser.add_argument("--out", default="bench_stacked.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:  # as rnnreg-train speed.tf32=true
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    # as hydra/launcher=stacked (speed.keep_freed_memory): every buffer from the heap, none page-faulted back in
    # each window (for the single models, measured the same as rnnreg-train's 32 MiB threshold)
    keep_freed_memory(any_size=True)
    device = torch.device(args.device)
    data = windows(args.vocab, args.bptt, args.batch, args.warmup + args.windows, device)
    if args.profile:
        args.members_now = args.members[0]
        texts = [profile_stacked(args, data, device)]
        if "stacked_triton" in args.kinds:
            texts.append(profile_stacked(args, data, device, triton_cell=True))
        if "stacked_triton_update" in args.kinds:
            texts.append(profile_stacked(args, data, device, triton_cell=True, triton_update=True))
        Path(args.profile).write_text("\n\n".join(texts) + "\n")
        return
    if args.only:
        args.members_now = args.members[0]
        print(json.dumps({"seconds": time_kind(args, args.only, data, device)}))
        return
    words = args.windows * args.bptt * args.batch
    kinds = [kind for kind in KINDS if kind in args.kinds]
    for kind, key in TRITON_KINDS.items():
        if kind not in kinds:
            continue
        try:
            require_triton(device, key)
        except ConfigError as error:  # no Triton here: the other timings still run
            print(f"{kind} left out: {error}")
            kinds.remove(kind)
    check = None

    def write_check() -> None:  # in the JSON before what may fail or run out of time: it cannot lose the check
        Path(args.out).write_text(json.dumps({"config": vars(args), "check": check, "rows": []}, indent=2) + "\n")

    if args.check:
        check, torch_losses = check_graph(args, data, device)
        if args.bf16:  # how far bf16 autocast takes the check's members from float32 (eager, the same matmuls)
            float32 = run_check_members(in_float32(args), data, device, False)[0]
            check["max_loss_difference_vs_float32"] = float((torch_losses - float32).abs().max())
            print(f"bf16 autocast vs float32, eager: {check['max_loss_difference_vs_float32']:.3g}")
        write_check()
        try:  # a group with layer norm (its cell on autograd ops) and tied embeddings; apart from "same", which
            # says whether the ablation's groups may use the graph
            check["layer_norm_tied"], _ = check_graph(args, data, device, shape=SHAPE_CHECK)
        except Exception as error:
            check["layer_norm_tied"] = {"same": False, "error": f"{type(error).__name__}: {error}"[:2000]}
        write_check()
        if args.pad > 1:  # decides whether a sweep pads (gpu_check.sh), apart from the graph's "same"
            check["padding"] = check_padding(args, data, device)
            write_check()
        if "stacked_triton" in kinds:
            try:
                check["triton"] = check_triton_cell(args, data, device, torch_losses)
            except Exception as error:  # a Triton that cannot compile here: the torch ops' check and timings stand
                check["triton"] = {"same": False, "error": f"{type(error).__name__}: {error}"[:2000]}
                print(f"the Triton cell failed its check: {check['triton']['error']}")
            write_check()
            if not check["triton"]["same"]:
                kinds.remove("stacked_triton")
    update_check = None  # the Triton update is timed only once it is exact (with --check or not)
    if "stacked_triton_update" in kinds:
        try:
            update_check = check_triton_update(args, data, device)
        except Exception as error:  # a kernel that cannot compile here: the other timings stand
            update_check = {"same": False, "error": f"{type(error).__name__}: {error}"[:2000]}
            print(f"the Triton update failed its check: {update_check['error']}")
        if not update_check["same"]:
            kinds.remove("stacked_triton_update")
    rows = []
    config = {k: v for k, v in vars(args).items() if k != "members_now"}

    def write_result() -> None:  # after the checks and every K: a run stopped at its time limit keeps what it has
        result = {"config": config, "threads": torch.get_num_threads(), "tf32": args.tf32, "check": check, "rows": rows}
        result["triton_update_check"] = update_check
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    write_result()
    print(" | ".join([f"{'K':>3}", *(f"{kind + ' w/s':>14}" for kind in kinds), "speed-ups"]))
    for k in args.members:
        seconds = {kind: [] for kind in kinds}
        for round_ in range(args.repeats):
            for kind in kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]:
                seconds[kind].append(fresh_timing(kind, k))
        row = {"members": k, "seconds": seconds}
        for kind in TRITON_KINDS:
            if any(s is None for s in seconds.get(kind, [])):  # it failed: timed no further
                kinds.remove(kind)
                del seconds[kind]
                row[f"{kind}_failed"] = True
        names = [kind if kind.startswith("stacked") else f"sequential_{kind}" for kind in kinds]
        # sequential_step_wps, sequential_fused_wps (--placements: fused where it can), stacked_wps, stacked_triton_wps
        for kind, name in zip(kinds, names):
            row[f"{name}_wps"] = k * words / statistics.median(seconds[kind])
        sequential = [row[f"{name}_wps"] for name in names if name.startswith("sequential")]
        if "stacked" in kinds and sequential:
            row["speedup_vs_best_sequential"] = row["stacked_wps"] / max(sequential)
        if "stacked" in kinds and "stacked_triton" in kinds:
            row["triton_cell_speedup"] = row["stacked_triton_wps"] / row["stacked_wps"]
        if "stacked_triton" in kinds and "stacked_triton_update" in kinds:
            row["triton_update_speedup"] = row["stacked_triton_update_wps"] / row["stacked_triton_wps"]
        rows.append(row)
        speedups = ", ".join(f"{name} {row[name]:.2f}x" for name in SPEEDUPS if name in row) or "-"
        print(" | ".join([f"{k:>3}", *(f"{row[name + '_wps']:>14,.0f}" for name in names), speedups]))
        write_result()
    print(f"wrote {args.out}")
    if check is not None and not check["same"]:
        raise SystemExit("the CUDA graph's stacked step differs from the eager one (see check in the JSON)")
    if check is not None and not check.get("triton", {"same": True})["same"]:
        raise SystemExit("the stacked step on the Triton cell failed its check (see check.triton in the JSON)")
    if update_check is not None and not update_check["same"]:
        raise SystemExit("the Triton update failed its check (see triton_update_check in the JSON)")


if __name__ == "__main__":
    main()
