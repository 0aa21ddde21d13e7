"""The composed config as a run shows it: a rich tree on the console, saved as config_tree.log in the run folder
(a single run's and each stacked member's)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

# The config tree's top-level keys in this order first (the rest follow in the config's order).
CONFIG_TREE_ORDER = ("experiment_name", "data", "model", "dropout", "optim", "trainer", "callbacks", "logger")


def print_config_tree(
    cfg: DictConfig, save_to: str | Path | None = None, resolve: bool = True, console: bool = True
) -> str:
    """The composed config as a rich tree on the console (`console`; and as text in `save_to`), one branch per
    top-level key, as the lightning-hydra-template's print_config_tree; returns the text. Rank 0 only."""
    import io

    import rich.console
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in CONFIG_TREE_ORDER if k in cfg] + [k for k in cfg if k not in CONFIG_TREE_ORDER]
    for key in keys:
        value = cfg[key]
        branch = tree.add(str(key), style="dim", guide_style="dim")
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig | ListConfig) else str(value)
        branch.add(rich.syntax.Syntax(text.rstrip(), "yaml", word_wrap=True))  # long paths wrap, not cropped
    out = rich.console.Console(record=True, file=None if console else io.StringIO())
    out.print(tree)
    text = out.export_text()
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        Path(save_to).write_text(text)
    return text
