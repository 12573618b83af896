"""``onebit eval CHECKPOINT``: test accuracy of a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def eval_(
    checkpoint: Path = typer.Argument(..., help="a .safetensors checkpoint written by `onebit train`"),
    data: Optional[str] = typer.Option(None, help="data set (default: the one it was trained on)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder holding the data set"),
    batch_size: int = typer.Option(500, "--batch-size", help="images per forward pass"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch (default: PyTorch's)"),
    limit: Optional[int] = typer.Option(None, help="score only the first N test images (an image folder: N "
                                        "evenly spaced ones, so every class stays in), as `onebit run --limit`"),
) -> None:
    """Evaluate CHECKPOINT on the test split."""
    import torch

    from .. import data as onebit_data
    from .. import losses
    from ..methods import Recipe
    from ..train import evaluate, load_for_eval
    from ..train.checkpoint import check_data_fits

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if threads:
        torch.set_num_threads(threads)
    model, meta = load_for_eval(checkpoint)
    recipe = Recipe.from_dict(meta["recipe"])
    check_data_fits(meta, data, str(checkpoint))
    # make_loaders' limit L keeps L training and L // 5 test images: 5·N gives the N test images asked for
    loaders = onebit_data.make_loaders(data or recipe.data, batch_size=batch_size, root=data_root, val_size=0,
                                       normalize=recipe.normalize, limit=None if limit is None else 5 * limit)
    loss, acc = evaluate(model, loaders.test, losses.get(recipe.loss))
    typer.echo(f"{checkpoint}: {recipe.model} on {data or recipe.data} test: accuracy {100 * acc:.2f}% "
               f"(error {100 * (1 - acc):.2f}%), loss {loss:.4f}, {loaders.test.num_samples} images")
