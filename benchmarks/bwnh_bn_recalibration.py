"""How much of BWN's collapse before fine-tuning is only stale BatchNorm statistics?

``onebit bwnh`` compares, before any fine-tuning, the hashed network (BWNH) with BWN, α·sign(W) of the
same float weights. Both keep the float network's BatchNorm running statistics, which were estimated
on the float layers' outputs. This probe re-estimates every BN layer's running mean and variance
(cumulative average over ``--batches`` training batches, no augmentation, no weight changes) and
evaluates float, BWN and BWNH again on the test set — separating "the binary weights lost the
layer's function" from "the BN statistics no longer match".

    python benchmarks/bwnh_bn_recalibration.py RUN/float/best.safetensors RUN/bwnh/hashed.safetensors \\
        --data-root ../shared/data --batches 40 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from torch import nn


def recalibrate_bn(model: nn.Module, loader, batches: int) -> nn.Module:
    """A copy of ``model`` whose BN running stats are the plain average over ``batches`` batches."""
    m = copy.deepcopy(model)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative moving average
    m.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            m(x)
    m.eval()
    return m


def main() -> None:
    from onebit import data as onebit_data
    from onebit.methods import Recipe
    from onebit.methods.bwnh import TWINS, accuracy, binary_twin
    from onebit.train import load_for_eval

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("float_checkpoint")
    ap.add_argument("hashed_checkpoint", help="hashed.safetensors written by `onebit bwnh`")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--batches", type=int, default=40, help="training batches for the BN statistics")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models", default="bwn,bwnh", help="comma-separated from float, bwn, bwnh")
    ap.add_argument("--with-stored", action="store_true",
                    help="also evaluate with the stored statistics (`onebit bwnh` already reports these)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    float_model, meta = load_for_eval(a.float_checkpoint)
    r = Recipe.from_dict(meta["recipe"])
    bwnh, _ = load_for_eval(a.hashed_checkpoint)
    bwn = binary_twin(float_model, TWINS[meta["model_config"]["name"]][1])
    loaders = onebit_data.make_loaders(r.data, batch_size=a.batch_size, root=a.data_root, val_size=r.val_size,
                                       normalize=r.normalize, seed=r.seed)
    out = {"batches": a.batches, "batch_size": a.batch_size}
    nets = {"float": float_model, "bwn": bwn, "bwnh": bwnh}
    for name in a.models.split(","):
        if name not in nets:
            raise SystemExit(f"--models: unknown {name!r}; choose from {sorted(nets)}")
        m = nets[name]
        after = accuracy(recalibrate_bn(m, loaders.train, a.batches), loaders.test)
        out[name] = {"test_recalibrated_bn": after}
        line = f"{name:6s} test accuracy, BN statistics re-estimated on {a.batches}×{a.batch_size} training images: "
        line += f"{100 * after:6.2f} %"
        if a.with_stored:
            out[name]["test_stored_bn"] = before = accuracy(m, loaders.test)
            line += f" (stored statistics: {100 * before:6.2f} %)"
        print(line, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
