"""Recipes as data: everything that defines a training run, printable, saved beside each checkpoint.

A recipe = model + data + loss + optimizer + schedule + epochs + batch size + method-specific
switches. ``onebit train MODEL`` starts from the model's registered recipe and applies overrides.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields


@dataclass
class Recipe:
    model: str
    data: str
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "sqhinge"                 # sqhinge | ce
    optimizer: str = "adam"               # adam | adamax | shift_adamax | sgd
    lr: float = 1e-3
    lr_schedule: str = "exp"              # exp | shift | cosine | step | const
    lr_final: float | None = None         # exp/cosine: the lr reached at the last epoch
    lr_every: int = 10                    # shift: halve every N epochs
    milestones: tuple[int, ...] = ()      # step: ×0.1 at these epochs
    epochs: int = 10
    batch_size: int = 100
    val_size: float = 5000                # images carved from the end of train (or a fraction)
    augment: bool = False                 # random crop (pad 4) + horizontal flip
    normalize: str = "pm1"                # pm1: x/127.5 - 1 (BNN); meanstd; unit
    glorot_lr_scale: bool = False         # BinaryConnect per-layer lr scale on binary weights
    glorot_pow2: bool = False             # round that scale to a power of two (Torch7)
    weight_decay: float = 0.0
    momentum: float = 0.9                 # sgd only
    seed: int = 0
    bf16: bool = False                    # bf16 autocast on the CPU
    channels_last: bool = False           # NHWC conv weights/activations (CPU steps 1.04–1.3× faster)
    limit: int | None = None              # use only the first N training images (smoke runs)
    init_from: str | None = None          # checkpoint whose weights initialise the model (see ``init``)
    init: str = "real"                    # real: copy its same-name tensors (Bi-Real §2.5); bn_retrain: §2.6
    description: str = ""

    def replace(self, **overrides) -> "Recipe":
        """A copy with ``overrides`` applied (unknown keys raise a clear error)."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise KeyError(f"unknown recipe field(s) {bad}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, recipe: Recipe) -> None:
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    _RECIPES[name] = recipe


def recipe_names() -> list[str]:
    return sorted(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe registered under ``name``; a model without its own recipe gets a generic one."""
    if name in _RECIPES:
        return dataclasses.replace(_RECIPES[name])
    from ..models import entry

    e = entry(name)  # raises a clear KeyError for unknown names
    return Recipe(model=name, data=e.default_data, loss="ce", lr=1e-3, lr_schedule="cosine",
                  lr_final=0.0, epochs=10, batch_size=128, description=f"generic recipe for {name}")
