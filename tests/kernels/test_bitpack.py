"""pack_bits / unpack_bits against the NumPy reference on every ISA path."""

import numpy as np
import pytest

import onebit.kernels as K
from onebit.kernels import reference as R


@pytest.mark.parametrize("C", [1, 3, 16, 63, 64, 65, 127, 128, 130, 200, 1000])
def test_pack_matches_reference(isa, rng, C):
    x = rng.standard_normal((5, C)).astype(np.float32)
    p = K.pack_bits(x)
    assert p.dtype == np.uint64 and p.shape == (5, (C + 63) // 64)
    np.testing.assert_array_equal(p, R.pack_bits(x))
    # tail bits are zero
    if C % 64:
        assert not np.any(p[:, -1] >> np.uint64(C % 64))
    np.testing.assert_array_equal(K.unpack_bits(p, C), R.sign(x))


def test_signed_zero_and_specials(isa):
    x = np.array([0.0, -0.0, 1e-45, -1e-45, np.inf, -np.inf, np.nan, -1.0, 1.0], np.float32)
    u = K.unpack_bits(K.pack_bits(x), x.size)
    # x >= 0 -> +1 (so -0.0 -> +1: the packer compares, it does not copy sign bits); NaN -> +1
    np.testing.assert_array_equal(u, [1, 1, 1, -1, 1, -1, 1, -1, 1])


@pytest.mark.parametrize("shape", [(7,), (2, 3, 65), (1, 4, 5, 130), (0, 64), (3, 0, 10)])
def test_shapes_round_trip(isa, rng, shape):
    x = R.random_pm1(shape, rng)
    p = K.pack_bits(x)
    assert p.shape == shape[:-1] + ((shape[-1] + 63) // 64,)
    np.testing.assert_array_equal(K.unpack_bits(p, shape[-1]), x)


def test_threads_same_result(isa, rng):
    x = rng.standard_normal((600, 333)).astype(np.float32)  # big enough to be split
    a = K.pack_bits(x, threads=1)
    b = K.pack_bits(x, threads=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(K.unpack_bits(a, 333, threads=1), K.unpack_bits(a, 333, threads=2))


def test_pack_bad_inputs():
    with pytest.raises(ValueError, match="float32"):
        K.pack_bits(np.zeros((2, 3), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        K.pack_bits(np.zeros((4, 6), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="ndarray"):
        K.pack_bits([1.0, 2.0])
    with pytest.raises(ValueError, match="dimension"):
        K.pack_bits(np.array(1.0, np.float32))
    with pytest.raises(ValueError, match="channel"):
        K.pack_bits(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="threads"):
        K.pack_bits(np.zeros((3, 4), np.float32), threads=0)


def test_unpack_bad_inputs():
    p = np.zeros((2, 2), np.uint64)
    with pytest.raises(ValueError, match="words"):
        K.unpack_bits(p, 64)
    with pytest.raises(ValueError, match="C must be"):
        K.unpack_bits(p, -5)
    with pytest.raises(ValueError, match="uint64"):
        K.unpack_bits(p.astype(np.int64), 100)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.unpack_bits(np.zeros((2, 4), np.uint64)[:, ::2], 100)
