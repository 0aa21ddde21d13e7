"""Parameter counts, initialisation and the paper's dropout placement."""

from __future__ import annotations

import pytest
import torch

from helpers import compose_config
from rnnreg.model import LSTMLanguageModel


@pytest.mark.parametrize("name,params", [("small", 4_653_200), ("medium", 19_780_400), ("large", 66_034_000)])
def test_parameter_counts_match_the_paper(name: str, params: int, tmp_path):
    m = compose_config([f"experiment=paper_{name}"], tmp_path).model
    with torch.device("meta"):
        net = LSTMLanguageModel(10_000, m.hidden_size, m.num_layers, m.init_scale)
    assert sum(p.numel() for p in net.parameters()) == params


def test_every_tensor_is_initialised_uniform_within_scale():
    torch.manual_seed(0)
    net = LSTMLanguageModel(500, 64, 2, init_scale=0.05)
    names = {n for n, _ in net.named_parameters()}
    assert {"embedding.weight", "decoder.weight", "decoder.bias", "lstm.bias_ih_l0", "lstm.bias_hh_l1"} <= names
    for name, p in net.named_parameters():
        assert p.abs().max() <= 0.05, name
        # really spread over the whole range (not a default, not a narrower range): of n >= 256 draws of U(-s, s)
        # none reaches 0.95 s with probability 0.95^256 < 1e-5
        assert p.numel() >= 256 and p.abs().max() > 0.95 * 0.05, name
        assert abs(p.mean().item()) < 0.01, name


def test_bad_dropout_and_init_rejected():
    with pytest.raises(ValueError, match=r"dropout.input=1.2 is outside \[0, 1\)"):
        LSTMLanguageModel(10, 4, 2, 0.1, dropout_input=1.2)
    with pytest.raises(ValueError, match="model.init_scale=0 must be positive"):
        LSTMLanguageModel(10, 4, 2, 0)


@pytest.mark.parametrize(
    "argument,name",
    [
        ("dropout_input", "dropout.input"),
        ("dropout_between", "dropout.between"),
        ("dropout_output", "dropout.output"),
        ("dropout_recurrent", "dropout.recurrent"),
        ("weight_drop", "dropout.weight_drop"),
        ("embedding_dropout", "dropout.embedding"),
    ],
)
def test_a_rate_of_one_is_refused_by_the_model_itself(argument, name):
    """p = 1 drops every unit and scales the rest by 1/(1 - p) = 1/0 (NaN training): the model refuses it for a
    library user too, not only rnnreg-train's config checks; just below 1 is a rate."""
    with pytest.raises(ValueError, match=rf"{name}=1.0 is outside \[0, 1\)"):
        LSTMLanguageModel(10, 4, 2, 0.1, **{argument: 1.0})
    LSTMLanguageModel(10, 4, 2, 0.1, **{argument: 0.99})
