"""What rnnreg-report tells a user to run next for each run that did not complete: the command that resumes it
from its last checkpoint (an Optuna study's trial in its folder, outside its study), runs it again, goes on with a
stacked sweep, or starts a basic sweep's jobs that never began. A record from someone else's folder gets no command
where pasting it could run code (pasteable)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from rnnreg.config_search import command_config_folders
from rnnreg.errors import DataError
from rnnreg.folder_trust import others_can_write
from rnnreg.job_records import job_order
from rnnreg.multirun_jobs import (
    BASIC_SWEEP,
    NUMBERED_SUBDIR,
    OPTUNA_STUDY,
    basic_sweep_jobs,
    basic_sweep_record,
    override_key,
    sweep_job,
)
from rnnreg.override_text import pasted_override, path_override
from rnnreg.record_yaml import read_yaml, recorded_overrides, section, unreadable
from rnnreg.recorded_commands import go_on_command, recorded_command, recorded_run_command
from rnnreg.run_folder_check import earlier_results
from rnnreg.run_lock import RunLock
from rnnreg.run_record import last_checkpoint_path

GOES_ON = ("interrupted", "stopped", "unfinished")  # stopped by a signal, or killed hard: what they left goes on


def how_to_go_on(rows: list[dict], root: Path | None = None) -> str:
    """For the interrupted and unfinished runs: the command that goes on with each, from what it left (a
    stacked sweep's members: one line for the sweep; a basic sweep's job or an Optuna study's trial: in its own
    folder, in_its_folder, the trials with a line saying that their study never counts them); under `root`, the jobs
    of a basic sweep that never started (never_started)."""
    lines, sweeps, studies = [], {}, {}
    for r in rows:
        if r["status"] not in GOES_ON:
            continue
        run = r["path"]
        # (a stacked study's batch goes on by its launcher)
        job = sweep_job(run) if r["launcher"] != "stacked" else None
        kind = job.kind() if job is not None else None
        in_its_folder = kind in (BASIC_SWEEP, OPTUNA_STUDY)  # (a job its sweep's report then lists as completed)
        if kind == OPTUNA_STUDY:
            studies.setdefault(run.parent, []).append(r["run"])
        if r["launcher"] == "stacked":
            sweeps.setdefault(run.parent, []).append((r["run"], r["status"]))
        elif r.get("tested") and r.get("trained"):  # stopped in its final test: only that test is left to run
            test = pasteable(resume_command(run, in_its_folder=True), run / ".hydra" / "overrides.yaml")
            lines.append(f"- {r['run']} ({r['status']}): its training completed: test it in its folder with: {test}")
        elif r.get("tested"):  # (a record from before its training's was kept: a test that leaves it interrupted)
            test = pasteable(eval_command(run, r["tested"]), run / ".hydra" / "overrides.yaml")
            lines.append(f"- {r['run']} ({r['status']}): its training completed: test it with: {test}")
        elif last_checkpoint_path(run).is_file():
            resume = resume_command(run, in_its_folder=in_its_folder)
            lines.append(f"- {r['run']} ({r['status']}): {pasteable(resume, run / '.hydra' / 'overrides.yaml')}")
        else:
            # (a folder with an earlier result and no checkpoint is refused to a run that starts over: a new one)
            here = in_its_folder and not earlier_results(run)
            again = pasteable(again_command(run, in_its_folder=here), run / ".hydra" / "overrides.yaml")
            lines.append(f"- {r['run']} ({r['status']}): no checkpoint was written: run it again, {again}")
    if root is not None:
        lines += [
            f"- {job} (never started: no folder): {pasteable(command, record)}"
            if command is not None
            else f"- {job}: jobs of this sweep that never started are not listed: its overrides expand over a config "
            f"group's options (glob), which the report does not compose: compare the jobs of {record} with the "
            f"folders here"
            for job, command, record in never_started(rows, root)
        ]
    for study, runs in studies.items():
        lines.append(
            f"- {', '.join(runs)}: trials of the Optuna study in {study}, which go on in their folders, outside it: "
            "its record (optimization_results.yaml, a hydra.sweeper.storage) never counts them, and the trials it "
            "had yet to sample are not listed: to search on, run the study again"
        )
    for sweep, runs in sweeps.items():
        lines.append(
            f"- {', '.join(run for run, _ in runs)}: the stacked sweep goes on with "
            f"{pasteable(go_on_command(sweep), sweep / 'multirun.yaml')} "
            f"({stacked_resume_point(sweep, {status for _, status in runs})})"
        )
    if not lines:
        return ""
    return (
        "\nNot completed (interrupted: stopped by SIGTERM or Ctrl-C; stopped: by a signal before it wrote a result; "
        "unfinished: no metrics.json and no live process): how each goes on\n\n" + "\n".join(lines) + "\n"
    )


def pasteable(command: str, record: Path) -> str:
    """`command` in backticks, to paste; where the record it was read from (a folder from someone else) gives it an
    override naming what Hydra would build or call (`+callbacks.x._target_=torch.load`: pasted, it would run code),
    or a config folder someone else can write (--config-dir, hydra.searchpath), no command but what to read first."""
    words = shlex.split(command)
    if builds := next((w for w in words if HYDRA_SPECIAL_KEY.search(w)), None):
        return (
            f"no command shown: its record ({record}) has `{builds}`, which makes Hydra build or call what it names; "
            "read the record before running it again"
        )
    if folder := next((f for f in command_config_folders(words) if others_can_write(f)), None):
        return (
            f"no command shown: its record (in {record.parent}) reads configs from {folder}, a folder another user "
            "can write (a config there can make Hydra build or call anything); read its configs, copy them to a "
            "folder of yours and give that instead"
        )
    return f"`{command}`"


# a key Hydra's instantiate reads (_target_, _args_, _partial_, ...), in an override's key or in a mapping it gives
HYDRA_SPECIAL_KEY = re.compile(r"(^|[.+~{,\s])_[a-z]+_(=|\s*:|$)")


def stacked_resume_point(sweep: Path, statuses: set[str]) -> str:
    """Where a stacked sweep's resume starts its groups: a signal saved each group at the window it stopped in; a
    hard kill left the resume file of the group's last epoch's end (or none)."""
    if not any((sweep / ".stacked").glob("group_*.pt")):
        return "from the start: no epoch had ended"
    if statuses == {"interrupted"}:
        return "each group from the window where it stopped"
    if statuses == {"unfinished"}:
        return "each group from its last epoch's end"
    return "each group from where it stopped: the window of a signal, the last epoch's end of a hard kill"


def resume_command(run: Path, checkpoint: Path | None = None, in_its_folder: bool = False) -> str:
    """The command that goes on exactly from `run`'s last checkpoint (or `checkpoint`: the one a resumed run stopped
    before its first window goes on from), in a new run folder: its overrides (a multirun job's own values, without
    Hydra's, less what made it a study's trial: job_overrides), less the checkpoint it may itself have resumed from.
    `in_its_folder`: in `run` itself, from its own last.ckpt (`ckpt_path=last hydra.run.dir=<run> hydra.mode=RUN`):
    a basic sweep's job or a study's trial, which its sweep's report then lists as completed."""
    kept = [o for o in job_overrides(run) if override_key(o) != "ckpt_path"]
    if in_its_folder:
        return shlex.join([*recorded_run_command(run), *kept, "ckpt_path=last", *in_folder_overrides(run)])
    last = path_override("ckpt_path", checkpoint or last_checkpoint_path(run))
    return shlex.join([*recorded_run_command(run), *kept, last])


def eval_command(run: Path, checkpoint: Path | str) -> str:
    """The rnnreg-eval command that tests `checkpoint` of `run` on the run's corpus: its data overrides (data=text
    data.data_dir=...: rnnreg-eval reads PTB otherwise)."""
    data = [o for o in recorded_overrides(run) or [] if override_key(o).split(".")[0] == "data"]
    return shlex.join(["rnnreg-eval", *data, path_override("ckpt_path", checkpoint)])


def again_command(run: Path, in_its_folder: bool = False) -> str:
    """The command that runs `run` again from where it started (its overrides, an earlier ckpt_path kept);
    `in_its_folder`: in `run` itself (a basic sweep's job or a study's trial whose folder holds no result)."""
    overrides = job_overrides(run)
    return shlex.join([*recorded_run_command(run), *overrides, *(in_folder_overrides(run) if in_its_folder else [])])


def job_overrides(run: Path) -> list[str]:
    """`run`'s recorded overrides, less `hparams_search=`: a study's trial holds its sampled values, and that
    option (hydra.mode MULTIRUN) would make its command a new study of them, not the trial."""
    return [o for o in recorded_overrides(run) or [] if override_key(o) != "hparams_search"]


def in_folder_overrides(run: Path) -> list[str]:
    """hydra.run.dir=<run> hydra.mode=RUN: a basic sweep's job run alone in its own numbered folder, where its sweep's
    report reads it (absolute: the command is pasted anywhere). hydra.mode=RUN: an experiment that is a multirun by
    itself (experiment=ablation_placement) would otherwise run the job as a sweep of one in a new dated folder,
    hydra.run.dir unread."""
    return [path_override("hydra.run.dir", os.path.abspath(run)), "hydra.mode=RUN"]


def resume_from(last: Path | None, run: str | Path | None = None) -> str:
    """How a run that stopped goes on from its last checkpoint (None: it wrote none): the command the console gave,
    with the run's own overrides, where its folder `run` holds Hydra's record of them; else (a run train() was
    called for from Python, its settings its caller's) `rnnreg-train ... ckpt_path=<last>`."""
    if last is None:
        return "no checkpoint was written"
    if run is not None and has_overrides_record(run):
        return resume_command(Path(run), last)
    return f"rnnreg-train ... {pasted_override('ckpt_path', last)}"


def test_left_in(run: str | Path) -> str:
    """How a run stopped in its final test, its training completed, goes on: in its folder `run`, where that test
    runs again on the weights it was testing and completes its record (nothing is trained); hydra.mode=RUN, as
    in_folder_overrides gives it: alone also where its experiment is a multirun by itself.
    With the run's own overrides where its folder holds Hydra's record of them (resume_from)."""
    if has_overrides_record(run):
        return resume_command(Path(run), in_its_folder=True)
    return f"rnnreg-train ... ckpt_path=last {pasted_override('hydra.run.dir', run)} hydra.mode=RUN"


def has_overrides_record(run: str | Path) -> bool:
    """Whether `run`'s folder holds Hydra's record of its command and overrides (a run train() was called for from
    Python has none)."""
    return (Path(run) / ".hydra" / "overrides.yaml").is_file() and (Path(run) / ".hydra" / "hydra.yaml").is_file()


def never_started(rows: list[dict], root: Path) -> list[tuple[str, str | None, Path]]:
    """(job, command, its sweep's multirun.yaml) of each job of a basic sweep under `root` that has no folder: the
    sweep was stopped (SIGTERM, Ctrl-C) before it; the command runs it in the folder the sweep would have given it
    (`<sweep>/<its number>`; under another hydra.sweep.subdir, `s${seed}` say, which needs the job's config to
    resolve, in `<sweep>/<its number>` too: the report reads every folder below the sweep). Its jobs are recomputed
    from its multirun.yaml as Hydra's basic sweeper splits them (rnnreg.multirun_jobs.basic_sweep_jobs); a job of
    another subdir has started where a job folder's own record names its number and this sweep. Overrides that need
    the config to expand (a glob over a group's options): one entry for the sweep where one of its jobs did not
    complete (it was stopped), its command None (the report cannot list them). Nothing for a live sweep or another
    sweeper."""
    found: list[tuple[str, str | None, Path]] = []
    sweeps = {root, *(r["path"].parent for r in rows)}
    for sweep in sorted((s for s in sweeps if s == root or root in s.parents), key=lambda p: job_order(str(p))):
        record = sweep / "multirun.yaml"
        hydra = basic_sweep_record(sweep, any_subdir=True)
        if hydra is None:
            continue
        if RunLock.in_use(sweep):  # still running: the jobs to come have not started yet
            continue
        params = section(section(hydra, record, "sweeper"), record, "params")
        task = section(hydra, record, "overrides").get("task") or []
        if not isinstance(task, list) or not all(isinstance(o, str) for o in task):
            raise unreadable(record, "hydra.overrides.task is not a list of overrides")
        numbered = section(hydra, record, "sweep").get("subdir") == NUMBERED_SUBDIR
        started = None if numbered else started_jobs(rows, sweep, section(hydra, record, "sweep").get("dir"))
        try:
            jobs = basic_sweep_jobs(params, task)
        except Exception:  # a glob over config options needs the config: the report cannot list them
            if any(r["status"] in GOES_ON and sweep in r["path"].parents for r in rows):  # (stopped: some may not)
                found.append((str(sweep.relative_to(root)) if sweep != root else sweep.name, None, record))
            continue
        for num, overrides in enumerate(jobs):
            if numbered and (sweep / str(num) / ".hydra" / "config.yaml").is_file():
                continue
            if not numbered and (started is None or num in started or (sweep / str(num)).exists()):
                continue  # (a record that names no number: nothing is said of the sweep's jobs)
            command = shlex.join([*recorded_command(hydra), *overrides, *in_folder_overrides(sweep / str(num))])
            found.append((str((sweep / str(num)).relative_to(root)), command, record))
    return found


def started_jobs(rows: list[dict], sweep: Path, sweep_dir) -> set[int] | None:
    """The job numbers of `sweep` that have a folder (its runs' .hydra/hydra.yaml: hydra.job.num, and the sweep's
    hydra.sweep.dir as this sweep's multirun.yaml has it: a sweep inside it is another); None where a run below it
    does not say (a record written otherwise: its jobs are not listed)."""
    numbers: set[int] = set()
    for r in rows:
        if sweep not in r["path"].parents:
            continue
        record = r["path"] / ".hydra" / "hydra.yaml"
        try:
            hydra = section(read_yaml(record), record, "hydra")
            num, its_sweep = section(hydra, record, "job").get("num"), section(hydra, record, "sweep").get("dir")
        except DataError:
            return None
        if isinstance(its_sweep, str) and its_sweep != sweep_dir:
            continue  # (a sweep of its own inside this one)
        if its_sweep is None or not isinstance(num, int) or isinstance(num, bool):
            return None
        numbers.add(num)
    return numbers
