"""A stacked window's GEMMs in other layouts and precisions: which would make the window faster on a GPU.

On an H200 the GEMMs are most of a stacked medium window, in kernels far from the GPU's bandwidth and
arithmetic rates (the kernel profile in docs/measurements.md). This times each GEMM of a stacked window
(K members, batch 20 x bptt 35, vocabulary 10,000) alone, as the stacked model does it and in the variants that
could replace it:
- hidden size 650 (rows of 2,600 bytes, not 16-byte aligned) against a padded 656, and against 650 held in
  rows of 656 (the same numbers, a view into padded storage: aligned rows without changing the model; the
  operands only, each GEMM's output is allocated contiguous);
- the recurrent weight as the model holds it, W_hh (K, 4H, H) used transposed, against stored transposed;
- TF32 (the sweeps' setting), strict float32, bf16 and fp16 operands (float32 accumulation).
Microseconds a call (CUDA events, the mean of --repeats after 3 warm-up calls), TFLOP/s, and for the recurrent
step the TB/s of weights it reads.

    python benchmarks/bench_gemm_layouts.py --device cuda --members 15 --out gemm_layouts.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PRECISIONS = {"tf32": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gemms(k: int, h: int, vocab: int, tokens: int, batch: int, dtype, device, row_width: int | None = None) -> dict:
    """name -> (a, b, bytes of W_hh the GEMM reads: 0 where that is not the point) for each GEMM a @ b. With
    `row_width`, every tensor whose rows are h wide holds them `row_width` apart (a view into padded storage)."""

    def rand(*shape):
        values = torch.randn(*shape, device=device).mul_(0.05).to(dtype)
        if row_width is None or shape[-1] != h:
            return values
        storage = values.new_zeros(*shape[:-1], row_width)
        storage[..., :h] = values
        return storage[..., :h]

    w_hh, w_ih, w_dec = rand(k, 4 * h, h), rand(k, 4 * h, h), rand(k, vocab, h)
    h_step, d_step = rand(k, batch, h), rand(k, batch, 4 * h)
    x, d_gates, d_logits = rand(k, tokens, h), rand(k, tokens, 4 * h), rand(k, tokens, vocab)
    weight_bytes = w_hh.numel() * w_hh.element_size()
    return {  # (a, b) with a @ b the GEMM; the recurrent step's two in both weight layouts
        "recurrent step forward, W_hh held (4H, H)": (h_step, w_hh.transpose(-1, -2), weight_bytes),
        "recurrent step forward, W_hh stored transposed": (h_step, w_hh.transpose(-1, -2).contiguous(), weight_bytes),
        "recurrent step backward, W_hh held (4H, H)": (d_step, w_hh, weight_bytes),
        "recurrent step backward, W_hh stored transposed": (
            d_step,
            w_hh.transpose(-1, -2).contiguous().transpose(-1, -2),
            weight_bytes,
        ),
        "input projection": (x, w_ih.transpose(-1, -2), 0),
        "weight gradient (W_ih, W_hh)": (d_gates.transpose(-1, -2), x, 0),
        "decoder forward": (x, w_dec.transpose(-1, -2), 0),
        "decoder input gradient": (d_logits, w_dec, 0),
        "decoder weight gradient": (d_logits.transpose(-1, -2), x, 0),
    }


def mean_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int, device) -> float:
    for _ in range(3):
        torch.matmul(a, b)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            torch.matmul(a, b)
        end.record()
        end.synchronize()  # a CPU-GPU sync point: the timing's end
        return start.elapsed_time(end) / 1000 / repeats
    begin = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return (time.perf_counter() - begin) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=15)
    parser.add_argument("--hidden", type=int, nargs="+", default=[650, 656])
    parser.add_argument("--row-width", type=int, default=656, help="also the first hidden size in rows this wide")
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    tokens = args.bptt * args.batch
    rows = []
    print(f"{'GEMM':50s} | {'H (rows)':>10} | {'precision':>9} | {'µs':>9} | {'TFLOP/s':>8} | {'weights TB/s':>12}")
    layouts = [(hidden, None) for hidden in args.hidden] + [(args.hidden[0], args.row_width)]
    for precision in args.precisions:
        # TF32 for the float32 GEMMs only under "tf32" (as speed.tf32=true); bf16/fp16 accumulate in float32
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        for hidden, width in layouts:
            dtype = PRECISIONS[precision]
            cases = gemms(args.members, hidden, args.vocab, tokens, args.batch, dtype, device, width)
            for name, (a, b, weight_bytes) in cases.items():
                seconds = mean_seconds(a, b, args.repeats, device)
                flops = 2 * a.size(0) * a.size(1) * a.size(2) * b.size(2)
                row = {"gemm": name, "hidden": hidden, "row_width": width or hidden, "precision": precision}
                row["us"] = seconds * 1e6
                row["tflops"] = flops / seconds / 1e12
                row["weight_tbps"] = weight_bytes / seconds / 1e12 if weight_bytes else None
                rows.append(row)
                tbps = f"{row['weight_tbps']:12.2f}" if weight_bytes else f"{'':12s}"
                size = f"{hidden} ({width or hidden})"
                print(f"{name:50s} | {size:>10} | {precision:>9} | {row['us']:9.1f} | {row['tflops']:8.2f} | {tbps}")
            del cases
    if args.out:
        result = {"config": vars(args), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
        with open(args.out, "w") as f:
            f.write(json.dumps(result | {"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
