"""Built-in subset policies that need no hierarchy: all, images_per_class, fraction, random_classes, tree_classes, fixed_budget, exclude, split."""

from transferlab import hookimpl

from .budget import FixedBudget
from .class_policies import Exclude, RandomClasses, Split, TreeClasses, class_anchors, nodes_bottom_up
from .image_policies import All, Fraction, ImagesPerClass

__all__ = ["class_anchors", "nodes_bottom_up"]  # tree walks other plugins' policies share


@hookimpl
def register_policies(register):
    for policy in (All, ImagesPerClass, Fraction, RandomClasses, TreeClasses, FixedBudget, Exclude, Split):
        register(policy)
