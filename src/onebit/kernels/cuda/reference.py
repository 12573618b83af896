"""Plain-PyTorch reference twins of the CUDA kernels (any device; exact; slow).

They define what the kernels compute and serve as the fallback where no GPU is present, so the
layer and im2col code above the kernels is tested on every machine. Conventions: see
:mod:`onebit.kernels.cuda` (bit 1 = −1, LSB first, 32-bit words).
"""

from __future__ import annotations

import torch

_U32 = 1 << 32


def to_int32(v: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) → int32 with the same 32 bits."""
    return torch.where(v >= 1 << 31, v - _U32, v).to(torch.int32)


def pack_rows(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(..., K) real → (..., stride) int32 words, bit k%32 of word k//32 = (x[k] < 0)."""
    k = x.shape[-1]
    bits = (x < 0).to(torch.int64)
    pad = stride * 32 - k
    if pad < 0:
        raise ValueError(f"{k} values do not fit in {stride} words")
    bits = torch.nn.functional.pad(bits, (0, pad))
    shifts = torch.arange(32, device=x.device, dtype=torch.int64)
    words = (bits.reshape(*x.shape[:-1], stride, 32) << shifts).sum(-1)
    return to_int32(words)


def unpack_rows(w: torch.Tensor, k: int) -> torch.Tensor:
    """(..., words) int32 → (..., k) bits as int64 0/1."""
    shifts = torch.arange(32, device=w.device, dtype=torch.int64)
    bits = (w.to(torch.int64).unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*w.shape[:-1], w.shape[-1] * 32)[..., :k]


def bgemm_int(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """``K − 2·popcount(a XOR b)`` over rows: (M, W) × (N, W) words → (M, N) int32 (exact, float64)."""
    abits = unpack_rows(a, a.shape[-1] * 32).double()
    bbits = unpack_rows(b, b.shape[-1] * 32).double()
    mism = abits @ (1 - bbits).T + (1 - abits) @ bbits.T
    return (k - 2 * mism).round().to(torch.int32)


def epilogue(acc: torch.Tensor, output: str, *, mult=None, bias=None, residual=None, thresh=None, flip=None,
             out_stride: int | None = None) -> torch.Tensor:
    """The fused output transforms, with the kernels' rounding (float: mul, then add, each in fp32)."""
    if output == "int":
        return acc
    n = acc.shape[1]
    if output == "float":
        v = acc.to(torch.float32)
        if mult is not None:
            v = v * mult
        if bias is not None:
            v = v + bias
        if residual is not None:
            v = v + residual
        return v
    if flip is None:
        flip = torch.zeros(n, dtype=torch.uint8, device=acc.device)
    plus = torch.where(flip.bool(), acc <= thresh, acc >= thresh)
    minus = torch.where(plus, -1.0, 1.0)  # packs to bit 1 exactly where the decision is −1
    words = pack_rows(-minus, out_stride if out_stride is not None else (n + 31) // 32)
    return words
