"""Policies that choose images within classes: all, images_per_class, fraction."""

import dataclasses
from typing import Literal

import numpy as np

from transferlab import ClassTree, Policy, PolicyError, Seeds, SpecError, Subset, ranks_within_class

WORST_NAMED = 3  # classes an error about too few images names (the worst); the rest are counted
NAME_CHARS = 40  # of each class named there (WordNet names run long)


@dataclasses.dataclass(frozen=True)
class All(Policy):
    """Keep everything (the whole training split)."""

    name = "all"

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        return subset


def keep_per_class(subset: Subset, seeds: Seeds, quota: np.ndarray) -> Subset:
    """Keep the `quota[c]` lowest-keyed images of each class c; nested in the quota for a fixed seed."""
    labels = subset.labels
    order, rank = ranks_within_class(labels, seeds.sample_keys(subset.samples))
    return subset.keep_samples(subset.samples[order[rank < quota[labels[order]]]])


def check_available(subset: Subset, wanted: np.ndarray, what: str, hint: str = "pass take='available' to keep what they have") -> None:
    """One-line error naming the classes with fewer images than wanted: how many, and the WORST_NAMED worst, each once."""
    counts = subset.class_counts()
    short = np.flatnonzero(counts < wanted)
    if len(short):
        worst = short[np.argsort(counts[short] - np.broadcast_to(wanted, counts.shape)[short], kind="stable")[:WORST_NAMED]]
        listed = ", ".join(f"{class_text(subset, c)} has {counts[c]}" for c in worst)
        which = ", the worst" if len(short) > WORST_NAMED else ""
        raise PolicyError(f"{what} asks for {int(wanted.max())} images per class, but {len(short)} of {subset.num_classes} classes "
                          f"have fewer{which}: {listed}; " + hint)


def class_text(subset: Subset, c: int) -> str:
    """A class as an error names it: its name, cut to NAME_CHARS, then its id when that differs."""
    cid, name = subset.classes[c], subset.class_names[c]
    name = name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…"
    return cid if name == cid else f"{name} ({cid})"


@dataclasses.dataclass(frozen=True)
class ImagesPerClass(Policy):
    """Keep n images of every class (seeded; the n=25 subset lies inside the n=50 subset)."""

    name = "images_per_class"
    n: int
    take: Literal["exact", "available"] = "exact"

    def validate(self):
        if self.n < 1:
            raise SpecError(f"images_per_class: n must be at least 1, got {self.n}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        quota = np.full(subset.num_classes, self.n)
        if self.take == "exact":
            check_available(subset, quota, self.spec())
        return keep_per_class(subset, seeds, quota)


@dataclasses.dataclass(frozen=True)
class Fraction(Policy):
    """Keep a fraction p of every class's images (at least one; seeded and nested in p)."""

    name = "fraction"
    p: float

    def validate(self):
        if not 0 < self.p <= 1:
            raise SpecError(f"fraction: p must lie in (0, 1], got {self.p}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        counts = subset.class_counts()
        return keep_per_class(subset, seeds, np.maximum(1, np.floor(counts * self.p + 1e-9)).astype(np.int64))
