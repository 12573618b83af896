"""A float dense layer at small batch on the core's GEMM (``kernels.fconv2d_f32`` as a 1×1 conv) vs NumPy.

    python benchmarks/kernels/bench_dense.py --k 512 --n 1000 --batch 1

Best of 5 rounds of the mean time per call; NumPy's matmul (its BLAS, its own threads) beside it
for scale. Not a test: timings, not checks.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from onebit.kernels import amx_bf16_usable, avx512_bf16_usable, fconv2d_bf16, fconv2d_f32, prepare_float_weights


def best_us(f, calls: int = 3000, rounds: int = 5) -> float:
    for _ in range(50):
        f()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls // rounds):
            f()
        best = min(best, (time.perf_counter() - t0) / (calls // rounds))
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((a.n, a.k)).astype(np.float32)
    x = rng.standard_normal((a.batch, 1, 1, a.k)).astype(np.float32)
    f32, split = prepare_float_weights(w), prepare_float_weights(w, bf16x3=True)
    rows = x.reshape(a.batch, a.k)
    ref = rows.astype(np.float64) @ w.T.astype(np.float64)
    y = np.asarray(fconv2d_f32(x, f32, 1, threads=1)).reshape(ref.shape)
    if not np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max():  # the core's result before its time
        raise SystemExit("fconv2d_f32 disagrees with NumPy: not timing it")
    bf16 = amx_bf16_usable() or avx512_bf16_usable()
    if not bf16:
        print("note: no AMX-BF16 or AVX512_BF16 here: the bf16 kernel would run its portable emulation, not timed")
    for th in (int(t) for t in a.threads.split(",")):
        t_bf16 = f"{best_us(lambda: fconv2d_bf16(x, split, 1, threads=th)):7.1f} µs" if bf16 else "      —"
        print(f"{a.batch}×{a.k} → {a.n}, {th} thread(s): fp32 {best_us(lambda: fconv2d_f32(x, f32, 1, threads=th)):7.1f} µs"
              f" | bf16 {t_bf16}"
              f" | numpy (its BLAS's own thread count) {best_us(lambda: rows @ w.T):7.1f} µs")


if __name__ == "__main__":
    main()
