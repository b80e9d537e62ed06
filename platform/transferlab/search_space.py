"""Search spaces: what an Optuna search varies about a pretraining; the SearchSpace base class, its context and proposal."""

import dataclasses
from typing import Any

from .components import Component
from .sources import Source
from .training_spec import Training


@dataclasses.dataclass(frozen=True)
class SpaceContext:
    """What a space proposes for: the source (its classes and counts), the image budget and the base training recipe."""

    source: Source
    budget: int
    training: Training


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One trial's proposal: the policy chain that picks its pretraining subset, its recipe, and the values behind them."""

    policy: str  # a policy chain spec, e.g. "tree_classes(k=8, how='spread') | fixed_budget(images=4000, classes=8)"
    training: Training
    values: dict[str, Any]  # readable facts for tables: classes, images per class, labels, selection, steps


@dataclasses.dataclass(frozen=True)
class SearchSpace(Component):
    """A registered search space; subclasses are frozen dataclasses whose typed fields bound what it proposes."""

    kind = "space"

    def check(self, ctx: SpaceContext) -> None:
        """Raise a one-line error when the space cannot propose anything for this source and budget (before any trial)."""

    def suggest(self, trial, ctx: SpaceContext) -> Allocation:
        """The allocation of an Optuna trial: draw every parameter with `trial.suggest_*`, then build the policy chain."""
        raise NotImplementedError(f"search space {self.name} does not implement suggest()")

    def describe(self, ctx: SpaceContext) -> list[tuple[str, str, str]]:
        """(parameter, range, what it sets) per parameter, for `transferlab search --dry-run`."""
        raise NotImplementedError(f"search space {self.name} does not implement describe()")
