#!/usr/bin/env bash
# The GPU checks of the speed issue as one prepared command, most important first, each stage in its own
# time box so that a slow or failing stage never costs the ones after it. Results and logs go to OUT_DIR.
#
#   benchmarks/gpu_check.sh OUT_DIR [all|next|profile|bench|reproduce|cpu] [rnnreg-train overrides for reproduce]
#
#   profile    profile_step.py: graph vs eager vs plain step without Lightning, same-update check  (~30 s)
#   bench      bench_gpu.py: plain loop vs rnnreg, medium and large, TF32/bf16 sides, 4 jobs at once (~4 min)
#   reproduce  reproduce.py: paper_medium in full, 39 epochs                         (~3.5 min; bf16 2.5 min)
#   all        the three, in the order profile, bench medium, reproduce, the rest of bench: 9 min on an
#              H200 (2026-11-27), which BUDGET_S=540 fits
#   next       what the first GPU session (2026-11-27) left open, in 9 min: profile (incl. the step-loop
#              LSTM's same-update check), the step-loop LSTM (variational) with and without the graph, and
#              paper_large in full with TF32 (est. 6 min: the table's missing row and TF32's first full run)
#   stacked    issue 15 on a GPU, in 9 min: bench_stacked.py (--check: the stacked step's CUDA graph against
#              the eager step, one member per placement; then K = 1, 4, 8, 15 medium members stacked vs one
#              after another), the fused fast-step single run for reference, then the paper-scale placement
#              ablation (ablation_placement_full: 5 placements x 3 seeds, medium, 39 epochs) stacked, in the
#              time left (it saves a resumable group file every epoch: hydra.launcher.resume=true continues)
#   cpu        a dry run of every mode's commands on the CPU (tiny runs, ~3.5 min; checks the script, not speed;
#              the ablation on the GPU's stacked program, hydra.launcher.program=batched)
#
# BUDGET_S=540 bounds the whole script (seconds; 0 = no bound): each stage gets what is left minus what
# the stages after it need at least, and is skipped when too little is left.
# Needs a CUDA torch and the project importable. On a machine with internet: `make install TORCH=torch`
# first. On an offline GPU box that has torch, lightning, torchmetrics, rich and joblib: WHEELS=<folder>
# with wheels of hydra-core 1.3, omegaconf 2.3, antlr4-python3-runtime 4.9.3 (pure Python; `pip wheel
# --no-deps` builds one) and hydra-joblib-launcher; they go to a private folder on PYTHONPATH with the
# project's src/ (nothing is installed into the system). PTB: $RNNREG_DATA_DIR/ptb must hold the three
# files when nothing can be downloaded.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [all|next|profile|bench|reproduce|cpu]}
what=${2:-all}
shift $(( $# < 2 ? $# : 2 ))  # the rest: overrides for the reproduce stage (trainer.precision=bf16-mixed, ...)
budget=${BUDGET_S:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [[ -n "${WHEELS:-}" ]]; then
    site=${TMPDIR:-/tmp}/rnnreg-site
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi

# stage NAME SECONDS_RESERVED_FOR_LATER COMMAND...: run COMMAND in the time that is left, log to NAME.log
stage() {
    local name=$1 reserve=$2 limit=0
    shift 2
    if (( budget > 0 )); then
        limit=$(( budget - SECONDS - reserve ))
        if (( limit < 30 )); then
            echo "== $name: skipped ($(( budget - SECONDS )) s left)" | tee -a "$out/stages.txt"
            return
        fi
    fi
    echo "== $name (t=${SECONDS}s, limit ${limit}s): $*" | tee -a "$out/stages.txt"
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} at t=${SECONDS}s" | tee -a "$out/stages.txt"
}

{ nvidia-smi -L; $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__,
                                                      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"; } \
    2>&1 | tee "$out/gpu.txt"
bench=(benchmarks/bench_gpu.py --out "$out")
# whether the stacked step's CUDA graph passed bench_stacked.py --check (captured, and equal to the eager step)
graph_checked() {
    $PY -c "import json; c = json.load(open('$out/bench_stacked.json'))['check']
print('true' if c and c['captured'] and c['same'] else 'false')" 2>/dev/null || echo false
}
case $what in
    profile) stage profile 0 $PY benchmarks/profile_step.py --out "$out" ;;
    bench) stage bench 0 $PY "${bench[@]}" --concurrent 4 --sides rnnreg rnnreg_no_graph rnnreg_plain_step \
                                              rnnreg_tf32 rnnreg_bf16 ;;
    reproduce) stage reproduce 0 $PY benchmarks/reproduce.py --out "$out" "$@" ;;
    all)
        stage profile 440 $PY benchmarks/profile_step.py --out "$out"
        stage bench_medium 330 $PY "${bench[@]}" --sizes medium
        stage reproduce 120 $PY benchmarks/reproduce.py --out "$out"
        if [[ ! -f $out/reproduce_paper_medium.json ]]; then  # failed early: once more without the graph
            stage reproduce_no_graph 120 $PY benchmarks/reproduce.py --out "$out/no_graph" speed.cuda_graph=false
        fi
        stage bench_large 80 $PY "${bench[@]}" --sizes large --sides rnnreg
        stage bench_concurrent 45 $PY "${bench[@]}" --sizes --concurrent 4
        stage bench_precision 0 $PY "${bench[@]}" --sizes medium --sides rnnreg_tf32 rnnreg_bf16
        stage bench_step_lstm 0 $PY "${bench[@]}" --sizes medium --sides rnnreg_variational rnnreg_variational_no_graph
        stage bench_large_more 0 $PY "${bench[@]}" --sizes large --sides rnnreg_no_graph rnnreg_tf32 rnnreg_bf16 ;;
    next)
        stage profile 430 $PY benchmarks/profile_step.py --out "$out"
        stage bench_step_lstm 380 $PY "${bench[@]}" --sizes medium --sides rnnreg_variational rnnreg_variational_no_graph
        stage reproduce_large 0 $PY benchmarks/reproduce.py --out "$out" --experiment paper_large speed.tf32=true ;;
    stacked)
        stage bench_stacked 400 $PY benchmarks/bench_stacked.py --device cuda --check --members 1 4 8 15 \
            --hidden 650 --bptt 35 --batch 20 --windows 20 --out "$out/bench_stacked.json"
        stage bench_fused_single 360 $PY "${bench[@]}" --sizes medium --sides rnnreg
        stage ablation_full_stacked 0 $PY -m rnnreg.train -m experiment=ablation_placement_full hydra/launcher=stacked \
            trainer.accelerator=gpu speed.cuda_graph="$(graph_checked)" "hydra.sweep.dir=$out/ablation_full" ;;
    cpu)
        stage bench_stacked 0 $PY benchmarks/bench_stacked.py --check --members 1 2 --hidden 16 --vocab 50 \
            --windows 2 --warmup 1 --out "$out/bench_stacked.json"
        stage ablation_full_stacked 0 $PY -m rnnreg.train -m experiment=ablation_placement_full hydra/launcher=stacked \
            hydra.launcher.program=batched trainer.accelerator=cpu speed.cuda_graph="$(graph_checked)" \
            model.hidden_size=16 trainer.max_epochs=2 trainer.limit_train_batches=3 trainer.limit_val_batches=2 \
            trainer.limit_test_batches=2 "hydra.sweep.dir=$out/ablation_full"
        stage profile 0 $PY benchmarks/profile_step.py --out "$out" --device cpu --sizes medium --windows 2
        stage bench 0 $PY "${bench[@]}" --device cpu --steps 6 --sizes medium --concurrent 2
        stage reproduce 0 $PY benchmarks/reproduce.py --out "$out" --accelerator cpu trainer.max_epochs=1 \
            trainer.limit_train_batches=4 trainer.limit_val_batches=2 trainer.limit_test_batches=2
        # next's own commands: the step-loop LSTM sides and paper_large
        stage bench_step_lstm 0 $PY "${bench[@]}" --device cpu --steps 6 --sizes medium \
            --sides rnnreg_variational rnnreg_variational_no_graph
        stage reproduce_large 0 $PY benchmarks/reproduce.py --out "$out" --accelerator cpu --experiment paper_large \
            speed.tf32=true trainer.max_epochs=1 trainer.limit_train_batches=3 trainer.limit_val_batches=2 \
            trainer.limit_test_batches=2 ;;
    *) echo "unknown stage $what: all, next, stacked, profile, bench, reproduce or cpu" >&2; exit 2 ;;
esac
