#!/usr/bin/env bash
# Bi-Real (issue 4), the shortcut comparison with the PAPER's optimiser, at full width (64), on one
# lent CUDA GPU: for each block (per-conv shortcut "bireal", plain "basic") and seed 0, 1, the
# clip(-1, 1) real-valued twin with its registered recipe (resnet18-cifar-float: SGD 0.1, momentum
# 0.9, wd 5e-4, cosine, batch 128), then the binary net initialised from it with ITS registered
# recipe (bireal-resnet18-cifar / binary-resnet18-cifar: SGD 0.01, momentum 0.9, wd 0, ×0.1 at 50 %
# and 75 % of the run — the paper's stage-2 procedure, §2.6), every run fitted to the wall-clock
# budget (--fit-schedule stretches the cosine / scales the milestones over the epochs that fit).
# The ninth session ran the same comparison with Adam (train_cifar_device.sh). Its documented SGD
# figures used Nesterov momentum (the trainer's only SGD then); the recipes now use the paper's plain
# momentum: add `--set nesterov=true` to both train lines to repeat those runs exactly.
#
# Usage: bash benchmarks/gpu/bireal_sgd_device.sh PACK_DIR TRAIN_SECONDS [TWIN_SECONDS]
#   PACK_DIR: CIFAR-10 written by benchmarks/gpu/pack_cifar.py; TRAIN_SECONDS: from the start of this
#   script until every run has stopped; TWIN_SECONDS: the twins' share of it (default 40 %).
# Results go to $OUT (or ./gpu-results): results.tgz (metrics, logs), bin-*.onebit (the binary nets'
# best checkpoints, exported: score them on the original test set with `onebit run`).
source "$(dirname "$0")/device_lib.sh" "$@"

A="--data cifar10 --data-root $DATA --bf16 --channels-last --augment --threads 2"
pids=()
for s in 0 1; do
  for block in basic bireal; do
    if [ $block = basic ]; then twin_set="--set model.block=basic"; bin=binary-resnet18-cifar
    else twin_set=""; bin=bireal-resnet18-cifar; fi
    ( train pre-$block-s$s resnet18-cifar-float $A --seed $s $twin_set --epochs 100 \
        --max-minutes "$(minutes_until $twin_end)"
      train bin-$block-s$s $bin $A --seed $s --epochs 200 --set milestones=[100,150] \
        --init-from "$W/pre-$block-s$s/best.safetensors" --max-minutes "$(minutes_until $end)" ) &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p"; done
device_finish bin-basic-s0 bin-basic-s1 bin-bireal-s0 bin-bireal-s1
