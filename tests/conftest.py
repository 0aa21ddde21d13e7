"""Shared fixtures: composing the real Hydra config, a tiny corpus, real PTB from the data cache."""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from omegaconf import DictConfig

# Ctrl-C as in a terminal: pytest started in the background (`make test &`, nohup) ignores SIGINT, and so would
# the processes it starts and the runs it trains in-process (a Ctrl-C test then sees nothing happen).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Console scripts started by tests find the tests' helper callbacks (+callbacks.x._target_=helpers.X).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))


def pytest_configure(config: pytest.Config) -> None:
    """What a process that runs tests sets before it collects them. pytest-xdist's controller (make test) runs no
    test: it skips this, and imports no torch or Lightning (8 s of CPU beside its workers' start)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import torch

    # On pytest-xdist workers (make test) the cores are shared out: each worker, and every process it starts,
    # gets cores / workers threads (OpenMP threads beyond the cores spin against each other and crawl).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, min(2, (os.cpu_count() or 1) // workers))
    torch.set_num_threads(threads)
    if workers > 1:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    # Without a GPU, Triton's kernels (speed.triton_cell) run in its interpreter, on the CPU: set before
    # rnnreg.triton_cell is imported, in this process and the ones it starts.
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import lightning.pytorch  # noqa: F401  (what the test modules import)

    # the warnings a console script's run hides, hidden here too: set before pytest copies the filter list for each
    # test, so that a test's own trainer.fit (outside rnnreg's train()) shows what a run would show
    from rnnreg.runtime import hide_expected_warnings

    hide_expected_warnings()

    # torch's and Lightning's objects, here for the whole session: no full collection in this worker walks them
    gc.freeze()


# make test's workers take the longest modules first, so that both end together: pytest-xdist's loadscope hands a
# module to each worker as it frees up, and by its own order (the most tests first) test_ddp, test_cli and
# test_warm_start (few tests, 190 s) came last and one worker ran on alone for 25-40 s. Kept by --no-loadscope-reorder
# (Makefile); each module's test time: `make test ARGS=--durations=0`. A module not named here comes after these.
LONGEST_FIRST = [
    f"test_{name}.py"
    for name in (
        "tracking stacked_launcher report ddp benchmarks trust schema cli first_hour warm_start evaluate faults docs "
        "resume"
    ).split()
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: each module's own order kept)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Collected as usual at exit again (a native module counts what is still alive then as leaked)."""
    gc.unfreeze()


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    from helpers import write_corpus

    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def tiny_cfg(tiny_corpus: Path, tmp_path: Path):
    """A factory of configs for a tiny model on the tiny corpus (extra overrides appended)."""
    from helpers import TINY, compose_config

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config(
            ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", *overrides], tmp_path / run
        )

    return make


@pytest.fixture(scope="session")
def ptb_config(tmp_path_factory) -> DictConfig:
    """The data config a user has: conf/data/ptb.yaml (pinned sha256 sums, download URL, cache folder)."""
    from helpers import compose_config

    return compose_config(["experiment=paper_small"], tmp_path_factory.mktemp("unused")).data


@pytest.fixture(scope="session")
def ptb_dir(ptb_config) -> Path:
    """Real PTB in the project's data cache (RNNREG_DATA_DIR or ~/.cache/rnnreg), downloaded by the project
    when missing and checked against the pinned sums, as for a user."""
    from rnnreg.data import ensure_files

    folder = Path(ptb_config.data_dir)
    ensure_files(folder, ptb_config.files, ptb_config.url_base)
    return folder


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    # W&B's settings from the developer's shell (a WANDB_DIR elsewhere, a WANDB_RUN_ID) are not the test's
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
