"""Batched, tensor-level pieces shared by the loaders: seeding, sample order,
normalisation and the crop-and-flip augmentation.

Everything here works on whole batches with tensor ops (no per-sample Python)
and draws its randomness only from generators seeded by :func:`mix_seed`, so a
batch is a pure function of ``(seed, epoch, rank, batch index)``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["NORMALIZE_MODES", "mix_seed", "generator", "epoch_order", "normalize", "random_crop_flip"]

NORMALIZE_MODES = ("pm1", "meanstd", "unit")


def mix_seed(*parts: int) -> int:
    """Hash integers into a 63-bit seed (stable across runs, platforms and Python versions)."""
    data = struct.pack(f"<{len(parts)}q", *(int(p) & 0x7FFFFFFFFFFFFFFF for p in parts))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & 0x7FFFFFFFFFFFFFFF


def generator(*parts: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``mix_seed(*parts)``."""
    g = torch.Generator()
    g.manual_seed(mix_seed(*parts))
    return g


def epoch_order(
    n: int, *, seed: int, epoch: int, shuffle: bool, rank: int = 0, world_size: int = 1, even: bool = False
) -> torch.Tensor:
    """Indices (int64) this rank visits in ``epoch``.

    With ``shuffle`` the permutation depends only on ``(seed, epoch)`` (the same
    on every rank); rank ``r`` takes ``perm[r::world_size]``, so ranks are
    disjoint and together cover every index. ``even`` first drops the last
    ``n % world_size`` entries of the permutation so all ranks get the same count.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    order = torch.randperm(n, generator=generator(seed, epoch, 0x5EED)) if shuffle else torch.arange(n)
    if even and world_size > 1:
        order = order[: n - n % world_size]
    return order[rank::world_size]


def normalize(
    x: torch.Tensor, mode: str, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float32.

    ``"pm1"``: ``x / 127.5 - 1`` (in ``[-1, 1]``, the BNN paper's preprocessing);
    ``"meanstd"``: ``(x / 255 - mean) / std`` per channel; ``"unit"``: ``x / 255``.
    """
    out = x.to(torch.float32)
    if mode == "pm1":
        return out.div_(127.5).sub_(1.0)
    if mode == "unit":
        return out.div_(255.0)
    if mode == "meanstd":
        if mean is None or std is None:
            raise ValueError("normalize='meanstd' needs mean and std")
        c = out.shape[1]
        m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if m.shape[1] not in (1, c) or s.shape[1] not in (1, c):
            raise ValueError(f"mean/std have {m.shape[1]}/{s.shape[1]} entries for {c} channels")
        return out.div_(255.0).sub_(m).div_(s)
    raise ValueError(f"unknown normalize mode {mode!r}; use one of {', '.join(NORMALIZE_MODES)}")


def random_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop after ``pad`` pixels of zero padding, and horizontal flip with p=0.5.

    Works on the raw uint8 batch, so padding is raw pixel 0 (whatever value
    normalisation later maps it to). One gather for the whole batch.
    """
    b, c, h, w = x.shape
    if b == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    rows = oy[:, None] + ar_h  # (B, H)
    cols = ox[:, None] + ar_w  # (B, W)
    if flip:
        flipped = torch.rand(b, generator=g) < 0.5
        cols = torch.where(flipped[:, None], ox[:, None] + (w - 1 - ar_w), cols)
    return padded[
        torch.arange(b)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
