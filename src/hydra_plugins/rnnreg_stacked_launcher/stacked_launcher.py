"""Hydra finds launchers only in the hydra_plugins namespace: this is rnnreg.stacked_launcher's launcher
under that name (`hydra/launcher=stacked`). Hydra imports every plugin module at start-up, so this one
imports nothing heavy until a sweep is launched."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class StackedLauncher(Launcher):
    def __init__(  # the values of conf/hydra/launcher/stacked.yaml, which owns their defaults
        self,
        *,
        max_members: int,
        resume: bool,
        program: str,
        pad_hidden_to: int | str,
        stop_after_windows: int | None,
    ) -> None:
        super().__init__()
        self.max_members, self.resume, self.program = max_members, resume, program
        self.pad_hidden_to = pad_hidden_to
        self.stop_after_windows = stop_after_windows
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.launched_groups = 0  # group numbers continue over the sweeper's batches
        self.sweep_record: bytes | None = None  # a resumed sweep's multirun.yaml before this command's replaced it

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        if self.resume:  # (the sweeper writes the command's multirun.yaml after this, before it launches)
            from pathlib import Path

            record = Path(str(config.hydra.sweep.dir), "multirun.yaml")
            self.sweep_record = record.read_bytes() if record.is_file() else None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from rnnreg.stacked_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
