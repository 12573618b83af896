"""Engine(float_precision=...): the real-valued convs in fp32 (default) or as three bf16 products."""

import warnings

import numpy as np
import pytest
import torch

from onebit import kernels, models
from onebit.deploy import Engine, export
from onebit.deploy.engine import _FloatLinear


@pytest.fixture(scope="module")
def bireal_file(tmp_path_factory):
    torch.manual_seed(0)
    model = models.create("bireal-resnet18-cifar", num_classes=10, width=8).eval()
    path = tmp_path_factory.mktemp("fp") / "bireal.onebit"
    export(model, path, torch.zeros(1, 3, 32, 32), preprocess={"normalize": "meanstd"})
    return path


def _real_convs(engine):
    return [impl for _, _, impl, _ in engine._ops if isinstance(impl, _FloatLinear) and impl.op["op"] == "conv"]


def test_unknown_float_precision_is_refused(bireal_file):
    with pytest.raises(ValueError, match="float_precision"):
        Engine(bireal_file, float_precision="fp16")


def test_fp32_is_the_default(bireal_file):
    engine = Engine(bireal_file, threads=1)
    assert engine.float_precision == "fp32" and not any(c.bf16x3 for c in _real_convs(engine))


@pytest.mark.skipif(not kernels.amx_bf16_usable(), reason="needs AMX-BF16")
def test_bf16x3_runs_the_real_convs_close_to_fp32(bireal_file):
    rng = np.random.default_rng(0)
    fp32 = Engine(bireal_file, threads=2)
    x3 = Engine(bireal_file, threads=2, float_precision="bf16x3")
    assert x3.float_precision == "bf16x3"
    convs32, convs3 = _real_convs(fp32), _real_convs(x3)
    assert convs3 and all(c.bf16x3 for c in convs3)  # the stem and the 1×1 shortcuts
    for a, b in zip(convs32, convs3):  # each real conv alone: within ≈ 2⁻¹⁶ per product of fp32
        cin = a.op["in_channels"]
        x = rng.standard_normal((2, 9, 9, cin)).astype(np.float32)
        ya, yb = a(x, 1).copy(), b(x, 1).copy()
        assert ya.shape == yb.shape
        assert np.abs(ya - yb).max() <= 1e-3 * (np.abs(ya).max() + 1) and np.abs(ya - yb).max() > 0
    xb = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    out = x3.run(xb)
    assert out.shape == (4, 10) and np.isfinite(out).all()


def test_bf16x3_without_amx_warns_and_stays_fp32(bireal_file, monkeypatch):
    monkeypatch.setattr(kernels, "amx_bf16_usable", lambda: False)
    with pytest.warns(RuntimeWarning, match="AMX-BF16"):
        engine = Engine(bireal_file, float_precision="bf16x3")
    assert engine.float_precision == "fp32" and not any(c.bf16x3 for c in _real_convs(engine))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Engine(bireal_file)  # the default never warns


def test_cli_run_float_precision(bireal_file, tmp_path):
    from typer.testing import CliRunner

    from onebit.cli.main import app

    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32))
    runner = CliRunner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no AMX-BF16: the engine warns and runs fp32
        res = runner.invoke(app, ["run", str(bireal_file), "--input", str(x), "--threads", "1",
                                  "--float-precision", "bf16x3", "--output", str(tmp_path / "y.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "y.npy").shape == (3, 10)
    bad = runner.invoke(app, ["run", str(bireal_file), "--input", str(x), "--float-precision", "fp8"])
    assert bad.exit_code != 0 and "float_precision" in str(bad.exception) + bad.output
