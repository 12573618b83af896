"""Data sets for training binary networks.

Quick use::

    from onebit.data import make_loaders
    loaders = make_loaders("mnist", batch_size=100, val_size=10000)
    for epoch in range(epochs):
        loaders.train.set_epoch(epoch)
        for x, y in loaders.train:   # x float32 (B, 1, 28, 28) in [-1, 1], y int64 (B,)
            ...

Files are looked for in the explicit ``root`` (``--data-root``), then
``$ONEBIT_DATA``, then known system folders, then downloaded from the official
URLs into ``~/.cache/onebit`` (set ``ONEBIT_NO_DOWNLOAD=1`` to forbid that);
see :mod:`onebit.data.registry`. No file is ever unpickled with :mod:`pickle`'s
unrestricted loader.

Modules: :mod:`~onebit.data.errors` (exceptions), :mod:`~onebit.data.formats`
(file readers), :mod:`~onebit.data.download` (verified downloads),
:mod:`~onebit.data.registry` (data-set table and lookup),
:mod:`~onebit.data.arrays` (:func:`load_arrays`), :mod:`~onebit.data.transforms`
(batched normalisation / augmentation) and :mod:`~onebit.data.loaders`.
"""

from __future__ import annotations

from .arrays import load_arrays
from .errors import CorruptDataError, DataError, DataNotFoundError
from .registry import DatasetInfo, info, locate, names


def __getattr__(name: str):
    # the loaders use torch; keep `onebit.data` importable without it (the deploy runtime reads arrays)
    if name in ("BatchLoader", "ImageFolderLoader", "Loaders", "make_loaders"):
        from . import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'onebit.data' has no attribute {name!r}")

__all__ = [
    "DataError",
    "DataNotFoundError",
    "CorruptDataError",
    "DatasetInfo",
    "names",
    "info",
    "locate",
    "load_arrays",
    "make_loaders",
    "Loaders",
    "BatchLoader",
    "ImageFolderLoader",
]
