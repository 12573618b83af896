"""End-to-end inference benchmark: the onebit engine vs PyTorch fp32 and bf16 on the same network.

For each model (BNN MLP 3×4096, BNN ConvNet) and batch size, the engine runs the bit-packed
export of the model while PyTorch runs the float twin of the same shape (fp32; and bf16 weights
and activations, channels_last for convs) — in the same process, interleaved, best of ``--repeats``.

``onebit bench`` and ``benchmarks/end_to_end.py`` run it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def best_time(fn, repeats: int, inner: int, settle: float = 0.2) -> float:
    """Best mean time of ``inner`` calls over ``repeats`` rounds, after one warm-up call and a
    ``settle`` pause: another engine's worker threads (PyTorch's OpenMP pool, the core's) spin for a
    while after their last call and would otherwise take cores from the one being timed."""
    time.sleep(settle)
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def end_to_end(threads: int = 2, repeats: int = 5, batches: tuple[int, ...] = (1, 8),
               names: tuple[str, ...] = ("bnn-mlp", "bnn-convnet"), echo=print,
               float_precisions: tuple[str, ...] = ()) -> dict:
    """Engine latency vs PyTorch fp32/bf16 for each model and batch size; returns a JSON-able dict.

    ``float_precisions`` (``"bf16x3"``, ``"bf16"``): also time an engine whose real-valued convs run
    in that precision (``Engine(float_precision=...)``: AMX-BF16, or AVX512_BF16 for bf16), for the models that have real
    convs, in the same run; its rows add ``engine_<p>_ms``, the ratios and the agreement of its argmax
    with the fp32 engine on the timed batch."""
    from .. import models
    from ..deploy import Engine, export

    from ..train.trainer import cpu_has_native_bf16

    torch.set_num_threads(threads)
    torch_bf16_native = cpu_has_native_bf16()
    if not torch_bf16_native:
        echo(f"note: PyTorch has no native bf16 kernels on this CPU ({torch.backends.cpu.get_cpu_capability()}, "
             "no AVX-512): its bf16 times are not a fair baseline here, compare with fp32")
    results = []
    tmp = Path(tempfile.mkdtemp())
    # binary network -> (float network of the same shape, its options, input shape)
    table = {"bnn-mlp": ("bnn-mlp-float", {}, (1, 28, 28)),
             "bnn-convnet": ("bnn-convnet-float", {}, (3, 32, 32)),
             "bireal-resnet18": ("resnet18-float", {"activation": "relu"}, (3, 224, 224)),
             # binary weights, real activations (BWN/BWNH): the engine's int8 × ±1 path, calibrated
             # on the first batch's float activations; float input (mean/std preprocessing)
             "vgg9-bwn": ("vgg9-float", {}, (3, 32, 32))}
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ValueError(f"no end-to-end benchmark for {unknown}; choose from {sorted(table)}")
    for name in names:
        float_name, float_kw, shape = table[name]
        ncls = 1000 if shape[-1] == 224 else 10
        torch.manual_seed(0)
        model = models.create(name, num_classes=ncls).eval()
        int8 = name == "vgg9-bwn"
        export(model, tmp / f"{name}.onebit", torch.zeros(1, *shape),
               preprocess={"normalize": "meanstd" if int8 else "pm1"})
        engine = Engine(tmp / f"{name}.onebit", threads=threads)
        if int8:
            engine.quantize_int8(torch.randn(32, *shape).numpy())
        low = {}  # float precision -> engine
        for prec in float_precisions if name == "bireal-resnet18" else ():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                e = Engine(tmp / f"{name}.onebit", threads=threads, float_precision=prec)
            if e.float_precision != prec:
                echo(f"note: this CPU cannot run {prec} faster than fp32 (no AMX-BF16"
                     f"{'' if prec == 'bf16x3' else ' or AVX512_BF16'}); the {prec} engine is not timed")
            else:
                low[prec] = e
        fmodel = models.create(float_name, num_classes=ncls, **float_kw).eval()
        # bf16 baseline: weights converted once (no per-call autocast casts); channels_last for convs
        fmodel_bf16 = models.create(float_name, num_classes=ncls, **float_kw).eval().to(torch.bfloat16)
        conv = len(shape) == 3 and "mlp" not in name
        if conv:
            fmodel_bf16 = fmodel_bf16.to(memory_format=torch.channels_last)
        for bs in batches:
            x8 = torch.randint(0, 256, (bs, *shape), dtype=torch.uint8)
            x = x8.float() / 127.5 - 1
            xn = x.numpy() if int8 else x8.numpy()  # BNNs: raw 8-bit pixels (exact bit-plane first layer)
            xb = x.to(torch.bfloat16)
            if conv:
                xb = xb.contiguous(memory_format=torch.channels_last)
            inner = (20 if bs == 1 else 5) if shape[-1] < 224 else 3
            with torch.inference_mode():
                t_fp32 = best_time(lambda: fmodel(x), repeats, inner)
                t_bf16 = best_time(lambda: fmodel_bf16(xb), repeats, inner)
            t_eng = best_time(lambda: engine.run(xn), repeats, inner)
            row = {"model": name, "batch": bs, "engine_ms": 1e3 * t_eng, "torch_fp32_ms": 1e3 * t_fp32,
                   "torch_bf16_ms": 1e3 * t_bf16, "vs_fp32": t_fp32 / t_eng, "vs_bf16": t_bf16 / t_eng}
            results.append(row)
            echo(f"{name:12s} batch {bs:3d}: engine {row['engine_ms']:8.3f} ms | torch fp32 {row['torch_fp32_ms']:8.3f} ms "
                  f"({row['vs_fp32']:5.1f}×) | torch bf16 {row['torch_bf16_ms']:8.3f} ms ({row['vs_bf16']:5.1f}×)")
            for prec, e in low.items():
                t_low = best_time(lambda: e.run(xn), repeats, inner)
                agree = float((e.run(xn).argmax(1) == engine.run(xn).argmax(1)).mean())
                row.update({f"engine_{prec}_ms": 1e3 * t_low, f"vs_fp32_{prec}": t_fp32 / t_low,
                            f"vs_bf16_{prec}": t_bf16 / t_low, f"{prec}_argmax_agreement": agree})
                echo(f"{'':12s} batch {bs:3d}: engine {prec:6s} {1e3 * t_low:8.3f} ms ({t_fp32 / t_low:5.1f}× fp32, "
                     f"{t_bf16 / t_low:5.1f}× bf16; argmax = fp32 engine on {100 * agree:.0f} % of the batch)")
    from ..kernels import bf16_unit

    return {"threads": threads, "bf16_unit": bf16_unit("bf16"), "torch_bf16_native": torch_bf16_native,
            "results": results}
