"""Where a command line's configs come from, as Hydra's main looks for them: conf/, then a `--config-dir` folder,
then the command line's `hydra.searchpath` entries (file:// folders or pkg:// packages), so that a user's own
experiment files (`--config-dir ~/my_configs experiment=my_exp`) are composed and checked before Hydra runs as ours
are (rnnreg.command_line).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError

if TYPE_CHECKING:
    from importlib.abc import Traversable

SEARCHPATH = "hydra.searchpath"


class HydraCommandLine(NamedTuple):
    overrides: list[str]  # `key=value` words, a --config-dir folded into hydra.searchpath (as_composed)
    other_config: bool  # --config-path, --config-name or --experimental-rerun: another primary config


def read_command_line(argv: list[str]) -> HydraCommandLine | None:
    """The command line as Hydra's main reads it (with Hydra's own argument parser: `--config-dir DIR` and
    `--config-dir=DIR` alike); None where that parser refuses it (Hydra then says why)."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # Hydra's parser prints its refusal itself, later
            args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None
    other_config = bool(args.config_path or args.config_name or args.experimental_rerun)
    return HydraCommandLine(as_composed(list(args.overrides), args.config_dir), other_config)


def as_composed(overrides: list[str], config_dir: str | None) -> list[str]:
    """`overrides` with a --config-dir folder as the first entry of hydra.searchpath, which is where Hydra's search
    order puts it (after conf/ and before hydra.searchpath's own entries), so that a composition with them finds
    what Hydra's main finds."""
    if config_dir is None:
        return overrides
    folder = os.path.abspath(config_dir)  # as Hydra takes it (no ~: a shell expands it in a word of its own)
    if not os.path.isdir(folder):  # Hydra's own answer: a SearchPathException, exit 1
        raise ConfigError(
            f"--config-dir {config_dir}: no such folder: give the folder that holds your config groups "
            f"(such as experiment/<name>.yaml)"
        )
    at = next((i for i, line in enumerate(overrides) if line.partition("=")[0] == SEARCHPATH), None)
    entries = [f"file://{folder}"] + (searchpath_entries(overrides[at]) if at is not None else [])
    line = f"{SEARCHPATH}=[{','.join(_quoted(e) for e in entries)}]"
    return [line, *overrides] if at is None else [*overrides[:at], line, *overrides[at + 1 :]]


def searchpath_entries(line: str) -> list[str]:
    """A `hydra.searchpath=[...]` override's entries (not a list of strings: none, Hydra says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(line).value()
    except Exception:
        return []
    return list(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else []


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"


class ConfigRoots(NamedTuple):
    """The folders config groups are looked up in, in Hydra's order, and the search path entries not found."""

    found: list[Traversable]
    missing: list[str]

    def group_folders(self, group: str) -> list[Traversable]:
        return [folder for root in self.found if (folder := root.joinpath(group)).is_dir()]

    def is_group(self, group: str) -> bool:
        return bool(self.group_folders(group))

    def options(self, group: str) -> list[str]:
        """A group's options: its YAML files' names in every folder (_x: a shared part, not an option)."""
        files = [f for folder in self.group_folders(group) for f in folder.iterdir()]
        names = {f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml") and f.is_file()}
        return sorted(name for name in names if not name.startswith("_"))

    def where(self, group: str) -> str:
        """The folders looked in for a group, and the search path entries not found, for a refusal."""
        missing = f"; not found: {', '.join(self.missing)}" if self.missing else ""
        return f"files in {', '.join(str(f) for f in self.group_folders(group))}{missing}"


def config_roots(overrides: list[Any], conf_dir: str = CONF_DIR) -> ConfigRoots:
    """conf/, then the entries of the first hydra.searchpath override (`overrides` parsed), as Hydra reads them."""
    found: list[Traversable] = [Path(conf_dir)]
    missing: list[str] = []
    line = next((o.input_line for o in overrides if o.get_key_element() == SEARCHPATH), None)
    for entry in searchpath_entries(line) if line else []:
        scheme, _, where = entry.partition("://") if "://" in entry else ("file", "", entry)
        if scheme not in ("file", "pkg"):  # structured:// (Hydra's ConfigStore): no folder to look in
            continue
        root = Path(where) if scheme == "file" else _package_folder(where.replace("/", ".").rstrip("."))
        if root is not None and root.is_dir():
            found.append(root)
        else:
            missing.append(entry)
    return ConfigRoots(found, missing)


def _package_folder(package: str) -> Traversable | None:
    """A pkg:// entry's folder (importing the package, as Hydra does); None where it is not an importable package."""
    try:
        return importlib.resources.files(package)
    except (ImportError, TypeError, ValueError):  # TypeError: a module, not a package
        return None


def config_dir_given(hydra: Any) -> list[str]:
    """`["--config-dir", DIR]` where Hydra's record of a run or sweep (the hydra node of its .hydra/hydra.yaml or
    multirun.yaml) lists a folder its command line added with --config-dir (hydra.runtime.config_sources, provider
    command-line): a command that goes on with it needs the folder too. [] otherwise."""
    try:
        folders = [s["path"] for s in hydra["runtime"]["config_sources"] if s["provider"] == "command-line"]
    except (KeyError, TypeError):  # a record from elsewhere, cut short
        return []
    return ["--config-dir", str(folders[0])] if folders else []


def recorded_config_dir(run: Path) -> list[str]:
    """config_dir_given of a run's (or a job's) .hydra/hydra.yaml; [] where it cannot be read."""
    import yaml

    try:
        return config_dir_given(yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return []
