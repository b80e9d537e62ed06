"""Subset policies: the Policy base class and running a chain of them into a manifest."""

import dataclasses
from collections.abc import Sequence

from .class_tree import ClassTree
from .components import Component
from .errors import PolicyError
from .manifest import Manifest
from .sources import Source
from .subset import Seeds, Subset


@dataclasses.dataclass(frozen=True)
class Policy(Component):
    """A pure, seeded transformation of a subset; nested where natural (smaller settings pick inside larger)."""

    kind = "policy"

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        """Return the transformed subset."""
        raise NotImplementedError(f"policy {self.name} does not implement apply()")


def chain_spec(policies: Sequence[Policy]) -> str:
    """Canonical text of a chain."""
    return " | ".join(p.spec() for p in policies)


def make_manifest(source: Source, policies: Sequence[Policy], seed: int = 0) -> Manifest:
    """Apply a policy chain to the training split of a source."""
    subset = Subset.full(source.index, "train")
    if not len(subset.samples):
        raise PolicyError(f"source {source.spec()} has no training samples")
    seeds = Seeds(seed)
    for policy in policies:
        subset = policy.apply(subset, source.tree, seeds)
        if not len(subset.samples):
            raise PolicyError(f"policy {policy.spec()} left no samples")
    return Manifest.from_subset(subset, source.spec(), source.fingerprint, chain_spec(policies), seed)
