"""rnnreg-report's tables, from the rows rnnreg.report_runs reads: the per-run table, each configuration over its
seeds (mean and sample sd, each seed once), configurations paired seed by seed against the one of the lowest mean,
the notes that say what a reader could misread (seeds left out, repeated, copied runs, partial curves, config
changes), and the same tables as data (report.csv, summary.csv, summary.tex: write_tables)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from rnnreg.io import replace_atomically
from rnnreg.multirun_jobs import override_key
from rnnreg.report_runs import configuration_of


def config_changes(rows: list[dict]) -> list[str]:
    """A note when configurations of the same overrides ran different configs: which keys, and why they are shown."""
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


PPL_COLUMNS = {
    "best_val_ppl": "best val ppl",
    "test_ppl": "test ppl (1 stream)",
    "test_ppl_batched": "test ppl (batched)",
}


def with_repeats(rows: list[dict]) -> dict[str, list[dict]]:
    """Completed runs grouped by their configuration (rnnreg.report_runs.pool: the same resolved config, whichever
    overrides gave it), keyed by its name; runs not completed apart, keyed "<overrides> (<status>)". A seed may come
    more than once (one sweep linked twice under two names, rerun with other tags, or given its default by another
    sweep): by_config keeps it once."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = configuration_of(r) if r["status"] == "completed" else None
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


def left_out(row: dict, seeds: set[str], mine: str | None) -> bool:
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


def group_speeds(rows: list[dict]) -> list[str]:
    """One note where runs of a stacked sweep are shown: their train s and words/s are their group's (its members
    trained as one program), not what each would take alone, so not comparable with a run trained alone."""
    stacked = [r["run"] for r in rows if r["launcher"] == "stacked" and r["status"] == "completed"]
    if not stacked:
        return []
    return [
        f"{', '.join(stacked)} trained in stacked sweeps (hydra/launcher=stacked): their train s and words/s are their "
        f"group's, whose members trained as one program, not each run's alone"
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
        each = ", ".join(f"{seed}: {signed(d)}" for seed, d in zip(r["seeds"], r["differences"]))
        n = len(r["seeds"])
        lines.append(f"| {r['config']} | {n} | {signed(r['mean'])} ± {r['sd']:.2f} | {each} | {r['worse']} of {n} |")
    return "\n".join(lines) + "\n"


def signed(difference: float) -> str:
    """A difference to 2 decimals with its sign; one that rounds to nothing shows none (not +0.00 or -0.00)."""
    shown = f"{difference:+.2f}"
    return shown[1:] if float(shown) == 0 else shown


# report.csv's columns after the run's overrides: report.md's per-run table, by metrics.json's names, and a failed
# run's reason
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
    """report.csv: one row per run, report.md's per-run table as data: the configuration it is a seed of (its name in
    summary.csv; empty for a fast_dev_run: no seed), its overrides that tell it apart, one column a key (runs of one
    configuration given it in other words differ there), then RUN_COLUMNS and why a failed run failed."""
    keys = override_columns([r["told"] for r in rows])
    lines = [
        {"run": r["run"], "configuration": r["configuration"] or ""}
        | override_cells(r["told"])
        | {c: cell(r[c]) for c in RUN_COLUMNS}
        | {"why": r["why"]}
        for r in rows
    ]
    return ["run", "configuration", *keys, *RUN_COLUMNS, "why"], lines


def configurations_done(rows: list[dict]) -> list[dict]:
    """Each completed configuration (by_config: each seed once), with one seed or more: its name's overrides (seed
    aside: rnnreg.report_runs.name_configurations), seeds, runs and each perplexity's mean and sample standard
    deviation (mean_sd)."""
    return [
        {
            "config": config,
            "told": runs[0]["config_told"],
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
