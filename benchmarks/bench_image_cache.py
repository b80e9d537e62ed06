"""Benchmark: making a ~2% pretraining subset available in the image cache vs. decoding the whole source.

The source is synthetic, its own pixels generated once and untimed; by default its images are 64 px, so that loading
them at the cache's 32 px costs a resize per image, as decoding a JPEG would (`--size 32` makes loading a bare copy,
and the timings measure disk writes and syncs only). Each repeat starts from an empty image cache. The subset is the
samples of `images_per_class(n)` with n about 2% of the images per class. Reports rows decoded, the best seconds of
the repeats, the ratio to the whole source, and the disk the cache file takes (st_blocks × 512) against its size: a
subset's file is sparse. Target: subset time ≤ 0.1 × whole-source time.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from rich.console import Console
from rich.table import Table

import transferlab as tl
from transferlab.cache import CACHE_ENV, cache_dir
from transferlab.image_cache import cache_path, image_cache

TARGET = 0.1  # subset seconds ÷ whole-source seconds, for a ~2% subset
HELD_OUT = 50  # val and test images per class


def timed(fn) -> float:
    """Seconds `fn()` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh_build(source: tl.Source, resolution: int, rows: np.ndarray | None) -> float:
    """Seconds to make `rows` (all when None) available, starting from an empty image cache."""
    shutil.rmtree(cache_dir("images"))
    return timed(lambda: image_cache(source, resolution, rows))


def disk_use(source: tl.Source, resolution: int) -> str:
    """Megabytes the cache file takes on disk / its size in megabytes."""
    stat = os.stat(cache_path(source, resolution))
    return f"{stat.st_blocks * 512 / 1e6:,.1f} / {stat.st_size / 1e6:,.1f}"


def measure(train: int = 1000, size: int = 64, resolution: int = 32, share: float = 0.02, repeats: int = 3) -> dict:
    """Best seconds of the subset, rest and whole-source builds in a fresh cache folder, with what was built."""
    with tempfile.TemporaryDirectory() as folder:
        os.environ[CACHE_ENV] = folder
        spec = f"synthetic(train={train}, val={HELD_OUT}, test={HELD_OUT}, size={size})"
        source = tl.source(spec)
        n = max(1, round(share * (train + 2 * HELD_OUT)))
        rows = tl.select(spec, f"images_per_class(n={n})").samples
        generate = timed(lambda: source.pixels)  # the source's own images, generated once, outside the timings below
        subset_s, rest_s, whole_s = [], [], []
        for _ in range(repeats):
            subset_s.append(fresh_build(source, resolution, rows))
            subset_disk = disk_use(source, resolution)
            rest_s.append(timed(lambda: image_cache(source, resolution)))
            whole_s.append(fresh_build(source, resolution, None))
            whole_disk = disk_use(source, resolution)
    return {"spec": spec, "n": n, "rows": rows, "total": len(source.index), "generate": generate, "subset": min(subset_s),
            "rest": min(rest_s), "whole": min(whole_s), "ratio": min(subset_s) / min(whole_s), "subset_disk": subset_disk, "whole_disk": whole_disk}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's row: a ~2% subset's cache build ÷ the whole source's."""
    from benchmarks.suite import row

    m = measure(**({"train": 200, "repeats": 1} if tiny else {}))
    return [row("image_cache", f"cache build of a {len(m['rows']) / m['total']:.0%} subset ÷ whole source ({m['total']:,} images)", m["ratio"], "×",
                f"≤ {TARGET}", m["ratio"] <= TARGET)]


def main() -> int:
    """Time subset and whole-source builds in a fresh cache folder; print a table; exit 1 when the ratio misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000, help="training images per class of the synthetic source")
    parser.add_argument("--size", type=int, default=64, help="the synthetic images' own size in pixels")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--share", type=float, default=0.02, help="subset size as a share of the whole source")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    m = measure(args.train, args.size, args.resolution, args.share, args.repeats)
    spec, n, rows, total, generate, ratio = m["spec"], m["n"], m["rows"], m["total"], m["generate"], m["ratio"]
    subset, rest, whole, subset_disk, whole_disk = m["subset"], m["rest"], m["whole"], m["subset_disk"], m["whole_disk"]
    console = Console()
    console.print(f"[bold]{spec}[/]: {total:,} images of {args.size} px (generated in {generate:.1f} s), cached at {args.resolution} px; "
                  f"subset: images_per_class(n={n}); best of {args.repeats}")
    passed = ratio <= TARGET
    table = Table(title=f"target: subset ≤ {TARGET} × whole: {'[green]PASS[/]' if passed else '[red]FAIL[/]'}")
    for column in ("build", "rows decoded", "seconds", "÷ whole", "disk used / file MB"):
        table.add_column(column, justify="left" if column == "build" else "right")
    table.add_row("subset", f"{len(rows):,} ({len(rows) / total:.1%})", f"{subset:.3f}", f"{ratio:.3f}", subset_disk)
    table.add_row("rest, after subset", f"{total - len(rows):,} ({1 - len(rows) / total:.1%})", f"{rest:.3f}", f"{rest / whole:.3f}", "")
    table.add_row("whole", f"{total:,} (100%)", f"{whole:.3f}", "1.000", whole_disk)
    console.print(table)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
