"""rnnreg: regularised LSTM language models (Zaremba, Sutskever & Vinyals 2014) with Lightning + Hydra."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra config tree: conf/ at the repository top (editable install: `make install`), shipped as
# rnnreg/conf in a wheel.
_HERE = Path(__file__).resolve().parent
CONF_DIR = str(next((p for p in (_HERE / "conf", _HERE.parents[1] / "conf") if p.is_dir()), _HERE / "conf"))
