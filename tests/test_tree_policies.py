"""coarsen and split(how='min_overlap') on class trees without WordNet: the synthetic tree and nested-folder trees.

None of these tests loads WordNet (test_setup.py checks it), so they run, and fail for their own reasons, without it.
"""

import dataclasses

import numpy as np
import pytest

from transferlab import ClassTree, Manifest, PolicyError, Source, SpecError, make_manifest, policies, select, source
from transferlab.data_index import DataIndex
from transferlab_subsets.class_policies import split_overlap


@dataclasses.dataclass(frozen=True)
class TreeSource(Source):
    """One sample per leaf of a nested-folder tree given as paths ('a/b/c')."""

    name = "tree_source"
    paths: tuple[str, ...] = ()

    def build_index(self) -> DataIndex:
        n = len(self.paths)
        return DataIndex(np.arange(n), np.zeros(n), self.paths, tuple(p.rsplit("/", 1)[-1] for p in self.paths))

    def build_tree(self) -> ClassTree:
        return ClassTree.from_paths([p.split("/") for p in self.paths])


def uneven_paths(seed: int) -> tuple[str, ...]:
    """A random nested-folder tree: uneven depths and fan-outs."""
    rng = np.random.default_rng(seed)
    paths, frontier = [], [""]
    while frontier and len(paths) < 60:
        prefix = frontier.pop(0)
        for i in range(int(rng.integers(1, 6))):
            node = f"{prefix}{'/' if prefix else ''}{chr(97 + i)}"
            (frontier if rng.random() < 0.4 and node.count("/") < 5 else paths).append(node)
    return tuple(paths + [f"{p}/z" for p in frontier])


def check_coarsened(src: Source | str, chain: str, k: int) -> Manifest:
    """Exactly k classes with unique ids; every merged class is a tree node holding all its members."""
    src = source(src) if isinstance(src, str) else src
    m, tree = make_manifest(src, policies(chain)), src.tree
    assert m.num_classes == k and len(set(m.classes)) == k
    for new, class_id in enumerate(m.classes):
        members = np.flatnonzero(m.class_map == new)
        if len(members) > 1:
            node = tree.node(class_id)
            assert all(node in tree.ancestors(int(tree.class_nodes[c])) for c in members)
    return m


def halves(src: Source, how: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Source class numbers kept by part A and by part B."""
    a, b = (make_manifest(src, policies(f"split(part={p!r}, how={how!r})"), seed) for p in "AB")
    return np.flatnonzero(a.class_map >= 0), np.flatnonzero(b.class_map >= 0)


def check_halves(src: Source, a: np.ndarray, b: np.ndarray) -> None:
    """Disjoint, together all classes, sizes within 5% of the classes; part A holds the first class."""
    n = src.index.num_classes
    assert not set(a) & set(b) and len(a) + len(b) == n and 0 in a
    assert abs(len(a) - len(b)) <= max(n % 2, int(0.05 * n))


# --- coarsen ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3, 4, 5, 16, 17, 63, 64])
def test_coarsen_synthetic_tree(k):
    m = check_coarsened("synthetic(train=1, val=0, test=0)", f"coarsen(k={k})", k)
    if k in (4, 16):  # the four shapes, the sixteen shape/hue nodes: perfectly balanced cuts
        assert set(m.class_counts().tolist()) == {64 // k}
    if k == 5:
        assert sorted(m.class_counts().tolist()) == [4, 12, 16, 16, 16]


@pytest.mark.parametrize("seed", range(4))
def test_coarsen_uneven_folder_trees(seed):
    src = TreeSource(uneven_paths(seed))
    for k in sorted({1, 2, 3, src.index.num_classes // 3, src.index.num_classes - 1, src.index.num_classes}):
        check_coarsened(src, f"coarsen(k={k})", k)


def test_coarsen_errors():
    with pytest.raises(PolicyError, match="only 64"):
        select("synthetic(train=1, val=0, test=0)", "coarsen(k=65)")
    with pytest.raises(SpecError):
        policies("coarsen(k=0)")


# --- split(how='min_overlap') -----------------------------------------------------------------------------------------

def test_split_overlap_counts_shared_tree_nodes():
    tree = ClassTree.from_paths([p.split("/") for p in ("a/x", "a/y", "b/z", "b/w")])
    assert split_overlap(tree, [0, 1], [2, 3]) == 0
    assert split_overlap(tree, [0, 2], [1, 3]) == 2
    assert split_overlap(tree, [0], [1]) == 1


def test_min_overlap_split_of_the_synthetic_tree_shares_nothing():
    src = source("synthetic(train=1, val=0, test=0)")
    a, b = halves(src, "min_overlap")
    check_halves(src, a, b)
    assert split_overlap(src.tree, a, b) == 0 and split_overlap(src.tree, *halves(src, "random")) >= 15  # of 20 inner nodes


@pytest.mark.parametrize("seed", range(4))
def test_min_overlap_split_of_uneven_folder_trees(seed):
    src = TreeSource(uneven_paths(seed))
    a, b = halves(src, "min_overlap")
    check_halves(src, a, b)
    assert split_overlap(src.tree, a, b) <= split_overlap(src.tree, *halves(src, "random"))
