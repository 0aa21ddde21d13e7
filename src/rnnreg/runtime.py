"""What every entry point shares: clean one-line errors, atomic metrics.json, building the pieces."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from rnnreg.callbacks import TrainingDiverged
from rnnreg.data import DataError

log = logging.getLogger("rnnreg")

# Expected here, and said once in the README: the stream windows are cheap and in order on one worker.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*`srun` command is available.*")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and a valid value."""


USER_ERRORS = (DataError, ConfigError, ValueError, FileNotFoundError, TrainingDiverged)


def user_errors_as_one_line(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report bad input as `error: ...` on one line and exit 2; HYDRA_FULL_ERROR=1 shows the traceback."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except USER_ERRORS as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def write_json_atomic(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with our own errors (bad data or config) passed through unwrapped."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def instantiate_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]


def instantiate_callbacks(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]


def plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
