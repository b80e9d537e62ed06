"""A shared tracking store is untrusted: a planted run cannot run code here; weights load as tensors, checked by digest."""

import os

import mlflow
import pytest
import safetensors.torch
import torch
from mlflow import MlflowClient

from tiny_specs import TARGET, TINY
from transferlab import TransferlabError, pipeline, tracking

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store


class Planted(torch.nn.Module):
    """A 'model' whose unpickling runs a shell command, as anyone with write access to a shared server could log."""

    command = ""

    def __reduce_ex__(self, protocol):
        return os.system, (self.command,)


def plant(experiment: str, marker, *, weights: dict[str, torch.Tensor] | None = None) -> str:
    """A FINISHED run that claims TINY's key, with a booby-trapped MLflow model (and, if given, a weights artifact)."""
    spec = pipeline.PretrainSpec.parse(**TINY)
    manifest = spec.prepare()
    run_id = tracking.create_run(experiment, "planted", {tracking.KIND: "pretrain", tracking.KEY: spec.key(manifest)})
    tracking.log_params(run_id, spec.params(manifest))
    Planted.command = f"touch {marker}"
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(Planted(), name="model", serialization_format="pickle", pip_requirements=[])
        mlflow.set_tag(tracking.MODEL_URI, info.model_uri)
        if weights is not None:
            path = marker.parent / "model.safetensors"
            safetensors.torch.save_file(weights, str(path))
            mlflow.log_artifact(str(path), "weights")
            import hashlib

            mlflow.set_tag(tracking.WEIGHTS_DIGEST, hashlib.sha256(path.read_bytes()).hexdigest())
    assert not marker.exists()
    return run_id


def test_a_planted_run_with_a_pickled_model_runs_no_code_and_gets_a_clear_error(store, tmp_path):
    marker = tmp_path / "pwned"
    experiment = tracking.experiment_id("shared-server")
    planted = plant(experiment, marker)
    with pytest.raises(TransferlabError, match=f"run {planted} has no transferlab weights"):
        pipeline.main_run(**TINY, target=TARGET, tasks="knn", experiment="shared-server")
    assert not marker.exists()


def test_planted_weights_that_do_not_fit_the_network_are_refused(store, tmp_path):
    marker = tmp_path / "pwned"
    experiment = tracking.experiment_id("shared-server")
    planted = plant(experiment, marker, weights={"conv1.weight": torch.zeros(3)})
    with pytest.raises(TransferlabError, match=f"weights of run {planted} do not fit the network"):
        pipeline.transfer_run(planted, TARGET, "knn")
    assert not marker.exists()


def test_weights_replaced_after_the_run_recorded_them_are_refused(store, tmp_path):
    run_id = pipeline.pretrain_run(**TINY)
    run = MlflowClient().get_run(run_id)
    [weights] = MlflowClient().list_artifacts(run_id, "weights")
    assert weights.path == tracking.WEIGHTS_PATH and len(run.data.tags[tracking.WEIGHTS_DIGEST]) == 64
    model = pipeline.PretrainedRecipe.of(run).network()
    with mlflow.start_run(run_id=run_id):  # an attacker, or a damaged store, swaps the file
        path = tmp_path / "model.safetensors"
        safetensors.torch.save_model(model, str(path), metadata={"swapped": "yes"})
        mlflow.log_artifact(str(path), "weights")
    with pytest.raises(TransferlabError, match="do not match the digest"):
        pipeline.PretrainedRecipe.of(MlflowClient().get_run(run_id)).network()


def test_transfer_loads_the_run_weights_exactly(store):
    run_id = pipeline.pretrain_run(**TINY)
    run = MlflowClient().get_run(run_id)
    user_model = mlflow.pytorch.load_model(run.data.tags[tracking.MODEL_URI])  # the MLflow model stays, for users
    recipe = pipeline.PretrainedRecipe.of(run)
    model = recipe.network()
    assert recipe.training.resolution == 16
    ours, theirs = model.state_dict(), user_model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    [logged] = MlflowClient().search_logged_models([run.info.experiment_id])
    assert logged.status == "READY" or str(logged.status).endswith("READY")


def test_a_planted_run_whose_params_lie_is_one_error_before_any_transfer_run(store, tmp_path):
    experiment = tracking.experiment_id("shared-server")
    planted = plant(experiment, tmp_path / "pwned")
    spec = pipeline.PretrainSpec.parse(**TINY)
    bare = tracking.create_run(experiment, "no seed", {tracking.KIND: "pretrain", tracking.KEY: "k"})
    tracking.log_params(bare, {k: v for k, v in spec.params(spec.prepare()).items() if k != "seed"})
    MlflowClient().set_terminated(bare, "FINISHED")
    for run_id, message in ((bare, "does not describe a network transferlab can rebuild"), (planted, "has no transferlab weights")):
        with pytest.raises(TransferlabError, match=message):
            pipeline.transfer_run(run_id, TARGET, "knn")
    children = MlflowClient().search_runs([experiment], f"tags.`{tracking.KIND}` = 'transfer' and tags.`mlflow.parentRunId` = '{bare}'")
    assert children == []  # refused before any transfer run was made
