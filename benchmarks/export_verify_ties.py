"""How often a good model fails one probe of the export verification (onebit.deploy.exporter._verify).

A probe compares the engine with the model in float64 on one random normal input; a value that lands
within float32 rounding of a sign's tie flips a bit and moves the output past the tolerance. This
counts such probes on Bi-Real-18s at 224² with trained-like BN statistics, and, for scale, how often
PyTorch's own fp32 forward fails the same test against float64.

    python benchmarks/export_verify_ties.py --models 4 --probes 10
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch
from onebit import models
from onebit.analysis.bench import trained_like_bn
from onebit.deploy import Engine, export


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    eng_fail = pt_fail = total = 0
    t0 = time.time()
    for ms in range(args.models):
        torch.manual_seed(100 + ms)
        m = trained_like_bn(models.create("bireal-resnet18").eval(), seed=ms)
        m64 = copy.deepcopy(m).double()
        with tempfile.TemporaryDirectory() as d:
            export(m, f"{d}/m.onebit", torch.zeros(1, 3, 224, 224), verify=False, overwrite=True)
            e = Engine(f"{d}/m.onebit", threads=args.threads)
            for p in range(args.probes):
                x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1000 * ms + p))
                with torch.no_grad():
                    ref = m64(x.double()).numpy()
                    r32 = m(x).double().numpy()
                y = e.run(x.numpy())
                tol = 1e-4 * np.abs(ref).max() + 1e-6  # _verify's tolerance
                eng_fail += int(np.abs(y - ref).max() > tol)
                pt_fail += int(np.abs(r32 - ref).max() > tol)
                total += 1
    print(f"{args.models} models × {args.probes} one-sample probes: engine fails {eng_fail}/{total}, "
          f"PyTorch fp32 fails {pt_fail}/{total} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
