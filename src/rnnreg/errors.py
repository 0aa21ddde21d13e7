"""The errors a user can fix: each message names what was wrong and how to fix it.

Entry points print these as one line and exit 2 (rnnreg.runtime); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


def first_line(err: Exception | str) -> str:
    """An error's message in one line (its first), or its type's name where it has none."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class UserError(Exception):
    """Bad input (config, data, checkpoint) or a run that cannot go on (divergence); one-line message."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key and a valid value."""


class MissingValue(ConfigError):
    """A mandatory config value (??? in the config) that was not given; `key` names it."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


class DataError(UserError, ValueError):
    """Bad or missing data; the message says what was wrong and how to fix it."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, not rnnreg's, or holds objects that are not allowed."""


class TrainingDiverged(UserError, RuntimeError):
    """The training loss became NaN, infinite or too large to exponentiate."""


class OutputError(UserError):
    """A run's output cannot be written (disk full, file-size limit, read-only folder, folder in use)."""
