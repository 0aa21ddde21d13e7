"""The baseline rnnreg is measured against: a minimal plain-PyTorch loop of the paper's recipe.

cuDNN/oneDNN nn.LSTM, dropout on the non-recurrent connections, summed-over-time objective, manual SGD,
global-norm clipping, hidden state carried and detached, one host sync per step (loss.item()), as in
pytorch/examples word_language_model. Prints (and returns) words/s over `--steps` training windows.

    python benchmarks/plain_loop.py --hidden 200 --bptt 20 --dropout 0 --init 0.1 --steps 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def ptb_train_ids(data_dir: Path) -> tuple[torch.Tensor, int]:
    words = [w for line in (data_dir / "ptb.train.txt").read_text().splitlines() for w in line.split() + ["<eos>"]]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    return torch.tensor([vocab[w] for w in words]), len(vocab)


class PlainLM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, dropout: float, init: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -init, init)

    def forward(self, x, state):
        out, state = self.lstm(self.drop(self.embedding(x)), state)
        return self.decoder(self.drop(out)), state


def run(
    data_dir: Path,
    hidden: int,
    bptt: int,
    dropout: float,
    init: float,
    clip: float,
    steps: int,
    batch: int = 20,
    layers: int = 2,
    device: str = "cpu",
    seed: int = 0,
    warmup: int = 0,
) -> dict:
    torch.manual_seed(seed)
    ids, vocab = ptb_train_ids(data_dir)
    n = ids.numel() // batch
    data = ids[: n * batch].view(batch, n).t().contiguous().to(device)
    model = PlainLM(vocab, hidden, layers, dropout, init).to(device).train()
    lr = 1.0
    state = None
    start = last = time.perf_counter()
    step_seconds = []
    windows = (n - 1) // bptt
    for i in range(steps):
        i %= windows  # past the end of the data: start over (the state carries on, as across epochs)
        x, y = data[i * bptt : (i + 1) * bptt], data[i * bptt + 1 : (i + 1) * bptt + 1]
        state = None if state is None else tuple(s.detach() for s in state)
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1)) * bptt
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-lr)
        loss.item()
        now = time.perf_counter()
        step_seconds.append(now - last)
        last = now
    seconds = time.perf_counter() - start
    median = sorted(step_seconds)[steps // 2]
    steady = sum(step_seconds[warmup:])  # after the first `warmup` steps (cuDNN/cuBLAS set-up, allocator)
    return {
        "words_per_second": steps * bptt * batch / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "words_per_second_median_step": bptt * batch / median,
        "steps": steps,
        "words_per_second_steady": (steps - warmup) * bptt * batch / steady,
        "warmup_steps": warmup,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".cache/rnnreg/ptb")
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--bptt", type=int, default=20)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--init", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=0, help="steps left out of words_per_second_steady")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="apply rnnreg's glibc allocator setting (speed.keep_freed_memory) to this loop too",
    )
    args = parser.parse_args()
    if args.keep_freed_memory:
        from rnnreg.speed_settings import keep_freed_memory

        keep_freed_memory()
    print(
        json.dumps(
            run(
                args.data_dir,
                args.hidden,
                args.bptt,
                args.dropout,
                args.init,
                args.clip,
                args.steps,
                device=args.device,
                warmup=args.warmup,
            )
        )
    )
