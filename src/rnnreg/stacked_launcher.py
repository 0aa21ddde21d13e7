"""`rnnreg-train -m hydra/launcher=stacked <sweep>`: the multirun's jobs grouped by what a stacked model's
members must share, each group trained at once as one StackedLanguageModel (rnnreg.stacked_train).

Every job gets its folder exactly as Hydra's basic launcher makes it (`<sweep dir>/<subdir>/.hydra/
{config,hydra,overrides}.yaml`) and, after training, the outputs of a separate run (metrics.json,
csv/metrics.csv, train.log, checkpoints/{best,last}.ckpt). The launcher class Hydra instantiates lives in
hydra_plugins.rnnreg_stacked_launcher (Hydra's rule for plugins); the work is here: composing and grouping the
jobs, then training each group. What a group can hold is rnnreg.stacked_settings; its resume file,
rnnreg.stacked_resume.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, _save_config, configure_log, filter_overrides, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from rnnreg.console import counted
from rnnreg.errors import ConfigError, DataError, UserError
from rnnreg.job_records import report_failed_job
from rnnreg.multirun_jobs import NOT_COMPARED, basic_sweeper, job_label, swept_keys
from rnnreg.recorded_commands import go_on_command
from rnnreg.run_record import STOPPED_BY, last_checkpoint_path, recorded_metrics
from rnnreg.stacked_resume import (
    check_counts,
    check_group_data,
    load_resume_file,
    resume_fingerprints,
    resume_refusal,
    setting_differences,
    unreadable_resume,
)
from rnnreg.stacked_settings import (
    check_launcher_settings,
    check_stackable,
    on_a_cpu,
    pad_hidden_to,
    padded_size,
    running_program,
    under_bf16_autocast,
)
from rnnreg.stacked_stop import StopRequest
from rnnreg.validation import validate

log = logging.getLogger("rnnreg")

# What may differ between the members of one group (each member holds its own): removed from a job's
# resolved config to make its group key. Everything else must be equal within a group.
MEMBER_KEYS = (
    "seed",
    "dropout",
    "model.init_scale",
    "model.lstm",  # the member's LSTM on a CPU, where it runs as its single model (on a GPU: the step loop)
    "optim.lr",
    "optim.decay",
    "optim.decay_start",
    "optim.weight_decay",
    "optim.momentum",
    "trainer.gradient_clip_val",
    "callbacks.early_stopping",
    "experiment_name",
    "test_ckpt",
)
# Where a job writes and how it is watched (its loggers: the W&B run's name, group and job type; tags; the
# progress bar), never what it computes: each job's own too, as its outputs are (rnnreg.stacked_outputs).
OUTPUT_KEYS = NOT_COMPARED
# stand for each job's own folder and experiment name in the group key, and in what interpolates them (the
# checkpoint folder, the run plan's title)
OUTPUT_DIR, EXPERIMENT_NAME = "<job folder>", "<job experiment>"


@dataclass
class Job:
    """One multirun job: number, overrides, its composed config (task part) and its folder."""

    idx: int
    overrides: list[str]
    cfg: DictConfig  # the task config, as the task function would receive it
    hydra_cfg: DictConfig
    output_dir: Path
    key: str = ""
    plain: dict = field(default_factory=dict)  # cfg resolved
    task_cfg: DictConfig | None = None  # cfg as composed (unresolved), for its .hydra/config.yaml


def drop_key(tree: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def group_key(cfg: DictConfig) -> str:
    """The job's resolved config without what a member holds (MEMBER_KEYS) and its outputs' settings
    (OUTPUT_KEYS), its folder and experiment name replaced by placeholders: jobs with equal keys can be
    trained as one stacked model."""
    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        cfg.paths.output_dir = OUTPUT_DIR
        cfg.experiment_name = EXPERIMENT_NAME
        cfg.pop("hydra", None)
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in MEMBER_KEYS + OUTPUT_KEYS:
        drop_key(tree, key)
    return json.dumps(tree, sort_keys=True, default=str)


def group_jobs(jobs: Sequence, max_members: int) -> list[list]:
    """Jobs with one group key together (in job order), groups of at most `max_members`, in the order of
    their first job. `jobs`: anything with a `key`; `max_members`: checked (check_launcher_settings)."""
    by_key: dict[str, list] = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(job)
    return [members[i : i + max_members] for members in by_key.values() for i in range(0, len(members), max_members)]


def planned_groups(jobs: Sequence, max_members: int, first: int, sweep_dir: Path | None) -> list[tuple[int, list]]:
    """(number, jobs) of each group to run: `group_jobs` numbered from `first`; when a stacked sweep goes on
    (`sweep_dir`: hydra.launcher.resume=true), resumed_groups."""
    if sweep_dir is None:
        return list(enumerate(group_jobs(jobs, max_members), first))
    return resumed_groups(jobs, max_members, first, sweep_dir)


def resumed_groups(jobs: Sequence, max_members: int, first: int, sweep_dir: Path) -> list[tuple[int, list]]:
    """The groups of a sweep that goes on, whatever hydra.launcher.max_members it is given now: each
    interrupted group as its resume file (.stacked/group_N.pt) holds it, the jobs an earlier run finished
    (metrics.json: completed or failed) as they ran (group_done hands on their results, none is trained
    again), and only the jobs that never trained grouped anew (`max_members`), numbered after every earlier
    group. A ConfigError, before anything is written, where a resume file's group is not this command's."""
    fingerprints = resume_fingerprints(sweep_dir / ".stacked")
    groups = interrupted_groups(jobs, fingerprints)
    taken = {job.idx for group in groups.values() for job in group}
    finished = [job for job in jobs if job.idx not in taken and recorded_status(job) in ("completed", "failed")]
    done: dict[int, list] = {}
    unnumbered = []
    for job in finished:  # in the group it ran in, under that group's number
        number = (job_metrics(job).get("stacked") or {}).get("group")
        if isinstance(number, int) and number not in groups:
            done.setdefault(number, []).append(job)
        else:
            unnumbered.append(job)
    groups |= done
    never_trained = [job for job in jobs if job.idx not in taken and job not in finished]
    for job in never_trained:
        check_never_trained(job)
    earlier = [first - 1, *groups, *(number for number, _, _ in fingerprints)]
    fresh = group_jobs(unnumbered, max_members) + group_jobs(never_trained, max_members)
    groups.update(enumerate(fresh, max(earlier) + 1))
    return sorted(groups.items())


def interrupted_groups(jobs: Sequence, fingerprints: list[tuple[int, Path, list]]) -> dict[int, list]:
    """{number: jobs} of each resume file that holds jobs of this command (another batch's, Optuna's, none):
    its members as they were, whatever the order of their overrides."""
    by_overrides = {frozenset(job.overrides): job for job in jobs}
    groups = {}
    for number, path, (key, members) in fingerprints:
        group = [by_overrides.get(frozenset(overrides)) for overrides in members]
        if all(job is None for job in group):
            continue
        if None in group:
            missing = next(o for o, job in zip(members, group) if job is None)
            raise ConfigError(
                f"{path} holds an interrupted group with a job this command does not run ({' '.join(missing)}): "
                f"resume with the sweep's own command, or start another sweep (hydra.sweep.dir=...)"
            )
        if changed := next((job for job in group if job.key != key), None):
            raise ConfigError(
                f"{path} holds group {number} trained with {setting_differences(key, changed.key)}: resume with "
                f"the sweep's own settings, or start another sweep (hydra.sweep.dir=...)"
            )
        groups[number] = group
    return groups


def check_resume_files(
    sweep_dir: Path, groups: list[tuple[int, list]], program: str, on_cpu: bool, pads: dict[int, int], pad
) -> None:
    """A ConfigError, before anything is written, when an interrupted group would go on with another program,
    on another device or with other padding than its resume file's (resume_refusal; `pads`: each group's
    pad_hidden_to, `pad` the setting; the group's trainer checks again as it loads it), or on data its file refuses
    (check_group_data: another vocabulary, a train split changed inside an epoch), so that no earlier group trains
    before a later one is refused. With `pad` auto an interrupted group goes on at its file's padding (`pads` takes
    it; a file from before padding: none)."""
    device = "cpu" if on_cpu else "cuda"
    corpora: dict[str, object] = {}  # each data config's corpus, read once (a sweep's groups share it)
    for number, group in groups:
        path = sweep_dir / ".stacked" / f"group_{number}.pt"
        if not path.is_file():
            continue
        state = load_resume_file(path, mmap=True)  # (read once already: resume_fingerprints)
        if pad == "auto":
            pads[number] = int(state.get("pad_hidden_to", 1))
        hidden = group[0].cfg.model.hidden_size
        if why := resume_refusal(path, state, running_program(program, on_cpu), device, hidden, pads[number]):
            raise ConfigError(f"{describe(group, number)}: {why}")
        try:  # (what the data check reads of it)
            check_counts(state, group[0].cfg.trainer.max_epochs, len(group))
        except (KeyError, TypeError, ValueError) as err:
            raise unreadable_resume(path, err) from None
        corpus = group_corpus(group[0], corpora)
        if corpus is None:  # its data cannot be read: its jobs fail as it starts, as a basic job's would
            continue
        try:  # (its warnings are said as the group loads its file, in its members' train.log too)
            check_group_data(state, corpus, path, group[0].output_dir, group[0].cfg.trainer.max_epochs)
        except UserError as err:
            raise type(err)(f"{describe(group, number, pads[number])}: {err}") from None


def group_corpus(job: Job, corpora: dict):
    """The corpus of `job`'s data config, from `corpora` where read before; None where it cannot be read."""
    from rnnreg.instantiation import instantiate  # (Lightning: at a resume only)

    key = json.dumps(OmegaConf.to_container(job.cfg.data, resolve=True), sort_keys=True, default=str)
    if key not in corpora:
        try:
            corpora[key] = instantiate(job.cfg.data).load()
        except DataError:
            corpora[key] = None
    return corpora[key]


def recorded_status(job) -> str | None:
    return job_metrics(job).get("status")


def job_metrics(job) -> dict:
    """The job's metrics.json from an earlier run of its sweep ({} without one)."""
    return recorded_metrics(job.output_dir)


def check_never_trained(job) -> None:
    """A ConfigError where a job no resume file holds has a checkpoint: a resume would train it from its start,
    writing over it."""
    last = last_checkpoint_path(job.output_dir)
    if last.exists():
        raise ConfigError(
            f"job {job.idx} has a checkpoint ({last}) but no resume file of its group: hydra.launcher.resume=true "
            f"would train it again from its start; go on with it alone (rnnreg-train <its overrides> ckpt_path="
            f"{last}), or move its folder away"
        )


def describe(group: Sequence[Job], index: int, pad: int = 1) -> str:
    """The group in one line (`pad`: its pad_hidden_to, said where it pads)."""
    cfg = group[0].cfg
    units = padded_size(cfg.model.hidden_size, pad)
    held = f" (held as {units})" if units != cfg.model.hidden_size else ""
    return (
        f"group {index}: jobs {[j.idx for j in group]}, {counted(len(group), 'member')}, "
        f"{cfg.model.num_layers} x {cfg.model.hidden_size}{held} LSTM"
        f"{' with layer norm' if cfg.model.layer_norm else ''}"
        f"{', tied embedding' if cfg.model.tie_weights else ''}, batch {cfg.data.batch_size} x bptt {cfg.data.bptt}"
        f"{', bf16 autocast' if under_bf16_autocast(cfg.trainer) else ''}"
    )


def prepare_job(launcher, idx: int, overrides: Sequence[str]) -> Job:
    """Compose the job's config as hydra.core.utils.run_job does, and check it: nothing is written yet
    (write_job_config makes its folder once every job of the batch is checked)."""
    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    original = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(sweep_config)
        output_dir = os.path.join(
            str(OmegaConf.select(sweep_config, "hydra.sweep.dir")),
            str(OmegaConf.select(sweep_config, "hydra.sweep.subdir")),
        )
        with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
            sweep_config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        HydraConfig.instance().set_config(sweep_config)
        task_cfg = copy.deepcopy(sweep_config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
        # resolved now, while the job's Hydra config is set (${hydra:runtime.output_dir})
        key = group_key(task_cfg)
        plain = OmegaConf.to_container(task_cfg, resolve=True)
        resolved = OmegaConf.create(plain)
        # the command line's check ran before Hydra, except for jobs it cannot compose (a search path, an
        # Optuna trial): each job is checked here as a run checks itself, before any folder is written
        try:
            validate(task_cfg, "train", choices=hydra_cfg.hydra.runtime.choices)
            check_stackable(resolved)
        except ConfigError as err:  # named as the command line's check names a sweep's job
            label = job_label(list(overrides), swept_keys(launcher.config.hydra))
            raise ConfigError(f"{err} (sweep job {label})" if label else str(err)) from None
        output = Path(output_dir).resolve()
        return Job(idx, list(overrides), resolved, hydra_cfg, output, key=key, plain=plain, task_cfg=task_cfg)
    finally:
        HydraConfig.instance().cfg = original


def write_job_config(job: Job) -> None:
    """The job's folder and `.hydra/{config,hydra,overrides}.yaml`, as Hydra's basic launcher writes them."""
    job.output_dir.mkdir(parents=True, exist_ok=True)
    hydra = job.hydra_cfg.hydra
    if hydra.output_subdir is not None:
        hydra_output = Path(hydra.runtime.output_dir, hydra.output_subdir)
        _save_config(job.task_cfg, "config.yaml", hydra_output)
        _save_config(job.hydra_cfg, "hydra.yaml", hydra_output)
        _save_config(hydra.overrides.task, "overrides.yaml", hydra_output)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))  # locked by rnnreg.sweep.SweepCallback while it runs
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return launch_groups(launcher, sweep_dir, job_overrides, initial_job_idx)


def refuse(launcher, sweep_dir: Path, message: str) -> NoReturn:
    """One line and exit 2. A refused resume leaves the sweep's record as it found it: its multirun.yaml (which
    the sweeper had replaced with this command's) keeps the sweep's own command, the one that goes on."""
    if launcher.resume and launcher.sweep_record is not None:
        from rnnreg.io import replace_atomically  # (torch: not for a command line's check)

        replace_atomically(sweep_dir / "multirun.yaml", lambda tmp: tmp.write_bytes(launcher.sweep_record))
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def launch_groups(
    launcher, sweep_dir: Path, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    try:
        check_launcher_settings(launcher.config.hydra.launcher)  # (rnnreg.sweep's callback checked them, if it ran)
        jobs = [prepare_job(launcher, initial_job_idx + i, o) for i, o in enumerate(job_overrides)]
        resumed = sweep_dir if launcher.resume else None
        groups = planned_groups(jobs, launcher.max_members, launcher.launched_groups, resumed)
        on_cpu = on_a_cpu(str(jobs[0].plain["trainer"].get("accelerator", "auto")) if jobs else "auto")
        program = running_program(launcher.program, on_cpu)
        pads = {i: pad_hidden_to(group[0].cfg, launcher.pad_hidden_to, program, on_cpu) for i, group in groups}
        if resumed is not None:
            check_resume_files(sweep_dir, groups, launcher.program, on_cpu, pads, launcher.pad_hidden_to)
    except UserError as err:
        refuse(launcher, sweep_dir, str(err))
    # from the jobs' folders on, a signal stops the sweep with a record in each folder of the group it stops: noted
    # here and between groups, it stops the next group as it starts (rnnreg.stacked_train.train_group)
    stop = StopRequest("launch")
    handlers = stop.install()
    try:
        returns = train_groups(launcher, sweep_dir, jobs, groups, on_cpu, pads, stop)
    finally:
        stop.restore(handlers)
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return [returns[job.idx] for job in jobs]


def train_groups(
    launcher,
    sweep_dir: Path,
    jobs: list[Job],
    groups: list[tuple[int, list]],
    on_cpu: bool,
    pads: dict[int, int],
    stop: StopRequest,
) -> dict[int, JobReturn]:
    """Each job's folder, then each group trained, `stop` (the sweep's, installed) handed to each: each job's
    return, by number."""
    for job in jobs:  # every job composed, checked and grouped: now their folders
        if not (launcher.resume and (job.output_dir / ".hydra" / "overrides.yaml").exists()):
            write_job_config(job)  # (a resumed job keeps the record of the sweep that made it: the same overrides)
    launcher.launched_groups = max([launcher.launched_groups - 1] + [i for i, _ in groups]) + 1
    print(f"Stacked launcher: {counted(len(jobs), 'job')} in {counted(len(groups), 'group')}", flush=True)
    for i, group in groups:
        print(f"  {describe(group, i, pads[i])}", flush=True)
        for job in group:
            print(f"    #{job.idx} : {' '.join(filter_overrides(job.overrides))}", flush=True)
    returns: dict[int, JobReturn] = {}
    # Lightning only here, for training: grouping and its refusals above are plain Hydra and OmegaConf (and torch
    # for a resume's files)
    from rnnreg.stacked_train import train_group

    if on_cpu and launcher.program == "batched":
        print(
            "note: hydra.launcher.program=batched runs the GPU's stacked program on a CPU, to check it without a GPU: "
            "slower than the members in turn, and its members match their jobs to float32 rounding, not bit for bit",
            flush=True,
        )
    elif on_cpu:
        print(
            "note: on a CPU a stacked group trains its members in turn, each as its job would run alone, at about "
            "the speed of its jobs one after another (docs/measurements.md); stacking pays on a GPU",
            flush=True,
        )
    for i, group in groups:
        print(describe(group, i, pads[i]), flush=True)
        try:
            results = train_group(
                group,
                i,
                sweep_dir / ".stacked" / f"group_{i}.pt",
                resume=launcher.resume,
                stop_after_windows=launcher.stop_after_windows,
                program=launcher.program,
                pad_hidden_to=pads[i],
                stop=stop,
            )
        except DataError as err:  # its jobs fail as basic jobs do on bad data: the other groups go on
            results = [("failed", err)] * len(group)
        except UserError as err:  # the command's mistake (its resume, its output): one line, nothing more trains
            refuse(launcher, sweep_dir, f"{describe(group, i, pads[i])}: {err}")
        for job, (status, value) in zip(group, results):
            returns[job.idx] = job_return(launcher, job, status, value)
    if stop.signal is not None:  # it came as the last group ended: nothing more of the sweep runs (Optuna's next batch)
        print(f"{STOPPED_BY[stop.signal]}: the sweep stopped; go on with: {go_on_command(sweep_dir)}", flush=True)
        raise SystemExit(128 + stop.signal)
    return returns


def job_return(launcher, job: Job, status: str, value) -> JobReturn:
    """What run_job hands the sweeper: the best validation perplexity (what hparams_search reads); for a failed
    member what a failed basic job hands it, reported as a basic job reports it (rnnreg.job_records.report_failed_job:
    its line on stderr, its error.txt; to Hydra's basic sweeper None, to any other a failure: Optuna's FAIL)."""
    ret = JobReturn(
        overrides=job.overrides,
        cfg=job.cfg,
        hydra_cfg=job.hydra_cfg,
        working_dir=os.getcwd(),
        task_name=str(job.hydra_cfg.hydra.job.name),
    )
    ret.status, ret.return_value = JobStatus.COMPLETED, value
    if status != "completed":
        swept = swept_keys(launcher.config.hydra)
        ret.return_value = report_failed_job(
            job.idx, job.overrides, swept, value, job.output_dir, basic_sweeper(launcher.config)
        )
        if ret.return_value is not None:  # JobFailed
            ret.status = JobStatus.FAILED
    return ret
