"""Layers built from quantizers: binary dense/conv, the bit-plane first layer, shift-based BN, constraints."""

from . import constraints
from .binary import BinaryConv2d, BinaryLinear, glorot_lr_scale
from .bitplane import BitPlaneConv2d, BitPlaneLinear, bit_planes
from .shift_bn import ShiftBatchNorm1d, ShiftBatchNorm2d

__all__ = [
    "BinaryLinear", "BinaryConv2d", "glorot_lr_scale", "BitPlaneLinear", "BitPlaneConv2d",
    "bit_planes", "ShiftBatchNorm1d", "ShiftBatchNorm2d", "constraints",
]
