"""Shift-based Batch Normalization (BNN paper §1.4 and its algorithm box; methods.md §1.5).

Per channel over a mini-batch, with every multiplication replaced by a power-of-two shift::

    mu   = mean(x)
    c    = x - mu
    var  = mean(c · AP2(c))                 # a shift instead of a square
    xhat = c · AP2(1 / sqrt(var + eps))
    y    = AP2(gamma) · xhat + beta

The running statistic is the inverse standard deviation (Torch7 reference,
``BatchNormalizationShiftPow2.lua``): at eval ``y = AP2(gamma)·(x - running_mean)·AP2(running_invstd) + beta``.
Backward: AP2 is straight-through (identity), the simple choice of methods.md §1.5.
``use_ap2=False`` gives ordinary BN (biased batch variance) for tests and ablations.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant.pow2 import ap2_ste


def _distributed() -> bool:
    """Under DDP the statistics are global (see ``batch_mean``): one local sample can be fine."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _ShiftBatchNorm(nn.Module):
    _dims: tuple[int, ...] = (0,)
    _ranks: tuple[int, ...] = (2, 3, 4)  #: input ranks accepted (as nn.BatchNorm1d / 2d)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.125,
                 affine: bool = True, use_ap2: bool = True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.use_ap2 = affine, use_ap2
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("running_invstd", torch.ones(num_features, **kw))

    def _q(self, t: torch.Tensor) -> torch.Tensor:
        return ap2_ste(t) if self.use_ap2 else t

    def batch_mean(self, t: torch.Tensor, dims: list[int]) -> torch.Tensor:
        """Mean over the batch (and spatial) axes; distributed training replaces it by a global mean."""
        return t.mean(dims)

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[1] = -1
        return t.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in self._ranks or x.shape[1] != self.num_features:
            want = " or ".join(f"{r}-D" for r in self._ranks)
            raise ValueError(f"{type(self).__name__}({self.num_features}) takes {want} input with {self.num_features} "
                             f"channels on axis 1, got shape {tuple(x.shape)}")
        if self.training and x.numel() <= self.num_features and not _distributed():
            raise ValueError(f"{type(self).__name__} in training needs more than 1 value per channel (batch statistics), "
                             f"got input of shape {tuple(x.shape)}")
        dims = [d for d in range(x.dim()) if d != 1]
        xf = x.float()
        if self.training:
            mu = self.batch_mean(xf, dims)
            c = xf - self._view(mu, xf)
            var = self.batch_mean(c * self._q(c), dims)
            invstd = 1.0 / torch.sqrt(var + self.eps)
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mu.detach(), alpha=m)
                self.running_invstd.mul_(1 - m).add_(invstd.detach(), alpha=m)
        else:
            c = xf - self._view(self.running_mean, xf)
            invstd = self.running_invstd
        y = c * self._view(self._q(invstd), xf)
        if self.affine:
            y = y * self._view(self._q(self.weight), xf) + self._view(self.bias, xf)
        return y.to(x.dtype)

    def fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode affine form ``y = a·x + b`` per channel (for export)."""
        a = (ap2_ste(self.running_invstd) if self.use_ap2 else self.running_invstd).detach()
        b = -self.running_mean * a
        if self.affine:
            g = (ap2_ste(self.weight) if self.use_ap2 else self.weight).detach()
            a, b = a * g, b * g + self.bias.detach()
        return a, b

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, use_ap2={self.use_ap2}"


class ShiftBatchNorm1d(_ShiftBatchNorm):
    """Shift-based BN over (N, C) or (N, C, L) inputs."""

    _ranks = (2, 3)


class ShiftBatchNorm2d(_ShiftBatchNorm):
    """Shift-based BN over (N, C, H, W) inputs."""

    _ranks = (4,)
