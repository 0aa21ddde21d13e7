"""What a refused override is told: Hydra's own messages as one line with the fix they give, and rnnreg's own
for what Hydra's would leave unclear (a config group taken away with ~, + on a key that is there, a sweep of
Hydra's settings, a search space where the sweeper has none). rnnreg.command_line checks a command line and raises
these."""

from __future__ import annotations

import math
import os
import re
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from rnnreg import CONF_DIR
from rnnreg.config_search import ConfigRoots
from rnnreg.errors import MissingValue, first_line


def group_defaults(primary: str, conf_dir: str) -> dict[str, Any]:
    """Each config group's option in the primary config's defaults list (conf/train.yaml's model: medium, debug:
    null)."""
    path = Path(conf_dir, f"{primary}.yaml")
    defaults = (OmegaConf.load(path).get("defaults") or []) if path.is_file() else []
    return {
        str(key).removeprefix("override ").strip("/"): value
        for entry in defaults
        if isinstance(entry, DictConfig)
        for key, value in entry.items()
    }


def optional_groups(primary: str, conf_dir: str) -> set[str]:
    """The config groups the primary config's defaults list leaves at null (conf/train.yaml's debug: null)."""
    return {group for group, option in group_defaults(primary, conf_dir).items() if option is None}


def deleted_group(groups: list, optional: set[str], err: Exception) -> Any:
    """The command line's `~group` (or `~group=option`) behind a job's refusal: a group the config needs (its default
    is not null), whose keys the refusal names as missing or unknown, or any value left missing (??? ): an
    experiment's keys are the recipe's own (data.bptt, optim.lr), not under its name."""
    for override in groups:
        group = override.key_or_group
        named = re.match(rf"{re.escape(group)}[. ]", str(err)) or isinstance(err, MissingValue)
        if override.is_delete() and group not in optional and named:
            return override
    return None


def deleted_list_group(groups: list, err: Exception) -> str | None:
    """`~regularizer`: a group whose default is a list of options (regularizer: []) has no one option for ~ to take
    away (Hydra: "Could not delete 'regularizer'. No match in the defaults list")."""
    for override in groups:
        if override.is_delete() and "No match in the defaults list" in str(err) and override.value() is None:
            group = override.key_or_group
            if f"Could not delete '{group}'" in str(err):
                return (
                    f"{override.input_line}: {group} takes a list of options, with none by default: {group}=[] for none"
                )
    return None


def deleted_absent_option(
    groups: list, err: Exception, primary: str, config_name: str, roots: ConfigRoots, conf_dir: str
) -> str | None:
    """`~group=option` for an option the config does not have (Hydra: "Could not delete 'dropout=none'. No match in
    the defaults list"): a group the run needs is needed_group_message's, a list group's options are given as a
    list; an optional group (null by default) has none to take away."""
    for override in groups:
        group = override.key_or_group
        if not (override.is_delete() and f"Could not delete '{group}=" in str(err)):
            continue
        defaults = group_defaults(primary, conf_dir)
        if isinstance(defaults.get(group), (list, ListConfig)):
            return (
                f"{override.input_line}: ~ takes away an option the config's defaults list holds, and its {group} "
                f"holds no {override.value()}: give the list of options the run should have ({group}=[...], "
                f"{group}=[] for none)"
            )
        if group in defaults and defaults[group] is not None:
            return needed_group_message(override, config_name, roots, defaults[group])
        if group in defaults:  # an optional group, off unless chosen
            return (
                f"{override.input_line}: ~ takes away an option the config's defaults list holds, and its {group} "
                f"is not {override.value()} ({group}: null unless chosen): drop {override.input_line}"
            )
    return None


def needed_group_message(override: Any, config_name: str, roots: ConfigRoots, default: Any = None) -> str:
    """`~group` of a group the run needs: its options, the primary config's own first (`default`)."""
    group = override.key_or_group
    options = [o for o in roots.options(group) if o != "none"]
    example = f"{default}, the default" if default in options else f"{options[0]}, say"
    off = f", or {group}=none to turn {group} off" if "none" in roots.options(group) else ""
    return (
        f"{override.input_line}: rnnreg-{config_name} needs {'an' if group[0] in 'aeiou' else 'a'} {group} config, "
        f"which ~ takes away: choose one of its "
        f"options instead ({', '.join(options)}: {group}={example}){off}"
    )


def hydra_sweep_message(cfg: DictConfig, override: Any) -> str:
    """A sweep of a hydra.* setting (`hydra.sweeper.params.seed=1,2`): quote the value, where the key can take it."""
    line = override.input_line
    key, _, value = line.partition("=")
    key = key.lstrip("+~")
    param = key.removeprefix("hydra.sweeper.params.")
    if param != key and no_search_space(cfg):  # (a quoted value: Hydra's AssertionError, apply_overrides)
        return f"{line}: {no_search_space(cfg)}: sweep the key itself with -m: {param}={value}"
    itself = f", or sweep the key itself: {param}={value}" if param != key else ""
    add = "+" if OmegaConf.select(cfg, key, default="<absent>") == "<absent>" else ""  # (Hydra: "To append ... use +")
    quoted = quoted_override(add + key, value)
    return f"{line}: Hydra's own settings cannot be swept: quote a value that holds a comma ({quoted}){itself}"


def no_search_space(cfg: DictConfig) -> str | None:
    """Why the command line cannot add to hydra.sweeper.params: the sweeper's own is null (the basic sweeper's,
    without an experiment's sweep), into which Hydra sets no key (an AssertionError or AttributeError)."""
    if OmegaConf.select(cfg, "hydra.sweeper.params", default="<absent>") is not None:
        return None
    sweeper = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get("hydra/sweeper", "basic")
    return f"this command's sweeper ({sweeper}) has no search space to add to (hydra.sweeper.params is null)"


def search_space_fix(override: Any) -> str:
    """The command line's own sweep of what a hydra.sweeper.params override would have set."""
    value = override.value()
    if override.key_or_group == "hydra.sweeper.params":  # the mapping as a whole, {seed:'1,2'}
        pairs = value.items() if isinstance(value, dict) else []
        return " ".join(f"{k}={v}" for k, v in pairs) or "KEY=a,b"
    return f"{override.key_or_group.removeprefix('hydra.sweeper.params.')}={value}"


def hydra_message(err: BaseException) -> str:
    """Hydra's message as one line, with what it says on the lines after its first: the fix ("To append to your
    config use +KEY=..."), a group's options (each on a line of its own), or its cause's first line (why a merge
    failed); not its search path."""
    text = str(err).split("\nConfig search path:")[0]
    parts: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith("\t") and parts:  # an option of the list the line before announced
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        elif line.strip() and not line.startswith("Set the environment variable HYDRA_FULL_ERROR"):
            parts.append(line.strip())
    if len(parts) == 1 and err.__cause__ is not None:
        parts.append(first_line(err.__cause__))
    return "".join(p if not i else (" " if parts[i - 1].endswith(".") else "; ") + p for i, p in enumerate(parts))


def added_group_in_config(groups: list, err: Exception) -> str | None:
    """`+group=option` (of the command line's group overrides, parsed) for a group the config has already, said
    with the command line's fix (Hydra's "Multiple values for group. To override a value use 'override group:
    option'" is the fix for a defaults list)."""
    for override in groups:
        group = override.key_or_group
        if override.is_add() and str(err).startswith(f"Multiple values for {group}."):
            return (
                f"{override.input_line}: {group} is in the config already (+ adds a group it does not have): "
                f"choose its option with {override.input_line.removeprefix('+')}"
            )
    return None


def quoted_override(key: str, value: str) -> str:
    """`key=value` with the value quoted for Hydra, the whole in double quotes for a shell: "key='a,b'" (a
    shell takes unquoted or single quotes away before Hydra sees them)."""
    value = value.strip("'") if value[:1] == value[-1:] == "'" else value
    inner = f"'{value}'" if "'" not in value else '"' + value.replace('"', '\\"') + '"'
    return '"' + re.sub(r'([\\"$`])', r"\\\1", f"{key}={inner}") + '"'


def parse_error(args: list[str], err: Exception) -> str:
    """One line for an override Hydra's grammar refuses (characters outside it, an `=` in the value), with
    the quoting that passes it through a shell."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    reason = str(err).strip().splitlines()[0]
    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_overrides([arg])
        except HydraException:
            key, equals, value = arg.partition("=")
            if not equals:
                return f"{arg}: {reason}"
            reason = reason.split(":")[0] if reason.endswith(arg) else reason
            if value.startswith("tag(") and value.endswith(")"):  # (a quoted tag() is a string: not a sweep's value)
                return f"{arg} is not an override Hydra can read ({reason}): {tag_fix(key, value)}"
            home = os.path.expanduser(value)
            if value.startswith("~") and home != value:  # quoted, Hydra would pass the ~ on: a folder named ~ here
                fix = f"{key}={home}" if plain_override(f"{key}={home}") else quoted_override(key, home)
                return (
                    f"{arg} is not an override Hydra can read ({reason}), and a shell expands ~ only at a word's "
                    f"start: give {fix}"
                )
            return (
                f"{arg} is not an override Hydra can read ({reason}): quote the value inside the override, "
                f"e.g. {quoted_override(key, value)} (the outer quotes for the shell, the inner ones for Hydra)"
            )
    return reason


def plain_override(line: str) -> bool:
    """Whether Hydra's grammar reads `line` as it is, unquoted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_overrides([line])
    except HydraException:
        return False
    return True


def tag_fix(key: str, value: str) -> str:
    """Hydra's tag() labels a sweep: its last argument is one (choice, range, interval), the ones before it tags."""
    words = [w.strip() for w in value.removeprefix("tag(").removesuffix(")").split(",")]
    if any("(" in w for w in words):  # a sweep function (range(1,3)): the words before it are the tags
        first = next(i for i, w in enumerate(words) if "(" in w)
    else:  # the leading names are the tags, the rest the values (the last word a value, at least)
        first = next((i for i, w in enumerate(words) if not re.fullmatch(r"[A-Za-z_][\w-]*", w)), len(words) - 1)
    tags, values = ",".join(words[:first] or ["a"]), ",".join(words[first:])
    sweep = values if re.match(r"(choice|range|interval|sort|shuffle)\(", values) else f"choice({values})"
    return f"tag() takes its tags, then the sweep they label: -m {shlex.quote(f'{key}=tag({tags},{sweep})')}"


def new_key_message(override: Any, cfg: DictConfig, config_name: str) -> str:
    """`+foo=1`: Hydra's + adds a key, and rnnreg's schema (rnnreg.schema) takes no top-level key of its own."""
    keys = ", ".join(sorted(str(k) for k in cfg.keys()))
    # the config's own ways in for what is not a key of it, where it has them (rnnreg-eval has no tags)
    ways = {
        "trainer": "a Lightning Trainer argument goes in with +trainer.KEY=...",
        "tags": "a label for the run in tags=[...]",
    }
    said = ", ".join(way for key, way in ways.items() if key in cfg)
    return (
        f"{override.input_line}: rnnreg's {config_name} config takes no new top-level keys (its schema checks every "
        f"key): set one of its keys ({keys})" + (f"; {said}" if said else "")
    )


def not_a_launcher_setting(cfg: DictConfig, key: str) -> str:
    """Why a hydra.launcher.* key is not in the config: the launchers of conf/hydra/launcher/ that have it."""
    launcher = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get("hydra/launcher", "basic")
    setting = key.split(".", 2)[2].split(".")[0]
    found = {p.stem: OmegaConf.load(p) for p in Path(CONF_DIR, "hydra", "launcher").glob("*.yaml")}
    found |= {name: configs for name, configs in plugin_launchers().items() if name not in found}
    owners = [f"hydra/launcher={name}" for name in sorted(found) if setting in (found[name] or {})]
    if not owners:
        return f"{key} is not a setting of this command's launcher ({launcher}): leave it out, or pick its launcher"
    return (
        f"{key} is a setting of {' and '.join(owners)}, and this command's launcher is {launcher}: add {owners[0]}, "
        f"or leave {key} out"
    )


def plugin_launchers() -> dict[str, Any]:
    """The launchers Hydra's plugins keep in its config store (joblib, submitit_local, submitit_slurm), by name."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # (discovering the plugins registers their configs)
    stored = ConfigStore.instance().repo.get("hydra", {}).get("launcher", {})
    return {name.removesuffix(".yaml"): OmegaConf.structured(entry.node) for name, entry in stored.items()}


def range_points(start: float, stop: float, step: float) -> list[float]:
    """range(start, stop, step=step)'s points as meant: a step apart from start, below stop, counted as if exact
    (range(0.3,0.6,step=0.1): 0.3, 0.4, 0.5, where floating point makes (0.6 - 0.3) / 0.1 2.9999999999999996, and
    range(1.2,1.6,step=0.2) 1.2, 1.4, where it makes 1.2 + 2 x 0.2 1.5999999999999999, below 1.6)."""
    steps = (stop - start) / step
    count = round(steps) if math.isclose(steps, round(steps)) else math.ceil(steps)
    return [start + i * step for i in range(max(0, count))]


def miscounted(points: list[float], search: Any) -> list[str] | None:
    """The points of the range `search` (a RangeSweep) as meant (range_points), as text, where a sweeper's `points`
    for it are others; None where they are those."""
    meant = range_points(search.start, search.stop, search.step)
    if len(points) == len(meant) and all(math.isclose(p, m) for p, m in zip(points, meant)):
        return None
    return [f"{m:.10g}" for m in meant]


def miscounted_range(override: Any) -> str | None:
    """What a basic sweep of `key=range(...)` of floats is told where Hydra's sweeper counts other points than the
    range holds (miscounted): it adds one at the end where floating point puts the last step just below it
    (range(1.2,1.6,step=0.2): 1.2, 1.4, 1.5999999999999999); None for any other override."""
    from hydra.core.override_parser.types import RangeSweep

    search = override.value()
    if not isinstance(search, RangeSweep) or all(isinstance(x, int) for x in (search.start, search.stop, search.step)):
        return None
    hydras = list(override.sweep_string_iterator())
    meant = miscounted([float(h) for h in hydras], search)
    if meant is None:
        return None
    key = override.get_key_element()
    return (
        f"{override.input_line} would run {key} at {', '.join(hydras)}, not at {', '.join(meant)} (Hydra counts a "
        f"range of floats in floating point, up to its end): give the values as a list ({key}={','.join(meant)})"
    )
