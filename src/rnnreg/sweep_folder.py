"""One folder per multirun: every job's folder inside the one where the sweep keeps its record.

Hydra resolves hydra.sweep.dir once for the sweep (its lock, multirun.yaml, sweep.yaml, the summary at its end)
and again in each job, so a folder that reads a swept key splits the jobs: our default reads ${experiment_name},
and `-m experiment=paper_small,paper_medium` put each job under its own experiment's folder, with the record,
the failed-job summary and the rnnreg-report hint in the default experiment's folder, which held no job.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError, first_line
from rnnreg.multirun_jobs import JobsComposedOnce, inside_job, job_configs, job_named, swept_keys, task_overrides
from rnnreg.override_text import quoted_for_hydra

# conf/hydra/default.yaml, its one owner: a sweep's folder named after its experiment
DEFAULT_SWEEP_DIR = str(yaml.safe_load(Path(CONF_DIR, "hydra", "default.yaml").read_text())["sweep"]["dir"])
EXPERIMENT_NAME = "${experiment_name}"
ALL_EXPERIMENTS = "experiments"  # the name of a search over experiments that it does not list
LONGEST_NAME = 80  # a folder named after more experiments than this holds says how many instead
# the folder of the sweep that rank zero runs, for the DDP processes that Lightning starts with its command line
RANK_ZERO_SWEEP = "RNNREG_RANK_ZERO_SWEEP"


def pin_sweep_folder(config: DictConfig) -> None:
    """Give every job of the multirun the sweep's own folder, before anything is written. Where the default folder
    differs between jobs (a sweep over experiments), the sweep's folder is named after all of them
    (`multirun/paper_small+paper_medium/<time>`) and set for every job; a hydra.sweep.dir the command or a config
    gives that differs between jobs is a ConfigError (the jobs' folders go in hydra.sweep.subdir)."""
    template = str(OmegaConf.to_container(config.hydra.sweep, resolve=False)["dir"])
    sweep_dir = resolved_sweep_dir(config)  # first: its ${now:...} is cached, and each job's composition copies it
    try:
        jobs = job_configs(config)
    except OmegaConfBaseException as err:  # (a job that does not compose: the pre-check said so for the command line)
        raise ConfigError(first_line(err)) from None
    if jobs is None:  # another sweeper's jobs come one by one: what it searches is known before
        names = searched_experiments(config)
        if names and template == DEFAULT_SWEEP_DIR:
            pin(config, template, names)
        elif "${" in template.replace("${now:", ""):  # (a folder that reads no key is every trial's)
            check_trials_share_the_folder(config, template, sweep_dir)
        return
    folders = [job_sweep_dir(job_config) for _, job_config in jobs]
    if all(folder == sweep_dir for folder in folders):
        return
    if template == DEFAULT_SWEEP_DIR:
        pin(config, template, list(dict.fromkeys(str(job_config.experiment_name) for _, job_config in jobs)))
        template = sweep_dir = str(config.hydra.sweep.dir)
        folders = [job_sweep_dir(job_config) for _, job_config in job_configs(config)]
        if all(folder == sweep_dir for folder in folders):
            return  # (else a swept key that the default's other parts read: paths=...)
    num = next(n for n, folder in enumerate(folders) if folder != sweep_dir)
    swept = swept_keys(config.hydra)
    raise ConfigError(
        f"hydra.sweep.dir={template} differs between the multirun's jobs (job {job_named(num, jobs[num][0], swept)} "
        f"would go to {folders[num]}, the sweep's record to {sweep_dir}): give a folder that no swept key changes, "
        f"and tell the jobs apart in hydra.sweep.subdir (each job's folder inside it)"
    )


def follow_rank_zero(config: DictConfig) -> None:
    """A DDP process that Lightning started runs rank zero's command line, `-m` and all: the sweep again, job for job
    beside rank zero. Its jobs' folders are rank zero's (its log beside rank zero's, as in a DDP run), and the record
    its sweeper writes (multirun.yaml) goes to a folder of its own, removed as it ends: never over rank zero's record
    (before: the process's own dated sweep folder, or rank zero's record replaced by this process's command)."""
    rank_zero_sweep = os.environ.get(RANK_ZERO_SWEEP)
    if not rank_zero_sweep:  # (a sweep that rnnreg did not start: Hydra's folders as they are)
        return
    subdir = str(OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"])
    own = tempfile.mkdtemp(prefix="rnnreg-ddp-sweep-")
    atexit.register(shutil.rmtree, own, ignore_errors=True)
    # the subdir made absolute: Hydra's os.path.join of the two keeps it
    folders = {"hydra.sweep.dir": own, "hydra.sweep.subdir": os.path.join(rank_zero_sweep, subdir)}
    for key, folder in folders.items():
        OmegaConf.update(config, key, folder)
        config.hydra.overrides.hydra.append(f"{key}={quoted_for_hydra(folder)}")
    JobsComposedOnce.forget()


def check_trials_share_the_folder(config: DictConfig, template: str, sweep_dir: str) -> None:
    """A hydra.sweep.dir given to a search sweeper (Optuna) is each trial's too: a ConfigError where a trial would
    resolve it to another folder than the sweep's (its record, the study's results), as for Hydra's basic sweeper.
    Each searched key is tried at each of its values (searched_values) with the command line's fixed values."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    loader, fixed = GlobalHydra.instance().config_loader(), fixed_task_overrides(config)
    for key, value in searched_values(config):
        try:
            job_config = loader.load_sweep_config(config, [*fixed, f"{key}={value}"])
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(first_line(err)) from None
        folder = job_sweep_dir(job_config)
        if folder != sweep_dir:
            raise ConfigError(
                f"hydra.sweep.dir={template} differs between the search's trials (a trial of {key}={value} would go "
                f"to {folder}, the sweep's record to {sweep_dir}): give a folder that no searched key changes, and "
                "tell the trials apart in hydra.sweep.subdir (each trial's folder inside it)"
            )


def searched_values(config: DictConfig) -> list[tuple[str, str]]:
    """Each key a search sweeper searches (its space's params, then the command line's: the last search of a key
    is its search; none for a key given a fixed value too, which every trial takes) with the values its trials may
    take, as override values: a choice's or range's each, an interval's two ends."""
    from hydra.core.override_parser.types import IntervalSweep
    from hydra.errors import HydraException

    from rnnreg.optuna_grid import parsed_search_lines, searched_key

    parsed = parsed_search_lines(config)
    if any(override is None for _, override in parsed):  # (the sweeper says what is wrong with its own space)
        return []
    searches: dict[str, tuple] = {}  # a key's last search: its key as written (`+` and all), its override
    for line, override in parsed:
        written = line.partition("=")[0].removeprefix("hydra.sweeper.params.")
        searches[searched_key(line)] = (written, override if override.is_sweep_override() else None)
    values = []
    for key, override in searches.values():
        if override is None:
            continue
        if override.is_discrete_sweep():
            try:
                values += [(key, value) for value in override.sweep_string_iterator()]
            except HydraException:  # (a glob of a group's options: the sweeper reads it, if it can)
                continue
        elif isinstance(override.value(), IntervalSweep):
            values += [(key, str(end)) for end in (override.value().start, override.value().end)]
    return values


def fixed_task_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides that every trial of a search takes as given (Optuna's plugin adds them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(task_overrides(config.hydra))
    return [override.input_line for override in parsed if not override.is_sweep_override()]


def pin(config: DictConfig, template: str, names: list[str]) -> None:
    """Name the sweep's folder after `names` (its experiments) and give it to every job: as an override of Hydra's
    config, which each job's composition starts from (Hydra's load_sweep_config)."""
    name = "+".join(names)
    if len(name) > LONGEST_NAME:
        name = f"{len(names)}_experiments"
    config.hydra.sweep.dir = template.replace(EXPERIMENT_NAME, name)
    folder = resolved_sweep_dir(config)
    config.hydra.sweep.dir = folder
    config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted_for_hydra(folder)}")
    JobsComposedOnce.forget()  # (the jobs composed so far have the folder they had)


def resolved_sweep_dir(config: DictConfig) -> str:
    try:
        return str(config.hydra.sweep.dir)
    except OmegaConfBaseException as err:  # Hydra would stop at the sweep with a traceback
        raise ConfigError(f"hydra.sweep.dir: {first_line(err)}") from None


def job_sweep_dir(job_config: DictConfig) -> str:
    with inside_job(job_config):  # (for ${hydra:...} in it)
        return resolved_sweep_dir(job_config)


def searched_experiments(config: DictConfig) -> list[str]:
    """The experiments a search sweeper's space holds (experiment or experiment_name, on the command line or in
    hydra.sweeper.params): its choices where listed, else ALL_EXPERIMENTS; none where a fixed value is
    given too (Optuna's plugin takes a key given a fixed value out of its search: every trial's is that one). A
    name given (experiment_name) is what names the trials, whatever experiment they compose."""
    from rnnreg.optuna_grid import parsed_search_lines, searched_key

    parsed = parsed_search_lines(config)  # (its params resolved, as the plugin reads them: ${oc.env:X} may search)
    if any(override is None for _, override in parsed):  # (the sweeper says what is wrong with its own space)
        return []
    for key in ("experiment_name", "experiment"):
        given = [override for line, override in parsed if searched_key(line) == key]
        if any(not override.is_sweep_override() for override in given):
            return []
        if given:  # (the command line's, after the space's: the plugin's search takes the last)
            searched = given[-1]
            return list(searched.sweep_string_iterator()) if searched.is_discrete_sweep() else [ALL_EXPERIMENTS]
    return []
