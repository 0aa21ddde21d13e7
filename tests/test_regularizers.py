"""conf/regularizer/*: each one changes what it should, selected together through Hydra."""

from __future__ import annotations

import warnings

import lightning as L
import torch

from rnnreg.task import load_task
from rnnreg.train import build, train


def fit(cfg):
    L.seed_everything(0)
    dm, task, trainer = build(cfg)
    trainer.fit(task, datamodule=dm)
    return task, trainer


def test_regularizers_combine(tiny_cfg):
    cfg = tiny_cfg("regularizer=[layer_norm,weight_decay,tied_embeddings,embedding_dropout]")
    assert cfg.model.layer_norm and cfg.model.tie_weights and cfg.dropout.embedding == 0.1
    assert cfg.optim.weight_decay > 0


def test_weight_decay_shrinks_weights(tiny_cfg):
    norms = {}
    for decay in (0.0, 0.05):
        task, _ = fit(tiny_cfg("trainer.max_epochs=2", f"optim.weight_decay={decay}", "test=false"))
        norms[decay] = torch.cat([p.detach().flatten() for p in task.parameters()]).norm().item()
    assert norms[0.05] < 0.9 * norms[0.0]


def test_tied_embeddings_remove_vocab_times_units_parameters(tiny_cfg):
    dm, untied, _ = build(tiny_cfg())
    _, tied, _ = build(tiny_cfg("regularizer=tied_embeddings"))
    assert untied.num_params - tied.num_params == dm.vocab_size * 16
    assert tied.net.decoder.weight is tied.net.embedding.weight


def test_layer_norm_normalises_gates_and_cell(tiny_cfg):
    _, task, _ = build(tiny_cfg("regularizer=layer_norm"))
    net = task.net.eval()
    assert not net.fused
    outputs = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: outputs.append((inp[0], out, mod.eps)))
        for m in net.lstm.norms.modules()
        if isinstance(m, torch.nn.LayerNorm)
    ]
    # a carried state that is not zero: LN_h(W_hh 0) is a norm of zeros (its shift), the gates' biases come after it
    state = tuple(torch.randn(2, 3, net.lstm.hidden_size, generator=torch.Generator().manual_seed(0)) for _ in "hc")
    net(torch.randint(10, (5, 3)), state)
    for h in hooks:
        h.remove()
    assert len(outputs) == 2 * (1 + 5 + 5)  # per layer: input gates once, recurrent gates and cell per step
    for inp, out, eps in outputs:  # each row to mean 0 and sd 1, as far as the norm's eps lets a small spread be
        flat, var = out.reshape(-1, out.size(-1)), inp.reshape(-1, inp.size(-1)).var(-1, unbiased=False)
        torch.testing.assert_close(flat.mean(-1), torch.zeros(flat.size(0)), atol=1e-5, rtol=0)
        torch.testing.assert_close(flat.std(-1, unbiased=False), (var / (var + eps)).sqrt(), atol=1e-4, rtol=0)


def test_embedding_dropout_drops_whole_words(tiny_cfg):
    _, task, _ = build(tiny_cfg("regularizer=embedding_dropout", "dropout.embedding=0.5"))
    net = task.net.train()
    tokens = torch.tensor([[3, 3, 3, 4, 4, 4]]).t()
    torch.manual_seed(0)
    rows = [net.embed(tokens)[:, 0] for _ in range(20)]
    for emb in rows:  # a word is dropped everywhere in the window or nowhere
        for word in (slice(0, 3), slice(3, 6)):
            zero = (emb[word] == 0).all(-1)
            assert zero.all() or not zero.any()
    assert any((emb[0] == 0).all() for emb in rows) and any((emb[0] != 0).any() for emb in rows)


def test_early_stopping_stops_and_tests_the_best(tiny_cfg, tmp_path):
    # lr grows 10x per epoch after the first: validation gets worse and the run must stop early
    cfg = tiny_cfg(
        "regularizer=early_stopping",
        "callbacks.early_stopping.patience=1",
        "trainer.max_epochs=20",
        "optim.decay=0.1",
        "optim.decay_start=1",
        "trainer.gradient_clip_val=100",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    assert metrics["epochs"] < 20
    # best.ckpt named to the test, not Lightning's "best", which warns of the last.ckpt callback beside it
    assert not [w for w in caught if "multiple `ModelCheckpoint`" in str(w.message)]
    assert metrics["best_val_ppl"] < metrics["val_ppl"]  # it stopped after getting worse
    best = load_task(str(tmp_path / "run" / "checkpoints" / "best.ckpt"))
    dm, _, trainer = build(cfg)
    retest = trainer.test(best, datamodule=dm, verbose=False)
    assert metrics["test_ppl"] == retest[0]["test/ppl"]  # the test used the best checkpoint


def test_layer_norm_lstm_computes_ba_et_als_equations(tiny_cfg):
    """The layer-normalised step loop against its equations written out (Ba et al. 2016, as StepLSTM documents
    them): per layer, LN_x(W_ih x) + LN_h(W_hh h_{t-1}) + b_ih + b_hh are the gates (i, f, g, o; no forget-gate
    offset; the biases after the norms, as Ba et al.'s b), c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g) is carried
    unnormalised and h_t = sigmoid(o) tanh(LN_c(c_t)). The norms' gains and biases are moved off their initial 1 and
    0, and the carried state is not zero, so each term counts."""
    _, task, _ = build(tiny_cfg("regularizer=layer_norm"))
    net = task.net.eval()
    lstm = net.lstm
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for norm in lstm.norms.modules():
            if isinstance(norm, torch.nn.LayerNorm):
                norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=gen))
                norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=gen))
    layers, units, steps, streams = lstm.num_layers, lstm.hidden_size, 6, 3
    state = tuple(0.5 * torch.randn(layers, streams, units, generator=gen) for _ in range(2))
    tokens = torch.randint(net.embedding.num_embeddings, (steps, streams), generator=gen)
    with torch.no_grad():
        logits, (h_end, c_end) = net(tokens, state)
        x, hs, cs = net.embedding(tokens), [], []
        for k in range(layers):
            w_ih, w_hh, b_ih, b_hh = (
                getattr(lstm, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            norm_x, norm_h, norm_c = lstm.norms[k]
            h, c, outputs = state[0][k], state[1][k], []
            for t in range(steps):
                gates = norm_x(x[t] @ w_ih.T) + norm_h(h @ w_hh.T) + b_ih + b_hh
                i, f, g, o = gates.chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(norm_c(c))
                outputs.append(h)
            x = torch.stack(outputs)
            hs.append(h)
            cs.append(c)
    torch.testing.assert_close(logits, net.decoder(x))
    torch.testing.assert_close((h_end, c_end), (torch.stack(hs), torch.stack(cs)))


def test_the_run_plan_names_layer_norm_and_tied_embeddings(tiny_cfg, caplog):
    """A layer-norm run's plan line said `LSTM 2 x 16` as a plain run's, where the stacked launcher's says `with layer
    norm`: two runs of a comparison read alike in their train.log."""
    cfg = tiny_cfg(
        "regularizer=[layer_norm,tied_embeddings]",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "test=false",
    )
    with caplog.at_level("INFO"):
        train(cfg)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rnnreg: training ")]
    assert "(LSTM 2 x 16 with layer norm, tied embedding, " in line, line
