"""The deploy runtime: runs a ``.onebit`` graph with NumPy and the C++ XNOR-popcount core.

Imports no PyTorch. Activations flow NHWC; binary values stay bit-packed (uint64 words along
channels) between binary layers; binary layers run on :mod:`onebit.kernels`.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from .. import kernels as _kernels
from . import format as fmt
from .errors import DeployError


_PLANE_WEIGHTS = (1 << np.arange(8)).astype(np.int32)  # 2^n for bit-plane n
MAX_THREADS = 256  # the C++ core's limit (csrc/bindings.cpp)
BITPLANE_MAX_ROWS = 4  # int8 dense layers with at most this many rows use the bit-plane path


def _im2col(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(N, H, W, C) already padded → (N, OH, OW, kh·kw·C) patches in (kh, kw, C) order."""
    n, h, w, c = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1], s[2], s[3]), writeable=False)
    return view.reshape(n, oh, ow, kh * kw * c)


def _pool(x: np.ndarray, kind: str, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int] = (0, 0),
          ceil: bool = False) -> np.ndarray:
    """Max or average pooling of NHWC floats with PyTorch's semantics (padding ignored by both:
    max pads with -inf, average divides by the number of in-image elements of each window)."""
    from .format import pool_out

    n, h, w, c = x.shape
    oh, ow = pool_out(h, k[0], s[0], p[0], ceil), pool_out(w, k[1], s[1], p[1], ceil)
    eh, ew = max((oh - 1) * s[0] + k[0] - h - p[0], 0), max((ow - 1) * s[1] + k[1] - w - p[1], 0)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (p[0], eh), (p[1], ew), (0, 0)), constant_values=fill) if (p[0] or p[1] or eh or ew) else x
    out = None
    for i in range(k[0]):
        for j in range(k[1]):
            v = xp[:, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1], :]
            if out is None:
                out = v.astype(np.float32 if kind == "max" else np.float64, copy=True)
            elif kind == "max":
                np.maximum(out, v, out=out)
            else:
                out += v
    if kind == "avg":
        ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (p[0], eh), (p[1], ew), (0, 0)))
        cnt = sum(ones[:, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1], :]
                  for i in range(k[0]) for j in range(k[1]))
        out = (out / cnt).astype(np.float32)
    return out


class _Op:
    #: ops whose output may take a following ReLU in place (see Engine._fuse_relus)
    can_fuse_relu = False

    def __init__(self, op: dict, t: dict[str, np.ndarray]):
        self.op, self.t = op, t
        self.fuse_relu = False
        self.reuse_output = False  # set by the Engine for ops whose output is not the network's
        self._buf: np.ndarray | None = None

    def out_buffer(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """This op's float32 output array, kept between calls (fresh big arrays cost page faults),
        or None when the output goes back to the caller."""
        if not self.reuse_output:
            return None
        if self._buf is None or self._buf.shape != tuple(shape):
            self._buf = np.empty(shape, np.float32)
        return self._buf

    def __call__(self, x: np.ndarray, threads: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _FloatLinear(_Op):
    """conv/dense on real input (first/last layers): exact float64 accumulation, then transform.

    With binary weights and a uint8 input (``x_pm1 = x/127.5 - 1``, the BNN preprocessing) it uses
    the paper's bit-plane decomposition (§1.6) on the XNOR-popcount kernels, exactly::

        w·x8 = Σ_n 2^n · (Σw − b_n·w) / 2,   b_n = 1 − 2·bit_n(x8) ∈ {±1}
        w·x_pm1 = w·x8 / 127.5 − Σ_valid w     (valid: taps inside the image; zero padding)
    """

    def __init__(self, op, t):
        super().__init__(op, t)
        w = t["weight"]
        self.packed = w if w.dtype == np.uint64 else None
        if self.packed is not None:  # binary weights with a real input (BNN's first layer)
            from ..kernels import unpack_bits

            c = op["in_channels"] if op["op"] == "conv" else op["in_features"]
            w = unpack_bits(w, c)
        self.w4 = w  # (Cout, kh, kw, Cin) or (Cout, K), float
        self.w = w.reshape(w.shape[0], -1).astype(np.float64).T  # (K, Cout)
        cout = self.w.shape[1]
        self.mult = t["mult"].astype(np.float64) if "mult" in t else np.ones(cout)
        self.bias = t["bias"].astype(np.float64) if "bias" in t else np.zeros(cout)
        self.w32, self.mult32, self.bias32 = (self.w.astype(np.float32), self.mult.astype(np.float32),
                                              self.bias.astype(np.float32))
        self._bitplane = None
        self._fw = None  # float weights packed for fconv2d_f32 (prepared at first use)
        self._geom = None  # [kh, kw], [sh, sw], [ph, pw] for the core's conv (prepared at first use)
        self._pooled_for = None  # (input shape, pooled shape, pool arguments) of the fused conv + pool
        self.float_precision = "fp32"  # a real-weight conv as fp32, bf16x3 or bf16 (Engine float_precision)
        self._valid_sum: dict[tuple[int, int], np.ndarray] = {}
        self._thresholds: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._dense_sum = self.w.sum(0) if op["op"] == "dense" else None  # Σw per output (dense)
        self.int8 = None  # (prepared ±1 int8 weights, activation scale, fused scale, bias): see set_int8

    @property
    def can_fuse_relu(self) -> bool:  # every path but the packed-bits output applies fuse_relu
        return self.op.get("out") != "bits"

    @property
    def can_fuse_pool(self) -> bool:
        """A real-weight conv in bf16/bf16x3 (not int8): the core can pool its output as it goes."""
        return (self.op["op"] == "conv" and self.packed is None and self.int8 is None
                and self.float_precision in ("bf16", "bf16x3") and self.op.get("out") != "bits")

    def pooled_call(self, x: np.ndarray, threads: int, pool: "_Pool") -> np.ndarray:
        """This conv followed by ``pool`` (max/avg) in one core call (:func:`onebit.kernels.fconv2d_pool`):
        bit for bit the two ops' result, without writing the conv's full map out and reading it back."""
        if x.dtype == np.uint8:
            x = as_float(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._fw is None or not self._fw.bf16x3:
            self._fw = _kernels.prepare_float_weights(np.ascontiguousarray(self.w32.T), bf16x3=True)
        if self._pooled_for is None or self._pooled_for[0] != x.shape:
            conv_shape = (x.shape[0], *layer_out_shape(x, self))
            args, shape = pool.pool_args(conv_shape)
            self._pooled_for = (x.shape, shape, args)
        _, shape, args = self._pooled_for
        return _kernels._core.fconv2d_f32(x, self._fw, *self._core_geom(), self.mult32, self.bias32, None,
                                          bool(self.fuse_relu), "auto", threads, pool.out_buffer(shape),
                                          self.float_precision, args)

    def _core_geom(self) -> tuple[list[int], list[int], list[int]]:
        """[kh, kw], [sh, sw], [ph, pw] as the core's conv takes them (prepared once)."""
        if self._geom is None:
            self._geom = tuple(list(_kernels._api._pair(self.op[k], k)) for k in ("kernel", "stride", "padding"))
        return self._geom

    @property
    def int8_eligible(self) -> bool:
        """Binary weights on a real input with a real output: the binary-weight (BWN/BWNH) layers."""
        return self.packed is not None and self.op.get("out") != "bits"

    def set_int8(self, act_scale: float | None, unsigned: bool = False) -> None:
        """Run this layer as 8-bit activations × ±1 weights (``act_scale``: real value of one step,
        from calibration; ``unsigned``: the input is never negative, e.g. after a ReLU, and uses
        uint8 0..255 instead of int8 −127..127), or back in float (``None``)."""
        if act_scale is None:
            self.int8 = None
            return
        from ..kernels import prepare_int8_weights

        w8 = np.ascontiguousarray(self.w4.reshape(self.w4.shape[0], -1), dtype=np.int8)  # exact: ±1
        fused = (np.float32(act_scale) * self.mult32).astype(np.float32)
        self.int8 = (prepare_int8_weights(w8), np.float32(act_scale), fused, self.bias32, bool(unsigned))

    def _int8_call(self, x: np.ndarray, threads: int, residual) -> np.ndarray:
        """``y = fl(fl(float(q·w)·(s·mult)) + bias)`` (``+ residual``; ``max(y, 0)`` when a following
        ReLU was fused, see :meth:`Engine.quantize_int8`) with ``q = clip(rint(x/s), −127, 127)`` (int8;
        or 0..255 uint8 for a non-negative input) on the int8 GEMM (AMX-INT8 where the CPU has it):
        the weights are exact, the activations rounded. A conv runs fused in C++ (quantise once,
        im2col per 32-pixel tile, GEMM, epilogue: :func:`onebit.kernels.iconv2d_s8`)."""
        from ..kernels import iconv2d_s8, igemm_s8, quantize_s8

        w8, s, fused, bias, unsigned = self.int8
        op = self.op
        x = np.ascontiguousarray(x, dtype=np.float32)
        if op["op"] == "conv":
            res = None if residual is None else np.ascontiguousarray(residual, dtype=np.float32)
            out = self.out_buffer((x.shape[0], *layer_out_shape(x, self)))
            return iconv2d_s8(x, w8, s, op["kernel"], op["stride"], op["padding"], unsigned=unsigned, scale=fused,
                              bias=bias, residual=res, relu=self.fuse_relu, threads=threads, out=out)
        lead = x.shape[:-1]
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] <= BITPLANE_MAX_ROWS:
            # few rows (batch 1): the weight matrix would be streamed from memory as int8 for one
            # row; as 8 bit-planes × 1-bit weights on the XNOR-popcount GEMM it is 8× smaller
            q = quantize_s8(rows, s, unsigned=unsigned, threads=threads)
            if unsigned:
                acc = self._bitplane_acc(q, threads)
            else:  # q + 127 ∈ [0, 254] is a uint8; w·q = w·(q + 127) − 127·Σw, exactly
                u = (q.astype(np.int16) + 127).astype(np.uint8)
                acc = self._bitplane_acc(u, threads) - 127 * self._bitplane[1]
            y = (acc.astype(np.float32) * fused + bias).reshape(*lead, -1)  # the GEMM's epilogue order
        else:
            a = quantize_s8(rows, s, unsigned=unsigned, ld=w8.Kp, threads=threads)
            y = igemm_s8(a, w8, fused, bias, threads=threads).reshape(*lead, -1)
        if residual is not None:
            y = y + residual
        if self.fuse_relu:
            np.maximum(y, np.float32(0), out=y)
        return y.astype(np.float32, copy=False)

    def _float32_call(self, x: np.ndarray, threads: int, residual) -> np.ndarray:
        """``y = fl(fl(Σ x·w)·mult) + bias`` (``+ residual``, ReLU when fused) in float32 on
        :func:`onebit.kernels.fconv2d_f32` (a conv in bf16x3 / bf16 on its twins, the engine's
        ``float_precision``); a dense layer runs as a 1×1 conv."""
        split = self.float_precision != "fp32"
        if self._fw is None or (split and not self._fw.bf16x3):
            self._fw = _kernels.prepare_float_weights(np.ascontiguousarray(self.w32.T), bf16x3=split)
        op = self.op
        x = np.ascontiguousarray(x, dtype=np.float32)
        res = None if residual is None else np.ascontiguousarray(residual, dtype=np.float32)
        prec = self.float_precision
        if op["op"] == "conv":
            out = self.out_buffer((x.shape[0], *layer_out_shape(x, self)))
            # the core's conv directly (what kernels.fconv2d_f32 / _bf16 / _bf16x3 call after their checks)
            return _kernels._core.fconv2d_f32(x, self._fw, *self._core_geom(), self.mult32, self.bias32, res,
                                              bool(self.fuse_relu), "auto", threads, out, prec)
        lead = x.shape[:-1]
        rows = x.reshape(-1, 1, 1, x.shape[-1])
        cout = self.w32.shape[1]
        out = self.out_buffer((rows.shape[0], 1, 1, cout))
        y = _kernels.fconv2d_f32(rows, self._fw, 1, scale=self.mult32, bias=self.bias32,
                        residual=None if res is None else res.reshape(-1, 1, 1, cout), relu=self.fuse_relu,
                        threads=threads, out=out)
        return y.reshape(*lead, cout)

    def _cols(self, x: np.ndarray, dtype) -> np.ndarray:
        op = self.op
        if op["op"] != "conv":
            return x.astype(dtype)
        ph, pw = op["padding"]
        xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
        return _im2col(xp.astype(dtype), *op["kernel"], *op["stride"])

    def _bitplane_acc(self, x8: np.ndarray, threads: int) -> np.ndarray:
        """Exact ``w·x8`` (int32) from 8 binary products on the kernels.

        The 8 bit-planes are stacked along the batch axis; a conv is lowered to one binary GEMM
        over packed patches (``kh·kw·C_in`` bits per row: for an RGB 3×3 conv one word instead of
        nine), zero padding becoming bit 0 (= +1, accounted for by Σw over all taps).
        """
        from .. import kernels

        op = self.op
        if self._bitplane is None:
            sum_w = self.w.sum(0).round().astype(np.int32)  # Σ over all taps, per output channel
            flat = np.ascontiguousarray(self.w4.reshape(self.w4.shape[0], -1), dtype=np.float32)
            layer = kernels.BDense(kernels.pack_dense_weights(flat), flat.shape[1], output="int")
            self._bitplane = (layer, sum_w)
        layer, sum_w = self._bitplane
        n = x8.shape[0]
        bits = np.unpackbits(x8[..., None], axis=-1, bitorder="little")  # (..., C, 8)
        planes = np.moveaxis(bits, -1, 0).reshape(8 * n, *x8.shape[1:])  # plane-major, {0, 1}
        if op["op"] == "conv":
            ph, pw = op["padding"]
            if ph or pw:
                planes = np.pad(planes, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
            planes = _im2col(planes, *op["kernel"], *op["stride"])  # (8N, OH, OW, kh·kw·C)
        k = planes.shape[-1]
        pad = -k % 64
        if pad:
            planes = np.concatenate([planes, np.zeros((*planes.shape[:-1], pad), np.uint8)], axis=-1)
        packed = np.ascontiguousarray(np.packbits(planes, axis=-1, bitorder="little")).view(np.uint64)  # bit 1 = −1
        rows = packed.reshape(-1, packed.shape[-1])
        acc = layer(np.ascontiguousarray(rows), threads=threads).reshape(8, n, *layer_out_shape(x8, self))
        # Σ_n 2^n·acc_n as one int32 contraction over the plane axis (|acc| ≤ K, so 255·K fits easily)
        s = np.tensordot(_PLANE_WEIGHTS, acc, axes=1)
        return (255 * sum_w - s) >> 1  # exact: 255·Σw − Σ 2^n acc_n is even

    def _threshold_bits(self, s8: np.ndarray, valid: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """``sign(s8·a + c)`` packed, with ``a = mult/127.5`` and ``c = bias − valid·mult``.

        ``s8`` holds integers, so the float64 decision ``a·s8 + c ≥ 0`` equals an integer compare
        ``σ·s8 ≥ σ·τ`` (σ = sign a) with ``τ`` searched exactly against that same float64 expression
        once per input size — one pass over the output instead of five float64 ones.
        """
        key = tuple(hw)
        if key not in self._thresholds:
            a = np.broadcast_to(self.mult / 127.5, np.shape(valid))
            c = self.bias - valid * self.mult
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(a != 0, -c / np.where(a != 0, a, 1.0), 0.0)
            up = np.ceil(t)
            for _ in range(2):  # a > 0: smallest integer with a·τ + c ≥ 0
                up = np.where(a * (up - 1) + c >= 0, up - 1, up)
                up = np.where(a * up + c < 0, up + 1, up)
            dn = np.floor(t)
            for _ in range(2):  # a < 0: largest integer with a·τ + c ≥ 0
                dn = np.where(a * (dn + 1) + c >= 0, dn + 1, dn)
                dn = np.where(a * dn + c < 0, dn - 1, dn)
            sg = np.where(a < 0, -1.0, 1.0)
            tau = np.where(a > 0, up, np.where(a < 0, -dn, np.where(c >= 0, -np.inf, np.inf)))
            self._thresholds[key] = (sg.astype(np.float32), tau.astype(np.float32))
        sg, tau = self._thresholds[key]
        minus = (s8 * sg) < tau  # bit 1 = −1
        cpad = -minus.shape[-1] % 64
        if cpad:
            minus = np.concatenate([minus, np.zeros((*minus.shape[:-1], cpad), bool)], axis=-1)
        return np.packbits(minus, axis=-1, bitorder="little").view(np.uint64)

    def _valid_sums(self, h: int, w: int) -> np.ndarray:
        """Σ of the weights over the taps that fall inside an (h, w) image, per output position."""
        if (h, w) not in self._valid_sum:
            ones = np.ones((1, h, w, self.op["in_channels"]))
            self._valid_sum[(h, w)] = (self._cols(ones, np.float64) @ self.w)[0]
        return self._valid_sum[(h, w)]

    def __call__(self, x, threads, residual=None):
        op = self.op
        if self.int8 is not None:
            return self._int8_call(as_float(x), threads, residual)
        if x.dtype == np.uint8 and self.packed is None:
            x = as_float(x)  # real weights: the ordinary float path on x/127.5 - 1
        if x.dtype == np.uint8:
            if self.packed is not None and op["op"] == "conv":
                # integers: x8 ≤ 255 times ±1, summed over kh·kw·C_in taps, stay far below 2^24, so a
                # float32 GEMM is exact here and beats 8 bit-plane passes for a small-C_in conv
                # (on the core's float conv: every partial sum is an integer below 2^24, so any order is exact)
                if self.w.shape[0] * 255 >= 1 << 24:
                    s8 = self._bitplane_acc(x, threads)  # too many taps for exact float32
                else:
                    from ..kernels import fconv2d_f32, prepare_float_weights

                    if self._fw is None:
                        self._fw = prepare_float_weights(np.ascontiguousarray(self.w32.T))
                    s8 = fconv2d_f32(x.astype(np.float32), self._fw, op["kernel"], op["stride"], op["padding"],
                                     threads=threads)
            elif self.packed is not None:
                s8 = self._bitplane_acc(x, threads)
            valid = self._valid_sums(x.shape[1], x.shape[2]) if op["op"] == "conv" else self._dense_sum
            # y = (s8/127.5 − valid)·mult + bias, as s8·(mult/127.5) + (bias − valid·mult) in float64
            if op.get("out") == "bits" and residual is None:
                return self._threshold_bits(s8, valid, x.shape[1:3])
            y = s8.astype(np.float64) * (self.mult / 127.5) + (self.bias - valid * self.mult)
        elif op.get("out") != "bits":
            # float32 on the core's own conv/GEMM (no BLAS threads), transform and ReLU fused
            return self._float32_call(x, threads, residual)
        else:
            # float64 where the output is a sign decision (exact vs. PyTorch)
            cols = self._cols(x, np.float64)
            y = (cols.reshape(-1, cols.shape[-1]) @ self.w).reshape(*cols.shape[:-1], self.w.shape[1])
            y = y * self.mult + self.bias
        if residual is not None:
            y = y + residual
        if self.fuse_relu:
            np.maximum(y, 0, out=y)
        if op.get("out") == "bits":
            from ..kernels import pack_bits

            return pack_bits(np.where(y >= 0, np.float32(1), np.float32(-1)), threads=threads)
        return y.astype(np.float32)


def layer_out_shape(x: np.ndarray, fl: "_FloatLinear") -> tuple[int, ...]:
    """Output shape (without batch) of a real-input conv/dense op for input ``x``."""
    op = fl.op
    cout = fl.w.shape[1]
    if op["op"] != "conv":
        return (cout,)
    (kh, kw), (sh, sw), (ph, pw) = op["kernel"], op["stride"], op["padding"]
    return ((x.shape[1] + 2 * ph - kh) // sh + 1, (x.shape[2] + 2 * pw - kw) // sw + 1, cout)


class _BinaryLinear(_Op):
    """bconv/bdense on packed bits, with the fused output transform, on the C++ kernels."""

    def __init__(self, op, t):
        super().__init__(op, t)
        from .. import kernels

        out = op.get("out", "float")
        kw = {"output": out}
        if out == "bits":
            kw["thresh"], kw["flip"] = t["thresh"], t["flip"]
        else:
            kw["mult"] = t.get("mult")
            kw["bias"] = t.get("bias")
        if op["op"] == "bconv":
            self.layer = kernels.BConv2d(t["weight"], op["in_channels"], tuple(op["kernel"]),
                                         tuple(op["stride"]), tuple(op["padding"]), int(op["pad_value"]), **kw)
        else:
            k, words = op["in_features"], op["words"]
            # flattened NHWC bits carry each pixel's zero tail (in x and in w), so the real bits are
            # not the first k: count all words*64 positions, each padded one adding +1·+1 to the
            # accumulator, and take that n_pad back out. (Masking the last word instead would cut
            # real bits whenever pixels × tail < 64, e.g. 2 pixels × 120 channels.) For an unflattened
            # input the padding is the last word's tail only and the same correction is exact.
            if words * 64 != k:
                n_pad = words * 64 - k
                if out == "bits":  # acc_eff = acc + n_pad (each padded position adds +1·+1)
                    kw["thresh"] = (t["thresh"].astype(np.int64) + n_pad).clip(-2**31, 2**31 - 1).astype(np.int32)
                else:
                    m = kw["mult"] if kw["mult"] is not None else np.ones(t["weight"].shape[0], np.float32)
                    b = kw["bias"] if kw["bias"] is not None else np.zeros_like(m)
                    kw["bias"] = (b.astype(np.float64) - n_pad * m.astype(np.float64)).astype(np.float32)
                    kw["mult"] = m
                k = words * 64
            self.layer = kernels.BDense(t["weight"], k, **kw)

    #: float output whose signs the next op packs (a Bi-Real block): the conv's epilogue packs them
    #: too and returns ``(y, bits)`` (set by :meth:`Engine._fuse_sign_packing`)
    signs = False

    def __call__(self, x, threads, residual=None):
        if residual is not None:
            residual = np.ascontiguousarray(residual, dtype=np.float32)
        # the layer's prepared plan directly (what BConv2d/BDense.__call__ do, without the argument
        # checks: the engine's threads are a checked int)
        return self.layer._plan(np.ascontiguousarray(x), residual, None, threads, self.signs)


class _Quantize(_Op):
    def __call__(self, x, threads):
        return _kernels.pack_bits(np.ascontiguousarray(as_float(x), dtype=np.float32), threads=threads)


class _Pool(_Op):
    """Float max/avg pooling on the C++ core (:func:`onebit.kernels.pool2d`; ``_pool`` is its NumPy twin)."""

    _shape_of: tuple | None = None  # (input shape, output shape) of the last call

    def pool_args(self, in_shape: tuple) -> tuple[tuple, tuple]:
        """(the core's (is_max, kernel, stride, padding, out_hw), the output shape) for an input shape."""
        op = self.op
        k, s, p = op["kernel"], op["stride"], op.get("padding", (0, 0))
        ceil, pool_out = bool(op.get("ceil_mode", False)), fmt.pool_out
        oh, ow = pool_out(in_shape[1], k[0], s[0], p[0], ceil), pool_out(in_shape[2], k[1], s[1], p[1], ceil)
        return (op["op"] == "maxpool", list(k), list(s), list(p), [oh, ow]), (in_shape[0], oh, ow, in_shape[3])

    def __call__(self, x, threads):
        x = np.ascontiguousarray(as_float(x), dtype=np.float32)
        if self._shape_of is None or self._shape_of[0] != x.shape:
            self._args, shape = self.pool_args(x.shape)
            self._shape_of = (x.shape, shape)
        # the core's pooling directly (kernels.pool2d after its checks; the exporter wrote valid windows)
        return _kernels._core.pool2d_f32(x, *self._args, threads, self.out_buffer(self._shape_of[1]))


class _GlobalAvgPool(_Op):
    """Mean over the map, summed in float64 (one H×W average pool on the C++ core)."""

    def __call__(self, x, threads):
        x = np.ascontiguousarray(as_float(x), dtype=np.float32)
        n, h, w, c = x.shape
        if h == 0 or w == 0:
            raise ValueError(f"global average pooling of an empty {h}×{w} map")
        return _kernels._core.pool2d_f32(x, False, [h, w], [h, w], [0, 0], [1, 1], threads, None).reshape(n, c)


class _BMaxPool(_Op):
    def __init__(self, op, t, channels: int):
        super().__init__(op, t)
        self.c = channels

    def __call__(self, x, threads):
        from ..kernels import bmaxpool2d

        return bmaxpool2d(x, self.c, tuple(self.op["kernel"]), tuple(self.op["stride"]), 0,
                          self.t.get("min_mask"), threads=threads)


def as_float(x: np.ndarray) -> np.ndarray:
    """uint8 input (pm1 preprocessing) → float32 ``x/127.5 - 1``; float passes through."""
    return x.astype(np.float32) / np.float32(127.5) - np.float32(1) if x.dtype == np.uint8 else x


class _Flatten(_Op):
    def __call__(self, x, threads):
        return x.reshape(x.shape[0], -1)


class _Affine(_Op):
    can_fuse_relu = True

    #: the input feeds nothing else and is not the caller's array: transform it in place
    inplace = False

    def __call__(self, x, threads):
        from ..kernels import channel_affine_

        x = as_float(x)
        y = x if self.inplace and x.dtype == np.float32 and x.flags.c_contiguous else np.array(x, np.float32, order="C")
        return channel_affine_(y, self.t["mult"], self.t["bias"], relu=self.fuse_relu, threads=threads)


class _Act(_Op):
    def __call__(self, x, threads):
        x = as_float(x)
        return np.clip(x, -1, 1) if self.op["fn"] == "htanh" else np.maximum(x, 0)


def _reads_input_as_float(impl: _Op) -> bool:
    """True when ``impl`` reads a uint8 input only through :func:`as_float` (``x/127.5 − 1``), so the
    engine may convert the batch before it; False for the exact integer paths (a binary-weight first
    layer) and for ops that pass the integers on (flatten)."""
    if isinstance(impl, _FloatLinear):
        return impl.packed is None
    return isinstance(impl, (_Pool, _GlobalAvgPool, _Quantize, _Affine, _Act))


def check_batch(shape: tuple[int, ...], is_uint8: bool, input_shape: tuple[int, ...], graph: dict) -> None:
    """The checks every engine makes on a batch's shape (and on uint8 pixels) before it runs."""
    if shape[1:] != tuple(input_shape) or len(shape) != len(input_shape) + 1:
        raise ValueError(f"input of shape {shape}; this model takes (N, {', '.join(map(str, input_shape))})")
    if shape[0] == 0:
        raise ValueError(f"empty batch: the input of shape {shape} holds no samples (its first dimension, N, is 0)")
    if is_uint8:
        norm = (graph.get("preprocess") or {}).get("normalize")
        if norm is None:
            raise ValueError("this model file records no preprocessing, so uint8 pixels have no meaning for it: "
                             "pass float32 input preprocessed as in training (or export with "
                             "preprocess={'normalize': 'pm1'} for a model trained on x/127.5 - 1)")
        if norm != "pm1":
            raise ValueError(f"uint8 input needs the 'pm1' preprocessing; this model uses {norm!r}: "
                             "pass the normalised float32 input instead")


class Engine:
    """Run a ``.onebit`` model: ``Engine(path, threads=None).run(x)``.

    ``x``: float32 array shaped like the exported input, with a batch axis first — (N, C, H, W)
    (PyTorch layout) or (N, F) — or the raw uint8 pixels of a model trained with the ``pm1``
    preprocessing (``x/127.5 - 1``): then a first layer with binary weights runs exactly on the
    XNOR-popcount kernels by bit-planes (BNN paper §1.6). Returns float32 (N, classes). ``threads``: kernel threads
    (default: all cores). Safe to call from several Python threads (calls are serialised).

    ``float_precision``: how the real-valued convs (a Bi-Real stem, 1×1 shortcuts) compute —
    ``"fp32"`` (default: float32, matches a float64 reference to float rounding), ``"bf16x3"``
    (three bf16 products per multiply-add on AMX-BF16, :func:`onebit.kernels.fconv2d_bf16x3`:
    ≈ 2⁻¹⁶ relative error per product instead of 2⁻²⁴) or ``"bf16"`` (one bf16 product,
    :func:`onebit.kernels.fconv2d_bf16`: ≈ 2⁻⁸, what PyTorch's and OpenVINO's bf16 modes compute; on
    AMX-BF16 or AVX512_BF16); speed and accuracy of each in docs/benchmarks.md §2. A sign decided
    downstream may then differ from PyTorch's fp32 where a value lies within that error of 0. Where
    the CPU lacks the instructions the engine warns and stays in fp32 (:attr:`float_precision` says
    which one runs).

    Fusions that change no bit of the result: a ReLU runs in the epilogue of the op before it; a
    quantize op that packs a binary conv's float output (the real-valued stream of a Bi-Real block)
    is done by that conv's epilogue; in the bf16 modes a real conv whose only reader is a max/avg
    pool (a ResNet stem) pools its own output band by band (:func:`onebit.kernels.fconv2d_pool`);
    a uint8 batch is transposed to NHWC and, where every reader wants floats, turned into
    ``x/127.5 - 1`` in the same pass.
    """

    FLOAT_PRECISIONS = ("fp32", "bf16x3", "bf16")

    def __init__(self, path: str | Path, threads: int | None = None, float_precision: str = "fp32"):
        if float_precision not in self.FLOAT_PRECISIONS:
            raise ValueError(f"float_precision must be one of {self.FLOAT_PRECISIONS}, got {float_precision!r}")
        self.path = Path(path)
        self.graph, tensors = fmt.read(self.path)
        self.threads = self._check_threads(threads)
        self.input_shape = tuple(self.graph["input"]["shape"])
        self._ops: list[tuple[str, str, _Op]] = []
        channels: dict[str, int] = {"input": self.input_shape[0]}
        try:
            for op in self.graph["ops"]:
                t = {role: tensors[key] for role, key in op.get("tensors", {}).items()}
                kind = op["op"]
                if kind in ("conv", "dense"):
                    impl = _FloatLinear(op, t)
                elif kind in ("bconv", "bdense"):
                    impl = _BinaryLinear(op, t)
                elif kind == "quantize":
                    impl = _Quantize(op, t)
                elif kind in ("maxpool", "avgpool"):
                    impl = _Pool(op, t)
                elif kind == "gavgpool":
                    impl = _GlobalAvgPool(op, t)
                elif kind == "bmaxpool":
                    impl = _BMaxPool(op, t, channels[op["input"]])
                elif kind == "flatten":
                    impl = _Flatten(op, t)
                elif kind == "affine":
                    impl = _Affine(op, t)
                else:
                    impl = _Act(op, t)
                if kind in ("conv", "bconv", "dense", "bdense"):
                    channels[op["output"]] = t["weight"].shape[0]
                else:
                    channels[op["output"]] = channels[op["input"]]
                self._ops.append((op["input"], op["output"], impl, op.get("residual")))
        except (ValueError, KeyError, TypeError) as e:
            raise DeployError(f"{self.path}: cannot prepare op {op.get('op')!r}: {e}") from None
        self._lock = threading.Lock()
        # a uint8 batch becomes x/127.5 − 1 up front when no op reads the input as integers
        self._input_pm1 = (all(_reads_input_as_float(impl) for src, _, impl, _ in self._ops if src == "input")
                           and not any(res == "input" for _, _, _, res in self._ops))
        self._fused_away: set[int] = set()  # ReLUs applied in place by the op before them
        self._fuse_relus()
        self._signs_to: dict[str, str] = {}  # float output of a binary conv → the value of its packed signs
        self._packed_by_producer: set[str] = set()  # quantize outputs those convs write
        self._fuse_sign_packing()
        for _, dst, impl, _ in self._ops:  # intermediate outputs live in per-op buffers
            impl.reuse_output = dst != self.graph["output"]
        self.float_precision = "fp32"
        if float_precision != "fp32":
            if _kernels.bf16_unit(float_precision) is not None:  # the unit the kernels' "auto" path takes
                self.float_precision = float_precision
                for _, _, impl, _ in self._ops:
                    # real convs; the classifier (dense) stays fp32: at batch 1 its one row is one
                    # block of the bf16 kernel, on one thread, and fp32 on two threads is as fast
                    if isinstance(impl, _FloatLinear) and impl.op["op"] == "conv" and impl.packed is None:
                        impl.float_precision = float_precision
            else:
                import warnings

                needs = ("AMX-BF16, or AVX512_BF16 with the avx512 kernel path" if float_precision == "bf16"
                         else "AMX-BF16")
                warnings.warn(f"float_precision={float_precision!r} needs {needs} (and the OS support); "
                              "this CPU runs the real-valued convs in fp32", RuntimeWarning, stacklevel=2)
        self._build_plan()

    @staticmethod
    def _check_threads(threads) -> int:
        import os

        if threads is None:
            return min(os.cpu_count() or 1, MAX_THREADS)
        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
        return threads

    def check_input(self, x, what: str = "Engine.run") -> np.ndarray:
        """Validate dtype, shape and values of an input batch; return it as contiguous float32
        (uint8 pixels as they are). ``what`` names the caller in the messages."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{what} expects a numpy array, got {type(x).__name__}")
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{what} expects real numbers, got dtype {x.dtype}")
        if x.dtype.kind in "iu" and x.dtype != np.uint8:
            raise TypeError(f"{what} expects float32 input (or uint8 pixels where the file records their "
                            f"preprocessing), got dtype {x.dtype}: convert and preprocess it as in training")
        check_batch(tuple(x.shape), x.dtype == np.uint8, self.input_shape, self.graph)
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x)
        if x.dtype == np.float64 and x.size:
            lo, hi = x.min(), x.max()  # no temporary the size of x
            if np.isfinite(lo) and np.isfinite(hi) and max(-lo, hi) > np.finfo(np.float32).max:
                raise ValueError("input holds values beyond the float32 range")
        x = np.ascontiguousarray(x, dtype=np.float32)
        # max and min see every NaN (they propagate it) and every ±Inf; two reductions cost less
        # than isfinite's boolean temporary
        if x.size and not (np.isfinite(x.max()) and np.isfinite(x.min())):
            raise ValueError("input holds NaN or Inf values")
        return x

    def run(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Logits for batch ``x`` (see the class docstring)."""
        x = self.check_input(x)
        threads = self.threads if threads is None else self._check_threads(threads)
        with self._lock:
            return self._forward(x, threads)

    def _forward(self, x: np.ndarray, threads: int, observe=None) -> np.ndarray:
        if x.ndim == 4:  # NCHW → NHWC in one pass on the core (with x/127.5 − 1 where every reader wants it)
            x = _kernels.nchw_to_nhwc(x, pm1=self._input_pm1 and x.dtype == np.uint8, threads=threads)
        values = {"input": x}
        if observe is None:
            for src, dst, impl, res, signs_dst in self._plan:  # see _build_plan
                if impl is None:
                    values[dst] = values[src]
                    continue
                y = impl(values[src], threads) if res is None else impl(values[src], threads, residual=values[res])
                if signs_dst is None:
                    values[dst] = y
                else:  # a float output and its packed signs
                    values[dst], values[signs_dst] = y
        else:
            for src, dst, impl, res in self._ops:
                observe(impl, values[src])
                if id(impl) in self._fused_away:  # a ReLU already applied by the layer before it
                    values[dst] = values[src]
                elif dst in self._packed_by_producer:  # already packed by the conv that wrote values[src]
                    continue
                else:
                    y = impl(values[src], threads) if res is None else impl(values[src], threads, residual=values[res])
                    if type(y) is tuple:  # a float output and its packed signs
                        values[dst], values[self._signs_to[dst]] = y
                    else:
                        values[dst] = y
        out = values[self.graph["output"]]
        if not self._output_fresh and any(impl._buf is not None and np.may_share_memory(out, impl._buf)
                                          for _, _, impl, _ in self._ops):
            out = out.copy()  # never hand the caller a buffer the next call overwrites
        return out

    #: let a bf16/bf16x3 conv pool its own output when a max/avg pool is its only reader (bit for bit
    #: the same; tests switch it off to compare)
    fuse_conv_pool = True

    def _conv_pool_pairs(self) -> dict[int, tuple["_Pool", str]]:
        """id(conv) → (its pool op, the pool's output) for each conv whose only reader is a max/avg
        pool (a ResNet stem: conv → BN → max-pool) and that can pool as it goes."""
        uses: dict[str, int] = {}
        for src, _, _, res in self._ops:
            uses[src] = uses.get(src, 0) + 1
            if res is not None:
                uses[res] = uses.get(res, 0) + 1
        producer = {dst: (impl, res) for _, dst, impl, res in self._ops}
        pairs = {}
        for src, dst, impl, _ in self._ops:
            prev, prev_res = producer.get(src, (None, None))
            if (prev is not None and prev_res is None and getattr(impl, "op", {}).get("op") in ("maxpool", "avgpool")
                    and id(impl) not in self._fused_away and getattr(prev, "can_fuse_pool", False)
                    and id(prev) not in self._fused_away and uses.get(src) == 1 and src != self.graph["output"]):
                pairs[id(prev)] = (impl, dst)
        return pairs

    def _build_plan(self) -> None:
        """The forward pass as a flat list of steps ``(src, dst, impl, residual, signs_dst)`` with the
        fusions resolved once: a ReLU applied by the op before it is an alias step (``impl`` None),
        a quantize packed by the binary conv before it is no step (that conv's ``signs_dst`` gets the
        packed signs). Rebuilt whenever a fusion changes."""
        pooled = self._conv_pool_pairs() if self.fuse_conv_pool else {}
        pooled_away = {id(pool) for pool, _ in pooled.values()}
        plan = []
        for src, dst, impl, res in self._ops:
            if id(impl) in self._fused_away:
                plan.append((src, dst, None, None, None))
            elif id(impl) in pooled:  # the conv pools its own output: it writes the pool's value
                pool, pool_dst = pooled[id(impl)]
                plan.append((src, pool_dst, functools.partial(impl.pooled_call, pool=pool), None, None))
            elif id(impl) in pooled_away:
                continue
            elif dst not in self._packed_by_producer:
                signs_dst = self._signs_to.get(dst) if getattr(impl, "signs", False) else None
                plan.append((src, dst, impl, res, signs_dst))
        self._plan = plan
        # the ops that always return a new array when their output is the network's (no out buffer,
        # not a view of their input): then the output cannot alias a per-op buffer
        last = plan[-1] if plan else None
        self._output_fresh = (last is not None and last[1] == self.graph["output"] and last[2] is not None
                              and isinstance(last[2], (_FloatLinear, _BinaryLinear, _Pool, _GlobalAvgPool))
                              and last[4] is None)

    def int8_layers(self) -> list[str]:
        """Outputs of the layers that :meth:`quantize_int8` would run in int8."""
        return [dst for _, dst, impl, _ in self._ops if isinstance(impl, _FloatLinear) and impl.int8_eligible]

    def quantize_int8(self, calibration: np.ndarray | None, *, percentile: float = 100.0) -> dict[str, float]:
        """Run the binary-weight layers (binary weights, real activations: BWN/BWNH, methods.md §3)
        as int8 activations × ±1 weights on the int8 GEMM — AMX-INT8 where the CPU has it.

        Each such layer's input is quantised per tensor, ``q = clip(rint(x/s), −127, 127)``, with
        ``s = P/127`` where P is the ``percentile`` of ``|x|`` over ``calibration`` (a batch of
        typical inputs, e.g. a few hundred training images, run through the float path first);
        an input that was never negative in calibration (after a ReLU) uses uint8 with ``s = P/255``.
        The weights are exact; only the activations are rounded. ``None`` switches back to
        float. Returns each layer's scale ``s``.
        """
        layers = [impl for _, _, impl, _ in self._ops if isinstance(impl, _FloatLinear) and impl.int8_eligible]
        if calibration is not None:  # a refused call changes nothing: check everything first
            if not layers:
                raise ValueError(f"{self.path}: no layer with binary weights and real activations to run in int8")
            try:  # a Python, NumPy (0-d too) or torch scalar; not a bool, a string or None
                ok = not isinstance(percentile, (bool, np.bool_, str, bytes)) and np.ndim(percentile) == 0
                percentile = float(percentile) if ok else None
            except (TypeError, ValueError):
                percentile = ok = None
            if not ok or not 0 < percentile <= 100:
                raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
            x = self.check_input(calibration, "Engine.quantize_int8")
        with self._lock:
            before = {id(impl): impl.int8 for impl in layers}
            for impl in layers:
                impl.set_int8(None)
            if calibration is None:
                return {}
            chosen = {id(impl) for impl in layers}
            peaks: dict[int, float] = {}

            nonneg: dict[int, bool] = {}

            def observe(impl, v):
                if id(impl) in chosen:
                    v = as_float(v)
                    a = np.abs(v)
                    peaks[id(impl)] = float(a.max() if percentile == 100 else np.percentile(a, percentile))
                    nonneg[id(impl)] = bool(v.min() >= 0)

            self._forward(x, self.threads, observe)
            dead = [dst for _, dst, impl, _ in self._ops if id(impl) in chosen and not peaks[id(impl)] > 0]
            if dead:  # a scale of 1.0 would quantise every real input of the layer to 0 (or 1)
                for impl in layers:
                    impl.int8 = before[id(impl)]
                self._fuse_relus()
                self._build_plan()
                raise ValueError(
                    f"calibration: the input of {', '.join(dead)} is 0 in every sample (its {percentile}th percentile "
                    "of |x| is 0), so it has no int8 scale; calibrate on typical inputs (e.g. a few hundred "
                    "training images), with a larger percentile. Nothing was changed")
            scales = {}
            for _, dst, impl, _ in self._ops:
                if id(impl) in chosen:
                    top = 255.0 if nonneg[id(impl)] else 127.0
                    s = peaks[id(impl)] / top
                    impl.set_int8(s, unsigned=nonneg[id(impl)])
                    scales[dst] = s
            self._fuse_relus()
            self._build_plan()
            return scales

    def _fuse_relus(self) -> None:
        """Apply each ReLU in place at the end of the op that produces its input (in the int8
        epilogue for int8 layers) when that output feeds nothing else: ``max(y, 0)`` is exact, so
        results are unchanged and one pass over the activations is saved."""
        uses: dict[str, int] = {}
        for src, _, _, res in self._ops:
            uses[src] = uses.get(src, 0) + 1
            if res is not None:
                uses[res] = uses.get(res, 0) + 1
        producer = {dst: impl for _, dst, impl, _ in self._ops}
        self._fused_away = set()
        for _, _, impl, _ in self._ops:
            impl.fuse_relu = False
        for src, _, impl, _ in self._ops:
            if isinstance(impl, _Affine):
                impl.inplace = (uses.get(src) == 1 and src in producer and src != self.graph["output"]
                                and not isinstance(producer[src], _Flatten))  # a view: its input may be shared
            prev = producer.get(src)
            if (isinstance(impl, _Act) and impl.op.get("fn") == "relu" and prev is not None and prev.can_fuse_relu
                    and uses.get(src) == 1 and src != self.graph["output"]):
                prev.fuse_relu = True
                self._fused_away.add(id(impl))

    def _fuse_sign_packing(self) -> None:
        """Where a quantize op packs the float output of a binary conv (the real-valued stream of a
        Bi-Real block, read by the next binary conv), let the conv's epilogue pack the signs while it
        writes the floats (:class:`onebit.kernels.BConv2d` ``signs=True``): bit for bit what
        ``pack_bits`` gives, one pass over the activations and one op call fewer."""
        producer = {dst: impl for _, dst, impl, _ in self._ops}
        for src, dst, impl, _ in self._ops:
            prev = producer.get(src)
            if (isinstance(impl, _Quantize) and id(impl) not in self._fused_away and isinstance(prev, _BinaryLinear)
                    and prev.layer.output == "float" and not prev.signs and src != self.graph["output"]):
                prev.signs = True
                self._signs_to[src] = dst
                self._packed_by_producer.add(dst)

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, ops={len(self._ops)}, threads={self.threads})"
