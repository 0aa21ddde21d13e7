"""What Optuna's grid sampler (hydra/sweeper/sampler=grid) would run, checked before any trial: a search it cannot
list (an interval) or a range whose points the plugin counts otherwise than the range holds is one line naming the
fix, where the plugin would stop with a traceback or silently run other trials than asked. rnnreg.sweep's
SweepCallback calls it as the multirun starts. Also what a search sweeper reads its search space from
(search_lines), which rnnreg.sweep_wandb reads for the checkpoints a study searches."""

from __future__ import annotations

import warnings
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnreg.errors import ConfigError, first_line
from rnnreg.multirun_jobs import task_overrides
from rnnreg.override_refusals import miscounted

# Optuna's sampler that visits each point of its grid once (hydra/sweeper/sampler=grid)
GRID_SAMPLERS = ("optuna.samplers.GridSampler", "optuna.samplers._grid.GridSampler")


def uses_grid_sampler(config: DictConfig) -> bool:
    """Whether the multirun's sweeper samples with Optuna's GridSampler (hydra/sweeper/sampler=grid)."""
    sampler = OmegaConf.select(
        config.hydra.sweeper, "sampler._target_", default=None, throw_on_resolution_failure=False
    )
    return sampler in GRID_SAMPLERS


def check_grid_search_space(config: DictConfig) -> None:
    """A ConfigError, before any job runs, where Optuna's grid sampler (hydra/sweeper/sampler=grid) is given a
    continuous search (hparams_search=optuna's intervals): the plugin stops on it with a traceback; or a range whose
    points the plugin's grid counts otherwise (misread_grid_ranges): it would run other trials than asked. A
    key's grid is its last search, as the plugin reads them (its params, then the command line's), a fixed value
    after it too."""
    if not uses_grid_sampler(config):
        return
    from hydra.core.override_parser.types import IntervalSweep

    searches: dict[str, tuple[str, Any]] = {}  # key: (its search as given, parsed)
    for line, override in parsed_search_lines(config):
        if override is None:  # (Hydra says what it cannot parse itself)
            return
        if override.is_sweep_override():
            searches[searched_key(line)] = (line.partition("=")[2], override)
    continuous = [
        (key, value, search)
        for key, (value, override) in searches.items()
        if isinstance(search := override.value(), IntervalSweep)
        and ("log" in search.tags or not (isinstance(search.start, int) and isinstance(search.end, int)))
    ]
    if not continuous:
        misread = misread_grid_ranges(searches)
        if misread:
            clauses = [
                f"{k}={v} at {', '.join(ours) or 'no point'}, not at {', '.join(meant)}"
                for k, v, (ours, meant) in misread
            ]
            key, _, (_, meant) = misread[0]
            raise ConfigError(
                f"hydra/sweeper/sampler=grid would run {'; '.join(clauses)} (Optuna's grid counts a range's points in "
                f"floating point, below its end; a range without a step has a step of 1): give the points you mean as "
                f"{'a choice' if len(misread) == 1 else 'choices'} ('{key}=choice({','.join(meant)})': the range's, "
                f"its end left out)"
            )
        return
    named = [f"{key}={value}" for key, value, _ in continuous]
    key, _, search = continuous[0]
    listed = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
    raise ConfigError(
        f"hydra/sweeper/sampler=grid visits a finite grid, but {listed} "
        f"{'is an interval' if len(named) == 1 else 'are intervals'}: search "
        f"{'it' if len(named) == 1 else 'each'} as a choice ('{key}=choice({search.start},{search.end})') or a "
        f"range with a step, or use another sampler (leave out hydra/sweeper/sampler=grid)"
    )


def misread_grid_ranges(searches: dict[str, tuple[str, Any]]) -> list[tuple[str, str, tuple[list, list]]]:
    """Each `key=range(...)` of `searches` (check_grid_search_space's) whose points in the Optuna plugin's grid, read
    by the plugin's own code, are not the range's (override_refusals.miscounted): (key, the range as given, (the
    grid's points, the range's), each as text). The plugin counts its points as floor((stop - start) / step) in
    floating point, so range(0.3,0.6,step=0.1) gives 0.3, 0.4, and range(0.3,0.6), its step 1, none."""
    from hydra.core.override_parser.types import RangeSweep
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_optuna_distribution_from_override

    misread = []
    for key, (value, override) in searches.items():
        search = override.value()
        if not isinstance(search, RangeSweep) or search.shuffle:  # (a shuffled range is the plugin's choice)
            continue
        try:
            with warnings.catch_warnings():  # (Optuna's own on the plugin's distributions: the plugin says them)
                warnings.simplefilter("ignore")
                distribution = create_optuna_distribution_from_override(override)
                points = OptunaSweeperImpl._to_grid_sampler_choices(None, distribution)  # (it reads no self)
        except (ValueError, AssertionError):  # (one the plugin stops on, as it says)
            continue
        if (meant := miscounted(points, search)) is not None:
            misread.append((key, value, ([f"{p:.10g}" for p in points], meant)))
    return misread


def search_lines(config: DictConfig) -> list[str]:
    """What a search sweeper (Optuna) reads its search space from, in its order: its params, then the command line's
    overrides (each `key=value` as given: ${...} unresolved; parsed_search_lines reads them as the plugin does)."""
    params = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("params") or {}
    return [f"hydra.sweeper.params.{key}={value}" for key, value in params.items()] + task_overrides(config.hydra)


def parsed_search_lines(config: DictConfig) -> list[tuple[str, Any]]:
    """search_lines as Optuna's plugin reads them, each with its value as Hydra's override parser reads it: the
    params resolved (Hydra resolves the sweeper's config as it makes the plugin, so `seed: ${oc.env:SEEDS}` with
    SEEDS=choice(1,2) is a search), the command line's as given. None for one that cannot be resolved or parsed
    (Hydra, or the sweeper, says what is wrong with it itself; check_search_params of one not resolved)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [(f"hydra.sweeper.params.{key}={value}", err is None) for key, value, err in resolved_params(config)]
    parser, parsed = OverridesParser.create(), []
    for line, resolved in params + [(line, True) for line in task_overrides(config.hydra)]:
        override = None
        try:
            if resolved:
                (override,) = parser.parse_overrides([f"x={line.partition('=')[2]}"])
        except Exception:
            pass
        parsed.append((line, override))
    return parsed


def resolved_params(config: DictConfig) -> list[tuple[str, Any, OmegaConfBaseException | None]]:
    """Each key of a search sweeper's params (hydra.sweeper.params) with its value as the plugin reads it, resolved
    (a config node as a container), and None; or, where it cannot be resolved, its value as given and the error."""
    params = OmegaConf.select(config, "hydra.sweeper.params", throw_on_resolution_failure=False)
    given = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("params") or {}
    resolved = []
    for key, value in given.items():
        try:
            node = params[key]
            value, err = (OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node), None
        except OmegaConfBaseException as error:
            err = error
        resolved.append((key, value, err))
    return resolved


def check_search_params(config: DictConfig) -> None:
    """A ConfigError, before the sweep folder is made, where a search sweeper's params hold a value that cannot be
    resolved (`seed: ${oc.env:NOT_SET}`): Hydra resolves them as it makes the sweeper, and stops with a traceback."""
    for key, value, err in resolved_params(config):
        if err is not None:
            raise ConfigError(f"hydra.sweeper.params.{key}={value}: {first_line(err)}")


def searched_key(line: str) -> str:
    return line.partition("=")[0].lstrip("+~").removeprefix("hydra.sweeper.params.")
