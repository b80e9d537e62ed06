"""The training recipe of a pretraining run: optimizer, schedule, length, resolution, device."""

import dataclasses
from typing import Literal

from .components import Component
from .errors import SpecError

DEFAULT_EPOCHS = 3  # the length when neither epochs nor steps is given
# Bounds that refuse rates no float32 network can hold (3.4e38 is float32's largest number: a larger lr is inf in the
# optimizer's arithmetic). A merely too high rate (lr=1e10) is valid input: it runs, and the loop stops it as diverged
# with a message saying so. Weight decay above 1 is far beyond any recipe (5e-4 for SGD, 0.05 for AdamW): a typo.
MAX_LR = 3.4e38
MAX_WEIGHT_DECAY = 1.0
# Upper bounds far beyond any real recipe (ImageNet trains 90 to 600 epochs, 10**6 steps at most), so that a typo or an
# overflowing number is refused at parse time instead of becoming a run that never ends or never fits in memory.
LIMITS = {"epochs": 100_000, "steps": 100_000_000, "batch_size": 1 << 20}


@dataclasses.dataclass(frozen=True)
class Training(Component):
    """How to pretrain: length in epochs or optimizer steps (at most one; neither means 3 epochs), optimizer, schedule,
    resolution, device.

    `momentum` is SGD's (nesterov); AdamW keeps its default betas. Weight decay applies to weight matrices and kernels
    only, not to norms and biases (parameters with ndim ≤ 1); fine-tuning follows the same rule. `schedule='step'`
    multiplies the rate by 0.1 at 50% and 75% of the steps after warmup; `warmup` is a fraction of all steps. With
    `steps`, val top-1 and a checkpoint come every whole number of epochs covering ≥ 1/20 of the steps, and at the end.
    `device_share` caps the device memory a resident subset may take before batches stream from the image cache instead."""

    kind = "training"
    name = "train"
    epochs: int | None = None  # None: DEFAULT_EPOCHS unless steps is given (set in __post_init__, so specs and run keys show 3)
    steps: int | None = None
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step"] = "cosine"
    warmup: float = 0.05
    label_smoothing: float = 0.1
    resolution: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    device_share: float = 0.5

    def __post_init__(self):
        if self.epochs is None and self.steps is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)
        super().__post_init__()

    def validate(self):
        if (self.epochs is None) == (self.steps is None):
            raise SpecError(f"train: give exactly one of epochs or steps (neither means epochs={DEFAULT_EPOCHS}), got epochs={self.epochs}, steps={self.steps}")
        if (self.epochs if self.epochs is not None else self.steps + 1) < 1:
            raise SpecError("train: epochs must be at least 1, steps at least 0 (steps=0 keeps the random initial weights)")
        for field, most in LIMITS.items():
            if (getattr(self, field) or 0) > most:
                raise SpecError(f"train: {field} must be at most {most:,}, got {getattr(self, field):,}")
        if self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise SpecError("train: needs batch_size >= 1, lr > 0, weight_decay >= 0 and 0 <= momentum < 1")
        if not 0 < self.lr <= MAX_LR or not 0 <= self.weight_decay <= MAX_WEIGHT_DECAY:
            raise SpecError(f"train: lr must lie in (0, {MAX_LR:g}] and weight_decay in [0, {MAX_WEIGHT_DECAY:g}], got lr={self.lr}, "
                            f"weight_decay={self.weight_decay}")
        if not 0 <= self.warmup < 1 or not 0 <= self.label_smoothing < 1:
            raise SpecError("train: warmup (a fraction of all steps) and label_smoothing must lie in [0, 1)")
        if not 8 <= self.resolution <= 1024:
            raise SpecError(f"train: resolution must lie in 8..1024 pixels, got {self.resolution}")
        if not 0 < self.device_share <= 1:
            raise SpecError(f"train: device_share (the share of device memory a resident subset may use) must lie in (0, 1], got {self.device_share}")

    @property
    def length(self) -> str:
        """Which length is held fixed: 'epochs' or 'steps' (studies must know)."""
        return "epochs" if self.epochs is not None else "steps"

    def steps_per_epoch(self, images: int) -> int:
        """Optimizer steps of one epoch over `images` training images: whole batches only (a last partial batch would give
        a noisy step, or a batch of one); a subset smaller than a batch is one batch of all of it."""
        return images // self.batch_size if images >= self.batch_size else 1

    def total_steps(self, images: int) -> int:
        """Optimizer steps of the whole run on `images` training images."""
        return self.steps if self.length == "steps" else self.epochs * self.steps_per_epoch(images)
