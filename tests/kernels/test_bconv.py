"""bconv2d on every ISA path against the NumPy reference (int exact, float to 1e-6,
bits = sign of the float transform incl. flipped channels and exact-threshold ties,
1 vs 2 threads identical), plus argument validation."""

import functools

import numpy as np
import pytest

import onebit.kernels as K
from onebit.kernels import reference as R


def _make_cases():
    cases = []
    # every (C_in, C_out) pair with a pseudo-random geometry
    g = np.random.default_rng(1234)
    for ci in (1, 3, 63, 64, 65, 130):
        for co in (1, 7, 64, 70):
            k = int(g.choice([1, 3, 5]))
            cases.append(dict(
                ci=ci, co=co, k=k, s=int(g.choice([1, 2])), p=int(g.choice([0, 1, 2])),
                pv=int(g.choice([1, -1, 0])), n=int(g.choice([1, 3])),
                h=int(g.choice([5, 7, 9])), w=int(g.choice([5, 6, 11]))))
    # full geometry sweep on a shape that crosses a word and a 32-channel block boundary
    for k in (1, 3, 5):
        for s in (1, 2):
            for p in (0, 1, 2):
                for pv in (1, -1, 0):
                    cases.append(dict(ci=65, co=40, k=k, s=s, p=p, pv=pv, n=2, h=7, w=9))
    # rectangular kernel / asymmetric stride+padding, a wide layer, a 1-pixel output
    cases.append(dict(ci=70, co=33, k=(3, 1), s=(2, 1), p=(1, 0), pv=0, n=2, h=8, w=5))
    cases.append(dict(ci=256, co=96, k=3, s=1, p=1, pv=0, n=1, h=6, w=7))
    cases.append(dict(ci=9, co=5, k=5, s=2, p=0, pv=1, n=3, h=5, w=5))
    # 3 x 11 words per kernel row (T = 33 > 31): the AVX2 byte counters fold twice a row
    cases.append(dict(ci=700, co=35, k=3, s=1, p=1, pv=0, n=1, h=5, w=4))
    return cases


CASES = _make_cases()


def _cid(c):
    return "ci{ci}-co{co}-k{k}-s{s}-p{p}-pv{pv}-n{n}-{h}x{w}".format(**c).replace(" ", "")


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


@functools.lru_cache(maxsize=None)
def _data(i):
    c = CASES[i]
    rng = np.random.default_rng(i)
    kh, kw = _pair(c["k"])
    x = R.random_pm1((c["n"], c["h"], c["w"], c["ci"]), rng)
    w = R.random_pm1((c["co"], c["ci"], kh, kw), rng)
    acc = R.conv2d_pm1(x, w, c["s"], c["p"], c["pv"], layout="NHWC")
    return x, w, acc


@pytest.mark.parametrize("i", range(len(CASES)), ids=[_cid(c) for c in CASES])
def test_bconv2d_all_outputs(isa, i):
    c = CASES[i]
    x, w, acc = _data(i)
    rng = np.random.default_rng(1000 + i)
    xp = K.pack_bits(x)
    W = K.prepare_conv_weights(K.pack_conv_weights(w), c["ci"])
    geo = dict(kernel=c["k"], stride=c["s"], padding=c["p"], pad_value=c["pv"])
    co = c["co"]

    # int: exact, identical for 1 and 2 threads
    got1 = K.bconv2d(xp, W, c["ci"], **geo, threads=1)
    got2 = K.bconv2d(xp, W, c["ci"], **geo, threads=2)
    assert got1.dtype == np.int32 and got1.shape == acc.shape
    np.testing.assert_array_equal(got1, acc)
    np.testing.assert_array_equal(got2, acc)

    # float: y = acc*mult + bias (+ residual)
    mult = rng.uniform(-2, 2, co).astype(np.float32)
    bias = rng.uniform(-5, 5, co).astype(np.float32)
    res = rng.standard_normal(acc.shape).astype(np.float32)
    ref = R.affine(acc, mult, bias, res)
    y1 = K.bconv2d(xp, W, c["ci"], **geo, output="float", mult=mult, bias=bias, residual=res,
                   threads=1)
    y2 = K.bconv2d(xp, W, c["ci"], **geo, output="float", mult=mult, bias=bias, residual=res,
                   threads=2)
    np.testing.assert_array_equal(y1, ref)  # the epilogue's exact order: mul, then add (no FMA)
    np.testing.assert_array_equal(y1, y2)
    y0 = K.bconv2d(xp, W, c["ci"], **geo, output="float", mult=mult, bias=bias)
    np.testing.assert_array_equal(y0, R.affine(acc, mult, bias))

    # float with its packed signs (Bi-Real: the next conv's input from the same epilogue),
    # including channels that are exactly +0.0 and -0.0 (both pack as +1)
    m0, b0 = mult.copy(), bias.copy()
    m0[:: 3], b0[:: 3] = 0.0, 0.0
    m0[1:: 5], b0[1:: 5] = -0.0, -0.0
    layer = K.BConv2d(K.pack_conv_weights(w), c["ci"], c["k"], c["s"], c["p"], c["pv"], output="float",
                      mult=m0, bias=b0)
    for r in (res, None):
        want_y = layer(xp, residual=r)
        for threads in (1, 2):
            ys, bits = layer(xp, residual=r, threads=threads, signs=True)
            np.testing.assert_array_equal(ys, want_y)
            assert bits.dtype == np.uint64 and bits.shape == acc.shape[:-1] + ((co + 63) // 64,)
            np.testing.assert_array_equal(bits, R.pack_bits(ys))  # also checks tail bits are 0

    # bits: sign(scale*acc + shift) with negative scales (flip) and exact ties at the
    # threshold (shift = -scale * an accumulator value that occurs, scale a power of 2)
    scale = rng.choice([-2.0, -0.5, 0.25, 1.0, 4.0], co)
    pick = acc.reshape(-1, co)[rng.integers(0, acc.size // co, co), np.arange(co)]
    shift = np.where(rng.random(co) < 0.5, -scale * pick, rng.uniform(-3, 3, co))
    thresh, flip = K.fold_affine_sign(scale, shift)
    want = R.sign(acc.astype(np.float64) * scale + shift)
    np.testing.assert_array_equal(R.threshold_pm1(acc, thresh, flip), want)
    b1 = K.bconv2d(xp, W, c["ci"], **geo, output="bits", thresh=thresh, flip=flip, threads=1)
    b2 = K.bconv2d(xp, W, c["ci"], **geo, output="bits", thresh=thresh, flip=flip.astype(bool),
                   threads=2)
    assert b1.dtype == np.uint64 and b1.shape == acc.shape[:-1] + ((co + 63) // 64,)
    np.testing.assert_array_equal(b1, R.pack_bits(want))  # also checks tail bits are 0
    np.testing.assert_array_equal(b1, b2)


@pytest.mark.parametrize("th_kind", ["at", "below", "above", "extreme"])
def test_bits_threshold_edges(isa, th_kind):
    rng = np.random.default_rng(7)
    x = R.random_pm1((2, 6, 5, 70), rng)
    w = R.random_pm1((45, 70, 3, 3), rng)
    acc = R.conv2d_pm1(x, w, 1, 1, 0, layout="NHWC")
    base = acc[1, 2, 3].astype(np.int64)
    if th_kind == "extreme":
        th = np.where(np.arange(45) % 2, 2**31 - 1, -(2**31)).astype(np.int64)
    else:
        th = base + {"at": 0, "below": -1, "above": 1}[th_kind]
    flip = (np.arange(45) % 3 == 0).astype(np.uint8)
    got = K.bconv2d(K.pack_bits(x), K.pack_conv_weights(w), 70, 3, 1, 1, 0, output="bits",
                    thresh=th.astype(np.int32), flip=flip)
    np.testing.assert_array_equal(K.unpack_bits(got, 45), R.threshold_pm1(acc, th, flip))


def test_plan_reuse_and_out(isa):
    rng = np.random.default_rng(3)
    x = R.random_pm1((3, 9, 7, 64), rng)
    w = R.random_pm1((64, 64, 3, 3), rng)
    layer = K.BConv2d(K.pack_conv_weights(w), 64, 3, 2, 1, -1)
    xp = K.pack_bits(x)
    out = np.full(layer.output_shape(xp.shape), 12345, np.int32)
    r = layer(xp, out=out)
    assert r is out or np.shares_memory(r, out)
    np.testing.assert_array_equal(out, R.conv2d_pm1(x, w, 2, 1, -1, layout="NHWC"))
    np.testing.assert_array_equal(layer(xp, threads=2), out)
    # prepared weights round-trip
    np.testing.assert_array_equal(layer.weights.unpack(), K.pack_conv_weights(w))


@pytest.mark.parametrize("ci,k", [(64, 7), (192, 3), (640, 3), (2100, 1)])
def test_bconv2d_extreme_popcounts(isa, ci, k):
    """Every bit different (dot = -K) or none (+K): the largest per-byte counts, over kernels whose
    rows hold 7, 9, 30 and 33 words (the AVX2 byte counters fold after each row, or each 31-word chunk)."""
    h = k + 3  # 4 x 4 output pixels: 3-pixel tiles and a 1-pixel tail
    x = np.ones((2, h, h, ci), np.float32)
    x[1] = -1.0
    w = np.ones((37, ci, k, k), np.float32)
    w[::2] = -1.0
    got = K.bconv2d(K.pack_bits(x), K.prepare_conv_weights(K.pack_conv_weights(w), ci), ci, k, 1, 0, 1,
                    threads=2)
    np.testing.assert_array_equal(got, R.conv2d_pm1(x, w, 1, 0, 1, layout="NHWC"))
    assert set(np.unique(got)) == {-ci * k * k, ci * k * k}


def test_batch_zero(isa):
    W = K.prepare_conv_weights(np.zeros((4, 3, 3, 1), np.uint64), 10)
    r = K.bconv2d(np.zeros((0, 5, 5, 1), np.uint64), W, 10, 3, 1, 1)
    assert r.shape == (0, 5, 5, 4)


def test_signs_only_with_float_output():
    w = K.pack_conv_weights(np.ones((4, 3, 3, 3), np.float32))
    x = K.pack_bits(np.ones((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="signs"):
        K.BConv2d(w, 3, 3)(x, signs=True)


def test_bad_inputs():
    W = K.prepare_conv_weights(np.zeros((4, 3, 3, 2), np.uint64), 100)
    x = np.zeros((1, 6, 6, 2), np.uint64)
    K.bconv2d(x, W, 100, 3)  # ok
    cases = [
        (dict(x=x.astype(np.int64)), "uint64"),
        (dict(x=np.zeros((1, 6, 12, 2), np.uint64)[:, :, ::2]), "C-contiguous"),
        (dict(x=np.zeros((1, 6, 6, 3), np.uint64)), "words"),
        (dict(x=np.zeros((6, 6, 2), np.uint64)), "4-D"),
        (dict(c_in=64), "c_in"),
        (dict(kernel=5), "kernel"),
        (dict(stride=0), "stride"),
        (dict(stride=-1), "stride"),
        (dict(padding=-1), "padding"),
        (dict(pad_value=2), "pad_value"),
        (dict(output="half"), "output"),
        (dict(x=np.zeros((1, 2, 2, 2), np.uint64)), "smaller than the kernel"),
        (dict(output="bits"), "thresh"),
        (dict(output="bits", thresh=np.zeros(3, np.int32)), "thresh"),
        (dict(output="bits", thresh=np.zeros(4, np.float32)), "int32"),
        (dict(output="float", mult=np.ones(5, np.float32)), "mult"),
        (dict(output="float", residual=np.zeros((1, 4, 4, 3), np.float32)), "residual"),
        (dict(output="int", mult=np.ones(4, np.float32)), "only used"),
        (dict(out=np.zeros((1, 4, 4, 4), np.float32)), "int32"),
        (dict(out=np.zeros((1, 4, 4, 5), np.int32)), "shape"),
        (dict(threads=-2), "threads"),
    ]
    for kw, msg in cases:
        args = dict(x=x, w=W, c_in=100, kernel=3)
        args.update(kw)
        with pytest.raises(ValueError, match=msg):
            K.bconv2d(args.pop("x"), args.pop("w"), **args)
    ro = np.zeros((1, 4, 4, 4), np.int32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        K.bconv2d(x, W, 100, 3, out=ro)
    buf = np.zeros(72, np.uint64)
    with pytest.raises(ValueError, match="overlap"):
        K.bconv2d(buf.reshape(1, 6, 6, 2), K.prepare_conv_weights(np.zeros((2, 1, 1, 2), np.uint64), 100),
                  100, output="bits", thresh=np.zeros(2, np.int32), out=buf[:36].reshape(1, 6, 6, 1))
    # raw weights: shape / c_in mismatches
    with pytest.raises(ValueError, match="words"):
        K.prepare_conv_weights(np.zeros((4, 3, 3, 2), np.uint64), 200)
    with pytest.raises(ValueError, match="c_in"):
        K.prepare_conv_weights(np.zeros((4, 3, 3, 2), np.uint64), -1)
    with pytest.raises(ValueError, match="4-D"):
        K.prepare_conv_weights(np.zeros((4, 3, 2), np.uint64), 100)
    with pytest.raises(ValueError, match="output channels"):
        K.prepare_conv_weights(np.zeros((0, 3, 3, 2), np.uint64), 100)
    with pytest.raises(ValueError, match="uint64"):
        K.prepare_conv_weights(np.zeros((4, 3, 3, 2), np.float32), 100)
