"""A full paper reproduction run with its wall time: valid/test perplexity against the paper's numbers.

    python benchmarks/reproduce.py --out gpu_results                       # paper_medium on the GPU
    python benchmarks/reproduce.py --out results --experiment paper_small --accelerator cpu

Runs `rnnreg-train experiment=<experiment>` in full (paper_medium: 39 epochs) with its defaults (on a GPU:
the fast step in a CUDA graph), prints valid/test perplexity beside the paper's, the training time and the
wall time of the whole command (start-up, validation and both tests included), and writes
<out>/reproduce_<experiment>.json; the run's own folder (metrics.json, checkpoints) is kept under <out>:
run_<experiment>, or run_<experiment>_2, ... when an earlier call's run is there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from rnnreg.io import write_json_atomic
from rnnreg.run_folder_check import earlier_results
from rnnreg.run_record import null_as_nan, read_metrics

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("paper_small", "paper_medium", "paper_large")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--experiment", default="paper_medium", choices=EXPERIMENTS)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("overrides", nargs="*", help="extra rnnreg-train overrides")
    args = parser.parse_args()
    paper = OmegaConf.load(REPO / "conf" / "report.yaml")  # the paper's numbers
    size = paper.paper[args.experiment.removeprefix("paper_")]
    paper_valid, paper_test = size.valid_ppl, size.test_ppl
    run_dir = (args.out / f"run_{args.experiment}").resolve()
    tries = 1
    while earlier_results(run_dir):  # a run never writes over another's results: a later call gets its own folder
        tries += 1
        run_dir = (args.out / f"run_{args.experiment}_{tries}").resolve()
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnreg.train",
            f"experiment={args.experiment}",
            f"trainer.accelerator={args.accelerator}",
            f"hydra.run.dir={run_dir}",
            *args.overrides,
        ],
        check=True,
    )
    wall = time.perf_counter() - start
    metrics = null_as_nan(read_metrics(run_dir))  # an overflowed perplexity is null there: nan here
    result = {
        "experiment": args.experiment,
        "accelerator": args.accelerator,
        "overrides": args.overrides,
        "wall_seconds": round(wall, 1),
        "metrics": metrics,
        "paper": {"val_ppl": paper_valid, "test_ppl": paper_test},
    }
    print(
        f"{args.experiment}: valid {metrics['val_ppl']:.2f} (paper {paper_valid}), test "
        f"{metrics['test_ppl']:.2f} (paper {paper_test}), training {metrics['train_seconds']:.0f} s, "
        f"wall {wall:.0f} s for the whole command"
    )
    write_json_atomic(args.out / f"reproduce_{args.experiment}.json", result)


if __name__ == "__main__":
    main()
