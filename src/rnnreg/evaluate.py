"""rnnreg-eval: validation and test perplexity (both protocols) of a checkpoint, into metrics.json.

rnnreg-eval ckpt_path=run/checkpoints/last.ckpt
rnnreg-eval 'ckpt_path=[a.ckpt,b.ckpt]'          # average of the models' distributions
rnnreg-eval ckpt_path=a.ckpt mc_samples=10       # Monte-Carlo dropout (its masks drawn from `seed`, default 0)
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnreg.errors import ConfigError, DataError
from rnnreg.instantiation import instantiate
from rnnreg.job_records import record_job_stopped
from rnnreg.record_yaml import full_budget, read_yaml, section
from rnnreg.run_record import metrics_path
from rnnreg.runtime import hide_expected_warnings, hydra_entry, log, route_lightning_logs
from rnnreg.schema import is_int, show_value
from rnnreg.trainer_rules import bf16_lstm_refusal


def evaluate(cfg: DictConfig) -> dict:
    """The checkpoint's (or checkpoints') perplexities, written to metrics.json. Holds its run folder's lock
    (rnnreg.run_lock) while it runs. Interrupted (SIGTERM, Ctrl-C), it writes no metrics.json, says so in one line
    and exits 143 or 130 (Lightning would exit 0 on SIGTERM, 1 on Ctrl-C); in a submitit job a SIGTERM ends the
    job instead, with the line in the job folder's error.txt (the multirun's end names the job)."""
    # here, not at the top: `rnnreg-eval --help` answers without loading torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from rnnreg.preemption import Preemption
    from rnnreg.run_lock import RunLock, launched_as_rank_zero
    from rnnreg.validation import validate

    hide_expected_warnings()  # (rnnreg-eval's entry did; a caller of evaluate() has not)
    validate(cfg, "eval")  # rnnreg-eval did before Hydra started; a caller of evaluate() has not
    lock = RunLock(cfg.paths.output_dir) if launched_as_rank_zero() else None
    if lock is not None:
        lock.acquire()  # a second evaluation (or a run) in this folder stops here, before it writes anything
    try:
        with Preemption() as preemption:
            return run_evaluation(cfg, preemption)
    except (SIGTERMException, KeyboardInterrupt, SystemExit) as err:
        # Lightning ends a Ctrl-C in its loops with exit(1), raised while handling the KeyboardInterrupt
        ctrl_c = isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt)
        if not (ctrl_c or isinstance(err, SIGTERMException)):
            raise
        stop = signal.SIGINT if ctrl_c else preemption.signum or signal.SIGTERM
        how = "Ctrl-C" if ctrl_c else signal.Signals(stop).name
        print(
            f"interrupted: rnnreg-eval stopped by {how} before it finished; it wrote no metrics.json in "
            f"{cfg.paths.output_dir} (run it again)",
            file=sys.stderr,
        )
        preemption.hand_to_submitit()  # stopped by submitit's signal: it requeues the job now (or gives up)
        if not ctrl_c and preemption.ends_submitit_job():  # scancel, SLURM's pre-emption: the job ends here
            record_job_stopped(how)
            return {"status": "interrupted"}  # the job's result: submitit records it, the multirun goes on
        raise SystemExit(128 + stop) from None
    finally:
        if lock is not None:
            lock.release()


def run_evaluation(cfg: DictConfig, preemption) -> dict:
    import lightning as L

    from rnnreg.callbacks import LMProgressBar
    from rnnreg.ensemble import PredictiveAverage
    from rnnreg.io import write_json_atomic
    from rnnreg.run_folder_check import check_no_earlier_results, check_not_in_records
    from rnnreg.run_lock import launched_as_rank_zero
    from rnnreg.task import LanguageModelTask, load_task

    route_lightning_logs()
    check_not_in_records(cfg.paths.output_dir, "hydra.run.dir")  # a caller of evaluate() was not checked before
    check_no_earlier_results(cfg.paths.output_dir, "hydra.run.dir", trains=False)  # its metrics.json is kept
    datamodule = instantiate(cfg.data)
    # a fraction that leaves a split no window: one line (Lightning's refusal is a traceback), as rnnreg-train says it
    datamodule.check_limits({key: cfg.trainer.get(key) for key in ("limit_val_batches", "limit_test_batches")})
    paths = [cfg.ckpt_path] if isinstance(cfg.ckpt_path, str) else list(cfg.ckpt_path)
    paths = [str(Path(p).expanduser()) for p in paths]
    tasks = [load_task(path, datamodule.load().itos, datamodule.load().paths["train"]) for path in paths]
    if why := bf16_lstm_refusal(cfg.trainer, any(t.net.fused for t in tasks), "use trainer.precision=32-true"):
        raise ConfigError(why)
    if launched_as_rank_zero():  # said once: DDP's other processes run this function too
        for note in datamodule.load().unknown_words():
            log.warning("%s", note)
        warn_other_batch_size(paths, datamodule, cfg.trainer.get("limit_test_batches"))
        warn_other_validation(paths, cfg.trainer.get("limit_val_batches"), datamodule)
        warn_other_splits(paths, [t.data_fingerprint for t in tasks], datamodule.load())
    mc_samples = cfg.mc_samples
    if mc_samples > 1 and not any(t.net.drops for t in tasks):
        which = paths[0] if len(paths) == 1 else "none of the checkpoints"
        raise ConfigError(
            f"mc_samples={mc_samples}: {which} drops nothing (every dropout rate 0), so each Monte-Carlo pass would "
            f"be the same deterministic one: leave mc_samples out (1), or give a model trained with dropout"
        )
    seed = cfg.seed
    task = tasks[0]
    if len(tasks) > 1 or mc_samples > 1:
        averaged = PredictiveAverage([t.net for t in tasks], mc_samples)
        task = LanguageModelTask(**tasks[0].hparams, net=averaged)
    callbacks = [LMProgressBar()] if cfg.trainer.enable_progress_bar else []
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    preemption.watch(trainer)
    # the Monte-Carlo dropout masks: each split's from the seed, whatever ran before. Lightning's DDP reseeds every
    # rank from $PL_GLOBAL_SEED as validate and test start: that is the seed too (not a value left in the shell)
    L.seed_everything(seed, verbose=False)
    val = trainer.validate(task, datamodule=datamodule, verbose=False)
    preemption.check()  # a SIGTERM noted in the last batch, after the ranks last agreed
    L.seed_everything(seed, verbose=False)
    test = trainer.test(task, datamodule=datamodule)
    preemption.check()
    metrics = {
        "val_ppl": val[0]["val/ppl"],
        "test_ppl": test[0]["test/ppl"],
        "test_ppl_batched": test[1]["test/ppl_batched"],
        "params": task.num_params,
        "ckpt_path": [str(Path(p).resolve()) for p in paths],
        "mc_samples": mc_samples,
        "seed": seed,
        "batch_size": datamodule.batch_size,  # the streams of val_ppl and test_ppl_batched
        "eval_bptt": datamodule.eval_bptt,
        "test_batch_size": datamodule.test_batch_size,  # test_ppl's streams (1: the paper's protocol)
        # the part of each split evaluated (null: all of it): a cut one reads as the whole split's number otherwise
        "limit_val_batches": cfg.trainer.get("limit_val_batches"),
        "limit_test_batches": cfg.trainer.get("limit_test_batches"),
    }
    if trainer.is_global_zero:  # as a single process: DDP's other processes have the same (reduced) numbers
        write_json_atomic(metrics_path(cfg.paths.output_dir), metrics)
        log.info("metrics: %s", metrics)
    return metrics


def warn_other_batch_size(paths: list[str], datamodule, test_limit) -> None:
    """A warning for each checkpoint trained with another data.batch_size: val_ppl and test_ppl_batched depend on
    the number of streams (test_ppl's is data.test_batch_size). That test_ppl does not differ is said only where it
    covers the test windows its run's covered (trainer.limit_test_batches, here and in its run); else the line says
    that the test split was cut, and how to reproduce its run's numbers."""
    batch_size = datamodule.batch_size
    for path in paths:
        trained = trained_batch_size(path)
        if trained is None or trained == batch_size:
            continue
        other_test = other_test_part(path, datamodule, test_limit)
        if other_test is None:
            log.warning(
                "%s was trained with data.batch_size=%d and is evaluated with %d: val_ppl and test_ppl_batched differ "
                "from its run's metrics.json (test_ppl does not); add data.batch_size=%d to reproduce them",
                path,
                trained,
                batch_size,
                trained,
            )
            continue
        theirs, fix = other_test
        log.warning(
            "%s was trained with data.batch_size=%d and is evaluated with %d: val_ppl and test_ppl_batched differ "
            "from its run's metrics.json, and test_ppl and test_ppl_batched cover another part of the test split "
            "(trainer.limit_test_batches=%s here, %s in its run); add data.batch_size=%d %s to reproduce them",
            path,
            trained,
            batch_size,
            show_value(test_limit),
            show_value(theirs),
            trained,
            fix,
        )


def other_test_part(path: str, datamodule, limit) -> tuple[Any, str] | None:
    """Where trainer.limit_test_batches (`limit` here, or its run's) makes the one-stream test cover other windows of
    the test split than its run's test did: its run's limit, and the overrides that cover its run's part; None where
    both cover the same windows (the whole split, or its first windows alike). A run's record that does not say its
    limit is read as the whole split (the default)."""
    trainer, data = run_settings(path, "trainer"), run_settings(path, "data")
    trained, window = trainer.get("limit_test_batches"), data.get("eval_bptt") or data.get("bptt")
    streams = data.get("test_batch_size", 1)
    ours = windows_evaluated(datamodule, "test", datamodule.test_batch_size, datamodule.eval_bptt, limit)
    theirs = windows_evaluated(datamodule, "test", streams, window, trained)
    ours_cut, theirs_cut = ours is not None and ours[0] < ours[1], theirs is not None and theirs[0] < theirs[1]
    if not ours_cut and not theirs_cut:
        return None
    if ours == theirs and (streams, window) == (datamodule.test_batch_size, datamodule.eval_bptt):
        return None  # (the same first windows)
    fix = f"trainer.limit_test_batches={show_value(trained)}"
    if theirs_cut and window != datamodule.eval_bptt:  # a count of windows of another length
        fix += f" data.eval_bptt={window}"
    return trained, fix


def warn_other_splits(paths: list[str], fingerprints: list[dict | None], corpus) -> None:
    """A warning for each checkpoint whose run was validated or tested on another valid or test split than the one it
    is evaluated on (the split's fingerprint is not its checkpoint's data_fingerprint: the file changed since, or is
    another): its perplexity there is not comparable with its run's metrics.json. Evaluating on another split on
    purpose is fine; it is said. A checkpoint without a fingerprint (from before it was recorded) is not warned of."""
    ours = corpus.fingerprints()
    for path, theirs in zip(paths, fingerprints):
        for split, done, keys in (
            ("valid", "validated", "val_ppl is"),
            ("test", "tested", "test_ppl and test_ppl_batched are"),
        ):
            if theirs is not None and theirs[split] != ours[split]:
                log.warning(
                    "%s: the %s split %s is not the one its run was %s on (its words or their order differ): its %s "
                    "not comparable with its run's metrics.json here",
                    path,
                    split,
                    corpus.paths[split],
                    done,
                    keys,
                )


def trained_batch_size(ckpt_path: str) -> int | None:
    """The data.batch_size of the run a checkpoint was written by, from its run's .hydra/config.yaml (the
    checkpoint does not hold it), or None where that is not there or cannot be read (the warning is left out)."""
    size = run_settings(ckpt_path, "data").get("batch_size")
    return size if is_int(size) else None


def warn_other_validation(paths: list[str], limit, datamodule) -> None:
    """A warning for each checkpoint whose run validated on part of the valid split (trainer.limit_val_batches, as
    experiment=smoke does: its first 40 windows) and is evaluated on another part or all of it: val_ppl differs
    from its run's metrics.json. A limit that cut nothing in its run (40 windows of a split of 2, counted in its
    run's streams and windows) is not warned of: its run validated on the whole split."""
    eval_bptt = datamodule.eval_bptt
    ours = windows_evaluated(datamodule, "valid", datamodule.batch_size, eval_bptt, limit)
    for path in paths:
        trainer, data = run_settings(path, "trainer"), run_settings(path, "data")
        trained, window = trainer.get("limit_val_batches"), data.get("eval_bptt") or data.get("bptt")
        if full_budget(trained) or not (is_int(trained) or isinstance(trained, float)) or not is_int(window):
            continue  # (the whole split, or a record that does not say which part)
        theirs = windows_evaluated(datamodule, "valid", data.get("batch_size"), window, trained)
        if theirs is not None and theirs[0] == theirs[1]:
            continue  # its limit left its run every window
        if trained == limit and window == eval_bptt:
            continue
        whole = full_budget(limit) or (ours is not None and ours[0] == ours[1])
        evaluated = "all of it" if whole else f"trainer.limit_val_batches={limit} in windows of {eval_bptt}"
        log.warning(
            "%s was validated in its run on trainer.limit_val_batches=%s of the valid split in windows of %d steps, "
            "and is evaluated on %s: val_ppl differs from its run's metrics.json; add trainer.limit_val_batches=%s "
            "data.eval_bptt=%d to reproduce it",
            path,
            trained,
            window,
            evaluated,
            trained,
            window,
        )


def windows_evaluated(datamodule, split: str, streams, window, limit) -> tuple[int, int] | None:
    """(the windows evaluated, the split's windows) of `split` cut into `streams` streams of `window` steps under
    trainer.limit_*_batches=`limit`, counted as Lightning counts them (rnnreg.data.limit_batches); None where a run's
    record does not say them, or the split is too short for its streams."""
    from rnnreg.data import BPTTWindows, batchify, limit_batches

    if not (is_int(streams) and is_int(window) and streams >= 1 and window >= 1):
        return None
    if not (limit is None or is_int(limit) or isinstance(limit, float)):
        return None
    try:
        windows = len(BPTTWindows(batchify(datamodule.load().ids[split], streams), window, drop_last=False))
    except DataError:
        return None
    return limit_batches(windows, limit), windows


def run_settings(ckpt_path: str, key: str) -> dict:
    """The `key` section of the config of the run a checkpoint was written by, from its run's .hydra/config.yaml
    (the checkpoint does not hold it); {} where that is not there or cannot be read (its warnings are left out)."""
    config_file = Path(ckpt_path).parent.parent / ".hydra" / "config.yaml"
    try:
        return section(read_yaml(config_file), config_file, key)
    except DataError:
        return {}


@hydra_entry("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
