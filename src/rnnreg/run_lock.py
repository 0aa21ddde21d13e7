"""`<run dir>/.rnnreg.lock`: which folder a live rnnreg run owns (a run its run folder, a multirun its sweep
folder); and what an ended run left in a folder, which a new run there would write over (earlier_results).
Plain files and flock, no torch: rnnreg-report asks it whether a run without metrics.json is still running."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

from rnnreg.errors import OutputError
from rnnreg.override_text import pasted_override
from rnnreg.run_record import recorded_metrics


def launched_as_rank_zero() -> bool:
    """The process that owns the run folder: not a DDP process started by another (Lightning sets LOCAL_RANK),
    nor another node's or SLURM task's."""
    ranks = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "GROUP_RANK")
    return all(os.environ.get(key, "0") == "0" for key in ranks)


# What an ended run leaves that a new run in its folder would write over: its outcome and its weights (a stacked
# sweep's resume files too). Hydra's .hydra/ and the log are not counted: a run refused for bad input leaves them.
RESULT_FILES = ("metrics.json", "checkpoints/*.ckpt", ".stacked/*.pt")


def earlier_results(folder: str | Path, below: bool = False) -> list[str]:
    """The result files of an earlier run in `folder` (relative paths, sorted); `below`: in its subfolders too
    (a sweep folder's jobs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {p for pattern in RESULT_FILES for p in folder.glob(f"**/{pattern}" if below else pattern)}
    return sorted(str(p.relative_to(folder)) for p in found if p.is_file())


def results_message(folder: str | Path, found: list[str], key: str, go_on: str = "", what: str = "run") -> str:
    """The one line a `what` (run, multirun) stops with when `folder` holds the `found` results of an earlier one
    (`key`: the setting that gives it another folder; `go_on`: ", <how to continue that one instead>", or "")."""
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return (
        f"{folder} holds an earlier {what}'s results (in {shown}), which this {what} would write over: give it another "
        f"folder ({key}=...){go_on}, or remove that folder first"
    )


def check_no_earlier_results(folder: str | Path, key: str, ckpt_path: str | None = None, trains: bool = True) -> None:
    """An OutputError when `folder` holds an earlier run's results, unless this run goes on from a checkpoint in
    it (`ckpt_path`): a run never writes over another's metrics.json and checkpoints. `trains`: the message may
    offer going on from that run (not to an evaluation)."""
    found = earlier_results(folder)
    if not found:
        return
    folder = Path(os.path.abspath(folder))
    if ckpt_path and folder.resolve() in Path(ckpt_path).resolve().parents:
        return
    if ckpt_path and folder in Path(os.path.abspath(ckpt_path)).parents:  # in the folder by name, elsewhere by a link
        raise OutputError(
            f"ckpt_path={ckpt_path} is, through a link, {Path(ckpt_path).resolve()}, outside its run's folder "
            f"{folder}: a run goes on in its own folder from its own files only (a link there could have it write "
            f"elsewhere): give the run another folder (hydra.run.dir=...), which goes on from that checkpoint"
        )
    last = folder / "checkpoints" / "last.ckpt"
    unfinished = trains and last.is_file() and not completed(folder)
    go_on = f", go on from that run with {pasted_override('ckpt_path', last)}" if unfinished else ""
    raise OutputError(results_message(folder, found, key, go_on))


def check_no_links(folder: str | Path, key: str, below: bool = False) -> None:
    """An OutputError when `folder` (`key`) holds a link where a run writes by name: among its own entries, or below
    its .hydra/ or checkpoints/ (`below`: a sweep folder's job folders too). Hydra's record and log, the lock and the
    config tree are opened through a link, so a run there would write over the file it points at, elsewhere; a
    resume deletes the earlier best checkpoint its state names below checkpoints/, through any link on the way."""
    found = links_written_through(Path(os.path.abspath(folder)), below)
    if found:
        link = found[0]
        raise OutputError(
            f"{key}={folder} holds {link.relative_to(os.path.abspath(folder))}, a link to {os.readlink(link)}: a run "
            f"in that folder would write through it, elsewhere: give the run another folder ({key}=...), or put what "
            f"it points at in the link's place"
        )


def links_written_through(folder: Path, below: bool = False) -> list[Path]:
    """The links in `folder` (not followed) and anywhere below its .hydra/ and checkpoints/, and with `below` in its
    subfolders'."""
    found = []
    try:
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if entry.is_symlink():
                found.append(entry)
            elif entry.name in (".hydra", "checkpoints") and entry.is_dir():  # (a resume deletes a path below)
                inside = (Path(top, name) for top, dirs, files in os.walk(entry) for name in sorted(dirs + files))
                found += [p for p in inside if p.is_symlink()]
            elif below and entry.is_dir():
                found += links_written_through(entry)
    except OSError:  # a folder this user cannot read: Hydra's own error says so
        pass
    return found


def checkpoints_folder(folder: str | Path) -> Path | None:
    """The folder of checkpoints that `folder` is or lies in, else None: `folder` itself when it holds checkpoints
    (*.ckpt), or a run's checkpoints/ at or above it (one that holds checkpoints, or beside a run's .hydra/ or
    metrics.json)."""
    folder = Path(os.path.abspath(folder))
    if holds_checkpoints(folder):
        return folder
    for above in (folder, *folder.parents):
        run = above.parent
        if above.name == "checkpoints" and (
            holds_checkpoints(above) or (run / ".hydra").is_dir() or (run / "metrics.json").is_file()
        ):
            return above
    return None


def holds_checkpoints(folder: Path) -> bool:
    return any(p.is_file() for p in folder.glob("*.ckpt"))


# what each program writes in its folder, and what the folder is for
WRITES = {
    "rnnreg-eval": ("its metrics.json, log and .hydra/", "the evaluation"),
    "rnnreg-train": ("its checkpoints/, metrics.json, log and .hydra/", "the run"),
}


def check_not_in_checkpoints(folder: str | Path, key: str, program: str = "rnnreg-eval") -> None:
    """An OutputError when `program`'s `folder` (`key`) is or lies in a folder of checkpoints: its results would lie
    among a run's checkpoints (rnnreg-report would read them as another run of it)."""
    found = checkpoints_folder(folder)
    if found is None:
        return
    where = "" if found == Path(os.path.abspath(folder)) else f"inside {found}, "
    writes, what = WRITES[program]
    raise OutputError(
        f"{key}={folder} is {where}a folder of checkpoints, and {program} writes {writes} there: give {what} a "
        f"folder of its own ({key}=<a new folder>, or leave {key} out)"
    )


def check_folder_can_be_made(folder: str | Path, key: str) -> None:
    """A run or sweep folder that could not be made or written in (a file on its path, a folder this user
    cannot write in, a read-only or full filesystem, a quota, a pseudo-filesystem such as /proc): one line before
    Hydra tries, whose answer is a traceback."""
    path = Path(os.path.abspath(folder))
    existing = next(p for p in (path, *path.parents) if os.path.exists(p))  # (False where it cannot look)
    if not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"this user cannot write in {existing}"
    else:
        reason = cannot_make_a_folder_in(existing)
        if reason is None:
            return
    raise OutputError(f"{key}={folder}: {reason}: give {key} a folder you can write in")


def cannot_make_a_folder_in(folder: Path) -> str | None:
    """Why no folder can be made in `folder` where access(2) allows it (no space or inode left, a quota, a
    pseudo-filesystem such as /proc, a server that says no); None where one can. Found by making one, which is
    removed again at once: access(2) knows only the permissions. The folder's times are put back as they were
    (where its owner may set them): a look at `ls -t` or a build tool sees nothing changed."""
    try:
        before = os.stat(folder)
        os.rmdir(tempfile.mkdtemp(prefix=".rnnreg-check-", dir=folder))
    except OSError as err:
        return f"no folder can be made in {folder} ({err.strerror or err})"
    with contextlib.suppress(OSError):  # another user's folder that we may write in (/tmp): its times moved
        os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    return None


def completed(folder: Path) -> bool:
    return recorded_metrics(folder).get("status") == "completed"


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
