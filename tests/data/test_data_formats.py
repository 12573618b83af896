"""File-format readers of onebit.data: round trips and corrupt-input detection (offline, tiny files)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys

import numpy as np
import pytest

from onebit.data import CorruptDataError, DataError
from onebit.data import formats


def _images(n: int, h: int = 28, w: int = 28, c: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


# --------------------------------------------------------------------------- IDX


def test_idx_roundtrip_gz_and_plain(tmp_path):
    x = _images(7)
    y = np.array([0, 1, 2, 3, 9, 8, 7], dtype=np.uint8)
    formats.write_idx(tmp_path / "img.gz", x)
    formats.write_idx(tmp_path / "lab.gz", y)
    formats.write_idx(tmp_path / "img", x)
    assert (tmp_path / "img.gz").read_bytes()[:2] == b"\x1f\x8b"
    got = formats.read_idx_images(tmp_path / "img.gz")
    assert got.shape == (7, 1, 28, 28) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(formats.read_idx_images(tmp_path / "img"), x)
    lab = formats.read_idx_labels(tmp_path / "lab.gz")
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, y)
    # header is exactly the documented big-endian layout
    raw = gzip.decompress((tmp_path / "img.gz").read_bytes())
    assert struct.unpack(">4I", raw[:16]) == (2051, 7, 28, 28)


def test_idx_truncated_gz(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    formats.write_idx(p, _images(7))
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptDataError, match="train-images-idx3-ubyte.gz") as e:
        formats.read_idx_images(p)
    assert "truncated" in str(e.value)


def test_idx_corrupt_gz_crc(tmp_path):
    p = tmp_path / "x-idx3-ubyte.gz"
    formats.write_idx(p, _images(3))
    blob = bytearray(p.read_bytes())
    blob[-6] ^= 0xFF  # inside the CRC32 trailer
    p.write_bytes(bytes(blob))
    with pytest.raises(CorruptDataError, match="x-idx3-ubyte.gz"):
        formats.read_idx_images(p)


def test_idx_wrong_magic(tmp_path):
    p = tmp_path / "bad-magic-idx3-ubyte"
    p.write_bytes(struct.pack(">4I", 1234, 1, 2, 2) + bytes(4))
    with pytest.raises(CorruptDataError, match="bad-magic-idx3-ubyte") as e:
        formats.read_idx_images(p)
    assert "magic" in str(e.value)
    # a valid label file where images are expected
    q = tmp_path / "labels-idx1-ubyte"
    formats.write_idx(q, np.arange(5, dtype=np.uint8))
    with pytest.raises(CorruptDataError, match="labels-idx1-ubyte"):
        formats.read_idx_images(q)


@pytest.mark.parametrize("delta", [-1, +1])
def test_idx_count_mismatch(tmp_path, delta):
    p = tmp_path / "count-idx3-ubyte.gz"
    body = _images(7).tobytes()
    extra = body[: 28 * 28 * delta] if delta > 0 else b""
    data = struct.pack(">4I", 2051, 7, 28, 28) + (body[: 28 * 28 * 6] if delta < 0 else body + extra)
    p.write_bytes(gzip.compress(data))
    with pytest.raises(CorruptDataError, match="count-idx3-ubyte.gz"):
        formats.read_idx_images(p)


def test_idx_too_short_and_label_range(tmp_path):
    p = tmp_path / "short"
    p.write_bytes(b"\x00\x00")
    with pytest.raises(CorruptDataError, match="short"):
        formats.read_idx(p)
    q = tmp_path / "labels-idx1-ubyte"
    formats.write_idx(q, np.array([1, 2, 10], dtype=np.uint8))
    with pytest.raises(CorruptDataError, match="label 10"):
        formats.read_idx_labels(q, 10)


# --------------------------------------------------------------------------- CIFAR binary


def test_cifar10_bin_roundtrip(tmp_path):
    x = _images(5, 32, 32, 3)
    y = np.array([0, 9, 3, 3, 1])
    p = tmp_path / "data_batch_1.bin"
    formats.write_cifar_bin(p, x, y)
    assert p.stat().st_size == 5 * 3073
    gx, gy = formats.read_cifar_bin(p)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)
    assert gx.dtype == np.uint8 and gy.dtype == np.int64


def test_cifar100_bin_roundtrip_fine_labels(tmp_path):
    x = _images(4, 32, 32, 3)
    coarse, fine = np.array([1, 2, 3, 19]), np.array([99, 0, 50, 7])
    p = tmp_path / "train.bin"
    formats.write_cifar_bin(p, x, (coarse, fine))
    assert p.stat().st_size == 4 * 3074
    gx, gy = formats.read_cifar_bin(p, label_bytes=2, label_index=1, num_classes=100)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, fine)


def test_cifar_bin_bad_size_and_label(tmp_path):
    p = tmp_path / "data_batch_2.bin"
    formats.write_cifar_bin(p, _images(2, 32, 32, 3), np.array([1, 2]))
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(CorruptDataError, match="data_batch_2.bin") as e:
        formats.read_cifar_bin(p)
    assert "3073" in str(e.value)
    empty = tmp_path / "test_batch.bin"
    empty.write_bytes(b"")
    with pytest.raises(CorruptDataError, match="test_batch.bin"):
        formats.read_cifar_bin(empty)
    bad = tmp_path / "data_batch_3.bin"
    formats.write_cifar_bin(bad, _images(2, 32, 32, 3), np.array([1, 12]))
    with pytest.raises(CorruptDataError, match="data_batch_3.bin"):
        formats.read_cifar_bin(bad)


# --------------------------------------------------------------------------- CIFAR python (safe pickle)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickle_roundtrip(tmp_path, protocol):
    x = _images(6, 32, 32, 3).reshape(6, 3072)
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({"batch_label": "training batch 1 of 5", "labels": [1, 2, 3, 4, 5, 6],
                                "data": x, "filenames": ["a.png"] * 6}, protocol=protocol))
    gx, gy = formats.read_cifar_pickle(p)
    np.testing.assert_array_equal(gx.reshape(6, 3072), x)
    np.testing.assert_array_equal(gy, [1, 2, 3, 4, 5, 6])


def test_cifar100_pickle_bytes_keys(tmp_path):
    x = _images(3, 32, 32, 3).reshape(3, 3072)
    p = tmp_path / "train"
    p.write_bytes(pickle.dumps({b"data": x, b"fine_labels": [99, 0, 5], b"coarse_labels": [1, 2, 3]}))
    gx, gy = formats.read_cifar_pickle(p, "fine_labels", 100)
    np.testing.assert_array_equal(gy, [99, 0, 5])
    assert gx.shape == (3, 3, 32, 32)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilOpen:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("wrap", ["top", "in_dict", "object_array", "open"])
def test_malicious_pickle_refused_without_running(tmp_path, wrap):
    marker = tmp_path / "pwned"
    evil = _EvilOpen(str(marker)) if wrap == "open" else _Evil(str(marker))
    if wrap == "top" or wrap == "open":
        obj = evil
    elif wrap == "in_dict":
        obj = {"data": np.zeros((1, 3072), np.uint8), "labels": [evil]}
    else:
        arr = np.empty(1, dtype=object)
        arr[0] = evil
        obj = {"data": arr, "labels": [0]}
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(CorruptDataError, match="data_batch_1") as e:
        formats.read_cifar_pickle(p)
    assert "refused" in str(e.value)
    assert not marker.exists()


def test_pickle_codecs_encode_only_latin1(tmp_path):
    import _codecs

    class _Enc:
        def __reduce__(self):
            return (_codecs.encode, ("x", "rot13"))

    p = tmp_path / "batch"
    p.write_bytes(pickle.dumps({"data": _Enc()}, protocol=2))
    with pytest.raises(CorruptDataError, match="refused"):
        formats.safe_unpickle(p)


def test_pickle_garbage_and_truncated(tmp_path):
    p = tmp_path / "test_batch"
    p.write_bytes(b"this is not a pickle")
    with pytest.raises(CorruptDataError, match="test_batch"):
        formats.read_cifar_pickle(p)
    x = _images(2, 32, 32, 3).reshape(2, 3072)
    blob = pickle.dumps({"data": x, "labels": [0, 1]})
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptDataError, match="test_batch"):
        formats.read_cifar_pickle(p)
    p.write_bytes(pickle.dumps({"data": x, "labels": [0]}))
    with pytest.raises(CorruptDataError, match="2 images but 1 labels"):
        formats.read_cifar_pickle(p)
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CorruptDataError, match="dict"):
        formats.read_cifar_pickle(p)


# --------------------------------------------------------------------------- SVHN


def _write_svhn(path, n: int, seed: int = 0):
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
    y[0, 0] = 10
    sio.savemat(str(path), {"X": x, "y": y})
    return x, y


def test_svhn_mat_roundtrip(tmp_path):
    p = tmp_path / "train_32x32.mat"
    x, y = _write_svhn(p, 5)
    gx, gy = formats.read_svhn_mat(p)
    assert gx.shape == (5, 3, 32, 32) and gx.dtype == np.uint8
    np.testing.assert_array_equal(gx, x.transpose(3, 2, 0, 1))
    want = y.reshape(-1).astype(np.int64)
    want[want == 10] = 0
    np.testing.assert_array_equal(gy, want)
    assert gy[0] == 0


def test_svhn_truncated_and_no_scipy(tmp_path, monkeypatch):
    p = tmp_path / "test_32x32.mat"
    _write_svhn(p, 4)
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptDataError, match="test_32x32.mat"):
        formats.read_svhn_mat(p)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataError, match="pip install scipy"):
        formats.read_svhn_mat(p)


# --------------------------------------------------------------------------- image folder


def test_image_folder_listing_and_decode(tmp_path):
    from PIL import Image

    for cls, n in (("dog", 1), ("cat", 2)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (12, 10), (10 * i, 100, 200)).save(tmp_path / "train" / cls / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    samples, classes = formats.list_image_folder(tmp_path / "train")
    assert classes == ["cat", "dog"]
    assert [c for _, c in samples] == [0, 0, 1]
    img = formats.load_image(samples[0][0], 8)
    assert img.shape == (3, 8, 8) and img.dtype == np.uint8
    assert tuple(img[:, 4, 4]) == (0, 100, 200)
    bad = tmp_path / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8not really a jpeg")
    with pytest.raises(CorruptDataError, match="broken.jpg"):
        formats.load_image(bad, 8)
    with pytest.raises(DataError, match="unknown_cls|do not exist"):
        (tmp_path / "val" / "unknown_cls").mkdir(parents=True)
        formats.list_image_folder(tmp_path / "val", classes)
