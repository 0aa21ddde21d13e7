"""The typed schema of every config an entry point composes: what each key may hold.

A dataclass per config group (Data, Model, Dropout, Optim, Trainer, Speed, Paths) and per entry point
(Train, Eval, Generate, Report); each field's metadata holds a `Rule`: its type, range or choices, whether
null is allowed, and a hint for the message. `check_value(value, rule)` says what is wrong with one value.
rnnreg.validation walks a composed config against a schema and applies the rules across keys.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from rnnreg.lstm_choice import LSTM_CHOICES
from rnnreg.run_record import checkpoint_in_folder


@dataclass(frozen=True)
class Rule:
    """What one key accepts. kind: int | float | bool | text | sha256 | choice | ckpt | devices | any | node | nodes."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    bounds: str = "[]"  # "[)" etc.: whether lo and hi themselves are allowed
    choices: tuple = ()
    null: bool = False
    required: bool = True
    hint: str = ""
    paper: str = ""  # a key whose values in the paper's experiments the message shows after the hint (paper_values)
    node: type | None = None  # kind node: the nested schema; kind nodes: the schema of each entry (None: _target_)
    # kind choice: every choice, read only for a value outside `choices` (Lightning's registries: an import of
    # seconds that a command line's error would otherwise wait for)
    all_choices: Callable[[], tuple] | None = None

    def options(self) -> tuple:
        """Every valid value: the config's usual ones first (a long registry's list is cut after 8)."""
        if self.all_choices is None:
            return self.choices
        return (*self.choices, *(c for c in self.all_choices() if c not in self.choices))

    def describe(self) -> str:
        """What a valid value is, for the message."""
        if self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number"
            lo = "-inf" if self.lo is None else show_value(self.lo)
            hi = "inf" if self.hi is None else show_value(self.hi)
            if self.hi is None and self.lo is not None:
                what = f"{noun} > {lo}" if self.bounds[0] == "(" else f"{noun} >= {lo}"
            else:
                what = f"{noun} in {self.bounds[0]}{lo}, {hi}{self.bounds[1]}"
        elif self.kind == "limit":
            what = "a count of windows >= 1, a fraction in (0, 1]"
        elif self.kind == "steps":
            what = "-1 or a count of training windows >= 1"
        elif self.kind == "bool":
            what = "true or false"
        elif self.kind == "choice":
            shown = [show_value(c) for c in self.options()]
            what = "one of " + ", ".join(shown if len(shown) <= 10 else [*shown[:8], "..."])
        elif self.kind == "text":
            what = "a non-empty string"
        elif self.kind == "sha256":
            what = "a sha256 sum of 64 hexadecimal digits"
        elif self.kind == "words":
            what = "words separated by spaces (quoted where they hold a comma or brackets)"
        elif self.kind == "ckpt":
            what = "the path of a checkpoint file written by rnnreg-train"
        elif self.kind == "devices":
            what = "auto, a number of devices >= 1, -1 (all) or a list of device indices"
        elif self.kind in ("node", "nodes"):
            what = "a mapping"
        else:
            what = "a value"
        what += " or null" if self.null else ""
        hint = "; ".join(h for h in (self.hint, paper_values(self.paper) if self.paper else "") if h)
        return what + (f" ({hint})" if hint else "")


@functools.cache
def _paper_configs() -> tuple[DictConfig, ...]:
    """The paper's experiments composed, small to large: once a process (a Hydra compose is a quarter second of
    CPU, and each key's message would compose all three again)."""
    from rnnreg.recipes import SIZES, compose_config  # (Hydra's compose, for the message that shows it only; recipes
    # imports the config check, which imports this module)

    return tuple(compose_config(f"experiment=paper_{size}") for size in SIZES)


@functools.cache
def paper_values(key: str) -> str:
    """What the paper's experiments set `key` to, for a message: "the paper's: 20 (small), 35 (medium, large)",
    composed from conf/experiment/paper_<size>.yaml (the numbers' one owner); "" where they cannot be composed."""
    from rnnreg.recipes import SIZES

    try:
        values = [OmegaConf.select(cfg, key) for cfg in _paper_configs()]
    except Exception:  # (a message's hint: never the reason a message is not shown)
        return ""
    sizes: dict[str, list[str]] = {}
    for value, size in zip(values, SIZES):
        sizes.setdefault(show_value(value), []).append(size)
    if len(sizes) == 1:
        return f"the paper's: {next(iter(sizes))}"
    return "the paper's: " + ", ".join(f"{value} ({', '.join(names)})" for value, names in sizes.items())


def rule(kind: str, **kw: Any) -> Any:
    return field(default=None, metadata={"rule": Rule(kind, **kw)})


def integer(lo: float | None = None, hi: float | None = None, **kw: Any) -> Any:
    return rule("int", lo=lo, hi=hi, **kw)


def number(lo: float | None = None, hi: float | None = None, bounds: str = "[]", **kw: Any) -> Any:
    return rule("float", lo=lo, hi=hi, bounds=bounds, **kw)


def positive(**kw: Any) -> Any:
    return number(0, None, "()", **kw)


def rate(**kw: Any) -> Any:
    return number(0, 1, "[)", **kw)


def flag(**kw: Any) -> Any:
    return rule("bool", **kw)


def choice(*choices: Any, **kw: Any) -> Any:
    return rule("choice", choices=choices, **kw)


def text(**kw: Any) -> Any:
    return rule("text", **kw)


def anything(**kw: Any) -> Any:
    return rule("any", null=True, **kw)


def node(schema: type, **kw: Any) -> Any:
    return rule("node", node=schema, **kw)


def nodes(schema: type | None = None, **kw: Any) -> Any:
    """A mapping of free names to nodes: of `schema`, or (None) instantiable nodes (_target_) or null."""
    return rule("nodes", node=schema, null=True, **kw)


# -- the groups ---------------------------------------------------------------------------------------
@dataclass
class DataFile:
    name: str = text()
    sha256: str = rule("sha256", null=True, hint="the file's pinned sum, or null not to check it")


@dataclass
class DataFiles:
    train: DataFile = node(DataFile)
    valid: DataFile = node(DataFile)
    test: DataFile = node(DataFile)


@dataclass
class Data:
    _target_: str = text()
    data_dir: str = text(hint="the folder holding the train/valid/test files")
    url_base: str = text(null=True, hint="where to download missing files from, or null")
    files: DataFiles = node(DataFiles)
    batch_size: int = integer(1, hint="parallel streams", paper="data.batch_size")
    bptt: int = integer(1, hint="unroll length", paper="data.bptt")
    eval_bptt: int = integer(1, null=True, hint="evaluation window; null = data.bptt")
    test_batch_size: int = integer(1, hint="1 is the paper's test protocol")


@dataclass
class Model:
    num_layers: int = integer(1)
    hidden_size: int = integer(1, paper="model.hidden_size")
    init_scale: float = positive(hint="every parameter ~ U(-init_scale, init_scale)", paper="model.init_scale")
    layer_norm: bool = flag()
    tie_weights: bool = flag()
    lstm: str = choice(*LSTM_CHOICES)


@dataclass
class Dropout:
    p: float = rate(hint="a drop probability such as 0.5")
    input: float = rate(hint="a drop probability such as 0.5")
    between: float = rate(hint="a drop probability such as 0.5")
    output: float = rate(hint="a drop probability such as 0.5")
    recurrent: float = rate(hint="a drop probability such as 0.5")
    variational: bool = flag()
    weight_drop: float = rate(hint="a drop probability such as 0.5")
    embedding: float = rate(hint="a drop probability such as 0.1")


# the dropout sites, each a key of Dropout holding its rate (p is the rate a placement's sites read)
SITES = ("input", "between", "output", "recurrent", "weight_drop", "embedding")


@dataclass
class Optim:
    lr: float = positive(paper="optim.lr")
    decay: float = positive(hint="the lr is divided by it every epoch after decay_start", paper="optim.decay")
    decay_start: int = integer(0, hint="epochs at the full lr", paper="optim.decay_start")
    momentum: float = number(0, 1, "[)")
    weight_decay: float = number(0, None)


@dataclass
class Speed:
    keep_freed_memory: bool = flag()
    fast_step: Any = choice("auto", True, False)
    cuda_graph: bool = flag()
    tf32: bool = flag()
    triton_cell: bool = flag()
    triton_update: bool = flag()


@dataclass
class Paths:
    output_root: str = text()
    data_root: str = text()
    output_dir: str = text()


@functools.cache
def _precisions() -> tuple:
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT

    return tuple(v for arg in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(arg))


@functools.cache
def _strategies() -> tuple:
    from lightning.pytorch.strategies import StrategyRegistry

    return ("auto", *StrategyRegistry.available_strategies())


def _limit(**kw: Any) -> Any:
    return rule("limit", lo=0, hi=1, bounds="(]", null=True, required=False, **kw)


@dataclass
class Trainer:
    """The Lightning Trainer keys rnnreg's configs set; any other argument of lightning.pytorch.Trainer may be
    added (+trainer.KEY=...) and is passed on unchecked."""

    _target_: str = text()
    default_root_dir: str = text(required=False)
    accelerator: str = choice("auto", "cpu", "gpu", "cuda", "mps", required=False)
    strategy: str = rule("choice", choices=("auto", "ddp"), all_choices=_strategies, required=False)
    devices: Any = rule("devices", required=False)
    num_nodes: int = integer(1, required=False)
    precision: Any = rule(
        "choice", choices=("32-true", "16-mixed", "bf16-mixed"), all_choices=_precisions, required=False
    )
    max_epochs: int = integer(1)
    gradient_clip_val: float = positive(null=True, hint="the global-norm clip", paper="trainer.gradient_clip_val")
    gradient_clip_algorithm: str = choice("norm", null=True, hint="the paper's global L2 norm")
    check_val_every_n_epoch: int = integer(1, required=False)
    num_sanity_val_steps: int = integer(-1, required=False)
    log_every_n_steps: int = integer(1, required=False)
    use_distributed_sampler: bool = flag(required=False)
    deterministic: Any = choice(True, False, "warn", required=False)
    enable_model_summary: bool = flag(required=False)
    enable_progress_bar: bool = flag(required=False)
    plugins: Any = anything(required=False)
    limit_train_batches: Any = _limit()
    limit_val_batches: Any = _limit()
    limit_test_batches: Any = _limit()
    fast_dev_run: Any = integer(0, choices=(True, False), required=False, hint="or true/false")
    sync_batchnorm: bool = flag(required=False)
    accumulate_grad_batches: int = integer(1, required=False)


@dataclass
class TrainTrainer(Trainer):
    max_epochs: int = integer(
        1, hint="a set number: rnnreg's lr schedule (optim.decay_start, as the paper's) counts epochs"
    )
    # (Lightning's Trainer takes 0 and trains nothing, and the run would be filed as completed)
    max_steps: int = rule("steps", required=False, hint="-1, the default, trains trainer.max_epochs epochs")
    gradient_clip_val: float = positive(
        hint="the global-norm clip, which rnnreg's recipe always applies", paper="trainer.gradient_clip_val"
    )
    limit_val_batches: Any = _limit(
        hint="to skip validation, set trainer.check_val_every_n_epoch larger than trainer.max_epochs"
    )
    limit_test_batches: Any = _limit(hint="to skip the final test, set test=false")
    check_val_every_n_epoch: int = integer(
        1,
        required=False,
        hint="validation counts in epochs, as the lr schedule does; to validate within an epoch, set "
        "+trainer.val_check_interval to a fraction of it",
    )
    enable_checkpointing: bool = flag(required=False)


@dataclass
class PaperResult:
    valid_ppl: float = positive()
    test_ppl: float = positive()


# -- the entry points ---------------------------------------------------------------------------------
@dataclass
class Extras:
    print_config: bool = flag()


@dataclass
class Train:
    task_name: str = text()
    experiment_name: str = text()
    seed: int = integer(0, 2**32 - 1)
    ckpt_path: str = rule("ckpt", null=True, hint="or last: the newest run of this experiment")
    test: bool = flag()
    test_ckpt: str = choice("auto", "last", "best")
    optim: Optim = node(Optim)
    speed: Speed = node(Speed)
    paths: Paths = node(Paths)
    data: Data = node(Data)
    model: Model = node(Model)
    dropout: Dropout = node(Dropout)
    trainer: TrainTrainer = node(TrainTrainer)
    callbacks: Any = nodes()
    logger: Any = nodes(required=False)
    tags: Any = rule("any", required=False, hint="a list of labels, e.g. tags=[a,b]")
    optimized_metric: str = choice("best_val_ppl", "val_ppl", "test_ppl", "test_ppl_batched", null=True, required=False)
    extras: Extras = node(Extras, required=False)


@dataclass
class Eval:
    task_name: str = text()
    experiment_name: str = text()
    ckpt_path: Any = rule("ckpt", hint="or a list of them: their average")
    mc_samples: int = integer(1, hint="1 = deterministic evaluation")
    seed: int = integer(0, 2**32 - 1)
    paths: Paths = node(Paths)
    data: Data = node(Data)
    trainer: Trainer = node(Trainer)


@dataclass
class Generate:
    task_name: str = text()
    experiment_name: str = text()
    ckpt_path: str = rule("ckpt")
    prompt: str = rule("words", null=True, hint="e.g. prompt='the meaning of life is'")
    num_words: int = integer(0)
    temperature: float = positive(hint="1.0 samples the model as trained")
    seed: int = integer(0, 2**32 - 1)
    device: str = rule("device", hint="cpu, cuda, cuda:N or mps")
    paths: Paths = node(Paths)


@dataclass
class Report:
    path: str = text(hint="a run folder or a multirun folder")
    formats: Any = anything()  # (rnnreg.report.figure_formats checks it: for the command line, validation.cross_checks)
    paper: Any = nodes(PaperResult)
    paths: Paths = node(Paths)


SCHEMAS: dict[str, type] = {"train": Train, "eval": Eval, "generate": Generate, "report": Report}


@functools.cache
def rules(schema: type) -> dict[str, Rule]:
    """The schema's fields and their rules, in order."""
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(schema)}


@functools.cache
def trainer_arguments() -> frozenset[str]:
    """Every keyword lightning.pytorch.Trainer takes (a key of trainer may be any of them)."""
    from lightning.pytorch import Trainer as LightningTrainer

    return frozenset(inspect.signature(LightningTrainer.__init__).parameters) - {"self", "logger", "callbacks"}


# where a node's _target_ passes its **kwargs on: rnnreg's wandb_logger to Lightning's WandbLogger, which passes
# its own to wandb.init (logger.wandb.notes, say)
KWARGS_PASSED_TO = {"rnnreg.loggers.wandb_logger": ("lightning.pytorch.loggers.WandbLogger", "wandb.init")}


@functools.cache
def target_arguments(target: str) -> frozenset[str]:
    """Every keyword a node's `_target_` takes (a class's or a function's parameters, and those of what it passes
    its **kwargs on to: KWARGS_PASSED_TO); empty where the target cannot be found."""
    from hydra.utils import get_object

    names: set[str] = set()
    try:
        for name in (target, *KWARGS_PASSED_TO.get(target, ())):
            parameters = inspect.signature(get_object(name)).parameters.values()
            names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    except Exception:  # (an error path's hint: a target that does not import says so when it is instantiated)
        return frozenset()
    return frozenset(names - {"self"})


# -- one value against its rule -----------------------------------------------------------------------
def show_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(value))
    return str(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in_range(value: float, r: Rule) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if r.lo is not None and (value < r.lo or (value == r.lo and r.bounds[0] == "(")):
        return False
    return not (r.hi is not None and (value > r.hi or (value == r.hi and r.bounds[1] == ")")))


def is_checkpoint_file(path: str) -> bool:
    """What torch.save writes: a zip archive (or, before PyTorch 1.6, a pickle)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def folder_problem(path: Path) -> str | None:
    """What is wrong with a folder given as ckpt_path that holds a checkpoint (a run folder, its checkpoints/), after
    'ckpt_path=VALUE': the file to give instead; None for anything else."""
    found = checkpoint_in_folder(path) if path.is_dir() else None
    return None if found is None else f"is a folder: give a checkpoint in it, e.g. ckpt_path={found}"


def is_damaged_zip(path: str) -> bool:
    """A file that starts as the zip archive torch.save writes, but that zipfile cannot read (its end, the archive's
    directory, is missing or damaged): a checkpoint cut short, by a copy or a download that stopped."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)


def check_value(value: Any, r: Rule) -> str | None:
    """None when `value` is valid, else what is wrong (after 'key=value')."""
    if value is None:
        return None if r.null else f"must be {r.describe()}, not null"
    kind = r.kind
    if kind == "any":
        return None
    if kind == "int":
        if (is_int(value) and _in_range(value, r)) or (r.choices == (True, False) and isinstance(value, bool)):
            return None
    elif kind == "limit":  # trainer.limit_*: a count of windows, or a fraction in (0, 1]
        if (is_int(value) and value >= 1) or (isinstance(value, float) and _in_range(value, r)):
            return None
    elif kind == "steps":  # trainer.max_steps: -1 (no bound), or the windows after which the fit ends
        if is_int(value) and (value == -1 or value >= 1):
            return None
    elif kind == "float":
        if _is_number(value) and _in_range(value, r):
            return None
    elif kind == "bool":
        if isinstance(value, bool):
            return None
    elif kind == "choice":
        if any(value == c and type(value) is type(c) for c in r.choices):
            return None
        if r.all_choices is not None and any(value == c and type(value) is type(c) for c in r.all_choices()):
            return None
    elif kind == "text":
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value):
            return None
    elif kind == "sha256":  # (a file's sum: a typo or a cut-off copy would fail every file, as a checksum mismatch)
        if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value):
            return None
    elif kind == "words":  # (a list or mapping would be split as its printed text)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return None
    elif kind == "devices":
        if value == "auto" or value == -1 or (is_int(value) and value >= 1):
            return None
        if isinstance(value, ListConfig) and len(value) and all(is_int(v) and v >= 0 for v in value):
            return None
    elif kind == "device":
        return _check_device(value)
    elif kind == "ckpt":
        return _check_ckpt(value, r)
    return f"must be {r.describe()}"


def group_problem(values: Any, schema: type, name: str) -> str | None:
    """What is wrong with a plain mapping that holds config group `name` (a checkpoint's hyper_parameters'
    model, dropout or optim), as 'name.key=value must be ...', else None. Keys it lacks or `schema` does not know are
    not checked here: a checkpoint of another version says so where its model is built. A string is shown
    quoted (a file's "42" is not the number 42)."""
    if not isinstance(values, Mapping):
        return f"{name}={shown_from_file(values)} must be a mapping"
    for key, r in rules(schema).items():
        problem = check_value(values[key], r) if key in values else None
        if problem:
            return f"{name}.{key}={shown_from_file(values[key])} {problem}"
    return None


def shown_from_file(value: Any) -> str:
    """A value read from a file, for a message: a string quoted."""
    return repr(value) if isinstance(value, str) else show_value(value)


def _check_device(value: Any) -> str | None:
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        return "must be cpu, cuda, cuda:N or mps"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "needs a CUDA GPU and this machine has none: use device=cpu"
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        return f"names a GPU this machine does not have ({torch.cuda.device_count()} visible)"
    if device.type not in ("cpu", "cuda", "mps"):
        return "must be cpu, cuda, cuda:N or mps"
    return None


def _check_ckpt(value: Any, r: Rule) -> str | None:
    if isinstance(value, ListConfig) and "list" in r.hint:
        if not len(value):
            return "is an empty list: give at least one checkpoint"
        if problem := next((f"({show_value(v)}) {p}" for v in value if (p := _check_ckpt(v, Rule("ckpt")))), None):
            return problem
        # a model averaged with itself is that model, and its params would count twice
        files = [Path(str(v)).expanduser().resolve() for v in value]
        twice = next((str(v) for v, f in zip(value, files) if files.count(f) > 1), None)
        return None if twice is None else f"lists {twice} (one file) twice: give each checkpoint once"
    if not isinstance(value, str) or not value:
        return f"must be {r.describe()}"
    if value == "last" and "last" in r.hint:
        return None  # resolved (and checked) by rnnreg.resumed_run.resolve_ckpt_path
    path = Path(value).expanduser()
    if not path.is_file():
        if inside := folder_problem(path):
            return inside
        if "last" in r.hint:
            return "is not a file: give a checkpoint, or ckpt_path=last to resume the newest run of this experiment"
        return "is not a file: give a checkpoint written by rnnreg-train"
    try:
        if is_damaged_zip(str(path)):  # (not "not a file torch.save wrote": it did, and the file lost its end)
            return (
                "is not a readable checkpoint (truncated or damaged: a zip archive as torch.save writes, whose end "
                "cannot be read): give a whole checkpoint written by rnnreg-train"
            )
        if not is_checkpoint_file(str(path)):
            return "is not a checkpoint (not a file torch.save wrote): give a .ckpt written by rnnreg-train"
    except OSError as err:
        return f"cannot be read ({err.strerror}): give a readable checkpoint"
    return None
