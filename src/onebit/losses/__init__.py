"""Losses: squared hinge and cross-entropy (BONN's Bayesian losses will join here)."""

from .hinge import SquaredHinge, get, names, squared_hinge

__all__ = ["SquaredHinge", "squared_hinge", "get", "names"]
