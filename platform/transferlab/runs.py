"""The run lifecycle: one keyed MLflow run per piece of work, shared by pretraining, transfer, main, study and cell runs.

`keyed_run` is the one entry. For a run key in an experiment it
- returns the FINISHED run with that key (reuse: nothing runs again);
- waits for a RUNNING run whose owner is alive (this host's key lock, or its heartbeat: see run_owners), or with
  `wait=False` refuses, naming the owner;
- resumes a stopped run (KILLED by Ctrl-C, RUNNING with an owner that is gone, or FAILED for a cause outside the work,
  tagged transferlab.resumable) when it can be resumed here (its checkpoint is on this machine), recording why it had
  stopped (transferlab.resumed_after) instead of its error, and nesting it under the run now asking;
- otherwise creates a new run, superseding a stopped run it cannot resume (that one ends KILLED with
  transferlab.superseded_by and is never resumed again);
- makes the claim safe across hosts: a new run looks again after it is created and yields to an earlier claimant, and a
  run training yields at its next evaluation (TrainingLog), so one key trains once;
- ends the run as its block ends: FINISHED, KILLED on Ctrl-C, FAILED with the error (transferlab.error, error.txt);
  a failed run's checkpoint is deleted unless the failure was outside the work (a full disk, the store away).
"""

import contextlib
import dataclasses
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from rich.console import Console
from rich.markup import escape

from .cache import cache_dir, storage
from .errors import TransferlabError
from .run_owners import HEARTBEAT, HOST, PID, STALE_ENV, heartbeats, is_mine, live_owner, owner_tags, stale_after
from .tracking import (
    ERROR,
    KEY,
    KIND,
    RESUMABLE_FAILURE,
    TRACKING_WAIT_ENV,
    TrackingUnavailable,
    active,
    client,
    create_run,
    get_run,
    log_metrics,
    quick_requests,
    recorded,
    resumable,
    set_tags,
    store_failure,
    store_problem,
    tracking_wait,
)

RESUMABLE = ("RUNNING", "KILLED")  # left by a killed process or Ctrl-C; a FAILED run is kept as a record and not resumed,
SUPERSEDED_BY = "transferlab.superseded_by"  # on a stopped run that a new run replaced (it is never resumed again)
SUPERSEDED_BECAUSE = "transferlab.superseded_because"
RESUMED_AFTER = "transferlab.resumed_after"  # on a resumed run: why it had stopped (the error it had, or its gone owner)
WAIT_POLL_S = 5.0  # how often a run owned by a live process is looked at while waiting for it
OUTAGE_RETRY_S = 30.0  # while the store is unreachable, how often training tries it again (one quick request)
PROBE_TIMEOUT_S = 5.0  # that request's timeout: a hanging server costs training at most this per OUTAGE_RETRY_S

console = Console(stderr=True)


@dataclasses.dataclass
class KeyedRun:
    """The run `keyed_run` settled on: `done` if it had finished before (its block must do nothing), `fresh` if nothing
    of it is recorded yet (its params must be logged), `resumed` the stopped run it continues, if any."""

    run_id: str
    done: bool = False
    fresh: bool = True
    resumed: Run | None = None


@contextlib.contextmanager
def keyed_run(experiment: str, key: str, kind: str, name: str, *, parent: str | None = None, tags: dict[str, str] | None = None,
              wait: bool = True, what: str | None = None, checkpoint: Callable[[str], Path] | None = None,
              recorded_if: Callable[[Run], bool] = lambda run: True, system_metrics: bool = False) -> Iterator[KeyedRun]:
    """The one run of `key` in `experiment` (see the module docstring), active while the block runs unless it is `done`.

    `checkpoint(run_id)`: the file a run of this kind resumes from, if it has one; a stopped run resumes here only when
    that file exists, and the file is deleted when the run ends FINISHED or FAILED. `recorded_if(run)`: whether a resumed
    run already holds its params (else it is `fresh`). A run that yields to an earlier claimant mid-block ends KILLED
    (superseded by the winner), and the block's result is the winner's run once it finishes."""
    what = what or f"{kind} run"
    with key_lock(key, wait=wait):
        while True:
            done, stopped = settled_run(experiment, key, what, wait=wait)
            if done is not None:
                console.print(f"[green]reusing finished {what}[/] {done.info.run_id} (same key {key})")
                yield KeyedRun(done.info.run_id, done=True, fresh=False)
                return
            run = claim(experiment, key, kind, name, parent, tags or {}, stopped, what, checkpoint, recorded_if)
            if run is None:
                continue  # another worker took the key meanwhile: wait for it
            scratch = checkpoint(run.run_id) if checkpoint else None
            try:
                with active(run.run_id, system_metrics=system_metrics, owned=run.resumed is None):
                    yield run
            except Yielded as exc:
                supersede(get_run(run.run_id), exc.winner, "another worker claimed the same key first")
                console.print(f"[yellow]{what} {run.run_id} yields[/] to run {exc.winner}, which claimed the same key first")
                if scratch:
                    scratch.unlink(missing_ok=True)
                continue
            except BaseException as exc:
                if scratch and not resumable(exc):
                    scratch.unlink(missing_ok=True)  # the run ended FAILED and is not resumed
                raise  # else the checkpoint is kept: a rerun continues from it
            if scratch:
                scratch.unlink(missing_ok=True)
            return


def claim(experiment: str, key: str, kind: str, name: str, parent: str | None, tags: dict[str, str], stopped: Run | None, what: str,
          checkpoint: Callable[[str], Path] | None, recorded_if: Callable[[Run], bool]) -> KeyedRun | None:
    """The run this process works in for `key`: `stopped` resumed, or a new run (replacing `stopped` when it cannot be
    resumed here); None when another worker claimed the key first (a new run yields, a stopped one is theirs)."""
    if stopped is not None and (checkpoint is None or checkpoint(stopped.info.run_id).exists()):
        run_id = stopped.info.run_id
        resume(stopped, parent)
        if not is_mine(get_run(run_id)):  # a worker on another host took it over at the same moment
            return None
        console.print(f"[yellow]resuming {what}[/] {run_id}" + (" from its last checkpoint" if checkpoint else "") + f" ({escape(why_stopped(stopped))})")
        return KeyedRun(run_id, fresh=not recorded_if(stopped), resumed=stopped)
    run_id = create_run(experiment, name, {KIND: kind, KEY: key} | tags, parent)
    if stopped is not None:
        reason = f"no checkpoint of it on this machine ({checkpoint(stopped.info.run_id)})"
        supersede(stopped, run_id, reason)
        end_dead_main(stopped.data.tags.get(MLFLOW_PARENT_RUN_ID, ""), parent)
        console.print(f"[yellow]{what} {stopped.info.run_id} stopped[/] ({escape(why_stopped(stopped))}) and has {escape(reason)}: training afresh in "
                      f"new run {run_id}; the old run ends KILLED (transferlab.superseded_by)")
    winner = earlier_claimant(experiment, key, run_id)
    if winner is not None:
        supersede(get_run(run_id), winner.info.run_id, "another worker claimed the same key first")
        return None
    return KeyedRun(run_id)


@contextlib.contextmanager
def owned_run(run_id: str, *, end: bool = True) -> Iterator[None]:
    """A run without a key that this process answers for (a main or study run it made, or `mlflow run`'s): owner tags and
    a heartbeat while the block runs, ended as `recorded` ends it (`end=False`: errors recorded, the run left open)."""
    set_tags(run_id, owner_tags())
    with recorded(run_id, end=end), heartbeats(run_id):
        yield


def keyed_runs(experiment: str, key: str) -> list[Run]:
    """The non-deleted, non-superseded runs of the experiment with run key `key`, newest first."""
    runs = client().search_runs([experiment], f"tags.`{KEY}` = '{key}'", order_by=["attributes.start_time DESC"])
    return [r for r in runs if SUPERSEDED_BY not in r.data.tags]


def find_run(experiment: str, key: str, statuses: tuple[str, ...]) -> Run | None:
    """The newest non-deleted run of the experiment with run key `key` and one of `statuses` (superseded runs excluded);
    RESUMABLE also finds FAILED runs tagged transferlab.resumable."""
    return next((r for r in keyed_runs(experiment, key) if r.info.status in statuses or (
        statuses == RESUMABLE and r.info.status == "FAILED" and r.data.tags.get(RESUMABLE_FAILURE))), None)


def claim_order(run: Run) -> tuple[int, str]:
    """How claims on one key are ordered: by start time, then run id; every worker sees the same order."""
    return run.info.start_time, run.info.run_id


def earlier_claimant(experiment: str, key: str, run_id: str) -> Run | None:
    """A run with the same key that `run_id` must yield to: one FINISHED, or RUNNING with a live owner and claimed earlier.

    Two workers (hosts with separate key locks) that both found no run create one each; each then looks again, and the
    later claimant yields. A claimant on a host whose clock runs behind can still come first in that order: the one
    already training yields at its next evaluation (see `pipeline.train`), so exactly one training finishes."""
    runs = keyed_runs(experiment, key)
    mine = next((r for r in runs if r.info.run_id == run_id), None)
    others = [r for r in runs if r.info.run_id != run_id]
    finished = [r for r in others if r.info.status == "FINISHED"]
    earlier = [r for r in others if r.info.status == "RUNNING" and mine is not None and claim_order(r) < claim_order(mine) and live_owner(r)]
    return (finished or sorted(earlier, key=claim_order) or [None])[0]  # the earliest: every loser yields to the same run


class Yielded(Exception):
    """Another worker claimed the same run key first: this run ends KILLED, superseded by that one, which is waited for."""

    run_status = "KILLED"

    def __init__(self, winner: str):
        super().__init__(f"run key claimed first by run {winner}")
        self.winner = winner


def settled_run(experiment: str, key: str, what: str, *, wait: bool = True) -> tuple[Run | None, Run | None]:
    """(the finished run with `key`, or the stopped one to resume): each may be None. A RUNNING run whose owner is alive is
    waited for (with a message) until it ends or its owner is gone; with `wait=False` that is an error naming the owner."""
    announced = False
    while True:
        done = find_run(experiment, key, ("FINISHED",))
        if done is not None:
            return done, None
        stopped = find_run(experiment, key, RESUMABLE)
        owner = stopped and live_owner(stopped)
        if not owner:
            return None, stopped
        if not wait:
            raise TransferlabError(f"{what} {stopped.info.run_id} is being run now by {owner}; wait for it to finish (leave out "
                                   f"--no-wait), or, if that process is gone, rerun after {stale_after():.0f} s without heartbeat ({STALE_ENV})")
        if not announced:
            console.print(f"[yellow]waiting for {what}[/] {stopped.info.run_id}: {owner} is running it (Ctrl-C to stop waiting)")
            announced = True
        time.sleep(WAIT_POLL_S)


def why_stopped(run: Run) -> str:
    """What stopped a resumable run, for the record: its error, else its owner that is gone."""
    tags = run.data.tags
    if tags.get(ERROR):
        return tags[ERROR]
    return f"{run.info.status}: owner host {tags.get(HOST, '?')} pid {tags.get(PID, '?')} gone"


@contextlib.contextmanager
def key_lock(key: str, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on a run key (on this host) while a run with that key is found, trained and ended; if another
    process holds it, wait for it (with a message), or with `wait=False` fail."""
    with storage(cache_dir("locks"), "a run lock"):
        f = open(cache_dir("locks") / f"{key}.lock", "w")
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise TransferlabError(f"another transferlab process is running the run with key {key}; wait for it to finish "
                                       "(leave out --no-wait)") from None
            console.print(f"[yellow]waiting for another transferlab process[/] on this host that runs key {key} (Ctrl-C to stop waiting)")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def supersede(old: Run, new_run: str, reason: str) -> None:
    """End a stopped run KILLED for good: `new_run` replaces it (tag transferlab.superseded_by; it is not resumed again)."""
    set_tags(old.info.run_id, {SUPERSEDED_BY: new_run, SUPERSEDED_BECAUSE: reason[:5000]})
    client().set_terminated(old.info.run_id, "KILLED")


def resume(run: Run, parent: str | None) -> None:
    """Take over a stopped run: record why it had stopped (transferlab.resumed_after) instead of its error tag and
    `error.txt`; end its dead main run (RUNNING, kind=main) KILLED; nest it under `parent`, the run that finishes it."""
    run_id, tags = run.info.run_id, run.data.tags
    set_tags(run_id, {RESUMED_AFTER: why_stopped(run)[:5000]} | owner_tags())
    clear_error(run)
    if RESUMABLE_FAILURE in tags:
        client().delete_tag(run_id, RESUMABLE_FAILURE)
    old_parent = tags.get(MLFLOW_PARENT_RUN_ID)
    if old_parent and old_parent != parent:
        end_dead_main(old_parent, parent)
    if parent and old_parent != parent:
        set_tags(run_id, {MLFLOW_PARENT_RUN_ID: parent})


def end_dead_main(run_id: str, successor: str | None) -> None:
    """End a main run left RUNNING by a process that is gone as KILLED, pointing to the main run that took over; a run
    without an owner record (one transferlab never adopted) is left alone, as nothing tells whether it is alive."""
    if not run_id or run_id == successor:
        return
    with contextlib.suppress(mlflow.MlflowException):
        main = client().get_run(run_id)
        if main.data.tags.get(KIND) == "main" and main.info.status == "RUNNING" and HOST in main.data.tags and live_owner(main) is None:
            if successor:
                set_tags(run_id, {SUPERSEDED_BY: successor})
            client().set_terminated(run_id, "KILLED")


def end_dead_runs(experiment: str, successor: str | None = None) -> None:
    """End KILLED every RUNNING run of the experiment whose owner is provably gone (a kill -9, a lost machine), so none
    stays RUNNING forever: keyed runs stay resumable (KILLED, with why as transferlab.error); a dead main run points to
    `successor`, the main run now asking. Runs without an owner record, or of this process, are left alone."""
    for run in client().search_runs([experiment], "attributes.status = 'RUNNING'"):
        run_id, tags = run.info.run_id, run.data.tags
        if HOST not in tags or is_mine(run) or run_id == successor or live_owner(run):
            continue
        if tags.get(KIND) == "main":
            end_dead_main(run_id, successor)
            continue
        with contextlib.suppress(mlflow.MlflowException):
            set_tags(run_id, {ERROR: why_stopped(run)})
            client().set_terminated(run_id, "KILLED")


def clear_error(run: Run) -> None:
    """Remove a resumed run's error record: the tag transferlab.error and the artifact error.txt."""
    c = client()
    if ERROR in run.data.tags:
        c.delete_tag(run.info.run_id, ERROR)
    with contextlib.suppress(Exception):  # an artifact store that cannot delete keeps the file; the tag is what filters use
        if any(a.path == "error.txt" for a in c.list_artifacts(run.info.run_id)):
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            get_artifact_repository(run.info.artifact_uri).delete_artifacts("error.txt")


class TrainingLog:
    """The `log` callback of a training run: records each evaluation and a heartbeat, yields to an earlier claimant of the
    key (`earlier_claimant`), and rides out a tracking outage.

    When the store cannot be reached, training goes on (the checkpoint holds every evaluation): a line says so, the
    evaluations wait here and are sent when the store answers again (tried at most every OUTAGE_RETRY_S, so that an
    outage costs no time per epoch). `flush` at the end waits up to $TRANSFERLAB_TRACKING_WAIT seconds for the store, then
    raises TrackingUnavailable; the run's checkpoint is kept and the next request records the rest without retraining."""

    def __init__(self, run_id: str, key: str):
        self.run_id, self.key = run_id, key
        self.waiting: list[tuple[dict[str, float], int]] = []
        self.down_since: float | None = None
        self.tried_at = 0.0

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        self.waiting.append((metrics, step))
        if self.down_since is not None and time.monotonic() - self.tried_at < OUTAGE_RETRY_S:
            return
        try:
            with quick_requests(PROBE_TIMEOUT_S) if self.down_since is not None else contextlib.nullcontext():  # a probe, once
                self.send()
                winner = earlier_claimant(client().get_run(self.run_id).info.experiment_id, self.key, self.run_id)
        except Exception as exc:
            if not store_failure(exc):
                raise
            self.went_down(exc)
            return
        if winner is not None:
            raise Yielded(winner.info.run_id)

    def send(self) -> None:
        """Send the waiting evaluations, oldest first, and a heartbeat."""
        self.tried_at = time.monotonic()
        while self.waiting:
            metrics, step = self.waiting[0]
            log_metrics(self.run_id, metrics, step)
            self.waiting.pop(0)
        client().set_tag(self.run_id, HEARTBEAT, f"{time.time():.3f}")
        if self.down_since is not None:
            console.print(f"[green]tracking store {mlflow.get_tracking_uri()} answers again[/] after {time.monotonic() - self.down_since:.0f} s; "
                          "the evaluations made meanwhile are recorded")
            self.down_since = None

    def went_down(self, exc: BaseException) -> None:
        """Note an outage, saying so once; the next try comes OUTAGE_RETRY_S after this failed one ended."""
        self.tried_at = time.monotonic()
        if self.down_since is None:
            self.down_since = time.monotonic()
            console.print(f"[yellow]tracking store {mlflow.get_tracking_uri()} unreachable[/] ({store_problem(exc)}): training goes on, "
                          f"its evaluations wait in the checkpoint; retrying every {OUTAGE_RETRY_S:.0f} s")

    def flush(self) -> None:
        """Send what waits, waiting up to tracking_wait() seconds for the store; TrackingUnavailable if it stays away."""
        deadline = time.monotonic() + tracking_wait()
        while self.waiting or self.down_since is not None:
            try:
                with quick_requests(PROBE_TIMEOUT_S) if self.down_since is not None else contextlib.nullcontext():
                    self.send()
            except Exception as exc:
                if not store_failure(exc):
                    raise
                self.went_down(exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TrackingUnavailable(
                        f"tracking store {mlflow.get_tracking_uri()} unreachable for {time.monotonic() - self.down_since:.0f} s "
                        f"({store_problem(exc)}): training finished and its checkpoint is kept; rerun the same command when "
                        f"the store is back to record the results without retraining ({TRACKING_WAIT_ENV} sets this wait)") from None
                console.print(f"[yellow]waiting for the tracking store[/] to record run {self.run_id}: {left:.0f} s left (Ctrl-C to stop; "
                              "rerunning later resumes)")
                time.sleep(min(OUTAGE_RETRY_S, max(left, 0.1)))
