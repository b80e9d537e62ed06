"""JPEG decoding on the GPU with nvjpeg, batched, resized there; other files (and any nvjpeg refuses) decode on the CPU."""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from .images import decode_task, ends_complete, oversize

BATCH_BYTES = 256 << 20  # compressed bytes handed to nvjpeg at a time
NVJPEG_MODES = ("RGB", "L")  # JPEG colour modes nvjpeg decodes as the CPU path does (CMYK and YCCK are left to Pillow)


def decode_on_gpu(root: str, paths: Sequence[str], size: int, cap: int) -> list[tuple[np.ndarray | None, str | None]]:
    """(uint8 [size, size, 3], None) per file, as `images.decode_files`: plain RGB or grey JPEGs of at most `cap` pixels
    that end with their end marker decode with nvjpeg (EXIF orientation applied), shorter side resized to `size` with
    antialiasing and centre-cropped on the GPU; every other file, and a batch nvjpeg fails on file by file, decode with Pillow."""
    results: list[tuple[np.ndarray | None, str | None] | None] = [None] * len(paths)
    jpegs = [(i, data) for i, p in enumerate(paths) if (data := nvjpeg_bytes(Path(root) / p, cap)) is not None]
    batch: list[tuple[int, torch.Tensor]] = []
    for n, (i, data) in enumerate(jpegs):
        batch.append((i, torch.frombuffer(bytearray(data), dtype=torch.uint8)))
        if n + 1 == len(jpegs) or sum(t.numel() for _, t in batch) >= BATCH_BYTES:
            for (j, _), pixels in zip(batch, decode_batch([t for _, t in batch], size)):
                results[j] = None if pixels is None else (pixels, None)
            batch = []
    rest = [i for i, r in enumerate(results) if r is None]
    for i, result in zip(rest, decode_task(root, [paths[i] for i in rest], size, cap)):
        results[i] = result
    return results


def nvjpeg_bytes(path: Path, cap: int) -> bytes | None:
    """The file's bytes if it is a JPEG nvjpeg should decode: RGB or grey, at most `cap` pixels, not cut short; else None."""
    try:
        size = os.path.getsize(path)
        with Image.open(path) as image:  # the header only
            if image.format != "JPEG" or image.mode not in NVJPEG_MODES or oversize(image, cap) or not ends_complete(path, "JPEG", size):
                return None
        return path.read_bytes()
    except Exception:  # unreadable or no image: Pillow's decode reports why
        return None


def decode_batch(data: list[torch.Tensor], size: int) -> list[np.ndarray | None]:
    """Decode JPEG byte tensors with nvjpeg at once (one by one if the batch fails) and fit each to size×size; None where nvjpeg fails."""
    try:
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda", apply_exif_orientation=True)
    except RuntimeError:
        decoded = [decode_one(t) for t in data]
    fitted = [None if image is None else fit_gpu(image, size) for image in decoded]
    return [None if image is None else image.cpu().numpy() for image in fitted]


def decode_one(data: torch.Tensor) -> torch.Tensor | None:
    """One JPEG decoded with nvjpeg, or None if it refuses it."""
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda", apply_exif_orientation=True)
    except RuntimeError:
        return None


def fit_gpu(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, H, W] → uint8 [size, size, 3]: the centred square of the shorter side, resized bilinearly with antialiasing."""
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[None, :, top:top + side, left:left + side].float()
    resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
