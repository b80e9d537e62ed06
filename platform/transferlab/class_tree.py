"""ClassTree: a rooted tree over node ids whose leaves are a source's classes."""

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import cached_property

import numpy as np

from .errors import DataError

ROOT = "/"  # root id of trees built from paths or flat lists: never a relative path or a folder name


@dataclasses.dataclass(frozen=True, eq=False)
class ClassTree:
    """Node 0 is the root; `parents[i]` is node i's parent (-1 for the root); class c sits at node `class_nodes[c]`."""

    nodes: tuple[str, ...]
    names: tuple[str, ...]
    parents: np.ndarray
    class_nodes: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "parents", np.asarray(self.parents, dtype=np.int32))
        object.__setattr__(self, "class_nodes", np.asarray(self.class_nodes, dtype=np.int32))
        n = len(self.nodes)
        if len(self.names) != n or len(self.parents) != n:
            raise DataError("class tree needs one name and one parent per node")
        if n == 0 or self.parents[0] != -1 or (self.parents[1:] < 0).any():
            raise DataError("class tree must have exactly one root, node 0")
        if len(set(self.nodes)) != n:
            raise DataError("class tree node ids are not unique")
        self.depths  # raises on cycles
        has_children = np.zeros(n, dtype=bool)
        has_children[self.parents[1:]] = True
        inner = [self.nodes[c] for c in self.class_nodes if has_children[c]]
        if inner:
            raise DataError(f"classes must be leaves of the class tree; these have children: {', '.join(inner[:5])}")
        if len(set(self.class_nodes.tolist())) != len(self.class_nodes):
            raise DataError("two classes sit on the same class tree node")

    @classmethod
    def flat(cls, classes: Sequence[str], names: Sequence[str] | None = None, root: str = "root") -> "ClassTree":
        """Every class a direct child of the root (id ROOT, named `root`)."""
        return cls.from_parents({c: ROOT for c in classes}, classes, dict(zip(classes, names or classes)) | {ROOT: root})

    @classmethod
    def from_parents(cls, parents: Mapping[str, str | None], classes: Sequence[str], names: Mapping[str, str] | None = None) -> "ClassTree":
        """Build from `{node: parent}`; nodes without a parent hang under one root (added if there are several)."""
        names = dict(names or {})
        nodes = set(parents) | {p for p in parents.values() if p is not None} | set(classes)
        roots = sorted(n for n in nodes if parents.get(n) is None)
        parent_of = dict(parents)
        if len(roots) == 1:
            root = roots[0]
        else:
            root = "root"
            if root in nodes:
                raise DataError("class tree has several roots and already uses the id 'root'")
            parent_of.update({r: root for r in roots})
        children: dict[str, list[str]] = {}
        for node, parent in parent_of.items():
            if parent is not None:
                children.setdefault(parent, []).append(node)
        order, stack = [], [root]
        while stack:  # depth-first, children in sorted order, so the layout is deterministic
            node = stack.pop()
            order.append(node)
            stack.extend(sorted(children.get(node, ()), reverse=True))
        unreachable = (nodes | {root}) - set(order)
        if unreachable:
            raise DataError(f"class tree has a cycle through {sorted(unreachable)[:5]}")
        position = {node: i for i, node in enumerate(order)}
        parent_ids = [-1] + [position[parent_of[n]] for n in order[1:]]
        return cls(tuple(order), tuple(names.get(n, n) for n in order), np.array(parent_ids), np.array([position[c] for c in classes]))

    @classmethod
    def from_paths(cls, paths: Sequence[Sequence[str]], root: str = "root") -> "ClassTree":
        """Build from one path of names per class (e.g. nested folders); node ids join the path with '/', the root is ROOT."""
        parents, names, classes = {}, {ROOT: root}, []
        for parts in paths:
            ids = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            for i, node in enumerate(ids):
                parents[node] = ids[i - 1] if i else ROOT
                names[node] = parts[i]
            classes.append(ids[-1])
        return cls.from_parents(parents, classes, names)

    @classmethod
    def from_coarse_labels(cls, classes: Sequence[str], coarse_of_class: Sequence[int], coarse_names: Sequence[str], names: Sequence[str] | None = None) -> "ClassTree":
        """Two levels: each class under its coarse label (e.g. CIFAR-100's 20 superclasses)."""
        parents = {f"coarse/{c}": ROOT for c in coarse_names}
        parents.update({c: f"coarse/{coarse_names[k]}" for c, k in zip(classes, coarse_of_class)})
        labels = dict(zip(classes, names or classes)) | {f"coarse/{c}": c for c in coarse_names} | {ROOT: "root"}
        return cls.from_parents(parents, classes, labels)

    @property
    def num_classes(self) -> int:
        """Number of leaf classes."""
        return len(self.class_nodes)

    @cached_property
    def depths(self) -> np.ndarray:
        """Depth of every node (root 0)."""
        depths = np.full(len(self.nodes), -1, dtype=np.int32)
        depths[0] = 0
        for _ in range(len(self.nodes)):
            todo = depths < 0
            if not todo.any():
                return depths
            ready = todo & (depths[np.maximum(self.parents, 0)] >= 0)
            if not ready.any():
                break
            depths[ready] = depths[self.parents[ready]] + 1
        raise DataError("class tree has a cycle")

    @property
    def height(self) -> int:
        """Depth of the deepest node."""
        return int(self.depths.max())

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        """Child node indices of every node."""
        kids: list[list[int]] = [[] for _ in self.nodes]
        for node, parent in enumerate(self.parents[1:].tolist(), start=1):
            kids[parent].append(node)
        return tuple(map(tuple, kids))

    @cached_property
    def leaf_set(self) -> frozenset[int]:
        """Nodes that are classes."""
        return frozenset(self.class_nodes.tolist())

    @cached_property
    def subtree_sizes(self) -> np.ndarray:
        """Number of classes under every node (a class's own node counts 1)."""
        sizes = np.zeros(len(self.nodes), dtype=np.int64)
        sizes[self.class_nodes] = 1
        for depth in range(self.height, 0, -1):
            level = np.flatnonzero(self.depths == depth)
            np.add.at(sizes, self.parents[level], sizes[level])
        return sizes

    def node(self, node_id: str) -> int:
        """Index of a node id."""
        try:
            return self._positions[node_id]
        except KeyError:
            raise DataError(f"class tree has no node {node_id!r}") from None

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    def ancestors(self, node: int) -> list[int]:
        """Nodes from `node`'s parent up to the root."""
        out = []
        node = int(self.parents[node])
        while node >= 0:
            out.append(node)
            node = int(self.parents[node])
        return out

    def classes_under(self, node: int) -> np.ndarray:
        """Sorted class indices whose leaf lies in `node`'s subtree (itself included)."""
        found, stack = [], [node]
        while stack:
            n = stack.pop()
            found.append(n)
            stack.extend(self.children[n])
        classes = self._class_of_node[found]
        return np.sort(classes[classes >= 0])

    @cached_property
    def _class_of_node(self) -> np.ndarray:
        of = np.full(len(self.nodes), -1, dtype=np.int64)
        of[self.class_nodes] = np.arange(self.num_classes)
        return of

    def fingerprint(self) -> str:
        """sha256 over nodes, names and structure."""
        h = hashlib.sha256(b"transferlab-tree-v1")
        h.update(json.dumps([self.nodes, self.names]).encode())
        h.update(self.parents.tobytes() + self.class_nodes.tobytes())
        return h.hexdigest()
