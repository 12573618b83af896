"""onebit.kernels.cuda against the NumPy references, on odd shapes.

Every test runs on the CPU (the PyTorch reference twins) and, where a CUDA GPU and nvcc are
present, on the GPU once per kernel algorithm. CI has no GPU: there the CUDA cases skip.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onebit.kernels import reference as npref
from onebit.kernels import cuda as ck

HAS_CUDA = ck.is_available()
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU with nvcc here")

# (device, algo): the CPU twin once; every CUDA algorithm where a GPU is present
TARGETS = [("cpu", "auto")] + [pytest.param("cuda", a, marks=cuda_only) for a in
                               ("auto", "tiled_csa", "tiled", "small_m")]
INT_ONLY = [pytest.param("cuda", a, marks=cuda_only) for a in ("paper", "naive")]

GEMM_SHAPES = [(1, 1, 1), (3, 5, 33), (17, 130, 200), (130, 257, 1000), (5, 64, 4096), (129, 33, 2049)]


def _pm1(shape, g):
    return torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)


def _gemm_operands(m, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    x, w = _pm1((m, k), g), _pm1((n, k), g)
    return x, w


def _packed(x, w, k, device):
    s = ck.gemm_words(k)
    return ck.pack_bits(x.to(device), s), ck.pack_bits(w.to(device), s)


def test_pack_bits_matches_the_cpu_convention():
    """Two 32-bit words are one uint64 word of the CPU kernels and the .onebit format."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 133)).astype(np.float32)
    x[0, 0, :4] = [0.0, -0.0, np.nan, -1e-30]
    ours = ck.pack_bits(torch.from_numpy(x), 2 * ((133 + 63) // 64)).numpy()
    assert np.array_equal(ours, npref.pack_bits(x).view(np.int32))


@cuda_only
def test_cuda_pack_equals_reference():
    g = torch.Generator().manual_seed(1)
    for k, stride in [(1, 1), (31, 8), (32, 1), (33, 2), (1000, 40)]:
        x = torch.randn(37, k, generator=g)
        x[0, 0] = -0.0
        assert torch.equal(ck.pack_bits(x.cuda(), stride).cpu(), ck.pack_bits(x, stride))


@pytest.mark.parametrize("device,algo", TARGETS + INT_ONLY)
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_bgemm_int_equals_float_matmul(device, algo, m, n, k):
    x, w = _gemm_operands(m, n, k, seed=m * 7 + n)
    a, b = _packed(x, w, k, device)
    acc = ck.bgemm(a, b, k, algo=algo).cpu()
    assert torch.equal(acc, (x.double() @ w.double().T).to(torch.int32))


@pytest.mark.parametrize("device,algo", TARGETS)
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES[1:])
def test_bgemm_float_output_transform_bit_identical(device, algo, m, n, k):
    x, w = _gemm_operands(m, n, k, seed=3)
    g = torch.Generator().manual_seed(4)
    mult, bias, res = torch.randn(n, generator=g), torch.randn(n, generator=g), torch.randn(m, n, generator=g)
    a, b = _packed(x, w, k, device)
    y = ck.bgemm(a, b, k, output="float", mult=mult.to(device), bias=bias.to(device), residual=res.to(device),
                 algo=algo).cpu()
    acc = (x.double() @ w.double().T).numpy().astype(np.float32)
    expect = ((acc * mult.numpy()) + bias.numpy()) + res.numpy()  # fp32: mul, add, add, each rounded
    assert np.array_equal(y.numpy(), expect)


@pytest.mark.parametrize("device,algo", TARGETS)
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES[1:])
def test_bgemm_bits_output_is_the_threshold_sign(device, algo, m, n, k):
    x, w = _gemm_operands(m, n, k, seed=5)
    acc = (x.double() @ w.double().T).to(torch.int32)
    g = torch.Generator().manual_seed(6)
    thresh = acc[0].clone() if m else torch.zeros(n, dtype=torch.int32)  # ties on row 0
    thresh += torch.randint(-3, 4, (n,), generator=g, dtype=torch.int32)
    flip = (torch.rand(n, generator=g) < 0.4).to(torch.uint8)
    a, b = _packed(x, w, k, device)
    stride = ck.words_for(n) + 3
    bits = ck.bgemm(a, b, k, output="bits", thresh=thresh.to(device), flip=flip.to(device), out_stride=stride,
                    algo=algo).cpu()
    plus = torch.where(flip.bool(), acc <= thresh, acc >= thresh)
    expect = ck.pack_bits(torch.where(plus, 1.0, -1.0), stride)
    assert torch.equal(bits, expect)
    assert (bits[:, ck.words_for(n):] == 0).all()


@pytest.mark.parametrize("device,algo", TARGETS)
def test_bgemm_correction_table_is_subtracted_per_row_period(device, algo):
    x, w = _gemm_operands(40, 19, 77, seed=7)
    corr = torch.randint(-50, 50, (8, 19), dtype=torch.int32)
    a, b = _packed(x, w, 77, device)
    acc = ck.bgemm(a, b, 77, corr=corr.to(device), algo=algo).cpu()
    expect = (x.double() @ w.double().T).to(torch.int32) - corr[torch.arange(40) % 8]
    assert torch.equal(acc, expect)


CONV_CASES = [  # (N, C_in, H, W, C_out, k, stride, pad)
    (2, 3, 9, 7, 5, 3, 1, 1),
    (1, 70, 8, 8, 33, 3, 2, 1),
    (3, 64, 6, 5, 130, 3, 1, 1),
    (2, 33, 7, 7, 16, 1, 2, 0),
    (2, 129, 5, 6, 20, 3, 1, 2),
]


@pytest.mark.parametrize("device,algo", TARGETS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("pad_value", [0, 1, -1])
def test_bconv2d_equals_reference_conv(device, algo, case, pad_value):
    nb, c, h, wd, co, k, s, p = case
    rng = np.random.default_rng(sum(case) + pad_value)
    x = npref.random_pm1((nb, c, h, wd), rng)
    w = npref.random_pm1((co, c, k, k), rng)
    expect = npref.conv2d_pm1(x, w, s, p, pad_value)  # (N, C_out, OH, OW) int
    words = ck.words_for(c) + (1 if c % 2 else 0)  # also a wider pixel than needed
    xb = ck.pack_bits(torch.from_numpy(x).permute(0, 2, 3, 1).to(device), words)
    wb = ck.pack_conv_weight(torch.from_numpy(w).to(device), words)
    acc = ck.bconv2d(xb, wb, c, k, s, p, pad_value, algo=algo).cpu().permute(0, 3, 1, 2)
    assert np.array_equal(acc.numpy(), expect)


@pytest.mark.parametrize("device,algo", TARGETS)
def test_bconv2d_fused_float_with_residual_and_bits(device, algo):
    rng = np.random.default_rng(11)
    x, w = npref.random_pm1((2, 45, 6, 6), rng), npref.random_pm1((37, 45, 3, 3), rng)
    acc = npref.conv2d_pm1(x, w, 1, 1, 0).transpose(0, 2, 3, 1)  # NHWC
    mult = rng.standard_normal(37).astype(np.float32)
    bias = rng.standard_normal(37).astype(np.float32)
    res = rng.standard_normal(acc.shape).astype(np.float32)
    xb = ck.pack_bits(torch.from_numpy(x).permute(0, 2, 3, 1).to(device))
    wb = ck.pack_conv_weight(torch.from_numpy(w).to(device))
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    y = ck.bconv2d(xb, wb, 45, 3, 1, 1, 0, output="float", mult=t(mult), bias=t(bias), residual=t(res), algo=algo)
    assert np.array_equal(y.cpu().numpy(), (acc.astype(np.float32) * mult + bias) + res)
    thresh, flip = np.zeros(37, np.int32), (rng.random(37) < 0.5).astype(np.uint8)
    bits = ck.bconv2d(xb, wb, 45, 3, 1, 1, 0, output="bits", thresh=t(thresh), flip=t(flip), out_words=4, algo=algo)
    plus = np.where(flip.astype(bool), acc <= thresh, acc >= thresh)
    bits = bits.cpu().numpy()
    assert np.array_equal(bits[..., :2], npref.pack_bits(np.where(plus, 1.0, -1.0)).view(np.int32))
    assert (bits[..., 2:] == 0).all()


def test_bad_inputs_say_what_is_wrong():
    a = torch.zeros(3, 8, dtype=torch.int32)
    with pytest.raises(TypeError, match="int32"):
        ck.bgemm(a.float(), a, 10)
    with pytest.raises(ValueError, match="words per row"):
        ck.bgemm(a, torch.zeros(3, 16, dtype=torch.int32), 10)
    with pytest.raises(ValueError, match="do not fit"):
        ck.bgemm(a, a, 257)
    with pytest.raises(ValueError, match="unknown output"):
        ck.bgemm(a, a, 10, output="half")
    with pytest.raises(ValueError, match="needs thresh"):
        ck.bgemm(a, a, 10, output="bits")
    with pytest.raises(ValueError, match="unknown algo"):
        ck.bgemm(a, a, 10, algo="fast")
    with pytest.raises(ValueError, match="one value per output column"):
        ck.bgemm(a, a, 10, output="float", mult=torch.ones(4))
    with pytest.raises(TypeError, match="floating-point"):
        ck.pack_bits(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="cannot hold"):
        ck.pack_bits(torch.zeros(3, 65), 2)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ck.pack_bits(torch.zeros(3, 4), backend="cuda")
    with pytest.raises(ValueError, match="pad_value"):
        ck.bconv2d(torch.zeros(1, 3, 3, 1, dtype=torch.int32), torch.zeros(2, 3, 3, 1, dtype=torch.int32), 5, 3,
                   pad_value=2)


@cuda_only
def test_tiled_kernels_refuse_unaligned_rows():
    a = torch.zeros(64, 3, dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="multiple of 8 words"):
        ck.bgemm(a, a, 90, algo="tiled_csa")


@cuda_only
def test_sgemm_baseline_equals_matmul():
    g = torch.Generator().manual_seed(9)
    a, w = torch.randn(70, 300, generator=g), torch.randn(45, 300, generator=g)
    y = ck.sgemm_baseline(a.cuda(), w.cuda()).cpu()
    assert torch.allclose(y, a.double().matmul(w.double().T).float(), rtol=1e-4, atol=1e-4)
