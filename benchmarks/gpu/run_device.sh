#!/usr/bin/env bash
# One prepared run on a CUDA machine (no network): build the CPU core, run the GPU tests, then the
# benchmark. Results go to $OUT (or ./gpu-results). Usage: bash benchmarks/gpu/run_device.sh [onebit] [mnist-dir]
set -o pipefail
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH=src ONEBIT_CACHE="$WORK/cache"
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda)" | tee -a "$OUT/gpu.txt"
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" > "$OUT/build.txt" 2>&1 \
  && ninja -C build/dev >> "$OUT/build.txt" 2>&1 && ln -sf ../../../build/dev/$(cd build/dev && ls _core*.so | head -1) src/onebit/kernels/ \
  || { echo "C++ core build failed"; tail -20 "$OUT/build.txt"; }
nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -Xptxas -v -c -o "$WORK/xnor.o" src/onebit/kernels/cuda/xnor.cu 2>&1 \
  | grep -E "Compiling entry|registers|spill" | sed 's/_ZN[0-9A-Za-z_]*xnor_cu_[0-9a-f]*//' | tee "$OUT/ptxas.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/pytest.txt" | tail -15
timeout 240 python3 benchmarks/gpu/bench_xnor_gemm.py --out "$OUT/bench.json" ${1:+--onebit "$1"} ${2:+--mnist "$2"} 2>&1 | tee "$OUT/bench.txt"
