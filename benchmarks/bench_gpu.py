"""GPU speed: ms per window and words/s of the plain PyTorch loop and of rnnreg-train, same GPU, same run.

For medium and large: the plain loop (benchmarks/plain_loop.py: cuDNN nn.LSTM, one host sync per step)
and rnnreg with its defaults (speed.fast_step=auto: the whole step in a CUDA graph, no per-step sync),
then optional sides: without the graph (speed.cuda_graph=false), without the fast step
(speed.fast_step=false), with TF32 (speed.tf32=true), with bf16 autocast (trainer.precision=bf16-mixed),
and variational dropout on our step-loop LSTM with and without the graph and with its cell as Triton kernels
(speed.triton_cell=true; not the plain loop's model).
Each side runs in a fresh process over `--steps` training windows: rnnreg as two epochs of steps/2, the
plain loop as one run of `--steps`. "steady" times the second half only (rnnreg's second epoch, the plain
loop's second half), after warm-up and graph capture; "whole" times every window. ratio = rnnreg
words/s / plain words/s, steady (targets: >= 2.0 medium, >= 1.5 large). With `--concurrent N`, N medium
jobs (`--concurrent-size`) share the GPU through the joblib launcher (Hydra multirun) and the sum of their
steady words/s is compared with one job's. A side that fails is recorded with its error and the others
still run.

    python benchmarks/bench_gpu.py --out gpu_results [--sizes medium large] [--steps 1000] [--concurrent 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_speed import STEPS, TRAIN, plain, recipe, rnnreg
from rnnreg.run_record import metrics_path

SIDES = {
    "rnnreg": (),
    "rnnreg_no_graph": ("speed.cuda_graph=false",),
    "rnnreg_plain_step": ("speed.fast_step=false",),
    "rnnreg_tf32": ("speed.tf32=true",),
    "rnnreg_bf16": ("trainer.precision=bf16-mixed",),
    # our step-loop LSTM (variational dropout), with and without the graph, and its cell as Triton kernels
    "rnnreg_variational": ("dropout=variational",),
    "rnnreg_variational_no_graph": ("dropout=variational", "speed.cuda_graph=false"),
    "rnnreg_variational_triton": ("dropout=variational", "speed.triton_cell=true"),
}
DEFAULT_SIDES = ["rnnreg", "rnnreg_no_graph", "rnnreg_plain_step"]
TARGETS = {"medium": 2.0, "large": 1.5}


def attempt(fn, *args, **kwargs) -> dict:
    """fn's result, or {"error": ...} with the end of the failed command's output."""
    try:
        return fn(*args, **kwargs)
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or err.stdout or "").strip().splitlines()[-15:]
        print("\n".join(["  FAILED:", *tail]), flush=True)
        return {"error": "\n".join(tail)}


def concurrent(jobs: int, size: str, steps: int, accelerator: str) -> dict:
    """`jobs` runs of `size` at once on the one GPU (Hydra multirun, joblib launcher): summed words/s."""
    with tempfile.TemporaryDirectory() as sweep_dir:
        start = time.perf_counter()
        subprocess.run(
            [
                *TRAIN,
                "-m",
                f"experiment=paper_{size}",
                f"trainer.accelerator={accelerator}",
                f"seed={','.join(str(s) for s in range(jobs))}",
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={jobs}",
                "trainer.max_epochs=2",
                f"trainer.limit_train_batches={steps // 2}",
                "trainer.limit_val_batches=1",
                "trainer.num_sanity_val_steps=0",
                "test=false",
                "logger=none",
                f"hydra.sweep.dir={sweep_dir}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        runs = [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(str(metrics_path("*"))))]
    steady = [r["words_per_second_last_epoch"] for r in runs]
    return {
        "jobs": jobs,
        "per_job_words_per_second_steady": steady,
        "sum_words_per_second_steady": sum(steady),
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_gpu.json")
    parser.add_argument("--sizes", nargs="*", default=["medium", "large"], choices=list(STEPS))
    parser.add_argument("--steps", type=int, default=1000, help="training windows per run (half of them timed)")
    parser.add_argument("--sides", nargs="+", default=DEFAULT_SIDES, choices=list(SIDES))
    parser.add_argument("--concurrent", type=int, default=0, help="also run N medium jobs at once (0: skip)")
    parser.add_argument("--concurrent-size", default="medium", choices=list(STEPS), help="the size of those jobs")
    parser.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="cpu: a dry run of this script on a machine without a GPU (figures meaningless)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "error: no CUDA device: this benchmark needs a GPU (make bench measures the CPU; "
            "--device cpu dry-runs this script)"
        )
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    out = args.out / "bench_gpu.json"
    results = json.loads(out.read_text()) if out.exists() else {}  # several calls add to one file
    results |= {
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "none (dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "steps": args.steps,
    }
    results.setdefault("sizes", {})
    args.out.mkdir(parents=True, exist_ok=True)
    half = args.steps // 2
    for size in args.sizes:
        entry = results["sizes"].setdefault(size, {})
        if "words_per_second_steady" not in entry.get("plain", {}):  # a later call reuses the baseline
            entry["plain"] = attempt(plain, size, args.steps, "--device", args.device, "--warmup", str(half))
        for side in args.sides:
            entry[side] = attempt(rnnreg, size, half, f"trainer.accelerator={accelerator}", *SIDES[side], epochs=2)
        words = recipe(size)[1] * 20  # words per window: bptt x 20 streams
        base = entry["plain"].get("words_per_second_steady")
        if base:
            print(
                f"{size}: plain loop          {1000 * words / base:.2f} ms/window steady, {base:,.0f} words/s "
                f"(whole run {entry['plain']['words_per_second']:,.0f})",
                flush=True,
            )
        for side in args.sides:
            wps = entry[side].get("words_per_second_last_epoch")
            if not (base and wps):
                continue
            entry[f"ratio_{side}"] = wps / base
            entry[f"ratio_{side}_whole"] = entry[side]["words_per_second"] / entry["plain"]["words_per_second"]
            print(
                f"{size}: {side:<18} {1000 * words / wps:.2f} ms/window steady, {wps:,.0f} words/s, ratio "
                f"{wps / base:.2f}"
                + (f" (target >= {TARGETS[size]})" if side == "rnnreg" and size in TARGETS else "")
                + f"; whole run ratio {entry[f'ratio_{side}_whole']:.2f}",
                flush=True,
            )
        out.write_text(json.dumps(results, indent=2) + "\n")
    if args.concurrent:
        size = args.concurrent_size
        one = results["sizes"].get(size, {}).get("rnnreg", {}).get("words_per_second_last_epoch")
        if not one:
            one = attempt(rnnreg, size, half, f"trainer.accelerator={accelerator}", epochs=2).get(
                "words_per_second_last_epoch"
            )
        many = attempt(concurrent, args.concurrent, size, args.steps, accelerator)
        results["concurrent"] = many | {"size": size, "one_job_words_per_second_steady": one}
        if one and "error" not in many:
            results["concurrent"]["sum_vs_one"] = many["sum_words_per_second_steady"] / one
            print(
                f"{args.concurrent} {size} jobs on one GPU: {many['sum_words_per_second_steady']:,.0f} words/s "
                f"together vs one job alone {one:,.0f} ({results['concurrent']['sum_vs_one']:.2f}x); per job "
                f"{', '.join(f'{w:,.0f}' for w in many['per_job_words_per_second_steady'])}",
                flush=True,
            )
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
