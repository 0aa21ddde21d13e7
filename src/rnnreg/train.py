"""rnnreg-train: compose the config, train, test both protocols, write metrics.json.

The console script's entry imports Hydra only: `rnnreg-train --help` and shell completion answer without
loading torch or Lightning. The training itself is rnnreg.training, imported once Hydra has parsed the
command line (its names, `build`, `train`, ..., are importable from here too).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from rnnreg.errors import ConfigError
from rnnreg.runtime import hydra_entry

# The keys of metrics.json that `optimized_metric` may name: what main() returns to a sweeper (hparams_search).
OPTIMIZABLE = ("best_val_ppl", "val_ppl", "test_ppl", "test_ppl_batched")
_TRAINING = ("build", "train", "resolve_ckpt_path", "test_checkpoint")


def optimized_metric(cfg: DictConfig) -> str | None:
    """The metrics.json key main() returns (null: none), checked before any training."""
    key = cfg.get("optimized_metric")
    if key is None:
        return None
    if key not in OPTIMIZABLE:
        known = ", ".join(OPTIMIZABLE)
        raise ConfigError(f"optimized_metric={key} is not a metric of metrics.json: choose one of {known}")
    if key.startswith("test") and not cfg.get("test"):
        raise ConfigError(f"optimized_metric={key} needs the final test: set test=true or choose best_val_ppl")
    return key


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    key = optimized_metric(cfg)
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
