"""rnnreg-report's rows: each run of a run or multirun folder read from its records (`.hydra/hydra.yaml`,
`config.yaml`, `overrides.yaml`, `metrics.json`, `csv/metrics.csv`) into one row: its overrides, seed, status,
perplexities and validation curve, the configuration it is a seed of (runs of the same resolved config, whichever
overrides gave it: pool) and what tells it apart from the runs beside it (the overrides it does not share, the
config keys in which configurations of the same overrides differ). A record the report cannot read is one line
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
    Nor its speed settings (how fast, never what is computed: conf/train.yaml), nor its experiment_name (the name
    its folders and loggers file it under: `experiment=paper_small` and its keys spelled out train the same)."""
    not_compared = (*same_configuration(config), "speed", "experiment_name")
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


def seed_of(overrides: list[str], config: dict, metrics: dict) -> str:
    """The seed a job ran with: its metrics.json's (a completed run's, resolved: `seed=${hydra:job.num}` is each
    job's own), else its `seed=` override, else its config's."""
    recorded = metrics.get("seed")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return str(recorded)
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
                "seed": seed_of(overrides, config, metrics),
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
    for r in rows:
        r |= {"configuration": None, "config_told": [], "config_keys": []}  # (a fast_dev_run's: in none)
    name_configurations(pool(rows), common)
    for r in rows:
        shown = [f"{k}={setting(r['settings'][k])}" for k in r["config_keys"]]
        r["told"] = [o for o in r["overrides"] if o not in common] + shown  # (report.csv's columns)
        r["differs"] = " ".join(r["told"]) or "(same)"
        r["seedless"] = r["configuration"] or " ".join(o for o in r["told"] if override_key(o) != "seed") or "(same)"
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


def configuration_of(row: dict) -> str | None:
    """The configuration a run is a seed of, by its name in the report (name_configurations): runs of the same
    resolved config (pool), whichever overrides gave it; None for a fast_dev_run, no seed of any."""
    return row["configuration"]


def identity(row: dict) -> tuple[dict[str, str], dict[str, str], set[str], set[str]]:
    """What pool compares of a run: its settings; the overrides whose key its config does not record (an
    experiment's name, whose file sets keys of others; a record written without that key), each as the value it
    sets (same_override); the keys (or groups) it was given that its config does record; and every key and group
    its settings name."""
    settings = row["settings"]
    names = {".".join(key.split(".")[:n]) for key in settings for n in range(1, key.count(".") + 2)}
    given = {override_key(o): same_override(o) for o in row["overrides"] if override_key(o) != "seed"}
    unrecorded = {key: o for key, o in given.items() if key not in names}
    return settings, unrecorded, set(given) - set(unrecorded), names


def alike(a: tuple, b: tuple) -> bool:
    """Whether two runs' identities are one configuration: the same value of every key both settings have (a key
    one lacks was added by a later rnnreg, at the earlier behaviour), and of every override neither config records
    that both were given; a key one run was given that the other's config lacks is a difference."""
    (settings, unrecorded, recorded, names), (others, their_unrecorded, their_recorded, their_names) = a, b
    return (
        all(settings[k] == others[k] for k in settings.keys() & others.keys())
        and all(unrecorded[k] == their_unrecorded[k] for k in unrecorded.keys() & their_unrecorded.keys())
        and recorded <= their_names
        and their_recorded <= names
    )


def pool(rows: list[dict]) -> list[list[dict]]:
    """The runs of `rows` in configurations, in job order: a run joins the first configuration every run of which is
    alike it, whichever overrides gave each (a key given at its default and left out, `experiment=paper_small` and
    its keys spelled out: one configuration), else begins one. A fast_dev_run is no seed (its status says so): it is
    in none."""
    pools: list[tuple[list[dict], list[tuple], set]] = []  # its runs, their distinct identities, the keys of each
    for r in rows:
        if r["status"] == "fast_dev_run":
            continue
        me = identity(r)
        shape = (frozenset(me[0]), frozenset(me[1]), frozenset(me[2]))
        # (an identity of the same keys that is not this one differs in a value: not alike)
        joined = (p for p in pools if me in p[1] or (shape not in p[2] and all(alike(me, other) for other in p[1])))
        runs, identities, shapes = next(joined, None) or ([], [], set())
        if not runs:
            pools.append((runs, identities, shapes))
        runs.append(r)
        if me not in identities:
            identities.append(me)
            shapes.add(shape)
    return [runs for runs, _, _ in pools]


def name_configurations(configurations: list[list[dict]], common: set[str]) -> None:
    """Each run's `configuration`: its configuration's name, the overrides of its shortest spelling (the run given
    the fewest, the first of them) less the `common` ones and the seed, which a researcher can run again; with
    `key=value` of each config key in which configurations of the same such overrides differ (a config file or
    default changed between two sweeps), which each run's `config_keys` names, so that they are not pooled unseen.
    `config_told`: the name's overrides and keys, one a list item (summary.csv's columns)."""
    spelled: dict[tuple, list[tuple[list[dict], list[str]]]] = {}
    for runs in configurations:
        shortest = min(runs, key=lambda r: len(seedless_overrides(r)))
        told = [o for o in shortest["overrides"] if o not in common and override_key(o) != "seed"]
        spelled.setdefault(seedless_overrides(shortest), []).append((runs, told))
    names: set[str] = set()
    for alike_named in spelled.values():
        every = [r for runs, _ in alike_named for r in runs]
        keys = sorted(set.intersection(*(set(r["settings"]) for r in every)))
        differ = [k for k in keys if len({r["settings"][k] for r in every}) > 1]  # (none within one configuration)
        for runs, told in alike_named:
            told = told + [f"{k}={setting(runs[0]['settings'][k])}" for k in differ]
            name = " ".join(told) or "(same)"
            if name in names:  # (two that differ only where a record lacks a key: named apart by their first run)
                name = f"{name} [as {runs[0]['run']}]"
            names.add(name)
            for r in runs:
                r |= {"configuration": name, "config_told": told, "config_keys": differ}


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
