"""k-nearest-neighbour probe (VISSL / DINO style): cosine similarity, votes weighted by exp(similarity / temperature)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from transferlab import SpecError, Task, TransferContext

from .linear import to_device
from .scores import mean_class_accuracy, top1

if TYPE_CHECKING:  # imported when the probe runs, so that registering the probes does not load torch
    import torch

QUERY_CHUNK = 1024  # queries scored at once: bounds the [queries, bank] similarity matrix


@dataclasses.dataclass(frozen=True)
class KNN(Task):
    """Weighted kNN on L2-normalised frozen features; k and temperature are fixed, nothing is tuned on val."""

    name = "knn"
    k: int = 20
    temperature: float = 0.07

    def validate(self) -> None:
        """k at least 1, temperature positive."""
        if self.k < 1 or self.temperature <= 0:
            raise SpecError(f"knn: needs k >= 1 and temperature > 0, got k={self.k}, temperature={self.temperature}")

    def run(self, ctx: TransferContext) -> dict[str, float]:
        """val_top1 with train as the bank; test_top1 and test_mean_class_acc with train+val as the bank."""
        import torch

        (x_train, y_train), (x_val, y_val), (x_test, y_test) = (to_device(*ctx.features(s), ctx.device) for s in ("train", "val", "test"))
        val = knn_predict(x_train, y_train, x_val, ctx.num_classes, self.k, self.temperature)
        test = knn_predict(torch.cat([x_train, x_val]), torch.cat([y_train, y_val]), x_test, ctx.num_classes, self.k, self.temperature)
        return {"test_top1": top1(test, y_test), "test_mean_class_acc": mean_class_accuracy(test, y_test), "val_top1": top1(val, y_val)}


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int, k: int,
                temperature: float) -> torch.Tensor:
    """Class of each query: the k most cosine-similar bank rows each vote exp(similarity / temperature) for their class."""
    import torch
    import torch.nn.functional as F

    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    k = min(k, len(bank))
    predicted = []
    for chunk in queries.split(QUERY_CHUNK):
        similarity, neighbours = (chunk @ bank.T).topk(k, dim=1)
        votes = chunk.new_zeros(len(chunk), num_classes).scatter_add_(1, bank_labels[neighbours], (similarity / temperature).exp())
        predicted.append(votes.argmax(dim=1))
    return torch.cat(predicted)
