"""A composed config checked against its schema (rnnreg.schema): `validate(cfg, schema)` walks every key (an
unknown key is refused with the closest known one, a value against its field's Rule), then the rules that involve
several keys (`cross_checks`: the trainer on this machine, dropout against the model, the run's own folder, ...).
Every refusal is one ConfigError line naming the key, the value and what would be valid.

A command line's jobs are composed and checked with it by rnnreg.command_line, before Hydra creates anything.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from rnnreg import CONF_DIR, trainer_rules  # (cuda_gpus through the module: a test stands in for the GPU count)
from rnnreg.errors import ConfigError, MissingValue
from rnnreg.lstm_choice import runs_fused, step_loop_settings
from rnnreg.run_record import CHECKPOINTS, LAST_CHECKPOINT
from rnnreg.schema import (
    SCHEMAS,
    SITES,
    Report,
    Rule,
    Train,
    Trainer,
    check_value,
    is_int,
    rules,
    show_value,
    trainer_arguments,
)
from rnnreg.trainer_rules import (
    bf16_lstm_refusal,
    counts_gpus,
    fast_step_refusal,
    gpu_indices,
    trainer_precision,
    trainer_processes,
)


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
                    f"{name}={show_value(value)} must be {_mapping_of(r)}: set its keys one by one ({name}.<key>=...)"
                )
            if r.kind == "node":
                _validate_node(value, r.node, name + ".")
            else:
                _validate_entries(value, r.node, name)
            continue
        problem = check_value(value, r)
        if problem:
            raise ConfigError(f"{name}={show_value(value)} {problem}")


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
                f"{name}.{key}={show_value(value)} must be null or a mapping of {', '.join(rules(schema))} "
                f"(e.g. {name}.{key}.{next(iter(rules(schema)))}=...)"
            )
        elif not isinstance(value, DictConfig) or "_target_" not in value:
            raise ConfigError(
                f"{name}.{key}={show_value(value)} must be null or a mapping with _target_ (the class to instantiate)"
            )


def _entry_name(schema: type) -> str:
    return next((k for k, v in SCHEMAS.items() if v is schema), schema.__name__.lower())


# -- rules across keys --------------------------------------------------------------------------------
def cross_checks(cfg: DictConfig, schema: type, choices: Any = None) -> None:
    if schema is Report:
        from rnnreg.report import figure_formats  # (the key's one check; rnnreg.report imports this module's callers)

        figure_formats(cfg.formats)
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
        for name, spec in cfg.callbacks.items():  # (Lightning's SWA swaps the lr schedule and tests weights no
            # checkpoint holds: rnnreg-eval of best.ckpt or last.ckpt would not give the run's test_ppl)
            if isinstance(spec, DictConfig) and str(spec.get("_target_", "")).endswith("StochasticWeightAveraging"):
                raise ConfigError(
                    f"callbacks.{name}._target_={spec._target_}: stochastic weight averaging replaces the run's lr "
                    f"schedule (optim.decay) with its own and tests averaged weights that no checkpoint holds, so "
                    f"rnnreg-eval and a resume could not reproduce the run: remove callbacks.{name}"
                )
        _check_best_checkpoint(cfg.callbacks.get("model_checkpoint"))
        for name in ("last_checkpoint", "checkpoint_on_interrupt"):
            if why := last_checkpoint_refusal(cfg, name):
                raise ConfigError(why)
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
        _check_own_corpus_read_as_ptb(data, folder)


def _check_own_corpus_read_as_ptb(data: DictConfig, folder: Path) -> None:
    """data.data_dir given without data=text: PTB's config (data=ptb, the default) downloads its files into that
    folder and uses PTB, not the corpus there. A folder holding a text corpus's files (train.txt, ...) and
    none of PTB's is refused, with the word the command lacks."""
    splits = ("train", "valid", "test")
    if data.get("url_base") is None or not folder.is_dir():
        return
    names = [str(data.files[s].name) for s in splits]
    own = [f"{s}.txt" for s in splits if (folder / f"{s}.txt").is_file() and f"{s}.txt" not in names]
    if own and not any((folder / name).exists() for name in names):
        raise ConfigError(
            f"data.data_dir={data.data_dir} holds {', '.join(own)}, a corpus of your own, and PTB's config (data=ptb, "
            f"the default) would download {', '.join(names)} there and use PTB, not that corpus: add data=text to read "
            "it"
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
    if trainer.get("barebones") is True:  # (Lightning refuses it with each of them, one at a time)
        raise ConfigError(
            "trainer.barebones=true turns off the loggers, checkpoints and progress bar that rnnreg's runs need: "
            "remove +trainer.barebones=true"
        )
    # Lightning would deal each process's windows out again across the processes: each skips windows, its carried
    # state jumping over them (rnnreg.data splits the streams across processes; a library Trainer is refused there)
    if trainer.get("use_distributed_sampler") is True and (processes := trainer_processes(trainer)) > 1:
        raise ConfigError(
            f"trainer.use_distributed_sampler=true would split rnnreg's BPTT windows across the {processes} "
            f"processes (trainer.devices x trainer.num_nodes), which already split the streams: set "
            f"trainer.use_distributed_sampler=false (conf/trainer's default)"
        )
    interval = trainer.get("val_check_interval")
    # 0 fails in Lightning's loop with a ZeroDivisionError; 0.0 and true validate after every window, unsaid
    if isinstance(interval, bool) or (isinstance(interval, (int, float)) and not interval > 0):
        raise ConfigError(
            f"trainer.val_check_interval={show_value(interval)} must be a count of training windows >= 1 or a fraction "
            "of the epoch in (0, 1] (e.g. 0.5); to validate less often, set trainer.check_val_every_n_epoch"
        )
    devices = trainer.get("devices", "auto")
    precision = trainer_precision(trainer)
    # the GPUs here, counted only where a check needs them
    several, fp16 = is_int(devices) and devices > 1, precision in ("16", "16-mixed")
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
    shown = show_value(devices)
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
    # (Lightning: a beat given turns an unset one off: every_n_train_steps=0 alone saves at no validation at all)
    if best.get("every_n_train_steps", None) is not None and best.get("every_n_epochs", None) is None:
        raise ConfigError(save_beat_refusal("every_n_train_steps", best.get("every_n_train_steps")))


# Lightning's folder for what a run writes, set to the run's own in conf/trainer/default.yaml (its one owner): every
# file goes there through paths.output_dir, so another value would move nothing (a divergence's message looks there)
RUN_FOLDER = OmegaConf.load(Path(CONF_DIR, "trainer", "default.yaml"))._get_node("default_root_dir")._value()
# where conf/callbacks/default.yaml puts checkpoints/last.ckpt (${paths.output_dir}/checkpoints)
LAST_DIRPATH = OmegaConf.load(Path(CONF_DIR, "callbacks", "default.yaml")).last_checkpoint._get_node("dirpath")._value()


def output_dir_refusal(given: str) -> str:
    """paths.output_dir given: Hydra would still write the run's .hydra/ records, train.log and lock in its own run
    folder, and the checkpoints and metrics.json in the one given: a record split in two, which rnnreg-report, a
    resume (ckpt_path=last) and the run lock read as two runs, neither whole."""
    return (
        f"{given}: paths.output_dir is the run's folder as Hydra makes it (its .hydra/ records and train.log are "
        f"written there, whatever this key says): move a run with hydra.run.dir=..., a multirun with "
        f"hydra.sweep.dir=..., or every run with paths.output_root=..."
    )


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


# checkpoints/last.ckpt (callbacks.last_checkpoint, and callbacks.checkpoint_on_interrupt on a stop): the last
# epoch's full state, where a resume, ckpt_path=last, rnnreg-eval and rnnreg-report look for it. Its settings that would
# make it something else, or put it elsewhere: the values it must keep (the first one is the fix the line gives) and
# Lightning's own when the key is left out; a key not here (verbose, mode without a monitor) changes neither.
LAST_SETTINGS = {
    "monitor": ((None,), None),  # a monitored top-k keeps the best epoch, not the last
    "save_top_k": ((1,), 1),
    "save_last": ((None, False), None),  # Lightning's own last.ckpt, over this one
    "save_weights_only": ((False,), False),  # not resumable: no optimiser, no position
    "save_on_exception": ((False,), False),  # would save a diverged state over the last good one
    "save_on_train_epoch_end": ((True,), None),  # after validation only: an epoch without one is lost
    "enable_version_counter": ((False,), True),  # last-v1.ckpt beside an earlier last.ckpt
}
# ModelCheckpoint's beats: last.ckpt is saved at every epoch's end, and only there
LAST_BEATS = ("every_n_epochs", "every_n_train_steps", "train_time_interval")
LAST_NAME = Path(LAST_CHECKPOINT).stem  # (checkpoints/last.ckpt)
LAST_READERS = "a resume, ckpt_path=last, rnnreg-eval and rnnreg-report read"


def last_checkpoint_refusal(cfg: DictConfig, name: str) -> str | None:
    """Why callbacks.<name> (last_checkpoint, or checkpoint_on_interrupt: its path only) would not write the run's
    checkpoints/last.ckpt as the last epoch's full state (None: it would)."""
    node = cfg.callbacks.get(name)
    if node is None:
        return None
    prefix = f"callbacks.{name}"
    raw = node._get_node("dirpath")._value() if "dirpath" in node else None
    output = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    own = (LAST_DIRPATH, None if output is None else str(Path(str(output), CHECKPOINTS)))
    if raw not in own:
        return (
            f"{prefix}.dirpath={show_value(raw)}: checkpoints/last.ckpt is in the run's own folder, where "
            f"{LAST_READERS} it: leave dirpath at {LAST_DIRPATH} (move the run with hydra.run.dir=...)"
        )
    filename = node.get("filename", None if name == "last_checkpoint" else LAST_NAME)
    if filename != LAST_NAME:
        return (
            f"{prefix}.filename={show_value(filename)}: the run's last checkpoint is checkpoints/last.ckpt, which "
            f"{LAST_READERS}: leave filename at {LAST_NAME}"
        )
    if name != "last_checkpoint":
        return None
    for key, (kept, default) in LAST_SETTINGS.items():
        if (value := node.get(key, default)) not in kept:
            return last_setting_refusal(key, value)
    steps, interval, epochs = (node.get(key, None) for key in LAST_BEATS[1:] + LAST_BEATS[:1])
    if steps not in (None, 0) or interval is not None:
        key = "every_n_train_steps" if steps not in (None, 0) else "train_time_interval"
        return last_setting_refusal(key, node.get(key))
    if (steps, epochs) != (None, None) and epochs != 1:  # (Lightning: a beat given turns an unset one off)
        key = "every_n_epochs" if epochs is not None else "every_n_train_steps"
        return last_setting_refusal(key, node.get(key))
    return None


def last_setting_refused(key: str, value: Any) -> bool:
    """Whether callbacks.last_checkpoint.<key>=<value>, a key conf/callbacks leaves out, is refused whatever the
    other keys (a command line's key given without +: refused at once, not sent to add it with + first)."""
    if key in LAST_SETTINGS:
        return value not in LAST_SETTINGS[key][0]
    return key in LAST_BEATS and value is not None and (key, value) != ("every_n_epochs", 1)


def last_setting_refusal(key: str, value: Any) -> str:
    kept = show_value(LAST_SETTINGS[key][0][0]) if key in LAST_SETTINGS else None
    fix = f"leave {key} at {kept}" if kept not in (None, "null") or key == "monitor" else f"leave {key} out"
    best = " (the best epoch's is checkpoints/best.ckpt, callbacks.model_checkpoint's)" if key == "monitor" else ""
    return (
        f"callbacks.last_checkpoint.{key}={show_value(value)}: checkpoints/last.ckpt is the last epoch's full "
        f"state, saved at every epoch's end, which {LAST_READERS}{best}: {fix}"
    )


def _check_dropout(cfg: DictConfig, choices: Any) -> None:
    dropout, model = cfg.dropout, cfg.model
    step_only = step_loop_settings(dropout.recurrent, dropout.variational, model.layer_norm)
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
    # variational=true alone would train without dropout on the slower step loop, filed as variational dropout
    if dropout.variational and not variational_sites(dropout, model.num_layers):
        raise ConfigError(
            "dropout.variational=true changes nothing here: it draws one mask per window for dropout.input, "
            "dropout.output, dropout.recurrent and (with 2 or more layers) dropout.between, and none of them drops "
            "(dropout.weight_drop and dropout.embedding draw one per window already): use dropout=variational with "
            "dropout.p (e.g. dropout.p=0.5), or leave dropout.variational out"
        )


def variational_sites(dropout: DictConfig, num_layers: int) -> list[str]:
    """The sites that dropout.variational changes (masks over time steps) and that drop here; `between` only with
    a layer above another."""
    sites = ("input", "between", "output", "recurrent") if num_layers > 1 else ("input", "output", "recurrent")
    return [k for k in sites if dropout[k]]


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
