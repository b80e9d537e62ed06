"""The fixed-budget policy: a given number of images spread over a given number of classes."""

import dataclasses
from typing import Literal

import numpy as np

from transferlab import ClassTree, Policy, PolicyError, Seeds, SpecError, Subset

from .class_policies import classes_by_key, take_classes
from .image_policies import check_available, keep_per_class


def water_fill(counts: np.ndarray, order: np.ndarray, images: int) -> np.ndarray:
    """Per-class quotas summing to min(images, counts.sum()): every class gets min(count, level) for the highest level
    that fits, and the few images left go one each to the classes with more, in `order`. Each quota grows with `images`
    (so subsets nest), and equals the even split when every class holds enough."""
    counts = np.asarray(counts, dtype=np.int64)
    lo, hi = 0, int(counts.max(initial=0))
    while lo < hi:  # the highest level whose capped sum fits the budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(counts, mid).sum() <= images else (lo, mid - 1)
    quota = np.minimum(counts, lo)
    left = images - int(quota.sum())
    room = order[counts[order] > lo]
    quota[room[:left]] += 1
    return quota


@dataclasses.dataclass(frozen=True)
class FixedBudget(Policy):
    """Spend `images` images on `classes` random classes, evenly. Short classes: take='exact' is an error,
    'available' lets them give less (the total falls short), 'redistribute' gives their shortfall to the classes that
    still have images, in seeded class order, so the total is exactly `images` (nested in `images` for a fixed seed)."""

    name = "fixed_budget"
    images: int
    classes: int
    take: Literal["exact", "available", "redistribute"] = "exact"

    def validate(self):
        if self.classes < 1 or self.images < self.classes:
            raise SpecError(f"fixed_budget: need 1 <= classes <= images, got images={self.images}, classes={self.classes}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        subset = take_classes(subset, seeds, self.classes, self.spec())
        order = classes_by_key(subset, seeds)
        if self.take == "redistribute":
            counts = subset.class_counts()
            if counts.sum() < self.images:
                raise PolicyError(f"{self.spec()} needs {self.images} images, but its {self.classes} classes hold only "
                                  f"{int(counts.sum())}; pass take='available' to keep them all")
            return keep_per_class(subset, seeds, water_fill(counts, order, self.images))
        base, extra = divmod(self.images, self.classes)
        quota = np.full(self.classes, base)
        quota[order[:extra]] += 1
        if self.take == "exact":
            check_available(subset, quota, self.spec(), "pass take='redistribute' to give their shortfall to the other classes, "
                            "or take='available' to keep what they have")
        return keep_per_class(subset, seeds, quota)
