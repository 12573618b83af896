#!/usr/bin/env bash
# BNN MLP on MNIST (the paper's Theano recipe, exponential decay shortened to EPOCHS) on one CUDA
# GPU: several runs side by side, each stopped by a wall-clock budget, then each run's best
# checkpoint exported to a bit-packed .onebit file (scored afterwards on the CPU engine).
#
# Usage: bash benchmarks/gpu/train_mnist_device.sh MNIST_DIR MINUTES "EPOCHS:SEED" ["EPOCHS:SEED" ...]
# Results (metrics CSVs, .onebit files, logs) go to $OUT (or ./gpu-results).
set -o pipefail
mnist=${1:?usage: train_mnist_device.sh MNIST_DIR MINUTES EPOCHS:SEED ...}; minutes=${2:?minutes}; shift 2
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH=src ONEBIT_CACHE="$WORK/cache"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
pids=()
for run in "$@"; do
  epochs=${run%%:*}; seed=${run##*:}; name="e${epochs}_s${seed}"
  python3 -m onebit.cli.main train bnn-mlp --data mnist --data-root "$mnist" --epochs "$epochs" \
    --seed "$seed" --device cuda --threads 2 --max-minutes "$minutes" --no-progress \
    --out "$WORK/$name" > "$WORK/$name.log" 2>&1 &
  pids+=($!)
done
# the C++ core (for export) builds while the GPU trains
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" > "$WORK/build.txt" 2>&1 \
  && ninja -C build/dev >> "$WORK/build.txt" 2>&1 && ln -sf ../../../build/dev/$(cd build/dev && ls _core*.so | head -1) src/onebit/kernels/ \
  || { echo "C++ core build failed"; tail -20 "$WORK/build.txt"; }
for p in "${pids[@]}"; do wait "$p"; done
for run in "$@"; do
  epochs=${run%%:*}; seed=${run##*:}; name="e${epochs}_s${seed}"
  cp "$WORK/$name/metrics.csv" "$OUT/mnist_${name}_metrics.csv" 2>/dev/null
  tail -3 "$WORK/$name.log"
  python3 -m onebit.cli.main export "$WORK/$name/best.safetensors" -o "$OUT/mnist_${name}.onebit" 2>&1 | tail -2
done
