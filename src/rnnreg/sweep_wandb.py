"""A multirun's jobs and their W&B runs: one run per job. Two jobs with one logger.wandb.id (or WANDB_RUN_ID) would
each log over the other's history in one run, so such a multirun is refused before any job runs
(rnnreg.sweep.SweepCallback calls check_wandb_runs as the multirun starts), with an id that differs per job."""

from __future__ import annotations

import os
import re

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnreg.errors import ConfigError
from rnnreg.sweep import NOT_IN_NAMES, inside_job, job_configs, job_label, override_key, swept_keys, task_overrides


def check_wandb_runs(config: DictConfig) -> None:
    """A ConfigError, before any job runs, when two jobs of the multirun would log into one W&B run, each over
    the other's history: a logger.wandb.id (or WANDB_RUN_ID) that does not differ between them. An id that
    differs per job (`run_${seed}`, or swept: `+logger.wandb.id=a,b`) is each job's own."""
    if not names_wandb(config):  # (no job composed for a sweep without W&B)
        return
    jobs = job_configs(config)
    if jobs is None:
        check_study_wandb_run(config)
        return
    swept = swept_keys(config.hydra) or None
    seen: dict[str, int] = {}
    for num, (_, job_config) in enumerate(jobs):
        run_id = job_wandb_run(job_config)
        if run_id is None:
            continue
        if run_id in seen and not wandb_off():
            labels = [f"{n} ({job_label(jobs[n][0], swept)})" for n in (seen[run_id], num)]
            raise shared_wandb_run(job_config, run_id, f"jobs {labels[0]} and {labels[1]}", config)
        seen[run_id] = num


def wandb_off() -> bool:
    """WANDB_MODE=disabled (rnnreg.loggers.wandb_disabled): the jobs leave their W&B logger out, and share no run."""
    # (imported here only: rnnreg.loggers imports Lightning, seconds a sweep's start need not wait)
    from rnnreg.loggers import wandb_disabled

    return wandb_disabled()


def names_wandb(config: DictConfig) -> bool:
    """Whether a job of the multirun may log to W&B: the config's logger.wandb, an override or the search space
    that names it (`logger=csv,wandb`), or a swept config group, whose options may select it (`experiment=a,b`)."""
    params = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("params") or {}
    lines = [*task_overrides(config.hydra), *(f"{key}={value}" for key, value in params.items())]
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    return (
        "wandb" in (config.get("logger") or {})
        or any("wandb" in line for line in lines)
        or any(key in groups for key in swept_keys(config.hydra))
    )


def wandb_id_key(job_config: DictConfig) -> tuple[str, object] | None:
    """The key that names a job's W&B run and its value as given (Lightning's WandbLogger takes `version`
    before `id`); None without a W&B logger, or for a resume (ckpt_path: its checkpoint's run goes on)."""
    spec = (job_config.get("logger") or {}).get("wandb")
    if not spec or "_target_" not in spec or job_config.get("ckpt_path") is not None:
        return None
    given = OmegaConf.to_container(spec, resolve=False)
    key = "version" if given.get("version") not in (None, "") else "id"
    return f"logger.wandb.{key}", given.get(key)


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
    for every job is a fixed logger.wandb.id that the search does not vary, or WANDB_RUN_ID without one."""
    trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    found = wandb_id_key(config)
    if found is None or (trials is not None and trials < 2):  # (one trial shares its run with no other)
        return
    key, given = found
    if given not in (None, "") and (key in swept_keys(config.hydra) or varies_per_job(config, str(given))):
        return  # each job's own
    try:
        run_id = resolved_wandb_run(config, key)  # (an interpolation of what no trial changes: resolved here)
    except OmegaConfBaseException:  # (a job stops on it with its own line)
        return
    if run_id and not wandb_off():
        raise shared_wandb_run(config, run_id, "every job of the multirun", config)


INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")  # an innermost ${...}
SAME_IN_EVERY_JOB = ("now", "oc.env")  # resolvers whose value one process keeps (Hydra caches `now`)


def varies_per_job(config: DictConfig, text: str, seen: tuple[str, ...] = ()) -> bool:
    """Whether `text` (a value as given, ${...} unresolved) may differ between a search sweeper's jobs: it reads a
    key the search varies (here or through the keys it reads), the job (`${hydra:job.num}`), a resolver that may
    differ, or any key while a config group is searched (its options may set it). Where in doubt, True."""
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
            if key.startswith(".") or any(k in groups for k in swept):
                return True
            if any(key == k or key.startswith(f"{k}.") or k.startswith(f"{key}.") for k in swept):
                return True
            raw = str(value_as_given(config, key))
            if "${" in raw and (key in seen or varies_per_job(config, raw, (*seen, key))):
                return True
        text = text[: match.start()] + "x" + text[match.end() :]
    return False


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
    key, given = wandb_id_key(job_config) or ("logger.wandb.id", None)
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
    leave_out = f"leave {key} out" if typed else f"take {key} out of the config file that sets it (or ~{key})"
    return ConfigError(
        f"{key}={given} puts {jobs} in one W&B run ({run_id}), each logging over another's history: {leave_out} "
        f"(each job then gets a run of its own), or make it differ per job ({example})"
    )


def per_job_part(config: DictConfig) -> str:
    """Interpolations of the keys the sweep varies, which tell its jobs apart (a group by its choice: a group's
    node is no id), and the job's number for what none can name (a list group's options: regularizer=[a],[b]
    has no choice to read) or where nothing is swept."""
    parts, numbered = [], False
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    for key in swept_keys(config.hydra):
        if key.startswith(NOT_IN_NAMES):
            continue
        node = OmegaConf.select(config, key, default="<absent>", throw_on_resolution_failure=False)
        if key in groups or isinstance(node, DictConfig):  # (experiment: a group with no node of its own)
            parts.append(f"${{hydra:runtime.choices.{key}}}")
        elif isinstance(node, ListConfig) or node == "<absent>":  # (tags=[a],[b]: a list is no id)
            numbered = True
        else:
            parts.append(f"${{{key}}}")
    return "_".join([*parts, *(["${hydra:job.num}"] if numbered or not parts else [])])
