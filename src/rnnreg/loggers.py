"""Weights & Biases: online when credentials are configured, otherwise offline with real run files; one
group per sweep (seeds added in a folder inside it join it), run names from the swept overrides, the checkpoint
kept as an artifact offline too; a resumed run goes on in its W&B run (its id, group and name are kept in the
checkpoints).
The CSV logger: Lightning's, keeping the rows an earlier part of a run resumed in its own folder wrote."""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import netrc
import os
import re
import shlex
import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig

from rnnreg.errors import CheckpointError, DataError
from rnnreg.multirun_jobs import (
    SWEEP_FILE,
    command_line_gives,
    differing,
    in_multirun,
    is_sweep_folder,
    job_swept_keys,
    override_key,
    sweep_job,
    task_overrides,
)
from rnnreg.record_yaml import recorded_swept_keys
from rnnreg.resumed_run import WANDB_LABELS
from rnnreg.run_record import CHECKPOINTS
from rnnreg.task_config import plain


class KeptRowsWriter(ExperimentWriter):
    """Lightning's CSV writer, which deletes an existing metrics.csv, except that given `keep` it keeps that
    file's rows logged before this run's first step (those after it, the resumed part redoes) and writes
    them first, when it first saves: until then the file is left as it was."""

    def __init__(self, log_dir: str, keep: bool) -> None:
        self.earlier: list[dict] | None = None
        path = Path(log_dir, self.NAME_METRICS_FILE)
        if keep and path.is_file():
            with open(path, newline="") as f:
                self.earlier = list(csv.DictReader(f))
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if self.earlier is None:
            super()._check_log_dir_exists()

    def save(self) -> None:
        if self.earlier is not None and self.metrics:
            first = min(row["step"] for row in self.metrics)
            kept = [
                {key: value for key, value in row.items() if value not in ("", None)}
                for row in self.earlier
                if (row.get("step") or "").isdigit() and int(row["step"]) < first
            ]
            self.earlier, self.metrics = None, kept + self.metrics
            Path(self.metrics_file_path).unlink(missing_ok=True)  # written anew, kept rows first
        super().save()


class KeptRowsCSVLogger(CSVLogger):
    """Lightning's CSVLogger (conf/logger/csv.yaml). A run resumed in its own folder (its checkpoints/ holds
    the checkpoint it goes on from: ckpt_path=last) keeps the csv/metrics.csv rows of its earlier part, which
    Lightning's writer deletes: the file holds every epoch, as rnnreg-report draws it."""

    def __init__(self, save_dir, *args, **kwargs) -> None:
        super().__init__(save_dir, *args, **kwargs)
        # a run starts in a folder with checkpoints only to go on from one of them (rnnreg.runtime refuses others)
        self.resumed_here = any(Path(save_dir, CHECKPOINTS).glob("*.ckpt"))

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeptRowsWriter(self.log_dir, keep=self.resumed_here)
        return self._experiment


def hyperparameters(cfg: DictConfig) -> dict:
    """What every logger records as the run's config: the resolved config (with `tags`) and Hydra's group
    choices under `choices` (dropout, model, regularizer, experiment, data, ...), one column each in W&B."""
    params = plain(cfg)
    if HydraConfig.initialized():
        params["choices"] = group_choices(HydraConfig.get())
    return params


def group_choices(hydra_cfg: DictConfig) -> dict:
    """Hydra's runtime choices of our config groups; a list group (regularizer=[a,b], which Hydra leaves
    out) as `a+b`, `none` when empty."""
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if k != "hydra" and not k.startswith("hydra/")}
    if not choices.get("regularizer"):
        overrides = OverridesParser.create().parse_overrides(task_overrides(hydra_cfg))
        given = [o for o in overrides if o.key_or_group == "regularizer"]
        value = given[-1].value() if given else []
        choices["regularizer"] = "+".join(map(str, value)) if isinstance(value, list) else str(value or "")
        choices["regularizer"] = choices["regularizer"] or "none"
    return choices


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        return netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_disabled() -> bool:
    """W&B turned off in the environment (WANDB_MODE=disabled, or WANDB_DISABLED=true, as wandb reads them): the
    config's W&B logger is left out, so a run writes no W&B files and prints no `wandb sync` line."""
    return os.environ.get("WANDB_MODE") == "disabled" or os.environ.get("WANDB_DISABLED", "").lower() == "true"


def run_name(fallback: str | None, job_of: Path | None = None) -> str | None:
    """What tells this run apart from the other jobs of its sweep (`dropout=recurrent,seed=2`; `job_of`: the
    sweep whose job this single run is, sweep_of_job_run); outside a sweep, or in one that sweeps no key
    (`-m seed=3`), its overrides that change what is computed; `fallback` when there are none (an empty name would
    make W&B draw a random one)."""
    if not HydraConfig.initialized():
        return fallback
    overrides = task_overrides(HydraConfig.get())
    swept = job_swept_keys() if job_of is None else recorded_swept_keys(job_of / SWEEP_FILE)
    if job_of is None and swept is not None:  # more seeds in a folder inside a sweep: named as that sweep's jobs too
        sweep = Path(os.path.abspath(HydraConfig.get().sweep.dir))
        if (outer := outermost_sweep(sweep)) != sweep:
            with contextlib.suppress(DataError):  # (its record unreadable: this sweep's own keys name the run)
                swept = [*swept, *(recorded_swept_keys(outer / SWEEP_FILE) or [])]
    # a sweep of what names no run (speed.tf32=true,false): its swept overrides as they are, which tell its jobs apart
    told_apart = differing(overrides, swept) or [o for o in overrides if swept and override_key(o) in swept]
    return ",".join(told_apart or differing(overrides, None)) or fallback


def sweep_of_job_run() -> Path | None:
    """The sweep whose job this single run is: one run in a sweep's numbered job folder (`hydra.run.dir=<sweep>/3`,
    as rnnreg-report's commands go on with a basic sweep's stopped job or start one that never started there:
    multirun_jobs.sweep_job); None elsewhere, and in a multirun."""
    if not HydraConfig.initialized() or in_multirun():
        return None
    job = sweep_job(Path(os.path.abspath(HydraConfig.get().runtime.output_dir)))
    return job.sweep if job is not None else None


# the default sweep folder's name (conf/hydra/default.yaml: ${now:%Y-%m-%d_%H-%M-%S-%f}), one sweep's alone
DATED_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(-\d+)?")


def sweep_group(sweep_dir: str | Path) -> str:
    """The part of a multirun's W&B group after `<group>/`, one sweep's only: the sweep folder's name, where it is a
    default dated one (2026-12-06_15-40-00-123456), else the name and a short hash of its real path (ablation-1a2b3c:
    two sweeps into an `ablation` folder of two parent folders are two groups). A sweep run into a folder inside
    another sweep (more seeds: hydra.sweep.dir=<sweep>/more_seeds) joins that sweep's group (the outermost one's), so
    two studies' `more_seeds` never share a group."""
    folder = outermost_sweep(Path(os.path.abspath(sweep_dir)))
    if DATED_FOLDER.fullmatch(folder.name):
        return folder.name
    return f"{folder.name}-{hashlib.sha256(os.fsencode(folder.resolve())).hexdigest()[:6]}"


def outermost_sweep(folder: Path) -> Path:
    """The sweep folder `folder` (absolute) lies in at the outermost: itself unless it is inside another sweep's
    (more seeds: hydra.sweep.dir=<sweep>/more_seeds)."""
    while is_sweep_folder(folder.parent) and folder.parent != folder:
        folder = folder.parent
    return folder


def wandb_logger(
    offline: bool | None = None,
    group: str | None = None,
    group_by_sweep: bool = True,
    name: str | None = None,
    log_model: bool | str = False,
    resumed_group: str | None = None,
    resumed_name: str | None = None,
    **kwargs,
) -> WandbLogger:
    """Lightning's WandbLogger; `offline: null` means offline exactly when no credentials are configured.
    In a multirun (group_by_sweep) the group is `<group>/<multirun folder>` (sweep_group): one group per sweep; so
    is a sweep's job run alone in its numbered folder (sweep_of_job_run).
    `name: null`: run_name, else `group` (the experiment). Offline, `log_model` is kept for finish_wandb
    (WandbLogger refuses it). `resumed_group`, `resumed_name`: those of the W&B run a resume goes on in (its
    checkpoint's: wandb_run_labels), kept wherever it runs (an Optuna trial resumed in a new folder stays in its
    study's group, under its name), unless the command line gives logger.wandb.group or name."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not has_wandb_credentials()
    experiment = group
    # a sweep's job run alone in its folder (resumed, or started late) is one of that sweep's runs, named as such
    job_of = sweep_of_job_run()
    if resumed_group is not None and not command_line_gives("logger.wandb.group"):
        group = resumed_group
    elif group_by_sweep and (in_multirun() or job_of is not None):
        sweep = sweep_group(HydraConfig.get().sweep.dir if job_of is None else job_of)
        group = f"{group}/{sweep}" if group else sweep
    Path(kwargs.get("save_dir", ".")).mkdir(parents=True, exist_ok=True)
    if resumed_name is not None and not command_line_gives("logger.wandb.name"):
        name = resumed_name
    name = name or run_name(experiment or group, job_of)
    logger = WandbLogger(offline=offline, group=group, name=name, log_model=log_model and not offline, **kwargs)
    if logger._wandb_init.get("anonymous") is None:  # Lightning's None: W&B warns of a setting with no effect
        logger._wandb_init.pop("anonymous", None)
    logger.offline_log_model = bool(log_model) and offline
    return logger


def wandb_run_labels(loggers) -> dict[str, str]:
    """The group and name of the W&B run among `loggers` (`wandb_group`, `wandb_name`: kept in its checkpoints beside
    its id, so that a run resumed from one, in whatever folder, goes on under them); {} without one."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            labels = {key: logger._wandb_init.get(key) for key in WANDB_LABELS}
            return {f"wandb_{key}": value for key, value in labels.items() if isinstance(value, str)}
    return {}


def wandb_run_id(loggers) -> str | None:
    """The id of the W&B run among `loggers`, or None. Checkpoints keep it (`wandb_run_id`), so that a run
    resumed from one logs on into the same W&B run: one run per job however often it was interrupted (offline,
    each part is a run folder with that id, and `wandb sync` uploads the parts into one run in order)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            return logger.version
    return None


def checked_parts(value, source: str | Path) -> list[str]:
    """A checkpoint's `wandb_parts` (the folders of its offline W&B run's earlier parts; untrusted input, like
    the whole file): a list of paths, or a one-line CheckpointError naming the file, before anything is written."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(part, str) and 0 < len(part) <= 4096 and part.isprintable() for part in value
    ):
        raise CheckpointError(
            f"{source} holds {str(value)[:80]!r} as its W&B run's offline folders, which is not a list of paths: "
            f"resume it without logger=wandb, or from a checkpoint rnnreg-train wrote"
        )
    return value


def located_parts(parts: list[str], run_id: str | None, ckpt_path: str | Path) -> tuple[list[str], list[str]]:
    """(found, missing): the earlier parts of offline W&B run `run_id` that checkpoint `ckpt_path` names, each where it
    is now: at its path, else in the `wandb` folder of the run folder that holds the checkpoint (`<run>/checkpoints/`;
    the run's folder moved, or copied, with its parts); `missing`: those in neither place, which no sync command
    can name."""
    beside = Path(ckpt_path).resolve().parent.parent / "wandb"
    found, missing = [], []
    for part in parts:
        path = Path(part)
        if run_id is None or offline_part_start(path, run_id):
            found.append(part)
        elif offline_part_start(moved := beside / path.name, run_id):
            found.append(str(moved))
        else:
            missing.append(part)
    return found, missing


def offline_parts(run_dir: str | Path, run_id: str, earlier: list[str] | tuple = ()) -> list[Path]:
    """Every folder of an offline W&B run, in the order its parts started: the earlier parts a resumed run's
    checkpoint named (a resume into another run folder) and each `offline-run-<start>-<id>` beside `run_dir`
    (a resume in the same folder). Only folders that are parts of this run (named so, holding its
    `run-<id>.wandb`) are kept: a checkpoint from elsewhere cannot put another folder into the sync command.
    `wandb sync` given them all uploads them into the one run, in that order."""
    here = Path(run_dir).parent.glob(f"offline-run-*-{glob.escape(run_id)}*")
    found = (*map(Path, earlier), Path(run_dir), *here)
    parts = {path.resolve(): (start, path) for path in found if (start := offline_part_start(path, run_id))}
    return [path for _, path in sorted(parts.values())]


def offline_part_start(path: Path, run_id: str) -> tuple[str, int] | None:
    """When a part of offline W&B run `run_id` started, from its folder's name: offline-run-<YYYYMMDD_HHMMSS>-<id>, and
    -<n> after it for the n-th part started in the same second (W&B's suffix); None for a folder that is no part of
    it (another name, or no run-<id>.wandb in it)."""
    name = path.name
    stamp, _, rest = name.removeprefix("offline-run-").partition("-")
    suffix = rest.removeprefix(run_id).removeprefix("-")
    is_part = (
        name.startswith("offline-run-")
        and rest in (run_id, f"{run_id}-{suffix}")
        and (suffix == "" or suffix.isdigit())
        and len(stamp) == 15
        and stamp[8] == "_"
        and stamp.replace("_", "", 1).isdigit()
        and (path / f"run-{run_id}.wandb").is_file()
    )
    return (stamp, int(suffix or 0)) if is_part else None


def offline_run_parts(loggers) -> list[Path] | None:
    """The folders of the offline W&B run among `loggers`, its earlier parts first; None if it has none."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._offline:
            run = logger.experiment
            return offline_parts(Path(run.dir).parent, run.id, getattr(logger, "earlier_parts", ()))
    return None


def sync_command(parts: list[Path]) -> str:
    return "wandb sync " + " ".join(shlex.quote(str(part)) for part in parts)


def log_checkpoints(run, best: str | None, last: str | None) -> None:
    """The best and the last checkpoint as versions of the run's `model-<run id>` artifact (Lightning's
    name), aliases best and last (W&B adds latest to the last one logged); one version when they are the
    same file. The files are referenced in
    place (policy immutable: no copy in W&B's staging folder); `wandb sync` uploads them from the run folder."""
    import wandb

    versions: list[tuple[Path, list[str]]] = []
    for path, alias in ((best, "best"), (last, "last")):
        if not path or not Path(path).is_file():
            continue
        same = next((v for v in versions if v[0].samefile(path)), None)
        if same:
            same[1].append(alias)
        else:
            versions.append((Path(path), [alias]))
    for path, aliases in versions:
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata={"file": path.name})
        artifact.add_file(str(path), name="model.ckpt", policy="immutable")
        run.log_artifact(artifact, aliases=aliases)


def finish_wandb(
    loggers: list, summary: dict, exit_code: int = 0, checkpoints: tuple = (None, None), drop_empty_part: bool = False
) -> None:
    """Put the final metrics in each W&B run's summary and close it (one finished run per job); exit_code 1
    marks the run failed. Offline runs asked to log the model keep `checkpoints` (best, last) as artifacts.
    `drop_empty_part`: an offline part with nothing in its history (the config and the summary only) is removed
    once closed (remove_offline_part), and the sync line names the run's other parts."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        run.summary.update(summary)
        if exit_code == 0 and getattr(logger, "offline_log_model", False):
            log_checkpoints(run, *checkpoints)
        run_dir, run_id = Path(run.dir).parent, run.id
        empty = drop_empty_part and logger._offline and run.step == 0
        if empty:
            quiet_closing_lines(run)  # W&B's own would name the part removed below
        run.finish(exit_code=exit_code)
        if not logger._offline:
            continue
        if empty:
            remove_offline_part(run_dir, run_id)
        parts = offline_parts(run_dir, run_id, getattr(logger, "earlier_parts", ()))
        if not parts:
            continue
        if len(parts) == 1:
            print(f"W&B run saved offline; upload it with: {sync_command(parts)}")
        else:  # given together, wandb sync uploads a run's parts one after another, in the order they started
            print(
                f"W&B run {run_id} saved offline in {len(parts)} parts (it was resumed); upload them into the one run, "
                f"in order, with: {sync_command(parts)}"
            )


def quiet_closing_lines(run) -> None:
    """Keep W&B from printing its lines as `run` finishes (the offline folder, its sync command). W&B (0.31, as
    constraints.txt pins it) has no public way once a run has started: `quiet` is read from the settings given to
    wandb.init, run.settings is a copy, and finish takes no such argument; so it is set in the run's private
    settings, which W&B reads as it finishes. A W&B that refuses that (the field renamed, the settings frozen)
    prints its lines: the run still closes, and its part is still removed."""
    try:
        run._settings.quiet = True
    except (AttributeError, TypeError, ValueError):  # (pydantic's refusals are ValueErrors)
        pass


def remove_offline_part(run_dir: Path, run_id: str) -> None:
    """Remove a closed part of offline W&B run `run_id` (a folder offline_part_start names so), W&B's links to it
    beside it (latest-run, debug.log) and their folder where nothing else is left in it."""
    if not offline_part_start(run_dir, run_id):
        return
    shutil.rmtree(run_dir)
    for link in run_dir.parent.iterdir():
        target = os.path.normpath(link.parent / os.readlink(link)) if link.is_symlink() else ""
        if target == str(run_dir) or target.startswith(f"{run_dir}{os.sep}"):
            link.unlink()
    if not any(run_dir.parent.iterdir()):
        run_dir.parent.rmdir()
