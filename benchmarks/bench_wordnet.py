"""Benchmark: the paper's 21 WordNet label sets for ImageNet-1k, and the class tree of all ImageNet-21k classes."""

import time

from rich.console import Console
from rich.table import Table

from transferlab import select
from transferlab_wordnet.access import wordnet
from transferlab_wordnet.class_list import read_wnids
from transferlab_wordnet.hierarchy import bottom_up_levels, top_down_levels, wordnet_tree


def timed(fn):
    """Result and wall time of one call."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    _, load_s = timed(wordnet)
    imagenet = read_wnids("imagenet-1k")
    levels, sets_s = timed(lambda: bottom_up_levels(imagenet) + top_down_levels(imagenet))
    counts = [len(set(level.values())) for level in levels]
    specs = [f"wordnet_level(classes={n})" for n in counts[:-3]] + [f"wordnet_level(classes={n}, method='top_down')" for n in counts[-3:]]
    _, manifests_s = timed(lambda: [select("class_list('imagenet-1k')", spec) for spec in specs])
    imagenet_21k = read_wnids("imagenet-21k")
    tree, tree_s = timed(lambda: wordnet_tree(imagenet_21k))

    table = Table("measure", "value", "target", "result", title="WordNet hierarchy (first hypernyms), after WordNet is loaded")
    table.add_row("import nltk, load WordNet 3.0", f"{load_s:.2f} s", "", "")
    table.add_row(f"{len(levels)} paper label sets, ImageNet-1k", f"{sets_s:.3f} s", "< 3 s", "PASS" if sets_s < 3 and len(levels) == 21 else "FAIL")
    table.add_row("  the same as policy manifests", f"{manifests_s:.3f} s", "", "")
    table.add_row("  class counts", ", ".join(map(str, counts)), "", "")
    table.add_row(f"tree of {len(imagenet_21k):,} ImageNet-21k classes", f"{tree_s:.2f} s ({len(tree.nodes):,} nodes, height {tree.height})",
                  "< 30 s", "PASS" if tree_s < 30 else "FAIL")
    Console().print(table)


if __name__ == "__main__":
    main()
