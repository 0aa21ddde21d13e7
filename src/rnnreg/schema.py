"""The typed schema of every config an entry point composes, and the one check against it.

A dataclass per config group (Data, Model, Dropout, Optim, Trainer, Speed, Paths) and per entry point
(Train, Eval, Generate, Report); each field's metadata holds a `Rule`: its type, range or choices, whether
null is allowed, and a hint for the message. `validate(cfg, schema)` walks the composed config against it
(every key is checked, an unknown key is refused with the closest known one), then applies the rules that
involve several keys (`cross_checks`). Every refusal is one ConfigError line naming the key, the value and
what would be valid.

A command line's jobs are composed and checked against this schema by rnnreg.command_line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from rnnreg import CONF_DIR, trainer_rules  # (cuda_gpus through the module: a test stands in for the GPU count)
from rnnreg.errors import ConfigError, MissingValue
from rnnreg.trainer_rules import (
    bf16_lstm_refusal,
    counts_gpus,
    fast_step_refusal,
    gpu_indices,
    trainer_precision,
    trainer_processes,
)


@dataclass(frozen=True)
class Rule:
    """What one key accepts. kind: int | float | bool | text | choice | ckpt | devices | any | node | nodes."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    bounds: str = "[]"  # "[)" etc.: whether lo and hi themselves are allowed
    choices: tuple = ()
    null: bool = False
    required: bool = True
    hint: str = ""
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
            lo = "-inf" if self.lo is None else _show(self.lo)
            hi = "inf" if self.hi is None else _show(self.hi)
            if self.hi is None and self.lo is not None:
                what = f"{noun} > {lo}" if self.bounds[0] == "(" else f"{noun} >= {lo}"
            else:
                what = f"{noun} in {self.bounds[0]}{lo}, {hi}{self.bounds[1]}"
        elif self.kind == "limit":
            what = "a count of windows >= 1, a fraction in (0, 1]"
        elif self.kind == "bool":
            what = "true or false"
        elif self.kind == "choice":
            shown = [_show(c) for c in self.options()]
            what = "one of " + ", ".join(shown if len(shown) <= 10 else [*shown[:8], "..."])
        elif self.kind == "text":
            what = "a non-empty string"
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
        return what + (f" ({self.hint})" if self.hint else "")


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
    sha256: str = text(null=True, hint="the file's pinned sum, or null not to check it")


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
    batch_size: int = integer(1, hint="parallel streams; the paper uses 20")
    bptt: int = integer(1, hint="unroll length; the paper uses 20 or 35")
    eval_bptt: int = integer(1, null=True, hint="evaluation window; null = data.bptt")
    test_batch_size: int = integer(1, hint="1 is the paper's test protocol")


@dataclass
class Model:
    num_layers: int = integer(1)
    hidden_size: int = integer(1, hint="the paper uses 200, 650 or 1500")
    init_scale: float = positive(hint="every parameter ~ U(-init_scale, init_scale); the paper uses 0.1/0.05/0.04")
    layer_norm: bool = flag()
    tie_weights: bool = flag()
    lstm: str = choice("auto", "fused", "layers", "step")


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


@dataclass
class Optim:
    lr: float = positive(hint="the paper uses 1.0")
    decay: float = positive(hint="the lr is divided by it every epoch after decay_start; the paper uses 1.2 to 2")
    decay_start: int = integer(0, hint="epochs at the full lr")
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
    gradient_clip_val: float = positive(null=True, hint="the global-norm clip; the paper uses 5 or 10")
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
    gradient_clip_val: float = positive(
        hint="the global-norm clip, which rnnreg's recipe always applies; the paper clips at 5 or 10"
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
def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(value))
    return str(value)


def _is_int(value: Any) -> bool:
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


def check_value(value: Any, r: Rule) -> str | None:
    """None when `value` is valid, else what is wrong (after 'key=value')."""
    if value is None:
        return None if r.null else f"must be {r.describe()}, not null"
    kind = r.kind
    if kind == "any":
        return None
    if kind == "int":
        if (_is_int(value) and _in_range(value, r)) or (r.choices == (True, False) and isinstance(value, bool)):
            return None
    elif kind == "limit":  # trainer.limit_*: a count of windows, or a fraction in (0, 1]
        if (_is_int(value) and value >= 1) or (isinstance(value, float) and _in_range(value, r)):
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
    elif kind == "words":  # (a list or mapping would be split as its printed text)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return None
    elif kind == "devices":
        if value == "auto" or value == -1 or (_is_int(value) and value >= 1):
            return None
        if isinstance(value, ListConfig) and len(value) and all(_is_int(v) and v >= 0 for v in value):
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
    return repr(value) if isinstance(value, str) else _show(value)


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
        return next((f"({_show(v)}) {p}" for v in value if (p := _check_ckpt(v, Rule("ckpt")))), None)
    if not isinstance(value, str) or not value:
        return f"must be {r.describe()}"
    if value == "last" and "last" in r.hint:
        return None  # resolved (and checked) by rnnreg.training.resolve_ckpt_path
    path = Path(value).expanduser()
    if not path.is_file():
        if "last" in r.hint:
            return "is not a file: give a checkpoint, or ckpt_path=last to resume the newest run of this experiment"
        return "is not a file: give a checkpoint written by rnnreg-train"
    try:
        if not is_checkpoint_file(str(path)):
            return "is not a checkpoint (not a file torch.save wrote): give a .ckpt written by rnnreg-train"
    except OSError as err:
        return f"cannot be read ({err.strerror}): give a readable checkpoint"
    return None


# -- the whole config ---------------------------------------------------------------------------------
def _get(cfg: DictConfig, key: str, name: str) -> Any:
    """The resolved value at `key`; ??? and what refers to `${hydra:...}` (known once Hydra runs) come back as
    markers."""
    try:
        return cfg[key]
    except (MissingMandatoryValue, InterpolationResolutionError) as err:
        raw = cfg._get_node(key)._value()
        if "HydraConfig was not set" in str(err) or (isinstance(raw, str) and "${hydra:" in raw):
            return UNKNOWN
        if isinstance(err, MissingMandatoryValue):
            return MISSING
        raise ConfigError(f"{name}={raw} cannot be resolved ({str(err).splitlines()[0]})") from None


MISSING, UNKNOWN = object(), object()


def unknown_key(prefix: str, key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    name = f"{prefix}{key}"
    if close:
        return ConfigError(f"{name} is not a key of {where}: did you mean {prefix}{close[0]}?")
    return ConfigError(f"{name} is not a key of {where}: the keys are {', '.join(known)}")


# Examples for a mandatory key (??? in the config) left unset, by key; other keys get `<key>=<value>`.
MISSING_EXAMPLES = {
    "ckpt_path": "outputs/train/paper_small/<time>/checkpoints/last.ckpt",
    "path": "outputs/train/multirun/<experiment>/<time>",
}


def not_given(key: str) -> str:
    return f"{key} is required (??? in the config) and was not given"


def missing_message(key: str, script: str) -> str:
    example = MISSING_EXAMPLES.get(key.rsplit(".", 1)[-1], "<value>")
    return f"{not_given(key)}: e.g. {script} {key}={example}"


def _missing_keys(cfg: DictConfig, prefix: str = ""):
    """The keys still ??? (not resolving anything: ${hydra:...} is unknown before Hydra runs)."""
    for key in cfg.keys():
        if prefix == "" and key == "hydra":
            continue
        if OmegaConf.is_missing(cfg, key):
            yield f"{prefix}{key}"
        elif isinstance(node := cfg._get_node(key), DictConfig):
            yield from _missing_keys(node, f"{prefix}{key}.")


def validate(cfg: DictConfig, schema: type | str, choices: Any = None) -> None:
    """Every key of `cfg` against `schema` (a dataclass, or an entry point's name), then the cross-key rules.
    Raises ConfigError (one line) at the first problem. `choices`: the option of each config group (Hydra's
    hydra.runtime.choices), for messages that name one; by default Hydra's, when it runs."""
    if isinstance(schema, str):
        missing = sorted(_missing_keys(cfg))
        if missing:
            raise MissingValue(missing_message(missing[0], f"rnnreg-{schema}"), missing[0])
        schema = SCHEMAS[schema]
    _check_resolvable(cfg, "")
    _validate_node(cfg, schema, "")
    cross_checks(cfg, schema, choices)


def _check_resolvable(node: Any, prefix: str) -> None:
    """Every interpolation outside hydra resolves, the keys no rule reads included (a +trainer.* argument, a
    callback's): one line here, where the run would stop inside its folder with Hydra's traceback."""
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        if not prefix and key == "hydra":
            continue
        child = node._get_node(key)
        name = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{key}]"
        if child._is_interpolation():
            _get(node, key, name)
        elif isinstance(child, (DictConfig, ListConfig)) and not child._is_missing() and not child._is_none():
            _check_resolvable(child, f"{name}.")


def _validate_node(cfg: DictConfig, schema: type, prefix: str) -> None:
    known = rules(schema)
    where = prefix[:-1] if prefix else f"the {_entry_name(schema)} config"
    for key in cfg:
        if key == "hydra" and not prefix:
            continue
        # another Lightning Trainer argument: its list is read only then (importing Lightning takes seconds)
        extra = trainer_arguments() if key not in known and issubclass(schema, Trainer) else frozenset()
        if key not in known and key not in extra:
            raise unknown_key(prefix, str(key), sorted(set(known) | extra), where)
    for key, r in known.items():
        name = f"{prefix}{key}"
        if key not in cfg.keys():
            if r.required:
                raise ConfigError(f"{name} is missing: it must be {r.describe()}")
            continue
        value = _get(cfg, key, name)
        if value is UNKNOWN:
            continue
        if value is MISSING:
            raise ConfigError(f"{name} is required (???): set {name}=... to {r.describe()}")
        if r.kind in ("node", "nodes"):
            if value is None and r.null:
                continue
            if not isinstance(value, DictConfig):
                raise ConfigError(
                    f"{name}={_show(value)} must be {_mapping_of(r)}: set its keys one by one ({name}.<key>=...)"
                )
            if r.kind == "node":
                _validate_node(value, r.node, name + ".")
            else:
                _validate_entries(value, r.node, name)
            continue
        problem = check_value(value, r)
        if problem:
            raise ConfigError(f"{name}={_show(value)} {problem}")


def _mapping_of(r: Rule) -> str:
    """What a node or a mapping of nodes holds, in words."""
    if r.kind == "node":
        return f"a mapping of {', '.join(rules(r.node))}"
    inner = f"mappings of {', '.join(rules(r.node))}" if r.node is not None else "nodes with _target_"
    return f"{'null or ' if r.null else ''}a mapping of names to {inner}"


def _validate_entries(cfg: DictConfig, schema: type | None, name: str) -> None:
    for key in cfg:
        value = _get(cfg, key, f"{name}.{key}")
        if value is None or value is UNKNOWN:
            continue
        if schema is not None and isinstance(value, DictConfig):
            _validate_node(value, schema, f"{name}.{key}.")
        elif schema is not None:
            raise ConfigError(
                f"{name}.{key}={_show(value)} must be null or a mapping of {', '.join(rules(schema))} "
                f"(e.g. {name}.{key}.{next(iter(rules(schema)))}=...)"
            )
        elif not isinstance(value, DictConfig) or "_target_" not in value:
            raise ConfigError(
                f"{name}.{key}={_show(value)} must be null or a mapping with _target_ (the class to instantiate)"
            )


def _entry_name(schema: type) -> str:
    return next((k for k, v in SCHEMAS.items() if v is schema), schema.__name__.lower())


# -- rules across keys --------------------------------------------------------------------------------
SITES = ("input", "between", "output", "recurrent", "weight_drop", "embedding")


def cross_checks(cfg: DictConfig, schema: type, choices: Any = None) -> None:
    metric = cfg.get("optimized_metric") if schema is Train else None
    if isinstance(metric, str) and metric.startswith("test") and not cfg.get("test"):  # before any run folder
        raise ConfigError(f"optimized_metric={metric} needs the final test: set test=true or choose best_val_ppl")
    if "trainer" in cfg and cfg.trainer is not None:
        _check_trainer(cfg)
        if schema is Train and cfg.trainer.get("max_time") is not None:  # Lightning's Timer ends the epoch as done
            raise ConfigError(
                f"trainer.max_time={cfg.trainer.max_time} stops a run mid-epoch where its resume cannot go on exactly "
                f"(it skips the rest of that epoch): bound the run with SIGTERM instead, which writes an exact "
                f"checkpoint (timeout -s TERM 2h rnnreg-train ...), or with trainer.max_epochs"
            )
    if schema is Train and cfg.get("trainer") is not None:
        node = cfg.trainer._get_node("default_root_dir")
        own = (RUN_FOLDER, OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False))
        if node is None or node._value() not in own:  # (as given, or resolved by a caller of train())
            raise ConfigError(run_folder_refusal(f"trainer.default_root_dir={None if node is None else node._value()}"))
    if schema is Train and cfg.get("trainer") is not None and _choice(choices, "hydra/launcher") == "joblib":
        if trainer_processes(cfg.trainer) > 1:
            raise ConfigError(
                f"trainer.devices={cfg.trainer.get('devices')} / trainer.strategy={cfg.trainer.get('strategy')} under "
                f"hydra/launcher=joblib: Lightning starts DDP's other processes with the command line of the process "
                f"that runs the job, and a joblib worker has none: run DDP jobs with the basic launcher (one after "
                f"another), or joblib's jobs on one device each"
            )
    if schema is Train and cfg.get("callbacks"):
        _check_best_checkpoint(cfg.callbacks.get("model_checkpoint"))
    if "dropout" in cfg and "model" in cfg:
        _check_dropout(cfg, choices)
    if "data" in cfg:
        data = cfg.data
        folder = Path(str(data.data_dir)).expanduser()
        # a missing folder is fine where the files are downloaded into it; a file in its place never is
        if (data.get("url_base") is None or folder.exists()) and not folder.is_dir():
            raise ConfigError(
                f"data.data_dir={data.data_dir} is not a folder: give the folder holding the "
                f"{', '.join(data.files[s].name for s in ('train', 'valid', 'test'))} files"
            )


def _check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    accelerator = trainer.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") and not trainer_rules.cuda_gpus():
        raise ConfigError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU and this machine has none: "
            f"use trainer.accelerator=cpu (or auto)"
        )
    if accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.accelerator=mps needs an Apple GPU and this machine has none: use cpu or auto")
    if _spawns(trainer.get("strategy")):
        raise ConfigError(
            f"trainer.strategy={trainer.strategy} starts its processes inside the run, whose results come back through "
            f"a file rnnreg cannot read: use trainer=ddp (trainer.strategy=ddp: its processes start with the run)"
        )
    devices = trainer.get("devices", "auto")
    precision = trainer_precision(trainer)
    # the GPUs here, counted only where a check needs them
    several, fp16 = _is_int(devices) and devices > 1, precision in ("16", "16-mixed")
    gpus = trainer_rules.cuda_gpus() if accelerator in ("gpu", "cuda", "auto") and (several or fp16) else 0
    if gpus and several and devices > gpus:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {gpus} GPU(s): set trainer.devices to at most {gpus}"
        )
    if (indices := gpu_indices(devices)) and (why := _gpu_indices_refusal(devices, indices, accelerator)):
        raise ConfigError(why)
    if "data" in cfg and not counts_gpus(trainer):  # (devices=auto on a GPU's machine: once the Trainer is built)
        processes = trainer_processes(trainer)
        if cfg.data.batch_size % processes:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is not divisible by the {processes} DDP processes "
                f"(trainer.devices x trainer.num_nodes): set data.batch_size to a multiple of {processes}"
            )
    if fp16 and (accelerator == "cpu" or (accelerator == "auto" and not gpus)):
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU (fp16 on CPU is not supported): use bf16-mixed or 32-true"
        )
    if precision == "bf16-mixed" and "model" in cfg and "dropout" in cfg:
        from rnnreg.model import runs_fused  # (torch: imported for a bf16 run's check only)

        model, dropout = cfg.model, cfg.dropout
        fused = runs_fused(model.lstm, dropout.recurrent, dropout.variational, model.layer_norm)
        fix = "use trainer.precision=32-true, or model.lstm=step (the step-loop LSTM runs under bf16 autocast)"
        if why := bf16_lstm_refusal(trainer, fused, fix):
            raise ConfigError(why)
    callbacks = cfg.get("callbacks") or {}
    saving = [k for k in ("model_checkpoint", "last_checkpoint", "checkpoint_on_interrupt") if callbacks.get(k)]
    if trainer.get("enable_checkpointing") is False and saving:  # (Lightning refuses it with a ModelCheckpoint)
        raise ConfigError(
            "trainer.enable_checkpointing=false: rnnreg's own callbacks write the checkpoints: turn them off with "
            + " ".join(f"callbacks.{k}=null" for k in saving)
        )
    if (cfg.get("speed") or {}).get("fast_step") is True:
        processes = trainer_processes(trainer)
        if why := fast_step_refusal(processes, fp16, trainer.get("accumulate_grad_batches", 1)):
            raise ConfigError(why)


def _gpu_indices_refusal(devices: Any, indices: list[str], accelerator: str) -> str | None:
    """GPU indices on a CPU, or naming a GPU this machine lacks (Lightning's own error is a traceback)."""
    shown = _show(devices)
    if accelerator == "cpu":
        return (
            f"trainer.devices={shown} names GPUs but trainer.accelerator=cpu: give a number of processes "
            f"(trainer.devices={len(indices)})"
        )
    if accelerator not in ("auto", "gpu", "cuda"):
        return None  # (mps, tpu, ...: Lightning's own check)
    gpus = trainer_rules.cuda_gpus()
    if not gpus:
        return (
            f"trainer.devices={shown} names GPUs and this machine has none: use trainer.devices={len(indices)} "
            f"with trainer.accelerator=cpu, or trainer.devices=auto"
        )
    missing = [i for i in indices if int(i) >= gpus]  # (the schema has refused what is not an index)
    if missing:
        return (
            f"trainer.devices={shown} names GPU {missing[0]} but this machine has {gpus} GPU(s), "
            f"0 to {gpus - 1}: name GPUs among them, or set trainer.devices=auto"
        )
    return None


def _spawns(strategy: Any) -> bool:
    """Whether a trainer.strategy starts its processes from inside the run (spawn or fork): they hand their results
    back through Lightning's .temp.ckpt, which is not a checkpoint rnnreg writes or reads."""
    if not isinstance(strategy, str) or strategy in ("auto", "ddp"):  # (no Lightning import for a command's check)
        return False
    from lightning.pytorch.strategies import StrategyRegistry

    entry = StrategyRegistry[strategy] if isinstance(strategy, str) and strategy in StrategyRegistry else None
    return entry is not None and entry["init_params"].get("start_method", "popen") != "popen"


def _check_best_checkpoint(best: Any) -> None:
    """checkpoints/best.ckpt is the lowest val/ppl (test_ckpt=best tests it; a resume carries it over): one file."""
    if best is None:
        return
    for key, wanted in (("monitor", "val/ppl"), ("mode", "min"), ("save_top_k", 1)):
        if best.get(key, None if key == "monitor" else wanted) != wanted:
            raise ConfigError(
                f"callbacks.model_checkpoint.{key}={best.get(key)}: rnnreg-train keeps one checkpoints/best.ckpt, "
                f"the lowest val/ppl (test_ckpt=best tests it), and checkpoints/last.ckpt: leave {key} at {wanted}"
            )
    for key, unset in SAVE_BEATS.items():
        if best.get(key, None) not in unset:
            raise ConfigError(save_beat_refusal(key, best.get(key)))


# Lightning's folder for what a run writes, set to the run's own in conf/trainer/default.yaml (its one owner): every
# file goes there through paths.output_dir, so another value would move nothing (a divergence's message looks there)
RUN_FOLDER = OmegaConf.load(Path(CONF_DIR, "trainer", "default.yaml"))._get_node("default_root_dir")._value()


def run_folder_refusal(given: str) -> str:
    return (
        f"{given}: a run writes all its files in its own folder (paths.output_dir), which trainer.default_root_dir "
        f"follows: move a run with hydra.run.dir=..., a multirun with hydra.sweep.dir=..., or every run with "
        f"paths.output_root=..."
    )


# ModelCheckpoint's own beats, and the values that leave it saving at every validation: on another beat, best.ckpt
# would miss a best epoch, or pair an epoch's val/ppl with weights trained on after it (best_val_ppl is the lowest
# of every validation)
SAVE_BEATS = {"every_n_epochs": (None, 1), "every_n_train_steps": (None, 0), "train_time_interval": (None,)}


def save_beat_refusal(key: str, value: Any) -> str:
    return (
        f"callbacks.model_checkpoint.{key}={value}: checkpoints/best.ckpt is saved at every validation that lowers "
        f"val/ppl: leave {key} out (to validate less often, set trainer.check_val_every_n_epoch)"
    )


def _check_dropout(cfg: DictConfig, choices: Any) -> None:
    dropout, model = cfg.dropout, cfg.model
    step_only = [f"dropout.recurrent={dropout.recurrent}"] if dropout.recurrent else []
    step_only += ["dropout.variational=true"] if dropout.variational else []
    step_only += ["model.layer_norm=true"] if model.layer_norm else []
    if model.lstm in ("fused", "layers") and step_only:
        raise ConfigError(
            f"model.lstm={model.lstm} cannot run {', '.join(step_only)} (they need the step loop): set model.lstm=auto "
            f"or step"
        )
    # a placement that promises dropout (its sites read dropout.p) but drops nothing: p is 0
    uses_p = sites_using_p(dropout)
    if uses_p and dropout.p == 0 and not any(dropout[k] for k in SITES):
        placement = _choice(choices, "dropout")
        raise ConfigError(
            f"dropout={placement or '...'} drops nothing: its sites ({', '.join('dropout.' + k for k in uses_p)}) "
            f"use dropout.p, which is 0 here: set dropout.p (e.g. dropout.p=0.5) or use dropout=none"
        )


def sites_using_p(dropout: DictConfig) -> list[str]:
    """The dropout sites that take their rate from dropout.p (a placement's ${.p}, or ${dropout.p} written out)."""
    sites = OmegaConf.to_container(dropout, resolve=False)
    reads_p = ("${.p}", "${dropout.p}")
    return [k for k in SITES if isinstance(sites.get(k), str) and sites[k].replace(" ", "") in reads_p]


def _choice(choices: Any, group: str) -> str | None:
    """The option of `group` this config was composed with, where known."""
    from hydra.core.hydra_config import HydraConfig

    if choices is None and HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    return None if choices is None else choices.get(group)
