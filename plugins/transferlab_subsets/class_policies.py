"""Policies that choose classes: random_classes, tree_classes (by place in the class tree), exclude, split (random, or along
the class tree with minimal overlap)."""

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from transferlab import ClassTree, DataError, Policy, PolicyError, Seeds, SpecError, Subset


def classes_by_key(subset: Subset, seeds: Seeds) -> np.ndarray:
    """Current classes in seeded order; a class's position depends only on its id and the seed."""
    return np.argsort(seeds.class_keys(subset.classes), kind="stable")


def take_classes(subset: Subset, seeds: Seeds, k: int, what: str) -> Subset:
    """Keep the first k classes in seeded order, renumbered in their original order (nested in k)."""
    if k > subset.num_classes:
        raise PolicyError(f"{what} asks for {k} classes, but only {subset.num_classes} are left")
    return subset.keep_classes(np.sort(classes_by_key(subset, seeds)[:k]))


@dataclasses.dataclass(frozen=True)
class RandomClasses(Policy):
    """Keep k classes chosen at random (seeded; the k=10 classes lie inside the k=20 classes)."""

    name = "random_classes"
    k: int

    def validate(self):
        if self.k < 1:
            raise SpecError(f"random_classes: k must be at least 1, got {self.k}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        return take_classes(subset, seeds, self.k, self.spec())


@dataclasses.dataclass(frozen=True)
class Exclude(Policy):
    """Remove classes with all their images. Each entry is a current class id (matched exactly first), else a current
    class name (a name several classes share is an error listing their ids), or an int: a *source* label number (the
    source's class c, wherever it was merged), not a current class index."""

    name = "exclude"
    classes: tuple[str | int, ...]

    def validate(self):
        if not self.classes:
            raise SpecError("exclude: classes must name at least one class")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        drop = set(subset.find_classes(self.classes))
        return subset.keep_classes([c for c in range(subset.num_classes) if c not in drop])


SPLIT_TOLERANCE = 0.05  # min_overlap halves may differ by this fraction of the classes


def class_anchors(subset: Subset, tree: ClassTree) -> np.ndarray:
    """Tree node of every current class: the node its id names if that node holds all its source classes (a merged
    WordNet class, or an ImageNet-21k class whose leaf `<wnid>/self` hangs under `<wnid>`), else their lowest common ancestor."""
    if tree.num_classes != len(subset.class_map):
        raise PolicyError(f"the class tree has {tree.num_classes} classes, but the source has {len(subset.class_map)}")
    parents, depths = tree.parents.tolist(), tree.depths.tolist()
    anchors = np.full(subset.num_classes, -1, dtype=np.int64)
    for source_class, current in enumerate(subset.class_map.tolist()):
        if current < 0:
            continue
        a, b = anchors[current], int(tree.class_nodes[source_class])
        if a >= 0:
            while depths[a] > depths[b]:
                a = parents[a]
            while depths[b] > depths[a]:
                b = parents[b]
            while a != b:
                a, b = parents[a], parents[b]
        anchors[current] = b
    for current, class_id in enumerate(subset.classes):
        try:
            named = tree.node(class_id)
        except DataError:
            continue
        if anchors[current] < 0 or named == anchors[current] or named in tree.ancestors(int(anchors[current])):
            anchors[current] = named
    return anchors


def nodes_bottom_up(tree: ClassTree) -> np.ndarray:
    """Node indices, deepest first (every child before its parent)."""
    return np.argsort(-tree.depths, kind="stable")


def split_overlap(tree: ClassTree, classes_a: Sequence[int], classes_b: Sequence[int]) -> int:
    """How much two sets of the tree's classes share: the number of tree nodes other than the root with classes of both
    sets beneath them (0 when the root's children divide them cleanly). Classes are source class numbers, e.g. a
    manifest's `np.flatnonzero(manifest.class_map >= 0)`."""
    below = np.zeros((len(tree.nodes), 2), dtype=bool)
    below[tree.class_nodes[np.asarray(classes_a, dtype=np.int64)], 0] = True
    below[tree.class_nodes[np.asarray(classes_b, dtype=np.int64)], 1] = True
    for node in nodes_bottom_up(tree)[:-1].tolist():  # the root comes last
        below[tree.parents[node]] |= below[node]
    return int((below[1:, 0] & below[1:, 1]).sum())


def subset_sums(sizes: Sequence[int]) -> list[int]:
    """Bit sets of the sums reachable with the first i pieces, for i = 0..len(sizes)."""
    reach = [1]
    for size in sizes:
        reach.append(reach[-1] | reach[-1] << size)
    return reach


def best_pieces(sizes: Sequence[int], lo: int, hi: int, target: float) -> list[int] | None:
    """Indices of pieces whose sizes sum within [lo, hi], as close to `target` as possible; None if no sum fits."""
    reach = subset_sums(sizes)
    sums = [s for s in range(lo, hi + 1) if reach[-1] >> s & 1]
    if not sums:
        return None
    total = min(sums, key=lambda s: (abs(s - target), s))
    chosen = []
    for i in range(len(sizes), 0, -1):
        if not reach[i - 1] >> total & 1:
            chosen.append(i - 1)
            total -= sizes[i - 1]
    return chosen


def subtree_classes(subset: Subset, tree: ClassTree) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]]]:
    """Every current class's tree node (`class_anchors`), the number of current classes under every node, and the
    current classes anchored at each node."""
    anchors = class_anchors(subset, tree)
    count = np.bincount(anchors, minlength=len(tree.nodes))
    for node in nodes_bottom_up(tree)[:-1].tolist():
        count[tree.parents[node]] += count[node]
    at_node: dict[int, list[int]] = {}
    for current, node in enumerate(anchors.tolist()):
        at_node.setdefault(node, []).append(current)
    return anchors, count, at_node


def min_overlap_half(subset: Subset, tree: ClassTree) -> np.ndarray:
    """Current classes of one half made of whole subtrees, the halves within SPLIT_TOLERANCE of each other.

    Opening a tree node makes its child subtrees (and any class anchored at it) available as whole pieces; every
    opened node below the root may end up shared by both halves. Starting from the root, the search opens one node at
    a time until some set of pieces sums to a valid half: a node whose opening makes that possible if there is one
    (the largest), else the largest openable piece. Sums closest to an even split win; ties go to tree order.
    """
    n = subset.num_classes
    tolerance = max(n % 2, int(SPLIT_TOLERANCE * n))
    lo, hi = (n - tolerance + 1) // 2, (n + tolerance) // 2
    anchors, count, at_node = subtree_classes(subset, tree)

    def pieces(opened: set[int]) -> list[tuple[str, int]]:
        """Whole pieces below opened nodes: ('node', index) for child subtrees, ('class', index) for anchored classes."""
        out = []
        for u in sorted(opened):
            out += [("class", c) for c in at_node.get(u, ())]
            out += [("node", c) for c in tree.children[u] if count[c] and c not in opened]
        return out

    def size(piece: tuple[str, int]) -> int:
        return 1 if piece[0] == "class" else int(count[piece[1]])

    opened = {0}
    while True:
        available = pieces(opened)
        chosen = best_pieces([size(p) for p in available], lo, hi, n / 2)
        if chosen is not None:
            break
        openable = sorted((p[1] for p in available if p[0] == "node" and count[p[1]] > 1), key=lambda c: (-count[c], c))
        enabling = [c for c in openable if best_pieces([size(p) for p in pieces(opened | {c})], lo, hi, n / 2) is not None]
        opened.add((enabling or openable)[0])
    in_half = np.zeros(len(tree.nodes), dtype=bool)
    half = []
    for kind, index in (available[i] for i in chosen):
        if kind == "class":
            half.append(index)
        else:
            in_half[index] = True
    for node in np.argsort(tree.depths, kind="stable").tolist()[1:]:  # parents before children
        in_half[node] |= in_half[tree.parents[node]]
    half += [c for c, node in enumerate(anchors.tolist()) if in_half[node]]
    return np.sort(np.array(half, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class Split(Policy):
    """Keep one half of the classes: how='random' (seeded) or 'min_overlap' (whole subtrees, fewest shared tree nodes)."""

    name = "split"
    part: Literal["A", "B"]
    how: Literal["random", "min_overlap"] = "random"

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        """Random: part A gets the first ceil(C/2) classes in seeded order, part B the rest. Min_overlap: see
        `min_overlap_half` (sizes differ by at most 5% of the classes, the overlap is `split_overlap`); part A is the
        half that holds the first current class."""
        if subset.num_classes < 2:
            raise PolicyError(f"{self.spec()} needs at least 2 classes, has {subset.num_classes}")
        if self.how == "random":
            order = classes_by_key(subset, seeds)
            half = (subset.num_classes + 1) // 2
            return subset.keep_classes(np.sort(order[:half] if self.part == "A" else order[half:]))
        half = min_overlap_half(subset, tree)
        first = bool(len(half)) and half[0] == 0
        other = np.setdiff1d(np.arange(subset.num_classes), half)
        return subset.keep_classes(half if (self.part == "A") == first else other)


# tree_classes' rule: a depth-first walk of the class tree (siblings in a seeded random order) lists the current classes so
# that every subtree's classes are consecutive. So k evenly spaced positions of that list give every subtree holding s of
# the n classes floor(s*k/n) or ceil(s*k/n) of the k ('spread': as many different subtrees as k allows on a balanced tree,
# each subtree its share on any tree); and a window of k consecutive positions inside a smallest subtree holding k classes,
# touching the fewest subtrees below it, shares subtrees as much as k allows ('clustered').


def tree_order(subset: Subset, tree: ClassTree, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Current classes in depth-first order (a node's anchored classes before its children, siblings in seeded random
    order); with the number of current classes under every node and the position of the first of them in that order."""
    _, count, at_node = subtree_classes(subset, tree)
    keys = rng.random(len(tree.nodes))
    first = np.zeros(len(tree.nodes), dtype=np.int64)
    order: list[int] = []
    stack = [0]
    while stack:
        node = stack.pop()
        first[node] = len(order)
        order += at_node.get(node, [])
        stack += sorted((c for c in tree.children[node] if count[c]), key=lambda c: -keys[c])  # popped smallest key first
    return np.array(order, dtype=np.int64), count, first


def clustered_starts(tree: ClassTree, count: np.ndarray, first: np.ndarray, k: int) -> np.ndarray:
    """Starts of the windows of k classes (positions in `tree_order`) that lie in a smallest subtree holding k classes and,
    among those, touch the fewest subtrees below it; a chain of nodes holding the same classes counts as one subtree."""
    n = int(count[0])
    parents = np.maximum(tree.parents, 0)
    distinct = (count > 0) & ((count < count[parents]) | (tree.parents < 0))  # the top of every chain
    nested = np.zeros(len(tree.nodes), dtype=np.int64)  # distinct subtrees holding a node's classes, itself included
    for node in np.argsort(tree.depths, kind="stable").tolist():  # parents before children
        nested[node] = (nested[parents[node]] if node else 0) + distinct[node]
    touched = np.zeros(n - k + 2, dtype=np.int64)  # difference array over starts 0..n-k
    nodes = np.flatnonzero(distinct)
    lo, hi = np.maximum(first[nodes] - k + 1, 0), np.minimum(first[nodes] + count[nodes] - 1, n - k)
    np.add.at(touched, lo, 1)
    np.add.at(touched, hi + 1, -1)
    touched = np.cumsum(touched)[:-1]
    smallest = count[count >= k].min()
    tops = nodes[count[nodes] == smallest]
    starts = np.concatenate([np.arange(first[v], first[v] + smallest - k + 1) for v in tops.tolist()])
    below = touched[starts] - np.repeat(nested[tops], smallest - k + 1)  # subtrees touched below the window's smallest one
    return starts[below == below.min()]


@dataclasses.dataclass(frozen=True)
class TreeClasses(Policy):
    """Keep k classes by their place in the class tree: how='spread' (every subtree gets its share of the k), 'clustered'
    (all in a smallest subtree holding k) or 'random' (as random_classes)."""

    name = "tree_classes"
    k: int
    how: Literal["spread", "clustered", "random"] = "spread"

    def validate(self):
        if self.k < 1:
            raise SpecError(f"tree_classes: k must be at least 1, got {self.k}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        """Spread: positions (r + i*n) // k of the depth-first order, i < k, for a seeded r in 0..n-1. Clustered: k
        consecutive positions from a seeded start among `clustered_starts`."""
        n, k = subset.num_classes, self.k
        if k > n:
            raise PolicyError(f"{self.spec()} asks for {k} classes, but only {n} are left")
        if self.how == "random":
            return take_classes(subset, seeds, k, self.spec())
        rng = seeds.generator("tree_classes")
        order, count, first = tree_order(subset, tree, rng)
        if self.how == "spread":
            positions = (int(rng.integers(n)) + np.arange(k) * n) // k
        else:
            starts = clustered_starts(tree, count, first, k)
            positions = int(rng.choice(starts)) + np.arange(k)
        return subset.keep_classes(np.sort(order[positions]))
