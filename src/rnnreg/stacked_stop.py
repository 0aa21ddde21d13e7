"""How a stacked group stops on a signal: SIGTERM, Ctrl-C (and under SLURM its warning, SIGUSR1) ask the group to
stop where its state can be written exactly (after the window under way, after the epoch's validation, or at once
in the final test, which runs again when it goes on); a second Ctrl-C aborts at once. The stopped group's files are
the group trainer's (rnnreg.stacked_train); this module says when it stops, and the command that goes on."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from rnnreg.config_search import recorded_command

# where a signal stops the group, by what it is doing when the signal comes
WHEN = {
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


def go_on_command(sweep: Path) -> str:
    """The sweep's own command (its multirun.yaml) with hydra.launcher.resume=true in its folder."""
    try:
        hydra = OmegaConf.load(sweep / "multirun.yaml").hydra
        _, *flags = recorded_command(hydra)  # (a hydra.searchpath among them is one of the sweep's hydra overrides)
        recorded = OmegaConf.to_container(hydra.overrides, resolve=False)  # as given: `run_${seed}` is each job's
        given = list(dict.fromkeys([*flags, *map(str, [*recorded["hydra"], *recorded["task"]])]))
    except Exception:  # no readable multirun.yaml (a group trained outside Hydra): the command's shape
        given = ["...", "hydra/launcher=stacked"]
    # the sweep's own folder, not a new dated one; and no test-only stop
    dropped = ("hydra.mode=", "hydra.sweep.dir=", "hydra.launcher.resume=", "hydra.launcher.stop_after_windows=")
    kept = [o for o in given if not o.startswith(dropped)]
    return shlex.join(["rnnreg-train", "-m", *kept, "hydra.launcher.resume=true", f"hydra.sweep.dir={sweep}"])
