"""MLflow plumbing: experiment tags, run keys and locks, error records, resume after kill -9, a tracking server on loopback."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import psutil
import pytest
from mlflow import MlflowClient

from tiny_specs import SOURCE, TARGET, TINY
from transferlab import TransferlabError, pipeline, run_owners, runs, tracking
from transferlab.cache import cache_dir

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store, server
TARGET_LABEL = "synthetic_heldout_branching_2_2_2_test5_train20_val5"  # TARGET's non-default parameters name it
KNN_TOP1, LINEAR_TOP1 = (f"transfer.{task}.{TARGET_LABEL}.test_top1" for task in ("knn", "linear"))


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
    assert runs.find_run(experiment, "k1", ("RUNNING",)).info.run_id == second
    assert runs.find_run(experiment, "k1", ("KILLED",)).info.run_id == first
    assert runs.find_run(experiment, "k1", ("FINISHED",)) is None


def test_a_run_key_is_locked_while_in_use(store):
    with runs.key_lock("abc"):
        with pytest.raises(TransferlabError, match="another transferlab process"):
            with runs.key_lock("abc", wait=False):
                pass
        with runs.key_lock("other", wait=False):
            pass
    with runs.key_lock("abc", wait=False):
        pass


def hold_lock_until_waited_for(key: str, monkeypatch, then=lambda: None) -> threading.Thread:
    """Hold a run key's lock in another thread (flock locks open files, so this blocks this process too) until this
    process announces that it waits for it; `then` runs just before the lock is let go."""
    held, waited_for = threading.Event(), threading.Event()
    announce = runs.console.print

    def print_then_release(*args, **kwargs):
        announce(*args, **kwargs)
        if "waiting for another transferlab process" in str(args[0]):
            waited_for.set()

    def hold():
        with runs.key_lock(key, wait=False):
            held.set()
            waited_for.wait(60)
            then()

    monkeypatch.setattr(runs.console, "print", print_then_release)
    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    return thread


def test_a_locked_run_key_is_waited_for_with_a_message(store, capsys, monkeypatch):
    released = []
    thread = hold_lock_until_waited_for("abc", monkeypatch, then=lambda: released.append(True))
    with runs.key_lock("abc"):
        assert released == [True]  # got the lock only after the holder let go
    thread.join()
    assert "waiting for another transferlab process" in capsys.readouterr().err


def test_ctrl_c_ends_a_run_killed_so_that_it_is_resumed(store):
    experiment = tracking.experiment_id("x")
    run_id = tracking.create_run(experiment, "r", {tracking.KEY: "k"})
    with pytest.raises(KeyboardInterrupt), tracking.active(run_id):
        raise KeyboardInterrupt
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[tracking.ERROR] == "KeyboardInterrupt: "
    assert runs.find_run(experiment, "k", runs.RESUMABLE).info.run_id == run_id


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
            found = MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()], "tags.`transferlab.kind` = 'pretrain'")
            run = found[0] if found else None
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
    assert sorted(m.step for m in tracking.metric_history(run.info.run_id, "pretrain.val_top1")) == sorted(m.step for m in history)
    assert not list(checkpoints.glob("*.pt"))  # removed once the model is logged


def test_pretrain_and_transfer_against_a_tracking_server(store, server):
    run_id = pipeline.pretrain_run(**TINY)
    metrics = pipeline.transfer_run(run_id, TARGET, "knn")
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.params["train.epochs"] == "2" and len(tracking.metric_history(run_id, "pretrain.val_top1")) == 2
    assert {a.path for a in MlflowClient().list_artifacts(run_id, "manifest")} == {"manifest/manifest.json", "manifest/manifest.npz"}
    assert run.inputs.dataset_inputs[0].dataset.digest == run.data.params["manifest.digest"][:tracking.DATASET_DIGEST_CHARS]
    [child] = MlflowClient().search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert tracking.run_metrics(child)[KNN_TOP1] == metrics[KNN_TOP1]
    assert any((server / "artifacts").rglob("MLmodel"))  # the model went through the server's artifact proxy
    assert pipeline.pretrain_run(**TINY) == run_id


# ---- who owns a RUNNING run: wait for a live owner, take over from a gone one -------------------------------------------

def tiny_key() -> str:
    spec = pipeline.PretrainSpec.parse(**TINY)
    return spec.key(spec.prepare())


def fake_pretraining_run(experiment: str, **owner: str) -> str:
    """A RUNNING pretraining run with TINY's key, owned by `owner` (tags host, pid, heartbeat...)."""
    run_id = tracking.create_run(experiment, "someone else's", {tracking.KIND: "pretrain", tracking.KEY: tiny_key()})
    tracking.set_tags(run_id, owner)
    return run_id


@pytest.fixture
def no_training(monkeypatch):
    """Training that only ends its run FINISHED (these tests are about which run trains); the run ids it was given."""
    trained = []

    def run_pretraining(spec, manifest, run_id, checkpoint, fresh, **kwargs):
        trained.append(run_id)
        MlflowClient().set_terminated(run_id, "FINISHED")

    monkeypatch.setattr(pipeline, "run_pretraining", run_pretraining)
    monkeypatch.setattr(runs, "WAIT_POLL_S", 0.05)
    return trained


def test_a_run_that_a_live_process_on_another_host_trains_is_refused_or_waited_for(store, no_training, capsys, monkeypatch):
    experiment = tracking.experiment_id("race")
    fake = fake_pretraining_run(experiment, **{run_owners.HOST: "worker-7", run_owners.PID: "4242", run_owners.HEARTBEAT: str(time.time())})
    with pytest.raises(TransferlabError, match="pretraining run .* is being run now by host worker-7 pid 4242"):
        pipeline.pretrain_run(**TINY, experiment="race", wait=False)
    assert no_training == [] and MlflowClient().get_run(fake).info.status == "RUNNING"

    polls = []

    def other_worker_finishes(seconds):  # the waiting loop's first poll: the other worker ends its run meanwhile
        polls.append(seconds)
        MlflowClient().set_terminated(fake, "FINISHED")

    monkeypatch.setattr(runs, "time", types.SimpleNamespace(time=time.time, sleep=other_worker_finishes, monotonic=time.monotonic))
    assert pipeline.pretrain_run(**TINY, experiment="race") == fake
    assert polls == [runs.WAIT_POLL_S]
    assert no_training == [] and "waiting for pretraining run" in capsys.readouterr().err
    assert len(MlflowClient().search_runs([experiment])) == 1


@pytest.mark.parametrize("owner, stale_after", [
    ({run_owners.HOST: "worker-7", run_owners.PID: "4242", "age": 7200}, None),  # heartbeat older than the default 30 minutes
    ({run_owners.HOST: "worker-7", run_owners.PID: "4242", "age": 60}, "10"),  # older than TRANSFERLAB_STALE_AFTER
    ({run_owners.HOST: socket.gethostname(), run_owners.PID: "dead", "age": 0}, None),  # this host, its process gone
    ({run_owners.HOST: socket.gethostname(), run_owners.PID: "self", run_owners.PID_STARTED: "12.0", "age": 0}, None),  # pid reused since
])
def test_a_running_run_whose_owner_is_gone_is_taken_over(store, no_training, monkeypatch, owner, stale_after):
    if stale_after:
        monkeypatch.setenv(run_owners.STALE_ENV, stale_after)
    owner = dict(owner)
    owner[run_owners.HEARTBEAT] = str(time.time() - owner.pop("age"))
    if owner[run_owners.PID] == "dead":
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        owner[run_owners.PID] = str(process.pid)
    elif owner[run_owners.PID] == "self":
        owner[run_owners.PID] = str(os.getppid())  # alive, but it is not the process that started the run
    experiment = tracking.experiment_id("gone")
    fake = fake_pretraining_run(experiment, **owner)
    run_id = pipeline.pretrain_run(**TINY, experiment="gone", wait=False)
    assert no_training == [run_id] and run_id != fake  # no checkpoint of it here: a new run replaces it
    old = MlflowClient().get_run(fake)
    assert old.info.status == "KILLED" and old.data.tags[runs.SUPERSEDED_BY] == run_id


def test_live_owner_on_this_host_and_elsewhere(store):
    experiment = tracking.experiment_id("owners")
    now = str(time.time())
    parent = psutil.Process(os.getppid())
    alive_here = fake_pretraining_run(experiment, **{run_owners.HOST: socket.gethostname(), run_owners.PID: str(parent.pid),
                                                     run_owners.PID_STARTED: f"{parent.create_time():.3f}", run_owners.HEARTBEAT: now})
    assert f"pid {parent.pid}" in run_owners.live_owner(MlflowClient().get_run(alive_here))
    mine = tracking.create_run(experiment, "mine", {})  # this process holds the key lock whenever it asks
    assert run_owners.live_owner(MlflowClient().get_run(mine)) is None
    MlflowClient().set_terminated(alive_here, "KILLED")
    assert run_owners.live_owner(MlflowClient().get_run(alive_here)) is None  # only RUNNING runs have live owners
    legacy = MlflowClient().create_run(experiment).info.run_id  # no owner tags: the start time stands in for a heartbeat
    assert run_owners.live_owner(MlflowClient().get_run(legacy)).startswith("host ? pid ?")


def test_the_owner_and_heartbeat_are_recorded_and_refreshed(store, monkeypatch):
    monkeypatch.setattr(run_owners, "HEARTBEAT_EVERY_S", 0.2)
    experiment = tracking.experiment_id("beat")
    run_id = tracking.create_run(experiment, "r", {})
    first = float(MlflowClient().get_run(run_id).data.tags[run_owners.HEARTBEAT])
    with tracking.active(run_id):
        time.sleep(1.0)
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags[run_owners.HOST] == socket.gethostname() and tags[run_owners.PID] == str(os.getpid())
    assert float(tags[run_owners.HEARTBEAT]) > first + 0.2
    monkeypatch.setenv(run_owners.STALE_ENV, "soon")
    with pytest.raises(TransferlabError, match="TRANSFERLAB_STALE_AFTER must be a number of seconds"):
        run_owners.stale_after()
    before = len(MlflowClient().search_runs([experiment]))
    with pytest.raises(TransferlabError, match="TRANSFERLAB_STALE_AFTER"):  # found before any run is made
        pipeline.main_run(**TINY, target=TARGET, tasks="knn", experiment="beat")
    assert len(MlflowClient().search_runs([experiment])) == before


def test_no_heartbeat_lands_after_its_block_ends(monkeypatch):
    monkeypatch.setattr(run_owners, "HEARTBEAT_EVERY_S", 0.5)
    started, landed = threading.Event(), []

    def slow_beat(run_id):  # a slow tracking server
        started.set()
        time.sleep(0.3)
        landed.append(time.monotonic())

    monkeypatch.setattr(run_owners, "heartbeat", slow_beat)
    with run_owners.heartbeats("r"):
        assert started.wait(10)  # the block ends while a beat is in flight
    ended = time.monotonic()
    time.sleep(0.7)  # long enough for another beat, were one to start
    assert len(landed) == 1 and landed[0] <= ended


def test_a_second_request_on_this_host_waits_for_the_lock_then_reuses_the_finished_run(store, no_training, capsys, monkeypatch):
    experiment = tracking.experiment_id("same-host")

    def finish():  # what the process holding the lock does before it lets go
        run_id = tracking.create_run(experiment, "first", {tracking.KIND: "pretrain", tracking.KEY: tiny_key()})
        MlflowClient().set_terminated(run_id, "FINISHED")
        done.append(run_id)

    done = []
    holder = hold_lock_until_waited_for(tiny_key(), monkeypatch, then=finish)
    run_id = pipeline.pretrain_run(**TINY, experiment="same-host")
    holder.join()
    assert run_id == done[0] and no_training == []
    err = capsys.readouterr().err
    assert "waiting for another transferlab process" in err and "reusing finished pretraining run" in err
