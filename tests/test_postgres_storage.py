"""Optuna's RDBStorage on a real PostgreSQL server: parallel worker processes share a study; a killed worker's trial is retried."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

pytest_plugins = ["postgres"]  # fixtures: postgres_server, postgres_url
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeats and retries are "experimental"

WORKER = """
import os, sys, time, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
def objective(trial):
    trial.set_user_attr("pid", os.getpid())
    time.sleep(0.2)  # long enough for the two workers' trials to interleave
    return trial.suggest_float("x", -1, 1) ** 2
storage = optuna.storages.RDBStorage(sys.argv[1], heartbeat_interval=1, grace_period=2)
optuna.create_study(storage=storage, study_name="s", load_if_exists=True).optimize(objective, n_trials=4)
"""

HANGS = """
import sys, time, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
def objective(trial):
    trial.suggest_int("classes", 2, 64)
    trial.suggest_categorical("how", ["spread", "random"])
    print("running", flush=True)
    time.sleep(600)  # until the test kills this process
storage = optuna.storages.RDBStorage(sys.argv[1], heartbeat_interval=1, grace_period=2)
optuna.create_study(storage=storage, study_name="k").optimize(objective, n_trials=1)
"""


def test_two_worker_processes_share_one_study(postgres_url):
    """Both create-or-load the study at once, then each runs 4 trials: 8 complete trials numbered 0..7, 4 per process."""
    # Optuna's tables first, from one process: two creating them at once on an empty database race in PostgreSQL's
    # catalog (UniqueViolation on pg_type), so whoever starts the workers makes the storage before they start.
    optuna.storages.RDBStorage(postgres_url)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, postgres_url], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="s", storage=postgres_url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert sorted(t.number for t in trials) == list(range(8))
    pids = [t.user_attrs["pid"] for t in trials]
    assert sorted(pids.count(pid) for pid in set(pids)) == [4, 4] and set(pids) == {w.pid for w in workers}


def test_a_killed_workers_trial_fails_after_the_grace_period_and_is_retried_with_its_params(postgres_url):
    worker = subprocess.Popen([sys.executable, "-c", HANGS, postgres_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline() == "running\n", worker.stderr.read()[-3000:] if worker.poll() is not None else ""
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=30)
    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=2,
                                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    study = optuna.load_study(study_name="k", storage=storage)
    (killed,) = study.get_trials()
    assert killed.state == TrialState.RUNNING  # nothing finishes a killed process's trial but the heartbeat check

    time.sleep(3)  # > grace_period since the last heartbeat, which came before the kill
    optuna.storages.fail_stale_trials(study)
    failed, retry = study.get_trials()
    assert (failed.number, failed.state) == (0, TrialState.FAIL)
    assert (retry.number, retry.state, retry.params) == (1, TrialState.WAITING, killed.params)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0

    study.optimize(lambda trial: trial.suggest_int("classes", 2, 64) + len(trial.suggest_categorical("how", ["spread", "random"])), n_trials=1)
    done = study.trials[1]  # the next worker runs the queued retry, with the killed trial's params
    assert done.state == TrialState.COMPLETE and done.params == killed.params and len(study.trials) == 2


def test_without_postgresql_the_fixture_fails_saying_to_run_setup(tmp_path, monkeypatch):
    from postgres import postgres_bin  # here, not above: pytest_plugins must import the module first (for assert rewriting)

    monkeypatch.setenv("TRANSFERLAB_POSTGRES_BIN", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"initdb is neither in .* nor on PATH: run `bash tests/setup.sh` as root on Debian"):
        postgres_bin()
