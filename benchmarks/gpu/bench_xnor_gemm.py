"""The BNN paper's GPU comparison (methods.md §1.8) on this GPU: XNOR-popcount kernels vs an
unoptimised float kernel vs cuBLAS fp32/fp16, on the MNIST MLP's 4096×4096 layer (batch 1 to
10 000), on the paper's 8192×8192×8192 product, and on the whole MLP.

    python benchmarks/gpu/bench_xnor_gemm.py [--out results.json] [--onebit model.onebit --mnist DIR]

Times are CUDA-event medians after warm-up. Every XNOR result is checked against the float
product of the same ±1 matrices (exact in fp32 for these sizes) before it is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from onebit.kernels import cuda as ck  # noqa: E402


def timed(fn, reps: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` runs (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def reps_for(flops: float) -> int:
    return int(min(200, max(5, 2e12 / max(flops, 1.0))))


def gemm_row(m: int, n: int, k: int, g: torch.Generator, with_baseline: bool = True) -> dict:
    """All variants of an (m × k) · (k × n) product of ±1 matrices."""
    dev = "cuda"
    x = torch.where(torch.rand(m, k, generator=g) < 0.5, -1.0, 1.0).to(dev)
    w = torch.where(torch.rand(n, k, generator=g) < 0.5, -1.0, 1.0).to(dev)
    exact = (x @ w.T)  # fp32 cuBLAS, exact for integer sums < 2^24
    s = ck.gemm_words(k)
    xb, wb = ck.pack_bits(x, s), ck.pack_bits(w, s)
    flops = 2.0 * m * n * k
    r = reps_for(flops)
    row = {"M": m, "N": n, "K": k}
    xh, wh = x.half(), w.half()
    row["cublas_fp32_ms"] = timed(lambda: x @ w.T, r)
    row["cublas_fp16_ms"] = timed(lambda: xh @ wh.T, r)
    if with_baseline:
        assert torch.equal(ck.sgemm_baseline(x, w), exact)
        row["baseline_fp32_ms"] = timed(lambda: ck.sgemm_baseline(x, w), max(3, r // 10))
    for algo in ("paper", "tiled", "tiled_csa", "small_m", "auto"):
        if algo == "small_m" and m > 64:
            continue
        acc = ck.bgemm(xb, wb, k, algo=algo)
        if not torch.equal(acc.float(), exact):
            raise AssertionError(f"{algo} differs from the float product at {m}x{n}x{k}")
        row[f"xnor_{algo}_ms"] = timed(lambda: ck.bgemm(xb, wb, k, algo=algo), r)
    # the layer as deployed: pack the float input, XNOR-GEMM, float output transform (BN folded)
    mult, bias = torch.rand(n, device=dev) + 0.5, torch.randn(n, device=dev)
    y = ck.bgemm(ck.pack_bits(x, s), wb, k, output="float", mult=mult, bias=bias)
    assert torch.equal(y, exact * mult + bias)
    row["xnor_layer_with_packing_ms"] = timed(
        lambda: ck.bgemm(ck.pack_bits(x, s), wb, k, output="float", mult=mult, bias=bias), r)
    return row


def materialized(model):
    """A copy whose binary layers hold ±1 weights (``quantized_weight()``) and no weight quantizer:
    the float network as one would deploy it, computing what ``model`` computes."""
    import copy

    from onebit import quant
    from onebit.nn import BinaryConv2d, BinaryLinear

    m = copy.deepcopy(model)
    for layer in m.modules():
        if isinstance(layer, (BinaryLinear, BinaryConv2d)) and quant.is_binary(layer.weight_quantizer):
            with torch.no_grad():
                layer.weight.copy_(layer.quantized_weight())
            layer.weight_quantizer, layer.scale = quant.get("identity"), "none"
    return m


def mlp_rows(batches: list[int], g: torch.Generator, onebit_path: str | None) -> list[dict]:
    """The BNN MNIST MLP (784-4096-4096-4096-10) in PyTorch fp32 / fp16, converted to XNOR layers,
    and as a .onebit graph on the GPU engine (BN+sign folded into the kernels' bit outputs)."""
    import copy
    import tempfile

    from torch import nn

    from onebit import models
    from onebit.deploy import export
    from onebit.deploy.gpu import GPUEngine
    from onebit.kernels.cuda.layers import convert

    torch.manual_seed(0)
    model = models.create("bnn-mlp")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-20, 20)
            m.running_var.uniform_(50, 500)
    model.eval()
    path = onebit_path
    if path is None:
        path = str(Path(tempfile.mkdtemp()) / "bnn-mlp.onebit")
        export(model, path, torch.randn(2, 1, 28, 28))
    eng = GPUEngine(path, device="cuda")
    # the float baselines as deployed: ±1 weights stored once, not sign(W) of the latent weights per call
    fp32 = materialized(model).cuda()
    fp16 = materialized(model).cuda().half()
    fast = convert(copy.deepcopy(model)).cuda()
    rows = []
    for b in batches:
        x = torch.randn(b, 1, 28, 28, generator=g).cuda()
        with torch.no_grad():
            ref = fp32(x)
            y_fast = fast(x)
            same_conv = bool(torch.equal(y_fast, ref))
            row = {"batch": b, "converted_equal_fp32": same_conv,
                   "baseline_equal_model": bool(torch.equal(ref, model.cuda()(x)))}
            model.cpu()
            xh = x.half()
            if onebit_path is None:
                y_eng = eng.run(x)
                row["engine_argmax_equal_fp32"] = bool((y_eng.argmax(1) == ref.argmax(1)).all())
                row["engine_max_abs_diff"] = float((y_eng - ref).abs().max())
            r = max(5, min(100, 20000 // b))
            row["pytorch_fp32_ms"] = timed(lambda: fp32(x), r)
            row["pytorch_fp16_ms"] = timed(lambda: fp16(xh), r)  # input cast once, outside the timing
            row["xnor_converted_ms"] = timed(lambda: fast(x), r)
            row["xnor_engine_ms"] = timed(lambda: eng.run(x), r)
        rows.append(row)
    return rows


def mnist_accuracy(onebit_path: str, mnist_dir: str) -> dict:
    """Accuracy of a trained .onebit MLP on the MNIST test set: GPU engine vs CPU engine."""
    import numpy as np

    from onebit.data import load_arrays
    from onebit.deploy import Engine
    from onebit.deploy.gpu import GPUEngine

    arrays = load_arrays("mnist", mnist_dir, download=False)
    x, y = arrays["test"]
    x = (x.astype(np.float32) / 127.5 - 1).reshape(len(x), 1, 28, 28)
    gpu_engine, cpu_engine = GPUEngine(onebit_path, device="cuda"), Engine(onebit_path)
    gpu_engine.run(x[:64]), cpu_engine.run(x[:64])  # both warm: kernels built and loaded, pools up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    gpu = gpu_engine.run(x).cpu().numpy()
    t_gpu = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu = cpu_engine.run(x)
    t_cpu = time.perf_counter() - t0
    return {"n": int(len(y)), "gpu_acc": float((gpu.argmax(1) == y).mean()), "cpu_acc": float((cpu.argmax(1) == y).mean()),
            "argmax_identical": bool((gpu.argmax(1) == cpu.argmax(1)).all()),
            "max_abs_logit_diff": float(np.abs(gpu - cpu).max()), "gpu_s": t_gpu, "cpu_s": t_cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--batches", default="1,8,64,256,1024,4096,8192,10000")
    ap.add_argument("--onebit", default=None, help="a trained BNN MLP .onebit (accuracy check)")
    ap.add_argument("--mnist", default=None, help="MNIST folder for --onebit")
    ap.add_argument("--skip-8192", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS fp32 is true fp32
    props = torch.cuda.get_device_properties(0)
    res = {"gpu": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
           "cuda": torch.version.cuda}
    print(json.dumps(res), flush=True)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    batches = [int(b) for b in args.batches.split(",")]
    res["layer_4096"] = []
    for m in batches:
        row = gemm_row(m, 4096, 4096, g)
        res["layer_4096"].append(row)
        print(json.dumps(row), flush=True)
    if not args.skip_8192:
        res["gemm_8192"] = gemm_row(8192, 8192, 8192, g)
        print(json.dumps(res["gemm_8192"]), flush=True)
    res["mlp"] = mlp_rows([1, 100, 1000, 10000], g, None)
    for row in res["mlp"]:
        print(json.dumps(row), flush=True)
    if args.onebit and args.mnist:
        res["mnist"] = mnist_accuracy(args.onebit, args.mnist)
        print(json.dumps(res["mnist"]), flush=True)
    res["bench_s"] = time.time() - t0
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"done in {res['bench_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
