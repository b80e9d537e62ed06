"""Subset policies: the Policy base class and running a chain of them into a manifest."""

import dataclasses
from collections.abc import Sequence

import numpy as np

from .class_tree import ClassTree
from .components import Component
from .data_index import split_code
from .errors import PolicyError
from .manifest import Manifest
from .sources import Source
from .subset import Seeds, Subset


@dataclasses.dataclass(frozen=True)
class Policy(Component):
    """A pure, seeded transformation of a subset; nested where natural (smaller settings pick inside larger)."""

    kind = "policy"

    def prepare(self) -> None:
        """Check what needs outside data but not the source's (WordNet names, say); make_manifest calls it for the whole
        chain before the source's index is built, so a misspelt name fails before a long folder scan. Raise PolicyError."""

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        """Return the transformed subset."""
        raise NotImplementedError(f"policy {self.name} does not implement apply()")


def chain_spec(policies: Sequence[Policy]) -> str:
    """Canonical text of a chain."""
    return " | ".join(p.spec() for p in policies)


def check_result(subset: Subset, policy: Policy) -> None:
    """A PolicyError naming the policy unless its subset keeps distinct training samples in order, each in a kept class."""
    what = f"policy {policy.spec()}"
    if not isinstance(subset, Subset):
        raise PolicyError(f"{what} returned {type(subset).__name__}, not a Subset")
    samples, index = subset.samples, subset.index
    if len(samples) and (samples.min() < 0 or samples.max() >= len(index)):
        raise PolicyError(f"{what} kept sample indices outside the source's 0..{len(index) - 1}")
    if (np.diff(samples) <= 0).any():
        raise PolicyError(f"{what} kept samples that are unsorted or repeated; keep them with subset.keep_samples")
    foreign = samples[index.splits[samples] != split_code("train")]
    if len(foreign):
        raise PolicyError(f"{what} kept {len(foreign)} samples outside the training split (such as "
                          f"{', '.join(map(str, foreign[:5].tolist()))}); choose among subset.samples")
    labels = subset.labels
    dropped = samples[(labels < 0) | (labels >= subset.num_classes)]
    if len(dropped):
        raise PolicyError(f"{what} kept {len(dropped)} samples of dropped or unlisted classes (such as "
                          f"{', '.join(map(str, dropped[:5].tolist()))}); choose among subset.samples")


def make_manifest(source: Source, policies: Sequence[Policy], seed: int = 0) -> Manifest:
    """Apply a policy chain to the training split of a source; every policy's result is checked (see check_result)."""
    for policy in policies:
        policy.prepare()
    subset = Subset.full(source.index, "train")
    if not len(subset.samples):
        raise PolicyError(f"source {source.spec()} has no training samples")
    seeds = Seeds(seed)
    for policy in policies:
        subset = policy.apply(subset, source.tree, seeds)
        check_result(subset, policy)
        if not len(subset.samples):
            raise PolicyError(f"policy {policy.spec()} left no samples")
    return Manifest.from_subset(subset, source.spec(), source.fingerprint, chain_spec(policies), seed)
