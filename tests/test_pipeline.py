"""The main job's MLflow records: params, metrics, manifest, model, key; reuse; failures; nesting of runs; the CLI commands."""

import json
import os
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tiny_specs import SOURCE, TARGET, TINY
from transferlab import get_registry, image_cache, pipeline, select, source, tracking
from transferlab.cli import cli
from transferlab.tasks import TransferContext

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store


@pytest.fixture(scope="module")
def pretrained(empty_store, tmp_path_factory):
    """One tiny finished pretraining run in a store shared by this module's tests: (tracking URI, run id)."""
    folder = tmp_path_factory.mktemp("pretrained")
    (folder / "mlflow.db").write_bytes(empty_store.read_bytes())
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TRANSFERLAB_CACHE", str(folder / "cache"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        run_id = pipeline.pretrain_run(**TINY, experiment="shared")
    return uri, run_id


@pytest.fixture
def shared(pretrained, monkeypatch):
    """The shared store as MLFLOW_TRACKING_URI; the pretraining run's id."""
    uri, run_id = pretrained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return run_id


def runs_with(experiment_id: str, tag: str, value: str):
    return MlflowClient().search_runs([experiment_id], f"tags.`{tag}` = '{value}'")


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
    history = MlflowClient().get_metric_history(shared, "pretrain.val_top1")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 2
    assert [m.value for m in MlflowClient().get_metric_history(shared, "pretrain.epoch")] == [1.0, 2.0]
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest.digest[:tracking.DATASET_DIGEST_CHARS]
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training", tracking.MANIFEST_DIGEST: manifest.digest}
    assert json.loads(dataset_input.dataset.source)["uri"] == f"runs:/{shared}/manifest"
    assert tracking.ManifestSource.from_dict(json.loads(dataset_input.dataset.source)).load().digest == manifest.digest
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
    assert metrics["transfer.linear.synthetic_heldout.test_top1"] >= 0 and "transfer.knn.synthetic_heldout.test_top1" in metrics
    experiment = MlflowClient().get_run(shared).info.experiment_id
    children = runs_with(experiment, "mlflow.parentRunId", shared)
    assert {r.data.tags[tracking.KIND] for r in children} == {"transfer"} and len(children) == 2
    assert all(r.data.tags[tracking.PRETRAIN_RUN] == shared and r.info.status == "FINISHED" for r in children)
    linear = next(r for r in children if r.data.params["task"].startswith("linear"))
    assert linear.data.metrics["transfer.linear.synthetic_heldout.test_top1"] == metrics["transfer.linear.synthetic_heldout.test_top1"]
    assert MlflowClient().get_run(shared).data.metrics["transfer.knn.synthetic_heldout.test_top1"] == metrics["transfer.knn.synthetic_heldout.test_top1"]

    monkeypatch.setattr(pipeline.TransferContext, "features", lambda *a: pytest.fail("measured again"))
    assert pipeline.transfer_run(shared, TARGET, "knn | linear") == metrics
    assert len(runs_with(experiment, "mlflow.parentRunId", shared)) == 2


def test_transfer_refuses_a_run_that_is_not_a_finished_pretraining_run(store):
    experiment = tracking.experiment_id("x")
    run_id = tracking.create_run(experiment, "other", {tracking.KIND: "main"})
    with pytest.raises(tracking.TransferlabError, match="not a finished pretraining run"):
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
    assert parent.data.tags[tracking.PRETRAIN_RUN] == run_id and "pretrain.val_top1" in parent.data.metrics


def test_cli_run_nests_pretraining_under_main_and_reuses_it_next_time(store):
    args = ["run", "--source", SOURCE, "--training", TINY["training"], "--target", TARGET, "--tasks", "knn", "--experiment", "cli"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "main run" in result.output and "pretraining run" in result.output and "mlflow ui" in result.output
    assert "transfer.knn.synthetic_heldout.test_top1" in result.output
    experiment = tracking.experiment_id("cli")
    [main] = runs_with(experiment, tracking.KIND, "main")
    [pretrain] = runs_with(experiment, tracking.KIND, "pretrain")
    [transfer] = runs_with(experiment, tracking.KIND, "transfer")
    assert main.info.status == "FINISHED" and main.info.run_id in result.output and pretrain.info.run_id in result.output
    assert pretrain.data.tags["mlflow.parentRunId"] == main.info.run_id and main.data.tags[tracking.PRETRAIN_RUN] == pretrain.info.run_id
    assert transfer.data.tags["mlflow.parentRunId"] == pretrain.info.run_id
    assert main.data.params["tasks"] == "knn" and main.data.params["source"] == SOURCE
    assert {"pretrain.val_top1", "transfer.knn.synthetic_heldout.test_top1"} <= set(main.data.metrics)
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


def test_readme_task_plugin_example_runs_on_a_transfer_context():
    code = re.search(r"```python\n(# centroid\.py.*?)```", (Path(__file__).parents[1] / "README.md").read_text(), re.S).group(1)
    namespace = {}
    exec(code, namespace)
    backbone = get_registry().parse("backbone", TINY["backbone"])
    target = source(TARGET)
    context = TransferContext(target, backbone, backbone.build(4, 16), 16, device="cpu")
    metrics = namespace["Centroid"]().run(context)
    assert set(metrics) == {"test_top1"} and 0 <= metrics["test_top1"] <= 100
    namespace["register_tasks"](lambda cls: cls.name == "centroid" or pytest.fail("registered something else"))
