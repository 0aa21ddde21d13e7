"""A run's metrics.json, as a single run (rnnreg.training) and a stacked member (rnnreg.stacked_train) write it:
the same keys in the same order, so rnnreg-report, a sweeper and a user read either alike; and as it is read
back. Where a run's folder keeps its checkpoints and metrics.json, for every module that writes or reads them.
Plain Python: rnnreg-report and the launchers read it without torch."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import NamedTuple

from rnnreg.record_yaml import full_budget

# A run's folder: the checkpoints conf/callbacks/default.yaml's callbacks write (a stacked member's job writes the
# same files) and its metrics.json. Names, for a glob or a check of a folder's entries; the paths below build on them.
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
METRICS_FILE = "metrics.json"

# Above this mean NLL per word exp(NLL) overflows float64: the run has diverged (training stops: rnnreg.
# training_signals.diverged), and no perplexity a run records is above exp(MAX_NLL).
MAX_NLL = 700.0

# metrics.json's `error` for a run a signal stopped (a single run's and a stacked group's members')
STOPPED_BY = {
    signal.SIGINT: "Ctrl-C (stopped by the user)",
    signal.SIGTERM: "SIGTERM (pre-empted or stopped)",
    signal.SIGUSR1: "SIGUSR1 (SLURM's warning before its time limit)",
    signal.SIGUSR2: "SIGUSR2 (submitit's warning before its time limit, or pre-emption)",
}


class Speeds(NamedTuple):
    """A run's training words per second, as metrics.json names them: over every epoch's training time; from the
    median step of the last epoch (None where the device queues its steps, CUDA: a step's host time is then the time
    to queue it, not to run it); over the last epoch alone (warm-up and a graph's capture left out, unless the run was
    resumed inside it)."""

    words_per_second: float
    words_per_second_median_step: float | None
    words_per_second_last_epoch: float


def best_checkpoint_path(run: str | Path) -> Path:
    """The run folder `run`'s checkpoints/best.ckpt: the lowest val/ppl so far."""
    return Path(run, CHECKPOINTS, BEST_CHECKPOINT)


def last_checkpoint_path(run: str | Path) -> Path:
    """The run folder `run`'s checkpoints/last.ckpt: the state at the last epoch's end, or where a signal stopped it."""
    return Path(run, CHECKPOINTS, LAST_CHECKPOINT)


def checkpoint_in_folder(folder: str | Path) -> Path | None:
    """The last.ckpt a folder holds, given where a checkpoint goes (ckpt_path): a run folder's checkpoints/last.ckpt,
    or a checkpoints/ folder's own; None where it holds neither."""
    for path in (last_checkpoint_path(folder), Path(folder, LAST_CHECKPOINT)):
        if path.is_file():
            return path
    return None


def metrics_path(run: str | Path) -> Path:
    """The run folder `run`'s metrics.json: how the run ended, and its numbers."""
    return Path(run, METRICS_FILE)


def completed_record(
    validation: tuple[float, int] | None,
    tests: dict[str, float],
    best_val_ppl: float | None,
    epochs: int,
    train_seconds: float,
    speeds: Speeds | None,
    params: int,
    experiment: str,
    seed: int,
) -> dict:
    """A completed run's: `validation` (the last validation's perplexity and epoch; None: none ran), `tests`
    (test_ppl and test_ppl_batched, {} without the final test), `speeds` (None: not measured), `seed` the one it ran
    with, resolved (`seed=${hydra:job.num}` reads as one seed in its overrides: rnnreg-report reads this)."""
    record = {"val_ppl": validation[0], "val_epoch": validation[1]} if validation is not None else {}
    record |= tests
    record |= {"best_val_ppl": best_val_ppl} if best_val_ppl is not None else {}
    record |= {"epochs": epochs, "train_seconds": round(train_seconds, 2)}
    record |= {
        key: value if value is None else round(value, 1) for key, value in (speeds._asdict() if speeds else {}).items()
    }
    return record | {"params": params, "experiment": experiment, "seed": seed, "status": "completed"}


def tested_record(trained: dict, tests: dict[str, float]) -> dict:
    """A completed run's record from the one its training left (`trained`: completed_record's without the final
    test) and that test's perplexities (`tests`), in completed_record's order."""
    validation = {key: trained[key] for key in ("val_ppl", "val_epoch") if key in trained}
    return validation | tests | {key: value for key, value in trained.items() if key not in validation}


def with_cut_splits(record: dict, trainer) -> dict:
    """`record` with the trainer.limit_val_batches and limit_test_batches that cut its val_ppl and test_ppl short (as
    rnnreg-eval's record has them): not to be read as the whole split's."""
    cut = {"limit_val_batches": "val_ppl", "limit_test_batches": "test_ppl"}
    return record | {
        key: trainer.get(key) for key, score in cut.items() if score in record and not full_budget(trainer.get(key))
    }


def unfinished_record(status: str, error: str, epochs: int, resume: str) -> dict:
    """A run that did not complete: `status` interrupted or failed, why, the epochs it trained and how it goes
    on (rnnreg.report_commands.resume_from)."""
    return {"status": status, "error": error, "epochs": epochs, "resume": resume}


def read_metrics(folder: str | Path) -> dict:
    """A run folder's metrics.json as the run wrote it ({} without the file). One that is not a JSON object (cut
    short, edited, from elsewhere) is a ValueError saying why, one that cannot be read an OSError: rnnreg-report
    names the file (its checked_metrics), a reader that only asks how a run ended takes it as no record
    (recorded_metrics)."""
    try:
        text = metrics_path(folder).read_text()
    except FileNotFoundError:
        return {}
    metrics = json.loads(text)
    if not isinstance(metrics, dict):
        raise ValueError("not a JSON object")
    return metrics


def recorded_metrics(folder: str | Path) -> dict:
    """How a run ended, for a reader that asks only that (a sweep's end, a resume, the run lock): its metrics.json
    (read_metrics), {} without a readable one."""
    try:
        return read_metrics(folder)
    except (OSError, ValueError):
        return {}


def null_as_nan(metrics: dict) -> dict:
    """metrics.json's values with a null as nan: rnnreg.io writes a NaN or infinite number (an overflowed
    perplexity) as null."""
    return {key: math.nan if value is None else value for key, value in metrics.items()}
