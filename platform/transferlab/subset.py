"""Subset: the working state a policy chain transforms (kept samples, current classes), and its seeded keys."""

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from .data_index import DataIndex
from .errors import PolicyError


@dataclasses.dataclass(frozen=True, eq=False)
class Subset:
    """Kept sample indices (sorted) and the map from each source class to a current class (-1 = dropped)."""

    index: DataIndex
    samples: np.ndarray
    class_map: np.ndarray
    classes: tuple[str, ...]
    class_names: tuple[str, ...]

    @classmethod
    def full(cls, index: DataIndex, split: str = "train") -> "Subset":
        """Every sample of one split, with the source's classes."""
        return cls(index, index.split_samples(split), np.arange(index.num_classes, dtype=np.int32), index.classes, index.class_names)

    @property
    def labels(self) -> np.ndarray:
        """Current class of every kept sample."""
        return self.class_map[self.index.labels[self.samples]]

    @property
    def num_classes(self) -> int:
        """Number of current classes."""
        return len(self.classes)

    def class_counts(self) -> np.ndarray:
        """Kept samples per current class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def keep_samples(self, samples: np.ndarray) -> "Subset":
        """Same classes, only the given samples (any order; must already be kept)."""
        return dataclasses.replace(self, samples=np.sort(np.asarray(samples, dtype=np.int64)))

    def keep_classes(self, keep: Sequence[int] | np.ndarray) -> "Subset":
        """Only the given current classes, renumbered in the given order; their samples stay."""
        keep = np.asarray(keep, dtype=np.int64)
        if len(np.unique(keep)) != len(keep):
            raise PolicyError("a class was selected twice")
        new_of_current = np.full(self.num_classes, -1, dtype=np.int32)
        new_of_current[keep] = np.arange(len(keep), dtype=np.int32)
        return self.relabel(new_of_current, [self.classes[k] for k in keep], [self.class_names[k] for k in keep])

    def relabel(self, new_of_current: Sequence[int] | np.ndarray, classes: Sequence[str], class_names: Sequence[str]) -> "Subset":
        """Map every current class to a new class (merging classes; -1 drops one); samples of dropped classes go."""
        new_of_current = np.asarray(new_of_current, dtype=np.int32)
        if len(new_of_current) != self.num_classes:
            raise PolicyError(f"relabel needs one new class per current class ({self.num_classes}), got {len(new_of_current)}")
        if len(classes) != len(class_names) or new_of_current.max(initial=-1) >= len(classes):
            raise PolicyError("relabel refers to a new class that is not listed")
        if len(set(classes)) != len(classes):
            raise PolicyError("relabel would create two classes with the same id")
        mapping = np.append(new_of_current, np.int32(-1))  # slot -1 keeps dropped classes dropped
        class_map = mapping[self.class_map]
        samples = self.samples[class_map[self.index.labels[self.samples]] >= 0]
        return dataclasses.replace(self, samples=samples, class_map=class_map, classes=tuple(classes), class_names=tuple(class_names))

    def find_classes(self, wanted: Sequence[str | int]) -> list[int]:
        """Current class indices for ids, names or source label numbers; unknown ones are an error naming them."""
        by_key = {c: i for i, c in enumerate(self.classes)} | {n: i for i, n in enumerate(self.class_names)}
        found, unknown = [], []
        for w in wanted:
            if isinstance(w, int):
                label = self.class_map[w] if 0 <= w < len(self.class_map) else -1
                (found.append(int(label)) if label >= 0 else unknown.append(w))
            elif w in by_key:
                found.append(by_key[w])
            else:
                unknown.append(w)
        if unknown:
            raise PolicyError(f"no current class named {', '.join(map(repr, unknown[:10]))}; classes include {', '.join(self.classes[:10])}" + (" ..." if self.num_classes > 10 else ""))
        return found


class Seeds:
    """Deterministic random keys from one seed: the same item always gets the same key, so subsets nest."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def sample_keys(self, samples: np.ndarray) -> np.ndarray:
        """A uint64 key per sample index (splitmix64 of index and seed)."""
        x = np.asarray(samples, dtype=np.uint64) + np.uint64(self._salt("samples"))
        with np.errstate(over="ignore"):
            x = x + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    def class_keys(self, class_ids: Sequence[str]) -> np.ndarray:
        """A uint64 key per class id, independent of which other classes are present."""
        return np.array([self._salt("class", c) for c in class_ids], dtype=np.uint64)

    def generator(self, purpose: str) -> np.random.Generator:
        """A numpy generator for one purpose."""
        return np.random.default_rng(self._salt(purpose))

    def _salt(self, *items: str) -> int:
        digest = hashlib.blake2b("\x1f".join((str(self.seed), *items)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")


def ranks_within_class(labels: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order samples by (class, key); return that order and each ordered sample's rank inside its class."""
    order = np.lexsort((keys, labels))
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order, np.arange(len(order)) - group_start
