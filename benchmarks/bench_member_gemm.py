"""K members' GEMMs as one batched GEMM (torch.bmm) or one GEMM per member (torch.mm): GFLOP/s at the shapes
of a stacked window (medium model: 2 x 650, vocabulary 10,000, batch 20 x bptt 35). Behind rnnreg.stacked_step's
choice of program per device: on a CPU the members train in turn, each at a single run's GEMM sizes
(docs/measurements.md).

    python benchmarks/bench_member_gemm.py --members 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def member_matmul(a: torch.Tensor, b: torch.Tensor, all_at_once: bool) -> torch.Tensor:
    """Each member's a[k] @ b[k]: one batched GEMM (the stacked model's) or one GEMM per member (a CPU's)."""
    if all_at_once:
        return torch.bmm(a, b)
    out = a.new_empty(a.size(0), a.size(1), b.size(2))
    for k in range(a.size(0)):
        torch.mm(a[k], b[k], out=out[k])
    return out


def seconds(a: torch.Tensor, b: torch.Tensor, all_at_once: bool, repeats: int) -> float:
    member_matmul(a, b, all_at_once)
    start = time.perf_counter()
    for _ in range(repeats):
        member_matmul(a, b, all_at_once)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=650)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--tokens", type=int, default=700, help="batch x bptt")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, v, n, b = args.hidden, args.vocab, args.tokens, args.batch
    shapes = {  # (rows, inner, columns) of each member's GEMM
        "recurrent step, forward": (b, h, 4 * h),
        "recurrent step, backward": (b, 4 * h, h),
        "input projection": (n, h, 4 * h),
        "recurrent weight gradient": (4 * h, n, h),
        "decoder, forward": (n, h, v),
        "decoder, input gradient": (n, v, h),
        "decoder, weight gradient": (v, n, h),
    }
    rows = []
    print(f"{'GEMM':28s} | {'bmm GFLOP/s':>12} | {'mm per member GFLOP/s':>22}")
    for name, (m, k, p) in shapes.items():
        a, c = torch.randn(args.members, m, k), torch.randn(args.members, k, p)
        flops = 2 * args.members * m * k * p
        batched = flops / seconds(a, c, True, args.repeats) / 1e9
        looped = flops / seconds(a, c, False, args.repeats) / 1e9
        rows.append({"gemm": name, "shape": [m, k, p], "bmm_gflops": batched, "mm_gflops": looped})
        print(f"{name:28s} | {batched:>12.1f} | {looped:>22.1f}")
    if args.out:
        result = {"config": vars(args), "threads": torch.get_num_threads(), "rows": rows}
        with open(args.out, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
