"""End-to-end inference latency: the onebit engine vs PyTorch fp32 and bf16 on the same network.

For each model (BNN MLP 3×4096, BNN ConvNet) and batch size, the engine runs the bit-packed
export of the model (fed raw uint8 pixels) while PyTorch runs the float twin of the same shape
(fp32 in the faster layout; bf16 weights and activations, channels_last for convs) — in the same
process, round by round, best of ``--repeats``; the engine's output is checked against the model
first (:mod:`onebit.analysis.bench`).

    python benchmarks/end_to_end.py --threads 2
Ends with one JSON line.
"""

import argparse
import json

from onebit.analysis.bench import end_to_end

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,8")
    a = ap.parse_args()
    res = end_to_end(a.threads, a.repeats, tuple(int(b) for b in a.batches.split(",")))
    print(json.dumps(res))
