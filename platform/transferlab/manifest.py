"""Manifest: the result of a policy chain — exactly which samples, with which labels, and its digest."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .cache import atomic_path
from .data_index import DataIndex, split_code
from .errors import DataError
from .subset import Subset


@dataclasses.dataclass(frozen=True, eq=False)
class Manifest:
    """Sorted training sample indices, their new labels, the new classes and the source→new class map."""

    source: str
    source_fingerprint: str
    policy: str
    seed: int
    samples: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    class_names: tuple[str, ...]
    source_classes: tuple[str, ...]
    class_map: np.ndarray

    @classmethod
    def from_subset(cls, subset: Subset, source: str, source_fingerprint: str, policy: str, seed: int) -> "Manifest":
        """Freeze a subset into a manifest."""
        return cls(source, source_fingerprint, policy, seed, subset.samples.astype(np.int64), subset.labels.astype(np.int32),
                   subset.classes, subset.class_names, subset.index.classes, subset.class_map.astype(np.int32))

    @property
    def num_classes(self) -> int:
        """Number of new classes."""
        return len(self.classes)

    def class_counts(self) -> np.ndarray:
        """Samples per new class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    @property
    def digest(self) -> str:
        """sha256 over source fingerprint, samples, labels, classes and class map: equal digests mean equal training data."""
        h = hashlib.sha256(b"transferlab-manifest-v1\x00" + self.source_fingerprint.encode())
        for a, dtype in ((self.samples, "<i8"), (self.labels, "<i4"), (self.class_map, "<i4")):
            h.update(len(a).to_bytes(8, "little") + np.ascontiguousarray(a, dtype=dtype).tobytes())
        h.update(json.dumps([self.classes, self.class_names, self.source_classes]).encode())
        return h.hexdigest()

    def split(self, index: DataIndex, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Samples of another split (e.g. val) whose source class is kept, with their new labels."""
        samples = np.flatnonzero((index.splits == split_code(split)) & (self.class_map[index.labels] >= 0))
        return samples, self.class_map[index.labels[samples]]

    def summary(self) -> dict[str, Any]:
        """What a person wants to see: sizes, per-class counts, the class mapping, the digest."""
        counts = self.class_counts()
        return {
            "source": self.source,
            "policy": self.policy,
            "seed": self.seed,
            "digest": self.digest,
            "num_samples": int(len(self.samples)),
            "num_classes": self.num_classes,
            "classes": [{"id": c, "name": n, "count": int(k)} for c, n, k in zip(self.classes, self.class_names, counts)],
            "class_map": {src: self.classes[new] for src, new in zip(self.source_classes, self.class_map.tolist()) if new >= 0},
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `manifest.json` (summary) and `manifest.npz` (arrays) into `folder`."""
        folder = Path(folder)
        with atomic_path(folder / "manifest.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, samples=self.samples, labels=self.labels, class_map=self.class_map)
        meta = self.summary() | {"source_fingerprint": self.source_fingerprint, "class_names": self.class_names, "source_classes": self.source_classes}
        with atomic_path(folder / "manifest.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        return folder / "manifest.json"

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Manifest":
        """Read a saved manifest and check its digest."""
        folder = Path(folder)
        meta = json.loads((folder / "manifest.json").read_text())
        with np.load(folder / "manifest.npz", allow_pickle=False) as z:
            manifest = cls(meta["source"], meta["source_fingerprint"], meta["policy"], meta["seed"], z["samples"], z["labels"],
                           tuple(c["id"] for c in meta["classes"]), tuple(meta["class_names"]), tuple(meta["source_classes"]), z["class_map"])
        if manifest.digest != meta["digest"]:
            raise DataError(f"manifest in {folder} is corrupt: its digest does not match its contents")
        return manifest
