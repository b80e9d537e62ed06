"""DataIndex: a source's samples as numpy arrays (label, split, optional file path per sample) and a digest of their content."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .cache import atomic_path
from .errors import DataError

SPLITS = ("train", "val", "test")


def split_code(name: str) -> int:
    """Numeric code of a split name."""
    if name not in SPLITS:
        raise DataError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
    return SPLITS.index(name)


@dataclasses.dataclass(frozen=True, eq=False)
class DataIndex:
    """Samples of a source; sample i is row i of every array. Files, when present, are `folders[folder_ids[i]]/files[i]`."""

    labels: np.ndarray
    splits: np.ndarray
    classes: tuple[str, ...]
    class_names: tuple[str, ...]
    files: np.ndarray | None = None
    folder_ids: np.ndarray | None = None
    folders: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    content: str = ""  # digest of what the pixels are (file sizes and mtimes, or a hash of pixel arrays); "" if unknown
    duplicates: tuple[str, ...] = ()  # files left out as copies of an indexed one, each as "dropped = kept"

    def __post_init__(self):
        n = len(self.labels)
        object.__setattr__(self, "labels", np.ascontiguousarray(self.labels, dtype=np.int32))
        object.__setattr__(self, "splits", np.ascontiguousarray(self.splits, dtype=np.uint8))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(self.splits) != n:
            raise DataError(f"index has {n} labels but {len(self.splits)} split codes")
        if len(self.class_names) != len(self.classes):
            raise DataError(f"index has {len(self.classes)} classes but {len(self.class_names)} class names")
        if len(set(self.classes)) != len(self.classes):
            raise DataError("index class ids are not unique")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"index labels must lie in [0, {len(self.classes)})")
        if n and self.splits.max() >= len(SPLITS):
            raise DataError(f"index split codes must lie in [0, {len(SPLITS)})")
        if (self.files is None) != (self.folder_ids is None):
            raise DataError("index files and folder ids go together")
        if self.files is not None and (len(self.files) != n or len(self.folder_ids) != n):
            raise DataError("index files and folder ids need one entry per sample")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays and class lists."""
        arrays = [a for a in (self.labels, self.splits, self.files, self.folder_ids) if a is not None]
        strings = self.classes + self.class_names + self.folders + self.skipped + self.duplicates
        return sum(a.nbytes for a in arrays) + sum(len(s) for s in strings)

    def path(self, i: int) -> str:
        """Relative path of sample i."""
        if self.files is None:
            raise DataError("this index has no files: its samples live in the source's arrays")
        folder = self.folders[self.folder_ids[i]]
        name = os.fsdecode(self.files[i])
        return f"{folder}/{name}" if folder else name

    def split_samples(self, split: str) -> np.ndarray:
        """Sorted sample indices of one split."""
        return np.flatnonzero(self.splits == split_code(split))

    def class_counts(self, split: str | None = None) -> np.ndarray:
        """Samples per class, in one split or overall."""
        labels = self.labels if split is None else self.labels[self.splits == split_code(split)]
        return np.bincount(labels, minlength=self.num_classes)

    def fingerprint(self) -> str:
        """sha256 over every array and list: equal fingerprints mean equal indexes."""
        h = hashlib.sha256(b"transferlab-index-v2")
        for a in (self.labels, self.splits, self.files, self.folder_ids):
            h.update(b"-" if a is None else a.tobytes())
        listed = [self.classes, self.class_names, self.folders, self.skipped, self.content]
        h.update(json.dumps(listed + [list(self.duplicates)] if self.duplicates else listed).encode())  # none: fingerprints as before
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as an uncompressed .npz (loads in milliseconds)."""
        arrays = {"labels": self.labels, "splits": self.splits}
        if self.files is not None:
            arrays.update(files=self.files, folder_ids=self.folder_ids)
        meta = {"classes": self.classes, "class_names": self.class_names, "folders": self.folders, "skipped": self.skipped,
                "content": self.content, "duplicates": self.duplicates}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DataIndex":
        """Read an index written by `save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            return cls(
                labels=z["labels"], splits=z["splits"],
                files=z["files"] if "files" in z else None,
                folder_ids=z["folder_ids"] if "folder_ids" in z else None,
                classes=tuple(meta["classes"]), class_names=tuple(meta["class_names"]),
                folders=tuple(meta["folders"]), skipped=tuple(meta["skipped"]), content=meta.get("content", ""),
                duplicates=tuple(meta.get("duplicates", ())),
            )
