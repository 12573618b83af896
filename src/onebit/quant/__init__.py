"""Binarizers (quantizers): one registry, each an autograd function plus a small module.

>>> from onebit import quant
>>> q = quant.get("ste_sign")
>>> quant.names()  # doctest: +ELLIPSIS
[...]
"""

from . import approx_sign, scaled  # noqa: F401  (register the Bi-Real / XNOR quantizers)
from .pow2 import ap2, ap2_ste
from .registry import Quantizer, QuantizerSpec, get, is_binary, names, register
from .sign import (
    HardTanh,
    Identity,
    IdentitySteSign,
    ReLU,
    SteSign,
    StochasticSign,
    hard_sigmoid,
    hard_tanh,
    identity_ste_sign,
    sign,
    ste_sign,
    stochastic_sign,
)

__all__ = [
    "Quantizer", "QuantizerSpec", "get", "is_binary", "names", "register",
    "sign", "ste_sign", "identity_ste_sign", "stochastic_sign", "hard_tanh", "hard_sigmoid",
    "SteSign", "IdentitySteSign", "StochasticSign", "Identity", "HardTanh", "ReLU",
    "ap2", "ap2_ste",
]
from . import bonn  # noqa: F401  (registers the BONN kernel binarizer "bonn_sign")
