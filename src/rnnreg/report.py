"""rnnreg-report: one row per run of a run or multirun folder, as markdown (the overrides every run shares on a
line above the table, each row's overrides those that tell it apart) and as data (report.csv, summary.csv: the numbers
unrounded; summary.tex: the table over seeds in LaTeX), plus figures (validation curves,
test perplexity per configuration; rnnreg.report_figures) as PNG (300 dpi) and PDF, or the formats asked for.

Reads each job's `.hydra/overrides.yaml`, `metrics.json` and `csv/metrics.csv`. A job without `metrics.json`
is `running` while a live rnnreg process holds its folder (rnnreg.run_lock); a multirun job that left its reason in
error.txt is `failed` (the report says why, as for a run whose metrics.json says failed) or `stopped` (by a signal
before a result); else it is `unfinished` (killed hard, or lost with its machine). The report says how each goes on,
as for a job `interrupted` (SIGTERM, Ctrl-C) and a basic sweep's jobs that never started. When completed runs
differ only in their seed (`-m ... seed=1,2,3`), a second table gives each configuration's mean and standard
deviation over seeds, each seed counted once. A run copied beside itself (`cp -r`) is one row, which a note names the
copies of (its records are the same bytes, written in the one folder).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from rnnreg.errors import ConfigError, OutputError
from rnnreg.io import replace_atomically
from rnnreg.job_records import ERROR_FILE, error_written_last, first_words, how_it_ended, job_order
from rnnreg.multirun_jobs import NOT_COMPARED, override_key
from rnnreg.override_text import quoted_for_hydra, string_value
from rnnreg.record_yaml import read_yaml, recorded_overrides, section, unreadable
from rnnreg.report_commands import how_to_go_on
from rnnreg.run_lock import RunLock
from rnnreg.run_record import MAX_NLL, metrics_path, null_as_nan, read_metrics
from rnnreg.runtime import hydra_entry, reader_gone
from rnnreg.schema import show_value


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


def running(run: Path) -> bool:
    """Whether a live rnnreg process holds a run's folder, or its sweep's (a multirun holds its sweep folder)."""
    return RunLock.in_use(run) or RunLock.in_use(run.parent)


def why_failed(run: Path, metrics: dict) -> str:
    """A failed run's reason, one line: metrics.json's error (a divergence, a write that failed), else error.txt's."""
    lines = str(metrics.get("error") or first_words(run / ERROR_FILE, 1000)).strip().splitlines()
    return lines[0] if lines else "no reason was recorded"


def history(run: Path, key: str = "val/ppl") -> list[float]:
    """Every value of `key` the run's CSV logger wrote (csv/metrics.csv), in the order it logged them (each step's
    for a training key); [] without that file. The report draws by epoch (by_epoch); this compares runs value by
    value (examples/compare_placements.py's best perplexity; the tests' runs step by step)."""
    return logged(run, (key,), lambda row: float(row[key]))


def by_epoch(run: Path, key: str = "val/ppl") -> dict[int, float]:
    """Each value of `key` in the run's csv/metrics.csv at its logged epoch (1-based; the CSV's epoch column),
    never at its row: a run resumed into another folder logs from its resumed epoch on, and a value drawn by
    row would be drawn epochs early. {} without that file; a value that is not a finite perplexity (nan, inf: a
    diverging run's) has no place on the figures' log axis and is left out."""
    values = dict(logged(run, (key, "epoch"), lambda row: (int(float(row["epoch"])) + 1, float(row[key]))))
    return dict(sorted((epoch, value) for epoch, value in values.items() if is_perplexity(value)))


def logged(run: Path, keys: tuple[str, ...], value: Callable[[dict], Any]) -> list:
    """`value` of each row of the run's csv/metrics.csv that holds all of `keys`, in the order they were logged; []
    without that file. A file that cannot be read, or whose values are not numbers (cut short, edited), is one the
    report cannot read."""
    path = run / "csv" / "metrics.csv"
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            return [value(row) for row in csv.DictReader(f) if all(row.get(key) for key in keys)]
    except (OSError, csv.Error, ValueError, OverflowError, UnicodeDecodeError) as err:
        raise unreadable(path, err) from None


def group_option(choices: dict, overrides: list[str], group: str) -> str | None:
    """The option of a config group a job ran with: hydra.yaml's runtime choices, else a `group=` override."""
    chosen = choices.get(group) or next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{group}=")), None)
    return None if chosen is None else str(chosen)


# Overrides that never make another configuration: where a job wrote or how it was watched (multirun_jobs.NOT_COMPARED),
# and the checkpoint it went on from (a resume goes on exactly: the same configuration).
SAME_CONFIGURATION = (*NOT_COMPARED, "ckpt_path")


def same_configuration(config: dict) -> tuple[str, ...]:
    """SAME_CONFIGURATION for a run of this config; an evaluation's checkpoint (rnnreg-eval's, task_name eval) is
    what it measures, another checkpoint another configuration."""
    return NOT_COMPARED if config.get("task_name") == "eval" else SAME_CONFIGURATION


def settings_of(config: dict) -> dict[str, str]:
    """A run's config.yaml as flat key -> value (JSON), less its seed and what never makes another configuration:
    what the seeds of one configuration share, whichever overrides gave it (or a config file changed between them).
    Nor its speed settings (how fast, never what is computed: conf/train.yaml)."""
    not_compared = (*same_configuration(config), "speed")
    flat: dict[str, str] = {}

    def walk(value, key: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif key != "seed" and not key.startswith(not_compared):
            flat[key] = json.dumps(value, sort_keys=True, separators=(",", ":"))

    walk(config, "")
    return flat


def corpus_folder(data: dict, cwd) -> dict[str, str]:
    """A relative data.data_dir as the folder it named: the run's working folder joined to it (`data.data_dir=corpus`
    from two folders is two corpora); {} for any other (an absolute path, or one read from a key)."""
    given = data.get("data_dir")
    if not isinstance(given, str) or not isinstance(cwd, str) or "${" in given or given.startswith("~"):
        return {}
    return {"data.data_dir": json.dumps(os.path.join(cwd, given))}  # (an absolute path: join gives it as it is)


def seed_of(overrides: list[str], config: dict) -> str:
    """The seed a job ran with: its `seed=` override, else its config's."""
    given = [o.split("=", 1)[1] for o in overrides if override_key(o) == "seed" and "=" in o]  # (~seed: none)
    return given[-1] if given else str(config.get("seed"))


def validated(metrics: dict, config: dict, curve: dict[int, float]) -> float:
    """A run's validation perplexity where its metrics.json has no best_val_ppl: an evaluation's (rnnreg-eval's
    val_ppl, of the checkpoint it measured), else the best of its logged curve (a run that did not complete)."""
    if config.get("task_name") == "eval" and "val_ppl" in metrics:
        return metrics["val_ppl"]
    return min(curve.values(), default=math.nan)


# what a run recorded, and the report reads: a folder whose files are all these bytes is that run's copy
RECORDS = (".hydra/hydra.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "csv/metrics.csv")


def run_identity(run: Path, output_dir) -> tuple | None:
    """What makes two folders one run (a copy, `cp -r`, beside its original, or two copies): the folder the run
    was written in (hydra.yaml's runtime.output_dir, which a copy keeps) and the bytes of each record the report reads
    (RECORDS and error.txt). Two runs of one folder (rerun after the first was copied away) differ in their
    metrics.json's times. None without a recorded folder: no run is taken for another's copy."""
    if not isinstance(output_dir, str):
        return None
    records = []
    for name in (*RECORDS, ERROR_FILE):
        try:
            records.append(hashlib.sha256((run / name).read_bytes()).hexdigest())
        except FileNotFoundError:
            records.append(None)
        except OSError as err:
            raise unreadable(run / name, err.strerror or err) from None
    return (output_dir, *records)


def originals(runs: list[Path], root: Path) -> dict[Path, list[str]]:
    """Each run of `runs` once (run_identity), by the folder it was written in where that folder is among them, else
    its first copy in job order: folder -> the names of its copies left out (report's note). Links to one folder are
    read once already (find_runs)."""
    kept: dict[tuple, Path] = {}
    identities = {run: run_identity(run, recorded_output_dir(run)) for run in runs}
    for run, identity in identities.items():
        written_here = identity is not None and os.path.realpath(run) == os.path.realpath(identity[0])
        if identity is None:
            kept[(run,)] = run
        elif identity not in kept or written_here:
            kept[identity] = run
    shown = set(kept.values())
    copies: dict[Path, list[str]] = {run: [] for run in runs if run in shown}
    for run, identity in identities.items():
        if run not in copies:
            copies[kept[identity]].append(name(run, root))
    return {run: copies[run] for run in runs if run in copies}


def recorded_output_dir(run: Path):
    """The folder a run was written in, as its hydra.yaml records it (hydra.runtime.output_dir); None without one."""
    hydra_file = run / ".hydra" / "hydra.yaml"
    return section(read_yaml(hydra_file), hydra_file, "hydra", "runtime").get("output_dir")


def name(run: Path, root: Path) -> str:
    """A run as the report's table names it: its folder under `root` (root's own name for a run given alone)."""
    return str(run.relative_to(root)) if run != root else run.name


def collect(root: Path) -> list[dict]:
    """One row per job: its overrides, seed, status, perplexities, validation curve (epoch -> value), and
    what the figures need (dropout placement, model size, experiment, trainer budget, the recipe's data,
    sizes and batches). A run copied beside itself is one row, which names its copies (originals)."""
    rows = []
    for run, copies in originals(find_runs(root), root).items():
        overrides = recorded_overrides(run) or []
        hydra_file, config_file = run / ".hydra" / "hydra.yaml", run / ".hydra" / "config.yaml"
        runtime = section(read_yaml(hydra_file), hydra_file, "hydra", "runtime")
        choices = section(runtime, hydra_file, "choices")
        config = read_yaml(config_file)
        trainer, model, data = (section(config, config_file, key) for key in ("trainer", "model", "data"))
        metrics = checked_metrics(run)
        status = how_it_ended(run, metrics)  # (as the sweep's end reads it), unless a live process holds it now
        error_is_last = error_written_last(run)
        if (status is None or error_is_last) and running(run):
            status = "running"
        status = status or "unfinished"  # killed hard (SIGKILL, out of memory, its machine lost) or gone without a word
        if status == "completed" and trainer.get("fast_dev_run"):  # a debug pass: a window or two, no seed's result
            status = "fast_dev_run"
        curve = by_epoch(run)
        rows.append(
            {
                "run": name(run, root),
                "copies": copies,
                "written_in": runtime.get("output_dir"),
                "path": run,
                "overrides": [o for o in overrides if not override_key(o).startswith(same_configuration(config))],
                "seed": seed_of(overrides, config),
                "status": status,
                "why": why_failed(run, {} if error_is_last else metrics) if status == "failed" else "",
                "best_val_ppl": metrics.get("best_val_ppl", validated(metrics, config, curve)),
                "test_ppl": metrics.get("test_ppl", math.nan),
                "test_ppl_batched": metrics.get("test_ppl_batched", math.nan),
                # (none said: its validations', else unknown, as for a run without a CSV logger or an evaluation)
                "epochs": metrics.get("epochs", max(curve, default=None)),
                # (interrupted in its final test, its training completed: the weights it was testing)
                "tested": metrics.get("tested") if isinstance(metrics.get("tested"), str) else None,
                "trained": isinstance(metrics.get("trained"), dict),  # (then that test completes it in its folder)
                "train_seconds": metrics.get("train_seconds"),
                "words_per_second": metrics.get("words_per_second"),
                "val_history": curve,
                "settings": settings_of(config) | corpus_folder(data, runtime.get("cwd")),
                "placement": group_option(choices, overrides, "dropout") or "config",
                "model": group_option(choices, overrides, "model"),
                "experiment": group_option(choices, overrides, "experiment"),
                "launcher": group_option(choices, overrides, "hydra/launcher"),
                "trainer": {k: trainer.get(k) for k in ("max_epochs", "limit_train_batches", "limit_val_batches")},
                "recipe": {
                    "data": group_option(choices, overrides, "data"),
                    "hidden_size": model.get("hidden_size"),
                    "num_layers": model.get("num_layers"),
                    "batch_size": data.get("batch_size"),
                    "bptt": data.get("bptt"),
                },
            }
        )
    common = set(shared_overrides(rows))  # shown once, above the table (report)
    shown = told_apart_by_config(rows)
    for r in rows:
        r["told"] = [o for o in r["overrides"] if o not in common] + shown[id(r)]  # (report.csv's columns)
        r["differs"] = " ".join(r["told"]) or "(same)"
        r["seedless"] = " ".join(o for o in r["told"] if override_key(o) != "seed") or "(same)"
    return rows


def shared_overrides(rows: list[dict]) -> list[str]:
    """The overrides every row has, in the first row's order: left out of each row's, and shown once above the table
    (a budget given to every job of a sweep, `trainer.max_epochs=1`, is read there); none for one row alone, which
    shares with nothing: its own are shown in its row."""
    if len(rows) < 2:
        return []
    common = set.intersection(*(set(r["overrides"]) for r in rows))
    return [o for o in dict.fromkeys(rows[0]["overrides"]) if o in common]


def seedless_overrides(row: dict) -> tuple[str, ...]:
    """A run's overrides less its seed, in any order, each as it sets its key (same_override): `a=1 b=2` and
    `b=2 a=1` are one configuration, and so are `p=.5`, `p=0.50` and `++p=0.5`; a key given twice is the value
    Hydra applied last (`p=.3 p=.5` is `p=.5`), as in seed_of and rnnreg.multirun_jobs.differing."""
    last = {override_key(o): o for o in row["overrides"]}
    return tuple(sorted(same_override(o) for key, o in last.items() if key != "seed"))


@functools.cache  # (rows share their overrides, and Hydra's parser takes a millisecond for each)
def same_override(override: str) -> str:
    """An override as the value it sets, as Hydra reads it: without `+`/`++` (which add or force the same value),
    each value in one spelling (.5, 0.50, 5e-1 -> 0.5; false, False -> False, as an Optuna study records a choice;
    null, NULL -> null). `~key` (which deletes) and what Hydra cannot read stay as they are."""
    key, sep, value = override.partition("=")
    if key.startswith("~") or not sep:
        return override
    try:
        value = overrides_parser().parse_override(f"k={value}").get_value_element_as_str()
    except HydraException:
        pass
    return key.lstrip("+") + sep + value


@functools.cache
def overrides_parser() -> OverridesParser:
    return OverridesParser.create()


def configuration_of(row: dict) -> tuple:
    """What the seeds of one configuration share: their overrides (seed aside, any order), and their values of the
    config keys in which runs of those overrides differ (told_apart_by_config)."""
    return seedless_overrides(row), tuple((k, row["settings"][k]) for k in row["config_keys"])


def told_apart_by_config(rows: list[dict]) -> dict[int, list[str]]:
    """id(row) -> `key=value` of each config key in which runs of the same overrides differ (a config file or
    default changed between two sweeps): shown with the overrides, so that they are not pooled unseen; each row's
    `config_keys` names those keys. A fast_dev_run is no seed (its status says so): it is not compared."""
    shown: dict[int, list[str]] = {id(r): [] for r in rows}
    alike: dict[tuple, list[dict]] = {}
    for r in rows:
        r["config_keys"] = []
        if r["status"] != "fast_dev_run":
            alike.setdefault(seedless_overrides(r), []).append(r)
    for runs in alike.values():
        # a key some runs lack is left out: a later version of rnnreg added it, its default the earlier behaviour
        keys = sorted(set.intersection(*(set(r["settings"]) for r in runs)))
        differ = [k for k in keys if len({r["settings"][k] for r in runs}) > 1]
        for r in runs:
            shown[id(r)] = [f"{k}={setting(r['settings'][k])}" for k in differ]
            r["config_keys"] = differ
    return shown


def config_changes(rows: list[dict]) -> list[str]:
    """A note when runs of the same overrides ran different configs: which keys, and why they are shown."""
    keys = sorted({k for r in rows for k in r["config_keys"]})
    why = {"data.data_dir": "a relative folder, given from two working folders"}
    if not keys:
        return []
    reasons = [f"{key}: {why[key]}" for key in keys if key in why]
    changed = [key for key in keys if key not in why]
    if changed:
        reasons.insert(0, f"{', '.join(changed)}: a config file or default changed between them")
    return [
        f"runs with the same overrides differ in their .hydra/config.yaml ({'; '.join(reasons)}): those keys are "
        f"shown with their overrides, and runs that differ in them are never seeds of one configuration"
    ]


def setting(value: str) -> str:
    """A config value (JSON) as an override writes it (0.5, true, null, paper_small; the string '1.0' quoted, as
    Hydra reads 1.0 as a number, and a string with a space: the report joins overrides with spaces)."""
    plain = json.loads(value)
    if not isinstance(plain, str):
        return value
    return quoted_for_hydra(plain) if " " in plain else string_value(plain)


# metrics.json's numbers the report shows; a perplexity also draws on a log axis (is_perplexity)
NUMBERS = ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched", "epochs", "train_seconds", "words_per_second")
PERPLEXITIES = ("val_ppl", "best_val_ppl", "test_ppl", "test_ppl_batched")


MAX_PERPLEXITY = math.exp(MAX_NLL)  # above it a run has diverged (and writes null)


def is_perplexity(value: float) -> bool:
    """A perplexity a run can have written: at least 1, at most MAX_PERPLEXITY (so finite)."""
    return 1.0 <= value <= MAX_PERPLEXITY


def checked_metrics(run: Path) -> dict:
    """A run's metrics.json (rnnreg.run_record.read_metrics: {} without one), a null number as nan. A file that is
    not a JSON object, or whose numbers are not numbers, or not perplexities a run writes, is one the report
    cannot read."""
    path = metrics_path(run)
    try:
        metrics = read_metrics(run)
    except (OSError, ValueError) as err:
        raise unreadable(path, err) from None
    for key in NUMBERS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise unreadable(path, f"{key}={json.dumps(value)} is not a number")
        if value is not None and key in PERPLEXITIES and not is_perplexity(value):
            raise unreadable(path, f"{key}={json.dumps(value)} is not a perplexity")
    if not isinstance(metrics.get("status", ""), str):
        raise unreadable(path, f"status={json.dumps(metrics['status'])} is not a run's status")
    return null_as_nan(metrics)


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
    names: dict[tuple, str] = {}  # a configuration by the name of its first run (overrides in that run's order)
    for r in rows:
        key = names.setdefault(configuration_of(r), r["seedless"]) if r["status"] == "completed" else None
        groups.setdefault(key or f"{r['differs']} ({r['status']})", []).append(r)
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


def seeds_left_out(rows: list[dict]) -> list[str]:
    """One note per configuration with seeds that did not complete (failed: diverged; interrupted, running...):
    its mean is over the others alone, which a seed that diverged would have made worse."""
    notes = []
    for key, runs in by_config(rows).items():
        if runs[0]["status"] != "completed":
            continue
        seeds, mine = {r["seed"] for r in runs}, configuration_of(runs[0])
        out = [f"{r['run']} (seed {r['seed']}, {r['status']})" for r in rows if left_out(r, seeds, mine)]
        if out:
            notes.append(
                f"configuration `{key}`: its mean is over its {len(runs)} completed seed(s) only; not counted: "
                f"{', '.join(out)}"
            )
    return notes


def left_out(row: dict, seeds: set[str], mine: tuple) -> bool:
    """A run of the configuration `mine` that did not complete, with a seed none of its completed runs has."""
    return (
        row["status"] not in ("completed", "fast_dev_run")
        and row["seed"] not in seeds
        and configuration_of(row) == mine
    )


def copied_runs(rows: list[dict]) -> list[str]:
    """One note per run whose copies the report found beside it (originals): each is that run, shown once."""
    return [
        f"{', '.join(r['copies'])} {'is a copy' if len(r['copies']) == 1 else 'are copies'} of {r['run']} (written in "
        f"{r['written_in']}, with the same records): the same run, shown once as {r['run']}"
        for r in rows
        if r["copies"]
    ]


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
    """Mean and sample standard deviation; nan for both when a run lacks the value (test=false: no test), nan
    for the deviation of one value."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def over_seeds(rows: list[dict], done: list[dict]) -> list[dict]:
    """Configurations completed with 2 or more seeds, or with one whose other seeds did not complete (the note of
    seeds_left_out names them: its row is that seed's, as its figure draws it, not left out of the table): the
    number of seeds (each counted once: by_config) and each perplexity's mean and sample standard deviation (of
    `done`: configurations_done)."""
    return [
        c
        for c in done
        if len(c["seeds"]) > 1 or any(left_out(r, set(c["seeds"]), configuration_of(c["runs"][0])) for r in rows)
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
            f"{fmt(r['test_ppl'], '.2f')} | {fmt(r['test_ppl_batched'], '.2f')} | {fmt(r['epochs'], '')} | "
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
            fmt(g[key][0]) if math.isnan(g[key][0]) else f"{g[key][0]:.2f} ± {fmt(g[key][1], '.2f')}"
            for key in PPL_COLUMNS
        )
        lines.append(f"| {g['config']} | {len(g['seeds'])} | {cells} |")
    return "\n".join(lines) + "\n"


def paired_by_seed(done: list[dict]) -> tuple[dict, list[dict]] | None:
    """Each completed configuration (configurations_done) against the one of the lowest mean test perplexity (1
    stream) over two or more seeds, seed by seed: its test perplexity minus the reference's in each seed both ran
    (two or more), their mean and sample sd, and in how many of those seeds it tested worse. None where no other
    configuration shares two seeds with it."""
    tested = [c for c in done if not math.isnan(c["test_ppl"][0])]
    candidates = [c for c in tested if len(c["seeds"]) > 1]
    if not candidates:
        return None
    reference = min(candidates, key=lambda c: c["test_ppl"][0])
    theirs = {r["seed"]: r["test_ppl"] for r in reference["runs"]}
    rows = []
    for c in tested:
        mine = {r["seed"]: r["test_ppl"] for r in c["runs"]}
        seeds = [seed for seed in reference["seeds"] if seed in mine]
        if c is reference or len(seeds) < 2:
            continue
        differences = [mine[seed] - theirs[seed] for seed in seeds]
        mean, sd = mean_sd(differences)
        worse = sum(d > 0 for d in differences)
        rows.append(dict(config=c["config"], seeds=seeds, differences=differences, mean=mean, sd=sd, worse=worse))
    return (reference, rows) if rows else None


def paired_table(reference: dict, rows: list[dict]) -> str:
    lines = [
        f"Paired by seed, against `{reference['config']}` (the lowest mean test ppl): each configuration's test ppl "
        "(1 stream) minus its own, in each seed both ran:",
        "",
        "| overrides (seed aside) | seeds | difference, mean ± sd | each seed | worse in |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        each = ", ".join(f"{seed}: {d:+.2f}" for seed, d in zip(r["seeds"], r["differences"]))
        n = len(r["seeds"])
        lines.append(f"| {r['config']} | {n} | {r['mean']:+.2f} ± {r['sd']:.2f} | {each} | {r['worse']} of {n} |")
    return "\n".join(lines) + "\n"


# report.csv's columns after the run's overrides: report.md's per-run table, by metrics.json's names, and a failed
# run's reason
TABLES = ("report.csv", "summary.csv", "summary.tex")  # report.md's tables as data (write_tables)
FIGURES = ("val_ppl", "test_ppl")  # rnnreg.report_figures draws them
# savefig's options per figure format: PNG at 300 dpi (screens, the README), PDF (vector, for papers; no creation
# date, so that a report of the same runs is the same bytes)
FORMATS = {"png": {"dpi": 300}, "pdf": {"metadata": {"CreationDate": None}}}
RUN_COLUMNS = ("status", "epochs", "best_val_ppl", "test_ppl", "test_ppl_batched", "train_seconds", "words_per_second")


def cell(value) -> str | int | float:
    """A number as a CSV cell: unrounded (a float's repr reads back as itself), empty where there is none (nan,
    None): a notebook reads an empty cell as missing, and 'nan' as a string or a number it did not log."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def override_columns(overrides: list[list[str]]) -> list[str]:
    """The keys of `overrides` (each row's), in the order they first come: one column each."""
    return list(dict.fromkeys(override_key(o) for told in overrides for o in told))


def override_cells(told: list[str]) -> dict[str, str]:
    """key -> value of each override that tells a run apart (`~key`, which deletes, as itself); a key given twice is
    the value Hydra applied last."""
    return {override_key(o): o.partition("=")[2] if "=" in o else o for o in told}


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    replace_atomically(path, lambda tmp: write_rows(tmp, columns, rows))


def write_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def runs_csv(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """report.csv: one row per run, report.md's per-run table as data: its overrides that tell it apart, one column a
    key, then RUN_COLUMNS and why a failed run failed."""
    keys = override_columns([r["told"] for r in rows])
    lines = [
        {"run": r["run"]} | override_cells(r["told"]) | {c: cell(r[c]) for c in RUN_COLUMNS} | {"why": r["why"]}
        for r in rows
    ]
    return ["run", *keys, *RUN_COLUMNS, "why"], lines


def configurations_done(rows: list[dict]) -> list[dict]:
    """Each completed configuration (by_config: each seed once), with one seed or more: its overrides (seed aside),
    seeds, runs and each perplexity's mean and sample standard deviation (mean_sd)."""
    return [
        {
            "config": config,
            "told": [o for o in runs[0]["told"] if override_key(o) != "seed"],
            "seeds": [r["seed"] for r in runs],
            "runs": runs,
        }
        | {key: mean_sd([r[key] for r in runs]) for key in PPL_COLUMNS}
        for config, runs in by_config(rows).items()
        if runs[0]["status"] == "completed"
    ]


# summary.csv's columns of report.md's "Paired by seed" table (paired_by_seed), empty in a row it does not pair
PAIRED_COLUMNS = ("paired_against", "paired_seeds", "test_ppl_paired_mean", "test_ppl_paired_sd", "paired_worse")


def summary_csv(done: list[dict], paired: tuple[dict, list[dict]] | None) -> tuple[list[str], list[dict]]:
    """summary.csv: one row per completed configuration (configurations_done), unrounded: its overrides (seed
    aside) as report.md writes them and one column a key, n (its seeds), the seeds, each perplexity's mean and
    sd (empty for one seed), and its row of the table paired by seed (`paired`: paired_by_seed's, in PAIRED_COLUMNS):
    the configuration it is paired against, the seeds both ran, the mean and sd of its test ppl minus that one's in
    each, and in how many of them it tested worse."""
    stats = [f"{key}_{stat}" for key in PPL_COLUMNS for stat in ("mean", "sd")]
    reference, pairs = paired or (None, [])
    against = reference["config"] if reference else None
    rows = {
        r["config"]: dict(zip(PAIRED_COLUMNS, (against, " ".join(r["seeds"]), r["mean"], r["sd"], r["worse"])))
        for r in pairs
    }
    lines = [
        {"configuration": c["config"]}
        | override_cells(c["told"])
        | {"n": len(c["seeds"]), "seeds": " ".join(c["seeds"])}
        | {f"{key}_{stat}": cell(value) for key in PPL_COLUMNS for stat, value in zip(("mean", "sd"), c[key])}
        | {key: cell(value) for key, value in rows.get(c["config"], {}).items()}
        for c in done
    ]
    columns = ["configuration", *override_columns([c["told"] for c in done]), "n", "seeds", *stats, *PAIRED_COLUMNS]
    return columns, lines


# LaTeX's special characters, as text
LATEX_TEXT = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def latex_text(text: str) -> str:
    return "".join(LATEX_TEXT.get(c, c) for c in text)


def summary_latex(done: list[dict]) -> str:
    """summary.tex: summary_csv as a plain LaTeX tabular (no package needed), rounded as report.md rounds them:
    mean ± sd to two decimals (the mean alone for one seed, -- where a seed has none: test=false)."""

    def stat(mean: float, sd: float) -> str:
        if math.isnan(mean):
            return "--"
        return f"${mean:.2f}$" if math.isnan(sd) else f"${mean:.2f} \\pm {sd:.2f}$"

    head = ["overrides (seed aside)", "seeds", *(f"{name}, mean $\\pm$ sd" for name in PPL_COLUMNS.values())]
    lines = [
        "% rnnreg-report: each completed configuration's perplexities, mean and sample sd over its seeds",
        "\\begin{tabular}{lr" + "r" * len(PPL_COLUMNS) + "}",
        "\\hline",
        " & ".join(head) + " \\\\",
        "\\hline",
    ]
    for c in done:
        cells = [latex_text(c["config"]), str(len(c["seeds"])), *(stat(*c[key]) for key in PPL_COLUMNS)]
        lines.append(" & ".join(cells) + " \\\\")
    return "\n".join([*lines, "\\hline", "\\end{tabular}"]) + "\n"


def write_tables(rows: list[dict], done: list[dict], paired: tuple[dict, list[dict]] | None, root: Path) -> None:
    """report.csv (of `rows`), summary.csv and summary.tex (of `done`: configurations_done; `paired`: paired_by_seed's)
    in `root`, each replaced whole (replace_atomically)."""
    write_csv(root / "report.csv", *runs_csv(rows))
    write_csv(root / "summary.csv", *summary_csv(done, paired))
    replace_atomically(root / "summary.tex", lambda tmp: tmp.write_text(summary_latex(done)))


def figure_formats(formats) -> tuple[str, ...]:
    """conf/report.yaml's `formats` (a list, or one format as a word) as a tuple, each format once, in its order."""
    given = [formats] if isinstance(formats, str) else list(formats) if isinstance(formats, (list, tuple)) else None
    if given is None or not all(isinstance(f, str) for f in given) or not set(given) <= set(FORMATS):
        shown = show_value(formats) if given is None else "[" + ",".join(show_value(f) for f in given) + "]"
        raise ConfigError(
            f"formats={shown}: the figures' formats are {' and '.join(FORMATS)}: give formats=[png,pdf], formats=[png] "
            f"or formats=[] (no figures)"
        )
    return tuple(dict.fromkeys(given))


def stale_figures(root: Path, formats: tuple[str, ...]) -> list[Path]:
    """The figures in `root` in a format not in `formats`: an earlier report's, which this one does not redraw."""
    others = [root / f"{name}.{ext}" for name in FIGURES for ext in FORMATS if ext not in formats]
    return [p for p in others if p.is_symlink() or p.is_file()]


def report(path: str | Path, paper: dict | None = None, formats=tuple(FORMATS)) -> str:
    """report.md, its tables as data (write_tables) and the figures in `formats` (figure_formats) in the folder `path`;
    the markdown returned. `paper`: conf/report.yaml's `paper` (the paper's perplexities by model size), drawn only
    beside runs of that size's full recipe. An earlier report's figures in another format are removed (stale_figures):
    they would show runs as they were then."""
    formats = figure_formats(formats)
    root = Path(path).absolute()  # (the commands it gives are pasted in any folder)
    if not root.is_dir():
        raise ConfigError(f"path={path} is not a folder: give a run or multirun folder under outputs/")
    rows = collect(root)
    table = markdown_table(rows)
    if shared := shared_overrides(rows):  # (the table's overrides column shows only what tells its runs apart)
        table = f"every run: {' '.join(shared)}\n\n{table}"
    done = configurations_done(rows)  # (the table over seeds, summary.csv and summary.tex)
    groups = over_seeds(rows, done)
    if groups:
        table += "\nOver seeds:\n\n" + seeds_table(groups)
    if paired := paired_by_seed(done):
        table += "\n" + paired_table(*paired)
    notes = (
        copied_runs(rows) + config_changes(rows) + seeds_left_out(rows) + repeated_seeds(rows) + partial_curves(rows)
    )
    if notes:
        table += "\nNotes:\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        table += "\nFailed, and why:\n\n" + "\n".join(f"- {r['run']}: {r['why']}" for r in failed) + "\n"
    table += how_to_go_on(rows, root)
    try:
        # replaced, not written through: a report.md that is a link (a shared folder's) leaves what it points at
        replace_atomically(root / "report.md", lambda tmp: tmp.write_text(table))
        write_tables(rows, done, paired, root)
        for stale in stale_figures(root, formats):
            stale.unlink()  # (a link: the link, not what it points at)
        if formats:
            from rnnreg.report_figures import plot  # (matplotlib: seconds to import, only once the rows are read)

            plot(rows, root, paper, formats)
    except OSError as err:  # a folder where a file goes, a read-only folder, a full disk
        where = Path(err.filename) if err.filename else root
        raise OutputError(
            f"could not write {where.name} in {where.parent}: {err.strerror or err}: move what is in the way, or "
            f"copy the runs to a folder you can write"
        ) from None
    return table


def written_files(root: Path, formats: tuple[str, ...] = tuple(FORMATS)) -> list[Path]:
    """What report() writes in `root` given `formats` (figure_formats)."""
    tables = [root / name for name in ("report.md", *TABLES)]
    return [*tables, *(root / f"{name}.{ext}" for name in FIGURES for ext in formats)]


@hydra_entry("report")
def main(cfg: DictConfig) -> None:
    if cfg.paper is not None and not isinstance(cfg.paper, DictConfig):
        raise ConfigError(f"paper={cfg.paper} must be the paper's numbers by model size (conf/report.yaml), or null")
    paper = None if cfg.paper is None else OmegaConf.to_container(cfg.paper, resolve=True)
    listed = isinstance(cfg.formats, ListConfig)
    formats = figure_formats(OmegaConf.to_container(cfg.formats) if listed else cfg.formats)
    root = Path(cfg.path)
    stale = stale_figures(root, formats) if root.is_dir() else []
    text = report(str(cfg.path), paper, formats)
    try:
        print(text)
        print("wrote " + ", ".join(str(p) for p in written_files(root, formats)), flush=True)
        if stale:
            names, shown = ", ".join(p.name for p in stale), "[" + ",".join(formats) + "]"
            print(f"removed {names}: an earlier report's, in a format not asked for (formats={shown})", flush=True)
    except BrokenPipeError:  # `| head` read what it wanted
        reader_gone()


if __name__ == "__main__":
    main()
