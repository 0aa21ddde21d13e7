"""Padded (650 as 656) against unpadded batched program at the medium shape on this CPU: losses, weights, time."""

import time

import torch

from rnnreg.stacked import MemberSpec, StackedLanguageModel
from rnnreg.stacked_step import StackedStep

torch.manual_seed(0)
specs = [
    MemberSpec(1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5),
    MemberSpec(2, dropout_recurrent=0.5),
    MemberSpec(3, dropout_input=0.5, dropout_recurrent=0.5, variational=True),
]
V, H = 10000, 650
g = torch.Generator().manual_seed(0)
data = [(torch.randint(0, V, (35, 20), generator=g), torch.randint(0, V, (35, 20), generator=g)) for _ in range(6)]
res = {}
for pad in (1, 8):
    m = StackedLanguageModel(V, H, 2, specs, pad_hidden_to=pad)
    step = StackedStep(m, (35, 20), torch.tensor([5.0] * 3), 0.0, torch.device("cpu"), graph=False)
    losses, times = [], []
    for x, y in data:
        t = time.perf_counter()
        step(x, y, [1.0] * 3)
        step.clear_grads()
        times.append(time.perf_counter() - t)
        losses.append(step.loss.clone())
    res[pad] = (m, torch.stack(losses), times)
    print(f"pad {pad}: units {m.units}, s/window {[round(t, 2) for t in times]}")
(a, la, _), (b, lb, _) = res[1], res[8]
print("max loss diff", (la - lb).abs().max().item(), "losses", la[-1].tolist())
wd = max(
    (x - y).abs().max().item()
    for k in range(3)
    for x, y in zip(a.member_state_dict(k).values(), b.member_state_dict(k).values())
)
print("max weight diff", wd)
