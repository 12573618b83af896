"""onebit.kernels: bit-packed binary (1-bit) NN kernels for CPU deployment.

A thin NumPy API over the C++ module ``onebit.kernels._core`` (built by CMake/pybind11),
plus pure-NumPy references in :mod:`onebit.kernels.reference`. Does not import torch.

Conventions (fixed; the exporter relies on them)
-------------------------------------------------
* ``sign(x) = +1`` for ``x >= 0`` (so ``-0.0 -> +1``), ``-1`` for ``x < 0``.
* bit = 1 iff the value is -1; +1 is bit 0. Packed along the channel (last, NHWC) axis
  into uint64 words, LSB first: channel c -> word c // 64, bit c % 64. Tail bits of the
  last word are 0 for every operand (activations too: the kernels rely on it).
* For two +-1 vectors of length K: ``dot = K - 2 * popcount(a XOR b)``.
* Activations NHWC, packed (N, H, W, ceil(C/64)) uint64; conv weights (C_out, C_in, kh, kw)
  packed (C_out, kh, kw, ceil(C_in/64)) uint64 (see :func:`pack_conv_weights`); prepare
  them once with :func:`prepare_conv_weights` / :class:`BConv2d`.

ISA paths: 'avx512' (VPOPCNTDQ), 'avx2' (vpshufb popcount), 'portable'; the best available
is used unless forced with :func:`set_isa` / :func:`use_isa` (or the ONEBIT_ISA environment
variable at import time). Threads: :func:`set_num_threads` or ``threads=`` per call.
"""

from __future__ import annotations

import os as _os

from . import reference
from ._api import (
    BConv2d,
    BDense,
    amx_bf16_usable,
    amx_int8_usable,
    avx512_bf16_usable,
    bconv2d,
    bgemm,
    bmaxpool2d,
    channel_affine_,
    nchw_to_nhwc,
    cpu_info,
    fconv2d_bf16,
    fconv2d_bf16x3,
    fconv2d_f32,
    fconv2d_pool,
    float_paths,
    fold_affine_sign,
    get_isa,
    get_num_threads,
    iconv2d_s8,
    igemm_s8,
    isa_paths,
    pack_bits,
    pack_conv_weights,
    pack_dense_weights,
    peak_microbench,
    pool2d,
    prepare_conv_weights,
    prepare_dense_weights,
    prepare_float_weights,
    prepare_int8_weights,
    quantize_s8,
    set_isa,
    set_num_threads,
    unpack_bits,
    use_isa,
    _core,
)

ConvWeights = _core.ConvWeights if _core is not None else None



def bf16_unit(precision: str = "bf16") -> str | None:
    """Where the float conv runs ``precision`` (``"bf16"`` or ``"bf16x3"``) faster than fp32 on this
    machine, as the kernels' ``path="auto"`` picks it: ``"AMX-BF16"``, ``"AVX512_BF16"`` (plain bf16
    only, while the kernels dispatch to AVX-512: its three bf16x3 products cost more than one fp32
    FMA), or None. (Looks the capability checks up here, so tests can stand in for them.)"""
    if amx_bf16_usable():
        return "AMX-BF16"
    if precision == "bf16" and avx512_bf16_usable() and get_isa() == "avx512":
        return "AVX512_BF16"
    return None


__all__ = [
    "BConv2d",
    "BDense",
    "ConvWeights",
    "amx_bf16_usable",
    "amx_int8_usable",
    "avx512_bf16_usable",
    "bconv2d",
    "bgemm",
    "bmaxpool2d",
    "channel_affine_",
    "nchw_to_nhwc",
    "cpu_info",
    "fconv2d_bf16",
    "float_paths",
    "fconv2d_bf16x3",
    "fconv2d_f32",
    "fconv2d_pool",
    "fold_affine_sign",
    "bf16_unit",
    "get_isa",
    "get_num_threads",
    "iconv2d_s8",
    "igemm_s8",
    "isa_paths",
    "pack_bits",
    "pack_conv_weights",
    "pack_dense_weights",
    "peak_microbench",
    "pool2d",
    "prepare_conv_weights",
    "prepare_dense_weights",
    "prepare_float_weights",
    "prepare_int8_weights",
    "quantize_s8",
    "reference",
    "set_isa",
    "set_num_threads",
    "unpack_bits",
    "use_isa",
]

if _core is not None and _os.environ.get("ONEBIT_ISA"):
    try:
        set_isa(_os.environ["ONEBIT_ISA"])
    except ValueError as _exc:  # do not break the import over an env var
        import warnings as _warnings

        _warnings.warn(f"ignoring ONEBIT_ISA: {_exc}", RuntimeWarning, stacklevel=2)
