"""rnnreg as a library: the paper's recipes and Penn Treebank without Hydra's command line.

The numbers stay in the config files: `paper_recipe` composes conf/train.yaml with experiment=paper_<size>
through Hydra's compose API, `ptb_datamodule` takes conf/data/ptb.yaml's pinned URL, checksums and cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError, MissingValue
from rnnreg.multirun_jobs import override_key
from rnnreg.override_refusals import quoted_override
from rnnreg.task_config import optim_settings, plain, site_rates
from rnnreg.validation import not_given

SIZES = ("small", "medium", "large")
DATA_KEYS = ("batch_size", "bptt", "eval_bptt", "test_batch_size")
# the clip is optim's (rnnreg's update rule), max_epochs always in the recipe
TRAINER_NOT_PASSED = {"gradient_clip_val", "gradient_clip_algorithm", "max_epochs"}


@contextlib.contextmanager
def _own_hydra() -> Iterator[None]:
    """Hydra's global state for a compose of ours, the caller's (a Hydra app's) put back after it."""
    from hydra.core.global_hydra import GlobalHydra

    outer = GlobalHydra.instance()
    saved = outer.hydra if outer.is_initialized() else None
    outer.clear()
    try:
        yield
    finally:
        GlobalHydra.instance().hydra = saved


def compose_config(*overrides: str, config_name: str = "train", hydra_node: bool = False) -> DictConfig:
    """The config rnnreg-train (or `config_name`) would run with these command-line overrides, composed
    without a run: `paths.output_dir` (Hydra's run folder) stays unresolved. Works inside a Hydra app too.
    `hydra_node`: with Hydra's own node (its `runtime.choices`: the option of each config group)."""
    from hydra import compose, initialize_config_dir

    with _own_hydra(), initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=hydra_node)


def checked_config(*overrides: str) -> DictConfig:
    """compose_config, after the checks rnnreg-train makes of its command line: a bad value is the same
    one-line ConfigError."""
    from rnnreg.command_line import check_group_options, validate_args

    check_group_options(list(overrides))
    with _own_hydra():
        validate_args("train", list(overrides))
    return compose_config(*overrides)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """A plain container's values by dotted key (a list is one value)."""
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}


def _carried(key: str) -> bool:
    """Whether a recipe holds the config key: the task's model, dropout and optim (the clip: optim's), the
    data module's and the Trainer's plain arguments, the seed."""
    top = key.split(".")[0]
    if top in ("model", "dropout", "optim", "seed", "experiment_name"):
        return True
    if top == "data":
        return key != "data._target_"
    return top == "trainer" and key not in ("trainer._target_", "trainer.plugins", "trainer.default_root_dir")


def _changed(cfg: DictConfig, base: DictConfig) -> dict[str, Any]:
    """The keys whose value `cfg` changes from `base` (or adds, or removes)."""
    a, b = (_leaves(OmegaConf.to_container(c, resolve=False)) for c in (cfg, base))
    gone = object()
    return {k: a.get(k) for k in a.keys() | b.keys() if a.get(k, gone) != b.get(k, gone)}


def one_run(size: str, overrides: tuple[str, ...]) -> None:
    """A recipe is one run: rnnreg-train's flags (-m) and sweeps (seed=1,2) are refused in one line saying so, not
    with rnnreg-train's advice to add -m (which Hydra's parser would then fail on with a traceback)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flag = next((o for o in overrides if o.startswith("-")), None)
    if flag is not None:
        raise ConfigError(f"paper_recipe takes overrides, not rnnreg-train's flag {flag}: leave it out")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # (said by rnnreg-train's checks, in its one line)
        return
    sweep = next((o for o in parsed if o.is_sweep_override()), None)
    if sweep is not None:
        key, _, value = sweep.input_line.partition("=")
        raise ConfigError(
            f"{sweep.input_line} is a sweep and a recipe is one run: call paper_recipe once per value, such as "
            f"paper_recipe({size!r}, f'{key}={{value}}'), or quote the value ({quoted_override(key, value)}) for a "
            "string"
        )


def paper_recipe(size: str = "small", *overrides: str) -> dict[str, Any]:
    """The paper's recipe for `size` (small, medium, large), as keyword arguments:

    - `model`, `dropout`, `optim` (the clip included): LanguageModelTask(vocab_size, model, dropout, optim);
      `dropout` holds each site's rate, not dropout.p, which only fills a placement's sites as the config is
      composed: another rate is an override (paper_recipe("medium", "dropout.p=0.3")), or set the sites
    - `data`: ptb_datamodule(**data) (batch size, bptt, evaluation window, test streams; and the folder and
      files an override sets)
    - `trainer`: lightning.Trainer(**trainer) (max_epochs, and the Trainer arguments an override sets)
    - `experiment`, `seed`

    `overrides` are rnnreg-train's, e.g. paper_recipe("small", "dropout=recurrent", "dropout.p=0.3"), checked
    as rnnreg-train checks them (ConfigError). Those of data (data=text data.data_dir=...) come in `data`, those
    of the Trainer (trainer.limit_train_batches=10) in `trainer`; an override of what a recipe has no place
    for (logger, callbacks, regularizer=early_stopping, test, speed, paths, hydra) is refused (ConfigError)."""
    if size not in SIZES:
        raise ConfigError(f"paper_recipe({size!r}): choose one of {', '.join(SIZES)}")
    bad = [o for o in overrides if not isinstance(o, str)]
    if bad:  # (a list of them: Hydra's parser would fail on it with a TypeError)
        raise ConfigError(
            f"paper_recipe's overrides are strings such as 'dropout.p=0.3', not {bad[0]!r}: pass a list of them "
            f"unpacked, paper_recipe({size!r}, *overrides)"
        )
    one_run(size, overrides)
    chosen = next((o for o in overrides if override_key(o) == "experiment"), None)
    if chosen is not None:  # (the later experiment= would be the recipe, under paper_recipe(size)'s name)
        raise ConfigError(
            f"paper_recipe({size!r}, {chosen!r}): the size picks the experiment (paper_{size}): call "
            f"paper_recipe('small' | 'medium' | 'large') without experiment=, or train other experiments with "
            f"rnnreg-train"
        )
    base_args = (f"experiment=paper_{size}",)
    try:
        cfg = checked_config(*base_args, *overrides)
    except MissingValue as err:  # its example is rnnreg-train's command line; here it is one more override
        given = "".join(f", {o!r}" for o in overrides)
        raise ConfigError(
            f"{not_given(err.key)}: add it as an override, e.g. paper_recipe({size!r}{given}, '{err.key}=<value>')"
        ) from None
    base = compose_config(*base_args)
    changed = _changed(cfg, base)
    hydra = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
    if hydra or any(not _carried(k) for k in changed):
        refused = hydra + [
            o
            for o in overrides
            if o not in hydra and any(not _carried(k) for k in _changed(compose_config(*base_args, o), base))
        ]
        keys = sorted({".".join(k.split(".")[:2]) for k in changed if not _carried(k)})
        sets = f" (it sets {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})" if keys else ""
        raise ConfigError(
            f"paper_recipe cannot carry {' '.join(refused or overrides)}{sets}: a recipe holds model, dropout, "
            f"optim, data, trainer and seed; set the rest on the objects you build from it, or run rnnreg-train"
        )
    # a key an override names comes with it, its value the config's or not (trainer.devices=1: else Lightning's "auto")
    named = [override_key(o) for o in overrides if not o.startswith("~")]
    given = [k for k in named if _carried(k)] + list(changed)
    data, trainer = ({k.split(".")[1] for k in given if k.startswith(group)} for group in ("data.", "trainer."))
    return {
        "experiment": cfg.experiment_name,
        "model": plain(cfg.model),
        "dropout": site_rates(cfg.dropout),  # each site's rate (dropout.p filled them: an override sets it)
        "optim": optim_settings(cfg),
        # ptb_datamodule(**data): another corpus's folder and files (data=text) come with it
        "data": {key: plain(cfg.data[key]) for key in (*DATA_KEYS, *sorted(data - set(DATA_KEYS)))},
        "trainer": {"max_epochs": cfg.trainer.max_epochs}
        | {key: plain(cfg.trainer[key]) for key in sorted(trainer - TRAINER_NOT_PASSED)},
        "seed": cfg.seed,
    }


def ptb_datamodule(**kwargs: Any):
    """Penn Treebank (Mikolov's split) as an LMDataModule: conf/data/ptb.yaml's download URL and pinned
    sha256 sums, cached in RNNREG_DATA_DIR or ~/.cache/rnnreg. `kwargs`: LMDataModule's arguments (batch_size,
    bptt, eval_bptt, test_batch_size, data_dir; a paper_recipe's `data`); the rest as the paper's small model."""
    from rnnreg.data import LMDataModule

    data = plain(compose_config("experiment=paper_small").data)
    data.pop("_target_")
    arguments = data | kwargs
    if refusal := own_corpus_refusal(arguments, kwargs):
        raise ConfigError(refusal)
    return LMDataModule(**arguments)


def own_corpus_refusal(arguments: dict, given: dict) -> str | None:
    """ptb_datamodule(data_dir=<a folder holding a corpus of the user's own>): PTB's url_base would download PTB's
    files beside theirs and train on PTB (offline: a line saying to download PTB by hand into their folder). As
    rnnreg-train refuses data.data_dir=<that folder> without data=text: a folder holding train.txt, ... and none of
    PTB's files is refused, with the call that reads it. None otherwise."""
    import os
    from pathlib import Path

    from rnnreg.data import SPLITS

    files, folder = arguments.get("files"), arguments.get("data_dir")
    if not arguments.get("url_base") or not isinstance(files, dict) or not isinstance(folder, (str, os.PathLike)):
        return None  # (LMDataModule says what is wrong with the arguments themselves)
    folder = Path(folder).expanduser()
    try:
        names = [str(files[split]["name"]) for split in SPLITS]
    except (KeyError, TypeError):
        return None
    own = [f"{s}.txt" for s in SPLITS if (folder / f"{s}.txt").is_file() and f"{s}.txt" not in names]
    if not own or any((folder / name).exists() for name in names):
        return None
    own_files = {s: {"name": f"{s}.txt"} for s in SPLITS if (folder / f"{s}.txt").is_file()}
    sizes = "".join(f", {k}={v!r}" for k, v in given.items() if k not in ("data_dir", "files", "url_base"))
    return (
        f"ptb_datamodule(data_dir={os.fspath(given['data_dir'])!r}): that folder holds {', '.join(own)}, a corpus of "
        f"your own, and ptb_datamodule would download PTB's {', '.join(names)} there and use PTB, not that corpus: "
        f"read it with rnnreg.LMDataModule({os.fspath(given['data_dir'])!r}, {own_files!r}{sizes})"
    )
