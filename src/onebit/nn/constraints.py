"""Parameter constraints applied after every optimizer step (methods.md §0.4).

BNN keeps latent binary weights in [-1, 1] by clipping them after each update; this is what makes
the identity STE on weights equal the hard-tanh STE. Here it is a reusable mechanism: a layer
declares a constraint on a parameter, and :func:`attach` registers one optimizer post-step hook
that applies every declared constraint — no special case in any training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class Clip:
    """Project a parameter onto ``[lo, hi]`` in place."""

    lo: float = -1.0
    hi: float = 1.0

    def __call__(self, p: torch.Tensor) -> None:
        p.clamp_(self.lo, self.hi)


def constrain(param: nn.Parameter, constraint) -> nn.Parameter:
    """Declare ``constraint`` (a callable acting in place) on ``param``; returns the parameter."""
    param.onebit_constraint = constraint  # type: ignore[attr-defined]
    return param


def constrained(module: nn.Module) -> Iterator[tuple[nn.Parameter, object]]:
    """All (parameter, constraint) pairs declared anywhere in ``module``."""
    for p in module.parameters():
        c = getattr(p, "onebit_constraint", None)
        if c is not None:
            yield p, c


@torch.no_grad()
def apply_constraints(module: nn.Module) -> None:
    """Apply every declared constraint once (e.g. after initialisation)."""
    for p, c in constrained(module):
        c(p)


def attach(optimizer: torch.optim.Optimizer, module: nn.Module):
    """Apply ``module``'s declared constraints after every ``optimizer.step()``.

    Only parameters the optimizer updates are constrained. Returns the hook handle.
    """
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    pairs = [(p, c) for p, c in constrained(module) if id(p) in owned]

    @torch.no_grad()
    def hook(opt, args, kwargs):
        for p, c in pairs:
            c(p)

    return optimizer.register_step_post_hook(hook)
