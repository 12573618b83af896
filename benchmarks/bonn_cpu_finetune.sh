#!/usr/bin/env bash
# BONN (issue 6): the Bayesian losses in a fine-tuning stage, on the CPU. Every row starts from the
# same trained lam = theta = 0 checkpoint (INIT) and trains EPOCHS more epochs with the same recipe —
# bonn-wrn22 (narrow 16-16-32-64), SGD at LR (default 0.01, momentum 0.9, Nesterov), weight decay
# 5e-4 on the real layers, cosine to 0, batch 128, crop + flip, bf16, 1 thread a run — and only
# (lam, theta) differ. The book updates the class centers "in the fine-tuning process" (methods.md
# §4.6 [?]); this is that reading, not the paper's from-scratch 200 epochs. Resumable across sessions.
#
# Usage: bash benchmarks/bonn_cpu_finetune.sh OUT INIT EPOCHS MAX_MINUTES ROW [ROW ...]
#   OUT:         folder of the run folders (OUT/ROW); DATA_ROOT (env) defaults to ../shared/data;
#                PRECISION (env): bf16 (default, every documented row) or fp32 (CPUs without AVX-512)
#   INIT:        the checkpoint every row starts from (a bonn-wrn22 run's best.safetensors)
#   EPOCHS:      fine-tuning epochs of every row (a row already started must be continued with the same number)
#   MAX_MINUTES: wall-clock limit of this invocation, per run; the same command continues a stopped run
#   ROW:         lLAM-tTHETA-sSEED, e.g. l0-t0-s0 (no Bayesian losses), l1e-6-t0-s0, l1e-6-t1e-3-s0;
#                NU (env, default 1e-2) is the prior's weight, LR (env, default 1e-2) the base lr
# All rows given run side by side; a finished row is skipped. Logs: OUT/ROW.log (appended).
# Then: python benchmarks/run_table.py OUT/* --field model_kwargs.lam --field model_kwargs.theta
set -u
if [ $# -lt 5 ]; then sed -n '2,18p' "$0"; exit 2; fi
OUT=$1; INIT=$2; EPOCHS=$3; MAXMIN=$4; shift 4
DATA_ROOT=${DATA_ROOT:-../shared/data}; NU=${NU:-1e-2}; LR=${LR:-1e-2}
PRECISION=${PRECISION:-bf16}   # bf16 (the documented rows) or fp32: bf16 autocast needs AVX-512, on an
                               # AVX2-only CPU it is ~17x slower than fp32 (docs/benchmarks.md §2)
case $PRECISION in bf16|fp32) ;; *) echo "PRECISION must be bf16 or fp32, got '$PRECISION'" >&2; exit 2;; esac
if [ ! -f "$INIT" ]; then echo "no checkpoint at $INIT" >&2; exit 2; fi
R="--data cifar10 --data-root $DATA_ROOT --$PRECISION --threads 1 --no-progress --lr $LR --init real"
mkdir -p "$OUT"

# shellcheck source=benchmarks/_cpu_rows.sh
. "$(dirname "$0")/_cpu_rows.sh"   # done_epochs, wait_rows

num='[0-9.]+(e-?[0-9]+)?'
pids=()
for row in "$@"; do
  if ! [[ $row =~ ^l($num)-t($num)-s([0-9]+)$ ]]; then
    echo "bad row '$row': expected lLAM-tTHETA-sSEED, e.g. l1e-6-t1e-3-s0" >&2; exit 2
  fi
  lam=${BASH_REMATCH[1]}; theta=${BASH_REMATCH[3]}; seed=${BASH_REMATCH[5]}
  dir="$OUT/$row"; n=$(done_epochs "$dir")
  if [ "$n" -ge "$EPOCHS" ]; then echo "$row: finished ($n epochs)"; continue; fi
  resume=""; [ -d "$dir" ] && resume="--resume"
  echo "$(date +%T) $row: lam=$lam theta=$theta nu=$NU seed=$seed, from epoch $((n + 1)) of $EPOCHS $resume"
  # shellcheck disable=SC2086
  onebit train bonn-wrn22 $R --init-from "$INIT" --set model.lam="$lam" --set model.theta="$theta" --set model.nu="$NU" \
    --seed "$seed" --epochs "$EPOCHS" --max-minutes "$MAXMIN" $resume --out "$dir" >> "$OUT/$row.log" 2>&1 &
  pids+=($!)
done
wait_rows "$OUT" "$EPOCHS" "$@"
