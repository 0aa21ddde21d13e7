"""rnnreg as a library: the paper's recipes and Penn Treebank without Hydra's command line.

The numbers stay in the config files: `paper_recipe` composes conf/train.yaml with experiment=paper_<size>
through Hydra's compose API, `ptb_datamodule` takes conf/data/ptb.yaml's pinned URL, checksums and cache.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError

SIZES = ("small", "medium", "large")
DATA_KEYS = ("batch_size", "bptt", "eval_bptt", "test_batch_size")


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """The config rnnreg-train (or `config_name`) would run with these command-line overrides, composed
    without a run: `paths.output_dir` (Hydra's run folder) stays unresolved. Works inside a Hydra app too."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    outer = GlobalHydra.instance()
    saved = outer.hydra if outer.is_initialized() else None
    outer.clear()
    try:
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().hydra = saved


def plain(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def paper_recipe(size: str = "small", *overrides: str) -> dict[str, Any]:
    """The paper's recipe for `size` (small, medium, large), as keyword arguments:

    - `model`, `dropout`, `optim` (the clip included): LanguageModelTask(vocab_size, model, dropout, optim)
    - `data`: ptb_datamodule(**data) (batch size, bptt, evaluation window, test streams)
    - `trainer`: lightning.Trainer(**trainer) (max_epochs)
    - `experiment`, `seed`

    `overrides` are rnnreg-train's, e.g. paper_recipe("small", "dropout=recurrent", "dropout.p=0.3")."""
    if size not in SIZES:
        raise ConfigError(f"paper_recipe({size!r}): choose one of {', '.join(SIZES)}")
    cfg = compose_config(f"experiment=paper_{size}", *overrides)
    return {
        "experiment": cfg.experiment_name,
        "model": plain(cfg.model),
        "dropout": plain(cfg.dropout),
        # the clip is part of rnnreg's update rule (rnnreg.optim): Lightning's own clipping stays off
        "optim": plain(cfg.optim) | {"clip": cfg.trainer.gradient_clip_val},
        "data": {key: cfg.data[key] for key in DATA_KEYS},
        "trainer": {"max_epochs": cfg.trainer.max_epochs},
        "seed": cfg.seed,
    }


def ptb_datamodule(batch_size: int = 20, bptt: int = 20, **kwargs: Any):
    """Penn Treebank (Mikolov's split) as an LMDataModule: conf/data/ptb.yaml's download URL and pinned
    sha256 sums, cached in RNNREG_DATA_DIR or ~/.cache/rnnreg. `kwargs`: LMDataModule's other arguments
    (eval_bptt, test_batch_size, data_dir)."""
    from rnnreg.data import LMDataModule

    data = plain(compose_config("experiment=paper_small").data)
    data.pop("_target_")
    return LMDataModule(**(data | {"batch_size": batch_size, "bptt": bptt} | kwargs))
