"""Image files for file sources: which names are images, header probes, RGB decoding at a square size."""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # as torchvision's


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension (case-insensitive)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def probe_image(path: str | os.PathLike) -> str | None:
    """Why a file is not a readable image (empty, not an image, bad header), or None when its header reads."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as image:  # parses the header only
            if not image.width or not image.height:
                return "image has no pixels"
    except UnidentifiedImageError:
        return "not an image PIL can identify"
    except Exception as exc:  # PIL raises many types (SyntaxError, struct.error, ...) for broken headers
        return f"unreadable header ({type(exc).__name__}: {exc})"
    return None


def decode_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels; with `size`, the shorter side resized to `size` and centre-cropped to size×size."""
    with Image.open(path) as image:
        if size is not None:
            image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still at least size×size
        rgb = image.convert("RGB")
    return np.asarray(rgb if size is None else fit(rgb, size))


def fit(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and centre-crop to size×size, in one resampling step."""
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)
