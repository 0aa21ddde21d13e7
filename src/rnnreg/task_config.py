"""What a run's config gives its task, as plain Python: LanguageModelTask's arguments and the update rule's settings.
OmegaConf alone (no torch, no Hydra): read by the library's recipes, a run's task and loggers, and a stacked member's
checkpoint."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def plain(value: Any) -> Any:
    """A config node as plain Python (dicts and lists), its interpolations resolved; any other value as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def optim_settings(cfg: DictConfig) -> dict:
    """The update rule's settings (rnnreg.optim) of a run's config: the optim group and the global-norm clip,
    trainer.gradient_clip_val (rnnreg clips in its update rule; Lightning's own clipping stays off)."""
    return plain(cfg.optim) | {"clip": cfg.trainer.gradient_clip_val}


def task_arguments(cfg: DictConfig) -> dict:
    """LanguageModelTask's arguments (but the vocabulary size) from a run's config: what a run builds its task with
    and what a stacked member's checkpoint records as its hyper_parameters."""
    return {
        "model": plain(cfg.model),
        "dropout": plain(cfg.dropout),
        "optim": optim_settings(cfg),
        "speed": plain(cfg.speed),
    }
