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
