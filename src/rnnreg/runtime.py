"""A console script's process, what every entry point shares: Hydra's entry with the command line checked first
(rnnreg.command_line) and our Hydra plugins found, bad input as one line, the Lightning warnings and log lines a
run shows. Elsewhere: building a run's pieces (rnnreg.instantiation), its config tree (rnnreg.config_tree), its
speed settings (rnnreg.speed_settings), its torch threads beside other jobs (rnnreg.cpu_threads), a multirun job's
failure (rnnreg.job_records.report_failed_job)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rnnreg import CONF_DIR
from rnnreg.command_flags import answered_by_hydra, check_flags
from rnnreg.command_line import MODE_NOT_READ, check_command_line, check_group_options
from rnnreg.errors import ConfigError, DataError, UserError
from rnnreg.job_records import folders_in, record_refused_run, remove_folders_made_empty, report_failed_job
from rnnreg.multirun_jobs import BASIC_SWEEPER, command_line_gives, in_multirun, job_swept_keys
from rnnreg.run_folder_check import check_run_dir_free, keep_earlier_record, put_back_earlier_record
from rnnreg.validation import missing_message, validate

log = logging.getLogger("rnnreg")


def reader_gone() -> None:
    """After a BrokenPipeError on stdout: its reader stopped (`| head` read what it wanted). The rest goes nowhere,
    and Python's flush of stdout at exit with it, which would fail again on the closed pipe (a traceback)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# Lightning's warning of an epoch shorter than trainer.log_every_n_steps: left out only where the interval is not the
# user's (unwarned_default_log_interval), for a first short run would be told of a setting it never chose.
LOG_INTERVAL_WARNING = r"The number of training batches \(\d+\) is smaller than the logging interval"


def hide_expected_warnings() -> None:
    """The warnings and log lines of Lightning that a console script's run hides, each where it says nothing the user
    can act on: set by the entry points (hydra_entry, train, evaluate), not by importing a module of rnnreg, so that a
    library user's process keeps its own filters (their ModelCheckpoint's "directory is not empty", say)."""
    # Expected here: the stream windows are cheap and must stay in order, so they load in the main process
    # (rnnreg.data).
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`srun` command is available.*")
    # LMDataModule itself records and restores the stream position of a mid-epoch checkpoint.
    warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
    # A run goes on in a folder of checkpoints only from its own last.ckpt (the command a stop prints): any other run is
    # refused before Lightning sees the folder (run_folder_check), so Lightning's warning would only alarm a resume.
    warnings.filterwarnings("ignore", r"Checkpoint directory .* exists and is not empty")
    # debug=overfit (trainer.overfit_batches): Lightning takes any sampler but its own SequentialSampler for shuffling,
    # and rnnreg's training windows come in order (rnnreg.data.StartAt): "you enabled shuffling" would be untrue.
    warnings.filterwarnings("ignore", r"You requested to overfit but enabled train dataloader shuffling")
    # A run that ends before its first validation (trainer.max_steps inside an epoch): Lightning's hint that val/ppl
    # was never logged blames the model; rnnreg says itself that no validation ran and what it tested (rnnreg.training).
    warnings.filterwarnings("ignore", r"`ModelCheckpoint\(monitor='val/ppl'\)` could not find the monitored key")
    # Lightning 2.6 on torch 2.13, inside Lightning: nothing a user can act on, said at every run.
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated.*", FutureWarning)
    # Rank 0's measures of the whole job (its words x the processes; the gradient norm after the all-reduce, the same on
    # every rank): nothing for sync_dist to average, which DDP runs were told at every epoch.
    warnings.filterwarnings(
        "ignore", r".*self\.log\('train/(words_per_sec|epoch_seconds|grad_norm)', \.\.\., sync_dist=True"
    )
    # Lightning's advertisements for its cloud services, at every run and into train.log.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(no_tip)  # (added once however often)


def no_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip:")


# why hydra_entry's pre-check could not check a command line, logged (DEBUG) once the run has configured logging:
# before, no handler shows it, whatever hydra.verbose says
PRECHECK_SKIPPED: list[BaseException] = []


def missing_key(err: BaseException) -> str | None:
    """The full key of the mandatory value (???) behind `err` (or its causes), or None."""
    from omegaconf.errors import MissingMandatoryValue

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, MissingMandatoryValue):
            return str(err.full_key or getattr(err, "key", "") or "") or "a ??? value"
        err = err.__cause__ or err.__context__
    return None


def user_errors_as_one_line(fn: Callable[[DictConfig], Any], config_name: str = "train") -> Callable:
    """Report bad input as `error: ...` on one line and exit 2; HYDRA_FULL_ERROR=1 shows the traceback.
    Bad input is a UserError, or a mandatory config value (???) that was not given; the config is first
    validated against its schema (rnnreg.validation). In a multirun the job fails and the sweep goes on
    (rnnreg.job_records.report_failed_job)."""
    script = f"rnnreg-{config_name}"

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        hide_expected_warnings()  # (a job in a process of its own: submitit's)
        while PRECHECK_SKIPPED:  # (hydra.verbose=true or [rnnreg] shows it)
            log.debug("config pre-check skipped", exc_info=PRECHECK_SKIPPED.pop())
        # a run's or a multirun job's own folder (with its record: not rnnreg-generate's or rnnreg-report's, the
        # current one) as Hydra left it: a refused run or job removes the empty folders it made after this
        own_folder = HydraConfig.initialized() and HydraConfig.get().output_subdir is not None
        folders_before = folders_in(HydraConfig.get().runtime.output_dir) if own_folder else None
        try:
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:  # before any work (loading data, building a model)
                raise ConfigError(missing_message(missing[0], script))
            validate(cfg, config_name)
            return fn(cfg)
        except Exception as err:
            key = None if isinstance(err, UserError) else missing_key(err)
            if (key is None and not isinstance(err, UserError)) or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = err if key is None else missing_message(key, script)
            if not in_multirun():
                if HydraConfig.initialized():  # a refused resume in its own folder keeps that run's record
                    put_back_earlier_record(HydraConfig.get().runtime.output_dir)
                    record_refused_run(
                        HydraConfig.get().runtime.output_dir, str(message), HydraConfig.get().output_subdir
                    )
                    if folders_before is not None:
                        remove_folders_made_empty(HydraConfig.get().runtime.output_dir, folders_before)
                print(f"error: {message}", file=sys.stderr)
                sys.exit(2)
            job = HydraConfig.get()
            if folders_before is not None:
                remove_folders_made_empty(job.runtime.output_dir, folders_before)
            basic = job.sweeper._target_ == BASIC_SWEEPER
            try:
                swept = job_swept_keys()
            except DataError:  # (its sweep.yaml cut short or edited: the job named by its overrides)
                swept = None
            failed = report_failed_job(
                job.job.num, list(job.overrides.task), swept, message, job.runtime.output_dir, basic
            )
            if failed is None:
                return None
            raise failed from None

    return wrapper


def hydra_entry(config_name: str) -> Callable:
    """hydra.main for a console script, with our one-line errors, and the whole config checked before Hydra
    starts (and creates the run folder): every config the command line composes, each job of a sweep
    included, against its schema (rnnreg.validation), and first the config group options (Hydra's own message
    for an unknown one is a page long). The task function checks its config again (a --config-path run).

    The module holding the entry imports torch and Lightning inside the task function only, so that
    `--help` and shell completion, which Hydra answers before calling it, stay fast."""

    def decorate(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        from hydra._internal.utils import detect_calling_file_or_module_from_task_function, detect_task_name

        task = user_errors_as_one_line(fn, config_name)
        hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(task)
        job_name = detect_task_name(*detect_calling_file_or_module_from_task_function(task))  # Hydra's hydra.job.name

        @functools.wraps(fn)
        def main() -> Any:
            try:
                return checked_main()
            except KeyboardInterrupt:  # outside a run's own Ctrl-C handling (imports, the next job's composition)
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"interrupted: rnnreg-{config_name} stopped by Ctrl-C before it finished", file=sys.stderr)
                logging.disable(logging.INFO)  # the line is the last: no info at exit (torch's FakeTensor cache stats)
                raise SystemExit(130) from None

        def checked_main() -> Any:
            hide_expected_warnings()
            find_our_hydra_plugins()
            args = sys.argv[1:]
            checked, answered = None, False
            try:
                check_group_options(args, config_name=config_name)
                check_flags(args, f"rnnreg-{config_name}")
                checked = check_command_line(config_name, args)  # (a config Hydra shows: --cfg, --help with overrides)
                answered = answered_by_hydra(args)
                if answered:  # no run, no folder: Hydra reads its mode itself
                    checked = None
                else:
                    check_run_dir_free(args, config_name, job_name, checked.multirun, checked.own_run_dir)
                    keep_earlier_record(args, config_name, job_name, checked.multirun, checked.own_run_dir)
            except UserError as err:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
            except Exception as err:  # a command line the pre-check cannot compose: Hydra says what is wrong with it
                PRECHECK_SKIPPED.append(err)
            if answered:  # its help, config or info: a reader may stop early (`--help | head`)
                try:
                    return hydra_main()
                except BrokenPipeError:
                    return reader_gone()
            if checked is None or checked.hydra_mode is MODE_NOT_READ:  # Hydra reads the mode itself
                return hydra_main()
            with hydra_mode_known(checked.hydra_mode):
                return hydra_main()

        return main

    return decorate


@contextlib.contextmanager
def hydra_mode_known(mode: Any) -> Iterator[None]:
    """Hydra's main composes the whole config once only to read its hydra.mode (Hydra.get_mode), then composes it
    again to run. check_command_line has read it from its own composition (Checked.hydra_mode), so Hydra's first
    composition (a part of every start) is left out: get_mode answers `mode` once, then is Hydra's own again.
    (test_first_hour checks that both find the same mode.)"""
    from hydra._internal.hydra import Hydra

    own = Hydra.get_mode

    def known(self: Hydra, config_name: str | None, overrides: list[str]) -> Any:
        Hydra.get_mode = own
        return mode

    Hydra.get_mode = known
    try:
        yield
    finally:
        Hydra.get_mode = own


def find_our_hydra_plugins() -> None:
    """Hydra finds launchers in the `hydra_plugins` namespace package. An editable install (make install)
    maps our src/ folders through an import hook that Hydra's plugin scan does not see, so our plugins
    (hydra/launcher=stacked) are added to the namespace's path here; a wheel installs them where they are
    found anyway."""
    import hydra_plugins

    ours = Path(__file__).resolve().parents[1] / "hydra_plugins"
    if ours.is_dir() and str(ours) not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(ours))


def chose_log_interval(trainer_cfg: DictConfig) -> bool:
    """Whether a run's trainer.log_every_n_steps is the user's: given on the command line (this job's overrides), or
    other than conf/trainer/default.yaml's."""
    ours = OmegaConf.load(Path(CONF_DIR, "trainer", "default.yaml")).get("log_every_n_steps")
    if trainer_cfg.get("log_every_n_steps") != ours:
        return True
    return command_line_gives("trainer.log_every_n_steps")


@contextlib.contextmanager
def unwarned_default_log_interval(trainer_cfg: DictConfig) -> Iterator[None]:
    """Lightning's warning of an epoch with fewer training windows than trainer.log_every_n_steps left out while
    inside, where the interval is ours (chose_log_interval): a short budget (trainer.limit_train_batches=20) is no
    reason to tell of it. One the user chose keeps Lightning's warning."""
    with warnings.catch_warnings():
        if not chose_log_interval(trainer_cfg):
            warnings.filterwarnings("ignore", LOG_INTERVAL_WARNING)
        yield


def route_lightning_logs() -> None:
    """Lightning's messages once each, through the root logger's handlers when it has some (Hydra's: the
    console and the run's train.log). Lightning, imported after Hydra has set up logging (the entry
    modules import it lazily), would print each one twice: on its own stderr handler and through root."""
    if not logging.getLogger().hasHandlers():
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        # Lightning sets its own INFO level: a quieter root (hydra.job_logging.root.level=WARNING) quiets it too
        logger.setLevel(max(logger.getEffectiveLevel(), job_root_level()))


def job_root_level() -> int:
    """The root logger's level a Hydra run's job logging sets (hydra.job_logging.root.level); NOTSET outside a
    run (rnnreg as a library, a test: Lightning keeps its own level)."""
    if not HydraConfig.initialized():
        return logging.NOTSET
    level = OmegaConf.select(HydraConfig.get(), "job_logging.root.level", default=None)
    level = logging.getLevelName(str(level).upper()) if isinstance(level, str) else level
    return level if isinstance(level, int) else logging.NOTSET
