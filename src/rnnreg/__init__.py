"""rnnreg: regularised LSTM language models (Zaremba, Sutskever & Vinyals 2014) with Lightning + Hydra.

As a library (no Hydra needed; torch and Lightning load on first use, so `import rnnreg` stays light):

    import lightning as L
    import rnnreg

    recipe = rnnreg.paper_recipe("small")            # the numbers of conf/experiment/paper_small.yaml
    data = rnnreg.ptb_datamodule(**recipe["data"])   # Penn Treebank, downloaded once, checksums pinned
    task = rnnreg.LanguageModelTask(data.vocab_size, recipe["model"], recipe["dropout"], recipe["optim"])
    L.Trainer(**recipe["trainer"]).fit(task, datamodule=data)
"""

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# The Hydra config tree: conf/ at the repository top (editable install: `make install`), shipped as
# rnnreg/conf in a wheel.
_HERE = Path(__file__).resolve().parent
CONF_DIR = str(next((p for p in (_HERE / "conf", _HERE.parents[1] / "conf") if p.is_dir()), _HERE / "conf"))

# name -> module: imported on first use (module __getattr__), so that the console scripts' --help and
# `import rnnreg` do not load torch
_EXPORTS = {
    "LSTMLanguageModel": "rnnreg.model",
    "LMDataModule": "rnnreg.data",
    "LanguageModelTask": "rnnreg.task",
    "load_task": "rnnreg.task",
    "paper_recipe": "rnnreg.recipes",
    "ptb_datamodule": "rnnreg.recipes",
    "compose_config": "rnnreg.recipes",
}
__all__ = ["CONF_DIR", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
