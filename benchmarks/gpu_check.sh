#!/usr/bin/env bash
# The GPU checks of the speed issue as one prepared command: bench_gpu.py (plain loop vs rnnreg, medium and
# large, 4 jobs on one GPU) and/or reproduce.py (paper_medium in full), results and logs into OUT_DIR.
#
#   benchmarks/gpu_check.sh OUT_DIR [bench|reproduce|all]      # bench: ~5 min, reproduce: ~5 min on an H200
#
# Needs a CUDA torch and the project importable with its console scripts. On a machine with internet:
# `make install TORCH=torch` first. On an offline GPU box that already has torch, lightning, torchmetrics,
# rich and joblib, carry wheels of hydra-core 1.3, omegaconf 2.3, antlr4-python3-runtime 4.9.3 (pure
# Python; `pip wheel --no-deps` builds one) and hydra-joblib-launcher; this script installs them and the
# project (no dependencies, no network) when WHEELS names their folder. PTB: RNNREG_DATA_DIR/ptb must hold
# the three files when nothing can be downloaded.
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [bench|reproduce|all]}
what=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [[ -n "${WHEELS:-}" ]]; then
    $PY -m pip install -q --no-index --no-deps --no-cache-dir "$WHEELS"/*.whl
    $PY -m pip install -q --no-index --no-deps --no-build-isolation -e .
fi
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    | tee "$out/gpu.txt"
if [[ $what == bench || $what == all ]]; then
    $PY benchmarks/bench_gpu.py --out "$out" --concurrent 4 2>&1 | tee "$out/bench_gpu.log"
fi
if [[ $what == reproduce || $what == all ]]; then
    $PY benchmarks/reproduce.py --out "$out" 2>&1 | tail -n 20 | tee "$out/reproduce.log"
fi
