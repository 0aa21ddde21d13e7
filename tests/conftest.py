"""Shared fixtures: composing the real Hydra config, a tiny corpus, real PTB from the data cache."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from rnnreg import CONF_DIR
from rnnreg.data import ensure_files

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED_PTB = REPO.parent / "shared" / "data" / "ptb"


def compose_config(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """The real composed config (as rnnreg-train sees it), writing into `output_dir`."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def write_corpus(folder: Path, vocab: int = 40, lines: tuple[int, int, int] = (400, 60, 60), seed: int = 0,
                 unk: bool = True) -> Path:
    """A small train/valid/test corpus with learnable structure (each word tends to follow its predecessor)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)] + (["<unk>"] if unk else [])
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("train", "valid", "test"), lines):
        out = []
        for _ in range(count):
            w = rng.randrange(vocab)
            line = []
            for _ in range(rng.randint(3, 12)):
                w = (w + 1) % vocab if rng.random() < 0.7 else rng.randrange(vocab)
                line.append(words[w])
            out.append(" ".join(line))
        if name == "train" and unk:
            out.append("<unk>")
        (folder / f"{name}.txt").write_text("\n".join(out) + "\n")
    return folder


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


TINY = ["data=text", "data.bptt=5", "data.batch_size=4", "model=small", "model.hidden_size=16",
        "logger=none", "callbacks.progress_bar=null", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0"]


@pytest.fixture
def tiny_cfg(tiny_corpus: Path, tmp_path: Path):
    """A factory of configs for a tiny model on the tiny corpus (extra overrides appended)."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config(["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", *overrides],
                              tmp_path / run)

    return make


@pytest.fixture(scope="session")
def ptb_dir() -> Path:
    """Real PTB in the project's data cache: seeded from ../shared when present, else downloaded."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper_small"])
    folder = Path(cfg.data.data_dir)
    if SHARED_PTB.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        for f in SHARED_PTB.glob("ptb.*.txt"):
            if not (folder / f.name).exists():
                shutil.copy(f, folder / f.name)
    ensure_files(folder, cfg.data.files, cfg.data.url_base)
    return folder
