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


@functools.lru_cache(maxsize=4)
def own_configs(conf_dir: str = CONF_DIR) -> frozenset[str]:
    """conf/'s configs by the path Hydra gives them (experiment/paper_small, _model, train): read once."""
    ours = Path(conf_dir)
    return frozenset(f.relative_to(ours).with_suffix("").as_posix() for f in ours.rglob("*.yaml") if f.is_file())


def shadowing_files(roots: ConfigRoots, conf_dir: str = CONF_DIR) -> dict[str, Traversable]:
    """The files of the user's folders (a --config-dir, hydra.searchpath's) with the path of one of conf/'s, by that
    path (experiment/paper_small), the first folder's where several hold it: Hydra's search path has conf/ first, so
    it reads ours and never these. Empty where there are none (most commands: then no defaults list is made)."""
    ours = Path(conf_dir)
    theirs = [root for root in roots.found if not _same_folder(root, ours)]
    found: dict[str, Traversable] = {}
    for path in sorted(own_configs(conf_dir)) if theirs else ():
        parts = f"{path}.yaml".split("/")
        if (file := next((f for r in theirs if (f := r.joinpath(*parts)).is_file()), None)) is not None:
            found[path] = file
    return found


def loaded_defaults(primary: str, overrides: list[str]) -> Any:
    """Hydra's own defaults list of the config that compose(primary, overrides) makes (its tree, and where each
    group's choice came from): every config file it reads. Inside hydra_as_main."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    return GlobalHydra.instance().config_loader().compute_defaults_list(primary, overrides, RunMode.RUN)


class _Loaded(NamedTuple):
    """A config a defaults list reads: its path, the group choice that reads it (`experiment=paper_small`; None: an
    entry naming a config, such as `- paper_small` or `- /_model@_here_`), and the configs it is read under, the
    outermost first."""

    path: str
    choice: str | None
    key: str | None  # the group choice's override key (model, paths@foo)
    chain: tuple[_Loaded, ...]


def _loaded_configs(tree: Any, chain: tuple[_Loaded, ...] = ()) -> Iterator[_Loaded]:
    """Every config of a defaults tree (Hydra's DefaultsTreeNode), parents before their own defaults, in order."""
    from hydra.core.default_element import GroupDefault

    for child in tree.children or []:
        node = getattr(child, "node", child)  # (a leaf is the default itself)
        if node.is_self() or node.is_deleted() or (isinstance(node, GroupDefault) and not isinstance(node.value, str)):
            continue  # (a group chosen null: no config; a list of options is in the tree as its configs)
        group = isinstance(node, GroupDefault)
        key = node.get_override_key() if group else None
        loaded = _Loaded(node.get_config_path(), f"{key}={node.value}" if group else None, key, chain)
        yield loaded
        if child is not node:
            yield from _loaded_configs(child, (*chain, loaded))


def shadowed_config(
    defaults: Any,
    primary: str,
    roots: ConfigRoots,
    shadows: dict[str, Traversable],
    config_dir: str | None,
    conf_dir: str = CONF_DIR,
) -> str | None:
    """A refusal where a config the command reads is a file of the user's folders with the name of one of conf/'s
    (`shadows`, shadowing_files'): Hydra's search path has conf/ first, so it reads ours and never the user's
    (before: the user's edited copy was ignored with no word). Whatever reads it: the command line's choice of a
    group, a group's default, the primary config (looked for in a --config-dir only), or a config that builds on
    it, an own experiment's `- paper_small`, `- /experiment/paper_small` or `- override /model: small`, at any depth
    (`defaults`: loaded_defaults', Hydra's own list of what it reads). A file of that name the command does not read
    is left alone. None where no config read is shadowed."""
    if not shadows:
        return None
    if (  # (a primary config is looked for in a --config-dir only)
        primary in shadows
        and config_dir
        and not _same_folder(Path(config_dir), Path(conf_dir))
        and Path(config_dir, f"{primary}.yaml").is_file()
    ):
        return _shadow_refusal(
            f"the primary config {primary}:",
            primary,
            str(Path(config_dir, f"{primary}.yaml")),
            f"select it with --config-name {_renamed(primary)}",
        )
    loaded = list(_loaded_configs(defaults.defaults_tree))
    first = {}
    for config in loaded:
        first.setdefault(config.path, config)
    overrides = defaults.overrides
    for config in loaded:
        if config.path not in shadows or (not config.chain and config.path == primary):
            continue
        choice, key = config.choice, config.key
        head, _, name = config.path.rpartition("/")
        chosen = overrides.override_choices.get(head)  # a list group's option (regularizer=[a, b]): a config each
        if choice is None and isinstance(chosen, list) and name in chosen:
            choice, key = f"{head}={name}", head
        meta = overrides.override_metadata.get(key) if key else None
        if meta is not None and meta.used:  # the choice of an override: the command line's, or a config's
            by = None if meta.external_override else meta.containing_config_path
        else:  # a group's default, or a config named in a defaults list: the config whose list it is
            by = config.chain[-1].path if config.chain else None
        file = str(shadows[config.path])
        if choice is not None and not _users_config(by, roots, conf_dir):
            option = choice.partition("=")[2]
            select = f"{key}={_renamed(option)}"
            if isinstance(chosen, list) and option in chosen:  # regularizer=[a,my_b]
                select = f"{key}=[{','.join(_renamed(o) if o == option else str(o) for o in chosen)}]"
            return _shadow_refusal(f"{choice}:", config.path, file, f"select it with {select}")
        under = first.get(by) if by else None
        outer = next((c for c in (*under.chain, under) if c.choice), None) if under else None
        given = outer.choice if outer else f"the primary config {primary}"
        where = "" if by in (None, outer.path if outer else primary) else f" (in {by}.yaml's defaults)"
        return _shadow_refusal(f"{given} builds on {config.path}{where}, and", config.path, file, "build on that")
    return None


def _shadow_refusal(given: str, path: str, file: str, fix: str) -> str:
    """The one line: `given` (what reads config `path`) then why the user's `file` is never read, and what to do."""
    return (
        f"{given} {file} has the name of rnnreg's own {path}.yaml, which Hydra reads instead (its search path has "
        f"rnnreg's conf/ first), so yours would be ignored: give yours another name ({_renamed(path)}.yaml) and {fix}"
    )


def _renamed(path: str) -> str:
    """The name to give a config of the user's instead: experiment/paper_small -> experiment/my_paper_small (_model:
    _my_model, still a shared part, not an option)."""
    head, _, name = path.rpartition("/")
    name = f"_my{name}" if name.startswith("_") else f"my_{name}"
    return f"{head}/{name}" if head else name


def _users_config(path: str | None, roots: ConfigRoots, conf_dir: str) -> bool:
    """Whether Hydra reads config `path` from the user's folders (not conf/'s, nor one of Hydra's own)."""
    if path is None or path in own_configs(conf_dir):
        return False
    return any(root.joinpath(*f"{path}.yaml".split("/")).is_file() for root in roots.found)


def _same_folder(a: Traversable, b: Path) -> bool:
    try:
        return Path(str(a)).resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False
