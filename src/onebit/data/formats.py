"""Readers (and a few writers) for the on-disk formats of the supported data sets.

Every reader takes a path and returns NumPy arrays: images as ``uint8`` of
shape ``(N, C, H, W)`` and labels as ``int64`` of shape ``(N,)``. Anything
truncated, corrupt or not of the expected kind raises
:class:`~onebit.data.errors.CorruptDataError` whose message names the file.

Nothing here ever runs :func:`pickle.load` on a user file: the CIFAR "python
version" batches are read with :class:`RestrictedUnpickler`, which only lets
NumPy rebuild arrays and refuses every other global.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import numpy as np

from .errors import CorruptDataError, DataError

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "CIFAR_IMAGE_BYTES",
    "IMAGE_EXTENSIONS",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "write_idx",
    "read_cifar_bin",
    "write_cifar_bin",
    "RestrictedUnpickler",
    "safe_unpickle",
    "read_cifar_pickle",
    "read_svhn_mat",
    "list_image_folder",
    "load_image",
    "check_labels",
]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
CIFAR_IMAGE_BYTES = 3 * 32 * 32
_GZIP_MAGIC = b"\x1f\x8b"
_REDOWNLOAD = "The file is incomplete or damaged: delete it and get it again."

PathLike = str | os.PathLike[str]


def _corrupt(path: PathLike, what: str, fix: str = _REDOWNLOAD) -> CorruptDataError:
    return CorruptDataError(f"{os.fspath(path)}: {what}. {fix}".rstrip())


#: the largest IDX payload read (4 GiB; MNIST's training images are 47 MB)
MAX_IDX_BYTES = 1 << 32


@contextlib.contextmanager
def _reading(path: PathLike) -> Iterator[None]:
    """Turn the errors of reading (and gunzipping) ``path`` into the data errors naming it."""
    try:
        yield
    except EOFError as e:
        raise _corrupt(path, f"truncated gzip stream ({e})") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise _corrupt(path, f"corrupt gzip data ({e})") from e
    except OSError as e:
        raise DataError(f"{os.fspath(path)}: cannot read the file ({e}).") from e


def _open_maybe_gzip(path: PathLike) -> BinaryIO:
    """``path`` opened for reading, through gzip if it starts with the gzip magic (streamed: only
    what is read is decompressed). Use inside :func:`_reading`."""
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _read_bytes(path: PathLike) -> bytes:
    """Read a whole file, transparently gunzipping it if it starts with the gzip magic."""
    with _reading(path), _open_maybe_gzip(path) as f:
        return f.read()


def check_labels(path: PathLike, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Return ``labels`` as int64, raising CorruptDataError if any is outside ``[0, num_classes)``."""
    labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise _corrupt(path, f"label {int(bad)} is outside 0..{num_classes - 1}")
    return labels


# --------------------------------------------------------------------------- IDX


def read_idx(path: PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST / Fashion-MNIST), gzipped or not.

    The header is big-endian: a 4-byte magic (``0, 0, 0x08, ndim``), then ``ndim``
    4-byte sizes, then exactly ``prod(sizes)`` bytes of data. The file is streamed and never
    decompressed beyond one byte more than the header declares (a gzip bomb stops there).
    """
    with _reading(path), _open_maybe_gzip(path) as f:
        head = f.read(4)
        if len(head) < 4:
            raise _corrupt(path, f"only {len(head)} bytes, too short for an IDX header")
        (magic,) = struct.unpack(">I", head)
        zero, dtype_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
        if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
            raise _corrupt(
                path,
                f"bad IDX magic {magic} (expected {IDX_IMAGES_MAGIC} for images or "
                f"{IDX_LABELS_MAGIC} for labels); this is not an unsigned-byte IDX file",
                "Check that the file is the one named (MNIST-style IDX) and not another format.",
            )
        if expect_magic is not None and magic != expect_magic:
            raise _corrupt(
                path,
                f"IDX magic is {magic} but {expect_magic} was expected "
                f"({'images' if expect_magic == IDX_IMAGES_MAGIC else 'labels'})",
                "Are the image and label files swapped?",
            )
        sizes = f.read(4 * ndim)
        if len(sizes) < 4 * ndim:
            raise _corrupt(path, f"truncated IDX header ({4 + len(sizes)} of {4 + 4 * ndim} bytes)")
        dims = struct.unpack(f">{ndim}I", sizes)
        expected = math.prod(dims)  # Python ints: 2^31 · 2^31 · 4 must not wrap to 0
        if expected > MAX_IDX_BYTES:
            raise _corrupt(path, f"IDX header declares {dims} = {expected} bytes, more than any data set here")
        data = f.read(expected + 1)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        got = len(data) if len(data) < expected else f"more than {expected}"
        raise _corrupt(path, f"IDX data {what}: header says {dims} = {expected} bytes, file holds {got}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def read_idx_images(path: PathLike) -> np.ndarray:
    """Read an IDX image file (magic 2051) as uint8 ``(N, 1, rows, cols)``."""
    arr = read_idx(path, IDX_IMAGES_MAGIC)
    return arr.reshape(arr.shape[0], 1, arr.shape[1], arr.shape[2])


def read_idx_labels(path: PathLike, num_classes: int = 10) -> np.ndarray:
    """Read an IDX label file (magic 2049) as int64 ``(N,)``, checking the range."""
    return check_labels(path, read_idx(path, IDX_LABELS_MAGIC), num_classes)


def write_idx(path: PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array (1-D labels or 3-D images; (N,1,H,W) is squeezed) as IDX.

    ``compress`` defaults to whether the name ends in ``.gz``.
    """
    arr = np.asarray(array)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim not in (1, 2, 3, 4):
        raise ValueError(f"write_idx: cannot write a {arr.ndim}-D array")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("write_idx: values must fit in uint8")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    blob = struct.pack(f">I{arr.ndim}I", 0x0800 | arr.ndim, *arr.shape) + arr.tobytes()
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    if compress:
        blob = gzip.compress(blob, mtime=0)
    Path(path).write_bytes(blob)


# --------------------------------------------------------------------------- CIFAR binary


def read_cifar_bin(
    path: PathLike, label_bytes: int = 1, label_index: int = 0, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR binary-version batch.

    CIFAR-10 records are ``<label><3072 pixels>`` (``label_bytes=1``); CIFAR-100
    records are ``<coarse><fine><3072 pixels>`` (``label_bytes=2``; ``label_index``
    1 picks the fine label). Pixels are RGB planes of 32x32, row-major.
    """
    record = label_bytes + CIFAR_IMAGE_BYTES
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{os.fspath(path)}: cannot read the file ({e}).") from e
    if raw.size == 0 or raw.size % record:
        raise _corrupt(
            path,
            f"size {raw.size} bytes is not a positive multiple of the {record}-byte "
            f"CIFAR record ({label_bytes} label byte(s) + {CIFAR_IMAGE_BYTES} pixels)",
        )
    rec = raw.reshape(-1, record)
    labels = check_labels(path, rec[:, label_index], num_classes)
    images = np.ascontiguousarray(rec[:, label_bytes:]).reshape(-1, 3, 32, 32)
    return images, labels


def write_cifar_bin(path: PathLike, images: np.ndarray, labels: Sequence[np.ndarray] | np.ndarray) -> None:
    """Write CIFAR binary records. ``labels`` is one array (CIFAR-10) or a sequence
    of arrays written in order before the pixels (CIFAR-100: ``(coarse, fine)``)."""
    x = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), CIFAR_IMAGE_BYTES)
    ys = [labels] if isinstance(labels, np.ndarray) else list(labels)
    cols = [np.asarray(y, dtype=np.uint8).reshape(-1, 1) for y in ys]
    np.concatenate(cols + [x], axis=1).tofile(path)


# --------------------------------------------------------------------------- safe pickle


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # NumPy >= 2
        from numpy._core import multiarray as _ma
        from numpy._core import numeric as _num
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray as _ma  # type: ignore[no-redef]
        from numpy.core import numeric as _num  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _PickledArray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,  # how protocol-2 pickles from Python 3 store bytes
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = _ma._reconstruct
        table[(mod, "scalar")] = _ma.scalar
    if hasattr(_num, "_frombuffer"):
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            table[(mod, "_frombuffer")] = _num._frombuffer
    return table


class _PickledArray(np.ndarray):
    """What a pickle gets for ``numpy.ndarray``: the type ``_reconstruct`` builds an array of (in C,
    then filled by ``__setstate__``), but not a constructor a pickle may call itself — ``ndarray(shape)``
    would hand back uninitialised memory, ``ndarray(shape, dtype, buffer, 0, (0, 0))`` a huge array
    over a few bytes."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_PickledArray":
        raise _RefusedGlobal("numpy", "ndarray(...) called directly")


def _latin1_encode(obj: Any, encoding: str = "utf-8") -> bytes:
    """The only use of ``_codecs.encode`` allowed: ``encode(str, "latin1")``."""
    if not isinstance(obj, str) or encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise _RefusedGlobal("_codecs", f"encode with {type(obj).__name__}/{encoding!r}")
    return obj.encode("latin1")


class _RefusedGlobal(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild plain containers and NumPy arrays.

    Every global other than NumPy's array reconstruction helpers is refused
    before anything is imported or called, so a pickle whose ``__reduce__``
    names e.g. ``os.system`` fails without running anything.
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise _RefusedGlobal("<persistent id>", repr(pid)[:40])


def safe_unpickle(path: PathLike, encoding: str = "latin1") -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler` (never runs code).

    ``encoding="latin1"`` reads Python-2 pickles such as the official CIFAR batches.
    """
    raw = _read_bytes(path)
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
    except _RefusedGlobal as e:
        raise CorruptDataError(
            f"{os.fspath(path)}: refused to load this pickle: it asks for {e.module}.{e.name}, "
            "which is not a NumPy array; it may try to run code. Only CIFAR-style pickles of "
            "NumPy arrays, lists, dicts, numbers and strings are read. Use a file from the "
            "official source (or the binary version of the data set) instead."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, MemoryError, RecursionError, UnicodeDecodeError, OverflowError) as e:
        raise _corrupt(path, f"not a readable pickle ({type(e).__name__}: {e})") from e


def read_cifar_pickle(path: PathLike, label_key: str = "labels", num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR python-version batch (``cifar-10-batches-py/data_batch_1``,
    ``cifar-100-python/train``...) safely. ``label_key`` is ``"labels"`` for
    CIFAR-10 and ``"fine_labels"`` (or ``"coarse_labels"``) for CIFAR-100."""
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise _corrupt(path, f"expected a dict in this CIFAR pickle, found {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or label_key not in d:
        raise _corrupt(path, f"CIFAR pickle lacks the 'data' or '{label_key}' entry (keys: {sorted(map(str, d))})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_BYTES:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"'data' should be a uint8 array of shape (N, {CIFAR_IMAGE_BYTES}), found {desc}")
    raw = d[label_key]
    # integers only, checked element by element first (short-circuits: a nested list of shared lists
    # would expand exponentially in np.asarray; floats, strings and bools are not labels)
    if isinstance(raw, np.ndarray):
        ok = raw.dtype.kind in "iu"
    else:
        ok = isinstance(raw, list) and all(type(v) is int for v in raw)
    if not ok:
        raise _corrupt(path, f"'{label_key}' is not a list of integers")
    try:
        labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise _corrupt(path, f"'{label_key}' is not a list of integers ({e})") from e
    data = np.asarray(data)  # a plain ndarray (the pickle built a _PickledArray)
    if len(labels) != len(data):
        raise _corrupt(path, f"{len(data)} images but {len(labels)} labels")
    labels = check_labels(path, labels, num_classes)
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------- SVHN


#: MAT-file v5 data types (MATLAB "MAT-File Format", table 1-1) a numeric array's values may be stored as
_MI_NUMERIC = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13})  # miINT8 … miUINT64, miSINGLE, miDOUBLE
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_NUMERIC = frozenset(range(6, 16))  # mxDOUBLE_CLASS … mxUINT64_CLASS


def _check_mat_v5(path: PathLike) -> None:
    """Walk the top-level variables of a MATLAB v5 file and refuse one whose numeric data carries an
    element type SciPy's reader cannot take: ``loadmat`` crashes the process (a segfault in SciPy
    1.17.1) on, e.g., a data tag of type 0, 8 or 14 instead of raising. Only what is certainly wrong is
    refused (an impossible type, a variable longer than the file); anything else is left to SciPy.
    Compressed variables are inflated only as far as their first tags (a few hundred bytes)."""
    with open(path, "rb") as f:
        head = f.read(128)
        if len(head) < 128 or head[:10] == b"MATLAB 7.3":
            return  # too short or HDF5-based: SciPy refuses it with an exception of its own
        endian = {b"IM": "<", b"MI": ">"}.get(head[126:128])
        if endian is None:
            return
        size = os.fstat(f.fileno()).st_size
        off = 128
        while off + 8 <= size:
            f.seek(off)
            mtype, nbytes = struct.unpack(endian + "II", f.read(8))
            if mtype >> 16:  # a small element (4 bytes of data inside the tag): not a variable
                off += 8
                continue
            if off + 8 + nbytes > size:
                raise _corrupt(path, f"a variable at byte {off} claims {nbytes} bytes, past the end of the file")
            if mtype == _MI_MATRIX:
                _check_mat_matrix(path, f.read(min(nbytes, 4096)), endian, off)
            elif mtype == _MI_COMPRESSED:
                inflate = zlib.decompressobj()
                try:
                    inner = inflate.decompress(f.read(min(nbytes, 65536)), 4096)
                except zlib.error as e:
                    raise _corrupt(path, f"the compressed variable at byte {off} does not inflate ({e})") from e
                if len(inner) >= 8 and struct.unpack(endian + "I", inner[:4])[0] == _MI_MATRIX:
                    _check_mat_matrix(path, inner[8:], endian, off)
            off += 8 + nbytes + (-nbytes % 8 if mtype != _MI_COMPRESSED else 0)


def _check_mat_matrix(path: PathLike, m: bytes, endian: str, where: int) -> None:
    """The start of one miMATRIX element's contents: flags, dimensions, name, then (numeric class) the
    real and, if flagged, imaginary parts' tags, each of which must be a numeric data type."""
    tags: list[tuple[int, int]] = []  # (type, data bytes) of the sub-elements that fit in ``m``
    pos = 0
    while pos + 8 <= len(m) and len(tags) < 5:
        word, n = struct.unpack_from(endian + "II", m, pos)
        if word >> 16:  # small format: type in the low half, size in the high half, data in the next 4 bytes
            tags.append((word & 0xFFFF, word >> 16))
            pos += 8
        else:
            tags.append((word, n))
            pos += 8 + n + (-n % 8)
    if len(tags) < 4 or tags[0][0] != 6 or tags[0][1] != 8:
        return  # not what a numeric array starts with; SciPy decides
    flags = struct.unpack_from(endian + "I", m, 8)[0]
    mx_class, is_complex = flags & 0xFF, bool(flags & 0x800)
    if mx_class not in _MX_NUMERIC:
        return
    for part, (mtype, _) in zip(("real", "imaginary"), tags[3:5] if is_complex else tags[3:4]):
        if mtype not in _MI_NUMERIC:
            raise _corrupt(path, f"the numeric variable at byte {where} stores its {part} part as element "
                                 f"type {mtype}, which is not a MATLAB numeric type (damaged file)")


def read_svhn_mat(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits file (``train_32x32.mat``, MATLAB v5) with SciPy.

    ``X`` is ``(32, 32, 3, N)`` and becomes ``(N, 3, 32, 32)``; label 10 means digit 0.
    (``scipy.io.loadmat`` only parses data; it never runs code.)
    """
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise DataError(
            f"{os.fspath(path)}: reading SVHN .mat files needs SciPy, which is not installed. "
            "Run `pip install scipy`."
        ) from e
    if not os.path.isfile(path):
        raise DataError(f"{os.fspath(path)}: no such file.")
    _check_mat_v5(path)  # what would crash loadmat instead of raising
    try:
        mat = loadmat(os.fspath(path), variable_names=["X", "y"])
    except Exception as e:  # scipy raises many kinds on damaged input
        raise _corrupt(path, f"not a readable MATLAB v5 file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise _corrupt(path, "the .mat file lacks the 'X' or 'y' variable of SVHN")
    x = np.asarray(mat["X"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise _corrupt(path, f"'X' should be uint8 of shape (32, 32, 3, N), found {x.dtype} {x.shape}")
    y = mat["y"]
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iuf":  # a cell array, a sparse matrix, complex
        raise _corrupt(path, f"'y' should be a numeric array of labels, found {type(y).__name__}"
                       + (f" of {y.dtype}" if isinstance(y, np.ndarray) else ""))
    y = y.reshape(-1)
    if len(y) != x.shape[3]:
        raise _corrupt(path, f"{x.shape[3]} images but {len(y)} labels")
    bad = ~np.isfinite(y) | (y != np.round(y)) | (y < 1) | (y > 10) if y.dtype.kind == "f" else (y < 1) | (y > 10)
    if bad.any():
        raise _corrupt(path, f"label {y[bad][0].item()!r} is not an SVHN label (integers 1..10; 10 means digit 0)")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), check_labels(path, y, 10)


# --------------------------------------------------------------------------- image folder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def list_image_folder(
    split_dir: PathLike, classes: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """List ``split_dir/<class>/<image>`` as ``([(path, class_index)], classes)``.

    Classes are the sub-folder names, sorted; files are sorted within a class.
    Pass ``classes`` (from the training split) to map another split onto the
    same indices; a class folder unknown to it raises DataError.
    """
    root = Path(split_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected <split>/<class>/<image> folders).")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{root}: no class sub-folders found (expected {root}/<class>/<image>).")
    if classes is None:
        classes = found
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in found if c not in index]
    if unknown:
        raise DataError(f"{root}: class folder(s) {unknown[:5]} do not exist in the training split.")
    samples: list[tuple[Path, int]] = []
    for c in found:
        files = sorted(
            p for p in (root / c).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        samples.extend((p, index[c]) for p in files)
    if not samples:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders.")
    return samples, list(classes)


def load_image(
    path: PathLike,
    image_size: int,
    crop: Callable[[int, int], tuple[int, int, int, int]] | None = None,
    flip: bool = False,
    resize_ratio: float = 256 / 224,
) -> np.ndarray:
    """Decode one image as uint8 RGB ``(3, image_size, image_size)``.

    Without ``crop``: resize the shorter side to ``round(image_size * resize_ratio)``
    and take the centre square (the usual ImageNet evaluation transform). With
    ``crop(width, height) -> (left, top, w, h)``: take that box and resize it to
    the output size (used for random-resized-crop augmentation).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if crop is None:
                # the centre image_size square of the image resized to short side S, taken in the
                # original's pixels (a square of side short·image_size/S) and resized once: no
                # intermediate image, whose long side would follow the aspect ratio (1×65535 → GBs)
                w, h = im.size
                short = max(image_size, round(image_size * resize_ratio))
                side = min(w, h) * image_size / short
                left, top = (w - side) / 2, (h - side) / 2
                im = im.resize((image_size, image_size), Image.BILINEAR, box=(left, top, left + side, top + side))
            else:
                left, top, cw, ch = crop(*im.size)
                im = im.resize((image_size, image_size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            if flip:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            MemoryError) as e:
        raise _corrupt(path, f"cannot decode this image ({type(e).__name__}: {e})",
                       "Delete or replace the file.") from e
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
