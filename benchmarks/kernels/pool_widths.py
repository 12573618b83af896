"""Does a kernel pool grown by an earlier, wider call slow later, narrower calls?

Each process times a 2-thread binary conv (128→128 @28², int output; best of 7 × 200 calls) after
growing the pool with one call of WIDTH threads first (WIDTH = 2: no growth). Idle workers that
spin or are woken for every call would take cores from the participants. Rounds alternate the
two processes; also prints the process's CPU time / wall time over 500 calls.

    python benchmarks/kernels/pool_widths.py --widths 2,4 --rounds 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CODE = r"""
import sys, time, numpy as np, onebit.kernels as K
from onebit.kernels import reference as R
rng = np.random.default_rng(0)
xp = K.pack_bits(R.random_pm1((1, 28, 28, 128), rng))
wp = K.prepare_conv_weights(K.pack_conv_weights(R.random_pm1((128, 128, 3, 3), rng)), 128)
width = int(sys.argv[1])
if width > 2:
    K.bconv2d(xp, wp, 128, 3, 1, 1, 0, output="int", threads=width)   # grow the pool
f = lambda: K.bconv2d(xp, wp, 128, 3, 1, 1, 0, output="int", threads=2)
for _ in range(50):
    f()
best = 1e9
for _ in range(7):
    t0 = time.perf_counter()
    for _ in range(200):
        f()
    best = min(best, (time.perf_counter() - t0) / 200)
c0, t0 = time.process_time(), time.perf_counter()
for _ in range(500):
    f()
print(f"{1e6 * best:.1f} {(time.process_time() - c0) / (time.perf_counter() - t0):.2f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="2,4")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    for r in range(a.rounds):
        for width in (int(w) for w in a.widths.split(",")):
            us, ratio = subprocess.run([sys.executable, "-c", CODE, str(width)], capture_output=True, text=True,
                                       check=True).stdout.split()
            print(f"round {r}: pool grown to {width} threads first: 2-thread call {us} µs, cpu/wall {ratio}")


if __name__ == "__main__":
    main()
