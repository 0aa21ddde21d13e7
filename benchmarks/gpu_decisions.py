"""What benchmarks/gpu_check.sh decides from its checks and timings before a stacked sweep on a lent GPU: one
override's value each, printed for the script to pass on. Their inputs are bench_stacked.py's JSON files.

  python benchmarks/gpu_decisions.py cuda_graph CHECK.json
      speed.cuda_graph: true when the stacked step's CUDA graph was captured and equals the eager step
  python benchmarks/gpu_decisions.py triton_cell CHECK.json [K]
      speed.triton_cell: true when the Triton cell passed its check and ran >= 5 % faster at K members (15)
  python benchmarks/gpu_decisions.py triton_update CHECK.json [K]
      speed.triton_update: true when the update as one Triton kernel a parameter was exact to the bit (against the
      torch ops' update, and graphed against eager) and ran >= 5 % faster than the torch ops' at K members (15).
      At K = 15 medium on an H200 it ran 1.15x (2026-12-04, exact)
  python benchmarks/gpu_decisions.py pad_hidden_to CHECK.json
      hydra.launcher.pad_hidden_to: auto (a multiple of 8 on a GPU) when the padded step passed its check against
      the unpadded one (at a width that padding changes); 1 otherwise. Padded, a K = 15 medium window ran 1.48x
      faster on an H200 (2026-12-04), so a check that passed is enough

A file that is missing or unreadable, or lacks what is asked (a check that crashed or was killed), gives the value that
runs what was checked: false, false, false, 1. A device session's minutes must not go to a setting that nothing
showed to be right.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRITON_SPEEDUP = 1.05  # a Triton kernel must make the window this much faster to be used (its check passed)


def read(path: str | Path) -> dict:
    """A bench_stacked.py JSON file, or {} when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_of(path: str | Path) -> dict:
    return read(path).get("check") or {}


def cuda_graph(check_path: str | Path) -> bool:
    check = check_of(check_path)
    return check.get("captured") is True and check.get("same") is True


def pays(data: dict, speedup: str, members: int) -> bool:
    """A timing row at `members` members has `speedup` (one kind's words/s over another's) >= TRITON_SPEEDUP."""
    rows = [row for row in data.get("rows") or [] if row.get("members") == members]
    return any(row.get(speedup, 0) >= TRITON_SPEEDUP for row in rows)


def triton_cell(check_path: str | Path, members: int = 15) -> bool:
    data = read(check_path)
    passed = ((data.get("check") or {}).get("triton") or {}).get("same") is True
    return passed and pays(data, "triton_cell_speedup", members)


def triton_update(check_path: str | Path, members: int = 15) -> bool:
    data = read(check_path)
    passed = (data.get("triton_update_check") or {}).get("same") is True
    return passed and pays(data, "triton_update_speedup", members)


def pad_hidden_to(check_path: str | Path) -> str:
    padding = check_of(check_path).get("padding") or {}
    checked = padding.get("same") is True and padding.get("padded") is True  # (a check with nothing padded: no check)
    return "auto" if checked else "1"


def main(argv: list[str]) -> str:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        raise SystemExit(0)
    if len(argv) not in (2, 3) or not (len(argv) == 2 or argv[2].isdigit() and int(argv[2]) > 0):
        usage = "python benchmarks/gpu_decisions.py DECISION CHECK.json [K]"
        print(f"error: {' '.join(argv) or 'no arguments'}: give {usage} (--help: the decisions)", file=sys.stderr)
        raise SystemExit(2)
    what, path, *rest = argv
    if what == "cuda_graph":
        return str(cuda_graph(path)).lower()
    if what in ("triton_cell", "triton_update"):
        decide = triton_cell if what == "triton_cell" else triton_update
        return str(decide(path, int(rest[0]) if rest else 15)).lower()
    if what == "pad_hidden_to":
        return pad_hidden_to(path)
    raise SystemExit(f"unknown decision {what}: cuda_graph, triton_cell, triton_update or pad_hidden_to")


if __name__ == "__main__":
    print(main(sys.argv[1:]))
