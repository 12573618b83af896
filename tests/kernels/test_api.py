"""ISA control, threads, peak microbenchmark, folding helper and the reference itself."""

import numpy as np
import pytest

import onebit.kernels as K
from onebit.kernels import reference as R


def test_isa_paths_and_control():
    paths = K.isa_paths()
    assert paths[0] == "portable" and set(paths) <= {"portable", "avx2", "avx512"}
    best = K.get_isa()
    for p in paths:
        with K.use_isa(p):
            assert K.get_isa() == p
    assert K.get_isa() == best
    with pytest.raises(ValueError, match="unknown"):
        K.set_isa("sse9")
    for p in {"avx2", "avx512"} - set(paths):
        with pytest.raises(ValueError, match="not available"):
            K.set_isa(p)


def test_threads_setting():
    n = K.get_num_threads()
    try:
        K.set_num_threads(1)
        assert K.get_num_threads() == 1
    finally:
        K.set_num_threads(n)
    with pytest.raises(ValueError):
        K.set_num_threads(0)


def test_peak_microbench(isa):
    assert K.peak_microbench(1, seconds=0.02) > 1e8


def test_reference_conv_matches_direct_sum():
    rng = np.random.default_rng(0)
    x = R.random_pm1((1, 2, 4, 5), rng)  # NCHW
    w = R.random_pm1((3, 2, 3, 3), rng)
    for pv in (1, -1, 0):
        got = R.conv2d_pm1(x, w, 2, 1, pv)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=pv)
        for co in range(3):
            for oh in range(got.shape[2]):
                for ow in range(got.shape[3]):
                    patch = xp[0, :, 2 * oh : 2 * oh + 3, 2 * ow : 2 * ow + 3]
                    assert got[0, co, oh, ow] == int((patch * w[co]).sum())


def test_fold_affine_sign():
    acc = np.arange(-20, 21)[:, None]
    scale = np.array([1.5, -0.75, 0.0, 0.0, 2.0])
    shift = np.array([3.0, 1.5, 0.0, -1.0, -8.0])  # last: tie at acc = 4
    th, fl = K.fold_affine_sign(scale, shift)
    assert th.dtype == np.int32 and fl.dtype == np.uint8
    np.testing.assert_array_equal(R.threshold_pm1(acc, th, fl), R.sign(acc * scale + shift))


def _conv_case(seed):
    rng = np.random.default_rng(seed)
    x = R.random_pm1((2, 9, 8, 100), rng)
    w = R.random_pm1((70, 100, 3, 3), rng)
    return K.pack_bits(x), K.pack_conv_weights(w), R.conv2d_pm1(x, w, 1, 1, 0, layout="NHWC")


def test_concurrent_calls_from_python_threads():
    import threading

    cases = [_conv_case(s) for s in range(4)]
    errors = []

    def work(i):
        xp, wp, want = cases[i]
        layer = K.BConv2d(wp, 100, 3, 1, 1, 0)
        for _ in range(15):
            if not np.array_equal(layer(xp, threads=2), want):
                errors.append(i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_calls_of_changing_width_wake_the_right_workers_and_agree():
    """The pool grows for the widest call; a narrower call wakes only its own participants (the
    others sleep: they neither spin nor are woken) and a wider one wakes them again. Every mix of
    widths gives the reference result and nothing hangs (in a subprocess, with a time limit)."""
    import subprocess
    import sys

    code = """
import numpy as np, onebit.kernels as K
from onebit.kernels import reference as R
rng = np.random.default_rng(3)
x = R.random_pm1((1, 9, 8, 100), rng); w = R.random_pm1((70, 100, 3, 3), rng)
xp, wp, want = K.pack_bits(x), K.pack_conv_weights(w), R.conv2d_pm1(x, w, 1, 1, 0, layout="NHWC")
for t in [4, 2, 3, 1, 4, 2, 2, 5, 3] * 40:
    assert np.array_equal(K.bconv2d(xp, wp, 100, 3, 1, 1, 0, threads=t), want), t
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # generous: a loaded machine, not a hang
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_kernels_work_after_fork():
    import os

    xp, wp, want = _conv_case(9)
    np.testing.assert_array_equal(K.bconv2d(xp, wp, 100, 3, 1, 1, 0, threads=2), want)  # pool up
    pid = os.fork()
    if pid == 0:  # child: the pool must be recreated, not deadlock
        ok = np.array_equal(K.bconv2d(xp, wp, 100, 3, 1, 1, 0, threads=2), want)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("bad", [0, -1, True, False, 2.0, "2"])
def test_threads_must_be_a_positive_int(bad):
    x = np.ones((1, 70), np.float32)
    with pytest.raises(ValueError, match="threads"):
        K.pack_bits(x, threads=bad)
