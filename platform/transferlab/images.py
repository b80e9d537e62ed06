"""Image files for file sources: which names are images, probes, RGB decoding at a square size, decoding threads."""

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from .errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # as torchvision's
TAIL_BYTES = 32  # how far from the end a complete file's end marker may lie (padding after it is common)
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}  # JPEG's EOI marker; PNG's IEND chunk type and CRC
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
BACKGROUND = (255, 255, 255, 255)  # what transparent pixels are composited onto
BAND_ROWS = 256  # rows composited at a time
MAX_PIXELS_ENV = "TRANSFERLAB_MAX_PIXELS"
# The largest image decoded, in pixels after any reduced decode (a JPEG's DCT scaling): a decoding thread holds at most
# about 8 bytes per pixel of it (an RGBA image and its RGB composite; 32-bit ones a little more), so this bounds the
# memory per thread that a small file declaring a huge size (a decompression bomb) can take. 50 megapixels holds any
# camera photo (8000×6000 is 48).
DEFAULT_MAX_PIXELS = 50_000_000
OWN_LOADERS = ("WEBP",)  # formats Pillow decodes without tiles (their open already reads the stream)
_thread = threading.local()  # `serial` is set in the threads of a pool that already decodes in parallel
T = TypeVar("T")


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension (case-insensitive)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def max_pixels() -> int:
    """The decoding cap in pixels: $TRANSFERLAB_MAX_PIXELS, default DEFAULT_MAX_PIXELS; a DataError if malformed."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.replace("_", "").isdigit() or int(text) <= 0:
        raise DataError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got {text!r}")
    return int(text)


def probe_image(path: str | os.PathLike, cap: int | None = None) -> str | None:
    """Why a file is not a readable image (empty, bad header, above the `cap` of pixels, data missing), or None; only a
    file whose data looks incomplete (see `looks_complete`) is decoded, at the smallest scale its format offers."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with Image.open(path) as image:  # parses the header only
            if not image.width or not image.height:
                return "image has no pixels"
            image.draft("RGB", (1, 1))  # JPEG: the smallest DCT scale, the least any decode of this file costs
            if too_large := oversize(image, max_pixels() if cap is None else cap):
                return too_large
            if not looks_complete(path, image, size):
                image.load()  # the whole file, once: raises if it really is cut short
    except UnidentifiedImageError:
        return "not an image PIL can identify"
    except Exception as exc:  # PIL raises many types (SyntaxError, struct.error, OSError, ...) for broken files
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def oversize(image: Image.Image, cap: int) -> str | None:
    """Why an opened image is too large to decode (more than `cap` pixels at its current draft scale), or None."""
    pixels = image.width * image.height
    if pixels <= cap:
        return None
    return (f"{image.width}×{image.height} pixels to decode, above the cap of {cap:,} that bounds memory "
            f"(set {MAX_PIXELS_ENV} to raise it)")


def looks_complete(path: str | os.PathLike, image: Image.Image, size: int) -> bool:
    """Whether the header's promise fits the file: a JPEG or PNG ends with its end marker, the pixel data (Pillow's
    tiles) exists and starts inside the file, and uncompressed data fits in it; no pixel data is read."""
    if not image.tile:
        return image.format in OWN_LOADERS
    for codec, extents, offset, args in (tuple(tile)[:4] for tile in image.tile):
        if offset >= size or (codec == "raw" and offset + raw_bytes(extents, args) > size):
            return False
    return ends_complete(path, image.format, size)


def raw_bytes(extents: tuple[int, int, int, int], args: object) -> int:
    """Bytes an uncompressed tile reads: rows × stride, the stride from its arguments or its raw mode (0 if neither tells)."""
    args = args if isinstance(args, tuple) else (args,)
    x0, y0, x1, y1 = extents
    stride = args[1] if len(args) > 1 and isinstance(args[1], int) else 0
    if not stride:
        try:
            mode = ImageMode.getmode(args[0])
        except (KeyError, TypeError, IndexError):  # a raw mode that is no image mode (BGR;15, 1;I, ...): bits unknown
            return 0
        bits = 1 if args[0] == "1" else 8 * int(mode.typestr[-1]) * len(mode.bands)
        stride = ((x1 - x0) * bits + 7) // 8
    return abs(stride) * (y1 - y0)


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
        if too_large := oversize(image, max_pixels()):
            raise DataError(too_large)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        rgb = to_rgb(image)
    return np.asarray(rgb if size is None else fit(rgb, size))


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: high bit depths scaled down (`to_8bit`), transparent pixels composited onto BACKGROUND (white)."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = to_8bit(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        return on_background(image)
    return image if image.mode == "RGB" else image.convert("RGB")  # an RGB image is not copied: it may be large


def on_background(image: Image.Image) -> Image.Image:
    """RGB of an image with transparency composited onto BACKGROUND, BAND_ROWS rows at a time, so that a large image
    costs one RGB copy instead of three RGBA ones."""
    rgb = Image.new("RGB", image.size)
    for top in range(0, image.height, BAND_ROWS):
        band = image.crop((0, top, image.width, min(top + BAND_ROWS, image.height))).convert("RGBA")  # crop keeps palette and transparency
        rgb.paste(Image.alpha_composite(Image.new("RGBA", band.size, BACKGROUND), band).convert("RGB"), (0, top))
    return rgb


def to_8bit(image: Image.Image) -> Image.Image:
    """An 8-bit L image from a high bit depth: the top 8 of its `bits_per_sample` bits; float (F) maps 0..1 to 0..255."""
    values = np.array(image)  # a writable copy, scaled in place below
    if image.mode == "F":
        np.clip(values, 0.0, 1.0, out=values)
        values *= 255
        np.round(values, out=values)
    else:
        bits = bits_per_sample(image, values)
        np.clip(values, 0, 2 ** bits - 1, out=values)
        values >>= bits - 8
    return Image.fromarray(values.astype(np.uint8))


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
