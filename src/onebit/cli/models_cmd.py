"""``onebit models``: the model registry."""

from __future__ import annotations

import typer


def models() -> None:
    """List registered models with their default data set."""
    from ..models import entry, names

    typer.echo(f"{'name':24s} {'family':8s} {'default data':14s} description")
    for n in names():
        e = entry(n)
        typer.echo(f"{n:24s} {e.family:8s} {e.default_data:14s} {e.description}")
