"""Pretraining: one readable loop with warmup + cosine/step schedule, held-out val top-1 per epoch (or per ~5% of the steps),
atomic checkpoints, exact resume, torch's random state seeded from the run seed."""

import contextlib
import math
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from . import progress as display
from .backbones import Backbone
from .cache import atomic_path, size_text
from .devices import autocast, prepare, resolve_device, seeded, synchronize
from .errors import CheckpointError, DivergedError
from .loader import augment, batches, epoch_generator, fits_on_device, normalize, share, to_device
from .manifest import Manifest
from .training_spec import Training

CHECKPOINT_FORMAT = 2
STEP_DECAY = ((0.5, 0.1), (0.75, 0.1))  # 'step' schedule: × 0.1 after half and after three quarters of the post-warmup steps
MAX_EVALUATIONS = 20  # with the length in steps, evaluate (and checkpoint) about this often, plus at the end


def pretrain(backbone: Backbone, model: torch.nn.Module, images: np.ndarray, manifest: Manifest, val: tuple[np.ndarray, np.ndarray],
             spec: Training, checkpoint: Path | None, log: Callable[[dict[str, float], int], None], *, seed: int = 0,
             logged: Collection[int] = (), progress: bool = True, evaluated: Callable[[int], None] | None = None) -> dict[str, float]:
    """Train `model` (in place) on the manifest's samples of `images`; resume from `checkpoint` if it exists; return the last metrics.

    Training is evaluated — held-out val top-1, an atomic checkpoint, then `log(metrics, step)` — after every epoch when
    the length is in epochs; when it is in steps, every `evaluation_interval` steps (whole epochs, about 20 evaluations
    per run) and at the end. On resume, the checkpoint's evaluations whose step is not in `logged` (the steps the caller
    has already recorded) are logged first, so a kill between checkpoint and logging leaves neither a gap nor a
    duplicate. Crops and order depend on (seed, epoch) only; dropout and DropPath draw from torch's generator seeded
    from `seed` (restored from the checkpoint on resume), and the caller's random state is left as it was.
    `evaluated(step)` runs after each evaluation made here (not the replayed ones), the model as trained so far; a
    search's pruner stops the run from it by raising.

    Under torchrun with several processes every rank calls this together (see `distributed`): each trains on its share
    of every global batch of `spec.batch_size` (the same order and crops as one process), batch norms use the global
    batch's statistics, gradients are averaged; rank 0 alone has a `checkpoint` (None elsewhere), resumes from it and
    shares the state it resumed; the metrics are the global ones on every rank.
    """
    device = resolve_device(spec.device)
    ranks = distributed.active()
    with (seeded(seed, "pretrain", device), distributed.global_batch_norm(model) if ranks else contextlib.nullcontext(),
          distributed.peers_watched() if ranks else contextlib.nullcontext()):
        return train_loop(backbone, model, images, manifest, val, spec, checkpoint, log, device, seed, logged, progress, evaluated)


def train_loop(backbone: Backbone, model: torch.nn.Module, images: np.ndarray, manifest: Manifest, val: tuple[np.ndarray, np.ndarray],
               spec: Training, checkpoint: Path | None, log: Callable[[dict[str, float], int], None], device: torch.device, seed: int,
               logged: Collection[int], progress: bool, evaluated: Callable[[int], None] | None = None) -> dict[str, float]:
    """The body of `pretrain`, run with torch's random state seeded."""
    net = prepare(model, device, spec.compile)
    optimizer = make_optimizer(model, spec)
    train_samples, train_labels = manifest.samples, manifest.labels
    val_samples, val_labels = np.asarray(val[0]), np.asarray(val[1])
    ranks, rank, val_count = distributed.world(), distributed.rank(), len(val_samples)
    if ranks > 1:  # each rank evaluates its part of val; the counts of correct answers are summed
        val_part = slice(*share(0, val_count, rank, ranks))
        val_samples, val_labels = val_samples[val_part], val_labels[val_part]
    image_bytes = math.prod(images.shape[1:])
    resident = fits_on_device((len(train_samples) + len(val_samples)) * image_bytes, device, spec.device_share)
    if resident:  # copy the subset to the device once; batches are then gathered there
        train_images, train_samples = to_device(images, train_samples, device), np.arange(len(train_samples))
        val_images, val_samples = to_device(images, val_samples, device), np.arange(len(val_samples))
    else:
        train_images = val_images = images
    # a subset smaller than a batch trains on one batch of the whole subset per epoch, with the length in epochs or steps
    drop_last = len(train_samples) >= spec.batch_size  # a last partial batch would give noisy steps (or a batch of one)
    global_batch = spec.batch_size if drop_last else len(train_samples)  # images per step, over all ranks
    first = share(0, global_batch, rank, ranks)[0]  # where this rank's share of each global batch starts
    steps_per_epoch, total_steps = spec.steps_per_epoch(len(train_samples)), spec.total_steps(len(train_samples))
    if total_steps == 0:  # train(steps=0): the network keeps its random initial weights (a study's floor row)
        metrics = {"pretrain.epoch": 0.0}
        if val_count:
            metrics["pretrain.val_top1"] = val_top1(net, val_images, val_samples, val_labels, spec.batch_size, device, resident, val_count)
        if 0 not in logged:
            log(metrics, 0)
        return metrics
    interval = evaluation_interval(spec, steps_per_epoch, total_steps)
    key = f"{backbone.spec()} | {spec.spec()} | {manifest.digest} | seed={seed}"

    step, epoch, history = 0, 0, []
    if checkpoint is not None and checkpoint.exists():
        step, epoch, history = load_checkpoint(checkpoint, key, model, optimizer)
        for entry in history:
            if entry["step"] not in logged:
                log(entry["metrics"], entry["step"])
    trained = net
    if ranks > 1:  # rank 0's state, fresh or resumed, on every rank
        step, epoch = distributed.shared([step, epoch])
        distributed.share_optimizer(optimizer)
        trained = distributed.parallel(net, device)

    first_step, started = step, time.perf_counter()  # the ETA counts the steps trained in this process only
    while step < total_steps:  # one round: train to the next evaluation (a whole number of epochs, or the last step)
        end = min(total_steps, (step // interval + 1) * interval)
        what = f"epoch {epoch + 1}/{spec.epochs}" if spec.length == "epochs" else f"steps {step + 1}-{end} of {total_steps}"
        with display.step(f"pretrain {what}", end - step, "steps", enabled=progress) as bar:
            net.train()
            loss_sum, seen, round_steps, seconds = torch.zeros((), device=device), 0, 0, 0.0
            while step < end:
                generator = epoch_generator(seed, epoch)
                start = time.perf_counter()
                for x, y in batches(train_images, train_samples, train_labels, spec.batch_size, device, shuffle=True, seed=seed, epoch=epoch,
                                    resident=resident, drop_last=drop_last, part=(rank, ranks)):
                    lr = learning_rate(spec, step, total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    inputs = augment(x, generator) if ranks == 1 else augment(x, generator, global_batch, first)
                    with autocast(device):
                        loss = F.cross_entropy(trained(inputs), y, label_smoothing=spec.label_smoothing)
                    if ranks > 1:  # DDP averages the ranks' gradients: weighted so, they are the global batch's mean loss's
                        loss = loss * (len(y) * ranks / global_batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach()
                    seen += global_batch
                    step += 1
                    round_steps += 1
                    bar.advance()
                    if step == end:  # only the last step of the run ends an epoch early
                        break
                synchronize(device)
                seconds += time.perf_counter() - start
                epoch += 1
            if ranks > 1:
                loss_sum = distributed.total(loss_sum) / ranks
            train_loss = loss_sum.item() / round_steps  # checked here, not every step: .item() waits for the device
            if not math.isfinite(train_loss):  # before anything is checkpointed or logged: the last checkpoint stays a finite state
                if not distributed.is_main():
                    return {}  # rank 0 raises and records it
                raise DivergedError(f"training diverged by step {step} (epoch {epoch}): train loss is {train_loss}; lower lr "
                                    f"(now {spec.lr:g}) or warm up longer (warmup now {spec.warmup:g})")
            metrics = {"pretrain.train_loss": train_loss, "pretrain.lr": lr, "pretrain.images_per_s": seen / seconds,
                       "pretrain.epoch": float(epoch)}
            if val_count:
                metrics["pretrain.val_top1"] = val_top1(net, val_images, val_samples, val_labels, spec.batch_size, device, resident, val_count)
            history.append({"step": step, "metrics": metrics})
            left = display.eta(step - first_step, total_steps - first_step, time.perf_counter() - started)
            bar.finish(f"{summary(metrics)}  step {step}/{total_steps}  ETA {left}")
        try:
            if checkpoint is not None:
                save_checkpoint(checkpoint, key, model, optimizer, step, epoch, history)
            log(metrics, step)
            if evaluated is not None:
                evaluated(step)
        except BaseException:
            if ranks > 1:
                distributed.shared("stop")  # the other ranks stop training with rank 0 (another worker won the key, say)
            raise
        if ranks > 1 and distributed.shared("go on") == "stop":
            return {}
    return dict(history[-1]["metrics"])


def evaluation_interval(spec: Training, steps_per_epoch: int, total_steps: int) -> int:
    """Optimizer steps between evaluations: one epoch with the length in epochs; with the length in steps, the whole
    number of epochs that covers at least a twentieth of the run (MAX_EVALUATIONS), so small subsets do not evaluate
    and checkpoint after every few steps."""
    if spec.length == "epochs":
        return steps_per_epoch
    return steps_per_epoch * math.ceil(math.ceil(total_steps / MAX_EVALUATIONS) / steps_per_epoch)


def learning_rate(spec: Training, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup over the first `warmup` fraction, then cosine or step decay."""
    return scheduled_rate(spec.lr, spec.warmup, spec.schedule, step, total_steps)


def scheduled_rate(lr: float, warmup_fraction: float, schedule: str, step: int, total_steps: int) -> float:
    """`learning_rate` for a peak rate, warmup fraction and schedule ('cosine' or 'step') given one by one (fine-tuning uses it too)."""
    warmup = round(warmup_fraction * total_steps)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * progress))
    return lr * math.prod(factor for at, factor in STEP_DECAY if progress >= at)


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: weight matrices and kernels decay, norms and biases (ndim ≤ 1) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, spec: Training) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW; weight decay on weight matrices and kernels only, not on norms and biases."""
    groups = decay_groups(model, spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.momentum > 0)
    return torch.optim.AdamW(groups, lr=spec.lr)


def val_top1(net: torch.nn.Module, images, samples: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device, resident: bool,
             count: int) -> float:
    """Held-out top-1 in percent of `count` val images, of which this rank holds `samples` (all of them in one process)."""
    if not distributed.active():
        return evaluate(net, images, samples, labels, 2 * batch_size, device, resident)
    return 100.0 * distributed.total(correct(net, images, samples, labels, 2 * batch_size, device, resident)).item() / count


def evaluate(net: torch.nn.Module, images, samples: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
             resident: bool) -> float:
    """Top-1 accuracy in percent on centre (uncropped) images."""
    return 100.0 * correct(net, images, samples, labels, batch_size, device, resident).item() / len(samples)


@torch.inference_mode()
def correct(net: torch.nn.Module, images, samples: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
            resident: bool) -> torch.Tensor:
    """How many of the images the network classifies right (top-1, centre images), as an int64 tensor on the device."""
    net.eval()
    right = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in batches(images, samples, labels, batch_size, device, shuffle=False, seed=0, epoch=0, resident=resident):
        with autocast(device):
            right += (net(normalize(x)).argmax(1) == y).sum()
    net.train()
    return right


def save_checkpoint(path: Path, key: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, epoch: int,
                    history: list[dict]) -> None:
    """Write everything a resume needs (tensors, numbers, strings only, so `weights_only=True` loads it), atomically."""
    state = {
        "format": CHECKPOINT_FORMAT, "key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "step": step, "epoch": epoch, "history": history,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []},
    }
    size = state_bytes(state)
    with atomic_path(path, f"a {size_text(size)} checkpoint", size) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # into a Python file, so a full disk's OSError is the context of torch's RuntimeError


def state_bytes(state) -> int:
    """Bytes of the tensors in a nested dict or list: about what a checkpoint of it takes on disk."""
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(map(state_bytes, state.values()))
    return sum(map(state_bytes, state)) if isinstance(state, list | tuple) else 0


def load_checkpoint(path: Path, key: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int, list[dict]]:
    """Restore model, optimizer and random state from a checkpoint of the same run; return (step, epochs done, history).

    The history holds one {'step': optimizer steps done, 'metrics': {...}} per evaluation (see `pretrain`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {first_line(exc)})") from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} was written by another transferlab version (format {state.get('format')}, this one reads {CHECKPOINT_FORMAT})")
    if state.get("key") != key:
        raise CheckpointError(f"checkpoint {path} belongs to another training run ({state.get('key')!r}), not to {key!r}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this network ({type(exc).__name__}: {first_line(exc)})") from exc
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():  # resuming on a machine with fewer GPUs restores those it has
        for index, rng in enumerate(state["rng"]["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng, index)
    return state["step"], state["epoch"], state["history"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    return (str(exc).strip().splitlines() or [""])[0][:200]


def summary(metrics: dict[str, float]) -> str:
    """One line for the progress display: loss, val top-1, throughput."""
    text = f"loss {metrics['pretrain.train_loss']:.3f}"
    if "pretrain.val_top1" in metrics:
        text += f"  val top-1 {metrics['pretrain.val_top1']:.1f}%"
    return text + f"  {metrics['pretrain.images_per_s']:,.0f} img/s"
