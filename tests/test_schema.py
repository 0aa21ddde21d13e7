"""Every impossible value is refused before anything is written: a table of bad values generated from the
schema (every key of every group of every entry point), the configs a user can compose validating clean,
and a few real console-script runs stopping with one line, exit 2 and no folder created."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from helpers import BIN, TINY, run
from rnnreg import CONF_DIR, trainer_rules
from rnnreg.command_line import MAX_JOBS_CHECKED, check_job, job_combinations, validate_args
from rnnreg.data import smallest_fraction
from rnnreg.errors import CheckpointError, ConfigError, DataError
from rnnreg.model import cpu_runs_fused_lstm_in_bf16
from rnnreg.schema import SCHEMAS, Rule, rules
from rnnreg.train import train
from rnnreg.trainer_rules import trainer_processes

CUDA = torch.cuda.is_available()
NOT_A_CKPT = Path(__file__)  # a text file


@functools.cache
def fake_checkpoint() -> str:
    """A zip as torch.save writes, with nothing loadable in it: enough for the checks before loading."""
    path = Path(tempfile.mkdtemp(prefix="rnnreg-schema-")) / "fake.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80")
    return str(path)


def truncated_checkpoint() -> str:
    """fake_checkpoint() cut short, beside it: it starts as a zip archive, without the archive's end."""
    fake = Path(fake_checkpoint())
    path = fake.with_name("truncated.ckpt")
    path.write_bytes(fake.read_bytes()[:40])
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def remove_fake_checkpoint():
    """Its folder goes with this module's tests (it was left in /tmp by every test run)."""
    yield
    if fake_checkpoint.cache_info().currsize:
        shutil.rmtree(Path(fake_checkpoint()).parent, ignore_errors=True)
        fake_checkpoint.cache_clear()


def base_args(name: str) -> list[str]:
    """A valid command line of each entry point, the starting point of every bad value."""
    return {
        "train": ["experiment=smoke"],
        "eval": [f"ckpt_path={fake_checkpoint()}"],
        "generate": [f"ckpt_path={fake_checkpoint()}"],
        "report": ["path=."],
    }[name]


# -- the table, generated from the schema -------------------------------------------------------------
def show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(map(show, value)) + "]"
    if value == "":
        return "''"
    return str(value)


def bad_values(r: Rule) -> list:
    """Values `r` must refuse: the wrong type, each side of its range, nan/inf, null where not allowed."""
    out = [] if r.null or r.kind in ("node", "nodes") else [None]
    if r.kind in ("int", "float", "limit"):
        out += ["abc", [1, 2]]
        if r.kind != "limit" and r.choices != (True, False):
            out.append(True)
        if r.kind == "int":
            out.append(1.5)
        if r.lo is not None:
            out.append(r.lo - 1 if r.kind == "int" else (r.lo if r.bounds[0] == "(" else r.lo - 0.5))
        if r.hi is not None:
            out.append(r.hi + 1 if r.kind == "int" else (r.hi if r.bounds[1] == ")" else r.hi + 0.5))
        if r.kind in ("float", "limit"):
            out += [math.nan, math.inf, -math.inf]
    elif r.kind == "bool":
        out += ["abc", 2, 0.5]
    elif r.kind == "choice":
        out += ["sideways", 1.5]
    elif r.kind == "text":
        out += ["", [1, 2]]
    elif r.kind == "words":  # (rnnreg-generate's prompt: a list would be split as its printed text)
        out += [[1, 2], True]
    elif r.kind == "devices":
        out += ["abc", 0, -2, 1.5]
    elif r.kind == "ckpt":
        out += ["/nonexistent/last.ckpt", str(NOT_A_CKPT), 3]
    elif r.kind == "device":
        out += ["sideways", "cuda:99"]
    elif r.kind in ("node", "nodes"):
        out += ["abc", 3]
    return out


def typo(key: str) -> str:
    """A mistyped key: one letter dropped from the middle (model.hiddn_size for model.hidden_size)."""
    return key[: len(key) // 2] + key[len(key) // 2 + 1 :]


def fields(schema: type, cfg: DictConfig, prefix: str = ""):
    """(key, rule) for every field of `schema` and of its nested groups, as far as `cfg` holds them."""
    for name, r in rules(schema).items():
        key = prefix + name
        yield key, r
        value = OmegaConf.select(cfg, key, throw_on_missing=False) if name in (cfg or {}) else None
        if r.kind == "node" and isinstance(value, DictConfig):
            yield from fields(r.node, value, key + ".")
        elif r.kind == "nodes" and r.node is not None and isinstance(value, DictConfig):
            for entry in value:
                yield from fields(r.node, value[entry], f"{key}.{entry}.")


def group_dir(key: str) -> bool:
    return (Path(CONF_DIR) / key).is_dir()


def has_key(cfg: DictConfig, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


@functools.cache
def composed_configs() -> dict[str, DictConfig]:
    """Each entry point's config as its command composes it (with Hydra's node), once a process: composed at the
    first test that reads it, not where pytest collects this module (on every pytest-xdist worker)."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return {name: compose(name, overrides=base_args(name), return_hydra_config=True) for name in SCHEMAS}


@functools.cache
def table() -> list[tuple[str, str, str]]:
    """(entry point, override, the key the message must name) for every bad value of every key."""
    cases = []
    for name, schema in SCHEMAS.items():
        cfg = composed_configs()[name]
        nodes = {""}
        for key, r in fields(schema, cfg):
            exists = has_key(cfg, key)
            if r.kind in ("node", "nodes") and group_dir(key):
                continue  # a config group: `data=abc` is an unknown option (test_faults)
            for value in bad_values(r):
                cases.append((name, f"{'' if exists else '+'}{key}={show(value)}", key))
            if r.kind == "node":
                nodes.add(key + ".")
            parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
            if exists and len(key.rsplit(".", 1)[-1]) > 3:
                cases.append((name, f"{parent}{typo(key.rsplit('.', 1)[-1])}=1", key))
        for node in sorted(nodes):
            if node and OmegaConf.select(cfg, node[:-1]) is None:
                continue
            cases.append((name, f"+{node}zzz_unknown=1", f"{node}zzz_unknown"))
    return cases


@pytest.fixture(scope="module")
def composed() -> dict[str, DictConfig]:
    return composed_configs()


def test_the_table_covers_every_key_of_every_schema():
    keys = {(name, key) for name, _, key in table()}
    assert len(keys) > 100 and len(table()) > 500, (len(keys), len(table()))
    for must in ["dropout.input", "optim.decay", "trainer.gradient_clip_val", "data.bptt", "model.hidden_size"]:
        assert ("train", must) in keys
    assert (
        ("generate", "num_words") in keys
        and ("eval", "mc_samples") in keys
        and ("report", "paper.small.test_ppl") in keys
    )


def test_every_bad_value_is_refused_in_one_line_naming_the_key(composed):
    parser = OverridesParser.create()
    accepted = []
    for name, line, key in table():
        try:
            check_job(composed[name], name, parser.parse_overrides([line]))
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message and key.split(".")[0] in message, (line, message)
            if "zzz_unknown" not in line and "=1" != line[-2:]:
                assert key in message, (line, message)
            continue
        accepted.append(f"{name} {line}")
    assert not accepted, f"accepted {len(accepted)} bad values: {accepted}"


def test_a_typo_names_the_key_meant(composed):
    parser = OverridesParser.create()
    with pytest.raises(ConfigError, match=r"^model.hiddn is not a key of model: did you mean model.hidden_size\?$"):
        check_job(composed["train"], "train", parser.parse_overrides(["model.hiddn=3"]))
    with pytest.raises(ConfigError, match=r"^\+foo=1: rnnreg's train config takes no new top-level keys .*callbacks, "):
        check_job(composed["train"], "train", parser.parse_overrides(["+foo=1"]))
    with pytest.raises(ConfigError, match=r"add it with \+trainer.accumulate_grad_batches=2$"):
        check_job(composed["train"], "train", parser.parse_overrides(["trainer.accumulate_grad_batches=2"]))
    # the ways in that each config has: rnnreg-eval has a trainer but no tags, rnnreg-generate neither (before: both
    # were told of +trainer.KEY and tags=[...]; found by a probe)
    eval_line = r"^\+split=foo: rnnreg's eval config .*, trainer\); a Lightning Trainer argument goes in with \+trainer"
    with pytest.raises(ConfigError, match=eval_line + r".KEY=...$"):
        check_job(composed["eval"], "eval", parser.parse_overrides(["+split=foo"]))
    with pytest.raises(ConfigError, match=r"^\+foo=1: rnnreg's generate config .*, temperature\)$"):
        check_job(composed["generate"], "generate", parser.parse_overrides(["+foo=1"]))


def test_a_resolved_config_keeps_lightnings_run_folder_its_own(tmp_path):
    """train(cfg) from Python with a config already resolved (OmegaConf.resolve): trainer.default_root_dir is the
    run's folder written out, which is its own; another folder is still refused."""
    from helpers import compose_config
    from rnnreg.validation import validate

    cfg = compose_config(["data=text", f"data.data_dir={tmp_path}"], tmp_path / "run")
    OmegaConf.resolve(cfg)
    validate(cfg, "train")
    cfg.trainer.default_root_dir = str(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"^trainer.default_root_dir=\S+/elsewhere: a run writes all its files"):
        validate(cfg, "train")


def test_plus_sets_a_key_whose_interpolation_resolves_to_null(monkeypatch):
    """`+logger.wandb.entity=myteam`: the key is `${oc.env:WANDB_ENTITY,null}`, null without the variable, which
    Hydra's + may set; with the variable set it holds a value, and + is refused as Hydra refuses it."""
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    assert validate_args("train", ["logger=wandb", "+logger.wandb.entity=myteam"]) == 1
    monkeypatch.setenv("WANDB_ENTITY", "theirs")
    with pytest.raises(ConfigError, match=r"^\+logger.wandb.entity=myteam: Could not append to config"):
        validate_args("train", ["logger=wandb", "+logger.wandb.entity=myteam"])


def test_a_config_file_that_moves_lightnings_run_folder_is_refused(tmp_path):
    """An experiment of the user's own that sets trainer.default_root_dir (Lightning's way to move a run): every file
    goes in the run's folder all the same, so the setting would be silently ignored."""
    (tmp_path / "experiment").mkdir()
    mine = "# @package _global_\ndefaults:\n  - paper_small\ntrainer:\n  default_root_dir: /tmp/elsewhere\n"
    (tmp_path / "experiment" / "mine.yaml").write_text(mine)
    with pytest.raises(ConfigError, match=r"^trainer.default_root_dir=/tmp/elsewhere: a run writes all its files in"):
        validate_args("train", ["--config-dir", str(tmp_path), "experiment=mine"])


# -- rules across keys, and sweeps ---------------------------------------------------------------------
LAST_READ = "a resume, ckpt_path=last, rnnreg-eval and rnnreg-report read"
BEST_HINT = r" \(the best epoch's is checkpoints/best.ckpt, callbacks.model_checkpoint's\)"
NO_INTERVAL = (
    r"must be a count of training windows >= 1 or a fraction of the epoch in \(0, 1\] \(e.g. 0.5\); to validate "
    r"less often, set trainer.check_val_every_n_epoch"
)


@pytest.mark.parametrize(
    "args,message",
    [
        (["experiment=smoke", "dropout=non_recurrent"], r"^dropout=non_recurrent drops nothing: .* set dropout.p"),
        (["-m", "experiment=smoke", "dropout=none,variational"], r"^dropout=variational drops nothing.*\(sweep job"),
        (["-m", "dropout=both", "dropout.p=0.5,0.0"], r"drops nothing.*\(sweep job dropout.p=0.0\)$"),
        (  # a site given dropout.p by its full name counts as a placement's ${.p}
            ["experiment=smoke", "dropout.input=${dropout.p}"],
            r"^dropout=none drops nothing: its sites \(dropout.input\) use dropout.p, which is 0 here",
        ),
        (  # spaces inside the interpolation, which OmegaConf reads as the same
            ["experiment=smoke", "dropout.input=${ dropout.p }"],
            r"^dropout=none drops nothing: its sites \(dropout.input\) use dropout.p, which is 0 here",
        ),
        (["-m", "seed=1,-1"], r"^seed=-1 must be an integer in \[0, 4294967295\] \(sweep job seed=-1\)$"),
        # Hydra's own fix or options, on the lines after its first, kept in the one line
        (
            ["hydra.job.env_set.OMP_NUM_THREADS=1"],
            r"^hydra.job.env_set.OMP_NUM_THREADS=1: Could not override 'hydra.job.env_set.OMP_NUM_THREADS'. To "
            r"append to your config use \+hydra.job.env_set.OMP_NUM_THREADS=1$",
        ),
        (["+seed=3"], r"^\+seed=3: Could not append to config. .* Either remove \+ prefix: 'seed=3'; Or add a second "),
        (  # a key whose value reads Hydra's run: Hydra's own check resolves it, and stops with its four lines
            ["+paths.output_dir=/tmp/x"],
            r"^\+paths.output_dir=/tmp/x: Could not append to config. An item is already at 'paths.output_dir'. Either "
            r"remove \+ prefix: 'paths.output_dir=/tmp/x'; Or add a second \+ .*: '\+\+paths.output_dir=/tmp/x'$",
        ),
        # Lightning's folder for a run's files follows the run's own: another would move none of them
        *(
            (
                [given],
                rf"^{re.escape(given)}: a run writes all its files in its own folder \(paths.output_dir\), which "
                r"trainer.default_root_dir follows: move a run with hydra.run.dir=..., a multirun with "
                r"hydra.sweep.dir=..., or every run with paths.output_root=...$",
            )
            for given in (
                "trainer.default_root_dir=/tmp/x",
                "+trainer.default_root_dir=/tmp/x",
                "~trainer.default_root_dir",
            )
        ),
        # the run's folder itself: Hydra writes .hydra/ and train.log in its own whatever it says (before: the
        # checkpoints and metrics.json went to the one given, the records to Hydra's; found by a probe)
        *(
            (
                [given],
                rf"^{re.escape(given)}: paths.output_dir is the run's folder as Hydra makes it \(its .hydra/ records "
                r"and train.log are written there, whatever this key says\): move a run with hydra.run.dir=..., a "
                r"multirun with hydra.sweep.dir=..., or every run with paths.output_root=...$",
            )
            for given in ("paths.output_dir=/tmp/x", "++paths.output_dir=/tmp/x", "~paths.output_dir")
        ),
        (
            ["-m", "hydra/launcher=nope", "seed=1,2"],
            r"^In 'hydra/config': Could not find 'hydra/launcher/nope'; Available options in 'hydra/launcher': basic, "
            r"joblib, .*stacked",
        ),
        (["hydra.run.dir=null"], r"^hydra.run.dir=null: Error merging .*; field 'hydra.run.dir' is not Optional$"),
        # Lightning's Timer stops a run mid-epoch and saves the epoch as done: its resume skipped the epoch's rest
        (["+trainer.max_time=00:00:01:00"], r"^trainer.max_time=00:00:01:00 stops a run mid-epoch where its resume "),
        # rnnreg-report, resume commands and a sweep's resume read a run's record in its .hydra/
        (["hydra.output_subdir=null"], r"^hydra.output_subdir=null: rnnreg-report, .*leave hydra.output_subdir out$"),
        (["hydra.output_subdir=meta"], r"^hydra.output_subdir=meta: "),
        # a flag as argparse takes it (Hydra's parser): a unique abbreviation of --multirun is a multirun
        (["--multi", "seed=1,-1"], r"^seed=-1 must be an integer in \[0, 4294967295\] \(sweep job seed=-1\)$"),
        (
            ["-m", "hydra/launcher=stacked,basic", "seed=1,2"],
            r"^hydra/launcher=stacked,basic: Hydra's own config groups cannot be swept: run one command per option "
            r"\(hydra/launcher=stacked, then hydra/launcher=basic\)$",
        ),
        # a key swept, then given again: Hydra runs every job with the later value (the sweep's others dropped)
        (
            ["-m", "model.hidden_size=16,24", "seed=1,2", "model.hidden_size=16"],
            r"^model.hidden_size=16,24, then model.hidden_size=16: Hydra gives every job a key's last value, so the "
            r"sweep's other values would not run: give model.hidden_size once$",
        ),
        (["-m", "dropout=none,recurrent", "dropout=both,none"], r"^dropout=none,recurrent, then dropout=both,none: "),
        # every quoting hint as a shell passes it to Hydra: the inner quotes in the outer ones
        (["seed=1,2"], r"^seed=1,2 is a sweep: add -m .*\(\"seed='1,2'\"\) for a string$"),
        (
            ["hydra.run.dir=a,b"],
            r"^hydra.run.dir=a,b: Hydra's own settings cannot be swept: .*\(\"hydra.run.dir='a,b'\"\)$",
        ),
        (
            ["experiment=ablation_placement_small", "hydra.sweeper.params.dropout=none,both"],
            r"swept: .*\(\"hydra.sweeper.params.dropout='none,both'\"\), or sweep the key itself: dropout=none,both$",
        ),
        (
            ["data.data_dir=/tmp/corpusé"],
            r"^data.data_dir=/tmp/corpusé is not an override Hydra can read \(LexerNoViableAltException\): quote the "
            r"value inside the override, e.g. \"data.data_dir='/tmp/corpusé'\" \(the outer quotes for the shell",
        ),
        (["data.data_dir=/tmp/a=b"], r"^data.data_dir=/tmp/a=b is not an override .*e.g. \"data.data_dir='/tmp/a=b'\""),
        (
            ["debug=null"],
            r"^debug=null: debug is a config group and null is not one of its options: choose one of def",
        ),
        (["data=null"], r"^data=null: .*choose one of ptb, text, or leave data= out to keep its default$"),
        (  # a group whose default is none: Hydra takes ~group, not null, to turn it off
            ["hparams_search=null"],
            r"^hparams_search=null: .*choose one of optuna, or leave hparams_search= out to keep its default \(none\), "
            r"or give ~hparams_search to turn off one an experiment chose$",
        ),
        (
            ["optimized_metric=test_ppl", "test=false"],
            r"^optimized_metric=test_ppl needs the final test",
        ),
        (["-m", "hparams_search=optuna", "optim.lr=interval(0.0,1.0)"], r"^optim.lr=0.0 must be a number > 0"),
        # (an Optuna study of no trial ended with Optuna's traceback, `No trials are completed yet`)
        (
            ["hparams_search=optuna", "hydra.sweeper.n_trials=0"],
            r"^hydra.sweeper.n_trials=0: an Optuna study runs .*: give 1 or more$",
        ),
        (["hparams_search=optuna", "hydra.sweeper.n_jobs=-1"], r"^hydra.sweeper.n_jobs=-1: an Optuna study runs "),
        (["-m", "optim.lr=interval(0.1,1.0)"], r"^optim.lr=interval\(0.1,1.0\) is a range to search, .*optuna\)"),
        (  # a study over a rate that no site uses: every trial the same model in that respect
            ["experiment=smoke", "hparams_search=optuna"],
            r"^dropout.p=interval\(0.2, 0.7\): the sweep varies dropout.p, which no site of its jobs' dropout uses .*"
            r"pick a placement that drops \(dropout=non_recurrent\), or leave dropout.p out of the sweep$",
        ),
        (["-m", "experiment=smoke", "dropout.p=0.3,0.5"], r"^dropout.p=0.3,0.5: the sweep varies dropout.p, "),
        (  # + on a group the config has (Hydra: "To override a value use 'override dropout: recurrent'")
            ["+dropout=recurrent"],
            r"^\+dropout=recurrent: dropout is in the config already \(\+ adds a group it does not have\): choose "
            r"its option with dropout=recurrent$",
        ),
        (
            ["-m", "+experiment=smoke,paper_small"],
            r"^\+experiment=smoke,paper_small: .* with experiment=smoke,paper_small$",
        ),
        (  # a glob over a group's options: each option a job, checked (smoke's p is 0: every placement drops nothing)
            ["-m", "experiment=smoke", "dropout=glob(*)"],
            r"^dropout=both drops nothing: .* \(sweep job dropout=both\)$",
        ),
        (
            ["-m", "dropout=glob(zz*)"],
            r"^dropout=glob\(zz\*\) matches no option of dropout: choose among both, non_recurrent, none, recurrent, "
            r"variational, weight_drop \(files in \S+/conf/dropout\)$",
        ),
        (  # a stacked sweep's setting without the stacked launcher (Hydra: "Could not override", nothing more)
            ["-m", "seed=1,2", "hydra.launcher.resume=true"],
            r"^hydra.launcher.resume=true: hydra.launcher.resume is a setting of hydra/launcher=stacked, and this "
            r"command's launcher is basic: add hydra/launcher=stacked, or leave hydra.launcher.resume out$",
        ),
        (  # a plugin's launcher (its config in Hydra's config store, not in conf/hydra/launcher/)
            ["-m", "seed=1,2", "hydra.launcher.n_jobs=2"],
            r"^hydra.launcher.n_jobs=2: hydra.launcher.n_jobs is a setting of hydra/launcher=joblib, and this "
            r"command's launcher is basic: add hydra/launcher=joblib, or leave hydra.launcher.n_jobs out$",
        ),
        (["dropout=recurrent", "model.lstm=fused"], r"^model.lstm=fused cannot run dropout.recurrent=0.5"),
        (["regularizer=layer_norm", "model.lstm=fused"], r"^model.lstm=fused cannot run model.layer_norm=true"),
        (["dropout=recurrent", "model.lstm=layers"], r"^model.lstm=layers cannot run dropout.recurrent=0.5"),
        (
            ["dropout=non_recurrent", "dropout.variational=true", "model.lstm=fused"],
            r"^model.lstm=fused cannot run dropout.variational=true",
        ),
        (["optimized_metric=test_ppl_batched", "test=false"], r"^optimized_metric=test_ppl_batched needs the final"),
        (  # both ends of a study's range are values its trials may take
            ["-m", "hparams_search=optuna", "dropout=non_recurrent", "dropout.p=interval(0.2,1.0)"],
            r"^dropout.p=1.0 must be a number in \[0, 1\) .*\(sweep job dropout.p=1.0",
        ),
        (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"], r"^data.batch_size=20 is not divisible"),
        (["trainer=ddp", "trainer.devices=2", "trainer.num_nodes=3"], r"^data.batch_size=20 is not divisible by the 6"),
        # devices=auto on a CPU: one process a node (Lightning's count), checked as any other count
        (
            ["trainer=ddp", "trainer.accelerator=cpu", "trainer.num_nodes=3"],
            r"^data.batch_size=20 is not divisible by the 3",
        ),
        (["speed.fast_step=true", "trainer.devices=2"], r"^speed.fast_step=true needs one process.* 2 processes"),
        # GPU indices (Lightning's own error: a traceback from Hydra's instantiate)
        (
            ["trainer.devices=[0,1]", "trainer.accelerator=cpu"],
            r"^trainer.devices=\[0, 1\] names GPUs but trainer.accelerator=cpu: give a number of processes "
            r"\(trainer.devices=2\)$",
        ),
        *(
            [
                (
                    ["trainer.devices=[0,1]"],
                    r"^trainer.devices=\[0, 1\] names GPUs and this machine has none: use trainer.devices=2 with "
                    r"trainer.accelerator=cpu, or trainer.devices=auto$",
                )
            ]
            if not torch.cuda.is_available()
            else []
        ),
        (["trainer.accelerator=cpu", "trainer.precision=16-mixed"], r"^trainer.precision=16-mixed needs a GPU"),
        (["data=text", "data.data_dir=/nonexistent"], r"^data.data_dir=/nonexistent is not a folder"),
        (["data=text"], r"^data.data_dir is required \(\?\?\? in the config\)"),  # not PTB's folder, unnoticed
        ([f"data.data_dir={NOT_A_CKPT}"], r"^data.data_dir=\S+ is not a folder: .*ptb.train.txt"),  # PTB: a file
        (["ckpt_path=/nonexistent.ckpt"], r"^ckpt_path=/nonexistent.ckpt is not a file: .*ckpt_path=last"),
        ([f"ckpt_path={NOT_A_CKPT}"], r"is not a checkpoint \(not a file torch.save wrote\)"),
        # a zip archive cut short (a copy that stopped): torch.save wrote it, so it is not called another file
        (
            [f"ckpt_path={truncated_checkpoint()}"],
            r"^ckpt_path=\S+ is not a readable checkpoint \(truncated or damaged: ",
        ),
        # a key a callback's or logger's class takes, not in its config yet; a callback that is not selected
        (
            ["logger=wandb", "logger.wandb.notes=hi"],
            r"^logger.wandb.notes is not in the config yet: add it with \+logger.wandb.notes=hi$",
        ),
        (
            ["callbacks.model_checkpoint.verbose=true"],
            r"^callbacks.model_checkpoint.verbose is not in the config yet: add it with "
            r"\+callbacks.model_checkpoint.verbose=true$",
        ),
        (  # a key the check then refuses: the refusal at once, not the + hint first
            ["callbacks.model_checkpoint.every_n_epochs=2"],
            r"^callbacks.model_checkpoint.every_n_epochs=2: checkpoints/best.ckpt is saved at every validation ",
        ),
        (
            ["callbacks.early_stopping.patience=2"],
            r"^callbacks.early_stopping is not in the config: select it with callbacks=early_stopping or "
            r"regularizer=early_stopping, then set callbacks.early_stopping.patience=2$",
        ),
        # Lightning's SWA: another lr schedule, a test of weights no checkpoint holds (before: taken; found by a probe)
        (
            [
                "+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging",
                "+callbacks.swa.swa_lrs=0.1",
            ],
            r"^callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging: stochastic weight "
            r"averaging replaces the run's lr schedule",
        ),
        # regularizer=early_stopping selects callbacks=early_stopping, and a callbacks= given selects another over it
        # (before: the run trained without early stopping, its record saying regularizer=early_stopping)
        (
            ["callbacks=default", "regularizer=early_stopping"],
            r"^regularizer=early_stopping selects callbacks=early_stopping, and callbacks=default given here selects "
            r"another over it: the run would train without early stopping: give callbacks=early_stopping \(or leave "
            r"callbacks= out\)$",
        ),
        (
            ["-m", "regularizer=[weight_decay],[early_stopping,weight_decay]", "callbacks=default"],
            r"^regularizer=\[early_stopping,weight_decay\] selects callbacks=early_stopping, and callbacks=default ",
        ),
        (  # the same with + (before: "callbacks.early_stopping={...} must be null or a mapping with _target_")
            ["+callbacks.early_stopping.patience=2"],
            r"^callbacks.early_stopping is not in the config: select it with callbacks=early_stopping or "
            r"regularizer=early_stopping, then set callbacks.early_stopping.patience=2$",
        ),
        (  # a key early stopping's config leaves out keeps its +
            ["+callbacks.early_stopping.verbose=true"],
            r"^callbacks.early_stopping is not in the config: select it with callbacks=early_stopping or "
            r"regularizer=early_stopping, then set \+callbacks.early_stopping.verbose=true$",
        ),
        (["logger=wandb", "logger.wandb.nottes=hi"], r"^logger.wandb.nottes is not a key of logger.wandb: the keys"),
        # Lightning's idioms rnnreg does not take, each with rnnreg's way (or why it needs the value) in its line
        (
            ["trainer.limit_val_batches=0"],
            r"^trainer.limit_val_batches=0 must be .* \(to skip validation, set trainer.check_val_every_n_epoch "
            r"larger than trainer.max_epochs\)$",
        ),
        (  # Lightning's way to count validation in windows across epochs
            ["trainer.check_val_every_n_epoch=null"],
            r"^trainer.check_val_every_n_epoch=null must be an integer >= 1 \(validation counts in epochs, "
            r".*set \+trainer.val_check_interval to a fraction of it\), not null$",
        ),
        (["trainer.limit_test_batches=0"], r"^trainer.limit_test_batches=0 must be .* \(to skip the final test, set "),
        (["trainer.max_epochs=-1"], r"^trainer.max_epochs=-1 must be an integer >= 1 \(a set number: rnnreg's lr "),
        # Lightning's loop divides by 0 (a traceback once training began); 0.0 and true validated after every window
        *(
            ([f"+trainer.val_check_interval={given}"], rf"^trainer.val_check_interval={shown} {NO_INTERVAL}$")
            for given, shown in (("0", "0"), ("0.0", "0.0"), ("true", "true"), ("-1", "-1"), ("-0.5", "-0.5"))
        ),
        (["trainer.gradient_clip_val=0"], r"^trainer.gradient_clip_val=0 must be .*which rnnreg's recipe always app"),
        (["trainer.gradient_clip_val=null"], r"^trainer.gradient_clip_val=null must be .*which rnnreg's recipe always"),
        # checkpoints/last.ckpt is the last epoch's full state, in the run's checkpoints/ (before: a monitor made it
        # the best epoch's, save_top_k=2 Hydra's page in a run folder, another filename one ckpt_path=last missed)
        *(
            (
                args,
                rf"^callbacks.last_checkpoint.{key}={shown}: checkpoints/last.ckpt is the last epoch's full state, "
                rf"saved at every epoch's end, which {LAST_READ}{best}: leave {key} {fix}$",
            )
            for args, key, shown, best, fix in (
                (["callbacks.last_checkpoint.monitor=val/ppl"], "monitor", "val/ppl", BEST_HINT, "at null"),
                (["callbacks.last_checkpoint.save_top_k=2"], "save_top_k", "2", "", "at 1"),
                (
                    ["callbacks.last_checkpoint.save_on_train_epoch_end=false"],
                    "save_on_train_epoch_end",
                    "false",
                    "",
                    "at true",
                ),
                (
                    ["callbacks.last_checkpoint.enable_version_counter=true"],
                    "enable_version_counter",
                    "true",
                    "",
                    "at false",
                ),
                (["+callbacks.last_checkpoint.save_weights_only=true"], "save_weights_only", "true", "", "at false"),
                (["callbacks.last_checkpoint.save_weights_only=true"], "save_weights_only", "true", "", "at false"),
                (["+callbacks.last_checkpoint.save_on_exception=true"], "save_on_exception", "true", "", "at false"),
                (["+callbacks.last_checkpoint.save_last=true"], "save_last", "true", "", "out"),
                (["callbacks.last_checkpoint.every_n_epochs=2"], "every_n_epochs", "2", "", "out"),
                (["+callbacks.last_checkpoint.every_n_train_steps=5"], "every_n_train_steps", "5", "", "out"),
                # (Lightning: a beat given turns the epoch's end off)
                (["+callbacks.last_checkpoint.every_n_train_steps=0"], "every_n_train_steps", "0", "", "out"),
                (["+callbacks.last_checkpoint.train_time_interval=1"], "train_time_interval", "1", "", "out"),
            )
        ),
        *(
            (
                [f"callbacks.{name}.filename={given}"],
                rf"^callbacks.{name}.filename={given}: the run's last checkpoint "
                rf"is checkpoints/last.ckpt, which {LAST_READ}: leave filename at last$",
            )
            for name in ("last_checkpoint", "checkpoint_on_interrupt")
            for given in ("final",)
        ),
        (
            ["~callbacks.last_checkpoint.filename"],
            rf"^callbacks.last_checkpoint.filename=null: .*, which {LAST_READ}: leave filename at last$",
        ),
        (
            ["callbacks.last_checkpoint.dirpath=/tmp/elsewhere"],
            r"^callbacks.last_checkpoint.dirpath=/tmp/elsewhere: checkpoints/last.ckpt is in the run's own folder, "
            rf"where {LAST_READ} it: leave dirpath at \$\{{paths.output_dir\}}/checkpoints \(move the run with "
            r"hydra.run.dir=...\)$",
        ),
        # Lightning would deal each process's windows out again (before: refused in the run folder, once per process,
        # naming lightning.Trainer(use_distributed_sampler=False))
        (
            ["trainer.use_distributed_sampler=true", "trainer.devices=2", "trainer.accelerator=cpu"],
            r"^trainer.use_distributed_sampler=true would split rnnreg's BPTT windows across the 2 processes "
            r"\(trainer.devices x trainer.num_nodes\), which already split the streams: set "
            r"trainer.use_distributed_sampler=false \(conf/trainer's default\)$",
        ),
        # (before: Lightning's words with a logger's repr, or with logger=none its next complaint)
        *(
            (
                ["+trainer.barebones=true", *more],
                r"^trainer.barebones=true turns off the loggers, checkpoints and progress bar that rnnreg's runs need: "
                r"remove \+trainer.barebones=true$",
            )
            for more in ([], ["logger=none"])
        ),
        (
            ["+trainer.enable_checkpointing=false"],
            r"^trainer.enable_checkpointing=false: rnnreg's own callbacks write the checkpoints: turn them off with "
            r"callbacks.model_checkpoint=null callbacks.last_checkpoint=null callbacks.checkpoint_on_interrupt=null$",
        ),
        (  # an interpolation that resolves to nothing: where the run's folders go (Hydra: a traceback)
            ["paths.output_root=${nope}"],
            r"^paths.output_root=\$\{nope\} cannot be resolved \(Interpolation key 'nope' not found\)$",
        ),
        (  # where no rule reads the key: a Lightning argument, a list's item (before: Hydra's traceback in the run)
            ["+trainer.max_steps=${nope}"],
            r"^trainer.max_steps=\$\{nope\} cannot be resolved \(Interpolation key 'nope' not found\)$",
        ),
        (["tags=[a,${nope}]"], r"^tags\[1\]=\$\{nope\} cannot be resolved \(Interpolation key 'nope' not found\)$"),
        (
            ["paths.output_root=${oc.env:RNNREG_TEST_UNSET}"],
            r"^paths.output_root=\$\{oc.env:RNNREG_TEST_UNSET\} cannot be resolved \(.*'RNNREG_TEST_UNSET' not found",
        ),
    ],
)
def test_cross_key_rules_and_sweeps(args, message):
    with pytest.raises(ConfigError, match=message):
        validate_args("train", args)


def test_an_ensemble_that_lists_one_checkpoint_twice_is_refused(tmp_path):
    """rnnreg-eval 'ckpt_path=[a,a]' (or a link to a beside a): a model averaged with itself is that model, and its
    params counted twice (before: taken, its params doubled; found by a probe). Two files of the same bytes are two
    checkpoints (a copy kept on purpose is the user's choice)."""
    a = fake_checkpoint()
    (tmp_path / "link.ckpt").symlink_to(a)
    shutil.copy(a, tmp_path / "copy.ckpt")
    for twice in (f"[{a},{a}]", f"[{a},{tmp_path}/link.ckpt]"):
        said = rf"^ckpt_path=\[.*\] lists {re.escape(a)} \(one file\) twice: give each checkpoint once$"
        with pytest.raises(ConfigError, match=said):
            validate_args("eval", [f"ckpt_path={twice}"])
    validate_args("eval", [f"ckpt_path=[{a},{tmp_path}/copy.ckpt]"])


def test_a_run_folder_as_ckpt_path_names_the_checkpoint_in_it(tmp_path):
    """ckpt_path=<a run folder> (or its checkpoints/): one line that names the checkpoint in it to give (before: "is
    not a file" alone), from every command's check, and where a library call reaches the loader or a resume."""
    from rnnreg.io import load_checkpoint
    from rnnreg.resumed_run import resolve_ckpt_path

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    shutil.copy(fake_checkpoint(), last)
    for folder in (tmp_path / "run", last.parent):
        said = f"ckpt_path={folder} is a folder: give a checkpoint in it, e.g. ckpt_path={last}"
        for script in ("train", "eval", "generate"):
            with pytest.raises(ConfigError) as refused:
                validate_args(script, [*base_args(script), f"ckpt_path={folder}"])
            assert str(refused.value) == said, script
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(folder)
        assert str(refused.value) == said
        with pytest.raises(ConfigError) as refused:
            resolve_ckpt_path(OmegaConf.create({"ckpt_path": str(folder)}))
        assert str(refused.value) == said
    # a folder without one is not a file, as before
    with pytest.raises(ConfigError, match=r"^ckpt_path=\S+ is not a file: "):
        validate_args("eval", [f"ckpt_path={tmp_path}"])


def test_a_placement_given_p_zero_that_drops_at_a_site_of_its_own_rate_validates():
    """dropout.p=0 where a site has a rate of its own (dropout.output=0.3) drops something: not refused as a
    placement that drops nothing."""
    validate_args("train", ["dropout=non_recurrent", "dropout.p=0", "dropout.output=0.3"])


VARIATIONAL_NOTHING = (
    "error: dropout.variational=true changes nothing here: it draws one mask per window for dropout.input"
)


def test_variational_with_no_site_it_applies_to_is_one_line(tmp_path):
    """dropout.variational=true on the small recipe (dropout=none) or beside only whole-word dropout trained the
    model without dropout, on the step loop, filed as variational: one line, exit 2, no run folder."""
    for extra in (
        [],
        ["regularizer=embedding_dropout"],
        [
            "dropout=variational",
            "dropout.p=0.3",
            "model.num_layers=1",
            "dropout.input=0",
            "dropout.output=0",
            "dropout.recurrent=0",
        ],
    ):
        with pytest.raises(ConfigError, match=r"^dropout.variational=true changes nothing here"):
            validate_args("train", ["experiment=smoke", "dropout.variational=true", *extra])
    proc = run(
        "rnnreg-train", "experiment=smoke", "dropout.variational=true", f"hydra.run.dir={tmp_path}/run", check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(VARIATIONAL_NOTHING) and "use dropout=variational with dropout.p" in line
    assert not (tmp_path / "run").exists()
    # where a site it applies to drops, it is what it says (between with 2 layers, or only the recurrent site)
    validate_args("train", ["experiment=smoke", "dropout=variational", "dropout.p=0.3", "dropout.input=0"])
    validate_args("train", ["experiment=smoke", "dropout=recurrent", "dropout.p=0.3", "dropout.variational=true"])


NO_SEARCH_SPACE = "this command's sweeper (basic) has no search space to add to (hydra.sweeper.params is null)"


@pytest.mark.parametrize(
    "args, says, fixed",
    [
        (  # the basic sweeper's params is null: Hydra's AssertionError for a quoted value, AttributeError for a mapping
            ["-m", "+hydra.sweeper.params.seed=1,2"],
            f"+hydra.sweeper.params.seed=1,2: {NO_SEARCH_SPACE}: sweep the key itself with -m: seed=1,2",
            ["-m", "seed=1,2"],
        ),
        (
            ["-m", "hydra.sweeper.params.seed='1,2'"],
            f"hydra.sweeper.params.seed='1,2': {NO_SEARCH_SPACE}: sweep the key itself with -m: seed=1,2",
            ["-m", "seed=1,2"],
        ),
        (
            ["-m", "hydra.sweeper.params={seed:'1,2',optim.lr:'1,2'}"],
            f"hydra.sweeper.params={{seed:'1,2',optim.lr:'1,2'}}: {NO_SEARCH_SPACE}: sweep the key itself with -m: "
            "seed=1,2 optim.lr=1,2",
            ["-m", "seed=1,2", "optim.lr=1,2"],
        ),
        (  # an experiment's search space, without seed: Hydra adds a key with +
            ["-m", "experiment=ablation_placement_small", "hydra.sweeper.params.seed=1,2"],
            "hydra.sweeper.params.seed=1,2: Hydra's own settings cannot be swept: quote a value that holds a comma "
            "(\"+hydra.sweeper.params.seed='1,2'\"), or sweep the key itself: seed=1,2",
            ["-m", "experiment=ablation_placement_small", "+hydra.sweeper.params.seed='1,2'"],
        ),
        (  # Hydra's range of floats runs a job at its end where the last step falls just below it
            ["-m", "optim.decay=range(1.2,1.6,step=0.2)"],
            "optim.decay=range(1.2,1.6,step=0.2) would run optim.decay at 1.2, 1.4, 1.5999999999999999, not at 1.2, "
            "1.4 (Hydra counts a range of floats in floating point, up to its end): give the values as a list "
            "(optim.decay=1.2,1.4)",
            ["-m", "optim.decay=1.2,1.4", "optim.lr=range(0.5,1.0,step=0.25)"],  # (one Hydra counts as meant)
        ),
        (
            ["-m", "dropout=non_recurrent", "dropout.p=range(0.1,0.4,step=0.1)"],
            "dropout.p=range(0.1,0.4,step=0.1) would run dropout.p at 0.1, 0.2, 0.30000000000000004, 0.4, not at 0.1, "
            "0.2, 0.3 (Hydra counts a range of floats in floating point, up to its end): give the values as a list "
            "(dropout.p=0.1,0.2,0.3)",
            ["-m", "dropout=non_recurrent", "dropout.p=0.1,0.2,0.3", "seed=range(1,10,step=4)"],
        ),
        (  # tag() labels a sweep: a quoted value is a string, which seed is not
            ["seed=tag(a,1)"],
            "seed=tag(a,1) is not an override Hydra can read (Error parsing override 'seed=tag(a,1)'): tag() takes its "
            "tags, then the sweep they label: -m 'seed=tag(a,choice(1))'",
            ["-m", "seed=tag(a,choice(1))"],
        ),
        (  # its leading names the tags, the rest the values (was: tag(a,choice(b,1,2)), b refused as no integer)
            ["seed=tag(a,b,1,2)"],
            "seed=tag(a,b,1,2) is not an override Hydra can read (Error parsing override 'seed=tag(a,b,1,2)'): tag() "
            "takes its tags, then the sweep they label: -m 'seed=tag(a,b,choice(1,2))'",
            ["-m", "seed=tag(a,b,choice(1,2))"],
        ),
    ],
)
def test_the_fix_a_sweep_refusal_gives_is_one_the_check_takes(args, says, fixed):
    """Finding 9: `"hydra.sweeper.params.seed='1,2'"`, the fix given, ended in Hydra's AssertionError; `seed=tag(a,1)`
    was told to quote the value, which makes seed a string."""
    with pytest.raises(ConfigError) as refused:
        validate_args("train", args)
    assert str(refused.value) == says
    assert validate_args("train", fixed) >= 1


@pytest.mark.parametrize(
    "args, says, fixed",
    [
        (  # was "foo is not a key of the train config": Hydra's + exists to add keys
            ["+foo=1"],
            "+foo=1: rnnreg's train config takes no new top-level keys (its schema checks every key): set one of "
            "its keys (callbacks, ckpt_path, data, dropout, experiment_name, extras, logger, model, optim, "
            "optimized_metric, paths, seed, speed, tags, task_name, test, test_ckpt, trainer); a Lightning Trainer "
            "argument goes in with +trainer.KEY=..., a label for the run in tags=[...]",
            ["tags=[foo]"],
        ),
        (  # was "model.hidden_size is not a key of the train config"
            ["~model", "model.hidden_size=16"],
            "~model: rnnreg-train needs a model config, which ~ takes away: choose one of its options instead (large, "
            "medium, small: model=medium, the default)",
            ["model=medium", "model.hidden_size=16"],
        ),
        (  # was "dropout.input is missing"
            ["~dropout=non_recurrent"],
            "~dropout=non_recurrent: rnnreg-train needs a dropout config, which ~ takes away: choose one of its "
            "options instead (both, non_recurrent, recurrent, variational, weight_drop: dropout=non_recurrent, the "
            "default), or dropout=none to turn dropout off",
            ["dropout=none"],
        ),
        (  # was "data.bptt is required": an experiment's keys are the recipe's, not under its name
            ["~experiment"],
            "~experiment: rnnreg-train needs an experiment config, which ~ takes away: choose one of its options "
            "instead (ablation_placement, ablation_placement_full, ablation_placement_small, paper_large, "
            "paper_medium, paper_small, smoke: experiment=paper_medium, the default)",
            ["experiment=paper_small"],
        ),
        (  # was Hydra's "Could not delete 'regularizer'. No match in the defaults list"
            ["~regularizer"],
            "~regularizer: regularizer takes a list of options, with none by default: regularizer=[] for none",
            ["regularizer=[]"],
        ),
        (  # was Hydra's "Could not delete 'dropout=none'. No match in the defaults list" (dropout is non_recurrent)
            ["~dropout=none"],
            "~dropout=none: rnnreg-train needs a dropout config, which ~ takes away: choose one of its "
            "options instead (both, non_recurrent, recurrent, variational, weight_drop: dropout=non_recurrent, the "
            "default), or dropout=none to turn dropout off",
            ["dropout=none"],
        ),
        (  # was Hydra's "Could not delete 'regularizer=weight_decay'. No match in the defaults list"
            ["~regularizer=weight_decay"],
            "~regularizer=weight_decay: ~ takes away an option the config's defaults list holds, and its regularizer "
            "holds no weight_decay: give the list of options the run should have (regularizer=[...], regularizer=[] "
            "for none)",
            ["regularizer=[]"],
        ),
        (  # was Hydra's "Could not delete 'debug=fast_dev_run'. No match in the defaults list" (debug: null)
            ["~debug=fast_dev_run"],
            "~debug=fast_dev_run: ~ takes away an option the config's defaults list holds, and its debug is not "
            "fast_dev_run (debug: null unless chosen): drop ~debug=fast_dev_run",
            ["debug=fast_dev_run"],
        ),
    ],
)
def test_a_key_added_or_a_group_taken_away_says_what_the_config_takes(args, says, fixed):
    with pytest.raises(ConfigError) as refused:
        validate_args("train", args)
    assert str(refused.value) == says
    assert validate_args("train", fixed) == 1 and validate_args("train", ["~debug"]) == 1  # (an optional group: off)


def test_an_optional_group_taken_away_is_not_what_another_refusal_blames():
    """~debug takes away an optional group (debug: null unless chosen), which the run does not need: a refusal beside
    it (a value left missing, a key under debug.) says its own cause, not "rnnreg-train needs a debug config"."""
    from rnnreg.errors import MissingValue

    with pytest.raises(MissingValue, match=r"^trainer.max_epochs is required \(\?\?\? in the config\)"):
        validate_args("train", ["~debug", "trainer.max_epochs=???"])
    with pytest.raises(ConfigError, match=r"^debug is not a key of the train config"):
        validate_args("train", ["~debug", "debug.x=1"])


@pytest.mark.parametrize(
    "name, given, meant",
    [
        ("generate", "prompt=he does n't know", "he does n't know"),  # a quote: Hydra's inner quotes are double
        ("generate", "prompt='it's'", "it's"),  # quoted for Hydra already, a quote inside
        ("train", "data.data_dir=/tmp/a=b$c", "/tmp/a=b$c"),  # `$`: a shell's, in double quotes
    ],
)
def test_the_quoting_a_refused_override_is_given_passes_its_value_through_a_shell_to_hydra(name, given, meant):
    """An override Hydra's grammar refuses is told to quote its value: the e.g. it gives, pasted into a shell (bash,
    a real one), reaches Hydra as an override whose value is the one meant."""
    with pytest.raises(ConfigError) as refused:
        validate_args(name, [given])
    fix = re.search(r"e\.g\. (.*) \(the outer quotes for the shell", str(refused.value))[1]
    word = subprocess.run(["bash", "-c", f"printf %s {fix}"], capture_output=True, text=True, check=True).stdout
    assert OverridesParser.create().parse_override(word).value() == meant, (fix, word)


@pytest.mark.parametrize("given", ["seed=tag(1)", "dropout=tag(x,none)"])
def test_the_tag_a_refusal_gives_labels_a_sweep_the_check_takes(given):
    """tag() with no tag before its value (`seed=tag(1)`), or with names alone (`dropout=tag(x,none)`: the last one the
    value): the fix given has a tag and a sweep of the values, and the check takes it as one job."""
    with pytest.raises(ConfigError) as refused:
        validate_args("train", [given])
    fix = shlex.split(str(refused.value).split("tag() takes its tags, then the sweep they label: ", 1)[1])
    assert fix[0] == "-m" and validate_args("train", fix) == 1, fix


def test_a_group_whose_default_is_a_list_given_null_is_not_told_to_take_it_away_with_tilde():
    """regularizer=null (a group whose default is a list of options, none: not an optional group, null by default):
    its options, or leave it out; not ~regularizer, which Hydra refuses for it."""
    with pytest.raises(ConfigError) as refused:
        validate_args("train", ["regularizer=null"])
    assert str(refused.value) == (
        "regularizer=null: regularizer is a config group and null is not one of its options: choose one of "
        "early_stopping, embedding_dropout, layer_norm, tied_embeddings, weight_decay, or leave regularizer= out to "
        "keep its default"
    )


def test_a_primary_config_that_is_nowhere_is_one_line_without_hydras_search_path():
    """--config-name=nope: Hydra's message, without the search path it lists on the lines after it."""
    with pytest.raises(ConfigError) as refused:
        validate_args("train", ["--config-name=nope"])
    assert str(refused.value) == "Cannot find primary config 'nope'. Check that it's in your config search path."


@pytest.mark.parametrize(
    "given, says",
    [
        (  # a key under a mapping of the launcher's (submitit_slurm's additional_parameters)
            "hydra.launcher.additional_parameters.mail=x",
            "hydra.launcher.additional_parameters.mail is a setting of hydra/launcher=submitit_slurm, and this "
            "command's launcher is basic: add hydra/launcher=submitit_slurm, or leave "
            "hydra.launcher.additional_parameters.mail out",
        ),
        (  # a setting of several: rnnreg's own launcher config the fix
            "hydra.launcher.partition=gpu",
            "hydra.launcher.partition is a setting of hydra/launcher=slurm and hydra/launcher=submitit_slurm, and this "
            "command's launcher is basic: add hydra/launcher=slurm, or leave hydra.launcher.partition out",
        ),
        (
            "hydra.launcher.nope=1",
            "hydra.launcher.nope is not a setting of this command's launcher (basic): leave it out, or pick its "
            "launcher",
        ),
    ],
)
def test_a_launcher_setting_this_commands_launcher_lacks_names_the_launchers_that_have_it(given, says):
    with pytest.raises(ConfigError) as refused:
        validate_args("train", ["-m", "seed=1,2", given])
    assert str(refused.value) == f"{given}: {says}"


def test_a_relative_path_a_job_would_read_from_its_run_folder_is_one_line(tmp_path, monkeypatch):
    """hydra.job.chdir=true runs the job in its run folder, where a relative data.data_dir, ckpt_path or (for
    ckpt_path=last) paths.output_root is not what the command meant: refused before the folder is made (before, the
    job failed in it: `data.data_dir=relc is not a folder`, of a folder that is there)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relc").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.ckpt").write_bytes(b"")  # (a file, as the check before this one asks)
    chdir = ["hydra.job.chdir=true", "data=text"]
    for args, key, path in (
        (["data.data_dir=relc"], "data.data_dir", "relc"),
        ([f"data.data_dir={tmp_path}/relc", "ckpt_path=run/last.ckpt"], "ckpt_path", "run/last.ckpt"),
        ([f"data.data_dir={tmp_path}/relc", "ckpt_path=last"], "paths.output_root", "outputs"),
    ):
        with pytest.raises(ConfigError, match=rf"^{key}={path}.* is relative, and hydra.job.chdir=true runs the job "):
            validate_args("train", [*chdir, *args])
        assert str(tmp_path / path) in str(pytest.raises(ConfigError, validate_args, "train", [*chdir, *args]).value)
    assert validate_args("train", [*chdir, f"data.data_dir={tmp_path}/relc"]) == 1
    assert validate_args("train", ["data=text", "data.data_dir=relc"]) == 1  # read from here, where it is


def test_a_callback_or_logger_argument_added_with_plus_validates():
    """The fix the "not in the config yet" line gives."""
    assert validate_args("train", ["logger=wandb", "+logger.wandb.notes=hi"]) == 1
    assert validate_args("train", ["+callbacks.model_checkpoint.verbose=true"]) == 1


def test_checkpointing_off_the_rnnreg_way_validates():
    """The fix trainer.enable_checkpointing=false's line gives: the checkpoint callbacks off, Lightning's flag taken."""
    off = [
        "callbacks.model_checkpoint=null",
        "callbacks.last_checkpoint=null",
        "callbacks.checkpoint_on_interrupt=null",
    ]
    assert validate_args("train", ["+trainer.enable_checkpointing=false", *off]) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["+callbacks.last_checkpoint.verbose=true"],
        ["+callbacks.last_checkpoint.every_n_epochs=1"],
        ["+callbacks.last_checkpoint.every_n_train_steps=0", "+callbacks.last_checkpoint.every_n_epochs=1"],
        ["+callbacks.last_checkpoint.save_last=false"],
        ["callbacks.last_checkpoint=null"],
        ["trainer.use_distributed_sampler=true", "trainer.accelerator=cpu"],  # one process: nothing to deal out
        ["+trainer.barebones=false"],
        ["callbacks=early_stopping", "+callbacks.early_stopping.verbose=true"],  # the fix the + line gives
    ],
)
def test_settings_that_keep_last_ckpt_and_the_run_whole_validate(args):
    """What the refusals of last_checkpoint's, barebones' and use_distributed_sampler's settings leave alone: a
    harmless key, ModelCheckpoint's own values for saving at every epoch's end, a single process."""
    assert validate_args("train", args) == 1


@pytest.mark.parametrize(
    "beats",
    [["every_n_epochs=1"], ["every_n_train_steps=0", "every_n_epochs=1"], ["train_time_interval=null"]],
)
def test_a_checkpoint_beat_that_saves_at_every_validation_validates(beats):
    """ModelCheckpoint's own values for saving at every validation, given explicitly: best.ckpt is still the lowest
    val/ppl, so they are taken (only another beat is refused)."""
    assert validate_args("train", [f"+callbacks.model_checkpoint.{beat}" for beat in beats]) == 1


def test_every_n_train_steps_0_alone_is_refused_as_it_would_save_no_best_checkpoint():
    """Lightning takes every_n_train_steps=0 given alone as every_n_epochs=0 too: best.ckpt was never written, and the
    final test took the final weights without a word (found by a probe); given with every_n_epochs=1 it is taken."""
    with pytest.raises(ConfigError, match=r"^callbacks.model_checkpoint.every_n_train_steps=0: checkpoints/best.ckpt "):
        validate_args("train", ["+callbacks.model_checkpoint.every_n_train_steps=0"])


# Values no run can train with, written out by hand: the bad-value table above is made from the schema's own rules,
# so a rule loosened by mistake would loosen the table with it.
@pytest.mark.parametrize(
    "override",
    [
        *(f"dropout.{site}=1.0" for site in ("p", "input", "between", "output", "recurrent", "weight_drop")),
        "dropout.embedding=1.0",
        "optim.lr=0",
        "optim.decay=0",
        "optim.momentum=1.0",
        "optim.weight_decay=-0.001",
        "model.init_scale=0",
        "model.hidden_size=0",
        "model.num_layers=0",
        "trainer.gradient_clip_val=null",
        "trainer.gradient_clip_val=0",
        "trainer.max_epochs=0",
        "data.bptt=0",
        "data.eval_bptt=0",
        "data.batch_size=0",
    ],
)
def test_values_no_run_can_train_with_are_refused(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}={re.escape(value)}\S* must be "):
        validate_args("train", ["experiment=smoke", override])


@pytest.mark.parametrize(
    "override,message",
    [  # a value where a mapping goes: its keys and the way to set them (Hydra: "Error merging override", or
        # the schema's word for an entry of instantiable nodes)
        ("paper=[1]", r"^paper=\[1\]: paper is a mapping \(small, medium, large\): set its keys one by one \(paper"),
        ("paper.small=5", r"^paper.small=5 must be null or a mapping of valid_ppl, test_ppl \(e.g. paper.small.valid"),
        ("paper=5", r"^paper=5 must be null or a mapping of names to mappings of valid_ppl, test_ppl: set its keys"),
    ],
)
def test_a_value_where_a_mapping_goes_names_its_keys(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_args("report", ["path=.", override])
    with pytest.raises(ConfigError, match=r"^data.files=4 must be a mapping of train, valid, test: set its keys one"):
        validate_args("train", ["data.files=4"])
    with pytest.raises(ConfigError, match=r"^data.files=null must be a mapping of train, valid, test: set its keys"):
        validate_args("train", ["data.files=null"])  # (null only where the schema takes it)
    # an entry of callbacks is a class to instantiate: a mapping without _target_ is none
    with pytest.raises(ConfigError, match=r"^callbacks.mine=\{'x': 1\} must be null or a mapping with _target_ \(the"):
        validate_args("train", ["+callbacks.mine={x:1}"])


@pytest.mark.skipif(CUDA, reason="a GPU is present")
def test_a_gpu_accelerator_without_a_gpu_is_refused():
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu needs a CUDA GPU and this machine has none"):
        validate_args("train", ["trainer=gpu"])
    with pytest.raises(ConfigError, match=r"^device=cuda needs a CUDA GPU"):
        validate_args("generate", [f"ckpt_path={fake_checkpoint()}", "device=cuda"])


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="an Apple GPU is present")
def test_an_mps_accelerator_without_an_apple_gpu_is_refused():
    """One line before the run starts, not Lightning's traceback from inside Hydra's instantiate."""
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=mps needs an Apple GPU and this machine has none"):
        validate_args("train", ["trainer.accelerator=mps"])


# -- everything a user can compose is accepted ----------------------------------------------------------
def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_every_config_a_user_can_compose_validates(tmp_path):
    jobs = 0
    for experiment in options("experiment"):
        jobs += validate_args("train", [f"experiment={experiment}"])
    for dropout in options("dropout"):
        jobs += validate_args("train", [f"dropout={dropout}"])  # paper_medium: p = 0.5
    jobs += validate_args("train", ["experiment=smoke", "dropout=none"])  # the small recipe, p = 0
    jobs += validate_args("train", ["dropout=none", "dropout.p=0.7"])  # p unused by none: fine
    jobs += validate_args("train", [f"regularizer=[{','.join(options('regularizer'))}]"])
    for group in ("regularizer", "logger", "callbacks", "model", "trainer"):
        for option in options(group):
            if option != "gpu" or CUDA:
                jobs += validate_args("train", [f"{group}={option}"])
    jobs += validate_args("train", ["data=text", f"data.data_dir={tmp_path}", "trainer.accelerator=cpu"])
    jobs += validate_args("train", ["experiment=smoke", "hparams_search=optuna", "dropout=non_recurrent"])
    jobs += validate_args("train", ["+trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=0.5"])
    jobs += validate_args("train", ["-m", "seed=1,2,3", "dropout=none,non_recurrent"])
    jobs += validate_args("train", ["experiment=ablation_placement_small", "hydra.sweeper.params.dropout='none,both'"])
    other = shutil.copy(fake_checkpoint(), tmp_path / "other.ckpt")  # (an ensemble of one file twice is refused)
    jobs += validate_args("eval", [f"ckpt_path=[{fake_checkpoint()},{other}]", "mc_samples=4"])
    jobs += validate_args("generate", [f"ckpt_path={fake_checkpoint()}", "prompt=the market", "num_words=0"])
    jobs += validate_args("report", ["path=outputs"])
    assert jobs >= 60


# -- real processes: one line, exit 2, nothing created ----------------------------------------------------
@pytest.mark.parametrize(
    "script,args,starts",
    [
        (
            "rnnreg-train",
            ["experiment=smoke", "dropout.input=abc"],
            "error: dropout.input=abc must be a number in [0, 1)",
        ),
        (
            "rnnreg-train",
            ["model.hiddn=3"],
            "error: model.hiddn is not a key of model: did you mean model.hidden_size?",
        ),
        (
            "rnnreg-train",
            ["-m", "experiment=smoke", "dropout=none,non_recurrent"],
            "error: dropout=non_recurrent drops",
        ),
        (
            "rnnreg-generate",
            ["num_words=-1", f"ckpt_path={NOT_A_CKPT}"],
            f"error: ckpt_path={NOT_A_CKPT} is not a checkpoint",
        ),
        ("rnnreg-eval", ["ckpt_path=[]"], "error: ckpt_path=[] is an empty list"),
        ("rnnreg-train", ["data=text"], "error: data.data_dir is required"),
        ("rnnreg-train", ["debug=null"], "error: debug=null: debug is a config group"),
        ("rnnreg-generate", ["prompt=he does n't know"], "error: prompt=he does n't know is not an override Hydra"),
        (  # Hydra's AssertionError traceback ("Unexpected type for root: NoneType")
            "rnnreg-train",
            ["-m", "hydra.sweeper.params.seed='1,2'"],
            "error: hydra.sweeper.params.seed='1,2': this command's sweeper (basic) has no search space to add to",
        ),
        (
            "rnnreg-train",
            ["speed.fast_step=true", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"],
            "error: speed.fast_step=true needs one process",  # was found once the trainer was built
        ),
    ],
)
def test_console_scripts_stop_before_creating_anything(tmp_path, script, args, starts):
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    dirs = [f"hydra.run.dir={out}/run", f"hydra.sweep.dir={out}/sweep", f"paths.output_root={out}"]
    env = os.environ | {"HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([str(BIN / script), *args, *dirs], capture_output=True, text=True, env=env, cwd=cwd)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), proc.stderr
    assert not out.exists() and not any(cwd.iterdir())


def test_a_sweep_is_refused_for_any_combination_of_its_keys(tmp_path, tiny_corpus):
    """Every combination of a sweep's values is a job checked before Hydra runs, not only its first or each key's
    values side by side: here only the third (model.lstm's second value with model.layer_norm's first) cannot run,
    and the command stops on it in one line, exit 2, before any folder is made or any job trains."""
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    sweep = ["-m", "model.lstm=step,fused", "model.layer_norm=true,false"]
    tiny = [*TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    dirs = [f"hydra.run.dir={out}/run", f"hydra.sweep.dir={out}/sweep", f"paths.output_root={out}"]
    env = os.environ | {"HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [str(BIN / "rnnreg-train"), *sweep, *tiny, *dirs], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: model.lstm=fused cannot run model.layer_norm=true"), proc.stderr
    assert lines[0].endswith("(sweep job model.lstm=fused model.layer_norm=True)"), proc.stderr
    assert not out.exists() and not any(cwd.iterdir())


def test_a_glob_over_a_group_is_checked_as_hydras_sweeper_runs_it(tmp_path):
    """`dropout=glob(...)` sweeps the options Hydra's sweeper matches, in its order: conf/'s and a --config-dir's
    (a file starting with _ too), not hydra.searchpath's entries (its sweeper lists the main search path only). Each
    is a job the check composes and checks (before, the check could not expand a glob and left the sweep unchecked)."""
    from hydra.core.global_hydra import GlobalHydra

    from rnnreg.command_line import sweep_lines
    from rnnreg.config_search import config_roots, hydra_as_main

    yours = tmp_path / "my_configs"
    (yours / "dropout").mkdir(parents=True)
    for name in ("mine", "_mine"):
        (yours / "dropout" / f"{name}.yaml").write_text((Path(CONF_DIR) / "dropout" / "recurrent.yaml").read_text())
    globs = ("dropout=glob(*)", "dropout=glob(*,exclude=[none,both])", "model=glob(*,exclude=small)")
    for line in (*globs, "+regularizer=glob(e*)", "dropout=glob(*mine)"):
        with hydra_as_main(str(yours)):  # Hydra's sweeper's own expansion, given its config loader
            loader = GlobalHydra.instance().config_loader()
            (hydras,) = OverridesParser.create(config_loader=loader).parse_overrides([line])
            expected = [f"{hydras.get_key_element()}={v}" for v in hydras.sweep_string_iterator()]
            (ours,) = OverridesParser.create().parse_overrides([line])
            assert sweep_lines(ours, config_roots([ours], str(yours))) == expected and len(expected) > 1, line
    assert "dropout=_mine" in expected
    assert validate_args("train", ["-m", "-cd", str(yours), "dropout=glob(*mine)", "dropout.p=0.2"]) == 2
    with pytest.raises(ConfigError, match=r"^dropout=glob\(\*mine\) matches no option of dropout: "):
        validate_args("train", ["-m", f"hydra.searchpath=[file://{yours}]", "dropout=glob(*mine)", "dropout.p=0.2"])


def test_sweep_jobs_checked_are_every_combination_in_order():
    """job_combinations: the cartesian product of the swept keys' values, the first key's slowest (as Hydra's basic
    sweeper runs them), or past MAX_JOBS_CHECKED each value once; one empty job for no sweep."""
    keys = {"a": ["a=1", "a=2"], "b": ["b=1", "b=2", "b=3"], "c": ["c=x", "c=y"]}
    assert job_combinations(keys) == [(a, b, c) for a in keys["a"] for b in keys["b"] for c in keys["c"]]
    assert job_combinations({"a": ["a=1", "a=2"]}) == [("a=1",), ("a=2",)]
    assert job_combinations({}) == [()]
    # past MAX_JOBS_CHECKED: every value of every key once, the other keys at their first value
    many = {"a": [f"a={i}" for i in range(20)], "b": [f"b={i}" for i in range(20)]}
    assert 20 * 20 > MAX_JOBS_CHECKED
    jobs = job_combinations(many)
    assert len(jobs) == 39 and ("a=0", "b=0") in jobs
    assert {a for a, b in jobs if b == "b=0"} == set(many["a"]) and {b for a, b in jobs if a == "a=0"} == set(many["b"])


@pytest.mark.parametrize(
    "split,text,override,message",
    [
        (
            "valid",
            "w1\n",
            "data.batch_size=4",
            r"^the valid split \S*valid.txt of 2 tokens is too short for 4 streams "
            r"\(data.batch_size=4\): ",
        ),
        (
            "test",
            "w1\n" * 4,
            "data.test_batch_size=5",
            r"^the test split \S*test.txt of 8 tokens is too short for 5 "
            r"streams \(data.test_batch_size=5\)",
        ),
        # 18 tokens: 4 steps per stream, and a window of data.bptt=4 needs 5 (it predicts the next token)
        (
            "train",
            "<unk>\n" + "w1 w2 w3 w4 w5 w6 w7\n" * 2,
            "data.bptt=4",
            r"^the train split \S*train.txt is shorter "
            r"than one training window: 4 steps per stream \(data.batch_size=4 streams\) for data.bptt=4: set "
            r"data.bptt=3 or less, or data.batch_size=3 or less",
        ),
    ],
)
def test_a_split_too_short_stops_before_any_file(tiny_cfg, tiny_corpus, tmp_path, split, text, override, message):
    (tiny_corpus / f"{split}.txt").write_text(text)
    with pytest.raises(DataError, match=message):
        train(tiny_cfg(override))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key,split", [("limit_val_batches", "valid"), ("limit_test_batches", "test")])
def test_a_fraction_of_windows_that_leaves_none_stops_before_any_file(tiny_cfg, tmp_path, key, split):
    """trainer.limit_val_batches=0.001 (before: Lightning's MisconfigurationException traceback once training had
    begun, exit 1): one line with the smallest fraction that keeps a window in each loader of the split (the
    test's batched one has fewer windows than its one stream)."""
    streams = "data.batch_size=4"
    with pytest.raises(ConfigError) as refused:
        train(tiny_cfg(f"trainer.{key}=0.001", "data.eval_bptt=5"))
    windows = int(re.search(r"none of its (\d+) windows", str(refused.value))[1])
    assert str(refused.value) == (
        f"trainer.{key}=0.001 leaves the {split} split none of its {windows} windows ({streams} streams of 5 "
        f"steps): set trainer.{key} to a fraction of at least {smallest_fraction(windows):g} (1.0: the whole split) "
        f"or a whole number of windows (e.g. trainer.{key}=1)"
    )
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "checkpoints").exists()
    fraction = f"trainer.{key}={smallest_fraction(windows):g}"  # the one it gives: the run validates and tests
    train(tiny_cfg(fraction, "data.eval_bptt=5", "trainer.max_epochs=1", "trainer.limit_train_batches=2", run="ok"))


def test_train_validates_a_config_it_is_given(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"^optim.decay=-1.2 must be a number > 0"):
        train(tiny_cfg("optim.decay=-1.2"))
    assert not (tmp_path / "run").exists()


def test_a_file_that_is_no_rnnreg_checkpoint_writes_nothing_in_the_run_folder(tiny_cfg, tmp_path):
    """Found by Lightning's restore, after start-up: still no metrics.json, logger file or checkpoint."""
    with pytest.raises(CheckpointError):
        train(tiny_cfg(f"ckpt_path={fake_checkpoint()}", "logger=csv"))
    run = tmp_path / "run"
    assert not run.exists() or not [p for p in run.rglob("*") if p.is_file()], list(run.rglob("*"))


def test_bf16_autocast_of_the_fused_lstm_is_refused_on_a_cpu_without_a_bf16_lstm_and_taken_elsewhere():
    """oneDNN's bf16 LSTM needs AVX512-BF16 or AMX: on a CPU with AVX2 alone nn.LSTM under bf16 autocast stopped at
    its first window with oneDNN's words and a traceback. There the command is refused in one line before anything
    runs; where the CPU has one it is taken. The step loop, and float32, run on any CPU."""
    lstm = torch.nn.LSTM(200, 200, 2)  # the paper's small model's LSTM, at its batch
    try:
        with torch.autocast("cpu", torch.bfloat16):
            lstm(torch.zeros(35, 20, 200))
        runs = True
    except RuntimeError as err:
        assert "primitive descriptor" in str(err)  # oneDNN's words, not another failure
        runs = False
    assert cpu_runs_fused_lstm_in_bf16() == runs  # the probe's small LSTM answers for the paper's
    args = ["experiment=paper_small", "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"]
    if runs:
        assert validate_args("train", args) == 1
    else:
        refusal = (
            r"^trainer.precision=bf16-mixed runs the fused LSTM \(nn.LSTM\) in bf16 on oneDNN, which this CPU cannot "
            r"\(it needs AVX512-BF16 or AMX\): use trainer.precision=32-true, or model.lstm=step .*\)$"
        )
        with pytest.raises(ConfigError, match=refusal):
            validate_args("train", args)
        with pytest.raises(ConfigError, match=refusal[:-3] + r".*\(sweep job seed=1\)$"):
            validate_args("train", ["-m", *args, "seed=1,2", "hydra/launcher=stacked"])
    for taken in (
        ["model.lstm=step"],
        ["dropout=recurrent", "dropout.p=0.3"],
        ["regularizer=layer_norm"],
        ["trainer.precision=32"],
    ):
        assert validate_args("train", [*args, *taken]) == 1, taken


def test_on_a_cpu_without_a_bf16_lstm_the_refusal_reads_the_lstm_the_model_runs(monkeypatch):
    """Where oneDNN has no bf16 LSTM (stood in for: this CPU may have one), bf16-mixed is refused for a model that runs
    nn.LSTM's kernel, model.lstm=layers included, and taken for one on the step loop: model.lstm=step, or auto with
    recurrent dropout or layer norm (model.lstm as the run builds it, not as auto alone would read it)."""
    import rnnreg.model

    monkeypatch.setattr(rnnreg.model, "cpu_runs_fused_lstm_in_bf16", lambda: False)
    args = ["experiment=paper_small", "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"]
    for refused in ([], ["model.lstm=layers"], ["model.lstm=fused"]):
        with pytest.raises(ConfigError, match=r"^trainer.precision=bf16-mixed runs the fused LSTM \(nn.LSTM\)"):
            validate_args("train", [*args, *refused])
    for taken in (["model.lstm=step"], ["dropout=recurrent", "dropout.p=0.3"], ["regularizer=layer_norm"]):
        assert validate_args("train", [*args, *taken]) == 1, taken


def test_bf16_on_a_cpu_without_a_bf16_lstm_is_refused_wherever_lightning_would_pick_the_cpu(monkeypatch):
    """Where oneDNN has no bf16 LSTM (stood in for: this CPU may have one), bf16-mixed of the fused LSTM is refused
    for trainer.accelerator=auto on a machine without a GPU (Lightning picks the CPU), and for a trainer config that
    leaves the accelerator out (Lightning's auto); on a machine with a GPU (its count stood in for) auto picks the
    GPU, and the run is taken."""
    import rnnreg.model

    monkeypatch.setattr(rnnreg.model, "cpu_runs_fused_lstm_in_bf16", lambda: False)
    refusal = r"^trainer.precision=bf16-mixed runs the fused LSTM \(nn.LSTM\) in bf16 on oneDNN"
    args = ["experiment=paper_small", "trainer.precision=bf16-mixed"]
    monkeypatch.setattr(trainer_rules, "cuda_gpus", lambda: 0)
    for given in (["trainer.accelerator=auto"], ["~trainer.accelerator"]):
        with pytest.raises(ConfigError, match=refusal):
            validate_args("train", [*args, *given])
    monkeypatch.setattr(trainer_rules, "cuda_gpus", lambda: 1)
    assert validate_args("train", [*args, "trainer.accelerator=auto"]) == 1


def test_a_precision_given_as_a_number_is_the_precision_of_its_text(tmp_path, monkeypatch):
    """trainer.precision=16 or 32 (a number on the command line, which Lightning takes as '16' and '32'): 16 on a CPU
    is refused as 16-mixed is (on trainer.accelerator=auto too, where the machine has no GPU), and a stacked sweep
    takes 32 as it takes 32-true."""
    with pytest.raises(ConfigError, match=r"^trainer.precision=16 needs a GPU \(fp16 on CPU is not supported\)"):
        validate_args("train", ["trainer.accelerator=cpu", "trainer.precision=16"])
    # trainer.accelerator=auto is the CPU on a machine without a GPU (their count stood in for), a GPU on one with
    for gpus in (0, 1):
        monkeypatch.setattr(trainer_rules, "cuda_gpus", lambda gpus=gpus: gpus)
        if gpus:
            validate_args("train", ["trainer.precision=16"])
            continue
        with pytest.raises(ConfigError, match=r"^trainer.precision=16 needs a GPU \(fp16 on CPU is not supported\)"):
            validate_args("train", ["trainer.precision=16"])
    stacked = ["-m", "hydra/launcher=stacked", "seed=1,2", "trainer.accelerator=cpu", "trainer.precision=32"]
    assert validate_args("train", [*stacked, f"hydra.sweep.dir={tmp_path / 'sweep'}"]) == 2


def test_a_bf16_run_on_this_cpu_trains_or_is_refused_before_it_makes_anything(tiny_corpus, tmp_path):
    """rnnreg-train under bf16 autocast, a real process: the step loop trains on any CPU; the fused LSTM trains
    where oneDNN has a bf16 LSTM, and elsewhere exits 2 with one line and no run folder."""
    cli = ["experiment=paper_small", *TINY, f"data.data_dir={tiny_corpus}", "trainer.max_epochs=1", "test=false"]
    cli += ["trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.precision=bf16-mixed"]
    step = run("rnnreg-train", *cli, "model.lstm=step", f"hydra.run.dir={tmp_path / 'step'}", check=False)
    assert step.returncode == 0, step.stderr[-2000:]
    assert json.loads((tmp_path / "step" / "metrics.json").read_text())["status"] == "completed"
    fused = run("rnnreg-train", *cli, f"hydra.run.dir={tmp_path / 'fused'}", check=False)
    if cpu_runs_fused_lstm_in_bf16():
        assert fused.returncode == 0, fused.stderr[-2000:]
    else:
        assert fused.returncode == 2 and "Traceback" not in fused.stderr
        (line,) = fused.stderr.strip().splitlines()
        assert line.startswith("error: trainer.precision=bf16-mixed runs the fused LSTM (nn.LSTM) in bf16 on oneDNN")
        assert not (tmp_path / "fused").exists()


@pytest.mark.parametrize(
    "trainer, processes",
    [
        ({"devices": 2}, 2),
        ({"devices": "2"}, 2),
        ({"devices": 2, "num_nodes": 2}, 4),
        ({"devices": 1, "num_nodes": 2}, 2),
        ({"devices": "auto", "accelerator": "cpu"}, 1),
        ({"devices": "auto"}, max(1, torch.cuda.device_count())),  # (accelerator=auto: every GPU here, or the CPU)
        ({"accelerator": "cpu"}, 1),  # (devices left out: Lightning's auto)
    ],
)
def test_trainer_processes_are_the_processes_lightnings_trainer_starts(trainer, processes):
    """The one count of DDP processes the config checks read (joblib's, stacked's, data.batch_size's,
    speed.fast_step's), against the real Trainer built from the same settings on this machine."""
    import lightning as L

    assert trainer_processes(OmegaConf.create(trainer)) == processes
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    built = L.Trainer(**trainer, **quiet, enable_model_summary=False, strategy="ddp" if processes > 1 else "auto")
    assert built.num_devices * built.num_nodes == processes


@pytest.mark.parametrize(
    "devices, refusal",
    [
        ([0, 1], None),
        (
            [1, 3],
            "trainer.devices=[1, 3] names GPU 3 but this machine has 2 GPU(s), 0 to 1: name GPUs among them, or "
            "set trainer.devices=auto",
        ),
        (
            [2],
            "trainer.devices=[2] names GPU 2 but this machine has 2 GPU(s), 0 to 1: name GPUs among them, or set "
            "trainer.devices=auto",
        ),
        # a count of GPUs: as many as there are, not one more
        (2, None),
        (3, "trainer.devices=3 but this machine has 2 GPU(s): set trainer.devices to at most 2"),
    ],
)
def test_gpu_indices_this_machine_lacks_are_one_line(tmp_path, monkeypatch, devices, refusal):
    """On a machine with 2 GPUs (their count stood in for): an index past them, or a count over them, is refused
    naming it, not by Lightning's traceback from inside Hydra's instantiate."""
    from helpers import compose_config
    from rnnreg.validation import validate

    monkeypatch.setattr(trainer_rules, "cuda_gpus", lambda: 2)
    given = str(devices) if isinstance(devices, int) else "[" + ",".join(str(d) for d in devices) + "]"
    cfg = compose_config(["trainer=ddp", "trainer.accelerator=gpu", f"trainer.devices={given}"], tmp_path)
    if refusal is None:
        validate(cfg, "train")
        return
    with pytest.raises(ConfigError) as err:
        validate(cfg, "train")
    assert str(err.value) == refusal


@pytest.mark.parametrize(
    "devices, accelerator, processes",
    [
        ([0, 1], "gpu", 2),
        ("0,1", "gpu", 2),
        ("1,", "gpu", 1),  # (Lightning's text of one GPU index)
        (-1, "gpu", 4),
        ("-1", "auto", 4),
        ("auto", "auto", 4),
        ("auto", "cuda", 4),
        ("auto", "cpu", 1),
        (-1, "cpu", 1),  # (Lightning refuses it on a CPU, in its own words)
    ],
)
def test_trainer_processes_on_a_machine_with_four_gpus(devices, accelerator, processes):
    """GPU indices are one process each; devices=auto or -1 one per GPU where the accelerator may be one."""
    trainer = OmegaConf.create({"devices": devices, "accelerator": accelerator})
    assert trainer_processes(trainer, gpus=4) == processes
    assert trainer_processes(trainer, gpus=0) == (processes if devices not in ("auto", -1, "-1") else 1)


def test_a_messages_paper_values_are_the_paper_experiments_own():
    """A key's message names the values the paper's experiments set it to, as conf/experiment/paper_<size>.yaml
    compose (their one owner): the large model's lr decay is 1.15, which a hint written in code had as "1.2 to 2"."""
    from rnnreg.recipes import compose_config

    papers = [compose_config(f"experiment=paper_{size}") for size in ("small", "medium", "large")]
    with_paper = [(key, r) for key, r in fields(SCHEMAS["train"], papers[0]) if r.paper]
    assert {key for key, _ in with_paper} >= {"data.bptt", "model.hidden_size", "optim.decay", "optim.lr"}
    for key, r in with_paper:
        values = [show(OmegaConf.select(cfg, r.paper)) for cfg in papers]
        message = r.describe()
        assert "the paper's: " in message and all(re.search(rf"\b{re.escape(v)}\b", message) for v in values), key
    optim = dict(with_paper)
    assert optim["optim.decay"].describe().endswith("the paper's: 2.0 (small), 1.2 (medium), 1.15 (large))")


@pytest.mark.parametrize("accelerator, processes", [("gpu", 4), ("auto", 4), ("cpu", 1)])
def test_a_trainer_config_without_devices_starts_as_many_processes_as_lightnings_auto(accelerator, processes):
    """trainer.devices left out (a trainer config of the user's, or ~trainer.devices): Lightning's default is auto,
    one process per GPU where the accelerator may be one (not one process)."""
    assert trainer_processes(OmegaConf.create({"accelerator": accelerator}), gpus=4) == processes


def test_an_own_corpus_given_without_data_text_is_not_read_as_ptb(tiny_corpus, tmp_path):
    """data.data_dir=<a folder of train.txt, valid.txt, test.txt> without data=text: PTB's config (the default)
    downloaded ptb.*.txt into the folder and trained on PTB, or, offline, said to download PTB there by hand. Refused
    before anything is made, naming the word the command lacks; data=text reads it, and PTB's own folder passes."""
    before = sorted(p.name for p in tiny_corpus.iterdir())
    with pytest.raises(ConfigError) as refused:
        validate_args("train", [f"data.data_dir={tiny_corpus}"])
    assert str(refused.value) == (
        f"data.data_dir={tiny_corpus} holds train.txt, valid.txt, test.txt, a corpus of your own, and PTB's config "
        "(data=ptb, the default) would download ptb.train.txt, ptb.valid.txt, ptb.test.txt there and use PTB, not "
        "that corpus: add data=text to read it"
    )
    assert sorted(p.name for p in tiny_corpus.iterdir()) == before
    assert validate_args("train", ["data=text", f"data.data_dir={tiny_corpus}"]) == 1
    ptb = tmp_path / "ptb"  # (an empty folder: PTB is downloaded there)
    ptb.mkdir()
    assert validate_args("train", [f"data.data_dir={ptb}"]) == 1
