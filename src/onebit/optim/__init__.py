"""Optimizers, learning-rate schedules and parameter-group helpers."""

from .groups import param_groups
from .schedules import lr_factor, make_scheduler
from .shift_adamax import ShiftAdaMax

__all__ = ["ShiftAdaMax", "param_groups", "lr_factor", "make_scheduler"]
