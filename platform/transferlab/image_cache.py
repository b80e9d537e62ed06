"""The image cache: samples of a source decoded once at a training resolution into one uint8 memory-mapped array.

Layout, per (source pixel identity `Source.pixels_key`, resolution):
- `<name>.npy`: uint8 [len(source.index), R, R, 3], row i = sample i, created once at full size and sparse (rows never
  written take no disk), then filled in place;
- `<name>.npy.filled`: the rows decoded so far, one bit per row (np.packbits in a .npy), replaced atomically;
- `<name>.npy.lock`: the build lock, one builder per cache file.

Only the rows asked for are decoded, so a subset of a large source costs time in proportion to the subset. A row joins
the record only after its pixels were written and synced to disk (fdatasync), so a build killed at any moment leaves a
record that never names an unwritten row, and the next build decodes only what is missing. Pixels are written with
pwrite, not through a writable memmap: a store into a hole of a shared mapping faults in the pages around it as well,
which makes scattered rows (a subset) many times slower to write. Read-only memmaps share the page cache with these
writes, so an array returned earlier sees rows filled later.
"""

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .cache import atomic_path, cache_dir, cache_key, storage
from .errors import DataError
from .images import decode_serially, gpu_decoding, usable_cpus
from .sources import Source

FORMAT_VERSION = 3  # bump when the layout, the decoding or the resizing changes, so old caches are not reused
CHUNK = 256  # images decoded per job
IOV_MAX = 1024  # buffers one preadv call may fill (Linux's limit)
SHOW_PROGRESS_FROM = 5_000  # images; fewer decode in about a second
SAVE_EVERY = 1.0  # seconds between rewrites of the record while decoding (and once at the end)


def image_cache(source: Source, resolution: int, rows: np.ndarray | None = None, *, workers: int | None = None) -> np.ndarray:
    """uint8 [len(source.index), R, R, 3], memory-mapped read-only, row i = sample i; `rows` (default all) are decoded."""
    path = cache_path(source, resolution)
    shape = (len(source.index), resolution, resolution, 3)
    wanted = requested(rows, shape[0])
    images = read_images(path, shape)  # opened before the record is read, so the record never describes a newer file
    if images is not None and read_record(record_path(path), shape[0])[wanted].all():
        return images
    with build_lock(path):
        remove_stale_temporaries(path)
        fill_missing(source, resolution, path, shape, wanted, workers or usable_cpus())
        images = read_images(path, shape)
    if images is None:
        raise DataError(f"the image cache {path} of {source.spec()} at {resolution} px could not be read back after filling it")
    return images


def cache_path(source: Source, resolution: int) -> Path:
    """The .npy file of a source at a resolution; the name depends on the source's pixel identity, the resolution and,
    where JPEGs decode with nvjpeg (whose pixels differ slightly from Pillow's), on that."""
    key = cache_key(source.pixels_key, resolution, FORMAT_VERSION, *(("nvjpeg",) if gpu_decoding() else ()))
    return cache_dir("images") / f"{source.name}-{resolution}px-{key}.npy"


def record_path(path: Path) -> Path:
    """The record of which rows of the cache file `path` are decoded."""
    return path.with_name(path.name + ".filled")


def requested(rows: np.ndarray | None, n: int) -> np.ndarray:
    """Sorted distinct row numbers asked for, every row when `rows` is None; an IndexError names rows outside 0..n-1."""
    if rows is None:
        return np.arange(n)
    wanted = np.unique(np.asarray(rows, dtype=np.int64))
    if len(wanted) and (wanted[0] < 0 or wanted[-1] >= n):
        raise IndexError(f"image cache rows must lie in 0..{n - 1}, got rows from {wanted[0]} to {wanted[-1]}")
    return wanted


def read_images(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The read-only array at `path` if it is a complete uint8 .npy of `shape`; None if missing, truncated or foreign."""
    try:
        images = np.load(path, mmap_mode="r")  # a file shorter than its header promises fails here
    except (OSError, ValueError, EOFError):
        return None
    return images if images.shape == shape and images.dtype == np.uint8 else None


def take_rows(images: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """images[rows] (in the order given), into `out` if given. Of a whole memory-mapped .npy (as `image_cache` returns)
    the rows are read with preadv in file order, straight into their places in `out`: the pages read stay in the page
    cache, never mapped into this process, so that reading a subset of a cache larger than RAM costs no more resident
    memory than the rows themselves."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), *images.shape[1:]), dtype=images.dtype) if out is None else out
    if not whole_file(images) or not len(rows):
        out[...] = images[rows]
        return out
    order = np.argsort(rows, kind="stable")
    ordered, row_bytes = rows[order], images[0].nbytes
    starts = np.flatnonzero(np.diff(ordered, prepend=-2) != 1).tolist() + [len(rows)]  # runs of consecutive rows
    fd = os.open(images.filename, os.O_RDONLY)
    try:
        for first, end in zip(starts, starts[1:]):
            for part in range(first, end, IOV_MAX):
                targets = [memoryview(out[i]).cast("B") for i in order[part:min(part + IOV_MAX, end)].tolist()]
                offset = images.offset + int(ordered[part]) * row_bytes
                if os.preadv(fd, targets, offset) != len(targets) * row_bytes:
                    raise DataError(f"the image cache {images.filename} ends before row {int(ordered[part])} + {len(targets)}")
    finally:
        os.close(fd)
    return out


def whole_file(images: np.ndarray) -> bool:
    """Whether `images` is a C-ordered memmap of a whole .npy file from its data offset to its end (not a view of a part)."""
    if not isinstance(images, np.memmap) or not images.filename or not images.flags.c_contiguous:
        return False
    try:
        return images.offset + images.nbytes == os.path.getsize(images.filename)
    except OSError:
        return False


def read_record(path: Path, n: int) -> np.ndarray:
    """bool [n]: the rows the record at `path` marks decoded; all False if it is missing, unreadable or of another length."""
    try:
        bits = np.load(path)
    except (OSError, ValueError, EOFError):
        return np.zeros(n, bool)
    if bits.dtype != np.uint8 or bits.shape != ((n + 7) // 8,):
        return np.zeros(n, bool)
    return np.unpackbits(bits, count=n).astype(bool)


def write_record(path: Path, filled: np.ndarray) -> None:
    """Replace the record at `path` atomically with `filled`, synced to disk first."""
    bits = np.packbits(filled)
    with atomic_path(path, f"the record of decoded rows {path.name}", bits.nbytes) as tmp, open(tmp, "wb") as f:
        np.save(f, bits)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `path`: one builder per cache file; the lock dies with its process."""
    with storage(path.parent, "a build lock"):
        lock = open(path.with_name(path.name + ".lock"), "a")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_stale_temporaries(path: Path) -> None:
    """Delete half-written files and records of builds that were killed (only called while holding the build lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def fill_missing(source: Source, resolution: int, path: Path, shape: tuple[int, ...], wanted: np.ndarray, workers: int) -> None:
    """Under the build lock: decode the rows of `wanted` that the record does not mark, starting over if the file is bad."""
    images = read_images(path, shape)
    if images is None:
        create(path, shape)
        images = read_images(path, shape)
    filled = read_record(record_path(path), shape[0])
    missing = wanted[~filled[wanted]]
    if len(missing):
        with open(path, "r+b") as f:
            filling = Filling(f.fileno(), images.offset, images[0].nbytes, record_path(path), filled, len(missing))
            decode(source, resolution, filling, missing, workers)


def create(path: Path, shape: tuple[int, ...]) -> None:
    """Drop the record, then put an empty sparse uint8 .npy of `shape` at `path` atomically."""
    record_path(path).unlink(missing_ok=True)  # first: a record must never describe the new file's unwritten rows
    with atomic_path(path, "an empty image cache file") as tmp:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)  # seeks to the end: no pixel blocks written


class Filling:
    """A cache file being filled: row writes from the decoding threads, and a record that names rows only once on disk."""

    def __init__(self, fd: int, offset: int, row_bytes: int, record: Path, filled: np.ndarray, rows: int):
        """Write `rows` rows of `row_bytes` from byte `offset` of the open file `fd`; `filled` is what `record` already marks."""
        self.fd, self.offset, self.row_bytes, self.record, self.filled = fd, offset, row_bytes, record, filled
        # what a full disk's StorageError says: the folder, and the bytes of every row this build writes
        self.room = (record.parent, "the decoded images", rows * row_bytes)
        self.written: list[np.ndarray] = []  # rows whose pixels were written, appended by the decoding threads
        self.saved = 0  # how many entries of `written` the record on disk includes
        self.saved_at = time.monotonic()

    def write(self, rows: np.ndarray, pixels: np.ndarray) -> None:
        """Write the pixels of sorted `rows` in place, one pwrite per run of consecutive rows, then note the rows."""
        data = memoryview(np.ascontiguousarray(pixels)).cast("B")
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1).tolist()  # the first row of every run
        with storage(*self.room):
            for first, end in zip(starts, starts[1:] + [len(rows)]):
                pwrite_all(self.fd, data[first * self.row_bytes:end * self.row_bytes], self.offset + int(rows[first]) * self.row_bytes)
        self.written.append(rows)  # atomic: the decoding threads may append at once

    def save_if_due(self) -> None:
        """Save when SAVE_EVERY seconds have passed since the last save."""
        if time.monotonic() - self.saved_at >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        """Sync the file to disk, then mark every row written before the sync and replace the record."""
        count = len(self.written)
        if count == self.saved:
            return
        with storage(*self.room):
            os.fdatasync(self.fd)
        self.filled[np.concatenate(self.written[self.saved:count])] = True
        write_record(self.record, self.filled)
        self.saved, self.saved_at = count, time.monotonic()


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of `data` at byte `offset` of `fd`, however many calls it takes."""
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def decode(source: Source, resolution: int, filling: Filling, missing: np.ndarray, workers: int) -> None:
    """Decode the rows `missing` in parallel jobs of CHUNK rows; an error or interrupt keeps the jobs that finished."""
    jobs = [missing[start:start + CHUNK] for start in range(0, len(missing), CHUNK)]
    with progress_bar(f"decoding {source.spec()} at {resolution} px", len(missing)) as advance:
        try:
            advance(fill(filling, source, jobs[0], resolution))  # alone: a source may set up shared state on first load
            with ThreadPoolExecutor(max_workers=workers, initializer=decode_serially) as pool:  # each job decodes in one process
                futures = [pool.submit(fill, filling, source, rows, resolution) for rows in jobs[1:]]
                try:
                    for future in as_completed(futures):
                        advance(future.result())
                        filling.save_if_due()
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # stop at once; jobs already running finish and are kept
                    raise
        finally:
            filling.save()


def fill(filling: Filling, source: Source, rows: np.ndarray, resolution: int) -> int:
    """Decode the sorted samples `rows` into the same rows of the cache file; return how many."""
    pixels = source.load(rows, size=resolution)
    expected = (len(rows), resolution, resolution, 3)
    if pixels.shape != expected or pixels.dtype != np.uint8:
        raise DataError(f"source {source.spec()} returned {pixels.dtype} {pixels.shape} from load(size={resolution}), expected uint8 {expected}")
    filling.write(rows, pixels)
    return len(rows)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transient bar on stderr counting `total` rows (hidden below SHOW_PROGRESS_FROM); yields its advance function."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=total < SHOW_PROGRESS_FROM) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
