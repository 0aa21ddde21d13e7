"""The tests' warm start (warm_start.py) is faithful: a console script forked from the warm server ends as the same
script started cold does (its files, exit status, stdout and stderr), so a test passes or fails alike either way."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import warm_start
from helpers import BIN, TINY, started_with
from rnnreg.run_record import STOPPED_BY

pytestmark = pytest.mark.skipif(os.environ.get("TESTS_COLD_START") == "1", reason="TESTS_COLD_START=1: nothing warm")
# each run's folder: names alike but for a digit, which lines() below reads as any number, wherever the config
# tree's printout wraps a long path
FOLDERS = {"cold": "0", "warm": "1"}
TIMINGS = ("train_seconds", "words_per_second", "words_per_second_median_step", "words_per_second_last_epoch")


def both(script: str, *args: str, **kwargs) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`script args` cold (`subprocess.run`) and warm, each given its own folder where `{folder}` stands."""
    procs = []
    for mode, start in (("cold", subprocess.run), ("warm", warm_start.run)):
        argv = [str(BIN / script), *(a.replace("{folder}", FOLDERS[mode]) for a in args)]
        extra = {"capture_output": True} if mode == "cold" else {}
        procs.append(start(argv, text=True, timeout=300, env=os.environ | {"HYDRA_FULL_ERROR": "0"}, **kwargs, **extra))
    assert warm_start.warm_possible([str(BIN / script)], None)  # the warm one was a fork, not a second cold one
    return procs[0], procs[1]


def test_a_warm_run_ends_as_a_cold_one(tiny_corpus, tmp_path):
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=2"]
    args += ["trainer.limit_train_batches=10"]  # two epochs, their validations and the tests: not the windows' count
    cold, warm = both("rnnreg-train", *args, f"hydra.run.dir={tmp_path}/{{folder}}")
    assert cold.returncode == warm.returncode == 0, cold.stderr[-2000:] + warm.stderr[-2000:]
    folders = [tmp_path / name for name in FOLDERS.values()]
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in folders]
    for m in metrics:
        for key in TIMINGS:
            m.pop(key)
    assert metrics[0] == metrics[1] and metrics[0]["status"] == "completed"
    files = [sorted(p.relative_to(folder) for p in folder.rglob("*")) for folder in folders]
    assert files[0] == files[1]

    def lines(text: str) -> list[str]:  # without what differs between two runs: times, speeds, the run folder's name
        # a duration as console.format_duration writes it: "41 s" on one run may be "1 min 02 s" on a slower one
        durations = r"\d+ h \d+ min|\d+ min \d+ s|\d+ s\b"
        return [re.sub(r"[\d.]+", "#", re.sub(durations, "<duration>", line)) for line in text.splitlines()]

    assert lines(cold.stdout) == lines(warm.stdout) and lines(cold.stderr) == lines(warm.stderr)


def test_a_warm_refusal_and_a_warm_traceback_end_as_cold_ones(tiny_corpus, tmp_path):
    cold, warm = both("rnnreg-train", "experiment=smoke", "data.bptt=0", f"hydra.run.dir={tmp_path}/{{folder}}")
    assert cold.returncode == warm.returncode == 2 and cold.stderr == warm.stderr and cold.stdout == warm.stdout
    # an exception nothing catches (a bug): its traceback and exit 1, as the interpreter ends on it
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1"]
    args += ["+callbacks.bug._target_=helpers.RaiseAtFirstWindow", f"hydra.run.dir={tmp_path}/bug_{{folder}}"]
    cold, warm = both("rnnreg-train", *args)
    assert cold.returncode == warm.returncode == 1
    assert "Traceback" in warm.stderr and cold.stderr.splitlines()[-1] == warm.stderr.splitlines()[-1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_warm_process_takes_signals_as_a_cold_one(tiny_corpus, tmp_path, signum):
    """Signalled in training, as its second epoch starts (held there until the signal is sent): the same exit
    status and metrics.json."""
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=50"]
    args += ["trainer.limit_train_batches=10", "+callbacks.pause._target_=helpers.PauseAtEpoch"]
    statuses = []
    for mode, start in (("cold", subprocess.Popen), ("warm", warm_start.popen)):
        folder, paused, go = tmp_path / mode, tmp_path / f"{mode}_paused", tmp_path / f"{mode}_go"
        pause = [f"+callbacks.pause.paused={paused}", f"+callbacks.pause.go={go}"]
        proc = start([str(BIN / "rnnreg-train"), *args, *pause, f"hydra.run.dir={folder}"], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while not paused.exists():  # its first epoch ended: held at the start of the second
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        proc.send_signal(signum)
        go.touch()
        proc.communicate(timeout=120)
        metrics = json.loads((folder / "metrics.json").read_text())
        resume = metrics["resume"].replace(str(folder), "")
        statuses.append((proc.returncode, metrics["status"], metrics["error"], resume))
    assert statuses[0] == statuses[1] and statuses[0][:3] == (128 + signum, "interrupted", STOPPED_BY[signum])


def test_what_a_fork_cannot_give_starts_cold():
    script = str(BIN / "rnnreg-train")
    assert warm_start.warm_possible([script], None)
    assert not warm_start.warm_possible([script], os.environ | {"OMP_NUM_THREADS": "7"})  # read once, at start-up
    assert not warm_start.warm_possible([script], None, preexec_fn=lambda: None)
    assert not warm_start.warm_possible(["/bin/true"], None)
    proc = warm_start.popen(["/bin/sh", "-c", "exit 3"])
    assert isinstance(proc, subprocess.Popen) and proc.wait() == 3
    # a flag for the interpreter before the script, or code instead of a file: cold
    assert not warm_start.warm_possible([sys.executable, "-c", "pass"], None)
    assert not warm_start.warm_possible([sys.executable, "-X", "importtime", __file__], None)
    assert not warm_start.warm_possible([sys.executable, "-u", "-X", "importtime", __file__], None)
    assert not warm_start.warm_possible([sys.executable, "-m", "rnnreg.train"], None, shell=True)
    # what a fork gives: -u (submitit's tasks), a console script given to the interpreter (Lightning's DDP processes)
    assert warm_start.script_argv([sys.executable, "-u", "-m", "rnnreg.train", "a"]) == ["-m", "rnnreg.train", "a"]
    assert warm_start.script_argv([sys.executable, script, "a"]) == [script, "a"]
    assert warm_start.warm_possible([sys.executable, script], None, shell=False, encoding="utf-8")


def test_a_warm_process_takes_the_callers_umask_and_soft_limits_as_a_cold_one(tmp_path, monkeypatch):
    """A process started takes its starter's umask and resource limits: a fork of the server gets the caller's at
    the time it is asked for (a test's `umask` or `ulimit -S -f` before it starts a script, see
    helpers.started_with), not the server's. A hard limit a fork could not raise back starts cold."""
    import resource

    script = tmp_path / "show.py"
    script.write_text(
        "import os, resource\nmask = os.umask(0)\nos.umask(mask)\nopen('made', 'w').close()\n"
        "print(oct(mask), resource.getrlimit(resource.RLIMIT_FSIZE), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    argv, outputs = [sys.executable, str(script)], {}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for umask, file_size in ((0o027, 1 << 20), (0o002, None)):
        with started_with(umask=umask, file_size=file_size):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
            try:
                assert warm_start.warm_possible(argv, None)
                for mode, start in (("cold", subprocess.run), ("warm", warm_start.run)):
                    (tmp_path / mode).mkdir(exist_ok=True)
                    extra = {"capture_output": True} if mode == "cold" else {}
                    proc = start(argv, text=True, timeout=60, cwd=tmp_path / mode, **extra)
                    assert proc.returncode == 0, proc.stderr
                    made = (tmp_path / mode / "made").stat().st_mode & 0o777
                    outputs[mode, umask] = (proc.stdout, oct(made))
                    (tmp_path / mode / "made").unlink()
                expected_size = resource.getrlimit(resource.RLIMIT_FSIZE)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert outputs["cold", umask] == outputs["warm", umask]
        assert outputs["warm", umask] == (f"{oct(umask)} {expected_size} {(soft - 1, hard)}\n", oct(0o666 & ~umask))
    assert expected_size == resource.getrlimit(resource.RLIMIT_FSIZE)  # the last one had no file-size limit
    # a caller whose hard limit is below the server's (lowering one here could not be undone: the server's is
    # raised instead, as the server would have it had it started before the caller lowered its own)
    monkeypatch.setitem(warm_start._the_server().limits, "RLIMIT_NOFILE", (soft, hard + 1))
    assert not warm_start.warm_possible(argv, None)


def test_a_warm_python_file_runs_as_a_cold_one(tmp_path):
    """`python path.py args` (how the tests start benchmarks/*.py): the same sys.argv, sys.path[0] (a module beside
    it imports), __file__, __name__, __main__'s attributes (its loader: a SourceFileLoader), working folder,
    stdout, stderr and exit status, warm or cold."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "beside.py").write_text("WHERE = __file__\n")
    (folder / "show.py").write_text(
        "import os, sys\nimport beside\n"
        "print(sys.argv, sys.path[0], __file__, __name__, beside.WHERE, os.getcwd())\n"
        "import __main__\n"  # the module's own attributes, as `python path.py` makes them (its loader too)
        "print({k: type(v).__name__ for k, v in vars(__main__).items() if k.startswith('__')})\n"
        "print(__loader__.name, __loader__.path, __spec__, __package__, __cached__)\n"
        "sys.exit('stopped: ' + sys.argv[-1])\n"
    )
    argv = [sys.executable, os.path.join("scripts", "show.py"), "a", "b c"]
    assert warm_start.warm_possible(argv, None, cwd=tmp_path)
    cold = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    warm = warm_start.run(argv, cwd=tmp_path, text=True, timeout=60)
    assert (cold.returncode, cold.stdout, cold.stderr) == (warm.returncode, warm.stdout, warm.stderr)
    assert cold.returncode == 1 and cold.stderr == "stopped: b c\n"
    assert cold.stdout.startswith(f"['scripts/show.py', 'a', 'b c'] {folder} {folder / 'show.py'} __main__ ")


def test_a_warm_scripts_children_start_warm_and_run_as_cold_ones(tmp_path):
    """warm_children (how the tests start benchmarks/*.py): the Python scripts a warm script starts with subprocess,
    `python -m module args` (the benchmarks' rnnreg.train) and `python path.py args`, are forks of the server too,
    with the same sys.argv, sys.path[0], __main__'s attributes, working folder, output and exit status as cold
    ones; `python -m` of a module that is not there says so as Python does; `python -c` still starts cold."""
    folder = tmp_path / "scripts"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("")
    show = (
        "import os, sys\nwarm = 'torch' in sys.modules\nimport __main__\n"  # a fork of the server has torch
        "print(sys.argv, sys.path[0], __file__, __name__, __package__, __spec__ and __spec__.name, os.getcwd())\n"
        "print({k: type(v).__name__ for k, v in vars(__main__).items() if k.startswith('__')})\n"
        "print(type(__loader__).__name__, __loader__.name, __cached__)\n"
        "print('started warm' if warm else 'started cold', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    (folder / "pkg" / "show.py").write_text(show)
    (folder / "show.py").write_text(show)
    (folder / "parent.py").write_text(
        "import subprocess, sys\n"
        "for argv in (['-m', 'pkg.show', 'a', 'b c'], ['show.py', 'd'], ['-m', 'pkg.absent'], ['-c', 'import sys; "
        'print("torch" in sys.modules)\']):\n'
        "    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=sys.argv[1])\n"
        "    print(proc.returncode, proc.stdout, proc.stderr, sep='|')\n"
    )
    argv = [sys.executable, str(folder / "parent.py"), str(folder)]
    cold = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    warm = warm_start.run(argv, text=True, timeout=120, warm_children=True)
    assert cold.returncode == warm.returncode == 0 and cold.stderr == warm.stderr == "", cold.stderr + warm.stderr
    assert warm.stdout.count("|started warm\n") == 2 and "started warm" not in cold.stdout
    assert warm.stdout.replace("|started warm\n", "|started cold\n") == cold.stdout
    module = folder / "pkg" / "show.py"
    assert f"3|['{module}', 'a', 'b c'] {folder} {module} __main__ pkg pkg.show {folder}\n" in cold.stdout
    assert f"3|['show.py', 'd'] {folder} {folder / 'show.py'} __main__ None None {folder}\n" in cold.stdout
    assert f"1||{sys.executable}: No module named pkg.absent\n" in cold.stdout and cold.stdout.endswith("0|False\n|\n")


def test_a_warm_scripts_grandchildren_start_warm_with_what_exec_gives_them(tmp_path):
    """The Python scripts a warm script's children start are forks of the server too (Lightning's DDP processes
    started by a warm rnnreg-train, the tasks of submitit_local's controller), each as a cold one would start: with
    the signals its parent ignores ignored (rnnreg starts submitit's controllers with Ctrl-C ignored: its tasks take
    it back), `python -u`'s unbuffered stdout and stderr, text in the encoding asked for. A script in a process
    group other than the server's (a session of its own) starts its children cold, in its group, where a signal to
    the group reaches them."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "show.py").write_text(
        "import os, signal, sys\nwarm = 'torch' in sys.modules\n"  # a fork of the server has torch
        "print(sys.argv[2:], signal.getsignal(signal.SIGINT) is signal.SIG_IGN, type(sys.stdout.buffer).__name__,"
        " sys.stdout.write_through, type(sys.stderr.buffer).__name__, os.getpgrp() == int(sys.argv[1]), flush=True)\n"
        "print('started warm' if warm else 'started cold', file=sys.stderr)\n"
        "if sys.argv[2:] == ['again']:\n"
        "    import subprocess\n"
        "    proc = subprocess.run([sys.executable, '-m', 'pkg.show', sys.argv[1]], capture_output=True, text=True)\n"
        "    print('grandchild', proc.returncode, proc.stdout, proc.stderr, sep='|', end='')\n"
    )
    (tmp_path / "parent.py").write_text(
        "import os, signal, subprocess, sys\n"
        "def show(*flags, again=True, **kwargs):\n"
        "    argv = [sys.executable, *flags, '-m', 'pkg.show', str(os.getpgrp()), *(['again'] if again else [])]\n"
        "    proc = subprocess.run(argv, capture_output=True, encoding='utf-8', **kwargs)\n"
        "    print(proc.returncode, proc.stdout, proc.stderr, sep='|', end='')\n"
        "show()\n"
        "show('-u', again=False)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "show()\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "os.setsid()\n"
        "show()\n"
    )
    argv = [sys.executable, str(tmp_path / "parent.py")]
    cold = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    warm = warm_start.run(argv, text=True, cwd=tmp_path, timeout=120)
    assert cold.returncode == warm.returncode == 0 and cold.stderr == warm.stderr == "", cold.stderr + warm.stderr
    assert "started warm" not in cold.stdout and warm.stdout.count("started warm") == 5  # all but the last two
    assert warm.stdout.replace("started warm", "started cold") == cold.stdout
    lines = cold.stdout.splitlines()
    # as Python starts: stdout and stderr buffered (pipes) but where PYTHONUNBUFFERED is set (in the server's
    # environment too), -u unbuffered; SIGINT ignored where its parent ignores it
    buffered = "FileIO True FileIO" if os.environ.get("PYTHONUNBUFFERED") else "BufferedWriter False BufferedWriter"
    assert lines[0] == f"0|['again'] False {buffered} True" and lines[1] == f"grandchild|0|[] False {buffered} True"
    assert lines[4] == "0|[] False FileIO True FileIO True"
    assert lines[6] == f"0|['again'] True {buffered} True" and lines[7] == f"grandchild|0|[] True {buffered} True"
    assert warm.stdout.splitlines()[-4:] == lines[-4:]  # in a session of its own: cold, in its group


def test_the_server_goes_on_after_a_script_that_ended_before_its_warm_child(tmp_path):
    """A warm script that ends before the warm child it started (a DDP rank 0 killed before its other ranks): the
    server, telling the gone script of its child's end, goes on serving (before: it ended on a broken pipe, and
    every later test of the worker failed to start its processes)."""
    (tmp_path / "child.py").write_text("import time\ntime.sleep(0.5)\n")
    (tmp_path / "parent.py").write_text(
        "import subprocess, sys\nsubprocess.Popen([sys.executable, 'child.py'])\nprint(subprocess.Popen.__name__)"
    )
    parent = warm_start.run([sys.executable, str(tmp_path / "parent.py")], text=True, cwd=tmp_path, timeout=60)
    assert (parent.returncode, parent.stdout, parent.stderr) == (0, "WarmOrColdPopen\n", "")
    time.sleep(1.5)  # the child has ended, and the server has written its status to the pipe no one reads
    after = warm_start.run([sys.executable, str(tmp_path / "child.py")], timeout=60)
    assert after.returncode == 0 and isinstance(after.args, list)


def test_a_pythonpath_with_folders_before_the_servers_runs_warm_as_a_cold_one(tmp_path):
    """A PYTHONPATH that puts folders before the tests' own (resume_check.py's, so that rnnreg-train finds its
    callback) starts warm, those folders on sys.path where a cold process has them (the whole sys.path the same, a
    module in them imported); a folder holding a sitecustomize (Python runs it at start-up) or a package the server
    imported (torch.py: a cold process would import it instead), folders put after the server's, or a relative
    folder, start cold."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "beside_extra.py").write_text("WHERE = __file__\n")
    script = tmp_path / "show.py"
    script.write_text(
        "import sys\nwarm = 'torch' in sys.modules\nimport beside_extra\n"  # a fork of the server has torch
        "print(sys.path, beside_extra.WHERE)\nprint(warm, file=sys.stderr)\n"
    )
    tests_path = os.environ["PYTHONPATH"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(extra), tests_path])}
    argv = [sys.executable, str(script)]
    assert warm_start.warm_possible(argv, env)
    cold = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    warm = warm_start.run(argv, text=True, env=env, timeout=60)
    assert (cold.returncode, cold.stdout, cold.stderr) == (0, warm.stdout, "False\n") and warm.stderr == "True\n"
    # (site.py drops a folder given twice: pytest-xdist's workers import conftest.py, which adds tests/, once more)
    first = list(dict.fromkeys([str(tmp_path), str(extra), *tests_path.split(os.pathsep)]))
    assert cold.stdout.startswith(repr(first)[:-1])
    for name in ("sitecustomize.py", "torch.py"):
        (extra / name).write_text("")
        assert not warm_start.warm_possible(argv, env)
        (extra / name).unlink()
    for path in ([tests_path, str(extra)], ["extra", tests_path]):
        assert not warm_start.warm_possible(argv, os.environ | {"PYTHONPATH": os.pathsep.join(path)})
