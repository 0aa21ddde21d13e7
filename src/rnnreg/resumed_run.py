"""What a resume goes on from, without Lightning: the checkpoint `ckpt_path` names (`last` resolved) and the W&B
run it goes on in (its `wandb_run_id`). rnnreg.training resumes from them; a multirun's check of its jobs' W&B runs
(rnnreg.sweep_wandb) reads them as its sweep starts, before any job runs, and imports torch only then."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from rnnreg.errors import CheckpointError, ConfigError
from rnnreg.multirun_jobs import in_multirun
from rnnreg.run_folder_check import earlier_record_kept
from rnnreg.run_record import last_checkpoint_path
from rnnreg.schema import folder_problem

# W&B refuses these in a run id (wandb_settings.validate_run_id); a backslash is refused here too
RUN_ID_RESERVED = ":;,#?/'\\"
# what a checkpoint keeps of its W&B run beside its id (`wandb_group`, `wandb_name`): a resume goes on under them
WANDB_LABELS = ("group", "name")


def resolve_ckpt_path(cfg: DictConfig, output_dir: str | Path | None = None) -> str | None:
    """`ckpt_path=last`: this run's folder's own checkpoints/last.ckpt (a run given its folder again goes on
    there), else the newest checkpoints/last.ckpt of an earlier run of this experiment. `output_dir`: the run's
    folder where cfg.paths.output_dir cannot say it yet (a multirun's job, before it runs)."""
    path = cfg.get("ckpt_path")
    if path is None or path != "last":
        if path is not None and not Path(path).is_file():
            why = folder_problem(Path(path)) or (  # (a run folder: the checkpoint in it named)
                "is not a file: give a checkpoint, or ckpt_path=last to resume the newest run of this experiment"
            )
            raise ConfigError(f"ckpt_path={path} {why}")
        return path
    root = Path(cfg.paths.output_root, cfg.task_name, cfg.experiment_name)
    here = Path(cfg.paths.output_dir if output_dir is None else output_dir).resolve()
    if (own := last_checkpoint_path(here)).is_file():
        return str(own)
    # the pattern's "*": any earlier run's folder under root
    found = [p for p in root.glob(str(last_checkpoint_path("*"))) if here not in p.resolve().parents]
    if not found:
        raise ConfigError(nothing_to_resume(cfg.experiment_name, root, here, output_dir is None and not in_multirun()))
    return str(max(found, key=lambda p: p.stat().st_mtime))


def nothing_to_resume(experiment: str, root: Path, here: Path, single_run: bool) -> str:
    """The line ckpt_path=last stops on where it finds no checkpoints/last.ckpt: the folder it looked in for earlier
    runs (`root`, where this experiment's runs go by default) and how to name the run to go on from. The run's own
    folder `here` is named only where it was given again: one Hydra has just made holds nothing to name."""
    missing = "" if root.is_dir() else " (no such folder: check paths.output_root and experiment)"
    own = f" nor in {here}, the folder given" if single_run and earlier_record_kept(str(here)) else ""
    folder = ", or the earlier run's folder as hydra.run.dir=<folder> (it goes on from its last.ckpt)"
    return (
        f"ckpt_path=last: no earlier run of {experiment} with checkpoints/last.ckpt under "
        f"{os.path.abspath(root)}{missing}{own}: give ckpt_path=<a checkpoint file>{folder if single_run else ''}"
    )


def checked_run_id(value, source: str | Path) -> str | None:
    """A checkpoint's `wandb_run_id` (untrusted input, like the whole file): None when it has none; anything
    that is not a W&B run id is a one-line CheckpointError naming the file, before anything is written."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 128
        or value != value.strip()
        or not value.isprintable()
        or any(char in RUN_ID_RESERVED for char in value)
    ):
        raise CheckpointError(
            f"{source} holds {str(value)[:80]!r} as its W&B run id, which is not one (1-128 printable characters, "
            f"none of {RUN_ID_RESERVED}): resume it without logger=wandb, or from a checkpoint rnnreg-train wrote"
        )
    return value


def checked_labels(checkpoint: dict, source: str | Path) -> dict[str, str]:
    """A checkpoint's `wandb_group` and `wandb_name` (untrusted input, like the whole file), those it holds, as
    `resumed_group` and `resumed_name` (rnnreg.loggers.wandb_logger's); one that is not a line of printable text is a
    one-line CheckpointError naming the file, before anything is written."""
    labels = {}
    for key in WANDB_LABELS:
        value = checkpoint.get(f"wandb_{key}")
        if value is None:
            continue
        if not isinstance(value, str) or not 0 < len(value) <= 4096 or not value.isprintable():
            raise CheckpointError(
                f"{source} holds {str(value)[:80]!r} as its W&B run's {key}, which is not one (1-4096 printable "
                f"characters): resume it without logger=wandb, or from a checkpoint rnnreg-train wrote"
            )
        labels[f"resumed_{key}"] = value
    return labels


class Unreadable(Exception):
    """A checkpoint whose W&B run checkpoint_run_id cannot tell: the job that resumes it stops on it itself, with
    its own one-line error (rnnreg.io.load_checkpoint, checked_run_id), which `line` gives."""

    def line(self) -> str:
        """The one line the job that resumes this checkpoint stops on: checked_run_id's, or the file read whole as
        the job reads it (rnnreg.io.load_checkpoint's refusal)."""
        if isinstance(self.__cause__, CheckpointError):
            return str(self.__cause__)
        from rnnreg.io import load_checkpoint  # (imports torch: only for a checkpoint the check cannot read)

        try:
            load_checkpoint(self.args[0])
        except CheckpointError as err:
            return str(err)
        return f"{self.args[0]} is not a checkpoint rnnreg-train can resume: give a checkpoint written by rnnreg-train"


def checkpoint_run_id(path: str | Path) -> str | None:
    """The W&B run a resume from `path` goes on in (its `wandb_run_id`, checked_run_id's), None where it has
    none; Unreadable where the file is no rnnreg checkpoint, or holds what is no run id. Read as data only, as
    rnnreg.io.load_checkpoint reads it (torch's weights_only unpickler: a file from someone else runs no code),
    but with its tensors mapped, not read (mmap): the time of a small file's, however large the checkpoint."""
    from rnnreg.io import load_data_only  # (here: a multirun that resumes nothing with W&B never waits for torch)

    path = Path(path).expanduser()
    try:
        try:
            checkpoint = load_data_only(path, map_location="cpu", mmap=True)
        except RuntimeError:  # a file torch saved in its legacy format, which it cannot map: read whole
            checkpoint = load_data_only(path, map_location="cpu")
        if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
            raise Unreadable(path)
        return checked_run_id(checkpoint.get("wandb_run_id"), path)
    except Unreadable:
        raise
    except Exception as err:  # garbage fails the data-only unpickler in many ways; CheckpointError: no run id
        raise Unreadable(path) from err
