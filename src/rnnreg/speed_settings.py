"""A run's speed settings (conf/train.yaml's `speed`): glibc's allocator kept from returning the buffers a step
frees, TF32 matmuls on a GPU, and where the Triton kernels asked for can run. No torch at import (a command line's
checks need none)."""

from __future__ import annotations

import ctypes
import importlib.util
import os

from omegaconf import DictConfig

from rnnreg.errors import ConfigError


def apply_speed(speed: DictConfig, any_size: bool = False) -> None:
    """A run's process-wide speed settings: glibc's allocator (speed.keep_freed_memory; `any_size`: for a stacked
    group, whose buffers are K times a single run's) and TF32 matmuls on a GPU (speed.tf32)."""
    if speed.get("keep_freed_memory"):
        keep_freed_memory(any_size=any_size)
    if speed.get("tf32"):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def keep_freed_memory(max_chunk: int = 32 << 20, any_size: bool = False) -> bool:
    """glibc only: serve tensors up to `max_chunk` bytes (glibc's largest threshold) from the heap and never
    trim it, so the large activation and gradient buffers freed every step are reused instead of being
    returned to the OS and page-faulted back in on the next step. any_size: every size from the heap (no
    mmap at all), for a stacked group whose logits and gradients are K times a single run's. Returns whether
    the setting took effect (False on other C libraries, where nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    ok = bool(mallopt(m_mmap_threshold, max_chunk)) and bool(mallopt(m_trim_threshold, 1 << 30))
    return ok and (not any_size or bool(mallopt(m_mmap_max, 0)))


def require_triton(device, key: str) -> None:
    """`key`=true (speed.triton_cell, speed.triton_update) where its Triton kernels cannot run on `device` (a
    torch.device): a one-line ConfigError before anything is written."""
    if importlib.util.find_spec("triton") is None:
        raise ConfigError(
            f"{key}=true needs Triton, which is not installed (PyTorch's CUDA wheels bring it; pip install triton): "
            f"set {key}=false"
        )
    interpreted = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
    if device.type != "cuda" and not interpreted:
        raise ConfigError(
            f"{key}=true runs Triton kernels on a CUDA device and this run is on {device.type}: set {key}=false "
            f"(TRITON_INTERPRET=1 runs them on a CPU, slowly, for tests)"
        )
