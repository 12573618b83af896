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

    if Path(target).is_file():
        from ..train import load_for_eval

        model, meta = load_for_eval(target)
        cfg = model.onebit_config
    else:
        model = models.create(target, num_classes=num_classes)
        cfg = model.onebit_config
    if input_shape:
        shape = tuple(int(v) for v in input_shape.split(","))
    else:
        shape = (cfg.get("in_channels", 3), cfg.get("image_size", 32), cfg.get("image_size", 32))
    typer.echo(str(account(model, shape)))
