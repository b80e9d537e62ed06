"""The `subset` source: a base source seen through a policy chain, e.g. the target `fashion_mnist(...) | split(part='B')`.

Its training split is what the chain's manifest keeps (with the manifest's labels); its val and test splits are every
val and test sample of the base whose class the manifest keeps, relabelled the same way. Training samples are the only
ones a chain ever keeps, so a pretraining manifest never holds a target's val or test images.
"""

import dataclasses
import hashlib
from functools import cached_property
from typing import ClassVar

import numpy as np

from .class_tree import ClassTree
from .data_index import DataIndex, split_code
from .manifest import Manifest
from .metric_names import bounded, clean_label, component_label, source_label
from .plugins import get_registry
from .policy import Policy, chain_spec, make_manifest
from .sources import Source
from .subset import seed_value


@dataclasses.dataclass(frozen=True)
class SubsetSource(Source):
    """A source's training samples a policy chain keeps, and its val and test samples of the kept classes, relabelled."""

    name = "subset"
    label_params: ClassVar[tuple[str, ...]] = ("source", "policy", "seed")  # label() names the first two; seeds share metric names

    source: str
    policy: str
    seed: int = 0

    def validate(self) -> None:
        """Parse the base source and the chain (their own errors), check the seed, and store both specs canonically."""
        seed_value(self.seed)
        object.__setattr__(self, "source", self.base.spec())
        object.__setattr__(self, "policy", chain_spec(self.chain))

    @cached_property
    def base(self) -> Source:
        """The wrapped source."""
        return get_registry().parse("source", self.source)

    @cached_property
    def chain(self) -> tuple[Policy, ...]:
        """The policy chain."""
        return tuple(get_registry().parse_chain("policy", self.policy))

    @cached_property
    def manifest(self) -> Manifest:
        """The chain applied to the base's training split with this seed: what a pretraining run with that seed would keep."""
        return make_manifest(self.base, self.chain, self.seed)

    @cached_property
    def rows(self) -> np.ndarray:
        """The base sample of every row, sorted: the manifest's training samples, then (in base order) every val and test
        sample of a kept class."""
        index, manifest = self.base.index, self.manifest
        held_out = np.flatnonzero((manifest.class_map[index.labels] >= 0) & (index.splits != split_code("train")))
        return np.union1d(manifest.samples, held_out).astype(np.int64)

    def build_index(self) -> DataIndex:
        """The base's rows `rows`, labelled through the manifest's class map; files and content digest carried over."""
        index, manifest, rows = self.base.index, self.manifest, self.rows
        files, folder_ids = (None, None) if index.files is None else (index.files[rows], index.folder_ids[rows])
        return DataIndex(labels=manifest.class_map[index.labels[rows]], splits=index.splits[rows], classes=manifest.classes,
                         class_names=manifest.class_names, files=files, folder_ids=folder_ids, folders=index.folders,
                         content=index.content)

    def build_tree(self) -> ClassTree:
        """The base's tree cut down to the kept classes when each is a node of it, none below another (a selection such as
        split, random_classes or exclude, or coarsen's merged classes); else a flat tree."""
        manifest, tree = self.manifest, self.base.tree
        known = set(tree.nodes)
        at = [tree.node(c) if c in known else None for c in manifest.classes]
        nodes = {a for n in at if n is not None for a in tree.ancestors(n)}
        if None in at or nodes & set(at):
            return ClassTree.flat(manifest.classes, manifest.class_names, root=self.label())
        nodes.update(at)
        parents = {tree.nodes[n]: tree.nodes[tree.parents[n]] if n else None for n in nodes}
        return ClassTree.from_parents(parents, manifest.classes, {tree.nodes[n]: tree.names[n] for n in nodes})

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """The base's pixels of these rows."""
        return self.base.load(self.rows[np.asarray(samples, dtype=np.int64)], size)

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the data: the base's fingerprint (which ignores its location), the base rows kept and the index
        (labels, splits, classes); two chains or seeds that keep the same data share it."""
        h = hashlib.sha256(f"transferlab-subset-v1\x00{self.base.fingerprint}\x00{self.index.fingerprint()}\x00".encode())
        h.update(self.rows.astype("<i8").tobytes())
        return h.hexdigest()

    @cached_property
    def pixels_key(self) -> str:
        """Identity of the pixels: the base's pixel identity and the base rows kept, in order."""
        return hashlib.sha256(f"subset\x00{self.base.pixels_key}\x00".encode() + self.rows.astype("<i8").tobytes()).hexdigest()

    def label(self) -> str:
        """The base's metric label and each policy's (`synthetic_split_partB`), without the seed, so every seed of a study
        names the same metrics."""
        label = clean_label("_".join([source_label(self.base), *(component_label(p) for p in self.chain)]))
        return bounded(label, f"{self.source} | {self.policy}")


def with_seed(target_spec: str, seed: int) -> str:
    """The canonical spec of a target measured with `seed`: a subset (`BASE | POLICY ...`) with that seed, so that a
    class split's half B is the complement of the half A a pretraining with that seed used; any other source as it is."""
    target = get_registry().parse("source", target_spec)
    if isinstance(target, SubsetSource):
        return dataclasses.replace(target, seed=seed_value(seed)).spec()
    return target.spec()
