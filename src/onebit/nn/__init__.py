"""Layers built from quantizers: binary dense/conv, the bit-plane first layer, shift-based BN, constraints,
BONN's conv with its Bayesian kernel prior."""

from . import constraints
from .binary import BinaryConv2d, BinaryLinear, glorot_lr_scale
from .bitplane import BitPlaneConv2d, BitPlaneLinear, bit_planes
from .shift_bn import ShiftBatchNorm1d, ShiftBatchNorm2d

__all__ = [
    "BinaryLinear", "BinaryConv2d", "glorot_lr_scale", "BitPlaneLinear", "BitPlaneConv2d",
    "bit_planes", "BonnConv2d", "ShiftBatchNorm1d", "ShiftBatchNorm2d", "constraints",
]


def __getattr__(name: str):
    """``BonnConv2d`` on first use: :mod:`.bonn` needs :mod:`onebit.losses`, which needs this package's
    :mod:`.constraints`, so importing it eagerly here would be circular."""
    if name == "BonnConv2d":
        from .bonn import BonnConv2d

        return BonnConv2d
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
