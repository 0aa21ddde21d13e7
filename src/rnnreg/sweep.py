"""Multiruns that go on past a failed job and say at the end which jobs failed: the multirun's Hydra callback.

SweepCallback (hydra.callbacks in conf/hydra/default.yaml) holds the sweep folder's RunLock while the multirun
runs, refuses a multirun that would write over results before the sweeper writes anything (check_sweep_folder),
writes <sweep dir>/sweep.yaml when it starts (the swept keys: sweep overrides on the command line and
hydra.sweeper.params), and when it ends lists the jobs of this multirun that failed (rnnreg.job_records.failed_jobs)
on one line and exits 1. What a job knows of its sweep, and each job composed as Hydra's basic sweeper composes it:
rnnreg.multirun_jobs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
import traceback
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnreg.cpu_threads import share_cores
from rnnreg.errors import ConfigError, OutputError, UserError
from rnnreg.job_records import failed_jobs, job_order
from rnnreg.multirun_jobs import (
    NUMBERED_SUBDIR,
    OPTUNA_SWEEPER,
    STACKED_LAUNCHER,
    SWEEP_FILE,
    JobsComposedOnce,
    basic_sweeper,
    job_folders,
    job_named,
    same_overrides,
    sweep_jobs,
    swept_keys,
    uses_stacked_launcher,
)
from rnnreg.optuna_grid import check_grid_search_space, check_search_params
from rnnreg.optuna_study import check_study_checkpoints, end_studies_as_sweeps_end
from rnnreg.override_text import pasted_override
from rnnreg.record_yaml import recorded_launcher, recorded_overrides
from rnnreg.run_folder_check import check_no_links, earlier_results, results_message
from rnnreg.run_lock import RunLock, launched_as_rank_zero
from rnnreg.run_record import CHECKPOINTS, last_checkpoint_path
from rnnreg.stacked_settings import check_launcher_settings
from rnnreg.submitit_tasks import CtrlCStopsTheJobs, RankZeroRecords, join_the_jobs_ddp, take_ctrl_c_back
from rnnreg.sweep_folder import RANK_ZERO_SWEEP, follow_rank_zero, pin_sweep_folder
from rnnreg.sweep_wandb import check_wandb_runs


def check_sweep_folder(config: DictConfig) -> None:
    """A ConfigError or OutputError, before the sweeper writes anything, when this multirun would write over
    results: jobs that share one folder (a hydra.sweep.subdir that names no job, or does not tell two apart:
    check_job_folders), or a sweep folder with an earlier multirun's results
    (its job numbers start at 0 again), unless a stacked sweep goes on (hydra.launcher.resume=true: its finished
    groups are kept, the others resumed)."""
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if "${" not in str(subdir or ""):
        raise ConfigError(
            f"hydra.sweep.subdir={subdir or ''} puts every job of the multirun in one folder, each writing over the "
            f"last one's files: give each job its own (the default is hydra.sweep.subdir=${{hydra.job.num}})"
        )
    check_no_links(config.hydra.sweep.dir, "hydra.sweep.dir", below=True)  # (one the command's check could not name)
    check_job_folders(config, str(subdir))
    if OmegaConf.select(config, "hydra.launcher.resume", default=False):
        check_resumed_jobs(config)
        return
    sweep_dir = Path(config.hydra.sweep.dir).absolute()
    # the folders that hold them: jobs (their metrics.json, their checkpoints/) and a stacked group's .stacked/
    files = [Path(f) for f in earlier_results(sweep_dir, below=True)]
    found = sorted({str(f.parent.parent if f.parent.name == CHECKPOINTS else f.parent) for f in files}, key=job_order)
    if not found:
        return
    written_over = folders_written_over(config, sweep_dir, str(subdir), found)
    if not written_over:  # its jobs go to other folders (hydra.sweep.subdir=s${seed}): its record is replaced
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise OutputError(
            f"{sweep_dir} holds an earlier multirun's results (in {shown}): this multirun would replace its "
            f"multirun.yaml, and rnnreg-report would read the two as one sweep: give it another folder "
            f"(hydra.sweep.dir=...), or remove that folder first"
        )
    stacked = uses_stacked_launcher(config)
    made_by = [recorded_launcher(sweep_dir / folder) for folder in written_over]
    go_on = ""
    if stacked and all(launcher == STACKED_LAUNCHER for launcher in made_by if launcher):
        go_on = ", go on with the same command and hydra.launcher.resume=true"
    raise OutputError(results_message(sweep_dir, written_over, "hydra.sweep.dir", go_on, what="multirun"))


def folders_written_over(config: DictConfig, sweep_dir: Path, subdir: str, found: list[str]) -> list[str]:
    """Of `found` (the folders in `sweep_dir` that hold an earlier multirun's results), those a job of this
    multirun writes in; all of them where its jobs' folders are not known before they run (another sweeper's)."""
    from hydra.core.global_hydra import GlobalHydra

    if not basic_sweeper(config):
        return found
    if subdir == NUMBERED_SUBDIR:  # (each job's number: no job composed)
        mine = {str(num) for num in range(len(sweep_jobs(config, GlobalHydra.instance().config_loader())))}
    else:
        mine = {os.path.relpath(folder, sweep_dir) for _, folder in job_folders(config) or []}
    return [folder for folder in found if any(folder == job or folder.startswith(f"{job}/") for job in mine)]


def check_resumed_jobs(config: DictConfig) -> None:
    """hydra.launcher.resume=true goes on with a stacked sweep's own jobs. A ConfigError or OutputError, before
    anything is written, when a job's folder holds a job of other overrides (its .hydra/ and its results would
    be another job's), or the results of a job that another launcher ran (a stacked group would train it again
    from its start, writing over them)."""
    folders = job_folders(config)
    if folders is None:
        return  # another sweeper's jobs come one by one: its group's resume file holds their fingerprint
    for num, (overrides, folder) in enumerate(folders):
        if folder.exists() and not folder.is_dir():
            raise OutputError(
                f"{folder} is a file where job {num}'s folder goes: move it away, or start another sweep "
                f"(hydra.sweep.dir=...)"
            )
        recorded_file = folder / ".hydra" / "overrides.yaml"
        recorded = recorded_overrides(folder)
        if recorded is None:
            continue
        if not same_overrides(recorded, overrides):
            before = " ".join(o for o in recorded if o not in overrides) or "nothing"
            now = " ".join(o for o in overrides if o not in recorded) or "nothing"
            if renumbered(folders):
                raise ConfigError(
                    f"hydra.launcher.resume=true: this command numbers the jobs of the sweep in "
                    f"{config.hydra.sweep.dir} otherwise (its job {num} ran with {before} where this command has "
                    f"{now}): give the sweep overrides in the order of the sweep's own command (its overrides are "
                    f"in {recorded_file})"
                )
            raise ConfigError(
                f"hydra.launcher.resume=true goes on with the sweep in {config.hydra.sweep.dir} as it was started, and "
                f"its job {num} ran with {before} where this command has {now}: resume with the sweep's own command "
                f"(its overrides are in {recorded_file}), or start another sweep (hydra.sweep.dir=...)"
            )
        found = earlier_results(folder)
        launcher = recorded_launcher(folder)
        if found and launcher != STACKED_LAUNCHER:
            name = (launcher or "another launcher").rsplit(".", 1)[-1]
            raise OutputError(
                f"{folder} holds the results of job {num} run by {name} (in {', '.join(found[:3])}), which a stacked "
                f"sweep would train again from its start, writing over them: go on with that job alone (rnnreg-train "
                f"<its overrides> {pasted_override('ckpt_path', last_checkpoint_path(folder))}; rnnreg-report "
                f"{pasted_override('path', config.hydra.sweep.dir)} prints the command), or give this sweep another "
                f"folder (hydra.sweep.dir=...)"
            )


def renumbered(folders: list[tuple[list[str], Path]]) -> bool:
    """Whether a command's jobs are the sweep's own, numbered otherwise (its sweep overrides in another order
    than the sweep's command gave them): every job folder's recorded overrides are one of this command's jobs."""
    recorded = [recorded_overrides(folder) for _, folder in folders]
    return {frozenset(r) for r in recorded if r is not None} <= {frozenset(overrides) for overrides, _ in folders}


def check_job_folders(config: DictConfig, subdir: str) -> None:
    """A ConfigError, before any job's folder is made, when a hydra.sweep.subdir gives two jobs one folder
    (`${seed}` while sweeping dropout, an override_dirname that excludes a swept key) or does not resolve. A
    subdir with the job's number names every job apart: only the first job's is resolved."""
    from hydra.core.global_hydra import GlobalHydra

    if subdir == NUMBERED_SUBDIR:  # each job's folder is its number: nothing to resolve (no job composed)
        if basic_sweeper(config):
            sweep_jobs(config, GlobalHydra.instance().config_loader())
        return
    numbered = "hydra.job.num" in subdir or "hydra.job.id" in subdir
    try:
        folders = job_folders(config, first_only=numbered)
    except OmegaConfBaseException as err:  # Hydra would stop at the first job with a traceback
        raise ConfigError(f"hydra.sweep.subdir={subdir}: {str(err).splitlines()[0]}") from None
    if folders is None:
        return  # another sweeper: a job that finds another's results in its folder stops there (rnnreg.training)
    seen: dict[Path, int] = {}
    swept = swept_keys(config.hydra)
    for num, (_, folder) in enumerate(folders):
        if folder in seen:
            first = seen[folder]
            jobs = [job_named(n, folders[n][0], swept) for n in (first, num)]
            raise ConfigError(
                f"hydra.sweep.subdir={subdir} gives jobs {jobs[0]} and {jobs[1]} one folder, {folder}, each writing "
                f"over the other's files: name each job's folder apart (with the keys it sweeps, or ${{hydra.job.num}})"
            )
        seen[folder] = num


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.started = 0.0
        self.lock: RunLock | None = None
        self.thread_variables: list[str] = []  # set for this multirun's jobs (cpu_threads.share_cores)
        self.ctrl_c: CtrlCStopsTheJobs | None = None  # a submitit_local multirun's Ctrl-C

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1  # file times can be coarser than time.time()
        JobsComposedOnce.install(config)
        RankZeroRecords.install(config)  # (a submitit_local job of several tasks: the first alone writes .hydra/)
        if CtrlCStopsTheJobs.wanted(config):
            self.ctrl_c = CtrlCStopsTheJobs(lambda: self.on_multirun_end(config, cut_short=True))
            self.ctrl_c.install()
        if OmegaConf.select(config, "hydra.sweeper._target_") == OPTUNA_SWEEPER:
            end_studies_as_sweeps_end()  # (its failed trials listed below, at the sweep's end, not by a traceback)
        try:
            self.claim_sweep_folder(config)
        except UserError as err:
            if self.lock is not None:
                self.lock.release()
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except Exception:  # Hydra would only warn and run the sweep without the lock and the checks
            traceback.print_exc()
            sys.exit(1)
        if self.lock is not None:  # a sweep a job ends early (rnnreg-generate -m ... | head) ends here too
            atexit.register(self.let_go, config)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        # (a submitit_local job of several tasks: each task one DDP process of the job, before the run reads its rank)
        join_the_jobs_ddp(config.hydra.runtime.output_dir, config.hydra.job.name)
        take_ctrl_c_back()  # (in a task of a submitit_local job started by CtrlCStopsTheJobs)

    def let_go(self, config: DictConfig) -> None:
        """The sweep folder as the sweep leaves it, however it ends: its lock removed, and an rnnreg-generate
        sweep's empty job folders (its samples went to stdout)."""
        atexit.unregister(self.let_go)
        if self.ctrl_c is not None:
            self.ctrl_c.uninstall()
        if self.lock is None:
            return
        os.environ.pop(RANK_ZERO_SWEEP, None)
        while self.thread_variables:
            os.environ.pop(self.thread_variables.pop(), None)
        self.lock.release()
        if config.get("task_name") == "generate":
            drop_empty_job_folders(Path(config.hydra.sweep.dir), self.started)

    def claim_sweep_folder(self, config: DictConfig) -> None:
        if uses_stacked_launcher(config):
            check_launcher_settings(config.hydra.launcher)
        # the sweep folder is this multirun's while it runs, whatever its launcher: a second multirun there stops
        # before the sweeper writes multirun.yaml, and rnnreg-report tells a running job from a killed one
        if not launched_as_rank_zero():  # a DDP process that Lightning started with rank 0's command line (-m too)
            follow_rank_zero(config)
            return
        check_search_params(config)  # (Hydra resolves them as it makes the sweeper, after this: a traceback)
        pin_sweep_folder(config)  # every job's folder in the sweep's own
        check_grid_search_space(config)
        check_study_checkpoints(config)  # (before the W&B check: a trial that stops on its checkpoint logs nothing)
        check_wandb_runs(config)  # (it reads no folder: before the lock makes the sweep folder's parents)
        self.lock = RunLock(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
        self.lock.acquire()
        check_sweep_folder(config)
        try:
            sweep_dir = Path(config.hydra.sweep.dir)
        except OmegaConfBaseException as err:  # Hydra would stop at the sweep with a traceback
            raise ConfigError(f"hydra.sweep.dir: {str(err).splitlines()[0]}") from None
        sweep_dir.mkdir(parents=True, exist_ok=True)
        from rnnreg.io import replace_atomically  # (torch: not at a command's start, --help and completion)

        swept = yaml.safe_dump({"swept": swept_keys(config.hydra)})
        replace_atomically(sweep_dir / SWEEP_FILE, lambda tmp: tmp.write_text(swept))
        record, resumed = sweep_dir / "multirun.yaml", OmegaConf.select(config, "hydra.launcher.resume", default=False)
        if not basic_sweeper(config) and not (resumed and record.exists()):
            # Optuna's sweeper writes no record of its command (the basic one does)
            replace_atomically(record, lambda tmp: OmegaConf.save(config, tmp))
        # (the DDP processes that Lightning starts take this process's environment)
        os.environ[RANK_ZERO_SWEEP] = str(sweep_dir.resolve())
        self.thread_variables = share_cores(config)  # (as do joblib's and submitit_local's jobs)

    def on_multirun_end(self, config: DictConfig, cut_short: bool = False, **kwargs) -> None:
        """The multirun's end: the jobs that did not complete named on stderr, exit 1 (130 after a Ctrl-C); else the
        next command. `cut_short`: ended by a Ctrl-C before its last jobs (CtrlCStopsTheJobs), where a multirun none
        of whose jobs says it stopped returns (its caller says that it was stopped)."""
        JobsComposedOnce.uninstall()
        claimed = self.lock is not None  # (rank zero's multirun: not a DDP process that Lightning started)
        self.let_go(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        compare = f"rnnreg-report {pasted_override('path', sweep_dir)}"
        ended = failed_jobs(sweep_dir, self.started)
        stopped = self.ctrl_c is not None and self.ctrl_c.pressed  # (a submitit_local multirun's Ctrl-C)
        if not ended and cut_short:
            return
        if not ended:
            if claimed and config.get("task_name") == "train":  # the next command, with the folder it needs
                print(f"the multirun's jobs completed in {sweep_dir}: {compare} compares them")
            return
        swept = swept_keys(config.hydra)
        for kind, words, then in (
            ("failed", "failed", ""),
            (
                "interrupted",
                "were stopped by a signal",
                f" ({compare} gives the commands that go on)",
            ),
            ("stopped", "were stopped by a signal before they wrote a result", " (run them again)"),
        ):
            # (a job without .hydra/ by its folder alone: its own line said why)
            listed = [job_named(job, overrides, swept) for job, overrides, how in ended if how == kind]
            if listed:
                print(
                    f"error: {len(listed)} job(s) of the multirun in {sweep_dir} {words}: {', '.join(listed)}{then}",
                    file=sys.stderr,
                )
        sys.exit(130 if stopped else 1)


def drop_empty_job_folders(sweep_dir: Path, since: float) -> None:
    """The job folders an rnnreg-generate multirun's jobs left empty (its samples go to stdout, with no record in
    their folders, hydra.output_subdir=null; a failed job's holds its error.txt): those made `since` then."""
    for folder in sweep_dir.iterdir() if sweep_dir.is_dir() else ():
        if (
            folder.is_dir()
            and not folder.is_symlink()
            and folder.stat().st_mtime >= since
            and not any(folder.iterdir())
        ):
            with contextlib.suppress(OSError):  # (made again meanwhile, or not ours to remove)
                folder.rmdir()
