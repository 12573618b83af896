"""Where do the engine and PyTorch disagree on a test set, and who is right?

For a checkpoint and its ``.onebit`` export, compares the argmax of PyTorch fp32 (batched), the
engine, and — for every disagreeing image — PyTorch fp32 on that image alone and in float64.

    python benchmarks/engine_vs_torch.py CKPT MODEL.onebit --data cifar10 --data-root ../shared/data
"""

import argparse
import copy

import numpy as np
import torch

from onebit.data import load_arrays
from onebit.deploy import Engine
from onebit.train import load_for_eval

ap = argparse.ArgumentParser()
ap.add_argument("checkpoint")
ap.add_argument("model_file")
ap.add_argument("--data", default=None)
ap.add_argument("--data-root", default=None)
ap.add_argument("--batch-size", type=int, default=1000)
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
model, meta = load_for_eval(a.checkpoint)
x8, y = load_arrays(a.data or meta["recipe"]["data"], a.data_root)["test"]
engine = Engine(a.model_file, threads=a.threads)
diff, acc_t, acc_e = [], 0, 0
with torch.no_grad():
    for i in range(0, len(x8), a.batch_size):
        xb = torch.from_numpy(x8[i:i + a.batch_size]).float() / 127.5 - 1
        pt = model(xb).argmax(1).numpy()
        pe = engine.run(x8[i:i + a.batch_size]).argmax(1)
        acc_t += int((pt == y[i:i + a.batch_size]).sum())
        acc_e += int((pe == y[i:i + a.batch_size]).sum())
        diff += [i + int(j) for j in np.nonzero(pt != pe)[0]]
print(f"accuracy: PyTorch fp32 (batch {a.batch_size}) {100 * acc_t / len(y):.2f}%, engine {100 * acc_e / len(y):.2f}%")
print(f"images where the argmax differs: {diff}")
m64 = copy.deepcopy(model).double()
with torch.no_grad():
    for i in diff:
        x1 = torch.from_numpy(x8[i:i + 1]).double() / 127.5 - 1
        print(f"image {i} (label {y[i]}): fp32 alone {int(model(x1.float()).argmax())}, "
              f"float64 {int(m64(x1).argmax())}, engine {int(engine.run(x8[i:i + 1]).argmax())}")
