"""``onebit data``: known data sets and where each was found."""

from __future__ import annotations

from typing import Optional

import typer


def data(data_root: Optional[str] = typer.Option(None, "--data-root", help="look here first")) -> None:
    """List the data sets and where each one was found (no download)."""
    from pathlib import Path

    from .. import data as onebit_data

    if data_root is not None and not Path(data_root).expanduser().is_dir():  # as the loaders read it
        raise onebit_data.DataError(f"the data root {data_root} (--data-root) does not exist or is not a folder")
    for n in onebit_data.names():
        try:
            where = str(onebit_data.locate(n, root=data_root, download=False))
        except onebit_data.DataError as e:
            first = str(e).splitlines()[0]
            where = "not found" if first.endswith("Looked in:") else f"not found: {first}"
        typer.echo(f"{n:14s} {where}")
