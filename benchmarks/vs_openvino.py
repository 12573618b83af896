"""Interleaved latency of onebit's engine against OpenVINO's BinaryConvolution network, Bi-Real
ResNet-18 at 224², batch 1 — the peer the Bi-Real issue names.

    python benchmarks/vs_openvino.py --threads 2 --rounds 15 --calls 40

Each contender lives in its own process (so one engine's spinning thread pool never takes the
other's cores) and the parent alternates them round by round: on a shared, noisy machine every
contender sees the same background load, and the per-round ratios cancel most of it. Contenders:
``onebit-fp32`` and ``onebit-bf16`` (``Engine(float_precision=...)``; bf16 only where the CPU has
AMX-BF16 or AVX512_BF16), OpenVINO's network with fp32 and bf16 float parts, built by the peer
benchmark ``../shared/bench/x86_peers_bench.py`` (``--peers``; needs ``pip install openvino``;
its fp32 one is the peer's ``ov_bin``, the network the Bi-Real issue names), and, with
``--contenders``, PyTorch's float ResNet-18 in fp32 and bf16 (``torch-fp32``, ``torch-bf16``,
channels_last), so every figure of the issue's speed point comes from one interleaved run:

    python benchmarks/vs_openvino.py --contenders onebit-bf16,onebit-fp32,openvino-fp32,openvino-bf16,torch-fp32,torch-bf16
Prints per contender the median over rounds of each round's median latency, and the median over
rounds of the per-round ratio to onebit's engine; ``--json-file`` keeps every round.

Not a test: timings, not checks. The two networks have the same shape (7×7 stem, 3×3 max pool, 16
binary 3×3 convs with a real shortcut each, 2×2 average pool + 1×1 conv downsampling, FC) but not
the same weights; latency does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path


def _onebit_runner(precision: str, threads: int):
    import tempfile

    import numpy as np
    import torch

    from onebit import models
    from onebit.deploy import Engine, export

    torch.manual_seed(0)
    model = models.create("bireal-resnet18", num_classes=1000).eval()
    path = Path(tempfile.mkdtemp()) / "bireal18.onebit"
    export(model, path, torch.zeros(1, 3, 224, 224), preprocess={"normalize": "pm1"})
    engine = Engine(path, threads=threads, float_precision=precision)
    if engine.float_precision != precision:
        raise RuntimeError(f"this CPU cannot run the engine in {precision}")
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 224, 224)).astype(np.uint8)
    return lambda: engine.run(x)


def _torch_runner(precision: str, threads: int):
    """PyTorch's ResNet-18 (the real-valued twin with ReLU, as `onebit bench` times it): fp32, or
    bf16 weights and activations; channels_last, inference mode."""
    import torch

    from onebit import models

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    model = models.create("resnet18-float", num_classes=1000, activation="relu").eval().to(dtype)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 224, 224).to(dtype).contiguous(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode():
            return model(x)
    return call


def _openvino_runner(precision: str, threads: int, peers: str):
    spec = importlib.util.spec_from_file_location("x86_peers_bench", peers)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    compiled = bench.ov_compile(bench.ov_net_model(bench.net_spec(), True, 1.0), threads, precision)
    request = bench.ov_request(compiled, bench.net_input())
    return request.infer


def _worker(name: str, threads: int, peers: str, conn) -> None:
    try:
        if name.startswith("onebit-"):
            call = _onebit_runner(name.split("-", 1)[1], threads)
        elif name.startswith("torch-"):
            call = _torch_runner(name.split("-", 1)[1], threads)
        else:
            call = _openvino_runner({"openvino-fp32": "f32", "openvino-bf16": "bf16"}[name], threads, peers)
        for _ in range(10):  # warm-up: caches, thread pools, buffers
            call()
        conn.send(("ready", None))
    except Exception as e:  # reported by the parent, which drops this contender
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        calls = conn.recv()
        if calls is None:
            return
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        conn.send(("times", times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=40, help="timed calls per contender per round")
    ap.add_argument("--peers", default=str(Path(__file__).resolve().parents[2] / "shared/bench/x86_peers_bench.py"),
                    help="the peer benchmark that builds OpenVINO's network")
    ap.add_argument("--contenders", default="onebit-fp32,onebit-bf16,openvino-fp32,openvino-bf16",
                    help="comma-separated: onebit-fp32, onebit-bf16, openvino-fp32, openvino-bf16, torch-fp32, "
                    "torch-bf16 (PyTorch's ResNet-18, channels_last: the issue's other baselines)")
    ap.add_argument("--json-file", help="write every round's latencies here")
    a = ap.parse_args()
    if a.threads < 1 or a.rounds < 1 or a.calls < 1:
        sys.exit("--threads, --rounds and --calls must be >= 1")
    names = [n for n in a.contenders.split(",") if n]
    known = {"onebit-fp32", "onebit-bf16", "openvino-fp32", "openvino-bf16", "torch-fp32", "torch-bf16"}
    if set(names) - known:
        sys.exit(f"unknown contenders {sorted(set(names) - known)}; choose from {sorted(known)}")
    if any(n.startswith("openvino") for n in names) and not Path(a.peers).is_file():
        sys.exit(f"{a.peers} not found: pass --peers, or --contenders onebit-fp32,onebit-bf16")

    ctx = mp.get_context("spawn")
    workers = {}
    for name in names:  # started one at a time, so no set-up overlaps another's timing
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(name, a.threads, a.peers, child), daemon=True)
        proc.start()
        status, info = parent.recv()
        if status == "error":
            print(f"note: {name} dropped ({info})")
            proc.join()
            continue
        workers[name] = (proc, parent)
    if not workers:
        sys.exit("no contender could run")

    rounds: dict[str, list[float]] = {n: [] for n in workers}
    for r in range(a.rounds):
        order = list(workers) if r % 2 == 0 else list(reversed(workers))  # no contender always first
        for name in order:
            _, conn = workers[name]
            time.sleep(0.25)  # the last contender's spinning OpenMP/TBB workers settle (PyTorch's spin ~0.2 s)
            conn.send(a.calls)
            _, times = conn.recv()
            rounds[name].append(statistics.median(times) * 1e3)
    for proc, conn in workers.values():
        conn.send(None)
        proc.join()

    base = next((n for n in ("onebit-bf16", "onebit-fp32") if n in rounds), None)
    print(f"Bi-Real ResNet-18 224², batch 1, {a.threads} threads, {a.rounds} rounds × {a.calls} calls (ms)")
    summary = {}
    for name, ms in rounds.items():
        row = {"median_ms": statistics.median(ms), "min_round_ms": min(ms), "max_round_ms": max(ms)}
        line = f"  {name:14s} {row['median_ms']:7.3f}  (rounds {row['min_round_ms']:.3f}–{row['max_round_ms']:.3f})"
        if base and name != base:
            ratios = [m / b for m, b in zip(ms, rounds[base])]
            row[f"ratio_to_{base}"] = statistics.median(ratios)
            line += f"  {name} / {base} = {row[f'ratio_to_{base}']:.3f} (rounds {min(ratios):.2f}–{max(ratios):.2f})"
        summary[name] = row
        print(line)
    if a.json_file:
        Path(a.json_file).write_text(json.dumps({"threads": a.threads, "calls": a.calls, "rounds": rounds,
                                                 "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
