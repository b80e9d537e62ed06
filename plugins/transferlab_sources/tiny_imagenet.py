"""Tiny-ImageNet-200: 200 ImageNet classes at 64×64 (wnids.txt, words.txt, train/<wnid>/images, val/val_annotations.txt).

Its labelled val set is our test split (its test images carry no labels and are ignored); our val split is carved from
train. torchvision has no Tiny-ImageNet downloader: unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip and pass the
tiny-imagenet-200 folder as root.
"""

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from transferlab import ClassTree, DataError, DataIndex, FileSource, cache_key, check_val_fraction, listing, split_code

from .image_folder import Folder, cached_index, file_stamps, folder_stamps, index_files, list_files, load_files, scan

INDEX_CACHE_VERSION = "tiny_imagenet-index-v3"  # v3: copies of a file dropped
WNIDS, WORDS, ANNOTATIONS, VAL_IMAGES = "wnids.txt", "words.txt", "val/val_annotations.txt", "val/images"
REQUIRED = (WNIDS, WORDS, "train", VAL_IMAGES, ANNOTATIONS)
HOW_TO_GET = "unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip and pass its tiny-imagenet-200 folder as root"


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a text file; a DataError names the file when it cannot be read."""
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def read_wnids(path: Path) -> list[str]:
    """The sorted class wnids of wnids.txt; a DataError names repeated ones."""
    wnids = [line.strip() for line in read_lines(path)]
    repeated = sorted(w for w, n in Counter(wnids).items() if n > 1)
    if repeated:
        raise DataError(f"{path} lists {', '.join(repeated)} more than once")
    return sorted(wnids)


def read_words(path: Path, wnids: Sequence[str]) -> list[str]:
    """The first name words.txt gives each wnid (`wnid<TAB>name, name, ...`); a DataError names wnids it lacks."""
    names = dict(line.split("\t", 1) for line in read_lines(path) if "\t" in line)
    missing = [w for w in wnids if w not in names]
    if missing:
        raise DataError(f"{path} has no line for {', '.join(missing)}")
    return [names[w].split(",")[0].strip() for w in wnids]


def read_annotations(path: Path, images: Sequence[str], label_of: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """Paths and labels of val/images from val_annotations.txt (`file<TAB>wnid<TAB>box`); a DataError lists every problem."""
    wnid_of, problems = {}, []
    for number, line in enumerate(read_lines(path), 1):
        fields = line.split("\t")
        where = f"line {number}"
        if len(fields) < 2:
            problems.append((where, f"{line!r} is not file<TAB>wnid<TAB>box"))
        elif fields[1] not in label_of:
            problems.append((where, f"{fields[1]} is not in {WNIDS}"))
        elif fields[0] in wnid_of:
            problems.append((where, f"{fields[0]} is annotated twice"))
        else:
            wnid_of[fields[0]] = fields[1]
    present = set(images)
    problems += [(f"{VAL_IMAGES}/{name}", "annotated, but there is no such image") for name in sorted(set(wnid_of) - present)]
    problems += [(f"{VAL_IMAGES}/{name}", "has no annotation") for name in images if name not in wnid_of]
    if problems:
        raise DataError(f"{path}: {len(problems)} problems:\n{listing(problems)}")
    return [f"{VAL_IMAGES}/{name}" for name in images], np.array([label_of[wnid_of[n]] for n in images], dtype=np.int32)


@dataclasses.dataclass(frozen=True)
class TinyImageNet(FileSource):
    """Tiny-ImageNet-200 (64×64, 200 wnids): its labelled val set is our test split; val_fraction carves val from train."""

    name = "tiny_imagenet"
    location_params = ("root", "corrupt")  # skipped files are recorded in the index itself
    val_fraction: float = 0.1
    corrupt: Literal["error", "skip"] = "error"

    def validate(self) -> None:
        """val_fraction must lie in [0, 1); the root must hold wnids.txt, words.txt, train/, val/images/ and val/val_annotations.txt."""
        check_val_fraction(self.name, self.val_fraction)
        self.check_root(HOW_TO_GET)
        missing = [str(self.path / p) for p in REQUIRED if not (self.path / p).exists()]
        if missing:
            raise DataError(f"tiny_imagenet: missing {', '.join(missing)}; {HOW_TO_GET}")

    def build_index(self) -> DataIndex:
        """The index of train and the labelled val set, reloaded from the cache while no folder and no list has changed."""
        stamps = folder_stamps(self.path, "train", 2) + folder_stamps(self.path, VAL_IMAGES, 0)
        stamps += file_stamps(self.path, [WNIDS, WORDS, ANNOTATIONS])
        key = cache_key(INDEX_CACHE_VERSION, self.path, self.val_fraction, self.corrupt, stamps)
        return cached_index(self.name, key, self.index_folders)

    def index_folders(self) -> DataIndex:
        """Label train images by their folder and val images by the annotations, then read every header (see `index_files`)."""
        classes = read_wnids(self.path / WNIDS)
        names = read_words(self.path / WORDS, classes)
        folders = scan(self.path, "train") | scan(self.path, VAL_IMAGES)
        paths, labels, splits = list_files({"train": self.train_folders(folders, classes)}, folders, classes)
        val_paths, val_labels = read_annotations(self.path / ANNOTATIONS, folders[VAL_IMAGES].images, {c: i for i, c in enumerate(classes)})
        labels = np.concatenate([labels, val_labels])
        splits = np.concatenate([splits, np.full(len(val_labels), split_code("test"), dtype=np.uint8)])
        return index_files(self.path, paths + val_paths, labels, splits, classes, names, self.corrupt, self.val_fraction)

    def train_folders(self, folders: dict[str, Folder], classes: Sequence[str]) -> dict[str, str]:
        """train/<wnid>/images of every class; a DataError names missing or empty ones and folders of unlisted classes."""
        train = {c: f"train/{c}/images" for c in classes}
        empty = [f for f in train.values() if f not in folders or not folders[f].images]
        unlisted = sorted(set(folders["train"].subfolders) - set(classes))
        if empty or unlisted:
            problems = [f"no images in {', '.join(empty)}"] if empty else []
            problems += [f"folders of classes not in {WNIDS}: {', '.join(unlisted)}"] if unlisted else []
            raise DataError(f"tiny_imagenet layout problems under {self.path}: " + "; ".join(problems))
        return train

    def build_tree(self) -> ClassTree:
        """WordNet's first-hypernym tree over the wnids (needs the transferlab_wordnet plugin and WordNet 3.0)."""
        from transferlab_wordnet import wordnet_tree

        return wordnet_tree(self.index.classes)

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """Decode the samples' JPEGs to RGB; every failure is reported in one DataError."""
        return load_files(self.path, self.index, samples, size)
