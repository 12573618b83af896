"""Losses: squared hinge and cross-entropy (BONN's Bayesian losses will join here)."""

from . import bayes  # noqa: F401  (BONN's Bayesian kernel and feature losses)
from .hinge import SquaredHinge, get, names, squared_hinge

__all__ = ["SquaredHinge", "squared_hinge", "get", "names"]
