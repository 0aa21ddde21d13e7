"""`rnnreg-train -m hydra/launcher=stacked <sweep>`: the multirun's jobs grouped by what a stacked model's
members must share, each group trained at once as one StackedLanguageModel (rnnreg.stacked_train).

Every job gets its folder exactly as Hydra's basic launcher makes it (`<sweep dir>/<subdir>/.hydra/
{config,hydra,overrides}.yaml`) and, after training, the outputs of a separate run (metrics.json,
csv/metrics.csv, train.log, checkpoints/{best,last}.ckpt). The launcher class Hydra instantiates lives in
hydra_plugins.rnnreg_stacked_launcher (Hydra's rule for plugins); the work is here.
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
from rnnreg.errors import CheckpointError, ConfigError, DataError, UserError, first_line
from rnnreg.run_lock import recorded_metrics
from rnnreg.sweep import ERROR_FILE, NOT_COMPARED, basic_sweeper, job_label, swept_keys

PROGRAMS = ("auto", "batched", "in_turn")  # hydra.launcher.program (rnnreg.stacked_step.group_step runs them)
# hydra.launcher.pad_hidden_to=auto: the batched program on a GPU holds the hidden units padded to a multiple of
# this (650 as 656): 16-byte aligned rows in float32, bf16 and fp16 (rnnreg.stacked's docstring)
GPU_PAD_HIDDEN_TO = 8

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


def check_launcher_settings(launcher: DictConfig) -> None:
    """hydra.launcher's values (conf/hydra/launcher/stacked.yaml), checked before anything is written: a one-line
    ConfigError naming the key and what it takes."""
    max_members, resume = launcher.get("max_members"), launcher.get("resume")
    program, stop = launcher.get("program"), launcher.get("stop_after_windows")
    pad = launcher.get("pad_hidden_to", "auto")
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ConfigError(
            f"hydra.launcher.max_members={max_members} must be a whole number of at least 1 (the most jobs trained "
            f"as one program; 16 by default)"
        )
    if not isinstance(resume, bool):
        raise ConfigError(f"hydra.launcher.resume={resume} must be true or false")
    if program not in PROGRAMS:
        raise ConfigError(f"hydra.launcher.program={program} must be one of {', '.join(PROGRAMS)}")
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int) or stop < 1):
        raise ConfigError(f"hydra.launcher.stop_after_windows={stop} must be null or a whole number of at least 1")
    if pad != "auto" and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 1):
        raise ConfigError(
            f"hydra.launcher.pad_hidden_to={pad} must be auto or a whole number of at least 1 (1: no padding)"
        )


def pad_hidden_to(cfg, pad, program: str, on_cpu: bool) -> int:
    """The multiple a group's hidden units are padded to (hydra.launcher.pad_hidden_to, `pad`; `program`: the one
    it runs, running_program): auto is GPU_PAD_HIDDEN_TO for the batched program on a GPU without layer norm, 1
    otherwise. A ConfigError where a padding was asked for that the group cannot have."""
    hidden, layer_norm = cfg.model.hidden_size, bool(cfg.model.get("layer_norm", False))
    if pad == "auto":
        return GPU_PAD_HIDDEN_TO if program == "batched" and not on_cpu and not layer_norm else 1
    if hidden % pad == 0:  # nothing to pad
        return pad
    if layer_norm:
        raise ConfigError(
            f"hydra.launcher.pad_hidden_to={pad} would pad model.hidden_size={hidden}, which layer norm normalises "
            f"over: set hydra.launcher.pad_hidden_to=1 (or auto)"
        )
    if program == "in_turn":
        raise ConfigError(
            f"hydra.launcher.pad_hidden_to={pad}: the members in turn run as their own models, unpadded; set "
            f"hydra.launcher.pad_hidden_to=1 (or auto), or hydra.launcher.program=batched"
        )
    return pad


# The trainer settings GroupTrainer reads (rnnreg.stacked_train), and the ones that only say how Lightning shows
# or places a run (a stacked group has its own progress, files and device): every other Trainer argument must be
# at a value that does what GroupTrainer does (TRAINER_ASSUMED), or the members would differ from their jobs.
TRAINER_READ = (
    "max_epochs",
    "check_val_every_n_epoch",  # a group validates on its jobs' epochs (part of the group key, as max_epochs is)
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "log_every_n_steps",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "fast_dev_run",
)
TRAINER_UNUSED = (
    "default_root_dir",
    "plugins",
    "num_sanity_val_steps",
    "enable_progress_bar",
    "enable_model_summary",
    "enable_autolog_hparams",
    "use_distributed_sampler",
    "sync_batchnorm",
    "deterministic",
    "benchmark",
    "inference_mode",
    "limit_predict_batches",
    "reload_dataloaders_every_n_epochs",
    "model_registry",
)
# key: (the values that do what a stacked group does, the first one the fix; what the group does instead)
TRAINER_ASSUMED = {
    "val_check_interval": ((None, 1.0), "it validates at each epoch's end"),
    "max_steps": ((-1, None), "it trains trainer.max_epochs epochs"),
    "min_steps": ((None, 0), "early stopping may stop a member at any epoch"),
    "min_epochs": ((None, 0, 1), "early stopping may stop a member at any epoch"),
    "max_time": ((None,), "it trains trainer.max_epochs epochs"),
    "accumulate_grad_batches": ((1,), "it updates after every window"),
    "overfit_batches": ((0.0, 0), "it trains on the train split"),
    "detect_anomaly": ((False,), "it does not run autograd's anomaly detection"),
    "barebones": ((False,), "it writes every job's logs and checkpoints"),
    "enable_checkpointing": ((None, True), "it writes every job's checkpoints"),
    "profiler": ((None,), "it runs no profiler"),
}


def is_one_of(value, values: tuple) -> bool:
    """`value` equal to one of `values` and of its type (1 is not 1.0 to val_check_interval, nor True)."""
    return any(value == v and type(value) is type(v) for v in values)


def shown(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def check_trainer_assumed(trainer: DictConfig) -> None:
    """A one-line ConfigError for a trainer setting a stacked group would not honour (TRAINER_ASSUMED)."""
    for key, (values, instead) in TRAINER_ASSUMED.items():
        value = trainer.get(key, values[0])
        if not is_one_of(value, values):
            raise ConfigError(
                f"trainer.{key}={shown(value)} is not honoured by hydra/launcher=stacked ({instead}): set "
                f"trainer.{key}={shown(values[0])}, or drop hydra/launcher=stacked to run these jobs with Hydra's "
                f"basic launcher"
            )


def check_stackable(cfg: DictConfig) -> None:
    """A one-line ConfigError naming the first setting a stacked member cannot hold."""
    trainer = cfg.trainer
    check_trainer_assumed(trainer)
    unsupported = [
        ("ckpt_path", cfg.get("ckpt_path"), "null (resume a stacked sweep with hydra.launcher.resume=true)"),
        ("trainer.fast_dev_run", trainer.get("fast_dev_run", False), "false"),
    ]
    for key, value, valid in unsupported:
        if value:
            raise ConfigError(
                f"{key}={value} is not supported by hydra/launcher=stacked: set {valid}, or drop "
                f"hydra/launcher=stacked to run these jobs one by one"
            )
    if str(trainer.get("precision", "32-true")) not in ("32", "32-true"):
        raise ConfigError(
            f"trainer.precision={trainer.precision} is not supported by hydra/launcher=stacked (float32 only): "
            f"set trainer.precision=32-true, or drop hydra/launcher=stacked"
        )
    if trainer.get("gradient_clip_algorithm", "norm") != "norm":
        raise ConfigError(
            f"trainer.gradient_clip_algorithm={trainer.gradient_clip_algorithm} is not supported by "
            f"hydra/launcher=stacked (it clips the global norm): set trainer.gradient_clip_algorithm=norm"
        )
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    if "ddp" in str(trainer.get("strategy", "auto")) or nodes != 1 or devices not in (1, "1", "auto"):
        raise ConfigError(
            f"trainer.devices={devices} / trainer.strategy={trainer.get('strategy', 'auto')}: a stacked group runs "
            f"on one device; use trainer=default (or trainer=gpu)"
        )


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
    their first job. `jobs`: anything with a `key`."""
    if max_members < 1:
        raise ConfigError(f"hydra.launcher.max_members={max_members} must be at least 1")
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


def resume_fingerprints(stacked_dir: Path) -> list[tuple[int, Path, list]]:
    """(number, path, fingerprint: group key and members' overrides) of each resume file of a stacked sweep."""
    import torch  # (only a resume reads one: grouping is plain Hydra and OmegaConf)

    found = []
    for path in sorted(stacked_dir.glob("group_*.pt")):
        number = path.stem.removeprefix("group_")
        if not number.isdigit():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            found.append((int(number), path, checked_fingerprint(state)))
        except Exception as err:
            raise unreadable_resume(path, err) from None
    return found


def unreadable_resume(path: Path, why) -> CheckpointError:
    """A group's resume file that cannot be read (cut short, edited): one line, and the way on."""
    return CheckpointError(
        f"{path} is not a readable resume file ({first_line(why)}): move it away to train its group again from "
        f"its start"
    )


def checked_fingerprint(state) -> list:
    """A resume file's fingerprint (its group key, JSON, and each member's overrides), checked with the width its
    group held; a ValueError where the file holds something else."""
    fingerprint = state.get("fingerprint") if isinstance(state, dict) else None
    if not (isinstance(fingerprint, (list, tuple)) and len(fingerprint) == 2):
        raise ValueError("no fingerprint of its group")
    key, members = fingerprint
    try:
        json.loads(key)  # (setting_differences reads it)
    except (TypeError, ValueError):
        raise ValueError("its group key is not JSON") from None
    if not isinstance(members, (list, tuple)) or not all(
        isinstance(m, (list, tuple)) and all(isinstance(o, str) for o in m) for m in members
    ):
        raise ValueError("its members' overrides are not lists of overrides")
    for name in ("units", "pad_hidden_to"):
        value = state.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not a whole number of at least 1")
    return [key, [list(m) for m in members]]


def running_program(program: str, on_cpu: bool) -> str:
    """The program a group runs (rnnreg.stacked_step.group_step): hydra.launcher.program, auto being the members
    in turn on a CPU and batched elsewhere."""
    return "in_turn" if program == "in_turn" or (program == "auto" and on_cpu) else "batched"


def resume_refusal(resume_file: Path, written: dict, program: str, device: str, hidden: int, pad: int) -> str | None:
    """Why a group's resume file (`written`: its program, device and hidden width) cannot go on exactly in a run
    of `program` on `device` (a device type) holding its `hidden` units padded to a multiple of `pad`; None when it
    can."""
    if written.get("program", program) != program:  # the other program would not go on exactly
        return (
            f"{resume_file} was written by the {written['program']} program and this run would go on with {program}, "
            f"not exactly: resume with hydra.launcher.program={written['program']} (in_turn: on a CPU)"
        )
    if written.get("device", device) != device:  # its masks' generators are that device's
        return (
            f"{resume_file} was written on {written['device']} and this run is on {device}: resume with "
            f"trainer.accelerator={'gpu' if written['device'] == 'cuda' else written['device']}"
        )
    units, held = padded_size(hidden, pad), written.get("units", hidden)  # (a file from before padding: unpadded)
    if held != units:  # other GEMM shapes: other rounding
        return (
            f"{resume_file} was written holding the hidden units as {held} and this run holds them as {units}, not "
            f"exactly: resume with hydra.launcher.pad_hidden_to={written.get('pad_hidden_to', 1)}"
        )
    return None


def check_resume_files(
    sweep_dir: Path, groups: list[tuple[int, list]], program: str, on_cpu: bool, pads: dict[int, int], pad
) -> None:
    """A ConfigError, before anything is written, when an interrupted group would go on with another program,
    on another device or with other padding than its resume file's (resume_refusal; `pads`: each group's
    pad_hidden_to, `pad` the setting; the group's trainer checks again as it loads it). With `pad` auto an
    interrupted group goes on at its file's padding (`pads` takes it; a file from before padding: none)."""
    import torch

    device = "cpu" if on_cpu else "cuda"
    for number, group in groups:
        path = sweep_dir / ".stacked" / f"group_{number}.pt"
        if not path.is_file():
            continue
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if pad == "auto":
            pads[number] = int(state.get("pad_hidden_to", 1))
        hidden = group[0].cfg.model.hidden_size
        if why := resume_refusal(path, state, running_program(program, on_cpu), device, hidden, pads[number]):
            raise ConfigError(f"{describe(group, number)}: {why}")


def padded_size(size: int, multiple: int) -> int:
    """`size` rounded up to a multiple of `multiple` (hydra.launcher.pad_hidden_to)."""
    return -(-size // multiple) * multiple


def recorded_status(job) -> str | None:
    return job_metrics(job).get("status")


def job_metrics(job) -> dict:
    """The job's metrics.json from an earlier run of its sweep ({} without one)."""
    return recorded_metrics(job.output_dir)


def check_never_trained(job) -> None:
    """A ConfigError where a job no resume file holds has a checkpoint: a resume would train it from its start,
    writing over it."""
    last = job.output_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        raise ConfigError(
            f"job {job.idx} has a checkpoint ({last}) but no resume file of its group: hydra.launcher.resume=true "
            f"would train it again from its start; go on with it alone (rnnreg-train <its overrides> ckpt_path="
            f"{last}), or move its folder away"
        )


def setting_differences(before: str, now: str) -> str:
    """Where two group keys differ, as `key=value where this command has key=value` (the first such key)."""

    def first(a, b, path: str):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if (found := first(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))) is not None:
                    return found
            return None
        return None if a == b else (path, a, b)

    found = first(json.loads(before), json.loads(now), "")
    if found is None:
        return "other settings"
    path, a, b = found
    return f"{path}={json.dumps(a)} where this command has {path}={json.dumps(b)}"


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
        check_stackable(resolved)
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


def on_a_cpu(jobs: Sequence) -> bool:
    """Whether the sweep's groups train on a CPU (trainer.accelerator; auto: without CUDA; anything but gpu, cuda
    and auto: a CPU, as rnnreg.stacked_train places a group)."""
    accelerator = str(jobs[0].plain["trainer"].get("accelerator", "auto")) if jobs else "auto"
    if accelerator != "auto":
        return accelerator not in ("gpu", "cuda")
    import torch

    return not torch.cuda.is_available()


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
        jobs = [prepare_job(launcher, initial_job_idx + i, o) for i, o in enumerate(job_overrides)]
        resumed = sweep_dir if launcher.resume else None
        groups = planned_groups(jobs, launcher.max_members, launcher.launched_groups, resumed)
        on_cpu = on_a_cpu(jobs)
        program = running_program(launcher.program, on_cpu)
        pads = {i: pad_hidden_to(group[0].cfg, launcher.pad_hidden_to, program, on_cpu) for i, group in groups}
        if resumed is not None:
            check_resume_files(sweep_dir, groups, launcher.program, on_cpu, pads, launcher.pad_hidden_to)
    except UserError as err:
        refuse(launcher, sweep_dir, str(err))
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
            )
        except DataError as err:  # its jobs fail as basic jobs do on bad data: the other groups go on
            results = [("failed", err)] * len(group)
        except UserError as err:  # the command's mistake (its resume, its output): one line, nothing more trains
            refuse(launcher, sweep_dir, f"{describe(group, i, pads[i])}: {err}")
        for job, (status, value) in zip(group, results):
            returns[job.idx] = job_return(launcher, job, status, value)
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return [returns[job.idx] for job in jobs]


def job_return(launcher, job: Job, status: str, value) -> JobReturn:
    """What run_job hands the sweeper: the best validation perplexity (what hparams_search reads); for a failed
    member what a failed basic job hands it (rnnreg.runtime.user_errors_as_one_line): the same line on stderr,
    and to Hydra's basic sweeper None (the sweep goes on; rnnreg.sweep lists the failed jobs at its end), to any
    other a failure (Optuna: a FAIL trial)."""
    from rnnreg.runtime import JobFailed  # (rnnreg.runtime imports this module's checks)

    ret = JobReturn(
        overrides=job.overrides,
        cfg=job.cfg,
        hydra_cfg=job.hydra_cfg,
        working_dir=os.getcwd(),
        task_name=str(job.hydra_cfg.hydra.job.name),
    )
    ret.status, ret.return_value = JobStatus.COMPLETED, value
    if status != "completed":
        what = job_label(job.overrides, swept_keys(launcher.config.hydra) or None)
        print(f"error: job {job.idx} ({what}) failed: {value}", file=sys.stderr)
        (job.output_dir / ERROR_FILE).write_text(f"{value}\n")
        if basic_sweeper(launcher.config):
            ret.return_value = None
        else:
            ret.status, ret.return_value = JobStatus.FAILED, JobFailed(str(value))
    return ret
