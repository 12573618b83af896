"""``onebit summary``: per-layer precision, parameters, memory, MACs and OPs."""

from __future__ import annotations

from typing import Optional

import typer


def summary(
    target: str = typer.Argument(..., help="a registered model name or a checkpoint file"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="C,H,W (default: the model's)"),
    num_classes: Optional[int] = typer.Option(None, "--num-classes",
                                              help="classes of a registered model (default: its data set's)"),
) -> None:
    """Print the accounting table of a model: memory, BOPs, FLOPs and OPs = FLOPs + BOPs/64 (XNOR-Net's and Bi-Real Net's convention).

    A registered model is built for ``--input-shape`` (its ``in_channels``, and ``image_size`` when
    H = W), so an MLP or a first conv is sized for it; a checkpoint's weights fix its shapes.
    """
    from pathlib import Path

    from .. import models
    from ..analysis import summary as account

    from .. import data

    shape = _parse_shape(input_shape) if input_shape else None
    is_run_folder = Path(target).is_dir() and target not in models.names()  # the checkpoint loader hints
    if Path(target).is_file() or is_run_folder or Path(target).suffix in (".safetensors", ".onebit"):  # not a model
        from ..train import load_for_eval

        if num_classes is not None:
            raise ValueError("--num-classes shapes a registered model; a checkpoint has its own classes")
        model, meta = load_for_eval(target)
        d = meta.get("data_info") or {}
        c, s = d.get("in_channels"), d.get("image_size")
    else:
        d = data.info(models.entry(target).default_data)
        if num_classes is None:
            num_classes = d.num_classes
        if not 1 <= num_classes <= 1_000_000:
            raise ValueError(f"--num-classes must be from 1 to 1000000, got {num_classes}")
        size = {}
        if shape is not None:  # build for the shape; builders take square images only
            size["in_channels"] = shape[0]
            if shape[1] == shape[2]:
                size["image_size"] = shape[1]
        model = models.create(target, num_classes=num_classes, **size)
        c, s = d.in_channels, d.image_size
    cfg = model.onebit_config
    c, s = cfg.get("in_channels", c), cfg.get("image_size", s)
    if shape is None:
        shape = (c, s, s)
    try:
        table = account(model, shape)
    except (RuntimeError, ValueError) as e:  # the model (its input check) or a layer rejects the shape
        raise ValueError(f"input shape {shape} does not fit {target}: {str(e).splitlines()[0]}") from None
    typer.echo(str(table))


def _parse_shape(text: str) -> tuple[int, int, int]:
    """``"C,H,W"`` → (C, H, W), all positive; anything else is a ValueError quoting ``text``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input-shape must be three positive integers C,H,W like 3,32,32, got {text!r}")
    return shape  # type: ignore[return-value]
