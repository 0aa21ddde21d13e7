"""rnnreg-report's figures and tables, from run folders written by hand as Hydra and the CSV logger write them
(.hydra/config.yaml, overrides.yaml, hydra.yaml, metrics.json, csv/metrics.csv)."""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import struct
import time
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.colors import to_hex
from omegaconf import DictConfig, OmegaConf, open_dict

from helpers import BIN, TINY, ctrl_c_group, piped, run, strict_json
from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError, DataError, OutputError
from rnnreg.io import write_json_atomic
from rnnreg.job_records import JobFailed, failed_jobs, record_job_stopped, report_failed_job
from rnnreg.multirun_jobs import inside_job
from rnnreg.report import report, written_files
from rnnreg.report_commands import resume_command
from rnnreg.report_figures import (
    PLACEMENT_COLOURS,
    configurations,
    figure_test_ppl,
    figure_val_ppl,
    log_ticks,
    paper_size_of,
)
from rnnreg.report_runs import collect, find_runs
from rnnreg.report_tables import PAIRED_COLUMNS, RUN_COLUMNS
from rnnreg.run_lock import RunLock
from rnnreg.sweep import SweepCallback

PAPER = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "report.yaml").paper)
# The placement ablation as run (README): test perplexity per seed (1234, 1, 2)
ABLATION = {
    "none": (467.53, 417.26, 456.16),
    "non_recurrent": (409.28, 404.40, 402.89),
    "recurrent": (435.78, 431.69, 428.12),
    "both": (402.56, 416.60, 417.16),
    "variational": (411.66, 417.65, 408.50),
}
TOY = {"max_epochs": 6, "limit_train_batches": 80, "limit_val_batches": 40}
FULL_MEDIUM = {"max_epochs": 39, "limit_train_batches": None, "limit_val_batches": None}
# report() with its figures as PNG only: the tests of the tables and commands draw every figure still, and leave the
# PDFs (each report's PDFs take as long as its PNGs) to the tests of the formats
png_report = functools.partial(report, formats=("png",))


def write_job(
    job: Path, overrides: list[str], choices: dict, trainer: dict, test_ppl: float | None, epochs: int = 6
) -> None:
    """One job folder as Hydra, the CSV logger and rnnreg-train leave it; test_ppl None: the job crashed."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "mode": "MULTIRUN",
                    "runtime": {
                        "choices": {
                            "hydra/launcher": "basic",
                            "dropout": "non_recurrent",
                            "model": "medium",
                            "data": "ptb",
                        }
                        | choices
                    },
                }
            }
        )
    )
    config = {
        "seed": 1,
        "trainer": {"max_epochs": epochs} | trainer,
        "model": {"hidden_size": 650, "num_layers": 2},  # the medium model on PTB, as paper_medium
        "data": {"batch_size": 20, "bptt": 35},
    }
    for override in overrides:  # a key the config holds has the value its override gave it, as Hydra records it
        key, _, value = override.lstrip("+").partition("=")
        section, _, leaf = key.partition(".")
        if isinstance(config.get(section), dict) and leaf in config[section]:
            config[section][leaf] = yaml.safe_load(value)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    final = test_ppl if test_ppl is not None else 900.0
    val = [final * (1.0 + 1.2 * math.exp(-0.8 * e)) + 5 for e in range(epochs if test_ppl is not None else 2)]
    (job / "csv").mkdir()
    lines = ["epoch,step,train/loss,val/ppl"]
    for epoch, ppl in enumerate(val):
        lines += [f"{epoch},{epoch * 80 + 49},6.1,", f"{epoch},{epoch * 80 + 79},,{ppl}"]
    (job / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    if test_ppl is not None:
        (job / "metrics.json").write_text(
            json.dumps(
                {
                    "val_ppl": val[-1],
                    "best_val_ppl": min(val),
                    "test_ppl": test_ppl,
                    "test_ppl_batched": test_ppl + 0.1,
                    "epochs": epochs,
                    "train_seconds": 210.0,
                    "words_per_second": 1800.0,
                    "status": "completed",
                }
            )
        )


def ablation(
    root: Path, placements: dict = ABLATION, experiment: str = "ablation_placement", trainer: dict = TOY
) -> Path:
    """A multirun of experiment=<experiment> over placements x seeds, jobs numbered as Hydra numbers them."""
    job = 0
    for placement, tests in placements.items():
        for seed, test in zip((1234, 1, 2), tests):
            write_job(
                root / str(job),
                [f"dropout={placement}", f"seed={seed}"],
                {"dropout": placement, "experiment": experiment},
                trainer,
                test,
                epochs=trainer["max_epochs"],
            )
            job += 1
    return root


def colours(ax) -> dict[str, str]:
    """label -> colour of each configuration's line or marker in a figure's axes."""
    found = {
        line.get_label(): to_hex(line.get_color())
        for line in ax.get_lines()
        if not line.get_label().startswith(("_", "paper"))
    }
    for container in ax.containers:  # errorbar: the marker line
        found[container.get_label()] = to_hex(container.lines[0].get_color())
    return found


def test_report_writes_png_and_pdf_figures(tmp_path):
    root = ablation(tmp_path / "sweep")
    table = report(root, PAPER)
    assert "Over seeds:" in table and (root / "report.md").read_text() == table
    for name in ("val_ppl", "test_ppl"):
        image = matplotlib.image.imread(root / f"{name}.png")
        assert image.ndim == 3 and image.shape[1] >= 6 * 200  # >= 200 dpi on a figure >= 6 inches wide
        assert (root / f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_a_path_that_is_no_folder_says_what_it_is(tmp_path):
    """path= a file, or nothing at all: one line that says which (before: "is not a folder" for both)."""
    (tmp_path / "metrics.json").write_text("{}\n")
    for path, what in ((tmp_path / "metrics.json", "is a file, not a folder"), (tmp_path / "gone", "does not exist")):
        with pytest.raises(ConfigError, match=f"^path={re.escape(str(path))} {what}: give a run or multirun folder"):
            report(path)
    assert not (tmp_path / "gone").exists()


def test_formats_writes_the_figures_asked_for_and_removes_an_earlier_reports_others(tmp_path):
    """formats=[png] writes each figure as PNG only, and removes the PDFs an earlier report left (they would show the
    runs as they were then); a PDF that is a link goes, not what it points at; formats=[] writes the tables alone; a
    format it cannot write is one line, exit 2, and the folder as it was."""
    root = ablation(tmp_path / "sweep", {"none": (450.0, 440.0), "recurrent": (430.0, 431.0)})
    run("rnnreg-report", f"path={root}")
    figures = {f"{name}.{ext}" for name in ("val_ppl", "test_ppl") for ext in ("png", "pdf")}
    assert figures <= set(os.listdir(root))
    (root / "test_ppl.pdf").unlink()
    (tmp_path / "mine.pdf").write_text("mine\n")
    (root / "test_ppl.pdf").symlink_to(tmp_path / "mine.pdf")
    before = (root / "val_ppl.png").stat().st_mtime_ns
    proc = run("rnnreg-report", f"path={root}", "formats=[png]")
    assert proc.stdout.splitlines()[-1] == (
        f"removed {root / 'val_ppl.pdf'}, {root / 'test_ppl.pdf'}: an earlier report's, in a format not asked for "
        "(formats=[png])"
    )
    wrote = proc.stdout.splitlines()[-2]
    assert wrote.endswith(f"summary.tex, {root / 'val_ppl.png'}, {root / 'test_ppl.png'}") and ".pdf" not in wrote
    assert not list(root.glob("*.pdf")) and (tmp_path / "mine.pdf").read_text() == "mine\n"
    assert (root / "val_ppl.png").stat().st_mtime_ns > before  # (redrawn, not left)
    assert matplotlib.image.imread(root / "test_ppl.png").ndim == 3
    kept = {name: (root / name).read_bytes() for name in os.listdir(root) if (root / name).is_file()}
    listed, written = set(os.listdir(root)), {name: (root / name).stat().st_mtime_ns for name in kept}
    given = (
        ("[png,svg]", "[png,svg]"),
        ("jpg", "jpg"),
        ("null", "null"),
        ("'png,pdf'", "'png,pdf'"),
        ("[PNG]", "[PNG]"),
    )
    for bad, shown in (*given, ("[svg] --cfg job", "[svg]")):  # (its value shown as given; checked before --cfg too)
        proc = run("rnnreg-report", f"path={root}", *f"formats={bad}".split(), check=False)
        assert proc.returncode == 2 and proc.stdout == "", bad
        assert proc.stderr == (
            f"error: formats={shown}: the figures' formats are png and pdf: give formats=[png,pdf], formats=[png] or "
            "formats=[] (no figures)\n"
        )
        assert {name: (root / name).read_bytes() for name in kept} == kept and set(os.listdir(root)) == listed
        assert {name: (root / name).stat().st_mtime_ns for name in kept} == written  # (nothing written again)
    png_report(root)  # (a caller of report() passes a tuple)
    assert not list(root.glob("*.pdf")) and len(list(root.glob("*.png"))) == 2
    report(root, formats="pdf")  # (one format as a word, as formats=pdf gives it)
    assert not list(root.glob("*.png")) and len(list(root.glob("*.pdf"))) == 2
    (root / "val_ppl.png").mkdir()  # a report that cannot write its figures keeps the earlier report's
    with pytest.raises(
        OutputError, match=r"^could not write val_ppl\.png in .*: Is a directory; move the folder val_ppl\.png away"
    ):
        report(root, formats=["png"])
    assert len(list(root.glob("*.pdf"))) == 2
    (root / "val_ppl.png").rmdir()
    markdown = report(root, formats=())
    assert (root / "report.md").read_text() == markdown and not list(root.glob("*_ppl.*"))
    assert (root / "summary.csv").is_file() and (root / "summary.tex").is_file()


def test_a_placement_has_one_colour_in_every_figure_and_report(tmp_path):
    first = collect(ablation(tmp_path / "a"))
    # another report: other placements, in another order, with a rate swept beside them
    other = tmp_path / "b"
    for job, (placement, rate) in enumerate([("variational", 0.3), ("none", 0.5), ("variational", 0.5)]):
        write_job(
            other / str(job),
            [f"dropout={placement}", f"dropout.p={rate}"],
            {"dropout": placement},
            TOY,
            420.0 + job,
        )
    second = collect(other)
    seen: dict[str, set] = {}
    for rows in (first, second):
        for make in (figure_val_ppl, figure_test_ppl):
            found = colours(make(rows, PAPER).axes[0])
            assert len(found) == len(configurations(rows))
            for e in configurations(rows):
                seen.setdefault(e["placement"], set()).add(found[e["label"]])
    assert {p: c.pop() for p, c in seen.items() if len(c) == 1} == {p: PLACEMENT_COLOURS[p].lower() for p in seen}
    assert len(set(PLACEMENT_COLOURS.values())) == len(PLACEMENT_COLOURS)  # no two placements alike
    # in PLACEMENT_COLOURS' order, whatever order the jobs ran in (variational's job came first)
    assert [e["placement"] for e in configurations(second)] == ["none", "variational", "variational"]
    # configurations of one placement that differ in the rate: the same colour, another marker and line
    variational = [e for e in configurations(second) if e["placement"] == "variational"]
    assert [e["label"] for e in variational] == ["variational, p=0.3", "variational, p=0.5"]
    assert variational[0]["marker"] != variational[1]["marker"]
    assert variational[0]["linestyle"] != variational[1]["linestyle"]


def test_test_axis_spans_the_data_not_zero(tmp_path):
    rows = collect(ablation(tmp_path))
    ax = figure_test_ppl(rows, PAPER).axes[0]
    lo, hi = ax.get_xlim()
    tests = [t for ts in ABLATION.values() for t in ts]
    assert min(tests) - 0.2 * (max(tests) - min(tests)) < lo < min(tests) and hi > max(tests)
    # horizontal labels, one per configuration, placement first
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == list(ABLATION) and all(t.get_rotation() == 0 for t in ax.get_yticklabels())
    # the first configuration on top, the rest below it in order (as the legend and the table list them)
    heights = [ax.transData.transform((lo, y))[1] for y in ax.get_yticks()]
    assert heights == sorted(heights, reverse=True)


def test_each_error_bar_of_the_test_figure_lies_whole_inside_its_axis(tmp_path):
    """Two seeds far apart (a budget of a few windows): each configuration's bar, mean ± sd, ends inside the x axis
    at both sides, caps drawn (before: the axis began at the lowest seed, and a bar reaching below it was cut at the
    axis, its cap hidden, a narrower spread than the sd drawn), on a linear axis and on a log one."""
    for name, tests in (("linear", {"none": (420.0, 480.0), "recurrent": (440.0, 445.0)}), ("log", TWO_SEEDS_APART)):
        ax = figure_test_ppl(collect(ablation(tmp_path / name, tests)), PAPER).axes[0]
        lo, hi = ax.get_xlim()
        assert (ax.get_xscale() == "log") == (name == "log")
        for placement, seeds in tests.items():
            mean, sd = statistics.mean(seeds), statistics.stdev(seeds)
            assert lo < mean - sd and mean + sd < hi, (name, placement, lo, mean - sd)


# test perplexities of two seeds of 3 windows' training (a real sweep's): a log axis, the bars wide
TWO_SEEDS_APART = {"none": (7468.86, 18348.69), "non_recurrent": (8049.75, 15438.20), "recurrent": (10508.13, 6940.14)}


def test_interval_names_its_statistic_and_seeds(tmp_path):
    ax = figure_test_ppl(collect(ablation(tmp_path / "three")), PAPER).axes[0]
    assert "mean ± sample sd over 3 seeds" in ax.get_xlabel()
    # the error bar is that sd, the dots each seed
    bar = next(c for c in ax.containers if c.get_label() == "non_recurrent")
    segment = bar.lines[2][0].get_segments()[0]
    assert segment[1][0] - segment[0][0] == pytest.approx(2 * statistics.stdev(ABLATION["non_recurrent"]))
    assert sorted(ax.collections[-1].get_offsets()[:, 0]) == sorted(ABLATION["variational"])
    one = ax = figure_test_ppl(collect(ablation(tmp_path / "one", {p: t[:1] for p, t in ABLATION.items()})), PAPER)
    ax = one.axes[0]
    assert "one seed" in ax.get_xlabel() and "sd" not in ax.get_xlabel()
    assert all(c.has_xerr is False for c in ax.containers)


def test_the_mean_written_beside_each_configuration_is_its_mean_over_seeds(tmp_path):
    """The number written beside each point of the test figure is the configuration's mean over its seeds (the
    point's own value), not one seed's perplexity, to two decimals as the table writes it (at one, 18.78 and 18.81
    read alike)."""
    ax = figure_test_ppl(collect(ablation(tmp_path)), PAPER).axes[0]
    assert [t.get_text() for t in ax.texts] == [f"{statistics.mean(tests):.2f}" for tests in ABLATION.values()]


def test_the_seeds_of_a_configuration_that_did_not_complete_are_told_apart_in_the_legend(tmp_path):
    """Runs that did not complete are drawn each alone (no mean over seeds): each legend entry names its seed."""
    for job, seed in enumerate((1, 2, 3)):
        write_job(tmp_path / str(job), ["dropout=recurrent", f"seed={seed}"], {"dropout": "recurrent"}, TOY, None)
    legend = figure_val_ppl(collect(tmp_path), PAPER).axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [f"recurrent, seed={seed} (unfinished)" for seed in (1, 2, 3)]


def test_configurations_run_with_one_seed_and_with_several_say_the_range_of_seeds(tmp_path):
    """A test figure mixing a configuration of 3 seeds with one of a single seed still names its statistic, over
    1–3 seeds (n per row): the 3 seeds' point is a mean with a sample sd, whatever the other row has."""
    ax = figure_test_ppl(collect(ablation(tmp_path, {"none": ABLATION["none"], "recurrent": (430.0,)})), PAPER).axes[0]
    assert "point: mean ± sample sd over 1–3 seeds (n per row)" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["none (n=3)", "recurrent (n=1)"]


def test_paper_lines_only_beside_the_paper_recipe_in_full(tmp_path):
    def paper_lines(figure) -> list[str]:
        return [line.get_label() for line in figure.axes[0].get_lines() if line.get_label().startswith("paper")]

    full = collect(ablation(tmp_path / "full", experiment="ablation_placement_full", trainer=FULL_MEDIUM))
    assert paper_lines(figure_test_ppl(full, PAPER)) == ["paper medium (non_recurrent): 82.7"]
    assert paper_lines(figure_val_ppl(full, PAPER)) == ["paper medium (non_recurrent): 86.2"]
    assert figure_test_ppl(full, PAPER).axes[0].get_xlim()[0] < 82.7  # the line is inside the axis
    toy = collect(ablation(tmp_path / "toy"))
    assert paper_lines(figure_test_ppl(toy, PAPER)) == [] and paper_lines(figure_val_ppl(toy, PAPER)) == []
    # experiment=paper_medium but a shorter or limited budget is not the paper's recipe
    short = collect(
        ablation(tmp_path / "short", {"non_recurrent": (100.0,)}, "paper_medium", FULL_MEDIUM | {"max_epochs": 6})
    )
    limited = collect(
        ablation(
            tmp_path / "limited", {"non_recurrent": (100.0,)}, "paper_medium", FULL_MEDIUM | {"limit_val_batches": 40}
        )
    )
    assert paper_lines(figure_test_ppl(short, PAPER)) == paper_lines(figure_test_ppl(limited, PAPER)) == []
    assert paper_size_of(full[0], PAPER) == "medium" and paper_size_of(toy[0], PAPER) is None
    # a limit of the fraction 1.0 leaves every batch in; the count 1 is one batch (of the test split too: before, a
    # cut test was set beside the paper's)
    for limit, size in ((1.0, "medium"), (1, None)):
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            (row,) = collect(
                ablation(tmp_path / f"{key}{limit!r}", {"none": (100.0,)}, "paper_medium", FULL_MEDIUM | {key: limit})
            )
            assert paper_size_of(row, PAPER) == size, (key, limit)
    # model=medium over experiment=paper_small is no recipe of the paper's (small's dropout, medium's size)
    (mixed,) = collect(ablation(tmp_path / "mixed", {"none": (100.0,)}, "paper_small", FULL_MEDIUM))
    assert mixed["model"] == "medium" and paper_size_of(mixed, PAPER) is None
    assert paper_size_of(full[0], None) is None


def test_paper_lines_only_beside_a_completed_run_of_the_paper_recipe(tmp_path):
    """Runs of the paper's full recipe that have not completed (unfinished: no metrics.json) have validation
    curves but no final perplexity to set beside the paper's: no paper line in either figure."""

    def paper_lines(figure) -> list[str]:
        return [line.get_label() for line in figure.axes[0].get_lines() if line.get_label().startswith("paper")]

    unfinished = {"non_recurrent": (None, None, None)}
    rows = collect(ablation(tmp_path, unfinished, experiment="ablation_placement_full", trainer=FULL_MEDIUM))
    assert {r["status"] for r in rows} == {"unfinished"} and paper_size_of(rows[0], PAPER) == "medium"
    curves = [line.get_label() for line in figure_val_ppl(rows, PAPER).axes[0].get_lines()]
    drawn = [c for c in curves if not c.startswith("paper")]
    assert drawn == [f"non_recurrent, seed={seed} (unfinished)" for seed in (1234, 1, 2)]
    assert paper_lines(figure_val_ppl(rows, PAPER)) == paper_lines(figure_test_ppl(rows, PAPER)) == []


def test_a_configurations_validation_curve_is_its_seeds_mean_within_their_range(tmp_path):
    """Each epoch of a configuration's validation curve is the mean of its seeds' perplexities there, inside a
    band from their lowest to their highest (not one seed's curve, not a band of no width)."""
    rows = collect(ablation(tmp_path, {"none": ABLATION["none"]}))
    curves = [r["val_history"] for r in rows]
    epochs = sorted(curves[0])
    ax = figure_val_ppl(rows, PAPER).axes[0]
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == epochs
    assert list(line.get_ydata()) == pytest.approx([statistics.mean(c[e] for c in curves) for e in epochs])
    (band,) = ax.collections
    edges = band.get_paths()[0].vertices
    for epoch in epochs:
        low, high = min(c[epoch] for c in curves), max(c[epoch] for c in curves)
        assert low < high and sorted({y for x, y in edges if x == epoch}) == pytest.approx([low, high]), epoch
    # two seeds have their band too; one seed is its line alone
    for seeds, bands in ((2, 1), (1, 0)):
        ax = figure_val_ppl(
            collect(ablation(tmp_path / f"seeds{seeds}", {"none": ABLATION["none"][:seeds]})), PAPER
        ).axes[0]
        assert len(ax.collections) == bands, seeds


def test_validation_axis_has_readable_ticks(tmp_path):
    ax = figure_val_ppl(collect(ablation(tmp_path)), PAPER).axes[0]
    ax.figure.canvas.draw()
    labelled = [
        t for t in ax.get_yticklabels() if t.get_text() and ax.get_ylim()[0] <= t.get_position()[1] <= ax.get_ylim()[1]
    ]
    assert len(labelled) >= 4 and all(float(t.get_text()) > 0 for t in labelled)  # plain numbers, no 10^k
    assert all(float(t.get_text()) == int(float(t.get_text())) for t in ax.get_xticklabels() if t.get_text())
    assert "mean over 3 seeds" in ax.get_legend().get_title().get_text()
    assert "shaded: min–max over seeds" in ax.get_legend().get_title().get_text()
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1  # beside the axes, not over the data


def test_a_one_epoch_validation_figure_has_whole_epoch_ticks_and_each_seeds_range_beside_the_others(tmp_path):
    """Runs of one epoch: the epoch axis is labelled 1 alone (matplotlib's integer ticks want two integers in view
    and fell back to 0.945, 0.96, ...), each configuration's point set apart from the others' around that tick (they
    hid one another), its seeds' range drawn as a bar (a band over one epoch has no width: the legend promised a
    shaded range that was not there), the legend naming each point and saying what the bar is."""
    one_epoch = {"max_epochs": 1, "limit_train_batches": 80, "limit_val_batches": 40}
    placements = {"none": ABLATION["none"][:2], "recurrent": ABLATION["recurrent"][:2]}
    rows = collect(ablation(tmp_path, placements, trainer=one_epoch))
    ax = figure_val_ppl(rows, PAPER).axes[0]
    ax.figure.canvas.draw()
    low, high = ax.get_xlim()
    shown = [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]
    assert shown == ["1"]
    points = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
    assert list(points) == ["none", "recurrent"] and len(set(points.values())) == 2
    assert all(abs(x - 1) < 0.25 and low < x < high for x in points.values())
    for (label, x), bar in zip(points.items(), ax.collections):
        seeds = [r["val_history"][1] for r in rows if r["placement"] == label]
        ((bottom, top),) = [sorted(y for _, y in segment) for segment in bar.get_segments()]
        assert bar.get_segments()[0][0][0] == x and (bottom, top) == pytest.approx((min(seeds), max(seeds))), label
    title = ax.get_legend().get_title().get_text()
    assert "bar: min–max over seeds" in title and "shaded" not in title
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["none", "recurrent"]


@pytest.mark.parametrize("lo, hi", [(103.5, 203.0), (98.0, 125.0), (400.0, 1000.0), (80.0, 1200.0), (75.0, 180.0)])
def test_validation_axis_labels_the_bottom_where_the_curves_end(lo, hi):
    """The final perplexities sit at the bottom of the validation axis: a labelled tick within its lowest
    15 % (the small recipe's 103.5-203 once had none below 120)."""
    ticks = log_ticks(lo, hi)
    assert len(ticks) >= 4 and all(lo <= t <= hi for t in ticks)
    # spread on the log scale: no two labels closer than a tenth of the axis (80-1200 has 18 round values)
    assert all(math.log(b / a) >= math.log(hi / lo) / 10 for a, b in zip(ticks, ticks[1:])), ticks
    assert math.log(ticks[0] / lo) <= 0.15 * math.log(hi / lo)


def test_jobs_not_completed_listed_and_left_out_of_the_test_figure(tmp_path):
    """A job whose metrics.json says failed is failed; one without metrics.json is running while a live process
    holds its folder (or its stacked sweep's), else unfinished, with the command that goes on from what it left."""
    root = ablation(tmp_path, {"none": (450.0,), "recurrent": (430.0,)})
    write_job(tmp_path / "2", ["dropout=both"], {"dropout": "both"}, TOY, None)
    failed = {"status": "failed", "error": "training loss became nan at epoch 1, step 5", "epochs": 0}
    (tmp_path / "2" / "metrics.json").write_text(json.dumps(failed))
    write_job(tmp_path / "3", ["dropout=variational"], {"dropout": "variational"}, TOY, None)
    (tmp_path / "3" / "checkpoints").mkdir()
    (tmp_path / "3" / "checkpoints" / "last.ckpt").write_bytes(b"")
    write_job(tmp_path / "4", ["dropout=weight_drop"], {"dropout": "weight_drop"}, TOY, None)
    with RunLock(tmp_path / "4"):  # a live run's folder
        table = png_report(root, PAPER)
    assert "| 2 | dropout=both | failed |" in table
    assert "| 3 | dropout=variational | unfinished |" in table and "| 4 | dropout=weight_drop | running |" in table
    assert table.endswith(
        f"how each goes on\n\n- 3 (unfinished): `rnnreg-train dropout=variational "
        f"ckpt_path={tmp_path / '3' / 'checkpoints' / 'last.ckpt'}`\n"
    )
    assert png_report(root, PAPER).count("| unfinished |") == 2  # the lock released: no process holds job 4
    labels = [t.get_text() for t in figure_test_ppl(collect(root), PAPER).axes[0].get_yticklabels()]
    assert labels == ["none", "recurrent"]
    lines = colours(figure_val_ppl(collect(root), PAPER).axes[0])
    assert {"both (failed)", "variational (unfinished)", "weight_drop (unfinished)"} <= set(lines)


def test_a_non_finite_perplexity_is_written_as_null_and_reported_as_none(tmp_path):
    """metrics.json (rnnreg.io) writes a NaN or infinite number as null, nested ones too (before: a bare NaN or
    Infinity, which strict readers refuse); rnnreg-report shows it as — and leaves it out of the test figure."""
    root = ablation(tmp_path, {"none": (450.0,), "recurrent": (430.0,)})
    metrics = json.loads((root / "1" / "metrics.json").read_text())
    write_json_atomic(
        root / "1" / "metrics.json",
        metrics | {"test_ppl": math.inf, "test_ppl_batched": math.nan, "stacked": {"spread": [-math.inf, 1.5]}},
    )
    written = strict_json((root / "1" / "metrics.json").read_text())
    assert written == metrics | {"test_ppl": None, "test_ppl_batched": None, "stacked": {"spread": [None, 1.5]}}
    row = next(line for line in png_report(root, PAPER).splitlines() if line.startswith("| 1 |"))
    assert row.split(" | ")[2:6] == ["completed", f"{metrics['best_val_ppl']:.2f}", "—", "—"]
    labels = [t.get_text() for t in figure_test_ppl(collect(root), PAPER).axes[0].get_yticklabels()]
    assert labels == ["none"]


def test_an_unfinished_runs_command_goes_on_from_its_last_checkpoint(tmp_path):
    """The go-on command is the job's own overrides as one run, ready to paste: an earlier ckpt_path (the job was
    itself a resumed run) replaced by its own last.ckpt, a value with brackets or spaces quoted for the shell."""
    overrides = ["experiment=paper_small", "seed=2", "ckpt_path=/old/run/checkpoints/last.ckpt", "tags=[a, b]"]
    write_job(tmp_path / "run", overrides, {}, TOY, None)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    command = resume_command(tmp_path / "run")
    assert command == f"rnnreg-train experiment=paper_small seed=2 'tags=[a, b]' ckpt_path={last}"
    assert shlex.split(command)[1:] == [*overrides[:2], overrides[3], f"ckpt_path={last}"]


def test_a_run_stopped_in_its_final_test_is_tested_in_its_folder_or_by_rnnreg_eval_on_its_corpus(tmp_path):
    """A run interrupted in its final test, its training completed (metrics.json's `tested`): where its record of
    that training was kept (`trained`) the test completes it in its folder (its overrides, ckpt_path=last, its own
    folder, hydra.mode=RUN); a record from before that was kept is tested by rnnreg-eval on the run's own corpus
    (its data overrides: rnnreg-eval reads PTB otherwise), never by a training command that would train again."""
    overrides = ["data=text", "data.data_dir=/corpora/mine", "dropout=none"]
    for job, trained in (("0", {"epochs": 6}), ("1", None)):
        write_job(tmp_path / job, [*overrides, f"seed={job}"], {}, TOY, None)
        best = tmp_path / job / "checkpoints" / "best.ckpt"
        record = {"status": "interrupted", "epochs": 6, "tested": str(best)} | ({"trained": trained} if trained else {})
        (tmp_path / job / "metrics.json").write_text(json.dumps(record))
    table = png_report(tmp_path)
    in_folder = (
        f"rnnreg-train {' '.join(overrides)} seed=0 ckpt_path=last hydra.run.dir={tmp_path / '0'} hydra.mode=RUN"
    )
    assert f"- 0 (interrupted): its training completed: test it in its folder with: `{in_folder}`\n" in table
    evaluate = f"rnnreg-eval data=text data.data_dir=/corpora/mine ckpt_path={tmp_path / '1' / 'checkpoints'}/best.ckpt"
    assert f"- 1 (interrupted): its training completed: test it with: `{evaluate}`\n" in table


def test_stacked_runs_speeds_are_said_to_be_their_groups(tmp_path):
    """A report that shows runs of a stacked sweep says that their train s and words/s are their group's, not each
    run's alone (found by a probe: beside runs trained alone they read as slower); a report of none says nothing."""
    for job, launcher in enumerate(("stacked", "stacked", "basic")):
        write_job(tmp_path / str(job), [f"seed={job + 1}"], {"hydra/launcher": launcher}, TOY, 100.0 + job)
    note = (
        "- 0, 1 trained in stacked sweeps (hydra/launcher=stacked): their train s and words/s are their group's, whose "
        "members trained as one program, not each run's alone\n"
    )
    assert note in png_report(tmp_path, PAPER)
    assert "stacked sweeps" not in png_report(tmp_path / "2", PAPER)


def test_a_stacked_studys_unfinished_members_go_on_by_its_launcher_not_as_trials_outside_it(tmp_path):
    """Members of an Optuna study run by the stacked launcher (hydra.yaml names Optuna's sweeper) go on by the
    launcher's resume switch, as any stacked sweep's: the line for a basic launcher's trials (which go on in their
    folders, outside their study) is not theirs."""
    sweep = tmp_path / "study"
    for job, p in enumerate(("0.3", "0.5")):
        write_job(sweep / str(job), [f"dropout.p={p}"], {"hydra/launcher": "stacked"}, TOY, None)
        record = yaml.safe_load((sweep / str(job) / ".hydra" / "hydra.yaml").read_text())
        record["hydra"]["sweeper"] = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
        (sweep / str(job) / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(record))
    assert png_report(sweep, PAPER).endswith(
        "how each goes on\n\n"
        f"- 0, 1: the stacked sweep goes on with `rnnreg-train -m ... hydra/launcher=stacked "
        f"hydra.launcher.resume=true hydra.sweep.dir={sweep}` (from the start: no epoch had ended)\n"
    )


def test_a_sweeps_job_stopped_before_its_first_checkpoint_runs_again_in_a_new_folder_its_own_holding_a_result(
    tmp_path,
):
    """A basic sweep's job that a signal stopped before its first checkpoint wrote its metrics.json (interrupted):
    run again, it starts over, which its own folder refuses (it holds a result): its command runs it in a new folder;
    a job that left no result runs again in its own."""
    sweep = tmp_path / "sweep"
    basic_sweep_record(sweep, ["seed=1,2"])
    for job in (0, 1):
        write_job(sweep / str(job), [f"seed={job + 1}"], {}, TOY, None)
    (sweep / "0" / "metrics.json").write_text(json.dumps({"status": "interrupted", "error": "SIGTERM", "epochs": 0}))
    assert png_report(sweep, PAPER).endswith(
        "how each goes on\n\n"
        "- 0 (interrupted): no checkpoint was written: run it again, `rnnreg-train seed=1`\n"
        f"- 1 (unfinished): no checkpoint was written: run it again, `rnnreg-train seed=2 hydra.run.dir={sweep / '1'} "
        "hydra.mode=RUN`\n"
    )


def test_a_study_trials_folder_copied_out_of_its_study_goes_on_as_a_run_of_its_own(tmp_path):
    """An Optuna trial's folder outside its study's numbered folders (copied or linked out under a name) is no
    trial its study's report reads: it goes on from its last.ckpt in a new folder, with no line about its study."""
    trial = tmp_path / "best_trial"
    write_job(trial, ["dropout.p=0.41"], {}, TOY, None)
    record = yaml.safe_load((trial / ".hydra" / "hydra.yaml").read_text())
    record["hydra"]["sweeper"] = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
    (trial / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(record))
    (trial / "metrics.json").write_text(json.dumps({"status": "interrupted", "error": "SIGTERM", "epochs": 1}))
    (trial / "checkpoints").mkdir()
    (trial / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert png_report(trial, PAPER).endswith(
        "how each goes on\n\n"
        f"- best_trial (interrupted): `rnnreg-train dropout.p=0.41 ckpt_path={trial / 'checkpoints' / 'last.ckpt'}`\n"
    )


def test_a_run_in_a_sweeps_folder_under_a_name_of_its_own_is_no_job_of_the_sweep(tmp_path):
    """A run given a folder by name inside a basic sweep's folder (hydra.run.dir=<sweep>/rerun) is none of the jobs
    the sweep numbered: it runs again in a new folder, as a run of its own, not in that folder."""
    sweep = tmp_path / "sweep"
    basic_sweep_record(sweep, ["seed=1"])
    write_job(sweep / "0", ["seed=1"], {}, TOY, 440.0)
    write_job(sweep / "rerun", ["seed=1", "dropout=none"], {}, TOY, None)
    assert png_report(sweep, PAPER).endswith(
        "how each goes on\n\n- rerun (unfinished): no checkpoint was written: run it again, "
        "`rnnreg-train seed=1 dropout=none`\n"
    )


def test_a_stacked_sweep_whose_resume_folder_holds_no_groups_file_goes_on_from_the_start(tmp_path):
    """A stacked sweep killed before any group's epoch ended, its .stacked folder made but no group_<k>.pt in it (or
    only another file): its resume starts each group from the start, as the report says."""
    sweep = tmp_path / "sweep"
    for job, placement in enumerate(("non_recurrent", "recurrent")):
        write_job(sweep / str(job), [f"dropout={placement}"], {"hydra/launcher": "stacked"}, TOY, None)
    (sweep / ".stacked").mkdir()
    (sweep / ".stacked" / "notes.txt").write_text("not a group's resume file\n")
    assert png_report(sweep, PAPER).endswith(f"hydra.sweep.dir={sweep}` (from the start: no epoch had ended)\n")


def test_a_resumed_run_stopped_before_its_first_checkpoint_goes_on_from_the_checkpoint_it_resumed_from(tmp_path):
    """The console's go-on line of a resumed run a signal stopped before it wrote a checkpoint of its own
    (training.kept_checkpoint gives the one it resumed from): the command goes on from that checkpoint, not from the
    last.ckpt its folder lacks."""
    write_job(tmp_path / "run", ["seed=2", "ckpt_path=/old/run/checkpoints/last.ckpt"], {}, TOY, None)
    earlier = Path("/old/run/checkpoints/last.ckpt")
    assert resume_command(tmp_path / "run", earlier) == f"rnnreg-train seed=2 ckpt_path={earlier}"


def test_a_recorded_override_that_makes_hydra_build_something_is_never_a_command_to_paste(tmp_path):
    """A run folder from someone else records the overrides its go-on command repeats: one naming a class or function
    for Hydra to build (`+callbacks.x._target_=torch.load` of a pickle beside it runs that pickle's code when the
    pasted command starts) gives no command, but the override and the record to read."""
    payload = ["+callbacks.x._target_=torch.load", "+callbacks.x.f=/shared/notes.pt", "+callbacks.x.weights_only=false"]
    write_job(tmp_path / "run", ["experiment=paper_small", *payload], {}, TOY, None)
    (line,) = [line for line in png_report(tmp_path, PAPER).splitlines() if line.startswith("- run (")]
    record = tmp_path / "run" / ".hydra" / "overrides.yaml"
    assert line == (
        f"- run (unfinished): no checkpoint was written: run it again, no command shown: its record ({record}) has "
        "`+callbacks.x._target_=torch.load`, which makes Hydra build or call what it names; read the record before "
        "running it again"
    )


def test_a_mapping_naming_what_hydra_builds_is_never_a_command_to_paste_either(tmp_path):
    """The same through a mapping given whole (`+callbacks.x={_target_:os.system,_args_:[id]}`, a form rnnreg-train
    takes): no command (before: only the override's key was read, and the command was shown)."""
    payload = "+callbacks.x={_target_:os.system,_args_:[id]}"
    write_job(tmp_path / "run", ["experiment=paper_small", payload, "tags=[_x_]"], {}, TOY, None)
    (line,) = [line for line in png_report(tmp_path, PAPER).splitlines() if line.startswith("- run (")]
    assert f"no command shown: its record ({tmp_path / 'run' / '.hydra' / 'overrides.yaml'}) has `{payload}`" in line
    write_job(tmp_path / "plain", ["experiment=paper_small", "tags=[_x_]"], {}, TOY, None)  # a word, not a key
    assert "run it again, `rnnreg-train experiment=paper_small 'tags=[_x_]'`" in png_report(tmp_path / "plain", PAPER)


def basic_sweep_record(
    sweep: Path, task: list | str, launcher: str | None = None, config_dir: Path | None = None
) -> None:
    """A sweep's multirun.yaml as Hydra's basic sweeper writes it: its command line's overrides (`task`), the
    launcher's target, and a --config-dir among its config sources."""
    from rnnreg.multirun_jobs import BASIC_SWEEPER

    hydra = {
        "sweeper": {"_target_": BASIC_SWEEPER, "params": None},
        "sweep": {"dir": str(sweep), "subdir": "${hydra.job.num}"},
        "overrides": {"hydra": [], "task": task},
        "job": {"config_name": "train"},
    }
    if launcher is not None:
        hydra["launcher"] = {"_target_": launcher}
    if config_dir is not None:
        hydra["runtime"] = {"config_sources": [{"path": str(config_dir), "provider": "command-line"}]}
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))


def test_no_command_that_goes_on_repeats_a_recorded_override_that_makes_hydra_build_something(tmp_path):
    """Every command the report gives (a job's resume from its last checkpoint, a job that never started, a stacked
    sweep's resume) repeats what a record from someone else's folder says: where that names something for Hydra to
    build, no command but the record to read, whichever of them it is."""
    from rnnreg.multirun_jobs import STACKED_LAUNCHER

    payload = "+callbacks.x._target_=torch.load"
    resumed = tmp_path / "resumed"
    write_job(resumed, ["experiment=paper_small", payload], {}, TOY, None)
    (resumed / "checkpoints").mkdir()
    (resumed / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert png_report(resumed, PAPER).endswith(
        f"- resumed (unfinished): no command shown: its record ({resumed / '.hydra' / 'overrides.yaml'}) has "
        f"`{payload}`, which makes Hydra build or call what it names; read the record before running it again\n"
    )
    basic = tmp_path / "basic"
    basic_sweep_record(basic, [payload, "seed=1,2"])
    write_job(basic / "0", [payload, "seed=1"], {}, TOY, 440.0)
    assert png_report(basic, PAPER).endswith(
        f"- 1 (never started: no folder): no command shown: its record ({basic / 'multirun.yaml'}) has `{payload}`, "
        "which makes Hydra build or call what it names; read the record before running it again\n"
    )
    stacked = tmp_path / "stacked"
    basic_sweep_record(stacked, [payload, "seed=1,2"], launcher=STACKED_LAUNCHER)
    for job in (0, 1):
        write_job(stacked / str(job), [payload, f"seed={job + 1}"], {"hydra/launcher": "stacked"}, TOY, None)
    assert png_report(stacked, PAPER).endswith(
        f"- 0, 1: the stacked sweep goes on with no command shown: its record ({stacked / 'multirun.yaml'}) has "
        f"`{payload}`, which makes Hydra build or call what it names; read the record before running it again "
        "(from the start: no epoch had ended)\n"
    )


def test_a_mapping_naming_what_hydra_builds_anywhere_in_it_is_never_a_command_to_paste(tmp_path):
    """A key Hydra's instantiate reads (_target_, _args_, ...) in a recorded override, as its key or anywhere in a
    mapping it gives, in each form Hydra's override grammar reads: first, after another key, after a space, with a
    space before its colon."""
    given = [
        "+callbacks.x={_target_:os.system}",
        "+callbacks.x={a:1,_target_:os.system}",
        "+callbacks.x={a: 1, _target_: os.system}",
        "+callbacks.x={_target_ : os.system}",
        "+callbacks.model_checkpoint._args_=[x]",
    ]
    parser = OverridesParser.create()
    for job, payload in enumerate(given):
        parser.parse_override(payload)  # (each an override rnnreg-train takes)
        write_job(tmp_path / str(job), ["experiment=paper_small", payload], {}, TOY, None)
    lines = [
        line for line in png_report(tmp_path, PAPER).splitlines() if line.startswith("- ") and "(unfinished)" in line
    ]
    assert len(lines) == len(given)
    for job, (line, payload) in enumerate(zip(lines, given)):
        record = tmp_path / str(job) / ".hydra" / "overrides.yaml"
        assert line.endswith(
            f"run it again, no command shown: its record ({record}) has `{payload}`, which makes "
            "Hydra build or call what it names; read the record before running it again"
        ), line


def test_a_recorded_config_folder_someone_else_can_write_is_never_a_command_to_paste(tmp_path):
    """A record's --config-dir or hydra.searchpath folder is repeated in its go-on command: one another user owns, or
    anyone can write (/tmp), may hold a config naming anything for Hydra to build, so no command; a folder of one's
    own keeps it."""
    own, others, anyones = (tmp_path / name for name in ("own", "others", "anyones"))
    for folder in (own, others, anyones):
        folder.mkdir()
    anyones.chmod(0o777)
    foreign = [anyones]
    if os.getuid() == 0:  # (only root can give a folder to someone else)
        os.chown(others, 65534, 65534)
        foreign.append(others)

    def line_for(folder: Path, form: str) -> str:
        run = tmp_path / "runs" / f"{folder.name}_{form}"
        searchpath = [f"hydra.searchpath=[file://{folder}]"] if form == "searchpath" else []
        write_job(run, ["experiment=paper_small"], {}, TOY, None)
        record = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())
        if form == "config_dir":
            record["hydra"]["runtime"]["config_sources"] = [{"path": str(folder), "provider": "command-line"}]
        record["hydra"]["overrides"] = {"hydra": searchpath, "task": ["experiment=paper_small"]}
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(record))
        (line,) = [line for line in png_report(run, PAPER).splitlines() if line.startswith(f"- {run.name} (")]
        return line

    for form, given in (("config_dir", "--config-dir {}"), ("searchpath", "'hydra.searchpath=[file://{}]'")):
        assert line_for(own, form).endswith(f"run it again, `rnnreg-train {given.format(own)} experiment=paper_small`")
        for folder in foreign:
            record = tmp_path / "runs" / f"{folder.name}_{form}" / ".hydra"
            assert line_for(folder, form).endswith(
                f"no command shown: its record (in {record}) reads configs from {folder}, a folder another user can "
                "write (a config there can make Hydra build or call anything); read its configs, copy them to a "
                "folder of yours and give that instead"
            )


def test_a_config_folder_anyone_can_write_after_ones_own_is_never_a_command_to_paste(tmp_path):
    """Each config folder a record names is checked, not only the first: --config-dir of one's own, then a
    hydra.searchpath folder anyone can write (/tmp): no command, naming that folder."""
    own, anyones = tmp_path / "own", tmp_path / "anyones"
    own.mkdir()
    anyones.mkdir()
    anyones.chmod(0o777)
    run = tmp_path / "run"
    write_job(run, ["experiment=paper_small"], {}, TOY, None)
    record = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())
    record["hydra"]["runtime"]["config_sources"] = [{"path": str(own), "provider": "command-line"}]
    searchpath = f"hydra.searchpath=[file://{own},file://{anyones}]"
    record["hydra"]["overrides"] = {"hydra": [searchpath], "task": ["experiment=paper_small"]}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(record))
    (line,) = [line for line in png_report(run, PAPER).splitlines() if line.startswith("- run (")]
    assert line.endswith(
        f"no command shown: its record (in {run / '.hydra'}) reads configs from {anyones}, a folder another user can "
        "write (a config there can make Hydra build or call anything); read its configs, copy them to a folder of "
        "yours and give that instead"
    )


def config_folder(root: Path, *parts: str, mode: int = 0o755) -> Path:
    """A folder of configs below `root` (its parts made), with `mode` and one config file of this user's."""
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True)
    folder.chmod(mode)
    (folder / "mine.yaml").write_text("model: {hidden_size: 8}\n")
    return folder


def test_a_config_folder_is_someone_elses_where_anything_in_or_above_it_is(tmp_path):
    """others_can_write: a folder of one's own whose files, a link to it, or a folder above it (which could put another
    folder in its place) another user owns or can write, is not one's own; a group of one's own (a user's private
    group) and a folder above with the sticky bit (/tmp) leave it so."""
    from rnnreg.folder_trust import others_can_write

    made = functools.partial(config_folder, tmp_path)
    assert not others_can_write(str(made("own")))
    assert not others_can_write(str(tmp_path / "missing"))
    opened = made("open", "conf")
    (tmp_path / "open").chmod(0o777)  # the folder above: anyone may move conf/ away and put another there
    assert others_can_write(str(opened))
    sticky = made("sticky", mode=0o1777)
    assert not others_can_write(str(made("sticky", "conf")))
    sticky.chmod(0o777)
    assert others_can_write(str(tmp_path / "sticky" / "conf"))
    inside = made("inside")
    (inside / "experiment").mkdir()
    (inside / "experiment" / "x.yaml").write_text("x: 1\n")
    (inside / "experiment" / "x.yaml").chmod(0o666)  # a config anyone can rewrite
    assert others_can_write(str(inside))
    broken = made("broken")
    (broken / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    assert others_can_write(str(broken))
    if os.getuid() != 0:  # (only root can give a file to another user or group)
        return
    own_group = made("own_group", mode=0o775)  # root's group: root alone in it
    os.chown(own_group, 0, 0)
    assert not others_can_write(str(own_group))
    shared_group = made("shared_group", mode=0o775)
    os.chown(shared_group, 0, 65534)  # nogroup: nobody's own group
    assert others_can_write(str(shared_group))
    theirs = made("theirs")
    os.chown(theirs, 65534, 65534)
    (tmp_path / "link").symlink_to(theirs)  # a link of one's own to another user's folder
    assert others_can_write(str(tmp_path / "link"))
    their_file = made("their_file")
    os.chown(their_file / "mine.yaml", 65534, 65534)
    assert others_can_write(str(their_file))
    above = made("above", "conf")
    os.chown(tmp_path / "above", 65534, 65534)
    assert others_can_write(str(above))


def test_a_config_folder_is_someone_elses_where_a_link_or_folder_on_the_way_to_it_is(tmp_path):
    """others_can_write follows the path as Hydra will, part by part: a link to one's own folder, or inside it to
    one's own file or folder, is someone else's where others could put another link or file in its place (a folder
    anyone may write in on its way, a link of another user's in /tmp, a sticky folder another user owns); a folder
    writable by a group this user is not in is too (before: each was one's own, the folder's real path read alone)."""
    import grp
    import pwd

    from rnnreg.folder_trust import others_can_write

    made = functools.partial(config_folder, tmp_path)
    own, opened = made("own"), made("open", mode=0o777)  # (no sticky bit: anyone may replace what is in it)
    (opened / "conf").symlink_to(own)
    assert not others_can_write(str(own)) and others_can_write(str(opened / "conf"))
    linked_file = made("linked_file")
    (linked_file / "model.yaml").symlink_to(opened / "mine.yaml")
    assert others_can_write(str(linked_file))
    target, linked_folder = made("target"), made("linked_folder")
    (target / "mine.yaml").chmod(0o666)
    (linked_folder / "experiment").symlink_to(target)  # (a folder a link inside points at: read too)
    assert others_can_write(str(linked_folder))
    (tmp_path / "up").symlink_to(own)
    assert not others_can_write(str(tmp_path / "up" / ".." / "own"))  # (a link of one's own, in a folder of one's own)
    if os.getuid() != 0:  # (only root can give a file to another user or group)
        return
    sticky = made("sticky", mode=0o1777)
    (sticky / "theirs").symlink_to(own)
    os.lchown(sticky / "theirs", 65534, 65534)  # another user's link in /tmp: they may point it elsewhere
    assert others_can_write(str(sticky / "theirs"))
    their_sticky = made("their_sticky", mode=0o1777)
    os.chown(their_sticky, 65534, 65534)  # its owner may move anything in it, sticky or not
    assert others_can_write(str(made("their_sticky", "conf")))
    primary = {user.pw_gid for user in pwd.getpwall()}
    unlisted = [g.gr_gid for g in grp.getgrall() if not g.gr_mem and g.gr_gid not in primary | {os.getgid()}]
    if unlisted:  # a group whose members, if any, no file here lists
        grouped = made("grouped", mode=0o775)
        os.chown(grouped, 0, unlisted[0])
        assert others_can_write(str(grouped))


def access_acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX access ACL as Linux stores it (system.posix_acl_access): version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_a_config_folder_is_someone_elses_where_an_acl_lets_another_user_write(tmp_path):
    """others_can_write reads POSIX ACLs: a config file, the folder or a folder above it whose ACL lets another user
    (or a group this user is not in) write, through the ACL's mask, is someone else's; an ACL that lets them read
    alone, or whose mask takes their write away, is not (before: the mode bits, which show the mask alone)."""
    from rnnreg.folder_trust import others_can_write

    anyone = 0xFFFFFFFF  # (the id of an entry that names no one: the owner's, the owning group's, the mask, others)
    owner, group, mask, other, user, named_group = 0x01, 0x04, 0x10, 0x20, 0x02, 0x08

    def acl(path: Path, who: tuple[int, int], perm: int, mask_perm: int) -> None:
        entries = [(owner, 7, anyone), (group, 5, anyone), (mask, mask_perm, anyone), (other, 5, anyone)]
        try:  # (its entries in the order of their tags, as Linux requires)
            os.setxattr(path, "system.posix_acl_access", access_acl(*sorted([*entries, (who[0], perm, who[1])])))
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            pytest.skip(f"this filesystem takes no POSIX ACLs ({err.strerror})")

    def with_acl(name: str, on: str, who: tuple[int, int], perm: int, mask_perm: int = 7) -> str:
        folder = config_folder(tmp_path, name, "conf")
        acl({"file": folder / "mine.yaml", "folder": folder, "above": folder.parent}[on], who, perm, mask_perm)
        return str(folder)

    nobody = (user, 65534)
    assert others_can_write(with_acl("file", "file", nobody, 6))
    assert others_can_write(with_acl("folder", "folder", nobody, 7))
    assert others_can_write(with_acl("above", "above", nobody, 7))  # (it could put another conf/ in its place)
    their_group = next(g for g in (65534, 65533, 12345) if g not in {os.getgid(), *os.getgroups()})
    assert others_can_write(with_acl("group", "file", (named_group, their_group), 6))
    assert not others_can_write(with_acl("reads", "file", nobody, 4, mask_perm=4))
    assert not others_can_write(with_acl("masked", "file", nobody, 6, mask_perm=4))
    assert not others_can_write(with_acl("own", "file", (user, os.getuid()), 6, mask_perm=4))
    if os.getuid() == 0:  # an entry naming this user itself, writing (its mask lets the owning group, root's, too)
        assert not others_can_write(with_acl("own_write", "file", (user, os.getuid()), 6))
    sticky = config_folder(tmp_path, "sticky", "conf").parent
    sticky.chmod(0o1755)
    acl(sticky, nobody, 7, 7)  # as /tmp: others may move only what is theirs in it, and conf/ is mine
    assert not others_can_write(str(sticky / "conf"))


def test_a_config_folder_reached_through_relative_links_or_a_chain_of_links_is_read_where_they_point(
    tmp_path, monkeypatch
):
    """others_can_write reads a link's target from the link's own folder, as the kernel does, not from the current
    one, and follows a chain of links to its end: one's own links (`first -> second -> ../own`) to one's own folder
    are one's own; a relative link into a folder anyone may write (`into_open -> ../open/conf`) is not, whatever the
    current folder holds under that relative name."""
    from rnnreg.folder_trust import others_can_write

    made = functools.partial(config_folder, tmp_path)
    made("own")
    links = made("links")
    (links / "first").symlink_to("second")
    (links / "second").symlink_to("../own")
    made("open", "conf")
    (tmp_path / "open").chmod(0o777)  # (no sticky bit: anyone may put another conf/ there)
    (links / "into_open").symlink_to("../open/conf")
    here = tmp_path / "elsewhere" / "here"
    made("elsewhere", "open", "conf")  # ../open/conf from the current folder: one's own
    here.mkdir()
    monkeypatch.chdir(here)
    assert not others_can_write(str(links / "first"))
    assert others_can_write(str(links / "into_open"))


def test_a_config_folder_with_more_entries_than_the_check_reads_is_not_known_to_be_ones_own(tmp_path):
    """others_can_write reads at most CONFIG_FOLDER_ENTRIES files and folders (a folder of configs, not a home
    folder or /): a folder of one's own with that many is read and is one's own; with one more it is not known to
    be, and the report shows no command that reads it."""
    from rnnreg.folder_trust import CONFIG_FOLDER_ENTRIES, others_can_write

    folder = config_folder(tmp_path, "many")  # (its mine.yaml: the first entry)
    (folder / "experiment").mkdir()
    for i in range(CONFIG_FOLDER_ENTRIES - 2):
        (folder / "experiment" / f"e{i}.yaml").touch()
    assert not others_can_write(str(folder))
    (folder / "experiment" / "one_more.yaml").touch()
    assert others_can_write(str(folder))


def test_a_config_folder_writable_by_a_group_that_is_another_users_own_is_someone_elses(tmp_path):
    """A group this user is in, with no other member listed, that is another user's own group (its primary group,
    which no member list names: nobody's nogroup) has that user in it: a config folder it can write is someone
    else's. (This user put in the group by setgroups, in a process of its own: only root can.)"""
    import grp
    import pwd
    import subprocess
    import sys

    if os.getuid() != 0:
        pytest.skip("only root can put itself in another user's group")
    groups = {g.gr_gid: g for g in grp.getgrall()}
    theirs = [u for u in pwd.getpwall() if u.pw_uid != 0 and u.pw_gid in groups and not groups[u.pw_gid].gr_mem]
    if not theirs:
        pytest.skip("no other user here whose own group lists no members")
    gid = theirs[0].pw_gid
    folder = config_folder(tmp_path, "grouped", mode=0o775)
    os.chown(folder, 0, gid)
    in_group = (
        "import os, sys; os.setgroups([int(sys.argv[2])]); from rnnreg.folder_trust import others_can_write; "
        "print(others_can_write(sys.argv[1]))"
    )
    proc = subprocess.run([sys.executable, "-c", in_group, str(folder), str(gid)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\n"


def test_a_printed_path_hydra_would_read_as_another_type_is_quoted():
    """A relative folder named `null`, `true`, `1e3` or `12` in a printed command: Hydra reads it back as the
    string, not as None, a bool or a number."""
    from rnnreg.override_text import path_override

    parser = OverridesParser.create()
    for name in ("null", "True", "1e3", "12", "nan", "out/run 1", "o'k"):
        assert parser.parse_override(path_override("ckpt_path", name)).value() == name


def test_a_printed_path_with_a_comma_an_equals_sign_or_spaces_at_its_ends_reads_back_as_itself():
    """A folder named `run,2` (Hydra reads a sweep), `a=b` (its grammar refuses it), ` lead` or `trail ` (Hydra strips
    a value's ends) or `1_000` (an integer): in a printed command Hydra reads each back as that path."""
    from rnnreg.override_text import path_override

    parser = OverridesParser.create()
    for name in ("out/run,2", "out/a=b", " lead", "trail ", "1_000", "out/[1]"):
        assert parser.parse_override(path_override("ckpt_path", name)).value() == name, name


def test_the_report_replaces_a_link_in_its_folder_and_leaves_what_it_points_at(tmp_path):
    """A shared folder's report.md or figure may be a link someone left to a file of yours (~/.bashrc): the report
    replaces the link with its own file; the file it pointed at keeps its contents (it was written over)."""
    root = ablation(tmp_path / "shared", {"none": (450.0,), "recurrent": (430.0,)})
    names = ("report.md", "report.csv", "summary.tex", "val_ppl.png", "test_ppl.pdf")
    precious = {name: tmp_path / f"precious_{name}" for name in names}
    for name, target in precious.items():
        target.write_text("mine\n")
        (root / name).symlink_to(target)
    run("rnnreg-report", f"path={root}")
    for name, target in precious.items():
        assert target.read_text() == "mine\n" and not (root / name).is_symlink(), name
    assert (root / "report.md").read_text().startswith("every run: seed=1234\n\n| run |")  # (each placement's one seed)


def test_unfinished_stacked_sweep_goes_on_with_its_resume_switch(tmp_path):
    """Members of a stacked sweep killed hard: one line for the sweep, the resume switch and where it goes on
    from; while the sweep's process lives (it holds the sweep folder) its members are running."""
    sweep = tmp_path / "sweep"
    for job, placement in enumerate(("non_recurrent", "recurrent")):
        write_job(
            sweep / str(job), [f"dropout={placement}"], {"dropout": placement, "hydra/launcher": "stacked"}, TOY, None
        )
    with RunLock(sweep, "hydra.sweep.dir"):
        assert png_report(sweep, PAPER).count("| running |") == 2
    assert png_report(sweep, PAPER).endswith(
        f"- 0, 1: the stacked sweep goes on with `rnnreg-train -m ... hydra/launcher=stacked "
        f"hydra.launcher.resume=true hydra.sweep.dir={sweep}` "
        "(from the start: no epoch had ended)\n"
    )
    (sweep / ".stacked").mkdir()
    (sweep / ".stacked" / "group_0.pt").write_bytes(b"")
    assert png_report(sweep, PAPER).endswith(f"hydra.sweep.dir={sweep}` (each group from its last epoch's end)\n")
    for job in (0, 1):  # stopped by a signal: the group's file holds the window it stopped in
        (sweep / str(job) / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs": 1}))
    assert png_report(sweep, PAPER).endswith(
        f"hydra.sweep.dir={sweep}` (each group from the window where it stopped)\n"
    )


def test_a_stacked_sweep_stopped_by_a_signal_and_killed_hard_says_where_each_group_goes_on_from(tmp_path):
    """A stacked sweep whose members ended both ways (one stopped by a signal, one killed hard): its resume starts
    each group where that group stopped, the window of a signal or the last epoch's end, not one of them for all."""
    sweep = tmp_path / "sweep"
    for job, placement in enumerate(("non_recurrent", "recurrent")):
        write_job(sweep / str(job), [f"dropout={placement}"], {"hydra/launcher": "stacked"}, TOY, None)
    (sweep / "0" / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs": 1}))
    (sweep / ".stacked").mkdir()
    (sweep / ".stacked" / "group_0.pt").write_bytes(b"")
    assert png_report(sweep, PAPER).endswith(
        f"hydra.sweep.dir={sweep}` (each group from where it stopped: the window of a signal, the last epoch's end of "
        "a hard kill)\n"
    )


def test_placement_without_hydra_choices_falls_back_to_the_override(tmp_path):
    write_job(tmp_path / "0", ["dropout=recurrent"], {}, TOY, 430.0)
    (tmp_path / "0" / ".hydra" / "hydra.yaml").unlink()
    write_job(tmp_path / "1", ["model.init_scale=0.1"], {}, TOY, 440.0)
    (tmp_path / "1" / ".hydra" / "hydra.yaml").unlink()
    assert [r["placement"] for r in collect(tmp_path)] == ["recurrent", "config"]


def test_report_finds_runs_in_nested_multirun_folders(tmp_path):
    """Job folders in numeric order, a later multirun's folder beside the first one's jobs (as when more
    seeds are added to a sweep: hydra.sweep.dir=<first sweep>/more_seeds)."""
    jobs = ["0", "1", "2", "10", "more_seeds/0", "more_seeds/1"]
    for job in reversed(jobs):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "config.yaml").write_text("{}")
    assert [str(p.relative_to(tmp_path)) for p in find_runs(tmp_path)] == jobs


def test_report_follows_links_to_other_sweeps_and_reads_each_run_once(tmp_path):
    """A folder of links to sweeps kept elsewhere is one comparison; a link back up or a second link to a
    sweep already linked reads no run twice (and ends)."""
    write_job(tmp_path / "sweeps/a/0", ["dropout=none", "seed=1234"], {}, TOY, 440.0)
    write_job(tmp_path / "sweeps/b/0", ["dropout=none", "seed=1"], {}, TOY, 450.0)
    compare = tmp_path / "compare"
    compare.mkdir()
    (compare / "a").symlink_to(tmp_path / "sweeps/a")
    (compare / "b").symlink_to(tmp_path / "sweeps/b")
    (compare / "b_again").symlink_to(tmp_path / "sweeps/b")
    (compare / "up").symlink_to(compare)
    assert [str(p.relative_to(compare)) for p in find_runs(compare)] == ["a/0", "b/0"]
    assert "| (same) | 2 | 459.78 ± 7.23 | 445.00 ± 7.07 |" in png_report(compare).split("Over seeds:")[1]


def test_a_run_copied_beside_itself_is_one_row_and_a_rerun_is_two(tiny_corpus, tmp_path):
    """A comparison folder holding a sweep through a link and a copy of it (cp -r, as to keep it): each run is one
    row, named where it was written (through the link), and a note names its copy (before: every run twice, in the
    table, report.csv and the figures). The copy is known by its contents: the folder hydra.yaml records it was
    written in, and the same records. A run rerun into that folder (another metrics.json) is another run: two rows."""
    sweep, compare = tmp_path / "sweep", tmp_path / "compare"
    tiny = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    run(
        "rnnreg-train",
        "-m",
        *tiny,
        "trainer.limit_train_batches=2",
        "test=false",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    )
    compare.mkdir()
    (compare / "a").symlink_to(sweep)
    shutil.copytree(sweep, compare / "b", symlinks=True)
    run("rnnreg-report", f"path={compare}")
    table = (compare / "report.md").read_text()
    assert re.findall(r"^\| (\S+) \| seed=", table, re.M) == ["a/0", "a/1"], table
    for job in (0, 1):
        note = f"- b/{job} is a copy of a/{job} (written in {sweep / str(job)}, with the same records): the same run"
        assert f"{note}, shown once as a/{job}\n" in table, table
    with open(compare / "report.csv") as f:
        assert [row["run"] for row in csv.DictReader(f)] == ["a/0", "a/1"]
    rerun = json.loads((sweep / "1" / "metrics.json").read_text())
    write_json_atomic(sweep / "1" / "metrics.json", rerun | {"train_seconds": rerun["train_seconds"] + 1.0})
    table = png_report(compare)
    assert re.findall(r"^\| (\S+) \| seed=", table, re.M) == ["a/0", "a/1", "b/1"], table
    assert "b/0 is a copy of a/0" in table and "copy of a/1" not in table


def test_the_row_over_seeds_is_the_completed_seeds_mean_and_sd(tmp_path):
    """Over seeds: the mean and sample sd of each configuration's completed seeds; a seed that failed (or was
    interrupted) is its own row of the table, never one of the seeds averaged."""
    tests = ABLATION["non_recurrent"]
    root = ablation(tmp_path / "sweep", {"non_recurrent": tests, "none": ABLATION["none"]})
    rows = {r["run"]: r for r in collect(root)}
    mean, sd = statistics.mean(tests), statistics.stdev(tests)
    assert (
        f"| dropout=non_recurrent | 3 | {mean_sd_text(rows, ['0', '1', '2'])} | {mean:.2f} ± {sd:.2f} |"
        in (png_report(root).split("Over seeds:")[1])
    )
    metrics = json.loads((root / "5" / "metrics.json").read_text()) | {"status": "failed", "best_val_ppl": 900.0}
    (root / "5" / "metrics.json").write_text(json.dumps(metrics))  # dropout=none's seed 2
    text = png_report(root)
    completed = ABLATION["none"][:2]
    none_row = f"| dropout=none | 2 | {mean_sd_text(rows, ['3', '4'])} | "
    none_row += f"{statistics.mean(completed):.2f} ± {statistics.stdev(completed):.2f} |"
    assert none_row in text.split("Over seeds:")[1]
    assert re.search(r"\| 5 \| dropout=none seed=2 \| failed \| 900\.00 \|", text)


def test_each_configuration_is_paired_seed_by_seed_against_the_lowest_mean(tmp_path):
    """Paired by seed: the configuration of the lowest mean test ppl over 2+ seeds is the reference; every other that
    shares 2+ of its seeds gets its test ppl minus the reference's in each of them, their mean and sd, and in how many
    it tested worse. A seed that failed is in no pair; one configuration alone, or none sharing 2 seeds: no section."""
    placements = {"none": ABLATION["none"], "non_recurrent": ABLATION["non_recurrent"], "both": ABLATION["both"][:2]}
    root = ablation(tmp_path / "sweep", placements)
    text = png_report(root)
    reference = dict(zip(("1234", "1", "2"), ABLATION["non_recurrent"]))  # the lowest mean: 405.52

    def row(config: str, tests: dict[str, float]) -> str:
        differences = {seed: test - reference[seed] for seed, test in tests.items()}
        values = list(differences.values())
        mean, sd = statistics.mean(values), statistics.stdev(values)
        each = ", ".join(f"{seed}: {d:+.2f}" for seed, d in differences.items())
        worse = sum(d > 0 for d in values)
        return f"| {config} | {len(values)} | {mean:+.2f} ± {sd:.2f} | {each} | {worse} of {len(values)} |"

    paired = text.split("\nPaired by seed, ")[1]
    assert paired.startswith("against `dropout=non_recurrent` (the lowest mean test ppl): each configuration's ")
    lines = paired.split("\n\n")[1].splitlines()
    none, both = (dict(zip(("1234", "1", "2"), ABLATION[p])) for p in ("none", "both"))
    assert lines[2:] == [row("dropout=none", none), row("dropout=both", {s: both[s] for s in ("1234", "1")})]
    assert lines[3].endswith("| 1 of 2 |")  # both: ahead in seed 1234, behind in seed 1
    # summary.csv holds the same rows, unrounded (empty cells where a configuration is not paired: the reference)
    with open(root / "summary.csv", newline="") as f:
        summary = {c["configuration"]: c for c in csv.DictReader(f)}
    assert not any(summary["dropout=non_recurrent"][key] for key in PAIRED_COLUMNS)
    for config, tests in (("dropout=none", none), ("dropout=both", {s: both[s] for s in ("1234", "1")})):
        values = [test - reference[seed] for seed, test in tests.items()]
        c = summary[config]
        assert (c["paired_against"], c["paired_seeds"], c["paired_worse"]) == (
            "dropout=non_recurrent",
            " ".join(tests),
            str(sum(d > 0 for d in values)),
        )
        assert (float(c["test_ppl_paired_mean"]), float(c["test_ppl_paired_sd"])) == (
            statistics.mean(values),
            statistics.stdev(values),
        )
    # both's seed 1 diverged: one seed of it left to pair, so no row
    metrics = json.loads((root / "7" / "metrics.json").read_text()) | {"status": "failed"}
    (root / "7" / "metrics.json").write_text(json.dumps(metrics))
    assert "dropout=both |" not in png_report(root).split("Paired by seed")[1]
    # one configuration over three seeds: nothing to pair
    alone = ablation(tmp_path / "alone", {"none": ABLATION["none"]})
    assert "Over seeds:" in png_report(alone) and "Paired by seed" not in png_report(alone)


def test_a_paired_difference_that_rounds_to_nothing_shows_no_sign():
    """+0.00 and -0.00 read as a gain and a loss of nothing: shown 0.00 (the worse count keeps its true sign)."""
    from rnnreg.report_tables import signed

    assert [signed(d) for d in (-0.004, 0.0, 0.0049, 0.006, -0.006, 12.345, -3.5)] == [
        "0.00", "0.00", "0.00", "+0.01", "-0.01", "+12.35", "-3.50",
    ]  # fmt: skip


def test_the_reports_tables_read_back_as_data_to_the_numbers_in_metrics_json(tmp_path):
    """report.csv (a row per run) and summary.csv (a row per completed configuration) hold the numbers unrounded: read
    back, each is the number metrics.json has (or the mean and sample sd of its seeds'); a number a run lacks (a
    diverged test written null, an unfinished run's test) is an empty cell, never 'nan'. summary.tex is the table
    over seeds in LaTeX, rounded as report.md's."""
    root = ablation(tmp_path, {"none": ABLATION["none"], "non_recurrent": (430.0,)})
    write_job(root / "4", ["dropout=non_recurrent", "seed=1"], {}, TOY, None)  # unfinished: no metrics.json
    write_job(root / "5", ["dropout=non_recurrent", "seed=2"], {}, TOY, 415.0)
    diverged = json.loads((root / "5" / "metrics.json").read_text()) | {"status": "failed", "error": "diverged"}
    write_json_atomic(root / "5" / "metrics.json", diverged | {"test_ppl": math.nan, "test_ppl_batched": None})
    markdown = png_report(root)
    assert {p.name for p in written_files(root, ("png",))} == {p.name for p in root.iterdir() if p.is_file()}
    with open(root / "report.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert list(runs[0]) == ["run", "configuration", "dropout", "seed", *RUN_COLUMNS, "why"]
    assert [(r["run"], r["configuration"], r["dropout"], r["seed"], r["status"]) for r in runs][3:] == [
        ("3", "dropout=non_recurrent", "non_recurrent", "1234", "completed"),
        ("4", "dropout=non_recurrent", "non_recurrent", "1", "unfinished"),
        ("5", "dropout=non_recurrent", "non_recurrent", "2", "failed"),
    ]
    for r in runs:
        assert "nan" not in r.values() and r["why"] == ("diverged" if r["run"] == "5" else ""), r
        if r["run"] == "4":  # its best validation from csv/metrics.csv, no test
            with open(root / "4" / "csv" / "metrics.csv", newline="") as f:
                logged = [float(line["val/ppl"]) for line in csv.DictReader(f) if line["val/ppl"]]
            assert float(r["best_val_ppl"]) == min(logged) and (r["test_ppl"], r["epochs"]) == ("", "2")
            continue
        metrics = json.loads((root / r["run"] / "metrics.json").read_text())
        for key in RUN_COLUMNS[1:]:
            assert (float(r[key]) if r[key] else None) == metrics[key], (r["run"], key)
    with open(root / "summary.csv", newline="") as f:
        done = list(csv.DictReader(f))
    assert [(c["configuration"], c["dropout"], c["n"], c["seeds"]) for c in done] == [
        ("dropout=none", "none", "3", "1234 1 2"),
        ("dropout=non_recurrent", "non_recurrent", "1", "1234"),
    ]
    for key in ("best_val_ppl", "test_ppl", "test_ppl_batched"):
        seeds = [json.loads((root / job / "metrics.json").read_text())[key] for job in ("0", "1", "2")]
        assert (float(done[0][f"{key}_mean"]), float(done[0][f"{key}_sd"])) == (
            statistics.mean(seeds),
            statistics.stdev(seeds),
        )
        one = json.loads((root / "3" / "metrics.json").read_text())[key]
        assert float(done[1][f"{key}_mean"]) == one and done[1][f"{key}_sd"] == "", key
    over_seeds = markdown.split("Over seeds:")[1].split("\n\n")[1].splitlines()[2:]
    latex = (root / "summary.tex").read_text().splitlines()
    assert latex[1:5] == [r"\begin{tabular}{lrrrr}", r"\hline", latex[3], r"\hline"] and latex[-2:] == [
        r"\hline",
        r"\end{tabular}",
    ]
    assert latex[3] == (
        r"overrides (seed aside) & seeds & best val ppl, mean $\pm$ sd & test ppl (1 stream), mean $\pm$ sd & "
        r"test ppl (batched), mean $\pm$ sd \\"
    )
    none = over_seeds[0].strip("| ").split(" | ")
    assert (
        latex[5] == " & ".join(["dropout=none", "3", *("$" + c.replace("±", r"\pm") + "$" for c in none[2:])]) + r" \\"
    )
    test = f"{json.loads((root / '3' / 'metrics.json').read_text())['test_ppl']:.2f}"
    assert latex[6].startswith(r"dropout=non\_recurrent & 1 & $") and f" & ${test}$ & " in latex[6]


def test_a_fast_dev_run_is_its_own_row_never_one_of_the_seeds_averaged(tmp_path):
    """trainer.fast_dev_run writes a completed metrics.json from a window or two: the report labels it
    fast_dev_run and keeps it out of the seeds' mean (before: a completed seed, averaged with the real ones)."""
    tests = ABLATION["non_recurrent"]
    root = ablation(tmp_path / "sweep", {"non_recurrent": tests})
    write_job(root / "3", ["dropout=non_recurrent", "seed=3"], {}, TOY | {"fast_dev_run": True}, 9000.0)
    text = png_report(root)
    mean, sd = statistics.mean(tests), statistics.stdev(tests)
    over_seeds = text.split("Over seeds:")[1]
    assert "| (same) | 3 | " in over_seeds and f"| {mean:.2f} ± {sd:.2f} |" in over_seeds
    assert re.search(r"\| 3 \| seed=3 \| fast_dev_run \|", text), text


def mean_sd_text(rows: dict, runs: list[str]) -> str:
    values = [rows[run]["best_val_ppl"] for run in runs]
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def test_seeds_run_without_a_test_have_a_mean_validation_and_no_test(tmp_path):
    """test=false leaves no test perplexity: the row over seeds has the validation's mean ± sd and a dash for
    the test (before: rnnreg-report stopped with a traceback from statistics.stdev)."""
    for job, seed, ppl in (("0", 1234, 440.0), ("1", 1, 450.0)):
        write_job(tmp_path / job, ["dropout=none", f"seed={seed}", "test=false"], {}, TOY, ppl)
        metrics = json.loads((tmp_path / job / "metrics.json").read_text())
        del metrics["test_ppl"], metrics["test_ppl_batched"]
        (tmp_path / job / "metrics.json").write_text(json.dumps(metrics))
    assert "| (same) | 2 | 459.78 ± 7.23 | — | — |" in png_report(tmp_path).split("Over seeds:")[1]


def test_runs_that_differ_only_in_where_they_wrote_are_one_configuration(tmp_path):
    """Seeds of one recipe from two multiruns (one with another output root, one with W&B) are one row over
    seeds; a budget still tells configurations apart."""
    write_job(tmp_path / "a/0", ["dropout=none", "seed=1234", "paths.output_root=/elsewhere"], {}, TOY, 440.0)
    write_job(tmp_path / "b/0", ["dropout=none", "seed=1", "logger=wandb", "tags=[rerun]"], {}, TOY, 450.0)
    write_job(tmp_path / "b/1", ["dropout=recurrent", "seed=1234"], {}, TOY, 430.0)
    write_job(tmp_path / "b/2", ["dropout=recurrent", "seed=1", "trainer.limit_train_batches=40"], {}, TOY, 470.0)
    text = png_report(tmp_path)
    assert "paths.output_root" not in text and "logger=" not in text and "tags=" not in text
    over_seeds = text.split("Over seeds:")[1]
    assert "| dropout=none | 2 | 459.78 ± 7.23 | 445.00 ± 7.07 |" in over_seeds
    assert "dropout=recurrent | 2" not in over_seeds  # 40 windows is another budget: not a second seed


def test_a_run_that_deleted_its_logger_is_a_seed_of_the_same_configuration(tmp_path):
    """A seed run without a logger (`~logger`, a deletion override) beside one with W&B: one configuration of two
    seeds, as for a run that only chose another logger; the deletion is not a setting of its own."""
    write_job(tmp_path / "a/0", ["dropout=none", "seed=1234", "~logger"], {}, TOY, 440.0)
    write_job(tmp_path / "b/0", ["dropout=none", "seed=1", "logger=wandb"], {}, TOY, 450.0)
    text = png_report(tmp_path)
    assert "logger" not in text
    assert "| (same) | 2 | 459.78 ± 7.23 | 445.00 ± 7.07 |" in text.split("Over seeds:")[1]  # one configuration


def test_validation_is_drawn_at_its_logged_epochs_after_a_resume(tmp_path):
    """A run resumed from another folder's checkpoint logs from its resumed epoch on (csv/metrics.csv's epoch
    column): its values are drawn at those epochs, not from epoch 1 by row, and the report says which are missing."""
    write_job(tmp_path / "0", ["dropout=none"], {"dropout": "none"}, TOY, 440.0)
    csv_file = tmp_path / "0" / "csv" / "metrics.csv"
    header, *lines = csv_file.read_text().splitlines()
    csv_file.write_text("\n".join([header, *(line for line in lines if int(line.split(",")[0]) >= 2)]) + "\n")
    write_job(tmp_path / "1", ["dropout=recurrent"], {"dropout": "recurrent"}, TOY, 430.0)
    rows = collect(tmp_path)
    assert list(rows[0]["val_history"]) == [3, 4, 5, 6] and list(rows[1]["val_history"]) == [1, 2, 3, 4, 5, 6]
    lines = {line.get_label(): line for line in figure_val_ppl(rows, PAPER).axes[0].get_lines()}
    assert list(lines["none"].get_xdata()) == [3, 4, 5, 6] and list(lines["recurrent"].get_xdata())[0] == 1
    assert list(lines["none"].get_ydata()) == list(rows[0]["val_history"].values())
    assert "- 0: csv/metrics.csv has no validation perplexity for epoch(s) 1–2" in png_report(tmp_path, PAPER)


def test_a_seed_run_twice_is_counted_once_in_the_table_and_the_figures(tmp_path):
    """One sweep linked twice under two names, or the same jobs rerun (a basic and a stacked sweep): a seed
    that ran twice is one seed in the table over seeds and in the figures (its first run), and a note says so."""
    ablation(tmp_path / "sweeps/basic", {"none": ABLATION["none"]})
    ablation(tmp_path / "sweeps/stacked", {"none": tuple(t + 30.0 for t in ABLATION["none"])})
    compare = tmp_path / "compare"
    compare.mkdir()
    (compare / "basic").symlink_to(tmp_path / "sweeps/basic")
    (compare / "stacked").symlink_to(tmp_path / "sweeps/stacked")
    table = png_report(compare, PAPER)
    mean, sd = statistics.mean(ABLATION["none"]), statistics.stdev(ABLATION["none"])
    assert "| (same) | 3 | " in table and f"{mean:.2f} ± {sd:.2f}" in table.split("Over seeds:")[1]
    assert "configuration `(same)`: seed 1234 ran 2 times (basic/0, stacked/0); counted once, from basic/0" in table
    (entry,) = configurations(collect(compare))
    assert entry["key"] == "(same) (3 seeds)" and [r["run"] for r in entry["runs"]] == ["basic/0", "basic/1", "basic/2"]
    ax = figure_test_ppl(collect(compare), PAPER).axes[0]
    assert sorted(ax.collections[-1].get_offsets()[:, 0]) == sorted(ABLATION["none"])
    assert "over 3 seeds" in ax.get_xlabel()


def test_a_running_job_without_a_csv_logger_has_no_epoch_count(tmp_path):
    """A job running under logger=none has no csv/metrics.csv and no metrics.json yet: its epochs are unknown, "—"
    (before: 0, however many it had trained); a job with its CSV logger shows those it validated."""
    write_job(tmp_path / "0", ["seed=1"], {}, TOY, None)
    write_job(tmp_path / "1", ["seed=2"], {}, TOY, None)
    shutil.rmtree(tmp_path / "1" / "csv")  # (logger=none)
    with RunLock(tmp_path / "0"), RunLock(tmp_path / "1"):
        table = png_report(tmp_path, PAPER)
    logged = table.split("| 0 | seed=1 | running | ")[1].splitlines()[0].split(" | ")[3]
    assert logged.isdigit() and int(logged) > 0, table  # (the epochs its CSV logger validated)
    assert "| 1 | seed=2 | running | — | — | — | — | — | — |" in table, table


def test_an_evaluation_sweeps_checkpoints_are_configurations_of_their_own(tiny_cfg, tiny_corpus, tmp_path):
    """`rnnreg-eval -m ckpt_path=a,b`: each checkpoint evaluated is a configuration of its own in the report (its
    row names it, the table over seeds has one line each), not one configuration whose seed 0 ran twice, the second
    checkpoint's numbers left out (before: ckpt_path, a training run's resume, was no configuration's)."""
    from rnnreg.train import train

    short = ("trainer.max_epochs=1", "trainer.limit_train_batches=3", "test=false")
    checkpoints = []
    for seed in (1, 2):
        train(tiny_cfg(*short, f"seed={seed}", run=f"run{seed}"))
        checkpoints.append(str(tmp_path / f"run{seed}" / "checkpoints" / "last.ckpt"))
    sweep = tmp_path / "evaluations"
    data = ["data=text", f"data.data_dir={tiny_corpus}", "data.bptt=5", "data.batch_size=4"]
    args = [*data, "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"]
    run("rnnreg-eval", "-m", *args, f"ckpt_path={','.join(checkpoints)}")
    run("rnnreg-report", f"path={sweep}")
    table = (sweep / "report.md").read_text()
    assert "ran 2 times" not in table, table
    for job, checkpoint in enumerate(checkpoints):
        assert f"| {job} | ckpt_path={checkpoint} | completed |" in table, table
    with open(sweep / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [row["ckpt_path"] for row in summary] == checkpoints
    tested = [json.loads((sweep / str(job) / "metrics.json").read_text())["test_ppl"] for job in (0, 1)]
    assert [float(row["test_ppl_mean"]) for row in summary] == tested and tested[0] != tested[1]
    # each row's validation perplexity is its evaluation's, and it trained no epochs: none is said (before: —, 0)
    for job in (0, 1):
        validated = json.loads((sweep / str(job) / "metrics.json").read_text())["val_ppl"]
        row = table.split(f"| {job} | ckpt_path=")[1].splitlines()[0]
        assert row.split(" | ")[1:3] == ["completed", f"{validated:.2f}"] and row.split(" | ")[5] == "—", row


def test_a_single_run_refused_once_its_folder_existed_is_failed_with_its_line(tiny_corpus, tmp_path):
    """A single run stopped by bad input found once Hydra had made its folder (ckpt_path=last finding no run; a
    checkpoint of another vocabulary, nothing left to train) leaves error.txt with its line: the report lists it as
    failed, with that line, and gives no command (before: `unfinished`, as if killed hard, with "run it again" and the
    command that fails again). A folder given again, a completed run's refused resume there, stays as it was."""
    runs, args = tmp_path / "runs", ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    outputs = f"paths.output_root={tmp_path / 'outputs'}"  # (ckpt_path=last looks for earlier runs there: none)
    refused = run("rnnreg-train", *args, "ckpt_path=last", outputs, f"hydra.run.dir={runs / 'refused'}", check=False)
    assert refused.returncode == 2, refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1].removeprefix("error: ")
    assert line.startswith("ckpt_path=last: no earlier run of paper_small")
    assert (runs / "refused" / "error.txt").read_text() == f"{line}\n"
    run("rnnreg-train", *args, f"hydra.run.dir={runs / 'completed'}")
    again = run("rnnreg-train", *args, "ckpt_path=last", f"hydra.run.dir={runs / 'completed'}", check=False)
    assert again.returncode == 2 and "nothing is left to train" in again.stderr, again.stderr[-3000:]
    assert not (runs / "completed" / "error.txt").exists()
    table = png_report(runs, PAPER)
    assert "| completed | (same) | completed |" in table and "| refused | (same) | failed |" in table
    assert f"Failed, and why:\n\n- refused: {line}\n" in table and "how each goes on" not in table


def test_jobs_stopped_by_a_signal_or_never_started_get_their_commands(tmp_path, monkeypatch):
    """A basic sweep stopped by SIGTERM: an interrupted job goes on from its last checkpoint, one without a
    checkpoint (only .hydra/) runs again, and one that never got a folder is listed from multirun.yaml, each in its
    own numbered folder; a stacked sweep's interrupted jobs go on with its resume switch. One row alone shows its
    overrides."""
    sweep = tmp_path / "sweep"
    multirun = {
        "hydra": {
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
            "sweep": {"dir": str(sweep), "subdir": "${hydra.job.num}"},
            "overrides": {"task": ["experiment=paper_small", "dropout=none,recurrent", "seed=1,2"]},
        }
    }
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    jobs = [["experiment=paper_small", f"dropout={p}", f"seed={s}"] for p in ("none", "recurrent") for s in (1, 2)]
    write_job(sweep / "0", jobs[0], {}, TOY, 440.0)
    write_job(sweep / "1", jobs[1], {}, TOY, None)
    (sweep / "1" / "metrics.json").write_text(json.dumps({"status": "interrupted", "error": "SIGTERM", "epochs": 1}))
    (sweep / "1" / "checkpoints").mkdir()
    (sweep / "1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    (sweep / "2" / ".hydra").mkdir(parents=True)  # started, then stopped before it wrote anything
    (sweep / "2" / ".hydra" / "config.yaml").write_text("{}")
    (sweep / "2" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(jobs[2]))
    table = png_report(sweep, PAPER)
    assert "| 1 | dropout=none seed=2 | interrupted |" in table
    assert table.endswith(
        "how each goes on\n\n"
        f"- 1 (interrupted): `rnnreg-train experiment=paper_small dropout=none seed=2 "
        f"ckpt_path=last hydra.run.dir={sweep / '1'} hydra.mode=RUN`\n"
        "- 2 (unfinished): no checkpoint was written: run it again, "
        f"`rnnreg-train experiment=paper_small dropout=recurrent seed=1 hydra.run.dir={sweep / '2'} hydra.mode=RUN`\n"
        "- 3 (never started: no folder): "
        f"`rnnreg-train experiment=paper_small dropout=recurrent seed=2 hydra.run.dir={sweep / '3'} hydra.mode=RUN`\n"
    )
    with RunLock(sweep, "hydra.sweep.dir"):  # a live sweep: job 3 is yet to come
        assert "never started" not in png_report(sweep, PAPER)
    stacked = tmp_path / "stacked"
    for job, placement in enumerate(("none", "recurrent")):
        write_job(stacked / str(job), [f"dropout={placement}"], {"hydra/launcher": "stacked"}, TOY, None)
        (stacked / str(job) / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs": 1}))
    assert png_report(stacked, PAPER).endswith(
        f"- 0, 1: the stacked sweep goes on with `rnnreg-train -m ... hydra/launcher=stacked "
        f"hydra.launcher.resume=true hydra.sweep.dir={stacked}` "
        "(from the start: no epoch had ended)\n"
    )
    assert "| 0 | experiment=paper_small dropout=none seed=1 | completed |" in png_report(sweep / "0", PAPER)
    monkeypatch.chdir(tmp_path)  # (a folder given relative: the commands still paste in any folder)
    assert png_report("stacked", PAPER).endswith(
        f"hydra.launcher.resume=true hydra.sweep.dir={stacked}` (from the start: no epoch had ended)\n"
    )
    assert png_report("sweep", PAPER) == table


def test_a_seed_given_as_an_interpolation_is_each_jobs_own_seed_in_the_report(tiny_corpus, tmp_path):
    """`seed=${hydra:job.num}`: each job ran its own seed (0, 1), which its metrics.json records resolved, and the
    report counts both, one configuration of two seeds (before: it read the override's text, one seed "ran 2 times",
    and the second job was left out of the mean; found by a probe)."""
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    args += ["trainer.limit_train_batches=2", "test=false", "seed=${hydra:job.num}", "extras.print_config=true,false"]
    run("rnnreg-train", *args, f"hydra.sweep.dir={sweep}")
    assert [json.loads((sweep / job / "metrics.json").read_text())["seed"] for job in "01"] == [0, 1]
    table = report(sweep, formats=())
    assert "ran 2 times" not in table, table
    with open(sweep / "summary.csv", newline="") as f:
        (configuration,) = csv.DictReader(f)
    assert (configuration["n"], configuration["seeds"]) == ("2", "0 1"), configuration


def test_jobs_of_a_sweep_with_its_own_subdir_that_never_started_get_their_commands(tmp_path):
    """A basic sweep with hydra.sweep.subdir=s${seed} (errors.md's own fix for jobs that would share a folder) stopped
    by SIGTERM: each job that never started is listed from multirun.yaml, its job number read from the job folders'
    own records, and runs in a numbered folder inside the sweep (before: left out of the report, whose command the
    multirun's last line had promised; found by a probe). A stopped sweep's glob over a group's options, which the
    report cannot expand, is said in a line, not passed over."""
    sweep = tmp_path / "sweep"
    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

    def multirun(task: list[str]) -> dict:
        sweep_dir = {"dir": str(sweep), "subdir": "s${seed}"}
        return {
            "hydra": {"sweeper": {"_target_": basic, "params": None}, "sweep": sweep_dir, "overrides": {"task": task}}
        }

    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun(["experiment=paper_small", "seed=1,2,3"])))
    for num, (seed, ppl) in enumerate(((1, 440.0), (2, None))):
        job = sweep / f"s{seed}"
        write_job(job, ["experiment=paper_small", f"seed={seed}"], {}, TOY, ppl)
        hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())
        hydra["hydra"] |= {"job": {"num": num}, "sweep": {"dir": str(sweep), "subdir": "s${seed}"}}
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    table = png_report(sweep, PAPER)
    assert table.endswith(
        "- 2 (never started: no folder): "
        f"`rnnreg-train experiment=paper_small seed=3 hydra.run.dir={sweep / '2'} hydra.mode=RUN`\n"
    ), table
    assert "seed=2 hydra.run.dir" not in table  # (job 1, in s2, started: its own line says how it goes on)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun(["experiment=paper_small", "dropout=glob(n*)"])))
    assert png_report(sweep, PAPER).endswith(
        "- sweep: jobs of this sweep that never started are not listed: its overrides expand over a config group's "
        f"options (glob), which the report does not compose: compare the jobs of {sweep / 'multirun.yaml'} with the "
        "folders here\n"
    )


@pytest.mark.parametrize(
    "launch",
    [("-m", "experiment=paper_small"), ("experiment=ablation_placement", "dropout=none", "seed=1")],
    ids=["dash_m", "experiment_that_is_a_multirun"],
)
def test_a_basic_sweep_stopped_by_ctrl_c_completes_in_its_folder_with_the_commands_its_report_gives(
    tiny_corpus, tmp_path, launch
):
    """Ctrl-C in a basic sweep's first job ends the sweep; the report's commands, run as printed, go on with that job
    in its own folder from its last.ckpt (exactly: as the uninterrupted job of the same training ends) and run the
    job that never started in the folder the sweep would have given it, so that the sweep's report then lists every
    job completed (before: each ran in a new folder of its own, and the sweep's report listed one job interrupted and
    the other never started for ever). Also for a sweep that an experiment makes a multirun by itself
    (experiment=ablation_placement, no -m; before: its commands ran each job as a sweep of one in a new dated
    folder, hydra.run.dir unread, and the resume stopped on ckpt_path=last finding no run)."""
    ctrl_c_group(tmp_path / "lab")  # (+stop=at2 / +stop=never)
    args = [*launch, f"hydra.searchpath=[file://{tmp_path / 'lab'}]", *TINY]
    args += [f"data.data_dir={tiny_corpus}", f"paths.output_root={tmp_path}", "trainer.max_epochs=1", "test=false"]
    args += ["trainer.limit_train_batches=6"]
    sweep = tmp_path / "sweep"
    stopped = run("rnnreg-train", *args, "+stop=at2,never", f"hydra.sweep.dir={sweep}", check=False)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-2000:]
    table = run("rnnreg-report", f"path={sweep}").stdout
    commands = re.findall(r"^- (\d) \((?:interrupted|never started: no folder)\): `(rnnreg-train [^`]*)`$", table, re.M)
    assert [job for job, _ in commands] == ["0", "1"], table
    for _, command in commands:
        run(*shlex.split(command))  # exit 0
    table = run("rnnreg-report", f"path={sweep}").stdout
    assert re.findall(r"^\| (\d) \| [^|]* \| (\w+) \|", table, re.M) == [("0", "completed"), ("1", "completed")]
    assert "how each goes on" not in table and not list(tmp_path.glob("train")), table  # (no folder of its own)
    resumed, uninterrupted = (json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1"))
    assert resumed["best_val_ppl"] == uninterrupted["best_val_ppl"] and resumed["epochs"] == 1
    assert yaml.safe_load((sweep / "0" / ".hydra" / "overrides.yaml").read_text())[-2:] == [
        "+stop=at2",
        "ckpt_path=last",
    ]


def test_an_optuna_trial_stopped_by_ctrl_c_completes_in_its_folder_outside_its_study(tiny_corpus, tmp_path):
    """Ctrl-C in an Optuna study's first trial ends the study; the report's command goes on with that trial in its
    own folder, from its own last.ckpt, as a run alone (its sampled values, without hparams_search=optuna), so that
    the report then lists it completed; a line says that the study's record never counts it and that the trials it
    had yet to sample are not listed (before: the command ran in a new folder, and, holding hparams_search=optuna,
    started a new study of 20 trials of that trial's values)."""
    stop = tmp_path / "lab" / "stop"  # (a group of the user's: the report shows no command for a recorded _target_)
    stop.mkdir(parents=True)
    (stop / "at2.yaml").write_text(
        f"# @package _global_\ncallbacks:\n  signal_at:\n    _target_: helpers.SignalAt\n"
        f"    signum: {int(signal.SIGINT)}\n    window: 2\n"
    )
    study = tmp_path / "study"
    args = [f"hydra.searchpath=[file://{tmp_path / 'lab'}]", "experiment=paper_small", *TINY]
    args += [f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "trainer.limit_train_batches=6", "test=false"]
    args += ["hparams_search=optuna", "dropout=non_recurrent", "hydra.sweeper.n_trials=2", "+stop=at2"]
    stopped = run("rnnreg-train", *args, f"hydra.sweep.dir={study}", check=False)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-2000:]
    sampled = yaml.safe_load((study / "0" / ".hydra" / "config.yaml").read_text())["dropout"]["p"]
    table = png_report(study)
    [command] = re.findall(r"^- 0 \(interrupted\): `(rnnreg-train [^`]*)`$", table, re.M)
    assert (
        command.endswith(f" +stop=at2 ckpt_path=last hydra.run.dir={study / '0'} hydra.mode=RUN")
        and "hparams_search" not in command
    )
    assert table.endswith(
        f"- 0: trials of the Optuna study in {study}, which go on in their folders, outside it: its record "
        "(optimization_results.yaml, a hydra.sweeper.storage) never counts them, and the trials it had yet to sample "
        "are not listed: to search on, run the study again\n"
    )
    run(*shlex.split(command))  # exit 0
    table = png_report(study)
    assert re.findall(r"^\| (\d) \| [^|]* \| (\w+) \|", table, re.M) == [("0", "completed")], table
    assert "how each goes on" not in table and sorted(p.name for p in study.iterdir() if p.is_dir()) == ["0"]
    assert yaml.safe_load((study / "0" / ".hydra" / "config.yaml").read_text())["dropout"]["p"] == sampled
    assert json.loads((study / "0" / "metrics.json").read_text())["epochs"] == 1


def test_a_runs_row_shows_each_of_its_numbers_in_the_column_that_names_it(tmp_path):
    """A run's row: the one-stream and the batched test perplexities each in its own column, the training time
    in seconds and the words per second each in theirs (all from its metrics.json)."""
    write_job(tmp_path / "0", ["dropout=none"], {}, TOY, 440.0)
    metrics = json.loads((tmp_path / "0" / "metrics.json").read_text())
    metrics |= {"test_ppl_batched": 452.25, "train_seconds": 3725.0, "words_per_second": 12345.6}
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(metrics))
    header, _, row = png_report(tmp_path / "0", PAPER).splitlines()[:3]
    cells = dict(zip((c.strip() for c in header.strip("|").split("|")), (c.strip() for c in row.strip("|").split("|"))))
    assert cells["test ppl (1 stream)"] == "440.00" and cells["test ppl (batched)"] == "452.25"
    assert cells["train s"] == "3725" and cells["words/s"] == "12,346" and cells["epochs"] == "6"


def test_a_job_that_said_why_it_has_no_result_is_failed_or_stopped_and_the_report_says_why(tmp_path):
    """A multirun job that left error.txt and no metrics.json (bad input found once its folder existed; a signal
    before any result) is `failed` or `stopped`, not `unfinished`: a failed job is listed with its reason (as is a
    run whose metrics.json says failed) and no command that would fail again; a stopped one runs again."""
    reason = "missing train file /data/train.txt: put the train text file there (or set data.data_dir to it)"
    for job, placement in enumerate(("none", "both", "variational", "recurrent")):
        write_job(tmp_path / str(job), [f"dropout={placement}"], {"dropout": placement}, TOY, None)
    (tmp_path / "0" / "error.txt").write_text(f"{reason}\n")
    (tmp_path / "1" / "error.txt").write_text("stopped by SIGTERM before it finished; it wrote no metrics.json\n")
    diverged = {"status": "failed", "error": "training loss became nan at epoch 1, step 3", "epochs": 1}
    (tmp_path / "2" / "metrics.json").write_text(json.dumps(diverged))
    table = png_report(tmp_path, PAPER)
    statuses = {r["run"]: r["status"] for r in collect(tmp_path)}
    assert statuses == {"0": "failed", "1": "stopped", "2": "failed", "3": "unfinished"}
    assert f"Failed, and why:\n\n- 0: {reason}\n- 2: {diverged['error']}\n" in table
    assert "- 1 (stopped): no checkpoint was written: run it again, `rnnreg-train dropout=both`\n" in table
    assert "- 3 (unfinished): no checkpoint was written: run it again, `rnnreg-train dropout=recurrent`\n" in table
    assert "- 0 (" not in table and "- 2 (" not in table


def test_an_unfinished_runs_row_has_the_best_of_its_logged_validations(tmp_path):
    """A run without metrics.json (killed hard) has no best_val_ppl of its own: its row shows the lowest
    validation perplexity its csv/metrics.csv logged, and as epochs the last one logged."""
    write_job(tmp_path / "0", ["dropout=none"], {}, TOY, None)
    (row,) = collect(tmp_path / "0")
    logged = row["val_history"]
    assert list(logged) == [1, 2] and logged[2] < logged[1]  # a falling curve: its best is its last
    line = png_report(tmp_path / "0", PAPER).splitlines()[2]
    assert line.startswith(f"| 0 | dropout=none | unfinished | {logged[2]:.2f} | — | — | 2 |")


def test_a_resumed_job_stopped_before_its_first_checkpoint_runs_again_from_the_checkpoint_it_started_from(tmp_path):
    """A job that went on from an earlier checkpoint (ckpt_path=...) and was stopped before it wrote one of its own:
    `run it again` is its own command, that ckpt_path kept (without it the run would start from scratch)."""
    overrides = ["experiment=paper_small", "ckpt_path=/old/run/checkpoints/last.ckpt", "seed=2"]
    write_job(tmp_path / "job", overrides, {}, TOY, None)
    (tmp_path / "job" / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs": 0}))
    assert png_report(tmp_path / "job", PAPER).endswith(
        "- job (interrupted): no checkpoint was written: run it again, "
        "`rnnreg-train experiment=paper_small ckpt_path=/old/run/checkpoints/last.ckpt seed=2`\n"
    )


def test_labels_round_floats_and_figures_fit_long_labels(tmp_path, recwarn):
    """Optuna's trials differ in floats of 16 digits: a label has 4 significant digits (exact where rounding
    would make two alike), and a figure grows to hold its labels (no constrained_layout warning)."""
    for job, (rate, lr) in enumerate([(0.41234567890123456, 1.0), (0.2871234567812345, 1.2871234567812345)]):
        write_job(tmp_path / str(job), [f"dropout.p={rate!r}", f"optim.lr={lr!r}"], {}, TOY, 420.0 + job)
    for job, rate in enumerate([0.41236, 0.41237], start=2):  # alike at 4 digits
        write_job(tmp_path / str(job), [f"dropout.p={rate!r}", "optim.lr=1.0"], {}, TOY, 420.0 + job)
    labels = [e["label"] for e in configurations(collect(tmp_path))]
    assert labels == [
        "non_recurrent, p=0.4123, lr=1.0",
        "non_recurrent, p=0.2871, lr=1.287",
        "non_recurrent, p=0.41236, lr=1.0",
        "non_recurrent, p=0.41237, lr=1.0",
    ]
    long = tmp_path / "long"
    for job in range(12):
        overrides = [f"dropout.p={0.2 + job / 100!r}", *(f"optim.key{k}=value-{job}-{k}" for k in range(5))]
        write_job(long / str(job), overrides, {}, TOY, 420.0 + job)
    png_report(long, PAPER)
    assert not [w for w in recwarn if "constrained_layout" in str(w.message)]


@pytest.mark.parametrize(
    "file, text, why",
    [
        ("metrics.json", '{"status": "compl', "Unterminated string"),  # cut short
        ("metrics.json", "[1, 2]", "not a JSON object"),
        ("metrics.json", '{"test_ppl": "abc"}', 'test_ppl="abc" is not a number'),
        ("metrics.json", '{"best_val_ppl": 1e308}', "best_val_ppl=1e+308 is not a perplexity"),
        ("metrics.json", '{"status": 5}', "status=5 is not a run's status"),
        ("metrics.json", None, "Is a directory"),  # a folder where the file goes
        (".hydra/overrides.yaml", "- seed=1\n- dropout: [", "while parsing a flow"),
        (".hydra/config.yaml", "- 1\n", "not a YAML mapping"),
        ("csv/metrics.csv", "epoch,step,val/ppl\n0,49,abc\n", "could not convert string to float: 'abc'"),
        ("csv/metrics.csv", "epoch,step,val/ppl\ninf,49,3.5\n", "cannot convert float infinity to integer"),
        (".hydra/hydra.yaml", "hydra:\n  runtime: 3\n", "hydra.runtime is not a mapping"),
        (".hydra/config.yaml", "model: [650]\n", "model is not a mapping"),
    ],
)
def test_a_run_file_the_report_cannot_read_is_one_line(tmp_path, file, text, why):
    """A run's file cut short or edited (a folder copied from elsewhere) stops the report with one line naming the
    file and the fix, before it writes anything; the sweep's end lists a job whose metrics.json it cannot read as one
    that did not complete."""
    ablation(tmp_path)
    if text is None:
        (tmp_path / "4" / file).unlink()
        (tmp_path / "4" / file).mkdir()
    else:
        (tmp_path / "4" / file).write_text(text)
    path = re.escape(str(tmp_path / "4" / file))
    with pytest.raises(DataError, match=f"^{path} is not readable \\(.*{re.escape(why)}.*\\): restore it, or move"):
        collect(tmp_path)
    if file == "metrics.json" and text and text.startswith('{"status": "compl'):
        proc = run("rnnreg-report", f"path={tmp_path}", check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"error: {tmp_path / '4' / file} is not readable")
        assert not list(tmp_path.glob("report.md")) and not list(tmp_path.glob("*.png"))
        assert [job for job, _, _ in failed_jobs(tmp_path)] == ["4"]


@pytest.mark.parametrize(
    "file, content, why",
    [
        (".hydra/hydra.yaml", b"hydra:\n  runtime: {choices: [\n", "while parsing a flow"),  # cut short
        (".hydra/config.yaml", b"seed: 1\ntrainer: {max_epochs: 6}\n\xff\xfe\n", "can't decode byte 0xff"),
        (".hydra/hydra.yaml", None, "Is a directory"),  # a folder where the file goes
        (".hydra/config.yaml", b"3\n", "not a YAML mapping"),
        (".hydra/hydra.yaml", b"just text\n", "not a YAML mapping"),
    ],
)
def test_a_runs_yaml_record_the_report_cannot_read_is_one_line(tmp_path, file, content, why):
    """A run's YAML record (.hydra/hydra.yaml, config.yaml) cut short, not UTF-8, a folder, or not a mapping: the
    report stops with one line naming the file, why (its first line alone) and the fix, before it writes anything
    (not a traceback, nor a run read without its record)."""
    ablation(tmp_path, {"none": ABLATION["none"]})
    path = tmp_path / "1" / file
    path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    proc = run("rnnreg-report", f"path={tmp_path}", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    fix = "restore it, or move its run's folder out of the report's path"
    said = rf"error: {re.escape(str(path))} is not readable \([^\n]*{re.escape(why)}[^\n]*\): {re.escape(fix)}\n"
    assert re.fullmatch(said, proc.stderr), proc.stderr
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("file", [".hydra/overrides.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml"])
def test_a_yaml_record_the_system_cannot_read_is_one_line(tmp_path, file):
    """A run's YAML record whose read fails in the system (an I/O error: here a link to /proc/self/mem, which no
    user, root included, reads from its start): one line naming it and why, exit 2, nothing written (overrides.yaml
    gave a traceback)."""
    ablation(tmp_path, {"none": ABLATION["none"]})
    path = tmp_path / "1" / file
    path.unlink()
    path.symlink_to("/proc/self/mem")
    proc = run("rnnreg-report", f"path={tmp_path}", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    said = rf"error: {re.escape(str(path))} is not readable \([^\n]*Input/output error[^\n]*\): restore it, or move "
    assert re.match(said, proc.stderr), proc.stderr
    assert not (tmp_path / "report.md").exists()


def test_an_empty_yaml_record_is_read_as_a_run_without_those_settings(tmp_path):
    """An empty .hydra/hydra.yaml or config.yaml (YAML's null) is a record with nothing in it: the report reads the
    run, its placement from its overrides, as it reads one without the file."""
    ablation(tmp_path, {"none": ABLATION["none"]})
    (tmp_path / "1" / ".hydra" / "hydra.yaml").write_text("")
    (tmp_path / "2" / ".hydra" / "config.yaml").write_text("")
    rows = {r["run"]: r for r in collect(tmp_path)}
    assert rows["1"]["placement"] == "none" and rows["1"]["test_ppl"] == ABLATION["none"][1]
    assert rows["2"]["status"] == "completed" and rows["2"]["test_ppl"] == ABLATION["none"][2]
    assert "| 1 | seed=1 | completed |" in png_report(tmp_path, PAPER)


def test_a_run_whose_hydra_record_has_no_hydra_node_gets_its_command_from_its_overrides(tmp_path):
    """An unfinished run whose .hydra/hydra.yaml is a mapping without Hydra's node (a record from elsewhere): the
    report's command to run it again is rnnreg-train with its overrides, not a traceback."""
    write_job(tmp_path / "0", ["dropout=none", "seed=1"], {}, TOY, None)
    (tmp_path / "0" / ".hydra" / "hydra.yaml").write_text("job: {name: train}\n")
    assert "run it again, `rnnreg-train dropout=none seed=1`" in png_report(tmp_path, PAPER)


def test_odd_run_files_the_report_can_read_and_folders_it_cannot_write(tmp_path):
    """Files a run can have that the report reads: perplexities that are not finite in csv/metrics.csv (a
    diverging run's: left out of the curves), a config group chosen by a number, a deletion override (~seed);
    a sweep's multirun.yaml that is not Hydra's, and a folder where report.md goes, are one line each."""
    ablation(tmp_path)
    (tmp_path / "3" / "csv" / "metrics.csv").write_text("epoch,step,val/ppl\n0,49,inf\n1,99,nan\n2,149,812.5\n")
    hydra = yaml.safe_load((tmp_path / "4" / ".hydra" / "hydra.yaml").read_text())
    hydra["hydra"]["runtime"]["choices"]["model"] = 5
    (tmp_path / "4" / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (tmp_path / "5" / ".hydra" / "overrides.yaml").write_text("- dropout=recurrent\n- ~seed\n")
    rows = {r["run"]: r for r in collect(tmp_path)}
    assert rows["3"]["val_history"] == {3: 812.5} and rows["4"]["model"] == "5" and rows["5"]["seed"] == "1"
    png_report(tmp_path)
    assert (tmp_path / "val_ppl.png").is_file()
    (tmp_path / "multirun.yaml").write_text("hydra:\n  sweeper: [1]\n")
    with pytest.raises(DataError, match=r"multirun.yaml is not readable \(sweeper is not a mapping\)"):
        png_report(tmp_path)
    (tmp_path / "multirun.yaml").unlink()
    (tmp_path / "report.md").unlink()
    (tmp_path / "report.md").mkdir()
    written = f"could not write report.md in {re.escape(str(tmp_path))}: Is a directory; move the folder report.md away"
    with pytest.raises(OutputError, match=written):
        png_report(tmp_path)
    proc = run("rnnreg-report", f"path={tmp_path / '0'}", "paper=null", check=False)  # no reference lines
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_a_report_multirun_is_one_line_that_gives_a_command_per_folder(tmp_path, monkeypatch):
    """rnnreg-report -m path=a,b wrote Hydra's sweep folder (multirun/<date>/<time>/: multirun.yaml, a folder per
    job) into the current folder: one line, exit 2, nothing written; the commands it gives report each folder."""
    monkeypatch.chdir(tmp_path)
    ablation(tmp_path / "a", {"none": ABLATION["none"]})
    ablation(tmp_path / "b", {"none": ABLATION["none"]})
    proc = run("rnnreg-report", "-m", "path=a,b", check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: -m: rnnreg-report writes each folder's report into that folder, and a multirun would add Hydra's "
        "sweep folder (multirun/<date>/<time>) here: run it once per folder (rnnreg-report path=a, then "
        "rnnreg-report path=b), or report the runs of several folders together from a folder of links to them "
        "(path=<folder of links>)"
    ]
    assert sorted(os.listdir(tmp_path)) == ["a", "b"] and not list(tmp_path.rglob("report.md"))
    # hydra.mode=MULTIRUN: -m by another name
    proc = run("rnnreg-report", "path=a", "hydra.mode=MULTIRUN", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: hydra.mode=MULTIRUN: rnnreg-report writes ")
    assert "(rnnreg-report path=a)" in proc.stderr and sorted(os.listdir(tmp_path)) == ["a", "b"]
    # the commands keep the command's other values; a sweep without -m is the same line, and a sweep of formats is a
    # list (before: "add -m, or quote the value", two fixes that rnnreg-report refuses; found by a probe)
    proc = run("rnnreg-report", "path=a,b", "formats=[png]", check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: path=a,b: rnnreg-report writes each folder's report into that folder, and a multirun would add Hydra's "
        "sweep folder (multirun/<date>/<time>) here: run it once per folder (rnnreg-report path=a 'formats=[png]', "
        "then rnnreg-report path=b 'formats=[png]'), or report the runs of several folders together from a folder of "
        "links to them (path=<folder of links>)"
    ]
    proc = run("rnnreg-report", "path=a", "formats=png,pdf", check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: formats=png,pdf is a sweep, which rnnreg-report does not run: give a list (formats=[png,pdf])"
    ]
    assert sorted(os.listdir(tmp_path)) == ["a", "b"] and not list(tmp_path.rglob("report.md"))
    assert run("rnnreg-report", "path=a").returncode == 0 and (tmp_path / "a" / "report.md").is_file()


def test_report_piped_into_head_exits_quietly(tmp_path):
    """`rnnreg-report ... | head -1`: the pipe may close before the report is printed (`| true` closes it at
    once); no BrokenPipeError traceback."""
    ablation(tmp_path)
    command = [str(BIN / "rnnreg-report"), f"path={tmp_path}"]
    head = piped(command, ["head", "-1"])
    assert head.stdout.startswith("| run |") and head.stdout.count("\n") == 1
    closed = piped(command, ["true"])
    for proc in (head, closed):
        assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_the_sweeps_end_lists_a_job_by_what_it_wrote_last(tmp_path):
    """failed_jobs: error.txt (a job's reason for having no result), a metrics.json that says failed or interrupted
    (interrupted: it goes on, unless an error.txt came after it), an error.txt saying a signal stopped the job before
    it wrote a result (stopped: it runs again from the start); a completed metrics.json written after an error.txt
    is a job that ran again (requeued) and completed, so it is not listed, nor is a job older than the multirun,
    nor an evaluation's result (it has no status; an unreadable metrics.json is listed:
    test_a_run_file_the_report_cannot_read_is_one_line). Jobs are listed by number (10 after 8)."""

    def job(name: str, status: str | None = None, error: bool | str = False, error_after: bool = False) -> None:
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("{}\n")
        (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={name}\n")
        if error is True:  # a UserError's line
            error = "dropout.p=2 must be a number in [0, 1)\n"
        files = [(folder / "error.txt", error)] if error else []
        files += [(folder / "metrics.json", json.dumps({"status": status}))] if status else []
        for when, (path, text) in enumerate(reversed(files) if error_after else files):
            path.write_text(text)
            os.utime(path, (1_000_000 + when, 1_000_000 + when))

    job("0", "completed")
    job("1", error=True)
    job("2", "completed", error=True)  # ran again after its error.txt, and completed
    job("3", "completed", error=True, error_after=True)
    job("4", "failed")
    job("5", "interrupted")
    job("6")
    (tmp_path / "6" / "metrics.json").write_text(json.dumps({"test_ppl": 101.2}))  # an evaluation's: no status
    job("7", "interrupted", error=True)  # failed, ran again and was stopped: it goes on from its last.ckpt
    job("8", "interrupted", error=True, error_after=True)  # stopped, then ran again and failed: not stopped
    job("10", "failed")  # listed after 8: by job number, not as text
    # an evaluation a signal stopped before it wrote a result (rnnreg-eval in a submitit job): run it again
    job("11", error="stopped by SIGTERM before it finished; it wrote no metrics.json (run it again)\n")
    job("12", "completed", error="stopped by SIGTERM before it finished; ...\n")  # then ran again, and completed
    job("13")
    (tmp_path / "13" / "error.txt").mkdir()  # an error.txt that cannot be read: failed, without a traceback
    assert failed_jobs(tmp_path) == [
        ("1", ["seed=1"], "failed"),
        ("3", ["seed=3"], "failed"),
        ("4", ["seed=4"], "failed"),
        ("5", ["seed=5"], "interrupted"),
        ("7", ["seed=7"], "interrupted"),
        ("8", ["seed=8"], "failed"),
        ("10", ["seed=10"], "failed"),
        ("11", ["seed=11"], "stopped"),
        ("13", ["seed=13"], "failed"),
    ]
    assert failed_jobs(tmp_path, since=time.time() + 60) == []  # every file older than that multirun


@pytest.mark.parametrize(
    ("task", "claimed", "says"), [("train", True, True), ("eval", True, False), ("train", False, False)]
)
def test_only_a_training_multirun_that_completed_ends_with_the_report_command(tmp_path, capsys, task, claimed, says):
    """The multirun's end: a training sweep whose jobs all completed names rnnreg-report's command for its folder;
    an evaluation sweep (rnnreg-report tables training runs) and a process that does not hold the sweep folder (a DDP
    process Lightning started with rank 0's command line) say nothing. (A sweep with a failed job:
    test_a_completed_multirun_ends_with_the_command_that_compares_its_jobs.)"""
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("{}\n")
    (job / "metrics.json").write_text(json.dumps({"status": "completed"}))
    callback = SweepCallback()
    if claimed:
        callback.lock = RunLock(tmp_path, "hydra.sweep.dir")
        callback.lock.acquire()
    callback.on_multirun_end(OmegaConf.create({"task_name": task, "hydra": {"sweep": {"dir": str(tmp_path)}}}))
    line = f"the multirun's jobs completed in {tmp_path}: rnnreg-report path={tmp_path} compares them\n"
    assert capsys.readouterr().out == (line if says else "")
    assert RunLock.in_use(tmp_path, "hydra.sweep.dir") is None  # released


@pytest.mark.parametrize("name", ["my sweep", "o u't, [1]"])
def test_the_report_command_a_multirun_ends_with_pastes_for_a_folder_with_a_space(tmp_path, capsys, name):
    """A sweep folder with a space in its name, or a quote, comma or bracket: the closing line's command is quoted
    for a shell and for Hydra's override parser, and runs (before: a quote reached Hydra as the start of a quoted
    value)."""
    sweep = tmp_path / name
    write_job(sweep / "0", ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 440.0)
    callback = SweepCallback()
    callback.lock = RunLock(sweep, "hydra.sweep.dir")  # (the sweep's own process: it holds the folder)
    callback.lock.acquire()
    callback.on_multirun_end(OmegaConf.create({"task_name": "train", "hydra": {"sweep": {"dir": str(sweep)}}}))
    line = capsys.readouterr().out
    assert line.startswith(f"the multirun's jobs completed in {sweep}: rnnreg-report ")
    command = shlex.split(line.split(": ", 1)[1].removesuffix(" compares them\n"))
    assert command[0] == "rnnreg-report" and OverridesParser.create().parse_override(command[1]).value() == str(sweep)
    run(*command)
    assert (sweep / "report.md").is_file()


def test_a_failed_job_is_reported_alike_by_every_launcher(tmp_path, capsys):
    """report_failed_job (a basic job's UserError, a stacked member's failure): one line on stderr naming the job
    by what its sweep varies, its error.txt, and what the sweeper is handed: Hydra's basic sweeper None (the sweep
    goes on), any other a JobFailed. An error.txt that cannot be written leaves the line alone to say it (the
    stacked launcher used to stop the whole sweep there with a traceback; a basic job did not)."""
    overrides = ["seed=3", "dropout=none", "hydra.sweep.dir=/x"]
    assert report_failed_job(4, overrides, ["seed"], "data.bptt=0 must be >= 1", tmp_path, basic=True) is None
    assert capsys.readouterr().err == "error: job 4 (seed=3) failed: data.bptt=0 must be >= 1\n"
    assert (tmp_path / "error.txt").read_text() == "data.bptt=0 must be >= 1\n"
    failed = report_failed_job(5, overrides, None, "diverged", tmp_path / "error.txt" / "no folder", basic=False)
    assert isinstance(failed, JobFailed) and str(failed) == "diverged"
    assert capsys.readouterr().err == "error: job 5 (seed=3 dropout=none) failed: diverged\n"


def test_inside_job_puts_back_hydras_config_and_the_jobs_flag_even_after_an_error():
    """inside_job sets Hydra's config to a job's for ${hydra:...} (Hydra's set_config makes the job's hydra node
    read-only); leaving it, by an error too, puts back Hydra's config and the node's flag as they were: the sweep's
    code goes on writing to a job's config (job_configs' hydra.job.num), a read-only one stays read-only."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        sweep, job, frozen = (compose("train", ["experiment=smoke"], return_hydra_config=True) for _ in range(3))
    for config, num in ((sweep, 0), (job, 3), (frozen, 5)):
        with open_dict(config):
            config.hydra.job.num = num
    OmegaConf.set_readonly(frozen.hydra, True)
    hydra, before = HydraConfig.instance(), HydraConfig.instance().cfg
    hydra.set_config(sweep)
    try:
        for fails in (False, True):
            with pytest.raises(KeyError) if fails else contextlib.nullcontext(), inside_job(job):
                assert OmegaConf.create({"num": "${hydra:job.num}"}).num == 3
                if fails:
                    raise KeyError("a job's bad key")
            assert HydraConfig.get().job.num == 0 and not OmegaConf.is_readonly(job.hydra), fails
            job.hydra.job.num = 3  # (a read-only node refuses it)
        with pytest.raises(KeyError), inside_job(frozen):
            raise KeyError("a job's bad key")
        assert OmegaConf.is_readonly(frozen.hydra) and HydraConfig.get().job.num == 0
    finally:
        hydra.cfg = before


def test_a_configuration_far_from_the_rest_puts_the_test_axis_on_a_log_scale(tmp_path):
    """The paper-scale ablation's seed 1234 on an H200 (2026-12-04): no dropout overfits to 662 while the others
    end at 80-113. On a linear axis 80.5, 82.3 and 83.6 would meet; on a log one they stay apart, every tick a
    plain number, and the axis says so. A spread under 2x (the toy ablation) keeps a linear axis."""
    gpu = {
        "none": (661.99,),
        "non_recurrent": (83.63,),
        "recurrent": (113.25,),
        "both": (80.47,),
        "variational": (82.35,),
    }
    rows = collect(ablation(tmp_path / "gpu", gpu, "ablation_placement_full", FULL_MEDIUM))
    ax = figure_test_ppl(rows, PAPER).axes[0]
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
    lo, hi = ax.get_xlim()
    assert lo < 80.47 and hi > 661.99
    # the three close placements a visible distance apart (on the linear axis: 0.3 % and 0.2 % of its width)
    spread = math.log(hi / lo)
    assert math.log(82.35 / 80.47) / spread > 0.008 and math.log(83.63 / 82.35) / spread > 0.005
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(ticks) >= 4 and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
    toy = figure_test_ppl(collect(ablation(tmp_path / "toy")), PAPER).axes[0]
    assert toy.get_xscale() == "linear" and "log scale" not in toy.get_xlabel()


def test_sweeps_of_the_same_overrides_from_configs_that_differ_are_never_seeds_of_one_configuration(
    tiny_corpus, tmp_path
):
    """Two sweeps of one command, each from its own config folder (hydra.searchpath: an experiment of the user's
    whose learning rate was changed between them): their runs are two configurations, told apart by the key
    their .hydra/config.yaml differ in, and a note says why (before: one configuration, the second sweep's runs
    dropped as the same seeds run twice)."""
    for name, lr in (("a", 1.0), ("b", 0.5)):
        (tmp_path / "conf" / name / "experiment").mkdir(parents=True)
        mine = f"# @package _global_\ndefaults:\n  - paper_small\nexperiment_name: mine\noptim:\n  lr: {lr}\n"
        (tmp_path / "conf" / name / "experiment" / "mine.yaml").write_text(mine)
        run(
            "rnnreg-train",
            "-m",
            "seed=1,2",
            "experiment=mine",
            *TINY,
            f"data.data_dir={tiny_corpus}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "extras.print_config=false",
            f"hydra.searchpath=[file://{tmp_path / 'conf' / name}]",
            f"hydra.sweep.dir={tmp_path / 'compare' / name}",
        )
    table = png_report(tmp_path / "compare")
    over_seeds = table.split("Over seeds:")[1]
    assert "| optim.lr=1.0 | 2 | " in over_seeds and "| optim.lr=0.5 | 2 | " in over_seeds
    assert "ran 2 times" not in table and "differ in their .hydra/config.yaml (optim.lr: " in table
    rows = collect(tmp_path / "compare")
    b = [r["test_ppl"] for r in rows if r["run"].startswith("b/")]
    assert f"| optim.lr=0.5 | 2 | {mean_sd_text({r['run']: r for r in rows}, ['b/0', 'b/1'])} | " in over_seeds
    assert f"{statistics.mean(b):.2f} ± {statistics.stdev(b):.2f}" in over_seeds.split("| optim.lr=0.5 |")[1]
    assert sorted(e["label"] for e in configurations(rows)) == ["none, lr=0.5", "none, lr=1.0"]


def test_overrides_every_run_shares_are_shown_once_above_the_table(tmp_path):
    """A budget given to every job of a sweep (`trainer.max_epochs=1` on the multirun's command line) tells no run
    apart, so each row leaves it out; it is shown once, above the table, whose columns stay as they are (before:
    it was nowhere, and a reader could not tell the budget). A run alone shows its own overrides in its row."""
    budget = ["experiment=paper_small", "trainer.max_epochs=1", "trainer.limit_train_batches=6"]
    for job, placement in enumerate(("none", "recurrent")):
        write_job(tmp_path / str(job), [*budget[:1], f"dropout={placement}", *budget[1:]], {}, TOY, 440.0 + job)
    table = png_report(tmp_path)
    assert table.startswith(
        "every run: experiment=paper_small trainer.max_epochs=1 trainer.limit_train_batches=6\n\n| run | overrides |"
    )
    assert "| 0 | dropout=none | completed |" in table and "| 1 | dropout=recurrent | completed |" in table
    alone = png_report(tmp_path / "0")
    assert alone.startswith("| run |") and "| 0 | experiment=paper_small dropout=none trainer.max_epochs=1 " in alone


def test_overrides_given_in_another_order_are_one_configuration(tmp_path):
    """Seeds of one configuration added later with the overrides in another order (or by another sweep whose
    command listed them otherwise) are one row over seeds and one entry in the figures."""
    write_job(tmp_path / "a/0", ["dropout=none", "model.init_scale=0.05", "seed=1"], {"dropout": "none"}, TOY, 440.0)
    write_job(tmp_path / "b/0", ["seed=2", "model.init_scale=0.05", "dropout=none"], {"dropout": "none"}, TOY, 450.0)
    write_job(tmp_path / "b/1", ["seed=2", "model.init_scale=0.1", "dropout=recurrent"], {}, TOY, 430.0)
    over_seeds = png_report(tmp_path).split("Over seeds:")[1]
    assert "| dropout=none model.init_scale=0.05 | 2 | 459.78 ± 7.23 | 445.00 ± 7.07 |" in over_seeds
    assert [len(e["runs"]) for e in configurations(collect(tmp_path))] == [2, 1]


def test_the_mean_over_seeds_names_the_seeds_that_did_not_complete(tmp_path):
    """A configuration's mean is over its completed seeds: a seed that diverged (failed), was interrupted or is
    still running is named beside it, so that a placement whose seeds diverge is not read as one that trains well."""
    root = ablation(tmp_path / "sweep", {"none": ABLATION["none"], "both": ABLATION["both"]})
    diverged = {"status": "failed", "error": "training loss became nan at epoch 2, step 3", "epochs": 2}
    (root / "2" / "metrics.json").write_text(json.dumps(diverged))  # dropout=none's seed 2
    write_job(root / "6", ["dropout=none", "seed=3"], {"dropout": "none"}, TOY, None)  # killed: unfinished
    text = png_report(root)
    assert "| dropout=none | 2 | " in text.split("Over seeds:")[1]
    assert (
        "- configuration `dropout=none`: its mean is over its 2 completed seed(s) only; not counted: "
        "2 (seed 2, failed), 6 (seed 3, unfinished)\n" in text
    )
    assert "configuration `dropout=both`: its mean" not in text


def test_a_configuration_with_one_seed_completed_of_several_keeps_its_row_over_seeds(tmp_path):
    """A placement two of whose three seeds diverged keeps its row in the table over seeds (its one seed's
    perplexities, no sd), as its figure draws it and as the note that names the others says (before: the row was
    left out, while the note spoke of its mean over 1 completed seed: a table copied for a paper lost the placement).
    A configuration run with one seed alone has no row there."""
    root = ablation(tmp_path / "sweep", {"none": ABLATION["none"], "both": ABLATION["both"]})
    diverged = {"status": "failed", "error": "training loss became nan at epoch 2, step 3", "epochs": 2}
    for job in ("4", "5"):  # dropout=both's seeds 1 and 2
        (root / job / "metrics.json").write_text(json.dumps(diverged))
    write_job(tmp_path / "sweep" / "more" / "0", ["dropout=recurrent", "seed=1"], {"dropout": "recurrent"}, TOY, 430.0)
    text = png_report(root)
    over_seeds = text.split("Over seeds:")[1].split("Notes:")[0]
    assert "| dropout=none | 3 | " in over_seeds
    assert re.search(r"^\| dropout=both \| 1 \| [0-9.]+ ± — \| 402\.56 ± — \| [0-9.]+ ± — \|$", over_seeds, re.M)
    assert "dropout=recurrent" not in over_seeds, over_seeds
    assert "- configuration `dropout=both`: its mean is over its 1 completed seed(s) only; not counted: " in text


def test_a_value_written_another_way_is_one_configuration(tmp_path):
    """`dropout.p=.5`, `++dropout.p=0.50` and `+dropout.p=5e-1` set one value: their seeds are one configuration
    (before: three, each of one seed, and no row over seeds)."""
    for job, (p, seed) in enumerate((("dropout.p=.5", 1), ("++dropout.p=0.50", 2), ("+dropout.p=5e-1", 3))):
        write_job(tmp_path / str(job), ["dropout=both", p, f"seed={seed}"], {"dropout": "both"}, TOY, 430.0 + job)
    write_job(tmp_path / "3", ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 450.0)
    over_seeds = png_report(tmp_path).split("Over seeds:")[1]
    assert "| dropout=both dropout.p=.5 | 3 | " in over_seeds and "| 431.00 ± 1.00 |" in over_seeds


def test_a_flag_as_an_optuna_study_records_it_is_the_value_a_command_line_writes(tmp_path):
    """An Optuna study records a choice as Python writes it (`test=False`), a basic sweep as it was typed
    (`test=false`); Hydra reads `TRUE`, `true` and `True` alike, and `NULL` as `null`: one configuration each (before:
    two rows of one seed each, and no mean over them)."""
    jobs = (["test=false", "dropout.p=null"], ["test=False", "dropout.p=NULL"], ["++test=FALSE", "dropout.p=Null"])
    for job, overrides in enumerate(jobs):
        write_job(
            tmp_path / str(job), ["dropout=both", *overrides, f"seed={job + 1}"], {"dropout": "both"}, TOY, 430 + job
        )
    write_job(tmp_path / "3", ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 450.0)
    over_seeds = png_report(tmp_path).split("Over seeds:")[1]
    assert "| dropout=both test=false dropout.p=null | 3 | " in over_seeds and "| 431.00 ± 1.00 |" in over_seeds


def test_two_keys_of_one_last_part_keep_their_labels_apart(tmp_path):
    """A figure's label names a key by its last part (`p=0.3`) only where no other key drawn ends so: `dropout.p`
    and `regularizer.weight_drop.p` stay apart (before: `p=0.3, p=0.5` and `p=0.5, p=0.3` for two configurations)."""
    for job, (a, b) in enumerate(((0.3, 0.5), (0.5, 0.3))):
        overrides = ["dropout=both", f"dropout.p={a}", f"+regularizer.weight_drop.p={b}", "optim.lr=1.0", "seed=1"]
        write_job(tmp_path / str(job), overrides, {"dropout": "both"}, TOY, 430.0 + job)
    labels = sorted(e["label"] for e in configurations(collect(tmp_path)))
    assert labels == ["both, dropout.p=0.3, weight_drop.p=0.5", "both, dropout.p=0.5, weight_drop.p=0.3"]


def test_one_relative_corpus_folder_given_from_two_folders_is_two_configurations(tmp_path):
    """`data.data_dir=corpus` run from two working folders read two corpora: never seeds of one configuration (before:
    the config's text was the same, and they were pooled); from one folder they are, as is an absolute path from two."""

    def job(name: str, cwd: str, data_dir: str, seed: int, ppl: float) -> None:
        folder = tmp_path / name
        write_job(folder, ["data=text", f"data.data_dir={data_dir}", f"seed={seed}"], {"data": "text"}, TOY, ppl)
        for file, path, value in (("hydra.yaml", ("hydra", "runtime", "cwd"), cwd), ("config.yaml", ("data",), None)):
            record = yaml.safe_load((folder / ".hydra" / file).read_text())
            if value is None:
                record["data"]["data_dir"] = data_dir
            else:
                record[path[0]][path[1]][path[2]] = value
            (folder / ".hydra" / file).write_text(yaml.safe_dump(record))

    job("a/0", "/home/me/one", "corpus", 1, 400.0)
    job("a/1", "/home/me/one", "corpus", 2, 402.0)
    job("b/0", "/home/me/two", "corpus", 3, 500.0)
    over_seeds = png_report(tmp_path).split("Over seeds:")[1]
    assert "| data.data_dir=/home/me/one/corpus | 2 | 414.81 ± 1.45 | 401.00 ± 1.41 |" in over_seeds
    assert "(data.data_dir: a relative folder, given from two working folders)" in over_seeds
    runs = png_report(tmp_path).split("Over seeds:")[0]
    assert "| b/0 | seed=3 data.data_dir=/home/me/two/corpus |" in runs
    job("c/0", "/home/me/one", "/data/corpus", 1, 300.0)
    job("c/1", "/home/me/two", "/data/corpus", 2, 302.0)
    assert "| (same) | 2 | 312.62 ± 1.45 | 301.00 ± 1.41 |" in png_report(tmp_path / "c").split("Over seeds:")[1]


def test_a_key_a_later_version_added_or_a_speed_setting_makes_no_other_configuration(tmp_path):
    """Seeds of one recipe run by two versions of rnnreg (the later's config has a key the earlier lacked, at its
    default) or with other speed settings (how fast, never what is computed) stay one configuration: the paper-scale
    ablation's seeds were run days apart (speed.triton_update came between them)."""
    write_job(tmp_path / "a/0", ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 440.0)
    write_job(tmp_path / "b/0", ["dropout=none", "seed=2"], {"dropout": "none"}, TOY, 450.0)
    config = yaml.safe_load((tmp_path / "b/0/.hydra/config.yaml").read_text())
    config["optim"] = {**config.get("optim", {}), "a_later_key": False}
    config["speed"] = {"tf32": True}
    (tmp_path / "b/0/.hydra/config.yaml").write_text(yaml.safe_dump(config))
    table = png_report(tmp_path)
    assert "| (same) | 2 | 459.78 ± 7.23 | " in table.split("Over seeds:")[1] and "config.yaml" not in table


def test_a_searchpath_given_with_plus_is_a_config_folder_too():
    """`+hydra.searchpath=` and `++hydra.searchpath=` set it as the plain override does: the report's folder check
    reads their folders (before: only the plain form's)."""
    from rnnreg.config_search import command_config_folders

    for form in ("", "+", "++"):
        assert command_config_folders(["rnnreg-train", f"{form}hydra.searchpath=[file:///tmp/x]"]) == ["/tmp/x"]
    assert command_config_folders(["rnnreg-train", "--config-dir", "/a", "--config-dir=/b"]) == ["/a", "/b"]


def test_a_searchpath_folder_without_a_scheme_is_a_config_folder_too():
    """A hydra.searchpath entry without a scheme is a folder (Hydra reads it as file://): the report's folder check
    reads it; a pkg:// entry (an installed package, whose code runs anyway) is none."""
    from rnnreg.config_search import command_config_folders

    words = ["rnnreg-train", "hydra.searchpath=[/tmp/x,file:///tmp/y,pkg://lab.configs]"]
    assert command_config_folders(words) == ["/tmp/x", "/tmp/y"]


def test_the_mean_over_seeds_names_only_the_seeds_it_lacks(tmp_path):
    """A seed that diverged and was run again to completion (another sweep) is counted, not named as left out; a
    configuration's seeds that did not complete are named once, in its note, not in notes of their own."""
    root = ablation(tmp_path / "a", {"none": ABLATION["none"], "both": ABLATION["both"]})
    diverged = {"status": "failed", "error": "training loss became nan at epoch 2, step 3", "epochs": 2}
    (root / "2" / "metrics.json").write_text(json.dumps(diverged))  # dropout=none's seed 2 ...
    write_job(tmp_path / "b" / "0", ["dropout=none", "seed=2"], {"dropout": "none"}, TOY, 450.0)  # ... run again
    write_job(root / "6", ["dropout=none", "seed=3"], {"dropout": "none"}, TOY, None)  # killed: unfinished
    text = png_report(tmp_path)
    assert "| dropout=none | 3 | " in text.split("Over seeds:")[1]
    notes = text.split("\nNotes:\n\n")[1].split("\n\n")[0]
    assert notes == (
        "- configuration `dropout=none`: its mean is over its 3 completed seed(s) only; not counted: "
        "a/6 (seed 3, unfinished)"
    )


def test_a_fast_dev_run_beside_the_seeds_of_its_configuration_adds_no_note(tmp_path):
    """A fast_dev_run among a configuration's seeds, their config.yaml as a run writes it (trainer.fast_dev_run:
    false in each seed's, true in its own): the seeds are one configuration shown by their overrides alone, and no
    note names the debug pass as a seed left out nor as a config that changed between them."""
    tests = ABLATION["non_recurrent"]
    root = ablation(tmp_path / "sweep", {"non_recurrent": tests}, trainer=TOY | {"fast_dev_run": False})
    write_job(root / "3", ["dropout=non_recurrent", "seed=3"], {}, TOY | {"fast_dev_run": True}, 9000.0)
    text = png_report(root)
    mean, sd = statistics.mean(tests), statistics.stdev(tests)
    assert "| (same) | 3 | " in text.split("Over seeds:")[1] and f"| {mean:.2f} ± {sd:.2f} |" in text
    assert "| 0 | seed=1234 | completed |" in text and "Notes:" not in text, text


def test_an_unfinished_run_resumed_into_its_folder_shows_its_last_epoch_and_each_gap(tmp_path):
    """A run resumed into its folder and then killed hard (no metrics.json), whose csv/metrics.csv lacks epochs 1–2
    and 4: its row's epochs is the last it logged (6, not the 3 it has values for), and the note names each gap."""
    write_job(tmp_path / "0", ["dropout=none"], {}, TOY, 440.0)
    (tmp_path / "0" / "metrics.json").unlink()
    csv_file = tmp_path / "0" / "csv" / "metrics.csv"
    header, *lines = csv_file.read_text().splitlines()
    kept = [line for line in lines if line.split(",")[0] not in {"0", "1", "3"}]  # epochs 1, 2 and 4: none
    csv_file.write_text("\n".join([header, *kept]) + "\n")
    (row,) = collect(tmp_path / "0")
    assert list(row["val_history"]) == [3, 5, 6]
    table = png_report(tmp_path / "0", PAPER)
    best = min(row["val_history"].values())
    assert table.splitlines()[2].startswith(f"| 0 | dropout=none | unfinished | {best:.2f} | — | — | 6 |")
    assert "- 0: csv/metrics.csv has no validation perplexity for epoch(s) 1–2, 4 (a resumed run" in table


def test_a_seed_given_twice_is_the_seed_hydra_applied_last(tmp_path):
    """`seed=1 seed=2` (a pasted command with a seed added at its end): Hydra runs seed 2, and the report counts
    it as seed 2, beside the configuration's seed 1 (before a seed read first would make it seed 1 run twice)."""
    write_job(tmp_path / "a" / "0", ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 440.0)
    write_job(tmp_path / "b" / "0", ["dropout=none", "seed=1", "seed=2"], {"dropout": "none"}, TOY, 450.0)
    config = yaml.safe_load((tmp_path / "b/0/.hydra/config.yaml").read_text())
    (tmp_path / "b/0/.hydra/config.yaml").write_text(yaml.safe_dump(config | {"seed": 2}))
    text = png_report(tmp_path)
    assert "| (same) | 2 | " in text.split("Over seeds:")[1] and "ran 2 times" not in text
    assert "Notes:" not in text  # (a seed is no config key of its own: its value differs from run to run)


def test_runs_that_did_not_complete_are_never_a_mean_over_seeds(tmp_path):
    """Two runs of one configuration told apart by the seed of their config alone (no seed= override) that both
    failed: two rows of the table, each failed, and no row over seeds (a mean of runs that diverged)."""
    for name, seed in (("a", 1), ("b", 2)):
        write_job(tmp_path / name, ["dropout=none"], {"dropout": "none"}, TOY, 440.0 + seed)
        config = yaml.safe_load((tmp_path / name / ".hydra" / "config.yaml").read_text())
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config | {"seed": seed}))
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        diverged = {"status": "failed", "error": "training loss became nan at epoch 6, step 3"}
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics | diverged))
    assert [(r["seed"], r["status"]) for r in collect(tmp_path)] == [("1", "failed"), ("2", "failed")]
    assert "Over seeds:" not in png_report(tmp_path)


def test_a_failed_job_is_named_by_the_overrides_that_count(tmp_path, capsys):
    """A failed job's line names it by its swept overrides, a key given twice once with the value Hydra applied
    (the last); a job told apart only by overrides that name no run (an evaluation sweep over ckpt_path) by those."""
    overrides = ["seed=1", "dropout=none", "seed=2"]
    report_failed_job(0, overrides, None, "diverged", tmp_path, basic=True)
    assert capsys.readouterr().err == "error: job 0 (dropout=none seed=2) failed: diverged\n"
    report_failed_job(1, ["ckpt_path=/runs/a/last.ckpt", "data.batch_size=8"], ["ckpt_path"], "x", tmp_path, basic=True)
    assert capsys.readouterr().err == "error: job 1 (ckpt_path=/runs/a/last.ckpt) failed: x\n"


def test_a_sweep_with_an_interpolation_in_an_override_knows_the_keys_it_varies():
    """swept_keys of a multirun whose command line holds an interpolation that each job resolves
    (`+logger.wandb.id=run_${seed}`): the keys it varies, which name its jobs (not none: the interpolation is left
    as given)."""
    from rnnreg.multirun_jobs import swept_keys

    hydra = OmegaConf.create({"overrides": {"task": ["seed=1,2", "+logger.wandb.id=run_${seed}", "dropout=none"]}})
    assert swept_keys(hydra) == ["seed"]


def test_a_job_without_its_sweeps_record_names_the_keys_its_search_space_varies(tmp_path):
    """job_swept_keys in a multirun job whose sweep folder has no sweep.yaml (the sweep's process wrote it on another
    machine's disk): the keys its sweeper's search space varies, which name the job (its failure line, its run)."""
    from rnnreg.multirun_jobs import job_swept_keys

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        overrides = ["experiment=smoke", "dropout=none", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path}"]
        job = compose("train", overrides, return_hydra_config=True)
    with open_dict(job):
        job.hydra.sweeper.params = {"seed": "1,2"}
    with inside_job(job):
        assert job_swept_keys() == ["seed"]


SWEEP_RECORDS_CUT_SHORT = {"not YAML": b"swept: [seed\n", "not UTF-8": b"swept: [\xff]\n", "a list": b"- seed\n"}
SWEEP_RECORDS_CUT_SHORT["a number"] = b"swept: 5\n"


def multirun_job(sweep_dir: Path) -> DictConfig:
    """Job 0 of a multirun over seed=1,2 in `sweep_dir`, composed by Hydra (its folder set, as its launcher sets it)."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        overrides = ["experiment=smoke", "seed=1", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}"]
        job = compose("train", overrides, return_hydra_config=True)
    with open_dict(job):
        job.hydra.job.num = 0
        job.hydra.runtime.output_dir = str(sweep_dir / "0")
    return job


@pytest.mark.parametrize("record", [*SWEEP_RECORDS_CUT_SHORT, "unreadable"])
def test_a_jobs_sweep_record_cut_short_is_one_line_naming_it(tmp_path, record):
    """job_swept_keys where the sweep's sweep.yaml was cut short or edited (not YAML, not UTF-8, not a mapping, its
    keys not a list) or the system cannot read it (an I/O error: a link to /proc/self/mem, which root cannot read
    either): one line naming the file and the fix, not a traceback (before: a YAML, Unicode, attribute, type or OS
    error)."""
    from rnnreg.multirun_jobs import job_swept_keys

    if record == "unreadable":
        (tmp_path / "sweep.yaml").symlink_to("/proc/self/mem")
    else:
        (tmp_path / "sweep.yaml").write_bytes(SWEEP_RECORDS_CUT_SHORT[record])
    with inside_job(multirun_job(tmp_path)), pytest.raises(DataError) as raised:
        job_swept_keys()
    assert str(raised.value).startswith(f"{tmp_path / 'sweep.yaml'} is not readable (")
    assert str(raised.value).endswith("): delete it (a sweep writes it again as it starts)")
    assert "\n" not in str(raised.value)


def test_a_job_whose_sweep_record_is_cut_short_fails_with_one_line_and_the_sweep_goes_on(tmp_path, capsys):
    """A multirun job that reads its sweep.yaml cut short (its W&B run's name: loggers.run_name) fails as a job with a
    UserError does: one line naming it (by its overrides), its error.txt, and the basic sweeper goes on with the next
    job (before: the error again while naming the job, a traceback that ended the sweep)."""
    from rnnreg.loggers import run_name
    from rnnreg.runtime import user_errors_as_one_line

    (tmp_path / "sweep.yaml").write_bytes(SWEEP_RECORDS_CUT_SHORT["not YAML"])
    job = multirun_job(tmp_path)
    (tmp_path / "0").mkdir()
    task = OmegaConf.create({key: job._get_node(key) for key in job.keys() if key != "hydra"})
    with inside_job(job):
        assert user_errors_as_one_line(lambda cfg: run_name(None))(task) is None
    why = f"{tmp_path / 'sweep.yaml'} is not readable"
    err = capsys.readouterr().err
    assert err.startswith(f"error: job 0 (experiment=smoke seed=1) failed: {why}") and err.count("\n") == 1
    assert (tmp_path / "0" / "error.txt").read_text().startswith(why)


def test_a_key_given_twice_is_the_configuration_of_its_last_value(tmp_path):
    """A command pasted with a value changed at its end (`model.init_scale=0.1 ... model.init_scale=0.05`) runs
    the last value, as Hydra applies it: its seed is one of that configuration's (before: a configuration of its
    own, of one seed, and the mean left it out)."""
    write_job(tmp_path / "a/0", ["dropout=none", "model.init_scale=0.05", "seed=1"], {"dropout": "none"}, TOY, 440.0)
    overrides = ["dropout=none", "model.init_scale=0.1", "seed=2", "model.init_scale=0.05"]
    write_job(tmp_path / "b/0", overrides, {"dropout": "none"}, TOY, 450.0)
    write_job(tmp_path / "b/1", ["dropout=none", "model.init_scale=0.1", "seed=1"], {"dropout": "none"}, TOY, 430.0)
    over_seeds = png_report(tmp_path).split("Over seeds:")[1]
    assert "| model.init_scale=0.05 | 2 | 459.78 ± 7.23 | 445.00 ± 7.07 |" in over_seeds
    assert [len(e["runs"]) for e in configurations(collect(tmp_path))] == [2, 1]


def test_only_a_basic_launchers_numbered_jobs_are_listed_as_never_started(tmp_path):
    """A basic sweep's job without a folder never started: where its folder is its number, or (another subdir,
    hydra.sweep.subdir=s${seed}) where no job folder's record names its number; one whose records do not say lists
    none. A stacked sweep's jobs go on with its resume switch, not one command each, and an Optuna study's trials
    are drawn as it runs."""
    from rnnreg.multirun_jobs import BASIC_SWEEPER, OPTUNA_SWEEPER, STACKED_LAUNCHER

    def sweep(name: str, subdir: str, launcher: str, job: str, sweeper: str = BASIC_SWEEPER) -> Path:
        folder = tmp_path / name
        hydra = {
            "sweeper": {"_target_": sweeper, "params": None},
            "launcher": {"_target_": launcher},
            "sweep": {"dir": str(folder), "subdir": subdir},
            "overrides": {"task": ["dropout=none", "seed=1,2"]},
        }
        write_job(folder / job, ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 440.0)
        (folder / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
        return folder

    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert png_report(sweep("numbered", "${hydra.job.num}", basic, "0")).endswith(
        "- 1 (never started: no folder): "
        f"`rnnreg-train dropout=none seed=2 hydra.run.dir={tmp_path / 'numbered' / '1'} hydra.mode=RUN`\n"
    )
    assert "never started" not in png_report(sweep("named", "s${seed}", basic, "s1"))  # (s1's record: no number)
    record = tmp_path / "named" / "s1" / ".hydra" / "hydra.yaml"
    hydra = yaml.safe_load(record.read_text())
    hydra["hydra"] |= {"job": {"num": 0}, "sweep": {"dir": str(tmp_path / "named"), "subdir": "s${seed}"}}
    record.write_text(yaml.safe_dump(hydra))
    assert png_report(tmp_path / "named").endswith(
        "- 1 (never started: no folder): "
        f"`rnnreg-train dropout=none seed=2 hydra.run.dir={tmp_path / 'named' / '1'} hydra.mode=RUN`\n"
    )
    assert "never started" not in png_report(sweep("stacked", "${hydra.job.num}", STACKED_LAUNCHER, "0"))
    assert "never started" not in png_report(sweep("optuna", "${hydra.job.num}", basic, "0", OPTUNA_SWEEPER))


def test_jobs_that_never_started_of_a_sweep_below_the_reports_folder_are_listed_by_their_path(tmp_path):
    """rnnreg-report path=<a folder of sweeps>: each basic sweep below it has its jobs that never started listed, by
    their folder under the report's, with their sweep's own command (its --config-dir); a glob over a group's
    options (which needs the config to expand) lists none and stops nothing."""
    configs = config_folder(tmp_path, "my_configs")
    sweep = tmp_path / "runs" / "a"
    basic_sweep_record(sweep, ["dropout=none", "seed=1,2"], config_dir=configs)
    write_job(sweep / "0", ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 440.0)
    globbed = tmp_path / "runs" / "b"
    basic_sweep_record(globbed, ["dropout=glob(*)", "seed=1"])
    write_job(globbed / "0", ["dropout=both", "seed=1"], {"dropout": "both"}, TOY, 430.0)
    table = png_report(tmp_path / "runs", PAPER)
    assert table.endswith(
        f"how each goes on\n\n- a/1 (never started: no folder): `rnnreg-train --config-dir {configs} dropout=none "
        f"seed=2 hydra.run.dir={sweep / '1'} hydra.mode=RUN`\n"
    )  # (b's one job completed: its sweep was not stopped)


def test_a_never_started_job_below_the_reports_folder_names_its_own_sweeps_record(tmp_path):
    """A never-started job of a sweep below the report's folder whose record gives no command names that sweep's own
    multirun.yaml to read (it named the report folder's, which is not there)."""
    payload = "+callbacks.x._target_=torch.load"
    sweep = tmp_path / "runs" / "a"
    basic_sweep_record(sweep, [payload, "seed=1,2"])
    write_job(sweep / "0", [payload, "seed=1"], {}, TOY, 440.0)
    assert png_report(tmp_path / "runs", PAPER).endswith(
        f"- a/1 (never started: no folder): no command shown: its record ({sweep / 'multirun.yaml'}) has `{payload}`, "
        "which makes Hydra build or call what it names; read the record before running it again\n"
    )


def test_a_sweeps_record_whose_overrides_are_no_list_is_one_line(tmp_path):
    """A sweep's multirun.yaml whose hydra.overrides.task is not a list of overrides (edited, from elsewhere): the
    report stops with one line naming it, not a report that leaves out the jobs that never started."""
    basic_sweep_record(tmp_path, "seed=1,2")
    write_job(tmp_path / "0", ["seed=1"], {}, TOY, 440.0)
    record = re.escape(str(tmp_path / "multirun.yaml"))
    with pytest.raises(
        DataError, match=rf"^{record} is not readable \(hydra.overrides.task is not a list of overrides\)"
    ):
        png_report(tmp_path, PAPER)


def test_runs_of_the_default_corpus_from_two_folders_are_one_configuration(tmp_path):
    """PTB's data.data_dir as config.yaml records it (`${paths.data_root}/ptb`, resolved where the run ran), or a
    folder under the home directory (`~/corpus`), is one folder whichever working folder a sweep started from: the
    seeds of two such sweeps are one configuration."""
    for data_dir in ("${paths.data_root}/ptb", "~/corpus"):
        for name, cwd, seed, ppl in (("a", "/home/me/one", 1, 440.0), ("b", "/home/me/two", 2, 450.0)):
            folder = tmp_path / data_dir[:2] / name
            write_job(folder, ["dropout=none", f"seed={seed}"], {"dropout": "none"}, TOY, ppl)
            config, hydra = (yaml.safe_load((folder / ".hydra" / f).read_text()) for f in ("config.yaml", "hydra.yaml"))
            config["data"]["data_dir"], hydra["hydra"]["runtime"]["cwd"] = data_dir, cwd
            (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
            (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
        text = png_report(tmp_path / data_dir[:2])
        assert "| (same) | 2 | 459.78 ± 7.23 | 445.00 ± 7.07 |" in text.split("Over seeds:")[1], text
        assert "config.yaml" not in text


def test_a_placement_chosen_by_an_experiment_is_drawn_as_that_placement(tmp_path):
    """A run whose dropout placement came from its experiment file (no dropout= override): its placement is
    Hydra's recorded choice, drawn in that placement's colour and named in its label, not as `config`."""
    write_job(tmp_path / "0", ["experiment=mine", "seed=1"], {"dropout": "variational"}, TOY, 440.0)
    write_job(tmp_path / "1", ["experiment=other", "seed=1"], {"dropout": "none"}, TOY, 450.0)
    labels = sorted(e["label"] for e in configurations(collect(tmp_path)))
    assert [label.split(",")[0] for label in labels] == ["none", "variational"], labels
    found = colours(figure_test_ppl(collect(tmp_path), PAPER).axes[0])
    assert {to_hex(PLACEMENT_COLOURS[p]) for p in ("none", "variational")} <= set(found.values()), found


def test_a_job_folder_with_only_its_error_is_listed_failed_at_the_sweeps_end(tmp_path):
    """A job that writes no .hydra/ (rnnreg-generate's, hydra.output_subdir=null) and failed: its error.txt alone
    lists it at the sweep's end, by its folder."""
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "error.txt").write_text("prompt has no word in the vocabulary\n")
    (tmp_path / "4").mkdir()  # (completed: its samples went to stdout)
    assert failed_jobs(tmp_path) == [("3", [], "failed")]


def test_the_sweeps_end_lists_a_job_written_as_the_multirun_started(tmp_path):
    """failed_jobs(since=): a job whose last file was written at the very time the multirun started is one of its
    jobs (a filesystem that keeps whole seconds), one written before it is not."""
    for job, when in (("0", 1_000_000), ("1", 999_999)):
        (tmp_path / job).mkdir()
        (tmp_path / job / "error.txt").write_text("data.bptt=0 must be an integer >= 1\n")
        os.utime(tmp_path / job / "error.txt", (when, when))
    assert failed_jobs(tmp_path, since=1_000_000) == [("0", [], "failed")]


def test_a_failed_job_whose_files_cannot_be_read_is_listed_by_its_folder_at_the_sweeps_end(tmp_path):
    """A failed job whose overrides.yaml is cut short, or whose error.txt is not UTF-8 (a message from a file's
    bytes): the sweep's end lists it all the same, by its folder, not with a traceback."""
    for job in ("0", "1"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "config.yaml").write_text("{}\n")
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- seed=1\n- [cut\n")
    (tmp_path / "0" / "error.txt").write_text("data.bptt=0 must be an integer >= 1\n")
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text("- seed=2\n")
    (tmp_path / "1" / "error.txt").write_bytes(b"missing train file /data/\xff\xfe.txt\n")
    assert failed_jobs(tmp_path) == [("0", [], "failed"), ("1", ["seed=2"], "failed")]


def test_a_job_stopped_outside_a_multirun_writes_no_error_txt(tmp_path, monkeypatch):
    """record_job_stopped where no multirun runs (evaluate() called as a function in a submitit job a signal ended):
    no sweep to tell, so nothing is written, and it is no error."""
    monkeypatch.chdir(tmp_path)
    assert not HydraConfig.initialized()
    record_job_stopped("SIGTERM")
    assert list(tmp_path.iterdir()) == []


def test_a_job_that_ran_again_after_its_result_and_failed_is_failed_in_the_report_as_at_the_sweeps_end(tmp_path):
    """A stacked sweep's job interrupted (metrics.json), then resumed, whose resume stopped with one of rnnreg's
    errors (error.txt, newer): the report says failed, with error.txt's line and no command to go on, as the sweep's
    end line does (failed_jobs); it said interrupted, with a resume command that stops at the same error."""
    job = tmp_path / "0"
    write_job(job, ["dropout=none", "seed=1"], {"hydra/launcher": "stacked"}, TOY, None)
    (job / "metrics.json").write_text(json.dumps({"status": "interrupted", "error": "SIGTERM", "epochs": 1}))
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"")
    refused = "checkpoints/last.ckpt is not a checkpoint rnnreg-train wrote: give a checkpoint it wrote"
    (job / "error.txt").write_text(refused + "\n")
    later = (job / "metrics.json").stat().st_mtime + 5
    os.utime(job / "error.txt", (later, later))
    table = png_report(tmp_path, PAPER)
    assert failed_jobs(tmp_path) == [("0", ["dropout=none", "seed=1"], "failed")]
    assert "| failed |" in table and f"Failed, and why:\n\n- 0: {refused}\n" in table
    assert "interrupted" not in table and "goes on" not in table
    os.utime(job / "metrics.json", (later + 5, later + 5))  # it ran again once more: interrupted again
    assert "| interrupted |" in png_report(tmp_path, PAPER) and failed_jobs(tmp_path)[0][2] == "interrupted"


def test_the_report_and_the_sweeps_end_read_how_a_job_ended_alike(tmp_path):
    """The report's status of a job and the sweep's end line (failed_jobs) come from the files the job wrote last,
    read alike: an error.txt before a result the job wrote on a later run (an evaluation's metrics.json has no
    status) is a completed job in both (the sweep's end listed it failed), an error.txt after it a failed one."""
    failed = "data.bptt=0 must be an integer >= 1\n"
    stopped = "stopped by SIGTERM before it finished; it wrote no metrics.json (run it again)\n"
    cases = {  # job: (its files in the order it wrote them, how it ended)
        "0": ([("error.txt", failed), ("metrics.json", {"test_ppl": 101.2})], "completed"),
        "1": ([("error.txt", failed), ("metrics.json", {"status": "completed", "test_ppl": 101.2})], "completed"),
        "2": ([("metrics.json", {"test_ppl": 101.2}), ("error.txt", failed)], "failed"),
        "3": ([("error.txt", failed), ("metrics.json", {"status": "interrupted", "epochs": 1})], "interrupted"),
        "4": ([("metrics.json", {"status": "interrupted", "epochs": 1}), ("error.txt", stopped)], "stopped"),
        "5": ([("metrics.json", {"status": "failed", "error": "diverged"})], "failed"),
        "6": ([], "unfinished"),
    }
    for name, (files, _) in cases.items():
        write_job(tmp_path / name, [f"seed={name}"], {}, TOY, None)
        for when, (file, content) in enumerate(files):
            path = tmp_path / name / file
            path.write_text(content if isinstance(content, str) else json.dumps(content))
            os.utime(path, (1_000_000 + when, 1_000_000 + when))
    statuses = {row["run"]: row["status"] for row in collect(tmp_path)}
    listed = {job: ended for job, _, ended in failed_jobs(tmp_path)}
    assert statuses == {name: ended for name, (_, ended) in cases.items()}
    assert listed == {name: ended for name, ended in statuses.items() if ended in ("failed", "interrupted", "stopped")}


def test_runs_told_apart_by_a_string_and_a_number_that_print_alike_are_two_configurations(tmp_path):
    """Two seeds of one command whose configs differ in a value that is the string '1.0' in one and the number 1.0
    in the other (an experiment file edited between them): two configurations, each shown as an override Hydra
    reads back as that value (before: both shown as `data.name=1.0`, and pooled as one configuration's seeds)."""
    for job, (seed, name) in enumerate(((1, "1.0"), (2, "1.0"), (1, 1.0), (2, 1.0))):
        write_job(tmp_path / str(job), ["dropout=none", f"seed={seed}"], {}, TOY, 100.0 + job)
        config = yaml.safe_load((tmp_path / str(job) / ".hydra" / "config.yaml").read_text())
        config["data"]["name"] = name
        (tmp_path / str(job) / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    over_seeds = png_report(tmp_path, PAPER).split("Over seeds:")[1]
    assert "| data.name='1.0' | 2 |" in over_seeds and "| data.name=1.0 | 2 |" in over_seeds, over_seeds
    from rnnreg.report_runs import setting  # (a string with a space: quoted, as the report joins overrides with spaces)

    assert [setting(json.dumps(v)) for v in ("a b", "paper_small", "null", None, 0.5)] == [
        "'a b'",
        "paper_small",
        "'null'",
        "null",
        "0.5",
    ]


def test_a_failed_runs_reason_is_its_metrics_json_error_before_its_error_txt(tmp_path):
    """A run whose metrics.json says it failed, and why, with an error.txt beside it from an earlier try: the report
    gives the reason its metrics.json records (error.txt's is only for a job that wrote none)."""
    write_job(tmp_path / "0", ["dropout=none"], {}, TOY, None)
    (tmp_path / "0" / "error.txt").write_text("an earlier try's line\n")
    diverged = {"status": "failed", "error": "training loss became nan at epoch 1, step 3", "epochs": 1}
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(diverged))
    assert f"Failed, and why:\n\n- 0: {diverged['error']}\n" in png_report(tmp_path / "0", PAPER)


def test_a_run_alone_is_labelled_by_its_placement_not_by_every_override_it_was_given(tmp_path):
    """A report of one run: every override it was given tells it apart from no other run, so its figures' labels
    name its placement alone (before: all of them, and a figure several times as wide as its axes)."""
    overrides = ["dropout=both", "dropout.p=0.3", "model.hidden_size=16", "data.bptt=5", "optim.lr=0.5", "seed=7"]
    write_job(tmp_path, overrides, {"dropout": "both"}, TOY, 430.0)
    assert [e["label"] for e in configurations(collect(tmp_path))] == ["both"]
    legend = figure_val_ppl(collect(tmp_path), PAPER).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["both"]
    figure = figure_test_ppl(collect(tmp_path), PAPER)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["both"]
    assert figure.get_size_inches()[0] < 10


def composed_job(job: Path, overrides: list[str], seed: int, test_ppl: float) -> None:
    """A job as rnnreg-train leaves it, its .hydra/config.yaml the config its overrides compose (as Hydra records it:
    interpolations unresolved) and hydra.yaml the option each config group took: two spellings of one config are
    records alike but for their overrides."""
    from rnnreg.recipes import compose_config as composed

    cfg = composed(*overrides, f"seed={seed}", hydra_node=True)
    choices = {k: v for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items() if isinstance(v, str)}
    write_job(job, [*overrides, f"seed={seed}"], choices, TOY, test_ppl)
    with open_dict(cfg):
        del cfg.hydra
    (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))


SMALL = ["experiment=paper_small", "trainer.max_epochs=1"]
# experiment=paper_small's keys spelled out, on the default experiment (paper_medium)
SMALL_SPELLED_OUT = [
    "model=small",
    "dropout=none",
    "dropout.p=0.0",
    "data.bptt=20",
    "trainer.max_epochs=13",
    "trainer.gradient_clip_val=5.0",
    "optim.decay=2.0",
    "optim.decay_start=4",
]


def pooled_sweeps(root: Path) -> Path:
    """Two sweeps of one configuration, the first giving dropout.p its default (seeds 1, 2), the second leaving it
    out (seed 3), beside a placement that differs (seeds 1-3)."""
    for job, seed, test in (("a/0", 1, 400.0), ("a/1", 2, 402.0)):
        composed_job(root / job, [*SMALL, "dropout.p=0.0"], seed, test)
    composed_job(root / "b/0", SMALL, 3, 410.0)
    for job, seed, test in (("c/0", 1, 390.0), ("c/1", 2, 391.0), ("c/2", 3, 395.0)):
        composed_job(root / job, [*SMALL, "dropout=recurrent", "dropout.p=0.3"], seed, test)
    return root


def test_a_key_given_at_its_default_and_a_key_left_out_are_one_configuration_of_every_seed(tmp_path):
    """`dropout.p=0.0` (experiment=paper_small's own value) in one sweep and no dropout.p in another train the same
    config: one configuration of all three seeds, its mean and sd over them, named by its shortest spelling (before:
    two, `dropout.p=0.0` of 2 seeds and `(same)` of 1, with two means). A placement that differs stays apart."""
    root = pooled_sweeps(tmp_path)
    text = png_report(root)
    assert text.startswith("every run: experiment=paper_small trainer.max_epochs=1\n"), text
    assert "| a/0 | dropout.p=0.0 seed=1 | completed |" in text and "| b/0 | seed=3 | completed |" in text
    over_seeds = text.split("Over seeds:")[1].split("\n\n")[1].splitlines()[2:]
    rows = {r["run"]: r for r in collect(root)}
    pooled = f"{statistics.mean([400.0, 402.0, 410.0]):.2f} ± {statistics.stdev([400.0, 402.0, 410.0]):.2f}"
    assert over_seeds[0] == f"| (same) | 3 | {mean_sd_text(rows, ['a/0', 'a/1', 'b/0'])} | {pooled} | " + (
        f"{statistics.mean([400.1, 402.1, 410.1]):.2f} ± {statistics.stdev([400.1, 402.1, 410.1]):.2f} |"
    )
    assert over_seeds[1].startswith("| dropout=recurrent dropout.p=0.3 | 3 | ") and len(over_seeds) == 2, over_seeds
    assert "ran 2 times" not in text and "config.yaml" not in text
    entries = configurations(collect(root))
    assert [(e["label"], len(e["runs"])) for e in entries] == [("none", 3), ("recurrent, p=0.3", 3)]


def test_an_experiment_and_its_keys_spelled_out_are_one_configuration_named_by_the_shorter(tmp_path):
    """`experiment=paper_small` and its keys given one by one on the default experiment compose the same config
    (but for experiment_name, the name its folders go under): one configuration of both seeds, named by the shorter
    spelling; `experiment=paper_medium` stays apart (before: three configurations of one seed each, no mean)."""
    composed_job(tmp_path / "a/0", SMALL_SPELLED_OUT, 1, 400.0)
    composed_job(tmp_path / "b/0", ["experiment=paper_small"], 2, 402.0)
    composed_job(tmp_path / "c/0", ["experiment=paper_medium"], 1, 300.0)
    text = png_report(tmp_path)
    over_seeds = text.split("Over seeds:")[1]
    assert "| experiment=paper_small | 2 | " in over_seeds and "| 401.00 ± 1.41 |" in over_seeds, over_seeds
    assert "experiment=paper_medium" not in over_seeds and "model=small" not in over_seeds
    assert sorted(r["configuration"] for r in collect(tmp_path)) == [
        "experiment=paper_medium",
        "experiment=paper_small",
        "experiment=paper_small",
    ]


def test_runs_that_differ_in_one_resolved_key_stay_apart_whichever_overrides_gave_them(tmp_path):
    """Pooling is by the resolved config: a run given optim.lr=0.5 is no seed of the runs at the experiment's lr 1.0
    (one of which spells lr out), and a key a run was given that an earlier rnnreg's config lacks is a difference,
    while that key left at its default (the later version's, not given) is not."""
    composed_job(tmp_path / "a/0", ["experiment=paper_small"], 1, 400.0)
    composed_job(tmp_path / "a/1", ["experiment=paper_small", "optim.lr=1.0"], 2, 402.0)
    composed_job(tmp_path / "b/0", ["experiment=paper_small", "optim.lr=0.5"], 1, 450.0)
    composed_job(tmp_path / "b/1", ["experiment=paper_small", "optim.lr=0.5"], 2, 452.0)
    over_seeds = png_report(tmp_path).split("Over seeds:")[1]
    assert "| (same) | 2 | " in over_seeds and "| 401.00 ± 1.41 |" in over_seeds, over_seeds
    assert "| optim.lr=0.5 | 2 | " in over_seeds and "| 451.00 ± 1.41 |" in over_seeds
    # an earlier version lacked optim.a_later_key: the later run given it is another configuration, not one more seed
    write_job(tmp_path / "later/0", ["dropout=none", "seed=1"], {"dropout": "none"}, TOY, 440.0)
    write_job(tmp_path / "later/1", ["dropout=none", "seed=2", "optim.a_later_key=true"], {}, TOY, 460.0)
    write_job(tmp_path / "later/2", ["dropout=none", "seed=3"], {"dropout": "none"}, TOY, 450.0)
    for job, value in (("1", True), ("2", False)):
        config = yaml.safe_load((tmp_path / "later" / job / ".hydra" / "config.yaml").read_text())
        config["optim"] = {"a_later_key": value}
        (tmp_path / "later" / job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    configurations_of = {r["run"]: r["configuration"] for r in collect(tmp_path / "later")}
    assert configurations_of["0"] == configurations_of["2"] != configurations_of["1"], configurations_of


def test_the_paired_differences_and_the_tables_as_data_follow_the_pooled_configuration(tmp_path):
    """The configuration pooled from two sweeps is paired seed by seed in all three of its seeds (before: its first
    sweep's two, the second's seed in no pair), and report.csv names each run's configuration as summary.csv does,
    one name for runs given it in other words."""
    root = pooled_sweeps(tmp_path)
    text = png_report(root)
    paired = text.split("\nPaired by seed, ")[1]
    assert paired.startswith("against `dropout=recurrent dropout.p=0.3` (the lowest mean test ppl)"), paired
    differences = [400.0 - 390.0, 402.0 - 391.0, 410.0 - 395.0]
    mean, sd = statistics.mean(differences), statistics.stdev(differences)
    each = ", ".join(f"{seed}: {d:+.2f}" for seed, d in zip((1, 2, 3), differences))
    assert paired.split("\n\n")[1].splitlines()[2:] == [f"| (same) | 3 | {mean:+.2f} ± {sd:.2f} | {each} | 3 of 3 |"]
    with open(root / "report.csv", newline="") as f:
        runs = {r["run"]: r for r in csv.DictReader(f)}
    assert {run: (r["configuration"], r["dropout.p"]) for run, r in runs.items()} == {
        "a/0": ("(same)", "0.0"),
        "a/1": ("(same)", "0.0"),
        "b/0": ("(same)", ""),
        **{f"c/{job}": ("dropout=recurrent dropout.p=0.3", "0.3") for job in range(3)},
    }
    with open(root / "summary.csv", newline="") as f:
        summary = {c["configuration"]: c for c in csv.DictReader(f)}
    assert list(summary) == ["(same)", "dropout=recurrent dropout.p=0.3"]
    same = summary["(same)"]
    assert (same["n"], same["seeds"], same["dropout.p"], same["paired_seeds"]) == ("3", "1 2 3", "", "1 2 3")
    assert float(same["test_ppl_paired_mean"]) == mean and float(same["test_ppl_mean"]) == statistics.mean(
        [400.0, 402.0, 410.0]
    )
