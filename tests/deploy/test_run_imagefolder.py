"""`onebit run` scores a model trained on an image folder (ImageNet-style `DIR/train/<class>/*`,
`DIR/val/<class>/*`) on its validation images: decoded a batch at a time with the same evaluation
transform as training's loader, no PyTorch in the engine path, `--limit` keeping every class."""

import re

import numpy as np
import pytest
import torch

from onebit import models
from onebit.cli.main import main as cli
from onebit.data import formats
from onebit.data.arrays import decode_images, image_folder_split, spread_indices
from onebit.data.loaders import make_loaders

pytest.importorskip("onebit.kernels")
PIL = pytest.importorskip("PIL.Image")

CLASSES = ("ant", "bee", "cat")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes, 4 training and 3 validation images each, odd sizes, class-coloured."""
    root = tmp_path_factory.mktemp("imgf")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 3)):
        for k, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
                img = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
                img[..., k] += 120
                PIL.fromarray(img).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def exported(folder, tmp_path_factory):
    from onebit.deploy import export

    torch.manual_seed(1)
    model = _trained_like(models.create("binary-resnet18", num_classes=3, width=8).eval())
    path = tmp_path_factory.mktemp("m") / "r18.onebit"
    export(model, path, torch.zeros(1, 3, 224, 224), preprocess={"data": "imagefolder", "normalize": "meanstd"})
    return model, path


def _trained_like(model):
    """BN statistics of a trained net (an untrained one's mean 0, var 1 puts outputs on sign ties)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked += 1
    return model


def _torch_accuracy(model, samples):
    x, y = decode_images(samples, 224)
    xf = (x.astype(np.float32) / np.float32(255) - np.float32(MEAN).reshape(1, 3, 1, 1)) / \
        np.float32(STD).reshape(1, 3, 1, 1)
    with torch.no_grad():
        pred = model(torch.from_numpy(xf)).argmax(1).numpy()
    return 100 * float((pred == y).mean())


def _printed_accuracy(capsys) -> tuple[float, int]:
    out = capsys.readouterr().out
    m = re.search(r"accuracy ([0-9.]+)% .* (\d+) images in", out)
    assert m, out
    return float(m.group(1)), int(m.group(2))


def test_the_engine_path_decodes_as_the_training_loader_does(folder):
    samples, classes = image_folder_split("test", folder)
    assert classes == list(CLASSES) and len(samples) == 9
    x, y = decode_images(samples, 224)
    lo = make_loaders("imagefolder", root=folder, batch_size=9, val_size=0, normalize="unit")
    xb, yb = next(iter(lo.test))
    assert torch.equal(torch.from_numpy(y), yb)
    assert torch.equal(torch.from_numpy(x.astype(np.float32) / np.float32(255)), xb)


def test_run_scores_an_image_folder_model_as_pytorch_does(folder, exported, capsys):
    model, path = exported
    samples, _ = image_folder_split("test", folder)
    want = _torch_accuracy(model, samples)
    assert cli(["run", str(path), "--data-root", str(folder), "--batch-size", "4", "--threads", "1"]) == 0
    acc, n = _printed_accuracy(capsys)
    assert n == 9 and acc == pytest.approx(round(want, 2), abs=1e-9)


def test_run_limit_on_an_image_folder_keeps_every_class(folder, exported, capsys):
    model, path = exported
    samples, _ = image_folder_split("test", folder, limit=4)
    assert sorted({c for _, c in samples}) == [0, 1, 2]
    assert list(spread_indices(9, 4)) == [0, 3, 5, 8]
    assert cli(["run", str(path), "--data-root", str(folder), "--limit", "4", "--threads", "1"]) == 0
    acc, n = _printed_accuracy(capsys)
    assert n == 4 and acc == pytest.approx(round(_torch_accuracy(model, samples), 2), abs=1e-9)


def test_run_decodes_at_the_models_own_size_and_checks_other_data_sets(folder, tmp_path, cli_error,
                                                                      make_tiny_mnist, capsys):
    from onebit.deploy import export

    model = _trained_like(models.create("binary-resnet18", num_classes=3, width=8, image_size=64).eval())
    path = tmp_path / "r18-64.onebit"
    export(model, path, torch.zeros(1, 3, 64, 64), preprocess={"data": "imagefolder", "normalize": "meanstd"})
    assert cli(["run", str(path), "--data-root", str(folder), "--threads", "1"]) == 0  # decoded at 64×64
    capsys.readouterr()
    err = cli_error(["run", str(path), "--data", "mnist", "--data-root", str(make_tiny_mnist())])
    assert "has images of shape (1, 28, 28)" in err and "(3, 64, 64)" in err


def test_export_names_fresh_batchnorms_when_ties_break_verification(tmp_path):
    """An untrained model's BN (mean 0, var 1) puts binary-conv outputs exactly on sign ties, where
    PyTorch fp32 and fp64 disagree too: the refusal says so instead of blaming forward()."""
    from onebit.deploy import export
    from onebit.deploy.errors import DeployError

    torch.manual_seed(1)
    model = models.create("binary-resnet18", num_classes=3, width=8, image_size=32).eval()
    with pytest.raises(DeployError, match="still hold their initial statistics"):
        export(model, tmp_path / "fresh.onebit", torch.zeros(1, 3, 32, 32))
    assert not (tmp_path / "fresh.onebit").exists()
    export(_trained_like(model), tmp_path / "ok.onebit", torch.zeros(1, 3, 32, 32))
