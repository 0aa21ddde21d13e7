"""A hydra/launcher=submitit_local job of several tasks (hydra.launcher.tasks_per_node=N) as one DDP run of N
processes (trainer=ddp trainer.devices=N): submitit starts the N processes, each running the whole job, and sets in
each only its own SUBMITIT_LOCAL_* variables, which no Lightning cluster environment reads (under SLURM,
SLURMEnvironment reads SLURM_PROCID and the rest): without them every task took itself for rank 0 of a DDP run of
its own and started its other ranks with submitit's command line, which cannot run them. Here each task is given
what Lightning's own launcher gives the DDP processes it starts (LOCAL_RANK, the main process's address and port),
so that Lightning takes the processes as started for it and the tasks find each other; and the records of a task
other than the first are its own, as Lightning's processes' are (train_ddp_process_<rank>.log, not train.log)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

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
