"""Faults around the tracking store: a server that dies mid-run, workers racing for one key, a new SQLite store opened by
many processes at once, kills that leave runs RUNNING or models PENDING."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from servers import free_port, start_server, stop_server
from tiny_specs import SOURCE, TARGET, TINY
from transferlab import pipeline, runs, tracking

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store, server
ROOT = Path(__file__).resolve().parents[1]
TRAINING = "train(epochs={epochs}, batch_size=16, resolution=16)"


def worker_env(cache: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment: this tree's code, its own cache (another host's), no run of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    path = [str(ROOT / "platform"), str(ROOT / "plugins"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    return env | {"PYTHONPATH": os.pathsep.join(p for p in path if p), "TRANSFERLAB_CACHE": str(cache), "COLUMNS": "400"} | extra


def all_runs() -> list:
    c = MlflowClient()
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code = "from transferlab import tracking; tracking.check_store()"
    workers = [subprocess.Popen([sys.executable, "-c", code], env=worker_env(tmp_path / "cache", MLFLOW_TRACKING_URI=uri),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, "\n".join(o[-1500:] for o in outputs)


RACER = textwrap.dedent("""
    # One worker of a race: `transferlab pretrain`, held after its look for a settled run until every worker has looked.
    import os, sys, time
    from pathlib import Path
    from transferlab import cli, runs

    real, barrier = runs.settled_run, Path(os.environ["BARRIER"])

    def settled_then_wait(*args, **kwargs):
        result = real(*args, **kwargs)
        if not os.environ.get("PASSED_BARRIER"):
            os.environ["PASSED_BARRIER"] = "1"
            (barrier / str(os.getpid())).touch()
            deadline = time.monotonic() + 120
            while len(list(barrier.iterdir())) < int(os.environ["WORKERS"]) and time.monotonic() < deadline:
                time.sleep(0.02)
        return result

    runs.settled_run = settled_then_wait
    sys.argv = ["transferlab", *sys.argv[1:]]
    cli.main()
""")


def test_racing_workers_on_separate_hosts_train_a_key_once(store, server, tmp_path):
    (tmp_path / "barrier").mkdir()
    (tmp_path / "racer.py").write_text(RACER)
    args = [sys.executable, str(tmp_path / "racer.py"), "pretrain", "--source", SOURCE, "--training", TINY["training"], "--experiment", "race"]
    workers = [subprocess.Popen(args, env=worker_env(tmp_path / f"host{i}", BARRIER=str(tmp_path / "barrier"), WORKERS="3"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(err[-2000:] for _, err in outputs)
    found = all_runs()
    finished = [r for r in found if r.info.status == "FINISHED"]
    assert len(finished) == 1, [(r.info.run_id, r.info.status) for r in found]
    winner = finished[0].info.run_id
    assert all(winner in out for out, _ in outputs)  # every worker reports the one finished run
    trained = [r for r in found if "pretrain.train_loss" in tracking.run_metrics(r)]
    assert [r.info.run_id for r in trained] == [winner]  # exactly one training
    for loser in (r for r in found if r.info.run_id != winner):
        assert loser.info.status == "KILLED" and loser.data.tags[runs.SUPERSEDED_BY] == winner
    assert len(MlflowClient().search_logged_models([finished[0].info.experiment_id])) == 1


def test_a_tracking_server_killed_mid_training_loses_nothing(store, tmp_path):
    port, folder = free_port(), tmp_path / "server"
    folder.mkdir()
    server = start_server(folder, port)
    uri, cache, epochs = f"http://127.0.0.1:{port}", tmp_path / "cache", 25
    env = worker_env(cache, MLFLOW_TRACKING_URI=uri, TRANSFERLAB_TRACKING_WAIT="2", MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    args = [sys.executable, "-m", "transferlab", "pretrain", "--source", SOURCE, "--training", TRAINING.format(epochs=epochs), "--experiment", "outage"]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client, deadline, run = MlflowClient(uri), time.monotonic() + 120, None
        while run is None or "pretrain.epoch" not in run.data.metrics:
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no epoch recorded within 120 s"
            time.sleep(0.1)
            found = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`transferlab.kind` = 'pretrain'")
            run = found[0] if found else None
        stop_server(server, signal.SIGKILL)  # the server goes away mid-training
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
        stop_server(server, signal.SIGKILL)
    assert first.returncode == 2, err[-3000:]
    assert "unreachable" in err and "training goes on" in err, err[-3000:]
    last = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(last) == 1 and "checkpoint is kept" in last[0] and "rerun the same command" in last[0]
    checkpoint = cache / "checkpoints" / f"{run.info.run_id}.pt"
    assert checkpoint.exists() and torch.load(checkpoint, weights_only=True)["step"] > 0  # trained to the end, kept

    server = start_server(folder, port)  # the store is back
    try:
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "resuming pretraining run" in rerun.stderr and run.info.run_id in rerun.stdout
        assert len(client.search_runs([run.info.experiment_id])) == 1  # no second run
        final = client.get_run(run.info.run_id)
        assert final.info.status == "FINISHED" and tracking.WEIGHTS_DIGEST in final.data.tags
        history = client.get_metric_history(run.info.run_id, "pretrain.epoch")
        assert sorted(m.value for m in history) == list(map(float, range(1, epochs + 1)))  # every epoch once
        assert not checkpoint.exists()
    finally:
        stop_server(server)


def test_a_kill_during_a_transfer_task_leaves_no_run_running(store, tmp_path):
    args = [sys.executable, "-m", "transferlab", "run", "--source", SOURCE, "--training", TINY["training"], "--target", TARGET,
            "--tasks", "finetune(epochs=500, batch_size=8)", "--experiment", "transfer-kill"]
    first = subprocess.Popen(args, env=worker_env(Path(os.environ["TRANSFERLAB_CACHE"])), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not [r for r in all_runs() if r.data.tags.get(tracking.KIND) == "transfer" and r.info.status == "RUNNING"]:
            assert first.poll() is None, "the job ended before its transfer task could be killed"
            assert time.monotonic() < deadline, "no transfer run within 180 s"
            time.sleep(0.1)
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=30)
    [old_main] = [r.info.run_id for r in all_runs() if r.data.tags.get(tracking.KIND) == "main"]
    assert MlflowClient().get_run(old_main).info.status == "RUNNING"

    result = pipeline.main_run(**TINY, target=TARGET, tasks="knn", experiment="transfer-kill")
    assert [r.info.run_id for r in all_runs() if r.info.status == "RUNNING"] == []
    old = MlflowClient().get_run(old_main)
    assert old.info.status == "KILLED" and old.data.tags[runs.SUPERSEDED_BY] == result.main_run
    [finetune] = [r for r in all_runs() if r.data.params.get("task", "").startswith("finetune")]
    assert finetune.info.status == "KILLED" and "gone" in finetune.data.tags[tracking.ERROR]  # resumable by its key


def test_a_model_left_pending_by_a_kill_is_marked_failed_beside_the_ready_one(store):
    experiment = tracking.experiment_id("pending")
    run_id = tracking.create_run(experiment, "r", {})
    with mlflow.start_run(run_id=run_id):
        mlflow.initialize_logged_model(name="model", source_run_id=run_id)  # what a kill during log_model leaves
        tracking.log_model(torch.nn.Linear(2, 2), [])
    models = MlflowClient().search_logged_models([experiment])
    assert sorted(str(m.status).split(".")[-1] for m in models) == ["FAILED", "READY"]


def test_http_requests_to_a_tracking_server_are_bounded(monkeypatch):
    assert {k: os.environ[k] for k in tracking.HTTP_DEFAULTS} == tracking.HTTP_DEFAULTS  # unless the user set their own
    monkeypatch.setenv(tracking.TRACKING_WAIT_ENV, "soon")
    with pytest.raises(tracking.TransferlabError, match="TRANSFERLAB_TRACKING_WAIT must be a number"):
        tracking.check_store()


def test_a_full_disk_mid_training_ends_the_run_failed_keeps_its_checkpoint_and_the_rerun_resumes_it(store, monkeypatch):
    from transferlab import training
    from transferlab.errors import StorageError

    real, saves = training.save_checkpoint, []

    def full_at_the_second_checkpoint(path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise StorageError(f"no space left in {path.parent}: writing a checkpoint needs 3.0 MB, 0 B free")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", full_at_the_second_checkpoint)
    spec = dict(TINY, training=TRAINING.format(epochs=3))
    with pytest.raises(StorageError, match="no space left"):
        pipeline.pretrain_run(**spec, experiment="full")
    [failed] = all_runs()
    assert failed.info.status == "FAILED" and failed.data.tags[tracking.RESUMABLE_FAILURE] == "true"
    assert failed.data.tags[tracking.ERROR].startswith("StorageError: no space left")
    assert torch.load(pipeline.checkpoint_path(failed.info.run_id), weights_only=True)["step"] == 5  # epoch 1, kept

    assert pipeline.pretrain_run(**spec, experiment="full") == failed.info.run_id  # room again: the same run resumes
    run = MlflowClient().get_run(failed.info.run_id)
    assert run.info.status == "FINISHED" and tracking.RESUMABLE_FAILURE not in run.data.tags and tracking.ERROR not in run.data.tags
    assert sorted(m.value for m in MlflowClient().get_metric_history(run.info.run_id, "pretrain.epoch")) == [1.0, 2.0, 3.0]


def test_a_hanging_store_is_probed_once_per_interval_with_one_quick_request(store, monkeypatch):
    experiment = tracking.experiment_id("hang")
    run_id = tracking.create_run(experiment, "r", {tracking.KIND: "pretrain", tracking.KEY: "k"})
    attempts = []

    def hangs_then_fails(*args, **kwargs):  # a server that stops answering: each request waits out its timeout
        attempts.append(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
        time.sleep(0.5)
        raise mlflow.MlflowException("API request to http://127.0.0.1:1/api failed with exception Read timed out")

    monkeypatch.setattr(runs, "log_metrics", hangs_then_fails)
    monkeypatch.setattr(runs, "OUTAGE_RETRY_S", 0.3)
    log = runs.TrainingLog(run_id, "k")
    log({"pretrain.epoch": 1.0}, 1)  # the first failure: announced, training goes on
    log({"pretrain.epoch": 2.0}, 2)  # 0.3 s after the failed request ENDED have not passed: no new request
    time.sleep(0.35)
    log({"pretrain.epoch": 3.0}, 3)  # now one probe, tried once with a short timeout
    assert attempts == [tracking.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], "0"]
    assert [step for _, step in log.waiting] == [1, 2, 3]  # nothing lost: sent when the store answers again

    monkeypatch.setattr(runs, "log_metrics", tracking.log_metrics)
    time.sleep(0.35)
    log({"pretrain.epoch": 4.0}, 4)
    assert log.waiting == [] and [m.step for m in MlflowClient().get_metric_history(run_id, "pretrain.epoch")] == [1, 2, 3, 4]


def test_a_store_that_stops_answering_between_runs_is_one_line_from_the_cli(store, monkeypatch):
    from click.testing import CliRunner

    from transferlab.cli import cli

    def refused(*args, **kwargs):
        raise mlflow.MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/create failed with exception "
                                     "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Connection refused)")

    monkeypatch.setattr(tracking, "create_run", refused)
    monkeypatch.setattr(runs, "create_run", refused)
    result = CliRunner().invoke(cli, ["pretrain", "--source", SOURCE, "--training", TINY["training"]])
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit)
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: the MLflow tracking store") and "Connection refused" in line and "rerun the same command" in line
