"""The `allocation` space: one image budget spent on k classes × budget/k images, the classes picked by their place in the
class tree, the labels optionally coarsened, and optionally the training length. Every proposal is a policy chain, so a
trial is logged, hashed and reused like any pretraining run."""

import dataclasses
import math
from typing import Literal

import numpy as np

from transferlab import Allocation, PolicyError, SearchSpace, SpaceContext, SpecError, get_registry

SELECTIONS = ("random", "spread", "clustered")


def policy(name: str, **params) -> str:
    """Canonical spec of a registered policy."""
    return get_registry().get("policy", name)(**params).spec()


@dataclasses.dataclass(frozen=True)
class AllocationSpace(SearchSpace):
    """More classes or more images per class? k classes (log scale) × budget/k images, which classes, labels, length."""

    name = "allocation"
    min_classes: int = 2
    max_classes: int | None = None  # None: every class of the source (at most the budget: one image each)
    selections: tuple[Literal["random", "spread", "clustered"], ...] = SELECTIONS  # how the k classes are picked
    coarsen: bool = True  # also search coarser labels: the k classes merged along the tree to a fraction of k
    steps: tuple[int, ...] = ()  # training lengths in optimizer steps to choose from; empty: the recipe's own length

    def validate(self):
        if self.min_classes < 1 or (self.max_classes is not None and self.max_classes < self.min_classes):
            raise SpecError(f"allocation: need 1 <= min_classes <= max_classes, got min_classes={self.min_classes}, "
                            f"max_classes={self.max_classes}")
        if not self.selections or len(set(self.selections)) != len(self.selections):
            raise SpecError(f"allocation: selections must name each of {', '.join(SELECTIONS)} at most once, got {list(self.selections)}")
        if any(s < 1 for s in self.steps) or len(set(self.steps)) != len(self.steps):
            raise SpecError(f"allocation: steps must be distinct lengths >= 1, got {list(self.steps)}")

    def bounds(self, ctx: SpaceContext) -> tuple[int, int]:
        """The range of k on this source and budget."""
        n = ctx.source.index.num_classes
        return self.min_classes, min(self.max_classes or n, n, ctx.budget)

    def check(self, ctx: SpaceContext) -> None:
        counts = np.sort(ctx.source.index.class_counts("train"))
        lo, hi = self.bounds(ctx)
        if lo > hi:
            raise PolicyError(f"allocation: {ctx.source.spec()} has {len(counts)} classes and the budget is {ctx.budget} images, "
                              f"so k cannot reach min_classes={lo}")
        if counts[:lo].sum() < ctx.budget:  # any lo classes must hold the budget, or a trial would fail
            raise PolicyError(f"allocation: the budget of {ctx.budget} images is more than the {lo} smallest classes of "
                              f"{ctx.source.spec()} hold ({int(counts[:lo].sum())}); lower --budget or raise min_classes")
        if self.coarsen and hi < 3:
            raise PolicyError(f"allocation: coarser labels need k >= 3 classes, but k is at most {hi} here; pass coarsen=False")

    def suggest(self, trial, ctx: SpaceContext) -> Allocation:
        lo, hi = self.bounds(ctx)
        k = trial.suggest_int("classes", lo, hi, log=True)
        how = trial.suggest_categorical("selection", self.selections) if len(self.selections) > 1 else self.selections[0]
        labels = k
        if self.coarsen:  # a fraction, not a count: its range does not depend on k, which TPE needs
            fraction = trial.suggest_float("label_fraction", 1 / hi, 1.0, log=True)
            labels = max(2, min(k, math.floor(k * fraction + 0.5))) if k > 2 else k
        training = ctx.training
        if self.steps:
            training = dataclasses.replace(training, epochs=None, steps=trial.suggest_categorical("steps", self.steps))
        chain = [policy("fixed_budget", images=ctx.budget, classes=k, take="redistribute")]
        if how != "random":  # fixed_budget draws its k classes at random; the tree-placed ones are chosen first
            chain.insert(0, policy("tree_classes", k=k, how=how))
        if labels < k:
            chain.append(policy("coarsen", k=labels))
        values = {"classes": k, "images_per_class": round(ctx.budget / k, 1), "selection": how, "labels": labels,
                  "steps": training.total_steps(ctx.budget)}
        return Allocation(" | ".join(chain), training, values)

    def describe(self, ctx: SpaceContext) -> list[tuple[str, str, str]]:
        lo, hi = self.bounds(ctx)
        rows = [("classes", f"{lo}..{hi}, log scale", f"k classes × {ctx.budget}/k images each (fixed_budget, take='redistribute')"),
                ("selection", " | ".join(self.selections), "random classes, spread across the class tree, or clustered in it")]
        if self.coarsen:
            rows.append(("label_fraction", f"{1 / hi:.3g}..1, log scale", "labels = round(k × fraction), at least 2: coarsen(k=labels) "
                                                                       "merges the k classes along the tree (1: fine labels)"))
        if self.steps:
            rows.append(("steps", " | ".join(map(str, self.steps)), "training length in optimizer steps"))
        else:
            rows.append(("training", ctx.training.spec(), "fixed: the recipe's own length"))
        return rows
