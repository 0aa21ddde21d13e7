"""A newcomer's first hour: what will run and for how long, a progress bar that tells the truth, fast
--help, one-line errors for missing values, the config tree, debug presets, rnnreg as a library, and the
example that uses it."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import __version__ as hydra_version
from hydra.types import RunMode
from omegaconf.errors import MissingMandatoryValue

import rnnreg
import warm_start
from helpers import BIN, TINY, compose_config, piped, run
from rnnreg import CONF_DIR
from rnnreg.callbacks import LMProgressBar, SpeedMonitor, run_seconds_left, validation_seconds
from rnnreg.command_line import validate_args
from rnnreg.config_tree import print_config_tree
from rnnreg.console import cpu_model, format_duration
from rnnreg.errors import ConfigError
from rnnreg.runtime import missing_key
from rnnreg.timing import estimate_run_seconds, seconds_per_eval_window
from rnnreg.train import train

ROOT = Path(__file__).resolve().parents[1]


# -- the estimate ------------------------------------------------------------------------------------
def test_estimate_from_measured_window_times():
    # from the start: 3 epochs x 100 windows at 0.5 s, a 10 s validation after each epoch
    assert estimate_run_seconds(0.5, 100, 3, val_seconds=10.0) == (150.0, 30.0)
    # 50 windows into the second epoch: 150 windows and the validations of epochs 2 and 3 left
    assert estimate_run_seconds(0.5, 100, 3, 10.0, epoch=1, windows_done=50) == (75.0, 20.0)
    # validation every second epoch: only after epoch 2 of 3
    assert estimate_run_seconds(0.5, 100, 3, 10.0, val_every=2) == (150.0, 10.0)
    assert estimate_run_seconds(1.0, 10, 2, 5.0, epoch=2) == (0.0, 0.0)  # done
    assert [format_duration(s) for s in (45, 750, 3725, 6 * 3600)] == [
        "45 s",
        "12 min 30 s",
        "1 h 02 min",
        "6 h 00 min",
    ]


def test_an_evaluation_window_is_timed_after_one_untimed():
    """seconds_per_eval_window: the first window evaluated alone and untimed (a first call at a shape allocates),
    then `measure` windows in one timed pass; with fewer windows, all of them timed."""
    now, calls = [0.0], []

    def evaluate(batches):  # window i takes 10 s the first time it is seen, then i s
        calls.append(list(batches))
        now[0] += sum(10.0 if i == 0 else float(i) for i in batches)

    assert seconds_per_eval_window(evaluate, list(range(9)), lambda: now[0], measure=3) == (1 + 2 + 3) / 3
    assert calls == [[0], [1, 2, 3]]
    calls.clear()
    assert seconds_per_eval_window(evaluate, [0], lambda: now[0]) == 10.0 and calls == [[0]]


def test_the_estimate_covers_every_planned_epoch(tiny_cfg, monkeypatch):
    """The run plan's estimate is made of the whole run: every planned epoch's windows at the measured time a
    window, and its validations, from the run's start (the estimate's arithmetic:
    test_estimate_from_measured_window_times)."""
    import rnnreg.callbacks

    asked = []

    def recorded(*args):  # the real estimate, its arguments kept
        asked.append(args)
        return estimate_run_seconds(*args)

    monkeypatch.setattr(rnnreg.callbacks, "estimate_run_seconds", recorded)
    train(tiny_cfg("trainer.max_epochs=3", "trainer.limit_train_batches=13", "test=false"))
    ((per_window, windows, epochs, val, val_every, epoch, done),) = asked
    assert (windows, epochs, val_every, epoch, done) == (13, 3, 1, 0, 0) and per_window > 0
    assert val > 0  # each epoch's validation pass, estimated from the training speed per word


@pytest.mark.parametrize("tested", [True, False])
def test_the_estimate_holds_the_final_test_timed_on_validation_windows(tiny_cfg, monkeypatch, tested):
    """With a final test (test=true) the run plan's estimate holds it: each protocol's test windows (one stream,
    then data.batch_size streams; trainer.limit_test_batches applied) at what one window takes at its streams,
    timed on the validation split's windows there (here 1 s a window timed: the count of windows); test=false:
    no test in it."""
    import rnnreg.timing
    from rnnreg.callbacks import RunPlan
    from rnnreg.data import batchify
    from rnnreg.training import build

    timed = []

    def one_second_a_window(evaluate, windows, clock, measure=2):
        timed.append(windows)
        evaluate([windows[0]])  # the run's network evaluates the window
        return 1.0

    monkeypatch.setattr(rnnreg.timing, "seconds_per_eval_window", one_second_a_window)
    budget = ("trainer.max_epochs=1", "trainer.limit_train_batches=13", "data.eval_bptt=7")
    cfg = tiny_cfg(*budget, "trainer.limit_test_batches=30", f"test={str(tested).lower()}")
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    (plan,) = [c for c in trainer.callbacks if isinstance(c, RunPlan)]
    ids = datamodule.load().ids
    if not tested:
        assert timed == [] and plan.message.endswith(")") and " test" not in plan.message.splitlines()[-1]
        return
    streams = (cfg.data.test_batch_size, cfg.data.batch_size)
    counts = [math.ceil((ids["test"].numel() // b - 1) / 7) for b in streams]  # the last partial window kept
    assert counts[0] > 30 >= counts[1] > 1  # trainer.limit_test_batches cuts the one-stream protocol only
    assert plan.message.splitlines()[-1].endswith(f" + test {format_duration(30 + counts[1])})"), plan.message
    assert [w.bptt for w in timed] == [7, 7]
    for windows, b in zip(timed, streams):
        assert torch.equal(windows.streams, batchify(ids["valid"], b))


def test_the_test_estimate_adds_the_evaluation_loop_to_each_window():
    """Each protocol's windows at its forward's time a window plus what the evaluation loop adds to one: a window
    timed through the loop less its forward timed bare, never below 0 (a forward timed slower than the loop)."""
    from rnnreg.timing import eval_loop_seconds, testing_seconds

    assert eval_loop_seconds(3.0, 2.0) == 1.0 and eval_loop_seconds(1.0, 2.0) == 0.0
    assert testing_seconds([(10, 0.5), (4, 2.0)], 0.25) == 10 * 0.75 + 4 * 2.25
    assert testing_seconds([(10, 0.5), (4, 2.0)]) == 10 * 0.5 + 4 * 2.0


def test_the_plan_times_the_test_and_validation_through_the_evaluation_loop(tiny_cfg, monkeypatch):
    """The plan's final test holds what Lightning's evaluation loop adds to each window (hooks, logging, data
    loading, the metric), measured on the sanity check's windows past its first (the same loop), not the
    network's forward alone (before: "test 0 s" for a small model whose test takes seconds); its validation is
    the validation's windows at the sanity check's time a window. Known timings: the clock ticks 1 s a reading,
    so a forward over 2 windows is 0.5 s a window, and the sanity check's second window (its default 2) 1 s."""
    import rnnreg.callbacks
    from rnnreg.callbacks import RunPlan
    from rnnreg.training import build

    ticks = iter(range(10**6))
    monkeypatch.setattr(rnnreg.callbacks, "device_clock", lambda device: float(next(ticks)))
    budget = ("trainer.max_epochs=1", "trainer.limit_train_batches=13", "data.eval_bptt=7")
    cfg = tiny_cfg(*budget, "trainer.limit_test_batches=30", "trainer.num_sanity_val_steps=2")
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    (plan,) = [c for c in trainer.callbacks if isinstance(c, RunPlan)]
    ids = datamodule.load().ids
    test = [min(30, math.ceil((ids["test"].numel() // b - 1) / 7)) for b in (1, cfg.data.batch_size)]
    valid = math.ceil((ids["valid"].numel() // cfg.data.batch_size - 1) / 7)
    assert plan.test_seconds == sum(test) * (0.5 + (1 - 0.5)), plan.message  # before: sum(test) * 0.5
    assert plan.test_protocols == [(test[0], 0.5), (test[1], 0.5)]
    said = f"validation {format_duration(valid * 1.0)} + test {format_duration(sum(test) * 1.0)})"
    assert plan.message.splitlines()[-1].endswith(said), plan.message


def test_the_eta_times_the_test_on_the_latest_validation_pass(tiny_cfg, monkeypatch):
    """After a validation pass, the ETA's final test is its windows at what that pass took a window (the same
    loop as the test's), the validation's bare forward (here stubbed at 0 s a window) taken out; before any
    validation and with no sanity check, the forward's alone (0 s here)."""
    import rnnreg.timing
    from rnnreg.training import build

    monkeypatch.setattr(rnnreg.timing, "seconds_per_eval_window", lambda *args, **kwargs: 0.0)
    budget = ("trainer.max_epochs=2", "trainer.limit_train_batches=14", "trainer.limit_test_batches=3")
    datamodule, task, trainer = build(tiny_cfg(*budget, "data.eval_bptt=7", "callbacks.run_plan.measure_windows=4"))

    class ReadTest(L.Callback):
        """After every window: the ETA less its training and validation left, and the latest validation pass."""

        def __init__(self):
            self.shown = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            speed = next(c for c in trainer.callbacks if isinstance(c, SpeedMonitor))
            left, per_window = run_seconds_left(trainer, speed), speed.seconds_per_window
            if left is not None:
                epoch = trainer.current_epoch
                train_left = (2 * 14 - (epoch * 14 + batch_idx + 1)) * per_window
                test = left - train_left - (2 - epoch) * validation_seconds(trainer, speed, per_window)
                self.shown.append((epoch, test, speed.val_seconds))

    reader = ReadTest()
    trainer.callbacks.append(reader)
    trainer.fit(task, datamodule=datamodule)
    valid = math.ceil((datamodule.load().ids["valid"].numel() // 4 - 1) / 7)  # data.batch_size=4 streams
    first = [test for epoch, test, _ in reader.shown if epoch == 0]
    assert first and first == pytest.approx([0.0] * len(first), abs=1e-9)
    second = [(test, val) for epoch, test, val in reader.shown if epoch == 1]
    for test, val in second:  # 3 windows of each protocol, each at the pass's time a window
        assert test == pytest.approx((3 + 3) * val / valid) and test > 0, second
    assert second and len({val for _, val in second}) == 1  # the first epoch's pass
    from rnnreg.callbacks import validation_windows

    speed = next(c for c in trainer.callbacks if isinstance(c, SpeedMonitor))
    assert validation_windows(trainer) == speed.val_windows == valid > 1


def test_the_plan_counts_the_epochs_a_step_limit_leaves():
    """trainer.max_steps ends a run inside an epoch: the plan counts that epoch too (25 steps of 10 windows: 3
    epochs), and a limit inside the first epoch is 1 epoch, not 0; max_epochs still caps it."""
    from types import SimpleNamespace

    from rnnreg.callbacks import RunPlan, planned_epochs

    def trainer(max_epochs, max_steps):
        return SimpleNamespace(num_training_batches=10, max_epochs=max_epochs, max_steps=max_steps)

    assert planned_epochs(trainer(-1, 25)) == 3 and planned_epochs(trainer(5, 5)) == 1
    assert planned_epochs(trainer(2, 25)) == 2 and planned_epochs(trainer(5, -1)) == 5
    assert planned_epochs(trainer(-1, -1)) is None
    assert RunPlan.plan(trainer(-1, 25), planned_epochs(trainer(-1, 25))) == "3 epochs x 10 windows per epoch"


def test_the_cpu_hint_comes_only_over_its_threshold(tiny_cfg, monkeypatch):
    """callbacks.run_plan.cpu_hint_minutes=1: an estimate of 45 s gets no hint, one of an hour does (the
    threshold is in minutes; the estimate itself stubbed: test_the_estimate_covers_every_planned_epoch)."""
    import rnnreg.callbacks
    from rnnreg.callbacks import RunPlan
    from rnnreg.training import build

    budget = ("trainer.max_epochs=1", "trainer.limit_train_batches=13", "test=false")
    for estimate, hinted in (((40.0, 5.0), False), ((3000.0, 600.0), True)):
        monkeypatch.setattr(rnnreg.callbacks, "estimate_run_seconds", lambda *args, given=estimate: given)
        cfg = tiny_cfg(*budget, "callbacks.run_plan.cpu_hint_minutes=1", run=f"hinted_{hinted}")
        datamodule, task, trainer = build(cfg)
        trainer.fit(task, datamodule=datamodule)
        (plan,) = [c for c in trainer.callbacks if isinstance(c, RunPlan)]
        assert f"estimated total: {format_duration(sum(estimate))}" in plan.message
        assert ("hint: this is long for a CPU" in plan.message) == hinted, plan.message


@pytest.mark.parametrize(
    "experiment, suggested",
    [
        ("paper_medium", ["experiment=smoke", "experiment=paper_small"]),
        ("paper_small", ["experiment=smoke"]),
        ("smoke", []),
    ],
)
def test_the_cpu_hint_suggests_only_recipes_shorter_than_the_run(tiny_cfg, monkeypatch, experiment, suggested):
    """A long CPU run of paper_small is pointed to smoke alone, and one of smoke (the shortest) to no recipe: it says
    what smoke takes as it is, so a busy CPU or a lengthening override shows as the cause."""
    import rnnreg.callbacks
    from rnnreg.callbacks import RunPlan
    from rnnreg.training import build

    monkeypatch.setattr(rnnreg.callbacks, "estimate_run_seconds", lambda *args: (3000.0, 600.0))
    cfg = tiny_cfg(
        "trainer.max_epochs=1", "trainer.limit_train_batches=13", "test=false", f"experiment_name={experiment}"
    )
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    (plan,) = [c for c in trainer.callbacks if isinstance(c, RunPlan)]
    (hint,) = [line for line in plan.message.splitlines() if "hint: this is long for a CPU" in line]
    assert re.findall(r"experiment=\w+", hint.partition(" try ")[2]) == suggested, hint
    if experiment == "smoke":
        assert "experiment=smoke as it is takes under a minute on 2 free cores" in hint, hint


def test_real_run_says_what_runs_and_how_long(tiny_corpus, tmp_path):
    """A real rnnreg-train: the plan when training starts, then the measured estimate (and, over the CPU
    threshold, the hint) in train.log; the config tree on the console and in config_tree.log. Nothing of a setting
    the user never chose: an epoch of 13 windows under the default trainer.log_every_n_steps (50) logged to CSV is
    not warned of (before: Lightning's warning to lower it)."""
    out = tmp_path / "run"
    proc = run(
        "rnnreg-train",
        "experiment=paper_small",
        *TINY,
        "logger=csv",
        f"data.data_dir={tiny_corpus}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=13",
        "test=false",
        "callbacks.run_plan.cpu_hint_minutes=0",
        f"hydra.run.dir={out}",
        env={"OMP_NUM_THREADS": "1"},
    )
    log = (out / "train.log").read_text()
    # the CPU's model and thread count, which change a CPU run's float32 rounding
    device = f"on cpu ({cpu_model()}, 1 thread):"
    assert f"rnnreg: training paper_small (LSTM 2 x 16, 5,738 parameters, no dropout) {device}" in log
    assert "1 epoch x 13 windows per epoch" in log
    assert log.count("estimated total:") == 1 and "(over 10 windows after warm-up)" in log
    per_window = float(re.search(r"measured: ([0-9.e+-]+) s per window", log).group(1))
    assert 0 < per_window < 30
    (hint,) = [line for line in log.splitlines() if "hint: this is long for a CPU" in line]
    # a run of paper_small is pointed to the one recipe shorter than it
    assert hint.endswith(
        "hint: this is long for a CPU: try rnnreg-train experiment=smoke (under a minute), or run on a GPU"
    )
    assert "estimated total:" not in proc.stderr  # said once, through the log (console + train.log)
    # nothing a user cannot act on: Lightning's deprecation noise and its cloud advertisements
    assert "is deprecated" not in proc.stderr and "Tip:" not in proc.stdout + proc.stderr + log
    assert "log_every_n_steps" not in proc.stderr + log and "logging interval" not in proc.stderr + log
    tree = (out / "config_tree.log").read_text()
    assert "CONFIG" in proc.stdout and "CONFIG" in tree and "hidden_size: 16" in tree and "optim" in tree
    # a long value wraps at the console's width, cropped neither in the file nor on the console
    assert f"output_dir:{out}" in re.sub(r"[\s│]", "", tree) and len(f"    output_dir: {out}") > 80
    assert f"output_dir:{out}" in re.sub(r"[\s│]", "", proc.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1


def test_a_log_interval_the_user_chose_keeps_lightnings_warning_of_a_short_epoch(tiny_cfg, tmp_path, recwarn):
    """trainer.log_every_n_steps is the user's where the command line gives it (50 too, `++` too) or it differs from
    conf/trainer/default.yaml's: a real run of 3 windows an epoch under one of 10 is warned by Lightning, as
    Lightning warns; under the default, not."""
    from hydra import compose, initialize_config_dir

    from rnnreg.multirun_jobs import inside_job
    from rnnreg.runtime import chose_log_interval

    chosen = [("trainer.log_every_n_steps=50",), ("++trainer.log_every_n_steps=50",)]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        given = {n: compose("train", n, return_hydra_config=True) for n in [(), *chosen]}
    for overrides, config in given.items():
        with inside_job(config):
            assert chose_log_interval(config.trainer) is (overrides in chosen), overrides
    short = ("logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "test=false")
    train(tiny_cfg(*short, run="default"))
    assert not [w for w in recwarn if "logging interval" in str(w.message)]
    train(tiny_cfg(*short, "trainer.log_every_n_steps=10", run="chosen"))
    (warned,) = [w for w in recwarn if "logging interval" in str(w.message)]
    assert "Trainer(log_every_n_steps=10)" in str(warned.message)


def test_the_config_tree_shows_the_experiment_then_its_parts_then_the_rest(tiny_cfg, capsys):
    """The tree's branches: the experiment's name, then what makes the model and its training in a fixed order,
    then the other keys in the config's order (not the config's own order, where the experiment's name comes last
    and optim before data)."""
    cfg = tiny_cfg()
    tree = print_config_tree(cfg, console=False)
    branches = [line[4:].strip() for line in tree.splitlines() if line.startswith(("├── ", "└── "))]
    first = ["experiment_name", "data", "model", "dropout", "optim", "trainer", "callbacks", "logger"]
    assert branches == first + [key for key in cfg if key not in first]
    assert capsys.readouterr().out == ""  # console=False: the text only


# -- the progress bar ------------------------------------------------------------------------------
class ReadBar(L.Callback):
    """After every window (as Lightning does), what the progress bar shows and what the ETA is made of."""

    def __init__(self, bar: LMProgressBar):
        self.bar, self.shown = bar, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        speed = next(c for c in trainer.callbacks if isinstance(c, SpeedMonitor))
        metrics = self.bar.get_metrics(trainer, pl_module)
        per_window = speed.seconds_per_window
        val = validation_seconds(trainer, speed, per_window) if per_window else None
        left = run_seconds_left(trainer, speed)
        self.shown.append((trainer.current_epoch, batch_idx, metrics, left, per_window, val))


def test_progress_bar_loss_is_fresh_and_eta_covers_the_run(tiny_cfg):
    from rnnreg.training import build

    budget = ("trainer.max_epochs=2", "trainer.limit_train_batches=12", "trainer.log_every_n_steps=50", "test=false")
    cfg = tiny_cfg(*budget)
    datamodule, task, trainer = build(cfg)
    reader = ReadBar(LMProgressBar(refresh_rate=2))
    trainer.callbacks.append(reader)
    trainer.fit(task, datamodule=datamodule)
    first_epoch = [shown[2]["loss"] for shown in reader.shown if shown[0] == 0]
    assert len(first_epoch) == 12
    # re-read every 2 windows (refresh_rate), not once per log_every_n_steps (50) windows
    changes = sum(a != b for a, b in zip(first_epoch, first_epoch[1:]))
    assert 4 <= changes <= 6, first_epoch
    # the ETA is the whole run's: every window left in this and later epochs, and every validation left
    for epoch, i, metrics, left, per_window, val in reader.shown:
        if epoch == 0 and i < 4:  # the first 3 windows are warm-up: nothing measured yet
            assert left is None and "run ETA" not in metrics
            continue
        windows_left = 2 * 12 - (epoch * 12 + i + 1)
        assert left == pytest.approx(windows_left * per_window + (2 - epoch) * val)
        assert metrics["run ETA"]
    assert reader.shown[-1][4] > 0 and reader.shown[-1][5] > 0  # measured: a window, the first validation


def test_a_validation_not_yet_run_is_estimated_as_a_third_of_training_on_as_many_words(tiny_cfg):
    """Before a run's first validation, its ETA counts a validation pass as a third of the time training takes on
    as many words (the forward pass only); once one has run, as long as it took."""
    from rnnreg.training import build

    datamodule, task, trainer = build(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=3", "test=false"))
    estimated = []

    class Estimate(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            speed = next(c for c in trainer.callbacks if isinstance(c, SpeedMonitor))
            estimated.append(validation_seconds(trainer, speed, 1.0))  # at 1 s a training window

    trainer.callbacks.append(Estimate())
    trainer.fit(task, datamodule=datamodule)
    assert trainer.limit_val_batches == 1.0  # the whole validation set
    words, per_window = datamodule.load().ids["valid"].numel() - 1, datamodule.batch_size * datamodule.bptt
    assert estimated == pytest.approx([words / per_window / 3] * 3)
    speed = next(c for c in trainer.callbacks if isinstance(c, SpeedMonitor))
    assert validation_seconds(trainer, speed, 1.0) == speed.val_seconds > 0


@pytest.mark.filterwarnings("ignore:The number of training batches")  # its own fit, outside a run's (rnnreg.runtime)
def test_progress_bar_shows_no_logger_version(tiny_cfg, tmp_path, no_wandb_credentials):
    """With a W&B logger (whose version is its run id), the bar shows the loss, perplexity, words/s and ETA, not
    Lightning's v_num (the id's last 4 characters, which say nothing of the run)."""
    from rnnreg.loggers import wandb_logger
    from rnnreg.training import build

    datamodule, task, trainer = build(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=6"))
    trainer.loggers = [wandb_logger(project="p", save_dir=str(tmp_path / "w"), id="run1234")]
    reader = ReadBar(LMProgressBar(refresh_rate=1))
    trainer.callbacks.append(reader)
    trainer.fit(task, datamodule=datamodule)
    trainer.loggers[0].experiment.finish()
    assert reader.shown and all("v_num" not in metrics and "loss" in metrics for _, _, metrics, *_ in reader.shown)


def test_progress_bar_eta_counts_only_the_validations_that_will_run(tiny_cfg):
    """trainer.check_val_every_n_epoch=2 over 2 epochs: one validation is left in the first epoch's ETA (after
    epoch 2), not one per epoch."""
    from rnnreg.training import build

    budget = ("trainer.max_epochs=2", "trainer.limit_train_batches=8", "trainer.check_val_every_n_epoch=2")
    datamodule, task, trainer = build(tiny_cfg(*budget, "test=false"))
    reader = ReadBar(LMProgressBar(refresh_rate=1))
    trainer.callbacks.append(reader)
    trainer.fit(task, datamodule=datamodule)
    measured = [shown for shown in reader.shown if shown[3] is not None]
    assert any(epoch == 0 for epoch, *_ in measured)
    for epoch, i, metrics, left, per_window, val in measured:
        windows_left = 2 * 8 - (epoch * 8 + i + 1)
        assert val > 0 and left == pytest.approx(windows_left * per_window + val), (epoch, i)
        assert metrics["run ETA"] == format_duration(left)


def test_progress_bar_eta_holds_the_final_test_once_the_plan_has_measured_it(tiny_cfg, monkeypatch):
    """With a final test, the bar's run ETA adds the test's seconds the run plan measured with its estimate
    (here 1 s a test window: the count of test windows), from the window the plan measured it at on."""
    import rnnreg.timing
    from rnnreg.callbacks import RunPlan
    from rnnreg.training import build

    monkeypatch.setattr(rnnreg.timing, "seconds_per_eval_window", lambda *args, **kwargs: 1.0)
    budget = (
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=14",
        "trainer.limit_test_batches=3",
        "data.eval_bptt=7",
    )
    datamodule, task, trainer = build(tiny_cfg(*budget, "callbacks.run_plan.measure_windows=4"))
    reader = ReadBar(LMProgressBar(refresh_rate=1))
    trainer.callbacks.append(reader)
    trainer.fit(task, datamodule=datamodule)
    (plan,) = [c for c in trainer.callbacks if isinstance(c, RunPlan)]
    assert plan.test_seconds == 3 + 3  # both protocols, at most 3 windows each
    tests = {}  # what the ETA holds beyond the training and validation left, window by window
    for epoch, i, _, left, per_window, val in reader.shown:
        if left is not None:
            tests[epoch, i] = round(left - (2 * 14 - (epoch * 14 + i + 1)) * per_window - (2 - epoch) * val, 6)
    # nothing before the plan's windows (2 of warm-up + 4 timed: window 6, i 5) are done, the test's 6 s from then on
    assert tests == {(e, i): 6.0 if (e, i) >= (0, 5) else 0.0 for e, i in tests} and 0.0 in tests.values(), tests


def test_progress_bar_perplexity_is_the_exponential_of_its_loss(tiny_cfg):
    """The bar's ppl is exp(loss) of the loss it shows beside it (the mean NLL per word of the latest window)."""
    from rnnreg.training import build

    datamodule, task, trainer = build(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=6", "test=false"))
    reader = ReadBar(LMProgressBar(refresh_rate=1))
    trainer.callbacks.append(reader)
    trainer.fit(task, datamodule=datamodule)
    shown = [metrics for _, _, metrics, *_ in reader.shown]
    assert len(shown) == 6 and len({m["loss"] for m in shown}) > 1
    for metrics in shown:
        assert float(metrics["ppl"]) == pytest.approx(math.exp(float(metrics["loss"])), rel=2e-3), metrics


class ReadDescriptions(L.Callback):
    def __init__(self):
        self.seen = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = trainer.progress_bar_callback
        self.seen.add(bar.progress.tasks[bar.train_progress_bar_id].description.strip())


def test_hydras_log_settings_reach_lightnings_lines_and_the_pre_checks_debug_line(tiny_corpus, tmp_path):
    """hydra.job_logging.root.level=WARNING quieted rnnreg's INFO lines but not Lightning's (its loggers keep their own
    INFO level); hydra.verbose=rnnreg never showed why the pre-check skipped a command line (logged before Hydra had
    configured logging). Here the pre-check cannot resolve ${hydra:runtime.choices.model} outside a run."""
    tiny = [*TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    quiet = ["hydra.job_logging.root.level=WARNING", "hydra.verbose=rnnreg", "test=false"]
    proc = run(
        "rnnreg-train", *tiny, *quiet, "experiment_name=${hydra:runtime.choices.model}", f"hydra.run.dir={tmp_path}/r"
    )
    out = proc.stdout + proc.stderr
    assert "GPU available" not in out and "[lightning" not in out, out[-3000:]  # (rnnreg's: DEBUG by hydra.verbose)
    assert "[rnnreg][DEBUG] - config pre-check skipped" in out and (tmp_path / "r" / "metrics.json").is_file()


def test_progress_bar_counts_epochs_from_1(tiny_corpus, tmp_path):
    """The bar says "Epoch 2/2" in the last of two epochs, as train.log and metrics.json count (Lightning's
    own bar says "Epoch 1/1")."""
    from rnnreg.training import build

    tiny = [o for o in TINY if o not in ("callbacks.progress_bar=null", "trainer.enable_progress_bar=false")]
    budget = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "test=false"]
    cfg = compose_config(["experiment=paper_small", *tiny, f"data.data_dir={tiny_corpus}", *budget], tmp_path / "run")
    datamodule, task, trainer = build(cfg)
    reader = ReadDescriptions()
    trainer.callbacks.append(reader)
    trainer.fit(task, datamodule=datamodule)
    assert isinstance(trainer.progress_bar_callback, LMProgressBar)
    assert reader.seen == {"Epoch 1/2", "Epoch 2/2"}


def test_progress_bar_can_be_switched_off(tiny_corpus, tmp_path, capsys):
    # Lightning refuses a progress bar callback under enable_progress_bar=false: ours is then left out
    tiny = [o for o in TINY if o != "callbacks.progress_bar=null"]
    overrides = ["experiment=paper_small", *tiny, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "test=false"]
    cfg = compose_config(overrides, tmp_path / "run")
    assert cfg.callbacks.progress_bar and not cfg.trainer.enable_progress_bar  # what a user's command gives
    metrics = train(cfg)
    assert metrics["status"] == "completed" and math.isfinite(metrics["val_ppl"])
    assert "loss=" not in capsys.readouterr().err


# -- console scripts: fast --help, one-line errors -------------------------------------------------
def test_help_piped_into_head_ends_quietly():
    """`rnnreg-train --help | head`: the reader may close the pipe before Hydra has printed the page (`| true`
    closes it at once); exit 0 and nothing on stderr (before: a BrokenPipeError traceback, exit 1)."""
    head = piped([str(BIN / "rnnreg-train"), "--help"], ["head", "-1"])
    assert head.stdout.startswith("rnnreg-train") and head.stdout.count("\n") == 1, head.stdout
    for script in ("rnnreg-train", "rnnreg-eval", "rnnreg-generate", "rnnreg-report"):
        closed = piped([str(BIN / script), "--help"], ["true"])
        assert closed.returncode == 0 and closed.stderr == "", (script, closed.stderr[-2000:])
    assert head.returncode == 0 and head.stderr == "", head.stderr[-2000:]


def test_help_and_completion_do_not_import_torch():
    proc = run("rnnreg-train", "--help")
    assert proc.returncode == 0 and "debug: default, fast_dev_run, limit, overfit" in proc.stdout
    assert "\nmodel: large, medium, small\n" in proc.stdout  # the sizes' shared part is not an option
    check = """
import os, sys
import rnnreg, rnnreg.train, rnnreg.evaluate, rnnreg.generate
assert rnnreg.__version__ and "paper_recipe" in dir(rnnreg)
for argv in (["rnnreg-train", "--help"], ["rnnreg-train", "-sc", "query=bash"]):
    sys.argv = argv
    os.environ["COMP_LINE"] = "rnnreg-train debug=fa"
    try:
        rnnreg.train.main()
    except SystemExit as err:
        assert not err.code, err.code
heavy = sorted(m for m in ("torch", "lightning") if m in sys.modules)
print("HEAVY", heavy)
"""
    env = os.environ | {"HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "debug=fast_dev_run" in proc.stdout  # the completion answered
    assert "HEAVY []" in proc.stdout


def test_hydras_own_answers_check_no_folder(tmp_path):
    """--version, like --help, is Hydra's answer and makes no folder: a hydra.run.dir with a run's results beside it
    is no error (it was one: --version was missing from the flags that skip the run folder's check)."""
    (tmp_path / "metrics.json").write_text('{"status": "completed"}')
    for flag in ("--version", "--help", "--vers", "--hel"):  # (argparse takes a flag's unique abbreviation)
        proc = run("rnnreg-train", flag, f"hydra.run.dir={tmp_path}", check=False)
        assert proc.returncode == 0 and not proc.stderr, (flag, proc.stderr)
    for flag in ("--version", "--vers"):  # said once: our checks read the command line with Hydra's parser too
        assert run("rnnreg-train", flag, f"hydra.run.dir={tmp_path}").stdout.splitlines() == [f"Hydra {hydra_version}"]


@pytest.mark.parametrize("script, says", [("eval", "ckpt_path=[a.ckpt"), ("generate", "prompt="), ("report", "path=")])
def test_each_commands_help_lists_its_own_keys(script, says):
    """Hydra's default help lists every config group in conf/: rnnreg-train's (dropout, model, ...), which the
    other commands refuse."""
    proc = run(f"rnnreg-{script}", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"rnnreg-{script}: ") and says in proc.stdout
    assert "Configuration groups" not in proc.stdout and "dropout:" not in proc.stdout


def test_checking_a_command_line_does_not_import_torch_or_lightning():
    """Every job of a sweep is checked before Hydra starts without torch or Lightning (importing them took 3-7 s
    on 2 cores, before every one-line error of a sweep or a folder): Lightning's strategies and precisions are
    read only for a value outside the common ones, and the GPUs counted only where a check needs them. What a config
    gives the task (rnnreg.task_config) is read without them too."""
    check = """
import sys
from rnnreg.command_line import validate_args
from rnnreg.config_tree import print_config_tree
jobs = validate_args("train", ["-m", "seed=1,2", "dropout=none,both", "trainer.devices=1"])
from rnnreg.task_config import optim_settings, plain, task_arguments
heavy = sorted(m for m in ("torch", "lightning") if m in sys.modules)
assert jobs == 4 and heavy == [], (jobs, heavy)
validate_args("train", ["trainer=ddp", "trainer.strategy=ddp_find_unused_parameters_true", "+trainer.benchmark=true"])
assert "lightning" in sys.modules  # the rare value and the added Trainer argument: checked against Lightning
"""
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_check_reads_the_mode_hydra_would_read(tmp_path):
    """check_command_line reads the config's hydra.mode from its own composition, as Hydra's main reads it with a
    composition of its own (Hydra.get_mode), which a run then leaves out (rnnreg.runtime.hydra_mode_known). Where
    the command line sweeps a group, both readings leave the group out (the default experiment's mode below, where
    both options are multiruns by themselves). A user's folder (hydra.searchpath) is composed as Hydra composes it;
    a --config-dir as Hydra's main adds it."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rnnreg.command_line import MODE_NOT_READ, check_command_line

    def hydras(config_name: str, argv: list[str]) -> RunMode | None:
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            return GlobalHydra.instance().hydra.get_mode(config_name, [a for a in argv if not a.startswith("-")])

    read = {
        ("train", ()): None,
        ("train", ("-m", "seed=1,2", "hydra/launcher=stacked")): None,
        ("train", ("experiment=ablation_placement_small",)): RunMode.MULTIRUN,  # a multirun by itself
        ("train", ("hydra.mode=RUN", "experiment=ablation_placement_small")): RunMode.RUN,
        ("train", ("hparams_search=optuna",)): RunMode.MULTIRUN,
        ("report", ("path=.",)): None,
    }
    yours = tmp_path / "my_configs" / "experiment"
    yours.mkdir(parents=True)
    (yours / "sweep.yaml").write_text("# @package _global_\ndefaults: [ablation_placement_small]\nseed: 7\n")
    (yours / "run.yaml").write_text("# @package _global_\ndefaults: [ablation_placement_small]\nhydra: {mode: RUN}\n")
    searchpath = f"hydra.searchpath=[file://{yours.parent}]"
    read |= {
        ("train", (searchpath, "experiment=sweep")): RunMode.MULTIRUN,
        ("train", (searchpath, "experiment=run")): RunMode.RUN,
    }
    checks = {key: check_command_line(key[0], list(key[1])) for key in read}
    for (config_name, argv), mode in read.items():
        assert checks[config_name, argv].hydra_mode == hydras(config_name, list(argv)) == mode, argv
    for argv in (["-m", "experiment=smoke,ablation_placement_small"], ["-m", "dropout=none,recurrent"]):
        assert check_command_line("train", argv).hydra_mode is hydras("train", argv) is None, argv
    swept = ["-m", "experiment=ablation_placement_small,ablation_placement"]  # each a multirun by itself
    assert check_command_line("train", swept).hydra_mode is hydras("train", swept) is None
    assert check_command_line("train", ["--info"]).hydra_mode is MODE_NOT_READ  # (not composed: Hydra answers it)
    jobs = checks["train", ("experiment=ablation_placement_small",)].jobs  # its own sweep's
    for option, mode, count in (("sweep", RunMode.MULTIRUN, jobs), ("run", RunMode.RUN, 1)):
        checked = check_command_line("train", ["--config-dir", str(yours.parent), f"experiment={option}"])
        assert (checked.hydra_mode, checked.multirun, checked.jobs) == (mode, mode == RunMode.MULTIRUN, count)


def test_a_run_composes_its_config_twice(tiny_corpus, tmp_path):
    """A run's config is composed by our check and by Hydra's run: Hydra's own reading of the mode (get_mode, a
    third composition with the sweeps left unchecked, about 0.2 s of every start) is left out, and Hydra's
    get_mode is its own again after the run."""
    script = tmp_path / "count.py"
    script.write_text(
        "import json, sys\n"
        "from hydra._internal.config_loader_impl import ConfigLoaderImpl\n"
        "from hydra._internal.hydra import Hydra\n"
        "import rnnreg.train\n"
        "own, composed, get_mode = ConfigLoaderImpl.load_configuration, [], Hydra.get_mode\n"
        "def counted(self, *args, run_mode, validate_sweep_overrides=True, **kwargs):\n"
        '    composed.append(f\'{run_mode.name}{"" if validate_sweep_overrides else " unchecked"}\')\n'
        "    return own(self, *args, run_mode=run_mode, validate_sweep_overrides=validate_sweep_overrides, **kwargs)\n"
        "ConfigLoaderImpl.load_configuration = counted\n"
        "sys.argv = ['rnnreg-train', *sys.argv[1:]]\n"
        "try:\n"
        "    rnnreg.train.main()\n"
        "finally:\n"
        "    print('COMPOSED', json.dumps([composed, Hydra.get_mode is get_mode]))\n"
    )
    tiny = [
        *TINY,
        f"data.data_dir={tiny_corpus}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "test=false",
    ]

    def compositions(*args: str) -> list[str]:
        proc = warm_start.run([sys.executable, str(script), *args, *tiny], text=True, timeout=300)
        assert proc.returncode == 0 and "COMPOSED" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
        composed, own_again = json.loads(proc.stdout.split("COMPOSED ")[1].splitlines()[0])
        assert own_again
        return composed

    assert compositions(f"hydra.run.dir={tmp_path}/run") == ["RUN", "RUN"]
    # then the sweep's, and its job's once (Hydra's sweeper composes it to check it, its launcher runs a copy:
    # rnnreg.multirun_jobs.JobsComposedOnce); the job's folder, its number, is checked without a composition
    assert compositions("-m", "seed=1", f"hydra.sweep.dir={tmp_path}/sweep") == ["RUN", "MULTIRUN", "RUN"]
    # ours: the first option's (job 0's), the sweep's own (its mode, what its overrides apply to), job 1's; Hydra's:
    # the sweep's, each job's
    groups = compositions("-m", "dropout=none,recurrent", f"hydra.sweep.dir={tmp_path}/groups")
    assert groups == ["RUN", "RUN", "RUN", "MULTIRUN", "RUN", "RUN"]


def test_a_job_composed_once_gives_each_caller_its_own_copy():
    """JobsComposedOnce (a multirun's load_sweep_config): a job's overrides composed once for one sweep's config,
    each caller given an equal config of its own (the launcher writes the job's number in its copy); another job,
    or another sweep's config, composed anew."""
    from omegaconf import OmegaConf

    from rnnreg.multirun_jobs import JobsComposedOnce

    calls = []

    def compose(master, overrides):
        calls.append((master.name, tuple(overrides)))
        return OmegaConf.create({"job": {"num": None}, "overrides": list(overrides)})

    load_sweep_config, sweep = JobsComposedOnce(compose), OmegaConf.create({"name": "a"})
    first = load_sweep_config(sweep, ["seed=1"])
    first.job.num = 0
    again = load_sweep_config(sweep, ["seed=1"])
    assert again.job.num is None and again.overrides == ["seed=1"] and again is not first
    load_sweep_config(sweep, ["seed=2"])
    load_sweep_config(OmegaConf.create({"name": "b"}), ["seed=1"])
    assert calls == [("a", ("seed=1",)), ("a", ("seed=2",)), ("b", ("seed=1",))]


@pytest.mark.parametrize("multirun", ["-m", "--multi"])
def test_multirun_with_cfg_is_one_line(tmp_path, multirun):
    """-m with --cfg job (to see a sweep's config): Hydra's ValueError traceback before; one line, exit 2."""
    proc = run("rnnreg-train", multirun, "seed=1,2", "--cfg", "job", f"hydra.sweep.dir={tmp_path}/sweep", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --cfg and --multirun cannot be combined (Hydra does one at a time): leave out -m and give one job's "
        "values (e.g. seed=1 --cfg job)"
    ]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("flags", [["-m"], ["--cfg", "job"], ["--multir"]])
def test_key_values_on_both_sides_of_a_flag_are_one_line_with_the_command_in_order(tmp_path, flags):
    """Hydra's parser (argparse) takes the key=value words in one run: `experiment=smoke -m seed=1,2` was its usage,
    nine lines, and `unrecognized arguments: seed=1,2`."""
    sweep = f"hydra.sweep.dir={tmp_path}/sweep"
    proc = run("rnnreg-train", "experiment=smoke", *flags, "seed=1,2", sweep, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: key=value words on both sides of a flag, which Hydra's parser refuses: give them together, after "
        f"the flags: rnnreg-train {' '.join(flags)} experiment=smoke seed=1,2 {sweep}"
    ]
    assert not (tmp_path / "sweep").exists() and not proc.stdout


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--run", "-m"], "--multirun and --run cannot be combined (Hydra does one at a time): keep one"),
        # (leaving out -m is the fix only for --cfg beside -m)
        (["--cfg", "job", "--run"], "--cfg and --run cannot be combined (Hydra does one at a time): keep one"),
        # beside a mode the command meant is the flag's example: the reader's words would give a second mode
        (["-m", "-p", "model"], "--package works with --cfg, to show the config: rnnreg-train --cfg job -p model"),
        (["-sc"], "-sc takes install, uninstall or query: rnnreg-train -sc install=bash (or zsh, fish)"),
        (["-sc", "bogus"], "-sc takes install, uninstall or query: rnnreg-train -sc install=bash (or zsh, fish)"),
        (
            ["--experimental-rerun", "run/.hydra/config.pickle"],
            "--experimental-rerun cannot rerun a run of rnnreg-train (its config reads ${hydra:runtime.output_dir}): "
            "give the run's overrides again (they are in <run>/.hydra/overrides.yaml)",
        ),
        (
            ["-cn", "eval", "ckpt_path=a.ckpt"],
            "--config-name eval is rnnreg-eval's config: run rnnreg-eval instead of rnnreg-train",
        ),
    ],
)
def test_flags_hydra_would_refuse_with_a_traceback_or_take_for_a_run_are_one_line(tmp_path, argv, says):
    """Hydra's ValueError tracebacks (two modes, --resolve alone, -sc without its subcommand, a rerun of a config
    that reads ${hydra:...}), and flags it would take for a run of the default 39-epoch job (-p without --cfg) or
    compose another script's config for (-cn eval: its keys refused one by one): one line, exit 2, nothing made."""
    proc = run("rnnreg-train", *argv, f"hydra.run.dir={tmp_path}/run", check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"error: {says}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, meant",
    [
        (["-p", "model"], "--cfg job -p model"),
        (["--resolve"], "--cfg job --resolve"),
        (["-p", "trainer", "experiment=smoke"], "--cfg job -p trainer experiment=smoke"),
        (["--resolve", "seed=3"], "--cfg job --resolve seed=3"),
    ],
)
def test_package_or_resolve_without_cfg_is_one_line_with_the_command_meant(tmp_path, argv, meant):
    """-p without --cfg is a run of the default 39-epoch job, --resolve alone Hydra's traceback: the line gives the
    reader's own command with --cfg job (it gave `--cfg job -p model` whatever package and overrides were asked)."""
    run_dir = f"hydra.run.dir={tmp_path}/run"
    proc = run("rnnreg-train", *argv, run_dir, check=False)
    flag = "--package" if "-p" in argv else "--resolve"
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        f"error: {flag} works with --cfg, to show the config: rnnreg-train {meant} {run_dir}"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--help", "-sc", "install=bash"], "rnnreg-train -sc install=bash for shell completion"),
        (["-sc", "query=zsh", "--hel"], "rnnreg-train -sc query=zsh for shell completion"),  # (--help abbreviated)
        (["--hydra-help", "-sc"], "rnnreg-train -sc install=bash for shell completion"),
        (["-h", "-p", "model", "seed=3"], "--help ignores it: rnnreg-train --cfg job -p model seed=3"),
    ],
)
def test_help_beside_shell_completion_or_package_is_one_line(tmp_path, argv, says):
    """--help (or --hydra-help) beside -sc or -p: Hydra shows its help first, so -sc's word was a config key it could
    not override (a traceback, exit 1) and -p went unused (the whole help, exit 0): one line with the command meant,
    exit 2, nothing made."""
    proc = run("rnnreg-train", *argv, check=False, env={"RNNREG_OUTPUT_DIR": str(tmp_path)})
    (line,) = proc.stderr.splitlines()
    assert proc.returncode == 2 and line.startswith("error: ") and says in line and not proc.stdout, proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "script, argv, says",
    [
        ("rnnreg-train", ["--info", "bogus"], "argument --info/-i: invalid choice: 'bogus' (choose from 'all', "),
        ("rnnreg-train", ["--cfg", "bogus"], "argument --cfg/-c: invalid choice: 'bogus' (choose from 'job', "),
        ("rnnreg-train", ["--conf", "ud"], "ambiguous option: --conf could match --config-path, --config-name, "),
        ("rnnreg-train", ["--config-name"], "argument --config-name/-cn: expected one argument: "),
        (
            "rnnreg-train",
            ["-cdud"],
            "argument --cfg/-c: invalid choice: 'dud' (choose from 'job', 'hydra', 'all') "
            "(-cdud reads as -c dud: write -cd ud): ",
        ),
        ("rnnreg-eval", ["--foo"], "unrecognized arguments: --foo: "),
        ("rnnreg-generate", ["--foo"], "unrecognized arguments: --foo: "),
        ("rnnreg-report", ["--foo"], "unrecognized arguments: --foo: "),
    ],
)
def test_a_flag_hydras_parser_refuses_is_one_line(tmp_path, script, argv, says):
    """A flag or flag value argparse refuses: its reason in one line, exit 2, nothing made (was its nine-line usage);
    the flags are listed by --hydra-help (an app's --help shows its config)."""
    proc = run(script, f"hydra.run.dir={tmp_path}/run", *argv, check=False)  # (before: --config-name would take it)
    (line,) = proc.stderr.splitlines()
    assert proc.returncode == 2 and line.startswith(f"error: {says}") and not proc.stdout
    assert line.endswith(f": see {script} --hydra-help for the flags") and not (tmp_path / "run").exists()
    assert "--config-name,-cn" in run(script, "--hydra-help").stdout


def test_a_relative_config_path_is_one_line_that_gives_the_absolute_one(tmp_path, monkeypatch):
    """-cp conf2 (a copy of conf/ here): Hydra reads it from rnnreg's package, and said in four lines that module
    rnnreg.conf2 was not found, exit 1; the absolute path the line gives runs."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(CONF_DIR, tmp_path / "conf2")
    proc = run("rnnreg-train", "-cp", "conf2", "--cfg", "job", "-p", "seed", check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: --config-path conf2: Hydra reads a relative --config-path from rnnreg's package, not from this folder: "
        f"give it as an absolute path (--config-path {tmp_path / 'conf2'}), or add its config groups to rnnreg's with "
        "--config-dir conf2"
    ]
    for flag in ("--config-path", "--config-dir"):
        shown = run(
            "rnnreg-train", flag, str(tmp_path / "conf2") if flag == "--config-path" else "conf2", "--cfg", "job"
        )
        assert shown.stdout.startswith("task_name: train\n")


def test_a_config_path_hydra_reads_as_given_is_left_to_it(tmp_path, monkeypatch):
    """No line for a --config-path Hydra finds: an absolute folder, a package's (pkg://), or a relative one that names
    a folder of rnnreg's package (an installed package's `conf`, here the checkout's conf/ from src/rnnreg)."""
    from rnnreg.command_flags import relative_config_path

    monkeypatch.chdir(tmp_path)
    in_package = os.path.relpath(CONF_DIR, Path(rnnreg.__file__).parent)
    assert [relative_config_path(path) for path in (CONF_DIR, "pkg://rnnreg.conf", in_package)] == [None] * 3
    assert relative_config_path("conf").startswith("--config-path conf: no such folder: ")


def test_the_commands_a_flags_line_gives_are_the_ones_meant():
    """The words of a flag's line: rnnreg-report -m's commands, one per folder of a list, each a shell word (a
    folder with a space), the example's where the folders are not a list (range(), none given); the glued flag
    each of -cd, -cn and -cp makes; and a script's own --config-name is no other script's."""
    from rnnreg.command_flags import check_flags, glued_flag_hint, report_multirun_message

    def commands(*overrides: str) -> str:
        return re.search(r"run it once per folder \((.*)\), or report", report_multirun_message(overrides))[1]

    # (Hydra's string of a value escapes its space, which it reads back)
    assert commands("path=my runs,b") == "rnnreg-report 'path=my\\ runs', then rnnreg-report path=b"
    assert commands("path=range(1,3)") == commands() == "rnnreg-report path=<folder>"
    assert glued_flag_hint(["-cpconf"]) == " (-cpconf reads as -c pconf: write -cp conf)"
    check_flags(["-cn", "train", "--cfg", "job"], "rnnreg-train")


def test_help_takes_resolve_as_cfg_does():
    """--resolve with --help is Hydra's help of the resolved config, as with --cfg: not the line for --resolve alone."""
    proc = run("rnnreg-train", "--help", "--resolve")
    assert proc.stdout.startswith("rnnreg-train: train an LSTM language model") and not proc.stderr


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--cfg", "job", "nokey=1"], "nokey is not a key of the train config: the keys are "),
        (["--help", "nokey=1"], "nokey is not a key of the train config: the keys are "),
        (["--cfg", "job", "seed=1,2"], "seed=1,2 is a sweep, and --cfg shows one job's config: give one value of seed"),
        (["--info", "config", "seed=1,2"], "seed=1,2 is a sweep, and --info shows one job's config: give one value"),
        (["-m", "--help", "seed=1,2"], "seed=1,2 is a sweep, and --help shows one job's config: give one value of"),
    ],
)
def test_a_config_hydra_shows_is_checked_as_a_runs(argv, says):
    """--cfg, --help and --info with overrides show the config they compose: a bad key or a sweep is one line, exit 2
    (before: Hydra's traceback for --help, its page for --cfg, and advice to add -m, which --cfg refuses)."""
    proc = run("rnnreg-train", *argv, check=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: {says}") and not proc.stdout
    shown = run("rnnreg-train", "--cfg", "job", "-p", "model", "model.hidden_size=20").stdout  # a good one is shown
    assert "hidden_size: 20" in shown


@pytest.mark.parametrize("script", ["rnnreg-generate", "rnnreg-eval"])
def test_missing_ckpt_path_is_one_line(script, tmp_path):
    proc = run(script, f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: ckpt_path is required (??? in the config) and was not given: e.g. {script} "
        "ckpt_path=outputs/train/paper_small/<time>/checkpoints/last.ckpt"
    ]


def test_missing_value_found_behind_other_errors():
    try:
        try:
            raise MissingMandatoryValue("Missing mandatory value: data.bptt")
        except MissingMandatoryValue as inner:
            inner.full_key = "data.bptt"
            raise RuntimeError("while instantiating") from inner
    except RuntimeError as err:
        assert missing_key(err) == "data.bptt"
    assert missing_key(ValueError("other")) is None


def test_optimized_metric_is_a_known_key(tmp_path):
    """What main() hands a sweeper (hparams_search minimises it): a key of metrics.json, best_val_ppl by default."""
    assert compose_config([], tmp_path).optimized_metric == "best_val_ppl"
    with pytest.raises(ConfigError, match=r"^optimized_metric=val_loss must be one of best_val_ppl, val_ppl, test_"):
        validate_args("train", ["optimized_metric=val_loss"])


# -- debug presets ---------------------------------------------------------------------------------
def test_debug_presets_compose(tmp_path):
    presets = {
        name: compose_config([f"debug={name}"], tmp_path) for name in ("default", "fast_dev_run", "overfit", "limit")
    }
    for cfg in presets.values():
        assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu" and not cfg.logger
        assert cfg.experiment_name == "paper_medium"  # the experiment's recipe, debugged
    assert presets["fast_dev_run"].trainer.fast_dev_run is True
    assert presets["overfit"].trainer.overfit_batches == 3
    limit = presets["limit"].trainer
    assert (limit.max_epochs, limit.limit_train_batches, limit.limit_val_batches, limit.limit_test_batches) == (
        3,
        20,
        5,
        5,
    )


def test_debug_fast_dev_run_trains(tiny_cfg, tmp_path):
    metrics = train(tiny_cfg("debug=fast_dev_run", "test=false"))  # the test loop: test_every_experiment_runs_...
    assert metrics["epochs"] == 1 and math.isfinite(metrics["val_ppl"])
    assert (tmp_path / "run" / "config_tree.log").is_file()
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # fast_dev_run writes none


def test_debug_overfit_trains_on_its_windows_without_a_word_of_shuffling(tiny_corpus, tmp_path):
    """debug=overfit trains on the same 3 windows every epoch, and its training perplexity falls, at the experiment's
    lr to the last epoch (before: paper_small's decay halved it every epoch after the 4th, 1/2^26 by the 30th, and the
    loss went flat as a bug's would); Lightning's warning that the run "enabled train dataloader shuffling" (before:
    at every such run) is not said, the windows coming in order."""
    run_dir = tmp_path / "run"
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "debug=overfit", "logger=csv"]
    proc = run("rnnreg-train", *args, "trainer.max_epochs=10", f"hydra.run.dir={run_dir}")
    assert "shuffling" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    from rnnreg.report_runs import history

    train_ppl = history(run_dir, "train/ppl")
    assert len(train_ppl) == 10 and train_ppl[-1] < 0.75 * train_ppl[0]
    assert set(history(run_dir, "train/lr")) == {1.0}


def test_a_fast_dev_run_says_no_plan_and_no_time_estimate(tiny_cfg, monkeypatch):
    """debug=fast_dev_run runs a window of each loop to check the code: no run plan nor an estimate of a run's
    time from that one window (the real run's is said when it starts)."""
    import rnnreg.callbacks

    said = []
    monkeypatch.setattr(rnnreg.callbacks, "rank_zero_info", said.append)
    train(tiny_cfg("debug=fast_dev_run", "test=false"))
    assert not [line for line in said if line.startswith("rnnreg: ")], said


# -- rnnreg as a library ----------------------------------------------------------------------------
def test_paper_recipe_is_the_config_files(tmp_path):
    recipe = rnnreg.paper_recipe("small")
    cfg = compose_config(["experiment=paper_small"], tmp_path)
    assert recipe["model"]["hidden_size"] == cfg.model.hidden_size == 200
    assert recipe["optim"] == {**cfg.optim, "clip": cfg.trainer.gradient_clip_val}
    assert recipe["data"] == {"batch_size": 20, "bptt": 20, "eval_bptt": 200, "test_batch_size": 1}
    assert recipe["trainer"] == {"max_epochs": 13} and recipe["dropout"]["output"] == 0.0
    medium = rnnreg.paper_recipe("medium", "dropout=recurrent")
    assert medium["dropout"]["recurrent"] == 0.5 and medium["dropout"]["output"] == 0.0
    with pytest.raises(ConfigError, match="choose one of small, medium, large"):
        rnnreg.paper_recipe("huge")
    data = rnnreg.ptb_datamodule(batch_size=10, bptt=35)  # not loaded: no download here
    assert (data.batch_size, data.bptt, data.eval_bptt) == (10, 35, 200)
    assert data.files == cfg.data.files and data.data_dir == cfg.data.data_dir and data.url_base


def test_importing_rnnreg_leaves_the_users_warning_filters_and_lightnings_log_alone():
    """A library user's process (examples/compare_placements.py imports rnnreg.report) keeps its own warning filters
    and Lightning's log lines: the ones a console script's run hides are set by its entry (before: by importing
    rnnreg.runtime, which hid the user's own ModelCheckpoint's "directory is not empty")."""
    check = """
import logging, warnings
import rnnreg.generate, rnnreg.report
def ours():
    hidden = [f[1].pattern for f in warnings.filters if f[1] is not None and "is not empty" in f[1].pattern]
    return hidden, logging.getLogger("lightning.pytorch.utilities.rank_zero").filters
assert ours() == ([], []), ours()
from rnnreg.runtime import hide_expected_warnings
hide_expected_warnings(), hide_expected_warnings()  # a console script's entry: each said once
assert [len(kind) for kind in ours()] == [1, 1], ours()
"""
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_library_trains_in_a_few_lines(tiny_corpus, tmp_path):
    recipe = rnnreg.paper_recipe("small", "dropout=non_recurrent", "dropout.p=0.3", "model.hidden_size=16")
    data = rnnreg.LMDataModule(
        str(tiny_corpus),
        {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")},
        batch_size=4,
        bptt=5,
    )
    task = rnnreg.LanguageModelTask(data.vocab_size, recipe["model"], recipe["dropout"], recipe["optim"])
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=data)
    assert isinstance(task.net, rnnreg.LSTMLanguageModel) and task.hparams.optim["clip"] == 5.0
    assert 1 < float(trainer.callback_metrics["val/ppl"]) < 1000


def test_example_compare_placements(ptb_dir, tmp_path, capsys, caplog, monkeypatch):
    """examples/compare_placements.py at a tiny budget, end to end: three runs, the report and figures; its epochs of 3
    windows not warned of as shorter than Lightning's log interval (before: each run was), and Lightning's tips and
    deprecations hidden by the example itself, as in a user's process that has hidden none (not this worker's)."""
    spec = importlib.util.spec_from_file_location("compare_placements", ROOT / "examples" / "compare_placements.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "compare"
    args = "--windows 3 --val-windows 2 --hidden 16 --epochs 1 --quiet --accelerator cpu".split()
    monkeypatch.setattr(logging.getLogger("lightning.pytorch.utilities.rank_zero"), "filters", [])
    with warnings.catch_warnings(record=True) as shown, caplog.at_level(logging.INFO):
        warnings.resetwarnings()  # (Python's defaults: what a user's own process starts with)
        table = example.main([*args, "--out", str(out)])
    assert table.count("| completed |") == 3
    printed = [line for line in capsys.readouterr().out.splitlines() if ": best val ppl " in line]
    assert len(printed) == 3 and all(line.endswith(" (the first 2 windows of each split)") for line in printed)
    assert not [w for w in shown if "logging interval" in str(w.message) or "is deprecated" in str(w.message)]
    assert not [r for r in caplog.records if "Tip:" in r.getMessage()]
    for placement in example.PLACEMENTS:
        assert f"dropout={placement} " in table
        assert json.loads((out / placement / "metrics.json").read_text())["epochs"] == 1
    assert all((out / f"{name}.{ext}").stat().st_size > 0 for name in ("val_ppl", "test_ppl") for ext in ("png", "pdf"))
    with pytest.raises(SystemExit) as exit_:  # run again into the same --out: refused, its runs kept
        example.main([*args, "--out", str(out)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {out / 'none'} holds an earlier run's results (in metrics.json), which this run would write over: "
        f"give it another folder (--out=...), or remove that folder first"
    )


def test_console_scripts_exist():
    assert all((BIN / s).exists() for s in ("rnnreg-train", "rnnreg-eval", "rnnreg-generate", "rnnreg-report"))


@pytest.mark.parametrize(
    "given,said,validations",
    [
        ((), "validation every epoch", 2),
        (("+trainer.val_check_interval=5",), "validation every 5 windows (2 an epoch)", 4),
        (("+trainer.val_check_interval=0.5",), "validation every 5 windows (2 an epoch)", 4),
        (
            ("+trainer.val_check_interval=5", "trainer.check_val_every_n_epoch=2"),
            "validation every 5 windows (2 an epoch) every 2 epochs",
            2,
        ),
    ],
)
def test_the_plan_counts_validations_inside_an_epoch(tiny_cfg, monkeypatch, given, said, validations):
    """+trainer.val_check_interval below the epoch (10 windows): the plan says how often it validates, and its
    estimate holds every validation (each stubbed at 7 s) over 2 epochs (before: "validation every epoch", and one
    validation an epoch counted)."""
    import rnnreg.callbacks
    from rnnreg.callbacks import RunPlan
    from rnnreg.training import build

    monkeypatch.setattr(rnnreg.callbacks, "validation_seconds", lambda *args: 7.0)
    cfg = tiny_cfg("trainer.max_epochs=2", "trainer.limit_train_batches=10", "test=false", *given)
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    (plan,) = [c for c in trainer.callbacks if isinstance(c, RunPlan)]
    assert f", {said}\n" in plan.message, plan.message
    assert f" + validation {format_duration(7.0 * validations)})" in plan.message, plan.message


def test_a_multiruns_override_of_a_key_only_its_swept_groups_bring_is_one_line(tiny_corpus, tmp_path):
    """Every job of `-m 'regularizer=[early_stopping],[early_stopping,weight_decay]'` has callbacks.early_stopping,
    but Hydra applies the overrides to the sweep's own config too, composed without the swept groups: one line that
    gives ++, exit 2, no folder (before: Hydra's page advising +, which every job would then refuse); ++ runs."""
    tiny = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    tiny += [
        "test=false",
        "trainer.limit_train_batches=2",
        "regularizer=[early_stopping],[early_stopping,weight_decay]",
    ]
    sweep = tmp_path / "sweep"
    proc = run("rnnreg-train", *tiny, "callbacks.early_stopping.patience=2", f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: callbacks.early_stopping.patience=2: Hydra applies a multirun's overrides to its own config too, "
        "composed without its swept groups (regularizer), where callbacks.early_stopping.patience is not: give it as "
        "++callbacks.early_stopping.patience=2 (Hydra's add or override)"
    ]
    assert not sweep.exists()
    run("rnnreg-train", *tiny, "++callbacks.early_stopping.patience=2", f"hydra.sweep.dir={sweep}")
    for job in ("0", "1"):
        assert "patience: 2" in (sweep / job / ".hydra" / "config.yaml").read_text()
    # a job without the key: that job's refusal, not ++ (which it would refuse too)
    with pytest.raises(
        ConfigError, match=r"^callbacks.early_stopping is not in the config: .* \(sweep job regularizer=\[\]\)$"
    ):
        validate_args("train", ["-m", "regularizer=[],[early_stopping]", "callbacks.early_stopping.patience=2"])
