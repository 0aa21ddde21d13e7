"""How long `rnnreg-train` takes from its command line to the training function: the checks, Hydra's compositions
and the run folder, what every run and every multirun job pays before it builds anything (torch and Lightning
imported first, as a warm process has them: their import is the same for every command).

Each command runs `--repeats` times in this process; the first (imports of our modules, caches) is left out of the
median. A run and a one-job multirun, on a small text corpus written here.

    python benchmarks/start_time.py [--repeats 7] [--out bench_results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401  (before the clock: the same for every command)
import torch  # noqa: F401

import rnnreg.train
import rnnreg.training


class Started(BaseException):
    """Raised by the training function: the start is over (a BaseException: Hydra reports an Exception as the
    run's failure, a multirun's job as failed)."""


def reached(*args, **kwargs):
    raise Started


def seconds_to_training(args: list[str]) -> float:
    sys.argv = ["rnnreg-train", *args]
    start = time.perf_counter()
    try:
        rnnreg.train.main()
    except Started:
        return time.perf_counter() - start
    raise RuntimeError(f"rnnreg-train {' '.join(args)} ended before its training function")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (the first is left out)")
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="folder for start_time.json")
    args = parser.parse_args()
    if args.repeats < 2:
        sys.exit("error: --repeats must be 2 or more (the first run is left out of the median)")
    rnnreg.training.run_training = reached  # the clock stops where training starts
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp, "corpus")
        corpus.mkdir()
        for name in ("train", "valid", "test"):
            (corpus / f"{name}.txt").write_text("the cat sat on the mat\n" * 200)
        tiny = ["data=text", f"data.data_dir={corpus}", "model=small", "logger=none", "trainer.accelerator=cpu"]
        commands = {
            "run": lambda k: [f"hydra.run.dir={tmp}/run{k}", *tiny],
            "one_job_multirun": lambda k: ["-m", "seed=1", f"hydra.sweep.dir={tmp}/sweep{k}", *tiny],
        }
        results = {}
        for name, command in commands.items():
            seconds = [seconds_to_training(command(k)) for k in range(args.repeats)]
            results[name] = {"seconds": seconds, "median_after_first": statistics.median(seconds[1:])}
            print(f"{name}: {results[name]['median_after_first']:.3f} s to the training function", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "start_time.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
