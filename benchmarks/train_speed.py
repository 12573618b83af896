"""Training-step time of a registered model in fp32 and in bf16 autocast, side by side.

Measures ``--steps`` optimizer steps (after ``--warmup``) of the model's own recipe (optimizer,
loss, batch size) on random data of the right shape, alternating fp32 and bf16 rounds so that
machine noise hits both alike, and projects the epoch time for ``--epoch-images`` images.

    python benchmarks/train_speed.py bnn-convnet --threads 2
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from onebit import losses, models
from onebit.methods import get_recipe
from onebit.nn import constraints
from onebit.train.trainer import build_optimizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--epoch-images", type=int, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    r = get_recipe(a.model)
    bs = a.batch_size or r.batch_size
    shape = (1, 28, 28) if "mlp" in r.model else (3, 32, 32)
    images = a.epoch_images or (50000 if "mlp" in r.model else 45000)
    model = models.create(r.model, in_channels=shape[0], image_size=shape[1], **r.model_kwargs)
    opt = build_optimizer(r, model)
    constraints.attach(opt, model)
    loss_fn = losses.get(r.loss)
    x, y = torch.randn(bs, *shape), torch.randint(0, 10, (bs,))
    times = {"fp32": [], "bf16": []}
    for _ in range(a.rounds):
        for mode in ("fp32", "bf16"):
            for i in range(a.warmup + a.steps):
                if i == a.warmup:
                    t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                    out = model(x)
                loss = loss_fn(out.float(), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times[mode].append((time.perf_counter() - t0) / a.steps)
    res = {"model": r.model, "batch_size": bs, "threads": a.threads}
    for mode, ts in times.items():
        step = min(ts)
        res[f"{mode}_step_s"] = step
        res[f"{mode}_epoch_s"] = step * images / bs
        print(f"{mode}: {1e3 * step:8.1f} ms/step  →  {step * images / bs / 60:6.1f} min/epoch ({images} images, batch {bs})")
    res["bf16_speedup"] = res["fp32_step_s"] / res["bf16_step_s"]
    print(f"bf16 autocast speed-up: {res['bf16_speedup']:.2f}×")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
