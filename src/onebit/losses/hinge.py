"""Losses of the BNN paper (methods.md §1.4): squared hinge ("L2-SVM output") and cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def squared_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L = mean_{i,c} max(0, 1 - t_ic · y_ic)^2`` with ``t = 2·onehot(target) - 1`` ∈ {-1, +1}.

    The mean runs over the batch *and* the classes, as both reference codes do.
    """
    if logits.dim() != 2:
        raise ValueError(f"squared_hinge expects (N, C) logits, got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"squared_hinge expects (N,) integer class indices for (N, C) = {tuple(logits.shape)} "
                         f"logits, got {target.dtype} of shape {tuple(target.shape)}")
    t = F.one_hot(target, logits.shape[1]).to(torch.float32).mul_(2).sub_(1)
    return F.relu(1 - t * logits.float()).pow(2).mean()


class SquaredHinge(nn.Module):
    """Module form of :func:`squared_hinge`."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return squared_hinge(logits, target)


_LOSSES = {"sqhinge": SquaredHinge, "ce": nn.CrossEntropyLoss}


def get(name: str) -> nn.Module:
    """``"sqhinge"`` or ``"ce"``."""
    try:
        return _LOSSES[name]()
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; use one of {', '.join(_LOSSES)}") from None


def names() -> list[str]:
    return sorted(_LOSSES)
