"""The fixed-budget policy: a given number of images spread over a given number of classes."""

import dataclasses
from typing import Literal

import numpy as np

from transferlab import Policy, Seeds, SpecError, Subset
from transferlab.class_tree import ClassTree

from .class_policies import classes_by_key, take_classes
from .image_policies import check_available, keep_per_class


@dataclasses.dataclass(frozen=True)
class FixedBudget(Policy):
    """Spend `images` images on `classes` random classes, evenly; take='available' lets short classes give less."""

    name = "fixed_budget"
    images: int
    classes: int
    take: Literal["exact", "available"] = "exact"

    def validate(self):
        if self.classes < 1 or self.images < self.classes:
            raise SpecError(f"fixed_budget: need 1 <= classes <= images, got images={self.images}, classes={self.classes}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        subset = take_classes(subset, seeds, self.classes, self.spec())
        base, extra = divmod(self.images, self.classes)
        quota = np.full(self.classes, base)
        quota[classes_by_key(subset, seeds)[:extra]] += 1
        if self.take == "exact":
            check_available(subset, quota, self.spec())
        return keep_per_class(subset, seeds, quota)
