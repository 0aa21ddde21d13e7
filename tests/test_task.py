"""The training recipe: objective scale, lr schedule, carried hidden state, perplexity protocol."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from helpers import counted_calls, needs_triton, perplexity_by_hand, speed_state
from rnnreg.ensemble import PredictiveAverage
from rnnreg.errors import ConfigError
from rnnreg.metrics import Perplexity
from rnnreg.task import LanguageModelTask
from rnnreg.train import build, train

# Some tests here call the task's steps by hand, with no Trainer: Lightning then says that self.log() has none
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer`")

OPTIM = {"lr": 1.0, "decay": 2.0, "decay_start": 4, "clip": 5.0}
NO_DROPOUT = {"input": 0.0, "between": 0.0, "output": 0.0}


def tiny_task(seed: int = 0, **optim) -> LanguageModelTask:
    torch.manual_seed(seed)
    model = {"hidden_size": 12, "num_layers": 2, "init_scale": 0.1}
    return LanguageModelTask(30, model, NO_DROPOUT, OPTIM | optim)


@pytest.mark.parametrize(
    "model, dropout, optim, says",
    [
        ({"hidden_size": 12}, NO_DROPOUT, OPTIM, r"^model has no num_layers, init_scale: give them, or start from "),
        ({"hiden_size": 12}, NO_DROPOUT, OPTIM, r"^model.hiden_size is not a key of model: did you mean model.hidden_"),
        (
            None,
            NO_DROPOUT,
            OPTIM | {"lr_decay": 3},
            r"^optim.lr_decay is not a key of optim: did you mean optim.decay\?$",
        ),
        (None, NO_DROPOUT, {"lr": 1.0}, r"^optim has no decay, decay_start, clip: give them, or start from rnnreg."),
        (None, NO_DROPOUT | {"between": "0.5"}, OPTIM, r"^dropout.between='0.5' must be a number in \[0, 1\)"),
        (None, NO_DROPOUT, OPTIM | {"clip": 0}, r"^optim.clip=0 must be a number > 0 \(the global-norm clip, "),
        (None, NO_DROPOUT, OPTIM | {"clip": None}, r"^optim.clip=null must be a number > 0 \(.*\), not null$"),
    ],
)
def test_a_library_users_task_settings_are_checked_as_a_config_is(model, dropout, optim, says):
    """LanguageModelTask's own dicts: a key left out is named at once (before: a KeyError once training began, or
    for the optim, at configure_optimizers), a misspelt one refused (before: silently ignored), a value checked; the
    clip by rnnreg-train's rule for trainer.gradient_clip_val (before: 0 trained nothing, None a TypeError later)."""
    model = model or {"hidden_size": 12, "num_layers": 2, "init_scale": 0.1}
    with pytest.raises(ConfigError, match=says):
        LanguageModelTask(30, model, dropout, optim)


def test_a_checkpoint_of_a_fit_without_the_datamodule_says_it_records_no_vocabulary(tiny_corpus, tmp_path):
    """trainer.fit(task, train_dataloaders=...) without rnnreg's LMDataModule gives the task no words: its checkpoint
    records none, and rnnreg-generate (as rnnreg-eval) said "is not a checkpoint rnnreg-train wrote ... give a
    checkpoint it wrote" of a model a library user had trained. Now one line, exit 2, with what is missing and how to
    record it; the task given its words (task.vocab) before the fit saves a checkpoint both read."""
    from helpers import run
    from rnnreg.data import LMDataModule

    data = LMDataModule(
        tiny_corpus, {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}, batch_size=4, bptt=5
    )
    quiet = {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    model = {"hidden_size": 4, "num_layers": 1, "init_scale": 0.1}
    for words in (None, data.load().itos):
        task = LanguageModelTask(data.vocab_size, model, NO_DROPOUT, OPTIM)
        task.vocab = words
        trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, **quiet)
        trainer.fit(task, train_dataloaders=data.train_dataloader(), val_dataloaders=data.val_dataloader())
        trainer.save_checkpoint(tmp_path / "task.ckpt")
        proc = run("rnnreg-generate", f"ckpt_path={tmp_path / 'task.ckpt'}", "num_words=3", "device=cpu", check=False)
        if words is None:
            assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
                f"error: {tmp_path / 'task.ckpt'} records no vocabulary (its 'vocab' is None): it was saved by a fit "
                "without rnnreg's LMDataModule (trainer.fit(task, train_dataloaders=...)), which gives the task no "
                "words: fit with trainer.fit(task, datamodule=LMDataModule(...)), or set task.vocab to the training "
                "words in id order (LMDataModule(...).load().itos) before fit or trainer.save_checkpoint"
            ], proc.stderr
        else:
            assert proc.returncode == 0 and len(proc.stdout.split()) >= 3, proc.stderr[-3000:]


def test_a_task_is_not_scored_on_another_vocabularys_data(tiny_corpus):
    """trainer.test(task, datamodule=...) from Python: a task trained on other words (a checkpoint's vocabulary), or
    built for another vocab_size, is refused before a window (before: scored, word ids meaning other words)."""
    from rnnreg.data import LMDataModule

    data = LMDataModule(
        str(tiny_corpus), {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}, batch_size=4, bptt=5
    )
    words = data.load().itos
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = L.Trainer(accelerator="cpu", limit_test_batches=1, **quiet)
    model = {"hidden_size": 4, "num_layers": 1, "init_scale": 0.1}
    refused = [
        (
            len(words),
            [*words[1:], words[0]],
            r"^this task was trained on another vocabulary \(42 words\) than its data",
        ),
        (30, None, r"^this task reads 30 words \(vocab_size\) and its data has 42 \(.*\): build it as LanguageModel"),
    ]
    for vocab_size, vocab, says in refused:
        task = LanguageModelTask(vocab_size, model, NO_DROPOUT, OPTIM)
        task.vocab = vocab
        with pytest.raises(ConfigError, match=says):
            trainer.test(task, datamodule=data, verbose=False)
    task = LanguageModelTask(len(words), model, NO_DROPOUT, OPTIM)
    task.vocab = words  # its own words: scored
    assert trainer.test(task, datamodule=data, verbose=False)[0]["test/ppl"] > 1
    averaged = PredictiveAverage([task.net, task.net])  # rnnreg-eval's ensemble: a net without an embedding of its own
    ensemble = LanguageModelTask(len(words), model, NO_DROPOUT, OPTIM, net=averaged)
    assert trainer.test(ensemble, datamodule=data, verbose=False)[0]["test/ppl"] > 1


def test_a_dropout_p_the_sites_do_not_drop_at_is_refused_not_recorded():
    """The network drops each site at its own rate; dropout.p only fills a placement's sites as a config is composed.
    A recipe's dropout holds the sites' rates, no p; a p set in it that its dropping sites do not have is refused
    (before: `recipe["dropout"]["p"] = 0.0` still dropped 0.5 everywhere, with p 0.0 in the hyper_parameters). A p
    that every dropping site has (a run's, an older checkpoint's hyper_parameters) builds, as does one no site drops
    at (dropout=none); a run whose site has a rate of its own beside p gives its task the sites' rates alone."""
    import rnnreg
    from rnnreg.recipes import compose_config
    from rnnreg.task_config import task_arguments

    recipe = rnnreg.paper_recipe("medium")
    assert "p" not in recipe["dropout"] and recipe["dropout"]["input"] == 0.5
    model = recipe["model"] | {"hidden_size": 8}
    for p, composed in ((0.0, "'dropout=none'"), (0.3, "'dropout.p=0.3'")):
        with pytest.raises(ConfigError) as refusal:
            LanguageModelTask(30, model, recipe["dropout"] | {"p": p}, recipe["optim"])
        assert str(refusal.value) == (
            f"dropout.p={p} is not the rate of the sites that drop (input 0.5, between 0.5, output 0.5): the network "
            "drops each site at its own rate, and p only fills a placement's sites as a config is composed: leave p "
            "out, and set the sites' rates (dropout['input'] = ...) or compose the recipe with it "
            f"(rnnreg.paper_recipe(size, {composed}))"
        )
    for cfg in (compose_config(), compose_config("dropout=none")):  # p 0.5: at every dropping site, or none drops
        arguments = task_arguments(cfg)
        assert arguments["dropout"]["p"] == cfg.dropout.p == 0.5  # kept: what the run's loggers record
        task = LanguageModelTask(30, arguments["model"] | {"hidden_size": 8}, arguments["dropout"], arguments["optim"])
        assert task.net.lstm.dropout == (0.5 if cfg.dropout.between else 0.0)
    # a run with a site's own rate beside p (p 0.0, paper_small's): its task has the sites' rates, no p
    cfg = compose_config("experiment=paper_small", "dropout.input=0.3")
    arguments = task_arguments(cfg)
    assert cfg.dropout.p == 0.0 and arguments["dropout"]["input"] == 0.3 and "p" not in arguments["dropout"]
    LanguageModelTask(30, arguments["model"] | {"hidden_size": 8}, arguments["dropout"], arguments["optim"])


def test_a_recipe_changed_after_a_task_is_built_leaves_the_task_as_built():
    """A notebook's loop that changes one recipe for the next task (recipe["optim"]["lr"] = 0.5): the task built
    before trains with its own lr and records its own model (before: both were the caller's dicts, changed after)."""
    model, optim = {"hidden_size": 12, "num_layers": 2, "init_scale": 0.1}, dict(OPTIM)
    task = LanguageModelTask(30, model, NO_DROPOUT, optim)
    model["hidden_size"], optim["lr"] = 32, 0.5
    assert task.configure_optimizers()["optimizer"].param_groups[0]["lr"] == 1.0
    assert task.hparams.model["hidden_size"] == task.net.embedding.embedding_dim == 12


def test_numpy_numbers_in_a_library_users_settings_are_the_python_numbers_they_hold(tiny_corpus):
    """A sweep's np.arange or np.float32 values: a task is built with them (before: np.int64 units were a TypeError
    from nn.LSTM) and records Python numbers, which a checkpoint loaded as data only can hold; a data module too."""
    import numpy as np

    from rnnreg.data import LMDataModule

    model = {"hidden_size": np.int64(12), "num_layers": 2, "init_scale": 0.1}
    task = LanguageModelTask(30, model, NO_DROPOUT | {"input": np.float32(0.25)}, OPTIM | {"lr": np.float64(0.5)})
    hparams = (task.hparams.model["hidden_size"], task.hparams.dropout["input"], task.hparams.optim["lr"])
    assert hparams == (12, 0.25, 0.5) and [type(v) for v in hparams] == [int, float, float]
    files = {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}
    data = LMDataModule(str(tiny_corpus), files, batch_size=np.int64(4), bptt=np.int64(5))
    assert next(iter(data.train_dataloader()))[0].shape == (5, 4)


def test_objective_is_sum_over_steps_of_batch_mean_nll():
    task = tiny_task()
    x, y = torch.randint(30, (7, 4)), torch.randint(30, (7, 4))
    task.zero_grad()
    task.training_step((x, y), 0).backward()
    ours = [p.grad.clone() for p in task.parameters()]

    task.zero_grad()
    logits, _ = task.net(x)  # the definition, spelled out: sum_t mean_b NLL(t, b)
    torch.stack([F.cross_entropy(logits[t], y[t]) for t in range(7)]).sum().backward()
    for a, p in zip(ours, task.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_weights_are_scored_in_float32(dtype):
    """trainer.precision=bf16-true: the NLL of the bf16 model's logits in float32 (a bf16 NLL is 1/32 apart
    near 5: perplexities in 3 % steps), and the gradients still reach the weights in their own type."""
    task = tiny_task()
    task.net.to(dtype)
    x, y = torch.randint(30, (7, 4)), torch.randint(30, (7, 4))
    nll, _ = task.window_nll((x, y), None)
    logits, _ = task.net(x)
    assert nll.dtype == torch.float32
    assert torch.equal(nll, F.cross_entropy(logits.float().view(-1, 30), y.reshape(-1)))
    task.training_step((x, y), 0).backward()
    assert all(p.grad.dtype == dtype for p in task.parameters())


def test_summed_objective_equals_mean_objective_with_scaled_lr_and_clip():
    """One SGD step on the summed loss with (lr, clip) = the mean loss with (lr * T, clip / T)."""
    steps = 7
    x, y = torch.randint(30, (steps, 4)), torch.randint(30, (steps, 4))
    params = []
    for scale, lr, clip in ((steps, 1.0, 0.05), (1, float(steps), 0.05 / steps)):
        task = tiny_task()
        task.train_state = None
        nll, _ = task.window_nll((x, y), None)
        (nll * scale).backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), clip)  # active: the norm is far above 0.05
        with torch.no_grad():
            for p in task.parameters():
                p -= lr * p.grad
        params.append([p.detach().clone() for p in task.parameters()])
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class RecordLR(L.Callback):
    """Each epoch's lr as the optimiser holds it, and how far its one window moved the weights (global norm)."""

    def __init__(self):
        self.lrs, self.moved = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_epoch_end(self, trainer, pl_module):
        moved = sum(((p.detach() - b).double() ** 2).sum() for p, b in zip(pl_module.parameters(), self.before))
        self.moved.append(math.sqrt(moved))


@pytest.mark.parametrize("fast_step", [False, True])
def test_trainer_applies_schedule_per_epoch(tiny_cfg, fast_step):
    """The lr the optimiser holds, and the lr and clip the step uses: a window's step, its gradient's global norm
    above trainer.gradient_clip_val = 0.001, moves the weights by exactly lr x 0.001 (Lightning's step and the
    fast step, whose schedule rnnreg steps itself)."""
    cfg = tiny_cfg(
        "trainer.max_epochs=7",
        "optim.decay_start=3",
        "optim.decay=2",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.gradient_clip_val=0.001",
        "test=false",
        f"speed.fast_step={str(fast_step).lower()}",
    )
    dm, task, trainer = build(cfg)
    assert cfg.optim.momentum == 0 and cfg.optim.weight_decay == 0  # a step moves by lr x its clipped gradient
    record = RecordLR()
    trainer.callbacks.append(record)
    trainer.fit(task, datamodule=dm)
    assert task.fast_step_on == fast_step
    assert record.lrs == pytest.approx([1, 1, 1, 0.5, 0.25, 0.125, 0.0625])
    assert record.moved == pytest.approx([0.001 * lr for lr in record.lrs], rel=1e-4)


@needs_triton
@pytest.mark.parametrize("fast_step", [False, True])
def test_a_run_on_the_fused_update_trains_to_the_bit_as_on_the_torch_ops(tiny_cfg, fast_step, monkeypatch):
    """speed.triton_update=true (in Triton's interpreter here): a run's update, Lightning's step or the fast step's,
    runs the kernel each window, and the run ends with its weights bit for bit as with speed.triton_update=false."""
    import rnnreg.triton_update as triton_update  # (imports Triton)

    calls = counted_calls(monkeypatch, triton_update, "clipped_step_")
    weights = {}
    for fused in (False, True):
        overrides = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]
        fast = f"speed.fast_step={str(fast_step).lower()}"
        cfg = tiny_cfg(*overrides, "test=false", fast, f"speed.triton_update={str(fused).lower()}", run=str(fused))
        L.seed_everything(cfg.seed, verbose=False)  # as a run seeds itself (rnnreg.training.run_training)
        dm, task, trainer = build(cfg)
        trainer.fit(task, datamodule=dm)
        assert task.fast_step_on == fast_step
        weights[fused] = [p.detach().clone() for p in task.parameters()]
    assert len(calls) == 6  # 2 epochs of 3 windows, fused only
    assert all(torch.equal(a, b) for a, b in zip(weights[True], weights[False]))


@pytest.mark.parametrize("fast_step", [False, True])
def test_the_lr_changes_between_epochs_never_inside_one(tiny_cfg, fast_step):
    """Every window of epoch e trains at lr 1 / 2^max(0, e - 1) (optim.decay=2, optim.decay_start=1): the schedule
    steps once per epoch, however many windows the epoch has (Lightning's step and the fast step's own)."""
    cfg = tiny_cfg(
        "trainer.max_epochs=2",
        "optim.decay_start=1",
        "optim.decay=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "test=false",
        f"speed.fast_step={str(fast_step).lower()}",
    )
    dm, task, trainer = build(cfg)
    lrs = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Probe())
    trainer.fit(task, datamodule=dm)
    assert task.fast_step_on == fast_step
    assert lrs == pytest.approx([1.0] * 3 + [0.5] * 3)


def test_hidden_state_is_carried_between_windows():
    """Two windows with the carried state compute exactly what one long window computes."""
    task = tiny_task().eval()
    x = torch.randint(30, (10, 3))
    y = torch.randint(30, (10, 3))
    whole, (h, c) = task.net(x)
    task.train_state = None
    first, state = task.net(x[:4])
    second, (h2, c2) = task.net(x[4:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    torch.testing.assert_close(h2, h)
    # training_step carries it too, detached (the graph ends at the window boundary)
    task.train()
    task.training_step((x[:4], y[:4]), 0)
    assert task.train_state is not None and not task.train_state[0].requires_grad
    carried = task.train_state[0].clone()
    _, expected = task.net.eval()(x[:4])
    torch.testing.assert_close(carried, expected[0])


def test_the_training_step_starts_from_the_previous_windows_state():
    """The second window's objective and gradients are those of the net run from the first window's final (h, c),
    not from zeros; its gradients stop at the window boundary (the first window's graph is not needed)."""
    task = tiny_task()
    x, y = torch.randint(30, (10, 3)), torch.randint(30, (10, 3))
    task.training_step((x[:5], y[:5]), 0)
    loss = task.training_step((x[5:], y[5:]), 1)
    task.zero_grad()
    loss.backward()
    ours = [p.grad.clone() for p in task.parameters()]
    task.zero_grad()
    _, state = task.net(x[:5])
    logits, _ = task.net(x[5:], state)
    expected = 5 * F.cross_entropy(logits.view(-1, 30), y[5:].reshape(-1))
    zeros = 5 * F.cross_entropy(task.net(x[5:])[0].view(-1, 30), y[5:].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and loss.item() != pytest.approx(zeros.item())
    expected.backward()
    for a, p in zip(ours, task.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_state_reset_per_epoch_and_split(tiny_cfg):
    cfg = tiny_cfg(
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "data.eval_bptt=5",
        "test=false",
    )
    dm, task, trainer = build(cfg)
    seen = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(("train", batch_idx, pl_module.train_state is None))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen.append(("val", batch_idx, pl_module.eval_states.get(0) is None))

    trainer.callbacks.append(Probe())
    trainer.fit(task, datamodule=dm)
    # zero state exactly at the first window of every pass, carried everywhere else
    assert (
        seen == [("train", 0, True), ("train", 1, False), ("train", 2, False), ("val", 0, True), ("val", 1, False)] * 2
    )


def test_sanity_check_changes_nothing(tiny_cfg):
    """Lightning's sanity validation must not touch the training state, the RNG or the results."""
    results = []
    for sanity in (0, 2):
        cfg = tiny_cfg(
            f"trainer.num_sanity_val_steps={sanity}",
            "trainer.max_epochs=2",
            "dropout.p=0.3",
            "dropout=non_recurrent",
            "trainer.limit_train_batches=4",
        )
        L.seed_everything(0)
        dm, task, trainer = build(cfg)
        trainer.fit(task, datamodule=dm)
        results.append((float(trainer.callback_metrics["val/ppl"]), [p.detach().clone() for p in task.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_perplexity_is_exp_of_token_weighted_mean_nll():
    metric = Perplexity()
    metric.update(torch.tensor(2.0), 3)  # 3 tokens at mean NLL 2
    metric.update(torch.tensor(5.0), 1)  # 1 token at NLL 5
    assert metric.compute().item() == pytest.approx(math.exp((2 * 3 + 5) / 4))
    # not the mean of per-batch perplexities
    assert metric.compute().item() != pytest.approx((math.exp(2) + math.exp(5)) / 2)


@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_test_protocols_match_a_manual_evaluation(tiny_cfg, precision):
    """trainer.test: loader 0 = one stream carried over the whole split, loader 1 = batched streams; both,
    and trainer.validate's batched streams, equal exp(sum NLL / tokens) computed by hand over every predicted
    token: a perplexity per word, not per window (each split's last window is shorter). With bf16 weights too:
    the perplexity's sums stay float64 (bf16 counts tokens exactly only up to 256)."""
    eval_bptt = 9
    cfg = tiny_cfg(
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        "test=false",
        f"trainer.precision={precision}",
        f"data.eval_bptt={eval_bptt}",
    )
    dm, task, trainer = build(cfg)
    trainer.fit(task, datamodule=dm)
    results = trainer.test(task, datamodule=dm, verbose=False)
    (validated,) = trainer.validate(task, datamodule=dm, verbose=False)

    ids, valid = dm.corpus.ids["test"], dm.corpus.ids["valid"]
    whole = ids.numel()  # one window over the whole split
    stream_ppl = perplexity_by_hand(task.net, ids, streams=1, window=whole)[0]
    batched_ppl = perplexity_by_hand(task.net, ids, streams=4, window=whole)[0]
    val_ppl = perplexity_by_hand(task.net, valid, streams=4, window=valid.numel())[0]
    # more than one window in each, the last one shorter: a mean over windows would weigh its words more
    for predicted in (ids.numel() - 1, ids.numel() // 4 - 1, valid.numel() // 4 - 1):
        assert predicted > eval_bptt and predicted % eval_bptt
    assert results[0]["test/ppl"] == pytest.approx(stream_ppl, rel=1e-5)
    assert results[1]["test/ppl_batched"] == pytest.approx(batched_ppl, rel=1e-5)
    assert validated["val/ppl"] == pytest.approx(val_ppl, rel=1e-5)


def test_train_writes_metrics_json(tiny_cfg, tmp_path):
    import json

    cfg = tiny_cfg("trainer.max_epochs=2", "trainer.limit_train_batches=5")
    metrics = train(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == metrics
    for key in ("val_ppl", "test_ppl", "test_ppl_batched", "epochs", "train_seconds", "words_per_second", "params"):
        assert key in written
    assert written["epochs"] == 2 and math.isfinite(written["test_ppl"]) and written["words_per_second"] > 0
    # the last epoch alone (no start-up or graph capture in it): what the GPU benchmark compares
    assert written["words_per_second_last_epoch"] > 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    # words/s counts every epoch's words over every epoch's training time: 2 epochs x 5 windows x bptt x streams
    speed = speed_state(torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True))
    assert speed["train_words"] == 2 * 5 * cfg.data.bptt * cfg.data.batch_size
    assert 0 < speed["train_seconds"] <= written["train_seconds"]
    assert written["words_per_second"] == round(speed["train_words"] / speed["train_seconds"], 1)  # as written


def test_a_resumed_runs_train_seconds_count_its_earlier_part(tiny_cfg, tmp_path):
    """metrics.json's train_seconds of a run trained 2 epochs, then resumed for a third: the whole run's time in fit,
    at least the training windows' time its checkpoint counts over all 3 epochs, and more than the first part's
    (before: the resumed part's alone, while words_per_second counted the whole run)."""
    first = train(tiny_cfg("trainer.max_epochs=2", "trainer.limit_train_batches=30", "test=false", run="first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    words_2 = speed_state(torch.load(last, weights_only=True))["train_words"]
    resumed = train(
        tiny_cfg("trainer.max_epochs=3", "trainer.limit_train_batches=30", "test=false", f"ckpt_path={last}")
    )
    speed = speed_state(torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True))
    assert speed["train_words"] == words_2 * 3 // 2  # the 3 epochs' windows
    assert resumed["train_seconds"] >= round(speed["train_seconds"], 2)
    assert resumed["train_seconds"] > first["train_seconds"]


def test_words_per_second_is_every_epochs_words_over_every_epochs_training_time(tiny_cfg, tmp_path):
    """metrics.json's words_per_second: all 3 epochs' training words over the sum of the 3 epochs' training times
    (train/epoch_seconds in csv/metrics.csv), not over the last epoch's time alone."""
    from rnnreg.report_runs import history

    cfg = tiny_cfg("trainer.max_epochs=3", "trainer.limit_train_batches=5", "test=false", "logger=csv")
    metrics = train(cfg)
    seconds = history(tmp_path / "run", "train/epoch_seconds")
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    words = 3 * 5 * cfg.data.bptt * cfg.data.batch_size
    assert metrics["words_per_second"] == pytest.approx(words / sum(seconds), rel=1e-3, abs=0.1)


def test_the_divergence_record_names_the_first_window_whose_loss_is_not_finite_or_above_max_nll():
    """TrainingSignals (what both steps write, read at log intervals): a loss above MAX_NLL diverges as a
    non-finite one does, one at MAX_NLL does not; the record keeps the first bad window and its loss however
    many windows later it is read, and names it as the 1-based step of the epoch."""
    from rnnreg.run_record import MAX_NLL
    from rnnreg.training_signals import TrainingSignals, diverged

    for loss, bad in ((MAX_NLL, False), (MAX_NLL + 1, True), (float("inf"), True), (float("nan"), True), (5.0, False)):
        assert diverged(loss) == bad, loss
        assert bool(diverged(torch.tensor(loss))) == bad, loss
    signals = TrainingSignals()
    for batch_idx, loss in enumerate([5.0, MAX_NLL, 4.0]):
        signals.record(torch.tensor(loss))
        assert signals.divergence(batch_idx) is None
    for loss in (MAX_NLL + 50, float("nan"), 3.0, float("inf")):  # the 4th window of the epoch goes bad, and on
        signals.record(torch.tensor(loss))
    assert signals.divergence(batch_idx=6) == (4, MAX_NLL + 50)
    assert float(signals.loss) == float("inf")  # the latest window's loss


def test_each_test_protocol_starts_from_a_zero_state(tiny_cfg):
    """trainer.validate, then trainer.test's two protocols in one trainer (as rnnreg-eval runs them): each test
    protocol's perplexity is the model's run by hand from a zero state, not from the state validation or the
    protocol before it left. Both protocols on 4 streams here (data.test_batch_size=4), so a carried state would
    fit and be used, not stop at its shape; weights of scale 1, so the state changes the perplexity."""
    cfg = tiny_cfg("data.test_batch_size=4", "data.eval_bptt=6", "model.init_scale=1.0", "test=false")
    torch.manual_seed(0)
    dm, task, trainer = build(cfg)
    trainer.validate(task, datamodule=dm, verbose=False)
    results = trainer.test(task, datamodule=dm, verbose=False)
    ids = dm.corpus.ids
    _, after_validation = perplexity_by_hand(task.net, ids["valid"], streams=4, window=6)
    from_zeros, after_first = perplexity_by_hand(task.net, ids["test"], streams=4, window=6)
    from_validation, _ = perplexity_by_hand(task.net, ids["test"], streams=4, window=6, state=after_validation)
    from_first, _ = perplexity_by_hand(task.net, ids["test"], streams=4, window=6, state=after_first)
    assert from_validation != pytest.approx(from_zeros, rel=1e-3) and from_first != pytest.approx(from_zeros, rel=1e-3)
    assert results[0]["test/ppl"] == pytest.approx(from_zeros, rel=1e-6)
    assert results[1]["test/ppl_batched"] == pytest.approx(from_zeros, rel=1e-6)


def test_perplexity_sums_stay_exact_past_float32s_integers():
    """Perplexity's running sums are float64: past 2**24 tokens (float32's last exact integer; a split of a large
    corpus has more) every token and every NLL still counts. 2**24 tokens at mean NLL 4, then 1,000 windows of one
    token at NLL 6, as the task updates it (a float32 NLL, an int count): float32 sums would keep 2**24 tokens (each
    +1 rounds back) and add 8 per window to the NLL (its spacing there), a perplexity 0.04 % off."""
    metric = Perplexity()
    metric.update(torch.tensor(4.0), 2**24)
    for _ in range(1000):
        metric.update(torch.tensor(6.0), 1)
    assert metric.weight.item() == 2**24 + 1000 and metric.mean_value.item() == 4 * 2**24 + 6 * 1000
    assert metric.compute().item() == pytest.approx(math.exp((4 * 2**24 + 6000) / (2**24 + 1000)), rel=1e-13)


def test_a_speed_not_measured_is_null_in_metrics_json_and_the_others_rounded():
    """metrics.json's words/s from the median window is None (null) where the device queues its windows (CUDA: a
    window's host time is its queueing, not its run); the other figures are still rounded to 0.1."""
    import json

    from rnnreg.run_record import Speeds, completed_record
    from rnnreg.timing import median_step_words_per_second

    # the median window of steps the device queued (single runs' SpeedMonitor and groups alike): none
    assert median_step_words_per_second(700, [0.2, 0.1, 0.3], queued=True) is None
    assert median_step_words_per_second(700, [0.2, 0.1, 0.3]) == 3500.0
    record = completed_record((90.0, 3), {"test_ppl": 85.0}, 88.0, 3, 12.345, Speeds(1000.04, None, 990.06), 10, "x", 1)
    assert record["words_per_second"] == 1000.0 and record["words_per_second_last_epoch"] == 990.1
    assert record["words_per_second_median_step"] is None and record["train_seconds"] == 12.35
    assert json.loads(json.dumps(record))["words_per_second_median_step"] is None


def test_a_library_users_speed_settings_apply_as_the_guide_says():
    """docs/guide.md, As a library: tf32 is a process setting that rnnreg.speed_settings.apply_speed applies from a
    plain dict (the task itself does not), and triton_cell is the step-loop LSTM's attribute."""
    from rnnreg.model import StepLSTM
    from rnnreg.speed_settings import apply_speed

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        model = {"hidden_size": 12, "num_layers": 2, "init_scale": 0.1, "lstm": "step"}
        task = LanguageModelTask(30, model, NO_DROPOUT, OPTIM, speed={"tf32": True})
        assert not matmul.allow_tf32  # (building the task sets nothing process-wide)
        apply_speed({"tf32": True})
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before
    assert isinstance(task.net.lstm, StepLSTM) and task.net.lstm.triton_cell is False
