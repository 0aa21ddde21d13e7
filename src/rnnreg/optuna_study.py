"""An Optuna study (Hydra's Optuna sweeper, hydra-optuna-sweeper 1.3) whose trials failed with their one-line errors
ends as a basic sweep ends: each failed trial has said why on its line and left its error.txt
(rnnreg.job_records.report_failed_job), and the sweep's end (rnnreg.sweep.SweepCallback.on_multirun_end) lists
them and exits 1. The plugin itself ends such a study with a traceback, exit 1, before the sweep's end: where no
trial completed (Optuna has no best trial for optimization_results.yaml), and where more of a batch failed than
hydra.sweeper.max_failure_rate allows (the plugin's default, 0.0, under hydra/sweeper=optuna: it raises the first
failed trial's error); and Optuna's grid sampler, once the trial of its last point is told FAIL, ends it with a
RuntimeError (grid_told_to_its_end). Each such trial's error reaches the plugin without Hydra's second line for
it (FailedOnItsLine). A trial that completed with no value for the study (no validation ran: no best_val_ppl)
fails on its line too (no_value_line): the plugin told Optuna FAIL for it, and where no trial completed ended the
study with Optuna's traceback. A trial that failed otherwise (a crash, a value that is no perplexity) keeps the
plugin's traceback. A study whose every trial surely stops on the checkpoint it resumes is refused before it starts
(check_study_checkpoints, which rnnreg.sweep.SweepCallback calls as the multirun starts)."""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rnnreg.errors import CheckpointError, ConfigError
from rnnreg.job_records import JobFailed, report_failed_job
from rnnreg.multirun_jobs import basic_sweeper, inside_job, swept_keys
from rnnreg.resumed_run import Unreadable, checkpoint_run_id, resolve_ckpt_path
from rnnreg.sweep_wandb import LAST_ROOT, study_ckpt_paths, surely_wandb, varies_per_job


class FailedOnItsLine(JobReturn):
    """A trial that failed with its one-line error (JobFailed), which it has said: its return_value raises it as
    Hydra's does, for the plugin to tell Optuna FAIL, without Hydra's second line, `Error executing job with
    overrides: [...]` (a basic sweep's failed job has one line)."""

    @property
    def return_value(self):
        raise self._return_value


def trial_return(ret: JobReturn, swept: list[str] | None) -> JobReturn:
    """A launched trial's return as the plugin reads it: FailedOnItsLine where it failed with its one-line error, or
    completed with no value (None), which is reported as a failed job reports it (its line naming it among `swept`,
    its error.txt)."""
    fields = {field.name: getattr(ret, field.name) for field in dataclasses.fields(ret)}
    if ret.status is JobStatus.COMPLETED and ret._return_value is None:
        job = ret.hydra_cfg.hydra
        line = no_value_line(ret.cfg)
        failed = report_failed_job(job.job.num, list(ret.overrides), swept, line, job.runtime.output_dir, basic=False)
        return FailedOnItsLine(**fields | {"status": JobStatus.FAILED, "_return_value": failed})
    if ret.status is JobStatus.COMPLETED or not isinstance(ret._return_value, JobFailed):
        return ret
    return FailedOnItsLine(**fields)


def no_value_line(cfg: DictConfig) -> str:
    """Why a trial (its config `cfg`) that completed gave its study no value to minimise."""
    metric = cfg.get("optimized_metric")
    if metric is None:
        return "optimized_metric=null gives the study no value to minimise: set optimized_metric=best_val_ppl"
    return (
        f"it completed with no {metric}, the value the study minimises (no validation ran: its train.log says why): "
        "validate at least once (trainer.check_val_every_n_epoch at most trainer.max_epochs)"
    )


def failed_on_their_lines(returns: Sequence[JobReturn]) -> bool:
    """Whether some of a study's trials (`returns`, each launched trial's) failed, each with its one-line error."""
    # (_return_value: a failed job's error, which return_value would raise)
    failed = [ret._return_value for ret in returns if ret.status is not JobStatus.COMPLETED]
    return bool(failed) and all(isinstance(err, JobFailed) for err in failed)


def grid_told_to_its_end(sampler) -> None:
    """An Optuna grid sampler (`sampler`) whose last point's failed trial is told as the plugin tells a completed
    one: its after_trial stops the study (Study.stop), which outside Study.optimize (the plugin asks and tells)
    raises a RuntimeError, passed by the plugin for a completed trial and not for a failed one, whose study ended
    there with a traceback, before its end (its failed trials counted, its best trial's optimization_results.yaml).
    The plugin's n_trials, the grid's size, ends the study all the same."""
    from optuna.trial import TrialState

    after_trial = sampler.after_trial

    @functools.wraps(after_trial)
    def told(study, trial, state, values) -> None:
        try:
            after_trial(study, trial, state, values)
        except RuntimeError:
            if state is not TrialState.FAIL:
                raise

    sampler.after_trial = told


def end_studies_as_sweeps_end() -> None:
    """The Optuna sweeper's sweep, from now on in this process: a study whose trials failed on their lines ends
    as the plugin would have ended it but for its traceback, and Hydra goes on to the sweep's end."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
    from optuna.samplers import GridSampler

    plugin_sweep = OptunaSweeperImpl.sweep
    if getattr(plugin_sweep, "ends_as_a_sweep", False):
        return

    @functools.wraps(plugin_sweep)
    def sweep(self: OptunaSweeperImpl, arguments: list[str]) -> None:
        returns: list[JobReturn] = []
        launch = self.launcher.launch

        def launch_and_keep(job_overrides, initial_job_idx: int) -> Sequence[JobReturn]:
            # (the grid sampler the plugin made of its config by now: the study's, to tell its trials)
            if isinstance(self.sampler, GridSampler) and "after_trial" not in vars(self.sampler):
                grid_told_to_its_end(self.sampler)
            swept = swept_keys(self.config.hydra)
            batch = [trial_return(ret, swept) for ret in launch(job_overrides, initial_job_idx=initial_job_idx)]
            returns.extend(batch)
            return batch

        self.launcher.launch = launch_and_keep  # (each batch's trials: how they ended)
        try:
            return plugin_sweep(self, arguments)
        except JobFailed:  # more of a batch failed than max_failure_rate allows: the plugin stops the study there
            if not failed_on_their_lines(returns):
                raise
        except ValueError:  # no trial completed: Optuna has no best trial
            if not all(ret.status is JobStatus.FAILED for ret in returns) or not failed_on_their_lines(returns):
                raise
        finally:
            del self.launcher.launch
        return None

    sweep.ends_as_a_sweep = True
    OptunaSweeperImpl.sweep = sweep


def check_study_checkpoints(config: DictConfig) -> None:
    """A ConfigError, before the sweep folder is made, where every trial of a search sweeper's study (Optuna) surely
    stops on the checkpoint it resumes: its ckpt_path, or each choice of a searched one, is a missing file, `last`
    that finds none, a file that is no rnnreg checkpoint, or under logger=wandb one whose W&B run id is none; said
    with the lines its trials would stop on (trial_stops_on). A study with one choice a trial may go on from (null,
    a checkpoint it reads, one that reads what the search varies) is left to its trials, as a basic sweep's jobs
    are: each fails alone with its line, and the sweep's end lists them. The space's params are read resolved, as
    the plugin reads them (study_ckpt_paths: `${oc.env:X}` may give a search)."""
    if basic_sweeper(config):
        return
    found = study_ckpt_paths(config)
    if found is None:
        return
    setting, choices = found
    lines = []
    for ckpt in dict.fromkeys(choices):
        line = trial_stops_on(config, ckpt)
        if line is None:
            return
        lines.append(line)
    if setting is None:  # (every trial resumes it: a single run's line)
        raise ConfigError(lines[0])
    raise ConfigError(f"{setting}: every trial would stop on the checkpoint it draws: {'; '.join(lines)}")


def trial_stops_on(config: DictConfig, ckpt: str | None) -> str | None:
    """The line the first trial of the study `config` stops on, resuming `ckpt` (a ckpt_path as given, `last` too),
    as the job says it (rnnreg.resumed_run.resolve_ckpt_path's, then rnnreg.io.load_checkpoint's or, under W&B,
    checked_run_id's: Unreadable.line); the file read as data only, its tensors mapped. None where the trial goes
    on from it (or from none: null), or where that is not known before it runs (a ckpt_path that reads what the
    search varies, or that the job cannot resolve: it says why itself)."""
    if ckpt is None or varies_per_job(config, ckpt, at="ckpt_path"):
        return None
    if ckpt == "last" and varies_per_job(config, LAST_ROOT):
        return None
    trial = copy.deepcopy(config)
    OmegaConf.set_readonly(trial.hydra, False)
    with open_dict(trial):
        trial.ckpt_path = ckpt
        trial.hydra.job.id = trial.hydra.job.num = 0  # (its folder, which `last`'s line names)
    try:
        with inside_job(trial):
            folder = Path(str(trial.hydra.sweep.dir), str(trial.hydra.sweep.subdir)).absolute()
            path = resolve_ckpt_path(trial, folder)
    except ConfigError as err:
        return str(err)
    except (OmegaConfBaseException, OSError, TypeError, ValueError):
        return None
    try:
        checkpoint_run_id(path)
    except Unreadable as err:
        if isinstance(err.__cause__, CheckpointError) and not surely_wandb(config):
            return None  # (its W&B run id: read only by a trial that logs to W&B)
        return err.line()
    return None
