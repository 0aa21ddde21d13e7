#!/usr/bin/env bash
# The GPU checks of the speed issue as one prepared command, most important first, each stage in its own
# time box so that a slow or failing stage never costs the ones after it.
#
#   benchmarks/gpu_check.sh OUT_DIR [all|next|stacked|ablation|ablation_seed|table|resume|probe|profile|bench|reproduce|cpu|settings]
#                               [overrides for reproduce]
#
#   profile    profile_step.py: graph vs eager vs plain step without Lightning, same-update check  (~30 s)
#   bench      bench_gpu.py: plain loop vs rnnreg, medium and large, TF32/bf16 sides, 4 jobs at once (~4 min)
#   reproduce  reproduce.py: paper_medium in full, 39 epochs                         (~3.5 min; bf16 2.5 min)
#   all        the three, in the order profile, bench medium, reproduce, the rest of bench: 9 min on an
#              H200 (2026-11-27), which BUDGET_S=540 fits
#   next       what the first GPU session (2026-11-27) left open, in 9 min: profile (incl. the step-loop
#              LSTM's same-update check), the step-loop LSTM (variational) with and without the graph and
#              with the Triton cell (speed.triton_cell), and
#              paper_large in full with TF32 (est. 6 min: the table's missing row and TF32's first full run)
#   stacked    issue 15 on a GPU, in 9 min (the hidden units padded, as the sweep holds them): bench_stacked.py
#              (--check: the stacked step's CUDA graph against
#              the eager step, one member per placement, on the torch ops and on the Triton cell, and a
#              group with layer norm and tied embeddings (recorded apart: it decides nothing); then K = 15,
#              1, 4, 8 medium members stacked, TF32, each on both cells, and K = 15 in strict float32), the
#              fused fast-step single run for reference, then the paper-scale placement ablation
#              (ablation_placement_full: 5 placements x 3 seeds, medium, 39 epochs, TF32) stacked in the time left
#   ablation   the paper-scale ablation, in the time given (BUDGET_S=550 in a 600 s call): the stacked
#              step's graph check and K = 15 timed on both cells (~1-2 min), then the ablation with the graph
#              if it passed, with speed.triton_cell=true if the Triton cell passed and ran >= 5 % faster, and with
#              speed.triton_update=true if the update as one Triton kernel was exact to the bit and ran >= 5 % faster,
#              then rnnreg-report of its folder. A second call on the same machine goes on from where the first
#              stopped (at its time limit it gets SIGTERM, which writes an exact resume file). Its
#              csv/metrics.csv files hold the stacked group's words/s per epoch at K = 15. If the stacked
#              sweep crashes (a bug only a GPU shows), paper_large runs in the time left instead.
#   table      the paper's table with 3 seeds per size (issue 15's later device session), in the time given: the
#              stacked step's graph check at the large model's shape, then `experiment=paper_large,paper_medium,
#              paper_small seed=1234,1,2` stacked (three groups of three, large first: the row never run), TF32,
#              then rnnreg-report of its folder; as `ablation`, a second call on the same machine goes on from
#              where the first stopped (est. large x3 ~12 min, medium x3 ~5 min, small x3 ~2 min: two or three calls)
#   ablation_seed  one seed of the paper-scale ablation (ABLATION_SEED, default 1234): its five placements as one
#              group of 5 (K = 5), the stacked step's graph check at K = 5 first (~1 min; the sweep pads (auto)
#              where the padded step passed its check against the unpadded one: 1.48x at K = 15 on an H200,
#              2026-12-04; the same check decides speed.triton_cell and speed.triton_update); then, in the time
#              left, window_timings: K = 15 padded under bf16 autocast on both cells and with the Triton update
#              (bf16_timing), and where a K = 15 padded window's time goes (profile_padded), each once per machine.
#              Seed 1 took 5 min 55 s of training on an H200 (2026-12-04, W_hh held transposed; 468 s of the call
#              to its report with the machine's start): a seed fits one call with BUDGET_S=550 (about 9.5 device
#              minutes with the machine's start); as `ablation`, a second call on the same machine goes
#              on from where the first stopped, and one whose sweep completed goes on to the timings. The
#              15-member ablation in one group (est. 14-15 min at K = 15) does not fit a session's 15 device
#              minutes, and its resume file (1.2-2.4 GB) cannot come back to go on in a later session
#   resume     resume_check.py: a run stopped by SIGTERM mid-epoch and resumed against the uninterrupted one (twice:
#              what the GPU leaves to chance), the paper's placement on cuDNN's multi-layer kernel (its own dropout
#              state between the layers, in no checkpoint), the same with model.lstm=layers (torch's dropout between:
#              also its words/s against fused) and recurrent dropout (the step loop), medium, 2 x 200 windows
#              (~3-4 min); once per machine, also at the end of ablation_seed
#   probe      what the 2026-11-30 session's second call ran: the kernels of a K = 15 window (bench_stacked.py
#              --profile), a 15-member medium group stopped by SIGTERM mid-epoch, K = 1, 4, 8 on both cells; then
#              pad_timing, bf16_timing and bench_gemm_layouts.py (the window's GEMMs padded, transposed, in bf16/fp16)
#   settings   what each sweep mode would run with (speed.cuda_graph, speed.triton_cell, speed.triton_update,
#              hydra.launcher.pad_hidden_to),
#              decided by benchmarks/gpu_decisions.py from the checks and timings already in WORK_DIR (read only: a second)
#   cpu        a dry run of every mode's commands on the CPU (tiny runs, 5-10 min on 2 cores; checks the script, not speed;
#              the ablation on the GPU's stacked program, hydra.launcher.program=batched)
#
# What comes back from a device machine is a few files (8 at most, 16 MiB each), so every stage writes into
# WORK_DIR (default outputs/gpu_check: ignored by git, and kept between calls on a warm machine), and after
# each stage OUT_DIR gets stages.txt, gpu.txt and results.tgz: everything in WORK_DIR but checkpoints,
# resume files and anything over 4 MB (left_out.txt in the archive lists those).
# A stacked sweep runs under benchmarks/how_it_ended.py: its log ends with how the sweep ended (an exit status or
# the signal that killed it) and whether its SIGTERM handler was installed then; a sweep that does not exit 0
# also logs dmesg and free (2026-11-30: a sweep gone within a second of its SIGTERM, cause not found).
# GO_ON=1 marks a second call (ablation, ablation_seed, table): it goes on with a sweep an earlier call on this machine
# began, and starts none (nor its graph check) where the machine is a fresh one: an idle machine is given back after
# 30 s and its files with it (2026-12-04: a second call ran seed 1's sweep anew, 3 min of device time to nothing), so
# such a call goes to the timings after the sweep.
# BUDGET_S=540 bounds the whole script (seconds; 0 = no bound): each stage gets what is left minus what
# the stages after it need at least, and is skipped when too little is left.
# Needs a CUDA torch and the project importable. On a machine with internet: `make install TORCH=torch`
# first. On an offline GPU box that has torch, lightning, torchmetrics, rich and joblib (our device
# machines): benchmarks/device_kit.sh here first, which puts the wheels Hydra needs and PTB into .device/
# and prints the command to run there (WHEELS=.device/wheels RNNREG_DATA_DIR=.device/data ...); the
# wheels go to a private folder on PYTHONPATH with the project's src/ (nothing is installed into the system).
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [all|next|stacked|ablation|ablation_seed|table|resume|probe|profile|bench|reproduce|cpu|settings]}
what=${2:-all}
shift $(( $# < 2 ? $# : 2 ))  # the rest: overrides for the reproduce stage (trainer.precision=bf16-mixed, ...)
budget=${BUDGET_S:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
work=${WORK_DIR:-outputs/gpu_check}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [[ -n "${WHEELS:-}" ]]; then
    site=${TMPDIR:-/tmp}/rnnreg-site
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi

# pack: OUT_DIR's few files from WORK_DIR (see the header)
pack() {
    (
        cd "$work" || exit 1
        find . -type f \( -name '*.ckpt' -o -name '*.pt' -o -size +4M \) | sort >left_out.txt
        find . -type f ! -name '*.ckpt' ! -name '*.pt' ! -size +4M | sort >"$out/.packed"
        tar -czf "$out/.results.tgz" -T "$out/.packed" && mv "$out/.results.tgz" "$out/results.tgz"
        rm -f "$out/.packed"
        cp stages.txt gpu.txt "$out/" 2>/dev/null
    )
}

# stage NAME SECONDS_RESERVED_FOR_LATER COMMAND...: run COMMAND in the time that is left, log to NAME.log
stage() {
    local name=$1 reserve=$2 limit=0
    shift 2
    if (( budget > 0 )); then
        limit=$(( budget - SECONDS - reserve ))
        if (( limit < 30 )); then
            echo "== $name: skipped ($(( budget - SECONDS )) s left)" | tee -a "$work/stages.txt"
            return
        fi
    fi
    echo "== $name (t=${SECONDS}s, limit ${limit}s): $*" | tee -a "$work/stages.txt"
    # tee -a: a stage run again (a later call on the same machine goes on) keeps the first call's log above
    timeout --kill-after="${grace:-20}" "$limit" "$@" 2>&1 | tee -a "$work/$name.log"
    last_exit=${PIPESTATUS[0]}
    echo "== $name: exit $last_exit at t=${SECONDS}s" | tee -a "$work/stages.txt"
    pack
}
last_exit=0

# the machine (gpu.txt), but for `settings`, which only reads WORK_DIR's files: it keeps the gpu.txt of the session
# that wrote them, writes nothing into OUT_DIR and imports no torch
if [[ $what != settings ]]; then
    { date -u; nvidia-smi -L; $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__,
                                                          torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
      # Triton builds its launcher with a C compiler and Python's headers at first use: without them the Triton cell fails
      $PY -c "import os, shutil, sysconfig; print('C compiler:', shutil.which('cc') or shutil.which('gcc'), '| Python.h:',
              os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; } \
        2>&1 | tee "$work/gpu.txt"
    pack
fi
bench=(benchmarks/bench_gpu.py --out "$work")
# The sweep's settings from the checks and timings in $work (benchmarks/gpu_decisions.py: what each decides, and the
# safe value when a file is missing or a check did not finish: what was checked runs)
# speed.cuda_graph: the stacked step's CUDA graph passed bench_stacked.py --check (captured, and equal to the eager step)
graph_checked() { $PY benchmarks/gpu_decisions.py cuda_graph "$work/${1:-bench_stacked}.json" || echo false; }
# speed.triton_cell: the Triton cell passed its check and ran >= 5 % faster at K members (${2:-15})
triton_cell_pays() { $PY benchmarks/gpu_decisions.py triton_cell "$work/${1:-bench_stacked}.json" "${2:-15}" || echo false; }
# speed.triton_update: the update as one Triton kernel a parameter was exact (to the bit) and ran >= 5 % faster at K
triton_update_pays() { $PY benchmarks/gpu_decisions.py triton_update "$work/${1:-bench_stacked}.json" "${2:-15}" || echo false; }
# hydra.launcher.pad_hidden_to: auto (8 on a GPU) where the padded step passed its check against the unpadded one
# (check.padding in $work/NAME.json: strict float32 losses); 1 otherwise
pad_pays() { $PY benchmarks/gpu_decisions.py pad_hidden_to "$work/$1.json" || echo 1; }
# sweep_settings NAME K: the four overrides a GPU sweep runs with, from check NAME at K members
sweep_settings() {
    echo "speed.cuda_graph=$(graph_checked "$1") speed.triton_cell=$(triton_cell_pays "$1" "$2")" \
        "speed.triton_update=$(triton_update_pays "$1" "$2") hydra.launcher.pad_hidden_to=$(pad_pays "$1")"
}
# check_graph_once NAME K HIDDEN: the stacked step's CUDA graph against its eager step (both cells), K members of
# width HIDDEN at bptt 35, the hidden units padded as a GPU's sweep holds them (hydra.launcher.pad_hidden_to=auto:
# a multiple of 8), and the Triton update against the torch ops' (to the bit), each then timed at K, into
# $work/NAME.json; skipped when a call on this machine already ran it (a later call goes on as the first began)
check_graph_once() {
    [[ -f $work/$1.json || -n ${GO_ON:-} ]] && return  # (GO_ON without it: a fresh machine, where no sweep starts)
    stage "$1" 200 $PY benchmarks/bench_stacked.py --device cuda --check --members "$2" --tf32 --pad 8 \
        --kinds stacked stacked_triton stacked_triton_update --hidden "$3" --bptt 35 --batch 20 --windows 10 \
        --out "$work/$1.json"
}
# pad_timing RESERVE [ARGS]: K = 15 medium members' windows (torch-ops cell, TF32, graphed) with the hidden units as
# they are and padded to 656 (auto's multiple of 8): what the padding gives (2026-12-04: 389,637 -> 578,250 words/s);
# once per machine
pad_timing() {
    local reserve=$1 pad
    shift
    for pad in 1 8; do
        [[ -f $work/bench_stacked_pad$pad.json ]] && continue
        stage "pad_timing_$pad" "$reserve" $PY benchmarks/bench_stacked.py --device "${device:-cuda}" --kinds stacked \
            --tf32 --members 15 --hidden 650 --bptt 35 --batch 20 --windows 20 --pad $pad \
            --out "$work/bench_stacked_pad$pad.json" "$@"
    done
}
# timed_already NAME: $work/NAME.json holds timing rows (bench_stacked.py writes its checks first: a stage cut off
# before its timings runs again)
timed_already() {
    $PY -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['rows'])" "$work/$1.json" 2>/dev/null
}
# bf16_timing RESERVE [ARGS]: the same K = 15 window padded, its forward under bf16 autocast
# (trainer.precision=bf16-mixed: bf16 GEMMs, float32 cell and weights), after the stacked step's CUDA graph under
# autocast is checked against its eager step (check in the JSON): what bf16 gives the GEMMs that fill a window (ARGS
# --kinds stacked stacked_triton stacked_triton_update: on both cells, and with the Triton update); once per machine
bf16_timing() {
    local reserve=$1
    shift
    timed_already bench_stacked_bf16 && return
    stage bf16_timing "$reserve" $PY benchmarks/bench_stacked.py --device "${device:-cuda}" --kinds stacked --check --bf16 \
        --tf32 --members 15 --hidden 650 --bptt 35 --batch 20 --windows 20 --pad 8 --out "$work/bench_stacked_bf16.json" "$@"
}
# stacked_sweep NAME RESERVE OVERRIDES...: a stacked multirun into $work/NAME, going on from an earlier call's
# resume file; then its report. Once it has completed ($work/NAME.done), a later call on the machine skips it
stacked_sweep() {
    local name=$1 reserve=$2 resume=false
    local folder=$work/$name
    if [[ -f $work/$name.done ]]; then
        echo "== ${name}_stacked: completed in an earlier call" | tee -a "$work/stages.txt"
        last_exit=0
        return
    fi
    # SIGTERM's grace (stage() reads it; the sweep's stage leaves it free after its limit): a group's resume file and
    # its checkpoints (15 medium: 2.4 GB) are written then
    local grace=${sweep_grace:-60}
    shift 2
    # an earlier call's sweep there: go on with it (a new multirun would be refused in a folder with its results; one
    # stopped before its first window has no resume file and starts again)
    [[ -d $folder ]] && resume=true
    if [[ -n ${GO_ON:-} && $resume == false ]]; then  # a second call on a fresh machine: the first's sweep went with it
        echo "== ${name}_stacked: not on this machine (GO_ON=1: a fresh machine; no sweep starts)" | tee -a "$work/stages.txt"
        last_exit=0
        return
    fi
    # how_it_ended.py: how the sweep ended (a signal or an exit) and whether its SIGTERM handler was there
    stage "${name}_stacked" $(( reserve + grace )) $PY benchmarks/how_it_ended.py $PY -m rnnreg.train -m \
        hydra/launcher=stacked "hydra.sweep.dir=$folder" hydra.launcher.resume=$resume "$@"
    local sweep_exit=$last_exit
    (( sweep_exit == 0 )) && touch "$work/$name.done"
    if (( sweep_exit != 0 )); then  # the kernel's word on a kill (out of memory), and the memory then
        { echo "== dmesg, free after exit $sweep_exit"; dmesg 2>&1 | tail -5; free -m | head -2; } >>"$work/${name}_stacked.log"
    fi
    [[ -d $folder ]] && stage "${name}_report" "$reserve" $PY -m rnnreg.report "path=$folder"
    last_exit=$sweep_exit
}
# the paper-scale ablation (5 placements x 3 seeds, medium, 39 epochs)
ablation() {
    local reserve=$1
    shift
    stacked_sweep ablation_full "$reserve" experiment=ablation_placement_full "$@"
}
# one seed's five placements of the paper-scale ablation (a group of 5)
ablation_seed() {
    local seed=$1 reserve=$2
    local sweep_grace=20  # 5 medium members' files (about 1.2 GB) take seconds: the rest of the time trains
    shift 2
    stacked_sweep "ablation_seed_$seed" "$reserve" experiment=ablation_placement_full "seed=$seed" "$@"
}
# profile_padded RESERVE: where a K = 15 medium window's time goes with the hidden units padded as a GPU's sweep holds
# them (650 as 656), on both cells and with the Triton update (the kernels of bench_stacked.py --profile, ~1 min);
# once per machine
profile_padded() {
    [[ -f $work/profile_stacked_pad8.txt ]] && return
    stage profile_padded "$1" $PY benchmarks/bench_stacked.py --device "${device:-cuda}" --tf32 --placements --members 15 \
        --pad 8 --hidden 650 --bptt 35 --batch 20 --kinds stacked stacked_triton stacked_triton_update \
        --profile "$work/profile_stacked_pad8.txt" "${@:2}"
}
# window_timings [ARGS]: what is left to learn of a K = 15 window (issue 15's 10 ms), each once per machine: under bf16
# autocast on both cells and with the Triton update (bf16_timing), then where its time goes (profile_padded). ARGS:
# bench_stacked.py's, for both (a CPU's dry run: tiny sizes)
window_timings() {
    bf16_timing 0 --kinds stacked stacked_triton stacked_triton_update "$@"
    profile_padded 0 "$@"
}
# resume_check RESERVE [ARGS]: whether a run stopped by SIGTERM and resumed repeats the uninterrupted one on this
# machine: the paper's placement on cuDNN's kernel (its dropout between layers from a state no checkpoint holds), on
# model.lstm=layers (torch's dropout between), and recurrent dropout (the step loop); once per machine (~3-4 min)
resume_check() {
    local reserve=$1
    shift
    [[ -f $work/resume_check.done ]] && return
    last_exit=1  # (a stage skipped for time sets none)
    stage resume_check "$reserve" $PY benchmarks/resume_check.py --out "$work" "$@"
    (( last_exit == 0 )) && touch "$work/resume_check.done"  # (resume_check.py exits 1 unless every case compared)
}
# the stacked window's GEMMs in other layouts and precisions (~20 s), in whatever time is left
gemm_layouts() {
    stage gemm_layouts 0 $PY benchmarks/bench_gemm_layouts.py --device "${1:-cuda}" --members 15 --out "$work/gemm_layouts.json" \
        "${@:2}"
}
# the paper's table, 3 seeds per size: three groups, large first
table() {
    local reserve=$1
    shift
    stacked_sweep paper_table "$reserve" experiment=paper_large,paper_medium,paper_small seed=1234,1,2 speed.tf32=true "$@"
}
# when the stacked sweep crashed (not done, not stopped at its time limit: 124/137/143), the time left goes to the
# large model, so that a bug on the GPU does not cost the session's remaining minutes
large_if_crashed() {
    case $last_exit in 0 | 124 | 137 | 143) return ;; esac
    echo "== the stacked sweep exited $last_exit: paper_large in the time left" | tee -a "$work/stages.txt"
    stage reproduce_large 0 $PY benchmarks/reproduce.py --out "$work" --experiment paper_large "$@" speed.tf32=true
}
case $what in
    profile) stage profile 0 $PY benchmarks/profile_step.py --out "$work" ;;
    bench) stage bench 0 $PY "${bench[@]}" --concurrent 4 --sides rnnreg rnnreg_no_graph rnnreg_plain_step \
                                              rnnreg_tf32 rnnreg_bf16 ;;
    reproduce) stage reproduce 0 $PY benchmarks/reproduce.py --out "$work" "$@" ;;
    all)
        stage profile 440 $PY benchmarks/profile_step.py --out "$work"
        stage bench_medium 330 $PY "${bench[@]}" --sizes medium
        stage reproduce 120 $PY benchmarks/reproduce.py --out "$work"
        if [[ ! -f $work/reproduce_paper_medium.json ]]; then  # failed early: once more without the graph
            stage reproduce_no_graph 120 $PY benchmarks/reproduce.py --out "$work/no_graph" speed.cuda_graph=false
        fi
        stage bench_large 80 $PY "${bench[@]}" --sizes large --sides rnnreg
        stage bench_concurrent 45 $PY "${bench[@]}" --sizes --concurrent 4
        stage bench_precision 0 $PY "${bench[@]}" --sizes medium --sides rnnreg_tf32 rnnreg_bf16
        stage bench_step_lstm 0 $PY "${bench[@]}" --sizes medium --sides rnnreg_variational rnnreg_variational_no_graph
        stage bench_large_more 0 $PY "${bench[@]}" --sizes large --sides rnnreg_no_graph rnnreg_tf32 rnnreg_bf16 ;;
    next)
        stage profile 430 $PY benchmarks/profile_step.py --out "$work"
        stage bench_step_lstm 380 $PY "${bench[@]}" --sizes medium --sides rnnreg_variational rnnreg_variational_no_graph \
            rnnreg_variational_triton
        stage reproduce_large 0 $PY benchmarks/reproduce.py --out "$work" --experiment paper_large speed.tf32=true ;;
    stacked)
        # padded as the sweep holds them (hydra.launcher.pad_hidden_to=auto: 650 as 656)
        stage bench_stacked 330 $PY benchmarks/bench_stacked.py --device cuda --check --kinds stacked stacked_triton \
            --tf32 --pad 8 --members 15 1 4 8 --hidden 650 --bptt 35 --batch 20 --windows 20 --out "$work/bench_stacked.json"
        stage bench_stacked_fp32 310 $PY benchmarks/bench_stacked.py --device cuda --kinds stacked --members 15 --pad 8 \
            --hidden 650 --bptt 35 --batch 20 --windows 20 --out "$work/bench_stacked_fp32.json"
        stage bench_fused_single 260 $PY "${bench[@]}" --sizes medium --sides rnnreg
        ablation 0 trainer.accelerator=gpu $(sweep_settings bench_stacked 15)  # (unquoted: three words, no spaces)
        large_if_crashed ;;
    ablation)
        check_graph_once graph_check 15 650
        ablation 0 trainer.accelerator=gpu $(sweep_settings graph_check 15)
        large_if_crashed ;;
    ablation_seed)
        check_graph_once graph_check_k5 5 650
        ablation_seed "${ABLATION_SEED:-1234}" 0 trainer.accelerator=gpu $(sweep_settings graph_check_k5 5)
        large_if_crashed
        window_timings
        resume_check 0 ;;
    resume) resume_check 0 "$@" ;;
    table)
        check_graph_once table_graph_check 3 1500
        table 0 trainer.accelerator=gpu $(sweep_settings table_graph_check 3) ;;
    settings)  # what each sweep mode would run with, from the checks and timings already in WORK_DIR
        echo "stacked: $(sweep_settings bench_stacked 15)"
        echo "ablation: $(sweep_settings graph_check 15)"
        echo "ablation_seed: $(sweep_settings graph_check_k5 5)"
        echo "table: $(sweep_settings table_graph_check 3)"
        exit 0 ;;
    probe)  # after a first ablation call (2026-11-30): where a K = 15 window's time goes, SIGTERM on a GPU, K = 1-8
        stage profile_stacked 140 $PY benchmarks/bench_stacked.py --device cuda --tf32 --placements --members 15 \
            --hidden 650 --bptt 35 --batch 20 --kinds stacked stacked_triton --profile "$work/profile_stacked.txt"
        # a 15-member medium group stopped by timeout's SIGTERM mid-epoch: its exit, files and statuses
        stage sigterm 40 bash -c "free -m | head -2; timeout --preserve-status -k 40 45 $PY -m rnnreg.train -m \
            hydra/launcher=stacked hydra.sweep.dir=$work/sigterm experiment=ablation_placement_full trainer.accelerator=gpu; \
            echo exit \$?; free -m | head -2; cat $work/sigterm/0/train.log $work/sigterm/0/metrics.json; \
            ls -la $work/sigterm/.stacked $work/sigterm/0/checkpoints; dmesg 2>&1 | tail -5"
        stage bench_stacked 0 $PY benchmarks/bench_stacked.py --device cuda --kinds stacked stacked_triton --tf32 \
            --members 1 4 8 --hidden 650 --bptt 35 --batch 20 --windows 20 --out "$work/bench_stacked.json"
        pad_timing 0
        bf16_timing 0
        gemm_layouts ;;
    cpu)
        export TRITON_INTERPRET=1  # the Triton cell's kernels in Triton's interpreter
        stage graph_check 0 $PY benchmarks/bench_stacked.py --check --members 2 --tf32 --kinds stacked stacked_triton \
            --hidden 16 --vocab 50 --windows 2 --warmup 1 --out "$work/graph_check.json"
        stage bench_stacked 0 $PY benchmarks/bench_stacked.py --check --tf32 --members 2 1 --hidden 16 --vocab 50 \
            --kinds step fused stacked stacked_triton stacked_triton_update --windows 2 --warmup 1 --out "$work/bench_stacked.json"
        stage bench_stacked_fp32 0 $PY benchmarks/bench_stacked.py --kinds stacked --members 2 --hidden 16 --vocab 50 \
            --windows 2 --warmup 1 --out "$work/bench_stacked_fp32.json"
        # the ablation on the GPU's program, interrupted at its time limit, then gone on with as `ablation` does
        budget=$(( SECONDS + 110 ))  # its first call: stopped by SIGTERM during its epochs
        ablation 0 hydra.launcher.program=batched trainer.accelerator=cpu speed.cuda_graph="$(graph_checked graph_check)" \
            speed.triton_cell="$(triton_cell_pays graph_check)" model.hidden_size=16 trainer.max_epochs=6 trainer.limit_train_batches=6 trainer.limit_val_batches=2 \
            trainer.limit_test_batches=2
        budget=0
        ablation 0 hydra.launcher.program=batched trainer.accelerator=cpu speed.cuda_graph="$(graph_checked)" \
            speed.triton_cell="$(triton_cell_pays)" model.hidden_size=16 trainer.max_epochs=6 trainer.limit_train_batches=6 trainer.limit_val_batches=2 \
            trainer.limit_test_batches=2
        # probe's padding timing; ablation_seed's sweep (one seed's five placements: the seed given overrides the
        # experiment's three), padded as auto pads them on a GPU (12 units held as 16), then its profile and bf16 timing
        device=cpu pad_timing 0 --hidden 12 --vocab 50 --members 2 --windows 2 --warmup 1
        ablation_seed 1 0 hydra.launcher.program=batched trainer.accelerator=cpu speed.cuda_graph="$(graph_checked)" \
            speed.triton_cell="$(triton_cell_pays)" speed.triton_update="$(triton_update_pays)" model.hidden_size=12 \
            hydra.launcher.pad_hidden_to=8 \
            trainer.max_epochs=2 trainer.limit_train_batches=3 trainer.limit_val_batches=2 trainer.limit_test_batches=2
        device=cpu window_timings --hidden 12 --vocab 50 --members 2 --windows 2 --warmup 1
        rm -f "$work/resume_check.done"
        resume_check 0 --accelerator cpu --experiment paper_small --windows 4 dropout.p=0.3 model.hidden_size=16 \
            trainer.limit_val_batches=2
        rm -f "$work/resume_check.done"  # (a GPU's own check still runs in this WORK_DIR after this dry run)
        # table's commands: its graph check and its three groups, tiny
        stage table_graph_check 0 $PY benchmarks/bench_stacked.py --check --members 3 --tf32 --kinds stacked \
            stacked_triton stacked_triton_update --hidden 16 --vocab 50 --windows 2 --warmup 1 \
            --out "$work/table_graph_check.json"
        table 0 hydra.launcher.program=batched trainer.accelerator=cpu \
            speed.cuda_graph="$(graph_checked table_graph_check)" speed.triton_cell="$(triton_cell_pays table_graph_check 3)" \
            speed.triton_update="$(triton_update_pays table_graph_check 3)" \
            model.hidden_size=16 trainer.max_epochs=2 trainer.limit_train_batches=3 trainer.limit_val_batches=2 \
            trainer.limit_test_batches=2
        gemm_layouts cpu --hidden 16 --vocab 50 --repeats 1
        stage profile 0 $PY benchmarks/profile_step.py --out "$work" --device cpu --sizes medium --windows 2
        stage bench 0 $PY "${bench[@]}" --device cpu --steps 6 --sizes medium --concurrent 2
        stage reproduce 0 $PY benchmarks/reproduce.py --out "$work" --accelerator cpu trainer.max_epochs=1 \
            trainer.limit_train_batches=4 trainer.limit_val_batches=2 trainer.limit_test_batches=2
        # next's own commands: the step-loop LSTM sides and paper_large
        stage bench_step_lstm 0 $PY "${bench[@]}" --device cpu --steps 6 --sizes medium \
            --sides rnnreg_variational rnnreg_variational_no_graph
        # (next's rnnreg_variational_triton side is left out here: interpreted, medium takes minutes a window)
        last_exit=1  # next's paper_large, as after a stacked sweep that crashed
        large_if_crashed --accelerator cpu trainer.max_epochs=1 trainer.limit_train_batches=3 trainer.limit_val_batches=2 \
            trainer.limit_test_batches=2 ;;
    *) echo "unknown stage $what: all, next, stacked, ablation, ablation_seed, table, probe, resume, profile, bench, reproduce, cpu or settings" >&2
       exit 2 ;;
esac
pack
