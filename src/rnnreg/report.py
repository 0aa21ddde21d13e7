"""rnnreg-report: one row per run of a run or multirun folder, as markdown, plus figures (validation curves,
test perplexity per configuration) as PNG (300 dpi) and PDF; a configuration run with several seeds is drawn
once, as their mean with the seeds' spread. Each dropout placement has one colour in every figure
(PLACEMENT_COLOURS); the paper's perplexities are drawn only beside runs of the paper's full recipe.

Reads each job's `.hydra/overrides.yaml`, `metrics.json` and `csv/metrics.csv`. A job without `metrics.json`
is `running` while a live rnnreg process holds its folder (rnnreg.run_lock), else `unfinished` (killed hard,
or lost with its machine), and the report says how it goes on, as for a job `interrupted` (SIGTERM, Ctrl-C) and
a basic sweep's jobs that never started. When completed runs differ only in their seed (`-m ... seed=1,2,3`), a
second table gives each configuration's mean and standard deviation over seeds, each seed counted once.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import shlex
import statistics
import sys
from pathlib import Path

import matplotlib
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter
from omegaconf import DictConfig, OmegaConf

from rnnreg.errors import ConfigError, DataError, OutputError, first_line
from rnnreg.run_lock import RunLock
from rnnreg.runtime import hydra_entry
from rnnreg.sweep import BASIC_SWEEPER, NOT_COMPARED, STACKED_LAUNCHER, job_order, override_key, recorded_overrides


def find_runs(root: Path) -> list[Path]:
    """Every run folder (one with .hydra/config.yaml) under `root`, in numeric order. Links to folders are
    followed, so runs from several sweeps can be compared through a folder of links to them; a folder reached
    twice (two links, or a link back up) is read once."""
    found, seen = set(), set()
    for folder, subfolders, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        subfolders.sort()  # of two links to one folder, the first by name is the one shown
        if Path(folder, ".hydra", "config.yaml").is_file():
            found.add(Path(folder))
    runs = sorted(found, key=lambda p: job_order(str(p.relative_to(root))))
    if not runs:
        raise ConfigError(f"no runs under {root}: give a run folder or a multirun folder (with .hydra/ inside)")
    return runs


def status_without_metrics(run: Path) -> str:
    """A run that has not written metrics.json: `running` while a live rnnreg process holds its folder, or its
    sweep's (a multirun holds its sweep folder), else `unfinished`: its process was killed hard (SIGKILL,
    out of memory, its machine lost) or is gone without a word."""
    return "running" if RunLock.in_use(run) or RunLock.in_use(run.parent) else "unfinished"


GOES_ON = ("interrupted", "unfinished")  # stopped by a signal, or killed hard: what they left goes on


def how_to_go_on(rows: list[dict], root: Path | None = None) -> str:
    """For the interrupted and unfinished runs: the command that goes on with each, from what it left (a
    stacked sweep's members: one line for the sweep); under `root`, the jobs of a basic sweep that never
    started (never_started)."""
    lines, sweeps = [], {}
    for r in rows:
        if r["status"] not in GOES_ON:
            continue
        run = r["path"]
        if r["launcher"] == "stacked":
            sweeps.setdefault(run.parent, []).append((r["run"], r["status"]))
        elif (run / "checkpoints" / "last.ckpt").is_file():
            lines.append(f"- {r['run']} ({r['status']}): `{resume_command(run)}`")
        else:
            again = again_command(run)
            lines.append(f"- {r['run']} ({r['status']}): no checkpoint was written: run it again, `{again}`")
    if root is not None:
        lines += [f"- {job} (never started: no folder): `{command}`" for job, command in never_started(rows, root)]
    for sweep, runs in sweeps.items():
        lines.append(
            f"- {', '.join(run for run, _ in runs)}: the stacked sweep's command with `hydra.launcher.resume=true "
            f"hydra.sweep.dir={sweep}` ({stacked_resume_point(sweep, {status for _, status in runs})})"
        )
    if not lines:
        return ""
    return (
        "\nNot completed (interrupted: stopped by SIGTERM or Ctrl-C; unfinished: no metrics.json and no live "
        "process): how each goes on\n\n" + "\n".join(lines) + "\n"
    )


def stacked_resume_point(sweep: Path, statuses: set[str]) -> str:
    """Where a stacked sweep's resume starts its groups: a signal saved each group at the window it stopped in; a
    hard kill left the resume file of the group's last epoch's end (or none)."""
    if not any((sweep / ".stacked").glob("group_*.pt")):
        return "from the start: no epoch had ended"
    if statuses == {"interrupted"}:
        return "each group from the window where it stopped"
    if statuses == {"unfinished"}:
        return "each group from its last epoch's end"
    return "each group from where it stopped: the window of a signal, the last epoch's end of a hard kill"


def resume_command(run: Path) -> str:
    """The command that goes on exactly from `run`'s last checkpoint, in a new run folder: its overrides (a multirun
    job's own values, without Hydra's), less the checkpoint it may itself have resumed from."""
    overrides = recorded_overrides(run) or []
    kept = [o for o in overrides if override_key(o) != "ckpt_path"]
    return shlex.join(["rnnreg-train", *kept, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])


def again_command(run: Path) -> str:
    """The command that runs `run` again from where it started (its overrides, an earlier ckpt_path kept)."""
    overrides = recorded_overrides(run) or []
    return shlex.join(["rnnreg-train", *overrides])


def never_started(rows: list[dict], root: Path) -> list[tuple[str, str]]:
    """(job, command) of each job of a basic sweep under `root` that has no folder: the sweep was stopped
    (SIGTERM, Ctrl-C) before it. Its jobs are recomputed from its multirun.yaml as Hydra's basic sweeper
    splits them (numbered folders); nothing for a live sweep, another sweeper, or overrides that need
    the config to expand."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = []
    sweeps = {root, *(r["path"].parent for r in rows)}
    for sweep in sorted((s for s in sweeps if s == root or root in s.parents), key=lambda p: job_order(str(p))):
        record = sweep / "multirun.yaml"
        hydra = section(read_yaml(record), record, "hydra")
        sweeper, subdir = section(hydra, record, "sweeper"), section(hydra, record, "sweep").get("subdir")
        if sweeper.get("_target_") != BASIC_SWEEPER or subdir != "${hydra.job.num}":
            continue
        if section(hydra, record, "launcher").get("_target_") == STACKED_LAUNCHER:  # its resume switch
            continue
        if RunLock.in_use(sweep):  # still running: the jobs to come have not started yet
            continue
        params = [f"{key}={value}" for key, value in section(sweeper, record, "params").items()]
        task = section(hydra, record, "overrides").get("task") or []
        if not isinstance(task, list) or not all(isinstance(o, str) for o in task):
            raise unreadable(record, "hydra.overrides.task is not a list of overrides")
        try:
            parsed = OverridesParser.create().parse_overrides(params + task)
            (jobs,) = BasicSweeper.split_arguments(parsed, None)
        except Exception:  # a glob over config options needs the config: the report cannot list them
            continue
        for num, overrides in enumerate(jobs):
            if not (sweep / str(num) / ".hydra" / "config.yaml").is_file():
                found.append((str((sweep / str(num)).relative_to(root)), shlex.join(["rnnreg-train", *overrides])))
    return found


def history(run: Path, key: str = "val/ppl") -> list[float]:
    """Every value of `key` the run's CSV logger wrote (csv/metrics.csv), in order; [] without that file."""
    path = run / "csv" / "metrics.csv"
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
    except (OSError, csv.Error, ValueError, UnicodeDecodeError) as err:
        raise unreadable(path, err) from None


def by_epoch(run: Path, key: str = "val/ppl") -> dict[int, float]:
    """Each value of `key` in the run's csv/metrics.csv at its logged epoch (1-based; the CSV's epoch column),
    never at its row: a run resumed into another folder logs from its resumed epoch on, and a value drawn by
    row would be drawn epochs early. {} without that file; a value that is not a finite perplexity (nan, inf: a
    diverging run's) has no place on the figures' log axis and is left out."""
    path = run / "csv" / "metrics.csv"
    if not path.exists():
        return {}
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get(key) and row.get("epoch")]
        values = {int(float(row["epoch"])) + 1: float(row[key]) for row in rows}
    except (OSError, csv.Error, ValueError, OverflowError, UnicodeDecodeError) as err:
        raise unreadable(path, err) from None
    return dict(sorted((epoch, value) for epoch, value in values.items() if is_perplexity(value)))


def read_yaml(path: Path) -> dict:
    """A run's YAML file, a mapping; {} without the file."""
    if not path.exists():
        return {}
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise unreadable(path, err) from None
    if value is not None and not isinstance(value, dict):
        raise unreadable(path, "not a YAML mapping")
    return value or {}


def section(value: dict, path: Path, *keys: str) -> dict:
    """The mapping at `keys` in `value`, read from the YAML file `path` ({} where a key is absent or empty); one that
    is not a mapping is a file the report cannot read."""
    for depth, key in enumerate(keys):
        value = value.get(key) or {}
        if not isinstance(value, dict):
            raise unreadable(path, f"{'.'.join(keys[: depth + 1])} is not a mapping")
    return value


def unreadable(path: Path, why) -> DataError:
    """A run's file the report cannot read (a file from elsewhere, cut short or edited): one line, the fix."""
    return DataError(
        f"{path} is not readable ({first_line(why)}): restore it, or move its run's folder out of the report's path"
    )


def choice(choices: dict, overrides: list[str], group: str) -> str | None:
    """The option of a config group a job ran with: hydra.yaml's runtime choices, else a `group=` override."""
    chosen = choices.get(group) or next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{group}=")), None)
    return None if chosen is None else str(chosen)


# Overrides that never make another configuration: where a job wrote or how it was watched (sweep.NOT_COMPARED),
# and the checkpoint it went on from (a resume goes on exactly: the same configuration).
SAME_CONFIGURATION = (*NOT_COMPARED, "ckpt_path")


def seed_of(overrides: list[str], config: dict) -> str:
    """The seed a job ran with: its `seed=` override, else its config's."""
    given = [o.split("=", 1)[1] for o in overrides if override_key(o) == "seed" and "=" in o]  # (~seed: none)
    return given[-1] if given else str(config.get("seed"))


def collect(root: Path) -> list[dict]:
    """One row per job: its overrides, seed, status, perplexities, validation curve (epoch -> value), and
    what the figures need (dropout placement, model size, experiment, trainer budget, the recipe's data,
    sizes and batches)."""
    rows = []
    for run in find_runs(root):
        overrides = recorded_overrides(run) or []
        hydra_file, config_file = run / ".hydra" / "hydra.yaml", run / ".hydra" / "config.yaml"
        choices = section(read_yaml(hydra_file), hydra_file, "hydra", "runtime", "choices")
        config = read_yaml(config_file)
        trainer, model, data = (section(config, config_file, key) for key in ("trainer", "model", "data"))
        metrics = read_metrics(run / "metrics.json")
        curve = by_epoch(run)
        rows.append(
            {
                "run": str(run.relative_to(root)) if run != root else run.name,
                "path": run,
                "overrides": [o for o in overrides if not override_key(o).startswith(SAME_CONFIGURATION)],
                "seed": seed_of(overrides, config),
                "status": metrics.get("status", "completed") if metrics else status_without_metrics(run),
                "best_val_ppl": metrics.get("best_val_ppl", min(curve.values(), default=math.nan)),
                "test_ppl": metrics.get("test_ppl", math.nan),
                "test_ppl_batched": metrics.get("test_ppl_batched", math.nan),
                "epochs": metrics.get("epochs", max(curve, default=0)),
                "train_seconds": metrics.get("train_seconds"),
                "words_per_second": metrics.get("words_per_second"),
                "val_history": curve,
                "placement": choice(choices, overrides, "dropout") or "config",
                "model": choice(choices, overrides, "model"),
                "experiment": choice(choices, overrides, "experiment"),
                "launcher": choice(choices, overrides, "hydra/launcher"),
                "trainer": {k: trainer.get(k) for k in ("max_epochs", "limit_train_batches", "limit_val_batches")},
                "recipe": {
                    "data": choice(choices, overrides, "data"),
                    "hidden_size": model.get("hidden_size"),
                    "num_layers": model.get("num_layers"),
                    "batch_size": data.get("batch_size"),
                    "bptt": data.get("bptt"),
                },
            }
        )
    # what all rows share is left out of each; one row alone shares with nothing: its overrides are shown
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    for r in rows:
        r["differs"] = " ".join(o for o in r["overrides"] if o not in common) or "(same)"
        r["seedless"] = " ".join(o for o in r["overrides"] if o not in common and not o.startswith("seed=")) or "(same)"
    return rows


# metrics.json's numbers the report shows; a perplexity also draws on a log axis (is_perplexity)
NUMBERS = ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs", "train_seconds", "words_per_second")
PERPLEXITIES = ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched")


# exp(rnnreg.training_signals.MAX_NLL), without importing torch: above it a run has diverged (and writes null)
MAX_PERPLEXITY = math.exp(700.0)


def is_perplexity(value: float) -> bool:
    """A perplexity a run can have written: at least 1, at most MAX_PERPLEXITY (so finite)."""
    return 1.0 <= value <= MAX_PERPLEXITY


def read_metrics(path: Path) -> dict:
    """A run's metrics.json ({} without one), a null number as nan: rnnreg.io writes NaN and infinities as null.
    A file whose numbers are not numbers, or not perplexities a run writes, is one the report cannot read."""
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise unreadable(path, err) from None
    if not isinstance(metrics, dict):
        raise unreadable(path, "not a JSON object")
    for key in NUMBERS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise unreadable(path, f"{key}={json.dumps(value)} is not a number")
        if value is not None and key in PERPLEXITIES and not is_perplexity(value):
            raise unreadable(path, f"{key}={json.dumps(value)} is not a perplexity")
    if not isinstance(metrics.get("status", ""), str):
        raise unreadable(path, f"status={json.dumps(metrics['status'])} is not a run's status")
    return {key: math.nan if value is None else value for key, value in metrics.items()}


PPL_COLUMNS = {
    "best_val_ppl": "best val ppl",
    "test_ppl": "test ppl (1 stream)",
    "test_ppl_batched": "test ppl (batched)",
}


def with_repeats(rows: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their overrides other than `seed` (a configuration and its seeds); runs not completed
    apart, keyed "<overrides> (<status>)". A seed may come more than once (one sweep linked twice under two
    names, or rerun with other tags): by_config keeps it once."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = r["seedless"] if r["status"] == "completed" else f"{r['differs']} ({r['status']})"
        groups.setdefault(key, []).append(r)
    return groups


def by_config(rows: list[dict]) -> dict[str, list[dict]]:
    """with_repeats, each seed of a configuration once (its first run, in job order): a run repeated with
    the same seed is not another seed, and would narrow the spread and weigh that seed twice."""
    groups = {}
    for key, runs in with_repeats(rows).items():
        once: dict[str, dict] = {}
        for r in runs:
            once.setdefault(r["seed"], r)
        groups[key] = list(once.values())
    return groups


def repeated_seeds(rows: list[dict]) -> list[str]:
    """One note per seed that a configuration ran more than once: its runs, and the one counted."""
    notes = []
    for key, runs in with_repeats(rows).items():
        seeds: dict[str, list[str]] = {}
        for r in runs:
            seeds.setdefault(r["seed"], []).append(r["run"])
        notes += [
            f"configuration `{key}`: seed {seed} ran {len(found)} times ({', '.join(found)}); counted once, "
            f"from {found[0]}"
            for seed, found in seeds.items()
            if len(found) > 1
        ]
    return notes


def partial_curves(rows: list[dict]) -> list[str]:
    """One note per run whose csv/metrics.csv lacks validation for epochs it trained (it was resumed into its
    folder from another's checkpoint): its curve is drawn at the epochs it has."""
    notes = []
    for r in rows:
        epochs = r["val_history"]
        missing = sorted(set(range(1, max(epochs, default=0) + 1)) - set(epochs))
        if missing:
            notes.append(
                f"{r['run']}: csv/metrics.csv has no validation perplexity for epoch(s) {spans(missing)} (a resumed "
                f"run: those rows are in the folder it resumed from, or were lost): its curve is drawn at the epochs "
                f"it has"
            )
    return notes


def spans(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1–3, 5'."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        start = n if start is None else start
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(n) if n == start else f"{start}–{n}")
            start = None
    return ", ".join(parts)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; nan for both when a run lacks the value (test=false: no test)."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values)


def over_seeds(rows: list[dict]) -> list[dict]:
    """Configurations completed with 2 or more seeds: the number of seeds (each counted once: by_config) and
    each perplexity's mean and sample standard deviation."""
    return [
        {"config": config, "seeds": len(runs)} | {key: mean_sd([r[key] for r in runs]) for key in PPL_COLUMNS}
        for config, runs in by_config(rows).items()
        if runs[0]["status"] == "completed" and len(runs) > 1
    ]


def fmt(value, spec: str = ".1f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
    lines = [
        (
            "| run | overrides | status | best val ppl | test ppl (1 stream) | test ppl (batched) | epochs "
            "| train s | words/s |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['differs']} | {r['status']} | {fmt(r['best_val_ppl'], '.2f')} | "
            f"{fmt(r['test_ppl'], '.2f')} | {fmt(r['test_ppl_batched'], '.2f')} | {r['epochs']} | "
            f"{fmt(r['train_seconds'], '.0f')} | {fmt(r['words_per_second'], ',.0f')} |"
        )
    return "\n".join(lines) + "\n"


def seeds_table(groups: list[dict]) -> str:
    lines = [
        "| overrides (seed aside) | seeds | " + " | ".join(f"{c}, mean ± sd" for c in PPL_COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(PPL_COLUMNS),
    ]
    for g in groups:
        cells = " | ".join(
            fmt(g[key][0]) if math.isnan(g[key][0]) else f"{g[key][0]:.2f} ± {g[key][1]:.2f}" for key in PPL_COLUMNS
        )
        lines.append(f"| {g['config']} | {g['seeds']} | {cells} |")
    return "\n".join(lines) + "\n"


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
# Configurations of one placement that differ in something else (rates, sizes): one marker and line style each.
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", ":", "-.")
FIGURES = ("val_ppl", "test_ppl")
# Each figure as PNG (300 dpi, for screens and the README) and PDF (vector, for papers), cropped to its contents.
FORMATS = {"png": {"dpi": 300}, "pdf": {"metadata": {"CreationDate": None}}}


def placement_colour(placement: str) -> str:
    """The colour of a dropout placement in every figure; an unknown name gets the colour of 'config'."""
    return PLACEMENT_COLOURS.get(placement, PLACEMENT_COLOURS["config"])


FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+(?=[eE]))([eE][-+]?\d+)?")


def short_override(override: str, digits: int | None = 4) -> str:
    """dropout.p=0.3 -> p=0.3: the last part of the key is enough in a label; a float to `digits`
    significant digits (Optuna's 0.41234567890123456 -> 0.4123)."""
    key, sep, value = override.partition("=")
    if digits is not None and FLOAT.fullmatch(value) and float(f"{float(value):.{digits}g}") != float(value):
        value = f"{float(value):.{digits}g}"  # only a value longer than that: 1.0 stays 1.0
    return key.rsplit(".", 1)[-1] + sep + value


def configurations(rows: list[dict]) -> list[dict]:
    """What the figures draw, one entry per configuration (plot_groups), in the order of PLACEMENT_COLOURS
    then of the jobs: its placement, a short horizontal label (the placement, plus what else differs
    between the configurations: `both, p=0.3`), colour, marker, line style and runs."""
    order = list(PLACEMENT_COLOURS)
    entries = []

    def label(runs: list[dict], digits: int | None) -> str:
        placement, status = runs[0]["placement"], runs[0]["status"]
        extra = [
            short_override(o, digits)
            for o in (runs[0]["differs"] if status != "completed" else runs[0]["seedless"]).split()
            if o not in ("(same)", "(none)") and not o.startswith(("dropout=", "seed="))
        ]
        return ", ".join([placement, *extra]) + (f" ({status})" if status != "completed" else "")

    for key, runs in plot_groups(rows).items():
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


def full_budget(limit) -> bool:
    """A trainer.limit_*_batches that leaves every batch in: null, or the fraction 1.0."""
    return limit is None or (isinstance(limit, float) and limit == 1.0)


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
    if not (full_budget(trainer.get("limit_train_batches")) and full_budget(trainer.get("limit_val_batches"))):
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


def figure_val_ppl(rows: list[dict], paper: dict | None = None) -> Figure:
    """Validation perplexity per epoch: one curve per configuration, the mean over its seeds with their
    min–max range shaded, in its placement's colour; the paper's validation perplexity as a dashed line
    when the runs are its full recipe."""
    entries = [e for e in configurations(rows) if any(r["val_history"] for r in e["runs"])]
    # room for the legend beside the axes (8 pt: ~0.06 inch a character, 0.17 a line): a legend wider than the
    # figure collapses constrained layout's axes (a warning, and the layout not applied)
    longest = max((len(e["label"]) + 6 for e in entries), default=0)
    fig = Figure(figsize=(max(7.5, 5.2 + 0.062 * longest), max(4.2, 1.4 + 0.17 * len(entries))), layout="constrained")
    ax = fig.subplots()
    values = []
    counts = [sum(1 for r in e["runs"] if r["val_history"]) for e in entries]
    for e, n in zip(entries, counts):
        curves = [r["val_history"] for r in e["runs"] if r["val_history"]]
        reached = set.intersection(*(set(c) for c in curves))  # the epochs every seed logged
        if not reached:
            continue
        # each value at its logged epoch; an epoch missing in between is a gap in the line (nan), not joined
        epochs = range(min(reached), max(reached) + 1)
        per_epoch = [[c[epoch] for c in curves] if epoch in reached else [math.nan] for epoch in epochs]
        mean = [statistics.mean(v) for v in per_epoch]
        ax.plot(
            epochs,
            mean,
            color=e["colour"],
            marker=e["marker"],
            markersize=4,
            markevery=max(1, math.ceil(len(epochs) / 12)),
            linestyle=e["linestyle"],
            linewidth=1.6,
            label=e["label"] + (f" (n={n})" if len(set(counts)) > 1 else ""),
        )
        if len(curves) > 1:
            ax.fill_between(
                epochs,
                [min(v) for v in per_epoch],
                [max(v) for v in per_epoch],
                color=e["colour"],
                alpha=0.18,
                linewidth=0,
            )
        values += [v for epoch in per_epoch for v in epoch if not math.isnan(v)]
    for size, ref in references(rows, paper).items():
        ax.axhline(
            ref["valid_ppl"],
            color="0.25",
            linestyle=(0, (4, 3)),
            linewidth=1,
            label=f"paper {size} ({ref['dropout']}): {ref['valid_ppl']}",
        )
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set(xlabel="epoch", ylabel="validation perplexity (log scale)")
    ax.set_title("Validation perplexity per epoch", fontsize=11)
    n = sorted(set(counts))
    seeds = f"{n[0]} seeds" if len(n) == 1 else f"{n[0]}–{n[-1]} seeds (n)"
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
        frameon=False,
        title="dropout placement" + (f"\nline: mean over {seeds}\nshaded: min–max over seeds" if n[-1] > 1 else ""),
        title_fontsize=8,
        alignment="left",
    )
    return fig


def figure_test_ppl(rows: list[dict], paper: dict | None = None) -> Figure:
    """Test perplexity (one stream) per configuration, configurations down the y axis: the mean over seeds
    as a marker with ± sample sd as an error bar and each seed as a small dot, the mean written beside it;
    the x axis spans the data (not from 0); the paper's test perplexity as a dashed line when the runs are
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
    values, ends = [], []
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
            f"{mean:.1f}",
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
    refs = references(rows, paper)
    for size, ref in refs.items():
        ax.axvline(
            ref["test_ppl"],
            color="0.25",
            linestyle=(0, (4, 3)),
            linewidth=1,
            label=f"paper {size} ({ref['dropout']}): {ref['test_ppl']}",
            zorder=1,
        )
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
    lo, hi = min(values), max(values + ends)
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
    ax.set_xlabel(f"test perplexity (one stream; lower is better)\n{interval_text(counts)}", fontsize=9)
    ax.set_title("Test perplexity by dropout placement", fontsize=11, pad=16 if refs else 6)
    return fig


def save(fig: Figure, out: Path, name: str) -> list[Path]:
    """The figure as <name>.png (300 dpi) and <name>.pdf (vector, text kept as text)."""
    written = []
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        for ext, options in FORMATS.items():
            fig.savefig(out / f"{name}.{ext}", bbox_inches="tight", **options)
            written.append(out / f"{name}.{ext}")
    return written


def plot(rows: list[dict], out: Path, paper: dict | None = None) -> list[Path]:
    """val_ppl.{png,pdf} and test_ppl.{png,pdf} in `out`; the paths written."""
    return [*save(figure_val_ppl(rows, paper), out, "val_ppl"), *save(figure_test_ppl(rows, paper), out, "test_ppl")]


def report(path: str | Path, paper: dict | None = None) -> str:
    """report.md and the figures in the folder `path`; the markdown returned. `paper`: conf/report.yaml's
    `paper` (the paper's perplexities by model size), drawn only beside runs of that size's full recipe."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"path={path} is not a folder: give a run or multirun folder under outputs/")
    rows = collect(root)
    table = markdown_table(rows)
    groups = over_seeds(rows)
    if groups:
        table += "\nOver seeds:\n\n" + seeds_table(groups)
    notes = repeated_seeds(rows) + partial_curves(rows)
    if notes:
        table += "\nNotes:\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    table += how_to_go_on(rows, root)
    try:
        (root / "report.md").write_text(table)
        plot(rows, root, paper)
    except OSError as err:  # a folder where a file goes, a read-only folder, a full disk
        where = Path(err.filename) if err.filename else root
        raise OutputError(
            f"could not write {where.name} in {where.parent}: {err.strerror or err}: move what is in the way, or "
            f"copy the runs to a folder you can write"
        ) from None
    return table


def written_files(root: Path) -> list[Path]:
    """What report() writes in `root`."""
    return [root / "report.md", *(root / f"{name}.{ext}" for name in FIGURES for ext in FORMATS)]


@hydra_entry("report")
def main(cfg: DictConfig) -> None:
    if cfg.paper is not None and not isinstance(cfg.paper, DictConfig):
        raise ConfigError(f"paper={cfg.paper} must be the paper's numbers by model size (conf/report.yaml), or null")
    paper = None if cfg.paper is None else OmegaConf.to_container(cfg.paper, resolve=True)
    text = report(str(cfg.path), paper)
    try:
        print(text)
        print("wrote " + ", ".join(str(p) for p in written_files(Path(cfg.path))), flush=True)
    except BrokenPipeError:  # `| head` read what it wanted: the rest goes nowhere, without a traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
