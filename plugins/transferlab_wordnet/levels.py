"""The paper's WordNet label sets as policies: wordnet_level (bottom-up or top-down) and wordnet_depth."""

import dataclasses
from typing import Literal

from transferlab import ClassTree, Policy, PolicyError, Seeds, SpecError, Subset

from .hierarchy import bottom_up_levels, depth_level, top_down_levels
from .wnid_classes import relabel_to_synsets, require_wnids


@dataclasses.dataclass(frozen=True)
class WordnetLevel(Policy):
    """Relabel classes to the paper's WordNet level with exactly `classes` classes (bottom-up or top-down)."""

    name = "wordnet_level"
    classes: int
    method: Literal["bottom_up", "top_down"] = "bottom_up"

    def validate(self):
        if self.classes < 1:
            raise SpecError(f"wordnet_level: classes must be at least 1, got {self.classes}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        """Levels are computed on the current classes; of two levels with the same count, the finer one is used."""
        wnids = require_wnids(subset.classes, self.spec())
        levels = bottom_up_levels(wnids) if self.method == "bottom_up" else top_down_levels(wnids)
        counts = [len(set(level.values())) for level in levels]
        if self.classes not in counts:
            below = max((c for c in counts if c < self.classes), default=None)
            above = min((c for c in counts if c > self.classes), default=None)
            nearest = " and ".join(f"{c} ({side})" for c, side in ((below, "below"), (above, "above")) if c is not None)
            raise PolicyError(
                f"{self.spec()}: the {subset.num_classes} current classes have no {self.method} WordNet level with "
                f"{self.classes} classes; nearest levels: {nearest or 'none'}; all {self.method} levels: {', '.join(map(str, counts))}. "
                f"coarsen(k={self.classes}) merges along the tree to any count"
            )
        return relabel_to_synsets(subset, levels[counts.index(self.classes)])


@dataclasses.dataclass(frozen=True)
class WordnetDepth(Policy):
    """Relabel every class to its first-hypernym ancestor at depth d below entity (shallower classes stay)."""

    name = "wordnet_depth"
    d: int

    def validate(self):
        if self.d < 0:
            raise SpecError(f"wordnet_depth: d must be at least 0 (entity), got {self.d}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        return relabel_to_synsets(subset, depth_level(require_wnids(subset.classes, self.spec()), self.d))
