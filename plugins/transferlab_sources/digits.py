"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes): a small target that needs no files or network."""

import dataclasses
import hashlib
from functools import cached_property

import numpy as np

from transferlab import DataError, DataIndex, Source, SpecError, arrays_digest, carve, check_val_fraction, split_code, text_keys

from .idx import gray_rgb

CLASSES = tuple("0123456789")


@dataclasses.dataclass(frozen=True)
class Digits(Source):
    """scikit-learn's 8×8 digits (`load_digits`, bundled): 1,797 images, 10 classes; fixed class-stratified test and val shares."""

    name = "digits"
    test_fraction: float = 0.2
    val_fraction: float = 0.1

    def validate(self) -> None:
        """Both shares lie in [0, 1) and leave images to train on."""
        check_val_fraction(self.name, self.test_fraction, "test_fraction")
        check_val_fraction(self.name, self.val_fraction)
        if self.test_fraction + self.val_fraction >= 1:
            raise SpecError(f"digits: test_fraction + val_fraction must stay below 1, got {self.test_fraction} + {self.val_fraction}")

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 [1797, 8, 8] (scikit-learn's 0..16 scaled to 0..255) and labels int32 [1797]."""
        try:
            from sklearn.datasets import load_digits  # imported here: scikit-learn is heavy, and only this source needs it
        except ImportError as exc:
            raise DataError(f"digits needs scikit-learn (pip install scikit-learn): {exc}") from None
        data = load_digits()
        return np.round(data.images * (255 / 16)).astype(np.uint8), data.target.astype(np.int32)

    def build_index(self) -> DataIndex:
        """Sample i is scikit-learn's row i; per class, round(test_fraction·n) images go to test and round(val_fraction·n)
        to val, chosen by fixed keys of the row numbers (so the splits never move, and each nests in its fraction)."""
        images, labels = self.arrays
        splits = np.full(len(labels), split_code("train"), dtype=np.uint8)
        splits = carve(splits, labels, text_keys(map(str, range(len(labels)))), val=self.val_fraction, test=self.test_fraction)
        return DataIndex(labels=labels, splits=splits, classes=CLASSES, class_names=CLASSES, content=arrays_digest(images))

    @cached_property
    def pixels_key(self) -> str:
        """Identity of the pixels alone (the shares only move rows between splits): the pixel arrays' digest."""
        return hashlib.sha256(f"{self.name}\x00{self.index.content}".encode()).hexdigest()

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """uint8 [n, 8, 8, 3] (grayscale replicated); `size` resizes to size×size."""
        return gray_rgb(self.arrays[0][np.asarray(samples, dtype=np.int64)], size)
