"""The one place that decides how a device runs: which device, precision, memory layout, memory size, compilation."""

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

from .errors import SpecError


def resolve_device(requested: str | torch.device) -> torch.device:
    """'auto' → the current CUDA device if there is one, else the CPU; 'cuda' without a CUDA device is an error.

    CUDA devices come back with their index ('cuda' → 'cuda:0'), as tensors report them, so devices compare equal."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device '{requested}' was requested, but this machine has no CUDA device; use device='auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


TORCH_STREAMS = {"init": 1, "pretrain": 2, "finetune": 3}  # torch's random streams of a run, derived from its seed
TORCH_TAG = 0x746F7263  # "torc": keeps [seed, TORCH_TAG, stream] apart from the loader's [seed, epoch, 0|1] streams


def torch_seed(seed: int, stream: str) -> int:
    """The 63-bit torch seed of one of a run's random streams: a pure function of (seed, stream)."""
    return int(np.random.SeedSequence([seed, TORCH_TAG, TORCH_STREAMS[stream]]).generate_state(1, np.uint64)[0] >> 1)


@contextlib.contextmanager
def seeded(seed: int, stream: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with torch's global CPU generator (and the CUDA generator of `device`) seeded from (seed, stream).

    Weight initialisation, dropout and DropPath draw from these global generators. Their previous states come back on
    exit (torch.random.fork_rng), so the caller's random stream is untouched and two blocks with the same seed and
    stream draw the same numbers in any process.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else []):
        value = torch_seed(seed, stream)
        torch.default_generator.manual_seed(value)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(value)
        yield


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; fp32 (no autocast) elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor cores want NHWC), the default layout elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def prepare(model: torch.nn.Module, device: torch.device, compile: bool = False) -> torch.nn.Module:
    """Move `model` to `device` in its memory format (in place); return it, or a compiled wrapper sharing its weights."""
    model.to(device=device, memory_format=memory_format(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    return torch.compile(model) if compile else model


def upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the device; on CUDA copied through pinned memory without stalling the queue of GPU work."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def memory_bytes(device: torch.device) -> int:
    """Total memory of the device: the GPU's memory, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def synchronize(device: torch.device) -> None:
    """Wait for queued work on the device (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """Human-readable device name, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
