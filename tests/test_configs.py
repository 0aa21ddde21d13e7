"""Every experiment composes from the real config tree and runs a few real steps (fast_dev_run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

import rnnreg
from helpers import compose_config
from rnnreg import CONF_DIR
from rnnreg.callbacks import RunPlan
from rnnreg.checkpoints import CheckpointOnInterrupt
from rnnreg.errors import ConfigError
from rnnreg.instantiation import instantiate
from rnnreg.model import cpu_runs_fused_lstm_in_bf16
from rnnreg.run_record import best_checkpoint_path, last_checkpoint_path
from rnnreg.train import build

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def test_default_is_the_paper_medium_recipe(tmp_path):
    cfg = compose_config([], tmp_path)
    assert cfg.experiment_name == "paper_medium"
    assert (cfg.model.hidden_size, cfg.dropout.p, cfg.model.init_scale) == (650, 0.5, 0.05)
    assert (cfg.data.bptt, cfg.data.batch_size, cfg.trainer.max_epochs) == (35, 20, 39)
    assert (cfg.optim.lr, cfg.optim.decay, cfg.optim.decay_start, cfg.trainer.gradient_clip_val) == (1.0, 1.2, 6, 5.0)
    assert cfg.dropout == {
        "p": 0.5,
        "input": 0.5,
        "between": 0.5,
        "output": 0.5,
        "recurrent": 0.0,
        "variational": False,
        "weight_drop": 0.0,
        "embedding": 0.0,
    }
    assert cfg.trainer.accelerator == "auto"


# what each placement (conf/dropout/<name>.yaml) drops at dropout.p: the README's placements
PLACEMENT_SITES = {
    "none": set(),
    "non_recurrent": {"input", "between", "output"},
    "recurrent": {"recurrent"},
    "both": {"input", "between", "output", "recurrent"},
    "variational": {"input", "between", "output", "recurrent"},  # one mask a window (variational: true)
    "weight_drop": {"input", "between", "output", "weight_drop"},  # the paper's sites, and DropConnect on W_hh
}


def test_each_placement_drops_its_sites_at_dropout_p(tmp_path):
    """Every placement in conf/dropout/ sets the rate of exactly its sites to dropout.p (the others 0; whole-word
    embedding dropout is a regularizer of its own), and only `variational` draws one mask a window."""
    assert sorted(p.stem for p in (Path(CONF_DIR) / "dropout").glob("*.yaml")) == sorted(PLACEMENT_SITES)
    for placement, sites in PLACEMENT_SITES.items():
        d = compose_config([f"dropout={placement}", "dropout.p=0.3"], tmp_path).dropout
        rates = {site: d[site] for site in ("input", "between", "output", "recurrent", "weight_drop", "embedding")}
        assert rates == {site: 0.3 if site in sites else 0.0 for site in rates}, placement
        assert d.variational == (placement == "variational"), placement


def test_the_regularizers_defaults(tmp_path):
    """The values the README gives for regularizer=...: weight decay 1e-5, whole-word embedding dropout 0.1,
    early stopping after 3 epochs without a better validation perplexity, the score best.ckpt keeps."""
    regularizers = "[weight_decay,embedding_dropout,early_stopping,layer_norm,tied_embeddings]"
    cfg = compose_config([f"regularizer={regularizers}"], tmp_path)
    assert (cfg.optim.weight_decay, cfg.dropout.embedding) == (1e-5, 0.1)
    assert cfg.model.layer_norm is True and cfg.model.tie_weights is True
    stop, best = cfg.callbacks.early_stopping, cfg.callbacks.model_checkpoint
    assert (stop.monitor, stop.mode, stop.patience, stop.min_delta) == ("val/ppl", "min", 3, 0.0)
    assert (stop.monitor, stop.mode) == (best.monitor, best.mode)


def test_the_checkpoint_callbacks_write_the_run_folders_layout(tmp_path):
    """The files conf/callbacks/default.yaml's checkpoint callbacks write are the ones every reader of a run's
    folder looks for (rnnreg.run_record's best_checkpoint_path and last_checkpoint_path): best.ckpt, and last.ckpt
    at every epoch's end and on a stop."""
    callbacks = compose_config([], tmp_path).callbacks
    best, last = (instantiate(callbacks[name]) for name in ("model_checkpoint", "last_checkpoint"))
    assert Path(best.format_checkpoint_name({})) == best_checkpoint_path(tmp_path)
    assert Path(last.format_checkpoint_name({})) == last_checkpoint_path(tmp_path)
    assert instantiate(callbacks.checkpoint_on_interrupt).path == last_checkpoint_path(tmp_path)
    # (its own default name too, for a config that leaves filename out)
    assert CheckpointOnInterrupt(str(last_checkpoint_path(tmp_path).parent)).path == last_checkpoint_path(tmp_path)


@pytest.mark.parametrize(
    "name,recipe",
    [
        ("paper_small", (200, 20, 13, 2.0, 4, 5.0, 0.1, 0.0)),
        ("paper_large", (1500, 35, 55, 1.15, 14, 10.0, 0.04, 0.65)),
    ],
)
def test_paper_recipes(name, recipe, tmp_path):
    """Each size's recipe as the paper gives it; the sizes' dropout is the paper's placement at their p (small:
    none), and every size trains at lr 1 on 20 streams."""
    cfg = compose_config([f"experiment={name}"], tmp_path)
    p = recipe[-1]
    sites = {"input": p, "between": p, "output": p, "recurrent": 0.0, "weight_drop": 0.0, "embedding": 0.0}
    assert cfg.dropout == {"p": p, **sites, "variational": False}
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.model.num_layers) == (1.0, 20, 2)
    got = (
        cfg.model.hidden_size,
        cfg.data.bptt,
        cfg.trainer.max_epochs,
        cfg.optim.decay,
        cfg.optim.decay_start,
        cfg.trainer.gradient_clip_val,
        cfg.model.init_scale,
        cfg.dropout.output,
    )
    assert got == recipe


# the ablation experiments' sweeps and budgets (the README's ablation tables come from them)
ABLATIONS = {
    "ablation_placement": ("1234,1,2", 0.5, (6, 80, 40, 4)),  # the CPU budget: 6 epochs of 80 windows
    "ablation_placement_full": ("1234,1,2", 0.5, (39, None, None, 6)),  # the paper's medium recipe: every window
    "ablation_placement_small": (None, 0.3, (13, None, None, 4)),  # the paper's small recipe; seeds on the command
}


@pytest.mark.parametrize("experiment", list(ABLATIONS))
def test_the_ablations_sweep_every_placement_over_their_seeds(experiment):
    seeds, p, budget = ABLATIONS[experiment]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    params = {key: str(value) for key, value in cfg.hydra.sweeper.params.items()}
    assert params == {"dropout": "none,non_recurrent,recurrent,both,variational", **({"seed": seeds} if seeds else {})}
    trainer, optim = cfg.trainer, cfg.optim
    limits = (trainer.max_epochs, trainer.limit_train_batches, trainer.limit_val_batches, optim.decay_start)
    assert (cfg.dropout.p, limits) == (p, budget)


def test_environment_moves_the_data_and_the_runs(tmp_path, monkeypatch):
    """RNNREG_DATA_DIR holds PTB's cache (shared storage on a cluster), RNNREG_OUTPUT_DIR the runs; without them
    ~/.cache/rnnreg and ./outputs."""
    from hydra import compose, initialize_config_dir

    def composed():
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["experiment=paper_small"], return_hydra_config=True)
        return cfg.data.data_dir, cfg.hydra.run.dir, cfg.hydra.sweep.dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RNNREG_DATA_DIR", raising=False)
    monkeypatch.delenv("RNNREG_OUTPUT_DIR", raising=False)
    data, run, sweep = composed()
    assert data == f"{tmp_path}/home/.cache/rnnreg/ptb" and run.startswith("outputs/train/paper_small/")
    monkeypatch.setenv("RNNREG_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("RNNREG_OUTPUT_DIR", str(tmp_path / "runs"))
    data, run, sweep = composed()
    assert data == f"{tmp_path}/shared/ptb"
    assert run.startswith(f"{tmp_path}/runs/train/paper_small/")
    assert sweep.startswith(f"{tmp_path}/runs/train/multirun/paper_small/")


def test_the_papers_perplexities_are_its_table_1():
    """conf/report.yaml's reference numbers (the report's paper lines, benchmarks/reproduce.py's "paper"
    column): Zaremba et al. 2014, Table 1, valid / test."""
    paper = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "report.yaml").paper)
    assert paper == {
        "small": {"valid_ppl": 120.7, "test_ppl": 114.5},
        "medium": {"valid_ppl": 86.2, "test_ppl": 82.7},
        "large": {"valid_ppl": 82.2, "test_ppl": 78.4},
    }


def test_model_override_keeps_the_experiment_recipe(tmp_path):
    """The model group is the architecture; the recipe (p, bptt, schedule, clip) is the experiment's."""
    cfg = compose_config(["model=large"], tmp_path)
    assert cfg.model.hidden_size == 1500 and cfg.model.init_scale == 0.04
    assert cfg.dropout.input == cfg.dropout.p == 0.5 and cfg.data.bptt == 35 and cfg.trainer.max_epochs == 39


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(experiment, ptb_dir, tmp_path):
    # one window each of training, validation and test; evaluation windows of 10 steps, not data/ptb's 200 (a
    # 1500-unit LSTM over 200 steps at batch 1 and at batch 20 took 12 of paper_large's 17 s here)
    overrides = [f"experiment={experiment}", "trainer.fast_dev_run=1", "trainer.accelerator=cpu", "logger=csv"]
    cfg = compose_config([*overrides, "data.eval_bptt=10"], tmp_path)
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    results = trainer.test(task, datamodule=datamodule, verbose=False)
    assert trainer.global_step == 1
    assert results[0]["test/ppl"] > 1 and results[1]["test/ppl_batched"] > 1


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["dropout.p=abc"], r"^dropout.p=abc must be a number in \[0, 1\)"),  # rnnreg-train's own lines
        (["data.bptt=0"], r"^data.bptt=0 must be an integer >= 1"),
        (  # a library user is not running rnnreg-train: the example is one more override
            ["data=text"],
            r"^data.data_dir is required \(\?\?\? in the config\) and was not given: add it as an override, "
            r"e.g. paper_recipe\('small', 'data=text', 'data.data_dir=<value>'\)$",
        ),
        (["logger=tensorboard"], r"^paper_recipe cannot carry logger=tensorboard \(it sets logger.tensorboard\)"),
        (
            ["dropout.p=0.3", "regularizer=early_stopping"],
            r"^paper_recipe cannot carry regularizer=early_stopping \(it sets callbacks.early_stopping\): ",
        ),
    ],
)
def test_paper_recipe_refuses_what_rnnreg_train_refuses_and_what_it_cannot_carry(overrides, message):
    with pytest.raises(ConfigError, match=message):
        rnnreg.paper_recipe("small", *overrides)


def test_paper_recipe_carries_data_and_trainer_overrides(tiny_corpus):
    trainer = ["trainer.limit_train_batches=3", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1"]
    step = [] if cpu_runs_fused_lstm_in_bf16() else ["model.lstm=step"]  # (bf16 on a CPU without a bf16 LSTM)
    recipe = rnnreg.paper_recipe("small", "data=text", f"data.data_dir={tiny_corpus}", "data.bptt=5", *trainer, *step)
    assert recipe["trainer"] == {"max_epochs": 13, "limit_train_batches": 3, "precision": "bf16-mixed"}
    assert recipe["optim"]["clip"] == 1 and recipe["data"]["bptt"] == 5
    data = rnnreg.ptb_datamodule(**recipe["data"])  # the text corpus, not PTB
    assert data.data_dir == str(tiny_corpus) and len(data.load()) == 42 and data.url_base is None


def test_ptb_datamodule_refuses_a_folder_of_your_own_corpus(tiny_corpus, tmp_path):
    """rnnreg.ptb_datamodule(data_dir=<a folder holding train.txt, ...>) would download PTB beside the user's files and
    train on PTB (offline: a line saying to download PTB by hand into their folder): one line, as rnnreg-train's for
    data.data_dir without data=text, with the call that reads the corpus (which does); nothing is written there. A
    folder of PTB's files, or one that does not exist yet (PTB's cache), is PTB's."""
    before = sorted(p.name for p in tiny_corpus.iterdir())
    with pytest.raises(ConfigError) as refused:
        rnnreg.ptb_datamodule(data_dir=str(tiny_corpus), batch_size=4, bptt=5)
    fix = (
        f"rnnreg.LMDataModule('{tiny_corpus}', {{'train': {{'name': 'train.txt'}}, 'valid': {{'name': 'valid.txt'}}, "
        "'test': {'name': 'test.txt'}}, batch_size=4, bptt=5)"
    )
    assert str(refused.value) == (
        f"ptb_datamodule(data_dir='{tiny_corpus}'): that folder holds train.txt, valid.txt, test.txt, a corpus of your "
        "own, and ptb_datamodule would download PTB's ptb.train.txt, ptb.valid.txt, ptb.test.txt there and use PTB, "
        f"not that corpus: read it with {fix}"
    )
    assert sorted(p.name for p in tiny_corpus.iterdir()) == before
    files = {split: {"name": f"{split}.txt"} for split in ("train", "valid", "test")}
    assert rnnreg.LMDataModule(str(tiny_corpus), files, batch_size=4, bptt=5).vocab_size == 42  # the call it gives
    assert rnnreg.ptb_datamodule(data_dir=str(tmp_path / "ptb"), batch_size=4, bptt=5).url_base  # PTB's cache: taken


def test_paper_recipe_takes_its_overrides_unpacked():
    """A list of overrides given as one argument is one line saying to unpack it (before: Hydra's TypeError)."""
    with pytest.raises(
        ConfigError, match=r"^paper_recipe's overrides are strings .* paper_recipe\('small', \*overrides\)$"
    ):
        rnnreg.paper_recipe("small", ["dropout=recurrent", "dropout.p=0.3"])


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["seed=1,2"], r"^seed=1,2 is a sweep and a recipe is one run: call paper_recipe once per value, such as "),
        (["-m", "seed=1"], r"^paper_recipe takes overrides, not rnnreg-train's flag -m: leave it out$"),
    ],
)
def test_paper_recipe_refuses_a_sweep_as_one_run(overrides, says):
    """rnnreg-train's advice for a sweep, to add -m, does not apply to a recipe (before: following it was Hydra's
    OverrideParseException traceback)."""
    with pytest.raises(ConfigError, match=says):
        rnnreg.paper_recipe("small", *overrides)


@pytest.mark.parametrize("override", ["experiment=paper_large", "+experiment=ablation_placement"])
def test_paper_recipe_refuses_another_experiment_under_its_sizes_name(override):
    """paper_recipe("small", "experiment=paper_large") was the large recipe (1,500 units), as the small one's."""
    with pytest.raises(ConfigError) as refused:
        rnnreg.paper_recipe("small", override)
    assert str(refused.value) == (
        f"paper_recipe('small', {override!r}): the size picks the experiment (paper_small): call "
        "paper_recipe('small' | 'medium' | 'large') without experiment=, or train other experiments with rnnreg-train"
    )


def test_paper_recipe_carries_a_trainer_override_that_repeats_the_configs_value():
    """trainer.devices=1 is conf/trainer's own value, not Lightning's ("auto": every GPU, and DDP): the Trainer
    argument an override names comes in `trainer` (before: left out, as not changed from the config)."""
    recipe = rnnreg.paper_recipe("small", "trainer.devices=1", "trainer.enable_model_summary=false")
    assert recipe["trainer"] == {"max_epochs": 13, "devices": 1, "enable_model_summary": False}


@pytest.mark.parametrize(
    "overrides,says",
    [
        (
            ["dropout=non_recurrent", "dropout.p=0.5", "dropout.output=0.3"],
            "dropout input 0.5, between 0.5, output 0.3)",
        ),
        (["regularizer=embedding_dropout"], "dropout 0.1 on embedding)"),  # dropout.p is 0 here
        (["dropout=non_recurrent", "dropout.p=0.5", "model.num_layers=1"], "dropout 0.5 on input/output)"),
    ],
)
def test_the_run_plan_names_each_dropout_sites_own_rate(tiny_cfg, overrides, says):
    _, task, trainer = build(tiny_cfg(*overrides))
    assert (
        RunPlan("paper_small", warmup_windows=2, measure_windows=10, cpu_hint_minutes=30, tested=True)
        .describe(trainer, task)
        .endswith(says)
    )
    assert RunPlan.plan(SimpleNamespace(num_training_batches=168), 1) == "1 epoch x 168 windows per epoch"


@pytest.mark.filterwarnings("ignore:The number of training batches")  # its own fit, outside a run's (rnnreg.runtime)
def test_tensorboard_logger_writes_events(tiny_cfg, tmp_path):
    datamodule, task, trainer = build(
        tiny_cfg("logger=tensorboard", "trainer.max_epochs=1", "trainer.limit_train_batches=3")
    )
    trainer.fit(task, datamodule=datamodule)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_slurm_launcher_composes(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1


def test_optuna_search_takes_the_sampler_the_command_line_gives():
    """hparams_search=optuna selects its seeded TPE sampler as the option of hydra/sweeper/sampler, so that another
    given on the command line replaces it whole: the grid composes (before: the search's TPE settings were merged
    over it, and Hydra refused the grid's seed), and a random sampler is Optuna's random one, not TPE."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        search = ["hparams_search=optuna", "seed=7"]
        samplers = {
            given: compose("train", [*search, *given], return_hydra_config=True).hydra.sweeper.sampler
            for given in [(), ("hydra/sweeper/sampler=grid",), ("hydra/sweeper/sampler=random",)]
        }
    tpe, grid, random = samplers.values()
    assert tpe._target_ == "optuna.samplers.TPESampler" and tpe.seed == 7
    assert grid._target_ == "optuna.samplers.GridSampler" and "seed" not in grid
    assert random._target_ == "optuna.samplers.RandomSampler"


def test_every_config_folder_ships_in_the_package():
    """pyproject.toml maps conf/ into the package (rnnreg/conf) folder by folder: none may be missing."""
    import tomllib

    root = Path(CONF_DIR)
    packages = set(tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(("rnnreg", "conf", *d.relative_to(root).parts)) for d in [root, *root.rglob("*")] if d.is_dir()}
    assert folders <= packages, f"add to pyproject.toml packages: {sorted(folders - packages)}"


def test_configs_saved_before_the_checkpoint_io_moved_still_instantiate():
    """Runs saved before b55f571 name `rnnreg.io.AtomicCheckpointIO` in trainer.plugins: it is still the class."""
    from hydra.utils import instantiate

    from rnnreg.checkpoints import AtomicCheckpointIO

    old, new = (instantiate({"_target_": f"rnnreg.{module}.AtomicCheckpointIO"}) for module in ("io", "checkpoints"))
    assert type(old) is type(new) is AtomicCheckpointIO


def test_make_install_pins_what_the_tests_ran_with():
    """constraints.txt, make install's pins: every package rnnreg[dev] needs (but PyTorch's build) at the version
    installed here, each within pyproject.toml's range. A fresh clone's install then takes what the tests passed
    with, not each package's newest release; a dependency added or upgraded without `make constraints` fails here."""
    import importlib.util

    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("constraints", root / "tools" / "constraints.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    pins = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            pinned = Requirement(line)
            (version,) = [s.version for s in pinned.specifier if s.operator == "=="]
            pins[canonicalize_name(pinned.name)] = version
    assert pins == tool.closure("rnnreg", ("dev",))
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        wanted = Requirement(line)
        name = canonicalize_name(wanted.name)
        if name in pins:
            assert wanted.specifier.contains(pins[name], prereleases=True), (line, pins[name])
    assert {"lightning", "hydra-core", "wandb", "ruff", "pytest"} <= set(pins) and "torch" not in pins
