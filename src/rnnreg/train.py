"""rnnreg-train: compose the config, train, test both protocols, write metrics.json.

The console script's entry imports Hydra only: `rnnreg-train --help` and shell completion answer without
loading torch or Lightning. The training itself is rnnreg.training, imported once Hydra has parsed the
command line (`build` and `train` are importable from here too: `from rnnreg.train import train`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from rnnreg.runtime import hydra_entry

_TRAINING = ("build", "train")


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    key = cfg.get("optimized_metric")  # a metrics.json key, or null (rnnreg.schema.Train checked which)
    from rnnreg.training import train

    metrics = train(cfg)
    # what hparams_search minimises; a run that validated no epoch has no val_ppl (the trial fails)
    return metrics.get(key) if key else None


def __getattr__(name: str) -> Any:  # rnnreg.train.build etc.: rnnreg.training, imported on first use
    if name in _TRAINING:
        import rnnreg.training

        return getattr(rnnreg.training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    # python -m rnnreg.train: run the importable module's main, which launchers (joblib) pickle by reference
    from rnnreg.train import main as importable_main

    importable_main()
