"""TransferContext and the feature cache: splits, frozen extraction once per model and target, fresh models for fine-tuning."""

import copy

import numpy as np
import pytest
import torch

from tiny_backbone import Tiny
from transferlab import DataError
from transferlab.cache import cache_dir
from transferlab.features import cached_features, extract_features, weights_digest
from transferlab.image_cache import image_cache
from transferlab.loader import normalize
from transferlab.tasks import TransferContext
from transferlab_sources.synthetic import Synthetic

RES = 16


def target(**kw) -> Synthetic:
    """Four held-out hue classes of one shape at 16 px: 10 train, 4 val, 6 test images each unless overridden."""
    return Synthetic(**{"branching": (1, 8), "heldout": 4, "part": "heldout", "train": 10, "val": 4, "test": 6, "size": RES, **kw})


def context(source=None, model=None, device="cpu", **kw) -> TransferContext:
    backbone = Tiny()
    return TransferContext(source or target(), backbone, model or backbone.build_seeded(5, RES, seed=0), RES, device=device, **kw)


def test_features_are_the_pooled_penultimate_activations_in_sample_order():
    ctx = context()
    x, y = ctx.features("val")
    assert x.dtype == np.float32 and x.shape == (16, 16) and y.dtype == np.int64
    assert y.tolist() == ctx.target.index.labels[ctx.target.index.split_samples("val")].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    images = torch.from_numpy(image_cache(ctx.target, RES)[ctx.samples("val")])
    with torch.no_grad():
        expected = ctx.model.forward_head(ctx.model.forward_features(normalize(images)), pre_logits=True)
    np.testing.assert_allclose(x, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_features_are_computed_once_then_read_from_memory_and_disk():
    ctx = context(batch_size=7)
    x, _ = ctx.features("train")
    assert ctx.model.passes == 6  # 40 images in batches of 7
    assert ctx.features("train")[0] is x and ctx.model.passes == 6  # memory
    assert len(list(cache_dir("features").glob("features-*.npy"))) == 1
    again = TransferContext(ctx.target, ctx.backbone, ctx.model, RES, device="cpu")  # a new run of the same model: disk
    np.testing.assert_array_equal(again.features("train")[0], x)
    assert ctx.model.passes == 6
    again.features("test")
    assert ctx.model.passes == 7 and len(list(cache_dir("features").glob("features-*.npy"))) == 2


def test_other_weights_resolution_or_target_extract_anew():
    ctx = context()
    ctx.features("test")
    changed = copy.deepcopy(ctx.model)
    with torch.no_grad():
        changed.body[0].weight[0, 0, 0, 0] += 1
    others = [
        TransferContext(ctx.target, ctx.backbone, changed, RES, device="cpu"),
        TransferContext(ctx.target, ctx.backbone, copy.deepcopy(ctx.model), 8, device="cpu"),
        TransferContext(target(seed=1), ctx.backbone, copy.deepcopy(ctx.model), RES, device="cpu"),
    ]
    for other in others:
        assert not np.array_equal(other.features("test")[0], ctx.features("test")[0])
    assert len(list(cache_dir("features").glob("features-*.npy"))) == 4


def test_an_interrupted_extraction_leaves_nothing_behind():
    def killed():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_features(("key",), killed)
    assert list(cache_dir("features").iterdir()) == []
    assert cached_features(("key",), lambda: np.ones((2, 3), np.float32)).sum() == 6
    assert cached_features(("key",), killed).sum() == 6  # read back, not recomputed


def test_weights_digest_follows_every_parameter_and_buffer_but_not_memory_layout():
    model = Tiny().build(5, RES)
    digest = weights_digest(model)
    assert weights_digest(copy.deepcopy(model)) == digest
    assert weights_digest(copy.deepcopy(model).to(memory_format=torch.channels_last)) == digest
    model.body[1].running_mean += 0.5
    assert weights_digest(model) != digest


def test_frozen_extraction_leaves_the_model_unchanged_and_fresh_models_are_copies():
    ctx = context()
    before = copy.deepcopy(ctx.model.state_dict())
    ctx.features("train")
    after = ctx.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm statistics included
    assert not ctx.model.training
    fresh = ctx.fresh_model(3)
    assert fresh.training and fresh.head.out_features == 3 and ctx.model.head.out_features == 5
    assert torch.equal(fresh.body[0].weight, ctx.model.body[0].weight)
    with torch.no_grad():
        fresh.body[0].weight.zero_()
    assert ctx.model.body[0].weight.abs().sum() > 0


def test_splits_come_from_the_target_and_images_from_its_cache():
    ctx = context()
    assert [len(ctx.samples(s)) for s in ("train", "val", "test")] == [40, 16, 24]
    assert ctx.num_classes == 4
    images = ctx.images("test")
    assert images.dtype == np.uint8 and images.shape == (24, RES, RES, 3)
    np.testing.assert_array_equal(images, ctx.target.load(ctx.samples("test"), size=RES))
    with pytest.raises(DataError, match="unknown split"):
        ctx.samples("trian")


def test_a_target_without_val_gets_a_fixed_fifth_of_each_class_carved_from_train():
    ctx = context(target(val=0))
    train, val = ctx.samples("train"), ctx.samples("val")
    original = ctx.target.index.split_samples("train")
    assert np.intersect1d(train, val).size == 0 and np.array_equal(np.union1d(train, val), original)
    assert np.bincount(ctx.labels("val")).tolist() == [2, 2, 2, 2]
    assert np.array_equal(context(target(val=0), seed=5).samples("val"), val)  # the same for every run and seed


def test_a_target_without_test_images_is_refused():
    with pytest.raises(DataError, match="no test split"):
        context(target(test=0)).features("train")


def test_extraction_on_the_device_matches_the_cpu(device):
    """Exact on the CPU; within bf16 precision (8 bits of mantissa, through two convolutions) under CUDA autocast."""
    ctx = context(device=device, batch_size=7)
    cpu_model = copy.deepcopy(ctx.model).cpu()
    samples = ctx.samples("train")
    expected = extract_features(ctx.backbone, cpu_model, ctx.image_cache, samples, torch.device("cpu"), batch_size=7)
    x, y = ctx.features("train")
    assert x.dtype == np.float32 and x.shape == expected.shape == (40, 16) and y.tolist() == ctx.labels("train").tolist()
    assert ctx.model.passes == 6 and all(p.device == device for p in ctx.model.parameters())
    if device.type == "cpu":
        np.testing.assert_array_equal(x, expected)
    else:
        assert np.abs(x - expected).max() <= 0.03 * np.abs(expected).max()
        assert np.corrcoef(x.ravel(), expected.ravel())[0, 1] > 0.999
