"""Plots of training runs (PNG files): curves from a run folder's ``metrics.csv``, the per-layer
flip ratio / saturation from ``layers.csv`` and the latent-weight histograms over epochs from
``histograms.json`` (both written by the trainer, :mod:`onebit.train.observe`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """Columns of ``run_dir/metrics.csv`` as float lists."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}: not an onebit run folder")
    import io

    try:
        text = path.read_text()
        if text and not text.endswith("\n"):  # a row being appended (or cut by a kill): not an epoch yet
            text = text[:text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable CSV file ({e}): the file is corrupt") from None
    missing = [k for k in ("epoch", "lr", "train_loss", "test_loss", "train_acc", "val_acc", "test_acc")
               if k not in header]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}: not a metrics.csv written by onebit train")
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    cols: dict[str, list[float]] = {k: [] for k in header}
    for i, r in enumerate(rows, start=2):
        if None in r or None in r.values():
            raise ValueError(f"{path} line {i} does not have the header's {len(header)} fields: the file is corrupt")
        for k, v in r.items():
            if not v.strip():  # an empty cell: no such figure that epoch (e.g. no validation split)
                cols[k].append(float("nan"))
                continue
            try:
                cols[k].append(float(v))
            except ValueError:
                raise ValueError(f"{path} line {i}: {k} = {v!r} is not a number: the file is corrupt") from None
    if any(e != e for e in cols["epoch"]):
        raise ValueError(f"{path}: an epoch number is missing: the file is corrupt")
    return cols


def plot_curves(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Loss, accuracy (train/val/test) and learning rate per epoch of one or more runs → one PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, run in enumerate(run_dirs):
        m = read_metrics(run)
        name = labels[i] if labels else Path(run).name
        ep = [e + 1 for e in m["epoch"]]
        mk = {"marker": "o", "markersize": 3} if len(ep) < 2 else {}  # a 1-epoch line is a point: draw it
        for split, style in (("train_loss", "-"), ("val_loss", ":"), ("test_loss", "--")):
            if split in m:
                axes[0].plot(ep, m[split], style, label=f"{name} {split[:-5]}", **mk)
        for split, style in (("train_acc", ":"), ("val_acc", "-"), ("test_acc", "--")):
            axes[1].plot(ep, [100 * v for v in m[split]], style, label=f"{name} {split[:-4]}", **mk)
        axes[2].plot(ep, m["lr"], label=name, **mk)
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title="accuracy (%)", xlabel="epoch")
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out)


def read_layers(run_dir: str | Path) -> dict[str, dict[str, list[float]]]:
    """``run_dir/layers.csv`` → {layer: {"epoch": [...], "flip_ratio": [...], "saturated": [...], ...}}."""
    path = Path(run_dir) / "layers.csv"
    if not path.is_file():
        return {}
    out: dict[str, dict[str, list[float]]] = {}
    need = {"layer", "epoch", "flip_ratio", "saturated"}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = set(reader.fieldnames or ())
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} is not a readable CSV file ({e})") from None
    if header and not need <= header:  # an empty file is a run that has not written it yet
        raise ValueError(f"{path} is not an onebit layer-statistics file (no column(s) "
                         f"{', '.join(sorted(need - header))})")
    for r in rows:
        cols = out.setdefault(r["layer"], {})
        for k, v in r.items():
            if k == "layer":
                continue
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(float("nan"))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path, *, tight: bool = True) -> Path:
    """Render ``fig`` (format from the suffix of ``out``, PNG by default), write it atomically
    (temp file, then rename: an existing file is replaced whole or not at all) and close it."""
    import io

    import matplotlib.pyplot as plt

    from ..fileio import atomic_write_bytes

    out = Path(out)
    try:
        if tight:
            fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=out.suffix[1:].lower() or "png", dpi=110)
    finally:
        plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out


def plot_layers(run_dir: str | Path, out: str | Path) -> Path | None:
    """Flip ratio (sign changes of the latent weights per epoch) and saturated fraction (|w| ≥ 1)
    of every binary layer over the epochs → one PNG; None when the run has no ``layers.csv`` rows."""
    layers = read_layers(run_dir)
    if not layers:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, cols in layers.items():
        ep = [e + 1 for e in cols["epoch"]]
        axes[0].plot(ep, [max(v, 1e-7) for v in cols["flip_ratio"]], marker=".", label=f"layer {name}")
        axes[1].plot(ep, cols["saturated"], marker=".", label=f"layer {name}")
    axes[0].set(title="flip ratio of binary weights (sign changes per epoch; 0 drawn at 1e-7)", xlabel="epoch",
                yscale="log")
    axes[1].set(title="saturated latent weights (|w| ≥ 1)", xlabel="epoch", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, out)


def _histogram(h) -> dict:
    """One epoch's histogram entry, checked: ``epoch``, ``lo`` < ``hi`` and a non-empty list of counts."""
    e, lo, hi, counts = int(h["epoch"]), float(h["lo"]), float(h["hi"]), [float(c) for c in h["counts"]]
    if not (counts and math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"a histogram of epoch {e} has no counts or no range")
    return {"epoch": e, "lo": lo, "hi": hi, "counts": counts}


def plot_histograms(run_dir: str | Path, out: str | Path) -> Path | None:
    """Per binary layer, the latent-weight histogram of every epoch (colour = epoch) → one PNG;
    None when the run has no ``histograms.json``."""
    import json

    path = Path(run_dir) / "histograms.json"
    if not path.is_file():
        return None
    try:
        layers = json.loads(path.read_text())["layers"]
        layers = {str(n): [_histogram(h) for h in hs] for n, hs in layers.items() if hs}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not an onebit histogram file ({type(e).__name__}: {e})") from None
    if not layers:
        return None
    plt = _pyplot()
    from matplotlib import cm

    cols = min(4, len(layers))
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols + 1, 3 * rows), squeeze=False, layout="constrained")
    last = max(h["epoch"] for hs in layers.values() for h in hs) or 1
    for ax, (name, hs) in zip(axes.flat, layers.items()):
        for h in hs:
            n = len(h["counts"])
            width = (h["hi"] - h["lo"]) / n
            centers = [h["lo"] + (i + 0.5) * width for i in range(n)]
            total = sum(h["counts"]) or 1
            ax.plot(centers, [c / total for c in h["counts"]], color=cm.viridis(h["epoch"] / last), lw=1)
        ax.set(title=f"layer {name}", xlabel="latent weight", ylabel="fraction of weights")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    sm = cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(1, last + 1))
    fig.colorbar(sm, ax=axes.ravel().tolist(), label="epoch", shrink=0.8)
    return _save(fig, out, tight=False)


def kernel_histograms(run_dir: str | Path, layer: str) -> list[dict]:
    """The per-epoch latent-weight histograms of one binary layer of a run (``histograms.json``)."""
    import json

    path = Path(run_dir) / "histograms.json"
    if not path.is_file():
        raise FileNotFoundError(f"no histograms.json in {run_dir}: not an onebit run folder, or no binary layer")
    try:
        layers = json.loads(path.read_text())["layers"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an onebit histogram file ({e})") from None
    if layer not in layers or not layers[layer]:
        raise ValueError(f"{run_dir} has no histogram for layer {layer!r}; its binary layers: "
                         f"{', '.join(n for n, h in layers.items() if h)}")
    return sorted(layers[layer], key=lambda h: h["epoch"])


def valley_ratio(hist: dict) -> float:
    """Bimodality of a symmetric latent-weight histogram: the density at 0 over the highest density
    (both after a 3-bin moving average). About 1 for one mode at 0 (a Gaussian); near 0 when the
    weights have split into two modes at ±μ, BONN's bimodal prior (methods.md §4.4)."""
    import numpy as np

    c = np.asarray(hist["counts"], float)
    if c.sum() == 0:
        return float("nan")
    s = np.convolve(c, np.ones(3) / 3, mode="same")
    mid = len(s) // 2
    centre = s[mid - 1:mid + 1].mean() if len(s) % 2 == 0 else s[mid]
    return float(centre / s.max())


def plot_kernel_distribution(run_dirs: list[str | Path], layer: str, out: str | Path,
                             labels: list[str] | None = None) -> tuple[Path, dict[str, list[tuple[int, float]]]]:
    """One panel per run: the latent-kernel distribution of ``layer`` at every recorded epoch
    (colour = epoch) — BONN's figure of a single Gaussian turning into two compact modes, beside
    a baseline. Returns the PNG path and, per run, ``(epoch, valley_ratio)`` for every epoch."""
    import numpy as np

    labels = labels or [Path(r).name for r in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"got {len(labels)} labels for {len(run_dirs)} runs")
    hists = [kernel_histograms(r, layer) for r in run_dirs]
    plt = _pyplot()
    from matplotlib import cm

    fig, axes = plt.subplots(1, len(run_dirs), figsize=(5.2 * len(run_dirs) + 1, 3.8), squeeze=False,
                             layout="constrained")
    last = max(h["epoch"] for hs in hists for h in hs) or 1
    stats: dict[str, list[tuple[int, float]]] = {}
    for ax, label, hs in zip(axes.flat, labels, hists):
        for h in hs:
            n = len(h["counts"])
            width = (h["hi"] - h["lo"]) / n
            centers = h["lo"] + (np.arange(n) + 0.5) * width
            total = sum(h["counts"]) or 1
            ax.plot(centers, np.asarray(h["counts"]) / (total * width), color=cm.viridis(h["epoch"] / last), lw=1)
        stats[label] = [(h["epoch"] + 1, valley_ratio(h)) for h in hs]
        first, end = stats[label][0], stats[label][-1]
        ax.set(title=f"{label}\nvalley/peak {first[1]:.2f} (epoch {first[0]}) → {end[1]:.2f} (epoch {end[0]})",
               xlabel=f"latent kernel value, layer {layer}", ylabel="density")
        ax.grid(alpha=0.3)
    sm = cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(1, last + 1))
    fig.colorbar(sm, ax=axes.ravel().tolist(), label="epoch", shrink=0.8)
    return _save(fig, out, tight=False), stats
