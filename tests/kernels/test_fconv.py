"""The float conv/GEMM of the real-valued layers: AVX-512, AVX2 + FMA and portable paths against float64."""

import numpy as np
import pytest

from onebit import kernels

PATHS = kernels.float_paths()  # 'portable', and 'avx2' / 'avx512' where this CPU runs them



def _random_case(rng, n, h, w, c, cout, k):
    """Weights (C_out, kh, kw, C_in), an NHWC input and a per-channel scale and bias, in that draw order."""
    kh, kw = (k, k) if isinstance(k, int) else k
    wt = rng.standard_normal((cout, kh, kw, c)).astype(np.float32)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    scale = rng.random(cout).astype(np.float32) + 0.5
    bias = rng.standard_normal(cout).astype(np.float32)
    return kh, kw, wt, x, scale, bias


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n,h,w,c,cout,k,s,p", [
    (1, 7, 9, 3, 5, 3, 1, 1),      # RGB first layer, N not a multiple of 32
    (3, 8, 8, 70, 33, 3, 2, 1),    # stride 2, odd channels, batch > 1
    (2, 11, 11, 3, 64, 7, 2, 3),   # a 7×7/2 stem
    (5, 1, 1, 129, 10, 1, 1, 0),   # a dense layer as a 1×1 conv
    (1, 1, 1, 200, 257, 1, 1, 0),  # batch 1, 9 column panels: the threads split the columns
    (2, 1, 1, 300, 90, 1, 1, 0),   # 2 rows, 96 padded columns: a 64-column tile, then a 32-column one
    (3, 1, 1, 50, 90, 1, 1, 0),    # 3 rows: the same
    (6, 1, 1, 37, 70, 1, 1, 0),    # 6 rows
    (12, 1, 1, 33, 40, 1, 1, 0),   # 8 rows and a 4-row tail (AVX2: two 6-row tiles)
    (11, 1, 1, 600, 45, 1, 1, 0),  # K over two 256-deep chunks; AVX2: 6 rows and a 5-row tail
    (4, 1, 1, 70, 33, 1, 1, 0),    # AVX2: a 4-row tile alone
    (1, 7, 7, 16, 40, 1, 1, 0),    # a 7×7 map: 6 blocks of 8 rows and 1 row
    (1, 9, 7, 8, 9, (3, 1), (2, 1), (1, 0)),
])
def test_fconv_matches_float64(path, n, h, w, c, cout, k, s, p, rng):
    kh, kw, wt, x, scale, bias = _random_case(rng, n, h, w, c, cout, k)
    prepared = kernels.prepare_float_weights(wt.reshape(cout, -1))
    want = kernels.reference.fconv2d_f32(x, wt, k, s, p, scale=scale, bias=bias)
    got = kernels.fconv2d_f32(x, prepared, k, s, p, scale=scale, bias=bias, path=path, threads=2)
    assert got.shape == want.shape and got.dtype == np.float32
    tol = 1e-5 * np.sqrt(kh * kw * c) * (np.abs(want).max() + 1)
    assert np.abs(got - want).max() <= tol
    res = rng.standard_normal(want.shape).astype(np.float32)
    out = np.empty(want.shape, np.float32)
    got = kernels.fconv2d_f32(x, prepared, k, s, p, scale=scale, bias=bias, residual=res, relu=True, path=path,
                              threads=1, out=out)
    assert got is not None and np.shares_memory(got, out)
    want = kernels.reference.fconv2d_f32(x, wt, k, s, p, scale=scale, bias=bias, residual=res, relu=True)
    assert np.abs(out - want).max() <= tol and (out >= 0).all()


@pytest.mark.parametrize("path", PATHS)
def test_fconv_row_results_do_not_depend_on_the_batch(path, rng):
    """Each output is one k-ordered sum: a sample's logits are the same bits alone or in any batch
    (the tail tiles of 1-7 rows and the 8-row tiles compute a row identically)."""
    cout, k = 300, 513
    wt = rng.standard_normal((cout, k)).astype(np.float32)
    x = rng.standard_normal((13, 1, 1, k)).astype(np.float32)
    prepared = kernels.prepare_float_weights(wt)
    batch = kernels.fconv2d_f32(x, prepared, 1, path=path, threads=2)
    for n in (1, 2, 3, 5, 7, 8, 9):
        part = kernels.fconv2d_f32(x[:n], prepared, 1, path=path, threads=1)
        assert np.array_equal(part, batch[:n]), n


def test_fconv_simd_paths_give_the_same_bits(rng):
    """AVX2 and AVX-512 both sum in k order with one FMA per term: the same bits, any tile shape."""
    if not {"avx2", "avx512"} <= set(PATHS):
        pytest.skip("needs both the AVX2 and the AVX-512 float paths")
    for n, h, w, c, cout, k, s, p in [(2, 11, 11, 3, 64, 7, 2, 3), (13, 1, 1, 513, 300, 1, 1, 0),
                                      (3, 8, 8, 70, 33, 3, 2, 1)]:
        _, _, wt, x, scale, bias = _random_case(rng, n, h, w, c, cout, k)
        prepared = kernels.prepare_float_weights(wt.reshape(cout, -1))
        a, b = (kernels.fconv2d_f32(x, prepared, k, s, p, scale=scale, bias=bias, path=q, threads=2)
                for q in ("avx2", "avx512"))
        assert np.array_equal(a, b)


def test_fconv_auto_follows_the_active_isa_path(rng):
    """path='auto' runs the float path of the kernels' active ISA (avx512 → AVX-512, avx2 → AVX2 + FMA,
    portable → the twin): its bits equal that path's, and the portable twin's differ from the FMA paths'."""
    _, _, wt, x, scale, bias = _random_case(rng, 2, 9, 9, 40, 70, 3)
    prepared = kernels.prepare_float_weights(wt.reshape(70, -1))
    run = lambda path: kernels.fconv2d_f32(x, prepared, 3, 1, 1, scale=scale, bias=bias, path=path)  # noqa: E731
    for isa in kernels.isa_paths():
        want = isa if isa in PATHS else "portable"
        with kernels.use_isa(isa):
            assert np.array_equal(run("auto"), run(want)), isa
    if len(PATHS) > 1:  # the twin multiplies and adds apart: it differs somewhere in 2·81·70 outputs
        assert not np.array_equal(run("portable"), run(PATHS[-1]))


def test_fconv_bad_inputs(rng):
    prepared = kernels.prepare_float_weights(np.ones((4, 27), np.float32))
    x = np.zeros((1, 5, 5, 3), np.float32)
    with pytest.raises(ValueError, match="K = 27"):
        kernels.fconv2d_f32(np.zeros((1, 5, 5, 4), np.float32), prepared, 3)
    with pytest.raises(ValueError, match="out"):
        kernels.fconv2d_f32(x, prepared, 3, padding=1, out=np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="path"):
        kernels.fconv2d_f32(x, prepared, 3, path="gpu")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("n,h,w,c,k,s,p,ceil", [
    (2, 8, 8, 5, 2, 2, 0, False),
    (1, 9, 7, 70, 3, 2, 1, False),   # Bi-Real / ResNet stem max-pool
    (3, 7, 7, 3, 2, 2, 0, True),     # ceil mode: a last window that hangs over the edge
    (1, 5, 6, 17, (3, 2), (2, 1), (1, 0), True),
    (2, 15, 13, 64, 3, 2, 1, False),  # exactly one 64-channel register block
    (1, 6, 6, 130, 2, 2, 0, False),   # two blocks and a 2-channel masked tail
])
def test_pool2d_equals_the_numpy_twin(kind, n, h, w, c, k, s, p, ceil, rng, isa):
    """Every ISA path (the AVX-512 rows and the portable twin) gives the NumPy twin's bits."""
    from onebit.deploy.engine import _pool

    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    want = _pool(x, kind, pair(k), pair(s), pair(p), ceil)
    got = kernels.pool2d(x, kind, k, s, p, ceil_mode=ceil, threads=2)
    assert got.shape == want.shape and np.array_equal(got, want)


def test_float_convs_name_the_weight_preparation():
    x, raw = np.zeros((1, 5, 5, 4), np.float32), np.zeros((3, 36), np.float32)
    with pytest.raises(TypeError, match=r"prepare_float_weights\(w\) \(the core's FloatWeights\), got ndarray"):
        kernels.fconv2d_f32(x, raw, 3)
    for f in (kernels.fconv2d_bf16, kernels.fconv2d_bf16x3, kernels.fconv2d_pool):
        with pytest.raises(TypeError, match=r"prepare_float_weights\(w, bf16x3=True\)"):
            f(x, raw, 3)


def test_pool2d_bad_inputs():
    with pytest.raises(ValueError, match="kind"):
        kernels.pool2d(np.zeros((1, 4, 4, 1), np.float32), "min", 2)
    with pytest.raises(ValueError, match="half the kernel"):
        kernels.pool2d(np.zeros((1, 4, 4, 1), np.float32), "max", 2, 1, 2)
    for k, st, p in ((0, None, 0), (2, 0, 0), ((2, 0), None, 0), (2, 1, -1)):  # was a ZeroDivisionError
        with pytest.raises(ValueError, match="kernel and stride >= 1 and padding >= 0"):
            kernels.pool2d(np.zeros((1, 4, 4, 1), np.float32), "avg", k, st, p)


# ---- bf16x3: the float conv as three bf16 products (AMX-BF16, AVX512_BF16, portable twin) ----

BF16_PATHS = (["portable"] + (["amx"] if kernels.amx_bf16_usable() else [])
              + (["avx512_bf16"] if kernels.avx512_bf16_usable() else []))


def test_bf16_rounding_is_round_to_nearest_even_and_halves_keep_16_bits(rng):
    import torch

    v = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-6, 6, 10_000)).astype(np.float32)
    ties = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)], np.float32)  # exactly halfway: to even
    v = np.concatenate([v, ties])
    want = torch.from_numpy(v).to(torch.bfloat16).float().numpy()
    assert np.array_equal(kernels.reference.to_bf16(v), want)
    hi, lo = kernels.reference.bf16_halves(v)
    assert np.all(np.abs(v.astype(np.float64) - hi - lo) <= 2.0 ** -16 * np.abs(v))


@pytest.mark.parametrize("path", BF16_PATHS)
@pytest.mark.parametrize("n,h,w,c,cout,k,s,p", [
    (2, 13, 11, 3, 37, 7, 2, 3),   # a 7×7/2 stem, C_out not a multiple of 32, batch > 1
    (1, 9, 9, 5, 64, 3, 1, 1),     # K = 45: K padded to 64
    (3, 8, 7, 33, 70, 1, 2, 0),    # a strided 1×1 shortcut, odd channels
    (1, 3, 40, 2, 3, (3, 1), (1, 2), (1, 0)),  # 40 pixels: a partial block of 32
    (2, 6, 9, 32, 20, 2, 1, 0),    # kw·C = 64: whole 32-value moves in the gather, no tail
    (1, 5, 5, 19, 131, 1, 1, 0),   # 25 pixels (not a multiple of the 4- or 6-row tiles), 131 → 160 columns
])
def test_fconv_bf16x3_matches_its_reference_and_float(path, n, h, w, c, cout, k, s, p, rng):
    kh, kw, wt, x, scale, bias = _random_case(rng, n, h, w, c, cout, k)
    res = rng.standard_normal((n, *kernels.reference.fconv2d_f32(x[:1], wt, k, s, p).shape[1:])).astype(np.float32)
    prepared = kernels.prepare_float_weights(wt.reshape(cout, -1), bf16x3=True)
    assert prepared.bf16x3
    got = kernels.fconv2d_bf16x3(x, prepared, k, s, p, scale=scale, bias=bias, residual=res, relu=True,
                                 path=path, threads=2)
    split = kernels.reference.fconv2d_bf16x3(x, wt, k, s, p, scale=scale, bias=bias, residual=res, relu=True)
    exact = kernels.reference.fconv2d_f32(x, wt, k, s, p, scale=scale, bias=bias, residual=res, relu=True)
    # error budget per output: Σ|x|·|w|·|scale| (+ the |bias| and |residual| terms)
    mag = kernels.reference.fconv2d_f32(np.abs(x), np.abs(wt), k, s, p, scale=scale) + np.abs(bias) + np.abs(res) + 1
    assert got.shape == exact.shape and got.dtype == np.float32 and (got >= 0).all()
    assert np.all(np.abs(got - split) <= 1e-6 * mag)          # the split products, float accumulation
    assert np.all(np.abs(got - exact) <= 4 * 2.0 ** -16 * mag)  # ≈ 2⁻¹⁶ per product vs the exact conv
    assert np.abs(got - exact).max() > 0  # not the fp32 kernel under another name


@pytest.mark.parametrize("path", BF16_PATHS)
@pytest.mark.parametrize("n,h,w,c,cout,k,s,p", [
    (2, 13, 11, 3, 37, 7, 2, 3),   # a 7×7/2 stem, C_out not a multiple of 32, batch > 1
    (3, 8, 7, 33, 70, 1, 2, 0),    # a strided 1×1 shortcut, odd channels
    (1, 3, 40, 2, 3, (3, 1), (1, 2), (1, 0)),  # a partial block of 32
    (2, 5, 5, 19, 131, 1, 1, 0),   # 50 pixels: a block of 18 rows (6-row tiles), 160 columns
])
def test_fconv_bf16_is_the_conv_of_the_rounded_operands(path, n, h, w, c, cout, k, s, p, rng):
    kh, kw, wt, x, scale, bias = _random_case(rng, n, h, w, c, cout, k)
    prepared = kernels.prepare_float_weights(wt.reshape(cout, -1), bf16x3=True)
    got = kernels.fconv2d_bf16(x, prepared, k, s, p, scale=scale, bias=bias, relu=True, path=path, threads=2)
    want = kernels.reference.fconv2d_bf16(x, wt, k, s, p, scale=scale, bias=bias, relu=True)
    exact = kernels.reference.fconv2d_f32(x, wt, k, s, p, scale=scale, bias=bias, relu=True)
    mag = kernels.reference.fconv2d_f32(np.abs(x), np.abs(wt), k, s, p, scale=scale) + np.abs(bias) + 1
    assert got.shape == exact.shape and got.dtype == np.float32
    assert np.all(np.abs(got - want) <= 1e-6 * mag)           # bf16 products, float accumulation
    assert np.all(np.abs(got - exact) <= 2 * 2.0 ** -8 * mag)  # ≈ 2⁻⁸ per product vs the exact conv
    three = kernels.fconv2d_bf16x3(x, prepared, k, s, p, scale=scale, bias=bias, relu=True, path=path)
    assert np.abs(got - exact).max() > 8 * np.abs(three - exact).max()  # one product, not three


def test_fconv_bf16x3_bad_inputs():
    w = np.ones((4, 27), np.float32)
    x = np.zeros((1, 5, 5, 3), np.float32)
    with pytest.raises(ValueError, match="bf16x3=True"):
        kernels.fconv2d_bf16x3(x, kernels.prepare_float_weights(w), 3)
    prepared = kernels.prepare_float_weights(w, bf16x3=True)
    with pytest.raises(ValueError, match="path"):
        kernels.fconv2d_bf16x3(x, prepared, 3, path="avx512")
    if not kernels.amx_bf16_usable():
        with pytest.raises(ValueError, match="AMX-BF16"):
            kernels.fconv2d_bf16x3(x, prepared, 3, path="amx")
    if not kernels.avx512_bf16_usable():
        with pytest.raises(ValueError, match="AVX512_BF16"):
            kernels.fconv2d_bf16(x, prepared, 3, path="avx512_bf16")
    with pytest.raises(ValueError, match="NaN"):
        kernels.prepare_float_weights(np.full((2, 3), np.nan, np.float32), bf16x3=True)


def test_float_convs_take_an_empty_batch(rng):
    w = rng.standard_normal((4, 27)).astype(np.float32)
    x = np.zeros((0, 5, 5, 3), np.float32)
    assert kernels.fconv2d_f32(x, kernels.prepare_float_weights(w), 3, 1, 1).shape == (0, 5, 5, 4)
    for path in BF16_PATHS:
        prepared = kernels.prepare_float_weights(w, bf16x3=True)
        assert kernels.fconv2d_bf16x3(x, prepared, 3, 1, 1, path=path).shape == (0, 5, 5, 4)
        assert kernels.fconv2d_bf16(x, prepared, 3, 1, 1, path=path).shape == (0, 5, 5, 4)


def _pool2d_sequential(x: np.ndarray, kind: str, k: int, s: int, p: int) -> np.ndarray:
    """The float pool's exact semantics, tap by tap in window order (y, then x), NHWC: max keeps its
    accumulator unless it is < the tap (``std::max(acc, v)``: a NaN tap is skipped, the first of
    ±0.0 is kept), starting from −Inf; avg sums in float64 over the taps inside the map (padding not
    counted) and rounds once to float32."""
    N, H, W, C = x.shape
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    out = np.empty((N, OH, OW, C), np.float32)
    for oy in range(OH):
        for ox in range(OW):
            ys = range(max(oy * s - p, 0), min(oy * s - p + k, H))
            xs = range(max(ox * s - p, 0), min(ox * s - p + k, W))
            if kind == "max":
                acc = np.full((N, C), -np.inf, np.float32)
                for y in ys:
                    for xx in xs:
                        v = x[:, y, xx]
                        acc = np.where(acc < v, v, acc)
            else:
                acc = np.zeros((N, C), np.float64)
                with np.errstate(invalid="ignore"):  # Inf − Inf = NaN, as in C++
                    for y in ys:
                        for xx in xs:
                            acc = acc + x[:, y, xx].astype(np.float64)
                acc = (acc / (len(ys) * len(xs))).astype(np.float32)
            out[:, oy, ox] = acc
    return out


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d_nan_inf_and_signed_zero_bit_for_bit(kind, rng):
    """Every ISA path of the float pool (the AVX-512 rows where the CPU has them, the portable twin
    everywhere) gives the sequential reference's bits on NaN (max skips it, as std::max(acc, v)
    does; avg propagates it), ±Inf and −0.0."""
    x = rng.standard_normal((2, 9, 9, 70)).astype(np.float32)
    for value, p in ((np.nan, 0.1), (np.inf, 0.03), (-np.inf, 0.03), (-0.0, 0.05), (0.0, 0.05)):
        x[rng.random(x.shape) < p] = value
    want = _pool2d_sequential(x, kind, 3, 2, 1)
    if kind == "max":  # the cases are there: both zeros as outputs, no NaN out of a max
        zeros = np.signbit(want[want == 0])
        assert zeros.any() and not zeros.all() and not np.isnan(want).any()
    else:
        assert np.isnan(want).any()
    assert np.isinf(want).any()
    for path in kernels.isa_paths():
        with kernels.use_isa(path):
            got = kernels.pool2d(x, kind, 3, 2, 1, threads=2)
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg=path)
        np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32), err_msg=path)


def _bf16_paths():
    paths = ["portable"]
    if kernels.avx512_bf16_usable():
        paths.append("avx512_bf16")
    if kernels.amx_bf16_usable():
        paths.append("amx")
    return paths


@pytest.mark.parametrize("path", _bf16_paths())
@pytest.mark.parametrize("precision", ["bf16", "bf16x3"])
@pytest.mark.parametrize("n,h,w,c,co,k,s,p,pool,pk,ps,pp,ceil", [
    (1, 30, 30, 3, 64, 7, 2, 3, "max", 3, 2, 1, False),    # a ResNet stem: conv → BN → 3×3/2 max-pool
    (2, 17, 15, 5, 70, 3, 2, 1, "max", 3, 2, 1, False),    # batch 2, C_out not a multiple of 64
    (3, 9, 11, 4, 33, 3, 1, 1, "avg", 2, 2, 0, True),      # ceil mode: the last window hangs over
    (1, 20, 19, 8, 130, 1, 1, 0, "max", (3, 2), (3, 1), (1, 0), True),
])
def test_fconv2d_pool_equals_the_conv_then_the_pool(path, precision, n, h, w, c, co, k, s, p, pool, pk, ps, pp, ceil,
                                                    rng):
    """The fused conv + pool (bands of conv rows pooled from a per-thread buffer) gives exactly what
    the conv followed by pool2d gives, on every bf16 path and thread count."""
    if precision == "bf16x3" and path == "avx512_bf16":
        pytest.skip("bf16x3 runs on AMX or the portable twin")
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((co, k * k * c)).astype(np.float32)
    pw = kernels.prepare_float_weights(wt, bf16x3=True)
    scale, bias = rng.standard_normal(co).astype(np.float32), rng.standard_normal(co).astype(np.float32)
    conv = kernels.fconv2d_bf16 if precision == "bf16" else kernels.fconv2d_bf16x3
    for threads in (1, 2, 3):
        y = conv(x, pw, k, s, p, scale=scale, bias=bias, relu=True, path=path, threads=threads)
        want = kernels.pool2d(y, pool, pk, ps, pp, ceil_mode=ceil, threads=threads)
        got = kernels.fconv2d_pool(x, pw, k, s, p, pool=pool, pool_kernel=pk, pool_stride=ps, pool_padding=pp,
                                   ceil_mode=ceil, precision=precision, scale=scale, bias=bias, relu=True,
                                   path=path, threads=threads)
        assert got.shape == want.shape and np.array_equal(got, want)


def test_fconv2d_pool_bad_inputs(rng):
    x = rng.standard_normal((1, 8, 8, 3)).astype(np.float32)
    pw = kernels.prepare_float_weights(rng.standard_normal((16, 27)).astype(np.float32), bf16x3=True)
    with pytest.raises(ValueError, match="precision"):
        kernels.fconv2d_pool(x, pw, 3, 1, 1, precision="fp32")
    with pytest.raises(ValueError, match="pool must be"):
        kernels.fconv2d_pool(x, pw, 3, 1, 1, pool="min")
    with pytest.raises(ValueError, match="half the kernel"):
        kernels.fconv2d_pool(x, pw, 3, 1, 1, pool_kernel=2, pool_padding=2)
    with pytest.raises(ValueError, match="bf16"):  # the core refuses a fused pool on the fp32 conv
        kernels._core.fconv2d_f32(x, pw, [3, 3], [1, 1], [1, 1], pool=(True, [2, 2], [2, 2], [0, 0], [4, 4]))
    out = np.zeros((1, 8, 8, 16), np.float32)  # the pooled shape is (1, 4, 4, 16)
    with pytest.raises(ValueError, match="out"):
        kernels.fconv2d_pool(x, pw, 3, 1, 1, pool_kernel=2, out=out)


def _overlapping(shape_in, shape_out, shift):
    """x and out as views of one buffer, out starting ``shift`` floats into x (a partial overlap)."""
    n_in, n_out = int(np.prod(shape_in)), int(np.prod(shape_out))
    buf = np.zeros(max(n_in, shift + n_out), np.float32)
    return buf[:n_in].reshape(shape_in), buf[shift:shift + n_out].reshape(shape_out)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_float_conv_refuses_an_out_that_overlaps_x_or_residual(precision, rng):
    """Writing the output over a part of the input would corrupt the conv while it runs: an ``out``
    that shares any byte with ``x`` or ``residual`` is refused, not only the identical array."""
    pw = kernels.prepare_float_weights(rng.standard_normal((4, 27)).astype(np.float32), bf16x3=True)
    conv = kernels.fconv2d_f32 if precision == "fp32" else kernels.fconv2d_bf16
    x, out = _overlapping((1, 5, 5, 3), (1, 5, 5, 4), shift=7)
    with pytest.raises(ValueError, match="overlap"):
        conv(x, pw, 3, padding=1, out=out)
    res, out = _overlapping((1, 5, 5, 4), (1, 5, 5, 4), shift=3)
    with pytest.raises(ValueError, match="overlap"):
        conv(np.zeros((1, 5, 5, 3), np.float32), pw, 3, padding=1, residual=res, out=out)
    x, out = _overlapping((1, 5, 5, 3), (1, 5, 5, 4), shift=75)  # adjacent, disjoint: allowed
    assert conv(x, pw, 3, padding=1, out=out) is out


def test_pool2d_refuses_an_out_that_overlaps_x():
    x, out = _overlapping((1, 4, 4, 2), (1, 2, 2, 2), shift=5)
    with pytest.raises(ValueError, match="overlap"):
        kernels.pool2d(x, "max", 2, out=out)


def test_edge_geometries_are_errors_or_empty_not_crashes(rng):
    """An empty batch through the fused conv + pool is an empty result (it divided by N); absurd
    kernel, stride or padding values are a ValueError (``H + 2·padding`` wrapped in int)."""
    w = rng.standard_normal((16, 27)).astype(np.float32)
    pw3 = kernels.prepare_float_weights(w, bf16x3=True)
    empty = np.zeros((0, 8, 8, 3), np.float32)
    got = kernels.fconv2d_pool(empty, pw3, 3, 1, 1, pool_kernel=2)
    assert got.shape == (0, 4, 4, 16)
    x = rng.standard_normal((1, 8, 8, 3)).astype(np.float32)
    pw = kernels.prepare_float_weights(w)
    for padding in ((2**31 - 1, 0), (0, 2**17)):
        with pytest.raises(ValueError, match="padding at most 65536"):
            kernels.fconv2d_f32(x, pw, 3, 1, padding)
    with pytest.raises(ValueError, match="stride and padding at most"):
        kernels.fconv2d_f32(x, pw, 3, 2**20, 0)
