"""The commands that run again what a run's or a sweep's Hydra record ran (.hydra/hydra.yaml, multirun.yaml): its
script, the command-line flags Hydra does not keep among the task's overrides, and, for a stacked sweep, the command
that goes on with it (hydra.launcher.resume=true). The report prints them; a stopped stacked group says its own."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnreg.config_search import SCRIPTS, SEARCHPATH
from rnnreg.errors import DataError
from rnnreg.override_text import path_override
from rnnreg.record_yaml import read_yaml, section


def recorded_command(hydra: Any) -> list[str]:
    """The start of a command that runs again what Hydra's record of a run or sweep (the hydra node of its
    .hydra/hydra.yaml or multirun.yaml) ran: its script (by its config: rnnreg-eval for eval), and what it had on
    its command line that Hydra does not record among the task's overrides: `--config-dir DIR` (a folder in
    hydra.runtime.config_sources from the command line), `--config-name NAME` (a primary config of the user's),
    and a `hydra.searchpath=...` override."""
    config_name = _select(hydra, "job", "config_name")
    config_name = config_name if isinstance(config_name, str) else None  # (a record from elsewhere)
    command = [SCRIPTS.get(config_name, "rnnreg-train")]
    sources = _select(hydra, "runtime", "config_sources") or []
    folders = [s.get("path") for s in sources if isinstance(s, Mapping) and s.get("provider") == "command-line"]
    if folders:
        command += ["--config-dir", str(folders[0])]
    if config_name is not None and config_name not in SCRIPTS:
        command += ["--config-name", config_name]
    hydra_overrides = _select(hydra, "overrides", "hydra") or []
    return command + [str(o) for o in hydra_overrides if str(o).lstrip("+").startswith(f"{SEARCHPATH}=")][:1]


def recorded_run_command(run: Path) -> list[str]:
    """recorded_command of a run's (or a job's) .hydra/hydra.yaml; `rnnreg-train` alone where it cannot be read."""
    hydra_file = run / ".hydra" / "hydra.yaml"
    try:
        return recorded_command(section(read_yaml(hydra_file), hydra_file, "hydra"))
    except (DataError, TypeError):  # (TypeError: a record from elsewhere, a number where Hydra writes a list)
        return ["rnnreg-train"]


def go_on_command(sweep: Path) -> str:
    """The sweep's own command (its multirun.yaml) with hydra.launcher.resume=true in its folder."""
    record = sweep / "multirun.yaml"
    try:
        hydra = section(read_yaml(record), record, "hydra")
        _, *flags = recorded_command(hydra)  # (a hydra.searchpath among them is one of the sweep's hydra overrides)
        recorded = section(hydra, record, "overrides")  # as given: `run_${seed}` is each job's
        given = list(dict.fromkeys([*flags, *map(str, [*recorded["hydra"], *recorded["task"]])]))
    except Exception:  # no readable multirun.yaml (a group trained outside Hydra): the command's shape
        given = ["...", "hydra/launcher=stacked"]
    # the sweep's own folder, not a new dated one; and no test-only stop
    dropped = ("hydra.mode=", "hydra.sweep.dir=", "hydra.launcher.resume=", "hydra.launcher.stop_after_windows=")
    kept = [o for o in given if not o.startswith(dropped)]
    go_on = ["hydra.launcher.resume=true", path_override("hydra.sweep.dir", sweep)]
    return shlex.join(["rnnreg-train", "-m", *kept, *go_on])


def _select(node: Any, *keys: str) -> Any:
    """node[k1][k2]... of a YAML mapping or DictConfig; None where a key is missing or a value is no mapping."""
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node
