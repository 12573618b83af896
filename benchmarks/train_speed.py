"""Training-step time of a registered model in fp32 and in bf16 autocast (each also channels-last,
each also compiled), side by side.

Measures ``--steps`` optimizer steps (after ``--warmup``) of the model's own recipe (optimizer,
loss, batch size, and the method's extra loss: BONN's Bayesian losses) on random data of the right
shape, through the trainer's own step module, alternating the modes round by round so that machine
noise hits all alike, and projects the epoch time for ``--epoch-images`` images. Modes: ``fp32``,
``bf16`` (autocast), ``fp32-cl`` / ``bf16-cl`` (the model in channels-last memory format, as
``onebit train --channels-last`` runs it), and any of these with ``+compile`` (the step through
``torch.compile``, as ``onebit train --compile`` runs it; its compile time is reported apart).

    python benchmarks/train_speed.py bnn-convnet --threads 2 --modes fp32,bf16,fp32-cl,bf16-cl
    python benchmarks/train_speed.py bonn-wrn22 --threads 2 --modes bf16,bf16+compile --rounds 5
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
from onebit.train.trainer import StepModule, build_optimizer, method_hook

BASE_MODES = ("fp32", "bf16", "fp32-cl", "bf16-cl")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--epoch-images", type=int, default=None)
    ap.add_argument("--modes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp32-cl, bf16-cl, "
                    "each optionally with +compile")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="model argument KEY=VALUE (e.g. width=16)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    r = get_recipe(a.model)
    bs = a.batch_size or r.batch_size
    shape = (1, 28, 28) if "mlp" in r.model else (3, 32, 32)
    images = a.epoch_images or (50000 if "mlp" in r.model else 45000)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m.removesuffix("+compile") not in BASE_MODES]
    if bad or not modes:
        ap.error(f"unknown mode(s) {bad}; use fp32, bf16, fp32-cl, bf16-cl, each optionally with +compile")
    from onebit.cli.train_cmd import parse_set  # the CLI's --set rules (JSON values)

    kw = {**r.model_kwargs, **parse_set([f"model.{s}" for s in a.sets])[1]}
    x, y = torch.randn(bs, *shape), torch.randint(0, 10, (bs,))
    runs = {}
    for mode in modes:  # one model + optimizer per mode, all from the same initial weights
        torch.manual_seed(0)
        model = models.create(r.model, in_channels=shape[0], image_size=shape[1], **kw)
        if mode.endswith("-cl"):
            model.to(memory_format=torch.channels_last)
        opt = build_optimizer(r, model)
        constraints.attach(opt, model)
        hook = method_hook(model)
        step = StepModule(model, hook, mode.startswith("bf16"))
        runs[mode] = (torch.compile(step) if mode.endswith("+compile") else step, hook, opt)
    loss_fn = losses.get(r.loss)
    times = {m: [] for m in modes}
    first = {}
    for _ in range(a.rounds):
        for mode in modes:
            step, hook, opt = runs[mode]
            for i in range(a.warmup + a.steps):
                if i == a.warmup:
                    t0 = time.perf_counter()
                ti = time.perf_counter()
                out, extra = step(x, y, True)
                loss = loss_fn(out.float(), y) + (0 if extra is None else extra)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if hook is not None:
                    hook.after_step(y)
                first.setdefault(mode, time.perf_counter() - ti)
            times[mode].append((time.perf_counter() - t0) / a.steps)
    res = {"model": r.model, "model_kwargs": kw, "batch_size": bs, "threads": a.threads}
    for mode, ts in times.items():
        step = min(ts)
        res[f"{mode}_step_s"] = step
        res[f"{mode}_epoch_s"] = step * images / bs
        print(f"{mode:8s}: {1e3 * step:8.1f} ms/step  →  {step * images / bs / 60:6.1f} min/epoch ({images} images, batch {bs})")
    for mode in modes:
        if mode.endswith("+compile"):
            base = mode.removesuffix("+compile")
            res[f"{mode}_first_step_s"] = first[mode]
            print(f"{mode}: first step (compiling) {first[mode]:.1f} s")
            if base in times:  # per-round ratios: both ran in every round
                ratios = sorted(e / c for e, c in zip(times[base], times[mode]))
                res[f"{mode}_speedup_vs_{base}"] = ratios[len(ratios) // 2]
                print(f"torch.compile speed-up over {base} (median of {len(ratios)} rounds): "
                      f"{ratios[len(ratios) // 2]:.2f}× (rounds {ratios[0]:.2f}–{ratios[-1]:.2f})")
    for base, other, what in (("fp32", "bf16", "bf16 autocast"), ("fp32", "fp32-cl", "channels-last, fp32"),
                              ("bf16", "bf16-cl", "channels-last, bf16"), ("fp32", "bf16-cl", "bf16 + channels-last")):
        if base in times and other in times:
            key = f"{other.replace('-', '_')}_speedup_vs_{base}"
            res[key] = res[f"{base}_step_s"] / res[f"{other}_step_s"]
            print(f"{what} speed-up over {base}: {res[key]:.2f}×")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
