"""Training as rnnreg-train runs it: build the pieces from the config, train, test both protocols, write
metrics.json. (The console script's entry is rnnreg.train, which imports this module only once Hydra has
parsed the command line.)"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from pathlib import Path
from typing import NamedTuple

import lightning as L
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from rnnreg.callbacks import SpeedMonitor
from rnnreg.checkpoint_contents import check_data_fingerprint
from rnnreg.checkpoints import stopped_by_ctrl_c, tests_best
from rnnreg.config_tree import print_config_tree
from rnnreg.console import counted
from rnnreg.errors import CheckpointError, ConfigError, DataError, OutputError
from rnnreg.fast import fast_step_wanted
from rnnreg.instantiation import instantiate, instantiate_callbacks, instantiate_loggers
from rnnreg.io import load_checkpoint, replace_atomically, write_json_atomic
from rnnreg.loggers import checked_parts, finish_wandb, hyperparameters, located_parts
from rnnreg.model import StepLSTM
from rnnreg.multirun_jobs import (
    BASIC_LAUNCHER,
    BASIC_SWEEPER,
    command_line_gives,
    in_multirun,
    job_named,
    job_swept_keys,
)
from rnnreg.override_text import pasted_override
from rnnreg.preemption import Preemption, requeued_checkpoint
from rnnreg.rank_streams import RankDropoutStreams
from rnnreg.report_commands import again_command, resume_command, resume_from, test_left_in
from rnnreg.resume_checks import (
    ResumedData,
    check_resume_against,
    check_resume_model,
    check_resume_settings,
    recorded_best_val,
    recorded_seed,
    resumed_data,
)
from rnnreg.resumed_run import checked_labels, checked_run_id, resolve_ckpt_path
from rnnreg.run_folder_check import check_no_earlier_results, check_no_links, check_not_in_records
from rnnreg.run_lock import RunLock, launched_as_rank_zero
from rnnreg.run_record import (
    STOPPED_BY,
    Speeds,
    best_checkpoint_path,
    completed_record,
    last_checkpoint_path,
    metrics_path,
    recorded_metrics,
    tested_record,
    unfinished_record,
    with_cut_splits,
)
from rnnreg.runtime import hide_expected_warnings, log, route_lightning_logs, unwarned_default_log_interval
from rnnreg.speed_settings import apply_speed, require_triton
from rnnreg.task import LanguageModelTask
from rnnreg.task_config import optim_settings, plain, task_arguments
from rnnreg.validation import validate

# Errors in the input, found before training starts: the run folder gets no metrics.json (a run that started
# and stopped, by divergence, a signal or a bug, says why in metrics.json)
BAD_INPUT = (ConfigError, DataError, CheckpointError)

# the run's lines, said once under DDP (every process runs this module, each with the same numbers)
say, warn = rank_zero_only(log.info), rank_zero_only(log.warning)


def build(
    cfg: DictConfig, wandb_id: str | None = None, wandb_parts: list[str] | None = None, wandb_labels: dict | None = None
) -> tuple[L.LightningDataModule, LanguageModelTask, L.Trainer]:
    """`wandb_id`: the W&B run of the checkpoint a run resumes (it logs on into that run); `wandb_parts`: the
    folders of that run's offline parts so far; `wandb_labels`: its group and name (it goes on under them)."""
    datamodule = instantiate(cfg.data)
    # every split cut into its streams now: a split too short for them stops here, before the loggers and the
    # Trainer are made (and Lightning prints its device lines)
    datamodule.check_splits()
    datamodule.check_limits(cfg.trainer)
    # (optim holds the clip: it is the update rule's, rnnreg.optim; Lightning's own clipping stays off)
    task = LanguageModelTask(datamodule.vocab_size, **task_arguments(cfg))
    task.seed = cfg.seed  # recorded in its checkpoints: a resume with another seed is refused
    loggers = instantiate_loggers(cfg, wandb_id, wandb_parts, wandb_labels)
    # LearningRateMonitor has nowhere to write without a logger (logger=none); Lightning refuses a progress
    # bar callback under trainer.enable_progress_bar=false
    bar = cfg.trainer.get("enable_progress_bar", True)
    callbacks = [
        c
        for c in instantiate_callbacks(cfg)
        if (loggers or not isinstance(c, LearningRateMonitor)) and (bar or not isinstance(c, ProgressBar))
    ]
    try:
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            gradient_clip_val=None,
            gradient_clip_algorithm=None,
        )
    except InstantiationException as err:  # the Trainer's constructor refusing an argument (ImportError: a plugin's)
        if not isinstance(err.__cause__, (MisconfigurationException, ValueError, ImportError)):
            raise
        raise trainer_refused(cfg.trainer, err.__cause__) from None
    processes = trainer.num_devices * trainer.num_nodes
    if datamodule.batch_size % processes:
        raise DataError(
            f"batch size {datamodule.batch_size} is not divisible by the {processes} DDP processes: "
            f"set data.batch_size to a multiple of trainer.devices x trainer.num_nodes"
        )
    fast_step_wanted(cfg.speed.fast_step, trainer)  # true where it cannot run: the error comes before any output
    if cfg.speed.triton_cell and isinstance(task.net.lstm, StepLSTM):  # nn.LSTM has its own kernels
        require_triton(trainer.strategy.root_device, "speed.triton_cell")
        task.net.lstm.triton_cell = True
    if cfg.speed.triton_update:
        require_triton(trainer.strategy.root_device, "speed.triton_update")
    return datamodule, task, trainer


def trainer_refused(trainer_cfg: DictConfig, err: Exception) -> ConfigError:
    """Lightning's refusal of a Trainer argument the schema passes on unchecked (+trainer.max_steps=-5), as
    one line naming the key where the message does."""
    message = " ".join(str(err).split())
    named = [(m.start(), k) for k in trainer_cfg.keys() if (m := re.search(rf"\b{re.escape(str(k))}\b", message))]
    if not named:
        return ConfigError(f"Lightning's Trainer refuses a trainer.* setting: {message}")
    key = min(named)[1]
    return ConfigError(f"trainer.{key}={trainer_cfg.get(key)} is refused by Lightning's Trainer: {message}")


class LastValidation(L.Callback):
    """The epoch (from 1) of the fit's latest validation, None before any: with validation every n epochs
    (or none at all) the final model's epoch is not the one val/ppl was measured at. `best`: the lowest val/ppl
    of every validation so far, a resumed run's before it included (best_val_ppl, whatever checkpoints are kept)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.best: float | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.epoch = trainer.current_epoch + 1
            logged = trainer.callback_metrics.get("val/ppl")
            ppl = math.nan if logged is None else float(logged)
            # a NaN is never better (as ModelCheckpoint ranks it), but is the best of none
            if logged is not None and (self.best is None or ppl < self.best or math.isnan(self.best)):
                self.best = ppl

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.best = recorded_best_val(checkpoint)  # (its own state, read there: load_state_dict is Callback's no-op)

    def state_dict(self) -> dict:
        return {"best": self.best}


class CommandLinePatience(L.Callback):
    """Each EarlyStopping's patience as configured (the command line's), on a resume too: Lightning's
    load_state_dict takes the checkpoint's. Its wait_count, best_score and stop stay the checkpoint's (the run's
    history), but for a stop on a patience the configured one has not run out, undone (check_resume_settings lets
    only that stop through): the run trains on as it would have with this patience throughout."""

    def __init__(self, callbacks: list) -> None:
        self.patience = [(c, c.patience) for c in callbacks if isinstance(c, EarlyStopping)]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # after the restore
        for stopper, patience in self.patience:
            stopper.patience = patience
            if stopper.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED and stopper.wait_count < patience:
                stopper.stopped_epoch, stopper.stopping_reason_message = 0, None
                stopper.stopping_reason = EarlyStoppingReason.NOT_STOPPED


class LogConfig(L.Callback):
    """The whole config to every logger, and the printed config tree to `tree_file`, once fit has started
    and a resumed checkpoint has loaded: bad input found before then (a checkpoint that is not rnnreg's)
    leaves no file behind."""

    def __init__(self, config: dict, tree_text: str | None = None, tree_file: str | Path | None = None):
        self.config, self.tree_text, self.tree_file = config, tree_text, tree_file

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams(self.config)
        if self.tree_text is not None and self.tree_file is not None and trainer.is_global_zero:
            Path(self.tree_file).parent.mkdir(parents=True, exist_ok=True)
            Path(self.tree_file).write_text(self.tree_text)


def test_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """Which weights the final test uses: the final ones (None, as the paper reports) or the best
    validation checkpoint (its path); test_ckpt=auto is best exactly when early stopping is on."""
    best = tests_best(cfg.test_ckpt, any(isinstance(c, EarlyStopping) for c in trainer.callbacks))
    # fast_dev_run writes no checkpoint: its (debug) test runs on the final weights
    if not best or trainer.fast_dev_run:
        return None
    if best_checkpoint(trainer) is None:  # Lightning's "best" would be last.ckpt's callback's: the final weights
        warn("callbacks.model_checkpoint=null keeps no best checkpoint: testing the final weights")
        return None
    if not best_checkpoint(trainer).best_model_path:  # no epoch was validated: there is no best
        warn("no validation ran, so there is no best checkpoint: testing the final weights")
        return None
    return best_checkpoint(trainer).best_model_path  # (Lightning's "best" warns of the other checkpoint callbacks)


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """best.ckpt's callback (callbacks.model_checkpoint: it monitors val/ppl), None where the config has none."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor), None)


def train(cfg: DictConfig) -> dict:
    hide_expected_warnings()  # (rnnreg-train's entry did; a caller of train() has not)
    route_lightning_logs()  # (as the run starts, once Hydra has set up its logging: not as this module is imported)
    validate(cfg, "train")  # rnnreg-train did before Hydra started; a caller of train() has not
    lock = RunLock(cfg.paths.output_dir) if launched_as_rank_zero() else None
    if lock is not None:
        lock.acquire()  # before this run writes anything: a second run in a live run's folder stops here
    try:
        with Preemption() as preemption:
            try:
                return run_training(cfg, preemption)
            except SystemExit:
                preemption.hand_to_submitit()  # stopped by submitit's signal: it requeues the job now (or gives up)
                if preemption.ends_submitit_job():  # its metrics.json (interrupted; rank 0's) is the job's result
                    return recorded_metrics(cfg.paths.output_dir) or {"status": "interrupted"}
                raise
    finally:
        if lock is not None:
            lock.release()


def run_training(cfg: DictConfig, preemption: Preemption) -> dict:
    # bad input found before this process trains a step writes nothing (fix it, run again in the same folder); found
    # after (a best.ckpt the final test refuses), the checkpoints have moved on, so metrics.json says the run failed
    trainer, started, first_step, ckpt_path = None, False, 0, None
    tested: str | None = None  # the final test's weights, once training has completed
    training_record: dict | None = None  # and that training's record, which the test's perplexities complete
    try:
        apply_speed(cfg.speed)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        # a submitit job requeued after a signal stopped it here (by submitit, or by SLURM) goes on from its last.ckpt,
        # not from a ckpt_path it started from (the command line it runs again)
        ckpt_path = requeued_checkpoint(cfg.paths.output_dir, preemption.submitit_job_id) or resolve_ckpt_path(cfg)
        # stopped in its final test and gone on with in its folder: only that test is left to run
        pending = pending_test(cfg.paths.output_dir, ckpt_path)
        if launched_as_rank_zero():  # DDP's other processes are given rank 0's folder
            check_run_folder(cfg.paths.output_dir, ckpt_path)
        resumed = read_resumed(cfg, ckpt_path, trains=pending is None)
        first_step = resumed.first_step
        if resumed.seed is not None and resumed.seed != cfg.seed:  # (one the command line gives was refused)
            take_checkpoint_seed(cfg, resumed.seed, ckpt_path)
        datamodule, task, trainer = build(cfg, resumed.wandb_id, resumed.wandb_parts, resumed.wandb_labels)
        if ckpt_path and resumed.data is not None:  # the data it trained on changed since, the epoch's windows?
            corpus = getattr(datamodule, "corpus", None)  # (read: nothing is written yet)
            limit = cfg.trainer.get("limit_train_batches")
            for line in check_resume_against(resumed.data, corpus, datamodule, limit, ckpt_path, pending is None):
                warn("%s", line)
            task.resume_data_checked = True  # (not again, with its warnings, as fit loads the checkpoint)
        preemption.watch(trainer)
        validation = add_run_callbacks(cfg, trainer)
        say("%s: %s parameters, vocabulary %d", cfg.experiment_name, f"{task.num_params:,}", datamodule.vocab_size)
        for note in getattr(getattr(datamodule, "corpus", None), "unknown_words", list)():  # (read by vocab_size)
            warn("%s", note)
        if ckpt_path:
            say("resuming from %s", ckpt_path)
        started = True
        if pending is None:
            training_record = fit(cfg, trainer, task, datamodule, ckpt_path, validation, preemption)
            weights, tested = weights_to_test(cfg, trainer) if cfg.get("test") else (None, None)
        else:  # (a trainer that did not fit has no final weights: the test loads the ones it was testing)
            tested, training_record = pending
            weights = tested
            at_training_end(trainer, training_record.get("epochs"), resumed.logged_step)
            say("its training completed: testing %s", tested)
        tests = final_test(trainer, task, datamodule, weights, preemption) if cfg.get("test") else {}
    except BaseException as err:  # say in metrics.json that (and why) the run did not complete
        interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
        stop = stop_signal(err, trainer, preemption.signum)
        rank_zero = trainer.is_global_zero if trainer is not None else launched_as_rank_zero()
        trained = trainer is not None and trainer.global_step > first_step
        bad_input_first = isinstance(err, BAD_INPUT) and not trained  # it writes nothing
        if (started or interrupted) and rank_zero and not bad_input_first:
            record_failure(
                cfg, trainer, err, interrupted, stop, preemption.submitit_stop(), ckpt_path, tested, training_record
            )
        if stop is not None:  # Lightning exits 0 on SIGTERM and 1 on Ctrl-C: a scheduler must see which
            if rank_zero and not in_multirun() and preemption.submitit_stop() is None:  # (a sweep's end says it)
                say_how_to_go_on(cfg, stop, kept_checkpoint(cfg, True, ckpt_path), tested)
            elif rank_zero and jobs_run_in_this_process():  # the exit ends the multirun: its end says nothing
                say_the_multirun_stopped(stop)
            raise SystemExit(128 + stop) from None
        raise
    metrics = with_cut_splits(tested_record(training_record, tests), cfg.trainer)
    if trainer.is_global_zero:
        write_json_atomic(metrics_path(cfg.paths.output_dir), metrics)
        best = best_weights(cfg, trainer, fitted=pending is None)
        finish_wandb(trainer.loggers, metrics, checkpoints=(best, last_checkpoint_path(cfg.paths.output_dir)))
    say("metrics: %s", metrics)
    return metrics


def check_run_folder(run: str, ckpt_path: str | None) -> None:
    """An OutputError where the run's folder `run` is one it must not write in: in a folder of checkpoints, behind
    a link, or holding an earlier run's results that `ckpt_path` does not go on from."""
    key = "hydra.sweep.subdir" if in_multirun() else "hydra.run.dir"
    check_not_in_records(run, key, "rnnreg-train")
    check_no_links(run, key)  # (a folder the command's check could not name)
    check_no_earlier_results(run, key, ckpt_path)


class Resumed(NamedTuple):
    """What a run reads of the checkpoint it resumes before any output: the W&B run it goes on in (`wandb_id`),
    that run's offline parts so far (`wandb_parts`) and its group and name (`wandb_labels`), None without W&B; its
    global step (`first_step`) and the step its loggers write their next row at (`logged_step`: where a pending test
    logs); what it compares with the data and the epoch's windows (`data`: check_resume_against's, where it stopped
    among them); the seed it was trained with (`seed`: None where it records none). A fresh run's: Resumed()."""

    wandb_id: str | None = None
    wandb_parts: list[str] | None = None
    wandb_labels: dict | None = None
    first_step: int = 0
    logged_step: int = 0
    data: ResumedData | None = None
    seed: int | None = None


def read_resumed(cfg: DictConfig, ckpt_path: str | None, trains: bool) -> Resumed:
    """What the run reads of the checkpoint `ckpt_path` it resumes (Resumed() where there is none), which is let go
    once read (fit loads it again: its weights are not held twice); refused where the run cannot go on from it with
    its settings (check_resume_settings, where the run `trains`) or is given a logger.wandb id or version that is not
    the checkpoint's W&B run."""
    if not ckpt_path:
        return Resumed()
    checkpoint = load_checkpoint(ckpt_path)  # read as data only, whatever the checkpoint IO: refused before any output
    check_resume_model(plain(cfg.model), checkpoint, ckpt_path)
    if trains:  # (a pending test trains nothing: it is refused nothing left to train)
        stopping = (cfg.get("callbacks") or {}).get("early_stopping") or {}
        check_resume_settings(
            optim_settings(cfg),
            cfg.trainer.max_epochs,
            checkpoint,
            ckpt_path,
            cfg.data.batch_size,
            cfg.data.bptt,
            stopping.get("patience"),
            cfg.seed if seed_given() else None,
            cfg.trainer.get("max_steps"),
        )
    wandb_id, wandb_parts, wandb_labels = None, None, None
    if "wandb" in (cfg.get("logger") or {}):  # the W&B run it goes on in (offline: its parts so far)
        wandb_id = checked_run_id(checkpoint.get("wandb_run_id"), ckpt_path)
        for key in ("version", "id"):  # (Lightning's WandbLogger takes a version before an id)
            given = (cfg.logger.wandb or {}).get(key)
            if wandb_id is not None and given not in (None, "") and str(given) != wandb_id:
                raise ConfigError(  # the resume's run wins
                    f"logger.wandb.{key}={given}, but {ckpt_path} goes on in W&B run {wandb_id}: leave "
                    f"logger.wandb.{key} out to resume that run, or start a fresh run (no ckpt_path) with id "
                    f"{given}"
                )
        wandb_parts, missing = located_parts(
            checked_parts(checkpoint.get("wandb_parts"), ckpt_path), wandb_id, ckpt_path
        )
        for part in missing:  # (one line each: the run goes on; its sync command can only leave the part out)
            warn(
                "%s, an earlier part of W&B run %s that %s names, is not there, nor beside the checkpoint: the "
                "wandb sync command printed at the run's end leaves it out (add its folder there, in the order the "
                "parts ran)",
                part,
                wandb_id,
                ckpt_path,
            )
        wandb_labels = checked_labels(checkpoint, ckpt_path)
    first_step = checkpoint["global_step"]  # (check_resume_settings checked it)
    if trains:
        data = resumed_data(checkpoint)
    else:  # a pending test: only its test split is compared (its fingerprint checked, as a resume's is)
        check_data_fingerprint(checkpoint, ckpt_path)
        data = ResumedData(checkpoint.get("data_fingerprint"), checkpoint.get("vocab"), 0, 0, None)
    seed = recorded_seed(checkpoint, ckpt_path)  # (a pending test's too: its record names the seed it trained with)
    return Resumed(wandb_id, wandb_parts, wandb_labels, first_step, logged_step(checkpoint), data, seed)


def take_checkpoint_seed(cfg: DictConfig, seed: int, ckpt_path: str) -> None:
    """A resume that leaves its seed to the config goes on with the random state its checkpoint `ckpt_path` saved,
    seed `seed`'s: the run takes that seed, so that what it records names the seed it uses (its checkpoints, which a
    later resume compares; its hyperparameters and W&B config; its .hydra/config.yaml, whose seed rnnreg-report
    reads), and DDP's per-rank streams draw from it, as they did before the stop."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    say("%s was trained with seed=%d: the run goes on with its random state, as seed=%d", ckpt_path, seed, seed)
    cfg.seed = seed
    if not (HydraConfig.initialized() and launched_as_rank_zero()):
        return
    hydra = HydraConfig.get()
    if hydra.output_subdir is None:  # (no record of its own: a submitit task after its job's first)
        return
    record = Path(hydra.runtime.output_dir, hydra.output_subdir, "config.yaml")
    if record.is_file():  # Hydra's record of the composed config, as Hydra saves it, with the seed the run uses
        composed = OmegaConf.load(record)
        composed.seed = seed
        replace_atomically(record, lambda tmp: OmegaConf.save(composed, tmp))


def seed_given() -> bool:
    """Whether the run's seed is one its command line gave (seed=N among its job's overrides), or a library caller's
    config (no Hydra run): a resume refuses such a seed where its checkpoint was trained with another. A seed the
    config file gave goes on as the checkpoint's (a sweep over ckpt_path=a,b of runs of other seeds)."""
    from hydra.core.hydra_config import HydraConfig

    return not HydraConfig.initialized() or command_line_gives("seed")


def add_run_callbacks(cfg: DictConfig, trainer: L.Trainer) -> LastValidation:
    """The callbacks every run adds to its config's; the one that keeps its latest validation's epoch, returned."""
    tree = None
    if (cfg.get("extras") or {}).get("print_config"):  # saved as config_tree.log once fit has started
        tree = rank_zero_only(print_config_tree)(cfg)
    trainer.callbacks.append(LogConfig(hyperparameters(cfg), tree, Path(cfg.paths.output_dir, "config_tree.log")))
    trainer.callbacks.append(RankDropoutStreams(cfg.seed))  # DDP: each rank its own masks
    trainer.callbacks.append(CommandLinePatience(trainer.callbacks))
    validation = LastValidation()
    trainer.callbacks.insert(0, validation)  # its validation counted before best.ckpt saves its state with it
    return validation


def weights_to_test(cfg: DictConfig, trainer: L.Trainer) -> tuple[str | None, str | None]:
    """The weights the final test of a run that fitted loads (test_checkpoint's: None, the trainer's final ones),
    and the file that holds them (`tested` in metrics.json, should the test stop: last.ckpt for the final weights;
    None where there is none: fast_dev_run)."""
    weights = test_checkpoint(cfg, trainer)
    last = last_checkpoint_path(cfg.paths.output_dir)  # the final weights (none: fast_dev_run)
    return weights, weights or (str(last) if last.exists() else None)


def final_test(
    trainer: L.Trainer, task: LanguageModelTask, datamodule, weights: str | None, preemption: Preemption
) -> dict:
    """The final test's perplexities, both protocols, of `weights` (a checkpoint; None: the trainer's final ones)."""
    results = trainer.test(task, datamodule=datamodule, ckpt_path=weights)
    preemption.check()
    return {"test_ppl": results[0]["test/ppl"], "test_ppl_batched": results[1]["test/ppl_batched"]}


def best_weights(cfg: DictConfig, trainer: L.Trainer, fitted: bool) -> str | None:
    """The best checkpoint W&B is given with the run's record: best.ckpt's callback's where the trainer `fitted`;
    else (a trainer that did not fit knows of no best checkpoint) its folder's, where it has one."""
    if not fitted:
        kept = best_checkpoint_path(cfg.paths.output_dir)
        return str(kept) if kept.is_file() else None
    checkpoint = best_checkpoint(trainer)
    return checkpoint.best_model_path if checkpoint else None


def fit(
    cfg: DictConfig,
    trainer: L.Trainer,
    task: LanguageModelTask,
    datamodule,
    ckpt_path: str | None,
    validation: LastValidation,
    preemption: Preemption,
) -> dict:
    """Trains the run (from `ckpt_path`, where it goes on); the record its training leaves (completed_record
    without the final test's perplexities: tested_record adds them), its train_seconds the whole run's time in fit
    (a resumed run's earlier parts' from its checkpoint)."""
    start = time.perf_counter()
    with unwarned_default_log_interval(cfg.trainer):
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    preemption.check()
    train_seconds = time.perf_counter() - start
    validated = None
    if validation.epoch is not None:  # its epoch said: with validation every n epochs it may not be the last
        validated = float(trainer.callback_metrics["val/ppl"]), validation.epoch
    else:
        warn(
            "no validation ran (%s trained, trainer.check_val_every_n_epoch=%s): metrics.json has no val_ppl%s",
            counted(trainer.current_epoch, "epoch"),
            trainer.check_val_every_n_epoch,
            "" if validation.best is not None else " and no best_val_ppl",
        )
    best_val = validation.best  # absent with no validation (rnnreg-report shows none)
    speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None)
    speeds = None
    if speed is not None:
        train_seconds += speed.fit_seconds_before
        speeds = Speeds(speed.words_per_second, speed.median_words_per_second, speed.epoch_words_per_second)
    epochs, params = trainer.current_epoch, task.num_params
    window = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    inside = 0 < window < trainer.num_training_batches  # trainer.max_steps ended it inside an epoch
    if inside:  # (Lightning counts that epoch as trained)
        epochs -= 1
    record = completed_record(
        validated, {}, best_val, epochs, train_seconds, speeds, params, cfg.experiment_name, int(cfg.seed)
    )
    if inside:
        where = f"window {window} of {trainer.num_training_batches} of epoch {epochs + 1}"
        record["stopped_at"] = f"{where} (trainer.max_steps={trainer.max_steps})"
    return record


def logged_step(checkpoint: dict) -> int:
    """The step a checkpoint's run logs its next row at: Lightning's count of batches that stepped (its loggers'
    x-axis, W&B's trainer/global_step), else the global step."""
    stepped = checkpoint.get("loops")
    for key in ("fit_loop", "epoch_loop.state_dict", "_batches_that_stepped"):
        stepped = stepped.get(key) if isinstance(stepped, dict) else None
    return stepped if isinstance(stepped, int) and stepped >= 0 else checkpoint["global_step"]


def at_training_end(trainer: L.Trainer, epochs, step: int) -> None:
    """A trainer that runs a stopped run's final test without fitting (pending_test) set to where that run's training
    ended (`epochs` trained, the loggers at `step`), as the trainer of its fit was: its loggers write the test's row at
    the step and epoch the uninterrupted run's test has (W&B's trainer/global_step and epoch; csv/metrics.csv, which
    keeps the earlier rows before its first step), not at step 0, epoch 0."""
    # (Lightning's loggers read the step from the epoch loop's count and the epoch from the fit loop's progress)
    trainer.fit_loop.epoch_loop._batches_that_stepped = step
    if isinstance(epochs, int) and epochs >= 0:
        trainer.fit_loop.epoch_progress.current.completed = epochs


def pending_test(run: str | Path, ckpt_path: str | None) -> tuple[str, dict] | None:
    """(the weights, the record of its training) of a run in folder `run` that a signal stopped in its final test,
    its training completed (its metrics.json: interrupted, with `tested` and `trained`), where `ckpt_path` goes on
    from its own last.ckpt (`ckpt_path=last hydra.run.dir=<run>`): only that test is left to run, on weights of its
    folder. None for any other run (a record from before `trained` was kept: a resume is refused, nothing being
    left to train; rnnreg-eval tests its weights)."""
    record = recorded_metrics(run)
    tested, trained = record.get("tested"), record.get("trained")
    own = last_checkpoint_path(os.path.abspath(run))
    if record.get("status") != "interrupted" or not isinstance(tested, str) or not isinstance(trained, dict):
        return None
    if ckpt_path is None or Path(os.path.abspath(ckpt_path)) != own or not own.is_file():
        return None
    if Path(os.path.abspath(tested)).parent != own.parent or not Path(tested).is_file():
        return None
    return tested, trained


def record_failure(
    cfg: DictConfig,
    trainer: L.Trainer | None,
    err: BaseException,
    interrupted: bool,
    stop: int | None = None,
    submitit_job: str | None = None,
    resumed: str | None = None,
    tested: str | None = None,
    trained: dict | None = None,
) -> None:
    """metrics.json says that (and why) the run did not complete; the W&B run ends marked failed. `stop`: the
    signal that stopped it (stop_signal); `submitit_job`: the submitit job a signal stopped (when that job runs
    again, requeued, it goes on from here: rnnreg.preemption.requeued_checkpoint); `resumed`: the checkpoint the run
    resumed from, where an interrupted run that wrote none in its folder goes on (stopped before its first window,
    it has trained nothing since); `tested`: the weights its final test was testing, once training completed (an
    interrupted run goes on with a test of them: `tested` in metrics.json, which rnnreg-report reads), `trained`
    the record of that training (kept beside it: that test, run in the run's folder, completes it: pending_test); its
    offline W&B part, where it logged nothing (only the config and its status), is removed: no later resume's sync line
    would name it (it names the checkpoint's parts and its own)."""
    status = "interrupted" if interrupted else "failed"
    error = STOPPED_BY.get(stop) or str(err) or type(err).__name__
    try:
        epochs = trainer.current_epoch if trainer is not None else 0
        if interrupted and tested is not None:
            run = os.path.abspath(cfg.paths.output_dir)
            record = unfinished_record(status, error, epochs, test_left_in(run)) | {"tested": tested}
            record |= {"trained": trained} if trained is not None else {}
        else:
            go_on = resume_from(kept_checkpoint(cfg, interrupted, resumed), cfg.paths.output_dir)
            record = unfinished_record(status, error, epochs, go_on)
        write_json_atomic(
            metrics_path(cfg.paths.output_dir), record | ({"submitit_job": submitit_job} if submitit_job else {})
        )
    except OutputError as write_err:  # the folder itself may be what failed: the original error is the one to show
        log.warning("%s", write_err)
    if trainer is not None:
        try:  # the W&B run ends marked failed (exit code 1), with the reason in its summary
            drop = interrupted and resumed is not None
            finish_wandb(trainer.loggers, {"status": status, "error": error}, exit_code=1, drop_empty_part=drop)
        except Exception as wandb_err:  # never hide the run's own error
            log.warning("could not close the W&B run: %s", wandb_err)


def kept_checkpoint(cfg: DictConfig, interrupted: bool, resumed: str | None) -> Path | None:
    """The checkpoint a run that stopped goes on from: its last.ckpt; an interrupted one that wrote none (a resumed
    run stopped before its first window), the checkpoint it resumed from; else None."""
    last = last_checkpoint_path(cfg.paths.output_dir)
    return last if last.exists() else (Path(os.path.abspath(resumed)) if interrupted and resumed else None)


def say_how_to_go_on(cfg: DictConfig, stop: int, checkpoint: Path | None, tested: str | None = None) -> None:
    """The console's last line for a run a signal stopped: the command that goes on from `checkpoint` (its
    metrics.json's `resume` too), or the one that runs it again where it wrote none; stopped
    in its final test (`tested`: the weights it tested), the one that runs that test again in its folder and
    completes its record (pending_test)."""
    run = Path(cfg.paths.output_dir)
    if tested is not None:
        then = f"its training completed: test it in its folder with: {resume_command(run, in_its_folder=True)}"
    elif checkpoint is not None:
        then = f"go on with: {resume_command(run, checkpoint)}"
    else:
        then = f"no checkpoint was written: run it again, {again_command(run)}"
    print(f"{STOPPED_BY[stop]}: the run stopped; {then}", flush=True)


def jobs_run_in_this_process() -> bool:
    """Whether this run is a job of a multirun whose launcher runs its jobs in this process (Hydra's basic one), so
    that a signal's exit ends the multirun with it, before its end lists the jobs that did not complete."""
    from hydra.core.hydra_config import HydraConfig

    return in_multirun() and HydraConfig.get().launcher.get("_target_") == BASIC_LAUNCHER


def say_the_multirun_stopped(stop: int) -> None:
    """The console's last line for a multirun a signal stopped in one of its jobs: the job, and the rnnreg-report
    command that gives the commands that go on (the job's from its last.ckpt; a basic sweep's, each job that never
    started)."""
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get()
    try:
        swept = job_swept_keys()
    except DataError:  # (its sweep.yaml cut short or edited: the job named by its overrides)
        swept = None
    named = job_named(job.job.num, list(job.overrides.task), swept)
    unstarted = ", and with each job not yet started" if job.sweeper.get("_target_") == BASIC_SWEEPER else ""
    report = f"rnnreg-report {pasted_override('path', job.sweep.dir)}"
    print(
        f"{STOPPED_BY[stop]}: the multirun stopped in job {named}; {report} gives the commands that go on (with it"
        f"{unstarted})",
        flush=True,
    )


def stop_signal(err: BaseException, trainer: L.Trainer | None, signum: int | None = None) -> int | None:
    """SIGINT when `err` ends a run stopped by Ctrl-C, the stop signal `signum` (Preemption's: SIGTERM, or SLURM's
    SIGUSR1; None: SIGTERM) when by that, else None. The first Ctrl-C stops by Lightning's SIGTERM stop
    (rnnreg.checkpoints notes that it was a Ctrl-C); Lightning ends any other Ctrl-C inside its loops (the second)
    with sys.exit(1), raised while handling the KeyboardInterrupt."""
    if isinstance(err, SIGTERMException):
        return signal.SIGINT if stopped_by_ctrl_c(trainer) else signum or signal.SIGTERM
    if isinstance(err, KeyboardInterrupt) or (
        isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt)
    ):
        return signal.SIGINT
    return None
