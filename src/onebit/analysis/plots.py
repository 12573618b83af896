"""Plots of training runs: curves from a run folder's ``metrics.csv`` (PNG files)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """Columns of ``run_dir/metrics.csv`` as float lists."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}: not an onebit run folder")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    cols: dict[str, list[float]] = {k: [] for k in rows[0]}
    for r in rows:
        for k, v in r.items():
            try:
                cols[k].append(float(v))
            except (TypeError, ValueError):
                cols[k].append(float("nan"))
    return cols


def plot_curves(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Loss, accuracy (train/val/test) and learning rate per epoch of one or more runs → one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, run in enumerate(run_dirs):
        m = read_metrics(run)
        name = labels[i] if labels else Path(run).name
        ep = [e + 1 for e in m["epoch"]]
        axes[0].plot(ep, m["train_loss"], label=f"{name} train")
        axes[0].plot(ep, m["test_loss"], "--", label=f"{name} test")
        for split, style in (("train_acc", ":"), ("val_acc", "-"), ("test_acc", "--")):
            axes[1].plot(ep, [100 * v for v in m[split]], style, label=f"{name} {split[:-4]}")
        axes[2].plot(ep, m["lr"], label=name)
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title="accuracy (%)", xlabel="epoch")
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
