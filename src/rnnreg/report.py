"""rnnreg-report: one row per run of a run or multirun folder (rnnreg.report_runs), as markdown (the overrides
every run shares on a line above the table, each row's overrides those that tell it apart) and as data (report.csv,
summary.csv: the numbers unrounded; summary.tex: the table over seeds in LaTeX; rnnreg.report_tables), plus figures
(validation curves, test perplexity per configuration; rnnreg.report_figures) as PNG (300 dpi) and PDF, or the
formats asked for, and the commands that go on with runs that did not finish (rnnreg.report_commands).

Reads each job's `.hydra/overrides.yaml`, `metrics.json` and `csv/metrics.csv`. A job without `metrics.json`
is `running` while a live rnnreg process holds its folder (rnnreg.run_lock); a multirun job that left its reason in
error.txt is `failed` (the report says why, as for a run whose metrics.json says failed) or `stopped` (by a signal
before a result); else it is `unfinished` (killed hard, or lost with its machine). The report says how each goes on,
as for a job `interrupted` (SIGTERM, Ctrl-C) and a basic sweep's jobs that never started. When completed runs
differ only in their seed (`-m ... seed=1,2,3`; their resolved config the same, whichever overrides gave it:
rnnreg.report_runs.pool), a second table gives each configuration's mean and standard deviation over seeds, each
seed counted once. A run copied beside itself (`cp -r`) is one row, which a note names the
copies of (its records are the same bytes, written in the one folder).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from rnnreg.errors import ConfigError, OutputError
from rnnreg.io import replace_atomically
from rnnreg.override_text import override_value
from rnnreg.report_commands import how_to_go_on
from rnnreg.report_runs import collect, shared_overrides
from rnnreg.report_tables import (
    config_changes,
    configurations_done,
    copied_runs,
    group_speeds,
    markdown_table,
    over_seeds,
    paired_by_seed,
    paired_table,
    partial_curves,
    repeated_seeds,
    seeds_left_out,
    seeds_table,
    write_tables,
)
from rnnreg.runtime import hydra_entry, reader_gone

TABLES = ("report.csv", "summary.csv", "summary.tex")  # report.md's tables as data (report_tables.write_tables)
FIGURES = ("val_ppl", "test_ppl")  # rnnreg.report_figures draws them
# savefig's options per figure format: PNG at 300 dpi (screens, the README), PDF (vector, for papers; no creation
# date, so that a report of the same runs is the same bytes)
FORMATS = {"png": {"dpi": 300}, "pdf": {"metadata": {"CreationDate": None}}}


def figure_formats(formats) -> tuple[str, ...]:
    """conf/report.yaml's `formats` (a list, or one format as a word) as a tuple, each format once, in its order."""
    listed = isinstance(formats, (list, tuple, ListConfig))
    given = [formats] if isinstance(formats, str) else list(formats) if listed else None
    if given is None or not all(isinstance(f, str) for f in given) or not set(given) <= set(FORMATS):
        raise ConfigError(
            f"formats={override_value(formats)}: the figures' formats are {' and '.join(FORMATS)}: give "
            f"formats=[png,pdf], formats=[png] or formats=[] (no figures)"
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
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"path={path} {what}: give a run or multirun folder under outputs/")
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
        copied_runs(rows)
        + config_changes(rows)
        + seeds_left_out(rows)
        + repeated_seeds(rows)
        + partial_curves(rows)
        + group_speeds(rows)
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
        if formats:
            from rnnreg.report_figures import plot  # (matplotlib: seconds to import, only once the rows are read)

            plot(rows, root, paper, formats)
    except OSError as err:  # a folder where a file goes, a read-only folder, a full disk
        where = Path(err.filename) if err.filename else root
        raise OutputError(
            f"could not write {where.name} in {where.parent}: {err.strerror or err}: move what is in the way, or "
            f"copy the runs to a folder you can write"
        ) from None
    for stale in stale_figures(root, formats):  # (once the figures asked for are written: a failed report keeps them)
        try:
            stale.unlink()  # (a link: the link, not what it points at)
        except OSError as err:
            raise OutputError(
                f"could not remove {stale.name} in {root}, an earlier report's figure in a format not asked for "
                f"(formats={override_value(formats)}): {err.strerror or err}: remove it, or ask for its format too"
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
    formats = figure_formats(cfg.formats)
    root = Path(cfg.path)
    stale = stale_figures(root, formats) if root.is_dir() else []
    text = report(str(cfg.path), paper, formats)
    try:
        print(text)
        print("wrote " + ", ".join(str(p) for p in written_files(root, formats)), flush=True)
        if stale:
            removed, asked = ", ".join(str(p) for p in stale), override_value(formats)
            print(f"removed {removed}: an earlier report's, in a format not asked for (formats={asked})", flush=True)
    except BrokenPipeError:  # `| head` read what it wanted
        reader_gone()


if __name__ == "__main__":
    main()
