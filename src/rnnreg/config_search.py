"""Where a command line's configs come from, as Hydra's main looks for them: conf/, then a `--config-dir` folder,
then the command line's `hydra.searchpath` entries (file:// folders or pkg:// packages), so that a user's own
experiment files (`--config-dir ~/my_configs experiment=my_exp`) are composed and checked before Hydra runs as ours
are (rnnreg.command_line).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.resources
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError

if TYPE_CHECKING:
    from importlib.abc import Traversable

SEARCHPATH = "hydra.searchpath"


class HydraCommandLine(NamedTuple):
    overrides: tuple[str, ...]  # the `key=value` words
    config_dir: str | None  # --config-dir's folder (absolute, a folder)
    config_name: str | None  # --config-name: another primary config (in conf/ or the --config-dir)
    unchecked: bool  # --config-path (another conf/) or --experimental-rerun: its run checks its config
    flags: frozenset[str]  # the flags given, as long flags (--multirun, --cfg, --package, ...)
    answered: bool  # Hydra answers it itself without running the task: help, --cfg, --info, shell completion
    in_order: tuple[str, ...] | None  # the words as Hydra's parser takes them, where it refuses these: every flag
    # first, then the key=value words (argparse takes them in one run); None: in order
    config_path: str | None = None  # --config-path, as given

    @property
    def multirun(self) -> bool:
        return "--multirun" in self.flags

    @property
    def modes(self) -> list[str]:
        """Hydra's modes asked for: it does one at a time."""
        return sorted(self.flags & {"--run", "--multirun", "--cfg", "--info", "--shell-completion"})


def read_command_line(argv: list[str]) -> HydraCommandLine | None:
    """The command line as Hydra's main reads it, with Hydra's own argument parser (`--config-dir DIR` and
    `--config-dir=DIR` alike, and a flag's unique abbreviation, `--multi`, as argparse takes it); None where that
    parser refuses it or answers it while parsing (--version): Hydra's main then does so itself."""
    return _read_command_line(tuple(argv), os.getcwd())


class ParserRefusal(Exception):
    """Hydra's argument parser (argparse) refusing a command line: its reason, without its usage."""


def _hydra_parser() -> Any:
    """Hydra's own argument parser, raising ParserRefusal where argparse would print its usage and exit 2."""
    from hydra._internal.utils import get_args_parser

    def refuse(message: str) -> None:
        raise ParserRefusal(message)

    parser = get_args_parser()
    parser.error = refuse
    return parser


def parser_refusal(argv: list[str]) -> str | None:
    """Why Hydra's parser refuses `argv` (argparse's reason: an unknown flag, a bad choice, a missing value), None
    where it takes it (or answers it while parsing: --version)."""
    parser = _hydra_parser()
    try:  # (--version prints itself)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(argv)
            except ParserRefusal:  # key=value words on both sides of a flag: read_command_line takes them
                parser.parse_intermixed_args(argv)
    except ParserRefusal as refusal:
        return str(refusal)
    except SystemExit:
        return None
    return None


@functools.lru_cache(maxsize=8)  # a start reads its command line in several checks
def _read_command_line(argv: tuple[str, ...], cwd: str) -> HydraCommandLine | None:
    parser, in_order = _hydra_parser(), None
    try:  # (--version prints itself: Hydra's main does so again, later)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                args = parser.parse_args(argv)
            except ParserRefusal:  # key=value words on both sides of a flag (`experiment=smoke -m seed=1,2`), say
                args = parser.parse_intermixed_args(argv)
                words = iter(args.overrides)
                word = next(words, None)
                flags = []
                for a in argv:
                    if a == word:
                        word = next(words, None)
                    else:
                        flags.append(a)
                in_order = (*flags, *args.overrides)
    except (SystemExit, ParserRefusal):
        return None
    config_dir = None
    if args.config_dir is not None:
        config_dir = os.path.normpath(os.path.join(cwd, args.config_dir))  # as Hydra takes it (no ~: a shell's)
        if not os.path.isdir(config_dir):  # Hydra's own answer: a SearchPathException, exit 1
            raise ConfigError(
                f"--config-dir {args.config_dir}: no such folder: give the folder that holds your config groups "
                f"(such as experiment/<name>.yaml)"
            )
    unchecked = bool(args.config_path or args.experimental_rerun)
    flags = frozenset(f"--{k}".replace("_", "-") for k, v in vars(args).items() if k != "overrides" and v)
    answered = bool(args.help or args.hydra_help or args.cfg or args.info or args.shell_completion)
    overrides = tuple(args.overrides)
    return HydraCommandLine(
        overrides, config_dir, args.config_name, unchecked, flags, answered, in_order, args.config_path
    )


@contextlib.contextmanager
def hydra_as_main(config_dir: str | None, job_name: str = "app", conf_dir: str = CONF_DIR) -> Iterator[None]:
    """Hydra initialised for compose() with the search path our console scripts' main has: conf/, and a
    --config-dir folder where Hydra's main puts it (after conf/ and the plugins', before hydra.searchpath's
    entries; a primary config is found there too, which hydra.searchpath's entries cannot hold). Hydra's global
    state is restored after."""
    from hydra import initialize_config_dir

    with initialize_config_dir(conf_dir, version_base="1.3", job_name=job_name):
        if config_dir is not None:
            from hydra._internal.hydra import Hydra
            from hydra.core.config_search_path import SearchPathQuery
            from hydra.core.global_hydra import GlobalHydra

            search_path = copy.deepcopy(GlobalHydra.instance().config_loader().get_search_path())
            search_path.prepend("command-line", f"file://{config_dir}", anchor=SearchPathQuery(provider="schema"))
            GlobalHydra.instance().clear()  # (initialize_config_dir's exit restores the state from before it)
            Hydra.create_main_hydra2(task_name=job_name, config_search_path=search_path)
        yield


def searchpath_entries(line: str) -> list[str]:
    """A `hydra.searchpath=[...]` override's entries (not a list of strings: none, Hydra says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(line).value()
    except Exception:
        return []
    return list(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else []


def entry_scheme(entry: str) -> tuple[str, str]:
    """A hydra.searchpath entry's scheme and place: `pkg://a.b` -> ("pkg", "a.b"); a bare folder is file://."""
    scheme, _, where = entry.partition("://") if "://" in entry else ("file", "", entry)
    return scheme, where


def command_config_folders(words: list[str]) -> list[str]:
    """The folders a printed command's configs come from beside conf/: its `--config-dir` and hydra.searchpath's
    file:// entries (pkg:// entries are installed packages, whose code runs anyway)."""
    folders = []
    for i, word in enumerate(words):
        if word == "--config-dir" and i + 1 < len(words):
            folders.append(words[i + 1])
        elif word.startswith("--config-dir="):
            folders.append(word.removeprefix("--config-dir="))
        elif word.lstrip("+").startswith(f"{SEARCHPATH}="):  # (+ and ++ set it too)
            for entry in searchpath_entries(word):
                scheme, where = entry_scheme(entry)
                folders += [where] if scheme == "file" else []
    return folders


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

    def holds(self, group: str, option: str) -> bool:
        """Whether a folder holds <group>/<option>.yaml (an option in a subfolder of the group too: `sub/foo`)."""
        return any(root.joinpath(group, f"{option}.yaml").is_file() for root in self.found)

    def where(self, group: str) -> str:
        """The folders looked in for a group, and the search path entries not found, for a refusal."""
        missing = f"; not found: {', '.join(self.missing)}" if self.missing else ""
        return f"files in {', '.join(str(f) for f in self.group_folders(group))}{missing}"


def config_roots(
    overrides: list[Any], config_dir: str | None = None, conf_dir: str = CONF_DIR, config_name: str = "train"
) -> ConfigRoots:
    """conf/, a --config-dir, then the entries of the first hydra.searchpath override (`overrides` parsed), or where
    the command line gives none, the primary config's own hydra.searchpath: the folders Hydra looks in, in its order."""
    found: list[Traversable] = [Path(conf_dir), *([Path(config_dir)] if config_dir else [])]
    missing: list[str] = []
    line = next((o.input_line for o in overrides if o.get_key_element() == SEARCHPATH), None)
    entries = searchpath_entries(line) if line else _primary_searchpath(config_name, found)
    for entry in entries:
        scheme, where = entry_scheme(entry)
        if scheme not in ("file", "pkg"):  # structured:// (Hydra's ConfigStore): no folder to look in
            continue
        root = Path(where) if scheme == "file" else _package_folder(where.replace("/", ".").rstrip("."))
        if root is not None and root.is_dir():
            found.append(root)
        else:
            missing.append(entry)
    return ConfigRoots(found, missing)


def _primary_searchpath(config_name: str, roots: list[Traversable]) -> list[str]:
    """The hydra.searchpath a primary config sets itself (a user's --config-name file), read as YAML; [] without."""
    import yaml

    for root in roots:  # the first that holds it, as Hydra finds it
        path = root.joinpath(f"{config_name}.yaml")
        if path.is_file():
            try:
                entries = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("searchpath") or []
            except (yaml.YAMLError, AttributeError):  # Hydra says why when it composes
                return []
            return [e for e in entries if isinstance(e, str)] if isinstance(entries, list) else []
    return []


def _package_folder(package: str) -> Traversable | None:
    """A pkg:// entry's folder (importing the package, as Hydra does); None where it is not an importable package."""
    try:
        return importlib.resources.files(package)
    except (ImportError, TypeError, ValueError):  # TypeError: a module, not a package
        return None


# our console scripts by the config each runs (a run's hydra.job.config_name): those whose runs keep a record
SCRIPTS = {"train": "rnnreg-train", "eval": "rnnreg-eval"}
SCRIPT_CONFIGS = (*SCRIPTS, "generate", "report")  # rnnreg-<name>'s primary config, conf/<name>.yaml: each script's


def borrowed_experiment_name(choices: Any, job: Any, roots: ConfigRoots) -> str | None:
    """A warning for an experiment option that keeps another experiment's experiment_name, inherited from the
    experiment it builds on (a user's file without its own): its runs would go to that experiment's folders, where
    `ckpt_path=last` of that experiment finds them. None otherwise (each of ours sets its own)."""
    choice, name = choices.get("experiment"), job.get("experiment_name")
    if not isinstance(choice, str) or not isinstance(name, str) or choice == name:
        return None
    if name not in roots.options("experiment"):  # a name of its own, not another experiment's
        return None
    return (
        f"experiment={choice} keeps experiment_name={name} from the experiment it builds on: its runs go to {name}'s "
        f"folders, where ckpt_path=last of experiment={name} finds them; set experiment_name: {choice} in its file"
    )


def shadowed_config(
    choices: Any, primary: str, roots: ConfigRoots, config_dir: str | None, conf_dir: str = CONF_DIR
) -> str | None:
    """A refusal where a config the command selects (an option of a group, given or a default, or the primary config)
    is a file of the user's folders with the name of one of conf/'s: Hydra's search path has conf/ first, so it reads
    ours and never the user's (before: the user's edited copy was ignored with no word). A file of that name the
    command does not select is left alone. None where no selected config is shadowed."""
    ours = Path(conf_dir)
    theirs = [root for root in roots.found if not _same_folder(root, ours)]
    primary_folders = [Path(config_dir)] if config_dir and not _same_folder(Path(config_dir), ours) else []
    selected = [(None, primary)]
    for group, option in (choices or {}).items():
        options = option if isinstance(option, (list, tuple)) or _is_list_config(option) else [option]
        selected += [(str(group), o) for o in options if isinstance(o, str)]
    for group, option in selected:
        relative = f"{group}/{option}.yaml" if group else f"{option}.yaml"
        if not ours.joinpath(relative).is_file():
            continue
        folders = theirs if group else primary_folders  # (a primary config is looked for in a --config-dir only)
        if (root := next((r for r in folders if r.joinpath(relative).is_file()), None)) is None:
            continue
        head, _, name = option.rpartition("/")
        renamed = f"{head}/my_{name}" if head else f"my_{name}"
        select = f"{group}={renamed}" if group else f"--config-name {renamed}"
        given = f"{group}={option}" if group else f"the primary config {option}"
        renamed_file = f"{group}/{renamed}.yaml" if group else f"{renamed}.yaml"
        return (
            f"{given}: {root.joinpath(relative)} has the name of rnnreg's own {relative}, which Hydra reads instead "
            f"(its search path has rnnreg's conf/ first), so yours would be ignored: give yours another name "
            f"({renamed_file}) and select it with {select}"
        )
    return None


def _is_list_config(value: Any) -> bool:
    from omegaconf import ListConfig

    return isinstance(value, ListConfig)


def _same_folder(a: Traversable, b: Path) -> bool:
    try:
        return Path(str(a)).resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False
