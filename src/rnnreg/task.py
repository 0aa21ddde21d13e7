"""The LightningModule: the paper's objective, SGD + clipping, lr schedule, carried hidden state, perplexity."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from rnnreg.data import windows_done
from rnnreg.fast import FastWindowStep, LossWatch
from rnnreg.model import LSTMLanguageModel, State


class Perplexity(MeanMetric):
    """exp(total NLL / predicted tokens) over a whole split: update(mean_nll, num_tokens), token-weighted.

    Accumulates in float64 (MeanMetric would cast inputs to the module's float32) with no NaN check (a
    host sync on a GPU); under DDP the sums of NLL and token counts are reduced exactly across ranks.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.set_dtype(torch.float64)

    def update(self, value: torch.Tensor | float, weight: torch.Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=torch.float64, device=self.mean_value.device)
        weight = torch.as_tensor(weight, dtype=torch.float64, device=self.mean_value.device)
        self.mean_value += value * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


def paper_lr_factor(epoch: int, decay: float, decay_start: int) -> float:
    """lr multiplier of 1-based `epoch`: 1 / decay^max(0, epoch - decay_start) (paper / TensorFlow rule)."""
    return decay ** -max(0, epoch - decay_start)


class LanguageModelTask(L.LightningModule):
    def __init__(self, vocab_size: int, model: dict, dropout: dict, optim: dict, speed: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        if optim["lr"] <= 0:
            raise ValueError(f"optim.lr={optim['lr']} must be positive (the paper uses 1.0)")
        if (speed or {}).get("fast_step", False) not in ("auto", True, False):
            raise ValueError(f"speed.fast_step={speed['fast_step']} must be auto, true or false")
        self.net = LSTMLanguageModel(
            vocab_size, model["hidden_size"], model["num_layers"], model["init_scale"],
            dropout_input=dropout["input"], dropout_between=dropout["between"],
            dropout_output=dropout["output"], dropout_recurrent=dropout.get("recurrent", 0.0),
            variational=dropout.get("variational", False), weight_drop=dropout.get("weight_drop", 0.0),
            embedding_dropout=model.get("embedding_dropout", 0.0), layer_norm=model.get("layer_norm", False),
            tie_weights=model.get("tie_weights", False), lstm=model.get("lstm", "auto"))
        self.train_ppl, self.val_ppl = Perplexity(), Perplexity()
        self.test_ppl, self.test_ppl_batched = Perplexity(), Perplexity()
        # Each split carries its own (h, c) across windows; None means zeros (start of a pass).
        self.train_state: State | None = None
        self.eval_states: dict[int, State | None] = {}
        self.last_loss = torch.zeros(())
        self.grad_norm = torch.zeros(())
        self.vocab: list[str] | None = None
        self.fast: FastWindowStep | None = None  # built at the first window when speed.fast_step is on
        self.loss_watch: LossWatch | None = None  # first diverged training loss, on the device (on_train_start)

    def setup(self, stage: str) -> None:
        """speed.fast_step: auto = on for a single-GPU run; true = on wherever it can run (CPU: eager). It runs
        plain SGD in one process, without fp16 loss scaling; elsewhere auto keeps Lightning's plain step."""
        mode = (self.hparams.get("speed") or {}).get("fast_step", False)
        if stage == "fit" and mode is not False:
            on = mode is True or self.trainer.strategy.root_device.type == "cuda"
            self.automatic_optimization = not (self.fast_step_can_run(self.trainer) and on)

    def fast_step_can_run(self, trainer: L.Trainer) -> bool:
        """One process, plain SGD, one window per update, no fp16 loss scaling; speed.fast_step=true elsewhere
        is an error (train.build asks before any output is written)."""
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # trainer.precision=16-mixed
        can = (trainer.world_size == 1 and self.hparams.optim.get("momentum", 0.0) == 0 and not scaled
               and trainer.accumulate_grad_batches == 1)
        if (self.hparams.get("speed") or {}).get("fast_step") is True and not can:
            raise ValueError("speed.fast_step=true needs one process, optim.momentum=0, no fp16 loss scaling "
                             "(trainer.precision=16-mixed) and trainer.accumulate_grad_batches=1: set "
                             "speed.fast_step=auto (it falls back to the plain step) or false")
        return can

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    # -- objective ----------------------------------------------------------------------------------
    def window_nll(self, batch, state: State | None) -> tuple[torch.Tensor, State]:
        """Mean NLL per predicted token of one window, and the carried state."""
        x, y = batch
        logits, state = self.net(x, state)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1)), state

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if not self.automatic_optimization:
            return self.fast_training_step(batch)
        nll, self.train_state = self.window_nll(batch, self.train_state)
        self.train_ppl.update(nll.detach(), batch[1].numel())
        self.last_loss = nll.detach()
        if self.loss_watch is not None:  # None only when called outside a Trainer (tests)
            self.loss_watch.record(self.last_loss)
        # per-window loss curve (written every trainer.log_every_n_steps); under DDP the mean over ranks,
        # which is the global batch's loss since every rank holds the same number of streams
        if self.trainer_attached():
            self.log("train/loss", self.last_loss, on_step=True, on_epoch=False,
                     sync_dist=self.trainer.world_size > 1)
        # The paper's objective: the SUM over the window's time steps of the batch-mean NLL (the token
        # mean times the window length), so lr 1.0 and the clip norm mean what they meant in the paper.
        return nll * batch[0].size(0)

    def fast_training_step(self, batch) -> None:
        """speed.fast_step: the whole step on static buffers (rnnreg.fast), a CUDA graph on a GPU."""
        x, y = batch
        if self.fast is None:
            optim, speed = self.hparams.optim, self.hparams.get("speed") or {}
            self.fast = FastWindowStep(self.net, tuple(x.shape), optim["clip"], optim.get("weight_decay", 0.0),
                                       self.device, graph=speed.get("cuda_graph", True), watch=self.loss_watch)
        if self.train_state is None:  # start of an epoch
            self.fast.reset_state()
        elif self.train_state[0] is not self.fast.h:  # restored from a mid-epoch checkpoint
            self.fast.load_state(self.train_state)
        self.train_state = (self.fast.h, self.fast.c)
        optimizer = self.optimizers()  # its step() counts the step; the update itself is in the fast step
        optimizer.step(closure=lambda: self.fast(x, y, optimizer.param_groups[0]["lr"]))
        self.last_loss, self.grad_norm = self.fast.loss, self.fast.grad_norm
        self.log("train/loss", self.fast.loss.clone(), on_step=True, on_epoch=False)

    def flush_train_sums(self) -> None:
        """Fast step: move the training NLL and token sums kept on the device into the Perplexity metric."""
        if self.fast is not None:
            nll_sum, tokens = self.fast.take_sums()
            if tokens > 0:
                self.train_ppl.update(nll_sum / tokens, tokens)

    def divergence(self, batch_idx: int) -> tuple[int, float] | None:
        """(step in this epoch, loss) of the first non-finite or overflowing training loss, or None. Syncs."""
        bad = self.loss_watch.first() if self.loss_watch is not None else None
        return None if bad is None else (batch_idx + 1 - bad[0], bad[1])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.hparams.optim["clip"],
                                                        foreach=True)

    def configure_optimizers(self):
        optim = self.hparams.optim
        optimizer = torch.optim.SGD(self.parameters(), lr=optim["lr"], momentum=optim.get("momentum", 0.0),
                                    weight_decay=optim.get("weight_decay", 0.0), foreach=True)
        # LambdaLR counts completed epochs from 0; the paper counts epochs from 1.
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda done: paper_lr_factor(done + 1, optim["decay"], optim["decay_start"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    # -- hidden state: zeroed at the start of every pass, separate per split -----------------------
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
        if not self.automatic_optimization:  # manual optimisation: Lightning leaves the schedule to us
            self.lr_schedulers().step()

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_ppl.update(self.eval_step(batch, 0), batch[1].numel())
        self.log("val/ppl", self.val_ppl, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        metric = self.test_ppl if dataloader_idx == 0 else self.test_ppl_batched
        metric.update(self.eval_step(batch, dataloader_idx), batch[1].numel())
        name = "test/ppl" if dataloader_idx == 0 else "test/ppl_batched"
        self.log(name, metric, on_step=False, on_epoch=True, add_dataloader_idx=False)

    # -- the vocabulary travels with the checkpoint (eval / generate need it) ------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.corpus is not None:
            self.vocab = datamodule.corpus.itos
        checkpoint["vocab"] = self.vocab
        # Dropout masks after a resume continue the uninterrupted run's random stream exactly.
        checkpoint["rng"] = {"torch": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        if self.trainer_attached() and windows_done(self.trainer):
            checkpoint["train_carry"] = self.mid_epoch_carry()

    def mid_epoch_carry(self) -> dict:
        """What a mid-epoch resume needs beyond the weights: the carried (h, c) of every stream (gathered
        from all DDP ranks, in stream order) and the epoch's training NLL and token sums so far."""
        self.flush_train_sums()
        h, c = self.train_state
        total, tokens = self.train_ppl.mean_value.clone(), self.train_ppl.weight.clone()
        if self.trainer.world_size > 1:  # (world, layers, streams per rank, units) -> (layers, streams, units)
            h, c = (torch.cat(list(self.all_gather(t)), dim=1) for t in (h, c))
            total, tokens = self.all_gather(total).sum(), self.all_gather(tokens).sum()
        return {"state": (h.cpu(), c.cpu()), "nll_sum": total.cpu(), "tokens": tokens.cpu()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.vocab = checkpoint.get("vocab")
        if self.trainer_attached() and "rng" in checkpoint:
            torch.set_rng_state(checkpoint["rng"]["torch"])
            if checkpoint["rng"]["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        if self.trainer_attached() and "train_carry" in checkpoint:  # resuming mid-epoch
            carry = checkpoint["train_carry"]
            streams = carry["state"][0].size(1) // self.trainer.world_size
            rank = self.trainer.global_rank
            self.train_state = tuple(t[:, rank * streams : (rank + 1) * streams] for t in carry["state"])
            if rank == 0 and carry["tokens"] > 0:  # the epoch's sums so far (reduced over ranks at its end)
                self.train_ppl.update(carry["nll_sum"] / carry["tokens"], carry["tokens"])

    def on_train_start(self) -> None:
        self.loss_watch = LossWatch(self.device)
        if self.train_state is not None:  # restored from a mid-epoch checkpoint
            self.train_state = tuple(t.to(self.device) for t in self.train_state)

    def trainer_attached(self) -> bool:
        return self._trainer is not None
