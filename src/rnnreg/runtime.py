"""What every entry point shares: clean one-line errors, atomic metrics.json, building the pieces."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import InstantiationException
from lightning.fabric.utilities.rank_zero import _get_rank
from omegaconf import DictConfig, OmegaConf

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError, OutputError, UserError
from rnnreg.io import RunLock

log = logging.getLogger("rnnreg")

# Expected here, and said once in the README: the stream windows are cheap and in order on one worker.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*`srun` command is available.*")
# LMDataModule itself records and restores the stream position of a mid-epoch checkpoint.
warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")


def user_errors_as_one_line(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report bad input as `error: ...` on one line and exit 2; HYDRA_FULL_ERROR=1 shows the traceback."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except UserError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def hydra_entry(config_name: str) -> Callable:
    """hydra.main for a console script, with our one-line errors, and one more check before Hydra starts:
    a config group option that does not exist (Hydra's own message is a page long)."""

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(
            user_errors_as_one_line(fn)
        )

        @functools.wraps(fn)
        def main() -> Any:
            try:
                check_group_options(sys.argv[1:])
                check_run_dir_free(sys.argv[1:])
            except UserError as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
            return hydra_main()

        return main

    return decorate


def check_group_options(args: list[str], conf_dir: str = CONF_DIR) -> None:
    """Every `group=option` (or sweep `group=a,b`, or list `group=[a,b]`) names a conf/<group>/<option>.yaml."""
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and a[0] != "-"])
    except Exception:  # a syntax error: Hydra reports it itself
        return
    for override in overrides:
        group = Path(conf_dir, override.key_or_group)
        if override.key_or_group.startswith("hydra") or override.is_delete() or not group.is_dir():
            continue
        value = override.value()
        choices = value.list if isinstance(value, ChoiceSweep) else value if isinstance(value, list) else [value]
        known = sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))  # _x: shared parts
        for choice in choices:
            if isinstance(choice, str) and choice not in known:
                raise ConfigError(
                    f"{override.key_or_group}={choice} is not an option: choose one of "
                    f"{', '.join(known)} (files in {group})"
                )


def check_run_dir_free(args: list[str]) -> None:
    """An explicit hydra.run.dir that a live run holds (rnnreg.io.RunLock): stop before Hydra writes .hydra/ and
    the log there (training checks again, and takes the lock, when it starts)."""
    if not launched_as_rank_zero():  # a DDP process started by rank 0 is given rank 0's (locked) folder
        return
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.run.dir" and value and "${" not in value:
            message = RunLock.in_use(os.path.abspath(value))  # as Hydra makes it
            if message:
                raise OutputError(message)


def launched_as_rank_zero() -> bool:
    """The process that owns the run folder: not a DDP process started by another (Lightning sets LOCAL_RANK),
    nor another node's or SLURM task's."""
    return not _get_rank() and os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("GROUP_RANK", "0") == "0"


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with our own errors (bad data or config) passed through unwrapped."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def instantiate_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]


def instantiate_callbacks(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]


def plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def keep_freed_memory(max_chunk: int = 32 << 20) -> bool:
    """glibc only: serve tensors up to `max_chunk` bytes from the heap and never trim it, so the large
    activation and gradient buffers freed every step are reused instead of being returned to the OS and
    page-faulted back in on the next step. Returns whether
    the setting took effect (False on other C libraries, where nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, max_chunk)) and bool(mallopt(m_trim_threshold, 1 << 30))
