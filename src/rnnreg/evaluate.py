"""rnnreg-eval: validation and test perplexity (both protocols) of a checkpoint, into metrics.json."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rnnreg import CONF_DIR
from rnnreg.callbacks import LMProgressBar
from rnnreg.runtime import ConfigError, log, user_errors_as_one_line, write_json_atomic
from rnnreg.task import LanguageModelTask


def load_task(ckpt_path: str, vocab: list[str] | None = None) -> LanguageModelTask:
    """Load a trained task; with `vocab`, refuse a checkpoint trained on another vocabulary."""
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} is not a file: give a checkpoint, e.g. "
                          f"outputs/train/<experiment>/<time>/checkpoints/last.ckpt")
    task = LanguageModelTask.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=False)
    if vocab is not None and task.vocab is not None and task.vocab != vocab:
        raise ConfigError(f"{ckpt_path} was trained on another vocabulary ({len(task.vocab)} words) than "
                          f"this data ({len(vocab)} words): evaluate it on the data it was trained on")
    return task


def evaluate(cfg: DictConfig) -> dict:
    datamodule = hydra.utils.instantiate(cfg.data)
    task = load_task(cfg.ckpt_path, datamodule.load().itos)
    callbacks = [LMProgressBar()] if cfg.trainer.enable_progress_bar else []
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    val = trainer.validate(task, datamodule=datamodule, verbose=False)
    test = trainer.test(task, datamodule=datamodule)
    metrics = {"val_ppl": val[0]["val/ppl"], "test_ppl": test[0]["test/ppl"],
               "test_ppl_batched": test[1]["test/ppl_batched"], "params": task.num_params,
               "ckpt_path": str(Path(cfg.ckpt_path).resolve())}
    write_json_atomic(f"{cfg.paths.output_dir}/metrics.json", metrics)
    log.info("metrics: %s", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
