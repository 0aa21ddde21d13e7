"""rnnreg: regularised LSTM language models (Zaremba, Sutskever & Vinyals 2014) with Lightning + Hydra."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra config tree lives at the repository top (installed editable: `make install`).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
