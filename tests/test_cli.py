"""The console scripts as a user runs them: real processes, real PTB, real Hydra run folders."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import TINY, run
from rnnreg import CONF_DIR
from rnnreg.errors import ConfigError

# The smoke run as a user starts it, tested on the first 1,000 words of the test set (one stream: 50 windows of
# 20; batched: 50 windows of 20 x 20 streams), not all 82,430: the test sets cost more than its training here;
# and 100 training windows an epoch, not 150 (still well below a perplexity of 1,000: about 870 on the test).
TEST_WINDOWS = 50
TRAIN_WINDOWS = 100


@pytest.fixture(scope="module")
def smoke_run(ptb_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    run(
        "rnnreg-train",
        "experiment=smoke",
        f"hydra.run.dir={out}",
        "callbacks.progress_bar.refresh_rate=0",
        f"trainer.limit_test_batches={TEST_WINDOWS}",
        f"trainer.limit_train_batches={TRAIN_WINDOWS}",
    )
    return out


@pytest.mark.slow
def test_smoke_experiment_end_to_end(smoke_run: Path):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["experiment"] == "smoke" and metrics["epochs"] == 2 and metrics["params"] == 4_653_200
    # its splits cut short, as its record says (rnnreg-eval's does too): not the whole splits' perplexities
    assert (metrics["limit_val_batches"], metrics["limit_test_batches"]) == (40, TEST_WINDOWS)
    for key in ("val_ppl", "test_ppl", "test_ppl_batched"):
        assert math.isfinite(metrics[key]) and 1 < metrics[key] < 1000, key  # learned well below 10,000
    assert metrics["words_per_second"] > 0 and metrics["train_seconds"] > 0
    assert (smoke_run / "checkpoints" / "last.ckpt").is_file()
    assert (smoke_run / ".hydra" / "config.yaml").is_file()
    assert "val/ppl" in (smoke_run / "csv" / "metrics.csv").read_text()


@pytest.mark.slow
def test_eval_reproduces_the_checkpoint_metrics(smoke_run: Path, tmp_path: Path):
    run(
        "rnnreg-eval",
        f"ckpt_path={smoke_run}/checkpoints/last.ckpt",
        f"hydra.run.dir={tmp_path}",
        "data.eval_bptt=200",
        f"trainer.limit_test_batches={TEST_WINDOWS // 10}",  # the same words in windows of 200
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
    )  # trained with 20-step windows
    trained = json.loads((smoke_run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["test_ppl"] == pytest.approx(trained["test_ppl"], rel=1e-6)
    assert evaluated["test_ppl_batched"] == pytest.approx(trained["test_ppl_batched"], rel=1e-6)


@pytest.mark.slow
def test_generate_is_seeded(smoke_run: Path):
    ckpt = f"{smoke_run}/checkpoints/last.ckpt"
    a = run("rnnreg-generate", f"ckpt_path={ckpt}", "prompt=the market", "num_words=30", "seed=3").stdout
    c = run("rnnreg-generate", f"ckpt_path={ckpt}", "prompt=the market", "num_words=30", "seed=4").stdout
    # the same seed again, through the Python API in a process that never imports Lightning (5 s of imports)
    code = (
        "import sys; from rnnreg.generate import generate, pieces; "
        f"print(''.join(pieces(generate({ckpt!r}, 'the market', 30, seed=3)))); assert 'lightning' not in sys.modules"
    )
    b = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert a == b and a != c and a.startswith("the market")
    assert len(a.replace("\n", " <eos> ").split()) >= 32  # prompt + 30 words (<eos> prints as a line break)


def test_bad_input_is_one_line_error(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = run("rnnreg-train", "experiment=smoke", "data.bptt=0", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data.bptt=0 must be an integer >= 1 (unroll length; the paper's: 20 (small), 35 (medium, large))"
    ]
    assert not run_dir.exists()  # stopped before Hydra created the run folder
    proc = run("rnnreg-eval", f"ckpt_path={tmp_path}/missing.ckpt", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2 and "is not a file" in proc.stderr and not run_dir.exists()


def test_a_split_too_short_is_its_one_line_and_nothing_else(tiny_corpus, tmp_path):
    """The data's own refusal (checked in the run: the corpus is read there) comes before the loggers and the
    Trainer are made: its line on stderr and nothing on stdout (before: Lightning's GPU and TPU lines first)."""
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "logger=csv", "data.bptt=100000"]
    proc = run("rnnreg-train", *args, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: the train split ") and "is shorter than one training window" in line
    assert not (tmp_path / "run" / "csv").exists()


def test_ckpt_path_last_with_nothing_to_resume_names_where_it_looked_and_how_to_name_the_run(tiny_corpus, tmp_path):
    """ckpt_path=last that finds no earlier run: the line names the folder it looked in for this experiment's runs
    and how to name the run to go on from; the run's own folder only where it was given again (before: always, as
    "nor in <the folder Hydra had just made>", of no use to anyone)."""
    outputs = tmp_path / "outputs"
    args = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "ckpt_path=last"]
    proc = run("rnnreg-train", *args, f"paths.output_root={outputs}", check=False)
    (made,) = (outputs / "train" / "paper_small").iterdir()
    looked = f"under {outputs / 'train' / 'paper_small'}: give ckpt_path=<a checkpoint file>, or the earlier run's"
    assert proc.returncode == 2 and looked in proc.stderr and str(made) not in proc.stderr, proc.stderr[-3000:]
    assert "hydra.run.dir=<folder>" in proc.stderr.splitlines()[-1]
    again = run("rnnreg-train", *args, f"paths.output_root={tmp_path / 'none'}", f"hydra.run.dir={made}", check=False)
    line = again.stderr.strip().splitlines()[-1]
    assert again.returncode == 2 and f"(no such folder: check paths.output_root and experiment) nor in {made}," in line


def test_a_refused_run_leaves_no_empty_folder_it_made(tiny_cfg, tmp_path):
    """A run refused once its logger had made csv/ (a checkpoint of another vocabulary, found as the fit restores it)
    leaves its record, its log and error.txt, no empty csv/ (before: left, as if it had logged nothing); in a folder
    given again, an empty folder that was there before stays."""
    from helpers import write_corpus
    from rnnreg.train import train

    short = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false")
    train(tiny_cfg(*short, run="first"))
    other = write_corpus(tmp_path / "other", vocab=30)
    args = ["experiment=paper_small", *TINY, "logger=csv", f"data.data_dir={other}", "trainer.max_epochs=2"]
    first, refused = tmp_path / "first", tmp_path / "refused"
    given = [f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={refused}"]
    proc = run("rnnreg-train", *args, *given, check=False)
    assert proc.returncode == 2 and "trained on another vocabulary" in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in refused.iterdir()) == [".hydra", "error.txt", "train.log"]
    (first / "notes").mkdir()
    again = run("rnnreg-train", *args, "ckpt_path=last", f"hydra.run.dir={first}", check=False)
    assert again.returncode == 2 and "trained on another vocabulary" in again.stderr, again.stderr[-3000:]
    assert (first / "notes").is_dir() and not (first / "csv").exists()


def test_a_multirun_job_refused_in_its_run_leaves_no_empty_folder_it_made(tiny_cfg, tiny_corpus, tmp_path):
    """A sweep's job refused once its logger had made csv/ (a checkpoint of another vocabulary: a check the job
    runs, not the command line's) leaves its record, its log and error.txt, no empty csv/, as a single run refused
    so does (before: <sweep>/1/csv/ left empty); the sweep's other job trains."""
    from helpers import write_corpus
    from rnnreg.train import train

    short = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false")
    train(tiny_cfg(*short, run="first"))
    other = write_corpus(tmp_path / "other", vocab=30)
    ckpt, sweep = tmp_path / "first" / "checkpoints" / "last.ckpt", tmp_path / "sweep"
    args = ["experiment=paper_small", *TINY, "logger=csv", *short[1:], "trainer.max_epochs=2", f"ckpt_path={ckpt}"]
    corpora = f"data.data_dir={tiny_corpus},{other}"
    proc = run("rnnreg-train", "-m", *args, corpora, f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 1 and "error: job 1 (data.data_dir=" in proc.stderr, proc.stderr[-3000:]
    assert "trained on another vocabulary" in (sweep / "1" / "error.txt").read_text()
    assert sorted(p.name for p in (sweep / "1").iterdir()) == [".hydra", "error.txt", "train.log"]
    assert (sweep / "0" / "csv" / "metrics.csv").is_file()


@pytest.mark.parametrize(
    "args,says",
    [
        (["--p", "abc"], "argument --p: 'abc' is not a drop probability in (0, 1)"),
        (["--p", "0"], "argument --p: '0' is not a drop probability in (0, 1)"),  # every placement alike
        (["--windows", "0"], "argument --windows: '0' is not an integer >= 1"),
        (["--hidden", "0"], "argument --hidden: '0' is not an integer >= 1"),
    ],
)
def test_compare_placements_refuses_bad_arguments_before_anything(tmp_path, capsys, args, says):
    """Refused up front, not after a first run has left a partial --out that blocks the rerun."""
    path = Path(__file__).parents[1] / "examples" / "compare_placements.py"
    spec = importlib.util.spec_from_file_location("compare_placements", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as exit_:
        example.main([*args, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# A user's own experiment files, in a folder of their own: the paper's small recipe with another placement, tiny
YOUR_EXPERIMENT = """# @package _global_
defaults:
  - paper_small
  - override /dropout: recurrent
experiment_name: mine
dropout: {p: 0.2}
trainer: {max_epochs: 1, limit_train_batches: 3, limit_val_batches: 2, limit_test_batches: 2}
"""


# ... and a primary config of the user's own (--config-name), ours with that experiment
YOUR_PRIMARY = "defaults:\n  - train\n  - override experiment: mine\n  - _self_\nseed: 5\n"


def your_folder(root: Path, **experiments: str) -> Path:
    """A folder of config groups outside conf/: experiment/<name>.yaml for each of `experiments`."""
    (root / "experiment").mkdir(parents=True)
    for name, text in experiments.items():
        (root / "experiment" / f"{name}.yaml").write_text(text)
    return root


@pytest.mark.parametrize("adds_folder", ["--config-dir", "hydra.searchpath", "--config-path"])
def test_an_experiment_of_your_own_runs_from_your_folder(tiny_corpus, tmp_path, adds_folder):
    """`--config-dir DIR` or `hydra.searchpath=[file://DIR]`: an experiment file in the user's folder composes
    over ours (its defaults, its group override, its values) and trains as a run of ours; and from a copy of conf/
    given as the whole config (`--config-path`: its run checks its config)."""
    if adds_folder == "--config-path":
        shutil.copytree(CONF_DIR, tmp_path / "my_configs")
        (tmp_path / "my_configs" / "experiment" / "mine.yaml").write_text(YOUR_EXPERIMENT)
        adds = ["--config-path", str(tmp_path / "my_configs")]
    else:
        folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT)
        adds = (
            ["--config-dir", str(folder)] if adds_folder == "--config-dir" else [f"hydra.searchpath=[file://{folder}]"]
        )
    run_dir = tmp_path / "run"
    small = [a for a in TINY if a != "model=small"]
    run("rnnreg-train", *adds, "experiment=mine", *small, f"data.data_dir={tiny_corpus}", f"hydra.run.dir={run_dir}")
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert config.experiment_name == "mine"
    assert config.dropout.recurrent == 0.2 and config.dropout.input == 0.0  # its placement and rate
    assert config.optim.decay_start == 4 and config.trainer.limit_train_batches == 3  # paper_small's, its own
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["experiment"] == "mine" and metrics["epochs"] == 1


def test_a_bad_value_in_your_own_config_is_one_line_before_anything_is_made(tiny_corpus, tmp_path):
    """A user's experiment files are checked against the schema before Hydra runs, as ours are: a sweep over two of
    them, one with a bad rate, is one line naming the key and the job, exit 2, and no folder is made; and so is a
    primary config of the user's (--config-name, found in the --config-dir)."""
    bad = YOUR_EXPERIMENT.replace("dropout: {p: 0.2}", "dropout: {p: 1.5}")
    folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT, mine_bad=bad)
    out = tmp_path / "outputs"
    for adds in (["--config-dir", str(folder)], [f"hydra.searchpath=[file://{folder}]"]):
        proc = run(
            "rnnreg-train",
            "-m",
            *adds,
            "experiment=mine,mine_bad",
            *TINY,
            f"data.data_dir={tiny_corpus}",
            f"paths.output_root={out}",
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            "error: dropout.p=1.5 must be a number in [0, 1) (a drop probability such as 0.5) "
            "(sweep job experiment=mine_bad)"
        ]
        assert not out.exists()  # neither job ran: nothing of the sweep was made
    (folder / "my_train.yaml").write_text(YOUR_PRIMARY.replace("seed: 5", "seed: five"))  # a primary config's
    run_dir = tmp_path / "run"
    proc = run("rnnreg-train", "-cd", str(folder), "-cn", "my_train", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2 and not run_dir.exists()  # checked before Hydra made the run's folder
    assert proc.stderr.splitlines() == ["error: seed=five must be an integer in [0, 4294967295]"]


def test_your_own_config_that_is_not_yaml_is_one_line_before_anything_is_made(tiny_corpus, tmp_path):
    """An experiment file of the user's that the YAML parser refuses (a bracket left open), in a sweep beside a good
    one: one line naming the file, where and what the parser met, exit 2, and nothing of the sweep made (before:
    yaml's ParserError as a traceback, exit 1)."""
    folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT, broken="model:\n  hidden_size: [\n")
    out = tmp_path / "outputs"
    args = ["--config-dir", str(folder), "experiment=mine,broken", *TINY, f"data.data_dir={tiny_corpus}"]
    proc = run("rnnreg-train", "-m", *args, f"paths.output_root={out}", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: {folder}/experiment/broken.yaml is not valid YAML (line 3, column 1: while parsing a flow node, "
        "expected the node content, but found '<stream end>'): correct it there"
    ]
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:provider=hydra.searchpath in command-line")  # Hydra's, of the missing
def test_an_option_from_no_folder_names_every_folder_looked_in(tmp_path, monkeypatch):
    """An option none of conf/, a --config-dir and hydra.searchpath's entries (a folder, a package) holds is one line
    listing every folder's options, and the entries not found; a --config-dir that is no folder is one line."""
    from rnnreg.command_line import check_group_options, validate_args

    folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT)
    package = your_folder(tmp_path / "site" / "lab_configs", lab=YOUR_EXPERIMENT)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    ours = ", ".join(sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")))
    searchpath = f"hydra.searchpath=[pkg://lab_configs,file://{tmp_path}/nowhere,pkg://no_such_package]"
    with pytest.raises(ConfigError) as refused:
        check_group_options(["--config-dir", str(folder), searchpath, "experiment=yours"])
    options = ", ".join(sorted([*ours.split(", "), "mine", "lab"]))
    assert str(refused.value) == (
        f"experiment=yours is not an option: choose one of {options} (files in {CONF_DIR}/experiment, "
        f"{folder}/experiment, {package}/experiment; not found: file://{tmp_path}/nowhere, pkg://no_such_package)"
    )
    for option in ("mine", "lab"):  # each folder's experiment composes and validates, the package's too
        assert validate_args("train", ["--config-dir", str(folder), searchpath, f"experiment={option}"]) == 1
    with pytest.raises(ConfigError, match=r"^--config-dir .*/none: no such folder: give the folder that holds"):
        check_group_options(["--config-dir", str(tmp_path / "none"), "experiment=mine"])


def test_searchpath_entries_hydra_reads_as_folders_without_file_or_with_slashes(tmp_path, monkeypatch):
    """hydra.searchpath entries as Hydra reads them beside file://DIR and pkg://a.b: a folder without a scheme
    (Hydra's file://) and a package named with slashes (pkg://a/b, Hydra's a.b). Their options are options, checked
    and composed, not "not an option ... not found" (a run Hydra would start, stopped by the check)."""
    from rnnreg.command_line import check_group_options, validate_args

    folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT)
    # (a package name of its own: the test before imports a lab_configs of its tmp_path, which stays imported)
    package = your_folder(tmp_path / "site" / "nested_lab_configs" / "inner", lab=YOUR_EXPERIMENT)
    for init in (package.parent / "__init__.py", package / "__init__.py"):
        init.write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    searchpath = f"hydra.searchpath=[{folder},pkg://nested_lab_configs/inner]"
    for option in ("mine", "lab"):
        check_group_options([searchpath, f"experiment={option}"])
        assert validate_args("train", [searchpath, f"experiment={option}"]) == 1, option


def test_a_sweep_of_your_own_config_goes_on_with_the_commands_it_gives(tiny_corpus, tmp_path):
    """The commands that go on with a sweep of a user's configs (from the report: an interrupted job's, a job that
    never started; the stacked sweep's own line) give its --config-dir, --config-name and hydra.searchpath too (Hydra
    records them in hydra.yaml and multirun.yaml, not among the task's overrides): each, run as given, goes on to
    the end (a basic sweep's job: in its folder there)."""
    folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT)
    (folder / "my_train.yaml").write_text(YOUR_PRIMARY)
    (tmp_path / "lab" / "extra").mkdir(parents=True)  # a group of its own, in a folder hydra.searchpath adds
    (tmp_path / "lab" / "extra" / "one.yaml").write_text("# @package _global_\ntags: [one]\n")
    for name, window in (("at2", 2), ("never", 1000)):  # (a group of the user's: the report shows no command whose
        # recorded override names a _target_ itself, as a shared folder's could)
        (tmp_path / "lab" / "stop").mkdir(exist_ok=True)
        (tmp_path / "lab" / "stop" / f"{name}.yaml").write_text(
            f"# @package _global_\ncallbacks:\n  signal_at:\n    _target_: helpers.SignalAt\n"
            f"    signum: {int(signal.SIGTERM)}\n    window: {window}\n"
        )
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'lab'}]"
    tiny = [*TINY, f"data.data_dir={tiny_corpus}", "trainer.limit_train_batches=4", f"paths.output_root={tmp_path}"]
    sweep = tmp_path / "basic"
    # job 0 stopped in its 2nd window, and with it the sweep; not job 1
    stopped = run(
        "rnnreg-train", "-m", "--config-dir", str(folder), "--config-name=my_train", searchpath, "+extra=one", *tiny,
        "+stop=at2,never", f"hydra.sweep.dir={sweep}", check=False,
    )  # fmt: skip
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    table = run("rnnreg-report", f"path={sweep}").stdout
    commands = re.findall(r"^- \d \((?:interrupted|never started: no folder)\): `(rnnreg-train [^`]*)`$", table, re.M)
    flags = f"rnnreg-train --config-dir {folder} --config-name my_train {shlex.quote(searchpath)} +extra=one "
    assert len(commands) == 2 and all(c.startswith(flags) for c in commands), table
    stacked = tmp_path / "stacked"
    # (--multi: argparse's abbreviation of --multirun, which Hydra's parser takes and ours reads as it does)
    args = ["--multi", "--config-dir", str(folder), "hydra/launcher=stacked", "experiment=mine", "seed=1,2", *tiny]
    stopped = run(
        "rnnreg-train", *args, "hydra.launcher.stop_after_windows=2", f"hydra.sweep.dir={stacked}", check=False
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    (go_on,) = re.findall(r"the stacked group 0 stopped; go on with: (.*)$", stopped.stdout, re.M)
    assert go_on.startswith(f"rnnreg-train -m --config-dir {folder} "), go_on
    for command in [*commands, go_on]:
        run(*shlex.split(command))  # exit 0
    ran = [sweep / "0", sweep / "1"]  # job 0 going on, job 1: each in its own folder of the sweep, no other made
    assert not list(tmp_path.glob("train/mine/*"))
    for finished in [*ran, stacked / "0", stacked / "1"]:
        assert json.loads((finished / "metrics.json").read_text())["status"] == "completed"
    assert {OmegaConf.load(f / ".hydra" / "config.yaml").seed for f in ran} == {5}  # my_train's
    assert [list(OmegaConf.load(f / ".hydra" / "config.yaml").tags) for f in ran] == [["one"], ["one"]]  # lab's


def test_an_experiment_that_keeps_anothers_name_is_warned_once(tmp_path, capsys):
    """A user's experiment that builds on ours and sets no experiment_name keeps ours: its runs would go to our
    experiment's folders (where ckpt_path=last of ours finds them). The check says so once per command, on stderr,
    and runs it all the same; an experiment with its own name, or another name given, is not warned."""
    from rnnreg.command_line import check_command_line

    borrowed = YOUR_EXPERIMENT.replace("experiment_name: mine\n", "")
    folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT, borrowed=borrowed)
    checked = check_command_line("train", ["-m", "-cd", str(folder), "experiment=borrowed,mine", "seed=1,2"])
    assert checked.jobs == 4
    assert capsys.readouterr().err.splitlines() == [
        "warning: experiment=borrowed keeps experiment_name=paper_small from the experiment it builds on: its runs go "
        "to paper_small's folders, where ckpt_path=last of experiment=paper_small finds them; set experiment_name: "
        "borrowed in its file"
    ]
    for args in (["experiment=mine"], ["experiment=borrowed", "experiment_name=borrowed"], ["experiment=smoke"]):
        assert check_command_line("train", ["-cd", str(folder), *args]).jobs == 1
        assert capsys.readouterr().err == ""


def test_your_config_named_as_one_of_ours_is_refused_where_the_command_selects_it(tmp_path):
    """Hydra's search path has conf/ first (before a --config-dir and hydra.searchpath's folders): a file of the user's
    with the path of one of ours (experiment/paper_small.yaml, dropout/non_recurrent.yaml, train.yaml) is never read.
    Where the command selects it (given, or a group's default, or the primary config) that is one line saying to give
    it another name (before: ours composed with no word); so it is where a config the command reads builds on it (ours
    too: smoke builds on paper_small); a copy the command does not read is left alone."""
    from rnnreg.command_line import check_command_line

    edited = (Path(CONF_DIR) / "experiment" / "paper_small.yaml").read_text().replace("bptt: 20", "bptt: 7")
    folder = your_folder(tmp_path / "my_configs", paper_small=edited)
    (folder / "dropout").mkdir()
    (folder / "dropout" / "non_recurrent.yaml").write_text("defaults: [none]\ninput: 0.3\n")

    def says(group: str, option: str) -> str:
        return (
            f"{group}={option}: {folder}/{group}/{option}.yaml has the name of rnnreg's own {group}/{option}.yaml, "
            f"which Hydra reads instead (its search path has rnnreg's conf/ first), so yours would be ignored: give "
            f"yours another name ({group}/my_{option}.yaml) and select it with {group}={'my_' + option}"
        )

    for adds in (["--config-dir", str(folder)], [f"hydra.searchpath=[file://{folder}]"]):
        with pytest.raises(ConfigError) as refused:
            check_command_line("train", [*adds, "experiment=paper_small"])
        assert str(refused.value) == says("experiment", "paper_small")
        with pytest.raises(ConfigError) as refused:  # paper_medium's dropout, the default
            check_command_line("train", [*adds, "seed=1"])
        assert str(refused.value) == says("dropout", "non_recurrent")
        with pytest.raises(ConfigError) as refused:  # one job of a sweep
            check_command_line("train", ["-m", *adds, "experiment=paper_large,paper_small", "dropout=none"])
        assert str(refused.value) == says("experiment", "paper_small")
        with pytest.raises(ConfigError) as refused:  # read by ours: smoke builds on paper_small (`- paper_small`)
            check_command_line("train", [*adds, "experiment=smoke", "dropout=none"])
        assert str(refused.value).startswith(
            f"experiment=smoke builds on experiment/paper_small, and {folder}/experiment/paper_small.yaml has the name "
        )
        assert check_command_line("train", [*adds, "experiment=paper_large", "dropout=none"]).jobs == 1  # not read
    (folder / "train.yaml").write_text((Path(CONF_DIR) / "train.yaml").read_text().replace("seed: 1234", "seed: 7"))
    with pytest.raises(ConfigError) as refused:
        check_command_line("train", ["--config-dir", str(folder), "experiment=paper_large", "dropout=none"])
    assert str(refused.value) == (
        f"the primary config train: {folder}/train.yaml has the name of rnnreg's own train.yaml, which Hydra reads "
        "instead (its search path has rnnreg's conf/ first), so yours would be ignored: give yours another name "
        "(my_train.yaml) and select it with --config-name my_train"
    )
    (folder / "my_paper_large.yaml").write_text("defaults: [train, _self_]\n")  # builds on train: ours is read
    with pytest.raises(ConfigError) as refused:
        check_command_line("train", ["--config-dir", str(folder), "--config-name", "my_paper_large", "dropout=none"])
    assert str(refused.value) == (
        f"the primary config my_paper_large builds on train, and {folder}/train.yaml has the name of rnnreg's own "
        "train.yaml, which Hydra reads instead (its search path has rnnreg's conf/ first), so yours would be ignored: "
        "give yours another name (my_train.yaml) and build on that"
    )
    (folder / "train.yaml").rename(folder / "my_train.yaml")  # renamed as it says: composes
    renamed = ["--config-dir", str(folder), "--config-name", "my_train", "experiment=paper_large", "dropout=none"]
    assert check_command_line("train", renamed).jobs == 1


# a tiny run of a user's experiment (its own model: not TINY's model=small): each a few windows, where one ran
SHADOW_TINY = [a for a in TINY if a != "model=small"] + [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def shadow_says(given: str, path: str, file: Path, where: str = "") -> str:
    """The refusal of a user's `file` named as conf/'s `path` that a config of the user's builds on."""
    head, _, name = path.rpartition("/")
    return (
        f"error: {given} builds on {path}{where}, and {file} has the name of rnnreg's own {path}.yaml, which Hydra "
        f"reads instead (its search path has rnnreg's conf/ first), so yours would be ignored: give yours another "
        f"name ({head}/my_{name}.yaml) and build on that"
    )


def refused_before_anything(script: str, tmp_path: Path, *args: str) -> str:
    """`script args` refused: exit 2 and one line on stderr, no run or sweep folder made; the line."""
    out = tmp_path / "outputs"
    proc = run(script, *args, f"paths.output_root={out}", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert not out.exists()
    return line


def test_your_experiment_that_builds_on_your_copy_named_as_ours_is_refused(tiny_corpus, tmp_path):
    """An experiment of the user's that builds on another (`- paper_small`, or `- /experiment/paper_small`) where
    the user's folder holds an edited copy named as ours: Hydra reads conf/'s paper_small, never the copy beside it
    (before: ours trained with no word, the copy's bptt 7 ignored). One line naming the experiment selected, exit 2,
    nothing made; so for rnnreg-eval, whose data option of the user's builds on a copy of data/text."""
    from rnnreg.command_line import check_command_line

    edited = (Path(CONF_DIR) / "experiment" / "paper_small.yaml").read_text().replace("bptt: 20", "bptt: 7")
    mine = "# @package _global_\ndefaults: [paper_small]\nexperiment_name: mine\n"
    folder = your_folder(tmp_path / "my_configs", paper_small=edited, mine=mine)
    args = ["--config-dir", str(folder), "experiment=mine", *SHADOW_TINY, f"data.data_dir={tiny_corpus}"]
    line = refused_before_anything("rnnreg-train", tmp_path, *args)
    assert line == shadow_says("experiment=mine", "experiment/paper_small", folder / "experiment" / "paper_small.yaml")
    (folder / "experiment" / "mine.yaml").write_text(mine.replace("[paper_small]", "[/experiment/paper_small]"))
    with pytest.raises(ConfigError) as refused:  # an absolute entry, the folder on hydra.searchpath
        check_command_line("train", [f"hydra.searchpath=[file://{folder}]", "experiment=mine"])
    assert f"error: {refused.value}" == line
    (folder / "data").mkdir()
    (folder / "data" / "text.yaml").write_text((Path(CONF_DIR) / "data" / "text.yaml").read_text())
    (folder / "data" / "my_text.yaml").write_text("defaults: [text, _self_]\n")
    args = ["--config-dir", str(folder), "data=my_text", f"ckpt_path={tmp_path / 'missing.ckpt'}"]
    line = refused_before_anything("rnnreg-eval", tmp_path, *args)  # (before its checkpoint is looked at)
    assert line == shadow_says("data=my_text", "data/text", folder / "data" / "text.yaml")


def test_your_experiment_that_overrides_a_group_with_your_copy_named_as_ours_is_refused(tiny_corpus, tmp_path):
    """`- override /model: small` in an experiment of the user's, whose folder holds model/small.yaml (an edited
    copy): Hydra reads conf/'s model/small. The line names the experiment and says to rename the copy and build on
    it there (before: a line naming model=small as if given, saying to select model=my_small on the command line)."""
    mine = "# @package _global_\ndefaults:\n  - override /model: small\nexperiment_name: mine\n"
    mine += "optim: {decay: 2.0, decay_start: 4}\n"
    folder = your_folder(tmp_path / "my_configs", mine=mine)
    (folder / "model").mkdir()
    (folder / "model" / "small.yaml").write_text("defaults: [/_model@_here_]\nhidden_size: 24\ninit_scale: 0.1\n")
    args = ["--config-dir", str(folder), "experiment=mine", *SHADOW_TINY, f"data.data_dir={tiny_corpus}"]
    line = refused_before_anything("rnnreg-train", tmp_path, *args)
    assert line == shadow_says("experiment=mine", "model/small", folder / "model" / "small.yaml")


def test_a_copy_named_as_ours_deep_in_your_experiments_is_refused_in_a_sweep(tiny_corpus, tmp_path):
    """Own experiments building on own experiments (outer -> middle -> a copy of paper_small): the line names the
    experiment selected and the file whose defaults name the copy; in a multirun, the job that reads it refuses the
    whole sweep before any job runs or any folder is made (before: both jobs trained on ours)."""
    edited = (Path(CONF_DIR) / "experiment" / "paper_small.yaml").read_text().replace("bptt: 20", "bptt: 7")
    middle = "# @package _global_\ndefaults: [/experiment/paper_small]\nexperiment_name: middle\n"
    outer = "# @package _global_\ndefaults: [middle]\nexperiment_name: outer\n"
    folder = your_folder(tmp_path / "my_configs", paper_small=edited, middle=middle, outer=outer)
    sweep = tmp_path / "sweep"
    args = ["-m", "--config-dir", str(folder), "experiment=paper_large,outer", *SHADOW_TINY]
    line = refused_before_anything(
        "rnnreg-train", tmp_path, *args, f"data.data_dir={tiny_corpus}", f"hydra.sweep.dir={sweep}"
    )
    copy = folder / "experiment" / "paper_small.yaml"
    where = " (in experiment/middle.yaml's defaults)"
    assert line == shadow_says("experiment=outer", "experiment/paper_small", copy, where)
    assert not sweep.exists()


def test_a_copy_named_as_ours_that_the_command_does_not_read_is_left_alone(tiny_corpus, tmp_path):
    """A user's folder holding a copy of paper_large (named as ours) and an experiment building on our paper_small:
    the command reads ours only where the user has no copy, and runs."""
    edited = (Path(CONF_DIR) / "experiment" / "paper_large.yaml").read_text().replace("bptt: 35", "bptt: 7")
    mine = "# @package _global_\ndefaults: [paper_small]\nexperiment_name: mine\n"
    folder = your_folder(tmp_path / "my_configs", paper_large=edited, mine=mine)
    run_dir = tmp_path / "run"
    args = ["--config-dir", str(folder), "experiment=mine", *SHADOW_TINY, f"data.data_dir={tiny_corpus}"]
    run("rnnreg-train", *args, f"hydra.run.dir={run_dir}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["experiment"] == "mine"


def test_a_group_of_your_own_without_package_global_says_to_add_it(tmp_path):
    """A new group of the user's whose file lacks `# @package _global_` puts its keys under the group's name, which
    the train config does not have: the refusal says to start the file with it (before: "did you mean test?")."""
    from rnnreg.command_line import check_command_line

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.yaml").write_text("tags: [hello]\n")
    with pytest.raises(ConfigError) as refused:
        check_command_line("train", ["--config-dir", str(tmp_path), "+notes=a"])
    assert str(refused.value) == (
        "notes is not a key of the train config: notes=a is a config group of yours, whose file's keys Hydra puts "
        "under notes; start notes/a.yaml with `# @package _global_` so that its keys are the train config's"
    )
    (tmp_path / "notes" / "a.yaml").write_text("# @package _global_\ntags: [hello]\n")
    assert check_command_line("train", ["--config-dir", str(tmp_path), "+notes=a"]).jobs == 1


def test_a_primary_config_of_yours_brings_its_own_searchpath_and_subfolders(tmp_path):
    """A primary config of the user's that sets hydra.searchpath itself (as Hydra reads it: where the command line
    gives none) adds those folders' groups and options to the check, as to Hydra; an option in a subfolder of a
    group (experiment=sub/deep) is one too."""
    from rnnreg.command_line import check_group_options, validate_args

    lab = your_folder(tmp_path / "lab", lab=YOUR_EXPERIMENT)
    (lab / "extra").mkdir()
    (lab / "extra" / "one.yaml").write_text("# @package _global_\ntags: [one]\n")
    folder = your_folder(tmp_path / "my_configs", mine=YOUR_EXPERIMENT)
    (folder / "experiment" / "sub").mkdir()
    (folder / "experiment" / "sub" / "deep.yaml").write_text(YOUR_EXPERIMENT)
    (folder / "lab_train.yaml").write_text(f"defaults: [train, _self_]\nhydra: {{searchpath: ['file://{lab}']}}\n")
    primary = ["-cd", str(folder), "-cn", "lab_train"]
    for args in (["+extra=one"], ["experiment=lab"], ["experiment=sub/deep"]):
        check_group_options([*primary, *args])
        assert validate_args("train", [*primary, *args]) == 1, args
    with pytest.raises(ConfigError, match=rf"^experiment=nope is not an option: .*, {lab}/experiment\)$"):
        check_group_options([*primary, "experiment=nope"])


def test_the_commands_that_go_on_start_as_the_run_was_started():
    """recorded_command: from Hydra's record of a run (its hydra node), the script by the config it ran (rnnreg-eval
    for eval), and the --config-dir, --config-name and hydra.searchpath it was started with, which Hydra does not
    record among the task's overrides; nothing more for a plain run, or a record cut short."""
    from rnnreg.recorded_commands import recorded_command

    sources = [{"path": "hydra.conf", "provider": "hydra"}, {"path": "/mine", "provider": "command-line"}]
    hydra = {
        "job": {"config_name": "lab_train"},
        "runtime": {"config_sources": sources},
        "overrides": {"hydra": ["hydra.run.dir=/r", "hydra.searchpath=[file:///lab]"], "task": ["seed=1"]},
    }
    assert recorded_command(hydra) == [
        "rnnreg-train", "--config-dir", "/mine", "--config-name", "lab_train", "hydra.searchpath=[file:///lab]",
    ]  # fmt: skip
    assert recorded_command({"job": {"config_name": "eval"}, "overrides": {"hydra": ["hydra.run.dir=/r"]}}) == [
        "rnnreg-eval"
    ]
    assert recorded_command({"job": {"config_name": "train"}}) == recorded_command({"job": None}) == ["rnnreg-train"]
    assert recorded_command({"job": {"config_name": ["a"]}, "runtime": {"config_sources": "x"}}) == ["rnnreg-train"]


def test_the_command_that_goes_on_gives_the_searchpath_hydra_read():
    """recorded_command: a hydra.searchpath given with `+` is the run's too; given twice, the one Hydra read (the
    first), not the other."""
    from rnnreg.recorded_commands import recorded_command

    plus = {"overrides": {"hydra": ["hydra.run.dir=/r", "+hydra.searchpath=[file:///a]"]}}
    assert recorded_command(plus) == ["rnnreg-train", "+hydra.searchpath=[file:///a]"]
    twice = {"overrides": {"hydra": ["hydra.searchpath=[file:///a]", "hydra.searchpath=[file:///b]"]}}
    assert recorded_command(twice) == ["rnnreg-train", "hydra.searchpath=[file:///a]"]
