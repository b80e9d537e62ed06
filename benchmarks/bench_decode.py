"""Benchmark: building the image cache from a folder of ImageNet-like JPEGs on the CPU, in images/s, ÷ a plain multiprocessing PIL loop.

The JPEGs (default 3000 in 10 class folders, about 500×375, smooth random content, quality 90) are generated once,
untimed. Timed: `image_cache(ImageFolder(root), 64)` from an empty cache (the index built before, untimed; Pillow's
decoder, $TRANSFERLAB_DECODER=pil), its decoding processes started before the clock, as the plain loop's Pool is: a
`multiprocessing.Pool(usable CPUs).map` of open + convert('RGB') + resize of the shorter side + centre crop to 64 px,
the results stacked. Also one process alone (`images.decode_task`). Target: platform ÷ plain loop ≥ 0.9. Best of the repeats.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TARGET = 0.9
CLASSES = 10


def smooth_jpeg(args: tuple[Path, int]) -> None:
    """One ImageNet-like file: about 500×375 (sizes vary a little), a smooth random picture (upsampled noise), quality 90."""
    path, seed = args
    rng = np.random.default_rng(seed)
    width, height = (500, 375) if seed % 3 else (375 + int(rng.integers(0, 40)), 500)
    small = Image.fromarray(rng.integers(0, 256, (int(rng.integers(4, 12)), int(rng.integers(4, 12)), 3), dtype=np.uint8))
    small.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)


def generate(root: Path, n: int) -> list[Path]:
    """n JPEGs in CLASSES class folders below root, in parallel."""
    paths = [root / f"n{i % CLASSES:08d}" / f"img_{i:06d}.JPEG" for i in range(n)]
    for c in range(CLASSES):
        (root / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("forkserver").Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(smooth_jpeg, [(p, i) for i, p in enumerate(paths)], chunksize=32)
    return paths


def plain_decode(path: Path, size: int = 64) -> np.ndarray:
    """The plain loop's work per file: open, RGB, shorter side resized to `size`, centre crop."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    w, h = rgb.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR, box=box))


def measure(n: int = 3000, size: int = 64, repeats: int = 2) -> dict[str, float]:
    """images/s of the platform's cache build, of the plain Pool loop, and of one process, best of `repeats`."""
    os.environ["TRANSFERLAB_DECODER"] = "pil"
    from transferlab import images as decoding
    from transferlab.cache import CACHE_ENV, cache_dir
    from transferlab.image_cache import image_cache
    from transferlab_sources.image_folder import ImageFolder

    with tempfile.TemporaryDirectory() as folder:
        root, cache = Path(folder) / "jpegs", Path(folder) / "cache"
        os.environ[CACHE_ENV] = str(cache)
        paths = generate(root, n)
        source = ImageFolder(str(root), val_fraction=0.0)
        assert len(source.index) == n
        decoding.decode_files(root, [str(p.relative_to(root)) for p in paths[:decoding.PROCESS_FROM]], size)  # start the processes
        cpus = decoding.usable_cpus()
        platform_s, plain_s = [], []
        with multiprocessing.get_context("forkserver").Pool(cpus) as pool:
            pool.map(plain_decode, paths[:cpus])  # started
            for _ in range(repeats):
                shutil.rmtree(cache_dir("images"))
                start = time.perf_counter()
                built = image_cache(source, size)
                platform_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                plain = np.stack(pool.map(plain_decode, paths, chunksize=64))
                plain_s.append(time.perf_counter() - start)
        assert built.shape == plain.shape == (n, size, size, 3)
        few = [str(p.relative_to(root)) for p in paths[:min(n, 300)]]
        start = time.perf_counter()
        decoding.decode_task(str(root), few, size, decoding.max_pixels())
        serial = len(few) / (time.perf_counter() - start)
    platform, plain_rate = n / min(platform_s), n / min(plain_s)
    return {"n": n, "size": size, "cpus": cpus, "platform": platform, "plain": plain_rate, "serial": serial, "ratio": platform / plain_rate}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows: cache build images/s and its ratio to the plain loop."""
    from benchmarks.suite import row

    m = measure(n=240 if tiny else 3000, repeats=1 if tiny else 2)
    note = f"{m['n']:,} JPEGs ~500×375 → {m['size']} px, {m['cpus']} processes"
    return [row("decode", f"image cache build from JPEGs, {note}", m["platform"], "images/s", "", None),
            row("decode", "plain multiprocessing PIL loop", m["plain"], "images/s", "", None),
            row("decode", "one process (serial decode)", m["serial"], "images/s", "", None),
            row("decode", "cache build ÷ plain PIL loop", m["ratio"], "×", f"≥ {TARGET}", m["ratio"] >= TARGET)]


def main() -> int:
    """Print the table; exit 1 below the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the suite's rows as JSON instead")
    args = parser.parse_args()
    m = measure(args.images, args.size, args.repeats)
    if args.json:
        from benchmarks.suite import row

        print(json.dumps([row("decode", "cache build ÷ plain PIL loop", m["ratio"], "×", f"≥ {TARGET}", m["ratio"] >= TARGET)]))
        return 0 if m["ratio"] >= TARGET else 1
    from rich.console import Console
    from rich.table import Table

    table = Table("decoding", "images/s", "÷ plain loop", title=f"{m['n']:,} ImageNet-like JPEGs (~500×375, q90) → {m['size']} px on "
                                                               f"{m['cpus']} CPUs; best of {args.repeats}")
    table.add_row("transferlab image cache build (processes)", f"{m['platform']:,.0f}", f"{m['ratio']:.2f}")
    table.add_row("plain multiprocessing PIL loop", f"{m['plain']:,.0f}", "1.00")
    table.add_row("one process, serial", f"{m['serial']:,.0f}", f"{m['serial'] / m['plain']:.2f}")
    Console().print(table)
    print(f"RESULT decode {m['platform']:,.0f} images/s, {m['ratio']:.2f} × the plain loop (target ≥ {TARGET}): "
          f"{'PASS' if m['ratio'] >= TARGET else 'FAIL'}")
    return 0 if m["ratio"] >= TARGET else 1


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    sys.exit(main())
