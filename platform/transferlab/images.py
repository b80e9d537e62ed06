"""Image files for file sources: which names are images, probes, RGB decoding at a square size, decoding threads."""

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # as torchvision's
TAIL_BYTES = 32  # how far from the end a complete file's end marker may lie (padding after it is common)
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}  # JPEG's EOI marker; PNG's IEND chunk type and CRC
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
BACKGROUND = (255, 255, 255, 255)  # what transparent pixels are composited onto
_thread = threading.local()  # `serial` is set in the threads of a pool that already decodes in parallel
T = TypeVar("T")


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension (case-insensitive)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def probe_image(path: str | os.PathLike) -> str | None:
    """Why a file is not a readable image (empty, bad header, truncated), or None; only a JPEG or PNG whose end is missing is decoded."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with Image.open(path) as image:  # parses the header only
            if not image.width or not image.height:
                return "image has no pixels"
            if not ends_complete(path, image.format, size):
                image.load()  # the whole file, once: raises if it really is cut short
    except UnidentifiedImageError:
        return "not an image PIL can identify"
    except Exception as exc:  # PIL raises many types (SyntaxError, struct.error, OSError, ...) for broken files
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def ends_complete(path: str | os.PathLike, image_format: str | None, size: int) -> bool:
    """Whether a JPEG or PNG file of `size` bytes has its end marker in its last TAIL_BYTES; other formats are not checked (True)."""
    marker = END_MARKERS.get(image_format or "")
    if marker is None:
        return True
    with open(path, "rb") as f:
        f.seek(max(size - TAIL_BYTES, 0))
        return marker in f.read()


def decode_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels as displayed (EXIF orientation applied); with `size`, shorter side resized to `size`, centre-cropped."""
    with Image.open(path) as image:
        if size is not None:
            image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still at least size×size
        ImageOps.exif_transpose(image, in_place=True)
        rgb = to_rgb(image)
    return np.asarray(rgb if size is None else fit(rgb, size))


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: high bit depths scaled down (`to_8bit`), transparent pixels composited onto BACKGROUND (white)."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = to_8bit(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, BACKGROUND), image.convert("RGBA"))
    return image.convert("RGB")


def to_8bit(image: Image.Image) -> Image.Image:
    """An 8-bit L image from a high bit depth: the top 8 of its `bits_per_sample` bits; float (F) maps 0..1 to 0..255."""
    values = np.asarray(image)
    if image.mode == "F":
        return Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8))
    bits = bits_per_sample(image, values)
    return Image.fromarray((np.clip(values, 0, 2 ** bits - 1) >> (bits - 8)).astype(np.uint8))


def bits_per_sample(image: Image.Image, values: np.ndarray) -> int:
    """Bits per sample of an integer image: 16 for I;16 modes; for 32-bit I images (which usually hold 8- or 16-bit
    data) 16 when any value exceeds 255, else 8; larger values are clipped."""
    if image.mode.startswith("I;16") or (values.size and values.max() > 255):
        return 16
    return 8


def fit(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and centre-crop to size×size, in one resampling step."""
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)


def usable_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_serially() -> None:
    """Mark this thread as a worker of a pool that already decodes in parallel (a ThreadPoolExecutor initializer)."""
    _thread.serial = True


def map_decoding(function: Callable[[T], object], items: Sequence[T]) -> list:
    """function(item) for every item, in order: one at a time in a thread marked by `decode_serially`, else in usable_cpus() threads."""
    if getattr(_thread, "serial", False) or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
        return list(pool.map(function, items))
