"""Never lose a run: divergence, SIGTERM, and bad input stopping before training with a clear message."""

from __future__ import annotations

import errno
import json
import logging
import os
import shlex
import signal
import subprocess
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger

import warm_start
from helpers import (
    BIN,
    TINY,
    assert_diverges_in_epoch_2,
    compose_config,
    run,
    run_signal_at_import,
    signal_at,
    srun_env,
    write_corpus,
)
from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError, DataError, OutputError
from rnnreg.evaluate import evaluate
from rnnreg.io import FileWriter, replace_atomically
from rnnreg.report import report
from rnnreg.report_runs import history
from rnnreg.run_record import STOPPED_BY
from rnnreg.task import load_task
from rnnreg.train import build, train


def test_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny_corpus, tmp_path):
    line = assert_diverges_in_epoch_2(tiny_corpus, tmp_path)
    assert f"last good checkpoint is {tmp_path}/checkpoints/last.ckpt" in line


def test_a_run_diverging_after_a_validation_within_its_first_epoch_names_its_best_checkpoint(tiny_cfg, tmp_path):
    """A run validating twice an epoch whose weights blow up after the first validation: no epoch completed, no
    last.ckpt, but best.ckpt holds that validation's weights; the line names it (it said "no checkpoint")."""
    from rnnreg.errors import TrainingDiverged

    best = tmp_path / "run/checkpoints/best.ckpt"

    class BlowUpAfterBest(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if best.exists():
                with torch.no_grad():
                    for weight in pl_module.parameters():
                        weight.fill_(float("inf"))

    cfg = tiny_cfg("trainer.max_epochs=2", "trainer.limit_train_batches=4", "+trainer.val_check_interval=2")
    datamodule, task, trainer = build(cfg)
    trainer.callbacks.insert(0, BlowUpAfterBest())
    with pytest.raises(TrainingDiverged) as stopped:
        trainer.fit(task, datamodule=datamodule)
    assert "at epoch 1, step 3 " in str(stopped.value)
    assert str(stopped.value).endswith(f"no epoch completed here; the best validation so far is {best}")
    assert not best.with_name("last.ckpt").exists()
    weights = torch.load(best, weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_last_checkpoint_links_best_when_both_hold_one_state_and_never_changes_it(tiny_cfg, tmp_path):
    # epoch 1 is the best so far: best.ckpt and last.ckpt are one file; lr x10 after it: epoch 2 is worse,
    # and last.ckpt alone is rewritten
    class AtEpochStart(L.Callback):
        seen = []

        def on_train_epoch_start(self, trainer, pl_module):
            files = [tmp_path / "run/checkpoints" / f"{name}.ckpt" for name in ("best", "last")]
            if files[0].exists():
                self.seen.append((os.path.samefile(*files), os.stat(files[0]).st_nlink))

    class SavesSeen(CSVLogger):  # loggers hear of every save, a link included (W&B's log_model uploads them)
        saved = []

        def after_save_checkpoint(self, checkpoint_callback):
            self.saved.append(Path(checkpoint_callback._last_checkpoint_saved).name)

    cfg = tiny_cfg(
        "trainer.max_epochs=2", "optim.decay=0.1", "optim.decay_start=1", "trainer.gradient_clip_val=100", "test=false"
    )
    datamodule, task, trainer = build(cfg)
    trainer.callbacks.insert(0, AtEpochStart())
    trainer.loggers = [SavesSeen(tmp_path / "csv")]
    trainer.fit(task, datamodule=datamodule)
    assert AtEpochStart.seen == [(True, 2)]  # after epoch 1: one file, two names
    assert SavesSeen.saved == ["best.ckpt", "last.ckpt", "last.ckpt"]
    best, last = (
        torch.load(tmp_path / f"run/checkpoints/{name}.ckpt", weights_only=False) for name in ("best", "last")
    )
    assert best["epoch"] == 0 and last["epoch"] == 1 and last["global_step"] == 2 * best["global_step"]
    assert trainer.checkpoint_callback.best_model_score < trainer.callback_metrics["val/ppl"]  # epoch 2 was worse
    assert not os.path.samefile(tmp_path / "run/checkpoints/best.ckpt", tmp_path / "run/checkpoints/last.ckpt")
    assert not list((tmp_path / "run/checkpoints").glob(".*"))  # no temporary file left behind
    weights = {k: v for k, v in best["state_dict"].items()}
    assert any(not torch.equal(weights[k], last["state_dict"][k]) for k in weights)


def test_a_write_that_fails_part_way_leaves_the_old_file(tmp_path):
    """What checkpoints (AtomicCheckpointIO, LastCheckpoint's link) and metrics.json are written with."""
    target = tmp_path / "last.ckpt"
    target.write_text("the good one")

    def dies_half_way(tmp: Path) -> None:
        tmp.write_text("the ne")
        raise OSError("No space left on device")

    with pytest.raises(OutputError, match=f"could not write last.ckpt in {tmp_path}: No space left on device"):
        replace_atomically(target, dies_half_way)
    assert target.read_text() == "the good one"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left beside it


def test_a_background_write_that_fails_is_raised_by_the_next_wait_though_later_writes_succeed(tmp_path):
    """A stacked group's FileWriter: a member's checkpoint that cannot be written (its folder full or read-only) is
    the next wait's OutputError, even when the files handed over after it (the resume file) were written."""

    def fails(tmp: Path) -> None:
        raise OSError("No space left on device")

    writer = FileWriter(background=True)
    writer.submit(replace_atomically, tmp_path / "0" / "last.ckpt", fails)
    writer.submit(replace_atomically, tmp_path / "group_0.pt", lambda tmp: tmp.write_text("the resume file"))
    with pytest.raises(OutputError, match="could not write last.ckpt in .*/0: No space left on device"):
        writer.wait()
    writer.close()
    assert (tmp_path / "group_0.pt").read_text() == "the resume file" and not (tmp_path / "0" / "last.ckpt").exists()
    writer.wait()  # raised once: the next epoch's wait has nothing of it left


def test_no_link_when_checkpoints_are_written_in_place(tiny_cfg, tmp_path):
    # without the atomic checkpoint IO, a write into one name of a linked pair would change the other
    train(tiny_cfg("trainer.max_epochs=1", "~trainer.plugins", "test=false"))
    ckpts = tmp_path / "run/checkpoints"
    assert not os.path.samefile(ckpts / "best.ckpt", ckpts / "last.ckpt")
    assert os.stat(ckpts / "last.ckpt").st_nlink == 1


def test_where_the_filesystem_refuses_hard_links_last_ckpt_is_a_copy(tiny_cfg, tmp_path, monkeypatch):
    """A filesystem without hard links (some network and FUSE mounts): last.ckpt, which would link best.ckpt after
    epoch 1, is written as a copy of its own, and nothing is left of the link tried."""

    def refused(source, target) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    train(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=3", "test=false"))
    ckpts = tmp_path / "run/checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not os.path.samefile(ckpts / "best.ckpt", ckpts / "last.ckpt")
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_stop_signal_writes_a_resumable_checkpoint(tiny_corpus, tmp_path, signum, status):
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.limit_train_batches=10"]
    first, paused, go = tmp_path / "first", tmp_path / "paused", tmp_path / "go"
    # held at the start of epoch 2 until the signal is sent: it lands in epoch 2 however loaded the machine is
    pause = ["+callbacks.pause._target_=helpers.PauseAtEpoch", f"+callbacks.pause.paused={paused}"]
    pause += [f"+callbacks.pause.go={go}"]
    proc = warm_start.popen(
        [str(BIN / "rnnreg-train"), *args, *pause, "trainer.max_epochs=30", f"hydra.run.dir={first}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not paused.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signum)  # as epoch 2 starts
    go.touch()
    proc.communicate(timeout=120)
    assert proc.returncode == status
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs"] == 1  # one epoch done, stopped in the second
    assert "weights_only" not in (first / "train.log").read_text()  # (Lightning's note on a save given no choice)
    interrupted = torch.load(first / "checkpoints/last.ckpt", weights_only=False)
    assert interrupted["global_step"] > 0
    assert (interrupted["epoch"], interrupted["train_window"]) == (1, 1), interrupted["train_window"]  # mid-epoch 2
    log = (first / "train.log").read_text()
    said = ["Ctrl-C: stopping after this window"] if signum == signal.SIGINT else ["SIGTERM: every process stops"]
    assert [line for line in said if line in log] == said and ("SIGTERM" not in log) == (signum == signal.SIGINT)
    if signum == signal.SIGINT:
        return  # its checkpoint is written as SIGTERM's; a Ctrl-C stop resumes exactly: test_resume
    # resumed with a shorter schedule to keep the test short: it finishes epoch 2, where it stopped
    run(
        "rnnreg-train",
        *args,
        "trainer.max_epochs=2",
        f"ckpt_path={first}/checkpoints/last.ckpt",
        f"hydra.run.dir={tmp_path / 'second'}",
    )
    resumed = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs"] == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_stopped_run_prints_the_command_that_goes_on(tiny_corpus, tmp_path, signum):
    """A run a signal stopped ends its console with the command that goes on from its last.ckpt, its own overrides
    in it (metrics.json's `resume` has `...` for them); pasted, that command completes the run."""
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=6", "test=false", *signal_at(signum, 3)]
    proc = run("rnnreg-train", *args, f"hydra.run.dir={first}", check=False)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    said = f"{STOPPED_BY[signum]}: the run stopped; go on with: "
    assert last == said + shlex.join(["rnnreg-train", *args, f"ckpt_path={first}/checkpoints/last.ckpt"]), last
    script, *overrides = shlex.split(last.removeprefix(said))
    run(script, *overrides, f"hydra.run.dir={second}")  # (in a folder of the test's: not outputs/)
    assert json.loads((second / "metrics.json").read_text())["status"] == "completed"
    assert torch.load(second / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_multirun_stopped_in_a_job_ends_with_the_report_that_goes_on(tiny_corpus, tmp_path, signum):
    """A signal in a basic multirun's job ends the multirun (Hydra's basic launcher runs the jobs in its process), so
    neither the job's line nor the sweep's end says anything: the console's last line names the job and the
    rnnreg-report command, which lists the stopped job and the job that never started, each with how it goes on (before:
    the console ended on the progress bar, exit 130, with no word of how to go on)."""
    sweep = tmp_path / "sweep"
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=6", "test=false", *signal_at(signum, 3)]
    proc = run("rnnreg-train", "-m", *args, "seed=1,2", f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == (
        f"{STOPPED_BY[signum]}: the multirun stopped in job 0 (seed=1); rnnreg-report path={sweep} gives the "
        f"commands that go on (with it, and with each job not yet started)"
    )
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "interrupted"
    said = report(sweep)  # (no command shown here: the test's signal is a callback Hydra builds)
    assert "\n- 0 (interrupted): " in said and "\n- 1 (never started: no folder): " in said


def test_a_run_stopped_in_its_final_test_completes_in_its_folder_with_the_command_it_prints(tiny_corpus, tmp_path):
    """Ctrl-C in the final test, once training completed: the command printed (and in metrics.json, and the
    report's) runs that test again in the run's folder, on the weights it was testing, without training, and
    completes its record: the report then lists it completed, with the numbers of the uninterrupted run (before: an
    rnnreg-eval command, which tested the weights in a folder of its own and left the run interrupted for ever;
    going on with ckpt_path=last was refused, nothing being left to train)."""
    stop = tmp_path / "lab" / "stop"  # (a group of the user's: the report shows no command for a recorded _target_)
    stop.mkdir(parents=True)
    (stop / "in_test.yaml").write_text(
        "# @package _global_\ncallbacks:\n  signal_in_test:\n    _target_: helpers.SignalInTest\n"
        f"    signum: {int(signal.SIGINT)}\n"
    )
    first, whole = tmp_path / "first", tmp_path / "whole"
    args = [f"hydra.searchpath=[file://{tmp_path / 'lab'}]", "experiment=paper_small", *TINY]
    args += [f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "trainer.limit_train_batches=3"]
    args += ["trainer.limit_test_batches=3", "seed=7"]
    proc = run("rnnreg-train", *args, "+stop=in_test", f"hydra.run.dir={first}", check=False)
    assert proc.returncode == 130, proc.stderr[-3000:]
    record = json.loads((first / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["tested"] == f"{first}/checkpoints/last.ckpt"
    last = proc.stdout.strip().splitlines()[-1]
    said = "Ctrl-C (stopped by the user): the run stopped; its training completed: test it in its folder with: "
    assert last.startswith(said) and last.endswith(
        f" +stop=in_test ckpt_path=last hydra.run.dir={first} hydra.mode=RUN"
    ), last
    command = last.removeprefix(said)
    assert record["resume"] == command  # the console's command, the run's own overrides in it (before: "...")
    assert f"- {first.name} (interrupted): its training completed: test it in its folder with: `{command}`" in report(
        first
    )
    (stop / "in_test.yaml").write_text("# @package _global_\n{}\n")  # (the test goes on unstopped this time)
    # retyped without its seed=7: the run's record (Hydra writes it anew) still names the seed it trained with
    assert " seed=7 " in command
    resumed = run(*shlex.split(command.replace(" seed=7 ", " ")))
    assert "its training completed: testing" in resumed.stdout + resumed.stderr
    assert f"{first}/checkpoints/last.ckpt was trained with seed=7: the run goes on with " in resumed.stdout
    assert yaml.safe_load((first / ".hydra" / "config.yaml").read_text())["seed"] == 7
    assert "| first | " in report(first) and "| completed |" in report(first)
    assert "how each goes on" not in report(first)
    run("rnnreg-train", *args, f"hydra.run.dir={whole}")
    completed, uninterrupted = (json.loads((run / "metrics.json").read_text()) for run in (first, whole))
    timed = ("train_seconds", "words_per_second", "words_per_second_median_step", "words_per_second_last_epoch")
    assert {k: v for k, v in completed.items() if k not in timed} == {
        k: v for k, v in uninterrupted.items() if k not in timed
    }
    assert list(completed) == list(uninterrupted)  # (its keys in the order a run writes them)


@pytest.mark.slow
def test_slurm_time_limit_signal_stops_like_sigterm(tiny_corpus, tmp_path):
    """SIGUSR1 under SLURM (`#SBATCH --signal=SIGUSR1@90`: its warning before the time limit) stops after the window
    with a resumable last.ckpt and exit 138, as SIGTERM does (a SIGTERM stop resumes exactly: test_resume). Before:
    Lightning's requeue handler saved hpc_ckpt_1.ckpt from inside the handler, ran `scontrol requeue`, training went
    on (exit 0) and the final test loaded that hpc checkpoint's weights. Nor is an hpc_ckpt_*.ckpt in
    trainer.default_root_dir (the run's folder) loaded (Lightning's SLURM auto-resume)."""
    run_dir = tmp_path / "run"
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=10", f"hydra.run.dir={run_dir}"]
    proc = run("rnnreg-train", *args, *signal_at(signal.SIGUSR1, 7), check=False, env=srun_env())  # one SLURM task
    assert proc.returncode == 128 + signal.SIGUSR1, proc.stderr[-3000:]
    go_on = proc.stdout.strip().splitlines()[-1].partition("go on with: ")[2]  # the console's command
    assert go_on.endswith(f" ckpt_path={run_dir}/checkpoints/last.ckpt"), proc.stdout[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text()) == {
        "status": "interrupted",
        "error": STOPPED_BY[signal.SIGUSR1],
        "epochs": 0,
        "resume": go_on,
    }
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 7 and ckpt["train_window"] == 7
    assert ckpt["train_carry"]["tokens"] == 7 * 5 * 4  # the exact position: windows x bptt x streams
    # Lightning's handler never ran: no hpc checkpoint, no requeue, no logger finalized (its first act)
    assert not list(run_dir.rglob("hpc_ckpt_*"))
    log = (run_dir / "train.log").read_text()
    assert "SIGUSR1: every process stops after this step" in log
    assert "requeu" not in log + proc.stdout + proc.stderr and "scontrol" not in proc.stderr
    # trainer.default_root_dir is the run's folder, where Lightning's SLURM auto-resume looks for hpc_ckpt_*.ckpt:
    # a folder holding one is refused before anything runs (before, a default_root_dir elsewhere held it)
    (run_dir / "hpc_ckpt_1.ckpt").write_text("not a checkpoint: loading it fails")
    proc = run("rnnreg-train", *args, f"ckpt_path={run_dir}/checkpoints/last.ckpt", env=srun_env(), check=False)
    assert proc.returncode == 2 and " is a folder of checkpoints, " in proc.stderr.strip().splitlines()[-1]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize(
    "signum,status,batch,resume",
    [(signal.SIGTERM, 143, 2, "printed"), (signal.SIGINT, 130, 1, "last")],
    ids=["SIGTERM-last-batch", "Ctrl-C-first-batch"],
)
def test_a_stop_in_the_sanity_check_stops_before_training_and_resumes_exactly(
    tiny_corpus, tmp_path, signum, status, batch, resume
):
    """SIGTERM or Ctrl-C during Lightning's sanity check (the 2 validation batches it runs before training): the run
    stops before its first window with a last.ckpt at global step 0, and the resume it prints (or ckpt_path=last in
    its folder) trains the uninterrupted run, to the digit. Before: in the sanity check's last batch it trained a
    window first (last.ckpt at global step 1); in an earlier one, and on any Ctrl-C there (a KeyboardInterrupt),
    it wrote global step 0, whose resume trainer.max_epochs=1 refused as `holds 1 trained epoch`."""
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.num_sanity_val_steps=2"]
    args += ["data.eval_bptt=5", "dropout=non_recurrent", "dropout.p=0.3", "logger=csv", "test=false"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=6"]
    run("rnnreg-train", *args, f"hydra.run.dir={tmp_path / 'whole'}")
    first = tmp_path / "first"
    stop = ["+callbacks.stop._target_=helpers.SignalInValidation", f"+callbacks.stop.signum={int(signum)}"]
    stop += [f"+callbacks.stop.batch={batch}", "+callbacks.stop.sanity_check=true"]
    proc = run("rnnreg-train", *args, *stop, f"hydra.run.dir={first}", check=False)
    assert proc.returncode == status, proc.stderr[-3000:]
    last = first / "checkpoints" / "last.ckpt"
    stopped = json.loads((first / "metrics.json").read_text())
    go_on = proc.stdout.strip().splitlines()[-1].partition("go on with: ")[2]  # the console's command
    assert go_on.startswith("rnnreg-train experiment=paper_small ") and go_on.endswith(f" ckpt_path={last}")
    assert stopped == {"status": "interrupted", "error": STOPPED_BY[signum], "epochs": 0, "resume": go_on}
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 0 and ckpt["train_window"] == 0 and "train_carry" not in ckpt
    assert ckpt["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]["total"]["completed"] == 0
    assert history(first, "train/lr") == []  # not even the first epoch's start
    log = (first / "train.log").read_text()
    if resume == "printed":
        go_on = [f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'second'}"]
    else:
        go_on = ["ckpt_path=last", f"hydra.run.dir={first}"]
    run("rnnreg-train", *args, *go_on)
    resumed = tmp_path / ("second" if resume == "printed" else "first")
    whole, again = (json.loads((folder / "metrics.json").read_text()) for folder in (tmp_path / "whole", resumed))
    assert again["status"] == "completed" and again["val_ppl"] == whole["val_ppl"]
    assert history(resumed, "train/ppl") == history(tmp_path / "whole", "train/ppl")
    a, b = (torch.load(f / "checkpoints" / "last.ckpt", weights_only=False) for f in (tmp_path / "whole", resumed))
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(value, b["state_dict"][name]) for name, value in a["state_dict"].items())
    said = (
        "Ctrl-C: stopping before training starts" if signum == signal.SIGINT else "every process stops before training"
    )
    assert said in log and "rnnreg: training " not in log  # (the run plan's line)
    assert ("SIGTERM" not in log) == (signum == signal.SIGINT)  # (a Ctrl-C says so in its own words)


def test_metrics_json_names_what_sent_each_stop_signal():
    """metrics.json's `error` of a run a signal stopped: the signal, and who sends it (SIGUSR1 is SLURM's warning
    before its time limit, SIGUSR2 submitit's); the tests of each stop compare with this table."""
    assert STOPPED_BY == {
        signal.SIGINT: "Ctrl-C (stopped by the user)",
        signal.SIGTERM: "SIGTERM (pre-empted or stopped)",
        signal.SIGUSR1: "SIGUSR1 (SLURM's warning before its time limit)",
        signal.SIGUSR2: "SIGUSR2 (submitit's warning before its time limit, or pre-emption)",
    }


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda d: (d / "valid.txt").unlink(), r"missing valid file .*valid.txt: put the valid text file there"),
        (lambda d: (d / "test.txt").write_text(""), r"test.txt is empty"),
        (lambda d: (d / "train.txt").write_bytes(b"caf\xe9 au lait\n"), r"train.txt is not UTF-8 text \(byte 3\)"),
        (lambda d: ((d / "valid.txt").unlink(), (d / "valid.txt").mkdir()), r"valid.txt is not a file \(a folder\?\)"),
    ],
)
def test_bad_data_stops_before_training(tiny_cfg, tiny_corpus, tmp_path, corrupt, message):
    corrupt(tiny_corpus)
    with pytest.raises(DataError, match=message):
        train(tiny_cfg())
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_a_value_a_config_target_refuses_is_its_own_one_line_error_not_hydras(tiny_cfg):
    """build() (rnnreg.train's, which a library user calls without train()'s checks): the data module's own refusal
    of data.bptt=0 comes as its DataError, not wrapped in Hydra's InstantiationException."""
    refused = (
        r"^data.bptt=0 must be an integer >= 1 \(unroll length; the paper's: 20 \(small\), 35 \(medium, large\)\)$"
    )
    with pytest.raises(DataError, match=refused):
        build(tiny_cfg("data.bptt=0"))


@pytest.mark.parametrize(
    "override,message",
    [
        ("dropout.input=1.0", r"^dropout.input=1.0 must be a number in \[0, 1\)"),
        ("dropout.recurrent=-0.1", r"^dropout.recurrent=-0.1 must be a number in \[0, 1\)"),
        ("data.bptt=0", r"^data.bptt=0 must be an integer >= 1"),
        ("data.batch_size=-2", r"^data.batch_size=-2 must be an integer >= 1"),
        ("model.init_scale=0", r"^model.init_scale=0 must be a number > 0"),
        ("optim.lr=0", r"^optim.lr=0 must be a number > 0"),
        ("trainer.gradient_clip_algorithm=value", r"^trainer.gradient_clip_algorithm=value must be one of norm"),
        # Lightning's registry, after the config's usual values (before: its list, cut before them)
        ("trainer.precision=8", r"^trainer.precision=8 must be one of 32-true, 16-mixed, bf16-mixed, 64, "),
        # an argument the schema passes on to Lightning, which refuses it: one line, not Hydra's page
        (
            "+trainer.overfit_batches=-1",
            r"^trainer.overfit_batches=-1 is refused by Lightning's Trainer: You have passed invalid value -1 for ",
        ),
        # ... and one it takes that would train no window, filed as completed all the same
        ("+trainer.max_steps=0", r"^trainer.max_steps=0 must be -1 or a count of training windows >= 1 \(-1, the "),
        ("+trainer.max_steps=-5", r"^trainer.max_steps=-5 must be -1 or a count of training windows >= 1 "),
        # what barebones mode turns off, rnnreg's runs need (before: Lightning's words, naming a logger's repr)
        ("+trainer.barebones=true", r"^trainer.barebones=true turns off the loggers, checkpoints and progress bar "),
        # refused by the Trainer's constructor with a ValueError, or an ImportError (a package a setting needs)
        (
            "trainer.precision=transformer-engine",
            r"^Lightning's Trainer refuses a trainer.\* setting: Requirement 'transformer_engine>=.*' not met",
        ),
        # best.ckpt is one file, the lowest val/ppl: more saves would overwrite it, another monitor would not be it
        (
            "callbacks.model_checkpoint.save_top_k=3",
            r"^callbacks.model_checkpoint.save_top_k=3: .*: leave save_top_k at 1$",
        ),
        (
            "callbacks.model_checkpoint.monitor=train/loss",
            r"^callbacks.model_checkpoint.monitor=train/loss: .*val/ppl$",
        ),
        # without a monitor, ModelCheckpoint keeps the latest weights, not the best
        ("~callbacks.model_checkpoint.monitor", r"^callbacks.model_checkpoint.monitor=None: .*val/ppl$"),
        ("callbacks.model_checkpoint.mode=max", r"^callbacks.model_checkpoint.mode=max: .*: leave mode at min$"),
        # saved on other beats than every validation: best.ckpt would miss a best epoch, or not be its weights
        (
            "+callbacks.model_checkpoint.every_n_epochs=2",
            r"^callbacks.model_checkpoint.every_n_epochs=2: .*: leave every_n_epochs out \(to validate less often",
        ),
        ("+callbacks.model_checkpoint.every_n_train_steps=2", r"^callbacks.model_checkpoint.every_n_train_steps=2: "),
        ("+callbacks.model_checkpoint.train_time_interval=1", r"^callbacks.model_checkpoint.train_time_interval=1: "),
        # last.ckpt is the last epoch's full state: a monitor would make it the best epoch's
        (
            "callbacks.last_checkpoint.monitor=val/ppl",
            r"^callbacks.last_checkpoint.monitor=val/ppl: .*leave monitor at",
        ),
        (
            "callbacks.last_checkpoint.save_top_k=2",
            r"^callbacks.last_checkpoint.save_top_k=2: .*leave save_top_k at 1$",
        ),
        ("callbacks.last_checkpoint.filename=final", r"^callbacks.last_checkpoint.filename=final: .*at last$"),
        # its processes hand their results back in Lightning's .temp.ckpt, which is not rnnreg's
        ("+trainer.strategy=ddp_spawn", r"^trainer.strategy=ddp_spawn starts its processes .* trainer=ddp"),
        ("+trainer.strategy=ddp_fork", r"^trainer.strategy=ddp_fork starts its processes .* trainer=ddp"),
    ],
)
def test_bad_config_values_stop_before_training(tiny_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(tiny_cfg(override))
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "args", [["dropout=sideways"], ["-m", "dropout=none,sideways"], ["regularizer=[layer_norm,sideways]"]]
)
def test_unknown_group_option_is_one_line(tmp_path, args):
    proc = run("rnnreg-train", *args, f"hydra.run.dir={tmp_path}", f"hydra.sweep.dir={tmp_path}", check=False)
    group = args[-1].split("=")[0]
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {group}=sideways is not an option: choose one of "
        f"{', '.join(sorted(p.stem for p in (Path(CONF_DIR) / group).glob('*.yaml')))} (files in {CONF_DIR}/{group})"
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_checkpoint_from_another_vocabulary_is_refused(tiny_corpus, tmp_path):
    """... with the data its run was trained on named, from the run's .hydra/overrides.yaml: the overrides that chose
    its corpus (not its data.bptt or data.batch_size, which read the same words)."""
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    run("rnnreg-train", *tiny, "trainer.limit_train_batches=2", "test=false", f"hydra.run.dir={tmp_path}/run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    other = write_corpus(tmp_path / "other", vocab=25, seed=3)
    cfg = compose_config(
        ["data=text", f"data.data_dir={other}", f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false"],
        tmp_path / "eval",
        config_name="eval",
    )
    with pytest.raises(ConfigError) as err:
        evaluate(cfg)
    assert str(err.value) == (
        f"{ckpt} was trained on another vocabulary (42 words) than this data (27 words): evaluate it on the data it "
        f"was trained on (data=text data.data_dir={tiny_corpus}, from its run's "
        ".hydra/overrides.yaml)"
    )
    assert not (tmp_path / "eval" / "metrics.json").exists()
    assert load_task(str(ckpt)).vocab  # the checkpoint itself is untouched and loads
    # resumed on the other data: the same line, naming the checkpoint (it said "the checkpoint", with no data)
    resumed = ["experiment=paper_small", *TINY, f"data.data_dir={other}", f"ckpt_path={ckpt}", "trainer.max_epochs=2"]
    proc = run("rnnreg-train", *resumed, f"hydra.run.dir={tmp_path}/resumed", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {ckpt} was trained on another vocabulary (42 words) than this data (27 words): resume it on the data "
        f"it was trained on (data=text data.data_dir={tiny_corpus}, from its run's "
        ".hydra/overrides.yaml)"
    ), proc.stderr[-3000:]


def test_a_bug_inside_training_keeps_its_traceback(tiny_corpus, tmp_path):
    """Only rnnreg's own UserErrors are one-line errors: a ValueError from a bug is not shown as if the
    user had mistyped something."""
    proc = run(
        "rnnreg-train",
        "experiment=paper_small",
        *TINY,
        f"data.data_dir={tiny_corpus}",
        "trainer.max_epochs=1",
        "+callbacks.bug._target_=helpers.RaiseAtFirstWindow",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )  # helpers is on the PYTHONPATH conftest gives the processes tests start
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "ValueError: a bug in a callback, not a user error" in proc.stderr
    assert not proc.stderr.strip().splitlines()[-1].startswith("error:")


def test_fast_dev_run_works_with_early_stopping(tiny_cfg):
    """Lightning's debug flag with every option: early stopping tests best.ckpt, which fast_dev_run never
    writes; the debug test then uses the final weights."""
    metrics = train(tiny_cfg("regularizer=[early_stopping]", "trainer.fast_dev_run=true"))
    assert metrics["status"] == "completed" and metrics["epochs"] == 1 and metrics["test_ppl"] > 1


@pytest.mark.parametrize(
    "overrides,val_epoch,steps",
    [
        (["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2", "test=false"], 2, 12),
        # nothing validated: early stopping's best.ckpt never exists, the test takes the final weights
        (["trainer.max_epochs=2", "trainer.check_val_every_n_epoch=3", "regularizer=[early_stopping]"], None, 8),
        (["trainer.max_epochs=2", "+trainer.max_steps=3", "test=false"], None, 3),
    ],
    ids=["every-2nd-epoch", "never", "max-steps"],
)
def test_a_run_that_skips_validation_saves_its_final_model_and_says_what_was_validated(
    tiny_cfg, tmp_path, overrides, val_epoch, steps
):
    with warnings.catch_warnings(record=True) as shown:  # what passes the filters a run has (rnnreg.runtime)
        metrics = train(tiny_cfg("trainer.limit_train_batches=4", *overrides))
    # rnnreg says that no validation ran; Lightning's hint that the model never logged val/ppl would blame the model
    assert not [w for w in shown if "could not find the monitored key" in str(w.message)]
    assert json.loads((tmp_path / "run/metrics.json").read_text()) == metrics and metrics["status"] == "completed"
    assert metrics.get("val_epoch") == val_epoch
    assert ("val_ppl" in metrics) == ("best_val_ppl" in metrics) == bool(val_epoch)  # none when none ran
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == steps  # the final weights, not those of the last validated epoch
    assert (tmp_path / "run/checkpoints/best.ckpt").exists() == bool(val_epoch)


@pytest.mark.parametrize(
    "overrides, line",
    [
        (  # a mistyped argument of one's own callback (before: Hydra's page, exit 1)
            ["+callbacks.mine._target_=helpers.RaiseAtFirstWindow", "+callbacks.mine.tagg=1"],
            "callbacks.mine (helpers.RaiseAtFirstWindow) could not be made: RaiseAtFirstWindow() takes no arguments: "
            "check callbacks.mine._target_ and the arguments its class takes",
        ),
        (
            ["+callbacks.lr_monitor.foo=1"],
            "callbacks.lr_monitor (lightning.pytorch.callbacks.LearningRateMonitor) could not be made: "
            "LearningRateMonitor.__init__() got an unexpected keyword argument 'foo': check "
            "callbacks.lr_monitor._target_ and the arguments its class takes",
        ),
        (
            ["+logger.mine._target_=nomodule.Logger"],
            "logger.mine (nomodule.Logger) could not be made: it cannot be imported (No module named 'nomodule'): "
            "check logger.mine._target_ and the arguments its class takes",
        ),
        (  # no callback at all (before: a traceback at Lightning's first hook)
            ["+callbacks.mine._target_=collections.OrderedDict"],
            "callbacks.mine._target_=collections.OrderedDict is not a Lightning callback (lightning.pytorch.Callback): "
            "give a callback's class, or remove callbacks.mine",
        ),
    ],
    ids=["argument", "rnnreg-callback-argument", "logger-import", "not-a-callback"],
)
def test_a_callback_or_logger_that_cannot_be_made_is_one_line_naming_its_entry(tiny_cfg, overrides, line):
    with pytest.raises(ConfigError) as refused:
        train(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", *overrides))
    assert str(refused.value) == line


def test_runs_without_the_speed_monitor(tiny_cfg):
    metrics = train(tiny_cfg("callbacks.speed_monitor=null", "trainer.max_epochs=1", "trainer.limit_train_batches=3"))
    assert metrics["status"] == "completed" and "words_per_second" not in metrics


# lr x10 after epoch 1: epoch 2 is worse than epoch 1
WORSE_LATER = (
    "optim.decay=0.1",
    "optim.decay_start=1",
    "trainer.gradient_clip_val=100",
    "trainer.limit_train_batches=4",
)


def test_best_val_ppl_is_the_lowest_validation_without_a_best_checkpoint(tiny_cfg, tmp_path, caplog):
    """best_val_ppl is epoch 1's val/ppl though no best.ckpt holds epoch 1 (it used to be the last val/ppl);
    test_ckpt=best with no best.ckpt says it tests the final weights (it tested last.ckpt's callback's "best": the
    final weights, silently)."""
    every = train(tiny_cfg(*WORSE_LATER, "trainer.max_epochs=2", "test=false", run="every"))
    assert every["best_val_ppl"] < every["val_ppl"]  # epoch 1's, kept in best.ckpt
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        kept = "callbacks.model_checkpoint=null"
        metrics = train(tiny_cfg(*WORSE_LATER, "trainer.max_epochs=2", "test_ckpt=best", kept))
    assert metrics["best_val_ppl"] == every["best_val_ppl"] and metrics["val_ppl"] == every["val_ppl"]
    said = [r.getMessage() for r in caplog.records if r.name == "rnnreg" and r.levelno == logging.WARNING]
    assert "callbacks.model_checkpoint=null keeps no best checkpoint: testing the final weights" in said


def test_a_resumed_run_keeps_its_lowest_validation_without_a_best_checkpoint(tiny_cfg, tmp_path):
    """Resumed with callbacks.model_checkpoint=null, its best_val_ppl is the uninterrupted run's: epoch 1's, from
    the checkpoint (it used to be the last val/ppl, epoch 2's)."""
    kept = (*WORSE_LATER, "callbacks.model_checkpoint=null", "test=false")
    whole = train(tiny_cfg(*kept, "trainer.max_epochs=2", run="whole"))
    train(tiny_cfg(*kept, "trainer.max_epochs=1", run="first"))
    last = f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt"
    resumed = train(tiny_cfg(*kept, "trainer.max_epochs=2", last, run="second"))
    assert resumed["best_val_ppl"] == whole["best_val_ppl"] < resumed["val_ppl"] == whole["val_ppl"]


def test_a_validation_interval_past_the_epoch_is_one_line_and_leaves_the_folder_reusable(
    tiny_cfg, tiny_corpus, tmp_path
):
    """+trainer.val_check_interval=10 with 3 windows an epoch: one line and exit 2 once the data is read, and no
    metrics.json (it used to be Lightning's traceback, exit 1, and a failed metrics.json refusing the folder)."""
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "test=false"]
    folder = f"hydra.run.dir={tmp_path}/run"
    proc = run(
        "rnnreg-train", *tiny, "trainer.limit_train_batches=3", "+trainer.val_check_interval=10", folder, check=False
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: trainer.val_check_interval=10 is more than the 3 training windows of an epoch: set it to at most 3, "
        "or to a fraction of the epoch (e.g. 0.5)"
    ]
    assert not (tmp_path / "run/metrics.json").exists() and not (tmp_path / "run/checkpoints").exists()
    metrics = train(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=3", "+trainer.val_check_interval=3"))
    assert metrics["status"] == "completed" and metrics["val_epoch"] == 1


def test_a_validation_interval_of_no_windows_is_one_line_before_the_run(tiny_corpus, tmp_path):
    """+trainer.val_check_interval=0: Lightning takes it, and its loop fails with a ZeroDivisionError (a traceback,
    exit 1, a failed metrics.json refusing the folder); now one line, exit 2, before the run folder is made."""
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "test=false"]
    proc = run("rnnreg-train", *tiny, "+trainer.val_check_interval=0", f"hydra.run.dir={tmp_path}/run", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: trainer.val_check_interval=0 must be a count of training windows >= 1 or a fraction of the epoch in "
        "(0, 1] (e.g. 0.5); to validate less often, set trainer.check_val_every_n_epoch"
    ], proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_a_run_starts_is_one_line_and_leaves_the_folder_reusable(tiny_corpus, tmp_path):
    """Ctrl-C while rnnreg-train still imports its training code (the first seconds): one line, exit 130 (before:
    a KeyboardInterrupt traceback through the imports), the last (a library's INFO lines at exit once followed it);
    nothing was trained, so the same command runs in the folder."""
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=2", "test=false", f"hydra.run.dir={tmp_path}/run"]
    proc = run_signal_at_import(
        signal.SIGINT, "rnnreg.training", tmp_path / "hook", "rnnreg-train", *args, info_at_exit=True
    )
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "interrupted: rnnreg-train stopped by Ctrl-C before it finished"
    assert "its cache stats" not in proc.stdout + proc.stderr  # (Hydra's console log is stdout: after it on a tty)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert run("rnnreg-train", *args).returncode == 0  # the same command, in the same folder
