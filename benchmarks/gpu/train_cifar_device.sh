#!/usr/bin/env bash
# Bi-Real (issue 4) and BONN (issue 6) on CIFAR-10, side by side on one lent CUDA GPU, every run
# fitted to a wall-clock budget (--max-minutes with --fit-schedule: the cosine schedule is stretched
# over the epochs that fit, measured on the first epoch).
#
#   * Bi-Real ablation at full width (64): for each block (per-conv shortcut "bireal", plain "basic")
#     and seed 0, 1: the clip(-1, 1) real-valued twin, then the binary net initialised from it —
#     the sixth session's CPU recipe (Adam 1e-3, cosine to 0, wd 0, batch 128, crop + flip, bf16)
#     with width 64 instead of 16 and the epochs that fit.
#   * BONN WRN-22 (narrow, 16-16-32-64), the bonn-wrn22 recipe, seed 0: (λ, θ) = (0, 0),
#     (1e-6, 0), (1e-6, 1e-3), ν = 1e-2 — the eighth session's rows with the epochs that fit.
#
# Usage: bash benchmarks/gpu/train_cifar_device.sh PACK_DIR TRAIN_SECONDS [TWIN_SECONDS]
#   PACK_DIR: CIFAR-10 written by benchmarks/gpu/pack_cifar.py (JPEG q95: the device takes 64 MiB);
#   TRAIN_SECONDS: from the start of this script until every run has stopped;
#   TWIN_SECONDS: the twins' share of it (default 40 %).
# Results go to $OUT (or ./gpu-results): results.tgz (metrics, per-layer CSVs, histograms, logs),
# bin-*.onebit (the binary nets' best checkpoints, exported: score them on the original test set
# with `onebit run`), bonn_best.tgz, and progress.tgz (refreshed every 30 s, in case the call is cut off).
set -o pipefail
pack=${1:?usage: train_cifar_device.sh PACK_DIR TRAIN_SECONDS [TWIN_SECONDS]}; total=${2:?seconds}
t0=$(date +%s); twin_s=${3:-$((total * 2 / 5))}
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu EXTRA="--limit 512 --set model.width=8" for a dry run of the plumbing
W=$(mktemp -d); DATA=$W/data
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src ONEBIT_CACHE=$W/cache
end=$((t0 + total)); twin_end=$((t0 + twin_s))
minutes_until() { awk -v a="$1" -v b="$(date +%s)" -v s="${2:-20}" 'BEGIN{m=(a-b-s)/60; if (m<0.2) m=0.2; printf "%.2f", m}'; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"
  nproc; } > "$W/machine.txt" 2>&1
cat "$W/machine.txt"
python3 benchmarks/gpu/pack_cifar.py unpack "$pack" "$DATA/cifar-10-batches-bin" || exit 1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 > "$W/gpu_util.csv" 2>&1 &
smi=$!

train() {  # NAME ARGS... → $W/NAME (run folder) and $W/NAME.log
  local name=$1; shift
  python3 -m onebit.cli.main train "$@" --device "$DEVICE" --no-progress --fit-schedule --out "$W/$name" $EXTRA \
    > "$W/$name.log" 2>&1
  echo "$name: rc $? at $(( $(date +%s) - t0 )) s"
}
A="--data cifar10 --data-root $DATA --bf16 --channels-last --optimizer adam --lr 1e-3 --set weight_decay=0
   --set lr_schedule=cosine --set lr_final=0 --augment --threads 2"

pids=()
for s in 0 1; do
  ( train pre-basic-s$s resnet18-cifar-float $A --seed $s --set model.block=basic --epochs 100 \
      --max-minutes "$(minutes_until $twin_end)"
    train bin-basic-s$s binary-resnet18-cifar $A --seed $s --epochs 200 \
      --init-from "$W/pre-basic-s$s/best.safetensors" --max-minutes "$(minutes_until $end)" ) &
  pids+=($!)
  ( train pre-bireal-s$s resnet18-cifar-float $A --seed $s --epochs 100 --max-minutes "$(minutes_until $twin_end)"
    train bin-bireal-s$s bireal-resnet18-cifar $A --seed $s --epochs 200 \
      --init-from "$W/pre-bireal-s$s/best.safetensors" --max-minutes "$(minutes_until $end)" ) &
  pids+=($!)
done
B="--data cifar10 --data-root $DATA --bf16 --threads 1 --seed 0 --epochs 200 --set model.nu=1e-2"
for lt in 0:0 1e-6:0 1e-6:1e-3; do
  l=${lt%%:*}; t=${lt##*:}
  train bonn-l$l-t$t bonn-wrn22 $B --set model.lam=$l --set model.theta=$t --max-minutes "$(minutes_until $end)" &
  pids+=($!)
done

# the C++ core (for export) builds on two cores while the GPU trains (SKIP_BUILD=1: it is installed)
[ -n "$SKIP_BUILD" ] || ( cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
    && nice -n 19 ninja -j 2 -C build/dev && ln -sf "../../../build/dev/$(cd build/dev && ls _core*.so | head -1)" src/onebit/kernels/
) > "$W/build.txt" 2>&1 &
build=$!

snapshot() {  # $1: archive name under $OUT
  (cd "$W" && tar czf "$OUT/$1.part" --exclude='*.safetensors' --exclude=./data --exclude=./cache . 2>/dev/null) \
    && mv "$OUT/$1.part" "$OUT/$1"
}
( while sleep 30; do snapshot progress.tgz; done ) &
snap=$!
for p in "${pids[@]}"; do wait "$p"; done
echo "training done at $(( $(date +%s) - t0 )) s"
wait "$build" 2>/dev/null || { echo "C++ core build failed"; tail -5 "$W/build.txt"; }
kill "$snap" "$smi" 2>/dev/null

# back from the device: at most 8 files of 16 MiB each — one .onebit per binary net (≈ 2.1 MB at
# width 64; a compacted checkpoint where the export failed), the BONN checkpoints in one archive
for r in bin-basic-s0 bin-basic-s1 bin-bireal-s0 bin-bireal-s1; do
  [ -f "$W/$r/best.safetensors" ] || continue
  python3 -m onebit.cli.main export "$W/$r/best.safetensors" -o "$OUT/$r.onebit" 2>&1 | tail -1 \
    || python3 benchmarks/gpu/compact_checkpoint.py "$W/$r/best.safetensors" "$OUT/$r.safetensors.gz" 2>&1 | tail -1
done
(cd "$W" && tar czf "$OUT/bonn_best.tgz" bonn-*/best.safetensors)
(cd "$W" && tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude=./data --exclude=./cache .)
rm -f "$OUT/progress.tgz"
for f in "$W"/*/metrics.csv; do echo "$(basename "$(dirname "$f")"): $(wc -l < "$f") lines; last: $(tail -1 "$f")"; done
ls -la "$OUT"
echo "all done at $(( $(date +%s) - t0 )) s"
