"""Image files for file sources: which names are images, probes, RGB decoding at a square size, decoding in processes."""

import io
import multiprocessing
import os
import signal
import struct
import sys
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError
from PIL.Image import Transpose

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
# A PNG above the cap (not interlaced, at most 4 bytes per pixel: every 8-bit or palette PNG) is instead decoded in bands of
# about BAND_PIXELS pixels, each reduced at once, so that its memory stays near that of one band whatever its size.
BAND_PIXELS = 1 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each PNG colour type
PNG_TYPE_OF_BPP = {1: 0, 2: 4, 3: 2, 4: 6}  # an 8-bit colour type whose pixels have that many bytes: PNG filters act per byte
READ_BYTES = 1 << 20  # compressed bytes read at a time
EXIF_TRANSPOSE = {2: Transpose.FLIP_LEFT_RIGHT, 3: Transpose.ROTATE_180, 4: Transpose.FLIP_TOP_BOTTOM, 5: Transpose.TRANSPOSE,
                  6: Transpose.ROTATE_270, 7: Transpose.TRANSVERSE, 8: Transpose.ROTATE_90}  # as ImageOps.exif_transpose
OWN_LOADERS = ("WEBP",)  # formats Pillow decodes without tiles (their open already reads the stream)
Image.MAX_IMAGE_PIXELS = None  # Pillow's bomb check refuses valid large files at open; the cap above bounds memory instead
DECODER_ENV = "TRANSFERLAB_DECODER"  # pil, nvjpeg or auto (the default: nvjpeg where torch is in use and sees a GPU)
PROCESS_FROM = 64  # files: fewer decode in threads of this process, as starting the decoding processes costs more
FILES_PER_TASK = 64  # files per task when one call's files are spread over the decoding processes
_thread = threading.local()  # `serial` is set in the threads of a pool that already decodes in parallel
_pool: ProcessPoolExecutor | None = None  # the decoding processes, started on first use
_pool_lock = threading.Lock()


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
    """Why a file is not a readable image (empty, bad header, above the `cap` of pixels unless it is a PNG that decodes in
    bands, data missing), or None; only a file whose data looks incomplete (see `looks_complete`) is decoded, at the smallest scale its format offers."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with Image.open(path) as image:  # parses the header only
            if not image.width or not image.height:
                return "image has no pixels"
            image.draft("RGB", (1, 1))  # JPEG: the smallest DCT scale, the least any decode of this file costs
            if (too_large := oversize(image, max_pixels() if cap is None else cap)) and not png_layout(path, image):
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


def decode_image(path: str | os.PathLike, size: int | None = None, cap: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels as displayed (EXIF orientation applied); with `size`, shorter side resized to `size`,
    centre-cropped; at most `cap` pixels decoded (default `max_pixels()`)."""
    cap = max_pixels() if cap is None else cap
    with Image.open(path) as image:
        if size is not None:
            image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still at least size×size
        if too_large := oversize(image, cap):
            layout = png_layout(path, image)
            if size is None or layout is None:
                raise DataError(too_large + ("; a training size (size=N) decodes it in bands" if layout else ""))
            return np.asarray(fit(reduced_png(path, image, layout, size, cap), size))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        rgb = to_rgb(image)
    return np.asarray(rgb if size is None else fit(rgb, size))


def png_layout(path: str | os.PathLike, image: Image.Image) -> tuple[int, int, int] | None:
    """(width, bytes per pixel, bytes per row) of a PNG that `reduced_png` can decode in bands: not interlaced, not an
    animation, at most 4 bytes per pixel; None for other files."""
    if image.format != "PNG" or getattr(image, "n_frames", 1) != 1:
        return None
    with open(path, "rb") as f:
        head = f.read(33)
    width, _, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    channels = PNG_CHANNELS.get(color_type)
    if head[12:16] != b"IHDR" or interlace or channels is None:
        return None
    bpp = max(1, channels * depth // 8)
    return (width, bpp, (width * channels * depth + 7) // 8) if bpp in PNG_TYPE_OF_BPP else None


def png_chunks(path: str | os.PathLike):
    """(type, data) of every chunk of a PNG file but IDAT, whose data is yielded in pieces of up to READ_BYTES as (b"IDAT", piece)."""
    with open(path, "rb") as f:
        f.read(len(PNG_SIGNATURE))
        while len(head := f.read(8)) == 8:
            length, kind = struct.unpack(">I", head[:4])[0], head[4:]
            if kind == b"IDAT":
                while length > 0 and (piece := f.read(min(length, READ_BYTES))):
                    length -= len(piece)
                    yield kind, piece
            else:
                yield kind, f.read(length)
            f.read(4)  # CRC: the decoder below fails on data that does not inflate
            if kind == b"IEND":
                return


def png_rows(path: str | os.PathLike, rowbytes: int, rows: int):
    """The filtered rows (a filter byte, then `rowbytes`) of a PNG's IDAT stream, `rows` at a time (fewer at the end)."""
    inflate, buffer, step = zlib.decompressobj(), bytearray(), rows * (rowbytes + 1)
    for kind, piece in png_chunks(path):
        if kind != b"IDAT":
            continue
        while piece:
            buffer += inflate.decompress(piece, step)
            piece = inflate.unconsumed_tail
            while len(buffer) >= step:
                yield bytes(buffer[:step])
                del buffer[:step]
    if buffer := buffer + inflate.flush():
        yield bytes(buffer[:len(buffer) - len(buffer) % (rowbytes + 1)])


def band_png(header: bytes, chunks: list[tuple[bytes, bytes]], height: int, data: bytes) -> Image.Image:
    """A PNG of the header's IHDR with `height` rows of `data` (already filtered) and the given chunks, decoded by Pillow."""
    ihdr = header[:4] + struct.pack(">I", height) + header[8:]
    parts = [PNG_SIGNATURE, png_chunk(b"IHDR", ihdr), *(png_chunk(k, d) for k, d in chunks),
             png_chunk(b"IDAT", zlib.compress(data, 0)), png_chunk(b"IEND", b"")]
    image = Image.open(io.BytesIO(b"".join(parts)))
    image.load()
    return image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def reduced_png(path: str | os.PathLike, image: Image.Image, layout: tuple[int, int, int], size: int, cap: int) -> Image.Image:
    """RGB of a large PNG reduced by a whole factor to a shorter side of at least 2·size (as Pillow's reduce), decoded
    in bands: each band is unfiltered through an 8-bit PNG of as many bytes per pixel (row after row, the last row of the
    previous band before it), then decoded with the file's own header and palette, made RGB and reduced; EXIF orientation applied."""
    width, bpp, rowbytes = layout
    factor = max(1, min(image.size) // (2 * size))
    reduced_pixels = -(-image.width // factor) * -(-image.height // factor)
    if reduced_pixels > cap:
        raise DataError(f"{image.width}×{image.height} pixels reduce to {reduced_pixels:,}, above the cap of {cap:,} "
                        f"that bounds memory (set {MAX_PIXELS_ENV} to raise it)")
    chunks = {}
    for kind, data in png_chunks(path):  # the header chunks; the palette and transparency come before the pixel data
        if kind == b"IDAT":
            break
        chunks.setdefault(kind, data)
    extras = [(kind, chunks[kind]) for kind in (b"PLTE", b"tRNS") if kind in chunks]
    raw_header = struct.pack(">IIBBBBB", rowbytes // bpp, 0, 8, PNG_TYPE_OF_BPP[bpp], 0, 0, 0)
    direct = chunks[b"IHDR"][8:10] == raw_header[8:10] and b"tRNS" not in chunks  # 8-bit L, LA, RGB or RGBA: unfiltered is decoded
    rows = factor * max(1, BAND_PIXELS // (width * factor))
    out, top, previous = Image.new("RGB", (-(-image.width // factor), -(-image.height // factor))), 0, None
    for band in png_rows(path, rowbytes, rows):
        n = len(band) // (rowbytes + 1)
        if not n:
            break
        unfiltered = band_png(raw_header, [], n + (previous is not None), (b"" if previous is None else b"\x00" + previous) + band)
        if previous is not None:
            unfiltered = unfiltered.crop((0, 1, unfiltered.width, unfiltered.height))
        raw = unfiltered.tobytes()
        previous = raw[-rowbytes:]
        if not direct:
            unfiltered = band_png(chunks[b"IHDR"], extras, n, b"".join(b"\x00" + raw[i:i + rowbytes] for i in range(0, len(raw), rowbytes)))
        out.paste(to_rgb(unfiltered).reduce(factor), (0, top // factor))
        top += n
    if top < image.height:
        raise DataError(f"PNG data ends after {top} of {image.height} rows")
    exif = Image.Exif()
    exif.load(chunks.get(b"eXIf"))  # Pillow's getexif() would load the whole image to look for one after the pixels
    method = EXIF_TRANSPOSE.get(exif.get(0x0112))  # 0x0112: the EXIF orientation tag
    return out if method is None else out.transpose(method)


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
    """Mark this thread as a worker of a pool that already decodes in parallel (a ThreadPoolExecutor initializer): its
    calls of `decode_files` decode in one task, in this thread below PROCESS_FROM files, else in one decoding process."""
    _thread.serial = True


def try_decode(path: str | os.PathLike, size: int | None, cap: int) -> tuple[np.ndarray | None, str | None]:
    """Decoded pixels (see `decode_image`), or None and the reason decoding failed."""
    try:
        return decode_image(path, size, cap), None
    except Exception as exc:  # PIL raises many types for corrupt data
        return None, f"{type(exc).__name__}: {exc}"


def decode_task(root: str, paths: Sequence[str], size: int | None, cap: int) -> list[tuple[np.ndarray | None, str | None]]:
    """`try_decode` of each file below `root`, one after another: one task of a decoding process."""
    return [try_decode(Path(root) / p, size, cap) for p in paths]


def decode_files(root: str | os.PathLike, paths: Sequence[str], size: int | None) -> list[tuple[np.ndarray | None, str | None]]:
    """(pixels, None) or (None, reason) per file below `root`, in order: on the GPU with nvjpeg where `gpu_decoding()`
    (size given), else in usable_cpus() processes from PROCESS_FROM files on (in tasks of FILES_PER_TASK; in one task in
    a thread marked by `decode_serially`), below that in threads (serially in a marked thread)."""
    root, cap, serial = str(root), max_pixels(), getattr(_thread, "serial", False)
    if size is not None and len(paths) and gpu_decoding():
        from .gpu_decode import decode_on_gpu  # imports torch, which is already in use here
        return decode_on_gpu(root, paths, size, cap)
    if len(paths) < PROCESS_FROM or usable_cpus() < 2:
        if serial or len(paths) < 2:
            return decode_task(root, paths, size, cap)
        with ThreadPoolExecutor(max_workers=usable_cpus()) as threads:
            return list(threads.map(lambda p: try_decode(Path(root) / p, size, cap), paths))
    step = len(paths) if serial else FILES_PER_TASK
    tasks = [paths[i:i + step] for i in range(0, len(paths), step)]
    try:
        futures = [decoding_pool().submit(decode_task, root, task, size, cap) for task in tasks]
        return [result for future in futures for result in future.result()]
    except BrokenProcessPool:
        reset_pool()
        raise DataError(f"a decoding process died while decoding {len(paths)} images under {root}, from {paths[0]} to {paths[-1]}: "
                        "out of memory, or it started by running a script that lacks `if __name__ == '__main__':`") from None


def decoding_pool() -> ProcessPoolExecutor:
    """The usable_cpus() decoding processes (forkserver where the system has it, else spawn: never a fork of a process with
    threads); as with any such pool, they import the main module, so a script must start work under `if __name__ == '__main__':`."""
    global _pool
    with _pool_lock:
        if _pool is None:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            _pool = ProcessPoolExecutor(usable_cpus(), mp_context=multiprocessing.get_context(method), initializer=ignore_interrupts)
        return _pool


def reset_pool() -> None:
    """Shut the decoding processes down (a broken pool, say); the next call starts new ones."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def ignore_interrupts() -> None:
    """In a decoding process: leave Ctrl-C to the parent, which stops submitting and keeps the rows already written."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decoder() -> str:
    """$TRANSFERLAB_DECODER: 'pil', 'nvjpeg' or 'auto' (default); a DataError otherwise."""
    name = os.environ.get(DECODER_ENV, "").strip().lower() or "auto"
    if name not in ("pil", "nvjpeg", "auto"):
        raise DataError(f"{DECODER_ENV} must be pil, nvjpeg or auto, got {name!r}")
    return name


def gpu_decoding() -> bool:
    """Whether JPEGs decode with nvjpeg: $TRANSFERLAB_DECODER=nvjpeg, or auto where this process already imported torch
    (so that light commands never import it) and torch sees a GPU."""
    name = decoder()
    if name == "auto":
        torch = sys.modules.get("torch")
        return torch is not None and torch.cuda.is_available()
    return name == "nvjpeg"
