"""``onebit plot RUN_DIR...``: training curves, per-layer statistics and weight histograms as PNGs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer


def plot(
    runs: list[Path] = typer.Argument(..., help="one or more run folders (holding metrics.csv)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="curves figure, format from the suffix: .png, .svg, .pdf, … (default: "
                                          "RUN_DIR/curves.png for one run, curves.png for several); for one run the "
                                          "layer and histogram figures go beside it as NAME-layers / NAME-histograms "
                                          "in the same format"),
    label: list[str] = typer.Option([], "--label", help="legend label per run (repeat)"),
    layer: Optional[str] = typer.Option(None, "--layer", help="instead: the latent-kernel distribution of this "
                                        "binary layer over the epochs, one panel per run (e.g. BONN beside its "
                                        "baseline), with each epoch's valley/peak bimodality ratio"),
    force: bool = typer.Option(False, "--force", help="replace existing output files (the figures of one run "
                               "inside its folder, RUN_DIR/curves.png and so on, are always refreshed)"),
) -> None:
    """Plot training curves, per-layer statistics or one layer's kernel distribution.

    Loss, accuracy and learning rate per epoch of one or more training runs; for one run also the
    flip ratio / saturation of every binary layer and its weight histograms over the epochs.
    With --layer: the latent-kernel distribution of that layer across epochs, one panel per run."""
    from ..analysis.plots import plot_curves, plot_histograms, plot_layers

    if label and len(label) != len(runs):
        raise ValueError(f"got {len(label)} --label for {len(runs)} runs")
    # the default names inside the run folder are this command's own figures, refreshed on every call;
    # anything else (an -o file, or the default names in the current folder) may be a user's file
    if layer is not None:
        output = output or Path(f"kernels-{layer}.png")
    elif output is None and len(runs) != 1:
        output = Path("curves.png")
    if output is not None:
        _check_output(output, [] if layer is not None or len(runs) != 1 else ["-layers", "-histograms"], force)
    if layer is not None:
        from ..analysis.plots import plot_kernel_distribution

        path, stats = plot_kernel_distribution(runs, layer, output, label or None)
        for name, rows in stats.items():
            typer.echo(f"{name}: valley/peak by epoch " + " ".join(f"{e}:{v:.2f}" for e, v in rows))
        typer.echo(f"wrote {path}")
        return
    out = output or runs[0] / "curves.png"
    typer.echo(f"wrote {plot_curves(runs, out, label or None)}")
    if len(runs) == 1:
        stem, ext = out.with_suffix(""), out.suffix or ".png"
        for fn, suffix in ((plot_layers, "-layers"), (plot_histograms, "-histograms")):
            try:
                written = fn(runs[0], stem.parent / (stem.name + suffix + ext))
            except ValueError as e:  # a damaged companion file costs its own figure, not the curves
                warnings.warn(f"no {suffix[1:]} figure: {e}", stacklevel=1)
                continue
            if written is not None:
                typer.echo(f"wrote {written}")


def _check_output(out: Path, companions: list[str], force: bool) -> None:
    """Refuse to replace a user's file (``out`` or a companion NAME-layers/NAME-histograms beside it)
    unless ``force``; a folder named like the output is always an error."""
    stem, ext = out.with_suffix(""), out.suffix or ".png"
    paths = [out] + [stem.parent / (stem.name + c + ext) for c in companions]
    for p in paths:
        if p.is_dir():
            raise IsADirectoryError(f"-o {out}: {p} is a folder; name a file (e.g. {p / 'curves.png'})")
    taken = [str(p) for p in paths if p.exists()]
    if taken and not force:
        raise FileExistsError(f"{', '.join(taken)} already exist(s); pass --force to replace, or choose another -o")
