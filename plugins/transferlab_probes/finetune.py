"""Full fine-tuning: the whole pretrained network with a new head, SGD (nesterov) with linear warmup and a cosine schedule."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from transferlab import MAX_LR, MAX_WEIGHT_DECAY, DivergedError, SpecError, Task, TransferContext, progress

from .scores import mean_class_accuracy, top1

if TYPE_CHECKING:  # torch and the training loop load when fine-tuning runs, so that registering the probes does not load torch
    import torch

RESIDENT_SHARE = 0.25  # the target's training images live on the device when they fit in this share of its memory


@dataclasses.dataclass(frozen=True)
class Finetune(Task):
    """Train every layer on the target's train split with pretraining's augmentation; val top-1 at the end, test once.

    As in pretraining: linear warmup over the first `warmup` fraction of the steps, then cosine decay to 0; weight decay on
    weight matrices and kernels only, not on norms and biases. The new head's initial weights, the batch order, the crops
    and dropout follow the run's seed, so the same pretrained model and seed give the same numbers."""

    name = "finetune"
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.05

    def validate(self) -> None:
        """Positive length, batch and learning rate; momentum and warmup in [0, 1); weight decay >= 0."""
        if (self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr <= MAX_LR or not 0 <= self.momentum < 1
                or not 0 <= self.weight_decay <= MAX_WEIGHT_DECAY or not 0 <= self.warmup < 1):
            raise SpecError(f"finetune: needs epochs, batch_size >= 1, lr > 0, 0 <= momentum < 1, weight_decay >= 0, 0 <= warmup < 1; got {self.spec()}")

    def run(self, ctx: TransferContext) -> dict[str, float]:
        """test_top1, test_mean_class_acc, val_top1 (after the last epoch; nothing is chosen on val) and train_loss (last epoch)."""
        from transferlab import seeded

        with seeded(ctx.seed, "finetune", ctx.device):
            return self.finetune(ctx)

    def finetune(self, ctx: TransferContext) -> dict[str, float]:
        """`run`'s work, with torch's random state seeded."""
        import torch
        import torch.nn.functional as F

        from transferlab import augment, autocast, batches, decay_groups, epoch_generator, fits_on_device, scheduled_rate, to_device

        model = ctx.fresh_model(ctx.num_classes)
        samples, labels = ctx.samples("train"), ctx.labels("train")
        images = ctx.image_cache
        resident = fits_on_device(len(samples) * images[0].nbytes, ctx.device, RESIDENT_SHARE)
        if resident:  # copy the train split to the device once; every epoch's batches are gathered there
            images, samples = to_device(images, samples, ctx.device), np.arange(len(samples))
        drop_last = len(samples) > self.batch_size  # never a batch of one in train-mode batch norm
        steps = self.epochs * (len(samples) // self.batch_size if drop_last else 1)
        optimizer = torch.optim.SGD(decay_groups(model, self.weight_decay), lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0)
        step, started = 0, time.perf_counter()
        for epoch in range(self.epochs):
            generator, losses, seen = epoch_generator(ctx.seed, epoch), [], 0
            with progress.step(f"finetune epoch {epoch + 1}/{self.epochs}", steps // self.epochs, "steps") as shown:
                for x, y in batches(images, samples, labels, self.batch_size, ctx.device, shuffle=True, seed=ctx.seed,
                                    epoch=epoch, resident=resident, drop_last=drop_last):
                    for group in optimizer.param_groups:
                        group["lr"] = scheduled_rate(self.lr, self.warmup, "cosine", step, steps)
                    with autocast(ctx.device):
                        loss = F.cross_entropy(model(augment(x, generator)), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.detach())
                    step += 1
                    seen += len(y)
                    shown.advance()
                loss = torch.stack(losses).float().mean().item()  # one sync per epoch, not per step
                if not math.isfinite(loss):
                    raise DivergedError(f"finetune diverged in epoch {epoch + 1}: train loss is not finite; lower lr (now {self.lr:g}) "
                                        f"or warm up longer (warmup now {self.warmup:g})")
                shown.finish(f"loss {loss:.3f}  {seen / max(shown.seconds(), 1e-9):,.0f} img/s  "
                             f"ETA {progress.eta(step, steps, time.perf_counter() - started)}")
        val, test = (predict(model, ctx, split) for split in ("val", "test"))
        y_val, y_test = (torch.as_tensor(ctx.labels(split), device=ctx.device) for split in ("val", "test"))
        return {"test_top1": top1(test, y_test), "test_mean_class_acc": mean_class_accuracy(test, y_test),
                "val_top1": top1(val, y_val), "train_loss": torch.stack(losses).float().mean().item()}


def predict(model: torch.nn.Module, ctx: TransferContext, split: str) -> torch.Tensor:
    """Predicted classes of a split's images (no augmentation), in eval mode."""
    import torch

    from transferlab import autocast, batches, normalize

    model.eval()
    samples = ctx.samples(split)
    predicted = []
    with torch.inference_mode(), autocast(ctx.device):
        for x, _ in batches(ctx.image_cache, samples, np.zeros(len(samples)), ctx.batch_size, ctx.device, shuffle=False,
                            seed=0, epoch=0, resident=False):
            predicted.append(model(normalize(x)).argmax(dim=1))
    return torch.cat(predicted)
