"""The image cache: every sample of a source decoded once at a training resolution into one uint8 memory-mapped array."""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .cache import atomic_path, cache_dir, cache_key
from .errors import DataError
from .sources import Source

FORMAT_VERSION = 1  # bump when the layout or the resizing changes, so old caches are not reused
CHUNK = 256  # images decoded per job
SHOW_PROGRESS_FROM = 5_000  # images; smaller caches build in about a second


def image_cache(source: Source, resolution: int, *, workers: int | None = None) -> np.ndarray:
    """uint8 [len(source.index), R, R, 3], memory-mapped read-only; built on first use, row i is sample i."""
    path = cache_path(source, resolution)
    shape = (len(source.index), resolution, resolution, 3)
    images = read_cache(path, shape)
    if images is None:
        with build_lock(path):
            images = read_cache(path, shape)  # another process may have built it while we waited
            if images is None:
                remove_stale_temporaries(path)
                build(source, resolution, path, shape, workers or default_workers())
                images = read_cache(path, shape)
    if images is None:
        raise DataError(f"the image cache {path} of {source.spec()} at {resolution} px could not be read back after building it")
    return images


def cache_path(source: Source, resolution: int) -> Path:
    """The .npy file of a source at a resolution; the name depends on the source fingerprint and the resolution only."""
    return cache_dir("images") / f"{source.name}-{resolution}px-{cache_key(source.fingerprint, resolution, FORMAT_VERSION)}.npy"


def read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The array at `path` if it is a complete uint8 .npy of `shape`; None if missing, truncated or of another shape."""
    try:
        images = np.load(path, mmap_mode="r")  # a file shorter than its header promises fails here
    except (OSError, ValueError, EOFError):
        return None
    return images if images.shape == shape and images.dtype == np.uint8 else None


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `path`: one builder per cache file; the lock dies with its process."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_stale_temporaries(path: Path) -> None:
    """Delete half-written files of builds that were killed (only called while holding the build lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def build(source: Source, resolution: int, path: Path, shape: tuple[int, ...], workers: int) -> None:
    """Decode every sample into a temporary .npy in parallel, then move it into place; an error leaves no file."""
    chunks = [np.arange(start, min(start + CHUNK, shape[0])) for start in range(0, shape[0], CHUNK)]
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True, disable=shape[0] < SHOW_PROGRESS_FROM) as progress:
            task = progress.add_task(f"decoding {source.spec()} at {resolution} px", total=shape[0])
            if chunks:  # the first chunk runs alone: a source may set up shared state (open files, generate) on first load
                progress.advance(task, fill(out, source, chunks[0], resolution))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(fill, out, source, rows, resolution) for rows in chunks[1:]]
                try:
                    for future in as_completed(futures):
                        progress.advance(task, future.result())
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # a failed or interrupted build stops at once
                    raise
        out.flush()
        del out


def fill(out: np.ndarray, source: Source, rows: np.ndarray, resolution: int) -> int:
    """Decode consecutive samples `rows` into the same rows of `out`; return how many."""
    pixels = source.load(rows, size=resolution)
    expected = (len(rows), resolution, resolution, 3)
    if pixels.shape != expected or pixels.dtype != np.uint8:
        raise DataError(f"source {source.spec()} returned {pixels.dtype} {pixels.shape} from load(size={resolution}), expected uint8 {expected}")
    out[rows[0]:rows[-1] + 1] = pixels
    return len(rows)


def default_workers() -> int:
    """Decoding threads: one per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
