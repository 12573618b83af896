"""The BNN paper's first layer on 8-bit inputs (paper §1.6; methods.md §1.7).

For an 8-bit input ``x`` and binary weights ``w_b`` the weighted sum decomposes over bit-planes::

    s = x · w_b = Σ_{n=1..8} 2^(n-1) · (x^n · w_b),      x^n ∈ {0, 1} the n-th bit of x

so each term is a binary (AND/popcount) product. :class:`BitPlaneLinear` and
:class:`BitPlaneConv2d` compute exactly that; they equal the float layer applied to the 8-bit
input with ``sign(W)`` weights (tested). Training uses real inputs scaled to [-1, 1]
(``x_pm1 = x/127.5 - 1``), which is an affine function of the 8-bit ``x``:
``w·x_pm1 = (w·x)/127.5 - Σw`` — :func:`pm1_from_uint8_correction` gives that correction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.sign import sign


def bit_planes(x: torch.Tensor) -> torch.Tensor:
    """Split integer values in [0, 255] into 8 bit-planes: output shape (8, *x.shape), plane n-1 = bit n."""
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"bit-plane input must hold integers in [0, 255], got dtype {x.dtype}")
    if x.dtype != torch.uint8:
        # any other dtype is checked before the cast: a cast to uint8 would wrap 300 to 44 and -2 to 254
        if x.numel() and ((x.dtype.is_floating_point and not torch.equal(x, x.round()))
                          or x.min() < 0 or x.max() > 255):
            bad = x[(x != x.round()) | (x < 0) | (x > 255)] if x.dtype.is_floating_point else x[(x < 0) | (x > 255)]
            raise ValueError(f"bit-plane input must hold integers in [0, 255] (dtype {x.dtype}); "
                             f"found {bad.numel()} value(s) outside, e.g. {bad.flatten()[0].item()}")
        x = x.to(torch.uint8)
    shifts = torch.arange(8, dtype=torch.uint8, device=x.device).view(8, *([1] * x.dim()))
    return ((x.unsqueeze(0) >> shifts) & 1).to(torch.float32)


class BitPlaneLinear(nn.Module):
    """``s = Σ_n 2^(n-1) · (x^n · sign(W)ᵀ)`` for uint8 input ``x`` of shape (N, in_features)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wb = sign(self.weight)
        planes = bit_planes(x)
        return sum((2.0 ** n) * F.linear(planes[n], wb) for n in range(8))


class BitPlaneConv2d(nn.Module):
    """Conv2d form of :class:`BitPlaneLinear` on uint8 NCHW input (zero padding = bit-planes of 0)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size).uniform_(-1, 1))
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wb = sign(self.weight)
        planes = bit_planes(x)
        return sum((2.0 ** n) * F.conv2d(planes[n], wb, None, self.stride, self.padding) for n in range(8))


def pm1_from_uint8_correction(weight: torch.Tensor) -> torch.Tensor:
    """Per-output ``Σ sign(w)``: ``sign(w)·(x/127.5 - 1) = (sign(w)·x)/127.5 - Σ sign(w)`` (dense layers)."""
    return sign(weight).flatten(1).sum(1)
