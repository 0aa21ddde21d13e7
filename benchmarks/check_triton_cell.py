"""The Triton cell against the torch ops at the paper-scale ablation's shape: its 15 members (each with its
placement's dropout), windows of the batched program (rnnreg.stacked_step.StackedStep) from the same weights
and mask streams, on each cell. Writes each member's losses per window, the largest loss and weight
differences, and each window's seconds.

On a CPU the kernels run in Triton's interpreter (set here), which checks them and does not time them
(about 160 s a window at the full shape against 10 s for the torch ops, one core).

    TRITON_INTERPRET=1 python benchmarks/check_triton_cell.py --windows 3 --out check_triton_cell.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench_stacked import ablation_members, windows
from rnnreg.stacked import StackedLanguageModel
from rnnreg.stacked_step import StackedStep


def train(args, data, device, triton_cell: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    members = ablation_members("ablation_placement_full")
    model = StackedLanguageModel(args.vocab, args.hidden, 2, members).to(device)
    model.triton_cell = triton_cell
    clip = torch.full((len(members),), 5.0, device=device)
    step = StackedStep(model, (args.bptt, args.batch), clip, 0.0, device, graph=False)  # 0.0: as group_step
    losses, seconds = [], []
    for x, y in data:
        start = time.perf_counter()
        step(x, y, [1.0] * len(members))
        losses.append(step.loss.cpu())  # a host read: the window has finished
        seconds.append(time.perf_counter() - start)
    return torch.stack(losses), [p.detach().cpu() for p in model.parameters()], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--hidden", type=int, default=650)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("check_triton_cell.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before rnnreg.triton_cell imports Triton
    data = windows(args.vocab, args.bptt, args.batch, args.windows, device)
    (torch_losses, torch_weights, torch_seconds), (losses, weights, seconds) = (
        train(args, data, device, triton_cell) for triton_cell in (False, True)
    )
    result = {
        "config": vars(args) | {"out": str(args.out)},
        "torch": torch.__version__,
        "max_abs_loss_difference": float((losses - torch_losses).abs().max()),
        "max_rel_loss_difference": float(((losses - torch_losses).abs() / torch_losses.abs()).max()),
        "max_abs_weight_difference": max(float((a - b).abs().max()) for a, b in zip(weights, torch_weights)),
        "seconds_per_window_torch_ops": torch_seconds,
        "seconds_per_window_triton_cell": seconds,
        "losses_torch_ops": torch_losses.tolist(),
        "losses_triton_cell": losses.tolist(),
    }
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("losses")}, indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
