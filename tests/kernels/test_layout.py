"""NCHW → NHWC, the engine's input step (csrc/elementwise/layout.cpp) against its NumPy twin."""

import numpy as np
import pytest

from onebit import kernels
from onebit.kernels import reference


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (2, 3, 37, 41), (3, 1, 28, 28), (2, 5, 7, 9), (1, 70, 3, 2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_nchw_to_nhwc_is_the_transpose_bit_for_bit(shape, threads, rng):
    u8 = rng.integers(0, 256, shape).astype(np.uint8)
    f32 = rng.standard_normal(shape).astype(np.float32)
    got = kernels.nchw_to_nhwc(u8, threads=threads)
    assert got.dtype == np.uint8 and np.array_equal(got, reference.nchw_to_nhwc(u8))
    got = kernels.nchw_to_nhwc(f32, threads=threads)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), reference.nchw_to_nhwc(f32).view(np.uint32))


@pytest.mark.parametrize("threads", [1, 2])
def test_pm1_preprocessing_has_numpys_roundings(threads, rng):
    # every byte value, in a batch of two odd-sized images
    u8 = np.concatenate([np.arange(256, dtype=np.uint8), rng.integers(0, 256, 2 * 3 * 11 * 13 - 256)]).astype(np.uint8)
    u8 = u8.reshape(2, 3, 11, 13)
    got = kernels.nchw_to_nhwc(u8, pm1=True, threads=threads)
    want = u8.transpose(0, 2, 3, 1).astype(np.float32) / np.float32(127.5) - np.float32(1)
    assert got.dtype == np.float32 and got.shape == (2, 11, 13, 3)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got.min() == -1.0 and got.max() == 1.0


def test_nchw_to_nhwc_bad_inputs():
    with pytest.raises(ValueError, match="uint8 or float32"):
        kernels.nchw_to_nhwc(np.zeros((1, 3, 4, 4), np.float64))
    with pytest.raises(ValueError, match="pm1"):
        kernels.nchw_to_nhwc(np.zeros((1, 3, 4, 4), np.float32), pm1=True)
    with pytest.raises(ValueError, match="4-D"):
        kernels.nchw_to_nhwc(np.zeros((3, 4, 4), np.uint8))
