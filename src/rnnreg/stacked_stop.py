"""How a stacked group stops on a signal: SIGTERM, Ctrl-C (and under SLURM its warning, SIGUSR1) ask the group to
stop where its state can be written exactly (before its first window when the signal comes as it starts, after the
window under way, after the epoch's validation, or at once in the final test, which runs again when it goes on); a
second Ctrl-C aborts at once. While the group is built (its corpus read, its model and program made, its resume file
read) a signal stops it at once, as a single run's outside Lightning's loops (rnnreg.preemption); one that comes
while the launcher writes its jobs' folders, or between two groups, stops the sweep as the next group starts. The
stopped group's files are the group trainer's (rnnreg.stacked_train); this module says when it stops, and the
command that goes on. (Plain Python: the launcher handles signals before it imports torch.)"""

from __future__ import annotations

import signal
import threading

# where a signal stops the group, by what it is doing when the signal comes
WHEN = {
    "launch": "before it starts",
    "build": "now, as it is built (nothing it trained is lost)",
    "start": "before its first window",
    "training": "after this window",
    "validation": "after this epoch's validation",
    "test": "now (the final test runs again when it goes on)",
}


class Stopped(Exception):
    """A signal stopped the group's final test."""


class StoppedBuilding(BaseException):
    """A signal while the group is built: raised where the group is (a BaseException, which no library's `except
    Exception` on the way takes for its own error)."""


class StopRequest:
    """The signal that asked the group to stop (None: none yet) and what the group is doing (`stage`: a key of
    WHEN). A signal handler only records it and the group's loop stops at its next safe point; while the group is
    built (stage "build") the first one also raises StoppedBuilding. `installed`: whether its handlers are in (the
    launcher's, for its every group; else the group's own)."""

    def __init__(self, stage: str = "training"):
        self.signal: int | None = None
        self.stage = stage
        self.installed = False

    def install(self) -> dict:
        """Handle SIGTERM and SIGINT (and SLURM's SIGUSR1 under SLURM); returns the handlers they replace. Only the
        main thread can install handlers: elsewhere (a test's thread) nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum, frame) -> None:
            first = self.signal is None
            self.signal = signum
            signal.signal(signal.SIGINT, handlers[signal.SIGINT])  # a second Ctrl-C interrupts at once
            print(f"\n{signal.Signals(signum).name}: stopping the stacked group {WHEN[self.stage]}", flush=True)
            if first and self.stage == "build":
                raise StoppedBuilding()

        stops = [signal.SIGTERM, signal.SIGINT]
        handlers = {s: signal.getsignal(s) for s in stops}  # known before a signal can reach `stop`
        for s in stops:
            signal.signal(s, stop)
        # (Lightning's test of SLURM imports torch: seconds, with SIGTERM and Ctrl-C already handled)
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():
            handlers[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, stop)
        self.installed = True
        return handlers

    def restore(self, handlers: dict) -> None:
        for s, h in handlers.items():
            signal.signal(s, h)
        self.installed = False

    def windows(self, windows) -> StopOnSignal:
        """`windows` that raise Stopped at the first one read after a signal (the final test's)."""
        return StopOnSignal(windows, self)


class StopOnSignal:
    """A split's windows that stop (Stopped) at the first window read after the group's signal handler ran."""

    def __init__(self, windows, request: StopRequest):
        self.windows, self.request = windows, request

    def __getitem__(self, i: int):
        if self.request.signal is not None:
            raise Stopped()
        return self.windows[i]
