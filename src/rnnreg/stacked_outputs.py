"""A stacked member's outputs, written into its job's folder as a separate run writes them: train.log lines,
config_tree.log, csv/metrics.csv and csv/hparams.yaml (as Lightning's CSVLogger), checkpoints/{best,last}.ckpt
(ordinary single-run checkpoints), metrics.json, under logger=wandb its own W&B run and under logger=tensorboard
its event files. Every file of ours is replaced atomically. Here too the records a group writes into its members'
folders, metrics.json and train.log's last lines, as it ends (record_results), stops (record_stop;
stopped_while_built while it is built) or can write no more (output_failed)."""

from __future__ import annotations

import csv
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.core.saving import save_hparams_to_yaml

from rnnreg.config_tree import print_config_tree
from rnnreg.console import counted
from rnnreg.errors import OutputError, TrainingDiverged
from rnnreg.instantiation import instantiate
from rnnreg.io import link_atomically, replace_atomically, save_atomically, write_json_atomic
from rnnreg.loggers import finish_wandb, hyperparameters, wandb_disabled, wandb_run_id, wandb_run_labels
from rnnreg.multirun_jobs import job_named
from rnnreg.recorded_commands import go_on_command
from rnnreg.report_commands import resume_from
from rnnreg.run_record import (
    CHECKPOINTS,
    STOPPED_BY,
    Speeds,
    best_checkpoint_path,
    completed_record,
    last_checkpoint_path,
    metrics_path,
    recorded_metrics,
    unfinished_record,
    with_cut_splits,
)
from rnnreg.task_config import task_arguments
from rnnreg.timing import median_step_words_per_second

if TYPE_CHECKING:
    from rnnreg.stacked_launcher import Job
    from rnnreg.stacked_train import GroupTrainer


@contextmanager
def job_hydra_config(job: Job):
    """Hydra's config as it is inside the job (its sweep folder, overrides, group choices), for what reads it:
    the W&B run's group and name, the group choices in its config."""
    instance = HydraConfig.instance()
    original = instance.cfg
    instance.cfg = job.hydra_cfg
    try:
        yield
    finally:
        instance.cfg = original


class JobFolder:
    def __init__(self, job: Job):
        self.job, self.path = job, job.output_dir
        self.wandb = None  # the job's WandbLogger under logger=wandb
        self.others: list = []  # its other Lightning loggers (logger=tensorboard: a TensorBoardLogger); csv is ours

    # -- loggers -----------------------------------------------------------------------------------------
    def open_loggers(self, vocab_size: int, run_id: str | None = None, labels: dict | None = None) -> None:
        """What a run writes as its fit starts: config_tree.log (extras.print_config; not on the console here, a
        tree per member), the CSV logger's hparams.yaml, the job's other loggers (TensorBoard), and its W&B run
        when its config asks for one (logger=wandb), made as its run alone makes it: one group per sweep, the
        swept overrides as its name, the placement as its job type, the config with Hydra's group choices. Every
        logger gets the hyperparameters a run's loggers get (`hparams`). The members' runs are open at once
        (wandb's reinit="create_new"). `run_id`: the run a resumed group goes on in (one W&B run per job, however
        often it was interrupted), and `labels` its group and name as it ran (resumed_group, resumed_name: the same
        after the sweep's folder moved, whose path names the group); None: a fresh run, with logger.wandb.id if the
        job's config sets one."""
        if (self.job.cfg.get("extras") or {}).get("print_config"):
            with job_hydra_config(self.job):
                tree = print_config_tree(self.job.cfg, console=False)
            replace_atomically(self.path / "config_tree.log", lambda tmp: tmp.write_text(tree))
        params = self.hparams(vocab_size)
        if "csv" in (self.job.cfg.get("logger") or {}):
            replace_atomically(self.path / "csv" / "hparams.yaml", lambda tmp: save_hparams_to_yaml(tmp, params))
        loggers = self.job.cfg.get("logger") or {}
        with job_hydra_config(self.job):
            for name, spec in loggers.items():
                if name in ("csv", "wandb") or not spec or "_target_" not in spec:
                    continue
                logger = instantiate(spec)
                logger.log_hyperparams(params)
                logger.save()  # as Lightning does at a run's start: a member that fails keeps its hparams.yaml
                self.others.append(logger)
            spec = loggers.get("wandb")
            if spec and "_target_" in spec and not wandb_disabled():
                resumed = {} if run_id is None else {"id": run_id, **(labels or {})}  # a fresh one keeps its config's
                self.wandb = instantiate(spec, reinit="create_new", **resumed)
                self.wandb.log_hyperparams(params)

    @property
    def wandb_id(self) -> str | None:
        return wandb_run_id([self.wandb] if self.wandb is not None else [])

    @property
    def wandb_labels(self) -> dict[str, str]:
        """Its W&B run's group and name (wandb_group, wandb_name), as a checkpoint keeps them; {} without one."""
        return wandb_run_labels([self.wandb] if self.wandb is not None else [])

    def log_metrics(self, row: dict) -> None:
        """A csv row's metrics to the W&B run and the other loggers, at its step (epoch as Lightning logs it,
        beside the metrics)."""
        metrics = {key: value for key, value in row.items() if key != "step" and value != ""}
        for logger in ([self.wandb] if self.wandb is not None else []) + self.others:
            logger.log_metrics(metrics, step=row["step"])

    def close_wandb(self, summary: dict, failed: bool = False) -> None:
        """The run's summary (metrics.json), its checkpoints as an artifact where asked, then finished (exit
        code 1 when the job failed or was interrupted)."""
        if self.wandb is None:
            return
        checkpoints = (best_checkpoint_path(self.path), last_checkpoint_path(self.path))
        finish_wandb([self.wandb], summary, exit_code=int(failed), checkpoints=tuple(map(str, checkpoints)))
        self.wandb = None

    def log(self, message: str, level: str = "INFO") -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        with open(self.path / "train.log", "a") as f:
            f.write(f"[{stamp}][rnnreg][{level}] - {message}\n")

    def hparams(self, vocab_size: int) -> dict:
        """What a run's loggers record (csv/hparams.yaml, TensorBoard's, W&B's config): the config with Hydra's
        choices (rnnreg.training's LogConfig), then the task's hyperparameters over it, as Lightning logs them."""
        with job_hydra_config(self.job):
            params = hyperparameters(self.job.cfg)
        return params | self.task_hyperparameters(vocab_size)

    def write_csv(self, rows: list[dict]) -> None:
        if "csv" not in (self.job.cfg.get("logger") or {}):
            return
        keys = sorted({key for row in rows for key in row} - {"epoch", "step"})

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, ["epoch", "step", *keys], restval="")
                writer.writeheader()
                writer.writerows(rows)

        replace_atomically(self.path / "csv" / "metrics.csv", write)

    def checkpoint(self, state_dict: dict[str, torch.Tensor], vocab: list[str], **training_state) -> dict:
        """An ordinary single-run checkpoint of the member (rnnreg.task.load_task: rnnreg-eval, rnnreg-generate,
        ckpt_path=): `state_dict` under LSTMLanguageModel's names, `training_state` (epoch, global_step, loops,
        optimiser, callbacks: rnnreg.member_checkpoint) beside it."""
        return {
            "state_dict": {"net." + name: tensor for name, tensor in state_dict.items()},
            "hyper_parameters": self.task_hyperparameters(len(vocab)),
            "vocab": vocab,
            "pytorch-lightning_version": L.__version__,
            **training_state,
        }

    def task_hyperparameters(self, vocab_size: int | None) -> dict:
        """LanguageModelTask's hyperparameters for this job, as its checkpoint holds them."""
        return {"vocab_size": vocab_size, **task_arguments(self.job.cfg)}

    def save_checkpoint(self, name: str, checkpoint: dict, link_to: str | None = None) -> None:
        """checkpoints/<name>: `checkpoint`, or a hard link to checkpoints/<link_to> when that holds the same
        checkpoint (as LastCheckpoint links last.ckpt to best.ckpt); a copy where links fail."""
        folder = self.path / CHECKPOINTS
        if link_to is not None and link_atomically(folder / link_to, folder / name):
            return
        save_atomically(checkpoint, folder / name)

    def last_checkpoint(self) -> Path | None:
        last = last_checkpoint_path(self.path)
        return last if last.exists() else None

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomic(metrics_path(self.path), metrics)
        if metrics.get("status") != "running":
            for logger in self.others:  # as Lightning ends a run's loggers
                logger.finalize("success" if metrics.get("status") == "completed" else "failed")
            self.others = []
            self.close_wandb(metrics, failed=metrics.get("status") != "completed")


def stacked_record(group: int, members: int, member: int, program: str, units: int) -> dict:
    """How a member was trained, for its metrics.json and checkpoints: its group, its place in it, the program and
    the hidden width held (padded: more than model.hidden_size), which set its float rounding."""
    return {"group": group, "members": members, "member": member, "program": program, "units": units}


def stopped_while_built(folders: list[JobFolder], group: int, signum: int, built: tuple[str, int]) -> None:
    """Each member's train.log and metrics.json say that `signum` stopped it while its group was built: interrupted,
    as a single run stopped while it is built (rnnreg.training), its epochs as its folder's record had them (a group
    that went on from its resume file), going on with the sweep's command; and one console line says so. `built`:
    the program the group runs and the hidden width it holds (stacked_record)."""
    reason = STOPPED_BY[signum]
    resume = go_on_command(folders[0].path.parent)
    for k, folder in enumerate(folders):
        epochs = recorded_metrics(folder.path).get("epochs")
        epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else 0
        folder.log(f"{reason}: stopped while the stacked group was built, before it trained")
        record = unfinished_record("interrupted", reason, epochs, resume)
        folder.write_metrics(record | {"stacked": stacked_record(group, len(folders), k, *built)})
    print(f"{reason}: the stacked group {group} stopped; go on with: {resume}", flush=True)


def record_stop(group: GroupTrainer) -> None:
    """Each member's csv, train.log and metrics.json say the signal stopped it (a single run's words), and
    one console line says how to go on."""
    reason = STOPPED_BY[group.stop.signal]
    resume = group.go_on()
    for k, (m, folder) in enumerate(zip(group.members, group.folders)):
        folder.write_csv(m.rows)
        folder.log(f"{reason}: stopped at epoch {group.epoch + 1}, window {group.window}")
        # (a member stopped early waits for the group's end, its test: interrupted before it, as a single run; one
        # that failed goes on by itself, from its last good checkpoint, as record_results says at the group's end)
        going_on = m.status in ("running", "stopped")
        if going_on:
            record = unfinished_record("interrupted", reason, m.epochs, resume)
        else:
            record = unfinished_record(m.status, m.error, m.epochs, resume_from(folder.last_checkpoint(), folder.path))
        folder.write_metrics(record | {"stacked": group.stacked_record(k)})
    swept = group.swept_keys()
    for m, job in zip(group.members, group.jobs):  # as the group's end would have said (the resume says it again)
        if m.status == "failed":
            print(f"error: job {job_named(job.idx, job.overrides, swept)} failed: {m.error}", file=sys.stderr)
    print(f"{reason}: the stacked group {group.group} stopped; go on with: {resume}", flush=True)


def output_failed(group: GroupTrainer, err: OutputError) -> None:
    """A file could not be written (disk full, ...): every member still training is failed with the error,
    where its folder can still take it; the files written before are intact."""
    resume = "no resume file was written: run the sweep again"
    if group.resume_file.exists():
        resume = f"{group.go_on()} (from the group's last resume file)"
    for k, (m, folder) in enumerate(zip(group.members, group.folders)):
        if m.status not in ("running", "stopped"):
            continue
        try:
            folder.log(f"stopped: {err}")
            record = unfinished_record("failed", str(err), m.epochs, resume)
            folder.write_metrics(record | {"stacked": group.stacked_record(k)})
        except (OutputError, OSError):  # the folder takes nothing more (train.log's append is a plain write)
            pass


def warn_unvalidated(group: GroupTrainer) -> None:
    """A run's warnings, in its words, in the folder of each member that ended without a validation."""
    for m, folder, on_best in zip(group.members, group.folders, group.tests_on_best):
        if m.status != "failed" and m.val_ppl is None:
            folder.log(
                f"no validation ran ({counted(m.epochs, 'epoch')} trained, trainer.check_val_every_n_epoch="
                f"{group.val_every}): metrics.json has no val_ppl and no best_val_ppl",
                "WARNING",
            )
            if on_best and group.cfg.get("test"):
                folder.log("no validation ran, so there is no best checkpoint: testing the final weights", "WARNING")


def record_results(group: GroupTrainer, tests: dict[str, list[float]]) -> list[tuple[str, object]]:
    """Each member's metrics.json as the group ends (`tests`: every member's test perplexities by name, empty
    without a test), and its test row; returns each member's ("completed", best val ppl) or ("failed", error)."""
    results = []
    for k, (m, folder) in enumerate(zip(group.members, group.folders)):
        if m.status == "failed":
            metrics = unfinished_record("failed", m.error, m.epochs, resume_from(folder.last_checkpoint(), folder.path))
            results.append(("failed", TrainingDiverged(m.error)))
        else:
            m.status = "completed"
            metrics = completed_metrics(group, k, {name: values[k] for name, values in tests.items()})
            validated = m.val_ppl is not None  # none: trainer.check_val_every_n_epoch over its epochs
            results.append(("completed", m.best_val if validated else None))  # as a run's main() hands on
            if tests:
                group.record(
                    k,
                    {
                        "epoch": m.epochs,
                        "step": m.epochs * group.n_train,  # its own steps (early stopping: fewer than the group's)
                        "test/ppl": tests["test_ppl"][k],
                        "test/ppl_batched": tests["test_ppl_batched"][k],
                    },
                )
                folder.write_csv(m.rows)
        metrics["stacked"] = group.stacked_record(k)
        folder.write_metrics(metrics)
        folder.log(f"metrics: {metrics}")
    return results


def completed_metrics(group: GroupTrainer, k: int, tests: dict[str, float]) -> dict:
    """Member k's metrics.json as its job's run writes it, `tests` its test perplexities."""
    m = group.members[k]
    validated = m.val_ppl is not None  # none: trainer.check_val_every_n_epoch over its epochs
    speeds = Speeds(
        m.words / m.train_seconds if m.train_seconds else 0.0,  # of the group's time while it trained
        # the last epoch's (none on CUDA)
        median_step_words_per_second(group.words_per_window, group.window_seconds, group.device.type == "cuda"),
        group.last_epoch_words_per_second,
    )
    record = completed_record(
        (m.val_ppl, group.last_validation(m.epochs)) if validated else None,
        tests,
        m.best_val if validated else None,
        m.epochs,
        m.fit_seconds,
        speeds,
        group.model.parameters_per_member,
        group.jobs[k].cfg.experiment_name,
        int(group.jobs[k].cfg.seed),
    )
    return with_cut_splits(record, group.jobs[k].cfg.trainer)
