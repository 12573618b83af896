# Shared plumbing of the CIFAR-10 training jobs run on a lent GPU machine (sourced, not run):
# unpack the JPEG-packed data set, train runs side by side with --fit-schedule, build the C++ core
# for export while the GPU trains, snapshot progress, bring results back under the device's limits
# (at most 8 files of 16 MiB each).
#
#   source benchmarks/gpu/device_lib.sh PACK_DIR TOTAL_SECONDS [TWIN_SECONDS]
#   train NAME MODEL ARGS...          # → $W/NAME (run folder) and $W/NAME.log
#   minutes_until EPOCH_SECONDS       # budget for --max-minutes, with a 20 s margin
#   device_finish RUN...              # export RUN's best checkpoint to $OUT/RUN.onebit, archive the rest
#
# Environment: OUT (default ./gpu-results), DEVICE (default cuda; DEVICE=cpu EXTRA="--limit 512
# --set model.width=8" for a dry run of the plumbing), SKIP_BUILD=1 when the core is installed.
# EXTRA="--compile" runs every training step through torch.compile (the tenth session measured it
# on the CPU only; the first step of each batch shape compiles, and --fit-schedule leaves that out).
set -o pipefail
pack=${1:?usage: PACK_DIR TOTAL_SECONDS [TWIN_SECONDS]}; total=${2:?seconds}
t0=$(date +%s); twin_s=${3:-$((total * 2 / 5))}
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
DEVICE=${DEVICE:-cuda}
W=$(mktemp -d); DATA=$W/data
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src ONEBIT_CACHE=$W/cache
end=$((t0 + total)); twin_end=$((t0 + twin_s))

minutes_until() { awk -v a="$1" -v b="$(date +%s)" -v s="${2:-20}" 'BEGIN{m=(a-b-s)/60; if (m<0.2) m=0.2; printf "%.2f", m}'; }

train() {  # NAME MODEL ARGS... → $W/NAME (run folder) and $W/NAME.log
  local name=$1; shift
  python3 -m onebit.cli.main train "$@" --device "$DEVICE" --no-progress --fit-schedule --out "$W/$name" $EXTRA \
    > "$W/$name.log" 2>&1
  echo "$name: rc $? at $(( $(date +%s) - t0 )) s"
}

snapshot() {  # $1: archive name under $OUT (metrics, logs; no weights)
  (cd "$W" && tar czf "$OUT/$1.part" --exclude='*.safetensors' --exclude=./data --exclude=./cache . 2>/dev/null) \
    && mv "$OUT/$1.part" "$OUT/$1"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"
  nproc; } > "$W/machine.txt" 2>&1
cat "$W/machine.txt"
python3 benchmarks/gpu/pack_cifar.py unpack "$pack" "$DATA/cifar-10-batches-bin" || exit 1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 > "$W/gpu_util.csv" 2>&1 &
_smi=$!
# the C++ core (for export) builds on two cores while the GPU trains
[ -n "$SKIP_BUILD" ] || ( cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
    && nice -n 19 ninja -j 2 -C build/dev && ln -sf "../../../build/dev/$(cd build/dev && ls _core*.so | head -1)" src/onebit/kernels/
) > "$W/build.txt" 2>&1 &
_build=$!
( while sleep 30; do snapshot progress.tgz; done ) &
_snap=$!

device_finish() {  # RUN... : the binary runs to export; call after every training has stopped
  echo "training done at $(( $(date +%s) - t0 )) s"
  wait "$_build" 2>/dev/null || { echo "C++ core build failed"; tail -5 "$W/build.txt"; }
  kill "$_snap" "$_smi" 2>/dev/null
  local r
  for r in "$@"; do  # one .onebit per binary net (≈ 2.1 MB at width 64; a compacted checkpoint if export fails)
    [ -f "$W/$r/best.safetensors" ] || continue
    python3 -m onebit.cli.main export "$W/$r/best.safetensors" -o "$OUT/$r.onebit" 2>&1 | tail -1 \
      || python3 benchmarks/gpu/compact_checkpoint.py "$W/$r/best.safetensors" "$OUT/$r.safetensors.gz" 2>&1 | tail -1
  done
  (cd "$W" && tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude=./data --exclude=./cache .)
  rm -f "$OUT/progress.tgz"
  local f
  for f in "$W"/*/metrics.csv; do echo "$(basename "$(dirname "$f")"): $(wc -l < "$f") lines; last: $(tail -1 "$f")"; done
  ls -la "$OUT"
  echo "all done at $(( $(date +%s) - t0 )) s"
}
