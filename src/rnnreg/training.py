"""Training as rnnreg-train runs it: build the pieces from the config, train, test both protocols, write
metrics.json. (The console script's entry is rnnreg.train, which imports this module only once Hydra has
parsed the command line.)"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from rnnreg.callbacks import SpeedMonitor
from rnnreg.errors import ConfigError, DataError
from rnnreg.fast import fast_step_wanted
from rnnreg.io import write_json_atomic
from rnnreg.loggers import finish_wandb
from rnnreg.runtime import (
    instantiate,
    instantiate_callbacks,
    instantiate_loggers,
    keep_freed_memory,
    log,
    plain,
    print_config_tree,
    route_lightning_logs,
)
from rnnreg.task import LanguageModelTask

route_lightning_logs()


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, LanguageModelTask, L.Trainer]:
    datamodule = instantiate(cfg.data)
    # The clip is part of the update rule (rnnreg.optim), so Lightning's own clipping stays off.
    optim = plain(cfg.optim) | {"clip": cfg.trainer.gradient_clip_val}
    if cfg.trainer.get("gradient_clip_algorithm", "norm") != "norm":
        raise ConfigError(
            f"trainer.gradient_clip_algorithm={cfg.trainer.gradient_clip_algorithm}: only norm (the "
            f"paper's global L2 norm) is supported"
        )
    task = LanguageModelTask(datamodule.vocab_size, plain(cfg.model), plain(cfg.dropout), optim, plain(cfg.speed))
    loggers = instantiate_loggers(cfg)
    # LearningRateMonitor has nowhere to write without a logger (logger=none)
    callbacks = [c for c in instantiate_callbacks(cfg) if loggers or not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, gradient_clip_val=None, gradient_clip_algorithm=None
    )
    processes = trainer.num_devices * trainer.num_nodes
    if datamodule.batch_size % processes:
        raise DataError(
            f"batch size {datamodule.batch_size} is not divisible by the {processes} DDP processes: "
            f"set data.batch_size to a multiple of trainer.devices x trainer.num_nodes"
        )
    fast_step_wanted(cfg.speed.fast_step, trainer)  # true where it cannot run: the error comes before any output
    return datamodule, task, trainer


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path=last`: the newest checkpoints/last.ckpt of an earlier run of this experiment."""
    path = cfg.get("ckpt_path")
    if path is None or path != "last":
        if path is not None and not Path(path).is_file():
            raise ConfigError(
                f"ckpt_path={path} is not a file: give a checkpoint, or ckpt_path=last to resume "
                f"the newest run of this experiment"
            )
        return path
    root = Path(cfg.paths.output_root, cfg.task_name, cfg.experiment_name)
    here = Path(cfg.paths.output_dir).resolve()
    found = [p for p in root.glob("*/checkpoints/last.ckpt") if here not in p.resolve().parents]
    if not found:
        raise ConfigError(
            f"ckpt_path=last: no earlier run of {cfg.experiment_name} with checkpoints/last.ckpt "
            f"under {root}; give the checkpoint's path instead"
        )
    return str(max(found, key=lambda p: p.stat().st_mtime))


def test_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """Which weights the final test uses: the final ones (None, as the paper reports) or the best
    validation checkpoint ("best"); test_ckpt=auto is best exactly when early stopping is on."""
    choice = cfg.get("test_ckpt", "last")
    if choice == "auto":
        choice = "best" if any(isinstance(c, EarlyStopping) for c in trainer.callbacks) else "last"
    # fast_dev_run writes no checkpoint: its (debug) test runs on the final weights
    return "best" if choice == "best" and not trainer.fast_dev_run and trainer.checkpoint_callback else None


def train(cfg: DictConfig) -> dict:
    if (cfg.get("extras") or {}).get("print_config"):
        rank_zero_only(print_config_tree)(cfg, Path(cfg.paths.output_dir, "config_tree.log"))
    if cfg.speed.keep_freed_memory:
        keep_freed_memory()
    if cfg.speed.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, task, trainer = build(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(plain(cfg))
    log.info("%s: %s parameters, vocabulary %d", cfg.experiment_name, f"{task.num_params:,}", datamodule.vocab_size)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    start = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
        train_seconds = time.perf_counter() - start
        metrics = {"val_ppl": float(trainer.callback_metrics["val/ppl"])}
        if cfg.get("test"):
            results = trainer.test(task, datamodule=datamodule, ckpt_path=test_checkpoint(cfg, trainer))
            metrics |= {"test_ppl": results[0]["test/ppl"], "test_ppl_batched": results[1]["test/ppl_batched"]}
    except BaseException as err:  # say in metrics.json that (and why) the run did not complete
        if trainer.is_global_zero:
            interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
            last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
            write_json_atomic(
                f"{cfg.paths.output_dir}/metrics.json",
                {
                    "status": "interrupted" if interrupted else "failed",
                    "error": str(err) or type(err).__name__,
                    "epochs": trainer.current_epoch,
                    "resume": f"rnnreg-train ... ckpt_path={last}" if last.exists() else "no checkpoint was written",
                },
            )
        if isinstance(err, SIGTERMException):  # Lightning exits 0 on SIGTERM; a scheduler must see it
            ctrl_c = any(getattr(c, "ctrl_c", False) for c in trainer.callbacks)
            raise SystemExit(128 + (signal.SIGINT if ctrl_c else signal.SIGTERM)) from None
        raise
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_score if checkpoint else None
    metrics |= {
        "best_val_ppl": float(best) if best is not None else metrics["val_ppl"],
        "epochs": trainer.current_epoch,
        "train_seconds": round(train_seconds, 2),
    }
    speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None)
    if speed is not None:
        metrics |= {
            "words_per_second": round(speed.words_per_second, 1),
            "words_per_second_median_step": round(speed.median_words_per_second, 1),  # last epoch
            # the last epoch alone: warm-up (graph capture) excluded
            "words_per_second_last_epoch": round(speed.epoch_words_per_second, 1),
        }
    metrics |= {"params": task.num_params, "experiment": cfg.experiment_name, "status": "completed"}
    if trainer.is_global_zero:
        write_json_atomic(f"{cfg.paths.output_dir}/metrics.json", metrics)
        finish_wandb(trainer.loggers, metrics)
    log.info("metrics: %s", metrics)
    return metrics
