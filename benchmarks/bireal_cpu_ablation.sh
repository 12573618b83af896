#!/usr/bin/env bash
# Bi-Real (issue 4): the CIFAR-10 ablation at a fixed epoch budget on the CPU, one row per run folder,
# resumable across sessions. Every row uses the same recipe and the same number of epochs (no
# --fit-schedule): width 16, SGD 0.01 (momentum 0.9, the registered Bi-Real stage-2 optimiser),
# weight decay 0, cosine to 0, batch 128, crop + flip, bf16 autocast, torch.compile, 1 thread a run,
# Nesterov momentum (as every documented row).
#
# Usage: bash benchmarks/bireal_cpu_ablation.sh OUT EPOCHS MAX_MINUTES ROW [ROW ...]
#   OUT:         folder of the run folders (OUT/ROW); DATA_ROOT (env) defaults to ../shared/data;
#                PRECISION (env): bf16 (default, every documented row) or fp32 (CPUs without AVX-512)
#   EPOCHS:      the budget of every row (a row already started must be continued with the same number)
#   MAX_MINUTES: wall-clock limit of this invocation, per run; a run that reaches it stops cleanly
#                after an epoch and the same command continues it (--resume) in a later session
#   ROW:         NAME-sSEED, NAME one of
#                  bireal   bireal-resnet18-cifar (shortcut per conv, ApproxSign, magnitude-aware α)
#                  plain    binary-resnet18-cifar (shortcut every two convs)
#                  ste      Bi-Real with the hard-tanh STE instead of ApproxSign
#                  nomag    Bi-Real with sign(W) instead of the magnitude-aware α
#                  caffe    Bi-Real with the official Caffe code's weight gradient (identity: g, not α·g)
#                  plaincaffe  the plain net with that gradient
#                  preclip  the clip(-1, 1) real-valued twin (resnet18-cifar-float)
#                  prerelu  the ReLU real-valued twin
#                  clip     Bi-Real initialised from OUT/preclip-sSEED/best.safetensors (must be finished)
#                  relu     Bi-Real initialised from OUT/prerelu-sSEED/best.safetensors (must be finished)
# All rows given run side by side; a finished row is skipped. Logs: OUT/ROW.log (appended).
# Then: python benchmarks/run_table.py OUT/*, and score the best checkpoints on the engine:
#   onebit export OUT/ROW/best.safetensors -o ROW.onebit && onebit run ROW.onebit --data cifar10 --data-root ../shared/data
set -u
if [ $# -lt 4 ]; then sed -n '2,27p' "$0"; exit 2; fi
OUT=$1; EPOCHS=$2; MAXMIN=$3; shift 3
DATA_ROOT=${DATA_ROOT:-../shared/data}
PRECISION=${PRECISION:-bf16}   # bf16 (the documented rows) or fp32: bf16 autocast needs AVX-512, on an
                               # AVX2-only CPU it is ~17x slower than fp32 (docs/benchmarks.md §2)
case $PRECISION in bf16|fp32) ;; *) echo "PRECISION must be bf16 or fp32, got '$PRECISION'" >&2; exit 2;; esac
# nesterov=true: every documented row (seeds 0-3, sessions 6-19) ran with the trainer's Nesterov
# momentum; the registered Bi-Real recipes took the paper's plain momentum in the nineteenth session
R="--data cifar10 --data-root $DATA_ROOT --$PRECISION --threads 1 --compile --no-progress --optimizer sgd --lr 1e-2
   --set weight_decay=0 --set lr_schedule=cosine --set lr_final=0 --set model.width=16 --augment --set nesterov=true"
mkdir -p "$OUT"

# shellcheck source=benchmarks/_cpu_rows.sh
. "$(dirname "$0")/_cpu_rows.sh"   # done_epochs, wait_rows

pids=()
for row in "$@"; do
  name=${row%-s*}; seed=${row##*-s}
  case $seed in ''|*[!0-9]*) echo "bad row '$row': expected NAME-sSEED, e.g. bireal-s0" >&2; exit 2;; esac
  case $name in
    bireal)  args="bireal-resnet18-cifar";;
    plain)   args="binary-resnet18-cifar";;
    ste)     args="bireal-resnet18-cifar --set model.activation=ste_sign";;
    nomag)   args="bireal-resnet18-cifar --set model.weight=ste_sign";;
    caffe)   args='bireal-resnet18-cifar --set model.weight_kwargs={"grad":"caffe"}';;
    plaincaffe) args='binary-resnet18-cifar --set model.weight_kwargs={"grad":"caffe"}';;
    preclip) args="resnet18-cifar-float";;
    prerelu) args="resnet18-cifar-float --set model.activation=relu";;
    clip|relu)
      twin="$OUT/pre$name-s$seed"
      if [ "$(done_epochs "$twin")" -lt "$EPOCHS" ]; then
        echo "skip $row: its twin $twin has not finished $EPOCHS epochs (run pre$name-s$seed first)" >&2; continue
      fi
      args="bireal-resnet18-cifar --init-from $twin/best.safetensors";;
    *) echo "unknown row name '$name' in '$row'" >&2; exit 2;;
  esac
  dir="$OUT/$row"; n=$(done_epochs "$dir")
  if [ "$n" -ge "$EPOCHS" ]; then echo "$row: finished ($n epochs)"; continue; fi
  resume=""; [ -d "$dir" ] && resume="--resume"
  echo "$(date +%T) $row: from epoch $((n + 1)) of $EPOCHS $resume"
  # shellcheck disable=SC2086
  onebit train $args $R --seed "$seed" --epochs "$EPOCHS" --max-minutes "$MAXMIN" $resume --out "$dir" \
    >> "$OUT/$row.log" 2>&1 &
  pids+=($!)
done
wait_rows "$OUT" "$EPOCHS" "$@"
