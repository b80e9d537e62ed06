"""Studies of how much data: images_per_class (fewer images of every class) and fixed_budget (classes × images at a fixed total)."""

import dataclasses
import math
from typing import Literal

import numpy as np

from transferlab import Cell, PolicyError, Source, SpecError, Study

from .common import policy, train_counts, user_target

# The paper's subsets of ImageNet's 1300 images per class: 500, 250, 125, 50 and 25 per class.
PAPER_FRACTIONS = (500 / 1300, 250 / 1300, 125 / 1300, 50 / 1300, 25 / 1300)
BUDGET_SPLITS = 5  # default fixed_budget: N, N/2, N/4, N/8 and N/16 classes


@dataclasses.dataclass(frozen=True)
class ImagesPerClass(Study):
    """Is more data per class better? Every class cut to the paper's fractions (500/1300 ... 25/1300) of the median class."""

    name = "images_per_class"
    axis = "images per class"
    fractions: tuple[float, ...] = PAPER_FRACTIONS
    per_class: int | None = None  # the count the fractions apply to; None: the median class's training images

    def validate(self):
        if not self.fractions or not all(0 < f < 1 for f in self.fractions):
            raise SpecError(f"images_per_class: fractions must be at least one number in (0, 1), got {list(self.fractions)}")
        if self.per_class is not None and self.per_class < 1:
            raise SpecError(f"images_per_class: per_class must be at least 1, got {self.per_class}")

    def cells(self, source: Source, target: str) -> list[Cell]:
        """One cell per distinct count n = round(fraction × base), largest first, nested (images_per_class keeps the n=25
        images inside the n=50 ones). The base is the median class, not the smallest, so that ImageNet's 1300 (smallest
        class 732) gives the paper's counts; a class short of n keeps what it has (take='available'). With the base
        derived, counts no class exceeds are dropped (they equal the full row)."""
        counts = train_counts(source)
        base = self.per_class or int(np.median(counts))
        sizes = sorted({max(1, math.floor(base * f + 0.5)) for f in self.fractions}, reverse=True)
        if self.per_class is None:  # n images of every class when none has more is the full row; a given per_class is kept as asked
            sizes = [n for n in sizes if n < counts.max()]
        if not sizes:
            raise PolicyError(f"images_per_class: {source.spec()} has at most {int(counts.max())} training images per class, "
                              f"too few for any fraction {list(self.fractions)} of {base} to keep fewer; pass per_class=")
        target = user_target(target)
        cells = [Cell(f"{n} per class", policy("images_per_class", n=n, take="exact" if n <= counts.min() else "available"),
                      (target,), value=n) for n in sizes]
        return self.with_references(cells, f"all ({base} per class)")


def per_class(budget: int, k: int) -> str:
    """Images per class of a budget split over k classes, as a label: '250', or '45.4' when it does not divide."""
    return str(budget // k) if budget % k == 0 else f"{budget / k:.1f}"


@dataclasses.dataclass(frozen=True)
class FixedBudget(Study):
    """More classes or more images per class? One image budget split as k random classes × budget/k images, for several k."""

    name = "fixed_budget"
    axis = "number of classes"
    images: int | None = None  # the budget; None: the largest every split holds evenly (fewest classes × smallest class)
    classes: tuple[int, ...] | None = None  # None: N, N/2, N/4, N/8, N/16 of the source's N classes (at least 2)
    take: Literal["redistribute", "available"] = "redistribute"  # fixed_budget's take: classes short of budget/k give their
    # shortfall to the others (the total stays the budget), or keep what they have (the total falls short; the grid shows it)

    def validate(self):
        if self.images is not None and self.images < 1:
            raise SpecError(f"fixed_budget: images must be at least 1, got {self.images}")
        if self.classes is not None and (not self.classes or min(self.classes) < 1):
            raise SpecError(f"fixed_budget: classes must be at least one count >= 1, got {list(self.classes)}")

    def cells(self, source: Source, target: str) -> list[Cell]:
        """One cell per class count, most classes first; images per class (budget/k) is in the label."""
        counts = train_counts(source)
        n = len(counts)
        sizes = sorted(set(self.classes or (n >> i for i in range(BUDGET_SPLITS) if n >> i >= 2)), reverse=True)
        if len(sizes) < 2 or sizes[0] > n:
            raise PolicyError(f"fixed_budget: {source.spec()} has {n} classes; the study needs at least two class counts "
                              f"within 1..{n}, got {sizes}")
        budget = self.images or sizes[-1] * int(counts.min())
        if budget < sizes[0]:
            raise PolicyError(f"fixed_budget: a budget of {budget} images cannot give each of {sizes[0]} classes an image "
                              f"({source.spec()}'s smallest class has {int(counts.min())}); pass images= of at least {sizes[0]}")
        if self.take == "redistribute":
            smallest = np.cumsum(np.sort(counts))  # the k classes a seed draws hold at least the k smallest classes' images
            short = [k for k in sizes if smallest[k - 1] < budget]
            if short:
                raise PolicyError(f"fixed_budget: {source.spec()}'s {short[0]} smallest classes hold {int(smallest[short[0] - 1])} "
                                  f"images, less than the budget of {budget}; lower images= or pass take='available'")
        target = user_target(target)
        cells = [Cell(f"{k} classes × {per_class(budget, k)}", policy("fixed_budget", images=budget, classes=k, take=self.take), (target,),
                      value=k) for k in sizes]
        return self.with_references(cells, f"all {n} classes, {int(counts.sum())} images")
