"""How far two runs of the stacked step drift apart in 13 windows when the second starts from weights scaled by
1 + U(-eps, eps): eps = 1e-7 is about a float32 ulp, 1e-3 about TF32's rounding. Calibrates bench_stacked.py's
Triton-cell criterion (docs/measurements.md, 2026-11-30). Prints each window's loss difference per member.

    python docs/cpu_2026-11-30/triton_check_perturbation/perturb.py 650 1e-7
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import bench_stacked  # noqa: E402 - a script's module, found through the path above
from rnnreg.stacked import StackedLanguageModel  # noqa: E402
from rnnreg.stacked_step import StackedStep  # noqa: E402

hidden, eps = int(sys.argv[1]), float(sys.argv[2])
args = SimpleNamespace(vocab=10000, hidden=hidden, layers=2, bptt=35, batch=20)
device = torch.device("cpu")
data = bench_stacked.windows(args.vocab, args.bptt, args.batch, 13, device)
members = bench_stacked.CHECK_MEMBERS
runs = []
for scale in (0.0, eps):
    torch.manual_seed(0)
    model = StackedLanguageModel(args.vocab, args.hidden, args.layers, members).to(device)
    with torch.no_grad():
        noise = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.mul_(1 + scale * (torch.rand(p.shape, generator=noise) * 2 - 1))
    clip = torch.full((len(members),), 5.0)
    step = StackedStep(model, (args.bptt, args.batch), clip, 0.0, device, graph=False, warmup=3)
    losses = []
    for x, y in data:
        step(x, y, [1.0] * len(members))
        losses.append(step.loss.clone())
    runs.append(torch.stack(losses))
difference = (runs[0] - runs[1]).abs()
print("hidden", hidden, "eps", sys.argv[2])
for i in range(len(data)):
    print(i, [f"{v:.2e}" for v in difference[i].tolist()], f"loss {runs[0][i].tolist()[0]:.4f}")
