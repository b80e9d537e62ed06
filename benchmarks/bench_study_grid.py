"""Benchmark: the dry-run grid (`study --dry-run`) of every built-in study on the ImageNet-1k class list, no images; < 2 s each.

Each study starts from its spec strings (a fresh source: index, WordNet tree and every cell's manifest built again). What a
process pays once, before the clock starts, is reported on its own line: loading WordNet, importing timm (where the class
list's file lives; it imports torch) and WordNet's first-hypernym chains, which the first tree computes and later ones reuse. A class list has one
pseudo-image per class, so the two studies that count images are given ImageNet's nominal 1300 per class and a budget
(otherwise they rightly refuse a source with one image per class); the grid still shows the images the class list has.
"""

import io
import time

from rich.console import Console
from rich.table import Table

from transferlab import get_registry, source
from transferlab.study_grid import grid_table
from transferlab.training_spec import Training
from transferlab_wordnet.access import wordnet

SOURCE = "class_list('imagenet-1k')"
TARGET = "class_list('imagenet-r')"  # 200 ImageNet classes: target_removed has WordNet overlap to remove
SEEDS = 2
LIMIT_S = 2.0
KNOBS = {"images_per_class": "images_per_class(per_class=1300)", "fixed_budget": "fixed_budget(images=100000, take='available')"}


def main():
    start = time.perf_counter()
    wordnet()
    source(SOURCE).tree
    once_s = time.perf_counter() - start
    training = Training(steps=10_000, batch_size=256)
    results = Table("study", "rows", "runs", "seconds", title=f"dry-run grids on {SOURCE}, target {TARGET} (limit {LIMIT_S:g} s each)")
    worst = 0.0
    for entry in get_registry().entries("study"):
        start = time.perf_counter()
        study = get_registry().parse("study", KNOBS.get(entry.name, entry.name))
        table = grid_table(study, source(SOURCE), TARGET, training, SEEDS)
        Console(file=io.StringIO(), width=200).print(table)  # rendering is part of a dry run
        seconds = time.perf_counter() - start
        worst = max(worst, seconds)
        results.add_row(study.spec(), str(table.row_count), table.caption.split(" ")[0], f"{seconds:.3f}")
    console = Console()
    console.print(results)
    console.print(f"once per process, not counted (WordNet, timm's import, WordNet chains): {once_s:.2f} s")
    console.print(f"slowest study {worst:.3f} s: {'PASS' if worst < LIMIT_S else 'FAIL'} (< {LIMIT_S:g} s)")


if __name__ == "__main__":
    main()
