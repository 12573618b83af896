"""Recipes as data: everything that defines a training run, printable, saved beside each checkpoint.

A recipe = model + data + loss + optimizer + schedule + epochs + batch size + method-specific
switches. ``onebit train MODEL`` starts from the model's registered recipe and applies overrides.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
    lr_final: float | None = None         # exp/cosine: the lr the schedule decays to, reached at the end of
                                          # the last epoch (that epoch runs one step above it: the Theano code)
    lr_every: int = 10                    # shift: halve every N epochs
    milestones: tuple[int, ...] = ()      # step: ×0.1 at these epochs
    epochs: int = 10
    batch_size: int = 100
    val_size: float = 5000                # images carved from the end of train (or a fraction)
    augment: bool = False                 # random crop (pad 4) + horizontal flip
    crop: str = "random_resized"          # imagefolder training crop: random_resized | resize (Bi-Real)
    normalize: str = "pm1"                # pm1: x/127.5 - 1 (BNN); meanstd; unit
    glorot_lr_scale: bool = False         # BinaryConnect per-layer lr scale on binary weights
    glorot_pow2: bool = False             # round that scale to a power of two (Torch7)
    weight_decay: float = 0.0
    momentum: float = 0.9                 # sgd only
    nesterov: bool = True                 # sgd only: Nesterov momentum; False: plain (heavy-ball) momentum
    seed: int = 0
    bf16: bool = False                    # bf16 autocast on the CPU
    channels_last: bool = False           # NHWC conv weights/activations (CPU steps 1.04–1.3× faster)
    limit: int | None = None              # use only the first N training images (smoke runs)
    init_from: str | None = None          # checkpoint whose weights initialise the model (see ``init``)
    init: str = "real"                    # real: copy its same-name tensors (Bi-Real §2.5); bn_retrain: §2.6
    description: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field's type and range; a ValueError names the field and the value.
        (A list of milestones, as ``recipe.json`` holds them, becomes the tuple the field is.)"""
        if isinstance(self.milestones, list):
            self.milestones = tuple(self.milestones)
        for f in fields(self):
            v = getattr(self, f.name)
            kind = _FIELD_KINDS.get(str(f.type))
            if kind is None:
                continue
            optional, check, what = kind
            if v is None and optional:
                continue
            if not check(v):
                raise ValueError(f"recipe field {f.name} must be {what}{' or null' if optional else ''}, got {v!r}")
        for name, ok, what in (
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("lr_final", self.lr_final is None or (math.isfinite(self.lr_final) and self.lr_final >= 0), ">= 0"),
            ("lr_final", not (self.lr_schedule == "exp" and self.lr_final is not None and self.lr_final <= 0),
             "> 0 with lr_schedule exp (it decays geometrically towards it; null: lr/1000)"),
            ("lr_every", self.lr_every >= 1, ">= 1"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("val_size", math.isfinite(self.val_size) and self.val_size >= 0, ">= 0 (images, or a fraction < 1)"),
            ("limit", self.limit is None or self.limit >= 1, ">= 1"),
            ("seed", self.seed >= 0, ">= 0"),
            ("milestones", all(m >= 1 for m in self.milestones), "epochs >= 1"),
            ("init", self.init in INIT_MODES, f"one of {', '.join(INIT_MODES)}"),
            ("crop", self.crop in ("random_resized", "resize"), "one of random_resized, resize"),
        ):
            if not ok:
                raise ValueError(f"recipe field {name} must be {what}, got {getattr(self, name)!r}")

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
        return cls(**{k: v for k, v in d.items() if k in known})  # __post_init__: milestones → tuple

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


INIT_MODES = ("real", "bn_retrain")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


# annotation (a string: postponed evaluation) → (None allowed, check, what it must be)
_FIELD_KINDS = {
    "str": (False, lambda v: isinstance(v, str), "a string"),
    "str | None": (True, lambda v: isinstance(v, str), "a string"),
    "int": (False, _is_int, "an integer"),
    "int | None": (True, _is_int, "an integer"),
    "float": (False, _is_num, "a finite number"),
    "float | None": (True, _is_num, "a finite number"),
    "bool": (False, lambda v: isinstance(v, bool), "true or false"),
    "dict": (False, lambda v: isinstance(v, dict), "a JSON object"),
    "tuple[int, ...]": (False, lambda v: isinstance(v, tuple) and all(_is_int(m) for m in v), "a list of integers"),
}

_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, recipe: Recipe) -> None:
    """Register ``recipe`` under ``name`` (``onebit train MODEL --recipe NAME``); names are unique."""
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    _RECIPES[name] = recipe


def recipe_names() -> list[str]:
    """All registered recipe names, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe registered under ``name``; a model without its own recipe gets a generic one."""
    if name in _RECIPES:
        return dataclasses.replace(_RECIPES[name])
    from ..models import entry

    e = entry(name)  # raises a clear KeyError for unknown names
    return Recipe(model=name, data=e.default_data, loss="ce", lr=1e-3, lr_schedule="cosine",
                  lr_final=0.0, epochs=10, batch_size=128, description=f"generic recipe for {name}")
