"""One training window on the GPU without Lightning: what each step variant costs, where the time goes,
and whether the CUDA graph computes what the eager steps compute.

    python benchmarks/profile_step.py --out gpu_results [--sizes medium large] [--windows 200]

For each size (the paper's model, 20 streams, random tokens): ms per window (host clock, device synchronised) after
warm-up, of the plain eager step (backward, clip_grad_norm_, foreach SGD; no host sync), the fast step run
eagerly, and the fast step replayed as a CUDA graph; the graph also with TF32 and with bf16 autocast. Then
the eager fast step's top CUDA kernels (torch.profiler), and a check with dropout off, for the fused LSTM
and for our step-loop LSTM: the graph, the eager fast step and the plain step, from the same weights over
the same windows, give the same losses and weights (float32 tolerance).
Writes <out>/profile_step.json and <out>/profile_step_kernels.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bench_speed import STEPS, recipe
from rnnreg.fast import FastStep
from rnnreg.model import LSTMLanguageModel, mean_nll, paper_objective
from rnnreg.optim import ClippedSGD
from rnnreg.training_signals import TrainingSignals

VOCAB, STREAMS = 10_000, 20
DEVICE = torch.device("cuda")  # --device cpu: a dry run of this script (no graph, figures meaningless)


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def build(size: str, dropout: bool, seed: int = 0, lstm: str = "fused") -> tuple[LSTMLanguageModel, list]:
    """The paper's model (fused nn.LSTM, or our step-loop LSTM) and 8 windows of random tokens."""
    hidden, bptt, p, init, _ = recipe(size)
    p = p if dropout else 0.0
    torch.manual_seed(seed)
    net = LSTMLanguageModel(VOCAB, hidden, 2, init, dropout_input=p, dropout_between=p, dropout_output=p, lstm=lstm)
    net = net.to(DEVICE).train()
    ids = torch.randint(VOCAB, (8, bptt + 1, STREAMS), device=DEVICE)
    return net, [(w[:-1].contiguous(), w[1:].contiguous()) for w in ids]


def plain_stepper(net: LSTMLanguageModel, clip: float):
    """The plain step as Lightning's automatic optimisation runs it, minus Lightning and the NaN check."""
    optimizer = ClippedSGD(net.parameters(), lr=1.0, clip=clip)
    state = None

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal state
        logits, state = net(x, state)
        nll = mean_nll(logits, y)
        optimizer.zero_grad(set_to_none=True)
        paper_objective(nll, x.size(0)).backward()
        optimizer.step()
        return nll.detach()

    return step


def fast_stepper(net: LSTMLanguageModel, clip: float, bptt: int, graph: bool):
    signals = TrainingSignals(DEVICE)
    fast = FastStep(net, ClippedSGD(net.parameters(), lr=1.0, clip=clip), (bptt, STREAMS), signals, DEVICE, graph)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fast(x, y, 1.0)
        return signals.loss

    return step


def steppers(size: str) -> dict:
    """The three steps compared throughout, each as a function of a fresh model."""
    _, bptt, _, _, clip = recipe(size)
    return {
        "plain": lambda net: plain_stepper(net, clip),
        "fast_eager": lambda net: fast_stepper(net, clip, bptt, graph=False),
        "fast_graph": lambda net: fast_stepper(net, clip, bptt, graph=True),
    }


def ms_per_window(step, windows: list, count: int, warmup: int = 10) -> float:
    for i in range(warmup):
        step(*windows[i % len(windows)])
    sync()
    start = time.perf_counter()
    for i in range(count):
        step(*windows[i % len(windows)])
    sync()
    return 1000 * (time.perf_counter() - start) / count


def timings(size: str, count: int, warmup: int) -> dict:
    _, bptt, _, _, clip = recipe(size)
    result = {}
    for name, make in steppers(size).items():
        net, windows = build(size, dropout=True)
        result["plain_eager" if name == "plain" else name] = ms_per_window(make(net), windows, count, warmup)
    for name, flags in {"fast_graph_tf32": "tf32", "fast_graph_bf16": "bf16"}.items():
        net, windows = build(size, dropout=True)
        try:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = flags == "tf32"
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=flags == "bf16"):
                result[name] = ms_per_window(fast_stepper(net, clip, bptt, graph=True), windows, count, warmup)
        except Exception as err:  # noqa: BLE001 - a diagnostic: record and go on
            result[name] = f"failed: {type(err).__name__}: {err}"[:300]
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults
    for name, ms in result.items():
        print(f"{size}: {name:<16} " + (f"{ms:.3f} ms/window" if isinstance(ms, float) else ms), flush=True)
    return result


def kernels(size: str, warmup: int) -> str:
    _, bptt, _, _, clip = recipe(size)
    net, windows = build(size, dropout=True)
    step = fast_stepper(net, clip, bptt, graph=False)
    ms_per_window(step, windows, 5, warmup)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if DEVICE.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(10):
            step(*windows[i % len(windows)])
        sync()
    events = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            return f"== {size}: eager fast step, 10 windows ==\n" + events.table(sort_by=key, row_limit=25)
        except Exception:  # noqa: BLE001 - the key's name differs between torch versions
            continue
    return events.table(row_limit=25)


def same_update(size: str, windows_run: int = 6, lstm: str = "fused") -> dict:
    """Dropout off: graph vs eager fast step vs plain step from the same weights over the same windows."""
    runs = {}
    for name, make in steppers(size).items():
        net, windows = build(size, dropout=False, seed=1, lstm=lstm)
        step = make(net)
        losses = [float(step(*windows[i % len(windows)])) for i in range(windows_run)]
        runs[name] = (losses, [p.detach().clone() for p in net.parameters()])
    ref_losses, ref_params = runs["plain"]
    check = {}
    for name in ("fast_eager", "fast_graph"):
        losses, params = runs[name]
        check[name] = {
            "max_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
            "max_weight_diff": max(float((a - b).abs().max()) for a, b in zip(params, ref_params)),
        }
    check["losses_plain"] = ref_losses
    print(
        f"{size}, {lstm} LSTM: same update as the plain step (dropout off, {windows_run} windows): {check}", flush=True
    )
    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", nargs="+", default=["medium", "large"], choices=list(STEPS))
    parser.add_argument("--windows", type=int, default=200, help="windows timed per variant")
    parser.add_argument("--warmup", type=int, default=10, help="windows run before each timing (graph capture)")
    parser.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="cpu: a dry run of this script on a machine without a GPU (figures meaningless)",
    )
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device: profile_step.py needs a GPU (--device cpu dry-runs it)")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "gpu": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "none (dry run)",
        "torch": torch.__version__,
        "sizes": {},
    }
    tables = []
    for size in args.sizes:
        results["sizes"][size] = {
            "check": same_update(size),
            "check_step_lstm": same_update(size, lstm="step"),
            "ms_per_window": timings(size, args.windows, args.warmup),
        }
        tables.append(kernels(size, args.warmup))
        (args.out / "profile_step.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "profile_step_kernels.txt").write_text("\n\n".join(tables) + "\n")
    print(tables[0][:4000])


if __name__ == "__main__":
    main()
