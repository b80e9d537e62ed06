"""Decoding and probing single image files: bit depths, EXIF orientation, transparency, truncated files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.images import decode_image, probe_image

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
