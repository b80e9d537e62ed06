"""Benchmark: policy chain on an ImageNet-sized index (1.28M samples, 1000 classes) — time and memory."""

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from transferlab import DataIndex, Source, make_manifest, policies

N, CLASSES = 1_281_167, 1000
CHAIN = "random_classes(k=500) | images_per_class(n=250)"


def imagenet_sized_index(n: int = N) -> DataIndex:
    """Labels, splits and ImageNet-style file names (`n01440764_10026.JPEG`) for n samples (1.28M) of 1000 classes."""
    rng = np.random.default_rng(0)
    labels = np.sort(rng.integers(0, CLASSES, n)).astype(np.int32)
    wnids = [f"n{1440764 + 7919 * c:08d}" for c in range(CLASSES)]
    files = np.char.add(np.char.add(np.array(wnids)[labels], "_"), np.arange(n).astype(str))
    files = np.char.encode(np.char.add(files, ".JPEG"))
    return DataIndex(labels, np.zeros(n, np.uint8), tuple(wnids), tuple(wnids), files, labels.copy(), tuple(f"train/{w}" for w in wnids))


@dataclasses.dataclass(frozen=True)
class Prebuilt(Source):
    """A source around a ready index."""

    name = "prebuilt"
    samples: int = N

    def build_index(self) -> DataIndex:
        return imagenet_sized_index(self.samples)


def best_of(fn, repeats: int = 5) -> float:
    """Fastest wall time of a few calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(n: int = N, per_class: int = 250) -> dict:
    """Seconds of the chain + digest and of loading the saved index (best of 5), the index's bytes, the manifest's size."""
    chain = policies(CHAIN.replace("n=250", f"n={per_class}"))
    source = Prebuilt(samples=n)
    index = source.index
    source.tree, source.fingerprint  # built once, as a cached source would be
    apply_s = best_of(lambda: make_manifest(source, chain, seed=0).digest)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.npz"
        index.save(path)
        load_s = best_of(lambda: DataIndex.load(path))
    manifest = make_manifest(source, chain, seed=0)
    return {"n": n, "apply_s": apply_s, "nbytes": index.nbytes, "load_s": load_s, "classes": manifest.num_classes, "images": len(manifest.samples),
            "expected": 500 * per_class}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows: the chain's time, the index's memory and load time on a 1.28M index (128k at --tiny)."""
    from benchmarks.suite import row

    m = measure(**({"n": 128_000, "per_class": 25} if tiny else {}))
    return [row("policies", f"`{CHAIN}` + digest on a {m['n']:,}-sample index", m["apply_s"], "s", "< 1 s", m["apply_s"] < 1 and m["images"] == m["expected"]),
            row("policies", "index memory", m["nbytes"] / 1e6, "MB", "< 50 MB", m["nbytes"] < 50e6),
            row("policies", "index load from cache", m["load_s"], "s", "< 1 s", m["load_s"] < 1)]


def main():
    m = measure()
    table = Table("measure", "value", "target", "result", title=f"policies on a {N:,}-sample, {CLASSES}-class index")
    table.add_row(f"apply `{CHAIN}` + digest", f"{m['apply_s']:.3f} s", "< 1 s", "PASS" if m["apply_s"] < 1 else "FAIL")
    table.add_row("index memory", f"{m['nbytes'] / 1e6:.1f} MB", "< 50 MB", "PASS" if m["nbytes"] < 50e6 else "FAIL")
    table.add_row("index load from cache", f"{m['load_s'] * 1000:.0f} ms", "< 1 s", "PASS" if m["load_s"] < 1 else "FAIL")
    table.add_row("manifest", f"{m['classes']} classes, {m['images']:,} images", "500 × 250", "PASS" if m["images"] == 125_000 else "FAIL")
    Console().print(table)


if __name__ == "__main__":
    main()
