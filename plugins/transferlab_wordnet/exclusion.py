"""Removing classes under WordNet synsets (exclude_under) or overlapping a target source (exclude_overlap)."""

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from transferlab import ClassTree, DataError, Policy, PolicyError, Seeds, SpecError, Subset, get_registry, source

from .hierarchy import all_ancestors, is_wnid, resolve
from .wnid_classes import require_wnids

# The 20 PASCAL VOC categories as WordNet synsets (the paper's "PASCAL-removed ImageNet" keeps 771 of 1000 classes).
PASCAL_VOC = {
    "aeroplane": "n02691156", "bicycle": "n02834778", "bird": "n01503061", "boat": "n02858304", "bottle": "n02876657",
    "bus": "n02924116", "car": "n02958343", "cat": "n02121620", "chair": "n03001627", "cow": "n01887787",
    "diningtable": "n03201208", "dog": "n02084071", "horse": "n02374451", "motorbike": "n03769722", "person": "n00007846",
    "pottedplant": "n00017222", "sheep": "n02411705", "sofa": "n04256520", "train": "n04468005", "tvmonitor": "n03782006",
}
NAMED_SETS = {"pascal_voc": tuple(PASCAL_VOC.values())}
SYNSET_NAME = re.compile(r".+\.n\.\d+")


def kept_source_wnids(subset: Subset, what: str) -> tuple[list[int], list[str]]:
    """Source label numbers still mapped to a current class, and their wnids (a PolicyError if some are not wnids)."""
    kept = np.flatnonzero(subset.class_map >= 0).tolist()
    return kept, require_wnids([subset.index.classes[c] for c in kept], what)


@dataclasses.dataclass(frozen=True)
class ExcludeUnder(Policy):
    """Remove every source class with any hypernym path (instance hypernyms included) through the given synsets or named
    set, with its images. Decided per source class, so after a merge (wordnet_level, coarsen) a merged class keeps its
    other members: `wordnet_level(...) | exclude_under(...)` trains on the same images as `exclude_under(...)`."""

    name = "exclude_under"
    synsets: str | tuple[str, ...]

    def validate(self):
        items = (self.synsets,) if isinstance(self.synsets, str) else self.synsets
        if not items:
            raise SpecError("exclude_under: synsets must name at least one synset")
        bad = [s for s in items if not (is_wnid(s) or SYNSET_NAME.fullmatch(s) or s in NAMED_SETS)]
        if bad:
            raise SpecError(f"exclude_under: {', '.join(map(repr, bad))} is not a wnid ('n02084071'), a noun synset name "
                            f"('dog.n.01') or a named set ({', '.join(NAMED_SETS)})")

    def wnids(self) -> set[str]:
        """The synsets named, as wnids."""
        items = (self.synsets,) if isinstance(self.synsets, str) else self.synsets
        try:
            return {w for s in items for w in (NAMED_SETS[s] if s in NAMED_SETS else (resolve(s),))}
        except DataError as exc:
            raise PolicyError(f"{self.spec()}: {exc}") from None

    def prepare(self) -> None:
        self.wnids()  # a misspelt synset fails here, before the source's index is built

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        targets = self.wnids()
        kept, wnids = kept_source_wnids(subset, self.spec())
        return subset.drop_source_classes([c for c, w in zip(kept, wnids) if all_ancestors(w) & targets])


@dataclasses.dataclass(frozen=True)
class ExcludeOverlap(Policy):
    """Remove source classes under a target source's classes, or above them, in WordNet (target: a source spec with
    wnids). Decided per source class: a merged class loses only its overlapping members."""

    name = "exclude_overlap"
    target: str

    def validate(self):
        try:
            get_registry().parse("source", self.target)  # a bad spec fails here, before any data is read
        except SpecError as exc:
            raise SpecError(f"exclude_overlap: target {self.target!r} is not a usable source spec: {exc}") from None

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        targets = set(require_wnids(source(self.target).index.classes, f"{self.spec()} (its target)"))
        kept, wnids = kept_source_wnids(subset, self.spec())
        return subset.drop_source_classes([c for c, hit in zip(kept, overlapping(wnids, targets)) if hit])


def overlapping(wnids: Sequence[str], targets: set[str]) -> list[bool]:
    """Whether each wnid lies under a target synset or above one, on any hypernym path (instance hypernyms included)."""
    above_targets = set().union(*map(all_ancestors, targets))
    return [w in above_targets or bool(all_ancestors(w) & targets) for w in wnids]
