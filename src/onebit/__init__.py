"""onebit: 1-bit (binary) CNNs — train them in PyTorch with the published methods, measure them,
and deploy them bit-packed on the CPU.

Subpackages: ``quant`` (binarizers), ``nn`` (layers), ``optim``, ``losses``, ``models``
(registry), ``methods`` (recipes), ``data``, ``train``, ``deploy`` (export + engine, no torch at
run time), ``kernels`` (C++ XNOR-popcount core), ``analysis``, ``cli``.
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import onebit` stays light, and the deploy runtime never pulls torch
    import importlib

    if name in {"quant", "nn", "optim", "losses", "models", "methods", "data", "train", "deploy",
                "kernels", "analysis", "cli"}:
        return importlib.import_module(f"onebit.{name}")
    if name == "summary":
        from .analysis import summary

        return summary
    if name == "sign":
        from .quant import sign

        return sign
    raise AttributeError(f"module 'onebit' has no attribute {name!r}")
