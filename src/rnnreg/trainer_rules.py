"""What a trainer config runs on this machine: its processes, its precision, the GPUs it counts, and the rules of
bf16 and the fast step that both the config check (rnnreg.validation) and the built run (rnnreg.evaluate, rnnreg.fast,
the stacked launcher) apply. Torch is imported only where a GPU must be counted."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig


def cuda_gpus() -> int:
    import torch  # here, not at the top: a command line's error needs no torch (an import of a second or more)

    return torch.cuda.device_count()


def trainer_precision(trainer: DictConfig) -> str:
    """trainer.precision as Lightning's Trainer takes it: 32-true where a trainer config leaves it out."""
    return str(trainer.get("precision", "32-true"))


def bf16_lstm_refusal(trainer: DictConfig, fused: bool, fix: str) -> str | None:
    """Why trainer.precision=bf16-mixed cannot run a model here (None: it can): its LSTM is nn.LSTM (`fused`), the
    run is on a CPU, and this CPU's oneDNN has no bf16 LSTM (rnnreg.model.cpu_runs_fused_lstm_in_bf16). `fix`:
    what the caller's user can change."""
    if not fused or trainer_precision(trainer) != "bf16-mixed":
        return None
    accelerator = trainer.get("accelerator", "auto")
    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and cuda_gpus()):
        return None
    from rnnreg.model import cpu_runs_fused_lstm_in_bf16

    if cpu_runs_fused_lstm_in_bf16():
        return None
    return (
        "trainer.precision=bf16-mixed runs the fused LSTM (nn.LSTM) in bf16 on oneDNN, which this CPU cannot "
        f"(it needs AVX512-BF16 or AMX): {fix}"
    )


def fast_step_refusal(processes: int, loss_scaling: bool, accumulate: int) -> str | None:
    """Why speed.fast_step=true cannot run (None: it can): the rule, checked here from the config and by
    rnnreg.fast from the built Trainer (`processes`: DDP processes; `loss_scaling`: fp16's; `accumulate`: windows
    per update)."""
    blocked = [f"{processes} processes"] if processes > 1 else []
    blocked += ["fp16 loss scaling"] if loss_scaling else []
    blocked += [f"trainer.accumulate_grad_batches={accumulate}"] if accumulate != 1 else []
    if not blocked:
        return None
    return (
        "speed.fast_step=true needs one process, no fp16 loss scaling (trainer.precision=16-mixed) and "
        f"trainer.accumulate_grad_batches=1, and this run has {', '.join(blocked)}: set speed.fast_step=auto "
        f"(it falls back to the plain step) or false"
    )


ALL_DEVICES = ("auto", -1, "-1")  # trainer.devices that Lightning reads as every GPU of this machine


def trainer_processes(trainer: DictConfig, gpus: int | None = None) -> int:
    """The processes Lightning starts for a trainer config: trainer.devices x trainer.num_nodes. devices=auto or
    -1 is one process per GPU (`gpus`: how many the run has; None: this machine's, counted here) where the
    accelerator may be a GPU, else one; a list of GPU indices or text '0,1' one per index; a number (or its text)
    that many. A value Lightning refuses counts as one: its own error says what is wrong."""
    devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes", 1)
    if devices in ALL_DEVICES:
        count = ((cuda_gpus() if gpus is None else gpus) if may_be_gpu(trainer) else 1) or 1
    elif indices := gpu_indices(devices):
        count = len(indices)
    else:
        count = int(devices) if str(devices).strip().isdigit() else 1
    return max(1, count) * (int(nodes) if str(nodes).strip().isdigit() and int(nodes) > 0 else 1)


def gpu_indices(devices: Any) -> list[str]:
    """trainer.devices given as GPU indices (a list, or text '0,1'): those indices; else []."""
    if isinstance(devices, (list, ListConfig)) or (isinstance(devices, str) and "," in devices):
        return [str(d).strip() for d in (devices.split(",") if isinstance(devices, str) else devices) if str(d).strip()]
    return []


def counts_gpus(trainer: DictConfig) -> bool:
    """Whether trainer_processes(trainer) counts this machine's GPUs (it imports torch to)."""
    return trainer.get("devices", "auto") in ALL_DEVICES and may_be_gpu(trainer)


def may_be_gpu(trainer: DictConfig) -> bool:
    return trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda")
