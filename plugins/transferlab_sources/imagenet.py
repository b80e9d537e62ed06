"""ImageNet ILSVRC-2012 in its usual layout: root/train/<wnid>/*.JPEG and root/val, in wnid folders or flat with the devkit's labels
(or with Kaggle's LOC_val_solution.csv, whose archive has root = ILSVRC/Data/CLS-LOC).

ImageNet's val set is our *test* split (as in the paper, which reports on it); a `val_fraction` of each class's training
images can be carved off as our val split for model selection. The default carves none, so that "all images per class"
means all of ImageNet's training images.
"""

import csv
import dataclasses
import importlib.util
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from transferlab import MAX_LISTED, ClassTree, DataError, DataIndex, FileSource, cache_key, check_val_fraction, listing, split_code

from .image_folder import Folder, cached_index, class_folders, file_stamps, folder_stamps, index_files, list_files, load_files, scan

INDEX_CACHE_VERSION = "imagenet-index-v3"  # v3: copies of a file dropped
DEVKIT = "ILSVRC2012_devkit_t12"
META = f"{DEVKIT}/data/meta.mat"
GROUND_TRUTH = f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt"
SOLUTION = "LOC_val_solution.csv"  # Kaggle's val labels: ImageId,PredictionString (the wnid, then boxes)
SOLUTION_PLACES = tuple("../" * up + SOLUTION for up in range(4))  # relative to root: root itself and up to three folders above
NEEDS_LABELS = ("the labels of a flat val folder come from the ILSVRC-2012 devkit (unpack ILSVRC2012_devkit_t12.tar.gz into the "
                f"root) or from Kaggle's {SOLUTION} (in the root or up to three folders above it)")
VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
PREPARE = ("torchvision prepares this layout from the ILSVRC-2012 archives, which must be downloaded by hand from "
           "image-net.org into root (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz): "
           "torchvision.datasets.ImageNet(root, split='train') and torchvision.datasets.ImageNet(root, split='val')")


@cache
def imagenet_lemmas() -> dict[str, str]:
    """First lemma of every ImageNet-21k synset, from timm's bundled table (read without importing timm and torch)."""
    timm = importlib.util.find_spec("timm")
    if timm is None:
        raise DataError("ImageNet class names come from timm's bundled synset table, but timm is not installed")
    path = Path(timm.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synset_to_lemma.txt"
    rows = (line.split("\t", 1) for line in path.read_text().splitlines() if "\t" in line)
    return {wnid: lemmas.split(",")[0].strip() for wnid, lemmas in rows}


def wnid_names(wnids: Sequence[str], folder: Path) -> list[str]:
    """First lemmas of the class folders' wnids; a DataError names the folders that are not ImageNet wnids."""
    lemmas = imagenet_lemmas()
    unknown = [w for w in wnids if w not in lemmas]
    if unknown:
        more = f" and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
        raise DataError(f"{folder}: class folders must be named by ImageNet wnids (such as n01440764); "
                        f"these are not: {', '.join(unknown[:MAX_LISTED])}{more}")
    return [lemmas[w] for w in wnids]


def read_meta(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the leaf synsets (num_children 0) in the devkit's meta.mat, read as torchvision reads it."""
    try:
        import scipy.io
    except ImportError:
        raise DataError(f"reading {path} needs scipy (pip install scipy)") from None
    try:
        synsets = scipy.io.loadmat(path, squeeze_me=True).get("synsets")
    except Exception as exc:  # scipy raises several types for files that are not MATLAB files
        raise DataError(f"cannot read {path} as a MATLAB file: {exc}") from None
    fields = ("ILSVRC2012_ID", "WNID", "num_children")
    if synsets is None or not set(fields) <= set(synsets.dtype.names or ()):
        raise DataError(f"{path} has no 'synsets' struct array with fields {', '.join(fields)}; is it the ILSVRC-2012 devkit's meta.mat?")
    synsets = np.atleast_1d(synsets)
    return {int(i): str(w) for i, w, n in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"]) if int(n) == 0}


def read_ground_truth(path: Path) -> list[int]:
    """The ILSVRC2012_ID of val image k on line k of the devkit's ground-truth file."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {NEEDS_LABELS}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    bad = next((k for k, line in enumerate(lines, 1) if not line.strip().isdigit()), None)
    if bad is not None:
        raise DataError(f"{path}: line {bad} is {lines[bad - 1]!r}, not an ILSVRC2012_ID")
    return [int(line) for line in lines]


def val_wnid(name: str, truth: Sequence[int], wnid_of_id: dict[int, str]) -> tuple[str | None, str | None]:
    """The wnid of flat val image ILSVRC2012_val_<k>.JPEG (line k of the ground truth, through meta.mat), or None and why."""
    match = VAL_FILE.fullmatch(name)
    if not match:
        return None, "not named ILSVRC2012_val_<8 digits>.JPEG"
    k = int(match[1])
    if not 1 <= k <= len(truth):
        return None, f"the ground truth has {len(truth)} lines, none for image {k}"
    if truth[k - 1] not in wnid_of_id:
        return None, f"its ILSVRC2012_ID {truth[k - 1]} is no leaf synset in {META}"
    return wnid_of_id[truth[k - 1]], None


def read_solution(path: Path) -> dict[str, str]:
    """ImageId -> wnid from Kaggle's LOC_val_solution.csv (`ImageId,PredictionString`, the wnid first in PredictionString)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not rows or rows[0][:2] != ["ImageId", "PredictionString"]:
        raise DataError(f"{path}: the first line is {','.join(rows[0]) if rows else ''!r}, not 'ImageId,PredictionString'")
    bad = next((k for k, row in enumerate(rows[1:], 2) if len(row) < 2 or not row[1].split()), None)
    if bad is not None:
        raise DataError(f"{path}: line {bad} is {','.join(rows[bad - 1])!r}, not ImageId,<wnid> <boxes>")
    return {row[0]: row[1].split()[0] for row in rows[1:]}


def solution_wnid(name: str, wnid_of_image: dict[str, str]) -> tuple[str | None, str | None]:
    """The wnid of flat val image <ImageId>.JPEG by Kaggle's solution file, or None and why."""
    image_id = name.rsplit(".", 1)[0]
    if image_id not in wnid_of_image:
        return None, f"{SOLUTION} has no row for {image_id}"
    return wnid_of_image[image_id], None


@dataclasses.dataclass(frozen=True)
class ImageNet(FileSource):
    """ImageNet ILSVRC-2012 (root/train/<wnid>/*.JPEG, root/val): its val set is our test split; val_fraction carves val from train."""

    name = "imagenet"
    location_params = ("root", "corrupt")  # skipped files are recorded in the index itself
    val_fraction: float = 0.0
    corrupt: Literal["error", "skip"] = "error"

    def validate(self) -> None:
        """val_fraction must lie in [0, 1); root/train and root/val must be folders."""
        check_val_fraction(self.name, self.val_fraction)
        self.check_root(f"expected root/train/<wnid>/*.JPEG and root/val. {PREPARE}")
        missing = [str(self.path / split) for split in ("train", "val") if not (self.path / split).is_dir()]
        if missing:
            raise DataError(f"imagenet: no folder {' or '.join(missing)}; expected root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG "
                            f"(or root/val/*.JPEG labelled by {DEVKIT} in root or by Kaggle's {SOLUTION}). {PREPARE}")

    def build_index(self) -> DataIndex:
        """The index of train and val, reloaded from the cache while no class folder and no label file has changed."""
        stamps = folder_stamps(self.path, "train", 1) + folder_stamps(self.path, "val", 1)
        stamps += file_stamps(self.path, [META, GROUND_TRUTH, *SOLUTION_PLACES])
        key = cache_key(INDEX_CACHE_VERSION, self.path, self.val_fraction, self.corrupt, stamps)
        return cached_index(self.name, key, self.index_folders)

    def index_folders(self) -> DataIndex:
        """Scan train and val, label every file, read every header (see `index_files`)."""
        folders = scan(self.path, "train") | scan(self.path, "val")
        train = class_folders(folders, "train", self.path)
        classes = sorted(train)
        names = wnid_names(classes, self.path / "train")
        if folders["val"].subfolders:
            paths, labels, splits = list_files({"train": train, "test": self.val_folders(folders, classes)}, folders, classes)
        else:
            paths, labels, splits = list_files({"train": train}, folders, classes)
            val_paths, val_labels = self.flat_val(folders["val"], classes)
            paths += val_paths
            labels = np.concatenate([labels, val_labels])
            splits = np.concatenate([splits, np.full(len(val_labels), split_code("test"), dtype=np.uint8)])
        return index_files(self.path, paths, labels, splits, classes, names, self.corrupt, self.val_fraction)

    def val_folders(self, folders: dict[str, Folder], classes: Sequence[str]) -> dict[str, str]:
        """val/<wnid> class folders; a DataError names those whose class has no train folder."""
        val = class_folders(folders, "val", self.path)
        unknown = sorted(set(val) - set(classes))
        if unknown:
            raise DataError(f"{self.path / 'val'}: classes missing from train/: {', '.join(unknown)}")
        return val

    def flat_val(self, val: Folder, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Paths and labels of val/ILSVRC2012_val_<k>.JPEG by the devkit or Kaggle's solution file; a DataError lists every file it cannot label."""
        if not val.images:
            return [], np.zeros(0, dtype=np.int32)
        wnid_of, labels_file = self.val_labeller()
        label_of = {c: i for i, c in enumerate(classes)}
        labels, problems = [], []
        for name in val.images:
            wnid, problem = wnid_of(name)
            if wnid is not None and wnid not in label_of:
                problem = f"its class {wnid} has no folder in train/"
            if problem:
                problems.append((name, problem))
            else:
                labels.append(label_of[wnid])
        if problems:
            raise DataError(f"cannot label {len(problems)} images in {self.path / 'val'} from {labels_file}:\n{listing(problems)}")
        return [f"val/{name}" for name in val.images], np.array(labels, dtype=np.int32)

    def val_labeller(self) -> tuple[Callable[[str], tuple[str | None, str | None]], str]:
        """The wnid (or why none) of a flat val image, by the devkit in root, else by the nearest LOC_val_solution.csv; and the file used."""
        if (self.path / META).is_file():
            wnid_of_id, truth = read_meta(self.path / META), read_ground_truth(self.path / GROUND_TRUTH)
            return (lambda name: val_wnid(name, truth, wnid_of_id)), GROUND_TRUTH
        solution = next(((self.path / p).resolve() for p in SOLUTION_PLACES if (self.path / p).is_file()), None)
        if solution is None:
            raise DataError(f"{self.path / META} is missing: {NEEDS_LABELS}")
        wnid_of_image = read_solution(solution)
        return (lambda name: solution_wnid(name, wnid_of_image)), str(solution)

    def build_tree(self) -> ClassTree:
        """WordNet's first-hypernym tree over the wnids (needs the transferlab_wordnet plugin and WordNet 3.0)."""
        from transferlab_wordnet import wordnet_tree

        return wordnet_tree(self.index.classes)

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """Decode the samples' JPEGs to RGB; every failure is reported in one DataError."""
        return load_files(self.path, self.index, samples, size)
