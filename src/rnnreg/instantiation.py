"""A run's pieces built from its config (the nodes with a _target_): Hydra's instantiate with our own one-line
errors passed through, and the loggers and callbacks a config names."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from rnnreg.errors import UserError


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
        logger = instantiate(spec, id=wandb_id, **(wandb_labels or {})) if resumed else instantiate(spec)
        if name == "wandb":
            logger.earlier_parts = list(wandb_parts or [])  # named again by its checkpoints and its sync command
        loggers.append(logger)
    return loggers


def instantiate_callbacks(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
