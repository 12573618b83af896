"""bgemm on every ISA path against the NumPy reference, plus validation."""

import numpy as np
import pytest

import onebit.kernels as K
from onebit.kernels import reference as R

SHAPES = [(1, 1, 1), (1, 70, 64), (3, 7, 65), (8, 64, 130), (5, 33, 1000), (17, 100, 63),
          (2, 1, 4096), (13, 129, 200), (7, 40, 2500)]  # K = 2500: 40 words, the AVX2 byte counters fold twice


@pytest.mark.parametrize("M,N,Kd", SHAPES, ids=[f"M{m}-N{n}-K{k}" for m, n, k in SHAPES])
def test_bgemm(isa, M, N, Kd):
    rng = np.random.default_rng(M * 1000 + N * 7 + Kd)
    a = R.random_pm1((M, Kd), rng)
    b = R.random_pm1((N, Kd), rng)
    acc = R.gemm_pm1(a, b)
    ap, bp = K.pack_bits(a), K.pack_dense_weights(b)
    got = K.bgemm(ap, bp, Kd, threads=1)
    assert got.dtype == np.int32 and got.shape == (M, N)
    np.testing.assert_array_equal(got, acc)
    Wt = K.prepare_dense_weights(bp, Kd)
    np.testing.assert_array_equal(K.bgemm(ap, Wt, threads=2), acc)

    mult = rng.uniform(-1, 1, N).astype(np.float32)
    bias = rng.uniform(-3, 3, N).astype(np.float32)
    res = rng.standard_normal((M, N)).astype(np.float32)
    y = K.bgemm(ap, Wt, output="float", mult=mult, bias=bias, residual=res)
    np.testing.assert_array_equal(y, R.affine(acc, mult, bias, res))  # mul, then add: no FMA

    th = acc[rng.integers(0, M, N), np.arange(N)].astype(np.int32)  # ties occur
    flip = (rng.random(N) < 0.4).astype(np.uint8)
    bits = K.bgemm(ap, Wt, output="bits", thresh=th, flip=flip)
    assert bits.shape == (M, (N + 63) // 64)
    np.testing.assert_array_equal(bits, R.pack_bits(R.threshold_pm1(acc, th, flip)))
    np.testing.assert_array_equal(bits, K.BDense(Wt, output="bits", thresh=th, flip=flip)(ap, threads=2))


def test_bgemm_residual_in_place(isa):
    rng = np.random.default_rng(5)
    a, b = R.random_pm1((4, 100), rng), R.random_pm1((50, 100), rng)
    res = rng.standard_normal((4, 50)).astype(np.float32)
    want = R.affine(R.gemm_pm1(a, b), None, None, res)
    got = K.bgemm(K.pack_bits(a), K.pack_bits(b), 100, output="float", residual=res, out=res)
    np.testing.assert_array_equal(res, want)
    assert np.shares_memory(got, res)


def test_direct_calls_refuse_set_tail_bits():
    """The kernels count every bit of the last word, so a set bit past K would change the sum
    silently (−4 → −6 in the review's case): bgemm/bconv2d refuse it; pack_bits writes them 0."""
    rng = np.random.default_rng(3)
    a, b = K.pack_bits(R.random_pm1((3, 70), rng)), K.pack_bits(R.random_pm1((5, 70), rng))
    want = K.bgemm(a, b, 70)
    bad = a.copy()
    bad[1, -1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match="a has bits set past its 70 channels"):
        K.bgemm(bad, b, 70)
    x, w = K.pack_bits(R.random_pm1((2, 5, 5, 70), rng)), K.pack_bits(R.random_pm1((4, 3, 3, 70), rng))
    ok = K.bconv2d(x, w, 70, padding=1)
    x[1, 4, 4, -1] |= np.uint64(1) << np.uint64(6)  # channel 70
    with pytest.raises(ValueError, match="x has bits set past its 70 channels"):
        K.bconv2d(x, w, 70, padding=1)
    assert np.array_equal(K.bgemm(a, b, 70), want) and ok.shape == (2, 5, 5, 4)
    full = K.pack_bits(R.random_pm1((3, 128), rng))  # no tail: nothing to check
    assert K.bgemm(full, K.pack_bits(R.random_pm1((2, 128), rng)), 128).shape == (3, 2)


def test_bgemm_bad_inputs():
    a = np.zeros((3, 2), np.uint64)
    b = np.zeros((5, 2), np.uint64)
    K.bgemm(a, b, 100)
    with pytest.raises(ValueError, match="words"):
        K.bgemm(a, b, 200)
    with pytest.raises(ValueError, match="words"):
        K.bgemm(np.zeros((3, 3), np.uint64), b, 100)
    with pytest.raises(ValueError, match="required"):
        K.bgemm(a, b)
    with pytest.raises(ValueError, match="2-D"):
        K.bgemm(a.reshape(1, 3, 2), b, 100)
    with pytest.raises(ValueError, match="uint64"):
        K.bgemm(a.astype(np.int32), b, 100)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.bgemm(np.zeros((3, 4), np.uint64)[:, ::2], b, 100)
    with pytest.raises(ValueError, match="K must be"):
        K.bgemm(a, b, -3)
    with pytest.raises(ValueError, match="1x1"):
        K.bgemm(a, K.prepare_conv_weights(np.zeros((5, 3, 3, 2), np.uint64), 100))
    with pytest.raises(ValueError, match="residual"):
        K.bgemm(a, b, 100, output="float", residual=np.zeros((3, 4), np.float32))


def test_bgemm_empty_batch(isa):
    b = np.zeros((5, 2), np.uint64)
    assert K.bgemm(np.zeros((0, 2), np.uint64), b, 100).shape == (0, 5)
    assert K.bgemm(np.zeros((0, 2), np.uint64), b, 100, output="bits",
                   thresh=np.zeros(5, np.int32)).shape == (0, 1)


@pytest.mark.parametrize("Kd", [64 * 31 + 1, 4096, 64 * 100 - 3])
def test_bgemm_extreme_popcounts(isa, Kd):
    """Every bit different (dot = -K) or none (dot = +K), over long K: the largest per-byte counts
    (the AVX2 path counts 8 per byte per word in byte lanes and must fold before 256)."""
    M, N = 7, 40  # 3-pixel tiles and a 1-pixel tail
    a = np.ones((M, Kd), np.float32)
    a[1::2] = -1.0
    b = np.ones((N, Kd), np.float32)
    b[::3] = -1.0
    got = K.bgemm(K.pack_bits(a), K.pack_dense_weights(b), Kd, threads=2)
    np.testing.assert_array_equal(got, R.gemm_pm1(a, b))
    assert set(np.unique(got)) == {-Kd, Kd}


def test_kernel_benchmark_refuses_to_time_a_wrong_output():
    """benchmarks/kernels/bench_bconv.py checks every kernel's output before timing it."""
    from onebit.analysis.kernel_bench import _check

    rng = np.random.default_rng(0)
    af, wf = R.random_pm1((3, 130), rng), R.random_pm1((70, 130), rng)
    acc = R.gemm_pm1(af, wf)
    layer = K.BDense(K.prepare_dense_weights(K.pack_dense_weights(wf), 130), output="float")
    out = layer(K.pack_bits(af))
    _check("dense", "float", out, acc, 70)
    bad = np.array(out, copy=True)
    bad[1, 5] += 2
    with pytest.raises(RuntimeError, match="disagrees with the NumPy reference"):
        _check("dense", "float", bad, acc, 70)


def test_a_dense_plan_takes_no_padding_or_stride():
    """The gemm form sizes its output as (M, N): a padding or stride would write past it."""
    w = K._core.ConvWeights(np.zeros((4, 1), np.uint64), 10)  # 2-D: dense (gemm) weights
    for stride, padding in (((1, 1), (200, 0)), ((2, 1), (0, 0))):
        with pytest.raises(ValueError, match="stride 1 and padding 0"):
            K._core.ConvPlan(w, stride, padding, 1, "int", None, None, None, None, True)
