"""Pretraining: schedule, optimizer groups, learning, checkpoints, exact resume after a crash, epochs vs steps."""

import contextlib
import copy
import math

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import tiny_specs
import transferlab as tl
from transferlab import pipeline, tracking, training
from transferlab.errors import CheckpointError, DivergedError, SpecError
from transferlab.features import weights_digest
from transferlab.image_cache import image_cache
from transferlab.pipeline import PretrainSpec, parse_training
from transferlab.training import learning_rate, make_optimizer, pretrain
from transferlab.training_spec import Training

TINY = "synthetic(branching=(2, 2, 3), train=10, val=4, test=0)"  # 8 classes, 80 training images
BACKBONE = "timm('test_resnet')"

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store


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


def fresh_model(manifest, resolution=16, backbone_spec=BACKBONE):
    """A backbone and its network, initialised from run seed 0 as the pipeline does (no torch.manual_seed here)."""
    backbone = tl.get_registry().parse("backbone", backbone_spec)
    return backbone, backbone.build_seeded(manifest.num_classes, resolution, seed=0)


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


def crash_at_step(monkeypatch, step: int, train) -> None:
    """Call `train`, killing it (KeyboardInterrupt) when it augments its `step`-th batch."""
    calls, real_augment = [], training.augment

    def crash(x, generator):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt("killed")
        return real_augment(x, generator)

    monkeypatch.setattr(training, "augment", crash)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(training, "augment", real_augment)


def test_crash_mid_epoch_then_rerun_resumes_to_the_same_weights(tmp_path, monkeypatch):
    spec = Training(epochs=3, batch_size=16, resolution=16, lr=0.05)
    data = setup()
    straight, straight_metrics, straight_log = run(spec, tmp_path / "straight.pt", data)

    crash_at_step(monkeypatch, 8, lambda: run(spec, tmp_path / "resumed.pt", data))  # 5 steps per epoch: the 3rd of epoch 2
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


def test_checkpoint_of_another_run_format_or_network_or_unreadable_is_refused(tmp_path):
    data = setup()
    run(Training(epochs=1, batch_size=16, resolution=16), tmp_path / "ck.pt", data)
    with pytest.raises(CheckpointError, match="belongs to another training run"):
        run(Training(epochs=1, batch_size=16, resolution=16, lr=0.2), tmp_path / "ck.pt", data)
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    torch.save(state | {"format": 1}, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match="another transferlab version"):
        run(Training(epochs=1, batch_size=16, resolution=16), tmp_path / "ck.pt", data)
    torch.save(state | {"model": {"not": torch.zeros(1)}}, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match="does not fit this network"):
        run(Training(epochs=1, batch_size=16, resolution=16), tmp_path / "ck.pt", data)
    (tmp_path / "ck.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="is unreadable"):
        run(Training(epochs=1, batch_size=16, resolution=16), tmp_path / "ck.pt", data)


def test_length_in_steps_evaluates_every_epoch_of_a_large_subset_and_at_the_end(tmp_path):
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



class Counted:
    """Counts the calls of `training.evaluate` and `training.save_checkpoint` and the sizes of the training batches."""

    def __init__(self, monkeypatch):
        self.calls = {"evaluate": 0, "save_checkpoint": 0}
        self.batch_sizes = []
        for name in self.calls:
            real = getattr(training, name)
            monkeypatch.setattr(training, name, self.counting(name, real))
        real_augment = training.augment
        monkeypatch.setattr(training, "augment", lambda x, g: self.batch_sizes.append(len(x)) or real_augment(x, g))

    def counting(self, name, real):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            return real(*args, **kwargs)
        return counted


def test_length_in_steps_on_a_small_subset_evaluates_and_checkpoints_about_twenty_times(tmp_path, monkeypatch):
    counted = Counted(monkeypatch)
    spec = Training(steps=60, batch_size=128, resolution=16, optimizer="adamw", lr=1e-3)  # 80 images: one batch is one epoch
    _, metrics, logged = run(spec, tmp_path / "ck.pt")
    assert [s for _, s in logged] == list(range(3, 61, 3))  # every 3 steps (60 / 20), not after every step
    assert counted.calls == {"evaluate": 20, "save_checkpoint": 20}
    assert [m["pretrain.epoch"] for m, _ in logged] == [float(s) for s in range(3, 61, 3)]
    assert counted.batch_sizes == [80] * 60  # as with the length in epochs: the whole subset is one batch
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["step"] == 60 and math.isfinite(metrics["pretrain.train_loss"])


def test_evaluation_interval_is_a_whole_number_of_epochs_covering_a_twentieth_of_the_steps():
    steps = Training(steps=10_000)
    assert training.evaluation_interval(steps, 97, 10_000) == 582  # 6 epochs of 97 steps ≥ 500 steps
    assert training.evaluation_interval(steps, 1, 10_000) == 500
    assert training.evaluation_interval(Training(steps=12), 5, 12) == 5  # at least an epoch
    assert training.evaluation_interval(Training(epochs=4), 7, 28) == 7  # the length in epochs: every epoch


def test_length_in_steps_resumes_after_a_crash_to_the_same_weights(tmp_path, monkeypatch):
    spec = Training(steps=40, batch_size=128, resolution=16, lr=0.05)  # evaluations every 2 steps
    data = setup()
    straight, straight_metrics, straight_log = run(spec, tmp_path / "straight.pt", data)
    crash_at_step(monkeypatch, 12, lambda: run(spec, tmp_path / "resumed.pt", data))  # the 2nd step after the 5th evaluation
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["step"] == 10
    resumed, metrics, logged = run(spec, tmp_path / "resumed.pt", data, logged=set(range(2, 11, 2)))
    assert [s for _, s in logged] == list(range(12, 41, 2))
    assert same_weights(straight, resumed) and metrics["pretrain.val_top1"] == straight_metrics["pretrain.val_top1"]


def test_steps_alone_is_a_length_and_no_length_means_three_epochs():
    assert parse_training("train(steps=100)") == Training(epochs=None, steps=100) and Training(steps=100).length == "steps"
    assert parse_training("train()") == parse_training("train(epochs=3)") == Training() and Training().epochs == 3
    assert parse_training("train()").spec() == parse_training("train(epochs=3)").spec()
    keys = {training_spec: PretrainSpec.parse(TINY, "all", BACKBONE, training_spec, 0).key(tl.select(TINY))
            for training_spec in ("train()", "train(epochs=3)", "train(steps=3)")}
    assert keys["train()"] == keys["train(epochs=3)"] != keys["train(steps=3)"]
    with pytest.raises(tl.SpecError, match="exactly one of epochs or steps"):
        parse_training("train(epochs=2, steps=3)")
    with pytest.raises(tl.SpecError, match="at least 1"):
        parse_training("train(epochs=0)")


# ---- seeds ----------------------------------------------------------------------------------------------------


def test_the_run_seed_fixes_the_initial_weights_and_leaves_the_global_random_state_alone():
    backbone = tl.get_registry().parse("backbone", BACKBONE)
    state = torch.get_rng_state()
    a, b, other = (backbone.build_seeded(8, 16, seed) for seed in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert weights_digest(a) == weights_digest(b) != weights_digest(other)


def test_the_pipeline_builds_the_same_network_for_the_same_seed_in_one_process(tmp_path, monkeypatch):
    """pipeline.run_pretraining as a run calls it, with tracking and training stubbed out: the weights it trains from."""
    built = []
    monkeypatch.setattr(pipeline, "pretrain", lambda backbone, model, *args, **kwargs: built.append(weights_digest(model)))
    monkeypatch.setattr(pipeline.tracking, "active", lambda *args, **kwargs: contextlib.nullcontext())
    monkeypatch.setattr(pipeline.tracking, "log_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(pipeline.tracking, "logged_steps", lambda *args, **kwargs: set())
    for seed in (0, 0, 1):
        spec = PretrainSpec.parse(TINY, "all", BACKBONE, "train(epochs=1, resolution=16)", seed)
        pipeline.run_pretraining(spec, tl.select(TINY, "all", seed), "run", tmp_path / "ck.pt", fresh=False)
        torch.rand(5)  # whatever else the process draws in between
    assert built[0] == built[1] != built[2]


def test_dropout_and_drop_path_follow_the_run_seed(tmp_path):
    data = setup()
    backbone, model = fresh_model(data[1], backbone_spec="timm('test_resnet', drop_rate=0.5, drop_path_rate=0.2)")
    spec = Training(epochs=2, batch_size=16, resolution=16, lr=0.05)
    trained = []
    for i in range(2):
        net = copy.deepcopy(model)
        torch.rand(7 + i)  # other draws on the global generator must not matter
        state = torch.get_rng_state()
        pretrain(backbone, net, data[2], data[1], data[3], spec, tmp_path / f"{i}.pt", lambda m, s: None, seed=3, progress=False)
        assert torch.equal(torch.get_rng_state(), state)  # and training leaves them as they were
        trained.append(net)
    assert same_weights(*trained)


# ---- divergence -----------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_at_the_first_evaluation_and_checkpoints_and_logs_nothing(tmp_path):
    logged = []
    with pytest.raises(DivergedError, match=r"^training diverged by step 5 \(epoch 1\): train loss is (nan|inf); lower lr \(now 1e\+10\)"):
        run(Training(epochs=2, batch_size=16, resolution=16, lr=1e10), tmp_path / "ck.pt", log=lambda m, s: logged.append(s))
    assert logged == [] and not (tmp_path / "ck.pt").exists()


def test_a_diverged_pretraining_run_ends_failed_and_is_never_reused(store):
    job = tiny_specs.TINY | {"training": "train(epochs=2, batch_size=16, resolution=16, lr=1e10)"}
    for attempt in (1, 2):  # the second request trains again (and fails again) rather than reusing the first
        with pytest.raises(DivergedError, match="training diverged by step 5"):
            pipeline.pretrain_run(**job)
        runs = MlflowClient().search_runs([tracking.experiment_id()], f"tags.`{tracking.KIND}` = 'pretrain'")
        assert len(runs) == attempt and {r.info.status for r in runs} == {"FAILED"}
        assert all(r.data.tags[tracking.ERROR].startswith("DivergedError: training diverged") for r in runs)
        assert "pretrain.train_loss" not in pipeline.tracking.run_metrics(runs[0]) and not pipeline.checkpoint_path(runs[0].info.run_id).exists()


def test_rates_no_float32_network_can_hold_and_absurd_weight_decay_are_refused():
    assert parse_training("train(lr=1e10)").lr == 1e10  # valid: it runs and stops as diverged
    for text in ("train(lr=1e308)", "train(lr=3.5e38)", "train(weight_decay=2)"):
        with pytest.raises(tl.SpecError, match=r"lr must lie in \(0, 3.4e\+38\] and weight_decay in \[0, 1\]"):
            parse_training(text)


def test_zero_steps_keep_the_random_initial_weights_and_report_val_at_step_0(tmp_path):
    data = setup()
    model, metrics, logged = run(Training(steps=0, batch_size=16, resolution=16), tmp_path / "ck.pt", data)
    _, initial = fresh_model(data[1])
    assert same_weights(model, initial) and not (tmp_path / "ck.pt").exists()  # nothing trained, nothing to resume
    assert [step for _, step in logged] == [0] and metrics["pretrain.epoch"] == 0.0
    assert 0 <= metrics["pretrain.val_top1"] <= 100 and logged[0][0] == metrics
    with pytest.raises(SpecError, match="epochs must be at least 1, steps at least 0"):
        Training(epochs=0)
