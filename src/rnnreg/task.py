"""The LightningModule: the paper's training step, carried hidden state per split, perplexity."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from numbers import Number
from pathlib import Path

import lightning as L
import torch
from torch import nn

from rnnreg.checkpoint_contents import not_this_version, not_written_by_train, trained_net
from rnnreg.errors import ConfigError, first_line
from rnnreg.fast import FastStep, fast_step_wanted
from rnnreg.io import load_checkpoint
from rnnreg.metrics import Perplexity
from rnnreg.model import State, build_net, mean_nll, paper_objective
from rnnreg.optim import paper_optimizer
from rnnreg.resume import restore_resume_state, save_resume_state, validate_again
from rnnreg.resume_checks import vocabulary_refusal
from rnnreg.schema import (
    Dropout,
    Model,
    Optim,
    Speed,
    TrainTrainer,
    check_value,
    group_problem,
    paper_values,
    rules,
    shown_from_file,
)
from rnnreg.task_config import unused_rate
from rnnreg.training_signals import TrainingSignals

# each group's keys that the network and the update rule read without a default (rnnreg.model.net_kwargs,
# rnnreg.optim.paper_optimizer); optim holds the clip too (trainer.gradient_clip_val), which the optim group does not
TASK_GROUPS = {"model": Model, "dropout": Dropout, "optim": Optim, "speed": Speed}
REQUIRED = {
    "model": ("hidden_size", "num_layers", "init_scale"),
    "dropout": ("input", "between", "output"),
    "optim": ("lr", "decay", "decay_start", "clip"),
    "speed": (),
}


def python_numbers(group):
    """A plain mapping's numpy scalars (a sweep's np.arange, np.float32) as the Python numbers they hold: checked as a
    config's values are, and in a checkpoint's hyper_parameters, which load as data only (rnnreg.io)."""
    if not isinstance(group, dict):
        return group
    return {k: v.item() if isinstance(v, Number) and hasattr(v, "item") else v for k, v in group.items()}


def check_task_groups(groups: dict) -> None:
    """LanguageModelTask's model, dropout, optim and speed (None: no speed) as rnnreg-train checks its config: a key
    misspelt or left out, or a value out of range, is one ConfigError naming it (not a KeyError once training has
    begun, nor a misspelt key silently ignored)."""
    for name, values in groups.items():
        if values is None and name == "speed":
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{name}={values!r} must be a mapping of its keys, as rnnreg.paper_recipe gives it")
        known = [*rules(TASK_GROUPS[name]), *(["clip"] if name == "optim" else [])]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {name}.{close[0]}?" if close else f"the keys are {', '.join(known)}"
                raise ConfigError(f"{name}.{key} is not a key of {name}: {hint}")
        missing = [key for key in REQUIRED[name] if key not in values]
        if missing:
            raise ConfigError(
                f"{name} has no {', '.join(missing)}: give {'it' if len(missing) == 1 else 'them'}, or start from "
                f"rnnreg.paper_recipe('small')['{name}']"
            )
        problem = group_problem(values, TASK_GROUPS[name], name)
        if name == "optim" and not problem:  # the clip by rnnreg-train's rule for trainer.gradient_clip_val (before:
            # 0 trained nothing, each update scaled to 0, and None was a TypeError once training had begun)
            clip = check_value(values["clip"], rules(TrainTrainer)["gradient_clip_val"])
            problem = clip and f"optim.clip={shown_from_file(values['clip'])} {clip}"
        if problem:
            raise ConfigError(problem)
    if isinstance(groups.get("dropout"), Mapping) and "p" in groups["dropout"]:
        if problem := unused_rate(groups["dropout"]):  # (rnnreg.task_config's: a run's task leaves such a p out)
            raise ConfigError(problem)


class LanguageModelTask(L.LightningModule):
    """The paper's language-model task: `model`, `dropout`, `optim` as a paper_recipe gives them; `speed`
    (optional): rnnreg-train's speed group, of which the task acts on fast_step, cuda_graph and triton_update
    (without them the step is Lightning's own, automatic optimisation, as a library user's Trainer expects; tf32,
    keep_freed_memory and triton_cell are set around a run: rnnreg.speed_settings.apply_speed, the step-loop LSTM's
    triton_cell); `net` (optional): evaluate this module instead of building one (model averaging, rnnreg.ensemble)."""

    def __init__(
        self,
        vocab_size: int,
        model: dict,
        dropout: dict,
        optim: dict,
        speed: dict | None = None,
        net: nn.Module | None = None,
    ):
        super().__init__()
        # its own copies: a caller's recipe changed afterwards (recipe["optim"]["lr"] = 0.5 for the next task) changes
        # neither what this task trains with nor what its checkpoints record
        model, dropout, optim, speed = (python_numbers(g) for g in copy.deepcopy((model, dropout, optim, speed)))
        self.save_hyperparameters(ignore=["net"])
        if net is None:  # (a trained net comes with the checked hyper_parameters of its checkpoint: load_task)
            check_task_groups({"model": model, "dropout": dropout, "optim": optim, "speed": speed})
        if not optim["lr"] > 0:
            raise ConfigError(f"optim.lr={optim['lr']} must be positive ({paper_values('optim.lr')})")
        self.net = net if net is not None else build_net(vocab_size, model, dropout)
        self.train_ppl, self.val_ppl = Perplexity(), Perplexity()
        self.test_ppl, self.test_ppl_batched = Perplexity(), Perplexity()
        # Each split carries its own (h, c) across windows; None means zeros (start of a pass).
        self.train_state: State | None = None
        self.eval_states: dict[int, State | None] = {}
        self.vocab: list[str] | None = None
        self.data_fingerprint: dict | None = None  # each split's sha256 its checkpoint records (rnnreg.resume)
        # the data a fit resumes on checked against its checkpoint's (rnnreg.training does before building its trainer)
        self.resume_data_checked = False
        self.seed: int | None = None  # the run's seed (rnnreg-train's), which its checkpoints record (rnnreg.resume)
        self.signals = TrainingSignals()  # what callbacks read of the step (rnnreg.training_signals)
        self.fast: FastStep | None = None  # speed.fast_step: built at the first window
        self.validation_pending = False  # resumed from a stop inside an epoch's validation (rnnreg.resume)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    # -- the training step --------------------------------------------------------------------------
    def window_nll(self, batch, state: State | None) -> tuple[torch.Tensor, State]:
        """Mean NLL per predicted token of one window, and the carried state."""
        x, y = batch
        logits, state = self.net(x, state)
        return mean_nll(logits, y), state

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if self.fast_step_on:
            return self.fast_training_step(batch)
        nll, self.train_state = self.window_nll(batch, self.train_state)
        self.train_ppl.update(nll.detach(), batch[1].numel())
        self.signals.record(nll.detach())
        # per-window loss curve; under DDP the mean over ranks (every rank holds as many streams)
        self.log("train/loss", nll.detach(), on_step=True, on_epoch=False, sync_dist=True)
        # summed over the window's time steps: lr 1.0 and the clip norm mean what they meant in the paper
        return paper_objective(nll, batch[0].size(0))

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        optimizer.step(closure=optimizer_closure)  # training_step and backward, then ClippedSGD's rule
        self.signals.grad_norm.copy_(optimizer.optimizer.grad_norm)

    def fast_training_step(self, batch) -> None:
        """speed.fast_step: the same step as one program on static buffers (a CUDA graph on a GPU)."""
        optimizer = self.optimizers()
        if self.fast is None:
            graph = (self.hparams.get("speed") or {}).get("cuda_graph", True)
            self.fast = FastStep(
                self.net, optimizer.optimizer, tuple(batch[0].shape), self.signals, self.device, graph=graph
            )
        self.train_state = self.fast.carry(self.train_state)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step(closure=lambda: self.fast(*batch, lr=lr), update=False)  # the program holds the update
        self.log("train/loss", self.signals.loss.clone(), on_step=True, on_epoch=False)

    def configure_optimizers(self):
        triton_update = bool((self.hparams.get("speed") or {}).get("triton_update", False))
        optimizer, schedule = paper_optimizer(self.parameters(), self.hparams.optim, triton_update)
        # "name": the lr's key in the logs (LearningRateMonitor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "epoch", "name": "train/lr"},
        }

    # -- which step: speed.fast_step (auto: on for a single-GPU run) ---------------------------------
    def setup(self, stage: str) -> None:
        self.check_vocabulary()
        if stage == "fit":
            mode = (self.hparams.get("speed") or {}).get("fast_step", False)
            self.automatic_optimization = not fast_step_wanted(mode, self.trainer)

    def check_vocabulary(self) -> None:
        """The trainer's data (an LMDataModule) against the words this task reads: the vocabulary it was trained on
        (a checkpoint's), else its vocab_size. Another corpus's word ids would index other words: refused, not
        scored (a library user's trainer.test(load_task(...), datamodule=...); rnnreg-eval checks before)."""
        datamodule = getattr(self._trainer, "datamodule", None)
        if not callable(getattr(datamodule, "load", None)):
            return
        words = datamodule.load().itos
        rows = self.hparams.vocab_size  # (a net given to evaluate, rnnreg.ensemble's, need not have an embedding)
        if self.vocab is not None and self.vocab != words:
            raise ConfigError(
                f"this task was trained on another vocabulary ({len(self.vocab)} words) than its data "
                f"({len(words)} words in {datamodule.data_dir}): evaluate or train it on the data it was trained on"
            )
        if self.vocab is None and rows != len(words):
            raise ConfigError(
                f"this task reads {rows} words (vocab_size) and its data has {len(words)} ({datamodule.data_dir}): "
                f"build it as LanguageModelTask(datamodule.vocab_size, ...)"
            )

    @property
    def fast_step_on(self) -> bool:
        return not self.automatic_optimization

    def flush_train_sums(self) -> None:
        """Fast step: move the training NLL and token sums kept on the device into the Perplexity metric."""
        if self.fast is not None:
            nll_sum, tokens = self.fast.take_sums()
            if tokens > 0:
                self.train_ppl.update(nll_sum / tokens, tokens)

    # -- hidden state: zeroed at the start of every pass, separate per split -----------------------
    def on_fit_start(self) -> None:
        self.signals = TrainingSignals(self.device)
        if self.train_state is not None:  # restored from a mid-epoch checkpoint
            self.train_state = tuple(t.to(self.device) for t in self.train_state)

    def on_train_start(self) -> None:
        if self.validation_pending:  # the stopped validation runs again before its epoch ends
            validate_again(self.trainer)
            self.validation_pending = False

    def on_train_epoch_start(self) -> None:
        self.train_state = None

    def on_validation_epoch_start(self) -> None:
        self.eval_states = {}

    def on_test_epoch_start(self) -> None:
        self.eval_states = {}

    def eval_step(self, batch, dataloader_idx: int) -> torch.Tensor:
        nll, self.eval_states[dataloader_idx] = self.window_nll(batch, self.eval_states.get(dataloader_idx))
        return nll

    # -- logging ------------------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        self.flush_train_sums()
        self.log("train/ppl", self.train_ppl)
        if self.fast_step_on:  # manual optimisation: Lightning leaves the schedule to us
            self.lr_schedulers().step()

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_ppl.update(self.eval_step(batch, 0), batch[1].numel())
        self.log("val/ppl", self.val_ppl, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        metric = self.test_ppl if dataloader_idx == 0 else self.test_ppl_batched
        metric.update(self.eval_step(batch, dataloader_idx), batch[1].numel())
        name = "test/ppl" if dataloader_idx == 0 else "test/ppl_batched"
        self.log(name, metric, on_step=False, on_epoch=True, add_dataloader_idx=False)

    # -- exact resume (rnnreg.resume) ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        save_resume_state(self, self._trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_resume_state(self, self._trainer, checkpoint)


def load_task(ckpt_path: str, vocab: list[str] | None = None, train_file=None) -> LanguageModelTask:
    """A trained task from a checkpoint, loaded as data only (rnnreg.io); with `vocab`, refuse a checkpoint
    trained on another vocabulary (`train_file`: the file `vocab` is read from, named where it changed since the
    checkpoint's run)."""
    ckpt_path = str(Path(ckpt_path).expanduser())
    checkpoint = load_checkpoint(ckpt_path)
    net = trained_net(checkpoint, ckpt_path)  # its hyper_parameters, weights and vocabulary checked
    hparams = checkpoint["hyper_parameters"]
    try:
        task = LanguageModelTask(
            hparams["vocab_size"], hparams["model"], hparams["dropout"], hparams["optim"], hparams.get("speed"), net=net
        )
    except (KeyError, TypeError) as err:
        raise not_this_version(ckpt_path, err) from None
    except ValueError as err:  # optim.lr=0 (a ConfigError): the file's, not the command line's
        raise not_written_by_train(ckpt_path, f"its hyper_parameters are not valid ({first_line(err)})") from None
    task.on_load_checkpoint(checkpoint)
    if vocab is not None and task.vocab != vocab:
        raise ConfigError(vocabulary_refusal(ckpt_path, task.vocab, vocab, train_file, "evaluate"))
    return task
