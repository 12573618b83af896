"""Parameter constraints applied after every optimizer step (methods.md §0.4).

BNN keeps latent binary weights in [-1, 1] by clipping them after each update; this is what makes
the identity STE on weights equal the hard-tanh STE. Here it is a reusable mechanism: a layer
declares a constraint on a parameter (:func:`constrain`, a tag kept on the layer), and
:func:`attach` registers one optimizer post-step hook that applies every declared constraint — no
special case in any training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .tags import tag, tagged


@dataclass(frozen=True)
class Clip:
    """Project a parameter onto ``[lo, hi]`` in place."""

    lo: float = -1.0
    hi: float = 1.0

    def __call__(self, p: torch.Tensor) -> None:
        p.clamp_(self.lo, self.hi)


def constrain(module: nn.Module, name: str, constraint) -> nn.Parameter:
    """Declare ``constraint`` (a callable acting in place) on ``module``'s parameter ``name``
    (kept on the module, so it survives ``copy.deepcopy``: :mod:`onebit.nn.tags`); returns the parameter."""
    return tag(module, name, constraint=constraint)


def constrained(module: nn.Module) -> Iterator[tuple[nn.Parameter, object]]:
    """All (parameter, constraint) pairs declared anywhere in ``module``."""
    yield from tagged(module, "constraint")


@torch.no_grad()
def apply_constraints(module: nn.Module) -> None:
    """Apply every declared constraint once (e.g. after initialisation)."""
    for p, c in constrained(module):
        c(p)


def attach(optimizer: torch.optim.Optimizer, module: nn.Module):
    """Apply ``module``'s declared constraints after every ``optimizer.step()``.

    Only parameters the optimizer updates are constrained — also those of a param group added
    later (``optimizer.add_param_group``): the pairs are looked up again whenever the groups change.
    Returns the hook handle.
    """
    cache: dict[str, object] = {"key": None, "pairs": []}

    @torch.no_grad()
    def hook(opt, args, kwargs):
        key = tuple(id(p) for g in opt.param_groups for p in g["params"])
        if key != cache["key"]:
            owned = set(key)
            cache["key"], cache["pairs"] = key, [(p, c) for p, c in constrained(module) if id(p) in owned]
        for p, c in cache["pairs"]:
            c(p)

    return optimizer.register_step_post_hook(hook)
