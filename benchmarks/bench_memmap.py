"""Benchmark: peak RSS of training on a 100k-sample subset of a 1.28M-sample 32 px image cache (ImageNet-1k sized), memory-mapped.

The cache file (uint8 [1,281,167, 32, 32, 3], 3.9 GB) is made where `image_cache` keeps it, with the image cache's own
writer and record: every row filled (--fill whole, the default; --fill subset writes only the subset's rows, a sparse
file), with pixels that do not matter here. Free disk is checked first. The subset is `images_per_class(n=100)` of 1000
classes. Then `training.pretrain` runs a few steps through the platform's loader twice: the subset resident (copied
once, as on a machine whose RAM holds it) and streamed from the memory-mapped file (device_share so small that it never
fits). Printed: the process's peak RSS (VmHWM, reset before each run where Linux allows) for each; target < 1.5 GB.
Of that, about 1 GB is torch and the network training at batch 32 whatever the cache (a 2,000-sample subset peaks there
too); batch 128 adds about 0.4 GB of activations on the CPU; the resident run adds the subset's own 0.3 GB copy.
"""

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_GB = 1.5
CLASSES = 1000
BLOCK = 8192  # rows written at a time


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (VmHWM; ru_maxrss where /proc is missing), in GB."""
    status = Path("/proc/self/status")
    if status.exists():
        return int(next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: 5 to /proc/self/clear_refs); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(samples: int = 1_281_167, subset: int = 100_000, resolution: int = 32, steps: int = 6, batch_size: int = 32,
            fill: str = "whole", folder: str | None = None) -> dict[str, float]:
    """Make the cache, train resident and streamed; peak RSS of each (GB), file and disk sizes."""
    from transferlab import DataIndex, Source, make_manifest, policies
    from transferlab import image_cache as ic
    from transferlab.cache import CACHE_ENV

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        os.environ[CACHE_ENV] = tmp
        labels = np.repeat(np.arange(CLASSES, dtype=np.int32), -(-samples // CLASSES))[:samples]
        index = DataIndex(labels, np.zeros(samples, np.uint8), tuple(f"c{c}" for c in range(CLASSES)), tuple(f"class {c}" for c in range(CLASSES)))

        @dataclasses.dataclass(frozen=True)
        class Large(Source):
            """An ImageNet-1k-sized source whose pixels are already in the image cache."""

            name = "imagenet_sized"

            def build_index(self) -> DataIndex:
                return index

        source = Large()
        manifest = make_manifest(source, policies(f"images_per_class(n={subset // CLASSES})"), seed=0)
        shape = (samples, resolution, resolution, 3)
        row_bytes = resolution * resolution * 3
        need = samples * row_bytes if fill == "whole" else len(manifest.samples) * row_bytes
        free = shutil.disk_usage(tmp).free
        if free < need + (1 << 30):
            raise SystemExit(f"needs {need / 1e9:.1f} GB of free disk in {tmp} (and 1 GB to spare), {free / 1e9:.1f} GB free: "
                             "pass --samples smaller, --fill subset or --folder elsewhere")
        path = ic.cache_path(source, resolution)
        ic.create(path, shape)
        images = ic.read_images(path, shape)
        rows = np.arange(samples) if fill == "whole" else np.sort(manifest.samples)
        block = np.random.default_rng(0).integers(0, 256, (BLOCK, *shape[1:]), dtype=np.uint8)
        started = time.perf_counter()
        with open(path, "r+b") as f:
            filling = ic.Filling(f.fileno(), images.offset, row_bytes, ic.record_path(path), np.zeros(samples, bool), len(rows))
            for start in range(0, len(rows), BLOCK):
                part = rows[start:start + BLOCK]
                filling.write(part, block[:len(part)])
            filling.save()
        write_s = time.perf_counter() - started
        images = ic.image_cache(source, resolution, rows=manifest.samples)  # the platform's path: found filled, memory-mapped
        disk = os.stat(path).st_blocks * 512
        result = {"samples": samples, "subset": len(manifest.samples), "file_gb": os.path.getsize(path) / 1e9, "disk_gb": disk / 1e9,
                  "write_s": write_s, "before_gb": peak_rss_gb()}
        for mode, share in (("streamed", 1e-12), ("resident", 0.5)):
            result[f"{mode}_gb"], result[f"{mode}_s"], result["reset"] = train(source, images, manifest, resolution, steps, batch_size, share, tmp)
    return result


def train(source, images, manifest, resolution: int, steps: int, batch_size: int, share: float, folder: str) -> tuple[float, float, bool]:
    """Peak RSS (GB) and seconds of `pretrain` for `steps` steps at this device share, on the CPU."""
    import torch

    import transferlab as tl
    from transferlab.training import pretrain
    from transferlab.training_spec import Training

    backbone = tl.get_registry().parse("backbone", "timm('resnet10t')")
    model = backbone.build(manifest.num_classes, resolution)
    spec = Training(steps=steps, batch_size=batch_size, resolution=resolution, device="cpu", device_share=share)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    reset = reset_peak()
    started = time.perf_counter()
    pretrain(backbone, model, images, manifest, empty, spec, Path(folder) / f"{share}.pt", lambda m, s: None, progress=False)
    seconds = time.perf_counter() - started
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return peak_rss_gb(), seconds, reset


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows, measured in a fresh process (peak RSS is the whole process's)."""
    from benchmarks.suite import in_subprocess

    return in_subprocess("bench_memmap.py", ["--samples", "20000", "--subset", "2000", "--steps", "2", "--batch-size", "32"] if tiny else [])


def table_rows(m: dict[str, float]) -> list[dict]:
    """Rows of a measurement."""
    from benchmarks.suite import row

    what = f"{m['samples']:,}-sample 32 px cache ({m['file_gb']:.1f} GB, {m['disk_gb']:.1f} GB on disk), {m['subset']:,}-sample subset"
    limit = TARGET_GB
    return [row("memmap", f"peak RSS training streamed from the memmap: {what}", m["streamed_gb"], "GB", f"< {limit:.2g} GB", m["streamed_gb"] < limit),
            row("memmap", "peak RSS training with the subset resident (copied once)", m["resident_gb"], "GB", f"< {limit:.2g} GB", m["resident_gb"] < limit)]


def main() -> int:
    """Print the table (or the rows as JSON); exit 1 when a peak passes the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_281_167)
    parser.add_argument("--subset", type=int, default=100_000)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fill", choices=("whole", "subset"), default="whole")
    parser.add_argument("--folder", help="where the temporary cache goes (default: the system's temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the suite's rows as JSON")
    args = parser.parse_args()
    m = measure(args.samples, args.subset, args.resolution, args.steps, args.batch_size, args.fill, args.folder)
    result = table_rows(m)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"cache of {m['samples']:,} rows written in {m['write_s']:.1f} s; peak RSS before training {m['before_gb']:.2f} GB; "
              f"peak reset between runs: {m['reset']}")
        for r in result:
            print(f"RESULT {r['measure']}: {r['value']:.2f} GB (target {r['target']}): {'PASS' if r['passed'] else 'FAIL'}")
    return 0 if all(r["passed"] for r in result) else 1


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    sys.exit(main())
