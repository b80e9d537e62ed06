"""`transferlab search` in parallel on a real PostgreSQL and a real `mlflow server`: 2 worker processes run 8 trials, none
lost or duplicated, one trial run each; a worker killed with SIGKILL mid-trial, or Ctrl-C, leaves no trial RUNNING."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from servers import free_port, start_server, stop_server
from tiny_specs import BACKBONE, SOURCE, TARGET
from transferlab import run_owners, tracking
from transferlab.search_trials import RUN_ATTR, SEARCH_RUN, TRIAL, TRIAL_STATE

pytest_plugins = ["postgres"]  # fixtures: postgres_server, postgres_url
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
SLOW = 12  # training steps of a trial the tests interrupt: seconds of training, so the signal lands mid-trial


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """One `mlflow server` for the module (each test's search has its own name, so its own experiment)."""
    port = free_port()
    process = start_server(tmp_path_factory.mktemp("mlflow-server"), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


def command(name: str, storage: str, trials: int, workers: int, steps: int = 4) -> list[str]:
    return [sys.executable, "-m", "transferlab", "search", "--source", SOURCE, "--target", TARGET, "--budget", "40", "--trials", str(trials),
            "--name", name, "--storage", storage, "--workers", str(workers), "--backbone", BACKBONE, "--pruner", "none", "--best", "1",
            "--training", f"train(steps={steps}, batch_size=16, resolution=16)", "--space", "allocation(coarsen=False)"]


def environment(uri: str) -> dict[str, str]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", TRANSFERLAB_SEARCH_HEARTBEAT="1")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    return env


def search(name, storage, trials, workers, uri, cwd, steps=4, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run(command(name, storage, trials, workers, steps), env=environment(uri), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def trial_runs(uri: str, search_run: str) -> list:
    return MlflowClient(uri).search_runs([MlflowClient(uri).get_run(search_run).info.experiment_id],
                                         f"tags.`{tracking.KIND}` = 'trial'")


def check_consistent(study, uri: str, trials: int) -> list:
    """Exactly `trials` done trials numbered apart, none RUNNING or WAITING, each with one trial run under the one search run,
    cross-linked, and no run of the experiment left RUNNING; returns the trial runs by trial number."""
    all_trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    done = [t for t in all_trials if t.state in DONE]
    assert len(done) == trials and len({t.number for t in done}) == trials
    search_run = study.user_attrs[RUN_ATTR]
    found = trial_runs(uri, search_run)
    assert sorted(int(r.data.tags[TRIAL]) for r in found) == sorted(t.number for t in all_trials if RUN_ATTR in t.user_attrs)
    by_number = {int(r.data.tags[TRIAL]): r for r in found}
    for t in all_trials:
        run = by_number[t.number]
        assert t.user_attrs[RUN_ATTR] == run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == run.data.tags[SEARCH_RUN] == search_run
    experiment = MlflowClient(uri).get_run(search_run).info.experiment_id
    assert not [r.info.run_id for r in MlflowClient(uri).search_runs([experiment]) if r.info.status == "RUNNING"]
    assert MlflowClient(uri).get_run(search_run).info.status == "FINISHED"
    return by_number


def test_two_workers_run_eight_trials_none_lost_or_duplicated(postgres_url, tracking_server, tmp_path):
    """`--workers 2`: trials 0..7, all COMPLETE, 4 from each of two spawned worker processes, one trial run each."""
    search("par", postgres_url, 8, 2, tracking_server, tmp_path)
    study = optuna.load_study(study_name="par", storage=postgres_url)
    assert [t.number for t in study.get_trials(deepcopy=False)] == list(range(8))
    runs = check_consistent(study, tracking_server, 8)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert {r.info.status for r in runs.values()} == {"FINISHED"} and {r.data.tags[TRIAL_STATE] for r in runs.values()} == {"COMPLETE"}
    pids = [runs[n].data.tags[run_owners.PID] for n in range(8)]
    assert len(set(pids)) == 2 and sorted(pids.count(p) for p in set(pids)) == [4, 4]  # two worker processes, 4 trials each
    command_pid = MlflowClient(tracking_server).get_run(study.user_attrs[RUN_ATTR]).data.tags[run_owners.PID]
    assert command_pid not in pids  # the command owns the search run; its spawned workers own the trials


def running_trial_pid(storage: str, name: str, uri: str, timeout: float = 180) -> tuple[int, int]:
    """(trial number, worker pid) of a trial whose run has started, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            time.sleep(0.5)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if RUN_ATTR in t.user_attrs:
                pid = MlflowClient(uri).get_run(t.user_attrs[RUN_ATTR]).data.tags.get(run_owners.PID)
                if pid:
                    return t.number, int(pid)
        time.sleep(0.3)
    raise AssertionError(f"no trial of {name} started within {timeout} s")


def start(name, storage, trials, uri, cwd, steps) -> subprocess.Popen:
    """A `transferlab search --workers 1` command in its own process group (so a Ctrl-C reaches it alone)."""
    return subprocess.Popen(command(name, storage, trials, 1, steps), env=environment(uri), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """The command's exit status and stderr, once it ends by itself within `timeout`."""
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def stop(process: subprocess.Popen) -> None:
    """Kill the command's process group if it still runs (a test failed), and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def test_a_worker_killed_mid_trial_leaves_its_trial_failed_and_retried(postgres_url, tracking_server, tmp_path):
    """Two commands on one storage and tracking server ("N commands on N machines"); one is killed with SIGKILL mid-trial:
    its trial fails by its stale heartbeat, the other retries it with its params, and the search ends with 4 done trials."""
    optuna.storages.RDBStorage(postgres_url)  # the tables first: two processes creating them at once race in PostgreSQL's catalog
    commands = [start("kill", postgres_url, 4, tracking_server, tmp_path, SLOW) for _ in range(2)]
    try:
        number, pid = running_trial_pid(postgres_url, "kill", tracking_server)
        [victim] = [c for c in commands if c.pid == pid]
        os.kill(pid, signal.SIGKILL)
        [survivor] = [c for c in commands if c is not victim]
        code, err = finish(survivor)
        assert code == 0, err[-4000:]
    finally:
        for c in commands:
            stop(c)
    study = optuna.load_study(study_name="kill", storage=postgres_url)
    killed = study.trials[number]
    assert killed.state == TrialState.FAIL and victim.returncode == -signal.SIGKILL
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == number]
    assert len(retries) == 1 and retries[0].state in DONE and retries[0].params == killed.params
    runs = check_consistent(study, tracking_server, 4)
    assert runs[number].info.status == "KILLED" and runs[number].data.tags[TRIAL_STATE] == "FAIL"


def test_ctrl_c_mid_trial_fails_the_trial_and_a_rerun_finishes_the_search(postgres_url, tracking_server, tmp_path):
    """Ctrl-C of a one-process search mid-trial: the trial FAIL (not RUNNING), its run KILLED; the rerun replaces it."""
    process = start("int", postgres_url, 2, tracking_server, tmp_path, SLOW)
    try:
        number, pid = running_trial_pid(postgres_url, "int", tracking_server)
        assert pid == process.pid
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        code, err = finish(process, 60)
    finally:
        stop(process)
    assert code not in (0, -signal.SIGKILL), err[-3000:]  # it stopped on the interrupt, by itself
    study = optuna.load_study(study_name="int", storage=postgres_url)
    interrupted = study.trials[number]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["interrupted"] is True
    run = MlflowClient(tracking_server).get_run(interrupted.user_attrs[RUN_ATTR])
    assert run.info.status == "KILLED" and run.data.tags[TRIAL_STATE] == "FAIL"
    search("int", postgres_url, 2, 1, tracking_server, tmp_path, SLOW)
    study = optuna.load_study(study_name="int", storage=postgres_url)
    assert study.trials[number].state == TrialState.FAIL  # continued by a new trial, not rewritten
    [again] = [t for t in study.trials if t.user_attrs.get("retry_of") == number]  # its allocation queued again, once
    assert again.params == interrupted.params and again.state == TrialState.COMPLETE
    check_consistent(study, tracking_server, 2)
