"""Interleaved A/B timing of two or more builds of the C++ core (``_core*.so``), for kernel work on a
shared, noisy machine: each build runs in its own process, round by round in turn, so background
load hits all alike; the per-round ratios to the first build cancel most of it.

    # build A (e.g. from the last commit), copy build/*/_core*.so to a.so; the same for b.so
    python benchmarks/kernels/ab_builds.py a.so b.so --rounds 7 --threads 2

Each process times the ResNet-18 binary 3x3 convs (64@56², 128@28², 256@14², 512@7², stride 1,
zero padding, int output; best of 30) and the Bi-Real ResNet-18 engine at 224², batch 1 (random
weights, best of 20), and checks the builds agree before it prints a time: the same integers for
the convs, and the engine's logits within 1e-4 of max|y| of the first build's (the float kernels of
two builds may round differently). Builds run in turn, the order reversed every other round.
Not a test: timings, not checks of speed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))


def _best(fn, n: int) -> float:
    fn()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def worker(so: str, threads: int, model_file: str) -> None:
    """Load the core from ``so`` in place of the installed one, time, print one JSON line."""
    spec = importlib.util.spec_from_file_location("onebit.kernels._core", so)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["onebit.kernels._core"] = mod
    spec.loader.exec_module(mod)
    import numpy as np

    import onebit.kernels as K
    from onebit.deploy import Engine
    from onebit.kernels import reference as R

    assert K._core is mod, "the installed core was imported instead of the given build"
    rng = np.random.default_rng(0)
    out, digest = {}, hashlib.sha256()
    for c, hw in SHAPES:
        xp = K.pack_bits(R.random_pm1((1, hw, hw, c), rng))
        wp = K.prepare_conv_weights(K.pack_conv_weights(R.random_pm1((c, c, 3, 3), rng)), c)
        run = lambda: K.bconv2d(xp, wp, c, 3, 1, 1, 0, output="int", threads=threads)  # noqa: E731
        digest.update(run().tobytes())
        out[f"bconv{c}@{hw}"] = _best(run, 30)
    engine = Engine(model_file, threads=threads)
    x = rng.integers(0, 256, (1, 3, 224, 224), dtype=np.uint8)  # raw pixels, as `onebit bench` feeds it
    out["bireal18_b1"] = _best(lambda: engine.run(x), 20)
    out["digest"] = digest.hexdigest()[:16]
    out["logits"] = engine.run(x)[0].tolist()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+", help="paths of _core*.so builds; the first is the baseline")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-file", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.builds[0], a.threads, a.model_file)
        return
    missing = [b for b in a.builds if not Path(b).is_file()]
    if missing:
        sys.exit(f"no such build: {', '.join(missing)}")
    import torch

    from onebit import models
    from onebit.deploy import export

    model_file = Path(tempfile.mkdtemp()) / "bireal18.onebit"
    torch.manual_seed(0)
    export(models.create("bireal-resnet18", num_classes=1000).eval(), model_file, torch.zeros(1, 3, 224, 224),
           preprocess={"normalize": "pm1"})
    rows: dict[str, list[dict]] = {b: [] for b in a.builds}
    for r in range(a.rounds):
        for b in (a.builds if r % 2 == 0 else a.builds[::-1]):
            res = subprocess.run([sys.executable, __file__, b, "--worker", "--threads", str(a.threads),
                                  "--model-file", str(model_file)], capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{b} failed:\n{res.stderr}")
            rows[b].append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    base = a.builds[0]
    if len({rows[b][0]["digest"] for b in a.builds}) != 1:
        sys.exit("the builds' conv results differ: not comparing the speed of different results")
    import numpy as np

    ref = np.asarray(rows[base][0]["logits"])
    for b in a.builds[1:]:
        err = float(np.abs(np.asarray(rows[b][0]["logits"]) - ref).max() / np.abs(ref).max())
        if not err <= 1e-4:
            sys.exit(f"{b}: the engine's logits differ from {base}'s by {err:.3g} of max|y|")
    print("conv results identical and engine logits within 1e-4 of max|y| across builds")
    keys = [k for k in rows[base][0] if k not in ("digest", "logits")]
    print(f"{'':28s}" + "".join(f"{k:>16s}" for k in keys) + "   (median ms; ratio = baseline / build, per round)")
    for b in a.builds:
        med = [statistics.median(row[k] for row in rows[b]) for k in keys]
        rat = [statistics.median(rb[k] / rx[k] for rb, rx in zip(rows[base], rows[b])) for k in keys]
        print(f"{Path(b).name:28s}" + "".join(f"{m:16.3f}" for m in med))
        print(f"{'  speed-up vs ' + Path(base).name:28s}" + "".join(f"{x:15.2f}×" for x in rat))


if __name__ == "__main__":
    main()
