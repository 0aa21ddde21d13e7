"""The GPU benchmark scripts, dry-run on the CPU (tiny runs: the figures mean nothing here), so that they
still run when a GPU is at hand: same processes, same JSON, same `python -m rnnreg.train` entry point."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import warm_start
from helpers import needs_triton

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(script: str, *args: str, data_dir: Path) -> subprocess.CompletedProcess:
    """`python benchmarks/<script> args` as a GPU session runs it: a real process (a fork of the warm-start
    server, warm_start.py), and so are the Python processes it starts (`python -m rnnreg.train`, the plain loop,
    bench_stacked.py's timings: forks too where a fork can give what they ask; joblib's workers stay cold)."""
    env = os.environ | {"RNNREG_DATA_DIR": str(data_dir.parent)}
    argv = [sys.executable, str(BENCH / script), *args]
    proc = warm_start.run(argv, text=True, env=env, timeout=600, warm_children=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_bench_gpu_dry_run(ptb_dir, tmp_path):
    bench(
        "bench_gpu.py",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--sizes",
        "small",
        "--steps",
        "4",
        "--sides",
        "rnnreg",
        "--concurrent",
        "1",  # (joblib runs one job in its own process: loky's workers, cold processes, are test_tracking's)
        "--concurrent-size",
        "small",
        data_dir=ptb_dir,
    )
    results = json.loads((tmp_path / "bench_gpu.json").read_text())
    small = results["sizes"]["small"]
    assert small["plain"]["warmup_steps"] == 2 and small["plain"]["words_per_second_steady"] > 0

    def check_side(entry: dict, side: str) -> None:
        assert entry[side]["epochs"] == 2 and entry[side]["status"] == "completed"  # 2 epochs of steps/2
        assert (
            entry[f"ratio_{side}"]
            == entry[side]["words_per_second_last_epoch"] / entry["plain"]["words_per_second_steady"]
        )

    check_side(small, "rnnreg")
    # the concurrent jobs' multirun ran through Hydra's joblib launcher (the sum over jobs: the test below)
    concurrent = results["concurrent"]
    assert "error" not in concurrent and len(concurrent["per_job_words_per_second_steady"]) == 1
    # one job of that size alone: the rnnreg side just measured, not a run of its own
    assert concurrent["size"] == "small"
    assert concurrent["one_job_words_per_second_steady"] == small["rnnreg"]["words_per_second_last_epoch"]
    # a second call adds a side (here without the fast step) to the same file and reuses the plain baseline
    bench(
        "bench_gpu.py",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--sizes",
        "small",
        "--steps",
        "4",
        "--sides",
        "rnnreg_plain_step",
        data_dir=ptb_dir,
    )
    again = json.loads((tmp_path / "bench_gpu.json").read_text())["sizes"]["small"]
    assert again["plain"] == small["plain"] and again["rnnreg"] == small["rnnreg"]
    check_side(again, "rnnreg_plain_step")


def test_start_time_times_a_run_and_a_multirun_to_their_training(tmp_path):
    """benchmarks/start_time.py: each command's seconds from its command line to the training function, and their
    median after the first."""
    proc = bench("start_time.py", "--repeats", "2", "--out", str(tmp_path), data_dir=tmp_path)
    results = json.loads((tmp_path / "start_time.json").read_text())
    assert set(results) == {"run", "one_job_multirun"}
    for name, timed in results.items():
        assert len(timed["seconds"]) == 2 and all(s > 0 for s in timed["seconds"])
        assert timed["median_after_first"] == timed["seconds"][1]
        assert f"{name}: {timed['median_after_first']:.3f} s to the training function" in proc.stdout


def test_bench_gpu_sums_the_concurrent_jobs_steady_words_per_second(tmp_path, monkeypatch):
    """--concurrent N: each job's steady words/s is its second epoch's (words_per_second_last_epoch in the job's
    metrics.json, not the whole run's), the jobs' sum is compared with one job alone (the rnnreg side's steady
    figure). Stand-ins for the runs: the plain loop, rnnreg's side and the multirun's jobs write hand-made
    figures."""
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_gpu

    jobs = {0: (500.0, 600.0), 1: (700.0, 800.0), 2: (1000.0, 1100.0)}  # seed: (whole run, second epoch)
    commands = []

    def multirun(command, **kwargs):
        commands.append(command)
        sweep = Path(next(a for a in command if a.startswith("hydra.sweep.dir=")).split("=", 1)[1])
        for seed, (whole, steady) in jobs.items():
            (sweep / str(seed)).mkdir(parents=True)
            metrics = {"words_per_second": whole, "words_per_second_last_epoch": steady}
            (sweep / str(seed) / "metrics.json").write_text(json.dumps(metrics))

    monkeypatch.setattr(
        bench_gpu, "subprocess", SimpleNamespace(run=multirun, CalledProcessError=subprocess.CalledProcessError)
    )
    monkeypatch.setattr(bench_gpu, "plain", lambda *a: {"words_per_second": 400.0, "words_per_second_steady": 450.0})
    alone = {"words_per_second": 900.0, "words_per_second_last_epoch": 1000.0, "status": "completed"}
    monkeypatch.setattr(bench_gpu, "rnnreg", lambda *a, **kw: alone)
    args = ["--out", str(tmp_path), "--device", "cpu", "--sizes", "small", "--steps", "8", "--sides", "rnnreg"]
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", *args, "--concurrent", "3", "--concurrent-size", "small"])
    bench_gpu.main()
    (command,) = commands  # one multirun of the 3 jobs at once, each 2 epochs of steps/2 windows
    assert {"seed=0,1,2", "hydra.launcher.n_jobs=3", "trainer.max_epochs=2", "trainer.limit_train_batches=4"} <= set(
        command
    )
    concurrent = json.loads((tmp_path / "bench_gpu.json").read_text())["concurrent"]
    steady = [second_epoch for _, second_epoch in jobs.values()]
    assert concurrent["per_job_words_per_second_steady"] == steady
    assert concurrent["sum_words_per_second_steady"] == 600.0 + 800.0 + 1100.0
    assert concurrent["one_job_words_per_second_steady"] == alone["words_per_second_last_epoch"]
    assert concurrent["sum_vs_one"] == (600.0 + 800.0 + 1100.0) / 1000.0
    assert concurrent["jobs"] == 3 and concurrent["size"] == "small"


def test_profile_step_dry_run(ptb_dir, tmp_path):
    bench(
        "profile_step.py",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--sizes",
        "small",
        "--windows",
        "2",
        "--warmup",
        "2",  # a dry run: two windows before each timing (10 by default)
        data_dir=ptb_dir,
    )
    small = json.loads((tmp_path / "profile_step.json").read_text())["sizes"]["small"]
    # dropout off, same weights and windows: the fast step (eager; the graph path falls back to eager on
    # the CPU) updates exactly as the plain autograd + clip + SGD step
    for check in ("check", "check_step_lstm"):  # the fused nn.LSTM and our step-loop LSTM
        for name in ("fast_eager", "fast_graph"):
            assert small[check][name]["max_loss_diff"] < 1e-5 and small[check][name]["max_weight_diff"] < 1e-5
    assert set(small["ms_per_window"]) == {
        "plain_eager",
        "fast_eager",
        "fast_graph",
        "fast_graph_tf32",
        "fast_graph_bf16",
    }
    assert (tmp_path / "profile_step_kernels.txt").read_text().count("eager fast step") == 1


def test_bench_stacked_dry_run(ptb_dir, tmp_path):
    """The stacked-sweep benchmark (gpu_check.sh stacked) runs and writes one row per K."""
    out = tmp_path / "bench_stacked.json"
    # each K and kind is timed in a fresh process (3 here): tiny windows, one K
    args = ("--hidden", "8", "--vocab", "30", "--bptt", "4", "--batch", "3", "--windows", "2", "--warmup", "1")
    bench("bench_stacked.py", "--members", "2", *args, "--check", "--out", str(out), data_dir=ptb_dir)
    result = json.loads(out.read_text())
    assert result["check"]["same"] and result["check"]["windows"] == 3  # on a CPU both runs eager
    assert result["check"]["layer_norm_tied"]["same"]  # a group of the other shapes, checked apart
    rows = result["rows"]
    assert [row["members"] for row in rows] == [2]
    assert all(row[f"{kind}_wps"] > 0 for row in rows for kind in ("stacked", "sequential_step", "sequential_fused"))
    # what a GPU session times: the stacked step alone, with TF32 asked for (no effect on a CPU)
    bench("bench_stacked.py", "--members", "2", *args, "--kinds", "stacked", "--tf32", "--out", str(out),
          data_dir=ptb_dir)  # fmt: skip
    result = json.loads(out.read_text())
    assert result["tf32"] and [set(row) for row in result["rows"]] == [{"members", "seconds", "stacked_wps"}]
    (row,) = result["rows"]  # every member's words (2 windows of 4 x 3) over the median time of the timed windows
    assert row["stacked_wps"] == 2 * (2 * 4 * 3) / statistics.median(row["seconds"]["stacked"])


def test_bench_stacked_under_bf16_autocast_dry_run(ptb_dir, tmp_path):
    """gpu_check.sh's bf16_timing: the stacked step under bf16 autocast, its CUDA graph checked against its eager
    step (both eager here), how far bf16 takes the check's members from float32, and K members timed."""
    out = tmp_path / "bench_stacked_bf16.json"
    args = ("--members", "2", "--hidden", "6", "--pad", "4", "--vocab", "30", "--bptt", "4", "--batch", "3")
    bench("bench_stacked.py", *args, "--windows", "2", "--warmup", "1", "--kinds", "stacked", "--check", "--bf16",
          "--out", str(out), data_dir=ptb_dir)  # fmt: skip
    result = json.loads(out.read_text())
    assert result["config"]["bf16"] and result["check"]["same"]
    assert 0 < result["check"]["max_loss_difference_vs_float32"] < 0.05  # bf16's GEMMs ran, and trained alike
    (row,) = result["rows"]
    assert row["stacked_wps"] > 0


def test_bench_stacked_profile_dry_run(ptb_dir, tmp_path):
    """gpu_check.sh probe's kernel profile of a stacked window: written as text, one section per cell asked for
    (on a CPU torch.profiler sees no kernels, so this checks the script and its op table)."""
    out = tmp_path / "profile.txt"
    args = ("--members", "2", "--placements", "--hidden", "8", "--vocab", "30", "--bptt", "4", "--batch", "3")
    bench("bench_stacked.py", *args, "--kinds", "stacked", "--profile", str(out), data_dir=ptb_dir)
    text = out.read_text()
    assert text.count("== K = 2, 8 units, bptt 4, batch 3") == 1 and "torch-ops cell, torch-ops update, eager" in text
    assert "LSTMLayerFunction" in text  # torch.profiler's op table: the step-loop layer ran under it


@needs_triton
def test_bench_stacked_profiles_the_triton_update(ptb_dir, tmp_path):
    """gpu_check.sh's profile_padded with stacked_triton_update: a section for the Triton cell with the Triton update
    after the torch ops' (its kernels ran: the op table names the update's function)."""
    out = tmp_path / "profile.txt"
    args = ("--members", "2", "--pad", "4", "--hidden", "6", "--vocab", "30", "--bptt", "4", "--batch", "3")
    bench("bench_stacked.py", *args, "--kinds", "stacked_triton_update", "--profile", str(out), data_dir=ptb_dir)
    sections = out.read_text().split("\n\n== ")
    assert len(sections) == 2 and "torch-ops cell, torch-ops update, eager" in sections[0]
    assert "Triton cell, Triton update, eager" in sections[1]


@needs_triton
def test_bench_stacked_checks_and_times_both_cells(ptb_dir, tmp_path):
    """gpu_check.sh ablation's choice of speed.triton_cell: both cells checked and timed (the interpreter here), on
    the hidden units padded as a GPU's sweep holds them (6 as 8; the unpadded Triton cell: test_stacked_launcher)."""
    out = tmp_path / "bench_stacked.json"
    args = ("--members", "2", "--hidden", "6", "--pad", "4", "--vocab", "30", "--bptt", "4", "--batch", "3")
    args += ("--windows", "2")
    args += ("--warmup", "1")  # Triton's interpreter runs every kernel instance in Python: tiny windows
    triton_kinds = ("--kinds", "stacked", "stacked_triton", "stacked_triton_update")
    proc = bench("bench_stacked.py", *args, "--check", *triton_kinds, "--out", str(out), data_dir=ptb_dir)
    result = json.loads(out.read_text())
    assert result["check"]["same"] and result["check"]["triton"]["same"]
    # the Triton update, timed once it is exact (weights to the bit) against the torch ops' update and in its graph
    assert result["triton_update_check"] | {"max_weight_difference_vs_torch_update": 0.0} == {
        "same_as_torch_update": True,
        "max_weight_difference_vs_torch_update": 0.0,
        "captured": False,  # (no CUDA: both runs eager)
        "graph_same_as_eager": True,
        "same": True,
    }
    # padded against unpadded (what gpu_check.sh's pad_pays reads before a sweep pads)
    assert result["check"]["padding"]["same"] and result["check"]["padding"]["pad"] == 4
    assert result["check"]["padding"]["padded"] and result["check"]["padding"]["units"] == 8  # 6 held as 8
    assert result["check"]["padding"]["max_loss_difference_vs_unpadded_fp32"] <= 1e-3
    # decided in strict float32 (TF32 would amplify rounding); the difference with the sweep's matmuls recorded
    assert result["check"]["triton"]["max_loss_difference_vs_torch_cell_fp32"] <= 1e-3
    assert result["check"]["triton"]["max_loss_difference_vs_torch_cell"] <= 1e-3  # no TF32 on a CPU
    (row,) = result["rows"]
    assert (
        row["stacked_triton_wps"] > 0 and row["triton_cell_speedup"] == row["stacked_triton_wps"] / row["stacked_wps"]
    )
    assert row["triton_update_speedup"] == row["stacked_triton_update_wps"] / row["stacked_triton_wps"]
    # the table's line says every speed-up the row has
    speedups = f"triton_cell_speedup {row['triton_cell_speedup']:.2f}x, triton_update_speedup " \
        f"{row['triton_update_speedup']:.2f}x"  # fmt: skip
    assert speedups in proc.stdout


@needs_triton
def test_bench_stacked_keeps_the_torch_check_when_the_triton_cell_fails(tmp_path, monkeypatch):
    """A Triton cell that fails on the device (no C compiler, a Triton built for another GPU) costs only its own
    check and timing: the JSON keeps the torch ops' graph check, which gpu_check.sh reads for speed.cuda_graph,
    and says the Triton cell failed and why, which gives the ablation speed.triton_cell=false."""
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_stacked
    import rnnreg.triton_cell

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler")

    monkeypatch.setattr(rnnreg.triton_cell, "cell_forward", no_compiler)
    out = tmp_path / "check.json"
    args = ["--members", "--check", "--kinds", "stacked", "stacked_triton", "--hidden", "8", "--vocab", "30"]
    monkeypatch.setattr(sys, "argv", ["bench_stacked.py", *args, "--windows", "2", "--warmup", "1", "--out", str(out)])
    with pytest.raises(SystemExit, match="the Triton cell failed its check"):
        bench_stacked.main()
    check = json.loads(out.read_text())["check"]
    assert check["same"] and check["generators_equal"]
    assert check["triton"] == {"same": False, "error": "RuntimeError: Failed to find C compiler"}


@needs_triton
@pytest.mark.parametrize("broken", ["graph", "triton", "padding"])
def test_bench_stacked_check_tells_a_step_that_differs(tmp_path, monkeypatch, broken):
    """bench_stacked.py --check compares what it says it does: losses 0.01 off in the graphed run, in the Triton
    cell's strict float32 run, or in the unpadded run fail that part of the check (same: false, which gives
    gpu_check.sh's sweep no graph, no Triton cell or no padding), and only that part."""
    monkeypatch.syspath_prepend(str(BENCH))
    import torch

    import bench_stacked

    real = bench_stacked.run_check_members

    def off(args, data, device, graph, triton_cell=False, shape=None, pad=None):
        losses, *rest = real(args, data, device, graph, triton_cell, shape, pad)
        strict = not torch.backends.cuda.matmul.allow_tf32  # inside StrictFloat32 (the run has --tf32)
        hit = {"graph": graph and not (shape or triton_cell), "triton": triton_cell and strict, "padding": pad == 1}[
            broken
        ]
        return (losses + 0.01 if hit else losses, *rest)

    monkeypatch.setattr(bench_stacked, "run_check_members", off)
    out = tmp_path / "check.json"
    args = ["--members", "--check", "--kinds", "stacked", "stacked_triton", "--tf32", "--hidden", "6", "--pad", "4"]
    args += ["--vocab", "30", "--bptt", "4", "--batch", "3", "--windows", "2", "--warmup", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["bench_stacked.py", *args])
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        if broken == "padding":
            bench_stacked.main()
        else:
            with pytest.raises(SystemExit, match="differs from the eager one" if broken == "graph" else "Triton cell"):
                bench_stacked.main()
    finally:  # --tf32 set them for the process
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    check = json.loads(out.read_text())["check"]
    parts = {"graph": check["same"], "triton": check["triton"]["same"], "padding": check["padding"]["same"]}
    assert parts == {part: part != broken for part in parts}


@needs_triton
@pytest.mark.parametrize("broken", ["eager", "graph"])
def test_bench_stacked_times_the_triton_update_only_once_it_is_exact(tmp_path, monkeypatch, broken):
    """stacked_triton_update is timed only after its check: one weight one ulp off in the update's eager run (against
    the torch ops' update) or in its graphed run (against its eager run) fails it, and the benchmark ends with a
    line naming it, the check in its JSON, nothing of the update timed."""
    monkeypatch.syspath_prepend(str(BENCH))
    import torch

    import bench_stacked

    real = bench_stacked.run_check_members

    def nudged(args, data, device, graph, triton_cell=False, shape=None, pad=None, triton_update=False):
        losses, weights, *rest = real(args, data, device, graph, triton_cell, shape, pad, triton_update)
        if triton_update and graph == (broken == "graph"):
            weights[0] = weights[0].clone()
            weights[0].view(-1)[0] = torch.nextafter(weights[0].view(-1)[0], torch.tensor(1.0))
        return (losses, weights, *rest)

    monkeypatch.setattr(bench_stacked, "run_check_members", nudged)
    out = tmp_path / "check.json"
    args = ["--members", "--kinds", "stacked_triton_update", "--hidden", "6", "--vocab", "30", "--bptt", "4"]
    args += ["--batch", "3", "--windows", "2", "--warmup", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["bench_stacked.py", *args])
    with pytest.raises(SystemExit, match="the Triton update failed its check"):
        bench_stacked.main()
    result = json.loads(out.read_text())
    assert result["triton_update_check"]["same"] is False and result["rows"] == []
    assert result["triton_update_check"]["same_as_torch_update"] == (broken != "eager")
    assert result["triton_update_check"].get("graph_same_as_eager") is (False if broken == "graph" else None)


def test_bench_stacked_padding_check_is_float32_and_says_whether_it_padded(monkeypatch):
    """bench_stacked --check's padding part (what gpu_check.sh's pad_pays reads): under --bf16 its members still run
    in float32 (bf16's rounding is not the padding's), and it says whether --hidden at --pad held any padding: 6
    at 4 as 8, padded; 8 at 4 as it is, nothing padded (a check that decides nothing: gpu_decisions)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import argparse

    import torch

    import bench_stacked

    real, forwards = bench_stacked.run_check_members, []

    def recorded(args, *rest, **kwargs):
        forwards.append(bench_stacked.autocast(args))
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(bench_stacked, "run_check_members", recorded)
    args = argparse.Namespace(vocab=30, hidden=6, layers=2, bptt=4, batch=3, pad=4, warmup=1, bf16=True)
    cpu = torch.device("cpu")
    data = bench_stacked.windows(args.vocab, args.bptt, args.batch, 3, cpu)
    padding = bench_stacked.check_padding(args, data, cpu)
    assert forwards == [None, None]  # padded and unpadded, both in float32
    assert padding["same"] and (padding["pad"], padding["units"], padding["padded"]) == (4, 8, True)
    aligned = bench_stacked.check_padding(argparse.Namespace(**vars(args) | {"hidden": 8}), data, cpu)
    assert (aligned["units"], aligned["padded"]) == (8, False)


@needs_triton
def test_check_triton_cell_dry_run(ptb_dir, tmp_path):
    """The Triton cell against the torch ops with the ablation's 15 members (small here): the same losses and
    weights to float32 rounding, window by window."""
    out = tmp_path / "check.json"
    args = ("--windows", "2", "--vocab", "30", "--hidden", "8", "--bptt", "4", "--batch", "3", "--out", str(out))
    bench("check_triton_cell.py", *args, data_dir=ptb_dir)
    result = json.loads(out.read_text())
    assert len(result["losses_triton_cell"]) == 2 and len(result["losses_triton_cell"][0]) == 15
    assert result["max_rel_loss_difference"] < 1e-5 and result["max_abs_weight_difference"] < 1e-5
    assert len(result["seconds_per_window_triton_cell"]) == 2


@pytest.mark.slow
def test_resume_check_dry_run(ptb_dir, tmp_path):
    """benchmarks/resume_check.py as the GPU session runs it, tiny on a CPU: the uninterrupted run twice, one stopped
    by SIGTERM mid-epoch and its resume, all equal to the bit here (model.lstm=layers: torch's dropout between)."""
    args = ("--out", str(tmp_path), "--accelerator", "cpu", "--experiment", "paper_small", "--cases", "layers")
    tiny = ("--windows", "4", "dropout.p=0.3", "model.hidden_size=12", "trainer.limit_val_batches=2")
    bench("resume_check.py", *args, *tiny, data_dir=ptb_dir)
    row = json.loads((tmp_path / "resume_check.json").read_text())["layers"]
    assert row["exits"] == {"A": 0, "B": 0, "C": 143, "D": 0}
    assert row["A-B"]["weights_equal"] and row["A-D"]["weights_equal"] and row["A-D"]["largest_weight_difference"] == 0
    assert "model.lstm=layers" in row["overrides"] and row["words_per_second_A_second_epoch"] > 0


def test_bench_member_gemm_dry_run(ptb_dir, tmp_path):
    """The GEMM benchmark behind the CPU's program (members in turn) runs and writes one row per GEMM."""
    out = tmp_path / "gemm.json"
    args = ("--members", "2", "--hidden", "8", "--vocab", "30", "--tokens", "12", "--batch", "3", "--repeats", "1")
    bench("bench_member_gemm.py", *args, "--out", str(out), data_dir=ptb_dir)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 7 and all(row["bmm_gflops"] > 0 and row["mm_gflops"] > 0 for row in rows)


def test_bench_gemm_layouts_dry_run(ptb_dir, tmp_path):
    """The GEMM-layout benchmark (a GPU session's) runs every GEMM of a window in every variant asked for."""
    out = tmp_path / "gemm.json"
    args = ("--members", "2", "--hidden", "8", "10", "--row-width", "12", "--vocab", "30", "--bptt", "4")
    args += ("--batch", "3", "--repeats", "1", "--precisions", "tf32", "bf16")
    bench("bench_gemm_layouts.py", *args, "--out", str(out), data_dir=ptb_dir)
    rows = json.loads(out.read_text())["rows"]
    # each precision: hidden 8, 10, and 8 in rows 12 wide (a view into padded storage)
    layouts = {(r["hidden"], r["row_width"], r["precision"]) for r in rows}
    assert layouts == {(h, w, p) for h, w in ((8, 8), (10, 10), (8, 12)) for p in ("tf32", "bf16")}
    assert len(rows) == 6 * 9 and all(r["us"] > 0 and r["tflops"] > 0 for r in rows)
    # the recurrent step's rows also say how fast they read the members' W_hh
    assert all((r["weight_tbps"] is not None) == r["gemm"].startswith("recurrent step") for r in rows)


def test_bench_gemm_layouts_padded_rows_are_a_view_of_the_same_numbers(monkeypatch):
    """--row-width: hidden 8 held in rows 12 wide. Every operand whose rows are h wide is a view into padded
    storage (its rows row_width apart), holding the same numbers as the unpadded layout (same seed), and every
    GEMM computes the unpadded one's result: the same model in aligned rows."""
    monkeypatch.syspath_prepend(str(BENCH))
    import torch

    import bench_gemm_layouts

    h, width = 8, 12
    sizes = {"k": 2, "h": h, "vocab": 30, "tokens": 12, "batch": 3, "dtype": torch.float32, "device": "cpu"}

    def layout(row_width):
        torch.manual_seed(0)
        return bench_gemm_layouts.gemms(**sizes, row_width=row_width)

    def rows_apart(t):
        """How far apart t's rows of h contiguous numbers are (t transposed or not); None: no such rows."""
        if t.shape[-1] == h and t.stride(-1) == 1:
            return t.stride(-2)
        if t.shape[-2] == h and t.stride(-2) == 1:
            return t.stride(-1)
        return None

    plain, padded = layout(None), layout(width)
    assert list(padded) == list(plain)
    for name in plain:
        (a, b, weight_bytes), (pa, pb, padded_weight_bytes) = plain[name], padded[name]
        assert padded_weight_bytes == weight_bytes, name  # the model's weights, not the padding
        for operand, padded_operand in ((a, pa), (b, pb)):
            assert torch.equal(padded_operand, operand), name
            apart, padded_apart = rows_apart(operand), rows_apart(padded_operand)
            if apart == h:  # rows of h numbers: in the padded layout, row_width apart in storage
                assert padded_apart == width, name
                assert padded_operand.untyped_storage().nbytes() > padded_operand.numel() * 4, name
            else:
                assert padded_operand.stride() == operand.stride(), name
        torch.testing.assert_close(torch.matmul(pa, pb), torch.matmul(a, b), rtol=1e-5, atol=1e-6, msg=name)
    padded_rows = [name for name, (a, b, _) in plain.items() if h in (rows_apart(a), rows_apart(b))]
    assert len(padded_rows) >= len(plain) - 1  # all but the backward step on W_hh stored transposed


@pytest.mark.parametrize("experiment", ["paper_small", "paper_medium", "paper_large"])
def test_reproduce_sets_the_papers_numbers_of_its_size_beside_ours(tmp_path, monkeypatch, capsys, experiment):
    """reproduce.py's "paper" column: the valid and test perplexities of the experiment's size in conf/report.yaml
    (paper.<size>), each beside our number of the same split. A stand-in for the training run writes its
    metrics.json."""
    monkeypatch.syspath_prepend(str(BENCH))
    from omegaconf import OmegaConf

    import reproduce
    from rnnreg import CONF_DIR

    ours = {"status": "completed", "val_ppl": 91.25, "test_ppl": 88.5, "train_seconds": 12.0}
    commands = []

    def train(command, **kwargs):
        commands.append(command)
        run_dir = Path(next(a for a in command if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(ours))

    monkeypatch.setattr(reproduce, "subprocess", SimpleNamespace(run=train))
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--out", str(tmp_path), "--experiment", experiment])
    reproduce.main()
    assert f"experiment={experiment}" in commands[0]
    size = OmegaConf.load(Path(CONF_DIR) / "report.yaml").paper[experiment.removeprefix("paper_")]
    result = json.loads((tmp_path / f"reproduce_{experiment}.json").read_text())
    assert result["paper"] == {"val_ppl": size.valid_ppl, "test_ppl": size.test_ppl}
    assert result["metrics"]["val_ppl"] == ours["val_ppl"] and result["metrics"]["test_ppl"] == ours["test_ppl"]
    printed = capsys.readouterr().out.splitlines()[-1]
    assert f"valid 91.25 (paper {size.valid_ppl}), test 88.50 (paper {size.test_ppl})" in printed


@pytest.mark.parametrize("handled", [False, True])
def test_how_it_ended_tells_a_handled_sigterm_from_a_kill(tmp_path, handled):
    """gpu_check.sh's sweep wrapper under `timeout` (SIGTERM to the whole process group): a command without a
    SIGTERM handler is killed by it, one with a handler exits 143; bash's $? is 143 for both, the line is not."""
    handler = "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n" if handled else ""
    script = f"import signal, sys, time\n{handler}open(sys.argv[1], 'w').close()\ntime.sleep(60)\n"
    ready = tmp_path / "ready"
    command = ["timeout", "-k", "20", "3", sys.executable, str(BENCH / "how_it_ended.py"), sys.executable, "-c"]
    proc = subprocess.run([*command, script, str(ready)], capture_output=True, text=True, timeout=60, check=False)
    assert ready.exists() and proc.returncode == 124  # timeout's own status: it sent SIGTERM
    ended = proc.stdout.splitlines()[-1]
    assert ended.startswith("how_it_ended: exit 143" if handled else "how_it_ended: killed by SIGTERM"), ended
    assert f"s before: SigCgt {'yes' if handled else 'no'}, SigIgn no, SigBlk no)" in ended


def test_how_it_ended_exits_as_the_command_did_when_a_signal_killed_it():
    """Killed by signal N, the wrapper exits 128 + N (as bash reports such a death), which is what gpu_check.sh's
    fallback reads of a crashed sweep."""
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    command = [sys.executable, str(BENCH / "how_it_ended.py"), sys.executable, "-c", script]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 128 + 9 and proc.stdout.startswith("how_it_ended: killed by SIGKILL")


# -- what gpu_check.sh decides before a sweep (benchmarks/gpu_decisions.py) -------------------------------------
def write_check(folder: Path, name: str, check: dict | None, rows: list | None = None) -> None:
    (folder / f"{name}.json").write_text(json.dumps({"config": {}, "check": check, "rows": rows or []}))


PASSED = {"captured": True, "same": True, "triton": {"same": True}, "padding": {"same": True, "pad": 8, "padded": True}}


@pytest.mark.parametrize(
    "check,rows,settings",
    [
        (PASSED, [{"members": 15, "triton_cell_speedup": 1.10}], ("true", "true", "auto")),
        (PASSED, [{"members": 15, "triton_cell_speedup": 1.01}], ("true", "false", "auto")),  # not 5 % faster
        (PASSED, [{"members": 8, "triton_cell_speedup": 1.10}], ("true", "false", "auto")),  # timed at other K
        (PASSED | {"same": False}, [], ("false", "false", "auto")),  # captured, but not the eager step's
        (PASSED | {"captured": False}, [], ("false", "false", "auto")),  # eager both times
        (
            PASSED | {"triton": {"same": False}},
            [{"members": 15, "triton_cell_speedup": 1.10}],
            ("true", "false", "auto"),
        ),
        (PASSED | {"triton": {"same": False, "error": "no C compiler"}}, [], ("true", "false", "auto")),
        (PASSED | {"padding": {"same": False, "padded": True}}, [], ("true", "false", "1")),
        (PASSED | {"padding": {"same": True, "padded": False}}, [], ("true", "false", "1")),  # nothing was padded
        ({"captured": True, "same": True}, [], ("true", "false", "1")),  # the check stopped before its padding part
        (None, [], ("false", "false", "1")),  # no check ran
    ],
)
def test_the_sweeps_settings_follow_the_checks(tmp_path, monkeypatch, check, rows, settings):
    """speed.cuda_graph, speed.triton_cell and hydra.launcher.pad_hidden_to as gpu_decisions.py reads a check:
    what was not checked, or did not pass, is not used."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_decisions

    write_check(tmp_path, "check", check, rows)
    path = tmp_path / "check.json"
    got = (str(gpu_decisions.cuda_graph(path)).lower(), str(gpu_decisions.triton_cell(path)).lower())
    assert (*got, gpu_decisions.pad_hidden_to(path)) == settings
    missing = tmp_path / "missing.json"
    assert (gpu_decisions.cuda_graph(missing), gpu_decisions.triton_cell(missing)) == (False, False)
    assert gpu_decisions.pad_hidden_to(missing) == "1"
    (tmp_path / "cut.json").write_text(path.read_text()[:20])  # a file cut short (a killed stage)
    assert gpu_decisions.pad_hidden_to(tmp_path / "cut.json") == "1"


UPDATE_EXACT = {"same_as_torch_update": True, "captured": True, "graph_same_as_eager": True, "same": True}


@pytest.mark.parametrize(
    "update_check,rows,uses",
    [
        (UPDATE_EXACT, [{"members": 15, "triton_update_speedup": 1.15}], True),
        (UPDATE_EXACT, [{"members": 15, "triton_update_speedup": 1.02}], False),  # not 5 % faster
        (UPDATE_EXACT, [{"members": 5, "triton_update_speedup": 1.15}], False),  # timed at other K
        (UPDATE_EXACT | {"same": False}, [{"members": 15, "triton_update_speedup": 1.15}], False),  # not exact
        ({"same": False, "error": "no C compiler"}, [], False),
        (None, [{"members": 15, "triton_update_speedup": 1.15}], False),  # (a file with no check: not decided)
    ],
)
def test_the_sweeps_triton_update_follows_its_check(tmp_path, monkeypatch, update_check, rows, uses):
    """speed.triton_update as gpu_decisions.py reads bench_stacked.py's triton_update_check and rows: only an update
    exact to the bit that ran >= 5 % faster at the sweep's K."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_decisions

    (tmp_path / "check.json").write_text(
        json.dumps({"check": PASSED, "triton_update_check": update_check, "rows": rows})
    )
    assert gpu_decisions.triton_update(tmp_path / "check.json") is uses
    assert gpu_decisions.main(["triton_update", str(tmp_path / "check.json"), "15"]) == str(uses).lower()
    assert gpu_decisions.triton_update(tmp_path / "missing.json") is False


def test_gpu_decisions_answers_help_and_bad_arguments_in_one_line(monkeypatch, capsys):
    """--help prints the decisions; no arguments, or a K that is no whole number, is a usage line and exit 2 (before:
    Python's traceback; found by a probe)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_decisions

    with pytest.raises(SystemExit) as ended:
        gpu_decisions.main(["--help"])
    assert ended.value.code == 0 and "speed.cuda_graph" in capsys.readouterr().out
    for argv in ([], ["triton_update", "check.json", "x"], ["triton_cell"]):
        with pytest.raises(SystemExit) as ended:
            gpu_decisions.main(argv)
        (line,) = capsys.readouterr().err.splitlines()
        assert ended.value.code == 2 and line.endswith(
            ": give python benchmarks/gpu_decisions.py DECISION CHECK.json [K] (--help: the decisions)"
        ), argv


def test_gpu_check_sweep_settings(tmp_path):
    """gpu_check.sh's `settings` mode: what each sweep mode would run with, from the files in WORK_DIR (the same
    functions the modes call). It reads those files and writes none: the device
    session's gpu.txt stays (it says which machine the files came from), and OUT_DIR gets no archive."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "gpu.txt").write_text("NVIDIA H200 (the session that wrote these files)\n")

    def settings() -> dict[str, str]:
        env = os.environ | {"WORK_DIR": str(work), "PYTHON": sys.executable}
        proc = subprocess.run(
            ["bash", str(BENCH / "gpu_check.sh"), str(tmp_path / "out"), "settings"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": speed." in line)

    nothing = "speed.cuda_graph=false speed.triton_cell=false speed.triton_update=false hydra.launcher.pad_hidden_to=1"
    assert settings() == {mode: nothing for mode in ("stacked", "ablation", "ablation_seed", "table")}
    write_check(work, "graph_check", PASSED, [{"members": 15, "triton_cell_speedup": 1.2}])
    speedups = {"members": 5, "triton_cell_speedup": 1.2, "triton_update_speedup": 1.1}
    (work / "graph_check_k5.json").write_text(
        json.dumps({"check": PASSED, "triton_update_check": UPDATE_EXACT, "rows": [speedups]})
    )
    write_check(work, "table_graph_check", PASSED | {"triton": {"same": False}})
    got = settings()
    assert got["ablation"] == (
        "speed.cuda_graph=true speed.triton_cell=true speed.triton_update=false hydra.launcher.pad_hidden_to=auto"
    )
    assert got["table"] == (
        "speed.cuda_graph=true speed.triton_cell=false speed.triton_update=false hydra.launcher.pad_hidden_to=auto"
    )
    # the K = 5 check's own timing decides its Triton kernels (timed at K = 15, the ablation's would not count)
    assert got["ablation_seed"] == (
        "speed.cuda_graph=true speed.triton_cell=true speed.triton_update=true hydra.launcher.pad_hidden_to=auto"
    )
    write_check(work, "graph_check_k5", PASSED | {"padding": {"same": False, "padded": True}}, [{"members": 15}])
    assert settings()["ablation_seed"] == (
        "speed.cuda_graph=true speed.triton_cell=false speed.triton_update=false hydra.launcher.pad_hidden_to=1"
    )
    assert (work / "gpu.txt").read_text() == "NVIDIA H200 (the session that wrote these files)\n"
    assert not list((tmp_path / "out").iterdir())


STAND_IN_PYTHON = """#!/usr/bin/env bash
# gpu_check.sh's python for a test: the stacked sweep (through how_it_ended.py) exits $SWEEP_EXIT after making its
# folder; bench_stacked.py, bench_gemm_layouts.py, resume_check.py, rnnreg.report and reproduce.py only say they ran
# (resume_check.py exits $RESUME_CHECK_EXIT, 0 unless given), and so does the
# line of the machine's torch and Lightning versions (gpu.txt: an import of both, seconds, that no assertion reads);
# anything else is the real python
case "$1" in
    benchmarks/how_it_ended.py)
        for arg in "$@"; do [[ $arg == hydra.sweep.dir=* ]] && mkdir -p "${arg#hydra.sweep.dir=}"; done
        echo "how_it_ended: exit $SWEEP_EXIT"; exit "$SWEEP_EXIT" ;;
    benchmarks/bench_stacked.py|benchmarks/reproduce.py|benchmarks/bench_gemm_layouts.py) echo "ran $1"; exit 0 ;;
    benchmarks/resume_check.py) echo "ran $1"; exit "${RESUME_CHECK_EXIT:-0}" ;;
    -m) [[ $2 == rnnreg.report ]] && { echo "ran rnnreg.report"; exit 0; } ;;
    -c) [[ $2 == "import torch, lightning;"* ]] && { echo "torch and lightning: stand-in"; exit 0; } ;;
esac
exec "$REAL_PYTHON" "$@"
"""


def gpu_check_with_stand_in(tmp_path: Path, mode: str, sweep_exit: int = 0, **env: str) -> str:
    """gpu_check.sh MODE with the stand-in python (STAND_IN_PYTHON) in tmp_path/work, `env` added: its stages.txt."""
    python = tmp_path / "python"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    work = tmp_path / "work"
    env = (
        os.environ
        | {
            "WORK_DIR": str(work),
            "PYTHON": str(python),
            "REAL_PYTHON": sys.executable,
            "SWEEP_EXIT": str(sweep_exit),
        }
        | env
    )
    command = ["bash", str(BENCH / "gpu_check.sh"), str(tmp_path / "out"), mode]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (work / "stages.txt").read_text()


@pytest.mark.parametrize("sweep_exit,fallback", [(1, True), (0, False), (124, False), (143, False)])
def test_gpu_check_gives_the_time_left_to_the_large_model_when_the_sweep_crashed(tmp_path, sweep_exit, fallback):
    """gpu_check.sh ablation: a stacked sweep that crashed (a bug only a GPU shows) leaves its time to paper_large,
    read from the sweep's own exit status, not from the report stage after it; one that completed or stopped at its
    time limit (124, or its SIGTERM's 143) does not."""
    stages = gpu_check_with_stand_in(tmp_path, "ablation", sweep_exit)
    assert f"== ablation_full_stacked: exit {sweep_exit}" in stages and "== ablation_full_report: exit 0" in stages
    said = f"== the stacked sweep exited {sweep_exit}: paper_large in the time left"
    assert (said in stages, "== reproduce_large: exit 0" in stages) == (fallback, fallback)


@pytest.mark.parametrize("timed", [False, True], ids=["check_only", "timed"])
def test_gpu_check_times_once_and_again_when_cut_off_before_its_timing(tmp_path, timed):
    """gpu_check.sh ablation_seed's bf16_timing (after its sweep) runs once per machine: a JSON with its timing rows
    is done; one holding only its check (written first, the stage then cut off at its time limit) runs again."""
    (tmp_path / "work").mkdir()
    rows = [{"members": 15, "stacked_wps": 500_000.0}] if timed else []
    write_check(tmp_path / "work", "bench_stacked_bf16", {"captured": True, "same": True}, rows)
    stages = gpu_check_with_stand_in(tmp_path, "ablation_seed")
    assert "== ablation_seed_1234_stacked: exit 0" in stages
    assert ("== bf16_timing: exit 0" in stages) == (not timed)
    assert "stacked stacked_triton stacked_triton_update" in stages  # the graph check's kinds decide the update


@pytest.mark.parametrize("first_call", [False, True], ids=["fresh_machine", "warm_machine"])
def test_gpu_check_go_on_never_starts_a_sweep(tmp_path, first_call):
    """gpu_check.sh ablation_seed with GO_ON=1 (a second call): on a fresh machine (the first call's given back while
    idle, its files with it) neither the graph check nor the sweep starts, and the timings run; on the first call's
    machine, the sweep it stopped at its time limit goes on."""
    first = gpu_check_with_stand_in(tmp_path, "ablation_seed", 124) if first_call else ""
    again = gpu_check_with_stand_in(tmp_path, "ablation_seed", GO_ON="1")[len(first) :]
    assert ("== graph_check_k5 (t=" in again, "rnnreg.train" in again) == (False, first_call)
    assert ("not on this machine (GO_ON=1" in again) == (not first_call)
    assert ("hydra.launcher.resume=true" in again) == first_call
    assert "== bf16_timing (t=" in again and "== profile_padded (t=" in again
    assert "--kinds stacked stacked_triton stacked_triton_update" in again.split("== profile_padded (t=")[1]


@pytest.mark.parametrize("first_exit", [0, 124], ids=["completed", "at_its_time_limit"])
def test_gpu_check_called_again_goes_on_with_its_sweep_or_past_it(tmp_path, first_exit):
    """gpu_check.sh ablation_seed called again on the same machine: a sweep stopped at the first call's time limit goes
    on (hydra.launcher.resume=true); one that completed is not started again (its start-up, finding every job done,
    would be time for nothing) and the call goes on to the timings after it."""
    first = gpu_check_with_stand_in(tmp_path, "ablation_seed", first_exit)
    assert first.count("== ablation_seed_1234_stacked (t=") == 1 and "hydra.launcher.resume=false" in first
    again = gpu_check_with_stand_in(tmp_path, "ablation_seed")[len(first) :]
    assert ("== ablation_seed_1234_stacked: completed in an earlier call" in again) == (first_exit == 0)
    assert ("hydra.launcher.resume=true" in again) == (first_exit != 0)
    assert all(f"== {stage} (t=" in again for stage in ("bf16_timing", "profile_padded"))


@pytest.mark.parametrize("check_exit", [0, 1])
def test_gpu_check_resume_check_runs_once_a_machine_when_it_compared_every_case(tmp_path, check_exit):
    """gpu_check.sh ablation_seed ends with resume_check.py; a call again on the same machine runs it again only when
    it did not compare every case (it exits 1 then): its time goes to nothing a second time otherwise."""
    first = gpu_check_with_stand_in(tmp_path, "ablation_seed", RESUME_CHECK_EXIT=str(check_exit))
    assert f"== resume_check: exit {check_exit}" in first and "benchmarks/resume_check.py --out" in first
    assert (tmp_path / "work" / "resume_check.done").exists() == (check_exit == 0)
    again = gpu_check_with_stand_in(tmp_path, "ablation_seed")[len(first) :]
    assert ("== resume_check (t=" in again) == (check_exit != 0)


@pytest.fixture(scope="module")
def op_counts(ptb_dir, tmp_path_factory) -> dict:
    """count_ops.py's windows on the torch ops, bptt 4, 2 layers."""
    out = tmp_path_factory.mktemp("count_ops") / "ops.json"
    bench("count_ops.py", "--bptt", "4", "--layers", "2", "--out", str(out), data_dir=ptb_dir)
    return json.loads(out.read_text())["windows"]


def test_count_ops(op_counts):
    """count_ops.py counts a stacked window's device ops: each step and layer has its recurrent GEMMs (one
    forward, one backward) and elementwise work, and a mask site adds its draws."""
    windows = op_counts
    assert set(windows) == {"none", "non_recurrent", "five placements", "the paper-scale ablation (15)"}
    # one draw per site and member that drops there: 3 x (3 non-recurrent + 2 recurrent + 5 both + 5 variational)
    assert windows["the paper-scale ablation (15)"]["by_op"]["aten::bernoulli_"] == 3 * (3 + 2 + 5 + 5)
    none, five = windows["none"], windows["five placements"]
    assert none["by_op"]["aten::baddbmm"] >= 2 * 4 and none["ops"] > 2 * 4 * 6  # 2 layers x 4 steps: GEMM, cell
    assert "aten::bernoulli_" not in none["by_op"] and five["ops"] > windows["non_recurrent"]["ops"] > none["ops"]


@needs_triton
def test_count_ops_triton_cell(op_counts, ptb_dir, tmp_path):
    """With speed.triton_cell: per step and layer one cell kernel each way, no elementwise op of the cell's,
    the same mask draws."""
    windows, out = op_counts, tmp_path / "ops.json"
    bench("count_ops.py", "--bptt", "4", "--layers", "2", "--triton-cell", "--out", str(out), data_dir=ptb_dir)
    triton = json.loads(out.read_text())["windows"]
    for name, window in triton.items():
        ops = window["by_op"]
        assert ops["triton::cell_forward"] == ops["triton::cell_backward"] == 2 * 4, name
        assert not {"aten::sigmoid", "aten::tanh", "aten::addcmul"} & set(ops), name
        assert windows[name]["ops"] - window["ops"] >= 10 * 2 * 4, name  # 10 fewer a step and layer, at least
    assert triton["the paper-scale ablation (15)"]["by_op"]["aten::bernoulli_"] == 3 * (3 + 2 + 5 + 5)
