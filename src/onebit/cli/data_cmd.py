"""``onebit data``: known data sets and where each was found."""

from __future__ import annotations

import warnings
from typing import Optional

import typer


def data(data_root: Optional[str] = typer.Option(None, "--data-root", help="look here first")) -> None:
    """List the data sets and where each one was found (no download)."""
    from .. import data as onebit_data
    from ..data.registry import check_root

    check_root(data_root)  # as the loaders check it
    for n in onebit_data.names():
        try:
            with warnings.catch_warnings():  # the listing itself says where each copy is
                warnings.simplefilter("ignore")
                where = str(onebit_data.locate(n, root=data_root, download=False))
        except onebit_data.DataError as e:
            first = str(e).splitlines()[0]
            where = "not found" if first.endswith("Looked in:") else f"not found: {first}"
        typer.echo(f"{n:14s} {where}")
