"""The model registry (timm's shape): one file per family, ``create("name", **kw)``, configs as data."""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict = field(default_factory=dict)
    family: str = ""
    description: str = ""
    default_data: str = "fashion-mnist"


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, builder: Callable[..., nn.Module], *, family: str, description: str,
                   default_data: str, **defaults) -> None:
    """Register ``name`` → ``builder(**defaults, **overrides)``."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = ModelEntry(name, builder, dict(defaults), family, description, default_data)


def names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_MODELS)


def entry(name: str) -> ModelEntry:
    """The registry entry of model ``name`` (builder, family, default data set, description);
    an unknown name is a ``KeyError`` listing the registered ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(names())}") from None


#: what a builder raises on arguments it cannot build with (re-raised naming the model and them)
_BUILD_ERRORS = (ValueError, TypeError, RuntimeError, ZeroDivisionError, OverflowError)


def _is_bool(v) -> bool:
    return isinstance(v, bool) or getattr(getattr(v, "dtype", None), "kind", None) == "b"  # NumPy's bool too


# a builder argument annotated with one of these names must hold such a value (``X | None`` also None);
# numbers.Integral / Real take NumPy's scalars as well, and a bool is never taken for a number
_SCALAR_CHECKS = {
    "bool": (lambda v: _is_bool(v) or (isinstance(v, numbers.Integral) and v in (0, 1)), "true or false"),
    "int": (lambda v: isinstance(v, numbers.Integral) and not _is_bool(v), "an integer"),
    "float": (lambda v: isinstance(v, numbers.Real) and not _is_bool(v), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def _check_types(name: str, params, cfg: dict) -> None:
    """Refuse a scalar argument of the wrong type before building: ``--set model.binary=no`` arrives
    as the string "no", which Python would take as true (a binary network where a real one was asked
    for); a number that is a bool is refused too. A bool given as 0 or 1 (as older runs stored
    ``--set model.binary=1``) is taken, and becomes False / True in ``cfg``."""
    for k, v in cfg.items():
        p = params.get(k)
        if p is None or not isinstance(p.annotation, str):
            continue
        ann = p.annotation.replace(" ", "")
        optional = ann.endswith("|None")
        kind = ann.removesuffix("|None")
        if kind not in _SCALAR_CHECKS or (optional and v is None):
            continue
        ok, want = _SCALAR_CHECKS[kind]
        if not ok(v):
            raise TypeError(f"cannot build model {name} with {k}={v!r}: {k} must be {want}"
                            f"{' (or null)' if optional else ''}")
        if kind == "bool":
            cfg[k] = bool(v)


def create(name: str, *, num_classes: int = 10, in_channels: int | None = None,
           image_size: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model.

    ``in_channels``/``image_size`` default to the model's own defaults (those of its default data
    set). The returned module carries ``.onebit_config`` (name + every argument the builder used, defaults
    included) so it can be rebuilt exactly.
    """
    e = entry(name)
    cfg = dict(e.defaults)
    cfg.update(num_classes=num_classes)
    if in_channels is not None:
        cfg["in_channels"] = in_channels
    if image_size is not None:
        cfg["image_size"] = image_size
    cfg.update(kwargs)
    params = inspect.signature(e.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = sorted(set(cfg) - set(params))
        if bad:
            raise TypeError(f"model {name} takes no argument(s) {bad} (a --set KEY=VALUE that is not a recipe "
                            f"field goes to the model); its arguments: {', '.join(sorted(params))}")
    _check_types(name, params, cfg)
    given = "".join(f" {k}={v!r}" for k, v in kwargs.items())
    given = f" with{given}" if given else ""
    try:
        with warnings.catch_warnings():  # a 0-size layer is refused below, with its name
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            model = e.builder(**cfg)
    except _BUILD_ERRORS as err:
        if type(err) not in _BUILD_ERRORS:
            raise  # a library error class of its own (e.g. a DataError) keeps its type
        raise (TypeError if type(err) is TypeError else ValueError)(
            f"cannot build model {name}{given}: {err}") from err
    empty = next((n for n, t in model.state_dict().items() if t.numel() == 0), None)
    if empty is not None:
        raise ValueError(f"model {name}{given} has an empty tensor {empty} (0 elements): a size argument is 0")
    # every argument the builder used, its defaults included: a saved model rebuilds the same
    # network even if a later version changes a default
    built = {k: p.default for k, p in params.items() if p.default is not p.empty} | cfg
    model.onebit_config = {"name": name, **built}
    if isinstance(built.get("in_channels"), int) and isinstance(built.get("image_size"), int):
        model.register_forward_pre_hook(InputCheck(name, model, built["in_channels"], built["image_size"]))
    return model


#: the public names of timm's shape
create_model = create
list_models = names


class InputCheck:
    """A forward pre-hook that refuses an input the model cannot mean, naming the model and the
    shape it takes, before PyTorch fails inside some layer with a message about its weight or a
    reshaped tensor:

    * a batch of images ``(N, C, H, W)`` with ``C == in_channels``; a model whose classifier sees
      the flattened map (no global pooling: ``bnn-mlp``, ``bnn-convnet``, ``vgg9-*``) also needs
      ``H == W == image_size``; an MLP (``bnn-mlp``) takes any ``(N, ...)`` of ``C·H·W`` values a
      sample, as its ``Flatten`` does;
    * a floating-point tensor of the model's own dtype (outside autocast): uint8 pixels must first
      go through the data pipeline's normalisation (the deployed engine takes uint8 where the
      exported file records it).
    """

    def __init__(self, name: str, model: nn.Module, in_channels: int, image_size: int):
        self.name, self.in_channels, self.image_size = name, in_channels, image_size
        self.features = in_channels * image_size * image_size  # values of one sample
        self.fixed_size = not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
        first = next(iter(model.children()), None)
        self.takes_rows = isinstance(first, nn.Flatten)  # an MLP: (N, features) rows are fine

    def _expected(self) -> str:
        hw = f"{self.image_size}, {self.image_size}" if self.fixed_size else "H, W"
        rows = f" or (N, ...) of {self.features} values" if self.takes_rows else ""
        return f"(N, {self.in_channels}, {hw}){rows}"

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if not args:
            return
        x = args[0]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"model {self.name} takes a tensor of shape {self._expected()}, got {type(x).__name__}")
        shape = tuple(x.shape)
        if self.takes_rows and x.dim() >= 2:  # an MLP flattens each sample: (N, 28, 28) is fine
            ok = math.prod(shape[1:]) == self.features
        else:
            ok = x.dim() == 4 and shape[1] == self.in_channels and (
                not self.fixed_size or shape[2:] == (self.image_size, self.image_size))
        if not ok:
            raise ValueError(f"model {self.name} takes input of shape {self._expected()}, got {shape}"
                             + (" (a single image needs a batch dimension: x.unsqueeze(0))"
                                if x.dim() == 3 and shape[0] == self.in_channels else ""))
        if not x.is_floating_point():
            raise TypeError(f"model {self.name} takes floating-point input, got {x.dtype}: normalise the pixels "
                            "first (as the data pipeline does; e.g. x.float() / 127.5 - 1 for the ±1 range)")
        p = next(module.parameters(), None)
        if p is not None and x.dtype != p.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"model {self.name} holds {p.dtype} weights but got {x.dtype} input: "
                            f"x.to({p.dtype}) or model.to({x.dtype}) (or run under torch.autocast)")
