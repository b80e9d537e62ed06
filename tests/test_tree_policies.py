"""coarsen, split(how='min_overlap') and tree_classes on class trees without WordNet: the synthetic tree and nested-folder trees.

None of these tests loads WordNet (test_setup.py checks it), so they run, and fail for their own reasons, without it.
"""

import dataclasses
import re

import numpy as np
import pytest
from click.testing import CliRunner

from transferlab import ClassTree, Manifest, PolicyError, Source, SpecError, make_manifest, policies, select, source
from transferlab.class_tree import ROOT
from transferlab.cli import cli
from transferlab.data_index import DataIndex
from transferlab_subsets.class_policies import split_overlap
from transferlab_wordnet.coarsen import merged_id


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
            node = 0 if class_id == merged_id(tree, 0) else tree.node(class_id)
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


def test_coarsen_names_a_class_merged_at_the_root_after_the_root_not_its_placeholder_id():
    m = select("synthetic(train=1, val=0, test=0)", "coarsen(k=1)")
    assert (m.classes, m.class_names) == (("synthetic",), ("synthetic",))
    assert make_manifest(TreeSource(uneven_paths(0)), policies("coarsen(k=2)")).classes == ("root", "c/a")  # the rest hangs at the root
    clash = ClassTree.from_paths([("a", "x"), ("b", "y")], root="a")  # a folder with the root's name: the id stays unique
    assert (merged_id(clash, 0), merged_id(clash, clash.node("a"))) == (ROOT, "a")


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


# --- tree_classes -----------------------------------------------------------------------------------------------------

SYNTHETIC = "synthetic(branching=[4, 4, 5], train=1, val=0, test=0)"  # 64 classes: 4 shapes x 4 hues x 4 textures


def picked(src: Source, chain: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Source class numbers present before the chain's last policy, and those it keeps."""
    before, after = (make_manifest(src, policies(c), seed) for c in (chain.rsplit("|", 1)[0] if "|" in chain else "all", chain))
    return np.flatnonzero(before.class_map >= 0), np.flatnonzero(after.class_map >= 0)


def under(tree: ClassTree, classes: np.ndarray) -> np.ndarray:
    """Number of the given source classes beneath every tree node."""
    count = np.zeros(len(tree.nodes), dtype=np.int64)
    for c in classes.tolist():
        count[[int(tree.class_nodes[c]), *tree.ancestors(int(tree.class_nodes[c]))]] += 1
    return count


def check_spread(src: Source, chain: str, seed: int = 0) -> np.ndarray:
    """Every subtree holding s of the n classes gets floor(s*k/n) or ceil(s*k/n) of the k picks."""
    before, chosen = picked(src, chain, seed)
    n, k = len(before), len(chosen)
    assert set(chosen) <= set(before)
    share = under(src.tree, before) * k / n
    got = under(src.tree, chosen)
    assert ((got >= np.floor(share)) & (got <= np.ceil(share))).all()
    return chosen


def check_clustered(src: Source, chain: str, seed: int = 0) -> np.ndarray:
    """All k picks lie under one node that holds as few of the classes as any node holding k of them."""
    before, chosen = picked(src, chain, seed)
    count = under(src.tree, before)
    assert set(chosen) <= set(before)
    assert count[under(src.tree, chosen) == len(chosen)].min() == count[count >= len(chosen)].min()
    return chosen


def top_levels(src: Source, classes: np.ndarray, depth: int = 1) -> set[str]:
    """Distinct first `depth` parts of the synthetic class paths (shape, shape/hue, ...)."""
    return {"/".join(src.index.classes[c].split("/")[:depth]) for c in classes.tolist()}


@pytest.mark.parametrize("seed", range(4))
def test_tree_classes_spread_and_clustered_on_the_synthetic_tree(seed):
    src = source(SYNTHETIC)
    four, eight = (check_spread(src, f"tree_classes(k={k}, how='spread')", seed) for k in (4, 8))
    assert len(top_levels(src, four)) == 4 and len(top_levels(src, eight)) == 4 and len(top_levels(src, eight, 2)) == 8
    four, eight = (check_clustered(src, f"tree_classes(k={k}, how='clustered')", seed) for k in (4, 8))
    assert len(top_levels(src, four, 2)) == 1  # one shape and hue: its four textures
    assert len(top_levels(src, eight)) == 1 and len(top_levels(src, eight, 2)) == 2


def test_tree_classes_is_seeded():
    src = source(SYNTHETIC)
    for how in ("spread", "clustered", "random"):
        spec = f"tree_classes(k=4, how={how!r})"
        picks = {seed: make_manifest(src, policies(spec), seed).classes for seed in range(6)}
        assert picks[0] == make_manifest(src, policies(spec), 0).classes
        assert len(set(picks.values())) >= 4
    assert make_manifest(src, policies("tree_classes(k=9, how='random')"), 3).classes == make_manifest(src, policies("random_classes(k=9)"), 3).classes


@pytest.mark.parametrize("seed", range(3))
def test_tree_classes_after_other_policies(seed):
    src = source(SYNTHETIC)
    for first in ("split(part='A')", "split(part='B', how='min_overlap')", "exclude(classes=['circle/red/solid', 'circle/red/dots', 'star/lime/dots', 3, 40])"):
        for k in (1, 3, 10):
            check_spread(src, f"{first} | tree_classes(k={k}, how='spread')", seed)
            check_clustered(src, f"{first} | tree_classes(k={k}, how='clustered')", seed)
    halves_a = picked(src, "split(part='A', how='min_overlap') | tree_classes(k=4, how='spread')", seed)[1]
    assert len(top_levels(src, halves_a)) == 2 and len(top_levels(src, halves_a, 2)) == 4
    merged = make_manifest(src, policies("coarsen(k=16) | tree_classes(k=4)"), seed)  # classes anchored at shape/hue nodes
    assert len({c.split("/")[0] for c in merged.classes}) == 4 and set(merged.class_counts().tolist()) == {4}


@pytest.mark.parametrize("seed", range(3))
def test_tree_classes_on_uneven_folder_trees_and_a_flat_tree(seed):
    src = TreeSource(uneven_paths(seed))
    for k in sorted({1, 2, 5, src.index.num_classes // 2, src.index.num_classes}):
        check_spread(src, f"tree_classes(k={k}, how='spread')", seed)
        check_clustered(src, f"tree_classes(k={k}, how='clustered')", seed)
    flat = TreeSource(tuple("abcdefghij"))
    assert len(check_spread(flat, "tree_classes(k=3)", seed)) == len(check_clustered(flat, "tree_classes(k=3, how='clustered')", seed)) == 3


def test_tree_classes_errors():
    with pytest.raises(PolicyError, match="asks for 33 classes, but only 32 are left"):
        select(SYNTHETIC, "split(part='A') | tree_classes(k=33)")
    with pytest.raises(SpecError, match="at least 1"):
        policies("tree_classes(k=0)")
    with pytest.raises(SpecError, match="how"):
        policies("tree_classes(k=3, how='even')")


def test_tree_classes_on_the_command_line():
    out = CliRunner().invoke(cli, ["subset", "--source", SYNTHETIC, "--policy", "tree_classes(k=4, how='clustered')", "--seed", "2"])
    assert out.exit_code == 0 and "policy tree_classes(how='clustered', k=4)" in out.output and "4 classes, 4 training images" in out.output
    named = re.findall(r"(\w+/\w+)/(\w+): 1", out.output)
    assert len(named) == 4 and len({shape_hue for shape_hue, _ in named}) == 1  # one shape and hue, its four textures
