"""Weights & Biases: online when credentials are configured, otherwise offline with real run files."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        return netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs) -> WandbLogger:
    """Lightning's WandbLogger; `offline: null` means offline exactly when no credentials are configured."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not has_wandb_credentials()
    Path(kwargs.get("save_dir", ".")).mkdir(parents=True, exist_ok=True)
    return WandbLogger(offline=offline, **kwargs)


def finish_wandb(loggers: list, summary: dict) -> None:
    """Put the final metrics in each W&B run's summary and close it (one finished run per job)."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        run.summary.update(summary)
        run_dir = Path(run.dir).parent
        run.finish()
        if logger._offline:
            print(f"W&B run saved offline; upload it with: wandb sync {run_dir}")
