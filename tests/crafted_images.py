"""Image files written byte by byte: headers without pixels, and small files that declare a huge size (decompression bombs)."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, color_type: int = 2) -> bytes:
    """The PNG signature and an IHDR chunk of an 8-bit image (colour type 2: RGB, 6: RGBA)."""
    return PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))


def flat_png(path: Path, width: int, height: int, channels: int = 3) -> Path:
    """A black PNG compressed row by row: a few hundred KB however many pixels it declares."""
    z, row = zlib.compressobj(9), bytes(1 + width * channels)  # filter byte 0, then zero samples
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    path.write_bytes(png_header(width, height, {3: 2, 4: 6}[channels]) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))
    return path


def pixelless_files(folder: Path) -> list[str]:
    """Files whose header parses but whose pixels are missing, one per format; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "header_only.png").write_bytes(png_header(64, 64))  # signature and IHDR, nothing after
    (folder / "no_idat.png").write_bytes(png_header(64, 64) + png_chunk(b"IEND", b""))  # ends as a PNG should, no pixels
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    jpeg = encoded(noise, "JPEG")
    (folder / "no_scan.jpg").write_bytes(jpeg[:jpeg.index(b"\xff\xda")] + b"\xff\xd9")  # tables and frame, no scan, EOI kept
    for name, image_format in (("cut.bmp", "BMP"), ("cut.ppm", "PPM"), ("cut.tif", "TIFF")):
        data = encoded(noise, image_format)
        (folder / name).write_bytes(data[:len(data) // 2])  # uncompressed formats: the header promises more than is there
    return ["cut.bmp", "cut.ppm", "cut.tif", "header_only.png", "no_idat.png", "no_scan.jpg"]


def encoded(image: Image.Image, image_format: str) -> bytes:
    """The bytes of an image saved in a format."""
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()
