"""The synthetic source: determinism, layout, tree, held-out classes, disk cache, separate factors, contact sheet."""


import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transferlab
from transferlab import SpecError, contact_sheet
from transferlab.cli import cli
from transferlab_sources import synthetic
from transferlab_sources.synthetic import Synthetic

SMALL = dict(branching=(2, 2, 3), train=6, val=2, test=2)  # 8 pretraining classes, 80 images


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder; returns a function that switches to a fresh one."""
    def fresh(name: str):
        monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / name))
        return tmp_path / name

    fresh("cache")
    return fresh


def all_pixels(src: Synthetic) -> np.ndarray:
    return src.load(np.arange(len(src.index)))


def test_default_source_is_a_three_level_tree_with_64_pretraining_classes():
    src = transferlab.source("synthetic")
    assert isinstance(src, Synthetic) and src.branching == (4, 4, 5)
    assert src.index.num_classes == 64 and src.tree.num_classes == 64 and src.tree.height == 3
    assert src.index.classes[:2] == ("circle/red/solid", "circle/red/stripes")
    assert src.tree.names[0] == "synthetic" and "circle" in src.tree.nodes and "circle/red" in src.tree.nodes
    assert [src.tree.nodes[n] for n in src.tree.class_nodes] == list(src.index.classes)
    for split, n in (("train", 300), ("val", 50), ("test", 50)):
        assert (src.index.class_counts(split) == n).all()
    assert src.index.files is None


def test_heldout_classes_are_disjoint_and_share_the_coarse_factors():
    pretrain, heldout = Synthetic(), Synthetic(part="heldout")
    assert heldout.index.num_classes == 16
    assert not set(pretrain.index.classes) & set(heldout.index.classes)
    coarse = {c.rsplit("/", 1)[0] for c in pretrain.index.classes}
    assert {c.rsplit("/", 1)[0] for c in heldout.index.classes} == coarse  # every shape/hue group lends one class
    assert Synthetic(heldout=2).index.num_classes == 48 and Synthetic(heldout=2, part="heldout").index.num_classes == 32


def test_index_groups_splits_then_classes():
    src = Synthetic(**SMALL)
    index = src.index
    assert len(index) == 8 * 10
    assert (np.diff(index.splits.astype(int)) >= 0).all()
    for split in ("train", "val", "test"):
        assert (np.diff(index.labels[index.split_samples(split)]) >= 0).all()
    assert list(index.class_counts("train")) == [6] * 8 and list(index.class_counts("test")) == [2] * 8


def test_pixels_are_deterministic_per_seed(cache):
    first = all_pixels(Synthetic(**SMALL))
    assert first.shape == (80, 32, 32, 3) and first.dtype == np.uint8
    cache("other")
    assert np.array_equal(all_pixels(Synthetic(**SMALL)), first)
    other_seed = all_pixels(Synthetic(**SMALL, seed=1))
    assert (other_seed != first).mean() > 0.5


def test_fingerprint_follows_the_generator_version(monkeypatch):
    before = Synthetic(**SMALL).fingerprint
    assert Synthetic(**SMALL).fingerprint == before and Synthetic(**SMALL, seed=1).fingerprint != before
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    assert Synthetic(**SMALL).fingerprint != before


def test_pixels_do_not_depend_on_thread_count(cache, monkeypatch):
    spec = dict(branching=(2, 1, 2), train=70, val=1, test=1)  # 70 images per class crosses a chunk boundary
    monkeypatch.setattr(synthetic, "workers", lambda: 1)
    one = all_pixels(Synthetic(**spec))
    cache("three")
    monkeypatch.setattr(synthetic, "workers", lambda: 3)
    assert np.array_equal(all_pixels(Synthetic(**spec)), one)


def test_more_images_per_class_keep_the_first_ones(cache):
    small, large = Synthetic(branching=(2,), train=66, val=0, test=0), Synthetic(branching=(2,), train=70, val=0, test=0)
    for c in range(2):
        a = small.load(np.flatnonzero(small.index.labels == c))
        b = large.load(np.flatnonzero(large.index.labels == c)[:66])
        assert np.array_equal(a, b)


def test_cache_is_written_once_then_reused(cache, monkeypatch):
    src = Synthetic(**SMALL)
    pixels = all_pixels(src)
    path = src.cache_path
    assert path.exists() and path.parent == cache("cache") / "synthetic"
    mtime = path.stat().st_mtime_ns
    monkeypatch.setattr(synthetic, "render", lambda *a: pytest.fail("regenerated despite a cached file"))
    assert np.array_equal(all_pixels(Synthetic(**SMALL)), pixels)
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_leftover_partial_files_are_never_used(cache):
    reference = all_pixels(Synthetic(**SMALL))
    cache("broken")
    src = Synthetic(**SMALL)
    path = src.cache_path
    stale = path.with_name(f".{path.name}.killed.tmp")  # what a killed writer leaves behind
    stale.write_bytes(b"\x93NUMPY half a file")
    assert np.array_equal(all_pixels(src), reference)
    assert stale.read_bytes() == b"\x93NUMPY half a file" and path.stat().st_size > 5000
    path.write_bytes(path.read_bytes()[:5000])  # a truncated cache file, e.g. from a full disk
    assert np.array_equal(all_pixels(Synthetic(**SMALL)), reference)


def test_load_resizes_on_request():
    src = Synthetic(**SMALL)
    samples = np.array([3, 0, 17])
    native = src.load(samples)
    assert np.array_equal(native[1], src.load(np.array([0]))[0])
    small = src.load(samples, size=16)
    assert small.shape == (3, 16, 16, 3) and small.dtype == np.uint8
    assert np.abs(small.mean((1, 2)) - native.mean((1, 2))).max() < 4


@pytest.mark.parametrize("spec, message", [
    ("synthetic(branching=(9, 2, 2))", "branching[0] counts shapes and must lie in 1..8"),
    ("synthetic(branching=(2, 2, 2, 2, 2))", "branching needs 1 to 4 levels"),
    ("synthetic(branching=())", "branching needs 1 to 4 levels"),
    ("synthetic(branching=(2, 0))", "branching[1] counts hues"),
    ("synthetic(heldout=5)", "heldout must lie in 0..4"),
    ("synthetic(heldout=0, part='heldout')", "part='heldout' needs heldout >= 1"),
    ("synthetic(part='test')", "parameter 'part' expects 'pretrain'|'heldout'"),
    ("synthetic(train=0)", "needs train >= 1"),
    ("synthetic(size=4)", "size must lie in 8..128"),
    ("synthetic(seed=-1)", "seed must be >= 0"),
])
def test_bad_parameters_are_spec_errors(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("[", r"\[").replace("|", r"\|")):
        transferlab.source(spec)


def hue_histograms(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """16-bin hue histogram of the saturated (object) pixels of each image: colour, not brightness or pattern."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b) / (2 * np.pi) % 1
    code = np.arange(len(x))[:, None, None] * 16 + np.minimum((hue * 16).astype(int), 15)
    h = np.bincount(code[mask], minlength=len(x) * 16).reshape(len(x), 16)
    return h / np.maximum(h.sum(1, keepdims=True), 1)


def radial_profiles(mask: np.ndarray) -> np.ndarray:
    """Histogram of object pixels' distances from the object's centroid, in units of √area: shape, not size or angle."""
    n, s = mask.shape[0], mask.shape[1]
    yy, xx = np.mgrid[:s, :s]
    area = np.maximum(mask.sum((1, 2)), 1)[:, None, None]
    cy, cx = (yy * mask).sum((1, 2))[:, None, None] / area, (xx * mask).sum((1, 2))[:, None, None] / area
    bins = np.minimum((np.hypot(yy - cy, xx - cx) / np.sqrt(area) * 10).astype(int), 11)
    h = np.bincount((np.arange(n)[:, None, None] * 12 + bins)[mask], minlength=n * 12).reshape(n, 12)
    return h / area[:, 0]


def power_spectra(x: np.ndarray) -> np.ndarray:
    """Log power of the grey image per spatial frequency ring: texture, not position, angle or colour."""
    grey = x.mean(-1)
    power = np.abs(np.fft.fft2(grey - grey.mean((1, 2), keepdims=True))) ** 2
    s = grey.shape[1]
    f = np.fft.fftfreq(s) * s
    ring = np.minimum(np.hypot(f[:, None], f[None, :]).astype(int), s // 2)
    n = len(x)
    out = np.bincount((np.arange(n)[:, None, None] * (s // 2 + 1) + ring).ravel(), power.ravel(), minlength=n * (s // 2 + 1))
    return np.log(out.reshape(n, -1) + 1e-3)


def nearest_mean_accuracy(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of a nearest-class-mean classifier."""
    classes = np.unique(train_y)
    means = np.stack([train[train_y == c].mean(0) for c in classes])
    pred = classes[np.argmin(((test[:, None] - means[None]) ** 2).sum(-1), 1)]
    return float((pred == test_y).mean())


def test_each_level_is_a_separate_visual_factor():
    src = Synthetic(train=20, val=0, test=20)
    factors = np.array(src.leaves)  # [class, (shape, hue, texture)]
    data = {}
    for split in ("train", "test"):
        samples = src.index.split_samples(split)
        x = src.load(samples).astype(np.float32) / 255
        mask = x.max(-1) - x.min(-1) > 0.25  # the object is coloured, the background grey
        features = {"hue": hue_histograms(x, mask), "radial": radial_profiles(mask), "spectrum": power_spectra(x)}
        data[split] = features, factors[src.index.labels[samples]]
    accuracy = {
        (feature, level): nearest_mean_accuracy(data["train"][0][feature], data["train"][1][:, level], data["test"][0][feature], data["test"][1][:, level])
        for feature in ("hue", "radial", "spectrum") for level in range(3)
    }
    # Four values per level, so chance is 0.25: each feature type reads its own level and (nearly) nothing else.
    for feature, own, floor in (("radial", 0, 0.8), ("hue", 1, 0.9), ("spectrum", 2, 0.65)):
        assert accuracy[feature, own] >= floor, accuracy
        assert all(accuracy[feature, level] <= 0.45 for level in range(3) if level != own), accuracy


def test_show_writes_a_contact_sheet_of_one_tile_per_class(tmp_path):
    out = tmp_path / "sheet.png"
    spec = "synthetic(branching=(2, 2, 3), train=2, val=1, test=1)"
    result = CliRunner().invoke(cli, ["show", spec, "--out", str(out), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "8 classes" in result.output
    src = transferlab.source(spec)
    cols = contact_sheet.columns(src)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert cols == 4 and sheet.shape[1] == contact_sheet.GAP + cols * (64 + contact_sheet.GAP)
    assert sheet.shape[0] > 2 * (64 + contact_sheet.GAP)  # two rows of tiles with names under them
    g = contact_sheet.GAP
    first = src.load(src.index.split_samples("train")[:1])[0]
    assert np.array_equal(sheet[g:g + 64, g:g + 64], first.repeat(2, 0).repeat(2, 1))
