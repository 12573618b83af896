"""How strong is BONN's kernel-loss pull next to the task gradient on the latent kernels?

    python benchmarks/bonn_grad_probe.py --data-root ../shared/data --batches 20 [--checkpoint RUN/last.safetensors]

For ``bonn-wrn22`` (λ = θ = 0, so only the cross-entropy's gradient), over ``--batches`` training
batches of 128 CIFAR-10 images (mean/std normalised, no augmentation), per binary layer:

* ``|g|``: the mean absolute task gradient ∂L_S/∂k per entry and batch;
* ``|mean g|``: the mean absolute value of the per-entry gradient averaged over the batches — what
  survives when SGD adds the batches up (for a gradient whose sign changes from batch to batch it
  shrinks like 1/√batches);
* ``pull``: the reconstruction term's gradient λ·w·|w∘k − sign(k)| (λ = 1e-4, §4.6) per entry — it
  has the same sign in every batch, so it survives the summing whole.

Not a test: a measurement for docs/benchmarks.md §7.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from onebit import models
from onebit.data.formats import read_cifar_bin
from onebit.data.registry import _TABLE
from onebit.losses.bayes import kernel_priors

MEAN = torch.tensor(_TABLE["cifar10"].mean).view(1, 3, 1, 1)  # the loaders' mean/std normalisation
STD = torch.tensor(_TABLE["cifar10"].std).view(1, 3, 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--lam", type=float, default=1e-4)
    ap.add_argument("--checkpoint", default=None, help="a bonn-wrn22 checkpoint (default: the initialisation)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    imgs, labels = read_cifar_bin(f"{a.data_root}/cifar-10-batches-bin/data_batch_1.bin")
    x_all = torch.tensor(np.asarray(imgs), dtype=torch.float32).view(-1, 3, 32, 32) / 255.0
    x_all = (x_all - MEAN) / STD
    y_all = torch.tensor(np.asarray(labels), dtype=torch.long)
    model = models.create("bonn-wrn22", num_classes=10, lam=0, theta=0)
    if a.checkpoint:
        from onebit.train.checkpoint import load_checkpoint, restore

        tensors, meta = load_checkpoint(a.checkpoint)
        restore(tensors, meta, model)
    model.train()
    layers = kernel_priors(model)
    sums = {n: torch.zeros_like(c.weight) for n, c in layers}
    abs_sums = {n: 0.0 for n, _ in layers}
    for b in range(a.batches):
        x, y = x_all[b * 128:(b + 1) * 128], y_all[b * 128:(b + 1) * 128]
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for n, c in layers:
            sums[n] += c.weight.grad
            abs_sums[n] += float(c.weight.grad.abs().mean())
    print(f"{'layer':18s} {'mean|k|':>8s} {'|g|':>9s} {'|mean g|':>9s} {'pull':>9s} {'pull/|g|':>9s} {'pull/|mean g|':>14s}")
    for n, c in layers:
        k = c.weight.detach()
        w = c.weight_quantizer.recon.detach().reshape(1, 1, *k.shape[-2:])
        pull = float((a.lam * w * (w * k - torch.sign(k)).abs()).mean())
        g, gm = abs_sums[n] / a.batches, float((sums[n] / a.batches).abs().mean())
        print(f"{n:18s} {float(k.abs().mean()):8.4f} {g:9.2e} {gm:9.2e} {pull:9.2e} {pull / g:9.2f} {pull / gm:14.1f}")


if __name__ == "__main__":
    main()
