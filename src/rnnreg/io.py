"""Files a run writes and reads: atomic replacement (checkpoints, last.ckpt links, metrics.json) and
checkpoints loaded as data only (a checkpoint from someone else must never run code)."""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from rnnreg.errors import CheckpointError, OutputError
from rnnreg.schema import folder_problem


def replace_atomically(path: str | Path, write: Callable[[Path], Any]) -> None:
    """`write` a temporary file beside `path` (same filesystem), then rename it to `path`: whoever opens
    `path` finds the old file or the whole new one, never a part. The temporary name is unique, so two
    writers never share one; a failed or killed write leaves the old file and no temporary one."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # as open() would create it (mkstemp's is 0600)
        finally:
            os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        fix = f"move the folder {path.name} away" if path.is_dir() else "free space or fix the folder's permissions"
        raise OutputError(
            f"could not write {path.name} in {path.parent}: {err.strerror or err}; {fix} (the previous "
            f"{path.name}, if any, is intact)"
        ) from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


class FileWriter:
    """Files written in the order given: by one background thread while the caller goes on, or at once.
    In the background, a stacked group's checkpoints and resume file (gigabytes an epoch at 15 medium members)
    overlap the next epoch's training; torch.save to a path releases the GIL while it writes, so the training
    loop keeps launching its windows (docs/measurements.md). What is handed over must not change later: give it
    copies (`copies`). A failed write's error (an OutputError: disk full, ...) is raised by the next `wait`, or
    at once when written at once."""

    def __init__(self, background: bool):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnreg-writer") if background else None
        self.pending: list[Future] = []

    @property
    def copies(self) -> bool:
        """Whether what is handed over must be a copy (it is written later)."""
        return self.pool is not None

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        if self.pool is None:
            write(*args)
        else:
            self.pending.append(self.pool.submit(write, *args))

    def wait(self) -> None:
        """Until every file handed over is written; raises the first failed write's error."""
        pending, self.pending = self.pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Once every file handed over is written (their errors are `wait`'s to raise)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def current_umask() -> int:
    try:  # Linux: read without changing it (os.umask to read it races with other threads creating files)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, payload: dict) -> None:
    """`payload` as JSON, replaced atomically; a NaN or infinite number (a perplexity that overflowed, a damaged
    model's) as null: JSON has neither, and the bare NaN json.dumps writes is refused by strict readers (jq,
    JavaScript)."""
    text = json.dumps(finite_or_null(payload), indent=2, allow_nan=False) + "\n"
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float, in lists and dicts too, as None (null, as JavaScript writes them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


def link_atomically(source: str | Path, path: str | Path) -> bool:
    """`path` replaced by a hard link to `source` (the same file, no second copy), atomically; False where
    the filesystem refuses hard links (the caller then writes a copy)."""

    def hard_link(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)

    try:
        replace_atomically(path, hard_link)
    except OutputError:
        return False
    return True


def load_data_only(path: str | Path, **kwargs: Any) -> Any:
    """torch.load(path, weights_only=True, **kwargs) without torch's two-line warning of a file pickle.dump wrote
    ("Detected pickle protocol 4 ..."): the caller loads it or refuses it in its own one line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Detected pickle protocol", UserWarning)
        return torch.load(path, weights_only=True, **kwargs)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A checkpoint's contents as tensors and plain data (torch's weights_only loader: unpickling can
    build nothing else, so a crafted file cannot run code). Refusals are one-line CheckpointErrors."""
    path = Path(path).expanduser()  # a quoted ckpt_path='~/x.ckpt' reaches us unexpanded (the schema expands it)
    if not path.is_file():
        why = folder_problem(path) or (  # (a run folder: the checkpoint in it named)
            "is not a file: give a checkpoint, e.g. outputs/train/<experiment>/<time>/checkpoints/last.ckpt"
        )
        raise CheckpointError(f"ckpt_path={path} {why}")
    try:
        checkpoint = load_data_only(path, map_location=map_location)
    except Exception as err:  # garbage makes the data-only unpickler fail in many ways (KeyError, EOFError, ...)
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            raise CheckpointError(
                f"{path} is not a rnnreg checkpoint: it contains objects that are not allowed, or is damaged "
                f"(only tensors and plain data are loaded; nothing in it was run)"
            ) from None
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or another format: {type(err).__name__}"
            f"{': ' + first if first else ''})"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise CheckpointError(
            f"{path} is not a rnnreg checkpoint (no state_dict and hyper_parameters): give a "
            f"checkpoint written by rnnreg-train"
        )
    return checkpoint


def save_atomically(obj: Any, path: str | Path) -> None:
    """torch.save(obj) to `path` through replace_atomically, on disk (fsync) before it replaces the previous
    file. A full disk or a file-size limit is the OutputError that names it, and a Ctrl-C the KeyboardInterrupt:
    torch's zip writer hides either behind "unexpected pos ..."."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:
                # the real cause (disk full, EFBIG; a Ctrl-C inside a write): the previous file is kept
                cause = err.__cause__ or err.__context__
                if isinstance(cause, (OSError, KeyboardInterrupt)):
                    raise cause from None
                raise
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(path, write)


def __getattr__(name: str):
    """`rnnreg.io.AtomicCheckpointIO`, the name configs saved before it moved to rnnreg.checkpoints (b55f571)
    give as `trainer.plugins`' _target_: the class itself, imported on first use (it imports Lightning)."""
    if name == "AtomicCheckpointIO":
        from rnnreg.checkpoints import AtomicCheckpointIO

        return AtomicCheckpointIO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
