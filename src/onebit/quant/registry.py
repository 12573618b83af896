"""The quantizer registry: every binarizer is registered by name and resolved with :func:`get`.

Layers never hard-code a binarizer; they take a *spec* — a registered name, a callable or an
``nn.Module`` — and resolve it here, so a new method plugs in by registering a name
(Larq's quantizer design, ported to PyTorch).
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

QuantizerSpec = Union[str, nn.Module, Callable[[torch.Tensor], torch.Tensor], None]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class Quantizer(nn.Module):
    """Base class of onebit quantizers.

    Attributes:
        name: the registry name (what the exporter reads; it never guesses from behaviour).
        binary: True if the output only holds -1 and +1.
    """

    name: str = "quantizer"
    binary: bool = True
    #: what the deploy engine runs for this quantizer in eval mode: "sign", "identity",
    #: "htanh", "relu" — or None if it has no exact engine form (export then fails, naming it).
    export_as: str | None = None

    def config(self) -> dict:
        """Name and parameters, as stored in checkpoints and ``.onebit`` graphs."""
        return {"name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")


class Lambda(Quantizer):
    """Wraps a plain callable so that it can sit in a layer like any quantizer."""

    binary = False
    export_as = None

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn
        self.name = getattr(fn, "__name__", "lambda")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def register(name: str) -> Callable:
    """Class/factory decorator: ``@register("ste_sign")`` makes ``get("ste_sign")`` build it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a quantizer is registered under a non-empty string name, not {name!r}")

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(factory):
            raise TypeError(f"register({name!r}) decorates a class or factory, not {type(factory).__name__}")
        if name in _REGISTRY:
            raise ValueError(f"quantizer {name!r} is already registered")
        _REGISTRY[name] = factory
        if isinstance(factory, type) and issubclass(factory, Quantizer):
            factory.name = name
        return factory

    return deco


def names() -> list[str]:
    """All registered quantizer names, sorted."""
    return sorted(_REGISTRY)


def get(spec: QuantizerSpec, **kwargs) -> nn.Module:
    """Resolve a quantizer spec to a module.

    ``None`` and ``"identity"`` give the identity; a string is looked up in the registry (keyword
    arguments go to its factory); an ``nn.Module`` is returned as is; any other callable is wrapped.
    """
    if spec is None:
        spec = "identity"
    if isinstance(spec, str):
        try:
            factory = _REGISTRY[spec]
        except KeyError:
            raise KeyError(
                f"unknown quantizer {spec!r}; registered quantizers: {', '.join(names())}"
            ) from None
        return factory(**kwargs)
    if kwargs:
        raise TypeError(f"keyword arguments ({', '.join(kwargs)}) configure a quantizer given by name; "
                        f"a {type(spec).__name__} is used as it is")
    if isinstance(spec, nn.Module):
        return spec
    if callable(spec):
        return Lambda(spec)
    raise TypeError(f"a quantizer must be a name, a module or a callable, not {type(spec).__name__}")


def is_binary(q: nn.Module) -> bool:
    """True if the quantizer's output is always in {-1, +1} (scaled variants: up to a per-channel scale)."""
    return bool(getattr(q, "binary", False))
