"""An override as a command line gives it: a value in Hydra's quotes where its override grammar would read it otherwise,
and the whole quoted for a shell, so that a printed command pastes (a folder with a space, a quote, a comma)."""

from __future__ import annotations

import re
import shlex


def quoted_for_hydra(value: str) -> str:
    """`value` in single quotes as Hydra's override parser reads it back: a backslash is escaped only where it would
    escape a quote (before one, or before the closing quote), as the parser unescapes only those."""
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\" if m.group(2) else "") + m.group(2), value)
    return f"'{escaped}'"


# what Hydra reads as it is in a value (a space too: Hydra strips only the ends); anything else is quoted for it
PLAIN_FOR_HYDRA = re.compile(r"[A-Za-z0-9_/+.%@: -]*")
# a plain value Hydra reads as no string (null, true, 1e3, 12, nan): a relative path of that name is quoted
READ_AS_ANOTHER_TYPE = re.compile(r"(?i)null|true|false|[-+]?(inf|nan)|[-+]?[\d_]*\.?[\d_]*(e[-+]?\d+)?")


def string_value(value: str) -> str:
    """A string as an override's value that Hydra reads back as that string: in Hydra's quotes where its override
    grammar reads it otherwise (a quote, a comma, a bracket, `=`, `$`, `~`; `1.0`, `null`, `true`: another type)."""
    plain = PLAIN_FOR_HYDRA.fullmatch(value) and value.strip() == value and not READ_AS_ANOTHER_TYPE.fullmatch(value)
    return value if plain else quoted_for_hydra(value)


def override_value(value) -> str:
    """A value as an override writes it, for a message that shows what was given: a string in Hydra's quotes where
    its grammar reads it otherwise (string_value: 'png,pdf', ''), a list as [a,b], anything else as
    rnnreg.schema.show_value (null, true)."""
    from omegaconf import ListConfig

    from rnnreg.schema import show_value  # (the schema's messages import this module's callers)

    if isinstance(value, str):
        return string_value(value)
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return show_value(value)


def path_override(key: str, path) -> str:
    """`key=path` as Hydra reads back the path (string_value)."""
    return f"{key}={string_value(str(path))}"


def pasted_override(key: str, path) -> str:
    """path_override quoted for a shell as well: a command's word, as printed for a user to paste."""
    return shlex.quote(path_override(key, path))
