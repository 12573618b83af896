"""``onebit plot RUN_DIR...``: training curves as a PNG."""

from __future__ import annotations

from pathlib import Path

import typer


def plot(
    runs: list[Path] = typer.Argument(..., help="one or more run folders (holding metrics.csv)"),
    output: Path = typer.Option(Path("curves.png"), "-o", "--output", help="PNG file to write"),
    label: list[str] = typer.Option([], "--label", help="legend label per run (repeat)"),
) -> None:
    """Plot loss, accuracy and learning rate per epoch of training runs."""
    from ..analysis.plots import plot_curves

    if label and len(label) != len(runs):
        raise ValueError(f"got {len(label)} --label for {len(runs)} runs")
    typer.echo(f"wrote {plot_curves(runs, output, label or None)}")
