"""Accuracy in percent: top-1 and mean per-class accuracy (the mean of per-class recalls)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when scoring, so that registering the probes does not load torch
    import torch


def top1(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of correct predictions, in percent."""
    return 100.0 * (predicted == labels).double().mean().item()


def mean_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Per-class accuracy averaged over the classes present in `labels`, in percent."""
    import torch

    classes = int(labels.max()) + 1
    total = torch.bincount(labels, minlength=classes).double()
    correct = torch.bincount(labels[predicted == labels], minlength=classes).double()
    present = total > 0
    return 100.0 * (correct[present] / total[present]).mean().item()
