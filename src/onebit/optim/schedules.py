"""Learning-rate schedules of the BNN paper (methods.md §1.4, §1.6), as per-epoch multipliers.

* ``exp``: ``lr_e = lr_0 · (lr_final / lr_0)^(e / epochs)`` — the Theano code's exponential decay.
* ``shift``: ``lr_e = lr_0 · 2^-floor(e / every)`` — halve ("1-bit right shift") every N epochs.
* ``cosine``: cosine annealing to ``lr_final``; ``step``: ×0.1 at given milestones; ``const``.
"""

from __future__ import annotations

import math

import torch


def lr_factor(kind: str, epoch: int, *, epochs: int, lr: float, lr_final: float | None = None,
              every: int = 10, milestones: tuple[int, ...] = ()) -> float:
    """The multiplier of the base learning rate at ``epoch`` (0-based)."""
    if kind == "const":
        return 1.0
    if kind == "exp":
        final = lr_final if lr_final is not None else lr * 1e-3
        if not final > 0:
            raise ValueError(f"the exp schedule decays geometrically towards lr_final, which must be > 0, got {final}")
        return (final / lr) ** (epoch / max(epochs, 1))
    if kind == "shift":
        return 2.0 ** -(epoch // max(every, 1))
    if kind == "cosine":
        final = (lr_final or 0.0) / lr
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if kind == "step":
        return 0.1 ** sum(epoch >= m for m in milestones)
    raise ValueError(f"unknown lr schedule {kind!r}; use const, exp, shift, cosine or step")


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, **kw) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch ``LambdaLR`` for :func:`lr_factor` (call ``.step()`` once per epoch)."""
    lr_factor(kind, 0, **kw)  # validate now, not at the first epoch's end
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(kind, e, **kw))
