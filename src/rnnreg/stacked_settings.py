"""hydra/launcher=stacked's settings and what a stacked group can hold: hydra.launcher's values, the program a
group runs, the width it holds its hidden units at, and the trainer settings a group honours. Plain Python and
OmegaConf (a command line's checks run before torch is imported): read by the launcher, the stacked model, its
step and the group's trainer."""

from __future__ import annotations

from omegaconf import DictConfig

from rnnreg.errors import ConfigError
from rnnreg.trainer_rules import trainer_precision, trainer_processes

PROGRAMS = ("auto", "batched", "in_turn")  # hydra.launcher.program (rnnreg.stacked_step.group_step runs them)
# hydra.launcher.pad_hidden_to=auto: the batched program on a GPU holds the hidden units padded to a multiple of
# this (650 as 656): 16-byte aligned rows in float32, bf16 and fp16 (rnnreg.stacked's docstring)
GPU_PAD_HIDDEN_TO = 8


def check_launcher_settings(launcher: DictConfig) -> None:
    """hydra.launcher's values (conf/hydra/launcher/stacked.yaml), checked before anything is written: a one-line
    ConfigError naming the key and what it takes."""
    max_members, resume = launcher.get("max_members"), launcher.get("resume")
    program, stop = launcher.get("program"), launcher.get("stop_after_windows")
    pad = launcher.get("pad_hidden_to")
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ConfigError(
            f"hydra.launcher.max_members={max_members} must be a whole number of at least 1 (the most jobs trained "
            f"as one program)"
        )
    if not isinstance(resume, bool):
        raise ConfigError(f"hydra.launcher.resume={resume} must be true or false")
    if program not in PROGRAMS:
        raise ConfigError(f"hydra.launcher.program={program} must be one of {', '.join(PROGRAMS)}")
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int) or stop < 1):
        raise ConfigError(f"hydra.launcher.stop_after_windows={stop} must be null or a whole number of at least 1")
    if pad != "auto" and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 1):
        raise ConfigError(
            f"hydra.launcher.pad_hidden_to={pad} must be auto or a whole number of at least 1 (1: no padding)"
        )


def pad_hidden_to(cfg, pad, program: str, on_cpu: bool) -> int:
    """The multiple a group's hidden units are padded to (hydra.launcher.pad_hidden_to, `pad`; `program`: the one
    it runs, running_program): auto is GPU_PAD_HIDDEN_TO for the batched program on a GPU without layer norm, 1
    otherwise. A ConfigError where a padding was asked for that the group cannot have."""
    hidden, layer_norm = cfg.model.hidden_size, cfg.model.layer_norm
    if pad == "auto":
        return GPU_PAD_HIDDEN_TO if program == "batched" and not on_cpu and not layer_norm else 1
    if hidden % pad == 0:  # nothing to pad
        return pad
    if layer_norm:
        raise ConfigError(
            f"hydra.launcher.pad_hidden_to={pad} would pad model.hidden_size={hidden}, which layer norm normalises "
            f"over: set hydra.launcher.pad_hidden_to=1 (or auto)"
        )
    if program == "in_turn":
        raise ConfigError(
            f"hydra.launcher.pad_hidden_to={pad}: the members in turn run as their own models, unpadded; set "
            f"hydra.launcher.pad_hidden_to=1 (or auto), or hydra.launcher.program=batched"
        )
    return pad


def check_padding(job, launcher) -> None:
    """pad_hidden_to's refusals for a sweep's job, as a command line's check (before Hydra writes the sweep folder);
    only where a padding is asked for (a number above 1): on_a_cpu may import torch."""
    pad, program = launcher.get("pad_hidden_to", "auto"), launcher.get("program", "auto")
    if not isinstance(pad, int) or isinstance(pad, bool) or pad <= 1 or program not in PROGRAMS:
        return  # (none asked for; a value check_launcher_settings refuses)
    on_cpu = on_a_cpu(str(job.trainer.get("accelerator", "auto")))
    pad_hidden_to(job, pad, running_program(program, on_cpu), on_cpu)


def running_program(program: str, on_cpu: bool) -> str:
    """The program a group runs (rnnreg.stacked_step.group_step): hydra.launcher.program, auto being the members
    in turn on a CPU and batched elsewhere."""
    return "in_turn" if program == "in_turn" or (program == "auto" and on_cpu) else "batched"


def on_a_cpu(accelerator: str) -> bool:
    """Whether a group with this trainer.accelerator trains on a CPU (auto: without CUDA; anything but gpu, cuda
    and auto: a CPU)."""
    if accelerator != "auto":
        return accelerator not in ("gpu", "cuda")
    import torch  # (only for auto: a command line's checks need no torch)

    return not torch.cuda.is_available()


def padded_size(size: int, multiple: int) -> int:
    """`size` rounded up to a multiple of `multiple` (hydra.launcher.pad_hidden_to)."""
    return -(-size // multiple) * multiple


# The trainer settings GroupTrainer reads (rnnreg.stacked_train), and the ones that only say how Lightning shows
# or places a run (a stacked group has its own progress, files and device): every other Trainer argument must be
# at a value that does what GroupTrainer does (TRAINER_ASSUMED), or the members would differ from their jobs.
TRAINER_READ = (
    "max_epochs",
    "check_val_every_n_epoch",  # a group validates on its jobs' epochs (part of the group key, as max_epochs is)
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "log_every_n_steps",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "fast_dev_run",
)
TRAINER_UNUSED = (
    "default_root_dir",
    "plugins",
    "num_sanity_val_steps",
    "enable_progress_bar",
    "enable_model_summary",
    "enable_autolog_hparams",
    "use_distributed_sampler",
    "sync_batchnorm",
    "deterministic",
    "benchmark",
    "inference_mode",
    "limit_predict_batches",
    "reload_dataloaders_every_n_epochs",
    "model_registry",
)
# trainer.precision values a stacked group trains in: float32, or its forward under bf16 autocast (no loss scaler,
# which fp16 would need for each member; float32 weights, which bf16-true would not keep)
STACKED_PRECISIONS = ("32", "32-true", "bf16-mixed")


def under_bf16_autocast(trainer: DictConfig) -> bool:
    """Whether a group's forward runs under bf16 autocast (trainer.precision=bf16-mixed; else float32)."""
    return trainer_precision(trainer) == "bf16-mixed"


# key: (the values that do what a stacked group does, the first one the fix; what the group does instead)
TRAINER_ASSUMED = {
    "val_check_interval": ((None, 1.0), "it validates at each epoch's end"),
    "max_steps": ((-1, None), "it trains trainer.max_epochs epochs"),
    "min_steps": ((None, 0), "early stopping may stop a member at any epoch"),
    "min_epochs": ((None, 0, 1), "early stopping may stop a member at any epoch"),
    "max_time": ((None,), "it trains trainer.max_epochs epochs"),
    "accumulate_grad_batches": ((1,), "it updates after every window"),
    "overfit_batches": ((0.0, 0), "it trains on the train split"),
    "detect_anomaly": ((False,), "it does not run autograd's anomaly detection"),
    "barebones": ((False,), "it writes every job's logs and checkpoints"),
    "enable_checkpointing": ((None, True), "it writes every job's checkpoints"),
    "profiler": ((None,), "it runs no profiler"),
}


# conf/callbacks' callbacks, whose work a stacked group does itself (its checkpoints, timing, progress, lr in the logs,
# divergence guard, stop on a signal, and early stopping per member); it runs no other callback
STACKED_CALLBACKS = (
    "model_checkpoint",
    "last_checkpoint",
    "speed_monitor",
    "run_plan",
    "lr_monitor",
    "progress_bar",
    "nonfinite_guard",
    "checkpoint_on_interrupt",
    "early_stopping",
)


def is_one_of(value, values: tuple) -> bool:
    """`value` equal to one of `values` and of its type (1 is not 1.0 to val_check_interval, nor True)."""
    return any(value == v and type(value) is type(v) for v in values)


def shown(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def check_trainer_assumed(trainer: DictConfig) -> None:
    """A one-line ConfigError for a trainer setting a stacked group would not honour (TRAINER_ASSUMED)."""
    for key, (values, instead) in TRAINER_ASSUMED.items():
        value = trainer.get(key, values[0])
        if not is_one_of(value, values):
            raise ConfigError(
                f"trainer.{key}={shown(value)} is not honoured by hydra/launcher=stacked ({instead}): set "
                f"trainer.{key}={shown(values[0])}, or drop hydra/launcher=stacked to run these jobs with Hydra's "
                f"basic launcher"
            )


def check_stackable(cfg: DictConfig) -> None:
    """A one-line ConfigError naming the first setting a stacked member cannot hold."""
    trainer = cfg.trainer
    check_trainer_assumed(trainer)
    for name, spec in (cfg.get("callbacks") or {}).items():
        if spec is not None and name not in STACKED_CALLBACKS:  # (a callback of one's own: +callbacks.mine._target_)
            target = spec.get("_target_") if isinstance(spec, DictConfig) else None
            raise ConfigError(
                f"callbacks.{name}" + (f" ({target})" if target else "") + " is not run by hydra/launcher=stacked, "
                f"which trains its groups without Lightning's Trainer and runs only rnnreg's own callbacks: drop it "
                f"(~callbacks.{name}), or drop hydra/launcher=stacked to run these jobs with Hydra's basic launcher"
            )
    unsupported = [
        ("ckpt_path", cfg.get("ckpt_path"), "null (resume a stacked sweep with hydra.launcher.resume=true)"),
        ("trainer.fast_dev_run", trainer.get("fast_dev_run", False), "false"),
    ]
    for key, value, valid in unsupported:
        if value:
            raise ConfigError(
                f"{key}={value} is not supported by hydra/launcher=stacked: set {valid}, or drop "
                f"hydra/launcher=stacked to run these jobs one by one"
            )
    if trainer_precision(trainer) not in STACKED_PRECISIONS:
        raise ConfigError(
            f"trainer.precision={trainer.precision} is not supported by hydra/launcher=stacked (float32 weights, "
            f"the forward in float32 or under bf16 autocast): set trainer.precision=32-true or bf16-mixed, or drop "
            f"hydra/launcher=stacked"
        )
    # (null: Lightning's default, the norm; rnnreg clips the global norm in its update rule either way: the schema)
    if trainer.get("gradient_clip_algorithm", "norm") not in ("norm", None):
        raise ConfigError(
            f"trainer.gradient_clip_algorithm={trainer.gradient_clip_algorithm} is not supported by "
            f"hydra/launcher=stacked (it clips the global norm): set trainer.gradient_clip_algorithm=norm"
        )
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    if str(nodes).strip() != "1":  # (the schema has refused what is not a whole number of machines)
        raise ConfigError(
            f"trainer.num_nodes={nodes}: a stacked group runs on one device of one machine; set trainer.num_nodes=1"
        )
    # one process (devices=auto: the one device the group picks, whatever GPUs this machine has); -1 or GPU indices
    # choose devices the group would not follow
    one = trainer_processes(trainer, gpus=1) == 1 and devices in (1, "1", "auto")
    if "ddp" in str(trainer.get("strategy", "auto")) or not one:
        raise ConfigError(
            f"trainer.devices={devices} / trainer.strategy={trainer.get('strategy', 'auto')}: a stacked group runs "
            f"on one device; use trainer=default (or trainer=gpu)"
        )
