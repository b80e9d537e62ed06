"""Transfer tasks: the Task base class and the TransferContext every task runs in."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .backbones import Backbone
from .components import Component
from .errors import DataError
from .image_cache import image_cache
from .metric_names import source_label
from .sources import Source

if TYPE_CHECKING:  # torch loads when a context is made, so that listing or parsing tasks (`transferlab plugins`) starts fast
    import torch

CARVED_VAL_FRACTION = 0.2  # share of each class's training images held out as val when the target has no val split
CARVE_SEED = 0  # fixed, so every pretraining run and seed is measured on the same carved split


@dataclasses.dataclass(frozen=True)
class Task(Component):
    """A transfer protocol on a target source: choices made on val, test reported once."""

    kind = "task"

    def check(self, target: Source) -> None:
        """Refuse, with a DataError saying what to change, a target this task cannot run on; called before any run is made,
        so it must be cheap (the target's index only, no image). Most tasks run on any target that has train and test images."""

    def run(self, ctx: "TransferContext") -> dict[str, float]:
        """Metrics by name without prefix, e.g. {'test_top1': 71.2, 'val_top1': 73.0}; accuracies in percent."""
        raise NotImplementedError(f"task {self.name} does not implement run()")


class TransferContext:
    """The target's train/val/test splits, the frozen pretrained model, and its features (extracted once, cached on disk).

    Splits come from the target's index. A target without val images gets one carved from train: a fixed random
    20% of every class with at least two training images (the same for every run and seed); a target without test
    images is refused. With `holdout='val'` (a search's trials, which must never see test) the target's val split
    plays test and a val is carved from the rest of train, so tasks run unchanged and test stays untouched. The
    context moves `model` to `device` and into eval mode; frozen tasks never change it, and fine-tuning works on
    `fresh_model()` copies.
    """

    def __init__(self, target: Source, backbone: Backbone, model: torch.nn.Module, resolution: int, *,
                 device: str | torch.device = "auto", seed: int = 0, batch_size: int = 256, holdout: str = "test",
                 cache_features: bool = True):
        from .devices import prepare, resolve_device

        if holdout not in ("test", "val"):
            raise ValueError(f"holdout is 'test' or 'val', got {holdout!r}")
        self.holdout = holdout
        self.cache_features = cache_features  # off for a model still training (a pruner's probe): its features change
        self.target = target
        self.backbone = backbone
        self.resolution = resolution
        self.device = resolve_device(device)
        self.seed = seed
        self.batch_size = batch_size
        self.model = prepare(model, self.device).eval()
        self._features: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def num_classes(self) -> int:
        """Classes of the target."""
        return self.target.index.num_classes

    @cached_property
    def splits(self) -> dict[str, np.ndarray]:
        """Sorted sample indices of train, val and test (val carved from train when the target has none)."""
        index = self.target.index
        splits = {name: index.split_samples(name) for name in ("train", "val", "test")}
        if not len(splits["train"]):
            raise DataError(f"target {self.target.spec()} has no training images")
        if not len(splits["test"]):
            raise DataError(f"target {self.target.spec()} has no test split: transfer reports accuracy on held-out test images")
        if not len(splits["val"]):
            splits["train"], splits["val"] = carve_val(splits["train"], index.labels[splits["train"]])
        if self.holdout == "val":
            splits["test"] = splits["val"]
            splits["train"], splits["val"] = carve_val(splits["train"], index.labels[splits["train"]])
        return splits

    def samples(self, split: str) -> np.ndarray:
        """Sample indices of a split into the target's index and image cache."""
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; splits are train, val, test")
        return self.splits[split]

    def labels(self, split: str) -> np.ndarray:
        """Class ids (int64) of a split."""
        return self.target.index.labels[self.samples(split)].astype(np.int64)

    @cached_property
    def image_cache(self) -> np.ndarray:
        """Every target image at the pretraining resolution, uint8 [n, R, R, 3] (memory-mapped)."""
        return image_cache(self.target, self.resolution)

    def images(self, split: str) -> np.ndarray:
        """The images of a split, uint8 [n, R, R, 3], read into memory."""
        return np.asarray(self.image_cache[self.samples(split)])

    @cached_property
    def weights_digest(self) -> str:
        """sha256 over the pretrained weights: the model's identity in the feature cache."""
        from .features import weights_digest

        return weights_digest(self.model)

    def features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Frozen penultimate features float32 [n, D] and labels int64 [n] of a split, computed once."""
        if split not in self._features:
            from .features import cached_features

            samples = self.samples(split)
            if self.cache_features:
                key = (self.weights_digest, self.backbone.spec(), self.target.fingerprint, self.resolution,
                       "bf16" if self.device.type == "cuda" else "fp32", hashlib.sha256(samples.astype("<i8").tobytes()).hexdigest())
                x = cached_features(key, lambda: self.extract(samples, split))
            else:  # a model still training (a pruner's probe, often): no progress shown
                x = self.extract(samples)
            self._features[split] = x, self.labels(split)
        return self._features[split]

    def extract(self, samples: np.ndarray, split: str | None = None) -> np.ndarray:
        """Features of the given samples, computed now (no cache); progress shows when the split is named."""
        from .features import extract_features

        what = f"features of {source_label(self.target)} {split}" if split else None
        return extract_features(self.backbone, self.model, self.image_cache, samples, self.device, self.batch_size, what)

    def fresh_model(self, num_classes: int) -> torch.nn.Module:
        """A copy of the pretrained model with a new `num_classes`-way head, on the device, in train mode."""
        from .devices import prepare

        return prepare(self.backbone.reset_head(copy.deepcopy(self.model), num_classes), self.device).train()


def carve_val(train: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split training samples into (train, val): a fixed random CARVED_VAL_FRACTION of each class with >= 2 images."""
    rng = np.random.default_rng(CARVE_SEED)
    val = []
    for c in np.unique(labels):
        members = train[labels == c]
        take = max(1, round(CARVED_VAL_FRACTION * len(members))) if len(members) >= 2 else 0
        val.append(rng.permutation(members)[:take])
    val = np.sort(np.concatenate(val))
    return np.setdiff1d(train, val), val
