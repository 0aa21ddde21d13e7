#!/usr/bin/env bash
# What an offline GPU machine needs to run benchmarks/gpu_check.sh, put into .device/ (ignored by git) on a
# machine with the package registry and the project installed (make install):
#   .device/wheels  the wheels of what the project needs beyond PyTorch, Lightning, torchmetrics, rich and
#                   joblib (which our device machines' image has): hydra-core, omegaconf, antlr4 (a wheel
#                   built here from its source) and the joblib launcher, at the versions installed here
#   .device/data    PTB, the three files the project downloads, checked against conf/data/ptb.yaml's sums
# then prints the command to run there, carrying .device. About 10 MB.
#
#   benchmarks/device_kit.sh [MODE [BUDGET_S]]     (gpu_check.sh's MODE, default ablation_seed; BUDGET_S default 540)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-ablation_seed}
budget=${2:-540}
if (( budget > 550 )); then  # a device call runs 600 s at most: the script's stages, a stopped stage's 20 s, packing
    echo "BUDGET_S=$budget leaves no room in a 600 s device call: 550 at most" >&2
    exit 2
fi
PY=${PYTHON:-.venv/bin/python}
kit=.device
rm -rf "$kit/wheels"
mkdir -p "$kit/wheels" "$kit/data"
version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
$PY -m pip download -q --no-deps --only-binary=:all: -d "$kit/wheels" \
    "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)" \
    "hydra-joblib-launcher==$(version hydra-joblib-launcher)"
# antlr4-python3-runtime 4.9.3 (what hydra-core 1.3 pins) is published as source only: a pure-Python wheel
$PY -m pip wheel -q --no-deps -w "$kit/wheels" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
$PY - "$kit/data" <<'PY'
import shutil, sys
from pathlib import Path
from rnnreg.data import ensure_files
from rnnreg.recipes import compose_config, plain

data = plain(compose_config("experiment=paper_small").data)  # the project's PTB cache (RNNREG_DATA_DIR)
paths = ensure_files(data["data_dir"], data["files"], data["url_base"])  # downloads if missing; checks the sums
(Path(sys.argv[1]) / "ptb").mkdir(parents=True, exist_ok=True)
for path in paths.values():
    shutil.copy2(path, Path(sys.argv[1]) / "ptb" / path.name)
PY
ls -l "$kit/wheels" "$kit/data/ptb"
du -sh "$kit"
cat <<EOT

On the device machine (run: carry [".device"], timeout_s $(( budget + 50 ))):
  BUDGET_S=$budget WHEELS=.device/wheels RNNREG_DATA_DIR=\$PWD/.device/data benchmarks/gpu_check.sh \$OUT $mode
Its results come back as \$OUT/results.tgz, stages.txt and gpu.txt. ablation, ablation_seed (ABLATION_SEED=1234,
1 or 2 in front picks the seed) and table go on in a second call made at once, while the machine is warm, with
GO_ON=1 and BUDGET_S = the device seconds left minus 40 (GO_ON=1: on a fresh machine no sweep starts again).
EOT
