"""``onebit bench``: engine vs PyTorch fp32/bf16 on the BNN networks, measured side by side."""

from __future__ import annotations

import json

import typer

_DEFAULT_MODELS = ["bnn-mlp", "bnn-convnet"]
#: the largest batch timed (a batch's input and activations are allocated whole, for each framework)
MAX_BATCH = 1024


def bench(
    threads: int = typer.Option(2, help="threads for the engine and for PyTorch"),
    batches: str = typer.Option("1,8", help="comma-separated batch sizes"),
    repeats: int = typer.Option(5, help="best of this many timing rounds"),
    model: list[str] = typer.Option(list(_DEFAULT_MODELS), "--model",
                                    help="networks to time: bnn-mlp, bnn-convnet, bireal-resnet18, vgg9-bwn"),
    layers: bool = typer.Option(False, "--layers", help="per-layer kernel benchmark instead (ResNet-18 "
                                "3×3 convs, the 4096² dense layer) with the measured popcount peak"),
    bf16x3: bool = typer.Option(False, "--bf16x3", help="also time the engine with its real-valued convs as "
                                "three bf16 products on AMX-BF16 (Engine float_precision='bf16x3')"),
    bf16: bool = typer.Option(False, "--bf16", help="also time the engine with its real-valued convs in plain "
                              "bf16 on AMX-BF16 or AVX512_BF16, as PyTorch's bf16 runs them (Engine float_precision='bf16')"),
) -> None:
    """Time the bit-packed engine against PyTorch on the same shapes, in the same run."""
    from ..deploy.engine import MAX_THREADS

    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"--threads must be from 1 to {MAX_THREADS}, got {threads}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    if layers:
        ignored = [flag for flag, used in (("--model", model != _DEFAULT_MODELS), ("--batches", batches != "1,8"),
                                           ("--repeats", repeats != 5), ("--bf16", bf16), ("--bf16x3", bf16x3)) if used]
        if ignored:
            raise ValueError(f"--layers times its own fixed shapes; {', '.join(ignored)} "
                             f"{'applies' if len(ignored) == 1 else 'apply'} only to the end-to-end benchmark "
                             "(run it without --layers)")
        from ..analysis.kernel_bench import main as kernel_main

        kernel_main(["--threads", str(threads)])
        return
    from ..analysis.bench import end_to_end

    try:
        bs = tuple(int(b) for b in batches.split(","))
    except ValueError:
        raise ValueError(f"--batches must look like 1,8 — got {batches!r}") from None
    if min(bs) < 1 or max(bs) > MAX_BATCH:
        raise ValueError(f"--batches must be from 1 to {MAX_BATCH}, got {batches!r}")
    precisions = tuple(p for p, on in (("bf16x3", bf16x3), ("bf16", bf16)) if on)
    res = end_to_end(threads, repeats, bs, tuple(model), echo=typer.echo, float_precisions=precisions)
    typer.echo(json.dumps(res))
