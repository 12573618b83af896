"""The engine's int8 path for binary-weight networks (BWN / BWNH): exact weights, rounded activations."""

import numpy as np
import pytest
import torch

from onebit import models
from onebit.deploy import Engine, export
from onebit.deploy.engine import _FloatLinear, _im2col


@pytest.fixture
def vgg(tmp_path):
    torch.manual_seed(0)
    model = models.create("vgg9-bwn", width=0.25).eval()
    path = tmp_path / "vgg.onebit"
    export(model, path, torch.randn(2, 3, 32, 32))
    return path


def test_int8_layers_are_the_binary_weight_layers(vgg):
    eng = Engine(vgg, threads=1)
    assert len(eng.int8_layers()) == 7  # 5 binary-weight convs + 2 binary-weight FCs; first/last stay real


def test_int8_layer_equals_its_numpy_emulation(vgg):
    """One conv: q = clip(rint(x/s)), exact integer sums with the ±1 weights, then fl(fl(acc·s·mult)+bias)."""
    eng = Engine(vgg, threads=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    eng.quantize_int8(x)
    impl = next(i for _, dst, i, _ in eng._ops if isinstance(i, _FloatLinear) and i.int8 is not None and i.op["op"] == "conv")
    _, s, fused, bias, unsigned = impl.int8
    assert unsigned  # the inputs of VGG's binary-weight convs follow a ReLU: uint8
    h = np.abs(rng.standard_normal((2, 32, 32, impl.op["in_channels"])).astype(np.float32))
    q = np.clip(np.rint(h * (np.float32(1) / s)), 0, 255).astype(np.int64)
    cols = _im2col(np.pad(q, ((0, 0), (1, 1), (1, 1), (0, 0))), 3, 3, 1, 1)
    acc = cols @ impl.w4.reshape(impl.w4.shape[0], -1).astype(np.int64).T
    expect = (acc.astype(np.float32) * fused) + bias
    assert np.array_equal(impl(h, 2), expect)


def test_int8_engine_close_to_float_engine(vgg):
    eng = Engine(vgg, threads=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    y_float = eng.run(x)
    scales = eng.quantize_int8(x[:32])
    assert len(scales) == 7 and all(s > 0 for s in scales.values())
    y_int8 = eng.run(x)
    assert not np.array_equal(y_int8, y_float)  # the int8 path really ran (8-bit activations round)
    assert np.abs(y_int8 - y_float).max() <= 0.1 * np.abs(y_float).max()
    assert (y_int8.argmax(1) == y_float.argmax(1)).mean() >= 0.9
    eng.quantize_int8(None)  # back to float
    assert np.array_equal(eng.run(x), y_float)


def test_int8_needs_binary_weight_layers_and_valid_input(vgg, tmp_path):
    eng = Engine(vgg, threads=1)
    with pytest.raises(ValueError, match="takes"):
        eng.quantize_int8(np.zeros((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match="percentile"):
        eng.quantize_int8(np.zeros((2, 3, 32, 32), np.float32), percentile=0)
    model = models.create("bnn-mlp", hidden=16).eval()  # sign activations: nothing to run in int8
    export(model, tmp_path / "mlp.onebit", torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="no layer with binary weights and real activations"):
        Engine(tmp_path / "mlp.onebit").quantize_int8(np.zeros((2, 1, 28, 28), np.float32))


def test_cli_run_int8_on_meanstd_model(tmp_path):
    """`onebit run --int8`: mean/std preprocessing from the data registry, calibration on training images."""
    from typer.testing import CliRunner

    from onebit.cli.main import app

    root = tmp_path / "data"
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        y = rng.integers(0, 10, 20).astype(np.uint8)
        x = rng.integers(0, 256, (20, 3 * 32 * 32)).astype(np.uint8)
        (folder / name).write_bytes(np.concatenate([y[:, None], x], 1).tobytes())
    torch.manual_seed(0)
    model = models.create("vgg9-bwn", width=0.125).eval()
    path = tmp_path / "m.onebit"
    export(model, path, torch.randn(2, 3, 32, 32), preprocess={"normalize": "meanstd", "data": "cifar10"})
    runner = CliRunner()
    plain = runner.invoke(app, ["run", str(path), "--data-root", str(root), "--threads", "1"])
    assert plain.exit_code == 0, plain.output
    res = runner.invoke(app, ["run", str(path), "--data-root", str(root), "--int8", "--calib", "10", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "7 binary-weight layers calibrated on 10 training images" in res.output
    assert "int8" in res.output and "accuracy" in res.output


def _unfused(eng):
    """The same engine with every ReLU run as its own op and nothing transformed in place."""
    eng._fused_away = set()
    for _, _, impl, _ in eng._ops:
        impl.fuse_relu = False
        impl.inplace = False
        impl.reuse_output = False
    eng._build_plan()  # the forward pass's steps follow the fusions
    return eng


@pytest.mark.parametrize("int8", [False, True])
def test_fused_relus_and_reused_buffers_change_nothing(vgg, int8):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 32, 32)).astype(np.float32)
    fast, plain = Engine(vgg, threads=2), Engine(vgg, threads=2)
    if int8:
        fast.quantize_int8(x)
        plain.quantize_int8(x)
    assert fast._fused_away, "VGG-9's ReLUs should be fused"
    _unfused(plain)
    assert np.array_equal(fast.run(x), plain.run(x))


@pytest.mark.parametrize("int8", [False, True])
def test_outputs_are_not_overwritten_by_the_next_call(vgg, int8):
    rng = np.random.default_rng(3)
    eng = Engine(vgg, threads=2)
    x1, x2 = (rng.standard_normal((3, 3, 32, 32)).astype(np.float32) for _ in range(2))
    if int8:
        eng.quantize_int8(x1)
    y1 = eng.run(x1)
    keep = y1.copy()
    eng.run(x2)
    assert np.array_equal(y1, keep)


@pytest.mark.parametrize("signed", [False, True])
def test_int8_dense_small_batches_equal_the_gemm_rows(vgg, signed):
    """≤ 4 rows take the dense layers' bit-plane path (8 planes × 1-bit weights on the XNOR
    kernels), larger batches the int8 GEMM: the same integer sums, the same epilogue, bit for bit."""
    from onebit.deploy.engine import BITPLANE_MAX_ROWS

    rng = np.random.default_rng(4)
    eng = Engine(vgg, threads=2)
    eng.quantize_int8(rng.standard_normal((8, 3, 32, 32)).astype(np.float32))
    dense = [i for _, _, i, _ in eng._ops if isinstance(i, _FloatLinear) and i.int8 is not None and i.op["op"] == "dense"]
    assert len(dense) == 2
    for impl in dense:
        w8, s, fused, bias, unsigned = impl.int8
        impl.int8 = (w8, s, fused, bias, not signed)
        k = impl.w4.shape[1]
        x = (rng.standard_normal((BITPLANE_MAX_ROWS + 3, k)) * 100 * s).astype(np.float32)
        if not signed:
            x = np.abs(x)
        batched = impl(x, 2).copy()
        for r in range(len(x)):
            assert np.array_equal(impl(x[r:r + 1], 2)[0], batched[r])
        assert np.array_equal(impl(x[:BITPLANE_MAX_ROWS], 2), batched[:BITPLANE_MAX_ROWS])


def test_a_refused_int8_call_leaves_the_engine_as_it_was(vgg):
    """A call that is refused (bad percentile, bad calibration) changes nothing: int8 stays on."""
    eng = Engine(vgg, threads=1)
    x = np.random.default_rng(2).standard_normal((8, 3, 32, 32)).astype(np.float32)
    eng.quantize_int8(x)
    y_int8 = eng.run(x)
    with pytest.raises(ValueError, match="percentile"):
        eng.quantize_int8(x, percentile=0)
    with pytest.raises(TypeError, match="Engine.quantize_int8 expects a numpy array"):
        eng.quantize_int8(x.tolist())
    with pytest.raises(ValueError, match="takes"):
        eng.quantize_int8(x[:, :2])
    for p in ("50", None, True, np.array([50.0, 60.0])):
        with pytest.raises(ValueError, match="percentile must be a number"):
            eng.quantize_int8(x, percentile=p)
    # an all-zero calibration batch gives layers a zero peak: refused (a scale of 1 would zero them)
    with pytest.raises(ValueError, match=r"is 0 in every sample .* Nothing was changed"):
        eng.quantize_int8(np.zeros_like(x))
    assert np.array_equal(eng.run(x), y_int8)
    fresh = Engine(vgg, threads=1)
    y_float = fresh.run(x)
    with pytest.raises(ValueError, match="is 0 in every sample"):
        fresh.quantize_int8(np.zeros_like(x))
    assert np.array_equal(fresh.run(x), y_float)  # still the float engine


def test_percentile_takes_any_scalar(vgg):
    """A NumPy 0-d array, a NumPy float or a torch scalar is a number like 99.0."""
    x = np.random.default_rng(2).standard_normal((8, 3, 32, 32)).astype(np.float32)
    want = Engine(vgg, threads=1).quantize_int8(x, percentile=99.0)
    for p in (np.asarray(99.0), np.float32(99.0), torch.tensor(99.0), 99):
        assert Engine(vgg, threads=1).quantize_int8(x, percentile=p) == want

