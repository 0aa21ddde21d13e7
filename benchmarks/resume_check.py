"""Whether a run stopped by SIGTERM and resumed repeats the uninterrupted run on this machine, case by case.

    python benchmarks/resume_check.py --out gpu_results               # on a GPU: paper_medium (p = 0.5), short epochs
    python benchmarks/resume_check.py --out out --accelerator cpu --experiment paper_small --windows 12 dropout.p=0.3

The tests show it on a CPU. On a GPU the paper's placement runs on cuDNN's fused LSTM, which draws the dropout
between its layers from a state of its own that no checkpoint holds (torch's generators are in one; cuDNN's is
not): this measures what that does. Per case, four `rnnreg-train` processes, each of two epochs of --windows
windows: A and B uninterrupted (one command twice: what this machine's kernels leave to chance), C stopped by
SIGTERM after window --stop of the second epoch, D resumed from C's last.ckpt. Cases (CASES): `fused`, the paper's
placement on cuDNN's multi-layer kernel; `layers`, the same a layer per call with torch's dropout between
(model.lstm=layers); `step`, recurrent dropout on the step-loop LSTM, all masks from torch's generator. Writes
<out>/resume_check.json: for the pairs A-B and A-D, whether every weight is equal to the bit, the largest difference,
and the validation perplexities; and A's words/s in its second epoch (the cost of `layers` against `fused`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from rnnreg.io import load_checkpoint, write_json_atomic
from rnnreg.run_record import last_checkpoint_path, null_as_nan, read_metrics

HERE = Path(__file__).resolve().parent


class SignalAt(L.Callback):
    """Sends this process SIGTERM at the end of training window `window` of epoch `epoch` (0-based)."""

    def __init__(self, window: int, epoch: int = 1):
        self.window, self.epoch = window, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx + 1 == self.window:
            os.kill(os.getpid(), signal.SIGTERM)


def train(folder: Path, overrides: list[str]) -> int:
    """One rnnreg-train process into `folder`; its exit code (143: stopped by SIGTERM)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "rnnreg.train", f"hydra.run.dir={folder}", *overrides]
    return subprocess.run(command, env=env).returncode


def compare(a: Path, b: Path) -> dict:
    """Two runs' last.ckpt weights and validation perplexities side by side."""
    wa, wb = (load_checkpoint(last_checkpoint_path(run))["state_dict"] for run in (a, b))
    largest = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
    ma, mb = (null_as_nan(read_metrics(run)) for run in (a, b))
    return {
        "weights_equal": all(torch.equal(wa[k], wb[k]) for k in wa),
        "largest_weight_difference": largest,
        "val_ppl": [ma["val_ppl"], mb["val_ppl"]],
    }


# what each case adds to the experiment: the paper's placement on cuDNN's multi-layer kernel (its dropout between
# the layers from cuDNN's own state), the same a layer per call (torch's dropout between), recurrent dropout (the
# step loop: torch's generator only)
CASES = {
    "fused": ["dropout=non_recurrent", "model.lstm=fused"],
    "layers": ["dropout=non_recurrent", "model.lstm=layers"],
    "step": ["dropout=recurrent"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--experiment", default="paper_medium")
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--windows", type=int, default=200, help="training windows per epoch")
    parser.add_argument("--stop", type=int, help="the window of the second epoch after which C stops (--windows / 2)")
    parser.add_argument("overrides", nargs="*", help="extra rnnreg-train overrides")
    args = parser.parse_args()
    stop = args.stop or args.windows // 2
    results = {"experiment": args.experiment, "accelerator": args.accelerator, "windows": args.windows, "stop": stop}
    for case in args.cases:
        root = (args.out / "resume_check" / case).resolve()
        shutil.rmtree(root, ignore_errors=True)  # an earlier call's: a folder with results is never written over
        common = [
            f"experiment={args.experiment}",
            *CASES[case],
            f"trainer.accelerator={args.accelerator}",
            "trainer.max_epochs=2",
            f"trainer.limit_train_batches={args.windows}",
            "test=false",
            *args.overrides,
        ]
        stopped = [*common, "+callbacks.stop._target_=resume_check.SignalAt", f"+callbacks.stop.window={stop}"]
        exits = {"A": train(root / "A", common), "B": train(root / "B", common), "C": train(root / "C", stopped)}
        exits["D"] = train(root / "D", [*common, f"ckpt_path={last_checkpoint_path(root / 'C')}"])
        row = {"overrides": common, "exits": exits}
        if exits["A"] == exits["B"] == exits["D"] == 0 and exits["C"] == 143:
            words = null_as_nan(read_metrics(root / "A"))["words_per_second_last_epoch"]
            row |= {"A-B": compare(root / "A", root / "B"), "A-D": compare(root / "A", root / "D")}
            row["words_per_second_A_second_epoch"] = words
            print(
                f"{case}: uninterrupted twice equal to the bit: {row['A-B']['weights_equal']} "
                f"(largest difference {row['A-B']['largest_weight_difference']:.3g}); resumed equal to the bit: "
                f"{row['A-D']['weights_equal']} (largest difference {row['A-D']['largest_weight_difference']:.3g}); "
                f"val ppl A {row['A-D']['val_ppl'][0]:.4f}, B {row['A-B']['val_ppl'][1]:.4f}, "
                f"resumed {row['A-D']['val_ppl'][1]:.4f}; A's second epoch {words:.0f} words/s"
            )
        else:
            print(f"{case}: exits {exits} (A, B, D 0 and C 143 expected): no comparison")
        results[case] = row
        write_json_atomic(args.out / "resume_check.json", results)
    if not all("A-D" in results[case] for case in args.cases):  # gpu_check.sh tries again on a later call
        sys.exit(1)


if __name__ == "__main__":
    main()
