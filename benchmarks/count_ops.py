"""How many device operations one stacked training window issues: a GPU's kernel launches, counted on a CPU.

In a CUDA graph a window costs roughly its GEMMs plus a few microseconds per small elementwise kernel, so
the count says how far a stacked window is launch-bound before a GPU is at hand. The torch profiler records
one window of rnnreg.stacked_step.StackedStep (the batched program, eager on the CPU); the lowest aten op
that does work counts (not a view, not a cast of a Python scalar, which CUDA passes as a kernel argument),
and every GEMM.
Without dropout the count depends on neither K nor the sizes, only on bptt and the layers; each member
with dropout adds its own mask draws. --triton-cell: with speed.triton_cell=true, each Triton kernel launch
counted as one op (triton::cell_forward, triton::cell_backward; TRITON_INTERPRET=1 runs them here).

    python benchmarks/count_ops.py --bptt 35 --layers 2 [--triton-cell] [--out ops.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench_stacked import ablation_members
from rnnreg.stacked import MemberSpec, StackedLanguageModel
from rnnreg.stacked_step import StackedStep

# ops that make a view or touch metadata only: no kernel on a GPU
NO_KERNEL = {
    "aten::view", "aten::as_strided", "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze",
    "aten::select", "aten::slice", "aten::expand", "aten::permute", "aten::reshape", "aten::_reshape_alias",
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty", "aten::new_empty_strided",
    "aten::detach", "aten::alias", "aten::unbind", "aten::lift_fresh", "aten::_unsafe_view", "aten::resolve_conj",
    "aten::resolve_neg", "aten::result_type", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense",
    "aten::contiguous", "aten::narrow", "aten::split", "aten::chunk", "aten::split_with_sizes", "aten::unflatten",
    "aten::flatten", "aten::expand_as", "aten::view_as",
}  # fmt: skip

GEMMS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"}

PLACEMENTS = {
    "none": [MemberSpec(seed=k, init_scale=0.1) for k in range(3)],
    "non_recurrent": [
        MemberSpec(seed=k, init_scale=0.1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5) for k in range(3)
    ],
    "five placements": [
        MemberSpec(seed=1, init_scale=0.1),
        MemberSpec(seed=2, init_scale=0.1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5),
        MemberSpec(seed=3, init_scale=0.1, dropout_recurrent=0.5),
        MemberSpec(
            seed=4, init_scale=0.1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5, dropout_recurrent=0.5
        ),
        MemberSpec(seed=5, init_scale=0.1, dropout_input=0.3, dropout_recurrent=0.3, variational=True),
    ],
    "the paper-scale ablation (15)": ablation_members("ablation_placement_full"),
}


@contextlib.contextmanager
def marking_triton_launches():
    """Every launch of rnnreg.triton_cell's kernels as a profiler range named triton::<function>: one kernel on
    a GPU, whatever torch ops Triton's interpreter runs inside it here."""
    import rnnreg.triton_cell as cell

    originals = {name: getattr(cell, name) for name in ("cell_forward", "cell_backward")}

    def counted(name):
        def launch(*args, **kwargs):
            with record_function(f"triton::{name}"):
                return originals[name](*args, **kwargs)

        return launch

    for name in originals:
        setattr(cell, name, counted(name))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(cell, name, function)


def count(members: list[MemberSpec], bptt: int, layers: int, triton_cell: bool = False) -> collections.Counter:
    vocab, batch = 50, 4  # the count does not depend on the sizes
    model = StackedLanguageModel(vocab, 8, layers, members)
    model.triton_cell = triton_cell
    clip = torch.full((len(members),), 5.0)
    step = StackedStep(model, (bptt, batch), clip, 0.0, torch.device("cpu"), graph=False)  # 0.0: as group_step
    x, y = torch.randint(vocab, (bptt, batch)), torch.randint(vocab, (bptt, batch))
    step(x, y, [1.0] * len(members))  # the first window allocates; count the second
    marking = marking_triton_launches() if triton_cell else contextlib.nullcontext()
    with marking, profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(x, y, [1.0] * len(members))

    def works(event) -> bool:  # an aten op that is not a view and not a Python scalar's cast
        shapes = [s for s in event.input_shapes if isinstance(s, list)]
        scalar = shapes and all(len(s) == 0 for s in shapes)
        return event.name.startswith("aten::") and event.name not in NO_KERNEL and not scalar

    def descendants(event):
        for child in event.cpu_children:
            yield child
            yield from descendants(child)

    ops = collections.Counter()
    inside_triton = set()  # the interpreter's own ops
    for event in prof.events():
        if event.name.startswith("triton::"):
            ops[event.name] += 1
            inside_triton.update(id(d) for d in descendants(event))
    for event in prof.events():
        # the lowest working op is the kernel (a GEMM is one even where it first copies its addend)
        if id(event) in inside_triton:
            continue
        if works(event) and (event.name in GEMMS or not any(works(d) for d in descendants(event))):
            ops[event.name] += 1
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--triton-cell", action="store_true", help="speed.triton_cell=true (sets TRITON_INTERPRET=1)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.triton_cell:  # before rnnreg.triton_cell imports Triton
        os.environ.setdefault("TRITON_INTERPRET", "1")
    result = {"bptt": args.bptt, "layers": args.layers, "torch": torch.__version__, "windows": {}}
    result["triton_cell"] = args.triton_cell
    for name, members in PLACEMENTS.items():
        ops = count(members, args.bptt, args.layers, args.triton_cell)
        total = sum(ops.values())
        result["windows"][name] = {"ops": total, "per_step_and_layer": total / (args.bptt * args.layers),
                                   "by_op": dict(ops.most_common())}  # fmt: skip
        print(f"{name}: {total} device ops per window ({total / (args.bptt * args.layers):.1f} per step and layer)")
        print("   ", ", ".join(f"{op[6:]} {n}" for op, n in ops.most_common(8)))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
