"""MLflow plumbing: experiment tags, run keys and locks, error records, resume after kill -9, a tracking server on loopback."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tiny_specs import SOURCE, TARGET, TINY
from transferlab import TransferlabError, pipeline, tracking
from transferlab.cache import cache_dir

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store


def test_experiments_are_created_or_tagged_to_show_training_runs(store):
    assert MlflowClient().get_experiment(tracking.experiment_id("new")).tags["mlflow.experimentKind"] == "custom_model_development"
    old = MlflowClient().create_experiment("old")
    assert "mlflow.experimentKind" not in MlflowClient().get_experiment(old).tags
    assert tracking.experiment_id("old") == old
    assert MlflowClient().get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert MlflowClient().get_experiment(tracking.experiment_id()).name == "transferlab"


def test_find_run_by_key_and_status(store):
    experiment = tracking.experiment_id("keys")
    first = tracking.create_run(experiment, "a", {tracking.KEY: "k1"})
    MlflowClient().set_terminated(first, "KILLED")
    second = tracking.create_run(experiment, "b", {tracking.KEY: "k1"})
    tracking.create_run(experiment, "c", {tracking.KEY: "k2"})
    assert tracking.find_run(experiment, "k1", ("RUNNING",)).info.run_id == second
    assert tracking.find_run(experiment, "k1", ("KILLED",)).info.run_id == first
    assert tracking.find_run(experiment, "k1", ("FINISHED",)) is None


def test_a_run_key_is_locked_while_in_use(store):
    with tracking.key_lock("abc"):
        with pytest.raises(TransferlabError, match="another transferlab process"):
            with tracking.key_lock("abc"):
                pass
        with tracking.key_lock("other"):
            pass
    with tracking.key_lock("abc"):
        pass


def test_ctrl_c_ends_a_run_killed_so_that_it_is_resumed(store):
    experiment = tracking.experiment_id("x")
    run_id = tracking.create_run(experiment, "r", {tracking.KEY: "k"})
    with pytest.raises(KeyboardInterrupt), tracking.active(run_id):
        raise KeyboardInterrupt
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[tracking.ERROR] == "KeyboardInterrupt: "
    assert tracking.find_run(experiment, "k", tracking.RESUMABLE).info.run_id == run_id


def transferlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "transferlab", *args]


def test_kill_9_mid_run_then_rerun_continues_the_same_run_to_the_end(store):
    epochs = 12
    args = transferlab("pretrain", "--source", SOURCE, "--training", f"train(epochs={epochs}, batch_size=16, resolution=16)", "--experiment", "kill")
    checkpoints = cache_dir("checkpoints")
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        run = None
        while run is None or not list(checkpoints.glob("*.pt")) or "pretrain.epoch" not in run.data.metrics:
            assert first.poll() is None, "the first process ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
            runs = MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()], "tags.`transferlab.kind` = 'pretrain'")
            run = runs[0] if runs else None
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=30)
    assert MlflowClient().get_run(run.info.run_id).info.status == "RUNNING"
    killed_at = max(m.value for m in MlflowClient().get_metric_history(run.info.run_id, "pretrain.epoch"))
    assert killed_at < epochs

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming pretraining run" in rerun.stderr and run.info.run_id in rerun.stdout
    assert len(MlflowClient().search_runs([run.info.experiment_id])) == 1  # no second run
    final = MlflowClient().get_run(run.info.run_id)
    assert final.info.status == "FINISHED" and tracking.MODEL_URI in final.data.tags
    history = MlflowClient().get_metric_history(run.info.run_id, "pretrain.epoch")
    assert sorted(m.value for m in history) == list(map(float, range(1, epochs + 1)))  # every epoch once: no gap, no duplicate
    assert sorted(m.step for m in MlflowClient().get_metric_history(run.info.run_id, "pretrain.val_top1")) == sorted(m.step for m in history)
    assert not list(checkpoints.glob("*.pt"))  # removed once the model is logged


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An `mlflow server` on loopback with its own sqlite store and proxied artifacts, as MLFLOW_TRACKING_URI."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer /health within 90 s"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield tmp_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def test_pretrain_and_transfer_against_a_tracking_server(store, server):
    run_id = pipeline.pretrain_run(**TINY)
    metrics = pipeline.transfer_run(run_id, TARGET, "knn")
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.params["train.epochs"] == "2" and len(MlflowClient().get_metric_history(run_id, "pretrain.val_top1")) == 2
    assert {a.path for a in MlflowClient().list_artifacts(run_id, "manifest")} == {"manifest/manifest.json", "manifest/manifest.npz"}
    assert run.inputs.dataset_inputs[0].dataset.digest == run.data.params["manifest.digest"][:tracking.DATASET_DIGEST_CHARS]
    [child] = MlflowClient().search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert child.data.metrics["transfer.knn.synthetic_heldout.test_top1"] == metrics["transfer.knn.synthetic_heldout.test_top1"]
    assert any((server / "artifacts").rglob("MLmodel"))  # the model went through the server's artifact proxy
    assert pipeline.pretrain_run(**TINY) == run_id
