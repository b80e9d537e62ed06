"""Policies that choose classes: random_classes, exclude, split."""

import dataclasses
from typing import Literal

import numpy as np
from transferlab import Policy, PolicyError, Seeds, SpecError, Subset
from transferlab.class_tree import ClassTree


def classes_by_key(subset: Subset, seeds: Seeds) -> np.ndarray:
    """Current classes in seeded order; a class's position depends only on its id and the seed."""
    return np.argsort(seeds.class_keys(subset.classes), kind="stable")


def take_classes(subset: Subset, seeds: Seeds, k: int, what: str) -> Subset:
    """Keep the first k classes in seeded order, renumbered in their original order (nested in k)."""
    if k > subset.num_classes:
        raise PolicyError(f"{what} asks for {k} classes, but only {subset.num_classes} are left")
    return subset.keep_classes(np.sort(classes_by_key(subset, seeds)[:k]))


@dataclasses.dataclass(frozen=True)
class RandomClasses(Policy):
    """Keep k classes chosen at random (seeded; the k=10 classes lie inside the k=20 classes)."""

    name = "random_classes"
    k: int

    def validate(self):
        if self.k < 1:
            raise SpecError(f"random_classes: k must be at least 1, got {self.k}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        return take_classes(subset, seeds, self.k, self.spec())


@dataclasses.dataclass(frozen=True)
class Exclude(Policy):
    """Remove the named classes (ids or names) with all their images."""

    name = "exclude"
    classes: tuple[str | int, ...]

    def validate(self):
        if not self.classes:
            raise SpecError("exclude: classes must name at least one class")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        drop = set(subset.find_classes(self.classes))
        return subset.keep_classes([c for c in range(subset.num_classes) if c not in drop])


@dataclasses.dataclass(frozen=True)
class Split(Policy):
    """Keep one half of the classes: part A gets the first ceil(C/2) in seeded order, part B the rest."""

    name = "split"
    part: Literal["A", "B"]
    how: Literal["random"] = "random"

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        if subset.num_classes < 2:
            raise PolicyError(f"{self.spec()} needs at least 2 classes, has {subset.num_classes}")
        order = classes_by_key(subset, seeds)
        half = (subset.num_classes + 1) // 2
        return subset.keep_classes(np.sort(order[:half] if self.part == "A" else order[half:]))
