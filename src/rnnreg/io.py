"""Files a run writes and reads: atomic replacement (checkpoints, last.ckpt links, metrics.json) and
checkpoints loaded as data only (a checkpoint from someone else must never run code)."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from rnnreg.errors import CheckpointError, OutputError


def replace_atomically(path: str | Path, write: Callable[[Path], Any]) -> None:
    """`write` a temporary file beside `path` (same filesystem), then rename it to `path`: whoever opens
    `path` finds the old file or the whole new one, never a part. The temporary name is unique, so two
    writers never share one; a failed or killed write leaves the old file and no temporary one."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(
            f"could not write {path.name} in {path.parent}: {err.strerror or err}; free space or "
            f"fix the folder's permissions (the previous {path.name}, if any, is intact)"
        ) from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, payload: dict) -> None:
    replace_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2) + "\n"))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A checkpoint's contents as tensors and plain data (torch's weights_only loader: unpickling can
    build nothing else, so a crafted file cannot run code). Refusals are one-line CheckpointErrors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ckpt_path={path} is not a file: give a checkpoint, e.g. "
            f"outputs/train/<experiment>/<time>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not a rnnreg checkpoint: it contains objects that are not allowed "
            f"(only tensors and plain data are loaded; nothing in it was run)"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or another format: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise CheckpointError(
            f"{path} is not a rnnreg checkpoint (no state_dict and hyper_parameters): give a "
            f"checkpoint written by rnnreg-train"
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name and renamed (never a truncated .ckpt where a good one
    was, nothing left in $TMPDIR), and read as data only."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        replace_atomically(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location if map_location is not None else "cpu")
