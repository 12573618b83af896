"""Per-op time of the engine's forward pass on a registered model with random weights.

    python benchmarks/profile_engine.py bireal-resnet18 --batch 1
    python benchmarks/profile_engine.py vgg9-bwn --batch 32 --int8

Times each op inside real ``Engine.run`` calls (mean over ``--runs``), so cache and thread-pool
effects between ops are those of a normal forward pass. A conv that pools its own output (the
bf16 stem) is timed as the conv, and its pool then shows 0. Not a test: timings, not checks.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onebit import models
from onebit.deploy import Engine, export

SHAPES = {"bireal-resnet18": (3, 224, 224), "bireal-resnet34": (3, 224, 224), "bnn-mlp": (1, 28, 28)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--int8", action="store_true", help="calibrate and run the binary-weight layers in int8")
    ap.add_argument("--float-precision", default="fp32", choices=("fp32", "bf16x3", "bf16"),
                    help="the engine's real-valued convs (Engine float_precision)")
    a = ap.parse_args()
    shape = SHAPES.get(a.model, (3, 32, 32))
    torch.manual_seed(0)
    model = models.create(a.model, num_classes=1000 if shape[-1] == 224 else 10).eval()
    path = Path(tempfile.mkdtemp()) / "m.onebit"
    normalize = "meanstd" if a.int8 else "pm1"
    export(model, path, torch.zeros(1, *shape), preprocess={"normalize": normalize})
    eng = Engine(path, threads=a.threads, float_precision=a.float_precision)
    if a.int8:
        eng.quantize_int8(torch.randn(32, *shape).numpy())
    spent: dict[int, float] = collections.defaultdict(float)
    impls = [impl for _, _, impl, _ in eng._ops]
    def timer(call, impl, i):
        def timed(*args, **kw):
            t = time.perf_counter()
            r = call(impl, *args, **kw)
            spent[i] += time.perf_counter() - t
            return r
        return timed

    for i, impl in enumerate(impls):  # wrap each op's call with a timer (instance attribute)
        impl.timed = timer(type(impl).__call__, impl, i)
        if hasattr(impl, "pooled_call"):  # a conv that pools its own output (the stem): timed as the conv
            impl.timed_pooled = timer(type(impl).pooled_call, impl, i)
    wrapped = [(s, d, _Timed(impl), r) for s, d, impl, r in eng._ops]
    eng._fused_away = {id(w) for (_, _, w, _), impl in zip(wrapped, impls) if id(impl) in eng._fused_away}
    eng._ops = wrapped
    eng._build_plan()  # the forward pass's steps now call the wrappers
    if a.int8:
        x = (torch.randint(0, 256, (a.batch, *shape)).float() / 127.5 - 1).numpy()
    else:
        x = torch.randint(0, 256, (a.batch, *shape), dtype=torch.uint8).numpy()
    for _ in range(3):
        eng.run(x)
    spent.clear()
    t0 = time.perf_counter()
    for _ in range(a.runs):
        eng.run(x)
    total = (time.perf_counter() - t0) / a.runs
    print(f"{a.model} batch {a.batch}, {a.threads} threads: run {1e3 * total:.3f} ms, "
          f"ops {1e3 * sum(spent.values()) / a.runs:.3f} ms")
    by_kind: dict[str, float] = collections.defaultdict(float)
    for i, impl in enumerate(impls):
        by_kind[impl.op["op"]] += spent[i] / a.runs
        print(f"  {i:3d} {impl.op['op']:9s} {1e3 * spent[i] / a.runs:8.3f} ms")
    print("by kind: " + ", ".join(f"{k} {1e3 * v:.3f} ms" for k, v in sorted(by_kind.items(), key=lambda t: -t[1])))


class _Timed:
    """Stands in for an op in ``Engine._ops``: forwards to the op through its timer."""

    def __init__(self, impl):
        self.impl = impl

    def __getattr__(self, name):
        return getattr(self.impl, name)

    def __call__(self, *args, **kw):
        return self.impl.timed(*args, **kw)

    def pooled_call(self, *args, **kw):
        return self.impl.timed_pooled(*args, **kw)


if __name__ == "__main__":
    main()
