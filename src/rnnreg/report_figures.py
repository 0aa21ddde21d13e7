"""rnnreg-report's figures: validation curves and test perplexity per configuration, a configuration run with
several seeds drawn once, as their mean with the seeds' spread. Each dropout placement has one colour in every
figure (PLACEMENT_COLOURS); the paper's perplexities are drawn only beside runs of the paper's full recipe
(conf/experiment/paper_<size>.yaml in full)."""

from __future__ import annotations

import functools
import math
import re
import statistics
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from rnnreg.io import replace_atomically
from rnnreg.record_yaml import LIMITS, full_budget
from rnnreg.report import FORMATS
from rnnreg.report_tables import by_config


def plot_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """What the plots show, label -> runs: one entry per configuration (by_config), so that the seeds of
    one configuration are drawn as one mean curve and one test point."""
    return {
        (
            f"{key} ({len(runs)} seeds)"
            if len(runs) > 1
            else key
            if runs[0]["status"] != "completed"
            else runs[0]["differs"]
        ): runs
        for key, runs in by_config(rows).items()
    }


# One colour per dropout placement, the same in every figure and every report (Okabe-Ito, colour-blind
# safe): no dropout a neutral grey, the paper's non-recurrent dropout the strong blue.
PLACEMENT_COLOURS = {
    "none": "#7F7F7F",  # grey
    "non_recurrent": "#0072B2",  # blue: the paper
    "recurrent": "#D55E00",  # vermillion
    "both": "#CC79A7",  # reddish purple
    "variational": "#009E73",  # bluish green
    "weight_drop": "#E69F00",  # orange
    "config": "#000000",  # placement not known (no dropout choice, no dropout= override)
}
# The paper's perplexity, in both figures: a dark grey dashed line
PAPER_LINE = {"color": "0.25", "linestyle": (0, (4, 3)), "linewidth": 1}
# the test figure's x axis is a log one where its largest value is over this many times its smallest
LOG_AXIS_SPREAD = 2
# how far apart (in epochs) the validation figure sets configurations whose curve is one epoch
ONE_EPOCH_APART = 0.06
# Configurations of one placement that differ in something else (rates, sizes): one marker and line style each.
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", ":", "-.")
# a float as an override writes it (0.3, .5, 5e-1), not an int or a word
FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+(?=[eE]))([eE][-+]?\d+)?")


def placement_colour(placement: str) -> str:
    """The colour of a dropout placement in every figure; an unknown name gets the colour of 'config'."""
    return PLACEMENT_COLOURS.get(placement, PLACEMENT_COLOURS["config"])


def short_override(override: str, digits: int | None = 4, names: dict[str, str] | None = None) -> str:
    """dropout.p=0.3 -> p=0.3: the key as `names` shortens it (short_names; else its last part) is enough in a
    label; a float to `digits` significant digits (Optuna's 0.41234567890123456 -> 0.4123)."""
    key, sep, value = override.partition("=")
    if digits is not None and FLOAT.fullmatch(value) and float(f"{float(value):.{digits}g}") != float(value):
        value = f"{float(value):.{digits}g}"  # only a value longer than that: 1.0 stays 1.0
    return (names or {}).get(key, key.rsplit(".", 1)[-1]) + sep + value


def short_names(keys: set[str]) -> dict[str, str]:
    """Each key as its shortest last parts that no other of `keys` ends with: dropout.p -> p, but dropout.p and
    regularizer.weight_drop.p stay apart (dropout.p, weight_drop.p)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if not any(other != key and (other == name or other.endswith(f".{name}")) for other in keys):
                break
        names[key] = name
    return names


def configurations(rows: list[dict]) -> list[dict]:
    """What the figures draw, one entry per configuration (plot_groups), in the order of PLACEMENT_COLOURS
    then of the jobs: its placement, a short horizontal label (the placement, plus what else differs
    between the configurations: `both, p=0.3`; the placement alone where one is drawn), colour, marker, line style
    and runs."""
    order = list(PLACEMENT_COLOURS)
    entries = []
    groups = plot_groups(rows)

    def told(runs: list[dict]) -> list[str]:
        if len(groups) == 1:  # one configuration drawn: nothing to tell apart (report.md's row lists its overrides)
            return []
        status = runs[0]["status"]
        return [
            o
            for o in (runs[0]["differs"] if status != "completed" else runs[0]["seedless"]).split()
            # (a run that did not complete is drawn alone: its seed tells it from the configuration's others)
            if o not in ("(same)", "(none)") and not o.startswith("dropout=")
        ]

    names = short_names({o.partition("=")[0] for runs in groups.values() for o in told(runs)})

    def label(runs: list[dict], digits: int | None) -> str:
        placement, status = runs[0]["placement"], runs[0]["status"]
        extra = [short_override(o, digits, names) for o in told(runs)]
        return ", ".join([placement, *extra]) + (f" ({status})" if status != "completed" else "")

    for key, runs in groups.items():
        entries.append({"key": key, "placement": runs[0]["placement"], "runs": runs, "label": label(runs, 4)})
    rounded = [e["label"] for e in entries]
    for e in entries:  # two configurations that rounding makes look alike keep their exact values
        if rounded.count(e["label"]) > 1:
            e["label"] = label(e["runs"], None)
    entries.sort(key=lambda e: order.index(e["placement"]) if e["placement"] in order else len(order))
    for placement in {e["placement"] for e in entries}:
        for i, entry in enumerate(e for e in entries if e["placement"] == placement):
            entry |= {
                "colour": placement_colour(placement),
                "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINESTYLES[i % len(LINESTYLES)],
            }
    return entries


@functools.cache
def recipe_of(size: str) -> dict | None:
    """The paper's recipe for `size` as conf/experiment/paper_<size>.yaml composes it: `shape` (the hidden size,
    layers, batch size and bptt a run must have), `max_epochs` and `dropout` (the placement's option); None for a
    size the paper has not."""
    from rnnreg.recipes import SIZES, compose_config

    if size not in SIZES:
        return None
    cfg = compose_config(f"experiment=paper_{size}", hydra_node=True)
    shape = {key: cfg.model[key] for key in ("hidden_size", "num_layers")}
    shape |= {key: cfg.data[key] for key in ("batch_size", "bptt")}
    return {"shape": shape, "max_epochs": cfg.trainer.max_epochs, "dropout": cfg.hydra.runtime.choices.dropout}


def paper_size_of(row: dict, paper: dict | None) -> str | None:
    """The paper's model size whose full recipe this run is (model=<size> or experiment=paper_<size>, on PTB
    (data=ptb), with that size's hidden size, layers, data.batch_size and data.bptt, the paper's number of
    epochs, no limit on the train or validation batches), else None: only then do the paper's perplexities
    mean something beside the run's."""
    experiment = row.get("experiment") or ""
    size = row.get("model") or (experiment.removeprefix("paper_") if experiment.startswith("paper_") else None)
    if not paper or size not in paper or (experiment.startswith("paper_") and experiment != f"paper_{size}"):
        return None
    recipe, wanted = row.get("recipe") or {}, recipe_of(size)
    if recipe.get("data") != "ptb" or wanted is None or any(recipe.get(k) != v for k, v in wanted["shape"].items()):
        return None
    trainer = row.get("trainer") or {}
    if trainer.get("max_epochs") != wanted["max_epochs"]:
        return None
    if not all(full_budget(trainer.get(key)) for key in LIMITS):  # (a cut test split too: not the paper's test)
        return None
    return size


def references(rows: list[dict], paper: dict | None) -> dict[str, dict]:
    """The paper's numbers for the sizes whose full recipe some completed run is, size -> paper entry."""
    sizes = {paper_size_of(r, paper) for r in rows if r["status"] == "completed"} - {None}
    return {size: paper[size] | {"dropout": recipe_of(size)["dropout"]} for size in paper or {} if size in sizes}


def seed_counts(entries: list[dict], key: str) -> list[int]:
    return [sum(1 for r in e["runs"] if not math.isnan(r[key])) for e in entries]


def interval_text(counts: list[int]) -> str:
    """What a point and its error bar are, for the axis label: the statistic and the number of seeds."""
    n = sorted(set(counts))
    seeds = f"{n[0]} seeds" if len(n) == 1 else f"{n[0]}–{n[-1]} seeds (n per row)"
    if n[-1] <= 1:
        return "one seed per configuration"
    return f"point: mean ± sample sd over {seeds}; dots: each seed"


def log_ticks(lo: float, hi: float, most: int = 10) -> list[float]:
    """Plain-number ticks for a log axis from lo to hi: round values (1, 1.2, 1.5, 2, 2.5, 3, ..., 9 x 10^k)
    spread evenly on the log scale, at least 4 of them (with 1.1 x 10^k too, then linear steps, when the range
    is narrow)."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    inside: list[float] = []
    for mantissas in ((1, 1.2, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9), (1.1,)):
        inside = sorted(inside + [t for k in decades for m in mantissas if lo <= (t := round(m * 10.0**k, 6)) <= hi])
        if len(inside) >= 4:
            break
    else:
        inside = [t for t in MaxNLocator(nbins=6, min_n_ticks=4).tick_values(lo, hi) if lo <= t <= hi]
    gap = math.log(hi / lo) / most
    ticks = []
    for t in inside:
        if not ticks or math.log(t / ticks[-1]) >= gap:
            ticks.append(t)
    return ticks


def epochs_reached(runs: list[dict]) -> set[int]:
    """The epochs at which every run of a configuration that logged validation logged it."""
    curves = [set(r["val_history"]) for r in runs if r["val_history"]]
    return set.intersection(*curves) if curves else set()


def figure_val_ppl(rows: list[dict], paper: dict | None = None) -> Figure:
    """Validation perplexity per epoch: one curve per configuration, the mean over its seeds with their
    min–max range shaded, in its placement's colour (a curve of one epoch: a point with its range as a bar, points
    at one epoch set apart a little so that none hides another); the paper's validation perplexity as a dashed line
    when the runs are its full recipe."""
    entries = [e for e in configurations(rows) if any(r["val_history"] for r in e["runs"])]
    # room for the legend beside the axes (8 pt: ~0.06 inch a character, 0.17 a line): a legend wider than the
    # figure collapses constrained layout's axes (a warning, and the layout not applied)
    longest = max((len(e["label"]) + 6 for e in entries), default=0)
    fig = Figure(figsize=(max(7.5, 5.2 + 0.062 * longest), max(4.2, 1.4 + 0.17 * len(entries))), layout="constrained")
    ax = fig.subplots()
    values = []
    spreads = set()  # how the seeds' ranges are drawn: "shaded" bands, a "bar" at a one-epoch curve's epoch
    counts = [sum(1 for r in e["runs"] if r["val_history"]) for e in entries]
    alone = [e["key"] for e in entries if len(epochs_reached(e["runs"])) == 1]
    drawn = set().union(*(epochs_reached(e["runs"]) for e in entries))
    for e, n in zip(entries, counts):
        curves = [r["val_history"] for r in e["runs"] if r["val_history"]]
        reached = epochs_reached(e["runs"])
        if not reached:
            continue
        # each value at its logged epoch; an epoch missing in between is a gap in the line (nan), not joined
        epochs = range(min(reached), max(reached) + 1)
        per_epoch = [[c[epoch] for c in curves] if epoch in reached else [math.nan] for epoch in epochs]
        mean = [statistics.mean(v) for v in per_epoch]
        x = list(epochs)
        if e["key"] in alone:  # each point of one epoch beside the others, centred on its epoch's tick
            x = [x[0] + ONE_EPOCH_APART * (alone.index(e["key"]) - (len(alone) - 1) / 2)]
        ax.plot(
            x,
            mean,
            color=e["colour"],
            marker=e["marker"],
            markersize=4,
            markevery=max(1, math.ceil(len(epochs) / 12)),
            linestyle=e["linestyle"],
            linewidth=1.6,
            label=e["label"] + (f" (n={n})" if len(set(counts)) > 1 else ""),
        )
        if len(curves) > 1 and len(epochs) > 1:
            ax.fill_between(
                epochs,
                [min(v) for v in per_epoch],
                [max(v) for v in per_epoch],
                color=e["colour"],
                alpha=0.18,
                linewidth=0,
            )
            spreads.add("shaded")
        elif len(curves) > 1:  # one epoch: a band over a single epoch has no width, so the seeds' range is a bar
            ax.vlines(x, min(per_epoch[0]), max(per_epoch[0]), color=e["colour"], alpha=0.5, linewidth=3)
            spreads.add("bar")
        values += [v for epoch in per_epoch for v in epoch if not math.isnan(v)]
    for size, ref in references(rows, paper).items():
        ax.axhline(ref["valid_ppl"], **PAPER_LINE, label=f"paper {size} ({ref['dropout']}): {ref['valid_ppl']}")
        values.append(ref["valid_ppl"])
    if not values:
        ax.text(0.5, 0.5, "no validation perplexity logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    lo, hi = min(values) / 1.03, max(values) * 1.03
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.yaxis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    # epochs are whole: min_n_ticks=1 keeps integer ticks where one epoch is in view (the default wants 2, and
    # falls back to 0.945, 0.96, ...)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if len(drawn) == 1:  # one epoch: its points set apart inside half an epoch each side, not at the axis' ends
        ax.set_xlim(min(drawn) - 0.5, min(drawn) + 0.5)
    ax.grid(True, which="major", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set(xlabel="epoch", ylabel="validation perplexity (log scale)")
    ax.set_title("Validation perplexity per epoch", fontsize=11)
    n = sorted(set(counts))
    seeds = f"{n[0]} seeds" if len(n) == 1 else f"{n[0]}–{n[-1]} seeds (n)"
    spread = "shaded (one epoch: bar)" if spreads == {"shaded", "bar"} else "bar" if spreads == {"bar"} else "shaded"
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
        frameon=False,
        title="dropout placement" + (f"\nline: mean over {seeds}\n{spread}: min–max over seeds" if n[-1] > 1 else ""),
        title_fontsize=8,
        alignment="left",
    )
    return fig


def figure_test_ppl(rows: list[dict], paper: dict | None = None) -> Figure:
    """Test perplexity (one stream) per configuration, configurations down the y axis: the mean over seeds
    as a marker with ± sample sd as an error bar and each seed as a small dot, the mean written beside it;
    the x axis spans the data (not from 0), on a log scale where the largest value is over LOG_AXIS_SPREAD times the
    smallest; the paper's test perplexity as a dashed line when the runs are
    its full recipe."""
    entries = [e for e in configurations(rows) if any(not math.isnan(r["test_ppl"]) for r in e["runs"])]
    # room for the labels left of the axes (10 pt: ~0.075 inch a character), as in figure_val_ppl
    longest = max((len(e["label"]) + 6 for e in entries), default=0)
    fig = Figure(figsize=(max(6.5, 4.2 + 0.075 * longest), 1.4 + 0.42 * max(len(entries), 1)), layout="constrained")
    ax = fig.subplots()
    if not entries:
        ax.text(0.5, 0.5, "no completed run with a test perplexity", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    counts = seed_counts(entries, "test_ppl")
    values, starts, ends = [], [], []
    for y, e in enumerate(entries):
        tests = [r["test_ppl"] for r in e["runs"] if not math.isnan(r["test_ppl"])]
        mean = statistics.mean(tests)
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        ax.errorbar(
            mean,
            y,
            xerr=sd if len(tests) > 1 else None,
            fmt=e["marker"],
            color=e["colour"],
            markersize=7,
            capsize=3,
            elinewidth=1.4,
            label=e["label"],
            zorder=3,
        )
        if len(tests) > 1:
            ax.scatter(tests, [y + 0.22] * len(tests), s=10, color=e["colour"], alpha=0.7, linewidths=0, zorder=2)
        ax.annotate(
            f"{mean:.2f}",
            (max(mean + sd, *tests), y),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color="0.2",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
        )
        values += tests
        ends.append(max(mean + sd, *tests))
        if 0 < mean - sd < min(tests):  # the error bar's lower end, drawn whole (on a log axis, where it is above 0)
            starts.append(mean - sd)
    refs = references(rows, paper)
    for size, ref in refs.items():
        ax.axvline(ref["test_ppl"], **PAPER_LINE, label=f"paper {size} ({ref['dropout']}): {ref['test_ppl']}", zorder=1)
        ax.annotate(
            f"paper {size}: {ref['test_ppl']}",
            (ref["test_ppl"], 1),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.25",
        )
        values.append(ref["test_ppl"])
    lo, hi = min(values + starts), max(values + ends)
    scale = ""
    if hi > LOG_AXIS_SPREAD * lo:  # one far from the rest (no dropout over 39 epochs): on a linear axis the rest meet
        scale = "; log scale"
        left, right = lo / 1.05, hi * 1.3  # room for the written means on the right
        ax.set_xscale("log")
        ax.set_xlim(left, right)
        ax.xaxis.set_major_locator(FixedLocator(log_ticks(left, right)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        span = max(hi - lo, 0.02 * hi)
        ax.set_xlim(lo - 0.08 * span, hi + 0.16 * span)  # room for the written means on the right
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.set_ylim(len(entries) - 0.5, -0.6)  # first configuration on top
    labels = [e["label"] + (f" (n={n})" if len(set(counts)) > 1 else "") for e, n in zip(entries, counts)]
    ax.set_yticks(range(len(entries)), labels)
    ax.tick_params(axis="y", length=0)
    ax.grid(True, axis="x", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel(f"test perplexity (one stream; lower is better{scale})\n{interval_text(counts)}", fontsize=9)
    ax.set_title("Test perplexity by dropout placement", fontsize=11, pad=16 if refs else 6)
    return fig


def save(fig: Figure, out: Path, name: str, formats: tuple[str, ...]) -> list[Path]:
    """The figure as <name>.<format> for each of `formats` (FORMATS: png at 300 dpi, pdf with its text as text)."""
    written = []
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        for ext in formats:
            # replaced, not written through a link a shared folder may hold there
            replace_atomically(
                out / f"{name}.{ext}",
                lambda tmp, ext=ext: fig.savefig(tmp, format=ext, bbox_inches="tight", **FORMATS[ext]),
            )
            written.append(out / f"{name}.{ext}")
    return written


def plot(rows: list[dict], out: Path, paper: dict | None, formats: tuple[str, ...]) -> list[Path]:
    """val_ppl and test_ppl in `out`, each in `formats`; the paths written."""
    return [
        *save(figure_val_ppl(rows, paper), out, "val_ppl", formats),
        *save(figure_test_ppl(rows, paper), out, "test_ppl", formats),
    ]
