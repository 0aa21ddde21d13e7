"""Each dropout placement does what its name says (conf/dropout/*), on both LSTM paths."""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnreg.model as model_module
from helpers import compose_config
from rnnreg.lstm_layer import LSTMLayerFunction
from rnnreg.model import LSTMLanguageModel, build_net

V, H = 40, 16


def make(
    placement: str, layers: int = 2, p: float = 0.5, overrides: tuple[str, ...] = (), **model
) -> LSTMLanguageModel:
    """The model exactly as rnnreg-train builds it for `dropout=<placement>` (and `overrides`): the composed config
    through rnnreg.model.build_net, at this file's sizes; `model`: model.* keys (lstm, layer_norm, ...)."""
    cfg = compose_config([f"dropout={placement}", f"dropout.p={p}", *overrides], "unused")
    torch.manual_seed(0)
    return build_net(V, {**cfg.model, "hidden_size": H, "num_layers": layers, "init_scale": 0.1, **model}, cfg.dropout)


class Recorder:
    """Records every dropout applied: `drop` sites (what they multiply) and recurrent masks."""

    def __init__(self, monkeypatch):
        self.sites, self.masks = [], []
        drop, mask = model_module.drop, model_module.dropout_mask

        def recording_drop(x, p, training, per_window):
            if training and p:
                self.sites.append((tuple(x.shape), per_window))
            return drop(x, p, training, per_window)

        def recording_mask(shape, p, like):
            m = mask(shape, p, like)
            self.masks.append(m)
            return m

        monkeypatch.setattr(model_module, "drop", recording_drop)
        monkeypatch.setattr(model_module, "dropout_mask", recording_mask)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("steps", [1, 7, 35])
def test_non_recurrent_path_meets_L_plus_1_masks_and_none_on_h(monkeypatch, layers, steps):
    net = make("non_recurrent", layers, lstm="step").train()  # step path: every site is visible
    rec = Recorder(monkeypatch)
    net(torch.randint(V, (steps, 3)))
    assert len(rec.sites) == layers + 1  # embedding output, L-1 between layers, top output
    assert all(shape == (steps, 3, H) and not per_window for shape, per_window in rec.sites)
    assert rec.masks == []  # nothing ever multiplies h_{t-1}


@pytest.mark.parametrize("lstm,sites", [("fused", 2), ("step", 3)])
def test_non_recurrent_masks_are_fresh_at_every_step_and_drop_at_rate_p(monkeypatch, lstm, sites):
    """The paper's masks on the non-recurrent connections are drawn anew at every time step: with the same token
    at every step, each site's dropped units (an exact 0) differ from step to step; at p = 0.2 a fraction p of
    them is dropped and the rest scaled by 1/(1 - p). The fused path's sites outside nn.LSTM (embedding output,
    top output) and all L+1 on the step loop."""
    p, steps = 0.2, 12
    net = make("non_recurrent", p=p, lstm=lstm).train()
    dropped, drop = [], model_module.drop

    def recording_drop(x, rate, training, per_window):
        out = drop(x, rate, training, per_window)
        if training and rate:
            dropped.append((x, out))
        return out

    monkeypatch.setattr(model_module, "drop", recording_drop)
    net(torch.full((steps, 8), 5))
    assert len(dropped) == sites
    for x, out in dropped:
        zeros = out == 0
        assert not (x == 0).any()
        assert all(not torch.equal(zeros[0], zeros[t]) for t in range(1, steps))  # a new mask every step
        assert zeros.float().mean().item() == pytest.approx(p, abs=0.06)
        torch.testing.assert_close(out[~zeros], x[~zeros] / (1 - p))


def test_non_recurrent_fused_path_keeps_the_recurrence_clean():
    """On the fused path, a different random stream changes the outputs but, with between-layer
    dropout off, never the recurrence of layer 1: its state only sees the (fixed) input."""
    net = make("non_recurrent", layers=1).train()
    assert net.fused
    x = torch.randint(V, (10, 2))
    net.dropout_input = 0.0  # fix the input; only the output site stays random
    torch.manual_seed(1)
    out1, (h1, c1) = net(x)
    torch.manual_seed(2)
    out2, (h2, c2) = net(x)
    assert not torch.equal(out1, out2)
    assert torch.equal(h1, h2) and torch.equal(c1, c2)


def test_a_one_layer_model_is_built_without_torchs_warning_of_a_rate_it_never_uses():
    """`model.num_layers=1 dropout=non_recurrent`: one layer has no site between layers, so nn.LSTM is given no
    rate there (torch would warn a user of it at every run); the input and output sites still drop."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = LSTMLanguageModel(V, H, 1, 0.1, dropout_input=0.5, dropout_between=0.5, dropout_output=0.5)
    assert net.fused and net.lstm.dropout == 0.0
    assert net.dropout_input == net.dropout_output == 0.5


def test_non_recurrent_fused_path_drops_between_layers():
    """The paper's default path (nn.LSTM, 2 layers) drops between its layers: with the input and output sites
    off, another random stream changes layer 2's state and the outputs, never layer 1's."""
    net = make("non_recurrent").train()
    assert net.fused and net.lstm.num_layers == 2 and net.lstm.dropout == 0.5
    net.dropout_input = net.dropout_output = 0.0  # only the site between the layers stays random
    x = torch.randint(V, (10, 2))
    torch.manual_seed(1)
    out1, (h1, c1) = net(x)
    torch.manual_seed(2)
    out2, (h2, c2) = net(x)
    assert torch.equal(h1[0], h2[0]) and torch.equal(c1[0], c2[0])
    assert not torch.equal(h1[1], h2[1]) and not torch.equal(out1, out2)
    net.eval()  # evaluation drops nothing
    assert torch.equal(net(x)[0], net(x)[0])


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layer_norm"])
def test_recurrent_masks_h_with_a_fresh_mask_every_step(monkeypatch, layer_norm):
    """On the step loop and on layer norm's (autograd) one."""
    net = make("recurrent", layer_norm=layer_norm).train()
    assert not net.fused
    rec = Recorder(monkeypatch)
    steps = 6
    net(torch.randint(V, (steps, 3)))
    assert rec.sites == []  # only the recurrent connection is dropped
    assert len(rec.masks) == steps * 2  # one per step per layer
    assert all(m.shape == (3, H) for m in rec.masks)
    assert all(not torch.equal(a, b) for a, b in zip(rec.masks, rec.masks[1:]))


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layer_norm"])
def test_variational_mask_fixed_within_a_window_new_across_windows(monkeypatch, layer_norm):
    """One mask per window at every site, h_{t-1}'s too, on the step loop and on layer norm's (autograd) one."""
    net = make("variational", layer_norm=layer_norm).train()
    rec = Recorder(monkeypatch)
    x = torch.full((8, 3), 5)  # the same token at every step
    net(x)
    recurrent = [m for m in rec.masks if m.dim() == 2]  # (streams, units): multiplies h_{t-1}
    assert len(recurrent) == 2  # one recurrent mask per layer for the whole window
    assert all(per_window for _, per_window in rec.sites) and len(rec.sites) == 3
    assert sum(m.shape == (1, 3, H) for m in rec.masks) == 3  # one (1, streams, units) mask per site
    # the input mask is the same at every step: the dropped units of a repeated token never change
    embedded = model_module.drop(net.embedding(x), 0.5, True, per_window=True)
    zeros = embedded == 0
    assert all(torch.equal(zeros[0], zeros[t]) for t in range(8))
    rec.masks.clear()
    net(x)
    assert not torch.equal(recurrent[0], [m for m in rec.masks if m.dim() == 2][0])  # new window, new mask


@pytest.mark.parametrize("placement", ["non_recurrent", "weight_drop", "none"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_layer_by_layer_lstm_is_nn_lstm_to_the_bit_with_its_masks_from_torch(placement, layers):
    """model.lstm=layers: nn.LSTM's kernel a layer per call, torch's dropout between the layers (on a GPU, nn.LSTM's
    own comes from cuDNN's state, which no checkpoint holds). On a CPU, where nn.LSTM draws its masks between the
    layers from torch's generator too, both compute the same outputs, states and gradients to the bit, with the
    same parameter names; a resume restores that generator, so the same masks follow it."""
    fused, by_layer = make(placement, layers, lstm="fused").train(), make(placement, layers, lstm="layers").train()
    assert isinstance(by_layer.lstm, model_module.LayerByLayerLSTM) and by_layer.fused
    assert by_layer.state_dict().keys() == fused.state_dict().keys()
    by_layer.load_state_dict(fused.state_dict())
    x = torch.randint(V, (9, 3))
    state = (torch.randn(layers, 3, H) * 0.1, torch.randn(layers, 3, H) * 0.1)
    outputs = []
    for net in (fused, by_layer):
        torch.manual_seed(5)
        logits, carried = net(x, state)
        logits.square().mean().backward()
        outputs.append((logits, carried, {n: p.grad for n, p in net.named_parameters()}))
    (out_f, (h_f, c_f), grads_f), (out_l, (h_l, c_l), grads_l) = outputs
    assert torch.equal(out_f, out_l) and torch.equal(h_f, h_l) and torch.equal(c_f, c_l)
    assert all(torch.equal(grads_f[n], grads_l[n]) for n in grads_f)
    torch.manual_seed(6)  # another stream, other masks between the layers (an unmasked first layer is the same)
    if layers > 1 and placement == "non_recurrent":
        by_layer.dropout_input = by_layer.dropout_output = 0.0
        out_6, (h_6, _) = by_layer(x, state)
        torch.manual_seed(5)
        out_5, (h_5, _) = by_layer(x, state)
        assert torch.equal(h_5[0], h_6[0]) and not torch.equal(h_5[1:], h_6[1:]) and not torch.equal(out_5, out_6)
    by_layer.eval()
    assert torch.equal(by_layer(x, state)[0], fused.eval()(x, state)[0])  # evaluation drops nothing
    assert by_layer(x)[0].shape == (9, 3, V)  # no state given: zeros, as nn.LSTM starts


@pytest.mark.parametrize("lstm", ["fused", "step"])
def test_weight_drop_masks_W_hh_once_per_window_and_restores_it(lstm):
    """On nn.LSTM and on the step loop (model.lstm=step, or with layer norm: StepLSTM takes the dropped W_hh as
    an argument)."""
    net = make("weight_drop", p=0.5, lstm=lstm).train()
    plain = make("none", lstm=lstm)
    plain.load_state_dict(net.state_dict())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randint(V, (6, 2))
    net.dropout_input = net.dropout_output = 0.0
    if lstm == "fused":  # isolate the weight drop
        net.lstm.dropout = 0.0
    else:
        net.lstm.between = 0.0
    out_a, _ = net(x)
    out_b, _ = net(x)
    assert not torch.equal(out_a, out_b)  # a new W_hh mask per window
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights untouched
    # one mask for the whole window: a step-by-step run with the same dropped W_hh gives the same result
    torch.manual_seed(7)
    out_c, _ = net(x)
    torch.manual_seed(7)
    dropped = torch.nn.functional.dropout(net.lstm.weight_hh_l0, 0.5, training=True)
    dropped1 = torch.nn.functional.dropout(net.lstm.weight_hh_l1, 0.5, training=True)
    with torch.no_grad():
        plain.lstm.weight_hh_l0.copy_(dropped)
        plain.lstm.weight_hh_l1.copy_(dropped1)
    torch.testing.assert_close(out_c, plain.eval()(x)[0])
    net.eval()
    plain.load_state_dict(net.state_dict())
    assert torch.equal(net(x)[0], plain(x)[0])  # evaluation uses the real weights


@pytest.mark.parametrize(
    "placement", ["none", "non_recurrent", "recurrent", "both", "variational", "weight_drop", "embedding_dropout"]
)
def test_every_placement_is_identity_in_eval(placement):
    """Evaluation drops nothing: each placement (and whole-word embedding dropout) computes the model without
    dropout."""
    if placement == "embedding_dropout":
        net = make("none", overrides=("dropout.embedding=0.5",)).eval()
        assert net.embedding_dropout == 0.5
    else:
        net = make(placement).eval()
    reference = make("none", lstm="step").eval()
    reference.load_state_dict(net.state_dict())
    x = torch.randint(V, (9, 3))
    torch.testing.assert_close(net(x)[0], reference(x)[0], rtol=1e-5, atol=1e-6)


def test_fused_and_step_paths_compute_the_same_function_and_gradients():
    fused = make("none", lstm="fused")
    step = make("none", lstm="step")
    step.load_state_dict(fused.state_dict())
    x = torch.randint(V, (12, 4))
    state = (torch.randn(2, 4, H) * 0.1, torch.randn(2, 4, H) * 0.1)
    (out_f, (h_f, c_f)), (out_s, (h_s, c_s)) = fused(x, state), step(x, state)
    torch.testing.assert_close(out_s, out_f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((h_s, c_s), (h_f, c_f), rtol=1e-5, atol=1e-6)
    out_f.square().mean().backward()
    out_s.square().mean().backward()
    grads_f = dict((n, p.grad) for n, p in fused.named_parameters())
    for n, p in step.named_parameters():
        torch.testing.assert_close(p.grad, grads_f[n], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("masks", ["none", "fresh", "window"])
def test_lstm_layer_function_backward_is_the_gradient(masks):
    """The step-loop layer's hand-written backward (lstm_layer.LSTMLayerFunction) against finite differences
    (float64 gradcheck) and its forward against the LSTM equations, h_{t-1} dropped by fixed masks."""
    torch.manual_seed(0)
    T, B, units = 5, 3, 4
    gates_x = torch.randn(T, B, 4 * units, dtype=torch.float64, requires_grad=True)
    h, c = (torch.randn(B, units, dtype=torch.float64, requires_grad=True) for _ in range(2))
    weight = torch.randn(4 * units, units, dtype=torch.float64, requires_grad=True)
    mask = {
        "none": None,
        "fresh": (torch.rand(T, B, units) > 0.5).double() * 2,
        "window": ((torch.rand(B, units) > 0.5).double() * 2).expand(T, B, units),
    }[masks]
    args = (gates_x, h, c, weight, mask)
    assert torch.autograd.gradcheck(LSTMLayerFunction.apply, args)
    outputs, h_end, c_end = LSTMLayerFunction.apply(*args)
    for t in range(T):  # the equations, step by step
        i, f, g, o = (gates_x[t] + (h if mask is None else h * mask[t]) @ weight.t()).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        torch.testing.assert_close(outputs[t], h)
    torch.testing.assert_close((h_end, c_end), (h, c))


@pytest.mark.parametrize("lstm", ["fused", "layers"])
def test_fused_cannot_run_recurrent_dropout(lstm):
    with pytest.raises(ValueError, match=f"model.lstm={lstm} must be"):
        make("recurrent", lstm=lstm)


@pytest.mark.parametrize("placement", ["recurrent", "variational", "embedding"])
def test_a_mask_drops_each_unit_with_probability_p_and_scales_the_rest(monkeypatch, placement):
    """At p = 0.2 (where p and 1 - p differ): the masks on h_{t-1} (fresh per step, or one a window) and whole-word
    embedding dropout's are 0 or 1/(1 - p), the zeros a fraction p of them (inverted dropout: the expected
    activation unchanged). p = 0.5 elsewhere cannot tell the rate from the keep probability."""
    p = 0.2
    if placement == "embedding":
        net = make("none", overrides=(f"dropout.embedding={p}",)).train()
    else:
        net = make(placement, p=p).train()
    rec = Recorder(monkeypatch)
    for _ in range(60):
        net(torch.randint(V, (10, 8)))
    masks = torch.cat([m.flatten() for m in rec.masks])
    assert masks.numel() >= 2000
    assert masks.unique().tolist() == pytest.approx([0.0, 1 / (1 - p)])
    assert (masks == 0).float().mean().item() == pytest.approx(p, abs=0.03)
