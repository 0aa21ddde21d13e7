#!/bin/bash
# words/s of two smoke jobs at once (seed=1,2, each a process of its own, 40 windows): hydra/launcher=joblib
# (n_jobs=2) and hydra/launcher=submitit_local, each with the threads its jobs take by default (cores // 2) and with
# every core each (OMP_NUM_THREADS=2 on this 2-core VM: what submitit_local's jobs took before 7633641), in turn,
# twice.
# prints: label, job, the threads its train.log says, words/s of the whole run, training seconds, the 1-min load
# average when the sweep ended (other programs share the cores: more than 2 means they were busy)
B=${BIN:-.venv/bin}  # run from the repository root
OUT=$(mktemp -d)
sweep() { # $1 label, $2 OMP_NUM_THREADS (empty: not set), then the launcher's overrides
  local label=$1 omp=$2
  shift 2
  env -u OMP_NUM_THREADS -u MKL_NUM_THREADS ${omp:+OMP_NUM_THREADS=$omp} PYTHONPATH=src $B/python -m rnnreg.train -m \
    experiment=smoke seed=1,2 trainer.max_epochs=1 trainer.limit_train_batches=40 trainer.limit_val_batches=2 \
    test=false logger=none callbacks.progress_bar.refresh_rate=0 "$@" hydra.sweep.dir=$OUT/$label >/dev/null 2>&1
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  for job in 0 1; do
    python3 -c "
import json, re
m = json.load(open('$OUT/$label/$job/metrics.json'))
t = re.search(r'threads: (\d+)', open('$OUT/$label/$job/train.log').read()).group(1)
print('$label', $job, t, round(m['words_per_second']), round(m['train_seconds'], 1), '$load')"
  done
}
for repeat in 1 2; do
  sweep joblib_default_$repeat "" hydra/launcher=joblib hydra.launcher.n_jobs=2
  sweep joblib_omp2_$repeat 2 hydra/launcher=joblib hydra.launcher.n_jobs=2
  sweep submitit_default_$repeat "" hydra/launcher=submitit_local
  sweep submitit_omp2_$repeat 2 hydra/launcher=submitit_local
done
