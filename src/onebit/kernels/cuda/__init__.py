"""XNOR-popcount kernels for NVIDIA GPUs, callable on PyTorch CUDA tensors (BNN paper §3–4).

The kernels (``xnor.cu``) are compiled with nvcc on first use (a few seconds, cached; see
:mod:`._build`). Every function here also runs on CPU tensors through the plain-PyTorch
reference twins in :mod:`.reference`, so code above the kernels works and is tested everywhere.

Conventions — the CPU engine's (:mod:`onebit.kernels`), on 32-bit words:

* a packed bit is 1 for −1 (``x < 0``) and 0 for +1 (``x >= 0``, −0.0 and NaN too), LSB first:
  element ``k`` of a row is bit ``k % 32`` of word ``k // 32``; unused bits are 0;
* ``dot = K − 2·popcount(a XOR b)`` for two ±1 rows of length K;
* a ``.onebit`` uint64 word is two of these words, low half first (``w.view(torch.int32)``).

GEMM operands are int32 tensors of shape (rows, W) with W a multiple of 8 words (256 bits);
:func:`pack_bits` makes them (``stride=gemm_words(K)``). Output transforms per column n
(``output=``): ``"int"`` accumulators; ``"float"`` ``acc·mult[n] + bias[n] (+ residual)``,
rounded after the product and after each sum (no FMA: bit-identical to the CPU kernels and to
:func:`.reference.epilogue`); ``"bits"`` +1 iff ``acc ≥ thresh[n]`` (``≤`` where ``flip[n]``),
packed along n — BatchNorm followed by sign as one integer compare (see
:func:`onebit.kernels.fold_affine_sign`).
"""

from __future__ import annotations

import torch

from . import reference
from ._build import CudaBuildError, find_nvcc

__all__ = ["ALGOS", "CudaBuildError", "bconv2d", "bgemm", "conv_correction", "gemm_words", "is_available",
           "pack_bits", "sgemm_baseline", "words_for", "pack_conv_weight", "pack_linear_weight"]

#: GEMM algorithms of ``xnor.cu``: auto picks "small_m" for batches <= 64, else "tiled" (fastest on an H100).
ALGOS = {"auto": 0, "tiled_csa": 1, "tiled": 2, "small_m": 3, "paper": 4, "naive": 5}
_OUTPUTS = {"int": 0, "float": 1, "bits": 2}


def words_for(k: int) -> int:
    """32-bit words holding ``k`` bits."""
    return (k + 31) // 32


def gemm_words(k: int) -> int:
    """Row length in words of a GEMM operand of ``k`` bits (a multiple of 8 words)."""
    return -(-words_for(k) // 8) * 8


def is_available() -> bool:
    """True when a CUDA device is present and nvcc can build the kernels."""
    return torch.cuda.is_available() and find_nvcc() is not None


def _lib(t: torch.Tensor):
    from ._build import load

    major, minor = torch.cuda.get_device_capability(t.device)
    return load(f"{major}{minor}")


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"onebit CUDA {what} failed with code {rc}")


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _use_cuda(t: torch.Tensor, backend: str) -> bool:
    if backend not in ("auto", "cuda", "torch"):
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'cuda' or 'torch'")
    if backend == "cuda" and not t.is_cuda:
        raise ValueError("backend='cuda' needs CUDA tensors")
    return t.is_cuda and backend != "torch"


def pack_bits(x: torch.Tensor, stride: int | None = None, *, backend: str = "auto") -> torch.Tensor:
    """(..., K) real → (..., stride) int32 words with bit = (x < 0); ``stride`` defaults to ceil(K/32)."""
    if not x.is_floating_point():
        raise TypeError(f"pack_bits needs a floating-point tensor, got {x.dtype}")
    k = x.shape[-1]
    stride = words_for(k) if stride is None else int(stride)
    if stride < words_for(k):
        raise ValueError(f"stride {stride} words cannot hold {k} bits")
    if not _use_cuda(x, backend):
        return reference.pack_rows(x, stride)
    xf = x.to(torch.float32).contiguous()
    m = xf.numel() // k if k else 0
    out = torch.empty(*x.shape[:-1], stride, dtype=torch.int32, device=x.device)
    if m:
        _check(_lib(x).onebit_pack_rows(xf.data_ptr(), out.data_ptr(), m, k, stride, _stream(x)), "pack")
    return out


def pack_linear_weight(w: torch.Tensor) -> torch.Tensor:
    """(N, K) weights → (N, gemm_words(K)) words of their signs."""
    return pack_bits(w, gemm_words(w.shape[1]))


def pack_conv_weight(w: torch.Tensor, words_per_pixel: int | None = None) -> torch.Tensor:
    """(C_out, C_in, kh, kw) weights → (C_out, kh, kw, words_per_pixel) words of their signs (NHWC)."""
    return pack_bits(w.permute(0, 2, 3, 1), words_per_pixel)


def _operand(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype != torch.int32 or t.dim() != 2:
        raise TypeError(f"{name} must be a 2-D int32 tensor of packed words, got {t.dtype} {tuple(t.shape)}")
    return t.contiguous()


def _vec(v, n: int, dtype: torch.dtype, device, name: str) -> torch.Tensor | None:
    if v is None:
        return None
    v = torch.as_tensor(v, device=device)
    if v.numel() != n:
        raise ValueError(f"{name} must have one value per output column ({n}), got {v.numel()}")
    return v.reshape(n).to(dtype).contiguous()


def bgemm(a: torch.Tensor, b: torch.Tensor, k: int, *, output: str = "int", mult=None, bias=None,
          residual: torch.Tensor | None = None, thresh=None, flip=None, corr: torch.Tensor | None = None,
          out_stride: int | None = None, algo: str = "auto", backend: str = "auto") -> torch.Tensor:
    """Binary GEMM ``acc[m, n] = K − 2·popcount(a[m] XOR b[n]) − corr[m mod P, n]`` + output transform.

    ``a`` (M, W) and ``b`` (N, W) int32 words; ``k`` the number of real bits per row (bits past it
    must be 0 in both). ``corr`` (P, N) int32, optional. Returns (M, N) int32 / float32, or for
    ``output="bits"`` (M, out_stride) int32 words (default ``ceil(N/32)``; extra words are 0).
    """
    a, b = _operand(a, "a"), _operand(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} words per row, b {b.shape[1]}")
    if not 0 <= k <= 32 * a.shape[1]:
        raise ValueError(f"k={k} bits do not fit in {a.shape[1]} words")
    if a.device != b.device:
        raise ValueError("a and b are on different devices")
    if output not in _OUTPUTS:
        raise ValueError(f"unknown output {output!r}; use 'int', 'float' or 'bits'")
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; use one of {sorted(ALGOS)}")
    m, n = a.shape[0], b.shape[0]
    dev = a.device
    mult = _vec(mult, n, torch.float32, dev, "mult")
    bias = _vec(bias, n, torch.float32, dev, "bias")
    if output == "bits":
        if thresh is None:
            raise ValueError("output='bits' needs thresh")
        thresh = _vec(thresh, n, torch.int32, dev, "thresh")
        flip = _vec(flip, n, torch.uint8, dev, "flip")
        out_stride = words_for(n) if out_stride is None else int(out_stride)
        if out_stride < words_for(n):
            raise ValueError(f"out_stride {out_stride} words cannot hold {n} bits")
    if residual is not None:
        if output != "float":
            raise ValueError("a residual is added to float outputs only")
        if tuple(residual.shape) != (m, n):
            raise ValueError(f"residual must be ({m}, {n}), got {tuple(residual.shape)}")
        residual = residual.to(device=dev, dtype=torch.float32).contiguous()
    if corr is not None:
        if corr.dim() != 2 or corr.shape[1] != n or corr.shape[0] < 1:
            raise ValueError(f"corr must be (P, {n}), got {tuple(corr.shape)}")
        corr = corr.to(device=dev, dtype=torch.int32).contiguous()
    if not _use_cuda(a, backend):
        acc = reference.bgemm_int(a, b, k)
        if corr is not None:
            idx = torch.arange(m, device=dev) % corr.shape[0]
            acc = acc - corr[idx]
        return reference.epilogue(acc, output, mult=mult, bias=bias, residual=residual, thresh=thresh,
                                  flip=flip, out_stride=out_stride)
    code = ALGOS[algo]
    if code in (1, 2, 0) and a.shape[1] % 8:
        if code != 0 or m > 64:
            raise ValueError(f"the tiled kernels need rows of a multiple of 8 words, got {a.shape[1]}: "
                             "pack with stride=gemm_words(K)")
    if code in (4, 5) and (output != "int" or corr is not None):
        raise ValueError(f"algo {algo!r} computes plain int accumulators only")
    if output == "bits":
        out = torch.zeros(m, out_stride, dtype=torch.int32, device=dev)
        stride = out_stride
    else:
        out = torch.empty(m, n, dtype=torch.int32 if output == "int" else torch.float32, device=dev)
        stride = n
    rc = _lib(a).onebit_bgemm(code, a.data_ptr(), b.data_ptr(), m, n, a.shape[1], k, _OUTPUTS[output],
                              _ptr(mult), _ptr(bias), _ptr(residual), _ptr(thresh), _ptr(flip), _ptr(corr),
                              corr.shape[0] if corr is not None else 1, out.data_ptr(), stride, _stream(a))
    _check(rc, "bgemm")
    return out


def sgemm_baseline(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``a @ w.T`` with the BNN paper's unoptimised float kernel (16×16 shared-memory tiles); CUDA only."""
    if not (a.is_cuda and w.is_cuda):
        raise ValueError("sgemm_baseline runs on CUDA tensors only")
    a = a.to(torch.float32).contiguous()
    w = w.to(torch.float32).contiguous()
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"inner sizes differ: {a.shape[1]} vs {w.shape[1]}")
    out = torch.empty(a.shape[0], w.shape[0], dtype=torch.float32, device=a.device)
    _check(_lib(a).onebit_sgemm_baseline(a.data_ptr(), w.data_ptr(), a.shape[0], w.shape[0], a.shape[1],
                                         out.data_ptr(), _stream(a)), "sgemm_baseline")
    return out


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def conv_correction(w_packed: torch.Tensor, c_in: int, hw: tuple[int, int], kernel, stride, padding) -> torch.Tensor:
    """(OH·OW, C_out) int32: ``Σ_{padded taps} Σ_c w`` — what +1 padding adds over exact zero padding."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    h, w = hw
    bits = reference.unpack_rows(w_packed, c_in).double()  # (Co, kh, kw, C) 0/1
    tap_sum = (c_in - 2 * bits.sum(-1)).reshape(w_packed.shape[0], kh * kw)  # Σ_c w per tap
    ones = torch.ones(1, 1, h, w, dtype=torch.float64, device=w_packed.device)
    valid = torch.nn.functional.unfold(ones, (kh, kw), padding=(ph, pw), stride=(sh, sw))[0]  # (kh·kw, OH·OW)
    return ((1 - valid).T @ tap_sum.T).round().to(torch.int32)


def _pad_word(pad_value: int, c_in: int, words: int, device) -> torch.Tensor:
    """The packed pixel that spatial padding holds: +1 (and 0, corrected later) → 0 bits; −1 → ones."""
    if pad_value != -1:
        return torch.zeros(words, dtype=torch.int32, device=device)
    return reference.pack_rows(-torch.ones(c_in, device=device), words)


def bconv2d(x: torch.Tensor, w: torch.Tensor, c_in: int, kernel, stride=1, padding=0, pad_value: int = 1, *,
            output: str = "int", mult=None, bias=None, residual: torch.Tensor | None = None, thresh=None,
            flip=None, corr: torch.Tensor | None = None, out_words: int | None = None, algo: str = "auto",
            backend: str = "auto") -> torch.Tensor:
    """Binary conv2d on packed NHWC words: im2col over words, then :func:`bgemm`.

    ``x`` (N, H, W, Wx) int32 with ``Wx >= ceil(C_in/32)`` words per pixel; ``w`` (C_out, kh, kw, Wx).
    ``pad_value`` ±1 pads with that value; 0 is exact zero padding through the correction table
    (:func:`conv_correction`; pass ``corr`` to reuse one). Output (N, OH, OW, C_out) int/float, or
    (N, OH, OW, out_words) words for ``output="bits"`` (default ``ceil(C_out/32)``).
    ``residual`` (N, OH, OW, C_out) float is added to a float output.
    """
    if x.dim() != 4 or w.dim() != 4 or x.dtype != torch.int32 or w.dtype != torch.int32:
        raise TypeError("bconv2d takes packed int32 tensors x (N, H, W, words) and w (C_out, kh, kw, words)")
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    if pad_value not in (0, 1, -1):
        raise ValueError(f"pad_value must be 0, +1 or -1, not {pad_value!r}")
    nb, h, wd, words = x.shape
    if tuple(w.shape[1:]) != (kh, kw, words):
        raise ValueError(f"weights {tuple(w.shape)} do not match kernel {(kh, kw)} and {words} words per pixel")
    if words < words_for(c_in):
        raise ValueError(f"{words} words per pixel cannot hold {c_in} channels")
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{wd} input with padding {(ph, pw)}")
    if ph or pw:
        xp = _pad_word(pad_value, c_in, words, x.device).expand(nb, h + 2 * ph, wd + 2 * pw, words).clone()
        xp[:, ph:ph + h, pw:pw + wd] = x
    else:
        xp = x
    cols = xp.unfold(1, kh, sh).unfold(2, kw, sw)  # (N, OH, OW, words, kh, kw)
    cols = cols.permute(0, 1, 2, 4, 5, 3).reshape(nb * oh * ow, kh * kw * words)
    k_words = gemm_words(kh * kw * words * 32)
    a = torch.nn.functional.pad(cols, (0, k_words - cols.shape[1]))
    b = torch.nn.functional.pad(w.reshape(w.shape[0], -1), (0, k_words - cols.shape[1]))
    if pad_value == 0 and (ph or pw) and corr is None:
        corr = conv_correction(w, c_in, (h, wd), (kh, kw), (sh, sw), (ph, pw))
    elif pad_value != 0 or not (ph or pw):
        corr = None
    cout = w.shape[0]
    res = residual.reshape(nb * oh * ow, cout) if residual is not None else None
    out = bgemm(a, b, kh * kw * c_in, output=output, mult=mult, bias=bias, residual=res, thresh=thresh,
                flip=flip, corr=corr, out_stride=out_words, algo=algo, backend=backend)
    return out.reshape(nb, oh, ow, out.shape[1])
