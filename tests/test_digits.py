"""The `digits` source: scikit-learn's bundled 8×8 digits, with fixed class-stratified test and val shares."""

import numpy as np
import pytest

from transferlab import source
from transferlab.errors import SpecError
from transferlab.image_cache import cache_path
from transferlab_sources.digits import Digits


def test_sizes_and_stratified_disjoint_splits():
    index = source("digits").index
    assert len(index) == 1797 and index.classes == tuple("0123456789") and source("digits").tree.num_classes == 10
    counts = index.class_counts()
    assert counts.sum() == 1797 and counts.min() >= 170
    for split, share in (("test", 0.2), ("val", 0.1)):
        assert index.class_counts(split).tolist() == np.floor(counts * share + 0.5).astype(int).tolist()  # every class its share
    sizes = [len(index.split_samples(s)) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes == [1259, 179, 359]  # each sample in exactly one split


def test_splits_are_fixed_and_nest_in_their_shares():
    one, again = Digits(), Digits()
    assert one.index.splits.tolist() == again.index.splits.tolist() and one.fingerprint == again.fingerprint
    smaller = Digits(test_fraction=0.1)
    assert set(smaller.index.split_samples("test")) < set(one.index.split_samples("test"))
    assert smaller.fingerprint != one.fingerprint and cache_path(smaller, 16) == cache_path(one, 16)  # same pixels
    assert source("digits(val_fraction=0)").index.class_counts("val").sum() == 0


def test_pixels_are_scaled_to_0_255_gray_rgb_and_resized():
    from sklearn.datasets import load_digits

    src = Digits()
    pixels = src.load(np.arange(1797))
    assert pixels.dtype == np.uint8 and pixels.shape == (1797, 8, 8, 3)
    assert pixels.min() == 0 and pixels.max() == 255
    assert (pixels[..., 0] == pixels[..., 2]).all()
    assert (pixels[..., 1] == np.round(load_digits().images * 255 / 16)).all()
    assert (src.index.labels == load_digits().target).all()
    resized = src.load(np.array([5, 0]), size=32)
    assert resized.shape == (2, 32, 32, 3) and resized.dtype == np.uint8 and resized.max() > 200


def test_the_fingerprint_follows_the_pixels(monkeypatch):
    plain = Digits().fingerprint
    changed = Digits()
    images, labels = changed.arrays
    images = images.copy()
    images[0, 0, 0] ^= 1
    changed.__dict__["arrays"] = (images, labels)
    assert changed.fingerprint != plain and Digits().fingerprint == plain


@pytest.mark.parametrize("spec, message", [
    ("digits(test_fraction=1.0)", "test_fraction must lie in [0, 1)"),
    ("digits(val_fraction=-0.1)", "val_fraction must lie in [0, 1)"),
    ("digits(test_fraction=0.6, val_fraction=0.4)", "must stay below 1"),
])
def test_bad_shares_are_refused(spec, message):
    with pytest.raises(SpecError, match=None) as info:
        source(spec)
    assert message in str(info.value)
