"""BatchLoader / ImageFolderLoader / make_loaders: splits, normalisation, determinism,
augmentation, distributed slices. Offline, tiny data written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import onebit.data as data
from onebit.data import BatchLoader, DataError, formats


def ids_images(n: int, offset: int = 0) -> np.ndarray:
    """(n, 1, 28, 28) uint8 whose pixels [0,0] / [0,1] encode the image id (offset + i)."""
    rng = np.random.default_rng(n + offset)
    x = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    x[:, 0, 0, 0] = ids // 256
    x[:, 0, 0, 1] = ids % 256
    return x


def decode_ids(x: torch.Tensor) -> list[int]:
    """Inverse of ids_images for batches normalised with 'unit'."""
    raw = (x[:, 0, 0, :2] * 255).round().to(torch.int64)
    return (raw[:, 0] * 256 + raw[:, 1]).tolist()


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    """Fake MNIST: 100 train images with ids 0..99 and 20 test images with ids 1000..1019."""
    root = tmp_path / "mnist"
    root.mkdir()
    for split, n, off in (("train", 100, 0), ("t10k", 20, 1000)):
        formats.write_idx(root / f"{split}-images-idx3-ubyte.gz", ids_images(n, off))
        formats.write_idx(root / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return root


def all_ids(loader) -> list[int]:
    return [i for x, _ in loader for i in decode_ids(x)]


# --------------------------------------------------------------------------- splits


def test_val_split_is_last_images_and_disjoint(mnist_root):
    L = data.make_loaders("mnist", root=mnist_root, batch_size=16, val_size=30, normalize="unit")
    assert L.info.name == "mnist"
    assert sorted(all_ids(L.val)) == list(range(70, 100))
    assert all_ids(L.val) == list(range(70, 100))  # in order
    train = all_ids(L.train)
    assert sorted(train) == list(range(70))
    assert not set(train) & set(all_ids(L.val))
    assert all_ids(L.test) == list(range(1000, 1020))
    assert L.train.num_samples == 70 and len(L.train) == 5  # ceil(70/16), drop_last False
    sizes = [len(y) for _, y in L.train]
    assert sizes == [16, 16, 16, 16, 6]


def test_val_size_fraction_zero_and_too_big(mnist_root):
    L = data.make_loaders("mnist", root=mnist_root, batch_size=10, val_size=0.25, normalize="unit")
    assert L.val.num_samples == 25 and L.train.num_samples == 75
    assert all_ids(L.val) == list(range(75, 100))
    L0 = data.make_loaders("mnist", root=mnist_root, batch_size=10, val_size=0)
    assert L0.val is None and L0.train.num_samples == 100
    with pytest.raises(DataError, match=r"val_size=100 takes 100 of the 100 .*--val-size N"):
        data.make_loaders("mnist", root=mnist_root, batch_size=10, val_size=100)
    with pytest.raises(ValueError):
        data.make_loaders("mnist", root=mnist_root, batch_size=10, val_size=-1)


def test_limit(mnist_root):
    L = data.make_loaders("mnist", root=mnist_root, batch_size=8, val_size=30, limit=20, normalize="unit")
    assert sorted(all_ids(L.train)) == list(range(20))
    assert all_ids(L.val) == list(range(70, 74))
    assert all_ids(L.test) == list(range(1000, 1004))


def test_eval_batch_size_and_labels(mnist_root):
    L = data.make_loaders("mnist", root=mnist_root, batch_size=8, val_size=10, eval_batch_size=7)
    assert [len(y) for _, y in L.test] == [7, 7, 6]
    for x, y in L.test:
        assert y.dtype == torch.int64 and x.dtype == torch.float32
    ys = torch.cat([y for _, y in L.test])
    assert ys.tolist() == [i % 10 for i in range(20)]


# --------------------------------------------------------------------------- normalisation


def test_normalize_modes(mnist_root):
    x = np.zeros((4, 1, 2, 2), np.uint8)
    x[:, :, 0, 0] = 255
    x[:, :, 1, 1] = 51
    y = np.zeros(4, np.int64)
    pm1 = next(iter(BatchLoader(x, y, batch_size=4, normalize="pm1")))[0]
    assert pm1.dtype == torch.float32 and pm1.shape == (4, 1, 2, 2)
    assert pm1.min().item() == -1.0 and pm1.max().item() == 1.0
    assert torch.allclose(pm1[0, 0, 1, 1], torch.tensor(51 / 127.5 - 1))
    unit = next(iter(BatchLoader(x, y, batch_size=4, normalize="unit")))[0]
    assert unit.min().item() == 0.0 and unit.max().item() == 1.0
    ms = next(iter(BatchLoader(x, y, batch_size=4, normalize="meanstd", mean=(0.2,), std=(0.5,))))[0]
    assert torch.allclose(ms[0, 0, 1, 1], torch.tensor((0.2 - 0.2) / 0.5), atol=1e-6)
    assert torch.allclose(ms[0, 0, 0, 0], torch.tensor((1 - 0.2) / 0.5))
    with pytest.raises(ValueError):
        BatchLoader(x, y, batch_size=4, normalize="zscore")
    # make_loaders uses the data set's mean / std for "meanstd"
    L = data.make_loaders("mnist", root=mnist_root, batch_size=100, val_size=0, normalize="meanstd")
    xb, _ = next(iter(L.train))
    assert torch.allclose(xb.min(), torch.tensor(-0.1307 / 0.3081), atol=1e-5)
    L = data.make_loaders("mnist", root=mnist_root, batch_size=100, val_size=0, normalize="pm1")
    xb, _ = next(iter(L.train))
    assert xb.min().item() == -1.0 and xb.max().item() == 1.0


# --------------------------------------------------------------------------- determinism


def test_order_is_pure_function_of_seed_and_epoch():
    x, y = ids_images(50), np.zeros(50, np.int64)

    def order(seed: int, epoch: int, fresh: bool = True, loader=None) -> list[int]:
        ld = loader if not fresh else BatchLoader(x, y, batch_size=7, shuffle=True, seed=seed, normalize="unit")
        ld.set_epoch(epoch)
        return all_ids(ld)

    a = order(0, 3)
    assert sorted(a) == list(range(50))
    assert a == order(0, 3)
    used = BatchLoader(x, y, batch_size=7, shuffle=True, seed=0, normalize="unit")
    for e in range(3):
        order(0, e, fresh=False, loader=used)
    assert order(0, 3, fresh=False, loader=used) == a  # resume: no hidden state
    assert a != order(0, 4)
    assert a != order(1, 3)
    assert all_ids(BatchLoader(x, y, batch_size=7, normalize="unit")) == list(range(50))


def test_augmentation_deterministic_shapes_and_changes_pixels():
    x = np.full((32, 3, 8, 8), 255, np.uint8)
    x[:, :, :, :4] = 128  # left half grey, so flips are visible
    y = np.arange(32) % 10
    ld = BatchLoader(x, y, batch_size=10, shuffle=True, augment=True, seed=5, normalize="pm1")
    ld.set_epoch(2)
    batches = list(ld)
    assert [b[0].shape for b in batches] == [(10, 3, 8, 8)] * 3 + [(2, 3, 8, 8)]
    xa = torch.cat([b[0] for b in batches])
    plain = torch.from_numpy(x).float() / 127.5 - 1
    assert not torch.equal(xa, plain)
    # padding is raw 0, i.e. exactly -1 in the pm1 space; values stay in {-1, 128/127.5-1, 1}
    allowed = torch.tensor([-1.0, 128 / 127.5 - 1, 1.0])
    assert torch.isclose(xa.reshape(-1, 1), allowed, atol=1e-6).any(1).all()
    assert (xa == -1).any()
    ld.set_epoch(2)
    again = torch.cat([b[0] for b in ld])
    assert torch.equal(xa, again)
    ld.set_epoch(3)
    assert not torch.equal(xa, torch.cat([b[0] for b in ld]))
    # eval-style loader is never augmented
    assert torch.equal(next(iter(BatchLoader(x, y, batch_size=32)))[0], plain)


def test_flip_without_crop():
    x = np.random.default_rng(0).integers(0, 256, size=(64, 1, 5, 5), dtype=np.uint8)
    ld = BatchLoader(x, np.zeros(64), batch_size=64, shuffle=False, augment=True, pad=0, normalize="unit")
    xa = (next(iter(ld))[0] * 255).round().to(torch.uint8)
    xt = torch.from_numpy(x)
    same = (xa == xt).flatten(1).all(1)
    flipped = (xa == xt.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()
    assert 10 < int(flipped.sum()) < 54  # p = 0.5


def test_augmentation_labels_follow_images():
    x = np.zeros((20, 1, 6, 6), np.uint8)
    for i in range(20):
        x[i] = i * 10
    y = np.arange(20)
    ld = BatchLoader(x, y, batch_size=6, shuffle=True, augment=True, seed=1, normalize="unit", pad=2)
    for xb, yb in ld:
        # the centre 2x2 survives any 2-pixel crop shift
        assert torch.equal((xb[:, 0, 2:4, 2:4] * 255).round().amax((1, 2)).long(), yb * 10)


# --------------------------------------------------------------------------- distributed


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (5, 1), (2, 3)])
def test_rank_slices_disjoint_and_covering(n, world):
    x, y = ids_images(n), np.zeros(n, np.int64)
    seen = []
    for rank in range(world):
        ld = BatchLoader(x, y, batch_size=3, shuffle=True, seed=7, normalize="unit", rank=rank, world_size=world)
        ld.set_epoch(1)
        ids = all_ids(ld)
        assert len(ids) == ld.num_samples and len(ld) == -(-ld.num_samples // 3)
        seen.append(ids)
    flat = [i for s in seen for i in s]
    assert sorted(flat) == list(range(n))  # disjoint and covering
    even = [BatchLoader(x, y, batch_size=3, shuffle=True, seed=7, rank=r, world_size=world, even=True).num_samples
            for r in range(world)]
    assert len(set(even)) == 1 and even[0] == n // world
    with pytest.raises(ValueError):
        BatchLoader(x, y, batch_size=3, rank=world, world_size=world)


def test_make_loaders_shards_only_train(mnist_root):
    parts = [data.make_loaders("mnist", root=mnist_root, batch_size=8, val_size=20, normalize="unit",
                               rank=r, world_size=2, seed=3) for r in range(2)]
    a, b = (all_ids(p.train) for p in parts)
    assert not set(a) & set(b) and sorted(a + b) == list(range(80))
    assert all_ids(parts[0].test) == all_ids(parts[1].test) == list(range(1000, 1020))


# --------------------------------------------------------------------------- image folder


@pytest.fixture
def image_root(tmp_path) -> Path:
    from PIL import Image

    root = tmp_path / "imgs"
    colours = {"cat": [(255, 0, 0), (250, 10, 0)], "dog": [(0, 0, 255)]}
    for split in ("train", "val"):
        for cls, cols in colours.items():
            (root / split / cls).mkdir(parents=True)
            for i, c in enumerate(cols):
                Image.new("RGB", (10 + i, 9), c).save(root / split / cls / f"{i}.png")
    return root


def test_imagefolder_loaders(image_root):
    L = data.make_loaders("imagefolder", root=image_root, batch_size=2, val_size=0, image_size=8, normalize="unit")
    assert L.classes == ["cat", "dog"] and L.info.num_classes == 2 and L.info.image_size == 8
    assert L.val is None and len(L.train) == 2 and L.train.num_samples == 3
    batches = list(L.test)
    assert [tuple(x.shape) for x, _ in batches] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert ys.tolist() == [0, 0, 1] and xs.dtype == torch.float32
    assert xs[0, 0].min() > 0.95 and xs[2, 2].min() > 0.95 and xs[2, 0].max() < 0.05
    L.train.set_epoch(1)
    t1 = [y.tolist() for _, y in L.train]
    L.train.set_epoch(1)
    assert [y.tolist() for _, y in L.train] == t1
    assert sorted(sum(t1, [])) == [0, 0, 1]


def test_imagefolder_val_split_and_augment(image_root):
    L = data.make_loaders("imagefolder", root=image_root, batch_size=4, val_size=1, image_size=6, augment=True,
                          normalize="meanstd", num_workers=2)
    assert L.val.num_samples == 1 and L.train.num_samples == 2
    assert [p.name for p, _ in L.val.samples] == ["1.png"]  # the last image of the largest class
    x, y = next(iter(L.train))
    assert x.shape == (2, 3, 6, 6) and torch.isfinite(x).all()


def test_imagefolder_missing(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="train/<class>"):
        data.make_loaders("imagefolder", root=tmp_path, batch_size=2)


@pytest.mark.parametrize("size", [(40, 30), (30, 64), (256, 320)])
def test_imagefolder_resize_crop_is_the_bi_real_papers(tmp_path, monkeypatch, size):
    """crop="resize": the image resized to short side image_size·256/224, a random image_size
    square of it — in the original's pixels a square of side short·224/256 inside the image, at
    positions that vary; the default stays the random-resized crop (boxes of varying size)."""
    from PIL import Image

    from onebit.data import formats, loaders

    w, h = size
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (w, h), (i, 0, 0)).save(tmp_path / "train" / "a" / f"{i}.png")
    Image.new("RGB", (w, h)).save(tmp_path / "val" / "a" / "0.png")
    boxes = []
    real = formats.load_image

    def spy(path, image_size, crop=None, flip=False, **kw):
        if crop is not None:
            boxes.append(crop(w, h))
        return real(path, image_size, crop=crop, flip=flip, **kw)

    monkeypatch.setattr(formats, "load_image", spy)
    side = round(min(w, h) * 224 / 256)
    for crop, same_side in (("resize", True), ("random_resized", False)):
        boxes.clear()
        L = data.make_loaders("imagefolder", root=tmp_path, batch_size=3, val_size=0, image_size=8, augment=True,
                              crop=crop)
        for epoch in range(6):
            L.train.set_epoch(epoch)
            x, _ = next(iter(L.train))
            assert x.shape == (3, 3, 8, 8)
        assert all(0 <= l and 0 <= t and l + cw <= w and t + ch <= h for l, t, cw, ch in boxes)
        sides = {(cw, ch) for _, _, cw, ch in boxes}
        assert (sides == {(side, side)}) is same_side, (crop, sides)
        if same_side:
            assert len({(l, t) for l, t, _, _ in boxes}) > 1  # a random place, not the centre
    with pytest.raises(ValueError, match="crop must be one of random_resized, resize"):
        loaders.ImageFolderLoader([], batch_size=1, crop="centre")


def test_bi_real_imagenet_recipes_use_the_papers_crop():
    from onebit.methods import Recipe, get_recipe

    assert get_recipe("bireal-resnet18").crop == "resize" and get_recipe("resnet18-float").crop == "random_resized"
    with pytest.raises(ValueError, match="recipe field crop must be one of"):
        Recipe(model="bnn-mlp", data="mnist", crop="centre")
