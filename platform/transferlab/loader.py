"""Batches from the image cache: device-resident when the subset fits, streamed through pinned memory otherwise; augmented on the device."""

import functools
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from .devices import memory_bytes, memory_format, resolve_device, upload
from .image_cache import take_rows

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, on the 0..1 scale
STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.35, 1.0)  # random-resized-crop area, as a fraction of the image
CROP_RATIO = (3 / 4, 4 / 3)  # random-resized-crop aspect ratio (width / height)


def fits_on_device(nbytes: int, device: torch.device | str, share: float) -> bool:
    """Whether `nbytes` fit in `share` of the device's memory (the machine's RAM for the CPU)."""
    return nbytes <= share * memory_bytes(torch.device(device))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W] standardised with ImageNet mean and std (channels_last on CUDA)."""
    return standardize(x.permute(0, 3, 1, 2).float())


def augment(x: torch.Tensor, generator: torch.Generator, drawn: int | None = None, first: int = 0) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W]: random resized crop, horizontal flip, normalize; crops drawn from `generator`.

    One batched resampling on whatever device `x` lives on. The crop parameters are drawn on the generator's device
    (use a CPU generator, e.g. `epoch_generator`) and so do not depend on where the images are. `x` may be one rank's
    share of a global batch: crops are then drawn for all `drawn` images and `x` takes those from position `first` on.
    """
    b, h, w, _ = x.shape
    crops = crop_transforms(b if drawn is None else drawn, generator)
    theta = upload(crops if drawn is None else crops[first:first + b], x.device)
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    crops = F.grid_sample(x.permute(0, 3, 1, 2).float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return standardize(crops)


def crop_transforms(n: int, generator: torch.Generator) -> torch.Tensor:
    """Affine maps [n, 2, 3] from output to input coordinates (-1..1): a random crop of the image, mirrored half the time."""
    u = torch.rand(n, 5, generator=generator, device=generator.device, dtype=torch.float64)
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, 0]
    log_ratio = math.log(CROP_RATIO[0]) + (math.log(CROP_RATIO[1]) - math.log(CROP_RATIO[0])) * u[:, 1]
    width = (area * log_ratio.exp()).sqrt().clamp(max=1)  # fractions of the image side; clamped crops keep the full side
    height = (area / log_ratio.exp()).sqrt().clamp(max=1)
    cx = (2 * u[:, 2] - 1) * (1 - width)  # the crop's centre, so that the crop stays inside the image
    cy = (2 * u[:, 3] - 1) * (1 - height)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0).to(u)
    zero = torch.zeros_like(width)
    return torch.stack([torch.stack([width * flip, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1).float()


def standardize(x: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] on the 0..255 scale → standardised, in the device's memory format."""
    shift, scale = standardization(x.device)
    return torch.addcmul(shift, x, scale).contiguous(memory_format=memory_format(x.device))


@functools.cache
def standardization(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) [1, 3, 1, 1] on the device that map 0..255 pixels to standardised values; made once per device."""
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    scale = torch.tensor([1 / (255 * s) for s in STD]).view(1, 3, 1, 1)
    return shift.to(device), scale.to(device)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of an epoch's augmentation: a pure function of (seed, epoch), so a resumed run draws the same crops."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1, np.uint64)[0] >> 1))


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Positions 0..n-1 in the epoch's order: a permutation determined by (seed, epoch), or as given."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n) if shuffle else np.arange(n)


def batches(images: np.ndarray | torch.Tensor, samples: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device | str,
            *, shuffle: bool, seed: int, epoch: int, resident: bool, drop_last: bool = False,
            part: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 [B, H, W, 3], int64 [B]) on `device` for rows `samples` of `images` with their `labels`, in the epoch's order.

    resident: the rows are copied to the device once (unless `images` already lives there) and batches are gathered
    there; otherwise each batch is read from `images` (the memory-mapped cache) in a background thread and copied
    through pinned memory on CUDA. Both paths yield identical batches. drop_last drops a final partial batch.
    part=(rank, ranks): each batch is this rank's share of the global batch of `batch_size` (see `share`).
    """
    device = resolve_device(device)
    order = epoch_order(len(samples), shuffle, seed, epoch)
    rows = np.asarray(samples, dtype=np.int64)[order]
    targets = torch.as_tensor(np.asarray(labels, dtype=np.int64)[order])
    stop = len(rows) - len(rows) % batch_size if drop_last else len(rows)
    bounds = [share(start, min(start + batch_size, stop), *part) for start in range(0, stop, batch_size)]
    if resident:
        yield from resident_batches(images, rows, targets, bounds, device)
    else:
        yield from streamed_batches(images, rows, targets, bounds, device)


def share(start: int, stop: int, rank: int, ranks: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous part of positions start..stop-1 split among `ranks` (parts differ by at most one, lower ranks first)."""
    size, extra = divmod(stop - start, ranks)
    first = start + rank * size + min(rank, extra)
    return first, first + size + (rank < extra)


def resident_batches(images, rows: np.ndarray, targets: torch.Tensor, bounds, device: torch.device):
    """Batches gathered from a copy of the needed rows on the device."""
    if isinstance(images, torch.Tensor) and images.device == device:
        data, index = images, torch.as_tensor(rows, device=device)
    else:
        needed = np.unique(rows)
        data = to_device(images, needed, device)
        index = torch.as_tensor(np.searchsorted(needed, rows), device=device)
    targets = targets.to(device)
    for start, stop in bounds:
        yield data[index[start:stop]], targets[start:stop]


def streamed_batches(images, rows: np.ndarray, targets: torch.Tensor, bounds, device: torch.device):
    """Batches read from host memory one ahead of use, copied to the device without blocking."""
    pin = device.type == "cuda"
    targets = targets.pin_memory() if pin else targets
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read_rows, images, rows[slice(*bounds[0])], pin) if bounds else None
        for i, (start, stop) in enumerate(bounds):
            x = pending.result()
            if i + 1 < len(bounds):
                pending = reader.submit(read_rows, images, rows[slice(*bounds[i + 1])], pin)
            yield x.to(device, non_blocking=pin), targets[start:stop].to(device, non_blocking=pin)


def read_rows(images, rows: np.ndarray, pin: bool) -> torch.Tensor:
    """Rows of a host array (read in file order, returned in the order asked; see `take_rows`), pinned for asynchronous copies if `pin`."""
    if isinstance(images, torch.Tensor):
        x = images[torch.as_tensor(rows, device=images.device)].cpu()
    else:
        x = torch.empty((len(rows), *images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        take_rows(images, rows, x.numpy())
        return x
    return x.pin_memory() if pin else x


def to_device(images: np.ndarray | torch.Tensor, rows: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Rows of `images` as one uint8 tensor on the device, in the order given (of the memory-mapped cache: see `take_rows`)."""
    if isinstance(images, torch.Tensor):
        return images[torch.as_tensor(rows, device=images.device)].to(device)
    return torch.from_numpy(take_rows(images, rows)).to(device)
