"""The loader: resident and streamed batches are identical; augmentation is a seeded random resized crop + flip + normalize."""

import numpy as np
import pytest
import torch

from transferlab import loader
from transferlab.devices import synchronize
from transferlab.loader import MEAN, STD, augment, batches, epoch_generator, fits_on_device, normalize


@pytest.fixture
def images():
    """A memory-mapped-like uint8 cache of 50 random 12×12 images."""
    return np.random.default_rng(0).integers(0, 256, (50, 12, 12, 3), dtype=np.uint8)


def collect(images, samples, labels, **kw):
    return list(batches(images, samples, labels, 8, "cpu", **kw))


def test_normalize_standardises_each_channel_and_returns_nchw():
    x = torch.tensor([10, 128, 250], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 5, 4, 3)
    out = normalize(x)
    assert out.shape == (2, 3, 5, 4) and out.dtype == torch.float32 and out.is_contiguous()
    expected = [(v / 255 - m) / s for v, m, s in zip((10, 128, 250), MEAN, STD)]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))


def test_augment_is_deterministic_given_the_generator_and_differs_otherwise(images):
    x = torch.from_numpy(images[:16])
    a, b = augment(x, epoch_generator(0, 0)), augment(x, epoch_generator(0, 0))
    assert a.shape == (16, 3, 12, 12) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, augment(x, epoch_generator(0, 1)))
    assert not torch.allclose(a, augment(x, epoch_generator(1, 0)))


def test_full_size_crops_reproduce_the_image_or_its_mirror(images, monkeypatch):
    monkeypatch.setattr(loader, "CROP_SCALE", (1.0, 1.0))
    monkeypatch.setattr(loader, "CROP_RATIO", (1.0, 1.0))
    x = torch.from_numpy(images[:32])
    out = augment(x, epoch_generator(3, 0))
    plain, mirrored = normalize(x), normalize(x.flip(2))
    same = [torch.allclose(o, p, atol=1e-4) for o, p in zip(out, plain)]
    flipped = [torch.allclose(o, m, atol=1e-4) for o, m in zip(out, mirrored)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 8 <= sum(flipped) <= 24  # about half are mirrored


def test_crops_cover_35_to_100_percent_with_aspect_ratio_from_3_4_to_4_3():
    theta = loader.crop_transforms(20_000, epoch_generator(0, 0))
    width, height = theta[:, 0, 0].abs(), theta[:, 1, 1]
    area, ratio = width * height, width / height
    assert area.min() >= 0.35 - 1e-6 and area.max() <= 1 + 1e-6 and area.mean() > 0.6
    assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert ((theta[:, :, 2].abs() + torch.stack([width, height], 1)) <= 1 + 1e-6).all()  # crops stay inside the image
    assert abs((theta[:, 0, 0] < 0).float().mean() - 0.5) < 0.02


def test_resident_and_streamed_batches_are_identical(images):
    samples = np.array([3, 7, 7, 1, 40, 22, 9, 13, 30, 31, 32, 0, 49, 5, 17, 18, 19, 26, 11, 2])
    labels = np.arange(len(samples)) % 4
    for epoch in (0, 1):
        kw = dict(shuffle=True, seed=5, epoch=epoch)
        resident = collect(images, samples, labels, resident=True, **kw)
        streamed = collect(images, samples, labels, resident=False, **kw)
        on_device = collect(torch.from_numpy(images), samples, labels, resident=True, **kw)  # already on the device
        assert [len(y) for _, y in resident] == [8, 8, 4]
        g1, g2 = epoch_generator(5, epoch), epoch_generator(5, epoch)
        for (xr, yr), (xs, ys), (xd, yd) in zip(resident, streamed, on_device):
            assert xr.dtype == torch.uint8 and yr.dtype == torch.int64
            assert torch.equal(xr, xs) and torch.equal(xr, xd) and torch.equal(yr, ys) and torch.equal(yr, yd)
            torch.testing.assert_close(augment(xr, g1), augment(xs, g2), rtol=0, atol=0)


def test_an_epoch_visits_every_sample_once_in_a_seeded_order(images):
    samples, labels = np.arange(10, 30), np.arange(20)
    def order(**kw):
        return torch.cat([y for _, y in collect(images, samples, labels, resident=True, **kw)]).tolist()

    first = order(shuffle=True, seed=0, epoch=0)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert first == order(shuffle=True, seed=0, epoch=0)
    assert first != order(shuffle=True, seed=0, epoch=1)
    assert order(shuffle=False, seed=0, epoch=3) == list(range(20))
    kept = [y for _, y in collect(images, samples, labels, resident=False, shuffle=True, seed=0, epoch=0, drop_last=True)]
    assert [len(y) for y in kept] == [8, 8]
    x, y = next(iter(collect(images, samples, labels, resident=False, shuffle=False, seed=0, epoch=0)))
    assert torch.equal(x, torch.from_numpy(images[10:18])) and y.tolist() == list(range(8))


def test_fits_on_device_compares_with_a_share_of_memory():
    assert fits_on_device(1 << 20, "cpu", 0.5)
    assert not fits_on_device(1 << 60, "cpu", 1.0)
    ram = loader.memory_bytes(torch.device("cpu"))
    assert fits_on_device(ram // 4, "cpu", 0.5) and not fits_on_device(ram // 4, "cpu", 0.2)


# ---- on the device (the [cuda] cases run on a GPU machine) ----------------------------------------------------


def test_resident_and_streamed_batches_are_identical_on_the_device(images, device):
    samples = np.array([3, 7, 7, 1, 40, 22, 9, 13, 30, 31, 32, 0, 49, 5, 17, 18, 19, 26, 11, 2])
    labels = np.arange(len(samples)) % 4
    kw = dict(shuffle=True, seed=5, epoch=1)
    reference = list(batches(images, samples, labels, 8, "cpu", resident=True, **kw))
    on_device = torch.from_numpy(images).to(device)
    for source, resident in ((images, True), (images, False), (on_device, True), (on_device, False)):
        got = list(batches(source, samples, labels, 8, device, resident=resident, **kw))
        synchronize(device)
        assert [len(y) for _, y in got] == [8, 8, 4]
        for (x, y), (xr, yr) in zip(got, reference):
            assert x.device == device and y.device == device and x.dtype == torch.uint8 and y.dtype == torch.int64
            assert torch.equal(x.cpu(), xr) and torch.equal(y.cpu(), yr)


def test_augment_on_the_device_equals_augment_on_the_cpu(images, device):
    x = torch.from_numpy(images[:16])
    expected = augment(x, epoch_generator(2, 3))
    out = augment(x.to(device), epoch_generator(2, 3))  # crops drawn on the CPU generator: the same crops
    assert out.device == device and out.dtype == torch.float32 and out.shape == (16, 3, 12, 12)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)  # standardised values lie within ±3


def test_normalize_and_augment_give_channels_last_on_a_gpu_and_contiguous_on_the_cpu(images, device):
    x = torch.from_numpy(images[:4])
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    for out in (normalize(x.to(device)), augment(x.to(device), epoch_generator(0, 0))):
        assert out.device == device and out.is_contiguous(memory_format=layout)
        assert out.is_contiguous() == (device.type != "cuda")  # 12×12×3 images: the two layouts differ
    torch.testing.assert_close(normalize(x.to(device)).cpu(), normalize(x), rtol=1e-6, atol=1e-6)
