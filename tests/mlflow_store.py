"""Fixtures for tests that write MLflow records (load with `pytest_plugins`): a private sqlite store per test, a tracking server."""

import shutil

import pytest
from mlflow import MlflowClient

from servers import free_port, start_server, stop_server


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """An initialised, empty MLflow sqlite database (creating one takes seconds; copying it does not)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(empty_store, tmp_path, monkeypatch) -> str:
    """MLFLOW_TRACKING_URI → a fresh sqlite store in tmp_path, which is also the working directory (artifacts: ./mlruns)."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return uri


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An `mlflow server` on loopback with its own sqlite store and proxied artifacts, as MLFLOW_TRACKING_URI; yields its folder."""
    port = free_port()
    process = start_server(tmp_path, port)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    try:
        yield tmp_path
    finally:
        stop_server(process)

