"""Power-of-two rounding ``AP2`` of BinaryNet's shift-based BN and AdaMax (paper §1.4–1.5; methods.md §1.5).

``AP2(x) = sign(x) * 2^round(log2 |x|)`` and ``AP2(0) = 0``. Multiplying by ``AP2(y)`` is a bit shift.
Rounding happens in the log domain: ``AP2(2.82) = 2``, ``AP2(2.83) = 4``, ``AP2(0.75) = 1``.
"""

from __future__ import annotations

import torch


def ap2(x: torch.Tensor) -> torch.Tensor:
    """``AP2(x) = sign(x) * 2**round(log2|x|)``, ``AP2(0) = 0`` (ties: round half to even in log2)."""
    mag = torch.exp2(torch.round(torch.log2(x.abs())))
    return torch.where(x == 0, torch.zeros_like(x), torch.sign(x) * mag)


def ap2_ste(x: torch.Tensor) -> torch.Tensor:
    """``AP2`` in the forward pass, identity in the backward pass (straight-through)."""
    return x + (ap2(x) - x).detach()
