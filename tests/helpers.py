"""What tests share beyond fixtures: running the console scripts, composing the real config, a tiny corpus,
reading offline W&B runs back."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import warm_start
from rnnreg import CONF_DIR

BIN = Path(sys.executable).parent

TINY = [
    "data=text",
    "data.bptt=5",
    "data.batch_size=4",
    "model=small",
    "model.hidden_size=16",
    "logger=none",
    "callbacks.progress_bar=null",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
]


# speed.triton_cell's tests: Triton is a dev dependency on Linux only, where its wheels are
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def run(script: str, *overrides: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """A console script as a user runs it: a real process (a fork of the warm-start server: warm_start.py)."""
    env = os.environ | {"HYDRA_FULL_ERROR": "0"} | (env or {})
    proc = warm_start.run([str(BIN / script), *overrides], text=True, env=env, timeout=900)
    if check and proc.returncode:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def piped(argv: list[str], reader: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`argv | reader` as a shell runs it: `argv`'s stdout a pipe whose read end only `reader` holds (a real process:
    `head -2`, `true`), `argv` a fork of the warm-start server where it can be one (warm_start.py), each in a session
    of its own. Returns `argv`'s exit status, the reader's stdout, and both one's stderr (argv's first); a process
    still running at the end (past `timeout`) is killed with its session."""
    read, write = os.pipe()
    try:
        reading = subprocess.Popen(reader, stdin=read, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # fmt: skip
    finally:
        os.close(read)  # (the reader's alone: argv's writes fail once it is gone)
    try:
        writing = warm_start.popen(argv, stdout=write, stderr=subprocess.PIPE, text=True, start_new_session=True)
    finally:
        os.close(write)  # (argv's alone: the reader sees the end of its input when argv ends)
    try:
        _, err = writing.communicate(timeout=timeout)
        out, reader_err = reading.communicate(timeout=timeout)
    finally:
        for proc in (writing, reading):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, writing.returncode, out, err + reader_err)


@contextlib.contextmanager
def started_with(umask: int | None = None, file_size: int | None = None) -> Iterator[None]:
    """Processes started inside take this umask and soft file-size limit (bytes; RLIMIT_FSIZE), as after a
    shell's `umask` and `ulimit -S -f`: this process's own for the while (a fork of the warm server carries
    both). Python ignores SIGXFSZ, so a write past the limit fails with EFBIG ("File too large")."""
    old_umask = os.umask(0o022)  # read by setting it
    os.umask(old_umask if umask is None else umask)
    old_size = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, old_size[1]))
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_size)
        os.umask(old_umask)


def speed_state(checkpoint: dict) -> dict:
    """A checkpoint's SpeedMonitor state: the words and seconds a run's words/s divides (its key names the callback
    with its settings)."""
    (state,) = [state for key, state in checkpoint["callbacks"].items() if key.startswith("SpeedMonitor")]
    return state


def counted_calls(monkeypatch, module, name: str) -> list:
    """`module.name` (a function) replaced by one that calls it and counts the call: the list of calls made."""
    calls, function = [], getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where NaN."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def strict_json(text: str):
    """`text` read as strict readers (jq, JavaScript) read JSON: a bare NaN or Infinity is an error."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def assert_diverges_in_epoch_2(corpus: Path, run_dir: Path, *overrides: str) -> str:
    """rnnreg-train on a tiny corpus whose epoch 1 trains normally and whose lr is 1e20 from epoch 2 on: it stops
    with one line and exit 2, metrics.json says failed at epoch 2, and last.ckpt holds epoch 1's finite weights.
    Returns the error line."""
    proc = run(
        "rnnreg-train",
        "experiment=paper_small",
        *TINY,
        f"data.data_dir={corpus}",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=10",  # epoch 1 needs no more to train normally
        "optim.decay=1e-20",
        "optim.decay_start=1",
        f"hydra.run.dir={run_dir}",
        *overrides,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: training loss became") and "at epoch 2, step " in line
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "at epoch 2" in metrics["error"]
    good = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
    assert good["epoch"] == 0 and all(torch.isfinite(v).all() for v in good["state_dict"].values())
    return line


def folder_contents(folder: Path, leave_out: tuple[str, ...] = ()) -> dict[str, bytes | str]:
    """Every file's bytes under `folder` (a link: where it points), but files named in `leave_out`."""
    return {
        str(p.relative_to(folder)): str(p.readlink()) if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if (p.is_symlink() or p.is_file()) and p.name not in leave_out
    }


def compose_config(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """The real composed config (as rnnreg-train sees it), writing into `output_dir`."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def perplexity_by_hand(net, ids: torch.Tensor, streams: int, window: int, state=None) -> tuple[float, tuple]:
    """exp(sum NLL / predicted tokens) of `net` over the token ids `ids` cut into `streams` contiguous columns
    (the loaders' streams), walked in windows of `window` steps with the (h, c) carried from window to window,
    starting from `state` (None: zeros); and the state after the last window. Written out here, not the task's."""
    net.eval()
    cols = ids[: ids.numel() // streams * streams].view(streams, -1).t()
    if state is None:
        zeros = torch.zeros(net.lstm.num_layers, streams, net.lstm.hidden_size, dtype=net.embedding.weight.dtype)
        state = (zeros, zeros.clone())
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, cols.size(0) - 1, window):
            y = cols[start + 1 : start + window + 1]
            logits, state = net(cols[start : start + y.size(0)], state)
            scores = logits.float().reshape(-1, logits.size(-1))
            nll += torch.nn.functional.cross_entropy(scores, y.reshape(-1), reduction="sum").item()
            tokens += y.numel()
    return math.exp(nll / tokens), state


class RunsCode:
    """Unpickling this (torch.load with weights_only=False) writes `marker`: a stand-in for any payload."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def write_corpus(
    folder: Path, vocab: int = 40, lines: tuple[int, int, int] = (200, 30, 30), seed: int = 0, unk: bool = True
) -> Path:
    """A small train/valid/test corpus with learnable structure (each word tends to follow its predecessor)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)] + (["<unk>"] if unk else [])
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("train", "valid", "test"), lines):
        out = []
        for _ in range(count):
            w = rng.randrange(vocab)
            line = []
            for _ in range(rng.randint(3, 12)):
                w = (w + 1) % vocab if rng.random() < 0.7 else rng.randrange(vocab)
                line.append(words[w])
            out.append(" ".join(line))
        if name == "train" and unk:
            out.append("<unk>")
        (folder / f"{name}.txt").write_text("\n".join(out) + "\n")
    return folder


class SignalAt(L.Callback):
    """Sends this process `signum` at the end of training window `window` of epoch `epoch` (0-based: the first),
    `times` times (Ctrl-C twice: the second aborts at once)."""

    def __init__(self, signum: int, window: int, times: int = 1, epoch: int = 0):
        self.signum, self.window, self.times, self.epoch = signum, window, times, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx + 1 == self.window:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)
                time.sleep(0.01)  # its handler runs before the next one is sent


def signal_at(signum: int, window: int, **settings: int) -> tuple[str, ...]:
    """The overrides that add SignalAt to a run (`settings`: its times, epoch)."""
    more = (f"+callbacks.signal_at.{key}={value}" for key, value in settings.items())
    return (
        "+callbacks.signal_at._target_=helpers.SignalAt",
        f"+callbacks.signal_at.signum={int(signum)}",
        f"+callbacks.signal_at.window={window}",
        *more,
    )


def ctrl_c_group(lab: Path) -> Path:
    """A config group of the user's, `stop`, in `lab` (hydra.searchpath=[file://<lab>]): +stop=at2 sends Ctrl-C after
    window 2, +stop=never never does (a recorded _target_ of the user's: the report shows no command for it)."""
    stop = lab / "stop"
    stop.mkdir(parents=True)
    for name, window in (("at2", 2), ("never", 1000)):
        (stop / f"{name}.yaml").write_text(
            f"# @package _global_\ncallbacks:\n  signal_at:\n    _target_: helpers.SignalAt\n"
            f"    signum: {int(signal.SIGINT)}\n    window: {window}\n"
        )
    return lab


def srun_env(rank: int = 0, tasks: int = 1, port: int | None = None) -> dict[str, str]:
    """What srun sets for task `rank` of a one-node job step of `tasks` tasks (what Lightning's SLURMEnvironment
    reads: to Lightning a process started with these is a SLURM task); `port`: the ranks' rendezvous."""
    env = {"SLURM_JOB_NAME": "rnnreg", "SLURM_JOB_ID": "12345", "SLURM_NNODES": "1", "SLURM_NODEID": "0"}
    env |= {"SLURM_NTASKS": str(tasks), "SLURM_NTASKS_PER_NODE": str(tasks)}
    env |= {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
    return env | ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)} if port else {})


def free_port() -> int:
    """A TCP port free on this machine: the rendezvous of DDP processes started by hand."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RaiseAtFirstWindow(L.Callback):
    """A bug inside training: raises ValueError after the first training window."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        raise ValueError("a bug in a callback, not a user error")


class SignalInTest(L.Callback):
    """Sends this process `signum` at the end of test batch `batch` of the first test dataloader."""

    def __init__(self, signum: int, batch: int = 1):
        self.signum, self.batch = signum, batch

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if dataloader_idx == 0 and batch_idx + 1 == self.batch:
            os.kill(os.getpid(), self.signum)


class SignalInValidation(L.Callback):
    """Sends this process `signum` at the end of validation batch `batch` of epoch `epoch` (0-based); with
    `sanity_check`, of Lightning's sanity check instead (the validation batches it runs before training); with
    `rank`, in that DDP rank's process only."""

    def __init__(
        self, signum: int, batch: int = 1, epoch: int = 0, sanity_check: bool = False, rank: int | None = None
    ):
        self.signum, self.batch, self.epoch, self.sanity_check, self.rank = signum, batch, epoch, sanity_check, rank

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        here = trainer.sanity_checking == self.sanity_check and self.rank in (None, trainer.global_rank)
        if here and trainer.current_epoch == self.epoch and batch_idx + 1 == self.batch:
            os.kill(os.getpid(), self.signum)


class SignalAsFitStarts(L.Callback):
    """Sends this process `signum` as the fit starts: at on_fit_start (`when`=fit_start: a resumed checkpoint's
    weights are restored, its optimiser and loops not yet), or in the fit's setup (`when`=setup: before the
    optimiser is made and a resumed checkpoint restored)."""

    def __init__(self, signum: int, when: str = "fit_start"):
        self.signum, self.when = signum, when

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.when == "setup" and stage == "fit":
            os.kill(os.getpid(), self.signum)

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.when == "fit_start":
            os.kill(os.getpid(), self.signum)


class SignalWhileBuilding(L.Callback):
    """Sends this process `signum` when built, i.e. while the run is still being set up (before training)."""

    def __init__(self, signum: int):
        os.kill(os.getpid(), signum)


class SlowWindows(L.Callback):
    """Each training window takes `seconds` longer (a sleep as it starts: a bigger model's window); the first touches
    the file `started`."""

    def __init__(self, seconds: float, started: str):
        self.seconds, self.started = seconds, Path(started)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started.touch()
        time.sleep(self.seconds)


class PauseAtEpoch(L.Callback):
    """At the start of epoch `epoch` (0-based): create the file `paused`, then wait until the file `go` exists."""

    def __init__(self, paused: str, go: str, epoch: int = 1, timeout: float = 300):
        self.paused, self.go, self.epoch, self.timeout = Path(paused), Path(go), epoch, timeout

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.paused.touch()
            deadline = time.time() + self.timeout
            while not self.go.exists() and time.time() < deadline:
                time.sleep(0.05)


class FileSizeLimitFromEpoch(L.Callback):
    """From the start of epoch `epoch` (0-based), no file of this process may grow beyond `limit` bytes
    (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write past it fails with EFBIG: "File too large")."""

    def __init__(self, limit: int, epoch: int = 1):
        self.limit, self.epoch = limit, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


class ReadOnlyFromEpoch(L.Callback):
    """From the start of epoch `epoch` (0-based) `folder` takes no new files: `chattr +i` (immutable, refused
    even to root, who ignores permission bits). The test undoes it."""

    def __init__(self, folder: str, epoch: int = 1):
        self.folder, self.epoch = folder, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            subprocess.run(["chattr", "+i", self.folder], check=True)


class FillDiskFromEpoch(L.Callback):
    """From the start of epoch `epoch` (0-based) the filesystem holding `filler` is full: one file takes all
    the space left (the test mounts a small tmpfs there)."""

    def __init__(self, filler: str, epoch: int = 1):
        self.filler, self.epoch = filler, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with open(self.filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                except OSError:  # ENOSPC: full
                    pass


# -- offline W&B runs, read back ------------------------------------------------------------------
def wandb_log_records(raw: bytes):
    """Payloads of a .wandb transaction log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
    records (crc32, little-endian u16 length, type 1 full / 2 first / 3 middle / 4 last)."""
    assert raw[:4] == b":W&B", "not a W&B transaction log"
    pos, block, pending = 7, 32 * 1024, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        payload = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            yield pending
            pending = b""


def read_wandb_run(run_dir: Path) -> dict:
    """Config, metric history, summary, exit status, the run's id, name, group, job type, project, entity, tags and
    start, and its artifacts, read back from the run's own .wandb file with wandb's reader (offline runs keep them
    there until `wandb sync`)."""
    from wandb.proto import wandb_internal_pb2

    def key(item) -> str:
        return item.key or ".".join(item.nested_key)

    run = {"config": {}, "history": [], "summary": {}, "exit_code": None, "artifacts": []}
    for data in wandb_log_records(next(run_dir.glob("*.wandb")).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run["history"].append({key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "config":
            run["config"] |= {key(item): json.loads(item.value_json) for item in record.config.update}
        elif kind == "summary":
            run["summary"] |= {key(item): json.loads(item.value_json) for item in record.summary.update}
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
        elif kind == "run":
            info = record.run
            run |= {"id": info.run_id, "name": info.display_name, "group": info.run_group, "job_type": info.job_type}
            run |= {"project": info.project, "entity": info.entity}
            run["start"] = info.start_time.ToNanoseconds()
            run["tags"] = list(info.tags)
        elif kind == "artifact":
            files = [(entry.local_path, entry.size) for entry in record.artifact.manifest.contents]
            run["artifacts"].append(
                {"name": record.artifact.name, "type": record.artifact.type, "aliases": list(record.artifact.aliases)}
                | {"files": files}
            )
    return run


def named_sweep_group(folder: Path) -> str:
    """The W&B group (after `<experiment>/`) of a sweep in `folder`, a folder not named by the default date: its name
    and the first 6 hex digits of the SHA-256 of its real path."""
    return f"{folder.name}-{hashlib.sha256(os.fsencode(folder.resolve())).hexdigest()[:6]}"


def wandb_run_parts(folder: Path) -> list[dict]:
    """The offline W&B run folders under a run's folder, read back, in the order they started (a resumed run
    adds one)."""
    return sorted((read_wandb_run(p) for p in (folder / "wandb").glob("offline-run-*")), key=lambda run: run["start"])


def wandb_runs(sweep: Path) -> dict[str, dict]:
    """Each job's one offline W&B run, read back, by job number; no two jobs log into one run (one id)."""
    runs = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        found = list((job / "wandb").glob("offline-run-*"))
        assert len(found) == 1, job
        runs[job.name] = read_wandb_run(found[0])
    ids = [run["id"] for run in runs.values()]
    assert len(set(ids)) == len(ids), ids
    return runs


# a real SIGNUM (SIGINT: where a user's Ctrl-C lands in its first seconds), sent by the process to itself as it
# imports MODULE
SIGNAL_AT_IMPORT = """
import importlib.abc, os, sys
class SignalAtImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "{module}":
            os.kill(os.getpid(), {signum})
        return None
sys.meta_path.insert(0, SignalAtImport())
"""
# ... and a library that logs at INFO as the process ends (torch's FakeTensor cache stats once did, after the line)
INFO_AT_EXIT = """
import atexit, logging
atexit.register(lambda: logging.getLogger("a_library").info("its cache stats"))
"""


def run_signal_at_import(
    signum: int, module: str, hook: Path, script: str, *overrides: str, info_at_exit: bool = False
) -> subprocess.CompletedProcess:
    """A console script in a process of its own (not a fork of the warm-start server, which has imported it all),
    sent `signum` (signal.SIGINT: Ctrl-C) as it imports `module` (a sitecustomize in folder `hook`, first on its
    PYTHONPATH); `info_at_exit`: with a logger that says something at INFO as the process ends."""
    hooks = SIGNAL_AT_IMPORT.format(module=module, signum=int(signum)) + INFO_AT_EXIT * info_at_exit
    return run_with_sitecustomize(hooks, hook, script, *overrides)


def run_with_sitecustomize(hooks: str, hook: Path, script: str, *overrides: str) -> subprocess.CompletedProcess:
    """A console script in a process of its own (not a fork of the warm-start server, which has imported it all)
    that runs `hooks` as it starts (a sitecustomize in folder `hook`, first on its PYTHONPATH)."""
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(hooks)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(BIN / script), *overrides], env=env, capture_output=True, text=True, timeout=600)
