"""Run a command and say how it ended: its exit status, or the signal that killed it (bash's $? is 143 both for
`exit 143` and for death by SIGTERM), and what the command did with SIGTERM when one came.

    python3 benchmarks/how_it_ended.py COMMAND...

For gpu_check.sh's stacked sweep under `timeout`, which sends SIGTERM to its whole process group: this process
reads the command's /proc/PID/status every half second (SigCgt: whether a handler for SIGTERM is installed;
SigIgn, SigBlk), notes when a signal comes and what the last reading before it said, waits for the command,
and prints one line. On 2026-11-30 an H200 sweep was gone within a
second of its SIGTERM without its handler's line: this says, next time, whether the handler was there.
Exit status: the command's (128 + N when signal N killed it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def signal_masks(pid: int) -> dict[str, bool]:
    """Whether SIGTERM is caught, ignored and blocked in the live process `pid` (its /proc status); empty when it
    has ended (a zombie's masks are empty)."""
    try:
        lines = open(f"/proc/{pid}/status").read().splitlines()
    except OSError:
        return {}
    bit = 1 << (signal.SIGTERM - 1)
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    if fields.get("State", "").strip().startswith(("Z", "X")):
        return {}
    return {
        name: bool(int(fields[name].strip(), 16) & bit) for name in ("SigCgt", "SigIgn", "SigBlk") if name in fields
    }


def main(command: list[str]) -> int:
    start = time.monotonic()
    proc = subprocess.Popen(command)
    seen: list[str] = []
    last: dict = {}  # the last reading of the command's masks, and when

    def note(signum, frame) -> None:  # a Python handler, not SIG_IGN: the command does not inherit it
        masks, at = last.get("masks", {}), last.get("t", 0.0)
        shown = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in masks.items()) or "not read"
        now = time.monotonic() - start
        seen.append(
            f"{signal.Signals(signum).name} at t={now:.1f} s (command's SIGTERM {now - at:.1f} s before: {shown})"
        )

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, note)
    while True:
        masks = signal_masks(proc.pid)
        if masks:
            last.update(masks=masks, t=time.monotonic() - start)
        try:
            code = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            continue
    ended = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    print(
        f"how_it_ended: {ended} at t={time.monotonic() - start:.1f} s; signals to this wrapper: "
        f"{'; '.join(seen) or 'none'}",
        flush=True,
    )
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__ if len(sys.argv) > 1 else "usage: how_it_ended.py COMMAND...", file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    sys.exit(main(sys.argv[1:]))
