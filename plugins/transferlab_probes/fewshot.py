"""Few-shot episodes: n-way k-shot nearest-prototype classification on frozen features of the test split."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from transferlab import DataError, Source, SpecError, Task, TransferContext, excerpt

if TYPE_CHECKING:  # imported when episodes run, so that registering the probes does not load torch
    import torch


@dataclasses.dataclass(frozen=True)
class FewShot(Task):
    """Seeded `ways`-way `shots`-shot episodes from the test split, cosine to class means; mean accuracy ± 95% interval."""

    name = "fewshot"
    ways: int = 5
    shots: int = 5
    queries: int = 15
    episodes: int = 200

    def validate(self) -> None:
        """At least two ways and one shot, query and episode each."""
        if self.ways < 2 or min(self.shots, self.queries, self.episodes) < 1:
            raise SpecError(f"fewshot: needs ways >= 2 and shots, queries, episodes >= 1, got {self.spec()}")

    def check(self, target: Source) -> None:
        """The target's test split has `ways` classes with at least shots + queries images each."""
        index = target.index
        counts = np.bincount(index.labels[index.split_samples("test")], minlength=index.num_classes)
        need, enough = self.shots + self.queries, int((counts >= self.shots + self.queries).sum())
        if enough < self.ways:
            raise DataError(f"{self.spec()} needs {self.ways} test classes with at least shots + queries = {need} images each, but "
                            f"target {excerpt(target.spec())} has {enough} such (its {int((counts > 0).sum())} test classes hold at most "
                            f"{counts.max(initial=0)} images); lower ways, shots or queries")

    def run(self, ctx: TransferContext) -> dict[str, float]:
        """test_acc (mean over episodes, percent) and test_ci95 (1.96 · std / √episodes)."""
        import torch

        x, y = ctx.features("test")
        accuracy = episode_accuracies(torch.as_tensor(x, device=ctx.device), np.asarray(y), self.ways, self.shots,
                                      self.queries, self.episodes, ctx.seed)
        return {"test_acc": float(accuracy.mean()), "test_ci95": float(1.96 * accuracy.std() / math.sqrt(len(accuracy)))}


def episode_accuracies(features: torch.Tensor, labels: np.ndarray, ways: int, shots: int, queries: int, episodes: int,
                       seed: int) -> np.ndarray:
    """Accuracy (percent) of each episode; classes and images drawn without replacement from a generator seeded by `seed`."""
    import torch
    import torch.nn.functional as F

    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    members = [m for m in members if len(m) >= shots + queries]
    if len(members) < ways:
        raise DataError(f"fewshot: {ways}-way episodes need {ways} test classes with at least shots + queries = "
                        f"{shots + queries} images each; the test split has {len(members)}")
    features = F.normalize(features.float(), dim=1)
    truth = torch.arange(ways, device=features.device).repeat_interleave(queries)
    rng = np.random.default_rng(seed)
    accuracies = features.new_empty(episodes)
    for e in range(episodes):
        drawn = np.stack([rng.choice(members[c], shots + queries, replace=False) for c in rng.choice(len(members), ways, replace=False)])
        episode = features[torch.as_tensor(drawn, device=features.device)]  # [ways, shots + queries, D]
        prototypes = F.normalize(episode[:, :shots].mean(dim=1), dim=1)
        predicted = (episode[:, shots:].reshape(ways * queries, -1) @ prototypes.T).argmax(dim=1)
        accuracies[e] = 100.0 * (predicted == truth).float().mean()
    return accuracies.cpu().numpy()
