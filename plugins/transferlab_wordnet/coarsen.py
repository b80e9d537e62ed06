"""Coarsen to exactly K classes by cutting any class tree into K connected parts whose largest is as small as possible.

The rule: every current class sits at a tree node (see `class_anchors`) and weighs its number of source classes. For a
weight limit W, one pass from the leaves up keeps each node with what hangs below it and, where that exceeds W, cuts off
its heaviest child parts as groups of their own (Kundu & Misra's greedy, which makes the fewest parts of weight <= W).
The smallest W that gives at most K parts is used; while there are fewer than K, the heaviest part is cut in two at the
edge that halves it best. So the largest class is as small as any K-way cut of the tree allows: merges stay balanced,
and the count always lands on K. A merged class takes the id and name of the lowest tree node holding all its members
(parts are disjoint pieces of the tree, so no two share it); a class left alone keeps its own. A class merged at the
root of a tree built from paths or a flat list takes the root's name as its id too (e.g. `synthetic`), not the
placeholder id '/', unless another node already has that id.
"""

import dataclasses
import heapq

import numpy as np

from transferlab import ROOT, ClassTree, Policy, PolicyError, Seeds, SpecError, Subset
from transferlab_subsets import class_anchors, nodes_bottom_up


def cut_tree(tree: ClassTree, own: list[int], limit: int) -> tuple[list[int], list[int]]:
    """One greedy pass: the weight of every node's part after the cuts, and the nodes cut off from their parents."""
    part, cuts = list(own), []
    for node in nodes_bottom_up(tree).tolist():
        kids = sorted((c for c in tree.children[node] if part[c]), key=lambda c: (-part[c], c))
        total = part[node] + sum(part[c] for c in kids)
        for c in kids:
            if total <= limit:
                break
            total -= part[c]
            cuts.append(c)
        part[node] = total
    return part, cuts


def split_heaviest(tree: ClassTree, part: list[int], tops: set[int], k: int) -> None:
    """Cut parts in two, heaviest first, each at the edge that halves it best, until there are k parts."""
    heap = [(-part[t], t) for t in tops]
    heapq.heapify(heap)
    while len(tops) < k:
        if not heap:
            raise PolicyError(f"the tree cannot be cut into {k} parts: several classes sit on the same tree node")
        _, top = heapq.heappop(heap)
        region, stack = [], list(tree.children[top])
        while stack:
            node = stack.pop()
            if node not in tops:
                region.append(node)
                stack.extend(tree.children[node])
        weight = part[top]
        cuts = [(max(part[v], weight - part[v]), v) for v in region if 0 < part[v] < weight]
        if not cuts:
            continue
        cut = min(cuts)[1]
        node = int(tree.parents[cut])
        while True:
            part[node] -= part[cut]
            if node == top:
                break
            node = int(tree.parents[node])
        tops.add(cut)
        heapq.heappush(heap, (-part[top], top))
        heapq.heappush(heap, (-part[cut], cut))


def coarsen_groups(subset: Subset, tree: ClassTree, k: int) -> tuple[list[list[int]], list[int]]:
    """Current classes merged into exactly k groups along `tree`, and the lowest node holding each group."""
    anchors = class_anchors(subset, tree)
    weights = np.bincount(subset.class_map[subset.class_map >= 0], minlength=subset.num_classes)
    own = np.zeros(len(tree.nodes), dtype=np.int64)
    np.add.at(own, anchors, weights)
    own = own.tolist()
    lo, hi = max(own), sum(own)
    while lo < hi:  # the smallest weight limit that needs at most k parts
        mid = (lo + hi) // 2
        part, cuts = cut_tree(tree, own, mid)
        lo, hi = (lo, mid) if len(cuts) + (part[0] > 0) <= k else (mid + 1, hi)
    part, cuts = cut_tree(tree, own, lo)
    tops = set(cuts) | ({0} if part[0] else set())
    split_heaviest(tree, part, tops, k)
    top_of = np.zeros(len(tree.nodes), dtype=np.int64)
    for node in np.argsort(tree.depths, kind="stable").tolist():  # parents before children
        top_of[node] = node if node in tops or node == 0 else top_of[tree.parents[node]]
    members: dict[int, list[int]] = {}
    for current, node in enumerate(anchors.tolist()):
        members.setdefault(int(top_of[node]), []).append(current)
    groups = sorted(members.values())
    return groups, [lowest_common_node(tree, anchors[g].tolist()) for g in groups]


def merged_id(tree: ClassTree, node: int) -> str:
    """The id of a class merged at `node`: the node's id, or for the placeholder root id ROOT the root's name if no node has it."""
    if tree.nodes[node] == ROOT and tree.names[node] not in tree.nodes:
        return tree.names[node]
    return tree.nodes[node]


def lowest_common_node(tree: ClassTree, nodes: list[int]) -> int:
    """The deepest node that is an ancestor-or-self of every given node."""
    common = [nodes[0], *tree.ancestors(nodes[0])]
    for node in nodes[1:]:
        line = {node, *tree.ancestors(node)}
        common = [c for c in common if c in line]
    return common[0]


@dataclasses.dataclass(frozen=True)
class Coarsen(Policy):
    """Merge classes along the class tree to exactly k classes, the largest as small as possible (any tree)."""

    name = "coarsen"
    k: int

    def validate(self):
        if self.k < 1:
            raise SpecError(f"coarsen: k must be at least 1, got {self.k}")

    def apply(self, subset: Subset, tree: ClassTree, seeds: Seeds) -> Subset:
        """See the module docstring for the rule; new classes are ordered by their first current class."""
        if self.k > subset.num_classes:
            raise PolicyError(f"{self.spec()} asks for {self.k} classes, but only {subset.num_classes} are left")
        groups, nodes = coarsen_groups(subset, tree, self.k)
        new_of_current = np.empty(subset.num_classes, dtype=np.int32)
        for i, group in enumerate(groups):
            new_of_current[group] = i
        ids = [subset.classes[g[0]] if len(g) == 1 else merged_id(tree, n) for g, n in zip(groups, nodes)]
        names = [subset.class_names[g[0]] if len(g) == 1 else tree.names[n] for g, n in zip(groups, nodes)]
        return subset.relabel(new_of_current, ids, names)
