"""Console scripts (and `python path.py`: benchmarks/*.py; `python [-u] -m module`; `python BIN/script`) started as
forks of a process that has imported torch and Lightning already.

Each `rnnreg-train` a test starts spends 5-7 s of CPU importing torch, Lightning (with torch._dynamo and sympy) and
torchmetrics (with scipy and matplotlib), W&B's client where logger=wandb and Optuna where hparams_search=optuna, before
its first window, and the suite starts about 180 console and benchmark scripts on two cores. So each pytest worker keeps
one server process that imports those third-party packages once, and forks a child per script: a real process (its own
pid, signals, exit status, stdin, stdout, stderr, environment and working directory) that runs it as `BIN/script args`,
`python path.py args` or `python -m module args` does. The server imports our own modules too (not yet used, as a
fresh import leaves them), touches no tensor (no thread pool exists to fork) and has no CUDA.
A child ends as Python ends (threads joined, atexit, streams flushed) but skips the interpreter's teardown of
every module, which in a fork costs a second of copying the server's pages.

A child takes the caller's umask and soft resource limits (`ulimit -f`, say), as a process the caller
started would inherit them. What a fork cannot give, a cold process is started for (`subprocess.Popen`, as
before): a `preexec_fn`, an environment that changes what Python or a native library reads once at start-up
(PYTHON*, OMP_*, LD_*, ...; a PYTHONPATH that puts folders before the server's is given, as sys.path entries,
where they hold no sitecustomize and no package the server imported), a hard resource limit other than the
server's, a system other than Linux, or TESTS_COLD_START=1 (the whole suite cold: `TESTS_COLD_START=1 make test`).
A child starts the Python scripts it runs through subprocess as forks of the server too, and they theirs, in the
server's process group (`warm_children`, _start_children_warm): Lightning's other DDP processes, submitit_local's
job controllers and their tasks (`python -u -m submitit.core._submit`), the benchmarks' `python -m rnnreg.train`
runs; joblib's loky workers, started by loky itself, stay cold. What a process imports is tested in cold processes
(test_first_hour.py starts `python -c`, never through here); test_warm_start.py checks that a warm run ends as a
cold one.

    python tests/warm_start.py <socket fd>     the server (started by `_the_server()`, one per pytest worker)
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import gc
import importlib.machinery
import io
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types

# Read once at start-up by Python, a native library or an import the server made (matplotlib's MPL*): a child
# asking for other values than the server's is started cold
STARTUP_KEYS = tuple("PYTHON OMP_ KMP_ MKL_ OPENBLAS_ GOMP_ LD_ MALLOC TORCH TRITON CUDA MPL".split())
# ... except what is read each time it is used: Triton's knobs read TRITON_INTERPRET when a kernel is defined
# (rnnreg.triton_cell, imported in the child) and launched; CUDA_VISIBLE_DEVICES is read as CUDA starts, which it
# never did in the server (submitit_local sets it for a job's controller)
READ_WHEN_USED = ("TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES")
STATUS = struct.Struct("i")
# (shell=False only; encoding: of the pipes, as subprocess's, which it makes text)
WARM_ARGUMENTS = ("stdin", "stdout", "stderr", "text", "encoding", "cwd", "start_new_session", "shell")
# in the server and its children: the start-up environment and resource limits the server started with
_SERVER_START: dict = {}


def _startup_env(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith(STARTUP_KEYS) and key not in READ_WHEN_USED}


def _path_added(env: dict[str, str], server_env: dict[str, str]) -> list[str] | None:
    """The folders `env`'s PYTHONPATH puts before the server's (a cold process has them on sys.path after its
    script's folder, before the server's); None where its PYTHONPATH is not the server's with absolute folders put
    before it."""

    def folders(startup: dict[str, str]) -> list[str]:
        return startup["PYTHONPATH"].split(os.pathsep) if startup.get("PYTHONPATH") else []

    given, server = folders(env), folders(server_env)
    added = given[: len(given) - len(server)]
    if given[len(added) :] != server or not all(os.path.isabs(folder) for folder in added):
        return None
    return added


def _shadows(folder: str, modules: set[str]) -> bool:
    """Whether a module in `folder` would change a cold process's start-up (a sitecustomize Python runs) or take the
    place of a package the server imported (first on sys.path, a cold process would import it instead)."""
    try:
        names = os.listdir(folder)
    except OSError:  # not a folder (yet): nothing in it to import
        return False
    return any(name.partition(".")[0] in modules | {"sitecustomize", "usercustomize"} for name in names)


def _limits() -> dict[str, tuple[int, int]]:
    """This process's resource limits (soft, hard) by name."""
    import resource

    names = [name for name in dir(resource) if name.startswith("RLIMIT_")]
    return {name: resource.getrlimit(getattr(resource, name)) for name in names}


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


# --- the server ------------------------------------------------------------------------------------------------


def serve(sock: socket.socket) -> tuple[list[str], socket.socket | None]:
    """Forks a child per request until the pytest worker (`sock`) goes; returns, in a child only, what it is to run
    (its argv after the interpreter) and, for a child that starts its own children warm, its connection here."""
    statuses: dict[int, int] = {}  # child pid -> the write end of its status pipe
    clients = [sock]  # the pytest worker, then each running child that starts its own children warm
    while True:
        ready, _, _ = select.select(clients, [], [], 0.02)
        for client in ready:
            try:
                message, fds, _, _ = socket.recv_fds(client, 1 << 20, 8)
            except ConnectionError:
                message = b""
            if not message and client is sock:
                os._exit(0)  # the pytest worker is gone; running children go on, as subprocesses would
            if not message:  # a child that started its children here has ended
                clients.remove(client)
                client.close()
                continue
            request = json.loads(message)
            stdin, stdout, stderr, status = fds
            # a child that starts its children warm asks for them on a connection of its own
            ours, theirs = (
                socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if request["warm_children"] else 2 * [None]
            )
            sys.stdout.flush(), sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for connection in [*clients, ours]:
                    if connection is not None:
                        connection.close()
                for fd in [status, *statuses.values()]:
                    os.close(fd)
                return _become_child(request, stdin, stdout, stderr), theirs
            for fd in (stdin, stdout, stderr):
                os.close(fd)
            if theirs is not None:
                theirs.close()
                clients.append(ours)
            statuses[pid] = status
            with contextlib.suppress(OSError):  # (a child that asked and was gone before the answer)
                client.send(json.dumps({"pid": pid}).encode())
        while statuses:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            fd = statuses.pop(pid)
            with contextlib.suppress(OSError):  # (its starter has ended: a rank 0 killed before its other ranks)
                os.write(fd, STATUS.pack(status))
            os.close(fd)


def _become_child(request: dict, stdin: int, stdout: int, stderr: int) -> list[str]:
    """This fork as a fresh `script args` (or `python -m module args`) process would start: its streams, session,
    folder, umask, soft resource limits, environment, signal handlers, argv and sys.path[0]."""
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    for fd in {stdin, stdout, stderr} - {0, 1, 2}:
        os.close(fd)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    if request["soft_limits"]:
        import resource

        for name, soft in request["soft_limits"].items():
            limit = getattr(resource, name)
            resource.setrlimit(limit, (soft, resource.getrlimit(limit)[1]))
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    for signum in request["ignored_signals"]:  # inherited through exec (Python keeps SIGINT so: no KeyboardInterrupt)
        signal.signal(signum, signal.SIG_IGN)
    if request["unbuffered"]:
        _unbuffered_streams()
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # found again from this environment's TMPDIR
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # a fresh process draws its own seed; forks would share one
    argv = request["argv"]
    if argv[0] == "-m":  # as Python has it while it finds the module (runpy sets argv[0] to its file)
        sys.argv = ["-m", *argv[2:]]
        sys.path[0] = os.getcwd()
        _put_path_added(request["env"])
        return argv
    script = os.path.abspath(argv[0])  # __main__.__file__ (sys.argv[0] stays as it was given)
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(script)
    _put_path_added(request["env"])
    return [script]


def _unbuffered_streams() -> None:
    """stdout and stderr as `python -u` makes them: text written through to the file descriptor at once."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        stream.flush()
        raw = io.FileIO(stream.fileno(), "wb", closefd=False)
        unbuffered = io.TextIOWrapper(raw, stream.encoding, stream.errors, newline="\n", write_through=True)
        setattr(sys, name, unbuffered)
        setattr(sys, f"__{name}__", unbuffered)


def _put_path_added(env: dict[str, str]) -> None:
    """sys.path with the folders `env`'s PYTHONPATH puts before the server's, where a cold process has them: after
    sys.path[0] (warm_possible has checked that none holds a module the server imported)."""
    sys.path[1:1] = _path_added(env, _SERVER_START["env"])


def _run_as_main(script: str) -> None:
    """Runs the file as `python script` does: its code in a fresh __main__ module (this one's objects unseen)."""
    main = types.ModuleType("__main__")  # its attributes as Python's own run makes them, in its order
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", script)
    main.__annotations__, main.__builtins__ = {}, builtins
    main.__file__, main.__cached__ = script, None
    sys.modules["__main__"] = main
    with open(script, "rb") as f:
        code = compile(f.read(), script, "exec")
    exec(code, main.__dict__)


def _run_module_as_main(name: str) -> None:
    """Runs the module as `python -m name` does (Python's own runpy._run_module_as_main: its errors, a package's
    __main__, sys.argv[0]), in a fresh __main__ module as the interpreter starts one (this one's objects unseen)."""
    import runpy

    main = types.ModuleType("__main__")
    main.__annotations__, main.__builtins__ = {}, builtins
    sys.modules["__main__"] = main
    if name in sys.modules:  # one of ours the server imported (_import_ours): not yet imported, as in a cold process
        del sys.modules[name]
        package, _, attribute = name.rpartition(".")
        if package in sys.modules:
            vars(sys.modules[package]).pop(attribute, None)
    runpy._run_module_as_main(name)


def _start_children_warm(connection: socket.socket) -> None:
    """In a child asked to (popen's warm_children, the default): the Python scripts it starts with subprocess
    (`subprocess.run`, `subprocess.Popen`: Lightning's DDP processes, submitit_local's job controller and the
    controller's tasks) are forks of the server as well, through `connection`, and start theirs so in turn, where a
    fork can give what is asked (warm_possible) and in this child's process group, which is the server's; cold
    processes otherwise. A fork of the server cannot join another group: a child in a session of its own (a test's
    Ctrl-C goes to its group) starts its children cold, in its group. A warm one starts ignoring the signals this
    child ignores, as a process started by exec does (submitit_local's controller, with Ctrl-C ignored: rnnreg's
    CtrlCStopsTheJobs)."""
    global _server
    _server = _Server(connection)
    cold = subprocess.Popen

    class WarmOrColdPopen(cold):
        def __new__(cls, args, *rest, **kwargs):
            env, others = kwargs.get("env"), {key: value for key, value in kwargs.items() if key != "env"}
            if rest or isinstance(args, str | bytes):
                return super().__new__(cls)
            in_group = kwargs.get("start_new_session") or os.getpgrp() == _SERVER_START["group"]
            warm = in_group and warm_possible(list(args), env, **others)
            _note_start(list(args), warm, kwargs.get("cwd"))
            if warm:
                return WarmPopen(args, warm_children=True, ignored_signals=_ignored_signals(), **kwargs)
            return super().__new__(cls)

    subprocess.Popen = WarmOrColdPopen


def _note_start(argv: list[str], warm: bool, cwd=None) -> None:
    """With TESTS_WARM_START_LOG=<file>: a line per Python script started here, warm or cold, and in which test
    (`TESTS_WARM_START_LOG=/tmp/starts make test`: which processes still start cold)."""
    log = os.environ.get("TESTS_WARM_START_LOG")
    if log and (warm or script_argv(argv, cwd) is not None or argv[:1] == [sys.executable]):
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").removesuffix(" (call)")
        with open(log, "a") as f:
            f.write(f"{'warm' if warm else 'cold'}\t{test}\t{' '.join(map(str, argv))[:300]}\n")


def _ignored_signals() -> list[int]:
    """The signals this process ignores (SIG_IGN), which a process it starts by exec inherits."""
    uncatchable = {signal.SIGKILL, signal.SIGSTOP}
    return [int(s) for s in signal.valid_signals() if s not in uncatchable and signal.getsignal(s) == signal.SIG_IGN]


def _serve_main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    # what each console script imports before it trains
    import hydra  # noqa: F401
    import hydra_plugins.hydra_optuna_sweeper._impl  # noqa: F401  (hparams_search=optuna: Optuna and its plugin)
    import lightning  # noqa: F401
    import lightning.pytorch  # noqa: F401
    import omegaconf  # noqa: F401
    import torch  # noqa: F401
    import torchmetrics  # noqa: F401
    import wandb.sdk.launch  # noqa: F401  (logger=wandb: 1.7 s; wandb.init imports its launch package)

    # The parsers of Hydra's overrides and OmegaConf's interpolations build ANTLR's lookahead tables as they are
    # first used: built here once, not again in each child
    from hydra.core.override_parser.overrides_parser import OverridesParser

    OverridesParser.create().parse_overrides(["a=1", "+b=x,y", "c=choice(1,2)", "d=interval(0,1)", "~e", "f=[1,{g:2}]"])
    omegaconf.OmegaConf.to_container(
        omegaconf.OmegaConf.create({"a": 1, "b": "x_${a}", "c": "${oc.env:HOME,/}"}), resolve=True
    )
    _import_ours()
    gc.freeze()  # the imports' objects: no collection in a child walks them (nor copies their pages)
    modules = sorted({name.partition(".")[0] for name in sys.modules})
    _SERVER_START.update(env=_startup_env(dict(os.environ)), limits=_limits(), modules=modules, group=os.getpgrp())
    sock.send(b"ready" + json.dumps(modules).encode())
    argv, connection = serve(sock)
    # a child from here on
    try:
        if connection is not None:
            _start_children_warm(connection)
        if argv[0] == "-m":
            _run_module_as_main(argv[1])
        else:
            _run_as_main(argv[0])
        status = 0
    except SystemExit as stop:  # as the interpreter reads it: None is 0, a message goes to stderr with 1
        status = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException as error:  # as the interpreter ends on it: its traceback; Ctrl-C's by SIGINT itself
        sys.excepthook(type(error), error, error.__traceback__)
        status = -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    _exit(status)


def _import_ours() -> None:
    """Every module of rnnreg and its Hydra launcher, as imported and not yet used (0.5 s of CPU a child would spend
    again), but Triton's kernels: a kernel reads TRITON_INTERPRET as it is defined, which a child may set otherwise.
    None of them reads the environment, the folder or argv as it is imported: a child has what a fresh import gives."""
    import importlib
    import pkgutil

    import rnnreg

    for module in pkgutil.iter_modules(rnnreg.__path__, "rnnreg."):
        if not module.name.startswith("rnnreg.triton_"):
            importlib.import_module(module.name)
    importlib.import_module("hydra_plugins.rnnreg_stacked_launcher.stacked_launcher")


def _exit(status: int) -> None:
    """Ends as Python ends a process (its threads joined, then atexit, then stdout and stderr flushed), without
    the interpreter's teardown of every module: in a fork of the server that is a second or more of copying
    the server's pages, and frees nothing the kernel does not free anyway."""
    threading._shutdown()  # Python's own first step: the threads' atexit hooks (loky's, futures'), then joins
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if status == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status & 0xFF)


# --- the client (in the pytest worker) -----------------------------------------------------------------------


class _Server:
    def __init__(self, connection: socket.socket | None = None) -> None:
        """The server started from this process, or (in a child that starts its children warm) the one this
        process is a fork of, through its `connection`."""
        if connection is not None:
            self.sock, self.lock, self.proc = connection, threading.Lock(), None
            self.env, self.limits = _SERVER_START["env"], _SERVER_START["limits"]
            self.modules = set(_SERVER_START["modules"])
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.env, self.limits = _startup_env(dict(os.environ)), _limits()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock, self.lock = ours, threading.Lock()
        ready, _, _ = select.select([ours], [], [], 300)
        message = ours.recv(1 << 20) if ready else b""
        if not message.startswith(b"ready"):
            raise RuntimeError("the warm-start server did not start (TESTS_COLD_START=1 runs without it)")
        self.modules = set(json.loads(message.removeprefix(b"ready")))  # the top-level packages it imported

    def start(self, request: dict, fds: list[int]) -> int:
        with self.lock:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
            return json.loads(self.sock.recv(1 << 16))["pid"]


_server: _Server | None = None


def _the_server() -> _Server:
    global _server
    if _server is None or (_server.proc is not None and _server.proc.poll() is not None):
        _server = _Server()
    return _server


def script_argv(argv: list[str], cwd=None) -> list[str] | None:
    """The script's own argv (its sys.argv) when `argv` runs a Python script as this venv runs it: a console
    script (`BIN/script args`, or `python BIN/script args` as Lightning starts its other DDP processes) or a file
    given to this interpreter (`python path.py args`, as the tests start benchmarks/*.py); `-m module args` for a
    module this interpreter runs (`python -m module args`, as the benchmarks start rnnreg.train); no flag before
    it but -u (`python -u -m submitit.core._submit`: _unbuffered); None for anything else."""
    args = [str(a) for a in argv]
    if args[:1] == [sys.executable]:
        args = [args[0], *args[1 + _unbuffered(args) :]]
        if len(args) > 2 and args[1] == "-m":
            return args[1:]
        if len(args) > 1 and args[1].endswith(".py"):
            return args[1:] if os.path.isfile(os.path.join(cwd or "", args[1])) else None
        # `python BIN/script args`: how Lightning starts a console script's other DDP processes
        return args[1:] if len(args) > 1 and _console_script(args[1]) else None
    return args if args and _console_script(args[0]) else None


def _console_script(path: str) -> bool:
    """Whether `path` is a Python console script of this venv (BIN/<name>, its first line naming python)."""
    if os.path.dirname(path) != os.path.dirname(sys.executable) or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        first = f.readline(200)
    return first.startswith(b"#!") and b"python" in first


def _unbuffered(args: list[str]) -> bool:
    """Whether `python -u ...`: unbuffered stdout and stderr (submitit's tasks), the one flag a fork gives."""
    return len(args) > 1 and args[1] == "-u"


def warm_possible(argv: list[str], env: dict[str, str] | None, **kwargs) -> bool:
    """Whether `argv` can start as a fork of the server: a Python script as this venv runs it (script_argv),
    nothing asked of the start that a fork cannot give."""
    if os.environ.get("TESTS_COLD_START") == "1" or set(kwargs) - set(WARM_ARGUMENTS) or kwargs.get("shell"):
        return False
    if sys.platform != "linux":  # a fork of a process that imported torch: as DataLoader's workers on Linux only
        return False
    if script_argv(argv, kwargs.get("cwd")) is None:
        return False
    server = _the_server()
    if any(hard != server.limits[name][1] for name, (_, hard) in _limits().items()):  # a child cannot raise one
        return False
    startup = _startup_env(dict(os.environ if env is None else env))
    if startup | {"PYTHONPATH": ""} != server.env | {"PYTHONPATH": ""}:
        return False
    # a PYTHONPATH with folders put before the server's (resume_check.py's, for its callback): those folders
    # first on the child's sys.path, where they hold nothing that starts differently cold
    added = _path_added(startup, server.env)
    return added is not None and not any(_shadows(folder, server.modules) for folder in added)


class WarmPopen:
    """A forked Python script with `subprocess.Popen`'s interface (the part tests use): pid, stdout/stderr
    pipes, poll, wait, communicate, send_signal, terminate, kill, returncode."""

    def __init__(self, args, *, stdin=None, stdout=None, stderr=None, text=False, encoding=None, env=None, cwd=None,
                 start_new_session=False, shell=False, warm_children=True, ignored_signals=()):  # fmt: skip
        self.args, self.returncode = list(map(str, args)), None
        self.text, self.encoding = text or encoding is not None, encoding  # (subprocess's: an encoding is text)
        self.stdin = self.stdout = self.stderr = None
        self._pipes: dict[str, int] = {}  # our ends of the PIPEs: name -> fd
        close_after: list[int] = []

        def child_end(spec, name: str, default: int) -> int:
            if spec is None:
                return default
            if spec == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
            elif spec == subprocess.PIPE:
                read, write = os.pipe()
                fd, ours = (read, write) if name == "stdin" else (write, read)
                self._pipes[name] = ours
            elif spec == subprocess.STDOUT:
                return -1
            else:
                return spec if isinstance(spec, int) else spec.fileno()
            close_after.append(fd)
            return fd

        fds = [child_end(stdin, "stdin", 0), child_end(stdout, "stdout", 1), child_end(stderr, "stderr", 2)]
        if fds[2] == -1:
            fds[2] = fds[1]
        self._status, status_write = os.pipe()
        env = dict(os.environ if env is None else env)
        argv = script_argv(self.args, cwd)
        server = _the_server()
        soft_limits = {name: soft for name, (soft, _) in _limits().items() if soft != server.limits[name][0]}
        request = {"argv": argv, "env": env, "cwd": str(cwd or os.getcwd()), "new_session": start_new_session,
                   "umask": _umask(), "soft_limits": soft_limits, "warm_children": warm_children,
                   "ignored_signals": list(ignored_signals), "unbuffered": _unbuffered(self.args)}  # fmt: skip
        try:
            self.pid = server.start(request, [*fds, status_write])
        finally:
            for fd in [*close_after, status_write]:
                os.close(fd)
        for name, fd in self._pipes.items():
            mode = "w" if name == "stdin" else "r"
            setattr(self, name, open(fd, mode, encoding=encoding) if self.text else open(fd, mode + "b"))

    def _reap(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._status], [], [], timeout)
            if ready:
                (status,) = STATUS.unpack(os.read(self._status, STATUS.size))
                os.close(self._status)
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(0)

    def wait(self, timeout: float | None = None) -> int:
        if self._reap(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, input=None, timeout: float | None = None):
        """Reads stdout and stderr to their ends (from the pipes' fds, as `subprocess` does), then waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        chunks: dict[str, list[bytes]] = {}
        with selectors.DefaultSelector() as sel:
            for name in ("stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None and not stream.closed:
                    sel.register(stream.fileno(), selectors.EVENT_READ, name)
                    chunks[name] = []
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        chunks[key.data].append(data)
                    else:
                        sel.unregister(key.fd)
        for name in chunks:
            getattr(self, name).close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        out = {name: b"".join(parts) for name, parts in chunks.items()}
        if self.text:
            out = {name: io.TextIOWrapper(io.BytesIO(data), self.encoding).read() for name, data in out.items()}
        return out.get("stdout"), out.get("stderr")

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.wait()


def popen(args, *, env: dict | None = None, warm_children: bool = True, **kwargs):
    """`subprocess.Popen(args, env=env, **kwargs)`, as a fork of the warm server where it can be one;
    `warm_children`: the Python scripts that fork starts (with subprocess) are forks of the server too, and theirs
    (_start_children_warm)."""
    warm = warm_possible(list(args), env, **kwargs)
    _note_start(list(args), warm, kwargs.get("cwd"))
    if warm:
        return WarmPopen(args, env=env, warm_children=warm_children, **kwargs)
    return subprocess.Popen(args, env=env, **kwargs)


def run(
    args, *, env: dict | None = None, timeout: float | None = None, warm_children: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    """`subprocess.run(args, capture_output=True, env=env, timeout=timeout, **kwargs)` through `popen`."""
    proc = popen(args, env=env, warm_children=warm_children, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


if __name__ == "__main__":
    _serve_main()
