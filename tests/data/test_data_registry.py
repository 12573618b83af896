"""Data-set table, lookup order, not-found messages, (mocked) downloads and load_arrays. Offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import onebit.data as data
from onebit.data import CorruptDataError, DataError, DataNotFoundError, download, formats, registry

REPO = Path(__file__).resolve().parents[2]
REAL_MNIST = REPO.parent / "shared" / "data" / "mnist"


def write_idx_set(folder: Path, n_train: int = 7, n_test: int = 3, fill: int = 0, gz: bool = True) -> Path:
    """A tiny MNIST-layout folder; every pixel of the first image equals ``fill``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(fill)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[0] = fill
        formats.write_idx(folder / f"{split}-images-idx3-ubyte{ext}", x)
        formats.write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))
    return folder


def write_cifar10_bin(folder: Path, per_batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch)
        formats.write_cifar_bin(folder / f"{name}.bin", x, y)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------- table


def test_names_and_info():
    assert data.names() == ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder"]
    m = data.info("mnist")
    assert (m.num_classes, m.in_channels, m.image_size) == (10, 1, 28)
    assert len(m.mean) == len(m.std) == 1
    c = data.info("cifar100")
    assert (c.num_classes, c.in_channels, c.image_size) == (100, 3, 32)
    assert len(c.mean) == len(c.std) == 3 and all(0 < v < 1 for v in c.mean + c.std)
    assert data.info("CIFAR-10").name == "cifar10"
    for n in data.names():
        assert data.info(n).name == n
    with pytest.raises(DataError) as e:
        data.info("imagenette")
    for n in data.names():
        assert n in str(e.value)


# --------------------------------------------------------------------------- lookup


def test_lookup_order(tmp_path, monkeypatch):
    explicit = write_idx_set(tmp_path / "explicit", fill=1)
    env = write_idx_set(tmp_path / "envroot" / "mnist", fill=2)
    system = write_idx_set(tmp_path / "sys" / "MNIST" / "raw", fill=3)
    monkeypatch.setattr(registry, "system_bases", lambda: [tmp_path / "sys"])
    monkeypatch.setenv("ONEBIT_DATA", str(tmp_path / "envroot"))
    assert data.locate("mnist", root=explicit) == explicit
    assert data.locate("mnist") == env
    assert data.load_arrays("mnist")["train"][0][0].max() == 2
    monkeypatch.delenv("ONEBIT_DATA")
    assert data.locate("mnist") == system
    assert data.load_arrays("mnist")["train"][0][0].max() == 3
    # explicit root that lacks the files falls through to the next place, and says so
    (tmp_path / "nothing-here").mkdir()
    with pytest.warns(UserWarning, match=r"'mnist' is not \(complete\) in the data root .*nothing-here; reading the "
                      r"copy in .*sys/MNIST/raw \(system\)"):
        assert data.locate("mnist", root=tmp_path / "nothing-here") == system
    monkeypatch.setenv("RANK", "1")  # the other processes of a multi-process run stay quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.locate("mnist", root=tmp_path / "nothing-here") == system
    monkeypatch.delenv("RANK")
    # a root that does not exist at all is a mistake (a typo), not a reason to train on another copy
    with pytest.raises(data.DataError, match="data root .*no-such-folder.* does not exist"):
        data.locate("mnist", root=tmp_path / "no-such-folder")
    # explicit root as a parent folder: name variants are tried
    assert data.locate("mnist", root=tmp_path / "envroot") == env


def test_cwd_shared_data_is_a_system_base(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real system_bases
    monkeypatch.setenv("ONEBIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    bases = registry.system_bases()
    assert (tmp_path / "shared" / "data").resolve() in [b.resolve() for b in bases]
    assert Path("/usr/share/datasets") in bases and tmp_path / "cache" in bases


def test_not_found_message(tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    formats.write_idx(partial / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataNotFoundError) as e:
        data.locate("fashion-mnist", root=partial)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-root" in msg and "ONEBIT_DATA" in msg
    assert str(partial) in msg and "missing" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "ONEBIT_NO_DOWNLOAD" in msg
    with pytest.raises(DataNotFoundError) as e:
        data.locate("cifar10", download=False)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in str(e.value)
    assert "download=False" in str(e.value)
    with pytest.raises(DataNotFoundError, match="ossci-datasets"):
        data.load_arrays("mnist")
    with pytest.raises(DataNotFoundError) as e:  # no download exists: none is suggested
        data.locate("imagefolder")
    assert "no download is available" in str(e.value) and "ONEBIT_NO_DOWNLOAD" not in str(e.value)


def test_network_failure_falls_through(monkeypatch):
    monkeypatch.delenv("ONEBIT_NO_DOWNLOAD")
    with pytest.raises(DataNotFoundError) as e:
        data.locate("mnist")
    assert "download failed" in str(e.value) and "network disabled" in str(e.value)


def _fake_server(monkeypatch, files: dict[str, bytes]) -> list[str]:
    calls: list[str] = []

    def fetch(url, out, timeout=10.0):
        calls.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise download.DownloadFailed(f"{url}: 404")
        out.write(files[name])

    monkeypatch.setattr(download, "fetch_url", fetch)
    monkeypatch.delenv("ONEBIT_NO_DOWNLOAD")
    return calls


def test_download_verified_and_cached(tmp_path, monkeypatch):
    src = write_idx_set(tmp_path / "upstream", n_train=5, n_test=2, fill=9)
    blobs = {p.name: p.read_bytes() for p in src.iterdir()}
    ds = data.info("mnist")
    remotes = tuple(dataclasses.replace(r, md5=hashlib.md5(blobs[r.filename]).hexdigest()) for r in ds.downloads)
    monkeypatch.setitem(registry._TABLE, "mnist", dataclasses.replace(ds, downloads=remotes))
    calls = _fake_server(monkeypatch, blobs)
    (tmp_path / "empty-root").mkdir()
    with pytest.warns(UserWarning, match=r"not \(complete\) in the data root .*empty-root; reading the copy in "
                      r".*cache/mnist \(download\)"):  # a named root without the data: the download says so
        where = data.locate("mnist", root=tmp_path / "empty-root")
    assert where == tmp_path / "cache" / "mnist"
    assert len(calls) == 4 and all(c.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for c in calls)
    assert not list(where.glob("*.part"))
    arrays = data.load_arrays("mnist")
    assert arrays["train"][0].shape == (5, 1, 28, 28) and arrays["test"][1].shape == (2,)
    # second call: found in the cache (a system base), nothing fetched
    monkeypatch.setattr(registry, "system_bases", lambda: [tmp_path / "cache"])
    assert data.locate("mnist") == where and len(calls) == 4


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    src = write_idx_set(tmp_path / "upstream")
    calls = _fake_server(monkeypatch, {p.name: p.read_bytes() for p in src.iterdir()})
    with pytest.raises(CorruptDataError, match="MD5") as e:
        data.locate("mnist")  # real MD5s never match the fake files
    assert "train-images-idx3-ubyte.gz" in str(e.value)
    assert len(calls) == 2  # both mirrors tried
    assert not (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not list((tmp_path / "cache" / "mnist").glob("*"))


def test_download_cifar_tar_extracts_safely(tmp_path, monkeypatch):
    src = tmp_path / "upstream"
    x, y = write_cifar10_bin(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=f"cifar-10-batches-bin/{p.name}")
        meta = b"airplane\n"
        ti = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        ti.size = len(meta)
        tar.addfile(ti, io.BytesIO(meta))
        evil = tarfile.TarInfo("../../escape.bin")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    blob = buf.getvalue()
    ds = data.info("cifar10")
    remote = dataclasses.replace(ds.downloads[0], md5=hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(registry._TABLE, "cifar10", dataclasses.replace(ds, downloads=(remote,)))
    _fake_server(monkeypatch, {"cifar-10-binary.tar.gz": blob})
    arrays = data.load_arrays("cifar10")
    np.testing.assert_array_equal(arrays["train"][0], x[:10])
    np.testing.assert_array_equal(arrays["test"][1], y[10:])
    assert not (tmp_path / "escape.bin").exists() and not (tmp_path / "cache" / "escape.bin").exists()
    assert not (tmp_path / "cache" / "cifar10" / "cifar-10-binary.tar.gz").exists()


# --------------------------------------------------------------------------- load_arrays


def test_load_arrays_mnist_layouts(tmp_path):
    write_idx_set(tmp_path / "a" / "MNIST" / "raw", gz=False)
    out = data.load_arrays("mnist", root=tmp_path / "a")
    x, y = out["train"]
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.uint8
    assert y.dtype == np.int64 and list(y) == [0, 1, 2, 3, 4, 5, 6]
    assert out["test"][0].shape == (3, 1, 28, 28)


def test_load_arrays_image_label_count_mismatch(tmp_path):
    folder = write_idx_set(tmp_path / "m")
    formats.write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(CorruptDataError) as e:
        data.load_arrays("mnist", root=folder)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value) and "t10k-labels-idx1-ubyte.gz" in str(e.value)


def test_load_arrays_cifar10_bin(tmp_path):
    x, y = write_cifar10_bin(tmp_path / "cifar-10-batches-bin")
    out = data.load_arrays("cifar10", root=tmp_path)
    np.testing.assert_array_equal(out["train"][0], x[:10])
    np.testing.assert_array_equal(out["train"][1], y[:10])
    np.testing.assert_array_equal(out["test"][0], x[10:])
    assert out["train"][0].shape == (10, 3, 32, 32) and out["train"][1].dtype == np.int64


def test_cifar10_needs_all_batches(tmp_path):
    write_cifar10_bin(tmp_path / "c")
    (tmp_path / "c" / "data_batch_4.bin").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_4.bin"):
        data.load_arrays("cifar10", root=tmp_path / "c")


def test_cifar10_bad_batch_size_reported(tmp_path):
    write_cifar10_bin(tmp_path / "c")
    p = tmp_path / "c" / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(CorruptDataError, match="data_batch_3.bin"):
        data.load_arrays("cifar10", root=tmp_path / "c")


def test_load_arrays_cifar100_bin_and_python(tmp_path):
    rng = np.random.default_rng(2)
    xb = rng.integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    formats.write_cifar_bin(folder / "train.bin", xb, (np.array([0, 1, 2]), np.array([97, 98, 99])))
    formats.write_cifar_bin(folder / "test.bin", xb[:1], (np.array([5]), np.array([42])))
    out = data.load_arrays("cifar100", root=tmp_path)
    assert list(out["train"][1]) == [97, 98, 99] and list(out["test"][1]) == [42]
    np.testing.assert_array_equal(out["train"][0], xb)

    py = tmp_path / "py" / "cifar-100-python"
    py.mkdir(parents=True)
    for split, n in (("train", 3), ("test", 1)):
        d = {"data": xb[:n].reshape(n, 3072), "fine_labels": [7] * n, "coarse_labels": [1] * n}
        (py / split).write_bytes(pickle.dumps(d, protocol=2))
    out = data.load_arrays("cifar100", root=tmp_path / "py")
    assert list(out["train"][1]) == [7, 7, 7]
    np.testing.assert_array_equal(out["train"][0], xb)


def test_load_arrays_cifar10_python(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), "labels": [3, 4]}
        (folder / name).write_bytes(pickle.dumps(d))
    out = data.load_arrays("cifar10", root=tmp_path)
    assert out["train"][0].shape == (10, 3, 32, 32) and list(out["test"][1]) == [3, 4]


def test_load_arrays_svhn(tmp_path):
    sio = pytest.importorskip("scipy.io")
    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for split, n in (("train", 4), ("test", 2)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        sio.savemat(str(folder / f"{split}_32x32.mat"), {"X": x, "y": np.full((n, 1), 10, np.uint8)})
    out = data.load_arrays("svhn", root=tmp_path)
    assert out["train"][0].shape == (4, 3, 32, 32) and list(out["train"][1]) == [0, 0, 0, 0]


def test_imagefolder_not_loadable_as_arrays(tmp_path):
    with pytest.raises(DataError, match="make_loaders"):
        data.load_arrays("imagefolder", root=tmp_path)


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="no ../shared/data/mnist benchmark copy")
def test_real_mnist():
    out = data.load_arrays("mnist", root=REAL_MNIST, download=False)
    xtr, ytr = out["train"]
    xte, yte = out["test"]
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert len(ytr) == 60000 and len(yte) == 10000
    assert np.bincount(yte, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(xtr.mean() / 255 - 0.1307) < 1e-3


def _constant_idx_set(folder: Path, n_train: int, value: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", 2)):
        formats.write_idx(folder / f"{split}-images-idx3-ubyte", np.full((n, 28, 28), value, np.uint8))
        formats.write_idx(folder / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_another_data_set_under_the_same_file_names_is_refused(tmp_path, monkeypatch):
    """MNIST and Fashion-MNIST share file names, shapes and sizes: a full-size training set whose
    mean pixel is not the registered one is named as what it looks like, never loaded as the other."""
    monkeypatch.setitem(registry._SIZES, "mnist", (10, 2))  # "full size" for these 10-image sets
    monkeypatch.setitem(registry._SIZES, "fashion-mnist", (10, 2))
    mnist_like = _constant_idx_set(tmp_path / "m", 10, round(0.1307 * 255))  # MNIST's mean pixel
    assert data.load_arrays("mnist", root=mnist_like)["train"][0].shape == (10, 1, 28, 28)
    with pytest.raises(CorruptDataError, match=r"are not fashion-mnist: their mean pixel is \(0\.1294\), "
                       r"fashion-mnist's is \(0\.2860\); they look like mnist"):
        data.load_arrays("fashion-mnist", root=mnist_like)
    odd = _constant_idx_set(tmp_path / "o", 10, 200)
    with pytest.raises(CorruptDataError, match=r"are not mnist: their mean pixel is \(0\.7843\), mnist's is "
                       r"\(0\.1307\) \(is --data-root"):
        data.load_arrays("mnist", root=odd)
    small = _constant_idx_set(tmp_path / "s", 7, 200)  # not the official size: a subset or a fixture
    assert data.load_arrays("mnist", root=small)["train"][0].shape == (7, 1, 28, 28)


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="no ../shared/data/mnist benchmark copy")
def test_real_mnist_is_not_fashion_mnist():
    with pytest.raises(CorruptDataError, match="they look like mnist"):
        data.load_arrays("fashion-mnist", root=REAL_MNIST, download=False)
