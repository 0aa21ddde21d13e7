"""What a multirun's jobs are and what each knows of its sweep: the keys the sweep varies (sweep.yaml, for run
names), the overrides that tell its jobs apart (in a message, a run's name, the report), its sweeper and launcher,
which sweep, and of which kind, a job in its numbered folder ran in (sweep_job), and each job's overrides, config
and folder composed as Hydra's basic sweeper and launcher will compose them (once: JobsComposedOnce). Hydra,
OmegaConf and YAML only: read by the command line's checks, the sweep's callback (rnnreg.sweep), its folder
(rnnreg.sweep_folder), its W&B runs (rnnreg.sweep_wandb), the launchers, the W&B logger and the report.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError
from rnnreg.record_yaml import read_yaml, recorded_swept_keys, section

SWEEP_FILE = "sweep.yaml"
# hydra/launcher=stacked's class as its config names it for Hydra: conf/hydra/launcher/stacked.yaml, its one owner
STACKED_LAUNCHER = str(yaml.safe_load(Path(CONF_DIR, "hydra", "launcher", "stacked.yaml").read_text())["_target_"])
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # Hydra's default sweeper
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # ... and launcher
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"  # hydra/sweeper=optuna's class
NUMBERED_SUBDIR = "${hydra.job.num}"  # a job's folder in its sweep's: its number (conf/hydra/default.yaml)
# the kinds of sweep a job in a numbered folder ran in (SweepJob.kind)
BASIC_SWEEP, OPTUNA_STUDY, STACKED_SWEEP = "basic sweep", "Optuna study", "stacked sweep"


def uses_stacked_launcher(config: DictConfig) -> bool:
    """Whether a command's jobs run on hydra/launcher=stacked (`config`: composed with Hydra's node)."""
    return OmegaConf.select(config, "hydra.launcher._target_", default="") == STACKED_LAUNCHER


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def task_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The command line's overrides as it gave them: an interpolation in one (`+logger.wandb.id=run_${seed}`) is
    each job's to resolve, and `${hydra:...}` cannot be resolved outside a job."""
    return list(OmegaConf.to_container(hydra_cfg.overrides, resolve=False)["task"])


def command_line_gives(key: str) -> bool:
    """Whether this job's command line (its overrides, a sweep's value included) sets `key`; False outside a Hydra
    run (a library caller's config)."""
    return HydraConfig.initialized() and any(override_key(o) == key for o in task_overrides(HydraConfig.get()))


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
    """Inside a multirun job: the keys its sweep varies, as its sweep.yaml records them (None outside a multirun); a
    DataError where that file cannot be read."""
    if not in_multirun():
        return None
    swept = recorded_swept_keys(Path(HydraConfig.get().sweep.dir, SWEEP_FILE))
    if swept is None:
        return swept_keys(HydraConfig.get())  # the search space at least (sweep.yaml written elsewhere)
    return swept


# Overrides that say where a run wrote or how it was watched, never what it computed: runs that differ only in
# these are one configuration (rnnreg-report: seeds of one recipe run into two output roots, one with W&B).
NOT_COMPARED = ("hydra", "paths", "logger", "tags", "extras", "callbacks.progress_bar", "trainer.enable_progress_bar")
# ... nor, in a run's name, how it was budgeted, resumed or where its data lay, nor switches that leave what it
# trains alone: whether it tests at the end, the metric a sweeper is told, its speed settings (conf/train.yaml), its
# sanity check and log interval. A key, its children (`speed.tf32`, `hydra/launcher`), or keys it begins (`limit_`).
NOT_IN_NAMES = NOT_COMPARED + ("ckpt_path", "trainer.limit_", "data.data_dir")
NOT_IN_NAMES += ("test", "optimized_metric", "speed", "trainer.num_sanity_val_steps", "trainer.log_every_n_steps")


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_label(overrides: list[str], swept: list[str] | None) -> str:
    """A sweep's job in a message: the overrides that tell it apart (differing), or, where those are all of a kind
    that names no run (an evaluation sweep over ckpt_path=a,b), the swept ones as they are; none in a multirun
    that varies nothing (`swept` empty)."""
    told_apart = differing(overrides, swept) or [o for o in overrides if swept is None or override_key(o) in swept]
    return " ".join(told_apart)


def job_named(num: int | str, overrides: list[str], swept: list[str] | None) -> str:
    """A sweep's job as a message names it: its number, then what tells it apart (`3 (seed=2)`; `0` alone where
    the multirun varies nothing)."""
    label = job_label(overrides, swept)
    return f"{num} ({label})" if label else str(num)


def in_names(key: str) -> bool:
    """Whether an override of `key` may name a run: none of NOT_IN_NAMES (`test`, not `test_ckpt`, which changes what
    the run tests)."""
    return not any(
        key == k or key.startswith((f"{k}.", f"{k}/")) or (k.endswith("_") and key.startswith(k)) for k in NOT_IN_NAMES
    )


def differing(overrides: list[str], swept: list[str] | None) -> list[str]:
    """The overrides that tell a sweep's jobs apart: the swept ones (all of them outside a sweep), less
    those in NOT_IN_NAMES; a key given twice once, with its last value (the one Hydra applies last)."""
    keys = [override_key(o) for o in overrides]
    last = {key: i for i, key in enumerate(keys)}
    return [
        o
        for i, (o, key) in enumerate(zip(overrides, keys))
        if last[key] == i and (swept is None or key in swept) and in_names(key)
    ]


def same_overrides(a: list[str], b: list[str]) -> bool:
    """One job's overrides, in whatever order the command gives them (the same key=value pairs: the same job)."""
    return set(a) == set(b)


def is_sweep_folder(folder: Path) -> bool:
    """A multirun's folder: Hydra's multirun.yaml or rnnreg's sweep.yaml in it."""
    return (folder / "multirun.yaml").is_file() or (folder / SWEEP_FILE).is_file()


class SweepJob(NamedTuple):
    """A job in the numbered folder its sweep gave it (`<sweep>/3`): `folder`, and `sweep`, its sweep's folder."""

    folder: Path
    sweep: Path

    def kind(self) -> str | None:
        """The kind of sweep that ran the job, as the records say (read when asked; a DataError where one cannot
        be read): OPTUNA_STUDY where its own .hydra/hydra.yaml names Optuna's sweeper (its trial goes on in its
        folder alone, outside its study: its sweeper sampled it); BASIC_SWEEP where the sweep's multirun.yaml is
        basic_sweep_record's; STACKED_SWEEP where it names hydra/launcher=stacked (its sweep goes on by its resume
        switch); None for any other."""
        record = self.folder / ".hydra" / "hydra.yaml"
        if record.is_file():
            hydra = section(read_yaml(record), record, "hydra")
            if section(hydra, record, "sweeper").get("_target_") == OPTUNA_SWEEPER:
                return OPTUNA_STUDY
        if basic_sweep_record(self.sweep) is not None:
            return BASIC_SWEEP
        record = self.sweep / "multirun.yaml"
        hydra = section(read_yaml(record), record, "hydra")
        return STACKED_SWEEP if section(hydra, record, "launcher").get("_target_") == STACKED_LAUNCHER else None


def sweep_job(folder: Path) -> SweepJob | None:
    """`folder` as a sweep's job in the numbered folder its sweep gave it: its name a number, in a multirun's folder
    (is_sweep_folder); None elsewhere."""
    return SweepJob(folder, folder.parent) if folder.name.isdigit() and is_sweep_folder(folder.parent) else None


def basic_sweep_record(sweep: Path, any_subdir: bool = False) -> dict | None:
    """The hydra node of `sweep`'s multirun.yaml where Hydra's basic sweeper ran its jobs in numbered folders (or,
    `any_subdir`, in folders of any hydra.sweep.subdir), each a process of its own to go on with (not the stacked
    launcher's: it goes on by its resume switch); else None."""
    record = sweep / "multirun.yaml"
    hydra = section(read_yaml(record), record, "hydra")
    sweeper, subdir = section(hydra, record, "sweeper"), section(hydra, record, "sweep").get("subdir")
    if sweeper.get("_target_") != BASIC_SWEEPER or (subdir != NUMBERED_SUBDIR and not any_subdir):
        return None
    if section(hydra, record, "launcher").get("_target_") == STACKED_LAUNCHER:
        return None
    return hydra


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
