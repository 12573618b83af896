"""End-to-end inference benchmark: the onebit engine vs PyTorch fp32 and bf16 on the same network.

For each model (BNN MLP 3×4096, BNN ConvNet, Bi-Real-18, VGG-9 BWN) and batch size, the engine
runs the bit-packed export of the model while PyTorch runs the float twin of the same shape: fp32
in the faster of NCHW and channels_last for convs (the layout is recorded), and bf16 weights and
activations (channels_last for convs). All contenders are timed in the same process, round by
round (each round times every contender once, after a settle pause), best round of ``--repeats``.
The timed engine output is checked against the binary PyTorch model (float64) on the timed batch:
a path that is fast but wrong stops the benchmark rather than entering a table.

``onebit bench`` and ``benchmarks/end_to_end.py`` run it.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def interleaved_best(fns: dict, repeats: int, inner: int, settle: float = 0.2) -> dict:
    """Best mean time of ``inner`` calls of each function in ``fns`` over ``repeats`` rounds; each
    round times every function once, in turn (machine drift hits every contender alike), each after
    a ``settle`` pause; one warm-up call each first."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            time.sleep(settle)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / inner)
    return best


def check_engine_output(y: np.ndarray, ref: np.ndarray, limit: float, what: str) -> tuple[float, float]:
    """Relative max error and argmax agreement of an engine's output against the PyTorch model's;
    ``RuntimeError`` beyond ``limit`` (a fast-but-wrong path must not enter a table)."""
    err = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-12))
    agree = float((y.argmax(1) == ref.argmax(1)).mean())
    if not err <= limit:
        raise RuntimeError(f"{what}: the timed output differs from the PyTorch model by {err:.3g} of max|y| "
                           f"(limit {limit:g}; argmax agreement {100 * agree:.0f} %): not timing a wrong result")
    return err, agree


def trained_like_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (fixed seed). A
    fresh BN (mean 0, var 1, γ 1, β 0) puts a binary layer's sign threshold exactly at 0, where an
    integer accumulator or a pm1 pixel sum lands exactly on the tie: then even PyTorch fp32 and fp64
    disagree by 40–60 % of max|y| on a fresh BNN MLP, and the output check would measure ties, not
    the engine. Timing does not depend on these values."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model


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
             # on 32 random normal inputs; float input (mean/std preprocessing)
             "vgg9-bwn": ("vgg9-float", {}, (3, 32, 32))}
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ValueError(f"no end-to-end benchmark for {unknown}; choose from {sorted(table)}")
    for name in names:
        float_name, float_kw, shape = table[name]
        ncls = 1000 if shape[-1] == 224 else 10
        torch.manual_seed(0)
        model = trained_like_bn(models.create(name, num_classes=ncls).eval())
        int8 = name == "vgg9-bwn"
        export(model, tmp / f"{name}.onebit", torch.zeros(1, *shape), overwrite=True,  # its own temp folder
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
            fmodel_cl = copy.deepcopy(fmodel).to(memory_format=torch.channels_last)
        ref_model = copy.deepcopy(model).double()  # what the engine must compute
        for bs in batches:
            x8 = torch.randint(0, 256, (bs, *shape), dtype=torch.uint8)
            x = x8.float() / 127.5 - 1
            xn = x.numpy() if int8 else x8.numpy()  # BNNs: raw 8-bit pixels (exact bit-plane first layer)
            xb = x.to(torch.bfloat16)
            if conv:
                xb = xb.contiguous(memory_format=torch.channels_last)
                xcl = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                ref = ref_model(x.double()).numpy()
            # int8 activations round (tested within 0.1 of max|y|); fp32 parts: only a sign flipped by
            # float rounding near a tie moves the output (≈ 1 % of max|y| at most, measured)
            err, agree = check_engine_output(engine.run(xn), ref, 0.25 if int8 else 0.05, f"{name} engine")
            inner = (20 if bs == 1 else 5) if shape[-1] < 224 else 3
            fns = {"fp32": lambda: fmodel(x), "bf16": lambda: fmodel_bf16(xb), "engine": lambda: engine.run(xn)}
            if conv:
                fns["fp32_cl"] = lambda: fmodel_cl(xcl)
            for prec, e in low.items():
                fns[f"engine_{prec}"] = lambda e=e: e.run(xn)
            with torch.inference_mode():
                t = interleaved_best(fns, repeats, inner)
            layout = ("channels_last" if t["fp32_cl"] < t["fp32"] else "NCHW") if conv else "flat"
            t_fp32, t_bf16, t_eng = min(t["fp32"], t.get("fp32_cl", float("inf"))), t["bf16"], t["engine"]
            row = {"model": name, "batch": bs, "engine_ms": 1e3 * t_eng, "torch_fp32_ms": 1e3 * t_fp32,
                   "torch_fp32_layout": layout, "torch_bf16_ms": 1e3 * t_bf16, "vs_fp32": t_fp32 / t_eng,
                   "vs_bf16": t_bf16 / t_eng, "engine_max_rel_err": err, "engine_argmax_agreement": agree}
            results.append(row)
            echo(f"{name:12s} batch {bs:3d}: engine {row['engine_ms']:8.3f} ms | torch fp32 {row['torch_fp32_ms']:8.3f} ms "
                 f"({row['vs_fp32']:5.1f}×, {layout}) | torch bf16 {row['torch_bf16_ms']:8.3f} ms ({row['vs_bf16']:5.1f}×)"
                 f" | engine vs PyTorch model: {err:.1e} of max|y|, argmax {100 * agree:.0f} %")
            for prec, e in low.items():
                t_low = t[f"engine_{prec}"]
                e_err, e_agree = check_engine_output(e.run(xn), ref, 0.25, f"{name} engine {prec}")
                row.update({f"engine_{prec}_ms": 1e3 * t_low, f"vs_fp32_{prec}": t_fp32 / t_low,
                            f"vs_bf16_{prec}": t_bf16 / t_low, f"{prec}_argmax_agreement": e_agree,
                            f"{prec}_max_rel_err": e_err})
                echo(f"{'':12s} batch {bs:3d}: engine {prec:6s} {1e3 * t_low:8.3f} ms ({t_fp32 / t_low:5.1f}× fp32, "
                     f"{t_bf16 / t_low:5.1f}× bf16; argmax = PyTorch model on {100 * e_agree:.0f} % of the batch)")
    from ..kernels import bf16_unit

    return {"threads": threads, "bf16_unit": bf16_unit("bf16"), "torch_bf16_native": torch_bf16_native,
            "results": results}
