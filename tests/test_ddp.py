"""DDP on CPU (gloo), two real processes: the same training as one process over the same global batch, and a
SIGTERM (or SLURM's SIGUSR1) stops every process after the same window with a checkpoint that resumes exactly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

import warm_start
from helpers import BIN, TINY, assert_diverges_in_epoch_2, free_port, run, speed_state, srun_env, write_corpus
from rnnreg.preemption import Preemption
from rnnreg.report_runs import history
from rnnreg.run_record import STOPPED_BY
from rnnreg.train import train

COMMON = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=30",
    "dropout=none",
    "logger=csv",
    "trainer.log_every_n_steps=1",
)


class SaveAt(L.Callback):
    """Saves a mid-epoch checkpoint `path` on every rank just before window `window` + 1 of the first epoch."""

    def __init__(self, path: str, window: int):
        self.path, self.window = path, window

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.window:
            trainer.save_checkpoint(self.path)


class HoldRankZero(L.Callback):
    """Each rank writes its pid to `folder`/rank<r> when training starts; after window `window` of the first
    epoch rank 0 writes `folder`/held and waits for `folder`/go, while rank 1 goes on into its next
    collective: a signal then finds the ranks in different places, as a scheduler's does."""

    def __init__(self, folder: str, window: int, timeout: float = 120):
        self.folder, self.window, self.timeout = Path(folder), window, timeout

    def on_train_start(self, trainer, pl_module) -> None:
        (self.folder / f"rank{trainer.global_rank}").write_text(str(os.getpid()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == 0 and trainer.current_epoch == 0 and batch_idx + 1 == self.window:
            (self.folder / "held").touch()
            deadline = time.monotonic() + self.timeout
            while not (self.folder / "go").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.folder}/go never came")
                time.sleep(0.05)


class MaskRecorder(L.Callback):
    """Each rank writes the dropout masks (kept or not) its first `windows` training windows drew to
    `folder`/masks<rank>.json (torch.nn.functional.dropout: the fused LSTM's input and output sites)."""

    def __init__(self, folder: str, windows: int = 4):
        self.folder, self.windows, self.masks = Path(folder), windows, []

    def on_train_start(self, trainer, pl_module) -> None:
        dropout, recorder = torch.nn.functional.dropout, self

        def recording(x, p=0.5, training=True, inplace=False):
            out = dropout(x, p, training, inplace)
            if training and p and len(recorder.masks) < 2 * recorder.windows:
                recorder.masks.append((out != 0).flatten().tolist())
            return out

        torch.nn.functional.dropout = recording  # this process only: its own training run

    def on_train_end(self, trainer, pl_module) -> None:
        (self.folder / f"masks{trainer.global_rank}.json").write_text(json.dumps(self.masks))


class RankRecorder(L.Callback):
    """Each rank writes `folder`/rank<r>.json when training ends: its process, the world it is a rank of, the
    torch threads it trains with and the address its ranks met at."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_end(self, trainer, pl_module) -> None:
        said = {"pid": os.getpid(), "world_size": trainer.world_size, "threads": torch.get_num_threads()}
        said["master_addr"] = os.environ.get("MASTER_ADDR")
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(said))


# a sitecustomize: a submitit task other than the first notes each file under a .hydra/ it opens to write
NOTE_HYDRA_WRITES = """
import os, sys
from pathlib import Path
if os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0") != "0":
    def note(event, args):
        if event == "open" and "/.hydra/" in str(args[0]) and set(args[1] or "") & set("wax+"):
            with open(Path(__file__).with_name("hydra_writes"), "a") as notes:
                notes.write(f"{args[0]}\\n")
    sys.addaudithook(note)
"""


def ddp_args(corpus: Path) -> list[str]:
    return ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", *COMMON, "trainer=ddp", "trainer.devices=2"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> SimpleNamespace:
    """Two DDP processes (gloo) on the tiny corpus, which also save a checkpoint after window 7 (a callback:
    the run goes on unchanged); the tests below read this one run."""
    root = tmp_path_factory.mktemp("ddp")
    corpus, whole, mid = write_corpus(root / "corpus"), root / "whole", root / "mid.ckpt"
    proc = run(
        "rnnreg-train",
        *ddp_args(corpus),
        "+callbacks.save_at._target_=test_ddp.SaveAt",
        f"+callbacks.save_at.path={mid}",
        "+callbacks.save_at.window=7",
        f"hydra.run.dir={whole}",
    )
    return SimpleNamespace(corpus=corpus, whole=whole, mid=mid, stdout=proc.stdout, stderr=proc.stderr)


@pytest.mark.slow
def test_a_ddp_run_says_its_lines_once(ddp_run):
    """The run's own lines (its size, its metrics) come once, from rank 0 (before: every process said them)."""
    ours = [line.split(" - ", 1)[1] for line in ddp_run.stdout.splitlines() if "][rnnreg][" in line]
    assert [line for line in ours if line.startswith("metrics: ")] == [
        f"metrics: {json.loads((ddp_run.whole / 'metrics.json').read_text())}"
    ]
    assert sum(" parameters, vocabulary " in line for line in ours) == 1
    # rank 0's speed and gradient norm, logged as they are (before: three sync_dist warnings at every epoch)
    assert "sync_dist=True" not in ddp_run.stdout + ddp_run.stderr
    # the two processes share the cores (Lightning's OMP_NUM_THREADS, where make test's workers set none)
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, len(os.sched_getaffinity(0)) // 2))
    said = f"{threads} torch thread{'s' if threads > 1 else ''} in each of the 2 DDP processes, from "
    said += f"OMP_NUM_THREADS={threads} (DDP on a CPU: "
    assert said + "Lightning sets it to cores // trainer.devices where it was not set)" in ddp_run.stdout


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(ddp_run, tiny_cfg, tmp_path):
    ddp_dir = ddp_run.whole
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    single = train(tiny_cfg(*COMMON, run="single"))  # the same corpus (write_corpus is seeded), one process
    for key in ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
    ddp_losses, single_losses = history(ddp_dir, "train/loss"), history(tmp_path / "single", "train/loss")
    assert len(ddp_losses) == len(single_losses) == 60
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)  # every step, not just the end
    a = torch.load(ddp_dir / "checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "single/checkpoints/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 60  # every window of the 4 streams, split 2 + 2
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][name], rtol=1e-4, atol=1e-5)
    # the words trained (words/s divides them): every rank's streams, as one process trains them
    words_a, words_b = (speed_state(c) for c in (a, b))
    assert words_a["train_words"] == words_b["train_words"] == 60 * 5 * 4


@pytest.mark.slow
def test_ddp_mid_epoch_checkpoint_resumes_exactly(ddp_run, tmp_path):
    """A checkpoint taken after window 7 by 2 DDP processes gathers the carried state of all 4 streams from
    both ranks; 2 processes resumed from it = the 2 processes that went on (per-step losses, weights).
    (The checkpoint is saved by a callback; the SIGTERM tests below stop the same run at the same window.)"""
    whole, resumed, mid = ddp_run.whole, tmp_path / "resumed", ddp_run.mid
    carry = torch.load(mid, weights_only=False)["train_carry"]
    assert carry["state"][0].shape == (2, 4, 16) and carry["tokens"] == 7 * 5 * 4  # both ranks' streams and sums
    run("rnnreg-train", *ddp_args(ddp_run.corpus), f"ckpt_path={mid}", f"hydra.run.dir={resumed}")
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, resumed))
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
    assert history(resumed, "train/loss") == pytest.approx(history(whole, "train/loss")[7:], rel=1e-6)
    # the resumed epoch's train/ppl: the carried sums counted once (rank 0's), not once per rank
    assert history(resumed, "train/ppl") == pytest.approx(history(whole, "train/ppl"), rel=1e-6)
    a, b = (torch.load(d / "checkpoints/last.ckpt", weights_only=False) for d in (whole, resumed))
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_ddp_evaluation_logs_and_writes_its_metrics_once(ddp_run, tmp_path):
    """rnnreg-eval trainer=ddp says its batch-size warning and its metrics once, as one process does (before: every
    process said both and wrote metrics.json), and its one-stream test perplexity is the run's."""
    folder, last = tmp_path / "eval", ddp_run.whole / "checkpoints" / "last.ckpt"
    args = ["data=text", f"data.data_dir={ddp_run.corpus}", "data.batch_size=2", "trainer.enable_progress_bar=false"]
    args += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"ckpt_path={last}"]
    proc = run("rnnreg-eval", *args, f"hydra.run.dir={folder}")
    ours = [line.split(" - ", 1)[1] for line in proc.stdout.splitlines() if "][rnnreg][" in line]
    assert [line.split(":")[0] for line in ours] == [
        f"{last} was trained with data.batch_size=4 and is evaluated with 2",
        "metrics",
    ]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert ours[1] == f"metrics: {metrics}"
    trained = json.loads((ddp_run.whole / "metrics.json").read_text())
    assert metrics["test_ppl"] == pytest.approx(trained["test_ppl"], rel=1e-5)  # one stream: any batch size


@pytest.mark.slow
def test_a_ddp_monte_carlo_evaluation_tests_one_stream_as_one_process(tiny_corpus, tmp_path):
    """rnnreg-eval mc_samples=3 trainer=ddp: every rank is seeded alike and runs the whole one-stream test, so
    every rank draws one process's masks and the reduced test_ppl is one process's Monte-Carlo estimate (ranks
    with masks of their own would average the logs of different estimates: another number, for each world size).
    The batched splits' streams are split across the ranks: their shared masks meet other words."""
    train_args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "dropout=non_recurrent"]
    train_args += ["dropout.p=0.5", "trainer.max_epochs=1", "trainer.limit_train_batches=10"]
    run("rnnreg-train", *train_args, f"hydra.run.dir={tmp_path / 'run'}")
    args = ["data=text", f"data.data_dir={tiny_corpus}", "data.batch_size=2", "trainer.enable_progress_bar=false"]
    args += ["trainer.accelerator=cpu", f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}", "mc_samples=3"]
    run("rnnreg-eval", *args, f"hydra.run.dir={tmp_path / 'one'}")
    # (Lightning's DDP reseeds each rank from $PL_GLOBAL_SEED as validate and test start: a value left in the shell,
    # or by a run before in this process, drew other masks than seed's, 40.5173 against 40.5255)
    ddp_run = ("rnnreg-eval", *args, "trainer=ddp", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'ddp'}")
    run(*ddp_run, env={"PL_GLOBAL_SEED": "777"})
    run(*ddp_run[:-1], f"hydra.run.dir={tmp_path / 'ddp_again'}", env={"PL_GLOBAL_SEED": "778"})
    trained, one, ddp, again = (
        json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("run", "one", "ddp", "ddp_again")
    )
    assert one["test_ppl"] != pytest.approx(trained["test_ppl"], rel=1e-6)  # the masks are on
    assert ddp["test_ppl"] == pytest.approx(one["test_ppl"], rel=1e-12)
    # the validation's masks (the batched split's, each rank its streams) are seed's too, whatever the shell says
    assert again["val_ppl"] == ddp["val_ppl"] and again["test_ppl_batched"] == ddp["test_ppl_batched"]


# a hung DDP run fails its test after this long (both processes killed) instead of hanging CI
HANG_SECONDS = 300


def signal_when_held(hold: Path, ranks: tuple[int, ...], signum: int) -> None:
    """Once rank 0 holds, `signum` to `ranks` (their pids from `hold`), then rank 0 goes on."""
    deadline = time.monotonic() + HANG_SECONDS
    while not (hold / "held").exists():
        if time.monotonic() > deadline:
            return  # the run never got there: its own output says why
        time.sleep(0.05)
    waiting_in_a_collective(int((hold / "rank1").read_text()))  # where a Python signal handler cannot run
    for rank in ranks:
        os.kill(int((hold / f"rank{rank}").read_text()), signum)
    (hold / "go").touch()


def waiting_in_a_collective(pid: int, asleep_s: float = 0.2, most_s: float = 1.0) -> None:
    """Returns once process `pid` (DDP's rank 1, rank 0 held) has slept `asleep_s` without a break, as it does in its
    next collective, waiting for rank 0 (a window's work never sleeps that long), or after `most_s` at most."""
    if not Path("/proc/self").exists():  # (not Linux: the states cannot be read)
        time.sleep(most_s)
        return
    start = time.monotonic()
    asleep_since = None
    while (now := time.monotonic()) - start < most_s:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return  # (it has ended: its own output says why)
        asleep_since = (asleep_since or now) if state == "S" else None
        if asleep_since is not None and now - asleep_since >= asleep_s:
            return
        time.sleep(0.01)


def stop_with_signal(
    corpus: Path, run_dir: Path, ranks: tuple[int, ...], signum: int = signal.SIGTERM, srun: bool = False
) -> list[subprocess.CompletedProcess]:
    """Two DDP processes sent `signum` (to `ranks`) after window 7 of epoch 1; fails (both killed) if they hang.
    `srun`: started as srun starts them, one process per rank with its SLURM variables (else Lightning starts
    rank 1). Returns each process's outcome, rank 0's first."""
    hold = run_dir.parent / f"{run_dir.name}-hold"
    hold.mkdir(parents=True)
    command = [
        str(BIN / "rnnreg-train"),
        *ddp_args(corpus),
        "+callbacks.hold._target_=test_ddp.HoldRankZero",
        f"+callbacks.hold.folder={hold}",
        "+callbacks.hold.window=7",
        f"hydra.run.dir={run_dir}",
    ]
    envs = [os.environ | {"HYDRA_FULL_ERROR": "0"}]
    if srun:
        port = free_port()
        envs = [envs[0] | srun_env(rank, tasks=2, port=port) for rank in (0, 1)]
    # each in its own session: on a hang the whole group (Lightning's rank 1 is rank 0's child) is killed; the
    # pipes close when every process has exited
    procs = [
        warm_start.popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        for env in envs
    ]
    threading.Thread(target=signal_when_held, args=(hold, ranks, signum), daemon=True).start()
    try:
        outs = [proc.communicate(timeout=HANG_SECONDS) for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = procs[0].communicate()
        pytest.fail(f"{signal.Signals(signum).name} to ranks {ranks} hung the DDP run:\n{out[-2000:]}\n{err[-2000:]}")
    return [subprocess.CompletedProcess(command, proc.returncode, *out) for proc, out in zip(procs, outs)]


def assert_stopped_after_window_7(
    ddp_run: SimpleNamespace, run_dir: Path, procs: list[subprocess.CompletedProcess], signum: int = signal.SIGTERM
) -> None:
    """Exit status 128 + `signum` (143 for SIGTERM), metrics.json says interrupted by it, and last.ckpt holds what
    the uninterrupted run held after window 7: the weights and the carried state of all 4 streams, gathered from
    both ranks."""
    for proc in procs:
        assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["error"] == STOPPED_BY[signum]
    stopped = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
    mid = torch.load(ddp_run.mid, weights_only=False)
    assert stopped["epoch"] == 0 and stopped["global_step"] == 7 and stopped["train_window"] == 7
    assert stopped["train_carry"]["state"][0].shape == (2, 4, 16) and stopped["train_carry"]["tokens"] == 7 * 5 * 4
    for a, b in zip(
        (*stopped["train_carry"]["state"], stopped["train_carry"]["nll_sum"]),
        (*mid["train_carry"]["state"], mid["train_carry"]["nll_sum"]),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name, value in mid["state_dict"].items():
        torch.testing.assert_close(stopped["state_dict"][name], value, rtol=0, atol=0)


@pytest.mark.slow
def test_ddp_sigterm_to_every_rank_stops_together_and_resumes_exactly(ddp_run, tmp_path):
    """A scheduler's SIGTERM (SLURM signals every process of the step) reaching rank 0 while it holds after window
    7 and rank 1 already waits in its next collective: both agree to stop after window 7 (Lightning's own handler
    broadcast from inside the signal handler and hung), and 2 processes resumed from last.ckpt = the uninterrupted
    run."""
    stopped, resumed = tmp_path / "stopped", tmp_path / "resumed"
    assert_stopped_after_window_7(ddp_run, stopped, stop_with_signal(ddp_run.corpus, stopped, ranks=(0, 1)))
    run(
        "rnnreg-train",
        *ddp_args(ddp_run.corpus),
        f"ckpt_path={stopped}/checkpoints/last.ckpt",
        f"hydra.run.dir={resumed}",
    )
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ddp_run.whole, resumed))
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
    assert history(resumed, "train/loss") == pytest.approx(history(ddp_run.whole, "train/loss")[7:], rel=1e-6)
    a, b = (torch.load(d / "checkpoints/last.ckpt", weights_only=False) for d in (ddp_run.whole, resumed))
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ddp_sigterm_to_rank_zero_stops_every_rank(ddp_run, tmp_path):
    """`kill <pid of rank 0>` by hand: rank 1 gets no signal, yet stops after the same window (the ranks agree)."""
    stopped = tmp_path / "stopped"
    assert_stopped_after_window_7(ddp_run, stopped, stop_with_signal(ddp_run.corpus, stopped, ranks=(0,)))


@pytest.mark.slow
def test_ddp_sigterm_to_rank_zero_in_the_sanity_check_stops_every_rank_before_training(tiny_corpus, tmp_path):
    """SIGTERM to rank 0 alone in the last batch of Lightning's sanity check, where the ranks do not agree (not a
    trainer.log_every_n_steps-th batch): both agree as training starts and stop before the first window, with a
    last.ckpt at global step 0 (before: they trained trainer.log_every_n_steps windows first)."""
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer=ddp", "trainer.devices=2"]
    args += ["trainer.num_sanity_val_steps=2", "data.eval_bptt=5", "trainer.log_every_n_steps=50", "test=false"]
    stop = ["+callbacks.stop._target_=helpers.SignalInValidation", f"+callbacks.stop.signum={int(signal.SIGTERM)}"]
    stop += ["+callbacks.stop.batch=2", "+callbacks.stop.sanity_check=true", "+callbacks.stop.rank=0"]
    proc = run("rnnreg-train", *args, *stop, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 143, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["error"] == STOPPED_BY[signal.SIGTERM]
    stopped = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert stopped["global_step"] == 0 and stopped["train_window"] == 0 and "train_carry" not in stopped
    assert "SIGTERM: every process stops before training" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_slurm_time_limit_signal_to_every_srun_task_stops_them_together(ddp_run, tmp_path):
    """SLURM's SIGUSR1 before its time limit (`#SBATCH --signal=SIGUSR1@90`) to both tasks of an srun step, rank 1
    already waiting in its next collective: both stop after window 7 with the uninterrupted run's state and exit
    138, as for SIGTERM. Before: Lightning's requeue handler saved hpc_ckpt_1.ckpt from inside the handler (a
    collective there), ran `scontrol requeue`, and training went on (exit 0)."""
    stopped = tmp_path / "stopped"
    procs = stop_with_signal(ddp_run.corpus, stopped, ranks=(0, 1), signum=signal.SIGUSR1, srun=True)
    assert_stopped_after_window_7(ddp_run, stopped, procs, signum=signal.SIGUSR1)
    assert not list(stopped.rglob("hpc_ckpt_*")) and not any("scontrol" in proc.stderr for proc in procs)


def test_batch_not_divisible_by_world_size_is_an_error(tiny_corpus, tmp_path):
    proc = run(
        "rnnreg-train",
        "experiment=paper_small",
        *TINY,
        f"data.data_dir={tiny_corpus}",
        "data.batch_size=3",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={tmp_path}/run",
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: data.batch_size=3 is not divisible by the 2 DDP processes (trainer.devices x trainer.num_nodes): "
        "set data.batch_size to a multiple of 2"
    ]
    assert not (tmp_path / "run").exists()  # refused before Hydra created anything


@pytest.mark.slow
def test_ddp_divergence_stops_every_process(tiny_corpus, tmp_path):
    """The ranks agree on a diverged loss before stopping: both stop with the error, none hangs in a collective."""
    assert_diverges_in_epoch_2(tiny_corpus, tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")


class ReducingTrainer:
    """What Preemption reads of a Trainer, its reduce_boolean_decision counting the ranks' agreements."""

    def __init__(self, world_size: int):
        self.world_size, self.log_every_n_steps, self.num_training_batches = world_size, 4, 10
        self.asked: list[bool] = []
        self.callbacks: list = []  # (none that a Ctrl-C stopped)
        self._signal_connector = SimpleNamespace(received_sigterm=False)
        self.strategy = SimpleNamespace(
            reduce_boolean_decision=lambda decision, all=True: self.asked.append(decision) or decision
        )

    @property
    def received_sigterm(self) -> bool:
        return self._signal_connector.received_sigterm


def test_ddp_ranks_agree_on_a_signal_at_log_intervals_not_every_window():
    """The ranks' agreement is a collective and a host sync: under DDP at every trainer.log_every_n_steps-th window
    and an epoch's last (the stop comes there), not per window; one process asks every window (no collective)."""
    for world_size, stops_after in ((2, 4), (1, 1)):
        trainer, preemption = ReducingTrainer(world_size), Preemption()
        preemption.note(signal.SIGTERM, None)  # noted in the first window
        stopped = [
            i + 1
            for i in range(10)
            if preemption.on_train_batch_end(trainer, None, None, None, i) or trainer.received_sigterm
        ]
        assert stopped[0] == stops_after and trainer.asked == [True], world_size  # asked once: where every rank stops


def assert_one_sweep_folder_with_rank_zeros_record(sweep: Path, jobs: str) -> None:
    """Rank 1 ran the sweep beside rank 0 in rank 0's sweep folder `sweep`: its jobs' logs beside rank 0's (as in a DDP
    run), no folder or record of its own; the sweep's multirun.yaml is rank 0's command."""
    assert sorted(p.name for p in sweep.iterdir()) == [*jobs, "multirun.yaml", "sweep.yaml"]
    assert all((sweep / job / "train_ddp_process_1.log").is_file() for job in jobs)
    # (the process group is made once, in the first job; the later jobs' ranks go on in it)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (sweep / "0" / "train_ddp_process_1.log").read_text()
    hydra = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]
    lightnings = ("hydra.job.name=", "hydra.run.dir=", "hydra.output_subdir=")  # (what Lightning adds for rank 1)
    assert hydra["job"]["name"] == "train" and not any(o.startswith(lightnings) for o in hydra["overrides"]["hydra"])


def test_a_ddp_multirun_keeps_one_sweep_folder_and_its_own_record(ddp_run, tmp_path):
    """Lightning starts rank 1 with rank 0's command line, `-m` and all: it runs the sweep again beside rank 0. Its
    jobs' folders are rank 0's (its log beside rank 0's, as in a DDP run), and the sweep's record is rank 0's command
    (before: rank 1 made a dated sweep folder of its own, or wrote its own command over the given folder's
    multirun.yaml: hydra.job.name=train_ddp_process_1, hydra.run.dir=...). Here the dated folder; a given one
    (hydra.sweep.dir) in test_only_rank_zero_writes_a_failed_ddp_jobs_error_txt's sweep."""
    args = [a for a in ddp_args(ddp_run.corpus) if not a.startswith("trainer.max_epochs")]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "seed=1,2", f"paths.output_root={tmp_path}"]
    run("rnnreg-train", "-m", *args)
    (multirun,) = tmp_path.rglob("multirun.yaml")  # one sweep folder
    sweep = multirun.parent
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "completed"
    assert_one_sweep_folder_with_rank_zeros_record(sweep, "01")


# each process (a sitecustomize on its PYTHONPATH) notes its rank at every open of an error.txt to write it
ERROR_WRITES = """
import os, sys
def note(event, args):
    if event == "open" and str(args[0]).endswith("error.txt") and args[1] and "w" in str(args[1]):
        with open(os.environ["ERROR_WRITES"], "a") as f:
            f.write(os.environ.get("LOCAL_RANK", "0") + "\\n")
sys.addaudithook(note)
"""


@pytest.mark.slow
def test_only_rank_zero_writes_a_failed_ddp_jobs_error_txt(tmp_path):
    """Rank 1 runs rank 0's sweep beside it, into rank 0's job folders, and fails its jobs as rank 0 does: the job's
    error.txt is rank 0's alone (rnnreg.job_records.record_job_error). Job 1's valid split is too short, found inside
    the job with both ranks running (started by job 0); job 2's collectives wait for rank 1 to be past job 1's end."""
    good = write_corpus(tmp_path / "good")
    short = tmp_path / "short"
    shutil.copytree(good, short)
    (short / "valid.txt").write_text("w1\n")
    hook, writes = tmp_path / "hook", tmp_path / "writes.txt"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ERROR_WRITES)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    args = [a for a in ddp_args(good) if not a.startswith(("trainer.max_epochs", "data.data_dir"))]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=4", f"data.data_dir={good},{short},{good}"]
    sweep = tmp_path / "sweep"
    env = {"PYTHONPATH": path, "ERROR_WRITES": str(writes)}
    proc = run("rnnreg-train", "-m", *args, f"hydra.sweep.dir={sweep}", check=False, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"error: job 1 (data.data_dir={short}) failed: the valid split" in proc.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (sweep / "0" / "train_ddp_process_1.log").read_text()  # rank 1 ran
    assert (sweep / "1" / "error.txt").read_text().startswith("the valid split")
    assert writes.read_text() == "0\n"  # rank 0's write, and none of rank 1's
    assert [json.loads((sweep / j / "metrics.json").read_text())["status"] for j in "02"] == ["completed"] * 2
    # the given sweep folder is rank 0's alone (the dated one: test_a_ddp_multirun_keeps_one_sweep_folder_...)
    assert list(tmp_path.rglob("multirun.yaml")) == [sweep / "multirun.yaml"]  # one sweep folder
    assert_one_sweep_folder_with_rank_zeros_record(sweep, "012")


def test_ddp_jobs_under_joblib_are_one_line_before_any_runs(tiny_corpus, tmp_path):
    """Lightning starts DDP's other processes with the command line of the process that runs the job; a joblib
    worker's is loky's, so rank 1 stopped on an argparse error, the worker was killed, the sweep ended in a
    traceback and left its jobs' locks. Refused before the sweep folder is made, naming what runs DDP jobs."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "seed=1,2", *ddp_args(tiny_corpus), f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-train", *args, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: trainer.devices=2 / trainer.strategy=ddp under hydra/launcher=joblib: Lightning starts DDP's other "
        "processes with the command line of the process that runs the job, and a joblib worker has none: run DDP jobs "
        "with the basic launcher (one after another), or joblib's jobs on one device each (sweep job seed=1)"
    ], proc.stderr[-3000:]
    assert not sweep.exists()


@pytest.mark.parametrize(
    ("launcher", "said"),
    [
        (
            ["trainer=ddp", "trainer.devices=2"],
            "trainer.devices=2 / trainer.strategy=ddp under hydra/launcher=submitit_local: Lightning would start DDP's "
            "other processes with the command line of the process that runs the job, which is submitit's: set "
            "hydra.launcher.tasks_per_node=2 (submitit starts the job's 2 processes, each one of its DDP processes)",
        ),
        (
            ["hydra.launcher.tasks_per_node=2"],
            "hydra.launcher.tasks_per_node=2 under hydra/launcher=submitit_local runs each job 2 times side by side in "
            "its one folder, and this job is one process: leave hydra.launcher.tasks_per_node out, or make the job 2 "
            "DDP processes (trainer=ddp trainer.devices=2)",
        ),
        (
            ["hydra.launcher.tasks_per_node=4", "trainer=ddp", "trainer.devices=2"],
            "trainer.devices=2 / trainer.strategy=ddp is 2 DDP processes a job, and hydra.launcher.tasks_per_node=4 "
            "starts 4 under hydra/launcher=submitit_local, each one of them: set hydra.launcher.tasks_per_node=2",
        ),
        (
            ["hydra.launcher.tasks_per_node=2", "trainer=ddp", "trainer.devices=1", "trainer.num_nodes=2"],
            "trainer.num_nodes=2 under hydra/launcher=submitit_local, which runs each job on this machine alone: set "
            "trainer.num_nodes=1 (or run on several nodes with hydra/launcher=slurm)",
        ),
        (  # devices=auto: one process per GPU of the job's node, as submitit gives it (not this machine's: none)
            ["hydra.launcher.gpus_per_node=2", "trainer=ddp", "trainer.accelerator=auto"],
            "trainer.devices=auto / trainer.strategy=ddp under hydra/launcher=submitit_local: Lightning would start "
            "DDP's other processes with the command line of the process that runs the job, which is submitit's: set "
            "hydra.launcher.tasks_per_node=2 (submitit starts the job's 2 processes, each one of its DDP processes)",
        ),
        (
            ["hydra.launcher.tasks_per_node=2", "trainer=ddp", "trainer.devices=4"],
            "trainer.devices=4 / trainer.strategy=ddp is 4 DDP processes a job, and hydra.launcher.tasks_per_node=2 "
            "starts 2 under hydra/launcher=submitit_local, each one of them: set hydra.launcher.tasks_per_node=4",
        ),
    ],
    ids=[
        "ddp_in_one_task",
        "two_tasks_one_process",
        "more_tasks_than_processes",
        "two_nodes",
        "devices_auto_on_the_jobs_gpus",
        "fewer_tasks_than_processes",
    ],
)
def test_submitit_local_jobs_whose_tasks_are_not_their_processes_are_one_line(launcher, said, tiny_corpus, tmp_path):
    """Every task of a submitit_local job runs the whole job. Before: DDP in a job of one task started its other
    rank with submitit's command line (argparse refused it) and the sweep ended in submitit's UncompletedJobError
    traceback after 30 s; a one-process job of two tasks ran twice in its folder, the second run failed on the
    first's results and wrote error.txt there, and the sweep said the completed job failed; two nodes' ranks on
    one machine waited for each other for ever. Refused before the sweep folder is made."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=1",
        *TINY,
        f"data.data_dir={tiny_corpus}",
    ]
    args += ["experiment=paper_small", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    proc = run("rnnreg-train", *args, *launcher, f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {said}"], proc.stderr[-3000:]
    assert not sweep.exists()


def test_a_generation_sweep_of_two_tasks_a_job_is_told_to_leave_them_out(tmp_path):
    """rnnreg-generate has no trainer, so no DDP: its sweep under submitit_local with two tasks a job is told to
    leave hydra.launcher.tasks_per_node out, and not to make the job DDP processes, which it cannot be (before:
    `or make the job 2 DDP processes (trainer=ddp trainer.devices=2)`)."""
    sweep, checkpoint = tmp_path / "sweep", tmp_path / "model.ckpt"
    torch.save({}, checkpoint)  # (what it holds is read by the job: the command line sees torch.save's file)
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"]
    args = ["-m", *launcher, f"ckpt_path={checkpoint}", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-generate", *args, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: hydra.launcher.tasks_per_node=2 under hydra/launcher=submitit_local runs each job 2 times side by side "
        "in its one folder, and this job is one process: leave hydra.launcher.tasks_per_node out (sweep job seed=1)"
    ], proc.stderr[-3000:]
    assert not sweep.exists()


def test_a_submitit_local_job_of_two_tasks_is_one_ddp_run_of_two_processes(
    tiny_corpus, tiny_cfg, tmp_path, monkeypatch
):
    """hydra.launcher.tasks_per_node=2 with trainer=ddp trainer.devices=2: submitit's two tasks are the job's two DDP
    processes (they find each other at a port rank 0 found free), and the job's records come once: rank 0's
    metrics.json and train.log, rank 1's own log beside them, as Lightning's own DDP processes leave them; the
    training is one process's over the same streams. Before: each task took itself for rank 0 of a DDP run of its
    own and started its rank 1 with submitit's command line, which failed, and the sweep ended in a traceback.
    Each rank trains with the thread count rank 0's train.log says, set by submitit_local for its 2 processes.
    Rank 0 alone writes the job's .hydra/ (before: each task wrote it, truncating the files rank 0 may be reading).
    The sweep folder is reached through a link (rank 1 wrote into train.log beside rank 0: its log's path has the
    link, which was compared with the link's target), the ranks meet at the user's MASTER_ADDR, and a NODE_RANK left
    in the environment does not move them off node 0 (the only one)."""
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # (make test's workers set it: here rnnreg-train does)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    sweep = tmp_path / "link" / "sweep"
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "test=false"]
    longer = ("trainer.max_epochs", "trainer.limit_train_batches")
    args = [a for a in ddp_args(tiny_corpus) if not a.startswith(longer)]
    # (submitit's time limit kills the job: 1 minute was passed on a 2-core machine kept busy by other work)
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10"]
    recorder = ["+callbacks.ranks._target_=test_ddp.RankRecorder", f"+callbacks.ranks.folder={tmp_path}"]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NOTE_HYDRA_WRITES)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    env |= {"MASTER_ADDR": "localhost", "NODE_RANK": "1"}
    overrides = [*args, *short, *launcher, *recorder, f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-train", "-m", *overrides, check=False, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    job = sweep / "0"
    assert (job / ".hydra" / "config.yaml").is_file() and not (hook / "hydra_writes").exists()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["master_addr"] for r in ranks] == ["localhost", "localhost"]
    submitit_logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.out"))
    assert "global_rank=1(2)" in submitit_logs  # rank 1: submitit's second task, not a process Lightning started
    log, own = (job / "train.log").read_text(), (job / "train_ddp_process_1.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in own
    assert "GLOBAL_RANK: 1" not in log and "GLOBAL_RANK: 0" not in own
    # (rank 1's lines in the job log's format)
    assert re.search(r"^\[[-\d :,]+\]\[[\w.]+\]\[INFO\] - .*GLOBAL_RANK: 1, MEMBER: 2/2", own, re.M), own
    metrics = json.loads((job / "metrics.json").read_text())
    assert re.findall(r"^\[.*\]\[rnnreg\]\[INFO\] - metrics: (.*)$", log, re.M) == [str(metrics)]
    assert "metrics: " not in own and not (job / "error.txt").exists() and not (job / ".rnnreg.lock").exists()
    single = train(tiny_cfg(*[a for a in COMMON if not a.startswith(longer)], *short))  # one process, in this one
    for key in ("val_ppl", "best_val_ppl"):
        assert metrics[key] == pytest.approx(single[key], rel=1e-5), key
    assert history(job, "train/loss") == pytest.approx(history(tmp_path / "run", "train/loss"), rel=1e-5)
    # one threads line, rank 0's, true of both ranks: submitit_local's count for the 2 processes it starts
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert [r["threads"] for r in ranks] == [threads, threads]
    assert re.findall(r"^  threads: (.*)$", log, re.M) == [
        f"{threads} torch thread{'s' if threads > 1 else ''} in each of the 2 DDP processes, from "
        f"OMP_NUM_THREADS={threads} (hydra/launcher=submitit_local sets it to cores // the processes it starts at "
        "once where it was not set)"
    ]
    assert "threads: " not in own


def test_a_submitit_local_ddp_job_stopped_by_a_signal_to_its_tasks_stops_them_together_and_goes_on_exactly(
    tiny_corpus, tiny_cfg, tmp_path
):
    """A submitit_local job of two DDP tasks, each task signalled after window 2 as submitit's controller signals
    every task with its SIGUSR2 (its time limit): both ranks stop after window 2, rank 0 writes last.ckpt and submitit
    requeues the job, whose two tasks go on from it: the uninterrupted run's results and weights.
    The port Lightning's SLURM rule gives the job (15000 + its id's last four digits) is in use (another program, or
    another job whose id ends alike): the tasks meet on a port rank 0 found free, and the requeued job's on a new one
    (not the port its last run wrote down). Before: rank 0 failed to bind Lightning's port (EADDRINUSE) and rank 1
    waited for it until submitit's time limit killed the job; the sweep ended in a traceback.
    (A SIGTERM, which ends a submitit job with its last.ckpt as the job's result, was a second job here: that path is
    test_tracking's test_submitit_local_launcher_stops_on_its_signal_and_the_requeued_job_goes_on_exactly, its job 1,
    and DDP's ranks stopped together by it test_ddp_sigterm_to_every_rank_stops_together_and_resumes_exactly.)"""
    sweep = tmp_path / "sweep"
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "test=false"]
    args = [a for a in ddp_args(tiny_corpus) if not a.startswith(("trainer.max_epochs", "trainer.limit_train_batches"))]
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10"]
    signals = ["+callbacks.signal_at._target_=helpers.SignalAt", "+callbacks.signal_at.window=2"]
    signals.append(f"+callbacks.signal_at.signum={int(signal.SIGUSR2)}")
    occupy = "+hydra.callbacks.occupy._target_=occupied_port.OccupyLightningsPort"
    proc = run(
        "rnnreg-train", "-m", *args, *short, *launcher, *signals, occupy, f"hydra.sweep.dir={sweep}", check=False
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert {p.parent.parent for p in sweep.rglob("*_ddp_port")} == {sweep / ".submitit"}  # submitit's, not the run's
    requeued = sweep / "0"
    log = (requeued / "train.log").read_text()
    assert "SIGUSR2: every process stops after this step" in log
    assert f"resuming from {requeued / 'checkpoints' / 'last.ckpt'}" in log
    assert json.loads((requeued / "metrics.json").read_text())["status"] == "completed"
    alone = train(tiny_cfg(*[a for a in COMMON if not a.startswith(("trainer.max_epochs", "trainer.limit_t"))], *short))
    metrics = json.loads((requeued / "metrics.json").read_text())
    for key in ("val_ppl", "best_val_ppl"):
        assert metrics[key] == pytest.approx(alone[key], rel=1e-5), key
    a, b = (torch.load(d / "checkpoints/last.ckpt", weights_only=False) for d in (requeued, tmp_path / "run"))
    for name, value in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][name], value, rtol=1e-5, atol=1e-6)


# a sitecustomize: task 0 of a submitit_local job fails as it starts (as it loads the job: submitit records the error
# at once), and the other tasks wait 2 s for its port
FIRST_TASK_FAILS_AT_ONCE = """
import os
if os.environ.get("SUBMITIT_LOCAL_GLOBALID") == "0":
    import submitit.core.utils

    def failing(cls, path):
        raise RuntimeError("task 0 failed as it started")

    submitit.core.utils.DelayedSubmission.load = classmethod(failing)
elif os.environ.get("SUBMITIT_LOCAL_GLOBALID"):
    import rnnreg.submitit_tasks
    rnnreg.submitit_tasks.PORT_WAIT_S = 2.0
"""


def test_a_submitit_local_task_whose_first_task_never_wrote_the_port_says_so_in_one_line(tiny_corpus, tmp_path):
    """Task 0 of a submitit_local job of two DDP tasks fails before it starts the job: task 1, having waited for its
    port (PORT_WAIT_S), says so in one line naming task 0's log, and exits. Before: Hydra only warned of the
    RuntimeError raised in the job's callback, and the task went on into DDP's rendezvous without a port and ended
    in its C++ traceback."""
    sweep, hook = tmp_path / "sweep", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FIRST_TASK_FAILS_AT_ONCE)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    args = [a for a in ddp_args(tiny_corpus) if not a.startswith(("trainer.max_epochs", "trainer.limit_train_batches"))]
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=1"]
    proc = run("rnnreg-train", "-m", *args, *short, *launcher, f"hydra.sweep.dir={sweep}", check=False, env=env)
    assert "RuntimeError: task 0 failed as it started" in proc.stderr, proc.stderr[-3000:]  # (submitit's report)
    (job,) = [d for d in (sweep / ".submitit").iterdir() if d.name != "%j"]  # (submitit's `%j`: the submission's)
    assert not list((sweep / ".submitit").glob("%j/*_ddp_port"))  # the port file in its job's folder
    said = (job / f"{job.name}_1_log.err").read_text().strip().splitlines()
    assert said == [
        f"error: task 1 of submitit job {job.name} waited 2 s for task 0 to write the DDP port its tasks meet at "
        f"({job / f'{job.name}_ddp_port'}) and it never did: task 0 failed or was not started "
        f"(its log, {job / f'{job.name}_0_log.err'}, says why); fix that and run the job again"
    ], said


@pytest.fixture(scope="module")
def dropout_ddp_run(tmp_path_factory) -> SimpleNamespace:
    """Two DDP processes with dropout (p = 0.5), one epoch of 12 windows, which also write each rank's masks of its
    first 4 windows and save a checkpoint after window 5 (callbacks: the run goes on unchanged); the two tests below
    read this one run."""
    root = tmp_path_factory.mktemp("ddp_dropout")
    whole, mid = root / "whole", root / "mid.ckpt"
    args = [*ddp_args(write_corpus(root / "corpus")), "dropout=non_recurrent", "dropout.p=0.5", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=12", "test=false"]
    run(
        "rnnreg-train",
        *args,
        "+callbacks.masks._target_=test_ddp.MaskRecorder",
        f"+callbacks.masks.folder={root}",
        "+callbacks.save_at._target_=test_ddp.SaveAt",
        f"+callbacks.save_at.path={mid}",
        "+callbacks.save_at.window=5",
        f"hydra.run.dir={whole}",
    )
    return SimpleNamespace(root=root, whole=whole, mid=mid, args=args)


@pytest.mark.slow
def test_each_ddp_rank_draws_its_own_dropout_masks(dropout_ddp_run):
    """Every rank is seeded with the run's seed; its masks must still be its own: stream j of rank 0 and of rank 1
    meeting the same masks at every step would make the global batch's masks dependent (before: all identical)."""
    rank0, rank1 = (json.loads((dropout_ddp_run.root / f"masks{r}.json").read_text()) for r in (0, 1))
    assert len(rank0) == len(rank1) == 8  # input and output sites, 4 windows
    assert all(a != b for a, b in zip(rank0, rank1))
    kept = [k for mask in rank0 + rank1 for k in mask]
    assert sum(kept) / len(kept) == pytest.approx(0.5, abs=0.05)  # still dropout at p = 0.5


@pytest.mark.slow
def test_ddp_with_dropout_resumes_its_ranks_masks_exactly(dropout_ddp_run, tmp_path):
    """Each rank's masks after a mid-epoch resume are the ones the uninterrupted run drew (a function of the seed,
    the rank and the window): the per-window losses go on as they did."""
    whole, resumed, mid = dropout_ddp_run.whole, tmp_path / "resumed", dropout_ddp_run.mid
    run("rnnreg-train", *dropout_ddp_run.args, f"ckpt_path={mid}", f"hydra.run.dir={resumed}")
    assert history(resumed, "train/loss") == pytest.approx(history(whole, "train/loss")[5:], rel=1e-6)
    a, b = (torch.load(d / "checkpoints/last.ckpt", weights_only=False) for d in (whole, resumed))
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-5, atol=1e-6)
