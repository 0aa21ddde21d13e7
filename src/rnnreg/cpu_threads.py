"""How many threads torch takes in a run's process where processes run side by side on one machine's CPU. torch
takes one thread a core unless OMP_NUM_THREADS or MKL_NUM_THREADS says fewer, read when it is imported; two
processes with every core each spin against each other (docs/cpu_2026-12-06/threads_under_load: smoke at a quarter
of its speed on 2 cores). Who shares the cores out, where the user set neither variable:
- hydra/launcher=joblib: loky starts each worker with OMP_NUM_THREADS and MKL_NUM_THREADS = cores //
  hydra.launcher.n_jobs (the user's OMP_NUM_THREADS kept: share_cores);
- DDP on a CPU (trainer=ddp): Lightning sets it to cores // trainer.devices in each of its processes (rank 0
  starts the others before it sets its own: each sets the same count);
- hydra/launcher=submitit_local, which starts every job of a batch at once, each a process a task
  (hydra.launcher.tasks_per_node: a DDP job's processes, rnnreg.submitit_tasks): the multirun's process, here
  (share_cores), before its launcher starts them;
- the basic and stacked launchers run one job, or one group, at a time in one process: every core is its.
A run's train.log says its thread count and where it came from (threads_said). No torch at import."""

from __future__ import annotations

import logging
import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rnnreg.console import counted
from rnnreg.multirun_jobs import basic_sweeper, sweep_jobs

log = logging.getLogger("rnnreg")

# what torch reads for its thread count when it is imported (MKL_NUM_THREADS over OMP_NUM_THREADS): either one set is
# the user's choice, kept
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
# why a job found OMP_NUM_THREADS set where the user did not set it, by its launcher
SET_BY = {
    JOBLIB: "hydra/launcher=joblib sets it to cores // hydra.launcher.n_jobs where it was not set",
    SUBMITIT_LOCAL: (
        "hydra/launcher=submitit_local sets it to cores // the processes it starts at once where it was not set"
    ),
}
DDP_SET_BY = "DDP on a CPU: Lightning sets it to cores // trainer.devices where it was not set"


def cores() -> int:
    """The cores this process may run on (its affinity: taskset, a container's cpuset), as Lightning counts them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def jobs_at_once(config: DictConfig) -> int | None:
    """How many processes hydra/launcher=submitit_local starts at once on this machine: the jobs of a sweeper's
    batch (the basic sweeper's: every job, or hydra.sweeper.max_batch_size; Optuna's: hydra.sweeper.n_jobs trials),
    hydra.launcher.tasks_per_node each. None for another launcher, or a sweeper whose batches are not known."""
    from hydra.core.global_hydra import GlobalHydra

    launcher = config.hydra.launcher
    if OmegaConf.select(config, "hydra.launcher._target_") != SUBMITIT_LOCAL:
        return None
    sweeper = config.hydra.sweeper
    if basic_sweeper(config):
        jobs = len(sweep_jobs(config, GlobalHydra.instance().config_loader()))
        batch = sweeper.get("max_batch_size") or jobs
    else:  # Optuna's: n_jobs trials asked for and launched together
        jobs, batch = sweeper.get("n_trials"), sweeper.get("n_jobs")
        if not isinstance(jobs, int) or not isinstance(batch, int):
            return None
    return max(1, min(jobs, batch)) * (launcher.get("tasks_per_node") or 1)


def share_cores(config: DictConfig) -> list[str]:
    """In a multirun's own process, before its launcher starts the jobs (which take this process's environment):
    - hydra/launcher=submitit_local: OMP_NUM_THREADS = cores // the processes it starts at once, unless the user
      set it or MKL_NUM_THREADS;
    - hydra/launcher=joblib, with the user's OMP_NUM_THREADS and no MKL_NUM_THREADS: MKL_NUM_THREADS set to it, for
      loky sets in each worker every variable the user did not set to cores // n_jobs, and torch takes
      MKL_NUM_THREADS over OMP_NUM_THREADS (the user's choice was lost).
    Returns the variables set here (the caller takes them back when the multirun ends)."""
    launcher = OmegaConf.select(config, "hydra.launcher._target_")
    if launcher == JOBLIB and "OMP_NUM_THREADS" in os.environ and "MKL_NUM_THREADS" not in os.environ:
        os.environ["MKL_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
        return ["MKL_NUM_THREADS"]
    at_once = jobs_at_once(config)
    if at_once is None or any(name in os.environ for name in THREAD_VARIABLES):
        return []
    threads = max(1, cores() // at_once)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    processes = "1 process" if at_once == 1 else f"{at_once} processes"
    log.info(
        f"hydra/launcher=submitit_local starts {processes} at once on {counted(cores(), 'core')}: "
        f"OMP_NUM_THREADS={threads} for each (set OMP_NUM_THREADS to choose another count)"
    )
    return ["OMP_NUM_THREADS"]


def threads_said(world_size: int = 1) -> str:
    """A CPU run's torch thread count and where it came from, as its train.log says it (`world_size`: its DDP
    processes). torch takes MKL_NUM_THREADS where it is set, else OMP_NUM_THREADS."""
    import torch  # called where torch is loaded already

    # (every DDP process takes the same count: the same variables, or Lightning's cores // trainer.devices in each)
    threads = counted(torch.get_num_threads(), "torch thread")
    if world_size > 1:
        threads += f" in each of the {world_size} DDP processes"
    omp, mkl = (os.environ.get(name) for name in THREAD_VARIABLES)
    if omp is None and mkl is None:
        return f"{threads}, torch's own count (no OMP_NUM_THREADS set: set it to choose another)"
    if mkl is not None and mkl != omp:
        return f"{threads}, from MKL_NUM_THREADS={mkl}" + (f" (over OMP_NUM_THREADS={omp})" if omp else "")
    launcher = OmegaConf.select(HydraConfig.get(), "launcher._target_") if HydraConfig.initialized() else None
    # (submitit_local's count is set in the multirun's process, before Lightning's in a DDP job's processes)
    why = SET_BY.get(launcher) or (DDP_SET_BY if world_size > 1 else None)
    return f"{threads}, from OMP_NUM_THREADS={omp}" + (f" ({why})" if why else "")
