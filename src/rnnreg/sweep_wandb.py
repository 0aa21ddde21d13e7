"""A multirun's jobs and their W&B runs: one run per job. Two jobs with one logger.wandb.id (or WANDB_RUN_ID) would
each log over the other's history in one run, and so would two jobs that resume checkpoints of one W&B run (a resume
goes on in the run its checkpoint was written in: `-m ckpt_path=a/best.ckpt,a/last.ckpt`, or `ckpt_path=last` that
finds one checkpoint for two jobs, or two trials of an Optuna study that searches ckpt_path), or a job given the id
of the run another job resumes. Such a multirun is refused before any job runs (rnnreg.sweep.SweepCallback calls
check_wandb_runs as the multirun starts), with an id that differs per job, or the command that resumes a run once.
A checkpoint is read (as data only, its tensors mapped: rnnreg.resumed_run) only where a job resumes it with W&B."""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rnnreg.errors import ConfigError
from rnnreg.multirun_jobs import (
    in_names,
    inside_job,
    job_configs,
    job_named,
    override_key,
    swept_keys,
    task_overrides,
)
from rnnreg.optuna_grid import parsed_search_lines, search_lines, searched_key, uses_grid_sampler
from rnnreg.resumed_run import Unreadable, checkpoint_run_id, resolve_ckpt_path

ID_KEY = "logger.wandb.id"
# where ckpt_path=last looks: what a search sweeper's trials find there differs where one of these does
LAST_ROOT = "${paths.output_root}/${task_name}/${experiment_name}"
DRAWN_ANEW = "Optuna draws each trial's choice anew"  # (any other sampler: a choice may be drawn twice)
# how a resume's W&B run is chosen, said where a refusal asks for a resume without W&B
RESUMED_RUN = "a resume goes on in the W&B run its checkpoint was written in, and in no other"


class JobRun(NamedTuple):
    """The W&B run a job logs into: `run_id`, and where it comes from: `checkpoint`, the checkpoint the job
    resumes (its `wandb_run_id`; `last`: ckpt_path=last found it), or None (the job's config, or WANDB_RUN_ID)."""

    run_id: str
    checkpoint: str | None = None
    last: bool = False


def check_wandb_runs(config: DictConfig) -> None:
    """A ConfigError, before any job runs, when two jobs of the multirun would log into one W&B run, each over
    the other's history: a logger.wandb.id (or WANDB_RUN_ID) that does not differ between them, checkpoints of one
    W&B run resumed by both (a resume goes on in its checkpoint's run), or one job's id that names the run another
    resumes. An id that differs per job (`run_${seed}`, or swept: `+logger.wandb.id=a,b`) is each job's own."""
    if not names_wandb(config):  # (no job composed for a sweep without W&B)
        return
    jobs = job_configs(config)
    if jobs is None:
        check_study_wandb_run(config)
        return
    swept = swept_keys(config.hydra)
    read = CheckpointRuns()
    seen: dict[str, tuple[int, JobRun]] = {}
    for num, (_, job_config) in enumerate(jobs):
        run = job_run(job_config, read)
        if run is None:
            continue
        if run.run_id in seen and not wandb_off():
            first, earlier = seen[run.run_id]
            labels = [job_named(n, jobs[n][0], swept) for n in (first, num)]
            if earlier.checkpoint is None and run.checkpoint is None:
                raise shared_wandb_run(job_config, run.run_id, f"jobs {labels[0]} and {labels[1]}", config)
            if earlier.checkpoint is not None and run.checkpoint is not None:
                raise resumed_in_one_run(earlier, run, *labels)
            runs, label = {first: earlier, num: run}, dict(zip((first, num), labels))
            resumed = first if earlier.checkpoint is not None else num
            given = num if resumed == first else first
            raise given_a_resumed_run(jobs[given][1], runs[resumed], (given, label[given]), label[resumed], config)
        seen[run.run_id] = (num, run)


def wandb_off() -> bool:
    """WANDB_MODE=disabled (rnnreg.loggers.wandb_disabled): the jobs leave their W&B logger out, and share no run."""
    # (imported here only: rnnreg.loggers imports Lightning, seconds a sweep's start need not wait)
    from rnnreg.loggers import wandb_disabled

    return wandb_disabled()


def names_wandb(config: DictConfig) -> bool:
    """Whether a job of the multirun may log to W&B: the config's logger.wandb, an override or the search space
    that names it (`logger=csv,wandb`), or a swept config group, whose options may select it (`experiment=a,b`)."""
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    return (
        "wandb" in (config.get("logger") or {})
        or any("wandb" in line for line in search_lines(config))
        or any(key in groups for key in swept_keys(config.hydra))
    )


def surely_wandb(config: DictConfig) -> bool:
    """Whether every trial of the study `config` logs to W&B: its logger.wandb, where the search varies no logger
    and no config group (whose options may set one), and W&B is not off (WANDB_MODE=disabled: no trial has one)."""
    if wandb_off():
        return False
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    swept = swept_keys(config.hydra)
    varied = any(key in groups or key.split(".")[0] == "logger" for key in swept)
    return "wandb" in (config.get("logger") or {}) and not varied


def wandb_id_key(job_config: DictConfig) -> tuple[str, object] | None:
    """The key that names a job's W&B run and its value as given (Lightning's WandbLogger takes `version`
    before `id`, and before a resumed checkpoint's run); None without a W&B logger."""
    spec = (job_config.get("logger") or {}).get("wandb")
    if not spec or "_target_" not in spec:
        return None
    given = OmegaConf.to_container(spec, resolve=False)
    key = "version" if given.get("version") not in (None, "") else "id"
    return f"logger.wandb.{key}", given.get(key)


def job_run(job_config: DictConfig, read: CheckpointRuns) -> JobRun | None:
    """The W&B run a job logs into; None where it has no W&B logger, W&B draws a fresh id, or the job stops before
    it logs (a checkpoint it cannot read, or whose run is not a logger.wandb.version or id given: rnnreg.training).
    A resume goes on in its checkpoint's run (`read`: its `wandb_run_id`), a resume from a checkpoint without one in
    the run its config names, as a fresh job."""
    if wandb_id_key(job_config) is None:
        return None
    resumed = resumed_checkpoint(job_config)
    if resumed is False:
        return None
    if resumed is not None:
        checkpoint, last = resumed
        run_id = read(checkpoint)
        if run_id is False:
            return None
        if run_id is not None:
            for named in (f"logger.wandb.{name}" for name in ("version", "id")):  # (the job checks both: training)
                given = given_id(job_config, named)
                if given not in (None, "") and str(given) != run_id:  # the job stops on it
                    return None
            return JobRun(run_id, checkpoint, last)
    run_id = job_wandb_run(job_config)
    return None if run_id is None else JobRun(run_id)


def resumed_checkpoint(job_config: DictConfig, folder: Path | None = None) -> tuple[str, bool] | None | bool:
    """The checkpoint a job resumes, as the job finds it (ckpt_path=last: rnnreg.resumed_run.resolve_ckpt_path,
    from the job's folder, or `folder`), and whether ckpt_path=last found it; None for a fresh job, False where the
    job stops on its ckpt_path (with its own line; a folder that does not resolve: check_job_folders')."""
    try:
        with inside_job(job_config):
            given = job_config.get("ckpt_path")
            if given is None:
                return None
            if folder is None and given == "last":
                folder = Path(str(job_config.hydra.sweep.dir), str(job_config.hydra.sweep.subdir)).absolute()
            path = resolve_ckpt_path(job_config, folder)
    except (ConfigError, OmegaConfBaseException, OSError, TypeError, ValueError):
        return False
    return str(Path(path).expanduser().absolute()), given == "last"


class CheckpointRuns:
    """The W&B run each checkpoint goes on in (rnnreg.resumed_run.checkpoint_run_id), each file read once: a run
    id, None for a checkpoint written without W&B, False for one the job stops on itself (not a rnnreg checkpoint,
    or what it holds as its run's id is none: `unreadable` keeps why)."""

    def __init__(self) -> None:
        self.runs: dict[str, str | None | bool] = {}
        self.unreadable: dict[str, Unreadable] = {}

    def __call__(self, checkpoint: str) -> str | None | bool:
        if checkpoint not in self.runs:
            try:
                self.runs[checkpoint] = checkpoint_run_id(checkpoint)
            except Unreadable as err:
                self.runs[checkpoint] = False
                self.unreadable[checkpoint] = err
        return self.runs[checkpoint]

    def stops_on(self, checkpoint: str) -> bool:
        """Whether a job stops on `checkpoint`, read before: it is no rnnreg checkpoint, or holds no run id."""
        return checkpoint in self.unreadable


def given_id(job_config: DictConfig, key: str = ID_KEY) -> object:
    """A job's logger.wandb.id (or `key`: its version) resolved, None where it has none; one given (not '') must
    be the run a resume goes on in (rnnreg.training)."""
    try:
        with inside_job(job_config):
            return OmegaConf.select(job_config, key)
    except OmegaConfBaseException as err:  # the job would stop with a traceback
        given = value_as_given(job_config, key)
        raise ConfigError(f"{key}={given}: {str(err).splitlines()[0]}") from None


def job_wandb_run(job_config: DictConfig) -> str | None:
    """The id of the W&B run a job starts (wandb_id_key's value resolved in the job, else WANDB_RUN_ID, as wandb
    reads it); None where it has no W&B logger or W&B draws a fresh id."""
    found = wandb_id_key(job_config)
    if found is None:
        return None
    key, given = found
    try:
        return resolved_wandb_run(job_config, key)
    except OmegaConfBaseException as err:  # the job would stop with a traceback
        raise ConfigError(f"{key}={given}: {str(err).splitlines()[0]}") from None


def resolved_wandb_run(config: DictConfig, key: str) -> str | None:
    """The W&B run `key` names, resolved as in the job (its ${hydra:...} too); an id that resolves to null or ''
    is none (W&B then reads WANDB_RUN_ID, or draws a fresh id: None)."""
    with inside_job(config):
        run_id = OmegaConf.select(config, key)
    if run_id in (None, ""):
        return os.environ.get("WANDB_RUN_ID") or None
    return str(run_id)


def check_study_wandb_run(config: DictConfig) -> None:
    """check_wandb_runs for another sweeper (Optuna: its jobs come one by one), from the sweep's config: one id
    for every job is a fixed logger.wandb.id that the search does not vary, or WANDB_RUN_ID without one (on a grid of
    checkpoints of distinct runs, the id of its trials that resume none only: check_fresh_trials), or the
    run of a checkpoint that every trial resumes (a fixed ckpt_path: each trial would go on in its run), or that
    two trials may resume (a searched ckpt_path: Optuna draws each trial's choice anew, so one checkpoint twice,
    or two checkpoints of one run; a grid that gives each checkpoint to one trial, only two of one run). A grid's
    trial that stops on its checkpoint logs into no run: it fails alone, as it does without W&B."""
    trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    found = wandb_id_key(config)
    if found is None or (trials is not None and trials < 2):  # (one trial shares its run with no other)
        return
    key, given = found
    ckpt_paths = study_ckpt_paths(config) if key == ID_KEY else None
    if ckpt_paths is not None:
        setting, choices = ckpt_paths
        read = CheckpointRuns()
        resumed, stops = [], []
        for ckpt in choices:
            found = None if ckpt is None else study_checkpoint(config, ckpt)
            resumed.append(None if ckpt is None else study_resumed_run(config, given, found, read))
            stops.append(found is not None and read.stops_on(found[0]))
        drawn_twice = why_drawn_twice(config) if setting is not None else None
        if read.unreadable and setting is None:  # (every trial resumes it: a single run's line)
            raise ConfigError(next(iter(read.unreadable.values())).line())
        if drawn_twice is None:  # a grid's trial that stops on its checkpoint logs nothing: it fails alone, as without
            # W&B (rnnreg.optuna_study.check_study_checkpoints refuses a study whose every trial stops so)
            kept = [(ckpt, run) for ckpt, run, stop in zip(choices, resumed, stops) if not stop]
            choices, resumed = [ckpt for ckpt, _ in kept], [run for _, run in kept]
            if not choices:  # (no trial logs to W&B: those without it go on from a bad run id, unread)
                return
        runs = [run for run in resumed if isinstance(run, JobRun)]
        # a grid's trials resuming checkpoints of distinct runs each go on in its own; the others start in the run
        # their config gives, checked below as a study that resumes nothing
        once = setting is not None and drawn_twice is None and len({r.run_id for r in runs}) == len(runs)
        if once and runs and False not in resumed:
            fresh = [
                f"ckpt_path={'null' if ckpt is None else ckpt}" for ckpt, run in zip(choices, resumed) if run is None
            ]
            check_fresh_trials(config, (key, given), fresh, runs)
            return
        if runs and not once:
            if not wandb_off():
                raise (
                    resumed_in_two_trials(setting, runs, drawn_twice or "it is two points of Optuna's grid")
                    if setting
                    else resumed_in_every_trial(runs[0])
                )
            return
        if setting is None and resumed[0] is False:  # (every trial stops on it, or its run is not known yet)
            return
    run_id = fresh_trials_run(config, key, given)
    if run_id and not wandb_off():
        raise shared_wandb_run(config, run_id, "every job of the multirun", config)


def fresh_trials_run(config: DictConfig, key: str, given: object) -> str | None:
    """The one W&B run a study's trials that resume no run start (its `key`'s value as `given`, or WANDB_RUN_ID);
    None where each trial's is its own (the id reads what the search varies) or a job stops on it."""
    if given not in (None, "") and (key in swept_keys(config.hydra) or varies_per_job(config, str(given), at=key)):
        return None  # each job's own
    try:
        return resolved_wandb_run(config, key)  # (an interpolation of what no trial changes: resolved here)
    except OmegaConfBaseException:  # (a job stops on it with its own line)
        return None


def check_fresh_trials(config: DictConfig, found: tuple[str, object], fresh: list[str], runs: list[JobRun]) -> None:
    """check_study_wandb_run for a grid whose every other point resumes a checkpoint of a W&B run of its own
    (`runs`): only its `fresh` trials (a ckpt_path without a run, or null) take the run their config names (`found`:
    wandb_id_key's), or WANDB_RUN_ID, which a resume's own id overrides (wandb.init takes its id= first): refused
    where two fresh trials would share it, or one is given a resumed run's id; else each trial logs into its own."""
    run_id = fresh_trials_run(config, *found)
    if not run_id or not fresh or wandb_off():
        return
    if len(fresh) > 1:
        raise shared_wandb_run(config, run_id, f"the trials that resume no W&B run ({', '.join(fresh)})", config)
    resumed = next((run for run in runs if run.run_id == run_id), None)
    if resumed is not None:
        jobs = f"the trial of {fresh[0]} and the one that resumes {resumed.checkpoint}"
        raise shared_wandb_run(config, run_id, jobs, config)


def study_ckpt_paths(config: DictConfig) -> tuple[str | None, list[str]] | None:
    """The checkpoints a search sweeper's trials may resume, as given (`last`; the command line's ${...} unresolved),
    read as Optuna reads its search space (its params resolved, then the command line's overrides; a fixed value in
    either over a search): None and a fixed ckpt_path (the config's where none is given), or a searched one as given
    (`hydra.sweeper.params.ckpt_path=choice(a,b)`, `ckpt_path=a,b`) and its choices. None where no trial resumes,
    or one is searched by what is no choice (a range or an interval of a path: Optuna stops on it itself)."""
    fixed, searched = None, None
    for line, override in parsed_search_lines(config):
        if searched_key(line) != "ckpt_path":
            continue
        if override is None:  # (Hydra says what it cannot parse itself)
            return None
        if override.is_sweep_override():
            searched = (line.lstrip("+"), list(override.sweep_iterator()) if override.is_choice_sweep() else None)
        else:
            fixed = (override.value(),)
    if fixed is None and searched is None:
        fixed = (value_as_given(config, "ckpt_path"),)
    if fixed is not None:
        return None if fixed[0] is None else (None, [str(fixed[0])])
    setting, choices = searched
    return None if choices is None else (setting, [None if choice is None else str(choice) for choice in choices])


def why_drawn_twice(config: DictConfig) -> str | None:
    """Why two trials of a search sweeper (Optuna) may draw one searched ckpt_path choice; None where each choice is
    a trial's once at most: Optuna's GridSampler (hydra/sweeper/sampler=grid) gives each point of its grid to one
    trial (the plugin makes n_trials at most the grid's size), where nothing else is searched with more than one
    value (else a checkpoint is in several points), in a study no storage keeps (a kept study's next command draws
    the points it visited again)."""
    if not uses_grid_sampler(config):
        return DRAWN_ANEW
    sweeper = config.hydra.sweeper
    if OmegaConf.select(sweeper, "storage", default=None, throw_on_resolution_failure=False) is not None:
        return "a study kept in hydra.sweeper.storage draws its grid's points again once it has visited them all"
    if sweeper.get("search_space") is not None:
        return "Optuna's grid holds it once for each point of hydra.sweeper.search_space"
    points = {}  # each searched key's values, as the plugin's grid takes them (a search given later replaces one)
    for line, override in parsed_search_lines(config):
        if override is None:  # (Hydra says what it cannot parse itself)
            return "Optuna's grid is not known before it runs"
        if override.is_sweep_override():  # (a fixed value given later leaves the key in the grid: the plugin's way)
            discrete = override.is_choice_sweep() or override.is_range_sweep()
            points[searched_key(line)] = len(list(override.sweep_iterator())) if discrete else math.inf
    more = [key for key, count in points.items() if key != "ckpt_path" and count > 1]
    return f"Optuna's grid holds it once for each value of {more[0]}" if more else None


def study_checkpoint(config: DictConfig, ckpt: str) -> tuple[str, bool] | None:
    """The checkpoint a trial of a search sweeper resumes where its ckpt_path is `ckpt` (as given, `last` too, where
    the search varies nothing that changes where it looks), as resumed_checkpoint gives it; None where it is not known
    before the trial runs (a ckpt_path that reads what the search varies), or the trial stops on its ckpt_path."""
    if varies_per_job(config, ckpt, at="ckpt_path") or (ckpt == "last" and varies_per_job(config, LAST_ROOT)):
        return None
    try:
        with inside_job(config):
            sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()  # (no trial's own folder has a checkpoint yet)
    except OmegaConfBaseException:
        return None
    trial = copy.deepcopy(config)
    with open_dict(trial):
        trial.ckpt_path = ckpt
    return resumed_checkpoint(trial, sweep_dir) or None


def study_resumed_run(
    config: DictConfig, given: object, resumed: tuple[str, bool] | None, read: CheckpointRuns
) -> JobRun | None | bool:
    """The W&B run a trial of a search sweeper goes on in, resuming the checkpoint `resumed` (study_checkpoint's);
    None where that checkpoint has no run (the trial's is then its config's, as a fresh one's); False where the
    trial's checkpoint (`resumed` None) or run is not known before it runs, or the trial stops on it
    (rnnreg.training: a checkpoint it cannot read, an id given that is not its run)."""
    if resumed is None:
        return False
    run_id = read(resumed[0])
    if run_id is None or run_id is False:
        return run_id
    if given not in (None, "") and (
        ID_KEY in swept_keys(config.hydra) or varies_per_job(config, str(given), at=ID_KEY)
    ):
        return False  # (a trial given another id stops on it)
    try:
        fixed = given_id(config)
    except ConfigError:  # (every trial stops on it, with its own line)
        return False
    if fixed not in (None, "") and str(fixed) != run_id:
        return False
    return JobRun(run_id, *resumed)


INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")  # an innermost ${...}
SAME_IN_EVERY_JOB = ("now", "oc.env")  # resolvers whose value one process keeps (Hydra caches `now`)


def varies_per_job(config: DictConfig, text: str, seen: tuple[str, ...] = (), at: str | None = None) -> bool:
    """Whether `text` (a value as given, ${...} unresolved; the value of key `at`, which a relative `${.key}` reads
    from) may differ between a search sweeper's jobs: it reads a key the search varies (here or through the keys it
    reads), the job (`${hydra:job.num}`), a resolver that may differ, or any key while a config group is searched
    (its options may set it). Where in doubt (a relative key where `at` is not known), True."""
    swept = swept_keys(config.hydra)
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    while match := INTERPOLATION.search(text):  # innermost first, then what holds them
        name, colon, argument = match.group(1).partition(":")
        key = name.strip()
        if colon:
            choice = argument.removeprefix("runtime.choices.") if key == "hydra" else None
            if key not in SAME_IN_EVERY_JOB and not (choice and choice != argument and choice not in swept):
                return True
        else:
            if key.startswith("."):
                key = absolute_key(key, at)
            if key is None or any(k in groups for k in swept):
                return True
            if any(key == k or key.startswith(f"{k}.") or k.startswith(f"{key}.") for k in swept):
                return True
            raw = str(value_as_given(config, key))
            if "${" in raw and (key in seen or varies_per_job(config, raw, (*seen, key), at=key)):
                return True
        text = text[: match.start()] + "x" + text[match.end() :]
    return False


def absolute_key(relative: str, at: str | None) -> str | None:
    """The key a relative interpolation (`.project`: a sibling; `..x`: the parent's sibling) in the value of key `at`
    reads, as OmegaConf resolves it; None where `at` is not known or it reads above the config's root."""
    if at is None:
        return None
    name = relative.lstrip(".")
    up = len(relative) - len(name)  # one dot: the node holding `at`
    parents = at.split(".")[:-1]
    if up - 1 > len(parents) or not name:
        return None
    return ".".join([*parents[: len(parents) - (up - 1)], name])


def value_as_given(config: DictConfig, key: str) -> object:
    """A key's value with its ${...} unresolved (a mapping's or list's as a container); None where it is absent."""
    parent, _, leaf = key.rpartition(".")
    holder = OmegaConf.select(config, parent, default=None, throw_on_resolution_failure=False) if parent else config
    if not isinstance(holder, DictConfig) or leaf not in holder.keys():
        return None
    node = holder._get_node(leaf)
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node._value()


def shared_wandb_run(job_config: DictConfig, run_id: str, jobs: str, config: DictConfig) -> ConfigError:
    """The one line that refuses a multirun whose `jobs` would share the W&B run `run_id`, with an id that
    differs per job, made of the keys the sweep varies."""
    key, given = wandb_id_key(job_config) or (ID_KEY, None)
    from_env = given in (None, "")
    prefix = run_id if from_env or "${" not in str(given) else "run"
    typed = [o for o in task_overrides(config.hydra) if override_key(o) == key]
    # as the command line gave it (+: a key it adds); a key no config has: +; one a config file sets (perhaps only
    # the jobs' own, an experiment swept): ++, Hydra's add or override, which every composition takes
    absent = OmegaConf.select(job_config, key, default="<absent>", throw_on_resolution_failure=False) == "<absent>"
    sign = typed[-1][: len(typed[-1]) - len(typed[-1].lstrip("+"))] if typed else "+" if absent else "++"
    example = f"'{sign}{key}={prefix}_{per_job_part(config)}'"  # (quoted: the shell leaves ${...} to Hydra)
    if from_env:
        return ConfigError(
            f"WANDB_RUN_ID={run_id} puts {jobs} in one W&B run, each logging over another's history: unset "
            f"WANDB_RUN_ID (each job then gets a run of its own), or give each job its own id ({example})"
        )
    return ConfigError(
        f"{key}={given} puts {jobs} in one W&B run ({run_id}), each logging over another's history: "
        f"{leave_out(key, config)} (each job then gets a run of its own), or make it differ per job ({example})"
    )


def leave_out(key: str, config: DictConfig) -> str:
    """How to leave out a key that names a W&B run: the command line's override, or the config file's setting."""
    if any(override_key(o) == key for o in task_overrides(config.hydra)):
        return f"leave {key} out"
    return f"take {key} out of the config file that sets it (or ~{key})"


def resumed_in_one_run(earlier: JobRun, later: JobRun, first: str, second: str) -> ConfigError:
    """The one line that refuses a multirun whose jobs `first` and `second` resume checkpoints of one W&B run (one
    checkpoint, or two): both would go on in it."""
    if earlier.checkpoint == later.checkpoint:
        found = " (ckpt_path=last)" if earlier.last or later.last else ""
        return ConfigError(
            f"jobs {first} and {second} both resume {earlier.checkpoint}{found}, so both would go on in its W&B run "
            f"({later.run_id}), each logging over the other's history: resume it with logger=wandb in one job only, "
            f"and in the others with logger=csv, in a command of their own ({RESUMED_RUN})"
        )
    return ConfigError(
        f"jobs {first} and {second} resume {earlier.checkpoint} and {later.checkpoint}, checkpoints of one W&B run "
        f"({later.run_id}), so both would go on in it, each logging over the other's history: resume one of them "
        f"with logger=wandb, and the other with logger=csv, in a command of its own ({RESUMED_RUN})"
    )


def given_a_resumed_run(
    job_config: DictConfig, resumed: JobRun, given: tuple[int, str], other: str, config: DictConfig
) -> ConfigError:
    """The one line that refuses a multirun whose job `given` (its number and label) is given (by its config, or
    WANDB_RUN_ID) the id of the W&B run that job `other` goes on in, resuming its checkpoint."""
    key, value = wandb_id_key(job_config) or (ID_KEY, None)
    num, label = given
    where = f"W&B run {resumed.run_id}, which job {other} goes on in from its checkpoint {resumed.checkpoint}"
    then = "a resume goes on in its checkpoint's run without it, and each other job gets a run of its own"
    if value in (None, ""):
        return ConfigError(
            f"WANDB_RUN_ID={resumed.run_id} puts job {label} in {where}, each logging over the other's history: "
            f"unset WANDB_RUN_ID ({then}), or give job {num} an id of its own"
        )
    return ConfigError(
        f"{key}={value} puts job {label} in {where}, each logging over the other's history: {leave_out(key, config)} "
        f"({then}), or give job {num} an id of its own"
    )


def resumed_in_every_trial(resumed: JobRun) -> ConfigError:
    """The one line that refuses a search sweeper's multirun (Optuna) whose every trial resumes one checkpoint
    with W&B: each would go on in its run."""
    found = "last" if resumed.last else resumed.checkpoint
    return ConfigError(
        f"ckpt_path={found} puts every job of the multirun in one W&B run ({resumed.run_id}, the run "
        f"{resumed.checkpoint} was written in), each logging over another's history: search from it with "
        f"logger=csv, or resume it with logger=wandb in a single run (no -m) ({RESUMED_RUN})"
    )


def resumed_in_two_trials(setting: str, runs: list[JobRun], why: str = DRAWN_ANEW) -> ConfigError:
    """The one line that refuses a search sweeper's multirun (Optuna) whose searched ckpt_path (`setting`) lets two
    trials resume checkpoints of one W&B run, `runs` (one per choice with a run): two of them, or one drawn twice
    (`why`: why_drawn_twice)."""
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a.run_id == b.run_id]
    if pairs and pairs[0][0].checkpoint != pairs[0][1].checkpoint:
        first, second = pairs[0]
        return ConfigError(
            f"{setting} lets two trials resume {first.checkpoint} and {second.checkpoint}, checkpoints of one W&B run "
            f"({first.run_id}), so both would go on in it, each logging over the other's history: search from them "
            f"with logger=csv, or resume each with logger=wandb in a single run (no -m) ({RESUMED_RUN})"
        )
    drawn = pairs[0][0] if pairs else runs[0]
    return ConfigError(
        f"{setting} lets two trials both resume {drawn.checkpoint} ({why}), so both "
        f"would go on in its W&B run ({drawn.run_id}), each logging over the other's history: search from it with "
        f"logger=csv, or resume it with logger=wandb in a single run (no -m) ({RESUMED_RUN})"
    )


def per_job_part(config: DictConfig) -> str:
    """Interpolations of the keys the sweep varies, which tell its jobs apart (a group by its choice: a group's
    node is no id), and the job's number for what none can name (a list group's options: regularizer=[a],[b]
    has no choice to read) or where nothing is swept."""
    parts, numbered = [], False
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    for key in swept_keys(config.hydra):
        if not in_names(key):
            continue
        node = OmegaConf.select(config, key, default="<absent>", throw_on_resolution_failure=False)
        if key in groups or isinstance(node, DictConfig):  # (experiment: a group with no node of its own)
            parts.append(f"${{hydra:runtime.choices.{key}}}")
        elif isinstance(node, ListConfig) or node == "<absent>":  # (tags=[a],[b]: a list is no id)
            numbered = True
        else:
            parts.append(f"${{{key}}}")
    return "_".join([*parts, *(["${hydra:job.num}"] if numbered or not parts else [])])
