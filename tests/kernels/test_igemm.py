"""The int8 GEMM (binary-weight layers): AMX and portable paths against NumPy, odd shapes."""

import numpy as np
import pytest

from onebit import kernels

PATHS = ["portable"] + (["amx"] if kernels.amx_int8_usable() else [])


def _operands(rng, m, n, k):
    w = rng.choice(np.array([-1, 1], np.int8), (n, k))
    a = rng.integers(-127, 128, (m, k)).astype(np.int8)
    prepared = kernels.prepare_int8_weights(w)
    ap = np.zeros((m, prepared.Kp + 3), np.int8)  # wider rows than needed are fine
    ap[:, :k] = a
    return a, w, prepared, ap


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 5, 63), (33, 70, 100), (31, 33, 129), (100, 130, 1152),
                                   (64, 17, 4608)])
@pytest.mark.parametrize("threads", [1, 2])
def test_igemm_equals_numpy_exactly(path, m, n, k, threads, rng):
    a, w, prepared, ap = _operands(rng, m, n, k)
    scale = rng.random(n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    acc = a.astype(np.int64) @ w.T.astype(np.int64)
    y = kernels.igemm_s8(ap, prepared, scale, bias, path=path, threads=threads)
    assert np.array_equal(y, (acc.astype(np.float32) * scale) + bias)  # mul, then add, in fp32
    assert np.array_equal(kernels.igemm_s8(ap, prepared, path=path), acc.astype(np.float32))


@pytest.mark.parametrize("path", PATHS)
def test_igemm_uint8_activations(path, rng):
    """uint8 rows (u8 × s8): pixels and post-ReLU activations use the full 0..255 range."""
    w = rng.integers(-128, 128, (37, 300)).astype(np.int8)
    prepared = kernels.prepare_int8_weights(w)
    a = rng.integers(0, 256, (45, prepared.Kp)).astype(np.uint8)
    a[:, 300:] = 0
    acc = a[:, :300].astype(np.int64) @ w.T.astype(np.int64)
    assert np.array_equal(kernels.igemm_s8(a, prepared, path=path), acc.astype(np.float32))


def test_igemm_paths_agree_and_extremes_do_not_overflow(rng):
    k = 8192  # 127 · 8192 per output: far inside int32
    w = np.ones((40, k), np.int8)
    prepared = kernels.prepare_int8_weights(w)
    a = np.full((20, prepared.Kp), -127, np.int8)
    for path in PATHS:
        assert (kernels.igemm_s8(a, prepared, path=path) == -127 * k).all()


def test_igemm_bad_inputs():
    prepared = kernels.prepare_int8_weights(np.ones((4, 70), np.int8))
    with pytest.raises(ValueError, match="int8"):
        kernels.igemm_s8(np.zeros((2, 128), np.float32), prepared)
    with pytest.raises(ValueError, match="Kp = 128"):
        kernels.igemm_s8(np.zeros((2, 70), np.int8), prepared)
    with pytest.raises(ValueError, match="scale"):
        kernels.igemm_s8(np.zeros((2, 128), np.int8), prepared, scale=np.ones(3))
    with pytest.raises(ValueError, match="path"):
        kernels.igemm_s8(np.zeros((2, 128), np.int8), prepared, path="vnni")
    raw = np.ones((4, 70), np.int8)  # not prepared: one line naming the preparation, not pybind's signature dump
    with pytest.raises(TypeError, match=r"prepared once with onebit.kernels.prepare_int8_weights\(w\)"):
        kernels.igemm_s8(np.zeros((2, 128), np.int8), raw)
    with pytest.raises(TypeError, match="prepare_int8_weights"):
        kernels.iconv2d_s8(np.zeros((1, 4, 4, 70), np.float32), raw, 1.0, 1)


@pytest.mark.parametrize("w", [np.array([[0.5, 1.0, -1.0]]), np.array([[200, 1, -1]]), np.array([[300, 1, -1]], np.int64),
                               np.array([[np.nan, 1.0, -1.0]]), np.array([["1", "0", "1"]])])
def test_int8_weights_are_never_wrapped_or_truncated(w):
    """0.5 → 0 or 200 → −56 would be silently wrong weights: refused."""
    with pytest.raises(ValueError, match="integers in -128..127"):
        kernels.prepare_int8_weights(w)


def test_int8_weights_of_other_integer_dtypes_are_exact():
    w = np.array([[1, -1, 127, -128, 0]], np.int64)
    a = np.zeros((1, 64), np.int8)
    a[0, :5] = [1, 2, 3, 1, 5]
    got = kernels.igemm_s8(a, kernels.prepare_int8_weights(w))
    assert got.tolist() == [[1 - 2 + 381 - 128]]
    assert kernels.igemm_s8(a, kernels.prepare_int8_weights(w.astype(np.float32))).tolist() == got.tolist()
    assert kernels.igemm_s8(a, kernels.prepare_int8_weights(w.astype(object))).tolist() == got.tolist()


# ---- the fused int8 convolution (quantise + im2col per tile + GEMM + epilogue) ----------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n,h,w,c,cout,k,s,p", [
    (1, 7, 9, 3, 5, 3, 1, 1),      # RGB-sized input, odd output count
    (3, 8, 8, 70, 33, 3, 2, 1),    # stride 2, C_in and C_out not multiples of 64/16, batch > 1
    (2, 5, 6, 129, 130, 3, 1, 0),  # no padding, K = 1161 (tail of 55 in the last 64)
    (2, 6, 6, 16, 17, 1, 1, 0),    # 1×1
    (1, 9, 7, 8, 9, (3, 1), (2, 1), (1, 0)),  # non-square kernel, stride and padding
])
@pytest.mark.parametrize("unsigned", [False, True])
def test_iconv_equals_reference_bit_for_bit(path, n, h, w, c, cout, k, s, p, unsigned, rng):
    kh, kw = (k, k) if isinstance(k, int) else k
    wt = rng.choice(np.array([-1, 1], np.int8), (cout, kh, kw, c))
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    if unsigned:
        x = np.maximum(x, 0)
    x[0, 0, 0, 0] = 0.5 * 0.037  # an exact tie: rint rounds it to even
    act = np.float32(0.037)
    scale = rng.random(cout).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    prepared = kernels.prepare_int8_weights(wt.reshape(cout, -1))
    want = kernels.reference.iconv2d_s8(x, wt, act, k, s, p, unsigned=unsigned, scale=scale, bias=bias)
    got = kernels.iconv2d_s8(x, prepared, act, k, s, p, unsigned=unsigned, scale=scale, bias=bias, path=path,
                             threads=2)
    assert got.shape == want.shape and np.array_equal(got, want)
    res = rng.standard_normal(want.shape).astype(np.float32)
    want = kernels.reference.iconv2d_s8(x, wt, act, k, s, p, unsigned=unsigned, scale=scale, bias=bias,
                                        residual=res, relu=True)
    got = kernels.iconv2d_s8(x, prepared, act, k, s, p, unsigned=unsigned, scale=scale, bias=bias, residual=res,
                             relu=True, path=path, threads=1)
    assert np.array_equal(got, want) and (got >= 0).all()


def test_quantize_s8_matches_numpy_rint_and_clip(rng):
    x = (rng.standard_normal((5, 77)) * 60).astype(np.float32)
    x[0, :6] = [0.5, 1.5, 2.5, -0.5, -1.5, 1e9]  # ties to even, and saturation
    for unsigned in (False, True):
        got = kernels.quantize_s8(x, 1.0, unsigned=unsigned, ld=128)
        assert got.shape == (5, 128) and not got[:, 77:].any()
        assert np.array_equal(got[:, :77], kernels.reference.quantize_s8(x, 1.0, unsigned))
    assert list(kernels.quantize_s8(x[:1, :6], 1.0)[0]) == [0, 2, 2, 0, -2, 127]


def test_iconv_bad_inputs(rng):
    prepared = kernels.prepare_int8_weights(np.ones((4, 27), np.int8))
    x = np.zeros((1, 5, 5, 3), np.float32)
    with pytest.raises(ValueError, match="K = 27"):
        kernels.iconv2d_s8(np.zeros((1, 5, 5, 4), np.float32), prepared, 1.0, 3)
    with pytest.raises(ValueError, match="act_scale"):
        kernels.iconv2d_s8(x, prepared, 0.0, 3)
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernels.iconv2d_s8(np.zeros((1, 2, 2, 3), np.float32), prepared, 1.0, 3)
    with pytest.raises(ValueError, match="residual"):
        kernels.iconv2d_s8(x, prepared, 1.0, 3, padding=1, residual=np.zeros((1, 5, 5, 5), np.float32))


def test_iconv_refuses_an_out_that_overlaps_x_or_residual(rng):
    prepared = kernels.prepare_int8_weights(np.ones((4, 27), np.int8))
    buf = np.zeros(200, np.float32)
    x, out = buf[:75].reshape(1, 5, 5, 3), buf[50:150].reshape(1, 5, 5, 4)
    with pytest.raises(ValueError, match="overlap"):
        kernels.iconv2d_s8(x, prepared, 1.0, 3, padding=1, out=out)
    res, out = buf[:100].reshape(1, 5, 5, 4), buf[99:199].reshape(1, 5, 5, 4)
    with pytest.raises(ValueError, match="overlap"):
        kernels.iconv2d_s8(np.zeros((1, 5, 5, 3), np.float32), prepared, 1.0, 3, padding=1, residual=res, out=out)
