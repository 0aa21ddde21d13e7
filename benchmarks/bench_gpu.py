"""GPU speed: ms per window and words/s of the plain PyTorch loop and of rnnreg-train, same GPU, same run.

For medium and large: the plain loop (benchmarks/plain_loop.py: cuDNN nn.LSTM, one host sync per step),
rnnreg with its defaults (speed.fast_step=auto: the whole step in a CUDA graph, no per-step sync), and
rnnreg without the graph (speed.cuda_graph=false) and without the fast step (speed.fast_step=false).
Each side runs in a fresh process over the same `--steps` training windows, timed from the first window
(warm-up and graph capture included); ratio = rnnreg words/s / plain words/s (targets: >= 2.0 medium,
>= 1.5 large). With `--concurrent N`, N medium jobs share the GPU through the joblib launcher and their
aggregate words/s is compared with one job's. A few minutes on an H100/H200.

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

from bench_speed import BIN, SIZES, plain, rnnreg

SIDES = {"rnnreg": (), "rnnreg_no_graph": ("speed.cuda_graph=false",),
         "rnnreg_plain_step": ("speed.fast_step=false",)}
TARGETS = {"medium": 2.0, "large": 1.5}


def concurrent(jobs: int, steps: int, accelerator: str) -> dict:
    """`jobs` medium runs at once on the one GPU (Hydra multirun, joblib launcher): aggregate words/s."""
    with tempfile.TemporaryDirectory() as sweep_dir:
        start = time.perf_counter()
        subprocess.run([str(BIN / "rnnreg-train"), "-m", "experiment=paper_medium",
                        f"trainer.accelerator={accelerator}", f"seed={','.join(str(s) for s in range(jobs))}",
                        "hydra/launcher=joblib",
                        f"hydra.launcher.n_jobs={jobs}", "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}",
                        "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "test=false", "logger=none",
                        f"hydra.sweep.dir={sweep_dir}"], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        runs = [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob("*/metrics.json"))]
    return {"jobs": jobs, "per_job_words_per_second": [r["words_per_second"] for r in runs],
            "aggregate_words_per_second": sum(r["words_per_second"] for r in runs), "wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_gpu.json")
    parser.add_argument("--sizes", nargs="+", default=["medium", "large"], choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=1000, help="training windows timed per run")
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--concurrent", type=int, default=0, help="also run N medium jobs at once (0: skip)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a dry run of this script on a machine without a GPU (figures meaningless)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device: this benchmark needs a GPU (make bench measures the CPU; "
                 "--device cpu dry-runs this script)")
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    results = {"gpu": torch.cuda.get_device_name() if args.device == "cuda" else "none (dry run)",
               "torch": torch.__version__, "cuda": torch.version.cuda, "steps": args.steps, "sizes": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        entry = {"plain": plain(size, args.steps, "--device", args.device)}
        for side in args.sides:
            entry[side] = rnnreg(size, args.steps, f"trainer.accelerator={accelerator}", *SIDES[side])
        base, words = entry["plain"]["words_per_second"], SIZES[size][1] * 20  # words per window: bptt x 20
        print(f"{size}: plain loop {1000 * words / base:.2f} ms/window, {base:,.0f} words/s", flush=True)
        for side in args.sides:
            wps = entry[side]["words_per_second"]
            entry[f"ratio_{side}"] = wps / base
            print(f"{size}: {side:<18} {1000 * words / wps:.2f} ms/window, {wps:,.0f} words/s, ratio "
                  f"{wps / base:.2f}" + (f" (target >= {TARGETS[size]})" if side == "rnnreg" else ""), flush=True)
        results["sizes"][size] = entry
        (args.out / "bench_gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.concurrent:
        one = rnnreg("medium", args.steps, f"trainer.accelerator={accelerator}")["words_per_second"]
        many = concurrent(args.concurrent, args.steps, accelerator)
        results["concurrent"] = many | {"one_job_words_per_second": one,
                                        "aggregate_vs_one": many["aggregate_words_per_second"] / one}
        print(f"{args.concurrent} medium jobs on one GPU: aggregate {many['aggregate_words_per_second']:,.0f} "
              f"words/s vs one job {one:,.0f} ({results['concurrent']['aggregate_vs_one']:.2f}x)", flush=True)
    (args.out / "bench_gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'bench_gpu.json'}")


if __name__ == "__main__":
    main()
