"""A command line, checked before Hydra runs: compose the config of every job it asks for (each value of a
sweep, an experiment's own sweep included) and check each against its schema (rnnreg.validation), so that a bad
value is one line before any folder is created or any job has run. rnnreg.runtime.hydra_entry calls
`check_command_line` (validate_args, and the mode it found), then rnnreg.run_folder_check's `check_run_dir_free`
with that mode.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from rnnreg import CONF_DIR
from rnnreg.command_flags import report_multirun_message, shown_config
from rnnreg.config_search import (
    SEARCHPATH,
    ConfigRoots,
    borrowed_experiment_name,
    config_roots,
    hydra_as_main,
    loaded_defaults,
    read_command_line,
    shadowed_config,
    shadowing_files,
)
from rnnreg.errors import ConfigError, MissingValue, first_line
from rnnreg.multirun_jobs import OPTUNA_SWEEPER, basic_sweeper, uses_stacked_launcher
from rnnreg.override_refusals import (
    added_group_in_config,
    deleted_absent_option,
    deleted_group,
    deleted_list_group,
    group_defaults,
    hydra_message,
    hydra_sweep_message,
    miscounted_range,
    needed_group_message,
    new_key_message,
    no_search_space,
    not_a_launcher_setting,
    optional_groups,
    parse_error,
    quoted_override,
    search_space_fix,
)
from rnnreg.run_lock import launched_as_rank_zero
from rnnreg.schema import target_arguments, trainer_arguments
from rnnreg.stacked_settings import check_padding, check_stackable
from rnnreg.submitit_tasks import submitit_local_refusal
from rnnreg.validation import (
    SAVE_BEATS,
    last_setting_refusal,
    last_setting_refused,
    output_dir_refusal,
    run_folder_refusal,
    save_beat_refusal,
    sites_using_p,
    unknown_key,
    validate,
)

MAX_JOBS_CHECKED = 256


# Checked.hydra_mode where check_command_line did not compose the config as Hydra's main does to find its mode
MODE_NOT_READ = object()


class Checked(NamedTuple):
    jobs: int  # configs checked; 0: a flag that runs nothing, or a config from elsewhere (not composed here)
    multirun: bool | None  # -m, or a config that is a multirun by itself (an experiment's); None: not composed
    # the config's own hydra.mode (None where it sets none), which Hydra's main composes the config to read before
    # it composes it again to run (rnnreg.runtime.hydra_mode_known). Hydra's reading leaves a swept group out of
    # the config (`-m experiment=a,b` reads the default experiment's mode), as ours does
    hydra_mode: Any = MODE_NOT_READ
    # the config's hydra.run.dir is its own (an experiment file's, a primary config's, the command line's), not
    # conf/hydra/default.yaml's folder named by the time to the microsecond, which no earlier run holds
    own_run_dir: bool = False


def validate_args(config_name: str, argv: list[str], conf_dir: str = CONF_DIR) -> int:
    """Compose the config of every job `argv` asks for (each value of a sweep) and validate it, before Hydra
    runs (and creates any folder). Returns the number of configs checked (0: a flag that runs nothing)."""
    return check_command_line(config_name, argv, conf_dir).jobs


def check_command_line(config_name: str, argv: list[str], conf_dir: str = CONF_DIR) -> Checked:
    """validate_args, and what its compositions say of the command line's mode."""
    import yaml
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    command = read_command_line(argv)
    if command is None or command.unchecked or (command.answered and not shown_config(command)):
        return Checked(0, None)  # Hydra answers it (its refusal, help, completion), or the task function checks it
    primary = command.config_name or config_name  # validated as config_name's (the script's) all the same
    multirun = command.multirun
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(command.overrides)
    except HydraException as err:
        raise ConfigError(parse_error(command.overrides, err)) from None
    check_no_sweep_given_again(overrides)
    roots = config_roots(overrides, command.config_dir, conf_dir, primary)  # conf/, a --config-dir, searchpath's
    groups = [o for o in overrides if _is_group(o, roots)]
    values = [o for o in overrides if not _is_group(o, roots)]
    for o in groups:  # Hydra's own answer is a ValueError traceback
        if o.value() is None and not o.is_delete() and not o.key_or_group.startswith("hydra"):
            group = o.key_or_group
            off = group in optional_groups(primary, conf_dir)  # Hydra takes ~group to turn it off
            raise ConfigError(
                f"{o.input_line}: {group} is a config group and null is not one of its options: choose one of "
                f"{', '.join(roots.options(group))}, or leave {group}= out to keep its default"
                + (f" (none), or give ~{group} to turn off one an experiment chose" if off else "")
            )
    searchpath = [o.input_line for o in overrides if o.get_key_element() == SEARCHPATH][:1]  # Hydra reads the first
    with hydra_as_main(command.config_dir, conf_dir=conf_dir):
        for o in groups:  # Hydra's answer says no fix
            if o.key_or_group.startswith("hydra/") and o.is_sweep_override():
                lines = sweep_lines(o, roots)
                raise ConfigError(
                    f"{o.input_line}: Hydra's own config groups cannot be swept: run one command per option "
                    f"({', then '.join(lines)})"
                )

        def compose_groups(group_lines: tuple[str, ...]) -> DictConfig:
            try:
                return compose(primary, overrides=[*searchpath, *group_lines], return_hydra_config=True)
            except (HydraException, ValueError) as err:  # ValueError: a group override Hydra cannot take
                why = (
                    added_group_in_config(groups, err)
                    or deleted_list_group(groups, err)
                    or deleted_absent_option(groups, err, primary, config_name, roots, conf_dir)
                    or hydra_message(err)
                )
                raise ConfigError(why) from None
            except yaml.YAMLError as err:  # a config file of the user's (--config-dir): Hydra's answer is a traceback
                raise ConfigError(not_yaml_message(err)) from None

        plain_groups = tuple(o.input_line for o in groups if not o.is_sweep_override())
        first = tuple(f"{o.get_key_element()}={_first(o, roots)}" for o in groups if o.is_sweep_override())
        base_groups = plain_groups + first
        hydra_values = [o for o in values if _is_hydra(o) and not o.is_sweep_override()]
        base = compose_groups(base_groups)
        apply_overrides(base, hydra_values)
        sweep_config = base  # Hydra's own, which it reads the mode from: a swept group left out (its default)
        if first:
            sweep_config = compose_groups(plain_groups)
            apply_overrides(sweep_config, hydra_values)
        hydra_mode = sweep_config.hydra.mode
        own_run_dir = OmegaConf.to_container(base.hydra.run, resolve=False)["dir"] != default_run_dir(conf_dir)
        subdir = base.hydra.output_subdir
        # (Lightning starts a DDP run's other ranks with hydra.output_subdir=null: rank 0's record is the run's)
        if config_name in ("train", "eval") and subdir != ".hydra" and launched_as_rank_zero():
            raise ConfigError(
                f"hydra.output_subdir={'null' if subdir is None else subdir}: rnnreg-report, the commands that go on "
                f"with a run and a sweep's resume read a run's record in its .hydra/: leave hydra.output_subdir out"
            )
        chdir = bool(base.hydra.job.chdir)
        multirun = multirun or base.hydra.mode == RunMode.MULTIRUN
        if config_name == "report" and multirun:  # (hydra.mode=MULTIRUN: -m by another name)
            raise ConfigError(report_multirun_message(command.overrides, "hydra.mode=MULTIRUN"))
        if multirun and uses_stacked_launcher(base) and base.hydra.launcher.get("resume") is True:
            check_resumed_sweep_folder(base)
        hydra_sweeps = [o for o in values if _is_hydra(o) and o.is_sweep_override()]
        if hydra_sweeps:  # Hydra's own lines ("Sweeping over Hydra's configuration"; "Ambiguous value") say no more
            raise ConfigError(hydra_sweep_message(base, hydra_sweeps[0]))
        sweeps = {o.get_key_element(): o for o in values + groups if o.is_sweep_override() and not _is_hydra(o)}
        if sweeps and (not multirun or shown_config(command)):  # (-m --help: Hydra's traceback says to add -m)
            line = next(iter(sweeps.values())).input_line
            key, _, value = line.partition("=")
            if flag := shown_config(command):  # Hydra's own advice, to add -m, is refused with --cfg
                raise ConfigError(f"{line} is a sweep, and {flag} shows one job's config: give one value of {key}")
            if config_name == "report":  # (-m is refused there, and a quoted string is no list of formats)
                if key == "path":
                    raise ConfigError(report_multirun_message(command.overrides, line))
                raise ConfigError(f"{line} is a sweep, which rnnreg-report does not run: give a list ({key}=[{value}])")
            raise ConfigError(
                f"{line} is a sweep: add -m (--multirun) to run one job per value, or quote the value "
                f"({quoted_override(key, value)}) for a string"
            )
        if multirun:  # the sweeper's own params (an experiment's), the command line's win
            for key, spec in (OmegaConf.select(base, "hydra.sweeper.params") or {}).items():
                if key not in sweeps:
                    (parsed,) = parser.parse_overrides([f"{key}={spec}"])
                    sweeps[key] = parsed
        if basic_sweeper(base):
            for o in sweeps.values():
                if not o.is_discrete_sweep():  # interval(a, b): Hydra's basic sweeper would stop at the sweep
                    raise ConfigError(
                        f"{o.input_line} is a range to search, which needs a search sweeper (hparams_search=optuna): "
                        f"give the basic sweeper a list of values ({o.get_key_element()}=a,b,c) instead"
                    )
                if refusal := miscounted_range(o):
                    raise ConfigError(refusal)
        elif multirun and OmegaConf.select(base, "hydra.sweeper._target_") == OPTUNA_SWEEPER:
            # (the plugin's loop ran no trial, then Optuna's traceback for no trial completed, or divided by 0)
            for key in ("n_trials", "n_jobs"):
                count = OmegaConf.select(base, f"hydra.sweeper.{key}")
                if isinstance(count, int) and count < 1:  # (the plugin's schema types them: int, or null)
                    raise ConfigError(
                        f"hydra.sweeper.{key}={count}: an Optuna study runs hydra.sweeper.n_trials trials, "
                        f"hydra.sweeper.n_jobs at a time: give 1 or more"
                    )
        group_sweeps = {k: o for k, o in sweeps.items() if _is_group(o, roots)}
        value_sweeps = {k: o for k, o in sweeps.items() if not _is_group(o, roots)}
        fixed_values = [o for o in values if not o.is_sweep_override()]
        checked, rate_used, warned = 0, False, {}  # (a dict: each warning once, in the order of the jobs)
        shadows = shadowing_files(roots, conf_dir)  # (none, most commands: no defaults list made)
        group_jobs = job_combinations({k: sweep_lines(o, roots) for k, o in group_sweeps.items()})
        value_jobs = job_combinations({k: sweep_lines(o, roots) for k, o in value_sweeps.items()})
        for group_job in group_jobs:
            cfg = base if set(group_job) == set(first) else compose_groups(plain_groups + tuple(group_job))
            if shadows:  # every config the job reads, as Hydra's defaults list has them
                read = loaded_defaults(primary, [*searchpath, *plain_groups, *group_job])
                if shadowed := shadowed_config(read, primary, roots, shadows, command.config_dir, conf_dir):
                    raise ConfigError(shadowed)
            check_early_stopping_kept(parser.parse_overrides([*plain_groups, *group_job]), cfg.hydra.runtime.choices)
            for value_job in value_jobs:
                where = f" (sweep job {' '.join(group_job + value_job)})" if group_job or value_job else ""
                try:
                    job = check_job(cfg, config_name, fixed_values + parser.parse_overrides(list(value_job)), chdir)
                    if multirun and uses_stacked_launcher(cfg):  # its refusals before Hydra writes the sweep folder
                        check_stackable(job)
                        check_padding(job, base.hydra.launcher)
                    if multirun and (why := submitit_local_refusal(base.hydra.launcher, job.get("trainer"))):
                        raise ConfigError(why)
                except ConfigError as err:
                    if needed := deleted_group(groups, optional_groups(primary, conf_dir), err):
                        default = group_defaults(primary, conf_dir).get(needed.key_or_group)
                        raise ConfigError(needed_group_message(needed, config_name, roots, default)) from None
                    if isinstance(err, MissingValue):
                        raise MissingValue(f"{err}{where}", err.key) from None
                    raise ConfigError(f"{err}{where}") from None
                rate_used = rate_used or ("dropout" in job and bool(sites_using_p(job.dropout)))
                if warning := borrowed_experiment_name(cfg.hydra.runtime.choices, job, roots):
                    warned[warning] = None
                checked += 1
        if multirun and first:  # Hydra applies every override to its own config too (each job has the key: checked)
            swept_groups = [o.get_key_element() for o in groups if o.is_sweep_override()]
            check_sweep_config_overrides(sweep_config, values, swept_groups)
    if "dropout.p" in sweeps and checked and not rate_used:  # an Optuna study over p with dropout=none, say
        raise ConfigError(
            f"{sweeps['dropout.p'].input_line}: the sweep varies dropout.p, which no site of its jobs' dropout uses "
            f"(dropout=none, or every site's rate set): each value would train the same model; pick a placement "
            f"that drops (dropout=non_recurrent), or leave dropout.p out of the sweep"
        )
    for warning in warned:
        print(f"warning: {warning}", file=sys.stderr)
    return Checked(checked, multirun, hydra_mode, own_run_dir)


def check_no_sweep_given_again(overrides: list) -> None:
    """A ConfigError where a key swept is given again later in the command: Hydra gives every job the later value,
    and the sweep's other values do not run (before: dropped with no word, `model.hidden_size=16,24` then a
    `model.hidden_size=16` of the user's own presets; found by a probe)."""
    for i, o in enumerate(overrides):
        if o.is_sweep_override():
            same = (o.key_or_group, o.package)
            if later := next((x for x in overrides[i + 1 :] if (x.key_or_group, x.package) == same), None):
                raise ConfigError(
                    f"{o.input_line}, then {later.input_line}: Hydra gives every job a key's last value, so the "
                    f"sweep's other values would not run: give {o.key_or_group} once"
                )


def check_resumed_sweep_folder(base: DictConfig) -> None:
    """hydra.launcher.resume=true goes on with the sweep in hydra.sweep.dir: a ConfigError where that folder is new at
    every start (dated: the default's ${now:...}), so that it could never find the sweep (before: every job trained
    anew in a new folder, with no word)."""
    folder = str(OmegaConf.to_container(base.hydra.sweep, resolve=False)["dir"])
    if "${now:" in folder:
        raise ConfigError(
            "hydra.launcher.resume=true goes on with the sweep in hydra.sweep.dir, and here that is a new folder at "
            "every start (dated: ${now:...}): add hydra.sweep.dir=<the sweep's folder, which its first command wrote>"
        )


def not_yaml_message(err: Exception) -> str:
    """A config file the YAML parser refused, as one line: the file, where in it and what the parser met."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = ", ".join(filter(None, (getattr(err, "context", None), getattr(err, "problem", None)))) or first_line(err)
    if mark is None:
        return f"a config file is not valid YAML ({what}): correct it"
    return f"{mark.name} is not valid YAML (line {mark.line + 1}, column {mark.column + 1}: {what}): correct it there"


@functools.cache
def default_run_dir(conf_dir: str) -> str:
    """conf/hydra/default.yaml's hydra.run.dir, unresolved."""
    return OmegaConf.to_container(OmegaConf.load(Path(conf_dir, "hydra", "default.yaml")).run, resolve=False)["dir"]


def check_paths_from_run_folder(job: DictConfig) -> None:
    """hydra.job.chdir=true runs a job in its run folder: a relative path in its config is read from there, not
    from where the command was given (checked here from the latter)."""
    given = [("data.data_dir", OmegaConf.select(job, "data.data_dir"))]
    ckpt = job.get("ckpt_path")
    if ckpt == "last":  # found under paths.output_root
        given.append(("paths.output_root", OmegaConf.select(job, "paths.output_root")))
    elif ckpt is not None:  # (rnnreg-eval's may be a list)
        given += [("ckpt_path", path) for path in ([ckpt] if isinstance(ckpt, str) else ckpt)]
    for key, path in given:
        if isinstance(path, str) and not os.path.isabs(os.path.expanduser(path)):
            used = " (where ckpt_path=last looks)" if key == "paths.output_root" else ""
            raise ConfigError(
                f"{key}={path}{used} is relative, and hydra.job.chdir=true runs the job in its run folder: give it "
                f"as {key}={os.path.abspath(path)}"
            )


def check_sweep_config_overrides(sweep_config: DictConfig, values: list, swept_groups: list[str]) -> None:
    """A multirun's overrides are applied to its own config too, composed without the swept groups: a plain
    override of a key that only their options bring (`-m 'regularizer=[early_stopping],[early_stopping,weight_decay]'
    callbacks.early_stopping.patience=2`) stops Hydra there with a page, exit 1, though every job has the key."""
    for o in values:
        if _is_hydra(o) or o.is_sweep_override() or o.is_add() or o.is_force_add() or o.is_delete():
            continue
        key = o.key_or_group
        where, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(sweep_config, where, throw_on_resolution_failure=False) if where else sweep_config
        if not isinstance(parent, DictConfig) or leaf not in parent.keys():  # (a ??? value is there: keys() has it)
            raise ConfigError(
                f"{o.input_line}: Hydra applies a multirun's overrides to its own config too, composed without its "
                f"swept groups ({', '.join(swept_groups)}), where {key} is not: give it as ++{o.input_line} (Hydra's "
                f"add or override)"
            )


def check_job(composed: DictConfig, config_name: str, overrides: list, chdir: bool = False) -> DictConfig:
    """One job: `composed` (the config of its group options, with Hydra's node) with its `key=value`
    overrides applied as Hydra applies them (hydra.* ones aside), validated; returned. `chdir`: hydra.job.chdir,
    under which the job reads its paths from its run folder."""
    job = OmegaConf.create({k: composed._get_node(k) for k in composed.keys() if k != "hydra"})
    OmegaConf.set_struct(job, True)
    apply_overrides(job, [o for o in overrides if not _is_hydra(o)], config_name)
    if chdir:  # (before the schema reads a checkpoint or a folder from here)
        check_paths_from_run_folder(job)
    choices = composed.hydra.runtime.choices
    try:
        validate(job, config_name, choices=choices)
    except ConfigError as err:
        if hint := group_package_hint(job, choices, config_name, str(err)):
            raise ConfigError(hint) from None
        raise
    return job


def check_early_stopping_kept(group_overrides: list, choices: Any) -> None:
    """regularizer=early_stopping selects the callbacks option of that name, and a callbacks= of the command line
    selects another over it (Hydra's command line wins): a ConfigError, as the run would train without early stopping
    and its record would say regularizer=early_stopping (Hydra records no list group's choice: read from the job's
    group overrides)."""
    for o in group_overrides:
        if o.key_or_group != "regularizer" or o.is_delete():
            continue
        options = o.value() if isinstance(o.value(), list) else [o.value()]
        callbacks = (choices or {}).get("callbacks")
        if "early_stopping" in options and callbacks != "early_stopping":
            raise ConfigError(
                f"{o.input_line} selects callbacks=early_stopping, and callbacks={callbacks} given here selects "
                f"another over it: the run would train without early stopping: give callbacks=early_stopping (or "
                f"leave callbacks= out)"
            )


def group_package_hint(job: DictConfig, choices: Any, config_name: str, refusal: str) -> str | None:
    """The refusal of an unknown top-level key that is a config group's name (a group of the user's own, whose file
    lacks `# @package _global_`: Hydra puts its keys under the group's name), with what to do; None otherwise."""
    for key in job.keys():
        option = (choices or {}).get(key)
        if isinstance(option, str) and refusal.startswith(f"{key} is not a key of the {config_name} config"):
            return (
                f"{key} is not a key of the {config_name} config: {key}={option} is a config group of yours, whose "
                f"file's keys Hydra puts under {key}; start {key}/{option}.yaml with `# @package _global_` so that "
                f"its keys are the {config_name} config's"
            )
    return None


def apply_overrides(cfg: DictConfig, overrides: list, config_name: str = "") -> None:
    """Hydra's own application of `key=value` overrides, with an unknown key refused in one line."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import HydraException

    for override in overrides:
        key = override.key_or_group
        if key == "trainer.default_root_dir" and config_name == "train":  # (+ would be Hydra's four lines)
            raise ConfigError(run_folder_refusal(override.input_line))
        if key == "paths.output_dir" and not override.is_add():  # (+: Hydra's line, that the key is there)
            raise ConfigError(output_dir_refusal(override.input_line))
        if not override.is_add() and not override.is_force_add() and not key.startswith("hydra."):
            _check_key_exists(cfg, key, override, config_name)
        top = key.split(".")[0]
        if config_name and (override.is_add() or override.is_force_add()) and top not in cfg and top != "hydra":
            raise ConfigError(new_key_message(override, cfg, config_name))
        merged = isinstance(override.value(), (dict, list))  # (+ merges a mapping or a list into what is there)
        if override.is_add() and not merged and _holds_value(cfg, key):  # (Hydra's check resolves it: ${hydra:...})
            line = override.input_line
            raise ConfigError(
                f"{line}: Could not append to config. An item is already at '{key}'. Either remove + prefix: "
                f"'{line[1:]}'; Or add a second + to add or override '{key}': '+{line}'"
            )
        if (override.is_add() or override.is_force_add()) and (why := _unselected_option_added(cfg, override)):
            raise ConfigError(why)
        if key.split(".")[:3] == ["hydra", "sweeper", "params"] and no_search_space(cfg):
            fix = search_space_fix(override)
            raise ConfigError(f"{override.input_line}: {no_search_space(cfg)}: sweep the key itself with -m: {fix}")
        if key.startswith("hydra.launcher.") and OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            raise ConfigError(f"{override.input_line}: {not_a_launcher_setting(cfg, key)}")
        try:
            ConfigLoaderImpl._apply_overrides_to_config([override], cfg)
        except HydraException as err:
            current = OmegaConf.select(cfg, key, default=None)
            if isinstance(current, DictConfig) and not isinstance(override.value(), dict):  # Hydra: "Error merging"
                keys = ", ".join(map(str, current.keys()))
                raise ConfigError(
                    f"{override.input_line}: {key} is a mapping ({keys}): set its keys one by one ({key}.<key>=...)"
                ) from None
            raise ConfigError(f"{override.input_line}: {hydra_message(err)}") from None


def _holds_value(cfg: DictConfig, key: str) -> bool:
    """Whether `key` is in `cfg` with a value (null, ??? or absent: Hydra's + may add it). An interpolation counts
    by what it resolves to (`${oc.env:WANDB_ENTITY,null}`: null), and as a value where it cannot be resolved here
    (`${hydra:...}` outside a run: Hydra's own check stops on it with its four lines)."""
    from omegaconf.errors import OmegaConfBaseException

    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    if node._is_interpolation():
        try:
            return OmegaConf.select(cfg, key, throw_on_missing=False) is not None
        except OmegaConfBaseException:
            return True
    return not node._is_none() and not node._is_missing()


def _check_key_exists(cfg: DictConfig, key: str, override: Any, config_name: str) -> None:
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return  # a list index or a value: Hydra says what is wrong
        if part not in node.keys():
            prefix = ".".join(parts[:i])
            known = sorted(str(k) for k in node.keys())
            if prefix == "trainer" and part in trainer_arguments():
                raise ConfigError(
                    f"trainer.{part} is not in the config yet: add it with +{override.input_line.lstrip('+')}"
                )
            refused = parts[:2] == ["callbacks", "model_checkpoint"] and part in SAVE_BEATS
            if refused and override.value() not in SAVE_BEATS[part]:  # (its + hint would lead to this refusal)
                raise ConfigError(save_beat_refusal(part, override.value()))
            last = parts[:2] == ["callbacks", "last_checkpoint"] and i == 2
            if last and last_setting_refused(part, override.value()):  # (as above: last.ckpt the last epoch's)
                raise ConfigError(last_setting_refusal(part, override.value()))
            if i == 2 and parts[0] in ("callbacks", "logger") and part in target_arguments(str(node.get("_target_"))):
                raise ConfigError(f"{key} is not in the config yet: add it with +{override.input_line.lstrip('+')}")
            options = _options_with(prefix, part) if i == 1 and not override.is_delete() else []
            if options:  # callbacks.early_stopping.patience=2 without early stopping
                raise ConfigError(unselected_option_message(prefix, part, options, override.input_line))
            where = prefix or f"the {config_name} config"
            if override.is_delete():
                raise ConfigError(f"~{key}: {key} is not in the config, nothing to delete")
            raise unknown_key(f"{prefix}." if prefix else "", part, known, where)
        node = node._get_node(part)


def unselected_option_message(group: str, key: str, options: list[str], line: str) -> str:
    """`line` sets a key of `group`.`key` (callbacks.early_stopping), which only `options` of the config group put
    in the config: select one of them, then set it."""
    also = [f"regularizer={o}" for o in options if Path(CONF_DIR, "regularizer", f"{o}.yaml").is_file()]
    return (
        f"{group}.{key} is not in the config: select it with "
        f"{' or '.join([f'{group}={o}' for o in options] + also)}, then set {line}"
    )


def _unselected_option_added(cfg: DictConfig, override: Any) -> str | None:
    """`+callbacks.early_stopping.patience=1` without early stopping selected: + would add a callback of that one key
    (refused as having no _target_); the refusal of the same key without + instead, selecting it. The key the
    option has is then set without + (+ on a key that is there is refused)."""
    parts = override.key_or_group.split(".")
    group = parts[0]
    if len(parts) < 3 or parts[2] == "_target_" or not isinstance(cfg.get(group), DictConfig) or parts[1] in cfg[group]:
        return None  # (a callback of one's own, from its _target_ on)
    options = _options_with(group, parts[1])
    if not options:
        return None
    path = Path(CONF_DIR, group, f"{options[0]}.yaml")
    there = OmegaConf.select(OmegaConf.load(path), ".".join(parts[1:]), default="<absent>") != "<absent>"
    line = override.input_line[1:] if override.is_add() and there else override.input_line
    return unselected_option_message(group, parts[1], options, line)


def _options_with(group: str, key: str) -> list[str]:
    """The options of config group `group` (conf/<group>/*.yaml) that put `key` in it (conf/callbacks/early_stopping
    for callbacks.early_stopping)."""
    return [p.stem for p in sorted(Path(CONF_DIR, group).glob("*.yaml")) if key in (OmegaConf.load(p) or {})]


def _is_hydra(override: Any) -> bool:
    return override.key_or_group.startswith("hydra.")


def _is_group(override: Any, roots: ConfigRoots) -> bool:
    key = override.key_or_group
    return "/" in key or override.package is not None or roots.is_group(key)


def sweep_lines(override: Any, roots: ConfigRoots) -> list[str]:
    """The `key=value` lines of a (sweep) override's jobs, as Hydra's sweeper expands it: a list, range or choice,
    a glob over a group's options (conf/'s and a --config-dir's, in its order), an interval's two ends."""
    from hydra.core.override_parser.types import Glob, IntervalSweep

    key = override.get_key_element()
    value = override.value()
    if isinstance(value, IntervalSweep):  # optuna's interval(a, b): both ends
        return [f"{key}={value.start}", f"{key}={value.end}"]
    if isinstance(value, Glob):  # the options Hydra's sweeper matches (conf/ and a --config-dir), in its order
        from hydra.core.global_hydra import GlobalHydra

        options = GlobalHydra.instance().config_loader().get_group_options(override.key_or_group)
        matched = value.filter(options)
        if not matched:
            raise ConfigError(
                f"{override.input_line} matches no option of {override.key_or_group}: choose among "
                f"{', '.join(options)} ({roots.where(override.key_or_group)})"
            )
        return [f"{key}={option}" for option in matched]
    if not override.is_sweep_override():
        return [override.input_line]
    return [f"{key}={v}" for v in override.sweep_string_iterator()]


def _first(override: Any, roots: ConfigRoots) -> str:
    return sweep_lines(override, roots)[0].split("=", 1)[1]


def job_combinations(options: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """Every combination, or (past MAX_JOBS_CHECKED) each value once with the others at their first."""
    if not options:
        return [()]
    lists = list(options.values())
    if math.prod(len(v) for v in lists) <= MAX_JOBS_CHECKED:
        return list(itertools.product(*lists))
    jobs = {tuple(v[0] for v in lists)}
    for i, values in enumerate(lists):
        for value in values[1:]:
            jobs.add(tuple(value if j == i else v[0] for j, v in enumerate(lists)))
    return sorted(jobs)


def check_group_options(args: list[str], conf_dir: str = CONF_DIR, config_name: str = "train") -> None:
    """Every `group=option` (or sweep `group=a,b`, or list `group=[a,b]`) names a <group>/<option>.yaml in conf/, a
    --config-dir or hydra.searchpath's folders."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    command = read_command_line(args)
    if command is None or command.unchecked:  # Hydra refuses it, or another conf/ (-cp): its run checks its config
        return
    try:
        overrides = OverridesParser.create().parse_overrides(command.overrides)
    except Exception:  # a syntax error: Hydra reports it itself
        return
    primary = command.config_name or config_name
    roots = config_roots(overrides, command.config_dir, conf_dir, primary)
    for override in overrides:
        group = override.key_or_group
        if group.startswith("hydra") or override.is_delete() or not roots.is_group(group):
            continue
        value = override.value()
        choices = value.list if isinstance(value, ChoiceSweep) else value if isinstance(value, list) else [value]
        known = roots.options(group)
        for choice in choices:
            if isinstance(choice, str) and choice not in known and not roots.holds(group, choice):
                raise ConfigError(
                    f"{group}={choice} is not an option: choose one of {', '.join(known)} ({roots.where(group)})"
                )
