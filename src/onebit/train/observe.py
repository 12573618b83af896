"""What a binary network does while it trains: per-layer weight statistics and their logs.

For every binary-weight layer (:class:`~onebit.nn.BinaryLinear` / :class:`~onebit.nn.BinaryConv2d`
with a binary weight quantizer) at the end of each epoch:

* ``flip_ratio``: the fraction of latent weights whose sign (``+1`` for ``w >= 0``, the project's
  convention) changed since the end of the previous epoch (epoch 0: since initialisation) — how many
  binary weights the epoch actually changed;
* ``saturated``: the fraction of latent weights with ``|w| >= 1`` (at the clipping bound of
  BNN-style layers, where every update pushing outward is lost);
* ``mean_abs``: the mean ``|w|``;
* a histogram of the latent weights (40 bins over ``[-1, 1]`` for clipped layers, else over
  ``[-max|w|, max|w|]``).

They go to ``layers.csv`` (one row per epoch and layer), ``histograms.json`` (per layer, a list of
``{"epoch", "lo", "hi", "counts"}``) and, when enabled, TensorBoard. Files are rewritten atomically.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_write_text

log = logging.getLogger("onebit.train")

LAYER_FIELDS = ["epoch", "layer", "numel", "flip_ratio", "saturated", "mean_abs"]
HIST_BINS = 40


def binary_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer whose weights are binarized in the forward pass."""
    from ..nn.binary import BinaryConv2d, BinaryLinear
    from ..quant import is_binary

    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (BinaryLinear, BinaryConv2d)) and is_binary(m.weight_quantizer)]


def pack_signs(w: torch.Tensor) -> torch.Tensor:
    """Bit-packed ``w < 0`` (uint8, 8 weights per byte) of a weight tensor."""
    neg = (w.detach().reshape(-1) < 0).cpu().numpy()
    return torch.from_numpy(np.packbits(neg))


class LayerStats:
    """Per-epoch statistics of the binary layers of ``model`` (see the module docstring).

    The signs at the start of the current epoch are kept bit-packed (1 bit per weight);
    :meth:`state` / :meth:`load_state` carry them through a mid-epoch checkpoint.
    """

    def __init__(self, model: nn.Module):
        self.layers = binary_layers(model)
        self.signs = {n: pack_signs(m.weight) for n, m in self.layers}

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to store in a checkpoint (``signs.<layer>``)."""
        return {f"signs.{n}": s for n, s in self.signs.items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Take the epoch-start signs from checkpoint ``tensors``; False if they are absent or do not fit."""
        new = {}
        for n, s in self.signs.items():
            t = tensors.get(f"signs.{n}")
            if t is None or t.dtype != torch.uint8 or tuple(t.shape) != tuple(s.shape):
                return False
            new[n] = t.clone()
        self.signs = new
        return True

    @torch.no_grad()
    def epoch_end(self, epoch: int) -> tuple[list[dict], dict[str, dict]]:
        """Rows for ``layers.csv`` and one histogram per layer; the current signs become the reference."""
        rows, hists = [], {}
        for n, m in self.layers:
            w = m.weight.detach().float().reshape(-1)
            packed = pack_signs(w)
            flips = int(np.unpackbits(np.bitwise_xor(packed.numpy(), self.signs[n].numpy()))[: w.numel()].sum())
            self.signs[n] = packed
            rows.append({"epoch": epoch, "layer": n, "numel": w.numel(), "flip_ratio": flips / w.numel(),
                         "saturated": float((w.abs() >= 1).float().mean()), "mean_abs": float(w.abs().mean())})
            hi = 1.0 if getattr(m, "clip_weights", False) else max(float(w.abs().max()), 1e-12)
            counts = torch.histc(w.clamp(-hi, hi), bins=HIST_BINS, min=-hi, max=hi)
            hists[n] = {"epoch": epoch, "lo": -hi, "hi": hi, "counts": [int(c) for c in counts.tolist()]}
        return rows, hists


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def append_layer_rows(path: Path, rows: list[dict]) -> None:
    """Append rows to ``layers.csv`` (written with its header when new)."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, LAYER_FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})


def truncate_rows(path: Path, fields: list[str], next_epoch: int) -> None:
    """Keep the header and the rows of epochs ``< next_epoch`` of a per-epoch CSV (after a crash)."""
    if not path.exists():
        atomic_write_text(path, ",".join(fields) + "\n")
        return
    lines = path.read_text().splitlines()
    keep = [",".join(fields)]
    for ln in lines[1:]:
        head = ln.split(",", 1)[0]
        if ln and head.lstrip("-").isdigit() and int(head) < next_epoch:
            keep.append(ln)
    atomic_write_text(path, "\n".join(keep) + "\n")


def read_histograms(path: Path) -> dict:
    """``histograms.json`` → {"bins": n, "layers": {name: [entry, ...]}} (empty when absent)."""
    if not path.exists():
        return {"bins": HIST_BINS, "layers": {}}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is corrupt ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
        raise ValueError(f"{path} is not an onebit histogram file")
    return data


def add_histograms(path: Path, hists: dict[str, dict], next_epoch: int | None = None) -> None:
    """Append this epoch's histograms to ``histograms.json`` (dropping epochs ``>= next_epoch`` first)."""
    data = read_histograms(path)
    layers = data["layers"]
    if next_epoch is not None:
        for n in layers:
            layers[n] = [h for h in layers[n] if h.get("epoch", 0) < next_epoch]
    for n, h in hists.items():
        layers.setdefault(n, []).append(h)
    atomic_write_text(path, json.dumps(data, separators=(",", ":")))


class TensorBoard:
    """A thin TensorBoard writer (the optional ``tensorboard`` package); inert when it is missing."""

    def __init__(self, log_dir: Path, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("--tensorboard: the tensorboard package is not installed (pip install tensorboard); "
                        "logging to the CSV files only")
            return
        self.writer = SummaryWriter(log_dir=str(log_dir))

    @property
    def active(self) -> bool:
        return self.writer is not None

    def step(self, loss: float, global_step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar("loss/train_step", loss, global_step)

    def epoch(self, row: dict, layer_rows: list[dict], layers: list[tuple[str, nn.Module]]) -> None:
        """Epoch scalars (loss, accuracy, lr), per-layer flip ratio / saturation and weight histograms."""
        if self.writer is None:
            return
        w, e = self.writer, int(row["epoch"])
        for split in ("train", "val", "test"):
            for what in ("loss", "acc"):
                v = row.get(f"{split}_{what}")
                if v is not None and v == v:
                    w.add_scalar(f"{what}/{split}", v, e)
        w.add_scalar("lr", row["lr"], e)
        for r in layer_rows:
            w.add_scalar(f"flip_ratio/{r['layer']}", r["flip_ratio"], e)
            w.add_scalar(f"saturated/{r['layer']}", r["saturated"], e)
        for n, m in layers:
            w.add_histogram(f"weights/{n}", m.weight.detach().float().reshape(-1), e)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

