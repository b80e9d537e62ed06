"""A tiny timm-interface network and its Backbone, so transfer tests run in milliseconds without timm."""

import dataclasses

import torch
from torch import nn

from transferlab.backbones import Backbone


class TinyNet(nn.Module):
    """Two convolutions with batch norm, global average pooling, a linear head; counts feature passes."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.num_features = width
        self.head = nn.Linear(width, num_classes)
        self.passes = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.body(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)


@dataclasses.dataclass(frozen=True)
class Tiny(Backbone):
    """TinyNet of a given width."""

    name = "tiny"
    width: int = 16

    def build(self, num_classes: int, resolution: int) -> nn.Module:
        return TinyNet(num_classes, self.width)
