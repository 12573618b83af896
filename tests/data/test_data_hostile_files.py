"""Hostile or damaged data files end in a CorruptDataError naming the file — never a raw exception,
silently wrong data, or a huge allocation from a few bytes (the cases a fuzzing review found)."""

from __future__ import annotations

import pickle
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from onebit.data import CorruptDataError, formats


def _pickle_file(tmp_path: Path, payload: bytes) -> Path:
    p = tmp_path / "data_batch_1"
    p.write_bytes(payload)
    return p


def test_idx_sizes_that_overflow_int64_are_corrupt(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(struct.pack(">IIII", 2051, 2**31, 2**31, 4))  # 2^64 bytes declared, none given
    with pytest.raises(CorruptDataError, match="more than any data set here"):
        formats.read_idx_images(p)


def test_a_gzip_bomb_is_not_decompressed_past_the_declared_size(tmp_path, monkeypatch):
    """A small .gz holding a valid header for 10 labels and then 64 MiB of zeros: the stream stops
    one byte past the declared payload (it used to be decompressed whole before the size check)."""
    import gzip

    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(struct.pack(">II", 2049, 10) + bytes(10 + (64 << 20)), compresslevel=1))
    assert p.stat().st_size < 1 << 20
    asked = []
    real = gzip.GzipFile.read

    def spy(self, size=-1):
        asked.append(size)
        return real(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", spy)
    with pytest.raises(CorruptDataError, match="has trailing bytes"):
        formats.read_idx_labels(p)
    assert asked and all(0 <= n <= 11 for n in asked), asked


def test_a_pickle_cannot_call_the_array_constructor(tmp_path):
    """ndarray(shape) would be uninitialised memory; ndarray(shape, dtype, buf, 0, (0, 0)) a huge
    array over one byte. Only the reconstruction path NumPy itself pickles with is allowed."""
    uninit = b"\x80\x02}(U\x04datacnumpy\nndarray\n(K\x02M\x00\x0c\x86U\x02u1tRU\x06labels](K\x01K\x02eu."
    with pytest.raises(CorruptDataError, match=r"ndarray\(\.\.\.\) called directly"):
        formats.read_cifar_pickle(_pickle_file(tmp_path, uninit))
    real = {"data": np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072), "labels": [1, 2]}
    for protocol in (2, 4, 5):  # what NumPy writes: still read, as plain arrays
        x, y = formats.read_cifar_pickle(_pickle_file(tmp_path, pickle.dumps(real, protocol=protocol)))
        assert type(x) is np.ndarray and np.array_equal(x.reshape(2, -1), real["data"]) and list(y) == [1, 2]


@pytest.mark.parametrize("labels, msg", [
    ([1.9, 2.7], "is not a list of integers"),
    (["3", "4"], "is not a list of integers"),
    ([True, False], "is not a list of integers"),
    ([[1, 2]], "is not a list of integers"),
    ([2**70, 1], "not a list of integers"),
    (np.array([1.0, 2.0]), "is not a list of integers"),
])
def test_cifar_pickle_labels_must_be_integers(tmp_path, labels, msg):
    d = {"data": np.zeros((len(labels) if not isinstance(labels, list) or len(labels) != 1 else 1, 3072), np.uint8),
         "labels": labels}
    with pytest.raises(CorruptDataError, match=msg):
        formats.read_cifar_pickle(_pickle_file(tmp_path, pickle.dumps(d, protocol=2)))


def test_a_label_list_bomb_is_refused_at_once(tmp_path):
    """Nested lists sharing one another (24 deep: 2^24 leaves) cost seconds and a GB to flatten."""
    inner: list = [1, 2]
    for _ in range(24):
        inner = [inner, inner]
    payload = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": inner}, protocol=2)
    assert len(payload) < 10_000
    t0 = time.perf_counter()
    with pytest.raises(CorruptDataError, match="is not a list of integers"):
        formats.read_cifar_pickle(_pickle_file(tmp_path, payload))
    assert time.perf_counter() - t0 < 1.0


def test_an_overflowing_pickle_length_is_corrupt(tmp_path):
    with pytest.raises(CorruptDataError, match="not a readable pickle"):
        formats.read_cifar_pickle(_pickle_file(tmp_path, b"\x80\x04\x8e" + b"\xff" * 8))


@pytest.mark.parametrize("y, msg", [
    (np.array([[1.7], [2.0]]), "label 1.7 is not an SVHN label"),
    (np.array([[0], [3]], np.uint8), "label 0 is not an SVHN label"),
    (np.array([[11], [3]], np.uint8), "label 11 is not an SVHN label"),
    (np.array([[1 + 2j], [3]]), "should be a numeric array of labels"),
])
def test_svhn_labels_must_be_1_to_10(tmp_path, y, msg):
    sio = pytest.importorskip("scipy.io")
    p = tmp_path / "train_32x32.mat"
    sio.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": y})
    with pytest.raises(CorruptDataError, match=msg):
        formats.read_svhn_mat(p)


def test_a_cell_array_of_svhn_labels_is_corrupt(tmp_path):
    sio = pytest.importorskip("scipy.io")
    p = tmp_path / "train_32x32.mat"
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0], cells[1, 0] = np.array([1, 2]), np.array([3])
    sio.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": cells})
    with pytest.raises(CorruptDataError, match="should be a numeric array of labels"):
        formats.read_svhn_mat(p)


def _mat_variables(raw: bytes) -> list[tuple[int, int]]:
    """(offset, length with padding) of each top-level element of a little-endian MAT v5 file."""
    out, off = [], 128
    while off + 8 <= len(raw):
        _, n = struct.unpack_from("<II", raw, off)
        out.append((off, 8 + n + (-n % 8)))
        off += 8 + n + (-n % 8)
    return out


@pytest.mark.parametrize("mtype", [0, 8, 11, 14, 15, 20, 255])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_mat_file_whose_data_tag_would_crash_scipy_is_corrupt(tmp_path, mtype, compressed):
    """SciPy 1.17.1's loadmat segfaults (it cannot be caught) on a numeric variable whose data tag
    holds one of these types; the reader refuses such a file before SciPy sees it."""
    sio = pytest.importorskip("scipy.io")
    p = tmp_path / "train_32x32.mat"
    sio.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [2]], np.uint8)},
                do_compression=False)
    raw = bytearray(p.read_bytes())
    (x_off, x_len), _y = _mat_variables(bytes(raw))  # X, then y
    # X's sub-elements: flags (16 bytes), dims (8 + 16), name "X" (small format, 8), then the data tag
    data_tag = x_off + 8 + 16 + 24 + 8
    assert struct.unpack_from("<I", raw, data_tag)[0] == 2  # miUINT8: the layout this test assumes
    raw[data_tag] = mtype
    if compressed:  # the same variable inside a miCOMPRESSED element, as MATLAB v7 writes it
        body = zlib.compress(bytes(raw[x_off:x_off + x_len]))
        raw = raw[:x_off] + struct.pack("<II", 15, len(body)) + body + raw[x_off + x_len:]
    p.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError, match=f"element type {mtype}, which is not a MATLAB numeric type"):
        formats.read_svhn_mat(p)


@pytest.mark.parametrize("compressed", [False, True])
def test_the_mat_check_passes_every_numeric_type(tmp_path, compressed):
    sio = pytest.importorskip("scipy.io")
    p = tmp_path / "v.mat"
    arrays = {f"a{i}": np.arange(6, dtype=t).reshape(2, 3) for i, t in enumerate(
        [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64])}
    arrays["c"] = np.array([[1 + 2j, 3]])
    arrays["s"] = np.array([[5]], np.uint8)  # one byte: a small data element
    arrays["t"] = "text"
    sio.savemat(str(p), arrays, do_compression=compressed)
    formats._check_mat_v5(p)  # no complaint about a valid file
    p.write_bytes(p.read_bytes()[:-9])  # cut into the last variable
    with pytest.raises(CorruptDataError, match="past the end of the file"):
        formats._check_mat_v5(p)


def test_a_decompression_bomb_image_is_corrupt(tmp_path):
    from PIL import Image

    p = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(p)  # 400 M pixels in a few KB: over PIL's 2 × 89 M limit
    with pytest.raises(CorruptDataError, match="DecompressionBombError"):
        formats.load_image(p, 8)


def test_a_tall_thin_image_is_not_resized_to_gigabytes(tmp_path, monkeypatch):
    """The evaluation transform used to resize the short side to 256 first: 1×65535 → 256×16.7 M
    pixels (GBs, minutes). Every resize now targets the output size."""
    from PIL import Image

    p = tmp_path / "thin.png"
    Image.new("RGB", (1, 65535), (200, 10, 10)).save(p)
    sizes = []
    real = Image.Image.resize

    def spy(self, size, *a, **k):
        sizes.append(tuple(size))
        return real(self, size, *a, **k)

    monkeypatch.setattr(Image.Image, "resize", spy)
    x = formats.load_image(p, 224)
    assert sizes and max(w * h for w, h in sizes) <= 224 * 224, sizes
    assert x.shape == (3, 224, 224)
    assert abs(int(x[0].mean()) - 200) <= 2 and abs(int(x[1].mean()) - 10) <= 2


def test_the_evaluation_crop_is_the_centre_of_the_resized_image(tmp_path):
    """Box resize in the original's pixels equals resize-then-centre-crop (up to interpolation)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(img).save(p)
    got = formats.load_image(p, 16).astype(np.int32)
    short = round(16 * 256 / 224)  # 18: resize 60×90 → 18×27, centre 16×16
    ref_im = Image.fromarray(img).resize((27, 18), Image.BILINEAR)
    ref = np.asarray(ref_im)[1:17, 5:21].transpose(2, 0, 1).astype(np.int32)
    assert short == 18 and np.abs(got - ref).mean() < 12  # same content, box sampling differs slightly
