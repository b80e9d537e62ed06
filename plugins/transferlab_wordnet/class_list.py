"""Class lists without images (ImageNet-1k, -21k, ... from timm's bundled files): one pseudo-sample per class."""

import dataclasses
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np

from transferlab import ClassTree, DataError, DataIndex, Source, SpecError, excerpt

from .hierarchy import lemma_name, wordnet_tree

# Name -> wnid list bundled with timm (timm/data/_info), one wnid per line in the dataset's class order.
CLASS_LISTS = {
    "imagenet-1k": "imagenet_synsets.txt",
    "imagenet-21k": "imagenet21k_goog_synsets.txt",
    "imagenet-22k": "imagenet22k_synsets.txt",
    "imagenet-12k": "imagenet12k_synsets.txt",
    "imagenet-21k-miil": "imagenet21k_miil_synsets.txt",
    "imagenet-a": "imagenet_a_synsets.txt",
    "imagenet-r": "imagenet_r_synsets.txt",
    "mini-imagenet": "mini_imagenet_synsets.txt",
}


def read_wnids(name: str) -> list[str]:
    """The wnids of a named class list, or of a text file whose lines start with a wnid."""
    try:
        path = timm_info(CLASS_LISTS[name]) if name in CLASS_LISTS else Path(name).expanduser()
        text = path.read_text()
    except (OSError, ValueError, RuntimeError) as exc:  # ValueError: not UTF-8 text, or a NUL in the path; RuntimeError: ~user unknown
        raise DataError(f"class list {excerpt(name)} cannot be read: {exc}") from None
    wnids = [line.split()[0] for line in text.splitlines() if line.strip()]
    repeated = sorted(w for w, n in Counter(wnids).items() if n > 1)
    if repeated:
        raise DataError(f"class list {name!r} repeats {', '.join(repeated[:5])}")
    return wnids


def timm_info(file: str) -> Path:
    """A table bundled in timm/data/_info, found without importing timm (which imports torch: seconds at start-up)."""
    timm = importlib.util.find_spec("timm")
    if timm is None:
        raise DataError(f"class lists come from timm's bundled tables ({file}), but timm is not installed")
    return Path(timm.submodule_search_locations[0]) / "data" / "_info" / file


@dataclasses.dataclass(frozen=True)
class ClassList(Source):
    """The classes of a wnid-labelled dataset without its images (for class policies and trees): one sample per class."""

    name = "class_list"
    has_images = False
    dataset: str  # a name in CLASS_LISTS, or a .txt file of wnids (the field cannot be called `name`: that is the component's)

    def validate(self):
        if self.dataset not in CLASS_LISTS and not self.dataset.endswith(".txt"):
            raise SpecError(f"class_list: unknown dataset {self.dataset!r}; known: {', '.join(CLASS_LISTS)}, or a path to a .txt file with one wnid per line")

    def build_index(self) -> DataIndex:
        """Class ids are the wnids, names their first lemmas; sample i is class i, in the train split."""
        wnids = read_wnids(self.dataset)
        return DataIndex(np.arange(len(wnids)), np.zeros(len(wnids)), tuple(wnids), tuple(map(lemma_name, wnids)))

    def build_tree(self) -> ClassTree:
        return wordnet_tree(self.index.classes)

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        raise DataError(f"{self.spec()} is a class list: a class list has no images")
