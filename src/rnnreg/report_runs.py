"""rnnreg-report's rows: each run of a run or multirun folder read from its records (`.hydra/hydra.yaml`,
`config.yaml`, `overrides.yaml`, `metrics.json`, `csv/metrics.csv`) into one row: its overrides, seed, status,
perplexities and validation curve, and what tells it apart from the runs beside it (the overrides it does not share,
the config keys in which runs of the same overrides differ). A record the report cannot read is one line
(rnnreg.record_yaml.unreadable)."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from rnnreg.errors import ConfigError
from rnnreg.job_records import ERROR_FILE, error_written_last, first_words, how_it_ended, job_order
from rnnreg.multirun_jobs import NOT_COMPARED, override_key
from rnnreg.override_text import quoted_for_hydra, string_value
from rnnreg.record_yaml import LIMITS, read_yaml, recorded_overrides, section, unreadable
from rnnreg.run_lock import RunLock
from rnnreg.run_record import MAX_NLL, metrics_path, null_as_nan, read_metrics


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
                "trainer": {k: trainer.get(k) for k in ("max_epochs", *LIMITS)},
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
