"""Deploy: export trained models to ``.onebit`` files and run them bit-packed on the CPU.

``Engine`` (the runtime) imports no PyTorch; ``export`` (which reads torch models) is loaded
only when used.
"""

from .engine import Engine
from .errors import DeployError

__all__ = ["Engine", "DeployError", "export", "lower"]


def __getattr__(name):
    if name in ("export", "lower"):
        from . import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'onebit.deploy' has no attribute {name!r}")
