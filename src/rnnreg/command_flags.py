"""A command line's flags, checked before Hydra reads them: those Hydra refuses with a traceback or its usage, or
takes and then does something else than asked, are one line naming the fix (check_flags); and whether Hydra answers
the command line itself (help, version, --cfg: answered_by_hydra), so that nothing is checked or imported for it.
rnnreg.command_line composes and checks the jobs a command line asks for.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from pathlib import Path

from rnnreg.config_search import SCRIPT_CONFIGS, HydraCommandLine, parser_refusal, read_command_line
from rnnreg.errors import ConfigError

SHELL_COMPLETION = ("install", "uninstall", "query")  # -sc's subcommands


def answered_by_hydra(argv: list[str]) -> bool:
    """Whether Hydra answers this command line itself, without running the task or making a folder (help,
    version, completion, --info, --cfg, or its parser's refusal): nothing to check before Hydra
    (rnnreg.runtime.hydra_entry), and no torch import."""
    command = read_command_line(argv)
    return command is None or command.answered


def shown_config(command: HydraCommandLine) -> str | None:
    """The flag with which Hydra shows a config composed of the command line's overrides (--cfg, --help, --info),
    None where it shows none: those overrides are checked as a run's (Hydra's answer for a bad one is a traceback
    or its page)."""
    if not command.overrides or "--shell-completion" in command.flags:
        return None
    return next((flag for flag in ("--cfg", "--help", "--info") if flag in command.flags), None)


def check_flags(argv: list[str], script: str = "rnnreg-train") -> None:
    """A ConfigError for flags Hydra refuses with a traceback or its usage (two modes at once: Hydra does one at a
    time; --resolve without --cfg; -sc without its subcommand; key=value words on both sides of a flag: argparse
    takes them in one run), or takes and then does something else than asked (-p without --cfg: a run;
    --experimental-rerun: our configs use ${hydra:...}, which its rerun cannot resolve; another script's config)."""
    command = read_command_line(argv)
    if command is None:  # Hydra's parser refuses it (its usage, nine lines, and why) or answers it (--version)
        refusal = parser_refusal(argv)
        if refusal is not None:
            raise ConfigError(f"{refusal}{glued_flag_hint(argv)}: see {script} --hydra-help for the flags")
        return
    helps = sorted(command.flags & {"--help", "--hydra-help"})
    if helps and "--shell-completion" in command.flags:  # Hydra shows the help, -sc's word read as a config key
        word = next((w for w in command.overrides[:1] if w.partition("=")[0] in SHELL_COMPLETION), "install=bash")
        raise ConfigError(
            f"{helps[0]} and -sc cannot be combined (Hydra does one at a time): {script} -sc {word} for shell "
            f"completion, or {script} {helps[0]} for the help"
        )
    if helps and "--package" in command.flags:  # (Hydra's help shows no package: -p would go unused)
        without = [a for a in (command.in_order or argv) if not is_help_flag(a)]
        raise ConfigError(
            f"--package works with --cfg, to show the config; {helps[0]} ignores it: "
            f"{shlex.join([script, '--cfg', 'job', *without])}"
        )
    modes = command.modes
    if len(modes) > 1:
        cfg_of_a_sweep = modes == ["--cfg", "--multirun"]
        fix = "leave out -m and give one job's values (e.g. seed=1 --cfg job)" if cfg_of_a_sweep else "keep one"
        raise ConfigError(f"{' and '.join(modes)} cannot be combined (Hydra does one at a time): {fix}")
    shows = "--cfg" in command.flags or "--help" in command.flags
    for flag, example in (("--package", ["-p", "model"]), ("--resolve", ["--resolve"])):
        if flag in command.flags and not shows:
            # the reader's own words after --cfg job; beside -m or --run, --cfg would be a second mode
            meant = ["--cfg", "job", *((command.in_order or argv) if not modes else example)]
            raise ConfigError(f"{flag} works with --cfg, to show the config: {shlex.join([script, *meant])}")
    subcommand = command.overrides[0].partition("=")[0] if command.overrides else ""
    if "--shell-completion" in command.flags and subcommand not in SHELL_COMPLETION:
        raise ConfigError(f"-sc takes install, uninstall or query: {script} -sc install=bash (or zsh, fish)")
    if "--experimental-rerun" in command.flags:
        raise ConfigError(
            f"--experimental-rerun cannot rerun a run of {script} (its config reads ${{hydra:runtime.output_dir}}): "
            f"give the run's overrides again (they are in <run>/.hydra/overrides.yaml)"
        )
    if command.config_path and (fix := relative_config_path(command.config_path)):
        raise ConfigError(fix)
    if script == "rnnreg-report" and command.multirun:  # Hydra's sweep folder, multirun.yaml and a folder per job
        raise ConfigError(report_multirun_message(command.overrides))
    other = command.config_name
    if other in SCRIPT_CONFIGS and other != script.removeprefix("rnnreg-"):  # (its keys are not this script's)
        raise ConfigError(f"--config-name {other} is rnnreg-{other}'s config: run rnnreg-{other} instead of {script}")
    if command.in_order:
        raise ConfigError(
            f"key=value words on both sides of a flag, which Hydra's parser refuses: give them together, after the "
            f"flags: {shlex.join([script, *command.in_order])}"
        )


def is_help_flag(word: str) -> bool:
    """Whether Hydra's parser reads `word` as --help or --hydra-help (-h, or a unique abbreviation: --hel, --hyd)."""
    return word == "-h" or (len(word) > 3 and any(flag.startswith(word) for flag in ("--help", "--hydra-help")))


def relative_config_path(path: str) -> str | None:
    """A relative --config-path, which Hydra reads from the package of the script's module (rnnreg.conf2, a module
    it then does not find: four lines, exit 1), not from this folder; None where it names a folder there."""
    import rnnreg

    if os.path.isabs(path) or "://" in path or Path(rnnreg.__file__).parent.joinpath(path).is_dir():
        return None
    absolute = os.path.abspath(path)
    if not os.path.isdir(absolute):
        return (
            f"--config-path {path}: no such folder: give the folder that holds your primary config, as an absolute path"
        )
    return (
        f"--config-path {path}: Hydra reads a relative --config-path from rnnreg's package, not from this folder: give "
        f"it as an absolute path (--config-path {absolute}), or add its config groups to rnnreg's with --config-dir "
        f"{path}"
    )


def report_multirun_message(overrides: tuple[str, ...], given: str = "-m") -> str:
    """rnnreg-report -m: a report goes into the folder it reports, and a sweep would add Hydra's sweep folder."""
    lines, rest = ["path=<folder>"], ""
    with contextlib.suppress(Exception):  # (a path= Hydra cannot read: the example's)
        parsed = parse_overrides(overrides)
        (path,) = [o for o in parsed if o.key_or_group == "path"]
        if path.is_discrete_sweep() and "(" not in path.input_line:  # a list of folders (not glob(*), range())
            lines = [f"path={folder}" for folder in path.sweep_string_iterator()]
        elif not path.is_sweep_override():
            lines = [path.input_line]
        # the command's other values, as given (formats=[png]), each folder's report the one asked for
        rest = "".join(f" {shlex.quote(o.input_line)}" for o in parsed if o.key_or_group not in ("path", "hydra.mode"))
    each = ", then ".join("rnnreg-report " + (line if "<" in line else shlex.quote(line)) + rest for line in lines)
    return (
        f"{given}: rnnreg-report writes each folder's report into that folder, and a multirun would add Hydra's sweep "
        f"folder (multirun/<date>/<time>) here: run it once per folder ({each}), or report the runs of several "
        f"folders together from a folder of links to them (path=<folder of links>)"
    )


def parse_overrides(lines: tuple[str, ...] | list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(lines))


def glued_flag_hint(argv: list[str]) -> str:
    """Where a word glues -cd, -cn or -cp to its value (-cdud): argparse reads it as -c (--cfg) with the rest."""
    glued = next((a for a in argv if re.fullmatch(r"-c[dnp][^=].*", a)), None)
    return f" ({glued} reads as -c {glued[2:]}: write {glued[:3]} {glued[3:]})" if glued else ""
