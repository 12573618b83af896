"""Per-parameter declarations — a constraint, a learning-rate factor, "trained by a loss only" —
kept on the module that owns the parameter.

A layer declares, e.g., that its latent weight is clipped to [−1, 1] after every step (BNN §1.3),
or that BONN's reconstruction vector learns at 0.01× the rate (PCNN's η₂); the optimizer helpers
(:func:`onebit.nn.constraints.attach`, :func:`onebit.optim.param_groups`) read the declarations
from the model. They live in the owning module's ``_onebit_param_tags`` (parameter name → tags),
not on the ``nn.Parameter``: torch's ``Parameter.__deepcopy__`` copies the data only, so a tag on
the parameter would vanish from a ``copy.deepcopy`` of the model (an EMA or teacher copy, a
checkpointed twin), while the module's attributes are copied with it.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch import nn

_ATTR = "_onebit_param_tags"


def tag(module: nn.Module, name: str, **tags: Any) -> nn.Parameter:
    """Declare ``tags`` (e.g. ``constraint=Clip(-1, 1)``, ``lr_scale=0.01``, ``loss_only=True``)
    on ``module``'s parameter ``name``; returns the parameter."""
    param = module._parameters.get(name)
    if not isinstance(param, nn.Parameter):
        raise KeyError(f"{type(module).__name__} has no parameter {name!r} to tag")
    table = module.__dict__.setdefault(_ATTR, {})
    table.setdefault(name, {}).update(tags)
    return param


def tagged(model: nn.Module, key: str) -> Iterator[tuple[nn.Parameter, Any]]:
    """Every (parameter, value of tag ``key``) declared anywhere in ``model``, each parameter once."""
    seen: set[int] = set()
    for m in model.modules():
        for name, tags in m.__dict__.get(_ATTR, {}).items():
            p = m._parameters.get(name)
            if key in tags and isinstance(p, nn.Parameter) and id(p) not in seen:
                seen.add(id(p))
                yield p, tags[key]
