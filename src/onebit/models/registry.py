"""The model registry (timm's shape): one file per family, ``create("name", **kw)``, configs as data."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Callable

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


def create(name: str, *, num_classes: int = 10, in_channels: int | None = None,
           image_size: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model.

    ``in_channels``/``image_size`` default to the model's own defaults (those of its default data
    set). The returned module carries ``.onebit_config`` (name + arguments) so it can be rebuilt.
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
    model.onebit_config = {"name": name, **cfg}
    return model
