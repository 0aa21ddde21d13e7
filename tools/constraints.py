"""constraints.txt: the versions `make install` takes, those of the environment the tests last passed in.

pyproject.toml's ranges say what rnnreg may run with; a fresh install inside them picks each package's newest
release, which the tests have not seen (a ruff that formats otherwise stops `make test` at its lint). So `make
install` installs with these pins: every package rnnreg[dev] needs, directly or through another, at the version
installed here. Not PyTorch (TORCH= in the Makefile pins it, a CUDA or a CPU build) nor what a build of it brings
(Triton, NVIDIA's libraries: each build pins its own).

    .venv/bin/python tools/constraints.py > constraints.txt     (make constraints: after a deliberate upgrade)
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "rnnreg"
EXTRAS = ("dev",)
TORCH_BUILDS = ("torch", "triton")  # a build of torch pins these (and nvidia-*) itself


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Each package `root` (with `extras`) needs on this Python, directly or not, and its installed version."""
    found: dict[str, str] = {}
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            key = canonicalize_name(requirement.name)
            if key in found or key in TORCH_BUILDS or key.startswith("nvidia-"):
                continue
            found[key] = metadata.version(requirement.name)
            todo.append((requirement.name, tuple(requirement.extras)))
    return found


def main() -> None:
    pins = closure(ROOT, EXTRAS)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    print(f"# made by tools/constraints.py (make constraints) on Python {python}; used by make install.")
    print("# (an older Python takes what pyproject.toml's ranges allow: some of these need 3.11)")
    for name in sorted(pins):
        print(f'{name}=={pins[name]}; python_version >= "3.11"')


if __name__ == "__main__":
    main()
