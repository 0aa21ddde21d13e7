"""Train one group of a stacked sweep: K jobs of one shape as one StackedLanguageModel, in a plain loop.

Per member, what its job run alone computes (rnnreg.train; on a CPU as its single model, bit for bit, dropout
included; on a GPU on the stacked step loop): the paper's objective, its own lr schedule, clip, weight decay
and momentum, perplexities, best/last checkpoints, early stopping and divergence guard, the test in both
protocols; written into the job's folder as a separate run would (rnnreg.stacked_outputs; its checkpoints a single
run's: rnnreg.member_checkpoint). A member that diverges or stops early stops changing; the others go on. The
window itself is rnnreg.stacked_step (a CUDA graph on a GPU, the members in turn on a CPU). SIGTERM / Ctrl-C stop
the group at a window boundary (rnnreg.stacked_stop) with a resume file from which `hydra.launcher.resume=true`
continues exactly (what it holds, read and checked: rnnreg.stacked_resume).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from lightning.pytorch.callbacks import EarlyStopping

from rnnreg.checkpoints import tests_best
from rnnreg.console import device_name
from rnnreg.errors import ConfigError, DataError, OutputError
from rnnreg.instantiation import instantiate
from rnnreg.io import FileWriter, save_atomically
from rnnreg.member_checkpoint import member_checkpoint
from rnnreg.multirun_jobs import SWEEP_FILE
from rnnreg.optim import paper_lr_factor
from rnnreg.record_yaml import recorded_swept_keys
from rnnreg.recorded_commands import go_on_command
from rnnreg.resumed_run import checked_run_id
from rnnreg.run_record import BEST_CHECKPOINT, LAST_CHECKPOINT, STOPPED_BY
from rnnreg.speed_settings import apply_speed, require_triton
from rnnreg.stacked import MemberSpec, StackedLanguageModel
from rnnreg.stacked_outputs import (
    JobFolder,
    output_failed,
    record_results,
    record_stop,
    stacked_record,
    stopped_while_built,
    warn_unvalidated,
)
from rnnreg.stacked_progress import GroupProgress, member_labels
from rnnreg.stacked_resume import (
    Member,
    apply_group_state,
    check_group_data,
    checked_wandb_labels,
    group_done,
    group_state,
    read_group_resume,
    trains_on,
    unreadable_resume,
)
from rnnreg.stacked_settings import on_a_cpu, padded_size, running_program, under_bf16_autocast
from rnnreg.stacked_step import group_step
from rnnreg.stacked_stop import Stopped, StoppedBuilding, StopRequest
from rnnreg.timing import device_clock, estimated_test_seconds
from rnnreg.training_signals import divergence_message

if TYPE_CHECKING:
    from rnnreg.stacked_launcher import Job


def early_stopping(cfg) -> EarlyStopping | None:
    """The job's EarlyStopping (callbacks=early_stopping), or None."""
    spec = (cfg.get("callbacks") or {}).get("early_stopping")
    return instantiate(spec) if spec and spec.get("_target_") else None


def autocast_dtype(trainer) -> torch.dtype | None:
    """The forward's autocast type for trainer.precision (bf16-mixed: bfloat16; 32-true: None, no autocast); the
    launcher refuses every other precision (rnnreg.stacked_settings.check_stackable)."""
    return torch.bfloat16 if under_bf16_autocast(trainer) else None


class HostCopies(NamedTuple):
    """The members' stacked weights and momentum buffers (None: no member has momentum) on the host, in the
    stacked parameters' order: what an epoch's checkpoints and the resume file are written from."""

    weights: list[torch.Tensor]
    buffers: list[torch.Tensor] | None


class GroupTrainer:
    """One group's training loop: its members' windows, epochs, checkpoints, resume file and results."""

    def __init__(
        self,
        jobs: list[Job],
        group: int,
        resume_file: Path,
        stop_after_windows: int | None = None,
        program: str = "auto",
        pad_hidden_to: int = 1,
        stop: StopRequest | None = None,
    ):
        self.jobs, self.group, self.resume_file = jobs, group, resume_file
        self.folders = [JobFolder(job) for job in jobs]
        self.wandb_runs: list[str | None] = [None] * len(jobs)  # the W&B runs a resumed group goes on in
        self.wandb_labels: list[dict] = [{}] * len(jobs)  # and their groups and names (resumed_group, resumed_name)
        self.stop_after_windows = stop_after_windows
        cfg = self.cfg = jobs[0].cfg  # what every member shares
        self.datamodule = instantiate(cfg.data)
        self.vocab = self.datamodule.load().itos
        self.datamodule.check_splits()  # a split too short: the fix a run alone gives (data.bptt), before any work
        cuda = not on_a_cpu(str(cfg.trainer.get("accelerator", "auto")))
        self.model = StackedLanguageModel(
            len(self.vocab),
            cfg.model.hidden_size,
            cfg.model.num_layers,
            [MemberSpec.from_config(j.cfg) for j in jobs],
            layer_norm=cfg.model.layer_norm,
            tie_weights=cfg.model.tie_weights,
            pad_hidden_to=pad_hidden_to,  # (rnnreg.stacked_settings.pad_hidden_to: batched on a GPU)
        ).to("cuda" if cuda else "cpu")
        self.pad_hidden_to = pad_hidden_to
        self.device = self.model.decoder_bias.device  # with its index (cuda:0), as every tensor's device names it
        if cfg.speed.triton_cell:  # the stacked step loop's cell as Triton kernels (the batched program)
            require_triton(self.device, "speed.triton_cell")
            self.model.triton_cell = True
        if cfg.speed.triton_update:  # the members' clipped SGD step as one Triton kernel a parameter
            require_triton(self.device, "speed.triton_update")
        self.params = list(self.model.parameters())
        self.names = [name for name, _ in self.model.named_parameters()]

        decays = [float(j.cfg.optim.weight_decay) for j in jobs]
        momentums = [float(j.cfg.optim.momentum) for j in jobs]
        self.step = group_step(
            self.model,
            (cfg.data.bptt, cfg.data.batch_size),
            clips=[float(j.cfg.trainer.gradient_clip_val) for j in jobs],
            weight_decays=decays if any(decays) else None,
            device=self.device,
            graph=cfg.speed.cuda_graph,
            program=program,
            momentums=momentums if any(momentums) else None,
            autocast=autocast_dtype(cfg.trainer),
            triton_update=cfg.speed.triton_update,
        )
        self.members = [Member() for _ in jobs]
        self.stoppers = [early_stopping(job.cfg) for job in jobs]
        self.callbacks: list[list | None] = [None] * len(jobs)  # each job's callbacks, for its checkpoints
        # each member's best validation weights, kept only for a test that uses them (K models' worth of memory,
        # and of every resume file)
        self.tests_on_best = [
            tests_best(job.cfg.test_ckpt, early_stopping=stopper is not None)
            for job, stopper in zip(jobs, self.stoppers)
        ]
        self.best_params = [p.detach().clone() for p in self.params] if any(self.tests_on_best) else None
        self.epoch, self.window, self.global_step = 0, 0, 0
        self.tokens = 0
        self.train_seconds = self.fit_seconds = 0.0
        self.epoch_seconds_before = 0.0  # the epoch under way's training time before a stop (its words/s counts it)
        self.epoch_seconds = 0.0  # the last ended epoch's training time
        self.last_epoch_words_per_second = 0.0
        self.window_seconds: list[float] = []  # this epoch's, window end to window end (as SpeedMonitor's steps)
        self.words_per_window = 0
        # a signal's: where the group stops depends on what it is doing (train_group's, handled as it is built)
        self.stop = stop if stop is not None else StopRequest()
        self.progress: GroupProgress | None = None  # the console's lines (fit makes it)
        self.log_every = max(1, int(cfg.trainer.get("log_every_n_steps", 50)))
        self.val_every = int(cfg.trainer.get("check_val_every_n_epoch") or 1)  # (the group key holds it: shared)
        self.writer = FileWriter(background=self.step.files_in_background)  # checkpoints and the resume file

    # -- windows --------------------------------------------------------------------------------------
    def windows(self, split: str, streams: int, bptt: int, drop_last: bool, limit):
        from rnnreg.data import BPTTWindows, limit_batches

        # the split on the device once: a blocking host-to-device copy per window waits for the GPU's queue
        windows = BPTTWindows(self.datamodule.streams(split, streams).to(self.device), bptt, drop_last)
        return windows, limit_batches(len(windows), limit)

    def lrs(self, epoch: int) -> list[float]:
        """Each member's lr in 0-based `epoch` (the LambdaLR schedule of a single run)."""
        return [
            j.cfg.optim.lr * paper_lr_factor(epoch + 1, j.cfg.optim.decay, j.cfg.optim.decay_start) for j in self.jobs
        ]

    def record(self, k: int, row: dict) -> None:
        """A row of member k's csv/metrics.csv (written at the epoch's end), and to its W&B run."""
        self.members[k].rows.append(row)
        self.folders[k].log_metrics(row)

    def running(self) -> list[bool]:
        return [m.status == "running" for m in self.members]

    def validates(self, epoch: int) -> bool:
        """Whether 0-based `epoch` ends with a validation: as Lightning's trainer.check_val_every_n_epoch, after
        every n-th epoch (not the last one unless it is one of them)."""
        return (epoch + 1) % self.val_every == 0

    def last_validation(self, epochs: int) -> int:
        """The epoch (from 1) of the last validation within `epochs` epochs, 0 where none ran. (A member stops
        early only at a validation, so a completed member's last validation is this of its epochs.)"""
        return epochs - epochs % self.val_every

    # -- training -------------------------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.cfg
        data = cfg.data
        train, n_train = self.windows("train", data.batch_size, data.bptt, True, cfg.trainer.limit_train_batches)
        eval_bptt = self.datamodule.eval_bptt  # (data.eval_bptt, or data.bptt where that is null)
        val, n_val = self.windows("valid", data.batch_size, eval_bptt, False, cfg.trainer.limit_val_batches)
        if n_train < 1 or n_val < 1:
            raise ConfigError("trainer.limit_train_batches / limit_val_batches leave no window: raise them")
        self.n_train, self.n_val = n_train, n_val
        check_every = 1 if self.step.host_reads_are_free else self.log_every  # on CUDA a read is a sync
        plan = (cfg.get("callbacks") or {}).get("run_plan")  # a run's RunPlan settings (none: no estimate, as a run)
        self.progress = progress = GroupProgress(
            self.group,
            member_labels([j.overrides for j in self.jobs], [j.idx for j in self.jobs], self.swept_keys()),
            cfg.trainer.max_epochs,
            n_train,
            n_val * eval_bptt / data.bptt,
            self.device,
            # the program's own eager windows (before a graph's capture) untimed too
            warmup_windows=self.step.warmup + plan.warmup_windows if plan else None,
            measure_windows=plan.measure_windows if plan else None,
            time_test=self.time_test if cfg.get("test") else None,
            val_every=self.val_every,
        )
        progress.started()
        fit_start = time.perf_counter() - self.fit_seconds
        while trains_on(self.epoch, cfg.trainer.max_epochs, (m.status for m in self.members)):
            epoch, lrs = self.epoch, self.lrs(self.epoch)
            self.stop.stage = "training"
            if self.stop.signal is not None:  # it came as the group started (or went on): before its first window
                self.fit_seconds = time.perf_counter() - fit_start
                return
            if self.window == 0:  # (not after a resume inside the epoch)
                self.start_epoch(lrs)
            start = last_window_end = time.perf_counter()
            self.window_seconds = []
            self.model.train()
            while self.window < n_train:
                x, y = train[self.window]
                self.step(x, y, lrs)
                self.words_per_window = y.numel()
                self.tokens += y.numel()
                self.window += 1
                self.global_step += 1
                now = time.perf_counter()  # host clocks only: on CUDA the step is queued, not waited for
                self.window_seconds.append(now - last_window_end)
                last_window_end = now
                progress.window_done(epoch, self.window)
                if self.global_step % check_every == 0:
                    self.check_failures()
                if self.global_step % self.log_every == 0:
                    self.log_losses(epoch)  # a host sync on CUDA
                if self.stop_after_windows and self.global_step == self.stop_after_windows:
                    os.kill(os.getpid(), signal.SIGTERM)  # tests: a real signal, handled as a scheduler's
                if self.stop.signal is not None and self.window < n_train:
                    self.check_failures()
                    self.epoch_seconds_before += self.training_seconds_since(start)
                    self.fit_seconds = time.perf_counter() - fit_start
                    return
            self.check_failures()  # a host sync: the epoch's windows are done
            # a resumed epoch's time before its stop too
            epoch_seconds = self.epoch_seconds = self.epoch_seconds_before + self.training_seconds_since(start)
            self.epoch_seconds_before = 0.0
            val_ppl, val_seconds = None, 0.0  # an epoch without validation (trainer.check_val_every_n_epoch)
            if self.validates(epoch):
                val_start, self.stop.stage = time.perf_counter(), "validation"
                val_ppl = self.evaluate(val, n_val, members=self.running())  # a host sync: its perplexities
                val_seconds, self.stop.stage = time.perf_counter() - val_start, "training"
            self.writer.wait()  # the last epoch's files: one epoch's copies in memory at most
            copies = self.host_copies()
            self.fit_seconds = time.perf_counter() - fit_start  # (in the members' checkpoints end_epoch saves)
            self.end_epoch(val_ppl, epoch_seconds, copies)
            for m in self.members:
                if m.epochs == epoch + 1:  # it trained this epoch
                    m.train_seconds, m.fit_seconds = self.train_seconds, time.perf_counter() - fit_start
            statuses = [m.status for m in self.members]
            words_per_second = self.last_epoch_words_per_second
            progress.epoch_done(epoch, epoch_seconds, val_seconds, words_per_second, val_ppl, statuses)
            self.fit_seconds = time.perf_counter() - fit_start
            self.save_resume(copies)
            if self.stop.signal is not None:
                return
        self.fit_seconds = time.perf_counter() - fit_start

    def start_epoch(self, lrs: list[float]) -> None:
        """An epoch's start: the state from zeros, its sums from nothing, each running member's lr logged."""
        self.step.carry(None)
        self.step.nll_sum.zero_()
        self.tokens = 0
        for k, m in enumerate(self.members):
            if m.status == "running":  # LearningRateMonitor's row at the epoch's start
                self.record(k, {"epoch": "", "step": self.global_step, "train/lr": lrs[k]})

    def log_losses(self, epoch: int) -> None:
        """Each running member's last window's loss, as a run logs train/loss every trainer.log_every_n_steps."""
        values = self.step.loss.tolist()
        for k, m in enumerate(self.members):
            if m.status == "running":
                self.record(k, {"epoch": epoch, "step": self.global_step - 1, "train/loss": values[k]})

    def training_seconds_since(self, start: float) -> float:
        """The seconds since `start`, counted into the group's training time (train_seconds)."""
        elapsed = time.perf_counter() - start
        self.train_seconds += elapsed
        return elapsed

    def check_failures(self) -> None:
        """Members that diverged on the device since the last check: failed, with the window and loss."""
        epoch_start = self.global_step - self.window
        failures = self.step.failures(self.running())
        if failures:
            self.writer.wait()  # the message names the last checkpoint written
        for k, (step, loss) in failures.items():
            folder = self.folders[k]
            m = self.members[k]
            m.status = "failed"
            where = f"{loss} at epoch {self.epoch + 1}, step {step - epoch_start + 1} (global step {step + 1})"
            m.error = divergence_message(where, folder.last_checkpoint())
            folder.log(m.error)

    @torch.no_grad()
    def evaluate(
        self, windows, count: int, params: list[torch.Tensor] | None = None, members: list[bool] | None = None
    ) -> list[float]:
        """Every member's perplexity over `count` windows, the state carried from zeros (on `params`, in
        place of the trained weights, when given); `members`: the ones whose perplexity is wanted (the others'
        may be skipped: NaN)."""
        saved = None
        if params is not None:
            saved = [p.detach().clone() for p in self.params]
            for p, q in zip(self.params, params):
                p.copy_(q)
        batches = (windows[i] for i in range(count))
        total = self.step.nll_sums(batches, members)
        tokens = sum(windows[i][1].numel() for i in range(count))
        if saved is not None:
            for p, q in zip(self.params, saved):
                p.copy_(q)
        return (total / tokens).exp().tolist()

    def time_test(self) -> float:
        """The final test's seconds (rnnreg.timing.estimated_test_seconds) on the members still running. A host sync
        on CUDA."""
        tested = [m.status != "failed" for m in self.members]
        return estimated_test_seconds(
            self.datamodule,
            self.cfg.trainer.limit_test_batches,
            lambda batches: self.step.nll_sums(batches, tested),
            lambda: device_clock(self.device),
            on_device=lambda streams: streams.to(self.device),  # as the group's own windows (self.windows)
        )

    def host(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the host for a file: a copy where the writer writes later (self.writer.copies)."""
        return tensor.detach().to("cpu", copy=self.writer.copies)

    def host_copies(self) -> HostCopies:
        """The members' weights and momentum buffers on the host (unpadded), once for their checkpoints and the
        resume file."""
        return HostCopies(self.unpadded_on_host(self.params), self.unpadded_on_host(self.step.buffers))

    def unpadded_on_host(self, tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
        """Tensors laid out as the stacked parameters, unpadded (on the device, then one copy over) on the host."""
        if tensors is None:
            return None
        return [self.host(self.model.unpadded(t.detach(), name)) for name, t in zip(self.names, tensors)]

    def pad_into(self, tensors: list[torch.Tensor], values) -> None:
        """Unpadded `values` (a list, or a dict by parameter name) into tensors laid out as the parameters."""
        values = [values[name] for name in self.names] if isinstance(values, dict) else values
        with torch.no_grad():
            for name, tensor, value in zip(self.names, tensors, values):
                self.model.pad_into(tensor, value, name)

    def end_epoch(self, val_ppl: list[float] | None, epoch_seconds: float, copies: HostCopies) -> None:
        """`val_ppl`: the members' validation perplexities, None on an epoch without validation; `epoch_seconds`: the
        epoch's training time (a resumed epoch's before its stop included)."""
        train_ppl = (self.step.nll_sum / max(self.tokens, 1)).exp().tolist()
        grad_norm = self.step.grad_norm.tolist()  # each member's last update's, as a run logs it at its epoch's end
        step = self.global_step - 1
        words = self.tokens
        self.last_epoch_words_per_second = words / epoch_seconds if epoch_seconds > 0 else 0.0
        for k, (m, folder) in enumerate(zip(self.members, self.folders)):
            if m.status != "running":
                continue
            m.epochs, m.words = self.epoch + 1, m.words + words
            if val_ppl is not None:  # as a run logs it: after the epoch's validation, before the epoch's end
                m.val_ppl = val_ppl[k]
                self.record(k, {"epoch": self.epoch, "step": step, "val/ppl": val_ppl[k]})
            self.record(
                k,
                {
                    "epoch": self.epoch,
                    "step": step,
                    "train/epoch_seconds": epoch_seconds,
                    "train/grad_norm": grad_norm[k],
                    "train/ppl": train_ppl[k],
                    "train/words_per_sec": self.last_epoch_words_per_second,
                },
            )
            if val_ppl is None:  # best.ckpt and early stopping wait for a validation, as in a run
                folder.log(f"epoch {self.epoch + 1}: train ppl {train_ppl[k]:.2f} (no validation this epoch)")
                self.writer.submit(folder.save_checkpoint, LAST_CHECKPOINT, member_checkpoint(self, k, copies))
                folder.write_csv(m.rows)
                continue
            folder.log(f"epoch {self.epoch + 1}: train ppl {train_ppl[k]:.2f}, val ppl {val_ppl[k]:.2f}")
            improved = val_ppl[k] < m.best_val  # ModelCheckpoint(mode=min): strictly better
            if improved:
                m.best_val = val_ppl[k]
                if self.tests_on_best[k]:
                    for p, b in zip(self.params, self.best_params):
                        b[k].copy_(p[k])
            stopper = self.stoppers[k]
            if stopper is not None:  # Lightning's EarlyStopping itself, before the checkpoints as in Lightning
                if m.early_stopping is not None:
                    stopper.load_state_dict(m.early_stopping)
                # (a private method, as Lightning 2.x has it: pyproject pins lightning<3, and
                # test_an_early_stopped_member_stops_changing checks a member stops where its job would)
                stop, reason = stopper._evaluate_stopping_criteria(torch.tensor(val_ppl[k], dtype=torch.float64))
                if stop:
                    stopper.stopped_epoch, stopper.stopping_reason_message = self.epoch, reason
                    m.status = "stopped"
                m.early_stopping = stopper.state_dict()
            # every epoch: best.ckpt at the epoch's end (last.ckpt links to it); validating every n > 1 epochs,
            # a run saves best.ckpt as its validation ends, before the epoch's end (rnnreg.member_checkpoint)
            checkpoint = member_checkpoint(self, k, copies, validation_end=improved and self.val_every != 1)
            if improved:
                self.writer.submit(folder.save_checkpoint, BEST_CHECKPOINT, checkpoint)
            self.writer.submit(
                folder.save_checkpoint, LAST_CHECKPOINT, checkpoint, BEST_CHECKPOINT if improved else None
            )
            if m.status == "stopped":
                folder.log(f"early stopping after epoch {self.epoch + 1}: best val ppl {m.best_val:.2f}")
                self.step.stop(k)
            folder.write_csv(m.rows)
        self.epoch += 1
        self.window = 0

    def stacked_record(self, k: int) -> dict:
        """How member k was trained, for its metrics.json and checkpoints (stacked_record)."""
        return stacked_record(self.group, len(self.jobs), k, self.step.name, self.model.units)

    # -- exact resume ---------------------------------------------------------------------------------
    def fingerprint(self) -> list:
        return [self.jobs[0].key, [j.overrides for j in self.jobs]]

    def save_resume(self, copies: HostCopies) -> None:
        """The group's resume file, handed to the writer (`copies`: host_copies())."""
        self.writer.submit(save_atomically, group_state(self, copies), self.resume_file)

    def load_resume(self) -> None:
        """The group as its resume file holds it, checked first (rnnreg.stacked_resume): one line where it cannot go
        on exactly, or where a value does not fit (a file edited by hand)."""
        state = read_group_resume(
            self.resume_file,
            self.fingerprint(),
            self.group,
            (self.step.name, self.device.type, self.model.hidden_size, self.pad_hidden_to),
            self.cfg.trainer.max_epochs,
        )
        # the corpus changed since it trained: refused inside an epoch, else said (a run's rule, rnnreg.resume_checks)
        run, max_epochs = self.jobs[0].output_dir, self.cfg.trainer.max_epochs
        for line in check_group_data(state, self.datamodule.load(), self.resume_file, run, max_epochs):
            self.warn(line)
        try:  # its fingerprint and counts intact: the first tensor that does not fit says so
            apply_group_state(self, state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            raise unreadable_resume(self.resume_file, err) from None
        self.wandb_runs = [checked_run_id(run, self.resume_file) for run in state.get("wandb_runs") or self.wandb_runs]
        if (labels := state.get("wandb_labels")) is not None:  # (a file from before they were kept has none)
            self.wandb_labels = checked_wandb_labels(labels, len(self.jobs), self.resume_file)

    def warn(self, line: str) -> None:
        """A warning of the whole group: on the console and in each member's train.log."""
        print(f"warning: group {self.group}: {line}", file=sys.stderr, flush=True)
        for folder in self.folders:
            folder.log(line, "WARNING")

    def swept_keys(self) -> list[str] | None:
        """The keys the sweep varies, as its sweep.yaml records them (rnnreg.sweep writes it as the sweep starts);
        None where the jobs have no Hydra config (a group built outside Hydra) or the file says nothing."""
        hydra_cfg = self.jobs[0].hydra_cfg if self.jobs else None
        if hydra_cfg is None:
            return None
        with contextlib.suppress(DataError):  # (unreadable: the labels say what tells the group's members apart)
            return recorded_swept_keys(Path(str(hydra_cfg.hydra.sweep.dir), SWEEP_FILE))
        return None

    def going_on_folders(self) -> list:
        """The folders of the members that train or wait for their test: not of one that failed before the group
        stopped (resumed, it trains nothing: its record and loggers ended at the stop, and its W&B run would get an
        empty part)."""
        return [folder for m, folder in zip(self.members, self.folders) if m.status != "failed"]

    # -- the group's run ------------------------------------------------------------------------------
    def run(self, resume: bool) -> list[tuple[str, object]]:
        if resume and self.resume_file.exists():
            self.load_resume()
            for folder in self.going_on_folders():
                folder.log(
                    f"resuming the stacked group {self.group} at epoch {self.epoch + 1}, window {self.window}, "
                    f"on {device_name(self.device)}"
                )
        else:
            per_member = self.model.parameters_per_member
            for k, (job, folder) in enumerate(zip(self.jobs, self.folders)):
                folder.log(
                    f"{job.cfg.experiment_name}: {per_member:,} parameters, vocabulary {len(self.vocab)} "
                    f"(stacked group {self.group}, member {k} of {len(self.jobs)}) on {device_name(self.device)}"
                )
        for note in self.datamodule.load().unknown_words():  # at every start, a resumed one's too (as rnnreg.training)
            self.warn(note)
        # built: a signal from here stops the group before its first window, its W&B runs open (fit says "training"
        # as its first window comes); handled by train_group's request since the group's build began, else from now
        self.stop.stage = "start"
        handlers = None if self.stop.installed else self.stop.install()
        try:
            going_on = self.going_on_folders()  # (a member that failed before a stop: its runs stay ended)
            for folder, run_id, labels in zip(self.folders, self.wandb_runs, self.wandb_labels):
                if folder in going_on:
                    folder.open_loggers(len(self.vocab), run_id, labels)
            try:
                results = self.fit_and_test()
            except KeyboardInterrupt:  # a second Ctrl-C: abort at once, the members' folders saying so
                self.stop.signal = signal.SIGINT
                record_stop(self)
                raise SystemExit(128 + signal.SIGINT) from None
            except OutputError as err:
                output_failed(self, err)
                raise
            finally:
                self.writer.close()  # whatever happened: the files handed over are written before we go
        finally:
            if handlers is not None:
                self.stop.restore(handlers)
        self.resume_file.unlink(missing_ok=True)
        if self.stop.signal is not None:  # it came as the last metrics.json were written: the sweep stops here
            print(f"{STOPPED_BY[self.stop.signal]}: the sweep stopped; go on with: {self.go_on()}", flush=True)
            raise SystemExit(128 + self.stop.signal)
        return results

    def fit_and_test(self) -> list[tuple[str, object]]:
        """Train and test; a signal (handled from fit's start to the last metrics.json) stops the group resumably."""
        self.fit()
        if self.stop.signal is None:
            try:
                return self.finish()
            except Stopped:  # in the final test: the resume file of the last epoch's end holds the trained state
                pass
        self.interrupted()
        raise SystemExit(128 + self.stop.signal)

    def interrupted(self) -> None:
        self.writer.wait()
        if self.window > 0:  # at an epoch's end its checkpoints and resume file are this very state: written once
            copies = self.host_copies()
            self.save_resume(copies)
            for k, m in enumerate(self.members):
                if m.status == "running":  # a failed member keeps its last good checkpoint
                    self.writer.submit(
                        self.folders[k].save_checkpoint, LAST_CHECKPOINT, member_checkpoint(self, k, copies)
                    )
        elif self.global_step == 0:  # stopped before its first window: the resume file of its start (no member
            # has trained: no checkpoint), from which it goes on as this group, in its W&B runs
            self.save_resume(self.host_copies())
        self.writer.wait()  # every file written before the members' metrics.json say interrupted
        record_stop(self)

    def go_on(self) -> str:
        """The command that goes on with this sweep (its folder: the jobs' folders' parent)."""
        return go_on_command(self.folders[0].path.parent)

    def test_params(self) -> list[torch.Tensor] | None:
        """The weights each member is tested on: its best validation weights where its job's test_ckpt
        says best (auto: with early stopping) and a validation ran, else its final ones; None when every
        member's are final."""
        on_best = [best and m.val_ppl is not None for best, m in zip(self.tests_on_best, self.members)]
        if self.best_params is None or not any(on_best):
            return None
        params = [p.detach().clone() for p in self.params]
        for k in (k for k, best in enumerate(on_best) if best):
            for p, b in zip(params, self.best_params):
                p[k].copy_(b[k])
        return params

    def finish(self) -> list[tuple[str, object]]:
        """Test both protocols (all members at once, each on its final or best weights), write metrics.json."""
        self.stop.stage = "test"
        warn_unvalidated(self)
        tests = {}
        if self.cfg.get("test"):
            start, statuses = time.perf_counter(), [m.status for m in self.members]
            self.progress.test_started(statuses, self.cfg.data.batch_size)
            tests = self.test()
            self.progress.test_done(time.perf_counter() - start, tests["test_ppl"], statuses)
        self.writer.wait()  # the checkpoints metrics.json and a W&B run's artifact point to
        return record_results(self, tests)

    def test(self) -> dict[str, list[float]]:
        """Every member's test perplexity in both protocols (test_ppl: the paper's; test_ppl_batched); Stopped at a
        signal."""
        data, tests = self.cfg.data, {}
        params = self.test_params()
        eval_bptt = self.datamodule.eval_bptt
        for name, streams in (("test_ppl", data.test_batch_size), ("test_ppl_batched", data.batch_size)):
            windows, count = self.windows("test", streams, eval_bptt, False, self.cfg.trainer.limit_test_batches)
            tests[name] = self.evaluate(
                self.stop.windows(windows), count, params, [m.status != "failed" for m in self.members]
            )
            if self.stop.signal is not None:  # a program that evaluates member by member may have read all first
                raise Stopped()
        return tests


def train_group(
    jobs: list[Job],
    group: int,
    resume_file: Path,
    resume: bool = False,
    stop_after_windows: int | None = None,
    program: str = "auto",
    pad_hidden_to: int = 1,
    stop: StopRequest | None = None,
) -> list[tuple[str, object]]:
    """Train one group; returns each member's ("completed", best val ppl) or ("failed", error). `stop`: the
    launcher's StopRequest, installed while it trains its groups (a signal it noted before this group: the group
    stops as it starts); None: the group's own. A signal while the group is built stops it at once
    (stopped_while_built)."""
    if resume and not resume_file.exists() and (done := group_done(jobs)) is not None:
        print(f"group {group}: completed in an earlier run of this sweep", flush=True)
        return done
    stop = stop if stop is not None else StopRequest("build")
    handlers = None if stop.installed else stop.install()
    trainer = None
    try:
        stop.stage = "build"  # (GroupTrainer.run says "start" once it is built)
        if stop.signal is not None:
            raise StoppedBuilding()
        cfg = jobs[0].cfg
        apply_speed(cfg.speed, any_size=True)
        if not resume:
            for job in jobs:  # a fresh run: nothing of an earlier sweep in these folders
                (job.output_dir / "train.log").unlink(missing_ok=True)
        trainer = GroupTrainer(jobs, group, resume_file, stop_after_windows, program, pad_hidden_to, stop)
        return trainer.run(resume)
    except StoppedBuilding:  # (a second signal is only noted: StopRequest)
        if trainer is not None:
            trainer.writer.close()
        folders = trainer.folders if trainer is not None else [JobFolder(job) for job in jobs]
        cfg = jobs[0].cfg
        on_cpu = on_a_cpu(str(cfg.trainer.get("accelerator", "auto")))
        built = running_program(program, on_cpu), padded_size(cfg.model.hidden_size, pad_hidden_to)
        stopped_while_built(folders, group, stop.signal, built)
        raise SystemExit(128 + stop.signal) from None
    finally:
        stop.stage = "launch"  # (the launcher's, until its next group)
        if handlers is not None:
            stop.restore(handlers)
