"""CIFAR-100 from the python pickles in torchvision's layout (root/cifar-100-python/{train,test,meta}).

Class ids are WordNet wnids (wnid_maps.CIFAR100_SYNSETS), so WordNet policies apply; class names are CIFAR's own; the class
tree is CIFAR's two levels, the 20 superclasses over the 100 classes.
"""

import codecs
import dataclasses
import pickle
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab import ClassTree, DataError, DataIndex, DownloadableSource, arrays_digest, fit, row_splits

from .wnid_maps import CIFAR100_SYNSETS

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
SIDE = 32
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]  # numpy's array unpicklers, wherever this numpy version keeps them
_FROMBUFFER = np.ndarray(0).__reduce_ex__(5)[0]  # pickle protocol 5
PICKLE_GLOBALS = {  # the only globals a CIFAR pickle names: numpy arrays (numpy 1 or 2 paths) and protocol-2 bytes
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class DataUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays; refuses every other global, so a pickle cannot run code."""

    def find_class(self, module: str, name: str):
        try:
            return PICKLE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR pickle never does") from None


def unpickle(path: Path) -> dict:
    """The dict in a CIFAR pickle, read with bytes keys (`encoding='bytes'`); a DataError names the file."""
    try:
        with open(path, "rb") as f:
            data = DataUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # unpickling broken data raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise DataError(f"{path} is not a CIFAR python pickle: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}, not the dict of a CIFAR python pickle")
    return data


def entry(data: dict, key: bytes, path: Path):
    """data[key]; a DataError names the file and the keys it has."""
    if key not in data:
        raise DataError(f"{path} has no {key!r} entry (it has {', '.join(map(repr, data))})")
    return data[key]


def read_split(path: Path, n_fine: int, n_coarse: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image rows uint8 [N, 3072] (3×32×32, channels first), fine and coarse labels of one pickle, checked."""
    data = unpickle(path)
    rows = np.asarray(entry(data, b"data", path))
    if rows.dtype != np.uint8 or rows.shape[1:] != (3 * SIDE * SIDE,):
        raise DataError(f"{path}: b'data' is {rows.dtype} {list(rows.shape)}; expected uint8 [N, 3072] (3×32×32, channels first)")
    labels = []
    for key, n in ((b"fine_labels", n_fine), (b"coarse_labels", n_coarse)):
        values = np.asarray(entry(data, key, path))
        if values.shape != (len(rows),) or (len(values) and values.dtype.kind not in "iu"):
            raise DataError(f"{path}: {key!r} should be {len(rows)} integers, one per image, but is {values.dtype} {list(values.shape)}")
        if len(values) and (values.min() < 0 or values.max() >= n):
            raise DataError(f"{path}: {key!r} must lie in 0..{n - 1} (the meta file has {n} names), found {values.min()}..{values.max()}")
        labels.append(values.astype(np.int32))
    return rows, *labels


def read_names(path: Path, key: bytes) -> list[str]:
    """A list of label names from the meta pickle."""
    return [n.decode() if isinstance(n, bytes) else str(n) for n in entry(unpickle(path), key, path)]


@dataclasses.dataclass(frozen=True)
class CifarData:
    """CIFAR-100 read into memory: image rows and fine labels of train then test, and the class hierarchy."""

    rows: np.ndarray
    labels: np.ndarray
    n_train: int
    fine_names: list[str]
    coarse_names: list[str]
    coarse_of_fine: list[int]


@dataclasses.dataclass(frozen=True)
class CIFAR100(DownloadableSource):
    """CIFAR-100 (32×32 colour) from the python pickles in root/cifar-100-python; class ids are WordNet wnids, 20 superclasses."""

    name = "cifar100"

    @property
    def folder(self) -> Path:
        """The folder that holds the pickles."""
        return self.path / FOLDER

    def check_files(self) -> None:
        """A DataError naming the expected paths when any pickle is missing."""
        missing = [str(self.folder / name) for name in FILES if not (self.folder / name).is_file()]
        if missing:
            raise DataError(f"{self.name}: missing {', '.join(missing)}; "
                            "pass download=True to fetch them with torchvision (torchvision.datasets.CIFAR100)")

    def fetch(self) -> None:
        """Download and unpack the pickles with torchvision (skipped when they are all present)."""
        if all((self.folder / name).is_file() for name in FILES):
            return
        import torchvision

        self.download_with(torchvision.datasets.CIFAR100)

    @cached_property
    def data(self) -> CifarData:
        """Both pickles and the meta file, checked against each other."""
        if self.download:
            self.fetch()
        self.check_files()
        meta = self.folder / "meta"
        fine_names, coarse_names = read_names(meta, b"fine_label_names"), read_names(meta, b"coarse_label_names")
        train, test = (read_split(self.folder / name, len(fine_names), len(coarse_names)) for name in ("train", "test"))
        rows, fine, coarse = (np.concatenate(parts) for parts in zip(train, test))
        return CifarData(rows, fine, len(train[0]), fine_names, coarse_names, coarse_of_fine(fine, coarse, fine_names, self.folder))

    def build_index(self) -> DataIndex:
        """Sample i is row i of train then test; class ids are the fine classes' wnids; a val_fraction of each train class becomes val; content is a hash of the pixels."""
        data = self.data
        unmapped = [n for n in data.fine_names if n not in CIFAR100_SYNSETS]
        if unmapped:
            raise DataError(f"{self.folder / 'meta'}: no WordNet synset is known for the fine classes {', '.join(map(repr, unmapped))} "
                            f"(transferlab_sources.wnid_maps.CIFAR100_SYNSETS maps CIFAR-100's 100 names)")
        wnids = [CIFAR100_SYNSETS[n][0] for n in data.fine_names]
        return DataIndex(labels=data.labels, splits=row_splits(data.labels, data.n_train, self.val_fraction),
                         classes=wnids, class_names=data.fine_names, content=arrays_digest(data.rows))

    def build_tree(self) -> ClassTree:
        """Two levels: each fine class under its CIFAR superclass."""
        return ClassTree.from_coarse_labels(self.index.classes, self.data.coarse_of_fine, self.data.coarse_names, self.data.fine_names)

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """uint8 [n, 32, 32, 3] pixels; `size` resizes to size×size."""
        images = self.data.rows[np.asarray(samples, dtype=np.int64)].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
        if size is None:
            return np.ascontiguousarray(images)
        return np.array([np.asarray(fit(Image.fromarray(x), size)) for x in images], dtype=np.uint8).reshape(-1, size, size, 3)


def coarse_of_fine(fine: np.ndarray, coarse: np.ndarray, fine_names: list[str], folder: Path) -> list[int]:
    """The superclass of each fine class; a DataError names classes without samples or with several superclasses."""
    pairs = np.unique(np.stack([fine, coarse]), axis=1)
    counts = np.bincount(pairs[0], minlength=len(fine_names))
    bad = [f"{name} ({'no samples' if n == 0 else f'{n} superclasses'})" for name, n in zip(fine_names, counts.tolist()) if n != 1]
    if bad:
        raise DataError(f"{folder}: every fine class needs exactly one superclass; these do not: {', '.join(bad)}")
    return pairs[1].tolist()  # np.unique sorted the pairs by fine class
