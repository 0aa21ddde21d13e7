"""rnnreg-report: one row per run of a run or multirun folder, as markdown, plus PNG plots (validation
curves, test bars; a configuration run with several seeds is drawn once, as their mean).

Reads each job's `.hydra/overrides.yaml`, `metrics.json` and `csv/metrics.csv`; a job without
`metrics.json` (crashed or killed) is listed as failed. When completed runs differ only in their seed
(`-m ... seed=1,2,3`), a second table gives each configuration's mean and standard deviation over seeds.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import matplotlib
import yaml
from omegaconf import DictConfig

from rnnreg.runtime import ConfigError, hydra_entry

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def find_runs(root: Path) -> list[Path]:
    runs = sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml")},
                  key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.relative_to(root).parts])
    if not runs:
        raise ConfigError(f"no runs under {root}: give a run folder or a multirun folder (with .hydra/ inside)")
    return runs


def history(run: Path, key: str = "val/ppl") -> list[float]:
    """Every value of `key` the run's CSV logger wrote (csv/metrics.csv), in order; [] without that file."""
    path = run / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def collect(root: Path) -> list[dict]:
    rows = []
    for run in find_runs(root):
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
        metrics_path = run / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        curve = history(run)
        rows.append({"run": str(run.relative_to(root)) if run != root else run.name,
                     "overrides": [o for o in overrides if not o.startswith("hydra.")],
                     "status": metrics.get("status", "completed") if metrics else "failed",
                     "best_val_ppl": metrics.get("best_val_ppl", min(curve, default=math.nan)),
                     "test_ppl": metrics.get("test_ppl", math.nan),
                     "test_ppl_batched": metrics.get("test_ppl_batched", math.nan),
                     "epochs": metrics.get("epochs", len(curve)), "train_seconds": metrics.get("train_seconds"),
                     "words_per_second": metrics.get("words_per_second"), "val_history": curve})
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    for r in rows:
        r["differs"] = " ".join(o for o in r["overrides"] if o not in common) or "(same)"
        r["seedless"] = " ".join(o for o in r["overrides"] if o not in common and not o.startswith("seed=")) or "(same)"
    return rows


PPL_COLUMNS = {"best_val_ppl": "best val ppl", "test_ppl": "test ppl (1 stream)", "test_ppl_batched": "test ppl (batched)"}


def by_config(rows: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their overrides other than `seed` (a configuration and its seeds); failed runs
    apart, keyed "<overrides> (failed)"."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = r["seedless"] if r["status"] == "completed" else f"{r['differs']} (failed)"
        groups.setdefault(key, []).append(r)
    return groups


def over_seeds(rows: list[dict]) -> list[dict]:
    """Configurations completed with 2 or more seeds: the number of seeds and each perplexity's mean and
    sample standard deviation."""
    return [{"config": config, "seeds": len(runs)} | {
                key: (statistics.mean(r[key] for r in runs), statistics.stdev(r[key] for r in runs))
                for key in PPL_COLUMNS}
            for config, runs in by_config(rows).items()
            if runs[0]["status"] == "completed" and len(runs) > 1 and len({r["differs"] for r in runs}) == len(runs)]


def fmt(value, spec: str = ".1f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| run | overrides | status | best val ppl | test ppl (1 stream) | test ppl (batched) | epochs "
             "| train s | words/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['differs']} | {r['status']} | {fmt(r['best_val_ppl'], '.2f')} | "
                     f"{fmt(r['test_ppl'], '.2f')} | {fmt(r['test_ppl_batched'], '.2f')} | {r['epochs']} | "
                     f"{fmt(r['train_seconds'], '.0f')} | {fmt(r['words_per_second'], ',.0f')} |")
    return "\n".join(lines) + "\n"


def seeds_table(groups: list[dict]) -> str:
    lines = ["| overrides (seed aside) | seeds | " + " | ".join(f"{c}, mean ± sd" for c in PPL_COLUMNS.values())
             + " |", "|---|---|" + "---|" * len(PPL_COLUMNS)]
    for g in groups:
        cells = " | ".join(f"{fmt(g[key][0], '.2f')} ± {fmt(g[key][1], '.2f')}" for key in PPL_COLUMNS)
        lines.append(f"| {g['config']} | {g['seeds']} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """What the plots show, label -> runs: one entry per configuration (by_config), so that the seeds of
    one configuration are drawn as one mean curve and one bar."""
    return {(f"{key} ({len(runs)} seeds)" if len(runs) > 1 else key if runs[0]["status"] != "completed"
             else runs[0]["differs"]): runs for key, runs in by_config(rows).items()}


def plot(rows: list[dict], out: Path, paper: dict) -> None:
    groups = plot_groups(rows)
    seeded = any(len(runs) > 1 for runs in groups.values())
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs in groups.items():
        curves = [r["val_history"] for r in runs if r["val_history"]]
        if not curves:
            continue
        epochs = list(zip(*curves))  # the epochs every seed reached
        line, = ax.plot(range(1, len(epochs) + 1), [statistics.mean(e) for e in epochs], marker=".", label=label)
        if len(curves) > 1:  # mean of the seeds, their range shaded
            ax.fill_between(range(1, len(epochs) + 1), [min(e) for e in epochs], [max(e) for e in epochs],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel="epoch", ylabel="validation perplexity", yscale="log",
           title="Validation perplexity" + (" (mean over seeds, range shaded)" if seeded else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "val_ppl.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    tests = [[0 if math.isnan(r["test_ppl"]) else r["test_ppl"] for r in runs] for runs in groups.values()]
    ax.bar(range(len(groups)), [statistics.mean(t) for t in tests], color="tab:blue", capsize=3,
           yerr=[statistics.stdev(t) if len(t) > 1 else 0 for t in tests] if seeded else None)
    for (name, value), style in zip(paper.items(), ("--", "-.", ":")):
        ax.axhline(value, color="tab:red", linestyle=style, label=f"paper {name}: {value}")
    ax.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="test perplexity (one stream)",
           title="Final test perplexity" + (" (mean ± sd over seeds)" if seeded else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "test_ppl.png", dpi=100)
    plt.close(fig)


def report(path: str | Path, paper: dict) -> str:
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"path={path} is not a folder: give a run or multirun folder under outputs/")
    rows = collect(root)
    table = markdown_table(rows)
    groups = over_seeds(rows)
    if groups:
        table += "\nOver seeds:\n\n" + seeds_table(groups)
    (root / "report.md").write_text(table)
    plot(rows, root, paper)
    return table


@hydra_entry("report")
def main(cfg: DictConfig) -> None:
    print(report(cfg.path, dict(cfg.paper_test_ppl)))
    print(f"wrote {Path(cfg.path) / 'report.md'}, val_ppl.png, test_ppl.png")


if __name__ == "__main__":
    main()
