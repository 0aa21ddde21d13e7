#!/bin/bash
# words/s of 40 smoke windows at 1 and 2 torch threads, quiet and with one core kept busy
# prints: label, words/s of the whole run, training seconds
B=${BIN:-.venv/bin}  # run from the repository root
OUT=$(mktemp -d)
one() { # $1 label $2 threads
  OMP_NUM_THREADS=$2 $B/rnnreg-train experiment=smoke trainer.max_epochs=1 trainer.limit_train_batches=40 \
    trainer.limit_val_batches=2 test=false logger=none callbacks.progress_bar.refresh_rate=0 hydra.run.dir=$OUT/$1 >/dev/null 2>&1
  python3 -c "import json;m=json.load(open('$OUT/$1/metrics.json'));print('$1', round(m['words_per_second']), round(m['train_seconds'],1))"
}
one quiet_t2 2; one quiet_t1 1
yes > /dev/null & Y=$!
one busy_t2 2; one busy_t1 1
kill $Y
