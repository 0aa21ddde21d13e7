"""The console scripts as a user runs them: real processes, real PTB, real Hydra run folders."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run

# The smoke run as a user starts it, tested on the first 1,000 words of the test set (one stream: 50 windows of
# 20; batched: 50 windows of 20 x 20 streams), not all 82,430: the test sets cost more than its training here;
# and 100 training windows an epoch, not 150 (still well below a perplexity of 1,000: about 870 on the test).
TEST_WINDOWS = 50
TRAIN_WINDOWS = 100


@pytest.fixture(scope="module")
def smoke_run(ptb_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    run(
        "rnnreg-train",
        "experiment=smoke",
        f"hydra.run.dir={out}",
        "callbacks.progress_bar.refresh_rate=0",
        f"trainer.limit_test_batches={TEST_WINDOWS}",
        f"trainer.limit_train_batches={TRAIN_WINDOWS}",
    )
    return out


@pytest.mark.slow
def test_smoke_experiment_end_to_end(smoke_run: Path):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["experiment"] == "smoke" and metrics["epochs"] == 2 and metrics["params"] == 4_653_200
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert math.isfinite(metrics[key]) and 1 < metrics[key] < 1000, key  # learned well below 10,000
    assert metrics["words_per_second"] > 0 and metrics["train_seconds"] > 0
    assert (smoke_run / "checkpoints" / "last.ckpt").is_file()
    assert (smoke_run / ".hydra" / "config.yaml").is_file()
    assert "val/ppl" in (smoke_run / "csv" / "metrics.csv").read_text()


@pytest.mark.slow
def test_eval_reproduces_the_checkpoint_metrics(smoke_run: Path, tmp_path: Path):
    run(
        "rnnreg-eval",
        f"ckpt_path={smoke_run}/checkpoints/last.ckpt",
        f"hydra.run.dir={tmp_path}",
        "data.eval_bptt=200",
        f"trainer.limit_test_batches={TEST_WINDOWS // 10}",  # the same words in windows of 200
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
    )  # trained with 20-step windows
    trained = json.loads((smoke_run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["test_ppl"] == pytest.approx(trained["test_ppl"], rel=1e-6)
    assert evaluated["test_ppl_batched"] == pytest.approx(trained["test_ppl_batched"], rel=1e-6)


@pytest.mark.slow
def test_generate_is_seeded(smoke_run: Path):
    ckpt = f"{smoke_run}/checkpoints/last.ckpt"
    a = run("rnnreg-generate", f"ckpt_path={ckpt}", "prompt=the market", "num_words=30", "seed=3").stdout
    c = run("rnnreg-generate", f"ckpt_path={ckpt}", "prompt=the market", "num_words=30", "seed=4").stdout
    # the same seed again, through the Python API in a process that never imports Lightning (5 s of imports)
    code = (
        "import sys; from rnnreg.generate import generate, render; "
        f"print(render(generate({ckpt!r}, 'the market', 30, seed=3))); assert 'lightning' not in sys.modules"
    )
    b = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert a == b and a != c and a.startswith("the market")
    assert len(a.replace("\n", " <eos> ").split()) >= 32  # prompt + 30 words (<eos> prints as a line break)


def test_bad_input_is_one_line_error(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = run("rnnreg-train", "experiment=smoke", "data.bptt=0", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data.bptt=0 must be an integer >= 1 (unroll length; the paper uses 20 or 35)"
    ]
    assert not run_dir.exists()  # stopped before Hydra created the run folder
    proc = run("rnnreg-eval", f"ckpt_path={tmp_path}/missing.ckpt", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2 and "is not a file" in proc.stderr and not run_dir.exists()


@pytest.mark.parametrize(
    "args,says",
    [
        (["--p", "abc"], "argument --p: 'abc' is not a drop probability in (0, 1)"),
        (["--p", "0"], "argument --p: '0' is not a drop probability in (0, 1)"),  # every placement alike
        (["--windows", "0"], "argument --windows: '0' is not an integer >= 1"),
        (["--hidden", "0"], "argument --hidden: '0' is not an integer >= 1"),
    ],
)
def test_compare_placements_refuses_bad_arguments_before_anything(tmp_path, capsys, args, says):
    """Refused up front, not after a first run has left a partial --out that blocks the rerun."""
    path = Path(__file__).parents[1] / "examples" / "compare_placements.py"
    spec = importlib.util.spec_from_file_location("compare_placements", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as exit_:
        example.main([*args, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
