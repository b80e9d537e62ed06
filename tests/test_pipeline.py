"""The main job's MLflow records: params, metrics, manifest, model, key; reuse; failures; nesting of runs; the CLI commands."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient
from PIL import Image

from stores import pretrained_store
from tiny_specs import SOURCE, TARGET, TINY
from transferlab import get_registry, image_cache, metric_names, pipeline, run_owners, runs, select, source, tracking
from transferlab.cli import cli
from transferlab.errors import CheckpointError, DataError, SpecError
from transferlab.tasks import TransferContext

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store
TARGET_LABEL = "synthetic_heldout_branching_2_2_2_test5_train20_val5"  # TARGET's non-default parameters name it
KNN_TOP1, LINEAR_TOP1 = (f"transfer.{task}.{TARGET_LABEL}.test_top1" for task in ("knn", "linear"))


@pytest.fixture(scope="module")
def pretrained(empty_store, tmp_path_factory):
    """One tiny finished pretraining run in a store shared by this module's tests: (tracking URI, run id)."""
    return pretrained_store(empty_store, tmp_path_factory.mktemp("pretrained"), "shared", **TINY)


@pytest.fixture
def shared(pretrained, monkeypatch):
    """The shared store as MLFLOW_TRACKING_URI; the pretraining run's id."""
    uri, run_id = pretrained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return run_id


def runs_with(experiment_id: str, tag: str, value: str):
    return MlflowClient().search_runs([experiment_id], f"tags.`{tag}` = '{value}'")


def children_on(run_id: str, target: str):
    """The transfer runs of a pretraining run on one target."""
    experiment = MlflowClient().get_run(run_id).info.experiment_id
    return [r for r in runs_with(experiment, "mlflow.parentRunId", run_id) if r.data.params["target"] == source(target).spec()]


def all_runs():
    return MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])


def test_pretraining_run_logs_params_epochs_manifest_model_and_key(shared):
    run = MlflowClient().get_run(shared)
    params, tags = run.data.params, run.data.tags
    assert run.info.status == "FINISHED" and tags[tracking.KIND] == "pretrain" and len(tags[tracking.KEY]) == 20
    assert MlflowClient().get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert params["source.branching"] == "[2, 2, 2]" and params["source.train"] == "20" and params["source.part"] == "'pretrain'"
    assert params["policy"] == "all" and params["policy.0"] == "all"
    assert params["backbone.model"] == "'resnet10t'" and params["backbone.small_stem"] == "'auto'"
    assert params["train.epochs"] == "2" and params["train.steps"] == "None" and params["train.length"] == "epochs"
    assert params["train.resolution"] == "16" and params["seed"] == "0"
    manifest = select(SOURCE, "all", 0)
    assert params["manifest.digest"] == manifest.digest and params["manifest.num_samples"] == "80"
    history = tracking.metric_history(shared, "pretrain.val_top1")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 2
    assert [m.value for m in MlflowClient().get_metric_history(shared, "pretrain.epoch")] == [1.0, 2.0]
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest.digest[:tracking.DATASET_DIGEST_CHARS]
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training", tracking.MANIFEST_DIGEST: manifest.digest}
    assert json.loads(dataset_input.dataset.source)["uri"] == f"runs:/{shared}/manifest"
    assert tracking.ManifestSource.from_dict(json.loads(dataset_input.dataset.source)).load().digest == manifest.digest
    resolved = mlflow.data.get_source(dataset_input)  # MLflow's own API finds the registered source type
    assert isinstance(resolved, tracking.ManifestSource) and resolved.load().digest == manifest.digest
    assert params["transferlab.recipe"] == str(pipeline.RECIPE_VERSION)
    model = mlflow.pytorch.load_model(tags[tracking.MODEL_URI])
    assert model.get_classifier().out_features == 4


def test_pretraining_decodes_only_the_subset_and_its_val_images(pretrained, monkeypatch):
    uri, _ = pretrained
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(Path(uri.removeprefix("sqlite:///")).parent / "cache"))
    src, manifest = source(SOURCE), select(SOURCE, "all", 0)
    filled = image_cache.read_record(image_cache.record_path(image_cache.cache_path(src, 16)), len(src.index))
    wanted = np.union1d(manifest.samples, manifest.split(src.index, "val")[0])
    assert len(wanted) == 100 and np.array_equal(np.flatnonzero(filled), wanted)  # the 20 test images are never decoded
    assert len(src.index.split_samples("test")) == 20


def test_identical_request_reuses_the_finished_run(shared, monkeypatch):
    monkeypatch.setattr(pipeline, "pretrain", lambda *a, **k: pytest.fail("retrained"))
    assert pipeline.pretrain_run(**TINY, experiment="shared") == shared
    experiment = MlflowClient().get_run(shared).info.experiment_id
    assert len(runs_with(experiment, tracking.KIND, "pretrain")) == 1


def test_transfer_results_are_child_runs_of_the_pretraining_run(shared, monkeypatch):
    metrics = pipeline.transfer_run(shared, TARGET, "linear | knn")
    assert metrics[LINEAR_TOP1] >= 0 and KNN_TOP1 in metrics
    children = children_on(shared, TARGET)
    assert {r.data.tags[tracking.KIND] for r in children} == {"transfer"} and len(children) == 2
    assert all(r.data.tags[tracking.PRETRAIN_RUN] == shared and r.info.status == "FINISHED" for r in children)
    linear = next(r for r in children if r.data.params["task"].startswith("linear"))
    assert tracking.run_metrics(linear)[LINEAR_TOP1] == metrics[LINEAR_TOP1]
    assert tracking.run_metrics(MlflowClient().get_run(shared))[KNN_TOP1] == metrics[KNN_TOP1]

    monkeypatch.setattr(pipeline.TransferContext, "features", lambda *a: pytest.fail("measured again"))
    assert pipeline.transfer_run(shared, TARGET, "knn | linear") == metrics
    assert len(children_on(shared, TARGET)) == 2


def test_transfer_refuses_a_run_that_is_not_a_finished_pretraining_run(store):
    experiment = tracking.experiment_id("x")
    run_id = tracking.create_run(experiment, "other", {tracking.KIND: "main"})
    with pytest.raises(tracking.TransferlabError, match=f"run {run_id} is a main run, not a pretraining run, and names none"):
        pipeline.transfer_run(run_id, TARGET, "knn")
    with pytest.raises(tracking.TransferlabError, match="no MLflow run"):
        pipeline.transfer_run("0" * 32, TARGET, "knn")


def test_an_exception_ends_the_run_failed_with_the_error_and_a_rerun_starts_afresh(store, monkeypatch):
    real = pipeline.pretrain

    def fails_after_one_epoch(*args, **kwargs):
        args[7]({"pretrain.epoch": 1.0}, 5)  # the log callback
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "pretrain", fails_after_one_epoch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        pipeline.pretrain_run(**TINY)
    experiment = tracking.experiment_id()
    [failed] = runs_with(experiment, tracking.KIND, "pretrain")
    assert failed.info.status == "FAILED" and failed.data.tags[tracking.ERROR] == "RuntimeError: disk on fire"
    assert "disk on fire" in mlflow.artifacts.load_text(f"runs:/{failed.info.run_id}/error.txt")

    monkeypatch.setattr(pipeline, "pretrain", real)
    run_id = pipeline.pretrain_run(**TINY)
    assert run_id != failed.info.run_id and MlflowClient().get_run(run_id).info.status == "FINISHED"


def test_inside_mlflow_run_the_project_run_is_the_parent_and_stays_open(store, monkeypatch):
    experiment = tracking.experiment_id("project")
    project = MlflowClient().create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    run_id = pipeline.pretrain_run(**TINY)
    pretrain, parent = MlflowClient().get_run(run_id), MlflowClient().get_run(project)
    assert pretrain.data.tags["mlflow.parentRunId"] == project and pretrain.info.experiment_id == experiment
    assert parent.info.status == "RUNNING"  # `mlflow run` ends its own run
    assert parent.data.tags[tracking.PRETRAIN_RUN] == run_id and "pretrain.val_top1" in tracking.run_metrics(parent)


def test_cli_run_nests_pretraining_under_main_and_reuses_it_next_time(store):
    args = ["run", "--source", SOURCE, "--training", TINY["training"], "--target", TARGET, "--tasks", "knn", "--experiment", "cli"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "main run" in result.output and "pretraining run" in result.output and "mlflow ui" in result.output
    assert KNN_TOP1 in result.output
    experiment = tracking.experiment_id("cli")
    [main] = runs_with(experiment, tracking.KIND, "main")
    [pretrain] = runs_with(experiment, tracking.KIND, "pretrain")
    [transfer] = runs_with(experiment, tracking.KIND, "transfer")
    assert main.info.status == "FINISHED" and main.info.run_id in result.output and pretrain.info.run_id in result.output
    assert pretrain.data.tags["mlflow.parentRunId"] == main.info.run_id and main.data.tags[tracking.PRETRAIN_RUN] == pretrain.info.run_id
    assert transfer.data.tags["mlflow.parentRunId"] == pretrain.info.run_id
    assert main.data.params["tasks"] == "knn" and main.data.params["source"] == SOURCE
    assert {"pretrain.val_top1", KNN_TOP1} <= set(tracking.run_metrics(main))
    assert [d.dataset.digest for d in main.inputs.dataset_inputs] == [d.dataset.digest for d in pretrain.inputs.dataset_inputs]

    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0 and "reusing finished pretraining run" in again.output
    assert len(runs_with(experiment, tracking.KIND, "main")) == 2 and len(runs_with(experiment, tracking.KIND, "pretrain")) == 1


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--backbone", "timm(model='resnet_nope')"], "unknown timm model"),
    (["pretrain", "--training", "train(epochs=2, steps=3)"], "exactly one of epochs or steps"),
    (["pretrain", "--training", "sgd(lr=1)"], "unknown training recipe"),
    (["run", "--tasks", "linear | knnn"], "unknown task 'knnn'"),
    (["run", "--target", "synthetic(part='heldout'"], "malformed spec"),
    (["transfer", "abc", "--tasks", "fewshot(nope=1)"], "no parameter 'nope'"),
])
def test_cli_bad_specs_exit_2_before_any_run(store, args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not os.path.exists("mlruns") and MlflowClient().search_experiments(filter_string="name != 'Default'") == []


def test_docs_task_plugin_example_runs_on_a_transfer_context():
    docs = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    code = re.search(r'```python title="centroid\.py"\n(.*?)```', docs, re.S).group(1)
    namespace = {}
    exec(code, namespace)
    backbone = get_registry().parse("backbone", TINY["backbone"])
    target = source(TARGET)
    context = TransferContext(target, backbone, backbone.build(4, 16), 16, device="cpu")
    metrics = namespace["Centroid"]().run(context)
    assert set(metrics) == {"test_top1"} and 0 <= metrics["test_top1"] <= 100
    namespace["register_tasks"](lambda cls: cls.name == "centroid" or pytest.fail("registered something else"))


# ---- metric names: task and target labels ------------------------------------------------------------------------

METRIC_NAME = re.compile(r"^[A-Za-z0-9_\-. /]+$")  # what MLflow accepts in a metric name


def test_labels_name_non_default_parameters_and_file_roots(tmp_path):
    task = lambda text: get_registry().parse("task", text)  # noqa: E731
    assert metric_names.component_label(task("knn")) == "knn" and metric_names.component_label(task("knn(k=20)")) == "knn"
    assert metric_names.component_label(task("knn(k=1)")) == "knn_k1"
    assert metric_names.component_label(task("knn(temperature=0.1, k=1)")) == "knn_k1_temperature0_1"
    assert metric_names.source_label(source("synthetic(part='heldout')")) == "synthetic_heldout"  # the default target keeps its name
    assert metric_names.source_label(source(TARGET)) == TARGET_LABEL
    assert metric_names.source_label(source(TARGET.replace("train=20", "train=10"))) == TARGET_LABEL.replace("train20", "train10")
    (tmp_path / "sun397" / "abbey").mkdir(parents=True)
    assert metric_names.source_label(source(f"image_folder(root='{tmp_path / 'sun397'}')")) == "image_folder_sun397"
    assert metric_names.source_label(source(f"image_folder(root='{tmp_path / 'sun397'}/', val_fraction=0.2)")) == "image_folder_sun397_val_fraction0_2"
    long = metric_names.component_label(task("fewshot(ways=3, shots=1, queries=2, episodes=7)"), "x" * 100)
    assert len(long) <= metric_names.LABEL_CHARS and METRIC_NAME.match(long)


@pytest.mark.parametrize("tasks", ["knn | knn", "knn(k=1) | linear | knn(k=1, temperature=0.07)"])
def test_a_task_chain_with_a_task_twice_is_refused(tasks):
    with pytest.raises(tracking.TransferlabError, match="twice"):
        pipeline.TransferSpec.parse(TARGET, tasks)


def test_tasks_with_other_parameters_and_targets_sharing_a_label_get_their_own_metrics(shared):
    other = TARGET.replace("train=20", "train=10")  # same source, same label() as TARGET
    metrics = pipeline.transfer_run(shared, other, "knn(k=1) | knn")
    label = metric_names.source_label(source(other))
    assert {f"transfer.knn_k1.{label}.test_top1", f"transfer.knn.{label}.test_top1"} <= set(metrics)
    assert {name.split(".")[1] for name in metrics} == {"knn", "knn_k1"}
    assert all(METRIC_NAME.match(name) for name in metrics) and label != TARGET_LABEL
    children = children_on(shared, other)
    assert sorted(r.info.run_name for r in children) == [f"knn on {label}", f"knn_k1 on {label}"]
    on_pretraining = tracking.run_metrics(MlflowClient().get_run(shared))
    assert all(on_pretraining[name] == value for name, value in metrics.items())  # nothing overwrote anything
    with pytest.raises(tracking.TransferlabError, match="twice"):
        pipeline.transfer_run(shared, other, "knn | knn")
    assert len(children_on(shared, other)) == 2


# ---- checks before any run ----------------------------------------------------------------------------------------

def flat_folder(root: Path) -> Path:
    """Class folders of PNGs with no train/ or test/ folders (a flat image_folder has no test split)."""
    from PIL import Image

    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def test_a_target_without_test_split_fails_before_any_pretraining_or_run(store, tmp_path, monkeypatch):
    flat = f"image_folder(root='{flat_folder(tmp_path / 'flat')}')"
    monkeypatch.setattr(pipeline, "pretrain", lambda *a, **k: pytest.fail("pretrained before checking the target"))
    with pytest.raises(DataError, match="no test split"):
        pipeline.main_run(**TINY, target=flat, tasks="knn", experiment="flat")
    assert all_runs() == []
    result = CliRunner().invoke(cli, ["run", "--source", SOURCE, "--training", TINY["training"], "--target", flat, "--tasks", "knn"])
    assert result.exit_code == 2 and "no test split" in result.output and "pass test_fraction=" in result.output
    assert all_runs() == []


def test_transfer_to_a_target_without_test_split_creates_no_child_run_until_one_is_held_out(shared, tmp_path):
    root = flat_folder(tmp_path / "flat")
    before = len(all_runs())
    with pytest.raises(DataError, match="no test split"):
        pipeline.transfer_run(shared, f"image_folder(root='{root}')", "knn")
    assert len(all_runs()) == before
    results = pipeline.transfer_run(shared, f"image_folder(root='{root}', test_fraction=0.25)", "knn")
    assert set(results) == {f"transfer.knn.image_folder_flat_test_fraction0_25.{m}" for m in ("test_top1", "test_mean_class_acc", "val_top1")}


def test_targets_moved_or_sharing_a_folder_name_keep_their_own_metrics(shared, tmp_path):
    birds = flat_folder(tmp_path / "x" / "birds")
    shutil.copytree(birds, tmp_path / "y" / "aves", copy_function=shutil.copy2)  # the same files, elsewhere, same mtimes
    first = pipeline.transfer_run(shared, f"image_folder(root='{birds}', test_fraction=0.25)", "knn")
    moved = pipeline.transfer_run(shared, f"image_folder(root='{tmp_path / 'y' / 'aves'}', test_fraction=0.25)", "knn")
    assert {k.split(".")[2] for k in first} == {"image_folder_birds_test_fraction0_25"}
    assert {k.split(".")[2] for k in moved} == {"image_folder_aves_test_fraction0_25"}  # its own name, not an empty result
    assert list(first.values()) == list(moved.values())  # same data, same numbers

    other = flat_folder(tmp_path / "z" / "birds")  # another dataset in a folder of the same name
    Image.fromarray(np.full((8, 8, 3), 250, np.uint8)).save(other / "c0" / "0.png")
    again = pipeline.transfer_run(shared, f"image_folder(root='{other}', test_fraction=0.25)", "knn")
    label = {k.split(".")[2] for k in again}
    assert len(label) == 1 and label.pop().startswith("image_folder_birds_test_fraction0_25_")  # a digest tells them apart
    recorded = tracking.run_metrics(MlflowClient().get_run(shared))
    assert all(recorded[k] == v for k, v in (first | again).items())  # neither overwrote the other on the pretraining run
    assert pipeline.transfer_run(shared, f"image_folder(root='{birds}', test_fraction=0.25)", "knn") == first  # reused as named


@pytest.mark.parametrize("change, error", [
    ({"policy": "random_classes(k=1000)"}, "asks for 1000 classes"),
    pytest.param({"training": "train(epochs=1, batch_size=16, resolution=16, device='cuda')"}, "no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
])
def test_policy_and_device_mistakes_leave_no_run(store, change, error):
    with pytest.raises(tracking.TransferlabError, match=error):
        pipeline.main_run(**(TINY | change), target=TARGET, tasks="knn", experiment="mistakes")
    with pytest.raises(tracking.TransferlabError, match=error):
        pipeline.pretrain_run(**(TINY | change), experiment="mistakes")
    assert all_runs() == []


# ---- the run key ----------------------------------------------------------------------------------------------------

def test_run_keys_depend_on_the_recipe_version_not_on_the_installed_package(monkeypatch, tmp_path):
    import tomllib
    from importlib.metadata import PackageNotFoundError

    import transferlab

    spec = pipeline.PretrainSpec.parse(**TINY)
    manifest = spec.prepare()
    key = spec.key(manifest)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert transferlab.__version__ == pyproject

    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(transferlab, "version", not_installed)  # as under `mlflow run .` with PYTHONPATH=platform:plugins
    assert transferlab.package_version() == pyproject
    monkeypatch.setattr(transferlab, "PYPROJECT", tmp_path / "pyproject.toml")
    monkeypatch.setattr(pipeline, "__version__", transferlab.package_version())
    assert pipeline.__version__ == "0+unknown" and spec.key(manifest) == key
    monkeypatch.setattr(pipeline, "RECIPE_VERSION", pipeline.RECIPE_VERSION + 1)
    assert spec.key(manifest) != key


# ---- resume, supersede, and the records a resumed run keeps -----------------------------------------------------------

def tiny_key() -> str:
    spec = pipeline.PretrainSpec.parse(**TINY)
    return spec.key(spec.prepare())


def interrupted_main_run(monkeypatch) -> tuple[str, str]:
    """A `transferlab run` stopped with Ctrl-C after its first epoch (checkpoint written): (main run, pretraining run)."""
    real = pipeline.pretrain

    def stops_after_one_epoch(*args, **kwargs):
        log = args[7]

        def then_ctrl_c(metrics, step):
            log(metrics, step)
            raise KeyboardInterrupt

        return real(*args[:7], then_ctrl_c, *args[8:], **kwargs)

    with monkeypatch.context() as m:
        m.setattr(pipeline, "pretrain", stops_after_one_epoch)
        with pytest.raises(KeyboardInterrupt):
            pipeline.main_run(**TINY, target=TARGET, tasks="knn", experiment="stop")
    experiment = tracking.experiment_id("stop")
    [main] = runs_with(experiment, tracking.KIND, "main")
    [pretraining] = runs_with(experiment, tracking.KIND, "pretrain")
    assert main.info.status == pretraining.info.status == "KILLED" and pipeline.checkpoint_path(pretraining.info.run_id).exists()
    return main.info.run_id, pretraining.info.run_id


def epochs_logged(run_id: str) -> list[float]:
    return sorted(m.value for m in MlflowClient().get_metric_history(run_id, "pretrain.epoch"))


def artifacts(run_id: str) -> set[str]:
    return {a.path for a in MlflowClient().list_artifacts(run_id)}


def test_a_resumed_run_that_finishes_keeps_no_error_record(store, monkeypatch, capsys):
    _, pretraining = interrupted_main_run(monkeypatch)
    before = MlflowClient().get_run(pretraining)
    assert before.data.tags[tracking.ERROR] == "KeyboardInterrupt: " and "error.txt" in artifacts(pretraining)

    result = pipeline.main_run(**TINY, target=TARGET, tasks="knn", experiment="stop")
    assert result.pretrain_run == pretraining and "resuming pretraining run" in capsys.readouterr().err
    run = MlflowClient().get_run(pretraining)
    assert run.info.status == "FINISHED" and tracking.ERROR not in run.data.tags and "error.txt" not in artifacts(pretraining)
    assert run.data.tags[runs.RESUMED_AFTER] == "KeyboardInterrupt: "
    assert epochs_logged(pretraining) == [1.0, 2.0]
    with_errors = MlflowClient().search_runs([run.info.experiment_id], f"tags.`{tracking.ERROR}` LIKE '%'")
    assert pretraining not in {r.info.run_id for r in with_errors}  # a filter on the error tag no longer lists it


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("main_owner", ["gone", "unrecorded"])
def test_after_kill_9_the_dead_main_run_ends_killed_and_the_resumed_run_moves_to_the_new_main_run(store, monkeypatch, main_owner):
    old_main, pretraining = interrupted_main_run(monkeypatch)
    c = MlflowClient()
    for run_id in (old_main, pretraining):  # what kill -9 leaves: RUNNING, no error record, an owner that is gone
        c.update_run(run_id, status="RUNNING")
        c.delete_tag(run_id, tracking.ERROR)
        tracking.set_tags(run_id, {run_owners.PID: str(dead_pid())})
    if main_owner == "unrecorded":  # a caller's run (a notebook's, say) that transferlab never adopted: maybe still alive
        for tag in (run_owners.HOST, run_owners.PID, run_owners.PID_STARTED, run_owners.HEARTBEAT):
            c.delete_tag(old_main, tag)

    result = pipeline.main_run(**TINY, target=TARGET, tasks="knn", experiment="stop")
    assert result.pretrain_run == pretraining and result.main_run != old_main
    old, new, run = c.get_run(old_main), c.get_run(result.main_run), c.get_run(pretraining)
    if main_owner == "unrecorded":
        assert old.info.status == "RUNNING" and runs.SUPERSEDED_BY not in old.data.tags  # left alone
    else:
        assert old.info.status == "KILLED" and old.data.tags[runs.SUPERSEDED_BY] == result.main_run
    assert new.info.status == run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == result.main_run and new.data.tags[tracking.PRETRAIN_RUN] == pretraining
    assert run.data.tags[runs.RESUMED_AFTER].startswith("RUNNING: owner host")
    assert epochs_logged(pretraining) == [1.0, 2.0]


@pytest.mark.parametrize("damage", ["garbage", "old format"])
def test_an_unreadable_checkpoint_is_kept_and_its_run_stays_resumable(store, monkeypatch, damage):
    _, pretraining = interrupted_main_run(monkeypatch)
    checkpoint = pipeline.checkpoint_path(pretraining)
    if damage == "garbage":
        checkpoint.write_bytes(b"not a checkpoint")
    else:
        torch.save({"format": 1}, checkpoint)
    with pytest.raises(CheckpointError, match="cannot resume pretraining run .* are kept; move or delete the checkpoint"):
        pipeline.pretrain_run(**TINY, experiment="stop")
    assert checkpoint.exists() and MlflowClient().get_run(pretraining).info.status == "KILLED"

    checkpoint.unlink()  # what the message says to do
    run_id = pipeline.pretrain_run(**TINY, experiment="stop")
    assert run_id != pretraining and MlflowClient().get_run(run_id).info.status == "FINISHED"
    assert MlflowClient().get_run(pretraining).data.tags[runs.SUPERSEDED_BY] == run_id


def test_a_stopped_run_without_checkpoint_here_is_replaced_by_a_new_run(store, capsys):
    experiment = tracking.experiment_id("lost")
    old = tracking.create_run(experiment, "from another machine", {tracking.KIND: "pretrain", tracking.KEY: tiny_key()})
    tracking.log_metrics(old, {"pretrain.epoch": 1.0}, step=5)
    MlflowClient().set_terminated(old, "KILLED")

    run_id = pipeline.pretrain_run(**TINY, experiment="lost")
    assert run_id != old and "no checkpoint of it on this machine" in capsys.readouterr().err
    stale, new = MlflowClient().get_run(old), MlflowClient().get_run(run_id)
    assert stale.info.status == "KILLED" and stale.data.tags[runs.SUPERSEDED_BY] == run_id
    assert new.info.status == "FINISHED" and epochs_logged(run_id) == [1.0, 2.0] and epochs_logged(old) == [1.0]
    assert pipeline.pretrain_run(**TINY, experiment="lost") == run_id  # the superseded run is never picked up again


# ---- inside a caller's own MLflow run -------------------------------------------------------------------------------

def test_inside_an_active_fluent_run_that_run_is_the_parent(store):
    experiment = tracking.experiment_id("notebook")
    with mlflow.start_run(experiment_id=experiment, run_name="my notebook run") as outer:
        run_id = pipeline.pretrain_run(**TINY)
        assert mlflow.active_run().info.run_id == outer.info.run_id  # still the caller's run
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert run.info.experiment_id == experiment and MlflowClient().get_run(outer.info.run_id).data.tags[tracking.PRETRAIN_RUN] == run_id
    with mlflow.start_run(experiment_id=experiment, run_name="my notebook main") as outer:
        pipeline.main_run(**TINY, target=TARGET, tasks="knn")
    adopted = MlflowClient().get_run(outer.info.run_id).data.tags
    assert adopted[tracking.KIND] == "main" and adopted[run_owners.PID] == str(os.getpid())  # owned, so never judged dead while alive


def test_a_failing_start_run_leaves_no_run_running(store, monkeypatch):
    def hiccup(*args, **kwargs):
        raise mlflow.MlflowException("the tracking server hiccuped")

    monkeypatch.setattr(mlflow, "start_run", hiccup)
    with pytest.raises(mlflow.MlflowException, match="hiccuped"):
        pipeline.pretrain_run(**TINY, experiment="hiccup")
    [run] = all_runs()
    assert run.info.status == "FAILED" and "hiccuped" in run.data.tags[tracking.ERROR]


@pytest.mark.parametrize("seed, expected", [(1, 1), (1.0, 1), ("2", 2), (1.5, None), (-1, None), (True, None), ("one", None)])
def test_a_seed_is_a_whole_number_however_it_is_written(seed, expected):
    args = (SOURCE, "all", TINY["backbone"], TINY["training"])
    if expected is None:
        with pytest.raises(SpecError, match="seed must be a whole number >= 0"):
            pipeline.PretrainSpec.parse(*args, seed)
    else:
        assert pipeline.PretrainSpec.parse(*args, seed).seed == expected


@pytest.mark.parametrize("args, message", [
    (["run", "--source", SOURCE, "--training", TINY["training"], "--target", TARGET, "--tasks", "linear | knn | fewshot(ways=4, shots=5, queries=15)"],
     "needs 4 test classes with at least shots + queries = 20 images each"),
    (["pretrain", "--source", SOURCE, "--backbone", "timm(model='convnext_atto')", "--training", "train(epochs=1, resolution=16)"],
     "cannot take 16 px images"),
])
def test_task_preconditions_and_the_backbone_at_the_resolution_are_checked_before_any_run(store, monkeypatch, args, message):
    monkeypatch.setattr(pipeline, "pretrain", lambda *a, **k: pytest.fail("trained"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.output
    assert "Traceback" not in result.output and all_runs() == []


def test_when_a_task_fails_the_others_still_run_and_their_results_are_printed_and_recorded(shared, monkeypatch):
    from transferlab_probes.knn import KNN

    real = KNN.run
    monkeypatch.setattr(KNN, "run", lambda self, ctx: (_ for _ in ()).throw(DataError("no neighbours today")) if self.k == 7 else real(self, ctx))
    args = ["run", *sum(([f"--{k}", str(v)] for k, v in TINY.items()), []), "--target", TARGET, "--experiment", "shared",
            "--tasks", "knn(k=7) | knn(k=3)"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "transfer task knn_k7 on" in error and "no neighbours today" in error and "kept" in error
    kept = f"transfer.knn_k3.{TARGET_LABEL}.test_top1"
    assert kept in result.stdout  # printed
    experiment = MlflowClient().get_run(shared).info.experiment_id
    [main] = [r for r in runs_with(experiment, tracking.KIND, "main") if r.data.params["tasks"] == "knn(k=7) | knn(k=3)"]
    assert main.info.status == "FAILED" and {kept, "pretrain.val_top1"} <= set(tracking.run_metrics(main))  # recorded on the asking run
    assert kept in tracking.run_metrics(MlflowClient().get_run(shared))
    statuses = {r.data.params["task"]: r.info.status for r in children_on(shared, TARGET) if r.data.params["task"].startswith("knn(k=")}
    assert statuses["knn(k=7, temperature=0.07)"] == "FAILED" and statuses["knn(k=3, temperature=0.07)"] == "FINISHED"


# ---- what the MLflow UI shows ------------------------------------------------------------------------------------

def test_metrics_are_stored_in_chart_sections_and_read_back_by_their_dotted_names(shared):
    pipeline.transfer_run(shared, TARGET, "linear | knn")
    stored = set(MlflowClient().get_run(shared).data.metrics)
    # MLflow groups charts by the text before '/': one section per task on a target, one for pretraining; diagnostics
    # keep dotted names and gather after them (MLflow's 'Model metrics').
    assert {"pretrain/val_top1", "pretrain/train_loss", f"transfer.knn.{TARGET_LABEL}/test_top1", f"transfer.linear.{TARGET_LABEL}/val_top1",
            "pretrain.images_per_s", "pretrain.lr", f"transfer.linear.{TARGET_LABEL}.l2", f"transfer.linear.{TARGET_LABEL}.lbfgs_unconverged"} <= stored
    assert not {"pretrain.val_top1", KNN_TOP1} & stored
    assert {KNN_TOP1, LINEAR_TOP1, "pretrain.val_top1"} <= set(tracking.run_metrics(MlflowClient().get_run(shared)))
    names = ["pretrain.val_top1", KNN_TOP1, "pretrain.epoch", "search.score", "best.1.test_score"]
    assert [metric_names.canonical(metric_names.stored(n)) for n in names] == names
    assert metric_names.canonical("system/cpu_utilization_percentage") == "system/cpu_utilization_percentage"


def test_records_made_before_sections_are_still_read_and_reused(store, monkeypatch):
    experiment = tracking.experiment_id("old")
    run_id = tracking.create_run(experiment, "old record", {tracking.KIND: "pretrain"})
    MlflowClient().log_metric(run_id, "pretrain.val_top1", 42.0, step=3)  # as transferlab logged it before
    assert pipeline.pretrain_metrics(run_id) == {"pretrain.val_top1": 42.0}
    assert [m.step for m in tracking.metric_history(run_id, "pretrain.val_top1")] == [3]


def test_each_pretraining_run_carries_its_learning_curve_and_the_subsets_contact_sheet(shared, tmp_path):
    from transferlab.run_figures import CONTACT_SHEET, LEARNING_CURVE

    files = {f.path for f in MlflowClient().list_artifacts(shared, "figures")}
    assert files == {LEARNING_CURVE, CONTACT_SHEET}
    curve = Image.open(mlflow.artifacts.download_artifacts(run_id=shared, artifact_path=LEARNING_CURVE, dst_path=str(tmp_path)))
    sheet = Image.open(mlflow.artifacts.download_artifacts(run_id=shared, artifact_path=CONTACT_SHEET, dst_path=str(tmp_path)))
    assert curve.format == sheet.format == "PNG" and curve.size == (640, 360)
    assert sheet.width >= 2 * 64 and np.asarray(sheet.convert("L")).std() > 10  # 4 classes of 64-px tiles, not a blank page


def test_experiments_have_a_description_and_keep_their_own(store):
    experiment = MlflowClient().get_experiment(tracking.experiment_id("described"))
    assert "pretraining run" in experiment.tags[tracking.NOTE] and experiment.tags[tracking.NOTE] == tracking.EXPERIMENT_NOTE
    MlflowClient().set_experiment_tag(experiment.experiment_id, tracking.NOTE, "mine")
    tracking.experiment_id("described")
    assert MlflowClient().get_experiment(experiment.experiment_id).tags[tracking.NOTE] == "mine"


def project_run(monkeypatch, experiment: str, name: str | None = None) -> str:
    """A run as `mlflow run` makes it (an entry point tag, MLflow's random name unless named), as the asking run."""
    run = MlflowClient().create_run(experiment, run_name=name, tags={"mlflow.project.entryPoint": "pretrain"})
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    return run.info.run_id


def test_mlflow_run_in_default_shares_finished_runs_with_transferlab_and_is_named_after_its_work(store, monkeypatch):
    asking = project_run(monkeypatch, tracking.MLFLOW_DEFAULT_EXPERIMENT)
    assert tracking.generated_name(MlflowClient().get_run(asking).info.run_name)
    run_id = pipeline.pretrain_run(**TINY)
    pretrain, project = MlflowClient().get_run(run_id), MlflowClient().get_run(asking)
    assert pretrain.info.experiment_id == tracking.experiment_id(tracking.DEFAULT_EXPERIMENT) != "0"  # 'transferlab', where `transferlab pretrain` looks
    assert project.info.run_name == f"pretrain · {pipeline.PretrainSpec.parse(**TINY).run_name()}" and " · synthetic · timm(" in project.info.run_name
    assert project.data.tags[tracking.PRETRAIN_RUN] == run_id and pretrain.data.tags["mlflow.parentRunId"] == asking
    assert "transferlab" in MlflowClient().get_experiment("0").tags[tracking.NOTE]

    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)  # MLflow unsets MLFLOW_RUN_ID when a run ends
    monkeypatch.setattr(pipeline, "pretrain", lambda *a, **k: pytest.fail("retrained"))
    assert pipeline.pretrain_run(**TINY) == run_id  # `transferlab pretrain` with the same specs
    named = project_run(monkeypatch, tracking.MLFLOW_DEFAULT_EXPERIMENT, name="my-run-name")  # mlflow run --run-name
    assert pipeline.pretrain_run(**TINY) == run_id and MlflowClient().get_run(named).info.run_name == "my-run-name"


def test_mlflow_run_with_a_named_experiment_keeps_everything_there(store, monkeypatch):
    experiment = tracking.experiment_id("chosen")
    asking = project_run(monkeypatch, experiment)
    assert MlflowClient().get_run(pipeline.pretrain_run(**TINY)).info.experiment_id == experiment
    assert MlflowClient().get_run(asking).info.run_name.startswith("pretrain · all · ")


def test_transfer_accepts_the_id_of_the_run_that_asked_for_the_pretraining(shared):
    asking = tracking.create_run(tracking.experiment_id("asking"), "the run of mlflow run -e pretrain", {tracking.PRETRAIN_RUN: shared})
    result = CliRunner().invoke(cli, ["transfer", asking, "--target", TARGET, "--tasks", "knn"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"pretraining run {shared}" in result.output and KNN_TOP1 in result.output
    assert len(children_on(shared, TARGET)) >= 1 and not runs_with(tracking.experiment_id("asking"), "mlflow.parentRunId", asking)
