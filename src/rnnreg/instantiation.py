"""A run's pieces built from its config (the nodes with a _target_): Hydra's instantiate with our own one-line
errors passed through, and the loggers and callbacks a config names."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from rnnreg.errors import ConfigError, UserError, first_line


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with our own errors (bad data or config) passed through unwrapped."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def instantiate_loggers(
    cfg: DictConfig, wandb_id: str | None = None, wandb_parts: list[str] | None = None, wandb_labels: dict | None = None
) -> list:
    """The config's loggers; `wandb_id`: the W&B run a resumed run goes on in (Lightning's WandbLogger
    resumes a run with that id, or starts one; None: a fresh run, with logger.wandb.id if the config sets one);
    `wandb_parts`: offline, the folders of that run's earlier parts; `wandb_labels`: its group and name
    (rnnreg.resumed_run.checked_labels)."""
    from rnnreg.loggers import wandb_disabled  # (here: it imports Lightning, which --help must not)

    loggers = []
    for name, spec in (cfg.get("logger") or {}).items():
        if not spec or "_target_" not in spec or (name == "wandb" and wandb_disabled()):
            continue
        resumed = name == "wandb" and wandb_id is not None
        logger = made("logger", name, spec, **({"id": wandb_id, **(wandb_labels or {})} if resumed else {}))
        if name == "wandb":
            logger.earlier_parts = list(wandb_parts or [])  # named again by its checkpoints and its sync command
        loggers.append(logger)
    return loggers


def instantiate_callbacks(cfg: DictConfig) -> list:
    """The config's callbacks; one that is not a Lightning callback (a _target_ of one's own) is a ConfigError."""
    from lightning.pytorch import Callback  # (here: --help must not import Lightning)

    callbacks = []
    for name, spec in (cfg.get("callbacks") or {}).items():
        if not spec or "_target_" not in spec:
            continue
        callback = made("callbacks", name, spec)
        if not isinstance(callback, Callback):  # (Lightning would fail at its first hook, with a traceback)
            raise ConfigError(
                f"callbacks.{name}._target_={spec._target_} is not a Lightning callback (lightning.pytorch.Callback): "
                f"give a callback's class, or remove callbacks.{name}"
            )
        callbacks.append(callback)
    return callbacks


def made(group: str, name: str, spec: DictConfig, **kwargs: Any) -> Any:
    """instantiate(spec) for the entry `name` of the loggers or callbacks (`group`): a _target_ that cannot be found,
    or arguments its class does not take (a key of one's own added with +, mistyped), is a one-line ConfigError
    naming the entry, not Hydra's page."""
    try:
        return instantiate(spec, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, (ImportError, TypeError)) and "Error locating target" not in str(err):
            raise
        if isinstance(cause, ImportError):  # (Hydra's own is a page: its cause's first line says what is missing)
            why = f"it cannot be imported ({first_line(str(cause.__cause__ or cause))})"
        else:
            why = first_line(str(cause) if cause is not None else str(err))
        raise ConfigError(
            f"{group}.{name} ({spec._target_}) could not be made: {why}: check {group}.{name}._target_ and the "
            f"arguments its class takes"
        ) from None
