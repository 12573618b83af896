"""Loading a whole in-memory data set as NumPy arrays (:func:`load_arrays`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import formats
from .errors import CorruptDataError, DataError
from .registry import DatasetInfo, info, names, resolve

__all__ = ["load_arrays"]

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def _idx(files: dict[str, Path], ds: DatasetInfo) -> Arrays:
    out: Arrays = {}
    for split in ("train", "test"):
        x = formats.read_idx_images(files[f"{split}-images"])
        y = formats.read_idx_labels(files[f"{split}-labels"], ds.num_classes)
        if len(x) != len(y):
            raise CorruptDataError(
                f"{files[f'{split}-images']} holds {len(x)} images but {files[f'{split}-labels']} holds "
                f"{len(y)} labels; the two files do not belong together. Get both again."
            )
        out[split] = (x, y)
    return out


def _cifar(files: dict[str, Path], ds: DatasetInfo, kind: str) -> Arrays:
    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        if kind == "cifar10-bin":
            return formats.read_cifar_bin(path, 1, 0, 10)
        if kind == "cifar100-bin":
            return formats.read_cifar_bin(path, 2, 1, 100)
        if kind == "cifar10-py":
            return formats.read_cifar_pickle(path, "labels", 10)
        return formats.read_cifar_pickle(path, "fine_labels", 100)

    if ds.name == "cifar10":
        train_roles, test_roles = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        train_roles, test_roles = ["train"], ["test"]
    out: Arrays = {}
    for split, roles in (("train", train_roles), ("test", test_roles)):
        parts = [read(files[r]) for r in roles]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def _svhn(files: dict[str, Path]) -> Arrays:
    return {split: formats.read_svhn_mat(files[split]) for split in ("train", "test")}


def load_arrays(
    name: str, root: str | os.PathLike[str] | None = None, download: bool = True
) -> Arrays:
    """Load data set ``name`` as ``{"train": (x, y), "test": (x, y)}``.

    ``x`` is uint8 ``(N, C, H, W)``, ``y`` int64 ``(N,)``; CIFAR-100 uses the fine
    labels. Files are found with :func:`~onebit.data.registry.locate` (same
    ``root`` / ``download`` meaning). ``imagefolder`` is decoded lazily and is
    not available here: use :func:`~onebit.data.loaders.make_loaders`.
    """
    ds = info(name)
    if ds.name == "imagefolder":
        raise DataError("imagefolder is decoded lazily and cannot be loaded as arrays; use make_loaders('imagefolder', ...).")
    _folder, fileset, files = resolve(ds.name, root, download)
    if fileset.kind == "idx":
        out = _idx(files, ds)
    elif fileset.kind.startswith("cifar"):
        out = _cifar(files, ds, fileset.kind)
    elif fileset.kind == "svhn-mat":
        out = _svhn(files)
    else:  # pragma: no cover - table and readers out of sync
        raise DataError(f"{ds.name}: no reader for layout {fileset.kind!r}.")
    for split, (x, _y) in out.items():
        if x.shape[1:] != (ds.in_channels, ds.image_size, ds.image_size):
            raise CorruptDataError(
                f"{_folder}: {ds.name} {split} images have shape {x.shape[1:]}, expected "
                f"{(ds.in_channels, ds.image_size, ds.image_size)}; these files are not {ds.name}."
            )
    _check_identity(out, ds, _folder)
    return out


#: how far a full-size training set's mean pixel (per channel, in [0, 1]) may be from the
#: registered one (the official files match to 1e-4; MNIST and Fashion-MNIST differ by 0.155)
MEAN_TOLERANCE = 0.005


def _check_identity(out: Arrays, ds: DatasetInfo, folder: Path) -> None:
    """Refuse another data set stored under ``ds``'s file names: MNIST and Fashion-MNIST share names,
    shapes and sizes, so a folder of one found for the other would load silently. Only a training
    set of the official size is checked (a smaller one is a subset or a test fixture)."""
    x = out["train"][0]
    if ds.train_size is None or len(x) != ds.train_size or not ds.mean:
        return
    mean = x.reshape(len(x), x.shape[1], -1).mean(axis=(0, 2), dtype=np.float64) / 255
    if np.abs(mean - np.asarray(ds.mean)).max() <= MEAN_TOLERANCE:
        return
    like = [n for n in names() if n != ds.name and len(info(n).mean) == len(mean)
            and info(n).train_size == len(x) and np.abs(mean - np.asarray(info(n).mean)).max() <= MEAN_TOLERANCE]
    got = ", ".join(f"{v:.4f}" for v in mean)
    want = ", ".join(f"{v:.4f}" for v in ds.mean)
    raise CorruptDataError(f"{folder}: the files named like {ds.name} are not {ds.name}: their mean pixel is ({got}), "
                           f"{ds.name}'s is ({want})" + (f"; they look like {like[0]}" if like else "") +
                           " (is --data-root or $ONEBIT_DATA the folder of another data set?)")
