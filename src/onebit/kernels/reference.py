"""Pure-NumPy reference implementations of the onebit binary kernels (used by the tests).

Conventions (the same as the C++ core, see :mod:`onebit.kernels`):

* ``sign(x) = +1`` for ``x >= 0`` (including ``-0.0``), ``-1`` for ``x < 0``; never 0.
* Packed bits: bit = 1 iff the value is -1; channels (last axis) are packed LSB-first into
  uint64 words, channel ``c`` -> word ``c // 64``, bit ``c % 64``; tail bits are 0.
* For two +-1 vectors of length K: ``dot = K - 2 * popcount(a XOR b)``.

Everything here is deliberately simple (explicit padding + im2col + einsum) and slow.
This module must not import torch.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "sign",
    "pack_bits",
    "unpack_bits",
    "conv2d_pm1",
    "gemm_pm1",
    "affine",
    "threshold_pm1",
    "maxpool2d_pm1",
    "random_pm1",
]


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def sign(x: np.ndarray) -> np.ndarray:
    """+1 where x >= 0 (also for -0.0), -1 where x < 0 (NaN -> +1), as float32."""
    x = np.asarray(x)
    return np.where(x < 0, np.float32(-1), np.float32(1)).astype(np.float32)


def random_pm1(shape, rng: np.random.Generator) -> np.ndarray:
    """Random +-1 float32 array."""
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def pack_bits(x: np.ndarray) -> np.ndarray:
    """(..., C) float -> (..., ceil(C/64)) uint64 with bit = (x < 0), LSB first."""
    x = np.asarray(x)
    C = x.shape[-1]
    kw = (C + 63) // 64
    bits = (x < 0).astype(np.uint8)
    padded = np.zeros(x.shape[:-1] + (kw * 64,), dtype=np.uint8)
    padded[..., :C] = bits
    by = np.packbits(padded, axis=-1, bitorder="little")  # (..., kw*8) bytes, little-endian
    return np.ascontiguousarray(by).view("<u8").astype(np.uint64).reshape(x.shape[:-1] + (kw,))


def unpack_bits(p: np.ndarray, C: int) -> np.ndarray:
    """(..., ceil(C/64)) uint64 -> (..., C) float32 +-1."""
    p = np.ascontiguousarray(p, dtype=np.uint64)
    by = p.astype("<u8").view(np.uint8).reshape(p.shape[:-1] + (p.shape[-1] * 8,))
    bits = np.unpackbits(by, axis=-1, bitorder="little")[..., :C]
    return np.where(bits == 1, np.float32(-1), np.float32(1)).astype(np.float32)


def conv2d_pm1(
    x: np.ndarray,
    w: np.ndarray,
    stride=1,
    padding=0,
    pad_value: int = 1,
    layout: str = "NCHW",
) -> np.ndarray:
    """Exact integer 2-D cross-correlation of +-1 tensors (what F.conv2d computes).

    x: (N, C, H, W) if layout == "NCHW" else (N, H, W, C); w: (C_out, C_in, kh, kw).
    The border is padded with ``pad_value`` (+1, -1 or 0 = ordinary zero padding).
    Returns int64 accumulators in the same layout as x.
    """
    if pad_value not in (1, -1, 0):
        raise ValueError("pad_value must be +1, -1 or 0")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    x = np.asarray(x)
    if layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    elif layout != "NHWC":
        raise ValueError("layout must be 'NCHW' or 'NHWC'")
    xi = np.rint(x).astype(np.int32)
    wi = np.rint(np.asarray(w)).astype(np.int32)
    co, ci, kh, kw = wi.shape
    if xi.shape[-1] != ci:
        raise ValueError(f"x has {xi.shape[-1]} channels, w expects {ci}")
    xp = np.pad(xi, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=pad_value)
    N, Hp, Wp, _ = xp.shape
    OH = (Hp - kh) // sh + 1
    OW = (Wp - kw) // sw + 1
    # im2col: (N, OH, OW, kh, kw, C)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))  # N,H',W',C,kh,kw
    win = win[:, : (OH - 1) * sh + 1 : sh, : (OW - 1) * sw + 1 : sw]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(N, OH, OW, kh * kw * ci).astype(np.float64)
    wm = wi.transpose(0, 2, 3, 1).reshape(co, kh * kw * ci).astype(np.float64)
    acc = np.rint(cols @ wm.T).astype(np.int64)  # exact: |values| < 2**53
    if layout == "NCHW":
        acc = acc.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(acc)


def gemm_pm1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) +-1, b (N, K) +-1 -> exact int64 (M, N) = a @ b.T."""
    return np.rint(np.asarray(a, np.float64) @ np.asarray(b, np.float64).T).astype(np.int64)


def affine(acc: np.ndarray, mult=None, bias=None, residual=None) -> np.ndarray:
    """float32 output transform, in the kernel's exact operation order (channels last):
    y = float32(acc) * mult + bias (+ residual), each step rounded to float32 (no FMA)."""
    y = np.asarray(acc).astype(np.float32)
    C = y.shape[-1]
    m = np.ones(C, np.float32) if mult is None else np.asarray(mult, np.float32)
    b = np.zeros(C, np.float32) if bias is None else np.asarray(bias, np.float32)
    y = (y * m).astype(np.float32)
    y = (y + b).astype(np.float32)
    if residual is not None:
        y = (y + np.asarray(residual, np.float32)).astype(np.float32)
    return y


def threshold_pm1(acc: np.ndarray, thresh, flip=None) -> np.ndarray:
    """+1 iff (flip ? acc <= thresh : acc >= thresh), else -1 (channels last), float32."""
    acc = np.asarray(acc).astype(np.int64)
    th = np.asarray(thresh).astype(np.int64)
    fl = np.zeros(acc.shape[-1], bool) if flip is None else np.asarray(flip).astype(bool)
    pos = np.where(fl, acc <= th, acc >= th)
    return np.where(pos, np.float32(1), np.float32(-1)).astype(np.float32)


def maxpool2d_pm1(x: np.ndarray, kernel, stride=None, padding=0, min_channels=None) -> np.ndarray:
    """Max pool (min pool for channels flagged in ``min_channels``) of an NHWC +-1 float
    tensor with PyTorch semantics (floor mode, padding ignored)."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(kernel if stride is None else stride)
    ph, pw = _pair(padding)
    x = np.asarray(x, np.float32)
    N, H, W, C = x.shape
    mins = np.zeros(C, bool) if min_channels is None else np.asarray(min_channels, bool)
    xmax = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-np.inf)
    xmin = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=np.inf)
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    out = np.empty((N, OH, OW, C), np.float32)
    for oh in range(OH):
        for ow in range(OW):
            hs, ws = oh * sh, ow * sw
            mx = xmax[:, hs : hs + kh, ws : ws + kw].max(axis=(1, 2))
            mn = xmin[:, hs : hs + kh, ws : ws + kw].min(axis=(1, 2))
            out[:, oh, ow] = np.where(mins, mn, mx)
    return out


def quantize_s8(x: np.ndarray, act_scale: float, unsigned: bool = False) -> np.ndarray:
    """``clip(rint(x · fl(1/s)), −127, 127)`` int8, or ``clip(…, 0, 255)`` uint8 (float32 arithmetic)."""
    s = np.float32(act_scale)
    lo, hi, dt = (0, 255, np.uint8) if unsigned else (-127, 127, np.int8)
    return np.clip(np.rint(x.astype(np.float32) * (np.float32(1) / s)), lo, hi).astype(dt)


def iconv2d_s8(x: np.ndarray, w: np.ndarray, act_scale: float, kernel, stride=1, padding=0, *, unsigned=False,
               scale=None, bias=None, residual=None, relu=False) -> np.ndarray:
    """Reference int8 conv: ``x`` float NHWC, ``w`` int (C_out, kh, kw, C_in); exact integer sums,
    then ``fl(fl(acc·scale) + bias)``, ``+ residual``, ``max(·, 0)`` — the C++ kernel's order."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    q = quantize_s8(x, act_scale, unsigned).astype(np.int64)
    q = np.pad(q, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    n, h, wd, c = q.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    cols = np.stack([q[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
                     for i in range(kh) for j in range(kw)], axis=3).reshape(n, oh, ow, kh * kw * c)
    acc = (cols @ w.reshape(w.shape[0], -1).astype(np.int64).T).astype(np.float32)
    y = acc * np.float32(1) if scale is None else acc * np.asarray(scale, np.float32)
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    if residual is not None:
        y = y + residual.astype(np.float32)
    return np.maximum(y, np.float32(0)) if relu else y.astype(np.float32)


def nchw_to_nhwc(x: np.ndarray, *, pm1: bool = False) -> np.ndarray:
    """(N, C, H, W) → (N, H, W, C); ``pm1``: uint8 → float32 ``x/127.5 - 1`` (the BNN preprocessing)."""
    y = np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))
    return y.astype(np.float32) / np.float32(127.5) - np.float32(1) if pm1 else y


def to_bf16(v: np.ndarray) -> np.ndarray:
    """Nearest bfloat16 (ties to even) of float32 values, returned as float32."""
    u = np.ascontiguousarray(v, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return (u & 0xFFFFFFFF).astype(np.uint32).view(np.float32)


def bf16_halves(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` with ``hi = bf16(v)``, ``lo = bf16(v − hi)`` (float32)."""
    v = np.asarray(v, dtype=np.float32)
    hi = to_bf16(v)
    return hi, to_bf16(v - hi)


def fconv2d_bf16x3(x: np.ndarray, w: np.ndarray, kernel, stride=1, padding=0, *, scale=None, bias=None,
                   residual=None, relu=False) -> np.ndarray:
    """Reference of :func:`onebit.kernels.fconv2d_bf16x3` in float64: the conv of the split
    operands, ``xh·wh + xh·wl + xl·wh``, then the output transform of :func:`fconv2d_f32`."""
    xh, xl = bf16_halves(x)
    wh, wl = bf16_halves(w)
    conv = lambda a, b: fconv2d_f32(a, b, kernel, stride, padding)  # noqa: E731
    return _output_transform(conv(xh, wh) + conv(xh, wl) + conv(xl, wh), scale, bias, residual, relu)


def fconv2d_bf16(x: np.ndarray, w: np.ndarray, kernel, stride=1, padding=0, *, scale=None, bias=None,
                 residual=None, relu=False) -> np.ndarray:
    """Reference of :func:`onebit.kernels.fconv2d_bf16` in float64: the conv of ``bf16(x)`` and
    ``bf16(w)``, then the output transform of :func:`fconv2d_f32`."""
    y = fconv2d_f32(to_bf16(x), to_bf16(w), kernel, stride, padding)
    return _output_transform(y, scale, bias, residual, relu)


def _output_transform(y: np.ndarray, scale, bias, residual, relu: bool) -> np.ndarray:
    """``y·scale + bias (+ residual)``, then ``max(y, 0)`` when ``relu`` (float64)."""
    if scale is not None:
        y = y * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    if residual is not None:
        y = y + residual
    return np.maximum(y, 0) if relu else y


def fconv2d_f32(x: np.ndarray, w: np.ndarray, kernel, stride=1, padding=0, *, scale=None, bias=None, residual=None,
                relu=False) -> np.ndarray:
    """Reference float conv in float64 (``x`` NHWC, ``w`` (C_out, kh, kw, C_in)), zero padding, then
    ``y·scale + bias (+ residual)``, ``max(y, 0)``."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    n, h, wd, c = xp.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    cols = np.stack([xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
                     for i in range(kh) for j in range(kw)], axis=3).reshape(n, oh, ow, kh * kw * c)
    y = cols @ w.reshape(w.shape[0], -1).astype(np.float64).T
    return _output_transform(y, scale, bias, residual, relu)
