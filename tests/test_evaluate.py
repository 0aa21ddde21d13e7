"""Ensembles, Monte-Carlo dropout and generation on small trained checkpoints; what rnnreg-eval and
rnnreg-generate refuse, and how an evaluation stops on a signal."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import warm_start
from helpers import (
    BIN,
    TINY,
    compose_config,
    perplexity_by_hand,
    piped,
    run,
    run_signal_at_import,
    strict_json,
    write_corpus,
)
from rnnreg.errors import CheckpointError, ConfigError, OutputError
from rnnreg.evaluate import evaluate
from rnnreg.generate import generate, pieces
from rnnreg.io import load_checkpoint
from rnnreg.model import cpu_runs_fused_lstm_in_bf16
from rnnreg.run_folder_check import check_run_dir_free, earlier_results
from rnnreg.train import train


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two different small models trained on the same tiny corpus (different seeds and epochs); the first by
    rnnreg-train itself, whose run folder (.hydra/ included) rnnreg-eval reads the run's batch size from."""
    root = tmp_path_factory.mktemp("ens")
    corpus = write_corpus(root / "corpus")
    paths = []
    for seed, epochs in ((1, 3), (2, 1)):
        overrides = [
            "experiment=paper_small",
            *TINY,
            f"data.data_dir={corpus}",
            f"seed={seed}",
            f"trainer.max_epochs={epochs}",
            "dropout=non_recurrent",
            "dropout.p=0.2",
            "test=false",
        ]
        if seed == 1:
            run("rnnreg-train", *overrides, f"hydra.run.dir={root / 'run1'}")
        else:
            train(compose_config(overrides, root / f"run{seed}"))
        paths.append(str(root / f"run{seed}" / "checkpoints" / "last.ckpt"))
    return corpus, paths, root


EVALUATIONS = itertools.count()


def eval_cfg(corpus, root, ckpt, *extra):
    """An rnnreg-eval config of `ckpt`, writing into a folder of its own (an evaluation refuses a folder where one
    has written metrics.json)."""
    return compose_config(
        [
            "data=text",
            f"data.data_dir={corpus}",
            "data.bptt=5",
            "data.batch_size=4",
            "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu",
            f"ckpt_path={ckpt}",
            *extra,
        ],
        root / f"eval_{next(EVALUATIONS)}",
        config_name="eval",
    )


def test_ensemble_of_one_equals_the_model(checkpoints, tmp_path):
    """A model averaged with a copy of itself (two files: one file listed twice is refused) is that model."""
    corpus, (a, _), root = checkpoints
    copy = shutil.copy(a, tmp_path / "copy.ckpt")
    single = evaluate(eval_cfg(corpus, root, a))
    ensemble = evaluate(eval_cfg(corpus, root, f"[{a},{copy}]"))
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert ensemble[key] == pytest.approx(single[key], rel=1e-5), key


def test_evaluate_from_python_checks_its_config_as_rnnreg_eval_does(checkpoints):
    """evaluate(cfg) from Python refuses what rnnreg-eval's command line refuses, in the same line, before anything
    is written (before: a checkpoint listed twice was averaged with itself, its params counted twice, and a bad
    value reached Lightning)."""
    corpus, (a, _), root = checkpoints
    for extra, said in (
        ((f"ckpt_path=[{a},{a}]",), rf"^ckpt_path=\[.*\] lists {re.escape(a)} \(one file\) twice: give each "),
        (("mc_samples=0",), r"^mc_samples=0 must be "),
    ):
        cfg = eval_cfg(corpus, root, a, *extra)
        with pytest.raises(ConfigError, match=said):
            evaluate(cfg)
        assert not Path(cfg.paths.output_dir).exists()


def test_ensemble_of_two_is_no_worse_than_the_worse(checkpoints):
    corpus, (a, b), root = checkpoints
    ppl_a, ppl_b = (evaluate(eval_cfg(corpus, root, p)) for p in (a, b))
    both = evaluate(eval_cfg(corpus, root, f"[{a},{b}]"))
    assert ppl_a["test_ppl"] != ppl_b["test_ppl"]
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert both[key] <= max(ppl_a[key], ppl_b[key]), key


def test_ensemble_averages_the_models_probabilities(checkpoints):
    """The paper's ensemble predicts the mean of its models' distributions, log((p_a + p_b) / 2), not the mean of
    their log-probabilities (a geometric mean, which is also no worse than the worse model): its test_ppl is
    exp(-mean log((p_a + p_b) / 2)) over the one-stream test split, computed here by hand."""
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from rnnreg.task import load_task

    corpus, (a, b), root = checkpoints
    cfg = eval_cfg(corpus, root, f"[{a},{b}]")
    both = evaluate(cfg)
    datamodule = instantiate(cfg.data)
    ids = datamodule.load().ids["test"]
    with torch.no_grad():
        probs = []
        for path in (a, b):
            net = load_task(path).net.eval()
            logits, _ = net(ids[:-1].view(-1, 1))
            probs.append(F.softmax(logits.float().view(-1, logits.size(-1)), dim=-1))
        mixed = (probs[0] + probs[1]) / 2
        nll = -mixed.gather(1, ids[1:].view(-1, 1)).log().sum().item()
    assert both["test_ppl"] == pytest.approx(math.exp(nll / (ids.numel() - 1)), rel=1e-5)
    # the normalised geometric mean, for these two models 7e-5 apart (relative): the tolerance tells them apart
    geometric = F.log_softmax(torch.stack([p.log() for p in probs]).mean(0), dim=-1)
    geometric_nll = -geometric.gather(1, ids[1:].view(-1, 1)).sum().item()
    assert both["test_ppl"] != pytest.approx(math.exp(geometric_nll / (ids.numel() - 1)), rel=1e-5)


def test_monte_carlo_passes_take_the_memory_of_one_however_many_there_are():
    """PredictiveAverage sums its passes' distributions as it draws them: holding every pass's log-probabilities
    until the window's last (200 x 20 x 10,000 floats a pass on PTB) took 16 GB at mc_samples=100 and was killed
    for memory. Measured in a process of its own as the growth of its peak resident memory from 2 passes to 60 of a
    model with a 10,000-word vocabulary over one 200-word window: held at once, 60 passes' take 480 MB and more."""
    code = (
        "import resource, torch\n"
        "from rnnreg.ensemble import PredictiveAverage\n"
        "from rnnreg.model import LSTMLanguageModel\n"
        "torch.manual_seed(0)\n"
        "net = LSTMLanguageModel(10_000, 16, 1, 0.1, dropout_output=0.2)\n"
        "tokens = torch.randint(10_000, (200, 1))\n"
        "peaks = []\n"
        "for passes in (2, 60):\n"
        "    with torch.no_grad():\n"
        "        log_probs, _ = PredictiveAverage([net], passes)(tokens)\n"
        "    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(200, 1))\n"
        "    del log_probs\n"
        "    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "print((peaks[1] - peaks[0]) // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout) < 100, f"60 passes took {proc.stdout.strip()} MB more than 2"


def test_mc_dropout_is_stochastic_and_close(checkpoints):
    corpus, (a, _), root = checkpoints
    plain = evaluate(eval_cfg(corpus, root, a))
    mc = evaluate(eval_cfg(corpus, root, a, "mc_samples=4"))
    assert mc["mc_samples"] == 4 and mc["test_ppl"] != plain["test_ppl"]
    assert mc["test_ppl"] == pytest.approx(plain["test_ppl"], rel=0.2)


def test_generation_is_seeded_and_respects_temperature(checkpoints):
    _, (a, _), _ = checkpoints
    first = generate(a, "w1 w2", 40, seed=5)
    assert first == generate(a, "w1 w2", 40, seed=5) and first != generate(a, "w1 w2", 40, seed=6)
    assert first[:2] == ["w1", "w2"] and len(first) == 42

    def entropy(temperature: float) -> float:
        counts = Counter(generate(a, "w1", 1500, temperature=temperature, seed=0)[1:])
        total = sum(counts.values())
        return -sum(c / total * math.log(c / total) for c in counts.values())

    assert entropy(0.3) < entropy(1.0) < entropy(2.0)


def test_generation_follows_the_whole_text_so_far():
    """Near temperature 0 each word drawn is the network's most likely next word after the whole text so far,
    run from its start: the draws condition on every prompt word and on the words drawn before (the state
    carried between draws is the text's). A network whose predictions depend on the context: untrained, with
    large weights (the trained checkpoints here predict <eos> after any word)."""
    from rnnreg.generate import sample
    from rnnreg.model import LSTMLanguageModel

    vocab = ["<eos>", *(f"w{i}" for i in range(11))]
    torch.manual_seed(5)
    net = LSTMLanguageModel(len(vocab), 16, 2, init_scale=2.0).eval()
    words = sample(net, vocab, "w5 w9 w2", 8, temperature=1e-3, seed=0, device="cpu")
    assert words[:3] == ["w5", "w9", "w2"] and len(set(words[3:])) > 1
    stoi = {w: i for i, w in enumerate(vocab)}
    with torch.no_grad():
        after_first, _ = net(torch.tensor([[stoi["w5"]]]))
        assert vocab[after_first[-1, 0].argmax().item()] != words[3]  # the context tells here
        for i in range(3, len(words)):
            logits, _ = net(torch.tensor([[stoi[w]] for w in words[:i]]))
            assert vocab[logits[-1, 0].argmax().item()] == words[i], i


def test_generation_draws_each_word_at_the_temperature_given(monkeypatch):
    """Each word is drawn from softmax(logits / temperature) of the network after the text so far: temperature
    0.5 sharpens the distribution as 0.5 says (the logits divided once, not as 0.25)."""
    from rnnreg.generate import sample
    from rnnreg.model import LSTMLanguageModel

    vocab = ["<eos>", *(f"w{i}" for i in range(11))]
    torch.manual_seed(5)
    net = LSTMLanguageModel(len(vocab), 16, 2, init_scale=2.0).eval()
    drawn_from, multinomial = [], torch.multinomial

    def recorded(probs, *args, **kwargs):
        drawn_from.append(probs.clone())
        return multinomial(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", recorded)
    words = sample(net, vocab, "w5 w9", 4, temperature=0.5, seed=0, device="cpu")
    assert len(drawn_from) == 4
    stoi = {w: i for i, w in enumerate(vocab)}
    with torch.no_grad():
        for i, probs in enumerate(drawn_from):
            logits, _ = net(torch.tensor([[stoi[w]] for w in words[: 2 + i]]))
            expected = torch.softmax(logits[-1, 0].double() / 0.5, dim=-1)
            torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-7)


def test_generation_without_a_prompt_starts_as_after_a_sentence():
    """No prompt: the first word drawn is one the network predicts after <eos> (a sentence's start), not after
    any other word (<unk>), and the text does not hold that <eos>."""
    from rnnreg.generate import sample
    from rnnreg.model import LSTMLanguageModel

    vocab = ["<eos>", "<unk>", *(f"w{i}" for i in range(10))]
    torch.manual_seed(5)
    net = LSTMLanguageModel(len(vocab), 16, 2, init_scale=2.0).eval()
    with torch.no_grad():
        after = {w: vocab[net(torch.tensor([[vocab.index(w)]]))[0][-1, 0].argmax().item()] for w in vocab[:2]}
    assert after["<eos>"] != after["<unk>"]  # the start tells here
    words = sample(net, vocab, "", 3, temperature=1e-3, seed=0, device="cpu")
    assert len(words) == 3 and words[0] == after["<eos>"]


def test_generate_refuses_a_temperature_that_is_not_positive():
    """generate() as a library call: temperature 0 (or below) is a one-line ConfigError before any checkpoint is
    read (a softmax over logits / 0 has no distribution to draw from)."""
    for temperature in (0, -1.0):
        with pytest.raises(ConfigError, match=f"^temperature={temperature} must be positive"):
            generate("no/such.ckpt", "w1", 5, temperature=temperature)


def test_generation_maps_unknown_words_and_renders_eos(checkpoints):
    _, (a, _), _ = checkpoints
    with pytest.warns(UserWarning, match="read as <unk>: zebra"):
        words = generate(a, "w1 zebra", 0)
    assert words == ["w1", "<unk>"]
    assert "".join(pieces(["a", "<eos>", "b", "<eos>"])) == "a\nb\n"


def test_mc_dropout_is_reproducible_from_its_seed(checkpoints):
    corpus, (a, _), root = checkpoints
    first, again, other = (evaluate(eval_cfg(corpus, root, a, "mc_samples=3", f"seed={seed}")) for seed in (7, 7, 8))
    assert first == again and first["seed"] == 7
    assert first["test_ppl"] != other["test_ppl"] and other["seed"] == 8


def test_monte_carlo_dropout_of_a_model_without_dropout_is_one_line(checkpoints, tmp_path):
    """mc_samples=2 of a model trained without dropout: each pass would be the deterministic one (N times its cost
    for the same number), so rnnreg-eval refuses in one line, exit 2, before it evaluates or writes anything; an
    ensemble with one model that drops runs."""
    corpus, (a, _), root = checkpoints
    overrides = ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", "dropout=none", "trainer.max_epochs=1"]
    train(compose_config([*overrides, "trainer.limit_train_batches=2", "test=false"], tmp_path / "plain"))
    plain = tmp_path / "plain" / "checkpoints" / "last.ckpt"
    copy = shutil.copy(plain, tmp_path / "plain_copy.ckpt")  # (one file listed twice is refused as such)
    data = ["data=text", f"data.data_dir={corpus}", "data.bptt=5", "data.batch_size=4", "trainer.accelerator=cpu"]
    for given, which in ((str(plain), str(plain)), (f"[{plain},{copy}]", "none of the checkpoints")):
        out = tmp_path / f"eval_{len(which)}"
        proc = run("rnnreg-eval", *data, f"ckpt_path={given}", "mc_samples=2", f"hydra.run.dir={out}", check=False)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [
            f"error: mc_samples=2: {which} drops nothing (every dropout rate 0), so each Monte-Carlo pass would be "
            "the same deterministic one: leave mc_samples out (1), or give a model trained with dropout"
        ], proc.stderr
        assert not (out / "metrics.json").exists()
    mixed = evaluate(eval_cfg(corpus, root, f"[{plain},{a}]", "mc_samples=2"))
    assert mixed["mc_samples"] == 2


def test_two_mc_samples_are_monte_carlo_dropout(checkpoints):
    """mc_samples=2, the fewest Monte-Carlo passes: dropout is on and two passes averaged (not the deterministic
    model's perplexity under a record of mc_samples=2)."""
    corpus, (a, _), root = checkpoints
    plain = evaluate(eval_cfg(corpus, root, a))
    mc = evaluate(eval_cfg(corpus, root, a, "mc_samples=2"))
    assert mc["mc_samples"] == 2 and mc["test_ppl"] != plain["test_ppl"] and mc["val_ppl"] != plain["val_ppl"]


def test_mc_dropouts_test_masks_come_from_the_seed_whatever_the_validation_drew(checkpoints, tmp_path):
    """The test split's Monte-Carlo masks are drawn from `seed` itself: with a longer validation split (which
    draws more masks before the test) the one-stream test_ppl is the same."""
    corpus, (a, _), root = checkpoints
    longer = tmp_path / "corpus"
    longer.mkdir()
    for split in ("train", "test"):
        shutil.copy(corpus / f"{split}.txt", longer / f"{split}.txt")
    shutil.copy(write_corpus(tmp_path / "valid", lines=(1, 90, 1), seed=3) / "valid.txt", longer / "valid.txt")
    short = evaluate(eval_cfg(corpus, root, a, "mc_samples=2", "seed=4"))
    long = evaluate(eval_cfg(longer, root, a, "mc_samples=2", "seed=4"))
    assert long["val_ppl"] != short["val_ppl"]
    assert long["test_ppl"] == pytest.approx(short["test_ppl"], rel=1e-6)


def test_eval_records_its_batch_size_and_names_its_runs(checkpoints, caplog):
    """val_ppl and test_ppl_batched depend on the number of streams: metrics.json records it, and an evaluation
    with another one than the checkpoint's run says which data.batch_size reproduces the run's numbers."""
    corpus, (a, _), root = checkpoints
    trained = json.loads((root / "run1" / "metrics.json").read_text())
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        same = evaluate(eval_cfg(corpus, root, a, "data.eval_bptt=3"))
        assert not [r for r in caplog.records if r.name == "rnnreg"]
        other = evaluate(eval_cfg(corpus, root, a, "data.batch_size=2"))
    assert (same["batch_size"], same["eval_bptt"], other["batch_size"], other["eval_bptt"]) == (4, 3, 2, 200)
    assert same["val_ppl"] == pytest.approx(trained["val_ppl"], rel=1e-5) and other["val_ppl"] != same["val_ppl"]
    assert other["test_ppl"] == pytest.approx(same["test_ppl"], rel=1e-5)  # one stream either way
    [note] = [r.getMessage() for r in caplog.records if r.name == "rnnreg"]
    assert note.startswith(f"{a} was trained with data.batch_size=4 and is evaluated with 2: ")
    assert note.endswith("add data.batch_size=4 to reproduce them")


def test_eval_records_the_part_of_each_split_it_evaluated(checkpoints, caplog):
    """metrics.json records data.test_batch_size and trainer.limit_val_batches and limit_test_batches (null: the whole
    split), as it records batch_size and eval_bptt: a test cut to its first windows does not read as the whole
    split's. With another data.batch_size than its run's, the line no longer says test_ppl is its run's where the
    test was cut: it names the cut, and the overrides that reproduce its run's numbers (before: "(test_ppl does
    not)", and neither key in metrics.json)."""
    corpus, (a, _), root = checkpoints
    whole = evaluate(eval_cfg(corpus, root, a))
    assert (whole["test_batch_size"], whole["limit_val_batches"], whole["limit_test_batches"]) == (1, None, None)
    cut_args = ("data.batch_size=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")  # 1 of 2 windows
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        cut = evaluate(eval_cfg(corpus, root, a, *cut_args))
    assert (cut["test_batch_size"], cut["limit_val_batches"], cut["limit_test_batches"]) == (1, 1, 1)
    assert cut["test_ppl"] != pytest.approx(whole["test_ppl"], rel=1e-4)
    [note] = [r.getMessage() for r in caplog.records if r.name == "rnnreg"]
    assert note == (
        f"{a} was trained with data.batch_size=4 and is evaluated with 2: val_ppl and test_ppl_batched differ from "
        "its run's metrics.json, and test_ppl and test_ppl_batched cover another part of the test split "
        "(trainer.limit_test_batches=1 here, null in its run); add data.batch_size=4 trainer.limit_test_batches=null "
        "to reproduce them"
    )


def run_validated_on(corpus: Path, run_dir: Path, limit: int) -> tuple[dict, Path, list[str]]:
    """A tiny run (windows of 5 steps) validated on trainer.limit_val_batches=`limit`: its metrics.json, its
    last.ckpt, and the overrides of an rnnreg-eval of that checkpoint on the same data."""
    args = ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", "trainer.max_epochs=1", "test=false"]
    args += ["trainer.limit_train_batches=3", f"trainer.limit_val_batches={limit}", "data.eval_bptt=null"]
    run("rnnreg-train", *args, f"hydra.run.dir={run_dir}")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    data = ["data=text", f"data.data_dir={corpus}", "data.bptt=5", "data.batch_size=4", f"ckpt_path={ckpt}"]
    data += ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    return json.loads((run_dir / "metrics.json").read_text()), ckpt, data


def test_eval_of_a_run_validated_on_part_of_its_split_says_how_to_reproduce_its_val_ppl(tiny_corpus, tmp_path, caplog):
    """A run that validated on its valid split's first windows (trainer.limit_val_batches, as experiment=smoke):
    rnnreg-eval validates on all of it, and says that val_ppl differs from the run's and which settings reproduce
    it; with those, it is the run's val_ppl, and nothing is said (before: another val_ppl without a word)."""
    trained, ckpt, data = run_validated_on(tiny_corpus, tmp_path / "run", limit=3)
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        whole = evaluate(compose_config(data, tmp_path / "whole", config_name="eval"))
    [note] = [r.getMessage() for r in caplog.records if r.name == "rnnreg"]
    assert note.startswith(
        f"{ckpt} was validated in its run on trainer.limit_val_batches=3 of the valid split in windows of 5 steps, "
        "and is evaluated on all of it: val_ppl differs from its run's metrics.json; add "
    ), note
    fix = note.split("; add ")[1].removesuffix(" to reproduce it").split()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        again = evaluate(compose_config([*data, *fix], tmp_path / "again", config_name="eval"))
    assert not [r for r in caplog.records if r.name == "rnnreg"]
    assert again["val_ppl"] == pytest.approx(trained["val_ppl"], rel=1e-6)
    assert whole["val_ppl"] != pytest.approx(trained["val_ppl"], rel=1e-3)


def test_eval_of_a_run_whose_limit_cut_nothing_of_its_valid_split_says_nothing(tiny_corpus, tmp_path, caplog):
    """trainer.limit_val_batches=30 in a run whose valid split has fewer windows (24 of 5 steps here; a tiny corpus
    under experiment=smoke's 40): its run validated on the whole split, so rnnreg-eval's val_ppl is its run's, in
    windows of any length (39 of 3 steps here, more than 30), and nothing is said (before: that val_ppl differs from
    its run's, and settings to reproduce it)."""
    trained, ckpt, data = run_validated_on(tiny_corpus, tmp_path / "run", limit=30)
    data += ["data.eval_bptt=3"]
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        whole = evaluate(compose_config(data, tmp_path / "whole", config_name="eval"))
    assert not [r.getMessage() for r in caplog.records if r.name == "rnnreg"]
    assert whole["val_ppl"] == pytest.approx(trained["val_ppl"], rel=1e-5)


def test_a_run_record_eval_cannot_read_is_left_out_of_what_it_says(checkpoints, tmp_path, caplog):
    """A checkpoint's run folder whose .hydra/config.yaml and overrides.yaml are not UTF-8 (a folder from elsewhere):
    the evaluation runs without the batch-size note, and another vocabulary is refused in its one line without the
    run's data (before: a UnicodeDecodeError's traceback from each)."""
    corpus, (a, _), root = checkpoints
    run_dir = tmp_path / "run"
    shutil.copytree(Path(a).parent.parent / ".hydra", run_dir / ".hydra")
    (run_dir / "checkpoints").mkdir()
    ckpt = str(shutil.copy(a, run_dir / "checkpoints" / "last.ckpt"))
    for name in ("config.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).write_bytes(b"data:\n  batch_size: 4\n\xff\xfe\n")
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        assert evaluate(eval_cfg(corpus, root, ckpt, "data.batch_size=2"))["batch_size"] == 2
    assert not [r for r in caplog.records if r.name == "rnnreg"]
    other = write_corpus(tmp_path / "other", vocab=25, seed=3)
    with pytest.raises(ConfigError) as err:
        evaluate(eval_cfg(other, root, ckpt))
    assert re.fullmatch(
        rf"{re.escape(ckpt)} was trained on another vocabulary \(\d+ words\) than this data \(\d+ words\): "
        r"evaluate it on the data it was trained on",
        str(err.value),
    )


def test_a_checkpoint_whose_train_file_changed_since_its_run_is_refused_saying_so(checkpoints, tmp_path):
    """A corpus edited after the run (words added to its train file): the line said to evaluate the checkpoint on
    the data it was trained on, naming the very data.data_dir the command gave. It says the file changed, and how."""
    corpus, (a, _), root = checkpoints
    run_dir, edited = tmp_path / "run1", tmp_path / "corpus"
    shutil.copytree(Path(a).parent.parent, run_dir)
    shutil.copytree(corpus, edited)
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace(str(corpus), str(edited)))
    with open(edited / "train.txt", "a") as f:
        f.write("brand new words\n")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as refused:
        evaluate(eval_cfg(edited, root, ckpt))
    assert str(refused.value) == (
        f"{ckpt} was trained on another vocabulary (42 words) than this data (45 words): its run trained on this "
        f"train file {edited / 'train.txt'} (its .hydra/config.yaml), which has changed since, now with 3 words its "
        "vocabulary lacks (e.g. brand, new, words): evaluate it on that file as it was (restore it), or train a new "
        "run on the corpus as it is"
    )


def test_eval_on_a_split_other_than_its_runs_says_its_perplexity_is_not_its_runs(checkpoints, tmp_path, caplog):
    """A test file changed since the run (words of its vocabulary: nothing refuses it): the evaluation runs and says
    that its test perplexities are not comparable with its run's (before: not a word); its val_ppl is, and is not
    warned of. A checkpoint from before the fingerprint was recorded evaluates as it did, without the line."""
    corpus, (a, b), root = checkpoints
    assert torch.load(a, weights_only=True)["data_fingerprint"] == torch.load(b, weights_only=True)["data_fingerprint"]
    edited = tmp_path / "corpus"
    shutil.copytree(corpus, edited)
    with open(edited / "test.txt", "a") as f:
        f.write("w7 w8 w9\n")
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        evaluate(eval_cfg(edited, root, a))
    said = [r.getMessage() for r in caplog.records if "not the one its run was" in r.getMessage()]
    assert said == [
        f"{a}: the test split {edited / 'test.txt'} is not the one its run was tested on (its words or their order "
        "differ): its test_ppl and test_ppl_batched are not comparable with its run's metrics.json here"
    ]
    old = tmp_path / "old.ckpt"
    torch.save({k: v for k, v in torch.load(a, weights_only=True).items() if k != "data_fingerprint"}, old)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        assert evaluate(eval_cfg(edited, root, old))["test_ppl"] > 0
    assert not [r for r in caplog.records if "not the one its run was" in r.getMessage()]


def test_eval_writes_each_protocols_perplexity_computed_by_hand(checkpoints, tmp_path):
    """rnnreg-eval's metrics.json holds each split's and protocol's own perplexity, each equal to the model run by
    hand from a zero state carried across windows: test_ppl over the test split as one stream, test_ppl_batched
    over it as data.batch_size streams, val_ppl over the validation split as data.batch_size streams. The three
    are 1 % or more apart here (8 streams against 1, in windows of 7), so a value written under another protocol's
    key fails (before: nothing noticed test_ppl written where test_ppl_batched belongs)."""
    from rnnreg.data import Corpus, ensure_files
    from rnnreg.task import load_task

    corpus, (a, _), _ = checkpoints
    folder = tmp_path / "eval"
    run(
        "rnnreg-eval",
        f"ckpt_path={a}",
        "data=text",
        f"data.data_dir={corpus}",
        "data.batch_size=8",
        "data.eval_bptt=7",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={folder}",
    )
    written = json.loads((folder / "metrics.json").read_text())
    files = {split: {"name": f"{split}.txt"} for split in ("train", "valid", "test")}
    ids = Corpus(ensure_files(corpus, files)).ids
    net = load_task(a).net
    by_hand = {
        "test_ppl": perplexity_by_hand(net, ids["test"], streams=1, window=7)[0],
        "test_ppl_batched": perplexity_by_hand(net, ids["test"], streams=8, window=7)[0],
        "val_ppl": perplexity_by_hand(net, ids["valid"], streams=8, window=7)[0],
    }
    assert {key for key in written if "ppl" in key} == set(by_hand)  # a new protocol's key gets its own check
    assert (written["batch_size"], written["eval_bptt"]) == (8, 7)
    for key, value in by_hand.items():
        assert written[key] == pytest.approx(value, rel=1e-6), key
    for one, other in itertools.combinations(by_hand.values(), 2):  # one's value under another's key would fail
        assert one != pytest.approx(other, rel=1e-3)


def test_a_checkpoint_path_under_home_is_found(checkpoints, monkeypatch):
    """ckpt_path='~/...' quoted (the shell leaves ~ to us), as the schema's check reads it."""
    corpus, (a, _), root = checkpoints
    monkeypatch.setenv("HOME", str(root))
    home = "~/run1/checkpoints/last.ckpt"
    assert evaluate(eval_cfg(corpus, root, f"'{home}'"))["ckpt_path"] == [str(root / "run1/checkpoints/last.ckpt")]
    assert generate(home, "w1", 5, seed=1) == generate(a, "w1", 5, seed=1)


def test_an_evaluation_records_the_absolute_path_of_a_relative_checkpoint_path(checkpoints, monkeypatch):
    """ckpt_path=run1/checkpoints/last.ckpt, relative to where rnnreg-eval ran: its metrics.json (in another folder)
    names the checkpoint by its absolute path, which reads the same from anywhere."""
    corpus, (a, _), root = checkpoints
    monkeypatch.chdir(root)
    cfg, absolute = eval_cfg(corpus, root, "run1/checkpoints/last.ckpt"), str(Path(a).resolve())
    assert evaluate(cfg)["ckpt_path"] == [absolute]
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["ckpt_path"] == [absolute]


def test_an_evaluation_into_a_folder_of_checkpoints_is_refused(checkpoints):
    """rnnreg-eval hydra.run.dir=<run>/checkpoints: one line, exit 2, nothing written (before: its metrics.json, log
    and .hydra/ went among the run's checkpoints, and rnnreg-report listed it as a second run of that run's); a
    folder inside it, a multirun's sweep folder there and evaluate()'s folder too. A new folder stays allowed."""
    corpus, (a, _), root = checkpoints
    run1 = root / "run1"
    folder, inside, before = run1 / "checkpoints", run1 / "checkpoints" / "eval", sorted(run1.rglob("*"))
    proc = run(
        "rnnreg-eval", f"ckpt_path={a}", "data=text", f"data.data_dir={corpus}", f"hydra.run.dir={folder}", check=False
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={folder} is a folder of checkpoints, and rnnreg-eval writes its metrics.json, log and "
        ".hydra/ there: give the evaluation a folder of its own (hydra.run.dir=<a new folder>, or leave "
        "hydra.run.dir out)"
    ]
    with pytest.raises(OutputError, match=f"^hydra.run.dir={inside} is inside {folder}, a folder of checkpoints, "):
        check_run_dir_free([f"ckpt_path={a}", f"hydra.run.dir={inside}"], "eval", "evaluate")
    with pytest.raises(OutputError, match=f"^hydra.sweep.dir={folder} is a folder of checkpoints, "):
        check_run_dir_free(["-m", f"ckpt_path={a}", f"hydra.sweep.dir={folder}"], "eval", "evaluate")
    with pytest.raises(OutputError, match=f"^hydra.run.dir={inside} is inside {folder}, "):
        evaluate(compose_config(["data=text", f"data.data_dir={corpus}", f"ckpt_path={a}"], inside, "eval"))
    assert sorted(run1.rglob("*")) == before
    check_run_dir_free([f"ckpt_path={a}", f"hydra.run.dir={root / 'new' / 'checkpoints'}"], "eval", "evaluate")


def test_a_training_run_into_a_folder_of_checkpoints_is_refused(checkpoints):
    """rnnreg-train hydra.run.dir=<run>/checkpoints (e.g. resuming a run "in" its checkpoints folder) is refused as
    rnnreg-eval's is, before anything is written (before: checkpoints/checkpoints/, .hydra/ and metrics.json among
    the run's checkpoints); train() checks too. The run's own folder (going on in place) stays allowed."""
    corpus, (a, _), root = checkpoints
    run1 = root / "run1"
    folder, before = run1 / "checkpoints", sorted(run1.rglob("*"))
    with pytest.raises(OutputError) as refused:
        check_run_dir_free([f"ckpt_path={a}", f"hydra.run.dir={folder}"], "train", "train")
    assert str(refused.value) == (
        f"hydra.run.dir={folder} is a folder of checkpoints, and rnnreg-train writes its checkpoints/, metrics.json, "
        "log and .hydra/ there: give the run a folder of its own (hydra.run.dir=<a new folder>, or leave "
        "hydra.run.dir out)"
    )
    with pytest.raises(OutputError, match=f"^hydra.run.dir={folder / 'again'} is inside {folder}, a folder of "):
        train(compose_config([*TINY, "data=text", f"data.data_dir={corpus}", f"ckpt_path={a}"], folder / "again"))
    assert sorted(run1.rglob("*")) == before
    check_run_dir_free([f"ckpt_path={a}", f"hydra.run.dir={run1}"], "train", "train")


def damaged(checkpoint: dict, change) -> dict:
    checkpoint = dict(checkpoint, state_dict=dict(checkpoint["state_dict"]))
    change(checkpoint)
    return checkpoint


def set_weight(checkpoint: dict, key: str, value: float) -> None:
    tensor = checkpoint["state_dict"][key].clone()
    tensor.view(-1)[5] = value
    checkpoint["state_dict"][key] = tensor


def nested(checkpoint: dict, group: str, key: str, value) -> None:
    hparams = checkpoint["hyper_parameters"] = dict(checkpoint["hyper_parameters"])
    hparams[group] = dict(hparams[group], **{key: value})


BAD_CHECKPOINTS = {
    "nan": (
        lambda c: set_weight(c, "net.lstm.weight_hh_l0", math.nan),
        "holds non-finite weights (net.lstm.weight_hh_l0): it is damaged, or from a run that diverged",
    ),
    "inf": (lambda c: set_weight(c, "net.decoder.bias", -math.inf), "holds non-finite weights (net.decoder.bias)"),
    "not_tensors": (  # a weight as a list of numbers (plain data, which the data-only loader reads)
        lambda c: c["state_dict"].update({"net.decoder.bias": c["state_dict"]["net.decoder.bias"].tolist()}),
        "is not a checkpoint rnnreg-train wrote: its state_dict is not a mapping of names to tensors",
    ),
    "no_model": (
        lambda c: c.update(hyper_parameters=dict(c["hyper_parameters"], model=None)),
        "is not a checkpoint rnnreg-train wrote: its hyper_parameters are not valid (model=null must be a mapping); "
        "give a checkpoint it wrote",
    ),
    "no_vocab": (
        lambda c: c.pop("vocab"),
        "is not a checkpoint rnnreg-train wrote: it holds no vocabulary (its 'vocab' entry, a list of words)",
    ),
    "vocab_not_words": (  # a list of its size, but of numbers, not words
        lambda c: c.update(vocab=list(range(len(c["vocab"])))),
        "is not a checkpoint rnnreg-train wrote: it holds no vocabulary (its 'vocab' entry, a list of words)",
    ),
    "short_vocab": (
        lambda c: c.update(vocab=c["vocab"][:-1]),
        "is not a checkpoint rnnreg-train wrote: its vocabulary has 41 words, its model 42",
    ),
    "vocab_word_twice": (  # its size, but one word in two places (its ids of that word could not both be read)
        lambda c: c.update(vocab=[*c["vocab"][:-1], c["vocab"][3]]),
        "is not a checkpoint rnnreg-train wrote: its vocabulary lists a word twice (",
    ),
    "no_layers": (
        lambda c: nested(c, "model", "num_layers", 0),
        "is not a checkpoint rnnreg-train wrote: its hyper_parameters are not valid (model.num_layers=0 must be",
    ),
    "bad_rate": (
        lambda c: nested(c, "dropout", "input", 1.5),
        "is not a checkpoint rnnreg-train wrote: its hyper_parameters are not valid (dropout.input=1.5 must be a "
        "number in [0, 1) (a drop probability such as 0.5)); give a checkpoint it wrote",
    ),
    # values of another type: the schema's line (as for a command line), not Python's words from the model
    "init_not_a_number": (
        lambda c: nested(c, "model", "init_scale", "x"),
        "is not a checkpoint rnnreg-train wrote: its hyper_parameters are not valid (model.init_scale='x' must be a "
        "number > 0",
    ),
    "flag_not_a_bool": (
        lambda c: nested(c, "dropout", "variational", "yes"),
        "is not a checkpoint rnnreg-train wrote: its hyper_parameters are not valid (dropout.variational='yes' must "
        "be true or false)",
    ),
    "lr_not_a_number": (
        lambda c: nested(c, "optim", "lr", "1.0"),
        "is not a checkpoint rnnreg-train wrote: its hyper_parameters are not valid (optim.lr='1.0' must be a number "
        "> 0",
    ),
    "vocab_size_not_a_number": (
        lambda c: c.update(hyper_parameters=dict(c["hyper_parameters"], vocab_size="42")),
        "is not a checkpoint rnnreg-train wrote: its hyper_parameters are not valid (vocab_size='42' must be an "
        "integer >= 1)",
    ),
    "fingerprint_not_a_mapping": (
        lambda c: c.update(data_fingerprint="abc"),
        "is not a checkpoint rnnreg-train wrote: its data_fingerprint 'abc' is not a mapping of train, valid and test "
        "to sha256 sums; give a checkpoint it wrote",
    ),
    "fingerprint_not_a_sum": (
        lambda c: c.update(data_fingerprint={"train": "0" * 64, "valid": "ABC", "test": "0" * 64}),
        "is not a checkpoint rnnreg-train wrote: its data_fingerprint['valid'] is 'ABC', not a sha256 sum (64 hex "
        "digits); give a checkpoint it wrote",
    ),
    "shape": (
        lambda c: nested(c, "model", "hidden_size", 24),
        "is not a rnnreg checkpoint of this version (net.embedding.weight has shape (42, 16) where its "
        "hyper_parameters give (42, 24)): give a checkpoint written by rnnreg-train",
    ),
}


@pytest.fixture(scope="module")
def bad_checkpoints(checkpoints):
    _, (a, _), root = checkpoints
    good = torch.load(a, weights_only=True)
    paths = {}
    for name, (change, _) in BAD_CHECKPOINTS.items():
        paths[name] = root / f"{name}.ckpt"
        torch.save(damaged(good, change), paths[name])
    return paths


@pytest.mark.parametrize("name", BAD_CHECKPOINTS)
def test_a_damaged_or_foreign_checkpoint_is_refused_by_eval_and_generate(checkpoints, bad_checkpoints, name):
    corpus, (a, _), root = checkpoints
    path, message = str(bad_checkpoints[name]), BAD_CHECKPOINTS[name][1]
    with pytest.raises(CheckpointError) as refused:
        generate(path, "w1", 5)
    assert str(refused.value).startswith(f"{path} {message}")
    cfg = eval_cfg(corpus, root, f"[{a},{path}]")  # one bad member of an ensemble is enough
    with pytest.raises(CheckpointError) as refused:
        evaluate(cfg)
    assert str(refused.value).startswith(f"{path} {message}")
    assert not os.path.exists(f"{cfg.paths.output_dir}/metrics.json")


def test_a_layer_norm_checkpoint_from_before_its_biases_moved_is_refused_in_one_line(checkpoints, tmp_path):
    """A layer-norm model's checkpoint records that its gate biases sit after the norms (Ba et al. 2016). One from
    before (nothing recorded: they sat inside the norms) computes another function of its weights here, so
    rnnreg-eval, rnnreg-generate, a resume (ckpt_path=) and a library user's own trainer.test refuse it in one line,
    writing nothing. A checkpoint without layer norm needs no record (this module's others have none)."""
    import lightning as L

    import rnnreg

    corpus, _, root = checkpoints
    tiny = [*TINY, f"data.data_dir={corpus}", "regularizer=layer_norm", "test=false"]
    train(compose_config(["experiment=paper_small", *tiny, "trainer.max_epochs=1"], tmp_path / "run"))
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["layer_norm_biases"] == "after_norms"
    assert math.isfinite(
        evaluate(eval_cfg(corpus, root, str(tmp_path / "run" / "checkpoints" / "last.ckpt")))["test_ppl"]
    )
    old = tmp_path / "old.ckpt"
    torch.save({k: v for k, v in checkpoint.items() if k != "layer_norm_biases"}, old)
    said = re.escape(f"{old} is a layer-norm model from an rnnreg that added its gate biases inside the norms (before ")
    with pytest.raises(CheckpointError, match=f"^{said}"):
        generate(str(old), "w1", 5)
    cfg = eval_cfg(corpus, root, str(old))
    with pytest.raises(CheckpointError, match=f"^{said}"):
        evaluate(cfg)
    assert not os.path.exists(f"{cfg.paths.output_dir}/metrics.json")
    resumed = tmp_path / "resumed"
    with pytest.raises(CheckpointError, match=f"^{said}"):
        train(compose_config(["experiment=paper_small", *tiny, "trainer.max_epochs=2", f"ckpt_path={old}"], resumed))
    assert not (resumed / "metrics.json").exists()
    recipe = rnnreg.paper_recipe("small", "data=text", f"data.data_dir={corpus}", "data.bptt=5", "model.hidden_size=16")
    data = rnnreg.ptb_datamodule(**recipe["data"])
    task = rnnreg.LanguageModelTask(
        data.vocab_size, recipe["model"] | {"layer_norm": True}, recipe["dropout"], recipe["optim"]
    )
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(CheckpointError, match=f"^{said}"):
        trainer.test(task, datamodule=data, ckpt_path=str(old))


def test_eval_under_bf16_of_a_fused_model_is_refused_on_a_cpu_without_a_bf16_lstm(checkpoints):
    """rnnreg-eval trainer.precision=bf16-mixed of a checkpoint whose LSTM is nn.LSTM: where this CPU's oneDNN has
    no bf16 LSTM (AVX2 alone), one line before any window, nothing written; elsewhere it evaluates."""
    corpus, (a, _), root = checkpoints
    cfg = eval_cfg(corpus, root, a, "trainer.precision=bf16-mixed")
    if cpu_runs_fused_lstm_in_bf16():
        assert math.isfinite(evaluate(cfg)["test_ppl"])
        return
    with pytest.raises(ConfigError, match=r"^trainer.precision=bf16-mixed runs the fused LSTM .*: use trainer.prec"):
        evaluate(cfg)
    assert not os.path.exists(f"{cfg.paths.output_dir}/metrics.json")


def test_eval_of_a_fused_model_in_float32_runs_on_a_cpu_without_a_bf16_lstm(checkpoints, monkeypatch):
    """Where oneDNN has no bf16 LSTM (stood in for: this CPU may have one), rnnreg-eval of a checkpoint whose LSTM is
    nn.LSTM is refused under trainer.precision=bf16-mixed alone: in 32-true (the fix the refusal gives) it evaluates."""
    import rnnreg.model

    monkeypatch.setattr(rnnreg.model, "cpu_runs_fused_lstm_in_bf16", lambda: False)
    corpus, (a, _), root = checkpoints
    with pytest.raises(ConfigError, match=r"^trainer.precision=bf16-mixed runs the fused LSTM .*: use trainer.prec"):
        evaluate(eval_cfg(corpus, root, a, "trainer.precision=bf16-mixed"))
    assert math.isfinite(evaluate(eval_cfg(corpus, root, a, "trainer.precision=32-true"))["test_ppl"])


def test_an_eval_limit_that_leaves_a_split_no_window_is_one_line(checkpoints, tmp_path):
    """rnnreg-eval trainer.limit_val_batches=0.01 (or limit_test_batches) of a split of one window: one line, exit 2,
    as rnnreg-train says it, and no metrics.json (before: Lightning's MisconfigurationException, a traceback, exit
    1)."""
    corpus, (a, _), _ = checkpoints
    data = ["data=text", f"data.data_dir={corpus}", "data.bptt=5", "data.batch_size=4", f"ckpt_path={a}"]
    for key, split in (("limit_val_batches", "valid"), ("limit_test_batches", "test")):
        out = tmp_path / key
        proc = run("rnnreg-eval", *data, f"trainer.{key}=0.01", f"hydra.run.dir={out}", check=False)
        line = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and line.startswith(
            f"error: trainer.{key}=0.01 leaves the {split} split none of its 1 "
        ), proc.stderr[-3000:]
        assert not (out / "metrics.json").exists()


def test_every_member_of_an_ensemble_is_checked_against_the_datas_vocabulary(checkpoints, tmp_path):
    """Each checkpoint of an ensemble, not the first only, must be trained on this data's vocabulary: a member
    with the same words in another order (the same size, other ids) would be averaged in, predicting the wrong
    words, with a perplexity that looks plausible."""
    corpus, (a, b), root = checkpoints
    checkpoint = torch.load(b, weights_only=True)
    checkpoint["vocab"] = checkpoint["vocab"][::-1]
    reordered = tmp_path / "reordered.ckpt"
    torch.save(checkpoint, reordered)
    cfg = eval_cfg(corpus, root, f"[{a},{reordered}]")
    with pytest.raises(ConfigError) as refused:
        evaluate(cfg)
    assert str(refused.value) == (
        f"{reordered} was trained on another vocabulary than this data (both 42 words, 42 words at another id): "
        "evaluate it on the data it was trained on"
    )
    assert not os.path.exists(f"{cfg.paths.output_dir}/metrics.json")


@pytest.mark.parametrize("script", ["rnnreg-eval", "rnnreg-generate"])
def test_a_checkpoint_with_nan_weights_is_one_line_error(checkpoints, bad_checkpoints, script, tmp_path):
    """Before: rnnreg-eval wrote val_ppl NaN (a bare NaN in metrics.json) and exited 0, rnnreg-generate crashed."""
    corpus, _, _ = checkpoints
    args = ["data=text", f"data.data_dir={corpus}", f"hydra.run.dir={tmp_path}"] if script == "rnnreg-eval" else []
    proc = run(script, f"ckpt_path={bad_checkpoints['nan']}", *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {bad_checkpoints['nan']} holds non-finite weights (net.lstm.weight_hh_l0): it is damaged, or from "
        "a run that diverged; give another checkpoint (an earlier one of that run)"
    )
    assert not (tmp_path / "metrics.json").exists()


def test_a_perplexity_that_overflows_is_null_in_metrics_json(checkpoints):
    """Finite weights whose perplexity overflows (one word's decoder bias -1e30): metrics.json is strict JSON with
    null perplexities (before: a bare Infinity, which jq and JavaScript refuse); evaluate() returns them as floats."""
    corpus, (a, _), root = checkpoints
    path = root / "overflow.ckpt"
    torch.save(damaged(torch.load(a, weights_only=True), lambda c: set_weight(c, "net.decoder.bias", -1e30)), path)
    cfg = eval_cfg(corpus, root, path)
    returned = evaluate(cfg)
    written = strict_json((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    ppls = ("val_ppl", "test_ppl", "test_ppl_batched")
    assert not any(math.isfinite(returned[key]) for key in ppls)
    assert written == returned | dict.fromkeys(ppls)


def test_an_evaluation_sweep_names_a_failed_job_by_its_checkpoint(checkpoints, bad_checkpoints, tmp_path):
    """rnnreg-eval -m ckpt_path=a,b: a job that fails is named by the checkpoint it was given (a path is no part
    of a run's name elsewhere, which left `job 1 ()`), the other job is evaluated, the sweep exits 1."""
    corpus, (a, _), _ = checkpoints
    bad, sweep = bad_checkpoints["nan"], tmp_path / "sweep"
    args = ["-m", "data=text", f"data.data_dir={corpus}", "data.batch_size=4", "trainer.enable_progress_bar=false"]
    proc = run("rnnreg-eval", *args, f"ckpt_path={a},{bad}", f"hydra.sweep.dir={sweep}", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 2, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: job 1 (ckpt_path={bad}) failed: {bad} holds non-finite weights")
    assert errors[1] == f"error: 1 job(s) of the multirun in {sweep} failed: 1 (ckpt_path={bad})"
    assert json.loads((sweep / "0" / "metrics.json").read_text())["test_ppl"] > 1


def test_a_generation_sweep_with_a_failed_job_exits_1_and_lists_it(checkpoints, bad_checkpoints, tmp_path):
    """rnnreg-generate -m over a good and a bad checkpoint: the good one's text, the bad one's line, and the sweep's
    end as train and eval end theirs, exit 1 (before: exit 0, its job folders holding no .hydra/ to find them by)."""
    _, (a, _), _ = checkpoints
    bad, sweep = bad_checkpoints["nan"], tmp_path / "sweep"
    args = ["-m", f"ckpt_path={a},{bad}", "prompt=w1", "num_words=3", f"hydra.sweep.dir={sweep}"]
    proc = run("rnnreg-generate", *args, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 2, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: job 1 (ckpt_path={bad}) failed: {bad} holds non-finite weights")
    assert errors[1] == f"error: 1 job(s) of the multirun in {sweep} failed: 1"
    assert proc.stdout.startswith("w1 ")
    # the good job's folder, left empty (generate writes no file), is gone; the failed one's keeps its error.txt
    assert not (sweep / "0").exists() and (sweep / "1" / "error.txt").is_file()


def test_a_long_generation_prints_as_it_draws_and_ctrl_c_is_one_line(checkpoints):
    """A long generation (num_words has no bound) prints its lines as it draws them (before: nothing until its
    end); Ctrl-C is one line, exit 130, as rnnreg-eval says it (before: the sampler's 59-line traceback), and what
    was printed stays: the prompt first, then whole lines."""
    _, (a, _), _ = checkpoints
    args = [str(BIN / "rnnreg-generate"), f"ckpt_path={a}", "prompt=w1", "num_words=1000000000"]
    proc = warm_start.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.poll() is None, "no line before the generation ended (or in 120 s)"
        first = proc.stdout.readline()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines() == [
        "interrupted: rnnreg-generate stopped by Ctrl-C: the words drawn so far are printed above"
    ]
    assert (
        first.startswith("w1")
        and first.endswith("\n")
        and set((first + out).split()) <= set(load_checkpoint(a)["vocab"])
    )


def test_generate_prints_clean_lines(checkpoints):
    """An unknown prompt word is one `warning:` line (not Python's two-line warning with its source line); text
    without a prompt starts with its first word (no blank line, no space)."""
    _, (a, _), _ = checkpoints
    proc = run("rnnreg-generate", f"ckpt_path={a}", "prompt=w1 zebra", "num_words=3", "seed=2")
    assert proc.stderr.strip().splitlines() == ["warning: prompt words not in the vocabulary, read as <unk>: zebra"]
    assert proc.stdout.startswith("w1 <unk> ")
    text = run("rnnreg-generate", f"ckpt_path={a}", "prompt=", "num_words=30", "seed=2").stdout
    assert text == text.lstrip() and not any(line != line.strip() for line in text.splitlines())


def test_a_null_prompt_is_no_prompt(checkpoints):
    """prompt=null, which the schema takes, starts as prompt='' does, after a sentence (before: it read as the word
    None, warned of as a capital and an unknown word, and drawn after <unk>)."""
    _, (a, _), _ = checkpoints
    null = run("rnnreg-generate", f"ckpt_path={a}", "prompt=null", "num_words=5", "seed=2")
    empty = run("rnnreg-generate", f"ckpt_path={a}", "prompt=", "num_words=5", "seed=2")
    assert null.stderr == "" and null.stdout == empty.stdout and len(null.stdout.split()) == 5


def test_a_capitalised_prompt_is_read_in_lower_case_where_the_vocabulary_has_no_capitals(checkpoints):
    """A lower-case corpus (PTB's, whose one capital is N, its numbers' token; the tiny corpus's here) reads a
    capitalised prompt word in lower case, said on one line (before: warned of, then read as <unk>); a vocabulary
    with capitals reads the prompt as given."""
    from rnnreg.generate import sample
    from rnnreg.model import LSTMLanguageModel

    _, (a, _), _ = checkpoints
    proc = run("rnnreg-generate", f"ckpt_path={a}", "prompt=W1 w2 W1 zebra", "num_words=3", "seed=2")
    assert proc.stderr.strip().splitlines() == [
        "warning: prompt words read in lower case, as the checkpoint's vocabulary is: W1",
        "warning: prompt words not in the vocabulary, read as <unk>: zebra",
    ]
    assert proc.stdout.startswith("w1 w2 w1 <unk> ")
    vocab = ["<eos>", "<unk>", "The", "the", "N", "n"]
    net = LSTMLanguageModel(len(vocab), 8, 1, init_scale=0.1)
    with pytest.warns(UserWarning, match="read as <unk>: THE$"):
        assert sample(net, vocab, "THE the N", 0, 1.0, 0, "cpu") == ["<unk>", "the", "N"]


def test_a_prompt_a_vocabulary_without_unk_cannot_read_is_one_line_with_words_it_can(tmp_path):
    """A checkpoint whose corpus has no <unk> cannot read an unknown prompt word: one line that says so and gives a
    prompt of its words, which then samples (before: the line gave no fix)."""
    corpus = write_corpus(tmp_path / "corpus", vocab=12, unk=False)
    overrides = ["experiment=paper_small", *TINY, f"data.data_dir={corpus}", "trainer.max_epochs=1", "test=false"]
    run("rnnreg-train", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    ckpt = f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"
    proc = run("rnnreg-generate", ckpt, "prompt=w1 zebra w1 yak zebra", "num_words=3", check=False)
    vocab = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["vocab"]
    (line,) = proc.stderr.strip().splitlines()
    given = re.search(r"prompt='([^']*)'", line).group(1)
    assert proc.returncode == 2 and line.startswith("error: prompt words zebra, yak are not in the checkpoint's")
    assert f"({len(vocab)} words, no <unk> to read them as)" in line and "<unk>" not in vocab
    assert given and set(given.split()) <= set(vocab) - {"<eos>"}
    assert run("rnnreg-generate", ckpt, f"prompt={given}", "num_words=3").stdout.startswith(f"{given} ")


def long_validation(corpus: Path, tmp_path: Path) -> Path:
    """`corpus` (the same vocabulary) with a validation split of many short windows: an evaluation of tens of
    seconds (a test stops it; it must outlast the other job's start-up and exit, which took 3-7 s each in a busy
    suite: with 3,000 lines job 1 had finished before job 0's process was gone)."""
    long = tmp_path / "corpus"
    long.mkdir()
    for split in ("train", "test"):
        shutil.copy(corpus / f"{split}.txt", long / f"{split}.txt")
    shutil.copy(write_corpus(tmp_path / "long", lines=(1, 20000, 1)) / "valid.txt", long / "valid.txt")
    return long


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_live_evaluation_holds_its_folder_and_a_signal_stops_it_writing_nothing(
    checkpoints, tmp_path, signum, status
):
    """A second evaluation into the folder of a live one stops with RunLock's line (before: it ran and replaced
    the first's metrics.json). SIGTERM or Ctrl-C during the evaluation: one line, exit 143 or 130 (before:
    Lightning's exit 0 on SIGTERM, 1 on Ctrl-C, and nothing said), and nothing written that would stop a rerun
    there."""
    corpus, (a, _), _ = checkpoints
    long = long_validation(corpus, tmp_path)
    folder = tmp_path / "eval"
    args = ["data=text", f"data.data_dir={long}", "data.batch_size=4", "data.eval_bptt=2", "seed=3"]
    args += [f"ckpt_path={a}", f"hydra.run.dir={folder}", "trainer.enable_progress_bar=false"]
    proc = warm_start.popen(
        [str(BIN / "rnnreg-eval"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:  # Lightning's first line: the trainer is built, validation starts
            if "GPU available" in line:
                break
        if signum == signal.SIGTERM:  # once: a second process is seconds, held off while the first is stopped
            proc.send_signal(signal.SIGSTOP)  # alive, holding its folder, however slowly the second starts
            second = run("rnnreg-eval", *args, check=False)
            proc.send_signal(signal.SIGCONT)
            assert second.returncode == 2 and second.stderr.strip().splitlines() == [
                f"error: {folder} is in use by another live rnnreg run (pid {proc.pid}@{os.uname().nodename}): give "
                "this run another folder (hydra.run.dir=...), or wait for that run to end"
            ]
        assert proc.poll() is None, "the evaluation ended before it was interrupted: make it longer"
        time.sleep(0.5)
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    what = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert proc.returncode == status and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"interrupted: rnnreg-eval stopped by {what} before it finished; it wrote no metrics.json in {folder} "
        "(run it again)"
    )
    assert earlier_results(folder) == [] and not (folder / ".rnnreg.lock").exists()


def test_an_evaluation_stopped_by_sigterm_in_a_submitit_job_ends_the_job_and_the_sweep_names_it(checkpoints, tmp_path):
    """SIGTERM to a submitit job (scancel, SLURM's pre-emption) evaluating: its one line, no metrics.json, and the
    job ends with that as its result, so the multirun collects the other job and ends naming the stopped one
    (before: submitit waited 15 s for a result and the multirun ended in its UncompletedJobError traceback)."""
    corpus, (a, _), _ = checkpoints
    long, sweep = long_validation(corpus, tmp_path), tmp_path / "sweep"
    args = ["-m", "data=text", f"data.data_dir={corpus},{long}", "data.batch_size=4", "data.eval_bptt=2"]
    args += [f"ckpt_path={a}", "trainer.enable_progress_bar=false", "hydra/launcher=submitit_local"]
    args += ["hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}"]
    proc = warm_start.popen(
        [str(BIN / "rnnreg-eval"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        # job 0's process has ended, job 1's evaluates its long split (a local submitit job's id is its pid; Lightning's
        # first line says its trainer is built), all read afresh just before the signal
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            running = [int(d.name) for d in sweep.glob(".submitit/*") if d.name.isdigit() and alive(int(d.name))]
            if (sweep / "0" / "metrics.json").exists() and len(running) == 1 and evaluating(sweep, running[0]):
                break
            time.sleep(0.05)
        time.sleep(0.5)  # inside its validation (about 10 s here), past the trainer's setup, as a live user's signal
        os.kill(running[0], signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    last = (
        f"error: 1 job(s) of the multirun in {sweep} were stopped by a signal before they wrote a result: 1 "
        f"(data.data_dir={long}) (run them again)"
    )
    assert err.strip().splitlines()[-1] == last
    job_err = next(sweep.glob(f".submitit/{running[0]}/*_0_log.err")).read_text()
    assert "Traceback" not in job_err and job_err.strip().splitlines()[-1] == (
        f"interrupted: rnnreg-eval stopped by SIGTERM before it finished; it wrote no metrics.json in {sweep / '1'} "
        "(run it again)"
    )
    assert not (sweep / "1" / "metrics.json").exists()
    assert (sweep / "1" / "error.txt").read_text() == (
        "stopped by SIGTERM before it finished; it wrote no metrics.json (run it again)\n"
    )
    assert json.loads((sweep / "0" / "metrics.json").read_text())["test_ppl"] > 1


def alive(pid: int) -> bool:
    """Whether process `pid` runs (not gone, not a zombie its parent has yet to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def evaluating(sweep: Path, job_id: int) -> bool:
    return any("GPU available" in log.read_text() for log in sweep.glob(f".submitit/{job_id}/*_0_log.out"))


def test_a_generation_read_by_head_stops_quietly(checkpoints):
    """`rnnreg-generate num_words=<huge> | head -2`: it stops when head has its lines, exit 0, no BrokenPipeError
    (before: nothing reached head until the whole sample was drawn)."""
    _, (a, _), _ = checkpoints
    proc = piped([str(BIN / "rnnreg-generate"), f"ckpt_path={a}", "prompt=w1", "num_words=1000000000"], ["head", "-2"])
    assert proc.returncode == 0 and not proc.stderr.strip() and len(proc.stdout.splitlines()) == 2, proc.stderr[-3000:]


def test_a_generation_sweep_read_by_head_leaves_no_lock_and_no_empty_folder(checkpoints, tmp_path):
    """`rnnreg-generate -m ckpt_path=a,b ... | head -2`: the first job's reader stops the sweep quietly, exit 0, and
    the sweep folder keeps neither its lock (before: a dead run's lock, which the next sweep took over) nor the job's
    empty folder (its samples went to stdout)."""
    _, (a, b), _ = checkpoints
    sweep = tmp_path / "sweep"
    command = [str(BIN / "rnnreg-generate"), "-m", f"ckpt_path={a},{b}", "prompt=w1", "num_words=1000000000"]
    proc = piped([*command, f"hydra.sweep.dir={sweep}"], ["head", "-2"])
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2, proc.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml", "sweep.yaml"]


def test_a_generation_stopped_before_its_first_word_says_nothing_was_printed(checkpoints, tmp_path):
    """Ctrl-C while rnnreg-generate still loads its checkpoint: one line that says so, exit 130."""
    _, (a, _), _ = checkpoints
    proc = run_signal_at_import(
        signal.SIGINT, "rnnreg.checkpoint_contents", tmp_path / "hook", "rnnreg-generate", f"ckpt_path={a}"
    )
    assert proc.returncode == 130 and not proc.stdout, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "interrupted: rnnreg-generate stopped by Ctrl-C: it had printed nothing yet"
    ]
