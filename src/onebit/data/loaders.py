"""Batched loaders: :class:`BatchLoader` (whole data set in memory as uint8),
:class:`ImageFolderLoader` (decodes image files lazily) and :func:`make_loaders`,
which builds the train / validation / test loaders of a named data set.

Both loaders yield ``(x, y)`` with ``x`` float32 ``(B, C, H, W)`` and ``y``
int64 ``(B,)``; the order of epoch ``e`` is a pure function of ``(seed, e)``
(call :meth:`set_epoch` before each epoch), which makes resuming exact.
"""

from __future__ import annotations

import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch

from . import formats
from .arrays import load_arrays, spread_indices as _spread
from .errors import DataError
from .registry import DatasetInfo, info, resolve
from .transforms import NORMALIZE_MODES, epoch_order, generator, mix_seed, normalize, random_crop_flip

__all__ = ["BatchLoader", "ImageFolderLoader", "Loaders", "make_loaders", "split_count"]

Batch = tuple[torch.Tensor, torch.Tensor]


def _check_common(batch_size: int, norm: str, rank: int, world_size: int) -> None:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if norm not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize mode {norm!r}; use one of {', '.join(NORMALIZE_MODES)}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


class _EpochLoader:
    """Order / length / epoch bookkeeping shared by both loaders."""

    def __init__(self, n: int, *, batch_size: int, shuffle: bool, seed: int, rank: int, world_size: int,
                 even: bool, drop_last: bool) -> None:
        self.dataset_size = n
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.even = even
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch whose order (and augmentation) the next iteration uses.

        ``start_batch`` skips the first batches of that epoch (resuming mid-epoch): the batches
        that follow are exactly those an uninterrupted iteration would yield, augmentation included.
        """
        if int(start_batch) < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    @property
    def num_samples(self) -> int:
        """Samples this loader (this rank) yields per epoch."""
        n = self.dataset_size
        if self.even and self.world_size > 1:
            n -= n % self.world_size
        local = len(range(self.rank, n, self.world_size))
        return local - local % self.batch_size if self.drop_last else local

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return self.num_samples // self.batch_size if self.drop_last else math.ceil(self.num_samples / self.batch_size)

    def order(self) -> torch.Tensor:
        """Indices visited in the current epoch by this rank (before batching)."""
        idx = epoch_order(self.dataset_size, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle,
                          rank=self.rank, world_size=self.world_size, even=self.even)
        return idx[: self.num_samples]


class BatchLoader(_EpochLoader):
    """Iterate over an in-memory uint8 image set in batches.

    Args:
        images: uint8 ``(N, C, H, W)`` (NumPy or torch); kept as one uint8 tensor.
        labels: integer ``(N,)``.
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: new order each epoch, from ``(seed, epoch)``.
        augment: 4-pixel zero-pad random crop + horizontal flip (p=0.5), batched.
        normalize / mean / std: see :func:`onebit.data.transforms.normalize`.
        rank / world_size: distributed training; each rank gets the strided slice
            ``perm[rank::world_size]`` of the shared permutation (disjoint, covering).
        even: drop up to ``world_size - 1`` samples per epoch so all ranks get
            the same count (and so the same number of batches).
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        normalize: str = "pm1",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        even: bool = False,
        drop_last: bool = False,
        pad: int = 4,
    ) -> None:
        _check_common(batch_size, normalize, rank, world_size)
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.require(images, np.uint8, ["C", "W"]))
        y = labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.require(labels, np.int64, ["C", "W"]))
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        y = y.to(torch.int64).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if normalize == "meanstd" and (mean is None or std is None):
            raise ValueError("normalize='meanstd' needs mean and std")
        super().__init__(len(x), batch_size=batch_size, shuffle=shuffle, seed=seed, rank=rank,
                         world_size=world_size, even=even, drop_last=drop_last)
        self.images, self.labels = x, y
        self.augment = augment
        self.normalize = normalize
        self.mean, self.std = mean, std
        self.pad = pad

    def __iter__(self) -> Iterator[Batch]:
        order = self.order()
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            if b < self.start_batch:
                continue
            idx = order[start:start + self.batch_size]
            xb = self.images.index_select(0, idx)
            if self.augment:
                xb = random_crop_flip(xb, generator(self.seed, self.epoch, self.rank, b, 0xA06), self.pad)
            yield normalize(xb, self.normalize, self.mean, self.std), self.labels.index_select(0, idx)


#: training crops of :class:`ImageFolderLoader` (``augment``)
CROPS = ("random_resized", "resize")


class ImageFolderLoader(_EpochLoader):
    """Decode image files lazily, a batch at a time (ImageNet-style folders).

    Evaluation transform: resize the shorter side to ``image_size * 256/224``,
    centre-crop ``image_size``. With ``augment``, and horizontal flip, seeded per
    ``(seed, epoch, sample)``: ``crop="random_resized"`` (the default) takes a random-resized
    crop (area 8-100 %, aspect 3/4-4/3; the torchvision/ResNet recipe); ``crop="resize"`` resizes
    the shorter side to ``image_size * 256/224`` and takes a random ``image_size`` square (the
    Bi-Real paper's "resize to 256, random 224 crop"). ``num_workers`` > 0 decodes in that many
    threads. Other arguments as for :class:`BatchLoader`.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        *,
        batch_size: int,
        image_size: int = 224,
        shuffle: bool = False,
        augment: bool = False,
        crop: str = "random_resized",
        seed: int = 0,
        normalize: str = "meanstd",
        mean: Sequence[float] | None = (0.485, 0.456, 0.406),
        std: Sequence[float] | None = (0.229, 0.224, 0.225),
        rank: int = 0,
        world_size: int = 1,
        even: bool = False,
        drop_last: bool = False,
        num_workers: int = 0,
        classes: Sequence[str] | None = None,
    ) -> None:
        _check_common(batch_size, normalize, rank, world_size)
        super().__init__(len(samples), batch_size=batch_size, shuffle=shuffle, seed=seed, rank=rank,
                         world_size=world_size, even=even, drop_last=drop_last)
        self.samples = list(samples)
        self.labels = torch.tensor([c for _, c in self.samples], dtype=torch.int64)
        self.classes = list(classes) if classes is not None else None
        self.image_size = int(image_size)
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
        self.augment = augment
        self.crop = crop
        self.normalize = normalize
        self.mean, self.std = mean, std
        self.num_workers = int(num_workers)

    def _decode(self, i: int) -> np.ndarray:
        path = self.samples[i][0]
        if not self.augment:
            return formats.load_image(path, self.image_size)
        rng = random.Random(mix_seed(self.seed, self.epoch, i, 0x1F))

        def resize_crop(w: int, h: int) -> tuple[int, int, int, int]:
            # the image_size square of the image resized to short side image_size·256/224, in the
            # original's pixels: a square of side short·224/256 at a random place
            side = max(1, min(w, h, round(min(w, h) * 224 / 256)))
            return rng.randint(0, w - side), rng.randint(0, h - side), side, side

        def crop(w: int, h: int) -> tuple[int, int, int, int]:
            area = w * h
            for _ in range(10):
                target = area * rng.uniform(0.08, 1.0)
                ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
                cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
                if 0 < cw <= w and 0 < ch <= h:
                    return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
            s = min(w, h)
            return (w - s) // 2, (h - s) // 2, s, s

        box = resize_crop if self.crop == "resize" else crop
        return formats.load_image(path, self.image_size, crop=box, flip=rng.random() < 0.5)

    def __iter__(self) -> Iterator[Batch]:
        order = self.order()
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 0 else None
        try:
            for b, start in enumerate(range(0, len(order), self.batch_size)):
                if b < self.start_batch:
                    continue
                idx = order[start:start + self.batch_size]
                ids = idx.tolist()
                imgs = list(pool.map(self._decode, ids)) if pool else [self._decode(i) for i in ids]
                xb = torch.from_numpy(np.stack(imgs))
                yield normalize(xb, self.normalize, self.mean, self.std), self.labels.index_select(0, idx)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


AnyLoader = Union[BatchLoader, ImageFolderLoader]


@dataclass
class Loaders:
    """The loaders of one data set. ``val`` is None when ``val_size`` is 0."""

    train: AnyLoader
    val: AnyLoader | None
    test: AnyLoader
    info: DatasetInfo
    classes: list[str] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Forward to the training loader."""
        self.train.set_epoch(epoch, start_batch)


def split_count(val_size: int | float, n: int, name: str) -> int:
    """Number of validation images: an int count, or a float fraction in ``[0, 1)`` of ``n``."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float, np.integer, np.floating)):
        raise ValueError(f"val_size must be an int or a float fraction, got {val_size!r}")
    if isinstance(val_size, (float, np.floating)):
        if 0 <= val_size < 1:
            k = int(round(float(val_size) * n))
        elif float(val_size).is_integer():
            k = int(val_size)
        else:
            raise ValueError(f"val_size={val_size}: a fraction must be in [0, 1), a count an integer")
    else:
        k = int(val_size)
    if k < 0:
        raise ValueError(f"val_size must be >= 0, got {val_size}")
    if k >= n:
        raise DataError(f"{name}: val_size={val_size} takes {k} of the {n} training images and leaves none to train on; use a smaller one (`--val-size N` images, or a fraction like 0.1).")
    return k


def _stratified_tail(labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the last images of each class (samples sorted by class),
    ``k`` in all, shared out in proportion to the class sizes."""
    classes, starts, counts = np.unique(labels, return_index=True, return_counts=True)
    want = k * counts / counts.sum()
    q = np.floor(want).astype(np.int64)
    for j in np.argsort(-(want - q), kind="stable")[: k - int(q.sum())]:
        q[j] += 1
    mask = np.zeros(len(labels), dtype=bool)
    for s, c, t in zip(starts, counts, q):
        mask[s + c - t: s + c] = True
    return mask


def make_loaders(
    name: str,
    *,
    batch_size: int,
    root: str | os.PathLike[str] | None = None,
    val_size: int | float = 5000,
    augment: bool = False,
    seed: int = 0,
    download: bool = True,
    normalize: str = "pm1",
    eval_batch_size: int | None = None,
    limit: int | None = None,
    image_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    even: bool = False,
    num_workers: int = 0,
    shard_eval: bool = False,
    crop: str = "random_resized",
) -> Loaders:
    """Build train / val / test loaders for data set ``name``.

    The validation set is the last ``val_size`` training images (an int, or a
    fraction of the training set; 0 gives ``val=None``); the test set is never
    used for tuning. ``limit`` keeps the first ``limit`` training images and
    ``max(1, limit // 5)`` validation / test images (quick runs). Only the
    training loader shuffles, augments (``augment``) and is split across
    ``rank`` / ``world_size``; evaluation loaders see everything, in order.

    For ``imagefolder`` (``root/train/<class>/*``, ``root/val/<class>/*``) images
    are decoded lazily at ``image_size`` (default 224); the validation images
    are the last ones of each class (in proportion), and ``limit`` takes evenly
    spaced images so that every class stays represented; ``crop`` picks the training crop
    (:class:`ImageFolderLoader`; the array data sets pad 4 and crop whatever it says).

    ``shard_eval`` splits the validation and test loaders across ``rank`` / ``world_size`` too
    (each rank scores a disjoint strided part; distributed evaluation sums the counts).
    """
    ds = info(name)
    _check_common(batch_size, normalize, rank, world_size)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    eval_bs = int(eval_batch_size or batch_size)
    small = None if limit is None else max(1, int(limit) // 5)

    if ds.name == "imagefolder":
        return _imagefolder_loaders(ds, root=root, batch_size=batch_size, eval_bs=eval_bs, val_size=val_size,
                                    augment=augment, seed=seed, download=download, normalize=normalize,
                                    limit=limit, small=small, image_size=image_size, rank=rank,
                                    world_size=world_size, even=even, num_workers=num_workers,
                                    shard_eval=shard_eval, crop=crop)

    arrays = load_arrays(ds.name, root, download)
    xtr, ytr = arrays["train"]
    xte, yte = arrays["test"]
    k = split_count(val_size, len(xtr), ds.name)
    cut = len(xtr) - k
    xval, yval = xtr[cut:], ytr[cut:]
    xtr, ytr = xtr[:cut], ytr[:cut]
    if limit is not None:
        xtr, ytr = xtr[:limit], ytr[:limit]
        xval, yval = xval[:small], yval[:small]
        xte, yte = xte[:small], yte[:small]
    common = dict(normalize=normalize, mean=ds.mean, std=ds.std, seed=seed)
    shard = dict(rank=rank, world_size=world_size) if shard_eval else {}
    train = BatchLoader(xtr, ytr, batch_size=batch_size, shuffle=True, augment=augment, rank=rank,
                        world_size=world_size, even=even, **common)
    val = BatchLoader(xval, yval, batch_size=eval_bs, **common, **shard) if k > 0 else None
    test = BatchLoader(xte, yte, batch_size=eval_bs, **common, **shard)
    return Loaders(train, val, test, ds)


def _imagefolder_loaders(
    ds: DatasetInfo, *, root: str | os.PathLike[str] | None, batch_size: int, eval_bs: int, val_size: int | float,
    augment: bool, seed: int, download: bool, normalize: str, limit: int | None, small: int | None,
    image_size: int | None, rank: int, world_size: int, even: bool, num_workers: int, shard_eval: bool = False,
    crop: str = "random_resized",
) -> Loaders:
    _folder, _fs, dirs = resolve(ds.name, root, download)
    train_samples, classes = formats.list_image_folder(dirs["train"])
    test_samples, _ = formats.list_image_folder(dirs["test"], classes)
    labels = np.array([c for _, c in train_samples], dtype=np.int64)
    k = split_count(val_size, len(train_samples), f"imagefolder {dirs['train']}")
    val_mask = _stratified_tail(labels, k) if k else np.zeros(len(labels), dtype=bool)
    tr = [s for s, m in zip(train_samples, val_mask) if not m]
    va = [s for s, m in zip(train_samples, val_mask) if m]
    tr = [tr[i] for i in _spread(len(tr), limit)]
    va = [va[i] for i in _spread(len(va), small)] if va else []
    te = [test_samples[i] for i in _spread(len(test_samples), small)]
    size = int(image_size or ds.image_size)
    info_ = replace(ds, num_classes=len(classes), image_size=size)
    common = dict(image_size=size, normalize=normalize, mean=ds.mean, std=ds.std, seed=seed,
                  num_workers=num_workers, classes=classes)
    shard = dict(rank=rank, world_size=world_size) if shard_eval else {}
    train = ImageFolderLoader(tr, batch_size=batch_size, shuffle=True, augment=augment, crop=crop, rank=rank,
                              world_size=world_size, even=even, **common)
    val = ImageFolderLoader(va, batch_size=eval_bs, **common, **shard) if va else None
    test = ImageFolderLoader(te, batch_size=eval_bs, **common, **shard)
    return Loaders(train, val, test, info_, classes)
