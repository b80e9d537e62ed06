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


def measure(tree: bool = True) -> dict:
    """Seconds of loading WordNet, the 21 label sets, their manifests and (if `tree`) the ImageNet-21k tree."""
    _, load_s = timed(wordnet)
    imagenet = read_wnids("imagenet-1k")
    levels, sets_s = timed(lambda: bottom_up_levels(imagenet) + top_down_levels(imagenet))
    counts = [len(set(level.values())) for level in levels]
    specs = [f"wordnet_level(classes={n})" for n in counts[:-3]] + [f"wordnet_level(classes={n}, method='top_down')" for n in counts[-3:]]
    _, manifests_s = timed(lambda: [select("class_list('imagenet-1k')", spec) for spec in specs])
    imagenet_21k = read_wnids("imagenet-21k")
    built, tree_s = timed(lambda: wordnet_tree(imagenet_21k)) if tree else (None, float("nan"))
    return {"load_s": load_s, "levels": levels, "counts": counts, "sets_s": sets_s, "manifests_s": manifests_s, "classes_21k": len(imagenet_21k),
            "tree": built, "tree_s": tree_s}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows: the 21 label sets (and, but at --tiny, the ImageNet-21k tree)."""
    from benchmarks.suite import row

    m = measure(tree=not tiny)
    out = [row("wordnet", f"{len(m['levels'])} paper label sets of ImageNet-1k", m["sets_s"], "s", "< 3 s", m["sets_s"] < 3 and len(m["levels"]) == 21),
           row("wordnet", "  the same as policy manifests", m["manifests_s"], "s", "", None)]
    if not tiny:
        out.append(row("wordnet", f"tree of {m['classes_21k']:,} ImageNet-21k classes", m["tree_s"], "s", "< 30 s", m["tree_s"] < 30))
    return out


def main():
    m = measure()
    load_s, levels, sets_s, manifests_s, counts, tree, tree_s = m["load_s"], m["levels"], m["sets_s"], m["manifests_s"], m["counts"], m["tree"], m["tree_s"]
    imagenet_21k = range(m["classes_21k"])
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
