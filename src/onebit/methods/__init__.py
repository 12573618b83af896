"""What makes each paper a method rather than a layer: recipes (as data) and procedures."""

from . import bnn  # noqa: F401  (registers the BinaryNet recipes)
from . import bireal  # noqa: F401
from .recipe import Recipe, get_recipe, recipe_names, register_recipe

__all__ = ["Recipe", "get_recipe", "recipe_names", "register_recipe"]
from . import bwnh  # noqa: F401
from . import bonn  # noqa: F401  (registers the BONN recipes)
