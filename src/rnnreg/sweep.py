"""Multiruns that go on past a failed job and say at the end which jobs failed; what a job needs to know
about its sweep (which keys it sweeps, for run names).

SweepCallback (hydra.callbacks in conf/hydra/default.yaml) holds the sweep folder's RunLock while the multirun
runs, writes <sweep dir>/sweep.yaml when it starts (the swept keys: sweep overrides on the command line and
hydra.sweeper.params), and when it ends lists the jobs of this multirun that failed (failed_jobs) on one line
and exits 1.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError, DataError, OutputError, UserError, first_line
from rnnreg.override_text import pasted_override
from rnnreg.run_lock import RunLock, check_no_links, earlier_results, launched_as_rank_zero, results_message
from rnnreg.run_record import recorded_metrics
from rnnreg.stacked_settings import check_launcher_settings

SWEEP_FILE = "sweep.yaml"
ERROR_FILE = "error.txt"  # a multirun job's one-line error, in its folder
STOPPED_BEFORE_A_RESULT = "stopped by"  # how error.txt begins for a job a signal ended before any result
# hydra/launcher=stacked's class as its config names it for Hydra: conf/hydra/launcher/stacked.yaml, its one owner
STACKED_LAUNCHER = str(yaml.safe_load(Path(CONF_DIR, "hydra", "launcher", "stacked.yaml").read_text())["_target_"])
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # Hydra's default sweeper
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # ... and launcher
NUMBERED_SUBDIR = "${hydra.job.num}"  # a job's folder in its sweep's: its number (conf/hydra/default.yaml)


def uses_stacked_launcher(config: DictConfig) -> bool:
    """Whether a command's jobs run on hydra/launcher=stacked (`config`: composed with Hydra's node)."""
    return OmegaConf.select(config, "hydra.launcher._target_", default="") == STACKED_LAUNCHER


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def task_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The command line's overrides as it gave them: an interpolation in one (`+logger.wandb.id=run_${seed}`) is
    each job's to resolve, and `${hydra:...}` cannot be resolved outside a job."""
    return list(OmegaConf.to_container(hydra_cfg.overrides, resolve=False)["task"])


def swept_keys(hydra_cfg: DictConfig) -> list[str]:
    """The keys a multirun varies: sweep overrides (`dropout=none,recurrent`, `seed=range(3)`) and the
    sweeper's search space (hydra.sweeper.params: the basic sweeper's and Optuna's)."""
    keys = []
    try:
        overrides = OverridesParser.create().parse_overrides(task_overrides(hydra_cfg))
        keys += [o.key_or_group for o in overrides if o.is_sweep_override()]
    except Exception:  # an override Hydra's parser rejects: Hydra says so itself
        pass
    params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
    return list(dict.fromkeys(keys + list(params)))


def job_swept_keys() -> list[str] | None:
    """Inside a multirun job: the keys its sweep varies (None outside a multirun, or without sweep.yaml)."""
    if not in_multirun():
        return None
    path = Path(HydraConfig.get().sweep.dir, SWEEP_FILE)
    try:
        return list((yaml.safe_load(path.read_text()) or {}).get("swept") or [])
    except FileNotFoundError:
        return swept_keys(HydraConfig.get())  # the search space at least (sweep.yaml written elsewhere)


# Overrides that say where a run wrote or how it was watched, never what it computed: runs that differ only in
# these are one configuration (rnnreg-report: seeds of one recipe run into two output roots, one with W&B).
NOT_COMPARED = ("hydra", "paths", "logger", "tags", "extras", "callbacks.progress_bar", "trainer.enable_progress_bar")
# ... nor, in a run's name, how it was budgeted, resumed or where its data lay.
NOT_IN_NAMES = NOT_COMPARED + ("ckpt_path", "trainer.limit_", "data.data_dir")


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_label(overrides: list[str], swept: list[str] | None) -> str:
    """A sweep's job in a message: the overrides that tell it apart (differing), or, where those are all of a kind
    that names no run (an evaluation sweep over ckpt_path=a,b), the swept ones as they are."""
    told_apart = differing(overrides, swept) or [o for o in overrides if swept is None or override_key(o) in swept]
    return " ".join(told_apart)


def differing(overrides: list[str], swept: list[str] | None) -> list[str]:
    """The overrides that tell a sweep's jobs apart: the swept ones (all of them outside a sweep), less
    those in NOT_IN_NAMES; a key given twice once, with its last value (the one Hydra applies last)."""
    keys = [override_key(o) for o in overrides]
    last = {key: i for i, key in enumerate(keys)}
    return [
        o
        for i, (o, key) in enumerate(zip(overrides, keys))
        if last[key] == i and (swept is None or key in swept) and not key.startswith(NOT_IN_NAMES)
    ]


class JobFailed(Exception):
    """A multirun job ended by a UserError (already reported on one line): the sweeper records the job as
    failed (Optuna: a FAIL trial) and goes on."""


def report_failed_job(
    num: int, overrides: list[str], swept: list[str] | None, message, folder: str | Path, basic: bool
) -> JobFailed | None:
    """A multirun job that failed with `message` (a UserError's), as every launcher reports it: one line on stderr
    naming the job, its error.txt in `folder` (record_job_error), and what its sweeper is handed: Hydra's basic
    sweeper (`basic`) None, for a raised error would end the sweep (failed_jobs lists the job at its end); any
    other JobFailed (Optuna marks the trial FAIL; a NaN return crashes hydra-optuna-sweeper 1.3 with optuna 2.10)."""
    print(f"error: job {num} ({job_label(overrides, swept)}) failed: {message}", file=sys.stderr)
    record_job_error(str(message), folder)
    return None if basic else JobFailed(str(message))


def record_job_stopped(how: str) -> None:
    """This multirun job's error.txt when a signal (`how`: "SIGTERM") ended it before it wrote a result (an
    evaluation in a submitit job): failed_jobs lists it as stopped, to run again from the start."""
    record_job_error(f"{STOPPED_BEFORE_A_RESULT} {how} before it finished; it wrote no metrics.json (run it again)")


def record_job_error(message: str, folder: str | Path | None = None) -> None:
    """A multirun job's one-line reason for having no result, in its folder's error.txt (`folder`; None: this
    job's, outside a multirun nothing): how the sweep's end (failed_jobs) knows, also of a job that ended before
    writing anything, or in another process."""
    if not launched_as_rank_zero():  # (a DDP process that Lightning started: rank 0 tells of the job)
        return
    if folder is None:
        if not in_multirun():  # (evaluate() called as a function: no sweep to tell)
            return
        folder = HydraConfig.get().runtime.output_dir
    try:
        Path(folder, ERROR_FILE).write_text(f"{message}\n")
    except OSError:  # the line on stderr has said it
        pass


def failed_jobs(sweep_dir: Path, since: float = 0.0) -> list[tuple[str, list[str], str]]:
    """(job folder, overrides, how it ended) of each job under `sweep_dir` run at or after `since` (its config,
    metrics.json or error.txt written since: a resumed stacked sweep keeps its jobs' configs) that did not complete:
    it left error.txt and no completed metrics.json after it ("failed": a UserError, record_job_error; "stopped":
    a signal ended it before any result, record_job_stopped), or a metrics.json saying failed, or interrupted
    ("interrupted": by a signal, after any error.txt, and it goes on from its last.ckpt), or nothing readable
    ("failed": cut short, edited: not a completed job)."""
    failed = []
    # a job's folder holds its .hydra/, or only what it wrote (rnnreg-generate's: hydra.output_subdir=null)
    jobs = {config.parent.parent for config in sweep_dir.rglob(".hydra/config.yaml")}
    jobs |= {error.parent for error in sweep_dir.rglob(ERROR_FILE)}
    for job in jobs:
        config = job / ".hydra" / "config.yaml"
        written = [p.stat().st_mtime for p in (config, job / "metrics.json", job / ERROR_FILE) if p.exists()]
        if max(written) < since:
            continue
        metrics = job / "metrics.json"
        ended = how_it_ended(job, recorded_metrics(job) if metrics.exists() else {})
        if ended is None and metrics.exists():  # a metrics.json that is none (cut short, edited): not completed
            ended = "failed"
        if ended in ("failed", "interrupted", "stopped"):
            try:
                overrides = recorded_overrides(job) or []
            except DataError:  # listed all the same, by its folder
                overrides = []
            failed.append((str(job.relative_to(sweep_dir)), overrides, ended))
    return sorted(failed, key=lambda f: job_order(f[0]))


def how_it_ended(job: Path, metrics: dict) -> str | None:
    """How a job's files say it ended, read alike by the sweep's end (failed_jobs) and the report: an error.txt
    written last says it ran (again) and stopped with that line ("stopped": a signal before any result,
    record_job_stopped; else "failed"); else its metrics.json (`metrics`, as the caller read it) says, "completed"
    where it has no status (an evaluation's result); None where neither says (no result yet, or none readable)."""
    if error_written_last(job):
        return "stopped" if first_words(job / ERROR_FILE).startswith(STOPPED_BEFORE_A_RESULT) else "failed"
    return metrics.get("status", "completed") if metrics else None


def error_written_last(job: Path) -> bool:
    """Whether a job's error.txt says how it ended: it is there, and newer than any metrics.json (a job that ran again
    after its result, requeued or resumed, and stopped with that error; an error.txt before metrics.json: it ran
    again and recorded how that ended)."""
    error, metrics = job / ERROR_FILE, job / "metrics.json"
    return error.exists() and (not metrics.exists() or error.stat().st_mtime > metrics.stat().st_mtime)


def first_words(path: Path, size: int = 100) -> str:
    """The start of a job's error.txt; "" where it cannot be read (the job is then listed as failed)."""
    try:
        with open(path, errors="replace") as f:
            return f.read(size)
    except OSError:
        return ""


def recorded_overrides(folder: Path) -> list[str] | None:
    """A job folder's command-line overrides as Hydra recorded them (.hydra/overrides.yaml); None without the file.
    A file cut short or edited (a folder from elsewhere) is a one-line DataError naming it."""
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        overrides = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        why = first_line(err)
    else:
        if overrides is None or (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
            return overrides or []
        why = "not a list of overrides"
    raise DataError(f"{path} is not readable ({why}): restore it, or move the job's folder away")


def job_order(folder: str) -> list:
    """Sorts job folders by number: 2 before 10 (and named folders after numbered ones)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in Path(folder).parts]


def check_sweep_folder(config: DictConfig) -> None:
    """A ConfigError or OutputError, before the sweeper writes anything, when this multirun would write over
    results: jobs that share one folder (a hydra.sweep.subdir that names no job, or does not tell two apart:
    check_job_folders), or a sweep folder with an earlier multirun's results
    (its job numbers start at 0 again), unless a stacked sweep goes on (hydra.launcher.resume=true: its finished
    groups are kept, the others resumed)."""
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if "${" not in str(subdir or ""):
        raise ConfigError(
            f"hydra.sweep.subdir={subdir or ''} puts every job of the multirun in one folder, each writing over the "
            f"last one's files: give each job its own (the default is hydra.sweep.subdir=${{hydra.job.num}})"
        )
    check_no_links(config.hydra.sweep.dir, "hydra.sweep.dir", below=True)  # (one the command's check could not name)
    check_job_folders(config, str(subdir))
    if OmegaConf.select(config, "hydra.launcher.resume", default=False):
        check_resumed_jobs(config)
        return
    sweep_dir = Path(config.hydra.sweep.dir).absolute()
    # the folders that hold them: jobs (their metrics.json, their checkpoints/) and a stacked group's .stacked/
    files = [Path(f) for f in earlier_results(sweep_dir, below=True)]
    found = sorted({str(f.parent.parent if f.parent.name == "checkpoints" else f.parent) for f in files}, key=job_order)
    if not found:
        return
    written_over = folders_written_over(config, sweep_dir, str(subdir), found)
    if not written_over:  # its jobs go to other folders (hydra.sweep.subdir=s${seed}): its record is replaced
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise OutputError(
            f"{sweep_dir} holds an earlier multirun's results (in {shown}): this multirun would replace its "
            f"multirun.yaml, and rnnreg-report would read the two as one sweep: give it another folder "
            f"(hydra.sweep.dir=...), or remove that folder first"
        )
    stacked = uses_stacked_launcher(config)
    made_by = [recorded_launcher(sweep_dir / folder) for folder in written_over]
    go_on = ""
    if stacked and all(launcher == STACKED_LAUNCHER for launcher in made_by if launcher):
        go_on = ", go on with the same command and hydra.launcher.resume=true"
    raise OutputError(results_message(sweep_dir, written_over, "hydra.sweep.dir", go_on, what="multirun"))


def folders_written_over(config: DictConfig, sweep_dir: Path, subdir: str, found: list[str]) -> list[str]:
    """Of `found` (the folders in `sweep_dir` that hold an earlier multirun's results), those a job of this
    multirun writes in; all of them where its jobs' folders are not known before they run (another sweeper's)."""
    from hydra.core.global_hydra import GlobalHydra

    if not basic_sweeper(config):
        return found
    if subdir == NUMBERED_SUBDIR:  # (each job's number: no job composed)
        mine = {str(num) for num in range(len(sweep_jobs(config, GlobalHydra.instance().config_loader())))}
    else:
        mine = {os.path.relpath(folder, sweep_dir) for _, folder in job_folders(config) or []}
    return [folder for folder in found if any(folder == job or folder.startswith(f"{job}/") for job in mine)]


def recorded_launcher(job_dir: Path) -> str | None:
    """The launcher (its _target_) a job's `.hydra/hydra.yaml` says ran it; None without one."""
    try:
        hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        return str(hydra["launcher"]["_target_"])
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return None


def same_overrides(a: list[str], b: list[str]) -> bool:
    """One job's overrides, in whatever order the command gives them (the same key=value pairs: the same job)."""
    return set(a) == set(b)


def check_resumed_jobs(config: DictConfig) -> None:
    """hydra.launcher.resume=true goes on with a stacked sweep's own jobs. A ConfigError or OutputError, before
    anything is written, when a job's folder holds a job of other overrides (its .hydra/ and its results would
    be another job's), or the results of a job that another launcher ran (a stacked group would train it again
    from its start, writing over them)."""
    folders = job_folders(config)
    if folders is None:
        return  # another sweeper's jobs come one by one: its group's resume file holds their fingerprint
    for num, (overrides, folder) in enumerate(folders):
        if folder.exists() and not folder.is_dir():
            raise OutputError(
                f"{folder} is a file where job {num}'s folder goes: move it away, or start another sweep "
                f"(hydra.sweep.dir=...)"
            )
        recorded_file = folder / ".hydra" / "overrides.yaml"
        recorded = recorded_overrides(folder)
        if recorded is None:
            continue
        if not same_overrides(recorded, overrides):
            before = " ".join(o for o in recorded if o not in overrides) or "nothing"
            now = " ".join(o for o in overrides if o not in recorded) or "nothing"
            if renumbered(folders):
                raise ConfigError(
                    f"hydra.launcher.resume=true: this command numbers the jobs of the sweep in "
                    f"{config.hydra.sweep.dir} otherwise (its job {num} ran with {before} where this command has "
                    f"{now}): give the sweep overrides in the order of the sweep's own command (its overrides are "
                    f"in {recorded_file})"
                )
            raise ConfigError(
                f"hydra.launcher.resume=true goes on with the sweep in {config.hydra.sweep.dir} as it was started, and "
                f"its job {num} ran with {before} where this command has {now}: resume with the sweep's own command "
                f"(its overrides are in {recorded_file}), or start another sweep (hydra.sweep.dir=...)"
            )
        found = earlier_results(folder)
        launcher = recorded_launcher(folder)
        if found and launcher != STACKED_LAUNCHER:
            name = (launcher or "another launcher").rsplit(".", 1)[-1]
            raise OutputError(
                f"{folder} holds the results of job {num} run by {name} (in {', '.join(found[:3])}), which a stacked "
                f"sweep would train again from its start, writing over them: go on with that job alone (rnnreg-train "
                f"<its overrides> {pasted_override('ckpt_path', folder / 'checkpoints' / 'last.ckpt')}; rnnreg-report "
                f"{pasted_override('path', config.hydra.sweep.dir)} prints the command), or give this sweep another "
                f"folder (hydra.sweep.dir=...)"
            )


def renumbered(folders: list[tuple[list[str], Path]]) -> bool:
    """Whether a command's jobs are the sweep's own, numbered otherwise (its sweep overrides in another order
    than the sweep's command gave them): every job folder's recorded overrides are one of this command's jobs."""
    recorded = [recorded_overrides(folder) for _, folder in folders]
    return {frozenset(r) for r in recorded if r is not None} <= {frozenset(overrides) for overrides, _ in folders}


def basic_sweeper(config: DictConfig) -> bool:
    """Whether the multirun's sweeper is Hydra's basic one (every job known before the first runs)."""
    return OmegaConf.select(config, "hydra.sweeper._target_") == BASIC_SWEEPER


def basic_sweep_jobs(params: Mapping, task: list[str], config_loader=None) -> list[list[str]]:
    """Each job's overrides, in job order, as Hydra's basic sweeper splits a multirun: its search space
    (hydra.sweeper.params, a mapping) and then the command line's overrides (hydra.overrides.task). Without a
    `config_loader` a glob over a group's options cannot be expanded (a HydraException)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    lines = [f"{key}={value}" for key, value in params.items()] + list(task)
    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(lines)
    (jobs,) = BasicSweeper.split_arguments(parsed, None)  # one batch (Hydra numbers jobs on over its batches)
    return [list(overrides) for overrides in jobs]


def sweep_jobs(config: DictConfig, config_loader) -> list[list[str]]:
    """basic_sweep_jobs for this multirun's config, with what the sweeper would stop on said in one line."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    try:
        return basic_sweep_jobs(params, task_overrides(config.hydra), config_loader)
    except HydraException as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None


def job_configs(config: DictConfig, first_only: bool = False) -> list[tuple[list[str], DictConfig]] | None:
    """Each job's overrides and config (or the first job's only), in job order, as Hydra's basic sweeper and
    launcher will compose them (hydra.job.num set); None for another sweeper (Optuna's jobs come one by one)."""
    from hydra.core.global_hydra import GlobalHydra

    if not basic_sweeper(config):
        return None
    loader = GlobalHydra.instance().config_loader()
    jobs = sweep_jobs(config, loader)
    composed = []
    for num, overrides in enumerate(jobs[:1] if first_only else jobs):
        job_config = loader.load_sweep_config(config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.id = num
            job_config.hydra.job.num = num
        composed.append((list(overrides), job_config))
    return composed


@contextmanager
def inside_job(job_config: DictConfig) -> Iterator[None]:
    """Hydra's config set to a job's for the while: what resolves `${hydra:...}` in it (its number, its choices)."""
    instance = HydraConfig.instance()
    original = instance.cfg
    read_only = OmegaConf.is_readonly(job_config.hydra)  # (set_config makes it read-only: left as it was)
    instance.set_config(job_config)
    try:
        yield
    finally:
        instance.cfg = original
        OmegaConf.set_readonly(job_config.hydra, read_only)


def job_folders(config: DictConfig, first_only: bool = False) -> list[tuple[list[str], Path]] | None:
    """Each job's overrides and folder (or the first job's only), in job order (job_configs); None for another
    sweeper."""
    jobs = job_configs(config, first_only)
    if jobs is None:
        return None
    folders = []
    for overrides, job_config in jobs:
        with inside_job(job_config):  # for ${hydra:...} in the subdir
            folder = Path(str(job_config.hydra.sweep.dir), str(job_config.hydra.sweep.subdir))
        folders.append((overrides, Path(os.path.abspath(folder))))
    return folders


def check_job_folders(config: DictConfig, subdir: str) -> None:
    """A ConfigError, before any job's folder is made, when a hydra.sweep.subdir gives two jobs one folder
    (`${seed}` while sweeping dropout, an override_dirname that excludes a swept key) or does not resolve. A
    subdir with the job's number names every job apart: only the first job's is resolved."""
    from hydra.core.global_hydra import GlobalHydra

    if subdir == NUMBERED_SUBDIR:  # each job's folder is its number: nothing to resolve (no job composed)
        if basic_sweeper(config):
            sweep_jobs(config, GlobalHydra.instance().config_loader())
        return
    numbered = "hydra.job.num" in subdir or "hydra.job.id" in subdir
    try:
        folders = job_folders(config, first_only=numbered)
    except OmegaConfBaseException as err:  # Hydra would stop at the first job with a traceback
        raise ConfigError(f"hydra.sweep.subdir={subdir}: {str(err).splitlines()[0]}") from None
    if folders is None:
        return  # another sweeper: a job that finds another's results in its folder stops there (rnnreg.training)
    seen: dict[Path, int] = {}
    swept = swept_keys(config.hydra) or None
    for num, (_, folder) in enumerate(folders):
        if folder in seen:
            first = seen[folder]
            jobs = [f"{n} ({job_label(folders[n][0], swept)})" for n in (first, num)]
            raise ConfigError(
                f"hydra.sweep.subdir={subdir} gives jobs {jobs[0]} and {jobs[1]} one folder, {folder}, each writing "
                f"over the other's files: name each job's folder apart (with the keys it sweeps, or ${{hydra.job.num}})"
            )
        seen[folder] = num


class JobsComposedOnce:
    """A config loader's load_sweep_config that composes each job once: Hydra's basic sweeper composes every job of
    a batch to check it (Sweeper.validate_batch_is_legal), then the launcher composes it again to run it, and
    check_sweep_folder may compose it before both (a subdir to resolve, a stacked sweep going on). Each caller gets
    its own copy of the first (the launcher sets the job's number in it), a small part of a composition's time."""

    def __init__(self, compose: Callable[[DictConfig, list[str]], DictConfig]) -> None:
        self.compose = compose
        self.composed: dict[tuple[int, tuple[str, ...]], tuple[DictConfig, DictConfig]] = {}

    def __call__(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        if key not in self.composed:  # (the master kept beside it: its id is not another's while this lives)
            self.composed[key] = (master_config, self.compose(master_config, sweep_overrides))
        return copy.deepcopy(self.composed[key][1])

    @staticmethod
    def install(config: DictConfig) -> None:
        """On Hydra's config loader, for a launcher that runs the jobs in this process (basic, stacked): joblib's
        and submitit's compose each job where it runs, and pickle the loader to send it there."""
        from hydra.core.global_hydra import GlobalHydra

        if OmegaConf.select(config, "hydra.launcher._target_") in (BASIC_LAUNCHER, STACKED_LAUNCHER):
            loader = GlobalHydra.instance().config_loader()
            loader.load_sweep_config = JobsComposedOnce(loader.load_sweep_config)

    @staticmethod
    def forget() -> None:
        """Compose each job again when next asked (Hydra's config changed: rnnreg.sweep_folder.pin)."""
        from hydra.core.global_hydra import GlobalHydra

        composer = vars(GlobalHydra.instance().config_loader()).get("load_sweep_config")
        if isinstance(composer, JobsComposedOnce):
            composer.composed.clear()

    @staticmethod
    def uninstall() -> None:
        from hydra.core.global_hydra import GlobalHydra

        if GlobalHydra.instance().is_initialized():
            vars(GlobalHydra.instance().config_loader()).pop("load_sweep_config", None)


# the folder of the sweep that rank zero runs, for the DDP processes that Lightning starts with its command line
RANK_ZERO_SWEEP = "RNNREG_RANK_ZERO_SWEEP"


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.started = 0.0
        self.lock: RunLock | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1  # file times can be coarser than time.time()
        JobsComposedOnce.install(config)
        try:
            self.claim_sweep_folder(config)
        except UserError as err:
            if self.lock is not None:
                self.lock.release()
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except Exception:  # Hydra would only warn and run the sweep without the lock and the checks
            traceback.print_exc()
            sys.exit(1)
        if self.lock is not None:  # a sweep a job ends early (rnnreg-generate -m ... | head) ends here too
            atexit.register(self.let_go, config)

    def let_go(self, config: DictConfig) -> None:
        """The sweep folder as the sweep leaves it, however it ends: its lock removed, and an rnnreg-generate
        sweep's empty job folders (its samples went to stdout)."""
        atexit.unregister(self.let_go)
        if self.lock is None:
            return
        os.environ.pop(RANK_ZERO_SWEEP, None)
        self.lock.release()
        if config.get("task_name") == "generate":
            drop_empty_job_folders(Path(config.hydra.sweep.dir), self.started)

    def claim_sweep_folder(self, config: DictConfig) -> None:
        if uses_stacked_launcher(config):
            check_launcher_settings(config.hydra.launcher)
        # the sweep folder is this multirun's while it runs, whatever its launcher: a second multirun there stops
        # before the sweeper writes multirun.yaml, and rnnreg-report tells a running job from a killed one
        from rnnreg.sweep_folder import follow_rank_zero, pin_sweep_folder  # (here: they read this module's jobs)

        if not launched_as_rank_zero():  # a DDP process that Lightning started with rank 0's command line (-m too)
            follow_rank_zero(config)
            return
        from rnnreg.sweep_wandb import check_wandb_runs

        pin_sweep_folder(config)  # every job's folder in the sweep's own
        check_wandb_runs(config)  # (it reads no folder: before the lock makes the sweep folder's parents)
        self.lock = RunLock(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
        self.lock.acquire()
        check_sweep_folder(config)
        try:
            sweep_dir = Path(config.hydra.sweep.dir)
        except OmegaConfBaseException as err:  # Hydra would stop at the sweep with a traceback
            raise ConfigError(f"hydra.sweep.dir: {str(err).splitlines()[0]}") from None
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(yaml.safe_dump({"swept": swept_keys(config.hydra)}))
        record, resumed = sweep_dir / "multirun.yaml", OmegaConf.select(config, "hydra.launcher.resume", default=False)
        if not basic_sweeper(config) and not (resumed and record.exists()):
            OmegaConf.save(config, record)  # Optuna's sweeper writes no record of its command (the basic one does)
        # (the DDP processes that Lightning starts take this process's environment)
        os.environ[RANK_ZERO_SWEEP] = str(sweep_dir.resolve())

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        JobsComposedOnce.uninstall()
        claimed = self.lock is not None  # (rank zero's multirun: not a DDP process that Lightning started)
        self.let_go(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        compare = f"rnnreg-report {pasted_override('path', sweep_dir)}"
        ended = failed_jobs(sweep_dir, self.started)
        if not ended:
            if claimed and config.get("task_name") == "train":  # the next command, with the folder it needs
                print(f"the multirun's jobs completed in {sweep_dir}: {compare} compares them")
            return
        swept = swept_keys(config.hydra) or None
        for kind, words, then in (
            ("failed", "failed", ""),
            (
                "interrupted",
                "were stopped by a signal",
                f" ({compare} gives the commands that go on)",
            ),
            ("stopped", "were stopped by a signal before they wrote a result", " (run them again)"),
        ):
            labels = [(job, job_label(overrides, swept)) for job, overrides, how in ended if how == kind]
            listed = [f"{job} ({label})" if label else job for job, label in labels]  # (no .hydra/: its own line said)
            if listed:
                print(
                    f"error: {len(listed)} job(s) of the multirun in {sweep_dir} {words}: {', '.join(listed)}{then}",
                    file=sys.stderr,
                )
        sys.exit(1)


def drop_empty_job_folders(sweep_dir: Path, since: float) -> None:
    """The job folders an rnnreg-generate multirun's jobs left empty (its samples go to stdout, with no record in
    their folders, hydra.output_subdir=null; a failed job's holds its error.txt): those made `since` then."""
    for folder in sweep_dir.iterdir() if sweep_dir.is_dir() else ():
        if (
            folder.is_dir()
            and not folder.is_symlink()
            and folder.stat().st_mtime >= since
            and not any(folder.iterdir())
        ):
            with contextlib.suppress(OSError):  # (made again meanwhile, or not ours to remove)
                folder.rmdir()
