"""What a run's config gives its task, as plain Python: LanguageModelTask's arguments and the update rule's settings.
OmegaConf alone (no torch, no Hydra): read by the library's recipes, a run's task and loggers, and a stacked member's
checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


def plain(value: Any) -> Any:
    """A config node as plain Python (dicts and lists), its interpolations resolved; any other value as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def optim_settings(cfg: DictConfig) -> dict:
    """The update rule's settings (rnnreg.optim) of a run's config: the optim group and the global-norm clip,
    trainer.gradient_clip_val (rnnreg clips in its update rule; Lightning's own clipping stays off)."""
    return plain(cfg.optim) | {"clip": cfg.trainer.gradient_clip_val}


def unused_rate(dropout: Mapping) -> str | None:
    """A refusal where a dropout mapping's p is not the rate of every site that drops: the network reads each site's
    own rate, and p only fills a placement's sites (${.p}) as a config is composed, so a p changed in a recipe's dict
    would be recorded and not used (before: `recipe["dropout"]["p"] = 0.0` still dropped 0.5 everywhere). A p that
    every dropping site has (the sites it filled: a run's, an older checkpoint's hyper_parameters), or that no site
    drops at all (dropout=none), is no refusal; None then."""
    from rnnreg.schema import SITES

    p = dropout["p"]
    dropping = {k: dropout[k] for k in SITES if dropout.get(k)}
    if all(rate == p for rate in dropping.values()):
        return None
    sites = ", ".join(f"{k} {v}" for k, v in dropping.items())
    composed = "'dropout=none'" if not p else f"'dropout.p={p}'"
    return (
        f"dropout.p={p} is not the rate of the sites that drop ({sites}): the network drops each site at its own "
        f"rate, and p only fills a placement's sites as a config is composed: leave p out, and set the sites' rates "
        f"(dropout['input'] = ...) or compose the recipe with it (rnnreg.paper_recipe(size, {composed}))"
    )


def site_rates(dropout: DictConfig) -> dict:
    """A config's dropout group as the network takes it: each site's rate, resolved, without dropout.p (which only
    fills a placement's sites, ${.p}, as the config is composed)."""
    return {k: v for k, v in plain(dropout).items() if k != "p"}


def task_dropout(dropout: DictConfig) -> dict:
    """A run's dropout for its task (and so its checkpoints' hyper_parameters and the hyperparameters its loggers
    record): each site's rate, and p where every site that drops has it (the placement's sites it filled); where a
    site's own rate differs (`dropout.input=0.3` beside p) p is left out, which LanguageModelTask would refuse as a p
    the sites do not use. The run's .hydra/config.yaml keeps it."""
    rates = plain(dropout)
    return site_rates(dropout) if "p" in rates and unused_rate(rates) else rates


def task_arguments(cfg: DictConfig) -> dict:
    """LanguageModelTask's arguments (but the vocabulary size) from a run's config: what a run builds its task with
    and what a stacked member's checkpoint records as its hyper_parameters."""
    return {
        "model": plain(cfg.model),
        "dropout": task_dropout(cfg.dropout),
        "optim": optim_settings(cfg),
        "speed": plain(cfg.speed),
    }
