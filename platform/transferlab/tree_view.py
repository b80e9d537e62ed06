"""Views of a ClassTree: a rich tree for the terminal and an icicle chart PNG."""

from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape
from rich.tree import Tree

from .class_tree import ClassTree


def label(tree: ClassTree, node: int, images: dict[int, int]) -> str:
    """`name  (id, N classes)`, or for a class the name, id and its number of images if known (`images` by node)."""
    if node in tree.leaf_set:
        count = images.get(node)
        detail = tree.nodes[node] + ("" if count is None else f", {count} image{'s' if count != 1 else ''}")
    else:
        size = int(tree.subtree_sizes[node])
        detail = f"{tree.nodes[node]}, {size} class{'es' if size != 1 else ''}"
    return f"{escape(tree.names[node])} [dim]({escape(detail)})[/]"


def rich_tree(tree: ClassTree, depth: int | None = None, class_counts: Sequence[int] | None = None) -> Tree:
    """The tree down to `depth` (all levels if None), children largest first; classes show `class_counts[c]` images if given."""
    images = {} if class_counts is None else {int(node): int(n) for node, n in zip(tree.class_nodes, class_counts)}
    root = Tree(label(tree, 0, images))
    stack = [(0, root)]
    while stack:
        node, branch = stack.pop()
        if depth is not None and tree.depths[node] >= depth:
            continue
        for child in sorted(tree.children[node], key=lambda c: (-tree.subtree_sizes[c], tree.names[c])):
            stack.append((child, branch.add(label(tree, child, images))))
    return root


def icicle_png(tree: ClassTree, out: str | Path, depth: int | None = None, title: str = "") -> Path:
    """An icicle chart: one row per depth, each node as wide as its number of classes and coloured by position; labels where they fit."""
    import matplotlib.pyplot as plt  # here, not at the top: `transferlab tree` without --out starts without matplotlib
    from matplotlib.patches import Rectangle

    depth = tree.height if depth is None else min(depth, tree.height)
    left = node_offsets(tree)
    total = int(tree.subtree_sizes[0])
    fig, ax = plt.subplots(figsize=(16, 1.0 + 0.6 * (depth + 1)), dpi=120)
    colours = plt.get_cmap("Spectral")
    for node in range(len(tree.nodes)):
        d = int(tree.depths[node])
        if d > depth:
            continue
        width = tree.subtree_sizes[node] / total
        ax.add_patch(Rectangle((left[node] / total, -d - 1), width, 1, facecolor=colours(0.1 + 0.8 * (left[node] + tree.subtree_sizes[node] / 2) / total), edgecolor="white", linewidth=0.3))
        if width * 16 * 120 > 7 * len(tree.names[node]):
            ax.text((left[node] + tree.subtree_sizes[node] / 2) / total, -d - 0.5, tree.names[node], ha="center", va="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(-depth - 1, 0)
    ax.set_yticks([-d - 0.5 for d in range(depth + 1)], [f"depth {d}" for d in range(depth + 1)])
    ax.set_xticks([])
    ax.set_title(title or f"{tree.num_classes} classes, height {tree.height}")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def node_offsets(tree: ClassTree) -> list[int]:
    """Left edge of every node in class units, children laid out in tree order."""
    left = [0] * len(tree.nodes)
    stack = [0]
    while stack:
        node = stack.pop()
        offset = left[node]
        for child in tree.children[node]:
            left[child] = offset
            offset += int(tree.subtree_sizes[child])
        stack.extend(tree.children[node])
    return left
