"""Bi-Real Net's activation binarizer and its pre-training activations (Liu et al., ECCV 2018; methods.md §2.3, §2.5).

* ``approx_sign``: forward ``sign(x)`` (onebit's sign, ``+1`` for ``x >= 0``); backward the
  derivative of the piecewise polynomial ``F`` of paper §3.3::

      F(x) = -1          x < -1             dF/dx = 0
             2x + x²     -1 <= x < 0                2 + 2x
             2x - x²      0 <= x < 1                2 - 2x
             1            x >= 1                    0

  i.e. ``dq/dx = 2 - 2|x|`` for ``|x| < 1``, else 0 (a triangle of height 2 instead of the
  hard-tanh STE's box of height 1). Same rule as the Caffe ``threshold_layer`` backward, the
  PyTorch ``BinaryActivation`` and larq's ``approx_sign``; only sign(0) differs from the
  official PyTorch code (``torch.sign(0) = 0`` there, +1 here: methods.md §0.2).
* ``leaky_clip``: the Caffe README's intermediate pre-training activation (§2.5) — identity on
  ``[-1, 1]``, slope ``slope`` (0.1) outside. Real-valued, training-only (no engine form).
"""

from __future__ import annotations

import torch

from .registry import Quantizer, register
from .sign import sign


def approx_sign_surrogate(x: torch.Tensor) -> torch.Tensor:
    """The piecewise polynomial ``F`` whose derivative ApproxSign uses (continuous, ``F(±1) = ±1``)."""
    c = x.clamp(-1.0, 1.0)
    return 2 * c - c * c.abs()


class _ApproxSign(torch.autograd.Function):
    """Forward ``sign(x)``; backward ``g * max(0, 2 - 2|x|)`` (= ``2 - 2|x|`` on ``|x| < 1``, else 0)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return g * (2.0 - 2.0 * x.abs()).clamp_min_(0.0).to(g.dtype)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """Bi-Real's ApproxSign: ``q = sign(x)``, ``dq/dx = 2 - 2|x|`` for ``|x| < 1``, else 0."""
    return _ApproxSign.apply(x)


@register("approx_sign")
class ApproxSign(Quantizer):
    """Bi-Real activation binarizer: forward ``sign(x)``, backward ``2 - 2|x|`` on ``|x| < 1`` (paper §3.3).

    For activations only; Bi-Real weights use ``magnitude_aware_sign`` (methods.md §2.8 pitfall 4).
    """

    binary = True
    export_as = "sign"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return approx_sign(x)


def leaky_clip(x: torch.Tensor, slope: float = 0.1) -> torch.Tensor:
    """``x`` on ``[-1, 1]``; ``±1 + slope·(x ∓ 1)`` outside (Caffe ``leaky_clip_layer``)."""
    c = x.clamp(-1.0, 1.0)
    return c + slope * (x - c)


@register("leaky_clip")
class LeakyClip(Quantizer):
    """Real-valued leaky clip (Bi-Real Caffe pre-training, methods.md §2.5): slope 1 on [-1, 1], ``slope`` outside."""

    binary = False
    export_as = None  # a pre-training activation: the engine has no form for it

    def __init__(self, slope: float = 0.1):
        super().__init__()
        self.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky_clip(x, self.slope)

    def config(self) -> dict:
        return {"name": self.name, "slope": self.slope}
