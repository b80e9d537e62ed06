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


def imagenet_sized_index() -> DataIndex:
    """Labels, splits and ImageNet-style file names (`n01440764_10026.JPEG`) for 1.28M samples."""
    rng = np.random.default_rng(0)
    labels = np.sort(rng.integers(0, CLASSES, N)).astype(np.int32)
    wnids = [f"n{1440764 + 7919 * c:08d}" for c in range(CLASSES)]
    files = np.char.add(np.char.add(np.array(wnids)[labels], "_"), np.arange(N).astype(str))
    files = np.char.encode(np.char.add(files, ".JPEG"))
    return DataIndex(labels, np.zeros(N, np.uint8), tuple(wnids), tuple(wnids), files, labels.copy(), tuple(f"train/{w}" for w in wnids))


@dataclasses.dataclass(frozen=True)
class Prebuilt(Source):
    """A source around a ready index."""

    name = "prebuilt"

    def build_index(self) -> DataIndex:
        return INDEX


def best_of(fn, repeats: int = 5) -> float:
    """Fastest wall time of a few calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


INDEX = imagenet_sized_index()


def main():
    chain = policies(CHAIN)
    source = Prebuilt()
    source.index, source.tree, source.fingerprint  # built once, as a cached source would be
    apply_s = best_of(lambda: make_manifest(source, chain, seed=0).digest)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.npz"
        INDEX.save(path)
        load_s = best_of(lambda: DataIndex.load(path))
    manifest = make_manifest(source, chain, seed=0)
    table = Table("measure", "value", "target", "result", title=f"policies on a {N:,}-sample, {CLASSES}-class index")
    table.add_row(f"apply `{CHAIN}` + digest", f"{apply_s:.3f} s", "< 1 s", "PASS" if apply_s < 1 else "FAIL")
    table.add_row("index memory", f"{INDEX.nbytes / 1e6:.1f} MB", "< 50 MB", "PASS" if INDEX.nbytes < 50e6 else "FAIL")
    table.add_row("index load from cache", f"{load_s * 1000:.0f} ms", "< 1 s", "PASS" if load_s < 1 else "FAIL")
    table.add_row("manifest", f"{manifest.num_classes} classes, {len(manifest.samples):,} images", "500 × 250", "PASS" if len(manifest.samples) == 125_000 else "FAIL")
    Console().print(table)


if __name__ == "__main__":
    main()
