"""Model registry: ``onebit.models.create(name, num_classes=…, in_channels=…, image_size=…)``.

One file per family; importing this package registers them all.
"""

from . import bnn  # noqa: F401  (registers the BNN family)
from . import resnet  # noqa: F401
from .registry import InputCheck, ModelEntry, create, create_model, entry, list_models, names, register_model

__all__ = ["create", "create_model", "names", "list_models", "entry", "register_model", "ModelEntry", "InputCheck"]
from . import vgg  # noqa: F401
from . import wrn  # noqa: F401  (registers the BONN family: bonn-wrn22, bonn-wrn40, bonn-resnet18)
