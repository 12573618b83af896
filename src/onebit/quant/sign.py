"""Sign binarizers of BinaryNet (Hubara, Courbariaux et al. 2016, §1.1 and §1.3; methods.md §0.2–0.3, §1.2–1.3).

One sign for the whole toolkit: ``sign(x) = +1 if x >= 0 else -1``. It never returns 0, so every
binarized tensor has a 1-bit encoding and the trained graph equals the bit-packed one.
"""

from __future__ import annotations

import math

import torch

from .registry import Quantizer, register


def sign(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) = +1 for x >= 0, -1 for x < 0`` (never 0; ``-0.0`` gives +1), in ``x``'s dtype.

    Computed as ``sign(sign(x) + 1/2)`` (two vectorised passes; 3× faster than ``torch.where``).
    NaN gives +1 (``torch.sign(NaN)`` is 0 here), as in the engine's bit packer, so training and
    deployment agree; NaN is caught where it enters instead: the engine refuses NaN input and the
    trainer stops on a non-finite loss.
    """
    return torch.sign(x).add_(0.5).sign_()


def hard_tanh(x: torch.Tensor) -> torch.Tensor:
    """``htanh(x) = clip(x, -1, 1)``."""
    return x.clamp(-1.0, 1.0)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``hsig(x) = clip((x + 1) / 2, 0, 1)``: the probability of +1 in stochastic binarization."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


class _SteSign(torch.autograd.Function):
    """Forward ``sign(x)``; backward ``g * 1[|x| <= 1]`` (hard-tanh gradient cancelling)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, clip: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip = clip
        return sign(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= ctx.clip).to(g.dtype), None


class _IdentitySteSign(torch.autograd.Function):
    """Forward ``sign(x)``; backward ``g`` (identity). Used on latent weights kept in [-1, 1] by clipping."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return sign(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g


class _StochasticSign(torch.autograd.Function):
    """Forward: +1 with probability ``hsig(x)``, else -1; backward ``g * 1[|x| <= 1]``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, generator) -> torch.Tensor:
        ctx.save_for_backward(x)
        u = torch.rand(x.shape, dtype=torch.float32, device=x.device, generator=generator)
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return torch.where(u < hard_sigmoid(x.float()), one, -one)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype), None


def ste_sign(x: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """Deterministic sign with the straight-through estimator and gradient cancelling.

    Forward ``q = sign(x)``; backward ``dq/dx = 1[|x| <= clip]`` (paper §1.3, eq. for ``g_r``).
    """
    return _SteSign.apply(x, clip)


def identity_ste_sign(x: torch.Tensor) -> torch.Tensor:
    """Forward ``sign(x)``; backward identity (``dq/dx = 1``).

    With latent weights clipped to [-1, 1] after each step (methods.md §0.4) this equals the hard-tanh STE.
    """
    return _IdentitySteSign.apply(x)


def stochastic_sign(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarization: ``P(q = +1) = hsig(x)``, so ``E[q] = htanh(x)``; backward ``1[|x| <= 1]``."""
    return _StochasticSign.apply(x, generator)


@register("ste_sign")
class SteSign(Quantizer):
    """Deterministic sign, STE with hard-tanh gradient cancelling: ``q = sign(x)``, ``dq/dx = 1[|x| <= clip]``.

    The BNN activation binarizer (paper §1.3). ``clip`` widens or narrows the pass-through window.
    """

    export_as = "sign"

    def __init__(self, clip: float = 1.0):
        super().__init__()
        self.clip = float(clip)
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip (the STE's gradient window |x| <= clip) must be a finite number > 0, got {clip!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_sign(x, self.clip)

    def config(self) -> dict:
        return {"name": self.name, "clip": self.clip}


@register("identity_ste_sign")
class IdentitySteSign(Quantizer):
    """``q = sign(x)``, ``dq/dx = 1``: the BNN weight binarizer, used with latent-weight clipping."""

    export_as = "sign"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return identity_ste_sign(x)


@register("stochastic_sign")
class StochasticSign(Quantizer):
    """Stochastic sign in training (``P(+1) = hsig(x)``), deterministic ``sign`` in eval mode.

    Backward ``dq/dx = 1[|x| <= 1]`` in both modes (paper §1.1–1.3).
    """

    export_as = "sign"  # eval mode is deterministic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return stochastic_sign(x)
        return ste_sign(x)


@register("identity")
class Identity(Quantizer):
    """No quantization: ``q = x`` (real-valued inputs/weights, float twins)."""

    binary = False
    export_as = "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register("htanh")
class HardTanh(Quantizer):
    """Real-valued ``htanh(x) = clip(x, -1, 1)`` activation (float twins of BNN models)."""

    binary = False
    export_as = "htanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hard_tanh(x)


@register("relu")
class ReLU(Quantizer):
    """Real-valued ReLU activation (float baselines)."""

    binary = False
    export_as = "relu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)
