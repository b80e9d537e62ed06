"""Several processes training one network (torchrun): ranks from the environment, the process groups, what rank 0 tells
the other ranks (plain data only), the batch norm of the global batch, and whether a network trains the same on any
number of ranks.

Rank 0 alone runs the command's run lifecycle (MLflow, key lock, checkpoints, heartbeats, figures); the other ranks
`follow` it (see pipeline.follow): they train alongside it when it trains and record nothing.
"""

import contextlib
import datetime
import os
import re
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from .errors import SpecError, TransferlabError

# The other ranks wait this long for rank 0's next word: it may build an image cache or wait for another process's run first.
CONTROL_TIMEOUT = datetime.timedelta(days=7)
TENSOR = "transferlab.tensor"  # the placeholder of a tensor in a shared optimizer state's layout
PEER_PROBLEMS = ("gloo/transport", "Connection reset by peer", "Connection closed by peer", "NCCL", "Socket Timeout")
STOCHASTIC_FIELDS = ("drop_prob", "drop_rate", "drop_path_rate")  # timm's DropPath / DropBlock, and heads' functional dropout
_control: list = []  # the gloo group of rank 0's messages, once started


class PeerLost(TransferlabError):
    """Another rank of the job stopped (killed, its machine lost): the run ends KILLED and a rerun resumes it."""

    run_status = "KILLED"


def env_number(name: str, default: int) -> int:
    """A rank number torchrun sets, as an int (a clear error if it is malformed)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise TransferlabError(f"{name} must be a whole number >= 0 (torchrun sets it), got {text!r}")
    return int(text)


def world() -> int:
    """How many processes train together ($WORLD_SIZE, 1 outside torchrun)."""
    return max(1, env_number("WORLD_SIZE", 1))


def rank() -> int:
    """This process's rank among them ($RANK, 0 outside torchrun)."""
    return env_number("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine ($LOCAL_RANK): the GPU it uses."""
    return env_number("LOCAL_RANK", 0)


def active() -> bool:
    """Whether several processes train together."""
    return world() > 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that records."""
    return rank() == 0


def start() -> None:
    """Join the job: this rank's GPU pinned (if CUDA), gloo for CPU tensors and NCCL for CUDA ones, and a gloo group
    with a long timeout for rank 0's messages; nothing if already joined."""
    if dist.is_initialized():
        return
    backend = "gloo"
    if torch.cuda.is_available():
        if local_rank() >= torch.cuda.device_count():
            raise TransferlabError(f"local rank {local_rank()} needs GPU {local_rank()}, but this machine has {torch.cuda.device_count()}: "
                                   "start at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank())  # 'auto' and 'cuda' then mean this rank's GPU (resolve_device, seeded)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)
    _control.append(dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT))


def stop() -> None:
    """Leave the job (after the last message)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    _control.clear()


def check_batch(batch_size: int, images: int) -> None:
    """A SpecError unless every rank gets an equal share of each global batch (and at least one image of a smaller subset)."""
    ranks = world()
    if ranks > 1 and batch_size % ranks:
        raise SpecError(f"train: batch_size {batch_size} is the global batch of all {ranks} processes and must divide by {ranks} "
                        f"(each process trains on batch_size / {ranks} images per step); choose e.g. {batch_size - batch_size % ranks or ranks}")
    if ranks > 1 and images < ranks:
        raise SpecError(f"a subset of {images} training images cannot be shared by {ranks} processes: use at most {images}")


def plain(value) -> bool:
    """Whether `value` is plain data: None, numbers, strings, and lists, tuples and dicts of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(map(plain, value))
    return isinstance(value, dict) and all(isinstance(k, str | int) and plain(v) for k, v in value.items())


def shared(message=None):
    """Rank 0's `message` on every rank (the others pass None): plain data only, so nothing but data crosses over."""
    if is_main() and not plain(message):
        raise TypeError(f"rank 0 shares plain data only, not {type(message).__name__}")
    box = [message]
    dist.broadcast_object_list(box, src=0, group=_control[0])
    return box[0]


@contextlib.contextmanager
def leading() -> Iterator[None]:
    """Rank 0's side of a command: when it ends normally the other ranks are told so and exit too. On an error they are
    not told: rank 0 exits non-zero and torchrun stops them."""
    yield
    shared(["exit"])


def total(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over every rank (a copy)."""
    x = x.clone()
    dist.all_reduce(x)
    return x


def share_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Give every rank rank 0's optimizer state (momentum buffers, step counts): its layout as plain data, then its tensors
    broadcast one by one."""
    tensors: list[torch.Tensor] = []

    def layout(value):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
            return {TENSOR: [list(value.shape), str(value.dtype).removeprefix("torch."), value.device.type]}
        if isinstance(value, dict):
            return {k: layout(v) for k, v in value.items()}
        return type(value)(map(layout, value)) if isinstance(value, list | tuple) else value

    def rebuilt(value):
        if isinstance(value, dict) and set(value) == {TENSOR}:
            shape, dtype, device = value[TENSOR]
            tensors.append(torch.empty(shape, dtype=getattr(torch, dtype), device="cpu" if device == "cpu" else torch.cuda.current_device()))
            return tensors[-1]
        if isinstance(value, dict):
            return {k: rebuilt(v) for k, v in value.items()}
        return type(value)(map(rebuilt, value)) if isinstance(value, list | tuple) else value

    state = shared(layout(optimizer.state_dict()) if is_main() else None)
    if not is_main():
        state = rebuilt(state)
    for tensor in tensors:
        dist.broadcast(tensor, src=0)
    if not is_main():
        optimizer.load_state_dict(state)


def parallel(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` under DistributedDataParallel: rank 0's weights and buffers on every rank now, gradients averaged over ranks
    at each step. Buffers are not broadcast at each forward: the global batch norm keeps them equal on every rank."""
    return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)


def peer_failure(exc: BaseException) -> bool:
    """Whether `exc` is a collective breaking because another rank went away: NCCL's DistError, or gloo's RuntimeError
    naming its transport ('Connection reset by peer')."""
    return isinstance(exc, dist.DistError) or isinstance(exc, RuntimeError) and any(p in str(exc) for p in PEER_PROBLEMS)


@contextlib.contextmanager
def peers_watched() -> Iterator[None]:
    """Within the block, another rank failing (a collective that breaks) stops this rank with PeerLost: the run ends
    KILLED and keeps its checkpoint, so the next torchrun resumes it."""
    try:
        yield
    except RuntimeError as exc:
        if not peer_failure(exc):
            raise
        said = re.sub(r"^\[[^\]]*\]\s*", "", (str(exc).strip().splitlines() or [""])[0])[:200]  # without gloo's [file:line]
        raise PeerLost(f"another process of the job stopped ({type(exc).__name__}: {said}); "
                       "rerun the same torchrun command to resume from the last checkpoint") from exc


class Summed(torch.autograd.Function):
    """The sum of a tensor over every rank; its gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return total(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return total(grad)


def global_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm in training mode with the mean and variance of the global batch (all ranks' shares), in float32, two
    passes; running statistics updated as torch does (unbiased variance, momentum or cumulative average)."""
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()
    count = torch.full((1,), xf.numel() / max(1, xf.shape[1]), device=x.device)
    sums = Summed.apply(torch.cat([xf.sum(dims), count]))
    n = sums[-1]
    centred = xf - (sums[:-1] / n).view(shape)
    var = Summed.apply((centred * centred).sum(dims)) / n
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(sums[:-1] / n, factor)
            bn.running_var.lerp_(var * n / (n - 1).clamp(min=1), factor)
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)


def global_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The forward pass of a batch norm of the global batch: as its own class in eval mode; in training, `global_norm`
    (then the activation of a timm norm-act layer)."""
    if not self.training:
        return super(type(self), self).forward(x)
    y = global_norm(self, x)
    return self.act(self.drop(y)) if hasattr(self, "act") and hasattr(self, "drop") else y


def global_classes() -> dict[type, type]:
    """The batch norm classes with a global-batch counterpart: torch's and timm's norm + activation."""
    from timm.layers import BatchNormAct2d

    return {cls: type(f"Global{cls.__name__}", (cls,), {"forward": global_forward})
            for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNormAct2d)}


GLOBAL: dict[type, type] = {}


@contextlib.contextmanager
def global_batch_norm(model: nn.Module) -> Iterator[None]:
    """Within the block, the model's batch norms normalise with the statistics of the global batch, as one process
    training on the whole batch would (each layer's class is swapped in place, so weights and buffers stay its own)."""
    GLOBAL.update(GLOBAL or global_classes())
    swapped = [(m, type(m)) for m in model.modules() if type(m) in GLOBAL]
    for module, cls in swapped:
        module.__class__ = GLOBAL[cls]
    try:
        yield
    finally:
        for module, cls in swapped:
            module.__class__ = cls


def reproducible(model: nn.Module) -> bool:
    """Whether training `model` on several ranks computes what one process computes on the same global batch, up to
    rounding: every batch norm has a global-batch counterpart, and no layer draws random numbers (dropout, drop-path),
    as those would draw each rank's masks apart."""
    GLOBAL.update(GLOBAL or global_classes())
    for module in model.modules():
        if isinstance(module, _BatchNorm) and type(module) not in GLOBAL:
            return False
        if isinstance(module, _DropoutNd) and module.p > 0:
            return False
        if any(isinstance(v := getattr(module, name, 0), int | float) and v > 0 for name in STOCHASTIC_FIELDS):
            return False
    return True
