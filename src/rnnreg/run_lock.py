"""`<run dir>/.rnnreg.lock`: which folder a live rnnreg run owns (a run its run folder, a multirun its sweep
folder). Plain files and flock, no torch: rnnreg-report asks it whether a run without metrics.json is still running.
What an ended run left in a folder, which a new run there would write over: rnnreg.run_folder_check."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from rnnreg.errors import OutputError


def launched_as_rank_zero() -> bool:
    """The process that owns the run folder: not a DDP process started by another (Lightning sets LOCAL_RANK),
    nor another node's or SLURM task's."""
    ranks = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "GROUP_RANK")
    return all(os.environ.get(key, "0") == "0" for key in ranks)


class RunLock:
    """`<run dir>/.rnnreg.lock`: one live run per folder. A second run in the folder of a live one stops with a
    one-line OutputError before it writes anything of its own. The lock is an flock held on the file for the
    run's lifetime, so the kernel releases it however the owner ends (even SIGKILL): a lock file left by a
    dead run is taken over. The file names the owner (pid@host) for the message; it is removed at the end."""

    NAME = ".rnnreg.lock"

    def __init__(self, folder: str | Path, key: str = "hydra.run.dir") -> None:
        self.path = Path(folder) / self.NAME
        self.key = key  # the setting that gives a run another folder, named in the message
        self.fd: int | None = None
        self.made_folder = False  # removed again at release when the run left nothing in it (bad input)

    @classmethod
    def in_use(cls, folder: str | Path, key: str = "hydra.run.dir") -> str | None:
        """The message to stop with when a live run holds `folder`'s lock (checked without taking it), else None."""
        path = Path(folder) / cls.NAME
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it: a dead run's file (closing fd releases our shared lock)
        except BlockingIOError:
            return cls.message(path, fd, key)
        finally:
            os.close(fd)

    @staticmethod
    def message(path: Path, fd: int, key: str) -> str:
        owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        return (
            f"{path.parent} is in use by another live rnnreg run ({owner}): give this run another folder "
            f"({key}=...), or wait for that run to end"
        )

    def acquire(self, tries: int = 20) -> None:
        try:
            self.made_folder = not self.path.parent.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never a link's file
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    tries -= 1
                    if tries <= 0:  # held all along (a check by in_use holds it for microseconds)
                        message = self.message(self.path, fd, self.key)
                        os.close(fd)
                        raise OutputError(message) from None
                    os.close(fd)
                    time.sleep(0.025)
                    continue
                try:  # the owner may have removed the file between our open and our flock: then retry
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}@{socket.gethostname()}\n".encode(), 0)
            self.fd = fd
        except OSError as err:
            raise OutputError(
                f"could not lock {self.path.parent}: {err.strerror or err}: give {self.key} a folder you can write in"
            ) from err

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: nobody takes an unlinked lock (see acquire)
            os.close(self.fd)
            self.fd = None
            if self.made_folder:
                try:
                    self.path.parent.rmdir()  # only if empty
                except OSError:
                    pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
