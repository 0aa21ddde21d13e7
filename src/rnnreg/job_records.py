"""A multirun job's failures, as every launcher records them: one line on stderr naming the job, and error.txt in its
folder (its one-line reason for having no result, also for a job that ended before writing anything, or in another
process); how a job ended as its files say, read alike by the sweep's end and rnnreg-report (how_it_ended); and which
jobs of a sweep did not complete, listed as the sweep ends (failed_jobs, in rnnreg.sweep.SweepCallback)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from rnnreg.errors import DataError
from rnnreg.multirun_jobs import in_multirun, job_named
from rnnreg.record_yaml import recorded_overrides
from rnnreg.run_folder_check import earlier_record_kept, earlier_results
from rnnreg.run_lock import launched_as_rank_zero
from rnnreg.run_record import metrics_path, recorded_metrics

ERROR_FILE = "error.txt"  # a multirun job's one-line error, in its folder
STOPPED_BEFORE_A_RESULT = "stopped by"  # how error.txt begins for a job a signal ended before any result


class JobFailed(Exception):
    """A multirun job ended by a UserError (already reported on one line): the sweeper records the job as
    failed (Optuna: a FAIL trial) and goes on."""


def report_failed_job(
    num: int, overrides: list[str], swept: list[str] | None, message, folder: str | Path, basic: bool
) -> JobFailed | None:
    """A multirun job that failed with `message` (a UserError's), as every launcher reports it: one line on stderr
    naming the job, its error.txt in `folder` (record_job_error), and what its sweeper is handed: Hydra's basic
    sweeper (`basic`) None, for a raised error would end the sweep (failed_jobs lists the job at its end); any
    other JobFailed (Optuna marks the trial FAIL; a NaN return crashes hydra-optuna-sweeper 1.3 with optuna 2.10)."""
    print(f"error: job {job_named(num, overrides, swept)} failed: {message}", file=sys.stderr)
    record_job_error(str(message), folder)
    return None if basic else JobFailed(str(message))


def record_job_stopped(how: str) -> None:
    """This multirun job's error.txt when a signal (`how`: "SIGTERM") ended it before it wrote a result (an
    evaluation in a submitit job): failed_jobs lists it as stopped, to run again from the start."""
    record_job_error(f"{STOPPED_BEFORE_A_RESULT} {how} before it finished; it wrote no metrics.json (run it again)")


def record_job_error(message: str, folder: str | Path | None = None) -> None:
    """A multirun job's one-line reason for having no result, in its folder's error.txt (`folder`; None: this
    job's, outside a multirun nothing): how the sweep's end (failed_jobs) knows, also of a job that ended before
    writing anything, or in another process."""
    if not launched_as_rank_zero():  # (a DDP process that Lightning started: rank 0 tells of the job)
        return
    if folder is None:
        if not in_multirun():  # (evaluate() called as a function: no sweep to tell)
            return
        folder = HydraConfig.get().runtime.output_dir
    try:
        Path(folder, ERROR_FILE).write_text(f"{message}\n")
    except OSError:  # the line on stderr has said it
        pass


def record_refused_run(folder: str | Path, message: str, record_subdir: str | None) -> None:
    """A single run's error.txt where its one-line error (bad input found once Hydra had made its folder: a
    checkpoint of another vocabulary, ckpt_path=last finding no run) leaves a folder of its own holding only its
    record (`record_subdir`, Hydra's .hydra; None: a command that keeps none, rnnreg-generate's) and its log:
    rnnreg-report lists it as failed, with that line, not as killed hard with a command that would fail again.
    Nothing in a folder given again (its earlier record is put back) or holding results (a run that trained says why
    in its metrics.json)."""
    if record_subdir is None or not Path(folder, record_subdir).is_dir():
        return
    if earlier_record_kept(str(folder)) or earlier_results(folder):
        return
    record_job_error(message, folder)


def folders_in(folder: str | Path) -> set[str]:
    """The names of the folders in `folder` (one level: a folder given again may be large) as a run starts, which
    remove_folders_made_empty leaves be."""
    try:
        return {entry.name for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)}
    except OSError:
        return set()


def remove_folders_made_empty(folder: str | Path, before: set[str]) -> None:
    """The folders a refused run made in its folder (not in `before`: folders_in's as it started) that hold no file
    (a logger's csv/, made as it was built), removed with the empty folders inside them: they record nothing and read
    as a run that logged nothing. A folder that was there before, or holds anything but empty folders, stays."""
    if not launched_as_rank_zero():  # (rank 0 tells of the run)
        return
    for name in folders_in(folder) - before:
        for top, _, _ in os.walk(Path(folder, name), topdown=False):  # inner folders first, the made one last
            with contextlib.suppress(OSError):  # rmdir removes an empty folder only: one holding a file stays
                os.rmdir(top)


def failed_jobs(sweep_dir: Path, since: float = 0.0) -> list[tuple[str, list[str], str]]:
    """(job folder, overrides, how it ended) of each job under `sweep_dir` run at or after `since` (its config,
    metrics.json or error.txt written since: a resumed stacked sweep keeps its jobs' configs) that did not complete:
    it left error.txt and no completed metrics.json after it ("failed": a UserError, record_job_error; "stopped":
    a signal ended it before any result, record_job_stopped), or a metrics.json saying failed, or interrupted
    ("interrupted": by a signal, after any error.txt, and it goes on from its last.ckpt), or nothing readable
    ("failed": cut short, edited: not a completed job)."""
    failed = []
    # a job's folder holds its .hydra/, or only what it wrote (rnnreg-generate's: hydra.output_subdir=null)
    jobs = {config.parent.parent for config in sweep_dir.rglob(".hydra/config.yaml")}
    jobs |= {error.parent for error in sweep_dir.rglob(ERROR_FILE)}
    for job in jobs:
        config = job / ".hydra" / "config.yaml"
        written = [p.stat().st_mtime for p in (config, metrics_path(job), job / ERROR_FILE) if p.exists()]
        if max(written) < since:
            continue
        metrics = metrics_path(job)
        ended = how_it_ended(job, recorded_metrics(job) if metrics.exists() else {})
        if ended is None and metrics.exists():  # a metrics.json that is none (cut short, edited): not completed
            ended = "failed"
        if ended in ("failed", "interrupted", "stopped"):
            try:
                overrides = recorded_overrides(job) or []
            except DataError:  # listed all the same, by its folder
                overrides = []
            failed.append((str(job.relative_to(sweep_dir)), overrides, ended))
    return sorted(failed, key=lambda f: job_order(f[0]))


def how_it_ended(job: Path, metrics: dict) -> str | None:
    """How a job's files say it ended, read alike by the sweep's end (failed_jobs) and the report: an error.txt
    written last says it ran (again) and stopped with that line ("stopped": a signal before any result,
    record_job_stopped; else "failed"); else its metrics.json (`metrics`, as the caller read it) says, "completed"
    where it has no status (an evaluation's result); None where neither says (no result yet, or none readable)."""
    if error_written_last(job):
        return "stopped" if first_words(job / ERROR_FILE).startswith(STOPPED_BEFORE_A_RESULT) else "failed"
    return metrics.get("status", "completed") if metrics else None


def error_written_last(job: Path) -> bool:
    """Whether a job's error.txt says how it ended: it is there, and newer than any metrics.json (a job that ran again
    after its result, requeued or resumed, and stopped with that error; an error.txt before metrics.json: it ran
    again and recorded how that ended)."""
    error, metrics = job / ERROR_FILE, metrics_path(job)
    return error.exists() and (not metrics.exists() or error.stat().st_mtime > metrics.stat().st_mtime)


def first_words(path: Path, size: int = 100) -> str:
    """The start of a job's error.txt; "" where it cannot be read (the job is then listed as failed)."""
    try:
        with open(path, errors="replace") as f:
            return f.read(size)
    except OSError:
        return ""


def job_order(folder: str) -> list:
    """Sorts job folders by number: 2 before 10 (and named folders after numbered ones)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in Path(folder).parts]
