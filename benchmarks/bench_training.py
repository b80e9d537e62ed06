"""Benchmark: pretraining throughput of `training.pretrain` ÷ a bare PyTorch loop on the same model, batch and in-memory data.

Both run in this process, interleaved (bare, platform, bare, platform, ...) after a warm-up of each, so that drift
hits both alike; the ratio compares the best repeat of each (other load on the machine only ever slows a repeat down). The bare loop is the ceiling: pre-normalised float batches
sliced from memory, forward, loss, backward, SGD step — no augmentation, no schedule, no progress display. The
platform's images/s is the one it logs (its training loop with loading, augmentation and schedule; eval excluded).
Targets: ≥ 0.95 on CPU; ≥ 0.90 on CUDA with the subset resident, bf16 autocast and channels_last.

Defaults per device: on the CPU resnet10t (ImageNet stem) at 32 px, batch 128, 12 steps × 5 repeats; on CUDA resnet18
(ImageNet stem, as timm builds it) at 64 px, batch 512, 150 steps × 3 repeats, where the network's compute dominates
and the design's bare anchor applies (one H200: 44k images/s eager, 61k compiled). On an H100 with 16 CPU cores the
CUDA defaults take about a minute eager, data generation included; `--compile` adds the compilation.
"""

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

import transferlab as tl
from transferlab.cache import CACHE_ENV
from transferlab.devices import autocast, device_name, prepare, resolve_device, synchronize
from transferlab.image_cache import image_cache
from transferlab.loader import fits_on_device, normalize, to_device
from transferlab.training import make_optimizer, pretrain
from transferlab.training_spec import Training

TARGET = {"cpu": 0.95, "cuda": 0.90}
DEFAULTS = {  # per device type: backbone, resolution, batch size, steps per timed repeat, repeats
    "cpu": {"backbone": "timm('resnet10t', small_stem='off')", "resolution": 32, "batch_size": 128, "steps": 12, "repeats": 5},
    "cuda": {"backbone": "timm('resnet18', small_stem='off')", "resolution": 64, "batch_size": 512, "steps": 150, "repeats": 3},
}
ANCHOR = "design anchor, bare loop on one H200 (torch 2.11): resnet18 64 px 44k images/s eager, 61k compiled"


def bare_loop(model: torch.nn.Module, data: torch.Tensor, labels: torch.Tensor, spec: Training, device: torch.device) -> float:
    """Images/s of the plainest loop over the whole of `data` (float [n, 3, R, R] on the device) in batches of spec.batch_size."""
    optimizer = make_optimizer(model, spec)
    b = spec.batch_size
    synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(data) - b + 1, b):
        with autocast(device):
            loss = F.cross_entropy(model(data[i:i + b]), labels[i:i + b])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return (len(data) // b) * b / (time.perf_counter() - start)


def platform_loop(backbone, model, images, manifest, spec: Training, folder: Path, run: int) -> float:
    """Images/s that `pretrain` logs for one epoch over the manifest (no val set, so nothing but training is timed)."""
    logged = []
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    pretrain(backbone, model, images, manifest, empty, spec, folder / f"run{run}.pt", lambda m, s: logged.append(m), seed=run, progress=False)
    return logged[-1]["pretrain.images_per_s"]


def measure(backbone: str | None = None, resolution: int | None = None, batch_size: int | None = None, steps: int | None = None,
            repeats: int | None = None, device: str = "auto", compile: bool = False) -> dict:
    """Images/s of the bare loop, the platform resident and streamed, per repeat, with what was run (None: the device's DEFAULTS)."""
    began = time.perf_counter()
    args = argparse.Namespace(backbone=backbone, resolution=resolution, batch_size=batch_size, steps=steps, repeats=repeats, device=device, compile=compile)
    with tempfile.TemporaryDirectory() as folder:
        os.environ[CACHE_ENV] = folder
        device = resolve_device(args.device)
        for name, value in DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        spec = Training(epochs=1, batch_size=args.batch_size, resolution=args.resolution, device=args.device, compile=args.compile)
        per_class = -(-args.steps * args.batch_size // 64)  # the default synthetic tree has 64 pretraining classes
        source_spec = f"synthetic(train={per_class}, val=0, test=0)"
        source = tl.source(source_spec)
        manifest = tl.select(source_spec)
        images = image_cache(source, args.resolution)
        data_seconds = time.perf_counter() - began
        backbone = tl.get_registry().parse("backbone", args.backbone)
        torch.manual_seed(0)
        model = backbone.build(manifest.num_classes, args.resolution)
        net = prepare(model, device, args.compile)
        n = len(manifest.samples) // args.batch_size * args.batch_size
        data = normalize(to_device(images, manifest.samples[:n], device))
        labels = torch.as_tensor(manifest.labels[:n], dtype=torch.int64, device=device)
        resident = fits_on_device(len(manifest.samples) * images[0].nbytes, device, spec.device_share)

        bare_loop(net, data, labels, spec, device)  # warm-up: kernels, allocator, compilation
        platform_loop(backbone, model, images, manifest, spec, Path(folder), 0)
        streaming = dataclasses.replace(spec, device_share=1e-12)  # forces batches to stream from the memory-mapped cache
        bare, platform, streamed = [], [], []
        for run in range(1, args.repeats + 1):
            bare.append(bare_loop(net, data, labels, spec, device))
            platform.append(platform_loop(backbone, model, images, manifest, spec, Path(folder), run))
            streamed.append(platform_loop(backbone, model, images, manifest, streaming, Path(folder), 100 + run))
    return {"args": args, "device": device, "backbone": backbone, "n": n, "samples": len(manifest.samples), "resident": resident,
            "data_seconds": data_seconds, "bare": bare, "platform": platform, "streamed": streamed, "ratio": max(platform) / max(bare),
            "target": TARGET.get(device.type, TARGET["cuda"])}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows: platform ÷ bare loop (resident), and streamed from the cache ÷ bare."""
    from benchmarks.suite import row

    m = measure(**({"steps": 3, "repeats": 1, "batch_size": 32} if tiny else {}))
    what = f"{m['backbone'].spec()} {m['args'].resolution} px, batch {m['args'].batch_size} on {device_name(m['device'])}"
    return [row("training", f"pretrain ÷ bare loop, subset resident: {what}", m["ratio"], "×", f"≥ {m['target']:.2f}", m["ratio"] >= m["target"]),
            row("training", "pretrain streamed from the memory-mapped cache ÷ bare loop", max(m["streamed"]) / max(m["bare"]), "×", "", None),
            row("training", "bare loop", max(m["bare"]), "images/s", "", None)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def default(name: str) -> str:
        return f"default: {DEFAULTS['cpu'][name]} on CPU, {DEFAULTS['cuda'][name]} on CUDA"

    parser.add_argument("--backbone", help=default("backbone"))
    parser.add_argument("--resolution", type=int, help=default("resolution"))
    parser.add_argument("--batch-size", type=int, help=default("batch_size"))
    parser.add_argument("--steps", type=int, help="optimizer steps per timed repeat; " + default("steps"))
    parser.add_argument("--repeats", type=int, help=default("repeats"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    began = time.perf_counter()
    m = measure(args.backbone, args.resolution, args.batch_size, args.steps, args.repeats, args.device, args.compile)
    args, device, backbone, n, bare, platform, streamed = m["args"], m["device"], m["backbone"], m["n"], m["bare"], m["platform"], m["streamed"]
    ratio, target, resident, data_seconds = m["ratio"], m["target"], m["resident"], m["data_seconds"]
    console = Console(width=140)
    console.print(f"[bold]{backbone.spec()}[/] at {args.resolution} px, batch {args.batch_size}, {n // args.batch_size} steps × "
                  f"{args.repeats} repeats on {device_name(device)}; torch {torch.__version__}; subset resident: {resident}; "
                  f"bf16 autocast + channels_last: {device.type == 'cuda'}; compile: {args.compile}")
    console.print(f"{m['samples']:,} synthetic images generated and cached in {data_seconds:.1f} s; whole benchmark "
                  f"{time.perf_counter() - began:.1f} s" + (f"; {ANCHOR}" if device.type == "cuda" else ""))
    table = Table()
    for column in ("loop", "median images/s", "best images/s", "all runs"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    table.add_row("bare PyTorch", f"{statistics.median(bare):,.0f}", f"{max(bare):,.0f}", " ".join(f"{v:,.0f}" for v in bare))
    table.add_row("transferlab pretrain", f"{statistics.median(platform):,.0f}", f"{max(platform):,.0f}", " ".join(f"{v:,.0f}" for v in platform))
    table.add_row("… streamed from the cache", f"{statistics.median(streamed):,.0f}", f"{max(streamed):,.0f}", " ".join(f"{v:,.0f}" for v in streamed))
    table.add_row("ratio (resident ÷ bare)", f"{statistics.median(platform) / statistics.median(bare):.3f}", f"{ratio:.3f}",
                  f"target ≥ {target:.2f}: " + ("[green]PASS[/]" if ratio >= target else "[red]FAIL[/]"))
    console.print(table)
    print(f"RESULT ratio {ratio:.3f} (target ≥ {target:.2f}: {'PASS' if ratio >= target else 'FAIL'}) on {device_name(device)}: "
          f"platform {max(platform):,.0f} / bare {max(bare):,.0f} images/s, streamed {max(streamed):,.0f}; {args.backbone} "
          f"{args.resolution} px, batch {args.batch_size}, compile {args.compile}, torch {torch.__version__}"
          + (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""))
    return 0 if ratio >= target else 1


if __name__ == "__main__":
    sys.exit(main())
