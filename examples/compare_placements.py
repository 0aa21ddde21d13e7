"""Where should dropout go in an LSTM? The paper's comparison in miniature, with rnnreg as a library.

Trains the paper's small model (2 layers; --hidden units) on Penn Treebank three times, with the same seed
and budget: no dropout, dropout on the non-recurrent connections (the paper) and dropout on the recurrent
connection h_{t-1} -> h_t (what the paper argues against), each with dropout probability --p. Each run
writes a run folder that rnnreg-report reads (metrics.json, csv/metrics.csv, .hydra/), then the report
(report.md, report.csv, summary.csv, summary.tex, val_ppl.png/pdf, test_ppl.png/pdf) is written into --out, which
must not hold an earlier comparison.

    python examples/compare_placements.py                          # a few minutes on a CPU
    python examples/compare_placements.py --windows 3 --val-windows 2 --epochs 1 --hidden 16 \
        --out outputs/examples/quick                               # a quick check (the tests run it)

At this budget the ranking of the placements is noise-prone (one seed, a slice of an epoch); the paper's
recipes are `rnnreg-train experiment=paper_medium` and `experiment=ablation_placement`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.loggers import CSVLogger

import rnnreg
from rnnreg.errors import ConfigError, OutputError
from rnnreg.io import write_json_atomic
from rnnreg.report import report
from rnnreg.report_runs import history
from rnnreg.run_folder_check import check_no_earlier_results
from rnnreg.run_record import metrics_path
from rnnreg.runtime import hide_expected_warnings

PLACEMENTS = ("none", "non_recurrent", "recurrent")


def recipe_of(placement: str, args: argparse.Namespace) -> tuple[list[str], dict]:
    overrides = [f"dropout={placement}", f"dropout.p={args.p}"]
    return overrides, rnnreg.paper_recipe("small", *overrides, f"model.hidden_size={args.hidden}")


def train_one(placement: str, args: argparse.Namespace, data, out: Path) -> dict:
    overrides, recipe = recipe_of(placement, args)
    L.seed_everything(recipe["seed"], verbose=False)
    task = rnnreg.LanguageModelTask(data.vocab_size, recipe["model"], recipe["dropout"], recipe["optim"])
    folder = out / placement
    budget = {
        "max_epochs": args.epochs,
        "limit_train_batches": args.windows,
        "limit_val_batches": args.val_windows,
        "limit_test_batches": args.val_windows,
    }
    trainer = L.Trainer(
        **budget,
        accelerator=args.accelerator,
        devices=1,
        logger=CSVLogger(folder, name="csv", version=""),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not args.quiet,
        num_sanity_val_steps=0,
        log_every_n_steps=min(50, args.windows),  # (Lightning's 50 warns of an epoch shorter than it)
    )
    trainer.fit(task, datamodule=data)
    test = trainer.test(task, datamodule=data, verbose=False)
    metrics = {
        "status": "completed",
        "experiment": "compare_placements",
        "best_val_ppl": min(history(folder)),
        "test_ppl": test[0]["test/ppl"],
        "test_ppl_batched": test[1]["test/ppl_batched"],
        "epochs": trainer.current_epoch,
        "params": task.num_params,
    }
    # what rnnreg-report reads of a run folder (as rnnreg-train leaves it)
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"trainer": budget, "model": recipe["model"]}))
    write_json_atomic(metrics_path(folder), metrics)  # strict JSON: a NaN perplexity as null
    return metrics


def count(text: str) -> int:
    """An integer >= 1 (argparse type): a bad one is refused before anything is trained or written."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def probability(text: str) -> float:
    """A drop probability in (0, 1) (argparse type): at 0 the dropout placements would not differ."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a drop probability in (0, 1), such as 0.3")
    return value


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=count, default=300, help="training windows per epoch (PTB has 2,323)")
    parser.add_argument("--val-windows", type=count, default=None, help="validation and test windows (default: all)")
    parser.add_argument("--epochs", type=count, default=2)
    parser.add_argument("--hidden", type=count, default=200, help="LSTM units (the paper's small model: 200)")
    parser.add_argument("--p", type=probability, default=0.3, help="dropout probability of every dropped connection")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--out", type=Path, default=Path("outputs/examples/compare_placements"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for placement in PLACEMENTS:  # as rnnreg-train: never over an earlier run's results
        try:
            check_no_earlier_results(args.out / placement, "--out", trains=False)
        except OutputError as err:
            parser.exit(2, f"error: {err}\n")
        try:  # every run's recipe, checked before the first one trains
            recipe_of(placement, args)
        except ConfigError as err:
            parser.exit(2, f"error: {err}\n")

    hide_expected_warnings()  # Lightning's lines that say nothing here (its cloud tips), hidden as rnnreg-train does
    recipe = rnnreg.paper_recipe("small")
    # one-stream test over the whole test set is slow at batch size 1: batched windows of 35 steps when limited
    extra = {"eval_bptt": 35} if args.val_windows else {}
    data = rnnreg.ptb_datamodule(**(recipe["data"] | extra))
    for placement in PLACEMENTS:
        metrics = train_one(placement, args, data, args.out)
        cut = f" (the first {args.val_windows} windows of each split)" if args.val_windows else ""
        print(f"{placement}: best val ppl {metrics['best_val_ppl']:.1f}, test ppl {metrics['test_ppl']:.1f}{cut}")
    table = report(args.out)
    print(table)
    print(f"wrote {args.out}/report.md, report.csv, summary.csv, summary.tex, val_ppl.png, test_ppl.png (and .pdf)")
    return table


if __name__ == "__main__":
    main()
