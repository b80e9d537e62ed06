"""Accuracy in percent: top-1 and mean per-class accuracy (the mean of per-class recalls)."""

import torch


def top1(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of correct predictions, in percent."""
    return 100.0 * (predicted == labels).double().mean().item()


def mean_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Per-class accuracy averaged over the classes present in `labels`, in percent."""
    classes = int(labels.max()) + 1
    total = torch.bincount(labels, minlength=classes).double()
    correct = torch.bincount(labels[predicted == labels], minlength=classes).double()
    present = total > 0
    return 100.0 * (correct[present] / total[present]).mean().item()
