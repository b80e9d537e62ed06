"""MNIST and Fashion-MNIST from IDX files: in a flat folder (root itself, as Debian's dataset-fashion-mnist installs them in
/usr/share/datasets/fashion-mnist) or in torchvision's layout (root/MNIST/raw, root/FashionMNIST/raw)."""

import dataclasses
import gzip
import math
import zlib
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from transferlab import DataError, DataIndex, DownloadableSource, arrays_digest, fit, row_splits

from .wnid_maps import FASHION_MNIST_SYNSETS

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
FILES = {  # split: (images, labels), as torchvision names them
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NAMES = tuple(name for pair in FILES.values() for name in pair)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (plain or .gz); a DataError names the file and what is wrong with it."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header ({header} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: IDX magic number is 0x{found:08x}, expected 0x{magic:08x} (uint8, {ndim}-D); not an MNIST-style file")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)
    if len(data) - header != expected:
        raise DataError(f"{path}: header gives shape {shape} ({expected} bytes of data) but the file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def idx_file(folder: Path, name: str) -> Path | None:
    """The plain file `name` in `folder` if present, else its .gz, else None."""
    plain = folder / name
    gz = plain.with_name(name + ".gz")
    return plain if plain.is_file() else gz if gz.is_file() else None


def gray_rgb(gray: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 [n, H, W] grayscale as [n, H, W, 3] (replicated), resized to size×size with `fit` when `size` is given."""
    if size is not None:
        gray = np.array([np.asarray(fit(Image.fromarray(g), size)) for g in gray], dtype=np.uint8).reshape(-1, size, size)
    return np.repeat(gray[..., None], 3, axis=-1)


@dataclasses.dataclass(frozen=True)
class MNIST(DownloadableSource):
    """MNIST digits (28×28 grayscale) from IDX files (plain or .gz) in root itself or in root/MNIST/raw (torchvision's layout)."""

    name = "mnist"
    folder: ClassVar[str] = "MNIST"  # torchvision's dataset class and folder name
    class_ids: ClassVar[tuple[str, ...]] = tuple("0123456789")
    class_labels: ClassVar[tuple[str, ...]] = tuple("0123456789")

    @property
    def raw(self) -> Path:
        """The folder that holds the IDX files: root/<folder>/raw (torchvision's) or root itself (a flat folder), whichever
        holds more of the four (torchvision's on a tie, so a missing file is named where a download would put it)."""
        layouts = (self.path / self.folder / "raw", self.path)
        return max(layouts, key=lambda folder: sum(idx_file(folder, n) is not None for n in NAMES))

    def file(self, name: str) -> Path | None:
        """The plain file if present, else its .gz, else None."""
        return idx_file(self.raw, name)

    def check_files(self) -> None:
        """A DataError naming the expected paths when any file is missing."""
        raw = self.raw
        missing = [str(raw / n) for n in NAMES if idx_file(raw, n) is None]
        if missing:
            other = self.path if raw != self.path else self.path / self.folder / "raw"
            raise DataError(f"{self.name}: missing IDX files {', '.join(missing)} (plain or .gz; all four in "
                            f"{str(raw)!r} or all four in {str(other)!r}); "
                            f"pass download=True to fetch them with torchvision")

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Images [N, H, W] and labels [N] of the train file followed by the test file, and the number of train rows."""
        if self.download:
            self.fetch()
        self.check_files()
        images, labels = [], []
        for images_name, labels_name in FILES.values():
            x, y = read_idx(self.file(images_name), IMAGES_MAGIC), read_idx(self.file(labels_name), LABELS_MAGIC)
            if len(x) != len(y):
                raise DataError(f"{self.file(images_name)} has {len(x)} images but {self.file(labels_name)} has {len(y)} labels")
            if len(y) and y.max() >= len(self.class_ids):
                raise DataError(f"{self.file(labels_name)}: label {y.max()} is out of range 0..{len(self.class_ids) - 1}")
            images.append(x)
            labels.append(y)
        if images[0].shape[1:] != images[1].shape[1:]:
            raise DataError(f"{self.raw}: train images are {images[0].shape[1:]} but test images are {images[1].shape[1:]}")
        return np.concatenate(images), np.concatenate(labels), len(labels[0])

    def fetch(self) -> None:
        """Download the IDX files with torchvision (skipped when they are all present)."""
        if all(self.file(n) for n in NAMES):
            return
        import torchvision

        self.download_with(getattr(torchvision.datasets, self.folder))

    def build_index(self) -> DataIndex:
        """Sample i is row i of train then test; a deterministic val_fraction of each train class becomes val; content is a hash of the pixels."""
        images, labels, n_train = self.arrays
        splits = row_splits(labels, n_train, self.val_fraction)
        return DataIndex(labels=labels, splits=splits, classes=self.class_ids, class_names=self.class_labels, content=arrays_digest(images))

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """Grayscale replicated to 3 channels; `size` resizes to size×size."""
        return gray_rgb(self.arrays[0][np.asarray(samples, dtype=np.int64)], size)


@dataclasses.dataclass(frozen=True)
class FashionMNIST(MNIST):
    """Fashion-MNIST clothing (28×28 grayscale) from IDX files in root itself (Debian's /usr/share/datasets/fashion-mnist)
    or in root/FashionMNIST/raw; class ids are WordNet wnids."""

    name = "fashion_mnist"
    folder = "FashionMNIST"
    class_ids = tuple(wnid for wnid, _ in FASHION_MNIST_SYNSETS.values())
    class_labels = tuple(FASHION_MNIST_SYNSETS)  # the official names
