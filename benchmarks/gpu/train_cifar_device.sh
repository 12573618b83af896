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
source "$(dirname "$0")/device_lib.sh" "$@"

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

for p in "${pids[@]}"; do wait "$p"; done
(cd "$W" && tar czf "$OUT/bonn_best.tgz" bonn-*/best.safetensors)
device_finish bin-basic-s0 bin-basic-s1 bin-bireal-s0 bin-bireal-s1
