"""The base of sources read from files, and helpers they share: content digests, val carving, problem listings."""

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from .cache import text_bytes
from .components import format_value
from .data_index import split_code
from .errors import DataError, SpecError
from .sources import Source
from .specs import excerpt
from .subset import ranks_within_class

PATH_MAX = 4096  # bytes in a path Linux accepts
MAX_ROOT_BYTES = PATH_MAX - 256  # leaves room for the files below a root (CIFAR's and MNIST's folders, class folders)
SPLIT_PARAMS = ("val_fraction", "test_fraction")  # parameters that only move rows between splits, never change pixels
MAX_LISTED = 20  # problems shown in one error message; the rest are counted


@dataclasses.dataclass(frozen=True)
class FileSource(Source):
    """A source read from files under `root`; its fingerprint ignores where the files live."""

    root: str
    location_params: ClassVar[tuple[str, ...]] = ("root",)  # parameters that do not change the data

    @cached_property
    def path(self) -> Path:
        """The root folder as an absolute path, resolved once per object; a DataError naming the root when the system
        cannot look it up at all (a NUL character, an unknown ~user, a name or path too long, no permission): a missing root is the
        callers' to report, with their hints."""
        problem = "holds a NUL character" if "\x00" in self.root else None
        if problem is None:
            try:
                path = Path(self.root).expanduser().resolve()
                if len(os.fsencode(path)) > MAX_ROOT_BYTES:
                    problem = f"is too long ({len(os.fsencode(path)):,} bytes; files below it would pass the system's limit of {PATH_MAX})"
                else:
                    path.stat()
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                problem = f"cannot be looked up: {exc.strerror or exc}"
            except RuntimeError as exc:  # expanduser: `~user` of no such user; resolve: a symlink loop
                problem = f"cannot be resolved: {exc}"
        if problem is not None:
            raise DataError(f"{self.name}: root {excerpt(self.root)} {problem}")
        return path

    def check_root(self, hint: str = "") -> None:
        """A DataError unless root is an existing folder; `hint` says what it should hold."""
        if not self.path.is_dir():
            problem = "is not a folder" if self.path.exists() else "does not exist"
            raise DataError(f"{self.name}: root {str(self.path)!r} {problem}" + (f"; {hint}" if hint else ""))

    def data_params(self) -> dict[str, object]:
        """The parameters that shape the data: every one but the location parameters."""
        return {k: v for k, v in self.params().items() if k not in self.location_params}

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the data: name, index contents (content digest included) and the data parameters, but not the location."""
        params = [f"{k}={format_value(v)}" for k, v in sorted(self.data_params().items())]
        return hashlib.sha256(text_bytes("\x00".join([self.name, self.index.fingerprint(), *params]))).hexdigest()

    @cached_property
    def pixels_key(self) -> str:
        """Identity of the pixels alone: name, files in row order, content digest and data parameters but the SPLIT_PARAMS."""
        index = self.index
        h = hashlib.sha256(text_bytes("\x00".join([self.name, index.content, *index.folders])))
        for array in (index.files, index.folder_ids):
            h.update(b"-" if array is None else array.tobytes())
        h.update(repr(sorted((k, format_value(v)) for k, v in self.data_params().items() if k not in SPLIT_PARAMS)).encode())
        return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class DownloadableSource(FileSource):
    """A file source torchvision can download: its files must exist at creation unless download=True."""

    location_params = ("root", "download")
    val_fraction: float = 0.1
    download: bool = False

    def validate(self) -> None:
        """val_fraction must lie in [0, 1); the files must exist unless they are to be downloaded."""
        check_val_fraction(self.name, self.val_fraction)
        if not self.download:
            self.check_files()

    def check_files(self) -> None:
        """A DataError naming the expected files when any is missing."""
        raise NotImplementedError(f"source {self.name} does not implement check_files()")

    def download_with(self, dataset: Callable[..., object]) -> None:
        """Call a torchvision dataset class to download into root; its failure (offline, say) is one DataError line."""
        try:
            dataset(str(self.path), download=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; MNIST wraps its attempts in a RuntimeError
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"{self.name}: could not download to {str(self.path)!r}: {reason[:300]}") from None


def check_val_fraction(name: str, fraction: float, param: str = "val_fraction") -> None:
    """A SpecError unless 0 <= fraction < 1."""
    if not 0 <= fraction < 1:
        raise SpecError(f"{name}: {param} must lie in [0, 1), got {fraction}")


def text_keys(texts: Iterable[str]) -> np.ndarray:
    """A stable uint64 per text (blake2b of its file-system bytes, so undecodable file names work), independent of any seed."""
    digests = b"".join(hashlib.blake2b(os.fsencode(t), digest_size=8).digest() for t in texts)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def stamps_digest(stamps: np.ndarray) -> str:
    """sha256 of int64 [n, 2] (size, mtime_ns) file stamps in row order: the content digest of a file source's index."""
    return hashlib.sha256(np.ascontiguousarray(stamps, dtype="<i8").tobytes()).hexdigest()


def arrays_digest(*arrays: np.ndarray) -> str:
    """blake2b of pixel arrays (shape, dtype and bytes): the content digest of a source read into memory."""
    h = hashlib.blake2b(digest_size=32)
    for array in arrays:
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return h.hexdigest()


def carve(splits: np.ndarray, labels: np.ndarray, keys: np.ndarray, val: float = 0.0, test: float = 0.0) -> np.ndarray:
    """Split codes with, per class, round(test·n) of its n train samples moved to test (lowest keys first) and round(val·n)
    to val (highest keys first), at least one staying in train: each is nested in its fraction and unmoved by the other's."""
    train = np.flatnonzero(splits == split_code("train"))
    train_labels = labels[train]
    counts = np.bincount(train_labels)
    movable = np.maximum(counts - 1, 0)
    n_test = np.minimum(np.floor(counts * test + 0.5), movable)
    n_val = np.minimum(np.floor(counts * val + 0.5), movable - n_test)
    order, ranks = ranks_within_class(train_labels, keys[train])
    ranked = train_labels[order]
    out = splits.copy()
    out[train[order[ranks < n_test[ranked]]]] = split_code("test")
    out[train[order[ranks >= counts[ranked] - n_val[ranked]]]] = split_code("val")
    return out


def listing(problems: Sequence[tuple[str, str]]) -> str:
    """One indented `path: reason` line per problem, the first MAX_LISTED of them and a count of the rest."""
    lines = [f"  {path}: {reason}" for path, reason in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)


def row_splits(labels: np.ndarray, n_train: int, val_fraction: float) -> np.ndarray:
    """Split codes of array rows: the first n_train are train, the rest test; a fixed val_fraction of each train class becomes val."""
    splits = np.full(len(labels), split_code("test"), dtype=np.uint8)
    splits[:n_train] = split_code("train")
    if val_fraction > 0:
        splits = carve(splits, labels, text_keys(map(str, range(len(labels)))), val=val_fraction)
    return splits
