"""NumPy-facing wrappers over the C++ core ``onebit.kernels._core``.

All heavy argument validation (dtype, shape, contiguity, alignment) happens in the C++
module, which raises ``ValueError`` with a message naming the offending argument; this
layer normalises Python arguments (ints -> pairs, None -> defaults) and documents the API.
"""

from __future__ import annotations

import contextlib
import numbers
import threading
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

try:  # the compiled module; reference.py stays usable without it
    from . import _core
    _CORE_ERROR: Optional[BaseException] = None
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _core = None
    _CORE_ERROR = exc

IntPair = Union[int, Tuple[int, int], Sequence[int]]


def _c():
    if _core is None:
        raise ImportError(
            "onebit.kernels._core is not built; install the package "
            "(pip install -e .) or build it with CMake"
        ) from _CORE_ERROR
    return _core


def _pair(v: IntPair, name: str) -> Tuple[int, int]:
    if type(v) is int:  # the common cases first: this runs on every layer call of the engine
        return v, v
    if (type(v) is tuple or type(v) is list) and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:
        return v[0], v[1]
    if isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    try:
        a, b = v  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    for e in (a, b):
        if not isinstance(e, (numbers.Integral, np.integer)) or isinstance(e, bool):
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


def _threads(threads: Optional[int]) -> int:
    if threads is None:
        return 0
    if type(threads) is int and threads >= 1:
        return threads
    if not isinstance(threads, (numbers.Integral, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return int(threads)


# --------------------------------------------------------------------------- ISA / threads

def isa_paths() -> list:
    """ISA paths usable on this CPU, best last (subset of ['portable', 'avx2', 'avx512'])."""
    return list(_c().isa_paths())


def float_paths() -> list:
    """Paths of the float conv (:func:`fconv2d_f32`) this CPU runs, best last (subset of
    ['portable', 'avx2', 'avx512']; 'avx2' needs AVX2 and FMA3). ``path="auto"`` follows the
    active ISA path: avx512 → 'avx512', avx2 → 'avx2', portable → 'portable'."""
    return list(_c().float_paths())


def get_isa() -> str:
    """The ISA path the kernels currently dispatch to."""
    return _c().get_isa()


def set_isa(name: str) -> None:
    """Force an ISA path (ValueError if unknown or unavailable on this CPU).
    Process-global; mostly for tests and benchmarks."""
    _c().set_isa(str(name))


_isa_lock = threading.RLock()


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[str]:
    """Context manager forcing an ISA path, restoring the previous one on exit."""
    with _isa_lock:
        prev = get_isa()
        set_isa(name)
        try:
            yield name
        finally:
            set_isa(prev)


def set_num_threads(n: int) -> None:
    """Default number of threads of every kernel (a per-call ``threads=`` overrides it)."""
    _c().set_num_threads(int(n))


def get_num_threads() -> int:
    return int(_c().get_num_threads())


def cpu_info() -> dict:
    """CPU features relevant to the kernels (cpuid + OS support)."""
    return dict(_c().cpu_info())


def peak_microbench(threads: Optional[int] = None, seconds: float = 0.3) -> float:
    """Binary MAC/s of a tight xor+popcount+add loop on L1-resident data on the current
    ISA path, summed over ``threads`` threads (best of 3): the popcount peak."""
    return float(_c().peak_microbench(_threads(threads), float(seconds)))


# --------------------------------------------------------------------------- packing

def pack_bits(x: np.ndarray, *, threads: Optional[int] = None) -> np.ndarray:
    """float32 (..., C) -> uint64 (..., ceil(C/64)); bit = 1 iff x < 0 (a comparison, so
    +0.0 and -0.0 both pack as +1, NaN packs as +1); LSB-first; tail bits 0."""
    return _c().pack_bits(x, _threads(threads))


def unpack_bits(p: np.ndarray, C: int, *, threads: Optional[int] = None) -> np.ndarray:
    """uint64 (..., ceil(C/64)) -> float32 (..., C) of +-1 (bit 1 -> -1.0)."""
    return _c().unpack_bits(p, int(C), _threads(threads))


def pack_conv_weights(w: np.ndarray) -> np.ndarray:
    """PyTorch-layout conv weights (C_out, C_in, kh, kw) (any real values, binarised with
    sign) -> packed (C_out, kh, kw, ceil(C_in/64)) uint64."""
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"w must be (C_out, C_in, kh, kw), got shape {w.shape}")
    return pack_bits(np.ascontiguousarray(w.transpose(0, 2, 3, 1), dtype=np.float32))


def pack_dense_weights(w: np.ndarray) -> np.ndarray:
    """Dense weights (N_out, K) -> packed (N_out, ceil(K/64)) uint64."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"w must be (N_out, K), got shape {w.shape}")
    return pack_bits(np.ascontiguousarray(w, dtype=np.float32))


def prepare_conv_weights(w_packed: np.ndarray, c_in: int):
    """Re-lay packed conv weights (C_out, kh, kw, ceil(c_in/64)) once for the kernels.
    Returns a ``ConvWeights`` that bconv2d / BConv2d accept in place of the raw array."""
    w = np.asarray(w_packed) if not isinstance(w_packed, np.ndarray) else w_packed
    if isinstance(w, np.ndarray) and w.ndim != 4:
        raise ValueError(f"w_packed must be 4-D (C_out, kh, kw, words), got shape {w.shape}")
    return _c().ConvWeights(w, int(c_in))


def prepare_dense_weights(b_packed: np.ndarray, K: int):
    """Re-lay packed dense weights (N_out, ceil(K/64)) once (a 1x1 ``ConvWeights``)."""
    if isinstance(b_packed, np.ndarray) and b_packed.ndim != 2:
        raise ValueError(f"b_packed must be 2-D (N_out, words), got shape {b_packed.shape}")
    return _c().ConvWeights(b_packed, int(K))


# --------------------------------------------------------------------------- conv / gemm

_OUTPUTS = ("int", "float", "bits")


def _prepared(w, c_in, kernel, dense: bool):
    core = _c()
    if isinstance(w, core.ConvWeights):
        if c_in is not None and int(c_in) != w.c_in:
            raise ValueError(f"c_in={c_in} does not match the prepared weights' c_in={w.c_in}")
        W = w
    else:
        if c_in is None:
            raise ValueError("c_in (K for bgemm) is required with raw packed weights")
        W = prepare_dense_weights(w, c_in) if dense else prepare_conv_weights(w, c_in)
    if kernel is not None and _pair(kernel, "kernel") != tuple(W.kernel):
        raise ValueError(f"kernel={kernel!r} does not match the weights' kernel {tuple(W.kernel)}")
    if dense and tuple(W.kernel) != (1, 1):
        raise ValueError("dense weights must be 1x1")
    return W


class BConv2d:
    """A prepared binary conv layer (weights re-laid once, transform arrays padded once).

    ``layer(x_packed, residual=None, out=None, threads=None)`` runs it on packed NHWC input
    (N, H, W, ceil(c_in/64)) uint64. See :func:`bconv2d` for the parameters. With
    ``output="float"``, ``signs=True`` returns ``(y, pack_bits(y))``: the signs are packed in the
    conv's epilogue (bit 1 ⇔ y < 0), the next binary conv's input without a pass of its own.
    """

    def __init__(self, w, c_in: Optional[int] = None, kernel: Optional[IntPair] = None,
                 stride: IntPair = 1, padding: IntPair = 0, pad_value: int = 1, *,
                 output: str = "int", mult=None, bias=None, thresh=None, flip=None):
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        self.weights = _prepared(w, c_in, kernel, dense=False)
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.pad_value = int(pad_value)
        self.output = output
        self._plan = _c().ConvPlan(self.weights, self.stride, self.padding, self.pad_value,
                                   output, mult, bias, thresh, flip, False)

    def __call__(self, x, residual=None, out=None, threads: Optional[int] = None, signs: bool = False):
        return self._plan(x, residual, out, _threads(threads), bool(signs))

    def output_shape(self, x_shape) -> tuple:
        return tuple(self._plan.output_shape(list(x_shape)))


class BDense:
    """A prepared binary dense layer: ``layer(a_packed (M, ceil(K/64)), ...)``; see bgemm."""

    def __init__(self, b, K: Optional[int] = None, *, output: str = "int",
                 mult=None, bias=None, thresh=None, flip=None):
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        self.weights = _prepared(b, K, None, dense=True)
        self.output = output
        self._plan = _c().ConvPlan(self.weights, (1, 1), (0, 0), 1, output, mult, bias,
                                   thresh, flip, True)

    def __call__(self, a, residual=None, out=None, threads: Optional[int] = None, signs: bool = False):
        return self._plan(a, residual, out, _threads(threads), bool(signs))

    def output_shape(self, a_shape) -> tuple:
        return tuple(self._plan.output_shape(list(a_shape)))


def bconv2d(x: np.ndarray, w, c_in: Optional[int] = None, kernel: Optional[IntPair] = None,
            stride: IntPair = 1, padding: IntPair = 0, pad_value: int = 1, *,
            output: str = "int", mult=None, bias=None, residual=None, thresh=None, flip=None,
            out=None, threads: Optional[int] = None) -> np.ndarray:
    """Binary 2-D convolution on bit-packed NHWC activations.

    x: (N, H, W, ceil(c_in/64)) uint64; w: packed (C_out, kh, kw, ceil(c_in/64)) uint64 or a
    ``ConvWeights`` from :func:`prepare_conv_weights` (preferred when called repeatedly).
    acc[n,oh,ow,co] = sum_{i,j,c} xpad[n, oh*sh+i, ow*sw+j, c] * w[co,c,i,j] (exact int).
    pad_value: +1 / -1 pad with that binary value; 0 = exact zero padding (LCE correction).
    output:
      "int"   -> int32 (N, OH, OW, C_out) accumulators;
      "float" -> float32 y = float32(acc)*mult + bias (+ residual (N,OH,OW,C_out) float32);
                 mult/bias float32 (C_out,), default 1 / 0;
      "bits"  -> packed uint64 (N, OH, OW, ceil(C_out/64)): +1 iff
                 (flip[co] ? acc <= thresh[co] : acc >= thresh[co]); thresh int32 (C_out,),
                 flip uint8/bool (C_out,) (default 0).
    out: optional preallocated C-contiguous output of the right dtype and shape.
    """
    layer = BConv2d(w, c_in, kernel, stride, padding, pad_value, output=output, mult=mult,
                    bias=bias, thresh=thresh, flip=flip)
    _check_tail_bits(x, layer.weights.c_in, "x")
    return layer(x, residual=residual, out=out, threads=threads)


def bgemm(a: np.ndarray, b, K: Optional[int] = None, *, output: str = "int", mult=None,
          bias=None, residual=None, thresh=None, flip=None, out=None,
          threads: Optional[int] = None) -> np.ndarray:
    """Binary GEMM: a (M, ceil(K/64)) uint64, b (N, ceil(K/64)) uint64 (or prepared
    ``ConvWeights`` from :func:`prepare_dense_weights`) -> acc (M, N) = K - 2*popcount(a^b),
    with the same "int" / "float" / "bits" output transforms as :func:`bconv2d` (per output
    column n; residual (M, N) float32; "bits" gives (M, ceil(N/64)) uint64)."""
    layer = BDense(b, K, output=output, mult=mult, bias=bias, thresh=thresh, flip=flip)
    _check_tail_bits(a, layer.weights.c_in, "a")
    return layer(a, residual=residual, out=out, threads=threads)


def _check_tail_bits(x, k: int, name: str) -> None:
    """The packed words' bits past ``k`` must be 0 (the kernels count every bit of the last word):
    checked here, once per direct call (one pass over the last word of each row); the engine's own
    packers always write them 0, and the prepared :class:`BConv2d`/:class:`BDense` calls skip it."""
    if k % 64 == 0 or not isinstance(x, np.ndarray) or x.dtype != np.uint64 or x.ndim < 1 or x.shape[-1] == 0:
        return  # (a wrong dtype or shape is the core's to report)
    tail = np.uint64(~((1 << (k % 64)) - 1) & 0xFFFFFFFFFFFFFFFF)
    if (x[..., -1] & tail).any():
        raise ValueError(f"{name} has bits set past its {k} channels in the last packed word of a row. Rows of "
                         "one pack_bits vector have them 0; a flattened map of several packed pixels has "
                         "each pixel's tail inside the row: pass K = words × 64 and take the padded "
                         "positions (each adds +1) back out of the sums, as the engine does")


# --------------------------------------------------------------------------- pooling

def bmaxpool2d(x: np.ndarray, C: int, kernel: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0, min_mask=None, *, out=None,
               threads: Optional[int] = None) -> np.ndarray:
    """Max-pool of packed +-1 NHWC maps (N, H, W, ceil(C/64)) uint64, PyTorch semantics
    (floor mode, padded positions ignored, padding <= kernel/2). Max over +-1 is the AND of
    the bits (+1 = bit 0); channels flagged in ``min_mask`` are min-pooled (OR) instead,
    which is what max-pooling real values before a negative-gamma BN + sign amounts to.
    min_mask: None, uint64 (ceil(C/64),) word mask, or a bool array (C,) of flagged channels.
    (Pooling of int32 accumulators is not provided: pool after binarising.)"""
    kernel_p = _pair(kernel, "kernel")
    stride_p = kernel_p if stride is None else _pair(stride, "stride")
    if min_mask is not None:
        mm = np.asarray(min_mask) if not isinstance(min_mask, np.ndarray) else min_mask
        if mm.dtype == np.bool_:
            if mm.shape != (int(C),):
                raise ValueError(f"a bool min_mask must have shape ({int(C)},), got {mm.shape}")
            min_mask = pack_bits(np.where(mm, np.float32(-1), np.float32(1)))
    return _c().bmaxpool2d(x, int(C), kernel_p, stride_p, _pair(padding, "padding"), min_mask,
                           out, _threads(threads))


# --------------------------------------------------------------------------- folding helper

def fold_affine_sign(scale, shift) -> Tuple[np.ndarray, np.ndarray]:
    """Integer threshold form of ``sign(scale[co] * acc + shift[co])`` (sign(0) = +1) for
    integer accumulators, e.g. BN(acc) with scale = gamma/sqrt(var+eps),
    shift = beta - mean*scale.  Returns (thresh int32, flip uint8) for output="bits":
    scale > 0: +1 iff acc >= ceil(-shift/scale)          (flip 0)
    scale < 0: +1 iff acc <= floor(-shift/scale)         (flip 1)
    scale = 0: constant sign(shift).
    The boundary is checked exactly in float64 (scale*t + shift >= 0)."""
    scale = np.asarray(scale, np.float64).ravel()
    shift = np.asarray(shift, np.float64).ravel()
    if scale.shape != shift.shape:
        raise ValueError("scale and shift must have the same length")
    lim = np.float64(2**31 - 1)
    thresh = np.empty(scale.shape, np.int64)
    flip = np.zeros(scale.shape, np.uint8)
    for i, (s, b) in enumerate(zip(scale, shift)):
        if s == 0 or not np.isfinite(s):
            thresh[i] = -(2**31) if b >= 0 else 2**31 - 1  # always +1 / always -1
            continue
        t = -b / s
        if s > 0:
            c = np.clip(np.ceil(t), -lim, lim)
            while c - 1 >= -lim and s * (c - 1) + b >= 0:
                c -= 1
            while c < lim and s * c + b < 0:
                c += 1
            thresh[i] = int(c)
        else:
            flip[i] = 1
            f = np.clip(np.floor(t), -lim, lim)
            while f + 1 <= lim and s * (f + 1) + b >= 0:
                f += 1
            while f > -lim and s * f + b < 0:
                f -= 1
            thresh[i] = int(f)
    return thresh.astype(np.int32), flip


# --------------------------------------------------------------------------- int8 GEMM

def amx_int8_usable() -> bool:
    """True when the AMX-INT8 path runs here (CPU support and the OS granted the tile state)."""
    return bool(_c().amx_int8_usable())


def _need_prepared(w, kind: str, how: str):
    """``w`` must be the core's ``kind`` object (weights laid out once by ``how``), not a raw array."""
    if type(w) is not getattr(_c(), kind):
        raise TypeError(f"w must be weights prepared once with onebit.kernels.{how} (the core's {kind}), "
                        f"got {type(w).__name__}")


def prepare_int8_weights(w: np.ndarray):
    """int8 weights (N, K) (for binary-weight layers: the ±1 signs) laid out once for the
    portable and AMX paths. Returns an ``Int8Weights`` (``.N``, ``.K``, ``.Kp`` = K padded to 64).
    Values must be integers in −128..127 (of any dtype): anything else is refused, never wrapped."""
    a = np.asarray(w)
    if a.dtype != np.int8:
        if a.dtype == object:  # e.g. Python ints: their values decide
            try:
                a = a.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError("int8 weights must be integers in -128..127; got objects that are not numbers") from None
        if a.dtype.kind not in "iufb" or (a.size and not (np.all(np.isfinite(a)) and np.all(a == np.rint(a))
                                                          and a.min() >= -128 and a.max() <= 127)):
            raise ValueError(f"int8 weights must be integers in -128..127; got {a.dtype} values "
                             f"that are not (the binary-weight layers' ±1 signs are)")
    return _c().prepare_int8_weights(np.ascontiguousarray(a, dtype=np.int8))


def igemm_s8(a: np.ndarray, w, scale: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None, *,
             path: str = "auto", threads: Optional[int] = None) -> np.ndarray:
    """``fl(fl(float32(a @ wᵀ) · scale) + bias)`` for int8 or uint8 ``a`` (M, ≥Kp; columns K..Kp−1 zero) and
    prepared int8 weights: exact int32 sums, then the float output transform (mul, then add).
    ``path``: "auto" (AMX where usable, else portable), "amx" or "portable". Returns float32 (M, N)."""
    _need_prepared(w, "Int8Weights", "prepare_int8_weights(w)")
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    return _c().igemm_s8(a, w, f32(scale), f32(bias), path, _threads(threads))


def quantize_s8(x: np.ndarray, act_scale: float, *, unsigned: bool = False, ld: Optional[int] = None,
                threads: Optional[int] = None) -> np.ndarray:
    """``clip(rint(x / s), −127, 127)`` as int8 (``unsigned``: ``clip(…, 0, 255)`` as uint8) of float32 rows
    ``x`` (M, K), in rows of ``ld ≥ K`` bytes with zeros after column K (the int8 GEMM's K padding).
    ``x / s`` is computed as ``x · fl(1/s)`` in float32, ties round to even (NumPy's ``rint``);
    NaN becomes −127 (0 when ``unsigned``): the engine refuses NaN inputs before they get here."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (rows, K), got shape {x.shape}")
    return _c().quantize_s8(x, float(np.float32(act_scale)), bool(unsigned), int(ld or x.shape[1]), _threads(threads))


def iconv2d_s8(x: np.ndarray, w, act_scale: float, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0, *,
               unsigned: bool = False, scale: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None,
               residual: Optional[np.ndarray] = None, relu: bool = False, path: str = "auto",
               threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Fused int8 convolution of a binary-weight layer on a float NHWC input ``x`` (N, H, W, C).

    The input is quantised once (:func:`quantize_s8`, zero padding = 0), patches are gathered
    32 output pixels at a time into cache and multiplied on the int8 GEMM (AMX-INT8 where
    usable) against ``w`` (:func:`prepare_int8_weights` of the (C_out, kh·kw·C_in) weights in
    (kh, kw, C_in) order); then per channel ``y = fl(fl(acc·scale) + bias)``, ``+ residual``,
    ``max(y, 0)`` if ``relu``. Equal, bit for bit, to :func:`onebit.kernels.reference.iconv2d_s8`.
    ``out``: a float32 (N, OH, OW, C_out) array to write into (reused buffers avoid page faults).
    """
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    _need_prepared(w, "Int8Weights", "prepare_int8_weights(w)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _c().iconv2d_s8(x, w, float(np.float32(act_scale)), bool(unsigned), list(_pair(kernel, "kernel")),
                           list(_pair(stride, "stride")), list(_pair(padding, "padding")), f32(scale), f32(bias),
                           f32(residual), bool(relu), path, _threads(threads), out)


def nchw_to_nhwc(x: np.ndarray, *, pm1: bool = False, threads: Optional[int] = None) -> np.ndarray:
    """A float32 or uint8 batch (N, C, H, W) in the NHWC layout (N, H, W, C) the kernels read, in one
    pass on the core's threads. ``pm1`` (uint8 only): also the BNN preprocessing, float32
    ``x/127.5 - 1`` with NumPy's two roundings (reference: :func:`onebit.kernels.reference.nchw_to_nhwc`)."""
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.uint8, np.float32):
        raise ValueError(f"x must have dtype uint8 or float32, got {x.dtype}")
    return _c().nchw_to_nhwc(x, bool(pm1), _threads(threads))


def channel_affine_(y: np.ndarray, mult: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None, *,
                    relu: bool = False, threads: Optional[int] = None) -> np.ndarray:
    """In place over the last (channel) axis of float32 ``y``: ``y = fl(y·mult) + bias``, then
    ``max(y, 0)`` if ``relu`` — the roundings of NumPy's ``y * mult + bias`` in float32. Returns ``y``."""
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    return _c().channel_affine_(y, f32(mult), f32(bias), bool(relu), _threads(threads))


def prepare_float_weights(w: np.ndarray, bf16x3: bool = False):
    """Float weights (N, K) (a conv's (C_out, kh, kw, C_in) flattened) packed once for :func:`fconv2d_f32`;
    with ``bf16x3`` also split into the two bf16 halves :func:`fconv2d_bf16x3` needs."""
    return _c().prepare_float_weights(np.ascontiguousarray(w, dtype=np.float32), bool(bf16x3))


def amx_bf16_usable() -> bool:
    """True when the AMX-BF16 path of :func:`fconv2d_bf16x3` runs here (CPU support, OS tile permission)."""
    return bool(_c().amx_bf16_usable())


def avx512_bf16_usable() -> bool:
    """True when the AVX512_BF16 path (``VDPBF16PS``: AMD Zen 4, Intel Cooper Lake) of
    :func:`fconv2d_bf16` and :func:`fconv2d_bf16x3` runs here (CPU support, OS zmm state)."""
    return bool(_c().avx512_bf16_usable())


def fconv2d_bf16x3(x: np.ndarray, w, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0, *,
                   scale: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None,
                   residual: Optional[np.ndarray] = None, relu: bool = False, path: str = "auto",
                   threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The float convolution of :func:`fconv2d_f32` as three bf16 products on AMX-BF16.

    ``x = xh + xl`` and ``w = wh + wl`` (each half the nearest bfloat16 of what is left), and
    ``Σ x·w ≈ Σ (xh·wh + xh·wl + xl·wh)``: every product exact in float, float accumulation; the
    dropped ``xl·wl`` and the halves' rounding leave a relative error of about 2⁻¹⁶ per product
    (fp32: 2⁻²⁴) — close to float, not bit-identical to it (reference:
    :func:`onebit.kernels.reference.fconv2d_bf16x3`). ``w`` must come from
    ``prepare_float_weights(w, bf16x3=True)``; ``path``: ``"auto"`` (AMX-BF16, else AVX512_BF16, else
    the twin) / ``"amx"`` / ``"avx512_bf16"`` / ``"portable"`` (the twin, slow: for tests and CPUs
    without either). On AVX512_BF16 alone the three products cost more than one fp32 FMA, so the
    engine keeps fp32 there. Inputs must be finite.
    """
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    _need_prepared(w, "FloatWeights", "prepare_float_weights(w, bf16x3=True)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _c().fconv2d_f32(x, w, list(_pair(kernel, "kernel")), list(_pair(stride, "stride")),
                            list(_pair(padding, "padding")), f32(scale), f32(bias), f32(residual), bool(relu), path,
                            _threads(threads), out, "bf16x3")


def fconv2d_bf16(x: np.ndarray, w, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0, *,
                 scale: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None,
                 residual: Optional[np.ndarray] = None, relu: bool = False, path: str = "auto",
                 threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The float convolution of :func:`fconv2d_f32` in plain bfloat16: ``Σ bf16(x)·bf16(w)`` with
    float accumulation (AMX-BF16 or AVX512_BF16), what PyTorch's bf16 and OpenVINO's bf16 compute — a relative error
    of about 2⁻⁸ per product (reference: :func:`onebit.kernels.reference.fconv2d_bf16`). ``w`` must
    come from ``prepare_float_weights(w, bf16x3=True)``; ``path`` as :func:`fconv2d_bf16x3`.
    """
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    _need_prepared(w, "FloatWeights", "prepare_float_weights(w, bf16x3=True)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _c().fconv2d_f32(x, w, list(_pair(kernel, "kernel")), list(_pair(stride, "stride")),
                            list(_pair(padding, "padding")), f32(scale), f32(bias), f32(residual), bool(relu), path,
                            _threads(threads), out, "bf16")


def fconv2d_pool(x: np.ndarray, w, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0, *,
                 pool: str = "max", pool_kernel: IntPair = 3, pool_stride: Optional[IntPair] = None,
                 pool_padding: IntPair = 0, ceil_mode: bool = False, precision: str = "bf16",
                 scale: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None, relu: bool = False,
                 path: str = "auto", threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`fconv2d_bf16` (``precision="bf16"``) or :func:`fconv2d_bf16x3` followed by
    :func:`pool2d` (``pool`` ``"max"`` or ``"avg"``) in one call, bit for bit their result: bands of
    the conv's output rows are computed into a per-thread buffer and pooled from there, so the
    conv's full map (a ResNet stem's 112×112×64 floats) is never written out and read back.
    Reference: ``pool2d(fconv2d_bf16(x, w, ...), ...)``."""
    if precision not in ("bf16", "bf16x3"):
        raise ValueError(f"precision must be 'bf16' or 'bf16x3', got {precision!r}")
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    x = np.ascontiguousarray(x, dtype=np.float32)
    _need_prepared(w, "FloatWeights", "prepare_float_weights(w, bf16x3=True)")
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC (4-D), got shape {x.shape}")
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(padding, "padding")
    pk, pp = _pair(pool_kernel, "pool_kernel"), _pair(pool_padding, "pool_padding")
    ps = _pair(pool_stride if pool_stride is not None else pool_kernel, "pool_stride")
    from ..deploy.format import pool_out

    # the conv's output size is the floor-mode window count (a bad conv geometry is the core's to report)
    oh, ow = ((pool_out(x.shape[1], kh, sh, ph, False), pool_out(x.shape[2], kw, sw, pw, False))
              if min(sh, sw) >= 1 else (0, 0))
    if min(pk + ps) < 1:
        raise ValueError("pool_kernel and pool_stride must be >= 1")
    poh, pow_ = pool_out(oh, pk[0], ps[0], pp[0], ceil_mode), pool_out(ow, pk[1], ps[1], pp[1], ceil_mode)
    return _c().fconv2d_f32(x, w, [kh, kw], [sh, sw], [ph, pw], f32(scale), f32(bias), None, bool(relu), path,
                            _threads(threads), out, precision, (pool == "max", list(pk), list(ps), list(pp), [poh, pow_]))


def fconv2d_f32(x: np.ndarray, w, kernel: IntPair, stride: IntPair = 1, padding: IntPair = 0, *,
                scale: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None,
                residual: Optional[np.ndarray] = None, relu: bool = False, path: str = "auto",
                threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Float convolution of a real-valued layer on NHWC ``x`` (N, H, W, C), zero padding, with the
    output transform fused: ``y = fl(fl(Σ_k x·w)·scale) + bias`` (``+ residual``, ``max(y, 0)``).

    Runs on the core's thread pool (AVX-512 or AVX2 FMA micro-tiles as the active ISA path allows,
    else the portable twin; ``path``: ``"auto"``, ``"avx512"``, ``"avx2"``, ``"portable"``, see
    :func:`float_paths`) so the engine never wakes NumPy's BLAS threads. The sum runs in k order in float32: it matches a
    float64 reference to float rounding (:func:`onebit.kernels.reference.fconv2d_f32`). A dense
    layer is the 1×1 conv of an (M, 1, 1, K) input.
    """
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
    _need_prepared(w, "FloatWeights", "prepare_float_weights(w)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _c().fconv2d_f32(x, w, list(_pair(kernel, "kernel")), list(_pair(stride, "stride")),
                            list(_pair(padding, "padding")), f32(scale), f32(bias), f32(residual), bool(relu), path,
                            _threads(threads), out)


def pool2d(x: np.ndarray, kind: str, kernel: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0, *,
           ceil_mode: bool = False, threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Max (``kind="max"``) or average (``"avg"``) pooling of float NHWC ``x`` with PyTorch's window
    placement; padding is never counted (max ignores it, average divides by the in-image taps).
    NaN: max skips a NaN tap (``std::max(acc, v)``; PyTorch's max-pool would return NaN), average
    propagates it. The engine refuses NaN inputs, so this matters only to direct callers."""
    if kind not in ("max", "avg"):
        raise ValueError(f"kind must be 'max' or 'avg', got {kind!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC (4-D), got shape {x.shape}")
    k, p = _pair(kernel, "kernel"), _pair(padding, "padding")
    s = _pair(stride if stride is not None else kernel, "stride")
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ValueError(f"pool2d needs kernel and stride >= 1 and padding >= 0, got kernel={k}, stride={s}, padding={p}")
    from ..deploy.format import pool_out

    oh, ow = pool_out(x.shape[1], k[0], s[0], p[0], ceil_mode), pool_out(x.shape[2], k[1], s[1], p[1], ceil_mode)
    return _c().pool2d_f32(x, kind == "max", list(k), list(s), list(p), [oh, ow], _threads(threads), out)
