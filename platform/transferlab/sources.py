"""Sources: the Source base class (index, class tree, fingerprint, pixel identity, pixels)."""

import dataclasses
import hashlib
from functools import cached_property
from typing import ClassVar

import numpy as np

from .class_tree import ClassTree
from .components import Component
from .data_index import DataIndex


@dataclasses.dataclass(frozen=True)
class Source(Component):
    """A labelled image collection; subclasses build the index and read pixels."""

    kind = "source"
    label_params: ClassVar[tuple[str, ...]] = ()  # parameters metric labels leave out: label() accounts for them
    has_images: ClassVar[bool] = True  # False for class lists, whose samples stand for classes, not images

    def check(self) -> None:
        """Refuse, with a DataError naming what is missing (the root folder, say), a source whose data cannot be read; called
        before its index is built and before any run is made, so it must be cheap (no scan, no image)."""

    def build_index(self) -> DataIndex:
        """Enumerate samples (cached by the caller)."""
        raise NotImplementedError(f"source {self.name} does not implement build_index()")

    def build_tree(self) -> ClassTree:
        """The class hierarchy; flat unless the source knows better."""
        return ClassTree.flat(self.index.classes, self.index.class_names, root=self.name)

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """Pixels of the given samples as uint8 [n, H, W, 3]; `size` resizes to size×size (shorter side, centre crop)."""
        raise NotImplementedError(f"source {self.name} does not implement load()")

    def label(self) -> str:
        """Short name used in metric names, e.g. `transfer.linear.<label>.test_top1`."""
        return self.name

    @cached_property
    def index(self) -> DataIndex:
        """The sample index, built once per object."""
        return self.build_index()

    @cached_property
    def tree(self) -> ClassTree:
        """The class tree, built once per object."""
        return self.build_tree()

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the data: spec plus index contents."""
        return hashlib.sha256(f"{self.spec()}\x00{self.index.fingerprint()}".encode()).hexdigest()

    @property
    def pixels_key(self) -> str:
        """Identity of the pixels of rows 0..n-1 alone (keys the image cache); the fingerprint unless a source knows better."""
        return self.fingerprint
