"""The batched program (a GPU's) at the medium shape on this CPU, its forward under bf16 autocast
(trainer.precision=bf16-mixed) against float32: the first WINDOWS windows of PTB's training stream, three members
(the paper's placement, dropout on h_{t-1}, variational; p = 0.5, lr 1, clip 5), the hidden units held as 656 as a
GPU's sweep holds them. Prints each program's per-window losses, the largest difference, and seconds a window.

    python docs/cpu_2026-12-02/bf16_medium/bf16_medium.py [WINDOWS]
"""

import sys
import time

import torch

from rnnreg.instantiation import instantiate
from rnnreg.recipes import compose_config
from rnnreg.stacked import MemberSpec, StackedLanguageModel
from rnnreg.stacked_step import StackedStep

WINDOWS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
specs = [
    MemberSpec(1, 0.05, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5),
    MemberSpec(2, 0.05, dropout_recurrent=0.5),
    MemberSpec(3, 0.05, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5, dropout_recurrent=0.5,
               variational=True),
]  # fmt: skip
data = instantiate(compose_config("experiment=paper_medium").data)  # PTB, batch 20, bptt 35
data.prepare_data()
data.setup("fit")
windows = [batch for _, batch in zip(range(WINDOWS), data.train_dataloader())]
vocab = len(data.load().itos)
results = {}
for autocast in (None, torch.bfloat16):
    model = StackedLanguageModel(vocab, 650, 2, specs, pad_hidden_to=8)
    step = StackedStep(model, (35, 20), torch.tensor([5.0] * 3), 0.0, torch.device("cpu"), False, autocast=autocast)
    losses, seconds = [], []
    for x, y in windows:
        start = time.perf_counter()
        step(x, y, [1.0] * 3)
        step.clear_grads()
        seconds.append(time.perf_counter() - start)
        losses.append(step.loss.clone())
    results[autocast] = torch.stack(losses)
    name = "bf16 autocast" if autocast else "float32"
    print(f"{name}: {sorted(seconds)[len(seconds) // 2]:.2f} s a window (median); losses by window:")
    for i, loss in enumerate(losses):
        print(f"  {i + 1:3d} " + " ".join(f"{v:.4f}" for v in loss.tolist()))
difference = (results[None] - results[torch.bfloat16]).abs()
worst = difference.max(1).values.argmax().item() + 1
print(f"largest |float32 - bf16| loss difference: {difference.max().item():.4f} (window {worst})")
print(f"last window's: {difference[-1].tolist()}")
