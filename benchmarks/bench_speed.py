"""make bench: words/s of `rnnreg-train` against the plain PyTorch loop, same machine, same run.

Each side is run `--repeats` times (default 3, medium 5), alternating, in fresh processes; the best of
each side is compared (the least disturbed measurement). Both time the same training windows from the
first step, as total words / total time and as words per step / median step time (robust to bursts of
noise on shared VMs).

    python benchmarks/bench_speed.py [--sizes small medium] [--out bench_results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# rnnreg-train, as `python -m` (also where the project is on PYTHONPATH rather than installed)
TRAIN = [sys.executable, "-m", "rnnreg.train"]
# Windows timed per run on a CPU, per size (the recipes themselves: conf/experiment/paper_<size>.yaml).
STEPS = {"small": 300, "medium": 30, "large": 10}
# Runs per side: more where each run is short against the VM's drift.
REPEATS = {"small": 3, "medium": 5, "large": 3}


def recipe(size: str) -> tuple[int, int, float, float, float]:
    """The paper's recipe of `size` as the plain loop takes it: hidden, bptt, dropout (its non-recurrent sites'),
    init scale, clip."""
    from rnnreg.recipes import compose_config

    cfg = compose_config(f"experiment=paper_{size}")
    return (
        cfg.model.hidden_size,
        cfg.data.bptt,
        cfg.dropout.between,
        cfg.model.init_scale,
        cfg.trainer.gradient_clip_val,
    )


def data_dir() -> Path:
    return Path(os.environ.get("RNNREG_DATA_DIR", Path.home() / ".cache/rnnreg")) / "ptb"


def plain(size: str, steps: int, *flags: str) -> dict:
    hidden, bptt, dropout, init, clip = recipe(size)
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "plain_loop.py"),
            "--data-dir",
            str(data_dir()),
            "--hidden",
            str(hidden),
            "--bptt",
            str(bptt),
            "--dropout",
            str(dropout),
            "--init",
            str(init),
            "--clip",
            str(clip),
            "--steps",
            str(steps),
            *flags,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def rnnreg(size: str, steps: int, *overrides: str, epochs: int = 1) -> dict:
    """rnnreg-train over `epochs` x `steps` training windows; its metrics.json."""
    from rnnreg.run_record import metrics_path

    with tempfile.TemporaryDirectory() as run_dir:
        subprocess.run(
            [
                *TRAIN,
                f"experiment=paper_{size}",
                f"trainer.max_epochs={epochs}",
                f"trainer.limit_train_batches={steps}",
                "trainer.limit_val_batches=1",
                "trainer.num_sanity_val_steps=0",
                "test=false",
                "logger=none",
                f"hydra.run.dir={run_dir}",
                *overrides,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(metrics_path(run_dir).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(STEPS))
    parser.add_argument("--repeats", type=int, default=None, help=f"runs per side (default {REPEATS})")
    parser.add_argument(
        "--step-lstm",
        nargs="*",
        default=["medium"],
        choices=list(STEPS),
        help="sizes at which to also time the step-loop LSTM against the fused one",
    )
    parser.add_argument(
        "--fast-step",
        nargs="*",
        default=["small"],
        choices=list(STEPS),
        help="sizes at which to also time speed.fast_step=true (off by default on CPU)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    args = parser.parse_args()
    results = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sizes": {},
    }
    for size in args.sizes:
        steps, repeats = STEPS[size], args.repeats or REPEATS[size]
        # "plain_same_malloc": the plain loop given rnnreg's allocator setting (speed.keep_freed_memory),
        # so the table separates that gain from the cost of the framework itself
        runs = {"plain": [], "plain_same_malloc": [], "rnnreg": []}
        for _ in range(repeats):
            runs["plain"].append(plain(size, steps))
            runs["plain_same_malloc"].append(plain(size, steps, "--keep-freed-memory"))
            runs["rnnreg"].append(rnnreg(size, steps))
        entry = {"steps": steps, "runs": runs}
        for measure in ("words_per_second", "words_per_second_median_step"):
            best = {side: max(r[measure] for r in rs) for side, rs in runs.items()}
            entry[f"ratio_{measure}"] = best["rnnreg"] / best["plain"]
            entry[f"ratio_same_malloc_{measure}"] = best["rnnreg"] / best["plain_same_malloc"]
            print(
                f"{size:>6} [{measure}]: plain {best['plain']:8,.0f}  rnnreg {best['rnnreg']:8,.0f}  "
                f"ratio {entry[f'ratio_{measure}']:.3f}  (target >= 0.97; {steps} windows, best of "
                f"{repeats}); plain with rnnreg's allocator setting {best['plain_same_malloc']:8,.0f}: "
                f"ratio {entry[f'ratio_same_malloc_{measure}']:.3f}",
                flush=True,
            )
        if size in args.fast_step:  # speed.fast_step=true: the static-buffer step (eager on CPU)
            fast = max(rnnreg(size, steps, "speed.fast_step=true")["words_per_second"] for _ in range(repeats))
            entry |= {
                "fast_step_words_per_second": fast,
                "fast_step_ratio": fast / max(r["words_per_second"] for r in runs["plain"]),
            }
            print(
                f"{size:>6}: speed.fast_step=true {fast:8,.0f} words/s: ratio to plain {entry['fast_step_ratio']:.3f}",
                flush=True,
            )
        if size in args.step_lstm:  # our step-loop LSTM (recurrent/variational/layer-norm path), same model
            fused = max(r["words_per_second"] for r in runs["rnnreg"])
            step = max(rnnreg(size, steps, "model.lstm=step")["words_per_second"] for _ in range(repeats))
            entry |= {"step_lstm_words_per_second": step, "step_vs_fused": step / fused}
            print(
                f"{size:>6}: step-loop LSTM {step:8,.0f} words/s vs fused nn.LSTM {fused:8,.0f}: ratio "
                f"{step / fused:.3f}  (target >= 0.5)",
                flush=True,
            )
        results["sizes"][size] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'bench_speed.json'}")


if __name__ == "__main__":
    main()
