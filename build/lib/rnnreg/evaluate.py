"""rnnreg-eval: validation and test perplexity (both protocols) of a checkpoint, into metrics.json.

    rnnreg-eval ckpt_path=run/checkpoints/last.ckpt
    rnnreg-eval 'ckpt_path=[a.ckpt,b.ckpt]'          # average of the models' distributions
    rnnreg-eval ckpt_path=a.ckpt mc_samples=10       # Monte-Carlo dropout
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from rnnreg.callbacks import LMProgressBar
from rnnreg.runtime import ConfigError, hydra_entry, instantiate, log, write_json_atomic
from rnnreg.task import LanguageModelTask, Perplexity


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


class EnsembleTask(LanguageModelTask):
    """Evaluates the average of the predicted distributions of several models (the paper's model-averaging
    rows) and/or of `mc_samples` stochastic dropout passes per model (Monte-Carlo dropout, Gal &
    Ghahramani 2016). Each pass carries its own hidden state; the NLL is -log(mean_k p_k(next word))."""

    def __init__(self, tasks: list[LanguageModelTask], mc_samples: int = 1):
        L.LightningModule.__init__(self)
        if mc_samples < 1:
            raise ConfigError(f"mc_samples={mc_samples} must be >= 1 (1 = deterministic evaluation)")
        self.members = torch.nn.ModuleList(t.net for t in tasks)
        self.passes = [(k, mc_samples > 1) for k in range(len(tasks)) for _ in range(mc_samples)]
        self.val_ppl, self.test_ppl, self.test_ppl_batched = Perplexity(), Perplexity(), Perplexity()
        self.eval_states = {}
        self.vocab = tasks[0].vocab

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.members.parameters())

    def window_nll(self, batch, state):
        x, y = batch
        state = state or [None] * len(self.passes)
        log_probs, new_state = [], []
        for (k, stochastic), member_state in zip(self.passes, state):
            net = self.members[k].train(stochastic)  # dropout on for Monte-Carlo passes only
            logits, carried = net(x, member_state)
            log_probs.append(F.log_softmax(logits.float(), dim=-1))
            new_state.append(carried)
        mixture = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))
        return F.nll_loss(mixture.view(-1, mixture.size(-1)), y.reshape(-1)), new_state


def evaluate(cfg: DictConfig) -> dict:
    datamodule = instantiate(cfg.data)
    paths = [cfg.ckpt_path] if isinstance(cfg.ckpt_path, str) else list(cfg.ckpt_path)
    tasks = [load_task(path, datamodule.load().itos) for path in paths]
    mc_samples = cfg.get("mc_samples", 1)
    task = tasks[0] if len(tasks) == 1 and mc_samples == 1 else EnsembleTask(tasks, mc_samples)
    callbacks = [LMProgressBar()] if cfg.trainer.enable_progress_bar else []
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    val = trainer.validate(task, datamodule=datamodule, verbose=False)
    test = trainer.test(task, datamodule=datamodule)
    metrics = {"val_ppl": val[0]["val/ppl"], "test_ppl": test[0]["test/ppl"],
               "test_ppl_batched": test[1]["test/ppl_batched"], "params": task.num_params,
               "ckpt_path": [str(Path(p).resolve()) for p in paths], "mc_samples": mc_samples}
    write_json_atomic(f"{cfg.paths.output_dir}/metrics.json", metrics)
    log.info("metrics: %s", metrics)
    return metrics


@hydra_entry("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
