"""Numbers as the console says them: counts and durations in words (no torch, no Lightning: the stacked
launcher prints its groups with these before anything heavy is imported)."""

from __future__ import annotations


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
