"""Resume: 1 epoch + resume to 2, or a stop mid-epoch + resume, equals 2 uninterrupted epochs, dropout on."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

import rnnreg.callbacks
from helpers import TINY, run, signal_at, speed_state
from rnnreg.checkpoints import CheckpointOnInterrupt
from rnnreg.data import LMDataModule
from rnnreg.errors import CheckpointError, ConfigError
from rnnreg.io import load_checkpoint
from rnnreg.report_runs import history
from rnnreg.resume import optimizer_state_by_name
from rnnreg.resume_checks import check_resume_model, check_resume_window, vocabulary_refusal
from rnnreg.task import LanguageModelTask, load_task
from rnnreg.train import train
from rnnreg.training import resolve_ckpt_path

DROPOUT = ("dropout=non_recurrent", "dropout.p=0.3")
SIGTERM = int(signal.SIGTERM)
# metrics.json's `error` for a run a signal stopped
STOPPED_BY = {signal.SIGTERM: "SIGTERM (pre-empted or stopped)", signal.SIGINT: "Ctrl-C (stopped by the user)"}


def test_resume_is_exact(tiny_cfg, tmp_path):
    whole = train(tiny_cfg(*DROPOUT, "trainer.max_epochs=2", run="whole"))
    train(tiny_cfg(*DROPOUT, "trainer.max_epochs=1", "test=false", run="first"))
    resumed = train(
        tiny_cfg(*DROPOUT, "trainer.max_epochs=2", f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt", run="second")
    )
    for key in ("val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
        assert resumed[key] == whole[key], key
    a = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "second/checkpoints/last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"]  # last.ckpt = after epoch 2
    assert a["lr_schedulers"][0]["_last_lr"] == b["lr_schedulers"][0]["_last_lr"]
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    assert (tmp_path / "first/checkpoints/last.ckpt").is_file()  # the earlier run is left as it was


@pytest.mark.parametrize(
    "signum,status,fast",
    [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)],
    ids=["SIGTERM", "Ctrl-C", "fast-step"],
)
def test_mid_epoch_stop_resumes_exactly(tiny_cfg, tmp_path, monkeypatch, signum, status, fast):
    """Stopped after window 7 of epoch 1 and resumed: the stream continues at window 8 with the carried
    state, the RNG and the epoch's training sums, so everything equals an uninterrupted run."""
    # epochs of 12 windows: the stop after window 7 is mid-epoch, with 5 windows of the epoch left to go on with
    common = (
        *DROPOUT,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=12",
        "logger=csv",
        f"speed.fast_step={fast}",
    )
    whole = train(tiny_cfg(*common, run="whole"))
    stop = signal_at(signum, 7)
    with pytest.raises(SystemExit) as exit_:
        train(tiny_cfg(*common, *stop, run="first"))
    assert exit_.value.code == status
    first = tmp_path / "first"
    stopped = json.loads((first / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["error"] == STOPPED_BY[signum]
    ckpt = torch.load(first / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 7 and ckpt["train_window"] == 7
    assert ckpt["train_carry"]["tokens"] == 7 * 5 * 4  # windows x bptt x streams
    said = []  # the resumed run's plan (RunPlan's lines, as the console and train.log get them)
    monkeypatch.setattr(rnnreg.callbacks, "rank_zero_info", lambda text: said.append(text) if "plan:" in text else None)
    resumed = train(tiny_cfg(*common, f"ckpt_path={first}/checkpoints/last.ckpt", run="second"))
    for key in ("val_ppl", "test_ppl", "test_ppl_batched", "epochs"):
        assert resumed[key] == whole[key], key
    assert history(tmp_path / "second", "train/ppl") == history(tmp_path / "whole", "train/ppl")
    a = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "second/checkpoints/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"]
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    # the words trained, which the run's words/s divides (both epochs', the stopped one's first 7 windows included)
    words = [speed_state(c)["train_words"] for c in (a, b)]
    assert words[0] == words[1] == a["global_step"] * 5 * 4  # windows x bptt x streams
    # the resumed epoch's words/s and time are the whole epoch's, its part before the stop included: words/s x time
    # is an epoch's words in every epoch (counting the rest alone, the resumed epoch would show 7 windows fewer)
    per_epoch = a["global_step"] // 2 * 5 * 4
    rates, seconds = (
        history(tmp_path / "second", "train/words_per_sec"),
        history(tmp_path / "second", "train/epoch_seconds"),
    )
    assert len(rates) == len(seconds) == 2
    assert [r * s for r, s in zip(rates, seconds)] == pytest.approx([per_epoch] * 2, rel=1e-6)
    assert seconds[0] > speed_state(ckpt)["epoch_seconds"]
    assert resumed["words_per_second_last_epoch"] == pytest.approx(rates[-1], abs=0.1)
    # the resumed run's plan estimated what was left of the run, not a fresh one (from inside its first epoch too)
    assert "estimated time left:" in said[0] and "estimated total:" not in said[0]


def test_the_layer_by_layer_lstm_trains_as_the_fused_one_and_resumes_exactly(tiny_cfg, tmp_path):
    """model.lstm=layers (torch's dropout between the layers, for a GPU's exact resume) trains on a CPU to the same
    results as model.lstm=fused, and a stop mid-epoch resumes to the uninterrupted run, in the fast step too."""
    # epochs of 12 windows: the stop after window 7 is mid-epoch
    common = (*DROPOUT, "trainer.max_epochs=2", "trainer.limit_train_batches=12", "speed.fast_step=true", "test=false")
    fused = train(tiny_cfg(*common, "model.lstm=fused", run="fused"))
    whole = train(tiny_cfg(*common, "model.lstm=layers", run="whole"))
    assert whole["val_ppl"] == fused["val_ppl"] and whole["epochs"] == fused["epochs"]
    with pytest.raises(SystemExit):
        train(tiny_cfg(*common, "model.lstm=layers", *signal_at(signal.SIGTERM, 7), run="first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train(tiny_cfg(*common, "model.lstm=layers", f"ckpt_path={last}", run="second"))
    assert resumed["val_ppl"] == whole["val_ppl"]
    a, b = (torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=False) for run in ("whole", "second"))
    assert all(torch.equal(value, b["state_dict"][name]) for name, value in a["state_dict"].items())


def test_a_stop_in_validation_resumes_with_that_validation(tiny_cfg, tmp_path):
    """SIGTERM inside epoch 1's validation: the checkpoint holds the epoch's training sums and that its validation
    is still to run, so the resumed run validates epoch 1 (before: Lightning took the checkpoint for one written
    after that validation and skipped it: another best_val_ppl and best.ckpt, and a NaN train/ppl for epoch 1)."""
    common = (*DROPOUT, "trainer.max_epochs=2", "trainer.limit_train_batches=6", "data.eval_bptt=5", "logger=csv")
    common += ("test=false",)
    whole = train(tiny_cfg(*common, run="whole"))
    stop = ("+callbacks.stop._target_=helpers.SignalInValidation", f"+callbacks.stop.signum={int(signal.SIGTERM)}")
    with pytest.raises(SystemExit):
        train(tiny_cfg(*common, *stop, "+callbacks.stop.batch=3", run="first"))
    first = tmp_path / "first"
    ckpt = torch.load(first / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6 and ckpt["validation_pending"] and ckpt["train_carry"]["tokens"] == 6 * 5 * 4
    assert ckpt["train_bptt"] == 5  # (what a resume's data.bptt is checked against)
    resumed = train(tiny_cfg(*common, f"ckpt_path={first}/checkpoints/last.ckpt", run="second"))
    for key in ("val_ppl", "val_epoch", "best_val_ppl", "epochs"):
        assert resumed[key] == whole[key], key
    for key in ("val/ppl", "train/ppl"):
        assert history(tmp_path / "second", key) == history(tmp_path / "whole", key), key
    for name in ("best", "last"):
        a, b = (
            torch.load(tmp_path / run / f"checkpoints/{name}.ckpt", weights_only=False) for run in ("whole", "second")
        )
        assert a["global_step"] == b["global_step"] and a["loops"] == b["loops"], name
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), (name, key)


@pytest.mark.parametrize(
    "signum,status,when",
    [(signal.SIGTERM, 143, "fit_start"), (signal.SIGINT, 130, "fit_start"), (signal.SIGTERM, 143, "setup")],
    ids=["SIGTERM", "Ctrl-C", "SIGTERM-in-setup"],
)
def test_a_resumed_run_stopped_before_its_first_window_goes_on_from_the_checkpoint_it_resumed(
    tiny_cfg, tmp_path, signum, status, when
):
    """SIGTERM or Ctrl-C as a resumed run starts: it writes no checkpoint (it has trained nothing since the one it
    resumed from) and its metrics.json says to go on from that one. Before, it wrote and named a last.ckpt at global
    step 0: at on_fit_start the restored weights with a fresh optimiser and loops (a resume refused it as `holds 1
    trained epoch`, or, given more epochs, trained from the epoch's start again), in the fit's setup the weights
    of a fresh model (the resume trained from scratch)."""
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=6", "test=false")
    with pytest.raises(SystemExit):
        train(tiny_cfg(*common, *signal_at(signal.SIGTERM, 3), run="first"))
    resumed = tmp_path / "first" / "checkpoints" / "last.ckpt"
    before, ctrl_c = resumed.read_bytes(), signal.getsignal(signal.SIGINT)
    stop = ("+callbacks.stop._target_=helpers.SignalAsFitStarts", f"+callbacks.stop.signum={int(signum)}")
    stop += (f"+callbacks.stop.when={when}",)
    with pytest.raises(SystemExit) as exit_:
        train(tiny_cfg(*common, f"ckpt_path={resumed}", *stop, run="second"))
    assert exit_.value.code == status
    # (the caller's Ctrl-C handler back: Lightning left it ignored after a KeyboardInterrupt this early)
    assert signal.getsignal(signal.SIGINT) == ctrl_c
    assert not (tmp_path / "second" / "checkpoints" / "last.ckpt").exists() and resumed.read_bytes() == before
    assert json.loads((tmp_path / "second" / "metrics.json").read_text()) == {
        "status": "interrupted",
        "error": STOPPED_BY[signum],
        "epochs": 0,
        "resume": f"rnnreg-train ... ckpt_path={resumed}",
    }


def test_a_stop_while_a_fit_is_set_up_writes_no_checkpoint_it_could_not_resume(tiny_cfg, tmp_path):
    """SIGTERM in the fit's setup (before Lightning makes the optimiser): no last.ckpt, and metrics.json says none
    was written (before: a last.ckpt without optimiser state, named as the resume, which a resume refused)."""
    stop = ("+callbacks.stop._target_=helpers.SignalAsFitStarts", f"+callbacks.stop.signum={int(signal.SIGTERM)}")
    with pytest.raises(SystemExit) as exit_:
        train(tiny_cfg("trainer.max_epochs=1", "test=false", *stop, "+callbacks.stop.when=setup"))
    assert exit_.value.code == 143 and not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    stopped = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["resume"] == "no checkpoint was written"


def test_a_mid_epoch_checkpoint_resumed_with_another_batch_size_or_bptt_is_refused(tiny_cfg, tmp_path):
    """Its carried (h, c) holds the old number of streams (before: a traceback from the LSTM, and a failed
    metrics.json in the new run's folder)."""
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=4", "test=false")
    with pytest.raises(SystemExit):
        train(tiny_cfg(*common, *signal_at(signal.SIGTERM, 2), run="first"))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    refused = r"^data.batch_size=8 where .*last.ckpt was stopped inside an epoch trained with data.batch_size=4 "
    with pytest.raises(ConfigError, match=refused + r"\(.*\): resume with data.batch_size=4$"):
        train(tiny_cfg(*common, "data.batch_size=8", f"ckpt_path={ckpt}", run="second"))
    assert not (tmp_path / "second" / "metrics.json").exists() and not (tmp_path / "second" / "checkpoints").exists()
    # its window counts windows of data.bptt=5 (before: resumed with another, it went on from another place)
    refused = r"^data.bptt=7 where .*last.ckpt was stopped inside an epoch after 2 windows of data.bptt=5: "
    with pytest.raises(ConfigError, match=refused + r"resume with data.bptt=5 \(or from an epoch's end\)$"):
        train(tiny_cfg(*common, "data.bptt=7", f"ckpt_path={ckpt}", run="third"))
    assert not (tmp_path / "third" / "metrics.json").exists() and not (tmp_path / "third" / "checkpoints").exists()
    # an epoch cut to no more windows than it was stopped after (before: the epoch trained none and ended as done)
    for limit in ("2", "0.02"):
        refused = r"^.*last.ckpt was stopped inside epoch 1 after 2 windows and this run's epochs have \d window"
        with pytest.raises(ConfigError, match=refused + rf"s? \(trainer.limit_train_batches={limit}\): the resumed "):
            train(tiny_cfg(*common, f"trainer.limit_train_batches={limit}", f"ckpt_path={ckpt}", run="fourth"))
        assert not (tmp_path / "fourth" / "metrics.json").exists()
        assert not (tmp_path / "fourth" / "checkpoints").exists()


def test_a_mid_epoch_checkpoint_resumed_on_a_shorter_train_file_says_the_file_is_shorter(tmp_path):
    """A train file cut since the run (the same words, fewer lines) where a checkpoint stopped inside an epoch past
    the new epoch's end: the line told to resume with the trainer.limit_train_batches the run was trained with,
    which was the one given (none). It names the train file and its windows instead."""
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("a b c d e f g h i\n" * 4)  # 40 tokens: 10 steps, 1 window of 5
    files = {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}
    data = LMDataModule(str(tmp_path), files, batch_size=4, bptt=5)
    data.load()
    with pytest.raises(ConfigError) as refused:
        check_resume_window(3, 0, data, None, "last.ckpt")
    assert str(refused.value) == (
        f"last.ckpt was stopped inside epoch 1 after 3 windows and this data's train split {tmp_path / 'train.txt'} "
        "has 1 window in an epoch (data.batch_size=4 streams of data.bptt=5): it is shorter than the train file the "
        "run trained on (changed since?): resume it on that file as it was, or train a new run"
    )


def test_a_momentum_checkpoint_resumes_with_another_lstm_implementation(tiny_cfg, tmp_path):
    """nn.LSTM and the step loop order the same parameters differently and an optimiser keeps its state by
    position: the momentum buffers are matched by name (before: each parameter was given another's buffer, a
    traceback). Tied embeddings changed (the decoder's weight a parameter of its own or not) are one line."""
    common = ("trainer.limit_train_batches=4", "test=false", "optim.momentum=0.9", "optim.lr=0.1")
    train(tiny_cfg(*common, "trainer.max_epochs=1", "model.lstm=fused", run="first"))
    ckpt = f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt"
    same = train(tiny_cfg(*common, "trainer.max_epochs=2", "model.lstm=fused", ckpt, run="fused"))
    other = train(tiny_cfg(*common, "trainer.max_epochs=2", "model.lstm=step", ckpt, run="step"))
    assert other["val_ppl"] == pytest.approx(same["val_ppl"], rel=1e-6)
    # the buffers are restored, not restarted from zeros: the resumed run is the uninterrupted one, to the bit
    whole = train(tiny_cfg(*common, "trainer.max_epochs=2", "model.lstm=fused", run="whole"))
    assert same["val_ppl"] == whole["val_ppl"]
    a, b = (torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=False) for run in ("fused", "whole"))
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    a, b = (torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=False) for run in ("fused", "step"))
    for name, value in a["state_dict"].items():  # one function, two kernels: apart by rounding only
        assert torch.allclose(value, b["state_dict"][name], atol=1e-6), name
    # before anything is written (before: the optimiser's line, once the run folder and its config tree were written)
    tied = r"^model.tie_weights=true where .* was trained with model.tie_weights=false: its weights fit that model only"
    with pytest.raises(ConfigError, match=tied):
        train(tiny_cfg(*common, "trainer.max_epochs=2", "model.tie_weights=true", ckpt, run="tied"))
    assert not (tmp_path / "tied").exists()
    # a library user's own fit: the optimiser's line names the decoder's weight
    checkpoint = torch.load(tmp_path / "first/checkpoints/last.ckpt", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    tied_task = LanguageModelTask(
        hparams["vocab_size"], {**hparams["model"], "tie_weights": True}, hparams["dropout"], hparams["optim"]
    )
    tied = r"net.decoder.weight is a parameter of its own there, not here\): .* \(model.tie_weights=false\)$"
    with pytest.raises(CheckpointError, match=tied):
        optimizer_state_by_name(tied_task, checkpoint)


def assert_stopped_by_ctrl_c(code: int, run_dir: Path) -> None:
    """Exit 130, and metrics.json says the run was interrupted by Ctrl-C."""
    assert code == 130
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["error"] == STOPPED_BY[signal.SIGINT]


def test_a_second_ctrl_c_aborts_at_once_and_says_ctrl_c(tiny_cfg, tmp_path):
    """Lightning ends the second Ctrl-C with exit(1) (before: exit 1 and `"error": "1"` in metrics.json)."""
    twice = signal_at(signal.SIGINT, 2, times=2)
    with pytest.raises(SystemExit) as exit_:
        train(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=4", "test=false", *twice))
    assert_stopped_by_ctrl_c(exit_.value.code, tmp_path / "run")


def test_a_second_ctrl_c_inside_the_interrupt_checkpoint_keeps_the_last_one(tiny_cfg, tmp_path, monkeypatch):
    """The second Ctrl-C lands inside the write of the interrupt checkpoint (before: torch's RuntimeError
    "unexpected pos", exit 1, metrics.json `failed` with it): exit 130, `interrupted` by Ctrl-C, and last.ckpt is
    the first epoch's, whole (the half-written one removed)."""
    import rnnreg.io

    class CtrlCInWrite(io.FileIO):
        writes = 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:  # inside torch's zip writer, some records written
                os.kill(os.getpid(), signal.SIGINT)  # the handler (KeyboardInterrupt) runs before the write
            return super().write(data)

    def opened(path, mode="r", *args, **kwargs):
        first_pressed = not isinstance(
            getattr(signal.getsignal(signal.SIGINT), "__self__", None), CheckpointOnInterrupt
        )
        if Path(path).name.startswith(".last.ckpt.") and first_pressed:
            return CtrlCInWrite(path, mode)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rnnreg.io, "open", opened, raising=False)
    ctrl_c = signal_at(signal.SIGINT, 2, epoch=1)
    with pytest.raises(SystemExit) as exit_:
        train(tiny_cfg("trainer.max_epochs=2", "trainer.limit_train_batches=4", "test=false", *ctrl_c))
    assert_stopped_by_ctrl_c(exit_.value.code, tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 0


def test_resume_last_finds_the_newest_earlier_run(tiny_cfg, tmp_path, caplog):
    overrides = ("trainer.max_epochs=1", "trainer.limit_train_batches=5", "test=false", f"paths.output_root={tmp_path}")
    cfg = tiny_cfg(*overrides, run="train/paper_small/2026-01-01")
    train(cfg)
    resumed = train(
        tiny_cfg(*overrides[1:], "trainer.max_epochs=2", "ckpt_path=last", run="train/paper_small/2026-01-02")
    )
    assert resumed["epochs"] == 2
    task = load_task(str(tmp_path / "train/paper_small/2026-01-02/checkpoints/last.ckpt"))
    assert task.vocab is not None
    # given its own folder again (an explicit hydra.run.dir), a run goes on there: its own last.ckpt, not the newest
    again = train(
        tiny_cfg(*overrides[1:], "trainer.max_epochs=3", "ckpt_path=last", run="train/paper_small/2026-01-01")
    )
    own = tmp_path / "train/paper_small/2026-01-01"
    restored = [m for m in caplog.messages if m.startswith("Restored all states from the checkpoint at ")]
    assert again["epochs"] == 3 and restored[-1].endswith(f" at {own}/checkpoints/last.ckpt")


def test_a_run_going_on_in_its_own_folder_is_not_warned_of_its_checkpoints(tiny_corpus, tmp_path):
    """The command a stop prints (`ckpt_path=last hydra.run.dir=<its folder>`) goes on where its checkpoints are:
    Lightning's warning that the checkpoint directory exists and is not empty (before: at every such resume) is not
    said, a folder holding another run's checkpoints being refused before Lightning sees it."""
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.limit_train_batches=3"]
    args += ["test=false", f"hydra.run.dir={tmp_path / 'run'}"]
    run("rnnreg-train", *args, "trainer.max_epochs=1")
    resumed = run("rnnreg-train", *args, "trainer.max_epochs=2", "ckpt_path=last")
    said = resumed.stdout + resumed.stderr
    assert f"resuming from {tmp_path / 'run'}/checkpoints/last.ckpt" in said
    assert "exists and is not empty" not in said, said[-3000:]


def test_resume_last_is_the_run_of_this_experiment_that_wrote_its_checkpoint_last(tiny_cfg, tmp_path):
    """ckpt_path=last among three earlier runs: the one whose last.ckpt is newest (a run resumed in its own folder
    later than a run started after it), and never another experiment's, however new."""
    runs = {"train/paper_small/2026-01-01": 2, "train/paper_small/2026-01-02": 1, "train/paper_medium/2026-01-03": 3}
    for folder, hours in runs.items():  # last.ckpt written `hours` after the first
        last = tmp_path / folder / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"")
        os.utime(last, (1_800_000_000 + 3600 * hours,) * 2)
    cfg = tiny_cfg(f"paths.output_root={tmp_path}", "ckpt_path=last", run="train/paper_small/2026-01-04")
    assert resolve_ckpt_path(cfg) == str(tmp_path / "train/paper_small/2026-01-01/checkpoints/last.ckpt")


def test_resume_last_without_earlier_run_is_a_clear_error(tiny_cfg, tmp_path):
    from rnnreg.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path=last: no earlier run of paper_small"):
        train(tiny_cfg(f"paths.output_root={tmp_path}/empty", "ckpt_path=last"))


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # (the library fit needs no ModelCheckpoint)
def test_a_resume_that_would_not_do_what_it_says_is_refused(tiny_cfg, tiny_corpus, tmp_path):
    """A finished run given nothing more to train (before: in its folder, its metrics.json rewritten without its
    validation); an lr the checkpoint's optimiser state would replace (before: ignored, yet recorded as used), or a
    clip, which ClippedSGD keeps there too (before: a resume given trainer.gradient_clip_val=0.1 trained on with 5.0
    while its records said 0.1); another lr schedule (before: given optim.decay_start=1, it trained epoch 2 at the old
    schedule's lr and epoch 3 at the new one's, neither schedule); a run early stopping ended (before: Lightning
    trained another epoch). Each is one line before anything is trained, the update rule's in a library fit too."""
    import lightning as L

    train(tiny_cfg(*DROPOUT, "trainer.max_epochs=1", "test=false", run="first"))
    first = tmp_path / "first"
    before = (first / "metrics.json").read_bytes()
    with pytest.raises(ConfigError, match=r"holds 1 trained epoch and trainer.max_epochs=1: nothing is left to train"):
        train(tiny_cfg(*DROPOUT, "trainer.max_epochs=1", "ckpt_path=last", run="first"))
    assert (first / "metrics.json").read_bytes() == before
    ckpt = first / "checkpoints" / "last.ckpt"
    for key, value, trained in (
        ("optim.lr", 0.5, 1.0),
        ("optim.momentum", 0.9, 0.0),
        ("optim.weight_decay", 0.01, 0.0),
        ("trainer.gradient_clip_val", 0.1, 5.0),
        ("optim.decay_start", 1, 4),
        ("optim.decay", 3, 2.0),
    ):
        with pytest.raises(ConfigError) as refused:
            train(tiny_cfg(*DROPOUT, "trainer.max_epochs=2", f"ckpt_path={ckpt}", f"{key}={value}", run=key))
        assert str(refused.value).startswith(f"{key}={value} where {ckpt} was trained with {trained}: "), key
        assert str(refused.value).endswith(f": resume with {key}={trained}, or start a new run"), key
        assert not (tmp_path / key / "checkpoints").exists()
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", *DROPOUT, "trainer.max_epochs=3"]
    proc = run("rnnreg-train", *tiny, f"ckpt_path={ckpt}", "optim.decay_start=1", check=False)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: optim.decay_start=1 where {ckpt} was trained with 4: its epochs so far followed that lr schedule and "
        "a resume goes on from the lr it saved, so the run would follow neither schedule: resume with "
        "optim.decay_start=4, or start a new run\n"
    )
    # a library user's own fit of a task of another clip
    data = LMDataModule(
        str(tiny_corpus), {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}, batch_size=4, bptt=5
    )
    saved = load_checkpoint(ckpt)["hyper_parameters"]
    task = LanguageModelTask(data.vocab_size, saved["model"], saved["dropout"], dict(saved["optim"], clip=0.1))
    quiet = {"logger": False, "enable_progress_bar": False, "enable_checkpointing": False, "num_sanity_val_steps": 0}
    with pytest.raises(ConfigError, match=r"^trainer.gradient_clip_val=0.1 where .* was trained with 5.0: a resumed "):
        L.Trainer(max_epochs=2, default_root_dir=tmp_path, **quiet).fit(task, data, ckpt_path=ckpt)
    stops = ["regularizer=early_stopping", "callbacks.early_stopping.patience=1", "optim.lr=6", "optim.decay_start=10"]
    stops += ["dropout=recurrent", "dropout.p=0.2", "test=false"]
    assert train(tiny_cfg(*stops, "trainer.max_epochs=5", run="es"))["epochs"] < 5  # it stopped early
    with pytest.raises(ConfigError, match=r"is from a run that early stopping ended after epoch \d: nothing is left"):
        train(tiny_cfg(*stops, "trainer.max_epochs=5", f"ckpt_path={tmp_path}/es/checkpoints/last.ckpt", run="on"))
    assert not (tmp_path / "on" / "checkpoints").exists()


def test_a_resume_of_another_model_is_one_line_naming_the_setting_and_the_runs_own(tiny_cfg, tiny_corpus, tmp_path):
    """A resume with a model of other weight shapes (another size, forgotten experiment=paper_large, say) is one
    line before anything is written, naming the setting and the model overrides of the checkpoint's run from its
    record, a key given twice as Hydra applied it (before: two tensors' shapes, once the run had begun)."""
    first = tmp_path / "first"
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.limit_train_batches=2"]
    run("rnnreg-train", *tiny, "model.hidden_size=8", "trainer.max_epochs=1", "test=false", f"hydra.run.dir={first}")
    ckpt = first / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as refused:
        train(tiny_cfg("trainer.max_epochs=2", f"ckpt_path={ckpt}", run="second"))  # (TINY: hidden 16)
    assert str(refused.value) == (
        f"model.hidden_size=16 where {ckpt} was trained with model.hidden_size=8: its weights fit that model only: "
        "resume with the model it was trained with (experiment=paper_small model=small model.hidden_size=8, from "
        "its run's .hydra/overrides.yaml)"
    )
    assert not (tmp_path / "second").exists()
    layer_norm = ["model.hidden_size=8", "regularizer=layer_norm", "trainer.max_epochs=2", f"ckpt_path={ckpt}"]
    with pytest.raises(ConfigError, match=r"^model.layer_norm=true where .* was trained with model.layer_norm=false: "):
        train(tiny_cfg(*layer_norm, run="third"))
    # hyper_parameters that hold no model mapping are left to check_training_state's line (test_trust)
    assert check_resume_model({"hidden_size": 16}, {"hyper_parameters": "x"}, "x.ckpt") is None


def test_a_resume_given_another_seed_is_refused_as_its_record_would_name_a_seed_it_did_not_use(
    tiny_cfg, tiny_corpus, tmp_path
):
    """A checkpoint records its run's seed; a resume given another (`seed=7,8 ckpt_path=<seed 7's checkpoint>`: two
    "seeds" that would train on as one, the report's sd 0) is one line before anything is written, as it goes on with
    the random state it saved. A seed the command line does not give (the config's) is not compared: a sweep over
    ckpt_path=a,b of runs of other seeds goes on. A library caller's config is compared; a checkpoint without a seed (a
    library user's, an older rnnreg's) is not."""
    train(tiny_cfg(*DROPOUT, "seed=7", "trainer.max_epochs=1", "test=false", run="first"))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["seed"] == 7
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", *DROPOUT, "test=false"]
    resume = [*tiny, "trainer.max_epochs=2", f"ckpt_path={ckpt}"]
    proc = run("rnnreg-train", "-m", *resume, "seed=7,8", f"hydra.sweep.dir={tmp_path / 'sweep'}", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-2] == (
        f"error: job 1 (seed=8) failed: seed=8 where {ckpt} was trained with seed=7: a resume goes on with the random "
        "state it saved (seed 7's dropout masks), so its record would name a seed it did not use: resume with seed=7"
    ), proc.stderr[-3000:]
    assert json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())["epochs"] == 2
    assert not (tmp_path / "sweep" / "1" / "checkpoints").exists()
    # the config's seed=1234 is not compared: the run goes on as seed 7, which its records name (a later resume
    # compares its checkpoint's; the report reads its config.yaml's), to the digits of job 0's, given seed=7
    proc = run("rnnreg-train", *resume, f"hydra.run.dir={tmp_path / 'default'}")
    assert f"{ckpt} was trained with seed=7: the run goes on with its random state, as seed=7" in proc.stdout
    assert yaml.safe_load((tmp_path / "default" / ".hydra" / "config.yaml").read_text())["seed"] == 7
    assert load_checkpoint(tmp_path / "default" / "checkpoints" / "last.ckpt")["seed"] == 7
    given = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert json.loads((tmp_path / "default" / "metrics.json").read_text())["val_ppl"] == given["val_ppl"]
    with pytest.raises(ConfigError, match=r"^seed=8 where .* was trained with seed=7: "):
        train(tiny_cfg(*DROPOUT, "test=false", "trainer.max_epochs=2", f"ckpt_path={ckpt}", "seed=8", run="library"))
    unrecorded = load_checkpoint(ckpt)
    del unrecorded["seed"]
    copy = tmp_path / "copy" / "checkpoints" / "last.ckpt"
    copy.parent.mkdir(parents=True)
    torch.save(unrecorded, copy)
    shutil.copyfile(ckpt.parent / "best.ckpt", copy.parent / "best.ckpt")  # (looked for beside it: checkpoints.py)
    assert train(tiny_cfg(*DROPOUT, "trainer.max_epochs=2", "test=false", f"ckpt_path={copy}", "seed=8"))["epochs"] == 2


def test_a_run_that_trainer_max_steps_stopped_inside_an_epoch_resumes_exactly(tiny_cfg, tmp_path):
    """trainer.max_steps inside an epoch: its record counts the epochs it finished and says where it stopped (before:
    2 epochs, for 1 and a half), and a resume trains the epoch's other windows, to the digits of a run never stopped
    (before: Lightning took the epoch as done, and every later epoch ran a window short on a schedule an epoch
    behind); given the same max_steps again, nothing is left to train."""
    budget = ("trainer.limit_train_batches=6", "optim.decay_start=1", "test=false")
    stopped = train(tiny_cfg(*budget, "trainer.max_epochs=4", "+trainer.max_steps=9", run="stopped"))
    assert (stopped["epochs"], stopped["stopped_at"]) == (1, "window 3 of 6 of epoch 2 (trainer.max_steps=9)")
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    resumed = train(tiny_cfg(*budget, "trainer.max_epochs=4", f"ckpt_path={ckpt}", run="resumed"))
    whole = train(tiny_cfg(*budget, "trainer.max_epochs=4", run="whole"))
    assert {k: resumed[k] for k in ("val_ppl", "best_val_ppl", "epochs")} == {
        k: whole[k] for k in ("val_ppl", "best_val_ppl", "epochs")
    }
    assert "stopped_at" not in resumed and "stopped_at" not in whole
    assert "limit_val_batches" not in whole  # (its validation whole: only a cut split's limit is recorded)
    with pytest.raises(ConfigError, match=r"holds 9 trained windows and trainer.max_steps=9: nothing is left to train"):
        train(tiny_cfg(*budget, "trainer.max_epochs=4", "+trainer.max_steps=9", f"ckpt_path={ckpt}", run="again"))


def test_the_records_fix_for_a_run_of_ones_own_configs_names_its_config_dir_and_its_corpus_only(tmp_path):
    """A run of one's own experiment (--config-dir myconf experiment=mine data.bptt=5, its data chosen by the
    experiment): the vocabulary refusal gave `data.bptt=5` as the data it was trained on, which reads the same words,
    and the model refusal `experiment=mine` without the --config-dir it needs (found by a probe). Both name the
    folder of the run's configs, and the vocabulary line the options that chose its corpus."""
    run_dir, myconf = tmp_path / "run", tmp_path / "myconf"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- experiment=mine\n- data.bptt=5\n- model.hidden_size=16\n")
    sources = [{"path": str(myconf), "schema": "file", "provider": "command-line"}]
    hydra = {"job": {"config_name": "train"}, "runtime": {"config_sources": sources, "choices": {"data": "tiny"}}}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    assert vocabulary_refusal(ckpt, ["a", "<eos>"], ["b", "a", "<eos>"], None, "evaluate") == (
        f"{ckpt} was trained on another vocabulary (2 words) than this data (3 words): evaluate it on the data it was "
        f"trained on (--config-dir {myconf} data=tiny, its run's .hydra/hydra.yaml records)"
    )
    checkpoint = {"hyper_parameters": {"model": {"hidden_size": 16, "num_layers": 2}}}
    with pytest.raises(ConfigError) as refused:
        check_resume_model({"hidden_size": 8, "num_layers": 2}, checkpoint, ckpt)
    assert str(refused.value).endswith(
        f"resume with the model it was trained with (--config-dir {myconf} experiment=mine model.hidden_size=16, "
        "from its run's .hydra/overrides.yaml)"
    )


def test_a_relative_recorded_data_dir_is_not_taken_for_this_commands(tmp_path, monkeypatch):
    """A run given a relative data.data_dir (fine without hydra.job.chdir) read it from the folder it started in;
    evaluated from another folder holding a folder of that name, another corpus, the refusal said the train file
    "has changed since". A relative folder is no evidence of the same file: the line names the run's data."""
    run_dir, corpus = tmp_path / "run", tmp_path / "corpus"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        "data:\n  data_dir: corpus\n  files:\n    train: {name: train.txt}\n"
    )
    (run_dir / ".hydra" / "overrides.yaml").write_text("- data=text\n- data.data_dir=corpus\n")
    corpus.mkdir()
    (corpus / "train.txt").write_text("b a\n")
    monkeypatch.chdir(tmp_path)
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    assert vocabulary_refusal(ckpt, ["a", "b", "<eos>"], ["b", "a", "<eos>"], corpus / "train.txt", "evaluate") == (
        f"{ckpt} was trained on another vocabulary than this data (both 3 words, 2 words at another id): evaluate it "
        "on the data it was "
        "trained on (data=text data.data_dir=corpus, from its run's .hydra/overrides.yaml)"
    )
    # a run on its config's default data (PTB): no data override, the option its hydra.yaml records (before: none)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (run_dir / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      data: ptb\n")
    assert vocabulary_refusal(ckpt, ["a", "b", "<eos>"], ["b", "a", "<eos>"], corpus / "train.txt", "evaluate") == (
        f"{ckpt} was trained on another vocabulary than this data (both 3 words, 2 words at another id): evaluate it "
        "on the data it was "
        "trained on (data=ptb, its run's .hydra/hydra.yaml records)"
    )
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"data:\n  data_dir: {corpus}\n  files:\n    train: {{name: train.txt}}\n"
    )
    assert "which has changed since, now with its words first seen in another order: evaluate it on that file" in (
        vocabulary_refusal(ckpt, ["a", "b", "<eos>"], ["b", "a", "<eos>"], corpus / "train.txt", "evaluate")
    )


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # (a test needs no ModelCheckpoint)
def test_testing_a_mid_epoch_checkpoint_leaves_the_rng_and_the_next_fits_first_window(tiny_corpus, tmp_path):
    """trainer.test(task, datamodule=data, ckpt_path=...) from Python: only the weights are the checkpoint's (before:
    it put back the checkpoint's RNG, and the data module's window, so the next fresh fit began its epoch there)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rnnreg.data import LMDataModule
    from rnnreg.task import LanguageModelTask

    data = LMDataModule(
        str(tiny_corpus), {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}, batch_size=4, bptt=5
    )
    model, dropout = {"hidden_size": 4, "num_layers": 1, "init_scale": 0.1}, {"input": 0, "between": 0, "output": 0}
    task = LanguageModelTask(data.vocab_size, model, dropout, {"lr": 1.0, "decay": 2.0, "decay_start": 4, "clip": 5.0})
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    mid = ModelCheckpoint(tmp_path, every_n_train_steps=3)
    L.Trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=1, callbacks=[mid], **quiet).fit(task, data)
    assert torch.load(mid.best_model_path, weights_only=False)["train_window"] > 0  # a mid-epoch checkpoint
    torch.manual_seed(0)
    drawn = torch.rand(3)
    torch.manual_seed(0)
    L.Trainer(limit_test_batches=1, **quiet).test(task, datamodule=data, ckpt_path=mid.best_model_path, verbose=False)
    assert torch.equal(torch.rand(3), drawn)  # the caller's random stream goes on
    assert data.resume_window == 0 and next(iter(data.train_dataloader()))[0][0, 0] == data.load().ids["train"][0]


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # (a test needs no ModelCheckpoint)
def test_a_library_fit_from_a_checkpoint_on_a_train_split_changed_since_applies_rnnreg_trains_rule(
    tiny_corpus, tmp_path
):
    """A library user's own trainer.fit(task, datamodule=..., ckpt_path=...) checks the data as rnnreg-train does
    (before: it went on at window N of streams cut from other text without a word): a mid-epoch checkpoint on a train
    split changed since is refused in one line naming the fix, an epoch-end one trains on with a warning."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rnnreg.task import LanguageModelTask

    def data() -> LMDataModule:
        return LMDataModule(
            str(tiny_corpus), {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}, batch_size=4, bptt=5
        )

    def task(vocab_size: int) -> LanguageModelTask:
        model, dropout = {"hidden_size": 4, "num_layers": 1, "init_scale": 0.1}, {"input": 0, "between": 0, "output": 0}
        return LanguageModelTask(vocab_size, model, dropout, {"lr": 1.0, "decay": 2.0, "decay_start": 4, "clip": 5.0})

    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    limits = {"limit_train_batches": 5, "limit_val_batches": 1, "default_root_dir": tmp_path}
    first = data()
    mid, end = ModelCheckpoint(tmp_path / "mid", every_n_train_steps=3), ModelCheckpoint(tmp_path / "end")
    L.Trainer(max_epochs=1, callbacks=[mid, end], **limits, **quiet).fit(task(first.vocab_size), first)
    assert torch.load(mid.best_model_path, weights_only=False)["train_window"] == 2
    assert torch.load(end.best_model_path, weights_only=False)["train_window"] == 0
    train_file = tiny_corpus / "train.txt"
    with open(train_file, "a") as f:
        f.write("w1 w2 w3\n")  # words it knows: the same vocabulary, other streams
    changed = data()
    with pytest.raises(ConfigError) as refused:
        L.Trainer(max_epochs=1, **limits, **quiet).fit(task(changed.vocab_size), changed, ckpt_path=mid.best_model_path)
    assert str(refused.value) == (
        f"{mid.best_model_path} was stopped inside epoch 1 after 2 windows and this data's train split {train_file} is "
        "not the one its run trained on (changed since the checkpoint: its words or their order differ): the resume "
        "would go on at window 3 of streams cut from other text; resume it on that file as it was (restore it), or "
        "from a checkpoint taken at an epoch's end, or train a new run"
    )
    with pytest.warns(UserWarning) as warned:
        L.Trainer(max_epochs=2, **limits, **quiet).fit(task(changed.vocab_size), changed, ckpt_path=end.best_model_path)
    said = [str(w.message) for w in warned if "changed since the checkpoint" in str(w.message)]
    assert said == [
        f"{end.best_model_path} was trained on another train split than {train_file} (changed since the checkpoint: "
        "its words or their order differ): the resumed run trains on other text than its run's"
    ]


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # (a test needs no ModelCheckpoint)
def test_a_library_fit_from_a_mid_epoch_checkpoint_with_other_streams_or_windows_is_one_line(tiny_corpus, tmp_path):
    """A library user's own trainer.fit(..., ckpt_path=<a mid-epoch checkpoint>) with another batch size or bptt in
    its data module: rnnreg-train's line (check_resume_streams), before any window (before: the carried state of 4
    streams met a batch of 8 in a traceback from nn.LSTM; another bptt went on at another place in the stream). Its
    Trainer's limit_train_batches at no more windows than the checkpoint stopped after: rnnreg-train's line too
    (check_resume_against; before: the resumed epoch trained none and ended as if complete)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rnnreg.task import LanguageModelTask

    def data(batch_size: int = 4, bptt: int = 5) -> LMDataModule:
        files = {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}
        return LMDataModule(str(tiny_corpus), files, batch_size=batch_size, bptt=bptt)

    def task(vocab_size: int, hidden_size: int = 4) -> LanguageModelTask:
        model = {"hidden_size": hidden_size, "num_layers": 1, "init_scale": 0.1}
        dropout = {"input": 0, "between": 0, "output": 0}
        return LanguageModelTask(vocab_size, model, dropout, {"lr": 1.0, "decay": 2.0, "decay_start": 4, "clip": 5.0})

    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    limits = {"limit_train_batches": 5, "limit_val_batches": 1, "default_root_dir": tmp_path}
    mid = ModelCheckpoint(tmp_path / "mid", every_n_train_steps=3)
    L.Trainer(max_epochs=1, callbacks=[mid], **limits, **quiet).fit(task(data().vocab_size), data())
    for other, trainer_limits, says in (
        (
            data(batch_size=8),
            limits,
            "data.batch_size=8 where {} was stopped inside an epoch trained with data.batch_size=4 "
            "(its carried state holds 4 streams): resume with data.batch_size=4",
        ),
        (
            data(bptt=3),
            limits,
            "data.bptt=3 where {} was stopped inside an epoch after 2 windows of data.bptt=5: resume with "
            "data.bptt=5 (or from an epoch's end)",
        ),
        (
            data(),
            limits | {"limit_train_batches": 2},
            "{} was stopped inside epoch 1 after 2 windows and this run's epochs have 2 windows "
            "(trainer.limit_train_batches=2): the resumed epoch would train none; resume with the "
            "trainer.limit_train_batches it was trained with",
        ),
    ):
        resumed = task(other.vocab_size)
        with pytest.raises(ConfigError) as refused:
            L.Trainer(max_epochs=1, **trainer_limits, **quiet).fit(resumed, other, ckpt_path=mid.best_model_path)
        assert str(refused.value) == says.format(mid.best_model_path)
        assert resumed.global_step == 0  # refused before its first window
    # a task of another size: its weights cannot take the checkpoint's (rnnreg-train names the setting before)
    with pytest.raises(CheckpointError, match=r"^the checkpoint holds another model shape \(net\.decoder\.weight: "):
        wider = task(data().vocab_size, hidden_size=6)
        L.Trainer(max_epochs=1, **limits, **quiet).fit(wider, data(), ckpt_path=mid.best_model_path)
    L.Trainer(max_epochs=1, **limits, **quiet).fit(task(data().vocab_size), data(), ckpt_path=mid.best_model_path)


def test_a_mid_epoch_checkpoint_on_a_train_split_changed_since_is_refused_in_one_line(tiny_cfg, tiny_corpus, tmp_path):
    """A train file given words since the run (words of its vocabulary: the vocabulary check passes) where the
    checkpoint stopped inside an epoch: its window would count windows of streams cut from other text (before: it
    went on there without a word). Refused before anything is written; as it was, it resumes."""
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=4", "test=false")
    with pytest.raises(SystemExit):
        train(tiny_cfg(*common, *signal_at(signal.SIGTERM, 2), run="first"))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["train_window"] == 2
    assert set(saved["data_fingerprint"]) == {"train", "valid", "test"}
    train_file = tiny_corpus / "train.txt"
    text = train_file.read_text()
    train_file.write_text(text + "w1 w2 w3\n")  # words it knows: the same vocabulary, other streams
    with pytest.raises(ConfigError) as refused:
        train(tiny_cfg(*common, f"ckpt_path={ckpt}", run="second"))
    assert str(refused.value) == (
        f"{ckpt} was stopped inside epoch 1 after 2 windows and this data's train split {train_file} is not the one "
        "its run trained on (changed since the checkpoint: its words or their order differ): the resume would go on "
        "at window 3 of streams cut from other text; resume it on that file as it was (restore it), or from a "
        "checkpoint taken at an epoch's end, or train a new run"
    )
    assert not (tmp_path / "second" / "metrics.json").exists() and not (tmp_path / "second" / "checkpoints").exists()
    # a checkpoint from before fingerprints were recorded goes on as it did; so does this one on its own train file
    old = tmp_path / "old.ckpt"
    torch.save({k: v for k, v in saved.items() if k != "data_fingerprint"}, old)
    assert train(tiny_cfg(*common, f"ckpt_path={old}", run="old"))["status"] == "completed"
    train_file.write_text(text)
    assert train(tiny_cfg(*common, f"ckpt_path={ckpt}", run="third"))["status"] == "completed"


def test_a_resume_at_an_epochs_end_on_splits_changed_since_warns_of_each(
    tiny_cfg, tiny_corpus, tmp_path, caplog, recwarn
):
    """At an epoch's end a changed train split is trained on, and a changed valid split validated on, each with a
    warning (before: without a word, the run's best score, measured on the old split, deciding best.ckpt); the
    unchanged corpus gives none."""
    common = ("trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "test=false")
    train(tiny_cfg(*common, "trainer.max_epochs=1", run="first"))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    best = json.loads((tmp_path / "first" / "metrics.json").read_text())["best_val_ppl"]
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        train(tiny_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={ckpt}", run="same"))
    assert not [r for r in caplog.records if "changed since the checkpoint" in r.getMessage()]
    for split in ("train", "valid"):
        with open(tiny_corpus / f"{split}.txt", "a") as f:
            f.write("w4 w5 w6\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        assert train(tiny_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={ckpt}", run="second"))["epochs"] == 2
    said = [r.getMessage() for r in caplog.records if "changed since the checkpoint" in r.getMessage()]
    assert said == [
        f"{ckpt} was trained on another train split than {tiny_corpus / 'train.txt'} (changed since the checkpoint: "
        "its words or their order differ): the resumed run trains on other text than its run's",
        f"{ckpt}: its run's best_val_ppl {best:.2f} and best.ckpt were measured on another validation split than "
        f"{tiny_corpus / 'valid.txt'} (changed since the checkpoint): the resumed run's best.ckpt and early stopping "
        "compare them with perplexities of this one",
    ]
    # once, in the run's log: not again as Lightning's fit loads the checkpoint (the library's check)
    assert not [w for w in recwarn if "changed since the checkpoint" in str(w.message)]


def test_a_resume_on_a_test_split_changed_since_warns_that_its_final_test_scores_the_new_one(
    tiny_cfg, tiny_corpus, tmp_path, caplog
):
    """A test file changed since the checkpoint (before: the final test ran on it without a word, its perplexity not
    comparable with one on the run's test file): the resume warns as it does of a changed valid split."""
    common = ("trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")
    train(tiny_cfg(*common, "trainer.max_epochs=1", "test=false", run="first"))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with open(tiny_corpus / "test.txt", "a") as f:
        f.write("w4 w5 w6\n")
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        assert train(tiny_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={ckpt}", run="second"))["epochs"] == 2
    said = [r.getMessage() for r in caplog.records if "changed since the checkpoint" in r.getMessage()]
    assert said == [
        f"{ckpt}: the test split {tiny_corpus / 'test.txt'} is not the one its run had (changed since the checkpoint: "
        "its words or their order differ): the resumed run's final test scores this one, not comparable with a test "
        "on its run's"
    ]


def test_a_run_stopped_in_its_final_test_warns_that_its_test_split_changed_since(
    tiny_cfg, tiny_corpus, tmp_path, caplog
):
    """A run stopped in its final test, gone on with in its folder, trains nothing and tests: a test file changed since
    is warned of there too (before: its data was not compared, the test ran on the new file without a word); its
    train and valid files, which it neither trains nor validates on, are not."""
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2")
    common += ("trainer.limit_test_batches=3",)
    stop = ("+callbacks.signal_in_test._target_=helpers.SignalInTest", f"+callbacks.signal_in_test.signum={SIGTERM}")
    with pytest.raises(SystemExit):
        train(tiny_cfg(*common, *stop, run="first"))
    first = tmp_path / "first"
    assert json.loads((first / "metrics.json").read_text())["status"] == "interrupted"
    for split in ("train", "valid", "test"):
        with open(tiny_corpus / f"{split}.txt", "a") as f:
            f.write("w4 w5 w6\n")
    ckpt = first / "checkpoints" / "last.ckpt"
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        assert train(tiny_cfg(*common, f"ckpt_path={ckpt}", run="first"))["status"] == "completed"
    said = [r.getMessage() for r in caplog.records if "changed since the checkpoint" in r.getMessage()]
    assert said == [
        f"{ckpt}: the test split {tiny_corpus / 'test.txt'} is not the one its run had (changed since the checkpoint: "
        "its words or their order differ): the resumed run's final test scores this one, not comparable with a test "
        "on its run's"
    ]
