"""``onebit summary``: per-layer precision, parameters, memory, MACs and OPs."""

from __future__ import annotations

from typing import Optional

import typer


def summary(
    target: str = typer.Argument(..., help="a registered model name or a checkpoint file"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="C,H,W (default: the model's)"),
    num_classes: int = typer.Option(10, "--num-classes"),
) -> None:
    """Print the accounting table of a model (methods.md §0.6 conventions)."""
    from pathlib import Path

    from .. import models
    from ..analysis import summary as account

    from .. import data

    if Path(target).is_file():
        from ..train import load_for_eval

        model, meta = load_for_eval(target)
        d = meta.get("data_info") or {}
        c, s = d.get("in_channels"), d.get("image_size")
    else:
        model = models.create(target, num_classes=num_classes)
        d = data.info(models.entry(target).default_data)
        c, s = d.in_channels, d.image_size
    cfg = model.onebit_config
    c, s = cfg.get("in_channels", c), cfg.get("image_size", s)
    if input_shape:
        try:
            shape = tuple(int(v) for v in input_shape.split(","))
        except ValueError:
            raise ValueError(f"--input-shape must look like 3,32,32, got {input_shape!r}") from None
    else:
        shape = (c, s, s)
    typer.echo(str(account(model, shape)))
