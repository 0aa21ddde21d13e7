"""Parameter counts, initialisation and the paper's dropout placement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnreg.model import LSTMLanguageModel
from conftest import compose_config


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
        assert p.abs().max() > 0.04, name  # really spread over the range, not left at a default
        assert abs(p.mean().item()) < 0.01, name


def count_dropout_masks(net: LSTMLanguageModel, tokens: torch.Tensor) -> int:
    """Number of dropout sites one bottom-to-top path crosses, counted by hooking every nn.Dropout and
    the inter-layer dropout of nn.LSTM (which applies only between its layers)."""
    sites = [0]
    hooks = [m.register_forward_hook(lambda *a: sites.__setitem__(0, sites[0] + 1))
             for m in net.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    net(tokens)
    for h in hooks:
        h.remove()
    return sites[0] + (net.lstm.num_layers - 1 if net.lstm.dropout > 0 else 0)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("steps", [1, 7, 35])
def test_bottom_to_top_path_meets_L_plus_1_masks(layers: int, steps: int):
    net = LSTMLanguageModel(50, 8, layers, 0.1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5)
    assert count_dropout_masks(net.train(), torch.randint(50, (steps, 3))) == layers + 1


def test_masks_are_fresh_per_time_step_and_identity_in_eval():
    net = LSTMLanguageModel(50, 64, 2, 0.1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5)
    tokens = torch.full((6, 1), 3)  # the same token at every step: same embedding row
    embedded = net.embedding(tokens)
    masked = net.input_dropout.train()(embedded)
    assert not torch.equal(masked[0] == 0, masked[1] == 0)  # a new mask at each step
    net.eval()
    a, _ = net(tokens)
    b, _ = net(tokens)
    assert torch.equal(a, b)


def test_recurrent_connection_is_never_dropped():
    """With dropout only on the input and output sites, the recurrence itself is deterministic: fixing the
    input mask (p=0 below) and dropping only the output changes nothing in the carried (h, c)."""
    torch.manual_seed(0)
    tokens = torch.randint(50, (10, 2))
    net = LSTMLanguageModel(50, 16, 2, 0.1, dropout_output=0.9).train()
    _, (h1, c1) = net(tokens)
    _, (h2, c2) = net(tokens)  # a different output mask
    assert torch.equal(h1, h2) and torch.equal(c1, c2)
    net.eval()
    _, (h3, _) = net(tokens)
    assert torch.equal(h1, h3)  # and the state equals the no-dropout one


def test_bad_dropout_and_init_rejected():
    with pytest.raises(ValueError, match=r"dropout.input=1.2 is outside \[0, 1\)"):
        LSTMLanguageModel(10, 4, 2, 0.1, dropout_input=1.2)
    with pytest.raises(ValueError, match="model.init_scale=0 must be positive"):
        LSTMLanguageModel(10, 4, 2, 0)
