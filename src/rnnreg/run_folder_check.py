"""A run's folder, checked before Hydra makes it: the folder a command names (its hydra.run.dir resolved as Hydra
will resolve it, or hydra.sweep.dir) is not held by a live run, holds no earlier run's results this run would write
over, is not a folder of checkpoints, and can be made. rnnreg.runtime.hydra_entry calls check_run_dir_free after
rnnreg.command_line's check of the config, whose compositions say the command's mode (run or multirun); a
multirun's jobs' folders are checked when it starts (rnnreg.sweep). What a folder already holds (earlier_results,
links, checkpoints) is checked here for all of them: training and evaluation check their folder again as they start."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from rnnreg import CONF_DIR
from rnnreg.config_search import hydra_as_main, read_command_line
from rnnreg.errors import ConfigError, OutputError
from rnnreg.override_text import pasted_override
from rnnreg.run_lock import RunLock, launched_as_rank_zero
from rnnreg.run_record import CHECKPOINTS, METRICS_FILE, last_checkpoint_path, metrics_path, recorded_metrics

# What an ended run leaves that a new run in its folder would write over: its outcome and its weights (a stacked
# sweep's resume files too). Hydra's .hydra/ and the log are not counted: a run refused for bad input leaves them.
RESULT_FILES = (METRICS_FILE, f"{CHECKPOINTS}/*.ckpt", ".stacked/*.pt")


def earlier_results(folder: str | Path, below: bool = False) -> list[str]:
    """The result files of an earlier run in `folder` (relative paths, sorted); `below`: in its subfolders too
    (a sweep folder's jobs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {p for pattern in RESULT_FILES for p in folder.glob(f"**/{pattern}" if below else pattern)}
    return sorted(str(p.relative_to(folder)) for p in found if p.is_file())


def results_message(folder: str | Path, found: list[str], key: str, go_on: str = "", what: str = "run") -> str:
    """The one line a `what` (run, multirun) stops with when `folder` holds the `found` results of an earlier one
    (`key`: the setting that gives it another folder; `go_on`: ", <how to continue that one instead>", or "")."""
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return (
        f"{folder} holds an earlier {what}'s results (in {shown}), which this {what} would write over: give it another "
        f"folder ({key}=...){go_on}, or remove that folder first"
    )


def check_no_earlier_results(folder: str | Path, key: str, ckpt_path: str | None = None, trains: bool = True) -> None:
    """An OutputError when `folder` holds an earlier run's results, unless this run goes on from a checkpoint in
    it (`ckpt_path`): a run never writes over another's metrics.json and checkpoints. `trains`: the message may
    offer going on from that run (not to an evaluation)."""
    found = earlier_results(folder)
    if not found:
        return
    folder = Path(os.path.abspath(folder))
    if ckpt_path and folder.resolve() in Path(ckpt_path).resolve().parents:
        return
    if ckpt_path and folder in Path(os.path.abspath(ckpt_path)).parents:  # in the folder by name, elsewhere by a link
        raise OutputError(
            f"ckpt_path={ckpt_path} is, through a link, {Path(ckpt_path).resolve()}, outside its run's folder "
            f"{folder}: a run goes on in its own folder from its own files only (a link there could have it write "
            f"elsewhere): give the run another folder (hydra.run.dir=...), which goes on from that checkpoint"
        )
    last = last_checkpoint_path(folder)
    unfinished = trains and last.is_file() and not completed(folder)
    go_on = f", go on from that run with {pasted_override('ckpt_path', last)}" if unfinished else ""
    raise OutputError(results_message(folder, found, key, go_on))


def check_no_links(folder: str | Path, key: str, below: bool = False) -> None:
    """An OutputError when `folder` (`key`) holds a link where a run writes by name: among its own entries, or below
    its .hydra/ or checkpoints/ (`below`: a sweep folder's job folders too). Hydra's record and log, the lock and the
    config tree are opened through a link, so a run there would write over the file it points at, elsewhere; a
    resume deletes the earlier best checkpoint its state names below checkpoints/, through any link on the way."""
    found = links_written_through(Path(os.path.abspath(folder)), below)
    if found:
        link = found[0]
        raise OutputError(
            f"{key}={folder} holds {link.relative_to(os.path.abspath(folder))}, a link to {os.readlink(link)}: a run "
            f"in that folder would write through it, elsewhere: give the run another folder ({key}=...), or put what "
            f"it points at in the link's place"
        )


def links_written_through(folder: Path, below: bool = False) -> list[Path]:
    """The links in `folder` (not followed) and anywhere below its .hydra/ and checkpoints/, and with `below` in its
    subfolders'."""
    found = []
    try:
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if entry.is_symlink():
                found.append(entry)
            elif entry.name in (".hydra", CHECKPOINTS) and entry.is_dir():  # (a resume deletes a path below)
                inside = (Path(top, name) for top, dirs, files in os.walk(entry) for name in sorted(dirs + files))
                found += [p for p in inside if p.is_symlink()]
            elif below and entry.is_dir():
                found += links_written_through(entry)
    except OSError:  # a folder this user cannot read: Hydra's own error says so
        pass
    return found


def checkpoints_folder(folder: str | Path) -> Path | None:
    """The folder of checkpoints that `folder` is or lies in, else None: `folder` itself when it holds checkpoints
    (*.ckpt), or a run's checkpoints/ at or above it (one that holds checkpoints, or beside a run's .hydra/ or
    metrics.json)."""
    folder = Path(os.path.abspath(folder))
    if holds_checkpoints(folder):
        return folder
    for above in (folder, *folder.parents):
        run = above.parent
        if above.name == CHECKPOINTS and (
            holds_checkpoints(above) or (run / ".hydra").is_dir() or metrics_path(run).is_file()
        ):
            return above
    return None


def holds_checkpoints(folder: Path) -> bool:
    return any(p.is_file() for p in folder.glob("*.ckpt"))


# what each program writes in its folder, and what the folder is for
WRITES = {
    "rnnreg-eval": ("its metrics.json, log and .hydra/", "the evaluation"),
    "rnnreg-train": ("its checkpoints/, metrics.json, log and .hydra/", "the run"),
}


def check_not_in_records(folder: str | Path, key: str, program: str = "rnnreg-eval") -> None:
    """An OutputError when `program`'s `folder` (`key`) is or lies in a folder of checkpoints, or in a run's record
    (its .hydra/ or csv/), or is a sweep's own folder (`key` hydra.run.dir): its results would lie among a run's
    files, or a sweep's, where rnnreg-report would read them as another run of it."""
    writes, what = WRITES[program]
    fix = f"give {what} a folder of its own ({key}=<a new folder>, or leave {key} out)"
    if (found := checkpoints_folder(folder)) is not None:
        where = "" if found == Path(os.path.abspath(folder)) else f"inside {found}, "
        raise OutputError(
            f"{key}={folder} is {where}a folder of checkpoints, and {program} writes {writes} there: {fix}"
        )
    if (found := run_record_folder(folder)) is not None:
        where = "" if found == Path(os.path.abspath(folder)) else f"inside {found}, "
        raise OutputError(
            f"{key}={folder} is {where}the record of the run in {found.parent} ({found.name}/), and {program} writes "
            f"{writes} there: {fix}"
        )
    if key == "hydra.run.dir" and (Path(folder) / "multirun.yaml").is_file():
        raise OutputError(
            f"{key}={folder} is a sweep's folder (its multirun.yaml), and {program} writes {writes} there, which "
            f"rnnreg-report would read as one of the sweep's runs: {fix}"
        )


def run_record_folder(folder: str | Path) -> Path | None:
    """The run's record folder that `folder` is or lies in, else None: a .hydra/ or csv/ beside a run's .hydra/."""
    folder = Path(os.path.abspath(folder))
    for above in (folder, *folder.parents):
        if above.name in (".hydra", "csv") and (above.parent / ".hydra").is_dir():
            return above
    return None


def check_folder_can_be_made(folder: str | Path, key: str) -> None:
    """A run or sweep folder that could not be made or written in (a file on its path, a folder this user
    cannot write in, a read-only or full filesystem, a quota, a pseudo-filesystem such as /proc): one line before
    Hydra tries, whose answer is a traceback. A folder that starts with ~ too: nothing on the way expands it (a
    shell expands only an unquoted ~ at a word's start), so Hydra would make a folder named ~ in this one."""
    if str(folder).startswith("~"):
        home = os.path.expanduser(folder)
        given = f"{key}={home}" if home != str(folder) else f"{key} an absolute path"
        raise ConfigError(
            f"{key}={folder} would make a folder named {Path(folder).parts[0]} in {os.getcwd()}, for nothing expands "
            f"its ~ (a shell does only at a word's start, unquoted): give {given}"
        )
    path = Path(os.path.abspath(folder))
    existing = next(p for p in (path, *path.parents) if os.path.exists(p))  # (False where it cannot look)
    if not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"this user cannot write in {existing}"
    else:
        reason = cannot_make_a_folder_in(existing)
        if reason is None:
            return
    raise OutputError(f"{key}={folder}: {reason}: give {key} a folder you can write in")


def cannot_make_a_folder_in(folder: Path) -> str | None:
    """Why no folder can be made in `folder` where access(2) allows it (no space or inode left, a quota, a
    pseudo-filesystem such as /proc, a server that says no); None where one can. Found by making one, which is
    removed again at once: access(2) knows only the permissions. The folder's times are put back as they were
    (where its owner may set them): a look at `ls -t` or a build tool sees nothing changed."""
    try:
        before = os.stat(folder)
        os.rmdir(tempfile.mkdtemp(prefix=".rnnreg-check-", dir=folder))
    except OSError as err:
        return f"no folder can be made in {folder} ({err.strerror or err})"
    with contextlib.suppress(OSError):  # another user's folder that we may write in (/tmp): its times moved
        os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    return None


def completed(folder: Path) -> bool:
    return recorded_metrics(folder).get("status") == "completed"


def check_run_dir_free(
    args: list[str],
    config_name: str = "train",
    job_name: str = "train",
    config_multirun: bool | None = None,
    own_run_dir: bool = False,
) -> None:
    """An explicit hydra.run.dir or hydra.sweep.dir that a live run holds (rnnreg.run_lock.RunLock; a multirun
    holds its sweep folder), or a hydra.run.dir with an earlier run's results that this run would write over (a
    training run that goes on from its own checkpoint there does not; rnnreg-eval writes metrics.json), or a
    folder of checkpoints, or a folder (or the default folders' root) that could not be made: stop before Hydra
    writes .hydra/, multirun.yaml or the log there (training and evaluation check again when they start, training
    takes the lock; a multirun checks its sweep folder in rnnreg.sweep). `config_multirun`: check_command_line's
    finding, if it composed the config; `own_run_dir`: its finding that hydra.run.dir is set by a config file (or
    the command line), checked as one given on the command line."""
    if not launched_as_rank_zero():  # a DDP process started by rank 0 is given rank 0's (locked) folder
        return
    command = read_command_line(args)
    multirun = command is not None and command.multirun
    ckpt_paths = [a.partition("=")[2] for a in args if a.lstrip("+").startswith("ckpt_path=")]
    folder_key = "hydra.sweep.dir" if multirun or config_multirun else "hydra.run.dir"  # the one Hydra makes
    given = {a.partition("=")[0].lstrip("+") for a in args}
    if config_name in ("train", "eval") and folder_key not in given and config_multirun is not None:
        key, root = output_root(args)  # the default folder is below it (conf/hydra/default.yaml)
        if root is not None and "${" not in root:  # ($RNNREG_OUTPUT_DIR is plain: the shell expands it)
            check_folder_can_be_made(root, key)
    pairs = [(a.partition("=")[0].lstrip("+"), a.partition("=")[2]) for a in args]
    if own_run_dir and folder_key == "hydra.run.dir" and folder_key not in given:  # a config file's: resolved below
        pairs.append((folder_key, ""))
    for key, value in pairs:
        if key == "hydra.run.dir" and not multirun:  # as Hydra resolves it (${paths.output_root}/run), if it is used
            resolved = run_dir_used(args, config_name, job_name, config_multirun)
            value = value if resolved is None else resolved
        elif key == "hydra.sweep.dir":  # as Hydra reads it: a quoted value without its quotes
            value = plain_value(f"{key}={value}") or value
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            message = RunLock.in_use(os.path.abspath(value), key)  # as Hydra makes it
            if message:
                raise OutputError(message)
            if key == folder_key:  # the folder Hydra makes
                check_folder_can_be_made(value, key)
                if config_name in ("train", "eval"):  # (rnnreg-generate and rnnreg-report write nothing in theirs, .)
                    check_no_links(value, key, below=multirun or bool(config_multirun))
            if config_name in ("train", "eval") and (key == "hydra.sweep.dir") == multirun:  # the folder Hydra uses
                check_not_in_records(value, key, f"rnnreg-{config_name}")
            if key != "hydra.run.dir" or multirun or config_name not in ("train", "eval"):
                continue
            if config_name == "eval":  # its checkpoint's folder is no exception: eval writes no checkpoint
                check_no_earlier_results(value, key, trains=False)
            elif "last" not in ckpt_paths:  # ckpt_path=last is found when training starts (it checks then)
                check_no_earlier_results(value, key, ckpt_paths[-1] if ckpt_paths else None)


def run_dir_used(args: list[str], config_name: str, job_name: str, config_multirun: bool | None) -> str | None:
    """single_run_dir's answer, without a composition of its own where the command line gives it: one
    hydra.run.dir with a plain value (no interpolation), and the config's mode known (`config_multirun`, from
    check_command_line's compositions)."""
    lines = [a for a in args if a.lstrip("+").startswith("hydra.run.dir=")]
    if config_multirun is not None and len(lines) == 1:
        value = plain_value(lines[0])
        if value is not None:
            return "" if config_multirun else value or "."
    return single_run_dir(config_name, args, job_name)


def single_run_dir(config_name: str, argv: list[str], job_name: str, conf_dir: str = CONF_DIR) -> str | None:
    """The folder a run's `hydra.run.dir=...` names, its interpolations resolved as Hydra will resolve them; ""
    when the config is a multirun by itself (an experiment's hydra.mode: MULTIRUN: its jobs go under
    hydra.sweep.dir); None when the command line does not compose (Hydra says why)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    command = read_command_line(argv)
    if command is None:
        return None
    overrides, config_name = command.overrides, command.config_name or config_name
    try:
        with hydra_as_main(command.config_dir, job_name, conf_dir):
            hydra = GlobalHydra.instance().hydra
            try:  # as Hydra's run composes it (one composition: its mode is the config's own, MULTIRUN or not)
                cfg = hydra.compose_config(config_name, overrides, RunMode.RUN)
            except Exception:  # sweep values, say: composed as Hydra's main composes it to learn the mode
                cfg = hydra.compose_config(config_name, overrides, RunMode.MULTIRUN, validate_sweep_overrides=False)
                if cfg.hydra.mode != RunMode.MULTIRUN:
                    return None  # Hydra's run will say why it does not compose
            if cfg.hydra.mode == RunMode.MULTIRUN:
                return ""
    except Exception:
        return None
    original = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in it, as Hydra resolves it
    try:
        return str(OmegaConf.select(cfg, "hydra.run.dir")) or "."  # (Hydra's Path("") is the current folder)
    except OmegaConfBaseException as err:  # Hydra would stop with a traceback
        raise ConfigError(f"hydra.run.dir: {str(err).splitlines()[0]}") from None
    finally:
        HydraConfig.instance().cfg = original


def plain_value(line: str) -> str | None:
    """The string `key=value` sets, as Hydra's override parser reads it (quotes and all), when it is plain: no
    interpolation to resolve. None otherwise, or where Hydra cannot read it (its run will say why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        (override,) = OverridesParser.create().parse_overrides([line])
    except HydraException:
        return None
    value = override.value()
    return value if isinstance(value, str) and "${" not in value else None


def output_root(args: list[str]) -> tuple[str, str | None]:
    """Where a run's default folder goes (conf/paths/default.yaml), and the setting that says so: the command
    line's paths.output_root (None: not a plain value), else $RNNREG_OUTPUT_DIR, else outputs/ in this folder."""
    given = [a for a in args if a.lstrip("+").startswith("paths.output_root=")]
    if given:
        return "paths.output_root", plain_value(given[-1])
    if os.environ.get("RNNREG_OUTPUT_DIR"):
        return "RNNREG_OUTPUT_DIR", os.environ["RNNREG_OUTPUT_DIR"]
    return "paths.output_root", "outputs"


# a run folder given again (a resume in its own folder): Hydra's record of its command (.hydra/*.yaml) as it was before
# Hydra rewrites it for this command, with its results' stamp: put back where the command is refused
EARLIER_RECORDS: list[tuple[Path, dict[str, bytes], dict[str, tuple | None]]] = []


def keep_earlier_record(
    args: list[str], config_name: str, job_name: str, multirun: bool | None, own_run_dir: bool = False
) -> None:
    """The record in the folder a single run's command line names (its hydra.run.dir), or a config file pins
    (`own_run_dir`: check_command_line's finding), if it holds one."""
    given = any(a.lstrip("+").startswith("hydra.run.dir=") for a in args)
    if multirun or not launched_as_rank_zero() or not (given or own_run_dir):
        return  # (a DDP rank started by rank 0 finds rank 0's new record there)
    folder = run_dir_used(args, config_name, job_name, multirun)
    if not folder:
        return
    try:
        files = {p.name: p.read_bytes() for p in Path(folder, ".hydra").glob("*.yaml") if p.is_file()}
    except OSError:
        return
    if files:
        EARLIER_RECORDS.append((Path(folder).resolve(), files, _stamp(folder)))


def put_back_earlier_record(output_dir: str) -> None:
    """A refused command's run folder: its earlier record back, where the run's results are as it found them (the
    report groups the run by its record's overrides; a refused resume's would have taken their place)."""
    from rnnreg.io import replace_atomically  # (torch: not at a command's start, --help and completion)

    for folder, files, stamp in EARLIER_RECORDS:
        if folder == Path(output_dir).resolve() and _stamp(folder) == stamp:
            for name, data in files.items():
                replace_atomically(folder / ".hydra" / name, lambda tmp, data=data: tmp.write_bytes(data))


def earlier_record_kept(output_dir: str) -> bool:
    """Whether the folder `output_dir` held an earlier command's record when this command started (keep_earlier_record):
    a folder given again, not one this command made."""
    return any(folder == Path(output_dir).resolve() for folder, _, _ in EARLIER_RECORDS)


def _stamp(folder: str | Path) -> dict[str, tuple | None]:
    """A run's results (RESULT_FILES: metrics.json, every checkpoint) as a stamp that a new write,
    or removal, of any changes: the put-back is right only where the command left no result (a run that trained
    may have written best.ckpt alone, its metrics.json not written)."""
    return {name: _file_stamp(Path(folder, name)) for name in earlier_results(folder)}


def _file_stamp(path: Path) -> tuple | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size
