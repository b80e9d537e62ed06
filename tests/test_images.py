"""Decoding and probing single image files: bit depths, EXIF orientation, transparency, truncated files."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crafted_images import PNG_SIGNATURE, flat_png, pixelless_files, png_chunk
from transferlab import images
from transferlab.errors import DataError
from transferlab.images import BACKGROUND, BAND_ROWS, decode_image, fit, probe_image, to_rgb

RED = (255, 0, 0)


def test_a_16_bit_grayscale_ramp_decodes_to_an_8_bit_ramp(tmp_path):
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # 0..65535
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    with Image.open(tmp_path / "ramp.png") as image:
        assert image.mode == "I;16"
    pixels = decode_image(tmp_path / "ramp.png")
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 0], np.arange(256).reshape(16, 16))
    assert (pixels[..., 0] == pixels[..., 2]).all()
    assert decode_image(tmp_path / "ramp.png", size=8).std() > 50  # resized, still a ramp, not saturated white


def test_32_bit_integer_and_float_images_are_scaled_to_8_bits(tmp_path):
    Image.fromarray(np.array([[0, 256, 65535, 100_000]], dtype=np.int32), mode="I").save(tmp_path / "int.tif")
    assert decode_image(tmp_path / "int.tif")[0, :, 0].tolist() == [0, 1, 255, 255]  # 16-bit range, clipped above
    Image.fromarray(np.array([[0, 200, 255]], dtype=np.int32), mode="I").save(tmp_path / "int8.tif")
    assert decode_image(tmp_path / "int8.tif")[0, :, 0].tolist() == [0, 200, 255]  # 8-bit values kept as they are
    Image.fromarray(np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]], dtype=np.float32)).save(tmp_path / "float.tif")
    assert decode_image(tmp_path / "float.tif")[0, :, 0].tolist() == [0, 0, 128, 255, 255]  # 0..1, clipped


def test_exif_orientation_is_applied_before_resizing(tmp_path):
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40] = RED  # left half red, as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the stored left half is at the top
    for name in ("photo.jpg", "photo.png"):
        image.save(tmp_path / name, exif=exif)
        shown = decode_image(tmp_path / name)
        assert shown.shape == (80, 40, 3)
        assert np.abs(shown[5, 20].astype(int) - RED).max() < 10 and shown[75, 20].max() < 10
        square = decode_image(tmp_path / name, size=20)  # centre crop of the displayed image: half red on top
        assert square[2, 10, 0] > 240 and square[17, 10, 0] < 10


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGBA", (4, 4), (0, 0, 0, 0)),
    lambda: Image.new("LA", (4, 4), (0, 0)),
    lambda: palette_with_transparency(),
], ids=["RGBA", "LA", "P"])
def test_transparent_pixels_become_white(tmp_path, make):
    image = make()
    image.save(tmp_path / "t.png")
    assert (decode_image(tmp_path / "t.png") == 255).all()


def test_half_transparent_pixels_blend_onto_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(tmp_path / "half.png")
    assert decode_image(tmp_path / "half.png")[0, 0].tolist() == [255, 127, 127]


def palette_with_transparency() -> Image.Image:
    """A palette image whose only colour (black, index 0) is marked transparent."""
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0])
    image.info["transparency"] = 0
    return image


def noise_file(path: Path) -> Path:
    """A 64×64 noise image (incompressible, so cutting the file cuts pixel data)."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_the_probe_finds_files_cut_short_and_accepts_padding_after_the_end(tmp_path, suffix):
    whole = noise_file(tmp_path / f"whole{suffix}")
    data = whole.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) * 3 // 4])
    assert probe_image(whole) is None
    assert "unreadable" in probe_image(tmp_path / f"cut{suffix}")
    (tmp_path / f"padded{suffix}").write_bytes(data + bytes(100))  # end marker far from the end: decoded once, fine
    assert probe_image(tmp_path / f"padded{suffix}") is None


def test_the_probe_finds_images_whose_header_parses_but_whose_pixels_are_missing(tmp_path):
    for name in pixelless_files(tmp_path):
        assert probe_image(tmp_path / name) is not None, name
        with pytest.raises(OSError):
            decode_image(tmp_path / name)


def test_transparency_is_composited_band_by_band_exactly_as_at_once(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (BAND_ROWS * 2 + 7, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "tall.png")
    whole = Image.alpha_composite(Image.new("RGBA", (5, len(rgba)), BACKGROUND), Image.fromarray(rgba)).convert("RGB")
    np.testing.assert_array_equal(decode_image(tmp_path / "tall.png"), np.asarray(whole))


def test_the_pixel_cap_counts_pixels_after_a_reduced_jpeg_decode(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64), RED).save(tmp_path / "red.jpg")
    Image.new("RGB", (64, 64), RED).save(tmp_path / "red.bmp")
    Image.new("RGB", (64, 64), RED).save(tmp_path / "red.png")
    monkeypatch.setenv("TRANSFERLAB_MAX_PIXELS", "100")
    assert decode_image(tmp_path / "red.jpg", size=8).shape == (8, 8, 3)  # decoded at 1/8 scale: 8×8 pixels
    assert probe_image(tmp_path / "red.jpg") is None
    for path, size in ((tmp_path / "red.jpg", None), (tmp_path / "red.bmp", 8)):
        with pytest.raises(DataError, match="64×64 pixels to decode, above the cap of 100 .*set TRANSFERLAB_MAX_PIXELS to raise it"):
            decode_image(path, size=size)
    assert "above the cap of 100" in probe_image(tmp_path / "red.bmp")
    with pytest.raises(DataError, match="64×64 pixels reduce to 256, above the cap of 100 .*set TRANSFERLAB_MAX_PIXELS"):
        decode_image(tmp_path / "red.png", size=8)  # decoded in bands, but reduced no further than to twice the size


PEAK_MEMORY = """
import sys, warnings
warnings.simplefilter("ignore")  # Pillow warns of a possible decompression bomb above its own limit
from transferlab.images import decode_image

def peak_mb():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, kept across exec)
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]) // 1024

before = peak_mb()
try:
    outcome = decode_image(sys.argv[1], 32).shape
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
print(peak_mb() - before, outcome)
"""


def peak_decoding(path: Path) -> tuple[int, str]:
    """Peak memory (MB above the interpreter with its imports) of decoding `path` at 32 px in a fresh process, and the outcome."""
    out = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(path)], capture_output=True, text=True, check=True, env=os.environ)
    mb, outcome = out.stdout.strip().split(" ", 1)
    return int(mb), outcome


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc (Linux)")
def test_small_files_declaring_huge_images_decode_small_or_fail_clearly_in_bounded_memory(tmp_path):
    Image.new("L", (8000, 6000), 128).save(tmp_path / "huge.jpg")  # 48 megapixels in a few hundred KB
    interlaced = tmp_path / "interlaced.png"  # Adam7 has no bands: above the cap it is refused before any decoding
    interlaced.write_bytes(PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 1))
                           + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))
    cases = {
        flat_png(tmp_path / "under_cap.png", 7000, 7000): "(32, 32, 3)",  # 49 megapixels: decoded, never copied whole
        flat_png(tmp_path / "over_cap.png", 8000, 8000): "(32, 32, 3)",  # 64 megapixels: decoded in bands
        interlaced: "DataError: 8000×8000 pixels to decode, above the cap of 50,000,000",
        tmp_path / "huge.jpg": "(32, 32, 3)",  # decoded at 1/8 scale
    }
    for path, outcome in cases.items():
        assert path.stat().st_size < 2_000_000
        mb, got = peak_decoding(path)
        assert got.startswith(outcome) and mb < 300, (path.name, mb, got)


@pytest.mark.parametrize("mode", ["1", "L", "I;16", "LA", "P4", "P", "Ptrns", "RGB", "RGBA"])
def test_pngs_above_the_cap_decode_in_bands_exactly_as_whole_ones_reduced(tmp_path, monkeypatch, mode):
    noise = np.random.default_rng(0).integers(0, 256, (BAND_ROWS * 3 + 5, 301, 4), dtype=np.uint8)  # odd sizes: partial bands
    rgb = Image.fromarray(noise[..., :3])
    image = {"1": Image.fromarray(noise[..., 0] > 127), "L": Image.fromarray(noise[..., 0]), "LA": Image.fromarray(noise[..., :2].copy(), "LA"),
             "I;16": Image.fromarray(noise[..., 0].astype(np.uint16) * 257), "P4": rgb.quantize(16), "P": rgb.quantize(200),
             "Ptrns": rgb.quantize(200), "RGB": rgb, "RGBA": Image.fromarray(noise)}[mode]
    image.save(tmp_path / "big.png", bits=4 if mode == "P4" else 8, **({"transparency": 3} if mode == "Ptrns" else {}))
    with Image.open(tmp_path / "big.png") as whole:
        whole.load()
        expected = np.asarray(fit(to_rgb(whole).reduce(min(whole.size) // 16), 8))  # reduced to a side of at least 2×8
    monkeypatch.setattr(images, "BAND_PIXELS", 301 * 40)  # many bands of a small file
    monkeypatch.setenv("TRANSFERLAB_MAX_PIXELS", "10000")
    assert probe_image(tmp_path / "big.png") is None  # valid, not "above the cap"
    np.testing.assert_array_equal(decode_image(tmp_path / "big.png", 8), expected)
    with pytest.raises(DataError, match="above the cap of 10,000 .*a training size \\(size=N\\) decodes it in bands"):
        decode_image(tmp_path / "big.png")


def test_a_jpeg_above_pillows_decompression_bomb_limit_is_decoded_reduced_not_refused(tmp_path):
    Image.new("L", (15_000, 12_000), 90).save(tmp_path / "photo.jpg")  # 180 megapixels: Pillow refuses it at open by default
    assert probe_image(tmp_path / "photo.jpg") is None
    mb, got = peak_decoding(tmp_path / "photo.jpg")
    assert got == "(32, 32, 3)" and mb < 300, (mb, got)
