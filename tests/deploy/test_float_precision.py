"""Engine(float_precision=...): the real-valued convs in fp32 (default), as three bf16 products, or in plain bf16."""

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


def _real_dense(engine):
    return [impl for _, _, impl, _ in engine._ops if isinstance(impl, _FloatLinear) and impl.op["op"] == "dense"]


def test_unknown_float_precision_is_refused(bireal_file):
    with pytest.raises(ValueError, match="float_precision"):
        Engine(bireal_file, float_precision="fp16")


def test_fp32_is_the_default(bireal_file):
    engine = Engine(bireal_file, threads=1)
    assert engine.float_precision == "fp32" and all(c.float_precision == "fp32" for c in _real_convs(engine))


@pytest.fixture(params=["native", "portable twin"])
def bf16_unit(request, monkeypatch):
    """The engine's bf16 modes on this CPU's own bf16 unit (AMX-BF16; skipped without it), and on
    the kernels' portable bf16 twin (the engine told AMX is there; the C++ "auto" path, which checks
    the CPU itself, then runs the portable code with the same roundings) — so every CPU runs them."""
    if request.param == "native":
        if not kernels.amx_bf16_usable():
            pytest.skip("needs AMX-BF16")
    else:
        monkeypatch.setattr(kernels, "amx_bf16_usable", lambda: True)
    return request.param


def test_bf16_precisions_run_the_real_convs_close_to_fp32(bireal_file, bf16_unit):
    """Each real conv alone: bf16x3 within ≈ 2⁻¹⁶ per product of fp32, bf16 within ≈ 2⁻⁸ and
    coarser than bf16x3; the whole network runs in each."""
    rng = np.random.default_rng(0)
    engines = {p: Engine(bireal_file, threads=2, float_precision=p) for p in ("fp32", "bf16x3", "bf16")}
    convs = {p: _real_convs(e) for p, e in engines.items()}
    for p in ("bf16x3", "bf16"):
        assert engines[p].float_precision == p
        assert convs[p] and all(c.float_precision == p for c in convs[p])  # the stem and the 1×1 shortcuts
    for c32, c3, c1 in zip(convs["fp32"], convs["bf16x3"], convs["bf16"]):
        x = rng.standard_normal((2, 9, 9, c32.op["in_channels"])).astype(np.float32)
        y32, y3, y1 = (c(x, 1).copy() for c in (c32, c3, c1))
        scale = np.abs(y32).max() + 1
        d3, d1 = np.abs(y3 - y32).max(), np.abs(y1 - y32).max()
        assert 0 < d3 <= 1e-3 * scale and 0 < d1 <= 5e-2 * scale and d3 < d1
    xb = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    for e in engines.values():
        out = e.run(xb)
        assert out.shape == (4, 10) and np.isfinite(out).all()


def test_bf16x3_without_amx_warns_and_stays_fp32(bireal_file, monkeypatch):
    """bf16x3 needs AMX: on AVX512_BF16 alone its three products cost more than fp32's one FMA."""
    monkeypatch.setattr(kernels, "amx_bf16_usable", lambda: False)
    monkeypatch.setattr(kernels, "avx512_bf16_usable", lambda: True)
    with pytest.warns(RuntimeWarning, match="AMX-BF16"):
        engine = Engine(bireal_file, float_precision="bf16x3")
    assert engine.float_precision == "fp32" and all(c.float_precision == "fp32" for c in _real_convs(engine))


def test_bf16_without_amx_or_avx512_bf16_warns_and_stays_fp32(bireal_file, monkeypatch):
    monkeypatch.setattr(kernels, "amx_bf16_usable", lambda: False)
    monkeypatch.setattr(kernels, "avx512_bf16_usable", lambda: False)
    with pytest.warns(RuntimeWarning, match="AMX-BF16, or AVX512_BF16"):
        engine = Engine(bireal_file, float_precision="bf16")
    assert engine.float_precision == "fp32" and all(c.float_precision == "fp32" for c in _real_convs(engine))


@pytest.mark.skipif(not kernels.avx512_bf16_usable(), reason="needs AVX512_BF16")
def test_bf16_runs_on_avx512_bf16_without_amx(bireal_file, monkeypatch):
    """A CPU with VDPBF16PS and no AMX (Zen 4): the engine's bf16 convs run there, each within
    ≈ 2⁻⁸ per product of fp32, and the network's logits stay close to the fp32 engine's."""
    monkeypatch.setattr(kernels, "amx_bf16_usable", lambda: False)
    rng = np.random.default_rng(0)
    e32, e16 = Engine(bireal_file, threads=2), Engine(bireal_file, threads=2, float_precision="bf16")
    assert e16.float_precision == "bf16"
    c32, c16 = _real_convs(e32), _real_convs(e16)
    assert c16 and all(c.float_precision == "bf16" for c in c16)
    for a, b in zip(c32, c16):
        x = rng.standard_normal((2, 9, 9, a.op["in_channels"])).astype(np.float32)
        y32, y16 = a(x, 1).copy(), b(x, 1).copy()
        assert 0 < np.abs(y16 - y32).max() <= 5e-2 * (np.abs(y32).max() + 1)
    # the classifier stays fp32 (batch-1 rows are one block of the bf16 kernel: one thread)
    assert [d.float_precision for d in _real_dense(e16)] == ["fp32"]
    xb = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    out32, out16 = e32.run(xb), e16.run(xb)
    assert out16.shape == (4, 10) and np.isfinite(out16).all()
    with kernels.use_isa("avx2"), pytest.warns(RuntimeWarning, match="AVX512_BF16"):
        # kernels held below AVX-512: no VDPBF16PS either (the kernel's "auto" would take the slow twin)
        assert Engine(bireal_file, float_precision="bf16").float_precision == "fp32"
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


@pytest.mark.skipif(not (kernels.amx_bf16_usable() or kernels.avx512_bf16_usable()),
                    reason="needs AMX-BF16 or AVX512_BF16")
def test_bench_times_each_requested_float_precision():
    from onebit.analysis.bench import end_to_end

    lines = []
    res = end_to_end(1, 1, (1,), ("bireal-resnet18",), echo=lines.append, float_precisions=("bf16x3", "bf16"))
    row = res["results"][0]
    assert res["bf16_unit"] == ("AMX-BF16" if kernels.amx_bf16_usable() else "AVX512_BF16")
    timed = ("bf16x3", "bf16") if kernels.amx_bf16_usable() else ("bf16",)
    if not kernels.amx_bf16_usable():
        assert any("bf16x3 engine is not timed" in line for line in lines) and "engine_bf16x3_ms" not in row
    for p in timed:
        assert row[f"engine_{p}_ms"] > 0 and row[f"vs_fp32_{p}"] > 0 and 0 <= row[f"{p}_argmax_agreement"] <= 1
        assert any(f"engine {p}" in line for line in lines)


@pytest.mark.parametrize("unit", ["native", "portable twin"])
def test_bf16_stem_pools_its_own_output_bit_for_bit(tmp_path, unit, monkeypatch):
    """ImageNet stem (7×7/2 conv → BN → 3×3/2 max-pool): in bf16 the conv pools its own output (one
    step fewer, the 112×112 map never written) and the logits equal the unfused engine's exactly;
    fp32 keeps the two ops. (On this CPU's bf16 unit, skipped without one, and on the portable twin.)"""
    if unit == "native" and kernels.bf16_unit("bf16") is None:
        pytest.skip("needs AMX-BF16 or AVX512_BF16")
    if unit != "native":
        monkeypatch.setattr(kernels, "amx_bf16_usable", lambda: True)
    torch.manual_seed(0)
    model = models.create("bireal-resnet18", num_classes=10, width=8).eval()
    path = tmp_path / "stem.onebit"
    export(model, path, torch.zeros(1, 3, 64, 64), preprocess={"normalize": "pm1"})
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 64, 64)).astype(np.uint8)
    for threads in (1, 2):
        fused = Engine(path, threads=threads, float_precision="bf16")
        plain = Engine(path, threads=threads, float_precision="bf16")
        plain.fuse_conv_pool = False
        plain._build_plan()
        assert len(fused._plan) == len(plain._plan) - 1
        for batch in (x[:1], x):
            assert np.array_equal(fused.run(batch), plain.run(batch))
    e32 = Engine(path, threads=2)
    assert not e32._conv_pool_pairs()
