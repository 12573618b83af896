"""bmaxpool2d (packed AND / OR pooling) on every ISA path against the reference."""

import numpy as np
import pytest

import onebit.kernels as K
from onebit.kernels import reference as R

CASES = [
    # (N, H, W, C, kernel, stride, padding)
    (1, 8, 8, 64, 2, 2, 0),
    (3, 7, 9, 65, 3, 2, 1),
    (2, 5, 5, 1, 3, 1, 1),
    (1, 11, 6, 130, 2, 1, 0),
    (2, 9, 9, 600, 3, 2, 1),
    (1, 6, 7, 7, (3, 2), (2, 1), (1, 0)),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("with_min", [False, True])
def test_bmaxpool(isa, case, with_min):
    N, H, W, C, k, s, p = case
    rng = np.random.default_rng(N + H + W + C)
    x = R.random_pm1((N, H, W, C), rng)
    mins = (rng.random(C) < 0.5) if with_min else None
    want = R.maxpool2d_pm1(x, k, s, p, mins)
    xp = K.pack_bits(x)
    got1 = K.bmaxpool2d(xp, C, k, s, p, mins, threads=1)
    got2 = K.bmaxpool2d(xp, C, k, s, p, None if mins is None else K.pack_bits(np.where(mins, -1, 1).astype(np.float32)),
                        threads=2)
    np.testing.assert_array_equal(got1, R.pack_bits(want))
    np.testing.assert_array_equal(got2, got1)


def test_bmaxpool_bad_inputs():
    x = np.zeros((1, 4, 4, 1), np.uint64)
    K.bmaxpool2d(x, 64, 2)
    with pytest.raises(ValueError, match="words"):
        K.bmaxpool2d(x, 65, 2)
    with pytest.raises(ValueError, match="half"):
        K.bmaxpool2d(x, 64, 2, 2, 2)
    with pytest.raises(ValueError, match="kernel"):
        K.bmaxpool2d(x, 64, 0)
    with pytest.raises(ValueError, match="min_mask"):
        K.bmaxpool2d(x, 64, 2, min_mask=np.zeros(2, np.uint64))
    with pytest.raises(ValueError, match="min_mask"):
        K.bmaxpool2d(x, 64, 2, min_mask=np.zeros(3, bool))
    with pytest.raises(ValueError, match="smaller"):
        K.bmaxpool2d(x, 64, 5)
    with pytest.raises(ValueError, match="4-D"):
        K.bmaxpool2d(x[0], 64, 2)


def test_an_empty_map_is_refused():
    """A 0×0 map has no window to take a max over (it returned a word with its padding bits set)."""
    x = np.zeros((1, 0, 0, 1), np.uint64)
    with pytest.raises(ValueError, match="input height"):
        K.bmaxpool2d(x, 10, 2, 2, 1)
