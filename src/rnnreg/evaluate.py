"""rnnreg-eval: validation and test perplexity (both protocols) of a checkpoint, into metrics.json.

rnnreg-eval ckpt_path=run/checkpoints/last.ckpt
rnnreg-eval 'ckpt_path=[a.ckpt,b.ckpt]'          # average of the models' distributions
rnnreg-eval ckpt_path=a.ckpt mc_samples=10       # Monte-Carlo dropout
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from rnnreg.runtime import hydra_entry, instantiate, log, route_lightning_logs


def evaluate(cfg: DictConfig) -> dict:
    # here, not at the top: `rnnreg-eval --help` answers without loading torch
    from rnnreg.callbacks import LMProgressBar
    from rnnreg.ensemble import AveragedModel
    from rnnreg.io import write_json_atomic
    from rnnreg.run_lock import check_no_earlier_results
    from rnnreg.task import LanguageModelTask, load_task

    route_lightning_logs()
    check_no_earlier_results(cfg.paths.output_dir, "hydra.run.dir", trains=False)  # its metrics.json is kept
    datamodule = instantiate(cfg.data)
    paths = [cfg.ckpt_path] if isinstance(cfg.ckpt_path, str) else list(cfg.ckpt_path)
    tasks = [load_task(path, datamodule.load().itos) for path in paths]
    mc_samples = cfg.get("mc_samples", 1)
    task = tasks[0]
    if len(tasks) > 1 or mc_samples > 1:
        averaged = AveragedModel([t.net for t in tasks], mc_samples)
        task = LanguageModelTask(**tasks[0].hparams, net=averaged)
    callbacks = [LMProgressBar()] if cfg.trainer.enable_progress_bar else []
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    val = trainer.validate(task, datamodule=datamodule, verbose=False)
    test = trainer.test(task, datamodule=datamodule)
    metrics = {
        "val_ppl": val[0]["val/ppl"],
        "test_ppl": test[0]["test/ppl"],
        "test_ppl_batched": test[1]["test/ppl_batched"],
        "params": task.num_params,
        "ckpt_path": [str(Path(p).resolve()) for p in paths],
        "mc_samples": mc_samples,
    }
    write_json_atomic(f"{cfg.paths.output_dir}/metrics.json", metrics)
    log.info("metrics: %s", metrics)
    return metrics


@hydra_entry("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
