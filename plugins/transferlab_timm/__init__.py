"""Built-in backbones: any timm model by name, randomly initialised, with small-image stems for ResNets."""

from transferlab import hookimpl

from .backbone import TimmBackbone


@hookimpl
def register_backbones(register):
    register(TimmBackbone)
