"""Pretraining: schedule, optimizer groups, learning, checkpoints, exact resume after a crash, epochs vs steps."""

import math

import numpy as np
import pytest
import torch

import transferlab as tl
from transferlab import training
from transferlab.image_cache import image_cache
from transferlab.training import learning_rate, make_optimizer, pretrain
from transferlab.training_spec import Training

TINY = "synthetic(branching=(2, 2, 3), train=10, val=4, test=0)"  # 8 classes, 80 training images
BACKBONE = "timm('test_resnet')"


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test process: with pytest -n 2 on two cores, more threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def setup(source_spec=TINY, resolution=16):
    source = tl.source(source_spec)
    manifest = tl.select(source_spec)
    return source, manifest, image_cache(source, resolution), manifest.split(source.index, "val")


def fresh_model(manifest, resolution=16):
    torch.manual_seed(0)
    backbone = tl.get_registry().parse("backbone", BACKBONE)
    return backbone, backbone.build(manifest.num_classes, resolution)


def run(spec, checkpoint, data=None, log=None, **kw):
    """Pretrain a fresh tiny model; return (model, metrics, logged (metrics, step) pairs)."""
    _, manifest, images, val = data or setup()
    backbone, model = fresh_model(manifest)
    logged = []
    metrics = pretrain(backbone, model, images, manifest, val, spec, checkpoint, log or (lambda m, s: logged.append((m, s))), progress=False, **kw)
    return model, metrics, logged


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_learning_rate_warms_up_linearly_then_decays():
    spec = Training(lr=0.4, warmup=0.1)
    lrs = [learning_rate(spec, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.04) and lrs[9] == pytest.approx(0.4) and lrs[10] == pytest.approx(0.4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.001
    assert learning_rate(spec, 55, 100) == pytest.approx(0.2)  # half way through the cosine
    step = Training(lr=0.4, warmup=0.0, schedule="step")
    assert [learning_rate(step, s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.4, 0.4, 0.04, 0.04, 0.004, 0.004])


def test_weight_decay_spares_norms_and_biases():
    _, model = fresh_model(tl.select(TINY))
    for name, spec in (("sgd", Training()), ("adamw", Training(optimizer="adamw", lr=1e-3, weight_decay=0.05))):
        optimizer = make_optimizer(model, spec)
        decay, no_decay = optimizer.param_groups
        assert decay["weight_decay"] == spec.weight_decay and no_decay["weight_decay"] == 0.0
        assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert optimizer.__class__.__name__ == "AdamW" and make_optimizer(model, Training()).defaults["nesterov"]


def test_a_tiny_model_learns_the_synthetic_classes(tmp_path):
    data = setup("synthetic(branching=(2, 2, 3), train=40, val=10, test=0)")
    spec = Training(epochs=6, batch_size=32, resolution=16, optimizer="adamw", lr=0.01, weight_decay=0.05)
    _, metrics, logged = run(spec, tmp_path / "ck.pt", data)
    assert [s for _, s in logged] == [10, 20, 30, 40, 50, 60]  # 320 images, batches of 32: 10 steps per epoch
    assert [m["pretrain.epoch"] for m, _ in logged] == [1, 2, 3, 4, 5, 6]
    assert set(metrics) == {"pretrain.train_loss", "pretrain.val_top1", "pretrain.lr", "pretrain.images_per_s", "pretrain.epoch"}
    assert metrics["pretrain.val_top1"] >= 35  # chance is 12.5 %; about 54 % on 2 CPU cores
    assert logged[-1][0]["pretrain.train_loss"] < logged[0][0]["pretrain.train_loss"] - 0.3
    assert all(m["pretrain.images_per_s"] > 0 for m, _ in logged)


def test_crash_mid_epoch_then_rerun_resumes_to_the_same_weights(tmp_path, monkeypatch):
    spec = Training(epochs=3, batch_size=16, resolution=16, lr=0.05)
    data = setup()
    straight, straight_metrics, straight_log = run(spec, tmp_path / "straight.pt", data)

    calls = {"n": 0}
    real_augment = training.augment

    def crash_in_epoch_two(x, generator):
        calls["n"] += 1
        if calls["n"] == 8:  # 5 steps per epoch: this is the 3rd step of epoch 2
            raise KeyboardInterrupt("killed")
        return real_augment(x, generator)

    monkeypatch.setattr(training, "augment", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "resumed.pt", data)
    monkeypatch.setattr(training, "augment", real_augment)
    saved = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 5) and len(saved["history"]) == 1

    resumed, metrics, logged = run(spec, tmp_path / "resumed.pt", data, logged={5})
    assert [s for _, s in logged] == [10, 15]  # only the epochs that had not finished are trained and logged
    assert same_weights(straight, resumed)
    assert metrics == straight_metrics | {"pretrain.images_per_s": metrics["pretrain.images_per_s"]}
    assert [m["pretrain.val_top1"] for m, _ in logged] == [m["pretrain.val_top1"] for m, _ in straight_log[1:]]

    again, final, logged = run(spec, tmp_path / "resumed.pt", data, logged={5, 10, 15})  # finished: its metrics, no training
    assert logged == [] and same_weights(again, straight) and final == metrics


def test_an_epoch_checkpointed_but_not_logged_is_logged_on_resume_without_training_again(tmp_path, monkeypatch):
    data = setup()
    spec = Training(epochs=3, batch_size=16, resolution=16)
    straight, _, straight_log = run(spec, tmp_path / "a.pt", data)
    recorded = []

    def tracking_fails_in_epoch_two(metrics, step):
        if step == 10:
            raise ConnectionError("tracking server went away")
        recorded.append(step)

    with pytest.raises(ConnectionError):
        run(spec, tmp_path / "b.pt", data, log=tracking_fails_in_epoch_two)
    assert recorded == [5] and torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 2

    steps, real_augment = [], training.augment
    monkeypatch.setattr(training, "augment", lambda x, g: steps.append(1) or real_augment(x, g))
    resumed, _, logged = run(spec, tmp_path / "b.pt", data, logged=set(recorded))
    assert [s for _, s in logged] == [10, 15] and len(steps) == 5  # epoch 2 logged from the checkpoint; only epoch 3 trained
    assert logged[0][0] == straight_log[1][0] | {"pretrain.images_per_s": logged[0][0]["pretrain.images_per_s"]}
    assert same_weights(straight, resumed)


def test_checkpoint_of_another_run_or_format_is_refused(tmp_path):
    data = setup()
    run(Training(epochs=1, batch_size=16, resolution=16), tmp_path / "ck.pt", data)
    with pytest.raises(tl.TransferlabError, match="belongs to another training run"):
        run(Training(epochs=1, batch_size=16, resolution=16, lr=0.2), tmp_path / "ck.pt", data)
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    torch.save(state | {"format": 1}, tmp_path / "ck.pt")
    with pytest.raises(tl.TransferlabError, match="another transferlab version"):
        run(Training(epochs=1, batch_size=16, resolution=16), tmp_path / "ck.pt", data)


def test_length_in_steps_evaluates_every_virtual_epoch_and_at_the_end(tmp_path):
    spec = Training(epochs=None, steps=12, batch_size=16, resolution=16, schedule="step", optimizer="adamw", lr=1e-3)
    _, metrics, logged = run(spec, tmp_path / "ck.pt")
    assert spec.length == "steps"
    assert [s for _, s in logged] == [5, 10, 12] and [m["pretrain.epoch"] for m, _ in logged] == [1, 2, 3]
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["step"] == 12
    assert metrics["pretrain.lr"] == pytest.approx(learning_rate(spec, 11, 12))


def test_streamed_training_equals_resident_training(tmp_path):
    data = setup()
    resident, _, _ = run(Training(epochs=1, batch_size=16, resolution=16), tmp_path / "a.pt", data)
    streamed, _, _ = run(Training(epochs=1, batch_size=16, resolution=16, device_share=1e-12), tmp_path / "b.pt", data)
    assert same_weights(resident, streamed)


def test_subset_smaller_than_a_batch_trains_on_one_batch_per_epoch(tmp_path):
    data = setup()
    _, metrics, logged = run(Training(epochs=2, batch_size=512, resolution=16), tmp_path / "ck.pt", data)
    assert [s for _, s in logged] == [1, 2] and math.isfinite(metrics["pretrain.train_loss"])
    assert 0 <= metrics["pretrain.val_top1"] <= 100 and np.isfinite(metrics["pretrain.images_per_s"])

