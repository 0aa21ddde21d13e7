"""How a stacked group stops on a signal: SIGTERM, Ctrl-C (and under SLURM its warning, SIGUSR1) ask the group to
stop where its state can be written exactly (before its first window when the signal comes as it starts, after the
window under way, after the epoch's validation, or at once in the final test, which runs again when it goes on); a
second Ctrl-C aborts at once. The stopped group's files are the group trainer's (rnnreg.stacked_train); this module
says when it stops, and the command that goes on."""

from __future__ import annotations

import signal
import threading

from lightning.fabric.plugins.environments import SLURMEnvironment

# where a signal stops the group, by what it is doing when the signal comes
WHEN = {
    "start": "before its first window",
    "training": "after this window",
    "validation": "after this epoch's validation",
    "test": "now (the final test runs again when it goes on)",
}


class Stopped(Exception):
    """A signal stopped the group's final test."""


class StopRequest:
    """The signal that asked the group to stop (None: none yet) and what the group is doing (`stage`: a key of
    WHEN). A signal handler only records it; the group's loop stops at its next safe point."""

    def __init__(self):
        self.signal: int | None = None
        self.stage = "training"

    def install(self) -> dict:
        """Handle SIGTERM and SIGINT (and SLURM's SIGUSR1 under SLURM); returns the handlers they replace. Only the
        main thread can install handlers: elsewhere (a test's thread) nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum, frame) -> None:
            self.signal = signum
            signal.signal(signal.SIGINT, handlers[signal.SIGINT])  # a second Ctrl-C interrupts at once
            print(f"\n{signal.Signals(signum).name}: stopping the stacked group {WHEN[self.stage]}", flush=True)

        stops = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR1] if SLURMEnvironment.detect() else [])
        handlers = {s: signal.getsignal(s) for s in stops}  # known before a signal can reach `stop`
        for s in stops:
            signal.signal(s, stop)
        return handlers

    @staticmethod
    def restore(handlers: dict) -> None:
        for s, h in handlers.items():
            signal.signal(s, h)

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
