"""Numbers as the console says them: counts and durations in words (no torch, no Lightning: the stacked
launcher prints its groups with these before anything heavy is imported)."""

from __future__ import annotations

import platform


def counted(n: int, noun: str) -> str:
    """1 thread, 2 threads; 3 jobs, 1 group."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_duration(seconds: float) -> str:
    """3 h 05 min, 12 min 30 s, 45 s."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def device_name(device) -> str:
    """A torch.device as a run's log names it: the GPU's model, or the CPU's model and thread count (the thread
    count changes how a float32 sum rounds; the CPU's model, most likely through the kernels MKL picks for it,
    changed a run's digits too: docs/measurements.md)."""
    import torch  # called where torch is loaded already

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({cpu_model()}, {counted(torch.get_num_threads(), 'thread')})"
    return str(device)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's, on Linux), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
