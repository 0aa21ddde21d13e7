"""Ensembles, Monte-Carlo dropout and generation on small trained checkpoints."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from helpers import compose_config
from rnnreg.evaluate import evaluate
from rnnreg.generate import generate, render
from rnnreg.train import train


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two different small models trained on the same tiny corpus (different seeds and epochs)."""
    from helpers import TINY, write_corpus

    root = tmp_path_factory.mktemp("ens")
    corpus = write_corpus(root / "corpus")
    paths = []
    for seed, epochs in ((1, 3), (2, 1)):
        cfg = compose_config(
            [
                "experiment=paper_small",
                *TINY,
                f"data.data_dir={corpus}",
                f"seed={seed}",
                f"trainer.max_epochs={epochs}",
                "dropout=non_recurrent",
                "dropout.p=0.2",
                "test=false",
            ],
            root / f"run{seed}",
        )
        train(cfg)
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


def test_ensemble_of_one_equals_the_model(checkpoints):
    corpus, (a, _), root = checkpoints
    single = evaluate(eval_cfg(corpus, root, a))
    ensemble = evaluate(eval_cfg(corpus, root, f"[{a},{a}]"))
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert ensemble[key] == pytest.approx(single[key], rel=1e-5), key


def test_ensemble_of_two_is_no_worse_than_the_worse(checkpoints):
    corpus, (a, b), root = checkpoints
    ppl_a, ppl_b = (evaluate(eval_cfg(corpus, root, p)) for p in (a, b))
    both = evaluate(eval_cfg(corpus, root, f"[{a},{b}]"))
    assert ppl_a["test_ppl"] != ppl_b["test_ppl"]
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert both[key] <= max(ppl_a[key], ppl_b[key]), key


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


def test_generation_maps_unknown_words_and_renders_eos(checkpoints):
    _, (a, _), _ = checkpoints
    with pytest.warns(UserWarning, match="read as <unk>: zebra"):
        words = generate(a, "w1 zebra", 0)
    assert words == ["w1", "<unk>"]
    assert render(["a", "<eos>", "b", "<eos>"]) == "a\nb\n"
