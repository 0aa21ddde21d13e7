"""A run's YAML records (`.hydra/*.yaml`, a sweep's `multirun.yaml`), read as files from others: a mapping, or one
line naming the file and the fix; a job's recorded overrides (the same, a list), the keys its sweep varies (its
sweep.yaml: the same) and the launcher that ran it (None where its record does not say)."""

from __future__ import annotations

from pathlib import Path

import yaml

from rnnreg.errors import DataError, first_line


def loaded(path: Path) -> tuple[object, str | None]:
    """A YAML file's value and None, or None and why it cannot be read (the system, its YAML, its encoding)."""
    try:
        return yaml.safe_load(path.read_text()), None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        return None, first_line(err)


LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")  # trainer's, a run's splits' budget


def full_budget(limit) -> bool:
    """A (recorded) trainer.limit_*_batches that leaves every batch in: null, or the fraction 1.0."""
    return limit is None or (isinstance(limit, float) and limit == 1.0)


def read_yaml(path: Path) -> dict:
    """A run's YAML file, a mapping; {} without the file."""
    if not path.exists():
        return {}
    value, why = loaded(path)
    if why is not None:
        raise unreadable(path, why)
    if value is not None and not isinstance(value, dict):
        raise unreadable(path, "not a YAML mapping")
    return value or {}


def section(value: dict, path: Path, *keys: str) -> dict:
    """The mapping at `keys` in `value`, read from the YAML file `path` ({} where a key is absent or empty); one that
    is not a mapping is a file the report cannot read."""
    for depth, key in enumerate(keys):
        value = value.get(key) or {}
        if not isinstance(value, dict):
            raise unreadable(path, f"{'.'.join(keys[: depth + 1])} is not a mapping")
    return value


def unreadable(path: Path, why) -> DataError:
    """A run's file the report cannot read (a file from elsewhere, cut short or edited): one line, the fix."""
    return DataError(
        f"{path} is not readable ({first_line(why)}): restore it, or move its run's folder out of the report's path"
    )


def recorded_overrides(folder: Path) -> list[str] | None:
    """A job folder's command-line overrides as Hydra recorded them (.hydra/overrides.yaml); None without the file.
    A file cut short or edited (a folder from elsewhere) is a one-line DataError naming it."""
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    overrides, why = loaded(path)
    if why is None:
        if overrides is None or (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
            return overrides or []
        why = "not a list of overrides"
    raise DataError(f"{path} is not readable ({why}): restore it, or move the job's folder away")


def recorded_swept_keys(path: Path) -> list[str] | None:
    """The keys a sweep varies as its sweep.yaml (`path`, which rnnreg.sweep writes as the sweep starts) records
    them; None without the file. A file cut short or edited is a one-line DataError naming it."""
    if not path.is_file():
        return None
    record, why = loaded(path)
    if why is None:
        why = "not a YAML mapping"
        if record is None or isinstance(record, dict):
            swept = (record or {}).get("swept")
            if swept is None or (isinstance(swept, list) and all(isinstance(key, str) for key in swept)):
                return swept or []
            why = "swept is not a list of keys"
    raise DataError(f"{path} is not readable ({why}): delete it (a sweep writes it again as it starts)")


def recorded_launcher(job_dir: Path) -> str | None:
    """The launcher (its _target_) a job's `.hydra/hydra.yaml` says ran it; None without one."""
    try:
        hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        return str(hydra["launcher"]["_target_"])
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return None


def recorded_choice(job_dir: Path, group: str) -> str | None:
    """The option of config group `group` that a run's `.hydra/hydra.yaml` says it ran with; None without one."""
    try:
        choice = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"][group]
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return None
    return choice if isinstance(choice, str) else None
