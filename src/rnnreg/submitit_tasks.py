"""A hydra/launcher=submitit_local job of several tasks (hydra.launcher.tasks_per_node=N) as one DDP run of N
processes (trainer=ddp trainer.devices=N): submitit starts the N processes, each running the whole job, and sets in
each only its own SUBMITIT_LOCAL_* variables, which no Lightning cluster environment reads (under SLURM,
SLURMEnvironment reads SLURM_PROCID and the rest): without them every task took itself for rank 0 of a DDP run of
its own and started its other ranks with submitit's command line, which cannot run them. Here each task is given
what Lightning's own launcher gives the DDP processes it starts (LOCAL_RANK, the main process's address and port),
so that Lightning takes the processes as started for it and the tasks find each other at a port the first task
found free and wrote down for the others (meeting_port); and the records of a task other than the first are its own,
as Lightning's processes' are (train_ddp_process_<rank>.log, not train.log), and only the first task writes the
job's .hydra/ record (RankZeroRecords), as Lightning's DDP processes other than rank 0 are started without one.

How many tasks a job must have (as many as its DDP processes): submitit_local_refusal, checked with the command line.

A Ctrl-C in a submitit_local multirun (of any jobs: one task or several) stops each job as it stops a run, after its
current window with a resumable checkpoint, and the multirun waits for them (CtrlCStopsTheJobs)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, open_dict

from rnnreg.cpu_threads import SUBMITIT_LOCAL
from rnnreg.trainer_rules import trainer_processes

# how long a task waits for the first task's port: it writes it as the job starts, before any data or model
PORT_WAIT_S = 300.0
# set for a job's controller started with Ctrl-C ignored (CtrlCStopsTheJobs), whose tasks inherit it and take it back:
# a file that is there once the multirun has had a Ctrl-C
CTRL_C_TO_TASKS = "RNNREG_SUBMITIT_CTRL_C"


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
    rank 0 found free (MASTER_ADDR or MASTER_PORT given by the user are kept). A task other than the first logs to
    <output_dir>/<job_name>_ddp_process_<rank>.log rather than the job's <job_name>.log, which is rank 0's."""
    task = submitit_local_task()
    if task is None:
        return
    rank, _, job_id = task
    os.environ["LOCAL_RANK"] = str(rank)
    os.environ["NODE_RANK"] = "0"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(meeting_port(rank, job_id))
    if rank:
        own_log(Path(output_dir) / f"{job_name}.log", Path(output_dir) / f"{job_name}_ddp_process_{rank}.log")


def take_ctrl_c_back() -> None:
    """In a task of a submitit_local job whose controller was started with Ctrl-C ignored (CtrlCStopsTheJobs), when
    Hydra starts the job there: Ctrl-C is Python's again (a KeyboardInterrupt; a run's first one stops it after its
    window), as in a process the user started. A Ctrl-C that came before, while the task ignored it, stops the job
    before it starts (so does a multirun that has ended meanwhile, after a second Ctrl-C: the file's folder is gone):
    it says so in its log and in its folder's error.txt (a job stopped before its result: the multirun's end names
    it, to run again), and the task exits 130."""
    pressed = os.environ.pop(CTRL_C_TO_TASKS, None)
    if not pressed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if Path(pressed).exists() or not Path(pressed).parent.is_dir():
        from rnnreg.job_records import record_job_stopped

        print("interrupted: the job was stopped by Ctrl-C before it started", file=sys.stderr, flush=True)
        record_job_stopped("Ctrl-C")
        raise SystemExit(130)  # (not an error Hydra's callbacks would only warn of)


class CtrlCStopsTheJobs:
    """A submitit_local multirun's Ctrl-C (the terminal's SIGINT reaches every process of the command: this one, each
    job's controller and its tasks) stops each job as it stops a run, after its current window with a resumable
    checkpoint, and this process waits for them; the multirun then ends as it does (`ended`: its last line names the
    jobs a signal stopped and the rnnreg-report command that gives the commands that go on), exit 130, and starts no
    later batch of jobs. A second Ctrl-C aborts at once, here and in each job (with its checkpoint as of then).
    Before: submitit's controller, stopped by the Ctrl-C, sent its tasks a second SIGINT and SIGKILL 1 s later, so a
    job whose window took longer was killed before it wrote its checkpoint and metrics.json (its lock left), and the
    controller's traceback came on the console. Here each controller is started with Ctrl-C ignored, and its tasks,
    which inherit that, take it back as their job starts (take_ctrl_c_back: one that came in a task's first seconds,
    before that, stops its job before it starts). submitit's LocalJob.cancel (a SIGINT to the controller) stops no
    job so started: a SIGTERM to the controller does (it forwards it to the tasks)."""

    def __init__(self, ended: Callable[[], None]) -> None:
        self.ended = ended
        self.pressed = False  # Ctrl-C came while jobs ran
        self.launch: Callable | None = None  # submitit_local's own launch, put back by uninstall
        self.previous = None  # the Ctrl-C handler while jobs do not run
        self.folder: str | None = None  # holds the file that tells the jobs' tasks of a Ctrl-C (CTRL_C_TO_TASKS)

    @staticmethod
    def wanted(config: DictConfig) -> bool:
        """Whether this multirun's jobs run under submitit_local, and Ctrl-C raises KeyboardInterrupt here (a command
        started with Ctrl-C ignored, `nohup` or `&` in a script, keeps it so in its jobs)."""
        return (
            config.hydra.launcher.get("_target_") == SUBMITIT_LOCAL
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )

    def install(self) -> None:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

        self.launch, stopper = LocalLauncher.launch, self

        def launch(launcher, job_overrides, initial_job_idx):
            return stopper.launching(launcher, job_overrides, initial_job_idx)

        LocalLauncher.launch = launch
        self.folder = tempfile.mkdtemp(prefix="rnnreg-ctrl-c-")

    def uninstall(self) -> None:
        if self.launch is not None:
            from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

            LocalLauncher.launch, self.launch = self.launch, None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    @property
    def pressed_file(self) -> Path:
        return Path(self.folder or ".", "pressed")

    def launching(self, launcher, job_overrides, initial_job_idx):
        """submitit_local's launch of a batch of jobs, their controllers started with Ctrl-C ignored, while a first
        Ctrl-C here only says that the jobs stop."""
        if self.pressed:  # a later batch (Optuna's, hydra.sweeper.max_batch_size's): the multirun ends before it
            self.ended()  # (it exits where a job says it stopped)
            raise KeyboardInterrupt
        import submitit.local.local as local
        from submitit.core.utils import UncompletedJobError

        start_controller = local.start_controller
        controllers = []  # this batch's jobs' controller processes

        def started_ignoring_ctrl_c(*args, **kwargs):
            # (a Ctrl-C in these few milliseconds is ignored here too)
            handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.environ[CTRL_C_TO_TASKS] = str(self.pressed_file)
            try:
                controllers.append(start_controller(*args, **kwargs))
                return controllers[-1]
            finally:
                os.environ.pop(CTRL_C_TO_TASKS, None)
                signal.signal(signal.SIGINT, handler)

        results_timeout = local.LocalJob._results_timeout_s  # (first_ctrl_c lowers it)
        self.previous = signal.signal(signal.SIGINT, self.first_ctrl_c)
        local.start_controller = started_ignoring_ctrl_c
        try:
            return self.launch(launcher, job_overrides, initial_job_idx)
        except UncompletedJobError:
            if not self.pressed:
                raise
            # a job that the Ctrl-C ended without a result (outside a run's own Ctrl-C handling: as it started, an
            # evaluation's): once the batch's other jobs have stopped after their windows (submitit's wait for the
            # results ended at this one), the multirun ends as it does, from what its jobs' folders say
            for controller in controllers:
                controller.wait()  # (a second Ctrl-C: KeyboardInterrupt, the multirun aborts at once)
            self.ended()
            raise KeyboardInterrupt from None
        finally:
            local.start_controller = start_controller
            if signal.getsignal(signal.SIGINT) == self.first_ctrl_c:
                signal.signal(signal.SIGINT, self.previous)
            if self.pressed:
                local.LocalJob._results_timeout_s = results_timeout

    def first_ctrl_c(self, signum, frame) -> None:
        import submitit.local.local as local

        signal.signal(signal.SIGINT, self.previous)  # a second Ctrl-C raises KeyboardInterrupt at once
        self.pressed = True
        # submitit (1.5.4: Job._results_timeout_s, 15 s) waits that long for the result of a job whose process has
        # ended, for a slow shared file system; a local job's tasks have ended with it, their result written or never
        # to be (a job the Ctrl-C stopped before it wrote one: take_ctrl_c_back), and the user would wait 15 s for it
        local.LocalJob._results_timeout_s = 0
        with contextlib.suppress(OSError):  # (a task that ignored it as it started: take_ctrl_c_back)
            self.pressed_file.touch()
        print(
            "\nCtrl-C: each job stops after its current window and saves a resumable checkpoint; waiting for them "
            "(Ctrl-C again to abort at once)",
            flush=True,
        )


def meeting_port(rank: int, job_id: str) -> int:
    """The port the tasks of job `job_id` meet at: rank 0 takes one the system finds free and writes it, with its
    pid, to <submitit's folder of the job>/<job id>_ddp_port; the other ranks wait for that file written by a task of
    this run of the job (its rank 0 alive and their sibling: a requeued job finds its last run's file there),
    PORT_WAIT_S at most: then the task says so in one line and exits 2 (task 0 failed or was not started: its own log
    says why).
    Lightning's rule for SLURM (15000 + the job id's last four digits) failed to bind where another program had the
    port, or another job of the sweep ended in the same four digits (submitit_local runs them at once)."""
    from submitit.core.utils import JobPaths

    from rnnreg.io import replace_atomically

    # (submitit's folder as its own files have it: its `%j` is the job's id, beside the tasks' logs)
    paths = JobPaths(os.environ.get("SUBMITIT_FOLDER", "."), job_id, 0)
    port_file = paths.folder / f"{job_id}_ddp_port"
    if rank == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        replace_atomically(port_file, lambda tmp: tmp.write_text(f"{port} {os.getpid()}"))
        return port
    deadline = time.monotonic() + PORT_WAIT_S
    while time.monotonic() < deadline:
        said = port_file.read_text().split() if port_file.exists() else []
        if len(said) == 2 and is_my_sibling(int(said[1])):
            return int(said[0])
        time.sleep(0.1)
    # (Hydra only warns of an error raised in a job's callback, and the task would go on to wait in DDP's own
    # rendezvous and end in its C++ traceback)
    print(
        f"error: task {rank} of submitit job {job_id} waited {PORT_WAIT_S:.0f} s for task 0 to write the DDP port "
        f"its tasks meet at ({port_file}) and it never did: task 0 failed or was not started (its log, "
        f"{paths.stderr}, says why); fix that and run the job again",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(2)


def is_my_sibling(pid: int) -> bool:
    """Whether process `pid` is alive and has this process's parent (submitit's controller of the job's tasks)."""
    if not Path("/proc/self").exists():  # (not Linux: alive is the most that can be known)
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == os.getppid()  # (the name in parentheses may hold spaces)


class RankZeroRecords:
    """A config loader's load_sweep_config that composes a job of a submitit_local job of several tasks with
    hydra.output_subdir=null in every task but the first: Hydra writes the job's .hydra/ record in each task, each
    truncating and writing the same files at once, while the first task reads them (a requeued job's own run, the
    checkpoint's config): it could find one empty or half-written."""

    def __init__(self, compose: Callable[[DictConfig, list[str]], DictConfig]) -> None:
        self.compose = compose

    def __call__(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        config = self.compose(master_config, sweep_overrides)
        task = submitit_local_task()
        if task is not None and task[0]:
            with open_dict(config.hydra):
                config.hydra.output_subdir = None
        return config

    @staticmethod
    def install(config: DictConfig) -> None:
        """On Hydra's config loader, for a multirun under submitit_local with several tasks a job (submitit pickles
        the loader to compose each job in its tasks)."""
        from hydra.core.global_hydra import GlobalHydra

        launcher = config.hydra.launcher
        if launcher.get("_target_") == SUBMITIT_LOCAL and (launcher.get("tasks_per_node") or 1) > 1:
            loader = GlobalHydra.instance().config_loader()
            loader.load_sweep_config = RankZeroRecords(loader.load_sweep_config)


def own_log(shared: Path, own: Path) -> None:
    """The handlers of the root logger (Hydra's job log) that write to `shared` write to `own` instead."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve() == shared.resolve():
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
        # (a command without a trainer, rnnreg-generate, runs no DDP)
        or_ddp = (
            "" if trainer is None else f", or make the job {tasks} DDP processes (trainer=ddp trainer.devices={tasks})"
        )
        return (
            f"hydra.launcher.tasks_per_node={tasks} under hydra/launcher=submitit_local runs each job {tasks} times "
            f"side by side in its one folder, and this job is one process: leave hydra.launcher.tasks_per_node "
            f"out{or_ddp}"
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
