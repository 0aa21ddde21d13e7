"""A Hydra callback for the submitit_local DDP tests, in a module of its own: submitit unpickles a job's Hydra callbacks
in each task before Hydra sets up the job's logging, and a module that imports Lightning then (test_ddp, helpers)
would take Lightning's lines out of the job's train.log."""

from __future__ import annotations

import os
import socket

from hydra.experimental.callback import Callback

OCCUPIED: list[socket.socket] = []  # held here, not on the callback: submitit pickles it to requeue the job


class OccupyLightningsPort(Callback):
    """In a submitit_local job's first task, as the job starts, a listening socket on the port Lightning's SLURM rule
    gives the job (15000 + the job id's last four digits), held while the task lives: another program on that port,
    or another job whose id ends alike."""

    def on_job_start(self, config, **kwargs) -> None:
        if os.environ.get("SUBMITIT_LOCAL_GLOBALID") == "0":
            OCCUPIED.append(socket.socket())
            OCCUPIED[-1].bind(("127.0.0.1", 15000 + int(os.environ["SUBMITIT_LOCAL_JOB_ID"][-4:])))
            OCCUPIED[-1].listen()
