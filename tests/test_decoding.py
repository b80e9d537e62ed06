"""Decoding many image files: in processes (equal to the serial decode, caps and errors kept), and with nvjpeg on a GPU."""

import numpy as np
import pytest
import torch
from PIL import Image

import transferlab_sources.image_folder as image_folder
from transferlab import image_cache as ic
from transferlab import images
from transferlab.errors import DataError


@pytest.fixture
def photos(tmp_path):
    """Two class folders of 12 smooth JPEGs (some grey, some CMYK, some with EXIF orientation) and 4 PNGs, of different sizes."""
    rng = np.random.default_rng(0)
    for k in range(2):
        (tmp_path / f"c{k}").mkdir()
        for i in range(16):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            yy, xx = np.mgrid[0:h, 0:w]
            pixels = np.stack([(xx * (i + 3) + yy * k * 5) % 256, (yy * 4 + i * 9) % 256, (xx + yy) * 2 % 256], -1).astype(np.uint8)
            image = Image.fromarray(pixels)
            if i < 12:
                mode = {3: "L", 5: "CMYK"}.get(i, "RGB")
                exif = image.getexif()
                if i == 7:
                    exif[0x0112] = 6
                image.convert(mode).save(tmp_path / f"c{k}" / f"{i}.jpg", quality=90, exif=exif)
            else:
                image.save(tmp_path / f"c{k}" / f"{i}.png")
    return tmp_path


@pytest.fixture
def in_processes(monkeypatch):
    """Processes from 4 files on, 5 files per task: a small folder takes several tasks over the decoding processes."""
    monkeypatch.setattr(images, "PROCESS_FROM", 4)
    monkeypatch.setattr(images, "FILES_PER_TASK", 5)
    monkeypatch.setattr(images, "usable_cpus", lambda: 2)
    monkeypatch.setenv(images.DECODER_ENV, "pil")


def file_names(root) -> list[str]:
    """Every image below root, relative to it, in order."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.*"))


def test_decoding_in_processes_equals_the_serial_decode_and_fills_the_cache_alike(photos, in_processes):
    paths = file_names(photos)
    serial = images.decode_task(str(photos), paths, 24, images.max_pixels())
    parallel = images.decode_files(photos, paths, 24)
    assert len(parallel) == len(paths) == 32 and all(reason is None for _, reason in parallel)
    for (a, _), (b, _) in zip(serial, parallel):
        assert a.shape == (24, 24, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    source = image_folder.ImageFolder(str(photos), val_fraction=0.0)
    cached = ic.image_cache(source, 24)
    order = [source.index.path(i) for i in range(len(source.index))]
    expected = np.stack([dict(zip(paths, serial))[p][0] for p in order])
    np.testing.assert_array_equal(cached, expected)
    images.decode_serially()  # this thread now stands for a worker of the cache's pool: one task, still equal
    try:
        np.testing.assert_array_equal(np.stack([p for p, _ in images.decode_files(photos, paths, 24)]), np.stack([p for p, _ in serial]))
    finally:
        images._thread.serial = False


def test_the_processes_keep_the_pixel_cap_and_name_the_files_that_fail(photos, in_processes, monkeypatch):
    source = image_folder.ImageFolder(str(photos), val_fraction=0.0)
    assert len(source.index) == 32  # indexed while every file is whole
    images.decode_files(photos, file_names(photos), 8)  # the processes start, with the default cap
    (photos / "c0" / "0.jpg").write_bytes((photos / "c0" / "0.jpg").read_bytes()[:300])  # cut short after indexing
    with pytest.raises(DataError, match=r"could not decode 1 of 32 images under .*:\n  c0/0\.jpg: \w+"):
        source.load(np.arange(32), 8)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "2000")  # set after the processes started: every task carries the cap
    paths = file_names(photos)[1:]
    for path, (pixels, reason) in zip(paths, images.decode_files(photos, paths, None)):
        with Image.open(photos / path) as image:
            width, height = image.size
        if width * height > 2000:
            assert pixels is None and f"{width}×{height} pixels to decode, above the cap of 2,000" in reason
        else:
            assert reason is None and pixels.shape[:2] in ((height, width), (width, height))  # 7.jpg is shown rotated


def test_the_decoder_setting_is_checked(monkeypatch):
    monkeypatch.setenv(images.DECODER_ENV, "turbo")
    with pytest.raises(DataError, match="TRANSFERLAB_DECODER must be pil, nvjpeg or auto, got 'turbo'"):
        images.gpu_decoding()


@pytest.mark.device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvjpeg needs a CUDA GPU")
def test_nvjpeg_decodes_jpegs_close_to_pillow_and_leaves_other_files_to_it(photos):
    from transferlab.gpu_decode import decode_on_gpu

    paths = file_names(photos)
    cpu = images.decode_task(str(photos), paths, 24, images.max_pixels())
    gpu = decode_on_gpu(str(photos), paths, 24, images.max_pixels())
    for path, (a, _), (b, reason) in zip(paths, cpu, gpu):
        assert reason is None and b.shape == (24, 24, 3) and b.dtype == np.uint8
        if path.endswith((".png", "/5.jpg")):  # PNG and CMYK JPEG: decoded by Pillow
            np.testing.assert_array_equal(a, b)
        else:
            assert np.abs(a.astype(int) - b.astype(int)).mean() < 12, path  # other IDCT and resampling, same picture
