"""A hydra/launcher=submitit_local job of several tasks (hydra.launcher.tasks_per_node=N) as one DDP run of N
processes (trainer=ddp trainer.devices=N): submitit starts the N processes, each running the whole job, and sets in
each only its own SUBMITIT_LOCAL_* variables, which no Lightning cluster environment reads (under SLURM,
SLURMEnvironment reads SLURM_PROCID and the rest): without them every task took itself for rank 0 of a DDP run of
its own and started its other ranks with submitit's command line, which cannot run them. Here each task is given
what Lightning's own launcher gives the DDP processes it starts (LOCAL_RANK, the main process's address and port),
so that Lightning takes the processes as started for it and the tasks find each other; and the records of a task
other than the first are its own, as Lightning's processes' are (train_ddp_process_<rank>.log, not train.log).

How many tasks a job must have (as many as its DDP processes): submitit_local_refusal, checked with the command line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from rnnreg.cpu_threads import SUBMITIT_LOCAL
from rnnreg.trainer_rules import trainer_processes

# Lightning's own ports for a SLURM job (SLURMEnvironment): 15000 + the job id's last four digits, which every task
# of the job computes alike with no word between them
FIRST_PORT = 15000


def submitit_local_task() -> tuple[int, int, str] | None:
    """In a task of a submitit_local job of several tasks: its rank, the job's tasks and the job's id; else None
    (a job of one task, another launcher, no job)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return None
    tasks = int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
    if tasks < 2 or "SUBMITIT_LOCAL_GLOBALID" not in os.environ:
        return None
    return int(os.environ["SUBMITIT_LOCAL_GLOBALID"]), tasks, os.environ["SUBMITIT_LOCAL_JOB_ID"]


def join_the_jobs_ddp(output_dir: str, job_name: str) -> None:
    """In a task of a submitit_local job of several tasks, when Hydra starts the job there (before the run reads
    its rank): the task is DDP process LOCAL_RANK=<its rank> on this one node, all meeting at 127.0.0.1 on a port
    from the job's id (MASTER_ADDR or MASTER_PORT given by the user are kept). A task other than the first logs to
    <output_dir>/<job_name>_ddp_process_<rank>.log rather than the job's <job_name>.log, which is rank 0's."""
    task = submitit_local_task()
    if task is None:
        return
    rank, _, job_id = task
    os.environ["LOCAL_RANK"] = str(rank)
    os.environ["NODE_RANK"] = "0"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(FIRST_PORT + int(job_id[-4:])))
    if rank:
        own_log(Path(output_dir) / f"{job_name}.log", Path(output_dir) / f"{job_name}_ddp_process_{rank}.log")


def own_log(shared: Path, own: Path) -> None:
    """The handlers of the root logger (Hydra's job log) that write to `shared` write to `own` instead."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == shared.resolve():
            mine = logging.FileHandler(own, mode=handler.mode, encoding=handler.encoding)
            mine.setLevel(handler.level)
            mine.setFormatter(handler.formatter)
            for kept in handler.filters:
                mine.addFilter(kept)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(mine)


def submitit_local_refusal(launcher: DictConfig, trainer: DictConfig | None) -> str | None:
    """Why a job cannot run under `launcher` (a multirun's hydra.launcher; None: it can, or the launcher is not
    submitit_local). Every task of a submitit_local job runs the whole job, as one of its DDP processes
    (join_the_jobs_ddp), and Lightning cannot start DDP processes itself in a submitit job (it would run them with
    the job's command line, which is submitit's): a job has as many tasks (hydra.launcher.tasks_per_node) as
    processes (trainer.devices x trainer.num_nodes, on the GPUs hydra.launcher.gpus_per_node shows it: none unset)."""
    if launcher.get("_target_") != SUBMITIT_LOCAL:
        return None
    tasks = launcher.get("tasks_per_node") or 1
    processes = 1 if trainer is None else trainer_processes(trainer, gpus=launcher.get("gpus_per_node") or 0)
    # (every task is on node 0: with two nodes' worth of ranks asked for, the ranks repeat and DDP waits for ever)
    if trainer is not None and str(nodes := trainer.get("num_nodes", 1)) != "1":
        return (
            f"trainer.num_nodes={nodes} under hydra/launcher=submitit_local, which runs each job on this machine "
            f"alone: set trainer.num_nodes=1 (or run on several nodes with hydra/launcher=slurm)"
        )
    if tasks == processes:
        return None
    if processes == 1:
        return (
            f"hydra.launcher.tasks_per_node={tasks} under hydra/launcher=submitit_local runs each job {tasks} times "
            f"side by side in its one folder, and this job is one process: leave hydra.launcher.tasks_per_node out, "
            f"or make the job {tasks} DDP processes (trainer=ddp trainer.devices={tasks})"
        )
    ddp = f"trainer.devices={trainer.get('devices')} / trainer.strategy={trainer.get('strategy')}"
    if tasks == 1:
        return (
            f"{ddp} under hydra/launcher=submitit_local: Lightning would start DDP's other processes with the "
            f"command line of the process that runs the job, which is submitit's: set "
            f"hydra.launcher.tasks_per_node={processes} (submitit starts the job's {processes} processes, each one of "
            f"its DDP processes)"
        )
    return (
        f"{ddp} is {processes} DDP processes a job, and hydra.launcher.tasks_per_node={tasks} starts {tasks} under "
        f"hydra/launcher=submitit_local, each one of them: set hydra.launcher.tasks_per_node={processes}"
    )
