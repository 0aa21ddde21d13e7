"""Train one group of a stacked sweep: K jobs of one shape as one StackedLanguageModel, in a plain loop.

Per member, exactly what its job run alone computes (rnnreg.train with model.lstm=step): the paper's
objective, its own lr schedule, clip and weight decay, perplexities, best/last checkpoints, early stopping
and divergence guard, the test in both protocols; written into the job's folder as a separate run would.
A member that diverges or stops early stops changing; the others go on. SIGTERM / Ctrl-C stop the group
at a window boundary with a resume file from which `hydra.launcher.resume=true` continues exactly.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from rnnreg.errors import CheckpointError, ConfigError, OutputError, TrainingDiverged
from rnnreg.io import replace_atomically, write_json_atomic
from rnnreg.optim import paper_lr_factor
from rnnreg.runtime import instantiate, keep_freed_memory
from rnnreg.signals import MAX_NLL
from rnnreg.stacked import MemberSpec, StackedLanguageModel, member_nll, stacked_clip_and_sgd_
from rnnreg.stacked_launcher import Job


def limit_batches(count: int, limit) -> int:
    """Lightning's limit_*_batches: None all, a float a fraction, an int a count."""
    if limit is None:
        return count
    if isinstance(limit, float):
        return int(count * limit)
    return min(count, int(limit))


def member_spec(cfg) -> MemberSpec:
    dropout = cfg.dropout
    return MemberSpec(
        seed=cfg.seed,
        init_scale=cfg.model.init_scale,
        dropout_input=dropout.input,
        dropout_between=dropout.between,
        dropout_output=dropout.output,
        dropout_recurrent=dropout.get("recurrent", 0.0),
        variational=dropout.get("variational", False),
        weight_drop=dropout.get("weight_drop", 0.0),
        embedding_dropout=dropout.get("embedding", 0.0),
    )


@dataclass
class Member:
    """One member's bookkeeping (plain data: it goes into the group's resume file as it is)."""

    status: str = "running"  # running | stopped (early stopping) | failed | completed
    error: str | None = None
    epochs: int = 0
    val_ppl: float | None = None
    best_val: float = math.inf
    es_best: float = math.inf
    es_wait: int = 0
    words: int = 0
    rows: list = field(default_factory=list)  # csv/metrics.csv rows, as Lightning's CSVLogger writes them


class GroupTrainer:
    def __init__(self, jobs: list[Job], group: int, resume_file: Path, stop_after_windows: int | None = None):
        self.jobs, self.group, self.resume_file = jobs, group, resume_file
        self.stop_after_windows = stop_after_windows
        cfg = self.cfg = jobs[0].cfg  # what every member shares
        for job in jobs:
            if job.cfg.optim.lr <= 0:
                raise ConfigError(f"optim.lr={job.cfg.optim.lr} must be positive (the paper uses 1.0) (job {job.idx})")
        self.datamodule = instantiate(cfg.data)
        self.vocab = self.datamodule.load().itos
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if cuda else "cpu")
        self.model = StackedLanguageModel(
            len(self.vocab), cfg.model.hidden_size, cfg.model.num_layers, [member_spec(j.cfg) for j in jobs]
        ).to(self.device)
        self.params = list(self.model.parameters())
        self.names = [name for name, _ in self.model.named_parameters()]
        k = len(jobs)

        def vec(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=self.device)

        self.clip = vec([j.cfg.trainer.gradient_clip_val for j in jobs])
        decays = [j.cfg.optim.get("weight_decay", 0.0) for j in jobs]
        self.weight_decay = vec(decays) if any(decays) else None
        self.active = torch.ones(k, dtype=torch.bool, device=self.device)
        self.members = [Member() for _ in jobs]
        self.best_params = [p.detach().clone() for p in self.params]  # each member's best validation weights
        self.epoch, self.window, self.global_step = 0, 0, 0
        self.state = None
        self.nll_sum = torch.zeros(k, dtype=torch.float64, device=self.device)
        self.tokens = 0
        self.train_seconds = self.fit_seconds = 0.0
        self.last_epoch_words_per_second = 0.0
        self.stop_signal: int | None = None
        self.log_every = max(1, int(cfg.trainer.get("log_every_n_steps", 50)))

    # -- windows --------------------------------------------------------------------------------------
    def windows(self, split: str, streams: int, bptt: int, drop_last: bool, limit):
        from rnnreg.data import BPTTWindows

        windows = BPTTWindows(self.datamodule.streams(split, streams), bptt, drop_last)
        return windows, limit_batches(len(windows), limit)

    def lrs(self, epoch: int) -> list[float]:
        """Each member's lr in 0-based `epoch` (the LambdaLR schedule of a single run)."""
        return [
            j.cfg.optim.lr * paper_lr_factor(epoch + 1, j.cfg.optim.decay, j.cfg.optim.decay_start) for j in self.jobs
        ]

    # -- training -------------------------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.cfg
        data = cfg.data
        train, n_train = self.windows("train", data.batch_size, data.bptt, True, cfg.trainer.limit_train_batches)
        eval_bptt = data.get("eval_bptt") or data.bptt
        val, n_val = self.windows("valid", data.batch_size, eval_bptt, False, cfg.trainer.limit_val_batches)
        if n_train < 1 or n_val < 1:
            raise ConfigError("trainer.limit_train_batches / limit_val_batches leave no window: raise them")
        fit_start = time.perf_counter() - self.fit_seconds
        while self.epoch < cfg.trainer.max_epochs and bool(self.active.any()):
            epoch, lrs = self.epoch, self.lrs(self.epoch)
            lr = torch.tensor(lrs, dtype=torch.float32, device=self.device)
            if self.window == 0:
                self.state = None
                self.nll_sum.zero_()
                self.tokens = 0
                for k, m in enumerate(self.members):
                    if m.status == "running":  # LearningRateMonitor's row at the epoch's start
                        m.rows.append({"epoch": "", "step": self.global_step, "train/lr": lrs[k]})
            start = time.perf_counter()
            self.model.train()
            while self.window < n_train:
                x, y = (t.to(self.device) for t in train[self.window])
                logits, self.state = self.model(x, self.state)
                nll = member_nll(logits, y)
                (nll * x.size(0)).sum().backward()
                loss = nll.detach()
                bad = (~torch.isfinite(loss) | (loss > MAX_NLL)) & self.active
                if bool(bad.any()):  # such a member stops before this update: its weights stay the last finite
                    self.diverged(bad, loss)
                stacked_clip_and_sgd_(
                    self.params, [p.grad for p in self.params], lr, self.clip, self.weight_decay, self.active
                )
                for p in self.params:
                    p.grad = None
                self.nll_sum += loss.double() * y.numel()
                self.tokens += y.numel()
                self.window += 1
                self.global_step += 1
                if self.global_step % self.log_every == 0:
                    values = loss.tolist()
                    for k, m in enumerate(self.members):
                        if m.status == "running":
                            m.rows.append({"epoch": epoch, "step": self.global_step - 1, "train/loss": values[k]})
                if self.stop_after_windows and self.global_step == self.stop_after_windows:
                    os.kill(os.getpid(), signal.SIGTERM)  # tests: a real signal, handled as a scheduler's
                if self.stop_signal is not None and self.window < n_train:
                    self.seconds(start)
                    self.fit_seconds = time.perf_counter() - fit_start
                    return
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            epoch_seconds = self.seconds(start)
            val_ppl = self.evaluate(val, n_val, data.batch_size)
            self.end_epoch(val_ppl, epoch_seconds)
            self.fit_seconds = time.perf_counter() - fit_start
            self.save_resume()
            if self.stop_signal is not None:
                return
        self.fit_seconds = time.perf_counter() - fit_start

    def seconds(self, start: float) -> float:
        elapsed = time.perf_counter() - start
        self.train_seconds += elapsed
        return elapsed

    def diverged(self, bad: torch.Tensor, loss: torch.Tensor) -> None:
        for k in bad.nonzero().flatten().tolist():
            m, job = self.members[k], self.jobs[k]
            last = job.output_dir / "checkpoints" / "last.ckpt"
            good = f"the last good checkpoint is {last}" if last.exists() else "no epoch completed, no checkpoint"
            m.status, m.error = (
                "failed",
                (
                    f"training loss became {float(loss[k])} at epoch {self.epoch + 1}, step {self.window + 1} "
                    f"(global step {self.global_step}): lower optim.lr or trainer.gradient_clip_val; {good}"
                ),
            )
            self.log(k, m.error)
        self.active &= ~bad

    @torch.no_grad()
    def evaluate(self, windows, count: int, streams: int, params: list[torch.Tensor] | None = None) -> list[float]:
        """Every member's perplexity over `count` windows, the state carried from zeros."""
        saved = None
        if params is not None:
            saved = [p.detach().clone() for p in self.params]
            for p, q in zip(self.params, params):
                p.copy_(q)
        self.model.eval()
        total = torch.zeros(self.model.num_members, dtype=torch.float64, device=self.device)
        tokens, state = 0, None
        for i in range(count):
            x, y = (t.to(self.device) for t in windows[i])
            logits, state = self.model(x, state)
            total += member_nll(logits, y).double() * y.numel()
            tokens += y.numel()
        self.model.train()
        if saved is not None:
            for p, q in zip(self.params, saved):
                p.copy_(q)
        return (total / tokens).exp().tolist()

    def end_epoch(self, val_ppl: list[float], epoch_seconds: float) -> None:
        train_ppl = (self.nll_sum / max(self.tokens, 1)).exp().tolist()
        step = self.global_step - 1
        words = self.tokens
        self.last_epoch_words_per_second = words / epoch_seconds if epoch_seconds > 0 else 0.0
        for k, (m, job) in enumerate(zip(self.members, self.jobs)):
            if m.status != "running":
                continue
            m.epochs, m.val_ppl, m.words = self.epoch + 1, val_ppl[k], m.words + words
            m.rows.append({"epoch": self.epoch, "step": step, "val/ppl": val_ppl[k]})
            m.rows.append(
                {
                    "epoch": self.epoch,
                    "step": step,
                    "train/epoch_seconds": epoch_seconds,
                    "train/ppl": train_ppl[k],
                    "train/words_per_sec": self.last_epoch_words_per_second,
                }
            )
            self.log(k, f"epoch {self.epoch + 1}: train ppl {train_ppl[k]:.2f}, val ppl {val_ppl[k]:.2f}")
            improved = val_ppl[k] < m.best_val  # ModelCheckpoint(mode=min): strictly better
            if improved:
                m.best_val = val_ppl[k]
                for p, b in zip(self.params, self.best_params):
                    b[k].copy_(p[k])
                self.save_member(k, "best.ckpt")
            self.save_member(k, "last.ckpt", link_to="best.ckpt" if improved else None)
            es = job.cfg.get("callbacks", {}).get("early_stopping")
            if es and es.get("_target_"):  # Lightning's EarlyStopping(monitor=val/ppl, mode=min)
                if not math.isfinite(val_ppl[k]):
                    m.status = "stopped"
                elif val_ppl[k] < m.es_best - abs(es.get("min_delta", 0.0)):
                    m.es_best, m.es_wait = val_ppl[k], 0
                else:
                    m.es_wait += 1
                    if m.es_wait >= es.get("patience", 3):
                        m.status = "stopped"
                if m.status == "stopped":
                    self.log(k, f"early stopping after epoch {self.epoch + 1}: best val ppl {m.best_val:.2f}")
                    self.active[k] = False
            self.write_csv(k)
        self.epoch += 1
        self.window = 0
        self.state = None

    # -- outputs --------------------------------------------------------------------------------------
    def log(self, k: int, message: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        with open(self.jobs[k].output_dir / "train.log", "a") as f:
            f.write(f"[{stamp}][rnnreg][INFO] - {message}\n")

    def write_csv(self, k: int) -> None:
        rows = self.members[k].rows
        if "csv" not in (self.jobs[k].cfg.get("logger") or {}):
            return
        keys = sorted({key for row in rows for key in row} - {"epoch", "step"})

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, ["epoch", "step", *keys], restval="")
                writer.writeheader()
                writer.writerows(rows)

        replace_atomically(self.jobs[k].output_dir / "csv" / "metrics.csv", write)

    def checkpoint(self, k: int, params: list[torch.Tensor] | None = None) -> dict:
        """Member k as an ordinary single-run checkpoint (rnnreg.task.load_task: rnnreg-eval, rnnreg-generate)."""
        cfg = self.jobs[k].cfg
        params = self.params if params is None else params
        state = {
            "net." + self.model.single_names[name]: p[k].detach().cpu().clone() for name, p in zip(self.names, params)
        }
        plain = OmegaConf.to_container(cfg, resolve=True)
        return {
            "state_dict": state,
            "hyper_parameters": {
                "vocab_size": len(self.vocab),
                "model": plain["model"],
                "dropout": plain["dropout"],
                "optim": plain["optim"] | {"clip": cfg.trainer.gradient_clip_val},
                "speed": plain["speed"],
            },
            "vocab": self.vocab,
            "epoch": self.members[k].epochs,
            "global_step": self.global_step,
            "pytorch-lightning_version": L.__version__,
            "stacked": {"group": self.group, "member": k, "members": len(self.jobs)},
        }

    def save_member(self, k: int, name: str, link_to: str | None = None) -> None:
        folder = self.jobs[k].output_dir / "checkpoints"
        if link_to is not None:  # the same state: a hard link, as LastCheckpoint does

            def hard_link(tmp: Path) -> None:
                tmp.unlink(missing_ok=True)
                os.link(folder / link_to, tmp)

            try:
                return replace_atomically(folder / name, hard_link)
            except OutputError:
                pass
        checkpoint = self.checkpoint(k)
        replace_atomically(folder / name, lambda tmp: torch.save(checkpoint, tmp))

    # -- exact resume ---------------------------------------------------------------------------------
    def fingerprint(self) -> list:
        return [self.jobs[0].key, [j.overrides for j in self.jobs]]

    def save_resume(self) -> None:
        state = {
            "fingerprint": self.fingerprint(),
            "params": {n: p.detach().cpu() for n, p in zip(self.names, self.params)},
            "best_params": [b.cpu() for b in self.best_params],
            "generators": [g.cpu() for g in self.model.generator_states()],
            "rng": torch.get_rng_state(),
            "active": self.active.cpu(),
            "members": [asdict(m) for m in self.members],
            "epoch": self.epoch,
            "window": self.window,
            "global_step": self.global_step,
            "state": None if self.state is None else tuple(t.cpu() for t in self.state),
            "nll_sum": self.nll_sum.cpu(),
            "tokens": self.tokens,
            "train_seconds": self.train_seconds,
            "fit_seconds": self.fit_seconds,
        }
        replace_atomically(self.resume_file, lambda tmp: torch.save(state, tmp))

    def load_resume(self) -> None:
        try:
            state = torch.load(self.resume_file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{self.resume_file} is not a readable resume file ({err})") from None
        if state["fingerprint"] != self.fingerprint():
            raise ConfigError(
                f"{self.resume_file} was written by another sweep (other jobs or settings in group {self.group}): "
                f"resume with the same command and hydra.sweep.dir, or start a new sweep"
            )
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                p.copy_(state["params"][name])
            for b, saved in zip(self.best_params, state["best_params"]):
                b.copy_(saved)
        self.model.set_generator_states(state["generators"])
        torch.set_rng_state(state["rng"])
        self.active = state["active"].to(self.device)
        self.members = [Member(**m) for m in state["members"]]
        self.epoch, self.window, self.global_step = state["epoch"], state["window"], state["global_step"]
        self.state = None if state["state"] is None else tuple(t.to(self.device) for t in state["state"])
        self.nll_sum = state["nll_sum"].to(self.device)
        self.tokens = state["tokens"]
        self.train_seconds, self.fit_seconds = state["train_seconds"], state["fit_seconds"]

    # -- the group's run ------------------------------------------------------------------------------
    def run(self, resume: bool) -> list[tuple[str, object]]:
        if resume and self.resume_file.exists():
            self.load_resume()
            for k in range(len(self.jobs)):
                self.log(k, f"resuming the stacked group {self.group} at epoch {self.epoch + 1}, window {self.window}")
        else:
            per_member = sum(p[0].numel() for p in self.params)
            for k, job in enumerate(self.jobs):
                self.log(
                    k,
                    f"{job.cfg.experiment_name}: {per_member:,} parameters, vocabulary {len(self.vocab)} "
                    f"(stacked group {self.group}, member {k} of {len(self.jobs)})",
                )
        handlers = self.install_handlers()
        try:
            self.fit()
        finally:
            self.restore_handlers(handlers)
        if self.stop_signal is not None:
            self.interrupted()
            raise SystemExit(128 + self.stop_signal)
        results = self.finish()
        self.resume_file.unlink(missing_ok=True)
        return results

    def install_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum, frame) -> None:
            self.stop_signal = signum
            signal.signal(signal.SIGINT, handlers[signal.SIGINT])  # a second Ctrl-C interrupts at once
            print(f"\n{signal.Signals(signum).name}: stopping the stacked group after this window", flush=True)

        handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        return handlers

    @staticmethod
    def restore_handlers(handlers: dict) -> None:
        for s, h in handlers.items():
            signal.signal(s, h)

    def interrupted(self) -> None:
        self.save_resume()
        reason = signal.Signals(self.stop_signal).name
        for k, (m, job) in enumerate(zip(self.members, self.jobs)):
            if m.status == "running":  # a failed member keeps its last good checkpoint
                self.save_member(k, "last.ckpt")
            self.write_csv(k)
            self.log(k, f"{reason}: stopped at epoch {self.epoch + 1}, window {self.window}")
            write_json_atomic(
                job.output_dir / "metrics.json",
                {
                    "status": "interrupted" if m.status == "running" else m.status,
                    "error": reason if m.status == "running" else m.error,
                    "epochs": m.epochs,
                    "resume": f"rnnreg-train -m ... hydra/launcher=stacked hydra.launcher.resume=true "
                    f"hydra.sweep.dir={job.output_dir.parent}",
                    "stacked": {"group": self.group, "members": len(self.jobs), "member": k},
                },
            )

    def finish(self) -> list[tuple[str, object]]:
        """Test both protocols (all members at once, each on its final or best weights), write metrics.json."""
        cfg = self.cfg
        tests = {}
        if cfg.get("test"):
            use_best = []
            for job in self.jobs:
                choice = job.cfg.get("test_ckpt", "last")
                if choice == "auto":
                    es = (job.cfg.get("callbacks") or {}).get("early_stopping")
                    choice = "best" if es and es.get("_target_") else "last"
                use_best.append(choice == "best")
            params = None
            if any(use_best):
                params = [p.detach().clone() for p in self.params]
                for k, best in enumerate(use_best):
                    if best:
                        for p, b in zip(params, self.best_params):
                            p[k].copy_(b[k])
            data = cfg.data
            eval_bptt = data.get("eval_bptt") or data.bptt
            limit = cfg.trainer.limit_test_batches
            for name, streams in (("test_ppl", data.get("test_batch_size", 1)), ("test_ppl_batched", data.batch_size)):
                windows, count = self.windows("test", streams, eval_bptt, False, limit)
                tests[name] = self.evaluate(windows, count, streams, params)
        results = []
        per_member = sum(p[0].numel() for p in self.params)
        for k, (m, job) in enumerate(zip(self.members, self.jobs)):
            stacked = {"group": self.group, "members": len(self.jobs), "member": k}
            if m.status == "failed":
                last = job.output_dir / "checkpoints" / "last.ckpt"
                metrics = {
                    "status": "failed",
                    "error": m.error,
                    "epochs": m.epochs,
                    "resume": f"rnnreg-train ... ckpt_path={last}" if last.exists() else "no checkpoint was written",
                    "stacked": stacked,
                }
                results.append(("failed", TrainingDiverged(m.error)))
            else:
                m.status = "completed"
                metrics = {"val_ppl": m.val_ppl}
                metrics |= {name: values[k] for name, values in tests.items()}
                metrics |= {
                    "best_val_ppl": m.best_val,
                    "epochs": m.epochs,
                    "train_seconds": round(self.fit_seconds, 2),
                    # the member's words per second of the group's time (the group's words/s over K)
                    "words_per_second": round(m.words / self.train_seconds, 1) if self.train_seconds else 0.0,
                    "words_per_second_last_epoch": round(self.last_epoch_words_per_second, 1),
                    "params": per_member,
                    "experiment": job.cfg.experiment_name,
                    "status": "completed",
                    "stacked": stacked,
                }
                results.append(("completed", m.best_val))
                if tests:
                    m.rows.append(
                        {
                            "epoch": m.epochs,
                            "step": self.global_step,
                            "test/ppl": tests["test_ppl"][k],
                            "test/ppl_batched": tests["test_ppl_batched"][k],
                        }
                    )
                    self.write_csv(k)
            write_json_atomic(job.output_dir / "metrics.json", metrics)
            self.log(k, f"metrics: {metrics}")
        return results


def group_done(jobs: list[Job]) -> list[tuple[str, object]] | None:
    """A group whose every member finished in an earlier run of the sweep (resume): their results."""
    import json

    results = []
    for job in jobs:
        path = job.output_dir / "metrics.json"
        metrics = json.loads(path.read_text()) if path.exists() else {}
        if metrics.get("status") == "completed":
            results.append(("completed", metrics["best_val_ppl"]))
        elif metrics.get("status") == "failed":
            results.append(("failed", TrainingDiverged(metrics.get("error", "failed"))))
        else:
            return None
    return results


def train_group(
    jobs: list[Job], group: int, resume_file: Path, resume: bool = False, stop_after_windows: int | None = None
) -> list[tuple[str, object]]:
    """Train one group; returns each member's ("completed", best val ppl) or ("failed", error)."""
    if resume and not resume_file.exists() and (done := group_done(jobs)) is not None:
        print(f"group {group}: completed in an earlier run of this sweep", flush=True)
        return done
    cfg = jobs[0].cfg
    if cfg.speed.get("keep_freed_memory"):
        keep_freed_memory()
    if cfg.speed.get("tf32"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if not resume:
        for job in jobs:  # a fresh run: nothing of an earlier sweep in these folders
            (job.output_dir / "train.log").unlink(missing_ok=True)
    trainer = GroupTrainer(jobs, group, resume_file, stop_after_windows if not resume else None)
    return trainer.run(resume)
