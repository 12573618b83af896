"""Loading a whole in-memory data set as NumPy arrays (:func:`load_arrays`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import formats
from .errors import CorruptDataError, DataError
from .registry import DatasetInfo, info, names, resolve

__all__ = ["load_arrays", "spread_indices", "image_folder_split", "decode_images"]

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


def spread_indices(n: int, k: int | None) -> np.ndarray:
    """``k`` evenly spaced indices out of ``n`` (all of them if k is None or >= n): a subset of an
    image folder, sorted by class, that keeps every class represented."""
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(k, 1)).round().astype(np.int64))


def image_folder_split(split: str, root: str | os.PathLike[str] | None = None, limit: int | None = None,
                       download: bool = False) -> tuple[list[tuple[Path, int]], list[str]]:
    """The ``(path, class)`` samples of one split (``"train"`` or ``"test"``) of the ``imagefolder``
    data set, classes numbered as in its training split (the classes a model trained on it
    predicts); ``limit`` keeps that many evenly spaced samples (:func:`spread_indices`). No PyTorch:
    the engine (``onebit run``) decodes them with :func:`decode_images`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    _folder, _fs, dirs = resolve("imagefolder", root, download)
    train, classes = formats.list_image_folder(dirs["train"])
    samples = train if split == "train" else formats.list_image_folder(dirs["test"], classes)[0]
    return [samples[i] for i in spread_indices(len(samples), limit)], classes


def decode_images(samples, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``(path, class)`` samples with the evaluation transform (shorter side resized to
    ``image_size``·256/224, centre square): uint8 ``(N, 3, S, S)`` and int64 labels ``(N,)``."""
    x = np.stack([formats.load_image(p, image_size) for p, _ in samples]) if samples else \
        np.zeros((0, 3, image_size, image_size), np.uint8)
    return x, np.array([c for _, c in samples], dtype=np.int64)

