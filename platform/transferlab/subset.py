"""Subset: the working state a policy chain transforms (kept samples, current classes), and its seeded keys."""

import dataclasses
import decimal
import difflib
import hashlib
from collections.abc import Sequence

import numpy as np

from .data_index import DataIndex
from .errors import PolicyError, SpecError
from .specs import EXCERPT_CHARS, excerpt


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
        """Same classes, only the given samples (any order); a PolicyError names samples the subset does not keep or repeats."""
        samples = np.sort(np.asarray(samples, dtype=np.int64))
        foreign = samples[~np.isin(samples, self.samples)]
        if len(foreign):
            raise PolicyError(f"keep_samples got {len(foreign)} samples the subset does not keep (another split or a dropped class), "
                              f"such as {', '.join(map(str, foreign[:5].tolist()))}; choose among subset.samples")
        if len(samples) > 1 and (samples[1:] == samples[:-1]).any():
            raise PolicyError("keep_samples got a sample twice")
        return dataclasses.replace(self, samples=samples)

    def keep_classes(self, keep: Sequence[int] | np.ndarray) -> "Subset":
        """Only the given current classes (indices 0..num_classes-1), renumbered in the given order; their samples stay."""
        keep = np.asarray(keep, dtype=np.int64)
        outside = keep[(keep < 0) | (keep >= self.num_classes)]
        if len(outside):
            raise PolicyError(f"keep_classes got class indices outside 0..{self.num_classes - 1}: "
                              f"{', '.join(map(str, outside[:5].tolist()))}")
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

    def drop_source_classes(self, drop: Sequence[int] | np.ndarray) -> "Subset":
        """Without the given source classes (source label numbers): their samples go, and so does every current class
        left with no source class; the other current classes keep their ids and order (a merged class keeps the rest)."""
        drop = np.asarray(drop, dtype=np.int64)
        outside = drop[(drop < 0) | (drop >= len(self.class_map))]
        if len(outside):
            raise PolicyError(f"drop_source_classes got source labels outside 0..{len(self.class_map) - 1}: "
                              f"{', '.join(map(str, outside[:5].tolist()))}")
        class_map = self.class_map.copy()
        class_map[drop] = -1
        samples = self.samples[class_map[self.index.labels[self.samples]] >= 0]
        thinned = dataclasses.replace(self, samples=samples, class_map=class_map)
        return thinned.keep_classes(np.unique(class_map[class_map >= 0]))

    def unknown_classes(self, unknown: list) -> str:
        """The message for classes not found: a did-you-mean per misspelt one (ids and names), else some of the classes."""
        known = list(dict.fromkeys([*self.classes, *self.class_names]))
        close = {w: difflib.get_close_matches(w, known, n=3, cutoff=0.6) for w in unknown[:10] if isinstance(w, str) and len(w) <= EXCERPT_CHARS}
        hints = [f"for {w!r}, did you mean {' or '.join(map(repr, c))}?" for w, c in close.items() if c]
        listed = f"classes include {', '.join(self.classes[:10])}" + (" ..." if self.num_classes > 10 else "")
        return f"no current class named {', '.join(excerpt(w) if isinstance(w, str) else repr(w) for w in unknown[:10])}; " + (" ".join(hints) if hints else listed)

    def find_classes(self, wanted: Sequence[str | int]) -> list[int]:
        """Current class indices of the wanted classes: an int is a source label number (its source class's current class),
        a string is a current class id, or else a current class name; a name shared by several classes is an error."""
        by_id = {c: i for i, c in enumerate(self.classes)}
        by_name: dict[str, list[int]] = {}
        for i, n in enumerate(self.class_names):
            by_name.setdefault(n, []).append(i)
        found, unknown = [], []
        for w in wanted:
            if isinstance(w, (int, np.integer)):
                label = self.class_map[w] if 0 <= w < len(self.class_map) else -1
                (found.append(int(label)) if label >= 0 else unknown.append(w))
            elif w in by_id:
                found.append(by_id[w])
            elif len(by_name.get(w, ())) == 1:
                found.append(by_name[w][0])
            elif w in by_name:
                raise PolicyError(f"the name {w!r} is shared by {len(by_name[w])} classes; name one by id: "
                                  f"{', '.join(repr(self.classes[i]) for i in by_name[w][:10])}")
            else:
                unknown.append(w)
        if unknown:
            raise PolicyError(self.unknown_classes(unknown))
        return found


MAX_SEED = 2**63 - 1  # seeds fit a signed 64-bit integer (numpy and torch seed from one)
EXACT_FLOAT = 2**53  # above it not every whole number is a float: a float seed there may already be rounded


def seed_value(value: object) -> int:
    """A seed as an int in 0..2**63-1: an int, a float below 2**53 that is a whole number (1.0, as MLflow Projects pass
    them), or text of a whole number (read exactly, so '9007199254740993' and '1e3' are never rounded)."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer() and abs(value) < EXACT_FLOAT:
        number = int(value)
    elif isinstance(value, str):
        number = whole_number(value)
    if number is None or not 0 <= number <= MAX_SEED:
        shown = repr(value) if not isinstance(value, int) or abs(value) <= MAX_SEED else f"an integer of {value.bit_length()} bits"
        raise SpecError(f"seed must be a whole number >= 0 below 2**63 (such as 0, 1 or 1.0; floats only below 2**53, where they "
                        f"are exact), got {shown[:80]}")
    return number


def whole_number(text: str) -> int | None:
    """The whole number a text spells exactly ('12', '1.0', '1e3'), else None; never rounded through a float."""
    try:
        number = decimal.Decimal(text.strip())
    except (decimal.InvalidOperation, ValueError):
        return None
    if number.is_zero():
        return 0
    if not number.is_finite() or number.adjusted() > 19 or number != number.to_integral_value():
        return None  # adjusted() > 19: over 2**63 whatever the digits; checked first so that '1e999999999' costs nothing
    return int(number)


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
