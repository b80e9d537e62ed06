"""The `timm` backbone: `timm.create_model(model, pretrained=False, ...)`, with a CIFAR-style stem for small ResNet inputs."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import TYPE_CHECKING, Literal

from transferlab import Backbone, SpecError, Training

if TYPE_CHECKING:
    import torch

SMALL_IMAGES = 64  # pixels; at or below this, small_stem='auto' gives ResNets the CIFAR stem


@dataclasses.dataclass(frozen=True)
class TimmBackbone(Backbone):
    """Any timm model, random init. small_stem: 'on' gives a ResNet-family model (timm's `resnet` module: resnet*, resnext*,
    seresnet*, wide_resnet*, resnet*d, resnet*t, ...) a stride-1 3×3 first convolution and no max-pool (the CIFAR convention);
    'auto' does so for inputs of at most 64 px; other models keep their own stems (fixed-size ones such as ViTs are built
    for the training resolution), so give them a resolution their downsampling can take."""

    name = "timm"

    model: str = "resnet18"
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0
    small_stem: Literal["auto", "on", "off"] = "auto"

    @classmethod
    def resolve_alias(cls, name: str, params: dict) -> TimmBackbone | None:
        """A bare timm model name, e.g. `resnet18` or `convnext_atto(drop_path_rate=0.1)`, means `timm(model=name, ...)`."""
        import timm

        return cls.from_params({"model": name, **params}) if timm.is_model(name) else None

    def validate(self) -> None:
        """The model must be a timm architecture; an explicit small stem needs a ResNet; drop rates lie in [0, 1)."""
        import timm

        if not timm.is_model(self.model):
            close = difflib.get_close_matches(self.model, timm.list_models(), n=5, cutoff=0.6)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise SpecError(f"backbone timm: unknown timm model {self.model!r}; {hint}`timm.list_models('*{self.model}*')` searches all {len(timm.list_models())}")
        if self.small_stem == "on" and not is_resnet(self.model):
            raise SpecError(f"backbone timm: small_stem='on' needs a model from timm's resnet module (resnet18, resnet10t, resnext50_32x4d, ...), not {self.model!r}; use 'auto' or 'off'")
        if not (0 <= self.drop_path_rate < 1 and 0 <= self.drop_rate < 1):
            raise SpecError(f"backbone timm: drop_path_rate and drop_rate must lie in [0, 1), got {self.drop_path_rate} and {self.drop_rate}")

    def check(self, training: Training) -> None:
        """A patch-embedding model (ViT, DeiT, Swin, ...) needs a resolution its patch size divides, else it silently cuts
        off the rest of every image; then the base check: one image through the network."""
        resolution, patch = training.resolution, patch_size(self.model, training.resolution)
        if patch and resolution % patch:
            lower, upper = resolution - resolution % patch, resolution - resolution % patch + patch
            raise SpecError(f"backbone {self.spec()} cannot train at {resolution} px: its patches are {patch} px, so the last "
                            f"{resolution % patch} px of every image would be ignored; use a multiple of {patch}, such as "
                            f"{' or '.join(map(str, filter(None, (lower, upper))))}")
        super().check(training)

    def build(self, num_classes: int, resolution: int) -> torch.nn.Module:
        """`timm.create_model(model, pretrained=False, num_classes=...)`, its stem adapted to the resolution."""
        import timm

        options = {"drop_path_rate": self.drop_path_rate, "drop_rate": self.drop_rate}
        options = {k: v for k, v in options.items() if v}  # not every model takes them; pass only what was asked
        if getattr(timm.models.get_pretrained_cfg(self.model), "fixed_input_size", False):
            options["img_size"] = resolution
        model = timm.create_model(self.model, pretrained=False, num_classes=num_classes, **options)
        if self.uses_small_stem(resolution):
            make_small_stem(model)
        return model

    def uses_small_stem(self, resolution: int) -> bool:
        """Whether `build` gives the model the CIFAR stem at this resolution."""
        return self.small_stem == "on" or (self.small_stem == "auto" and resolution <= SMALL_IMAGES and is_resnet(self.model))


@functools.cache
def patch_size(model: str, resolution: int) -> int | None:
    """The side of a fixed-size timm model's square patches (None for other models), read from one built without memory."""
    import timm
    import torch

    if not getattr(timm.models.get_pretrained_cfg(model), "fixed_input_size", False):
        return None
    with torch.device("meta"):
        network = timm.create_model(model, pretrained=False, num_classes=2, img_size=resolution)
    size = getattr(getattr(network, "patch_embed", None), "patch_size", None)
    return int(size[0]) if isinstance(size, tuple) else size


def is_resnet(model: str) -> bool:
    """Whether timm builds `model` in its resnet module (the ResNet class with conv1 / maxpool stem)."""
    import timm

    return timm.models.is_model_in_modules(model, "resnet")


def make_small_stem(model: torch.nn.Module) -> None:
    """Turn a timm ResNet's stem into the CIFAR one, in place: first convolution 3×3 stride 1 (deep stems: stride 1), no pooling."""
    import torch

    if isinstance(model.conv1, torch.nn.Conv2d):
        conv = torch.nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        torch.nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as timm initialises ResNets
        model.conv1 = conv
    else:  # deep stems are three 3×3 convolutions, the first with stride 2
        model.conv1[0].stride = (1, 1)
    model.maxpool = torch.nn.Identity()
