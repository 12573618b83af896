"""``onebit export`` and ``onebit run``: checkpoint → ``.onebit`` file → accuracy on the engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer


def export_(
    checkpoint: Path = typer.Argument(..., help="a checkpoint written by `onebit train`"),
    output: Path = typer.Option(..., "-o", "--output", help="the .onebit file to write"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing output file"),
) -> None:
    """Export a trained checkpoint to a bit-packed .onebit file."""
    import torch

    from ..deploy import export
    from ..train import load_for_eval

    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it")
    model, meta = load_for_eval(checkpoint)
    info = meta.get("data_info") or {}
    c, s = info.get("in_channels", 1), info.get("image_size", 28)
    rep = export(model, output, torch.zeros(1, c, s, s),
                 preprocess={"normalize": meta["recipe"].get("normalize", "pm1"), "data": meta["recipe"]["data"]})
    fp32 = sum(t.numel() * 4 for t in model.state_dict().values())
    typer.echo(f"wrote {output}: {rep['bytes']:,} bytes ({fp32 / rep['bytes']:.1f}× smaller than the fp32 "
               f"state_dict of {fp32:,} bytes), {rep['ops']} ops")


def run(
    model_file: Path = typer.Argument(..., help="a .onebit file"),
    data: Optional[str] = typer.Option(None, help="data set to score (default: the one it was trained on)"),
    data_root: Optional[str] = typer.Option(None, "--data-root"),
    threads: Optional[int] = typer.Option(None, help="kernel threads (default: all cores)"),
    batch_size: int = typer.Option(256, "--batch-size"),
    limit: Optional[int] = typer.Option(None, help="score only the first N test images"),
    int8: bool = typer.Option(False, "--int8", help="run binary-weight layers (real activations) as int8 × ±1 "
                              "(AMX-INT8 where available), calibrated on training images"),
    calib: int = typer.Option(512, "--calib", help="training images used to calibrate --int8"),
) -> None:
    """Test accuracy of a .onebit model on the engine (no PyTorch)."""
    from ..data import info, load_arrays
    from ..deploy import Engine

    engine = Engine(model_file, threads=threads)
    pre = engine.graph.get("preprocess") or {}
    name = data or pre.get("data")
    if not name:
        raise ValueError("the model file does not say which data set it was trained on; pass --data")
    arrays = load_arrays(name, data_root)
    x, y = arrays["test"]
    if limit:
        x, y = x[:limit], y[:limit]
    norm = pre.get("normalize", "pm1")

    def prepare(xb: np.ndarray) -> np.ndarray:
        if norm == "pm1":
            return xb  # raw uint8: the engine applies x/127.5 - 1 (bit-plane first layer, exact)
        xf = xb.astype(np.float32) / np.float32(255)
        if norm == "unit":
            return xf
        if norm != "meanstd":
            raise ValueError(f"unknown preprocessing {norm!r} in {model_file}")
        ds = info(name)
        m = np.asarray(ds.mean, np.float32).reshape(1, -1, 1, 1)
        sd = np.asarray(ds.std, np.float32).reshape(1, -1, 1, 1)
        return (xf - m) / sd

    if int8:
        if calib < 1:
            raise ValueError("--calib must be at least 1")
        scales = engine.quantize_int8(prepare(arrays["train"][0][:calib]))
        typer.echo(f"int8: {len(scales)} binary-weight layers calibrated on {min(calib, len(arrays['train'][0]))} "
                   "training images")
    correct, t0 = 0, time.perf_counter()
    for i in range(0, len(x), batch_size):
        correct += int((engine.run(prepare(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]).sum())
    dt = time.perf_counter() - t0
    typer.echo(f"{model_file} on {name} test: accuracy {100 * correct / len(x):.2f}% "
               f"(error {100 * (1 - correct / len(x)):.2f}%), {len(x)} images in {dt:.2f} s "
               f"({1e3 * dt / len(x):.3f} ms/image, {engine.threads} threads{', int8' if int8 else ''})")
