"""The commands the README, docs/ and the config files show are commands the programs take: each one composes
and passes the checks its console script makes of a command line before Hydra runs (validate_args: every job of a
sweep, against the schema and the stacked launcher's refusals), so a renamed key, option or experiment fails
here, not in a reader's terminal. docs/measurements.md records commands as they were run on their day and is not
checked.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest
import torch

import rnnreg
from rnnreg.command_line import validate_args
from rnnreg.errors import ConfigError, MissingValue
from rnnreg.model import cpu_runs_fused_lstm_in_bf16

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/guide.md", "docs/errors.md", "docs/ablation.md", "docs/results.md"]
SCRIPTS = {"rnnreg-train": "train", "rnnreg-eval": "eval", "rnnreg-generate": "generate", "rnnreg-report": "report"}
COMMAND = re.compile(r"(rnnreg-(?:train|eval|generate|report))\b([^`#]*)")
# an argument: -m, or an override (key=value, +key=, ~key); what follows the first other word is prose
ARGUMENT = re.compile(r"^(-m|--multirun|\.\.\.|[+~]?[\w./-]+=.*|~[\w./-]+)$")
# what a reader fills in: <time>, <sweep>, <folder of links>; `...` for the rest of a command or part of a path
PLACEHOLDER = re.compile(r"<[^>]*>")
# the keys whose value names a file or folder that must exist: the test makes it where the command says
CHECKPOINT_KEYS, FOLDER_KEYS, CORPUS_KEYS = {"ckpt_path"}, {"path", "hydra.sweep.dir"}, {"data.data_dir"}


def commands_in(line: str) -> list[str]:
    """The rnnreg-* commands a line of text shows with arguments: each script's name and the overrides after it,
    up to the first word that is not one (prose, a `# comment`, a `[optional]` part)."""
    found = []
    for script, rest in COMMAND.findall(PLACEHOLDER.sub("P", line)):
        try:
            words = shlex.split(rest)
        except ValueError:  # an apostrophe in the prose after it
            words = rest.split()
        args = list(itertools.takewhile(ARGUMENT.match, words))
        if args:
            found.append(shlex.join([script, *args]))
    return found


def text_commands(text: str) -> list[tuple[int, str]]:
    """(line, command) for each command a page or config file shows; a line is joined with the next over a
    code block's trailing backslash and over inline code that goes on to the next line (an odd count of `)."""
    found, joined = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        line = joined + line.strip()
        if line.startswith("```"):
            joined = ""
            continue
        if line.endswith("\\") or line.count("`") % 2:
            joined = line.removesuffix("\\") + " "
            continue
        joined = ""
        found += [(number, command) for command in commands_in(line)]
    return found


def documented_commands() -> dict[str, list[str]]:
    """Each command the pages and the config files' comments and messages show, with where (file:line)."""
    files = [ROOT / page for page in PAGES] + sorted((ROOT / "conf").rglob("*.yaml"))
    commands: dict[str, list[str]] = {}
    for file in files:
        for number, command in text_commands(file.read_text()):
            commands.setdefault(command, []).append(f"{file.relative_to(ROOT)}:{number}")
    return commands


COMMANDS = documented_commands()


def filled_in(args: list[str], where: Path) -> list[str]:
    """The command's arguments with its placeholders filled in, and the files and folders its keys name made
    under `where` (a checkpoint file where ckpt_path points, a corpus folder where data.data_dir does)."""
    filled = []
    for arg in args:
        key, is_value, value = arg.partition("=")
        if not is_value or value == "last":
            filled.append(arg)
            continue
        if key in CHECKPOINT_KEYS | FOLDER_KEYS | CORPUS_KEYS:
            names = value.strip("[]").split(",") if key in CHECKPOINT_KEYS else [value]
            paths = [where / name.replace("...", "x").lstrip("/") for name in names]
            for path in paths:
                if key in CHECKPOINT_KEYS:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save({}, path)  # a file torch.save wrote: what the command-line check asks of it
                else:
                    path.mkdir(parents=True, exist_ok=True)
                if key in CORPUS_KEYS:
                    for split in ("train", "valid", "test"):
                        (path / f"{split}.txt").write_text("a b c\n")
            value = f"[{','.join(map(str, paths))}]" if value.startswith("[") else str(paths[0])
        filled.append(f"{key}={value}")
    return filled


def test_the_pages_show_commands():
    """The parser finds the pages' commands (a parser that found none would pass every page)."""
    files = {where.split(":")[0] for wheres in COMMANDS.values() for where in wheres}
    assert {"README.md", "docs/guide.md", "docs/ablation.md", "conf/eval.yaml", "conf/trainer/ddp.yaml"} <= files
    assert len(COMMANDS) >= 50
    assert "rnnreg-train -m hydra/launcher=stacked ... hydra.launcher.resume=true hydra.sweep.dir=P" in COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=[COMMANDS[c][0] for c in sorted(COMMANDS)])
def test_a_documented_command_is_one_the_program_takes(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pages' relative paths (outputs/..., a.ckpt) are made here
    script, *args = shlex.split(command)
    partial = "..." in args  # the rest of the command left out: a value it leaves out may be missing
    args = filled_in([a for a in args if a != "..."], tmp_path)
    if "trainer.precision=bf16-mixed" in args and not cpu_runs_fused_lstm_in_bf16():
        # a command for a CPU with a bf16 LSTM or a GPU, refused here in its own line (test_schema); the rest of it
        # is checked in float32
        with pytest.raises(ConfigError, match=r"^trainer.precision=bf16-mixed runs the fused LSTM"):
            validate_args(SCRIPTS[script], args)
        args = [arg if arg != "trainer.precision=bf16-mixed" else "trainer.precision=32-true" for arg in args]
    if "trainer.accelerator=gpu" in args and not torch.cuda.is_available():
        # a GPU's command (the device script's sweeps), refused here in its own line; the rest of it checked on the CPU
        with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu needs a CUDA GPU"):
            validate_args(SCRIPTS[script], args)
        args = [arg if arg != "trainer.accelerator=gpu" else "trainer.accelerator=cpu" for arg in args]
    try:
        checked = validate_args(SCRIPTS[script], args)
    except MissingValue:
        if not partial:
            raise
        return
    except ConfigError as err:
        pytest.fail(f"{', '.join(COMMANDS[command])}: `{command}` is refused: {err}")
    assert checked >= 1


# a file of the repository a page names (`src/rnnreg/schema.py`, `docs/cpu_.../perturb.py`, a figure it shows)
REPOSITORY_PATH = re.compile(r"(?<![\w/.~-])((?:src|tests|benchmarks|docs|conf|examples)/[\w./*-]*[\w*])")
LINK = re.compile(r"\]\(([^)#\s]+)\)")
# a module or package export a page names: rnnreg.stacked_step, rnnreg.paper_recipe, rnnreg/stacked_step.py
RNNREG_NAME = re.compile(r"(?<![\w/.])rnnreg[./]([a-z_]+)")


@pytest.mark.parametrize("page", PAGES)
def test_the_files_and_modules_a_page_names_exist(page):
    """A restructure that moves a module or a measurement's folder leaves no page pointing at nothing."""
    text = (ROOT / page).read_text()
    here = (ROOT / page).parent
    paths = REPOSITORY_PATH.findall(text) + LINK.findall(text)
    missing = [p for p in paths if not any(ROOT.glob(p)) and not any(here.glob(p))]  # (src/rnnreg/stacked*.py)
    modules = {p.stem for p in (ROOT / "src" / "rnnreg").glob("*.py")} | set(rnnreg.__all__)
    unknown = sorted({name for name in RNNREG_NAME.findall(text) if name not in modules})
    assert not missing and not unknown, f"{page} names files that do not exist: {missing}, modules: {unknown}"
