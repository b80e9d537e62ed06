"""Backbones: the Backbone base class; builders return a torch module with timm's feature/head interface."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from .components import Component
from .errors import SpecError

if TYPE_CHECKING:  # torch loads only when a network is built, keeping the CLI's start fast
    import torch

    from .training_spec import Training


@dataclasses.dataclass(frozen=True)
class Backbone(Component):
    """Builds a randomly initialised network; features are the pooled penultimate activations."""

    kind = "backbone"

    def check(self, training: Training) -> None:
        """Refuse, with a SpecError saying what to change, a training recipe this network cannot follow; called before any
        run is made. The default builds the network and passes one image of `training.resolution` pixels through it."""
        check_resolution(self, training.resolution)

    def build(self, num_classes: int, resolution: int) -> torch.nn.Module:
        """A new network with a `num_classes`-way head for `resolution`-pixel inputs."""
        raise NotImplementedError(f"backbone {self.name} does not implement build()")

    def build_seeded(self, num_classes: int, resolution: int, seed: int) -> torch.nn.Module:
        """`build` with torch's generator seeded from the run's seed: the same seed gives the same initial weights anywhere."""
        from .devices import seeded

        with seeded(seed, "init"):
            return self.build(num_classes, resolution)

    def features(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features [B, D] of normalised images [B, 3, H, W]."""
        return model.forward_head(model.forward_features(images), pre_logits=True)

    def feature_dim(self, model: torch.nn.Module) -> int:
        """Width D of `features`: timm's `head_hidden_size` where the head has a hidden layer (MobileNetV3's conv_head), else `num_features`."""
        return int(getattr(model, "head_hidden_size", None) or model.num_features)

    def reset_head(self, model: torch.nn.Module, num_classes: int) -> torch.nn.Module:
        """The same network with a new, freshly initialised `num_classes`-way head."""
        model.reset_classifier(num_classes)
        return model


@functools.cache
def check_resolution(backbone: Backbone, resolution: int) -> None:
    """Refuse a network that cannot take `resolution`-pixel images (it downsamples them to nothing, or wants another size):
    a dry forward pass of one image on the CPU, before any run is made (once per backbone and resolution)."""
    import torch

    model = backbone.build_seeded(2, resolution, 0).eval()  # seeded: the caller's random state is left as it was
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution))
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
        why = " ".join(str(exc).split())[:160]
        raise SpecError(f"backbone {backbone.spec()} cannot take {resolution} px images: a forward pass of one fails "
                        f"({type(exc).__name__}: {why}); it downsamples too often for that size (or wants another one): train at a "
                        "larger resolution, or pick a network that downsamples less") from None
