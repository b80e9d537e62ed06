"""MLflow records: experiments shown as training runs, run keys, reuse/resume (owners in run_owners), params, manifests, models, errors."""

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import safetensors.torch
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.entities import LoggedModelStatus, Metric, Param, Run, RunTag
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from rich.console import Console

from .cache import cache_dir, storage
from .errors import TransferlabError
from .manifest import Manifest
from .run_owners import HEARTBEAT, HOST, PID, STALE_ENV, heartbeats, is_mine, live_owner, owner_tags, stale_after

KIND = "transferlab.kind"  # pretrain | transfer | main
KEY = "transferlab.key"
PRETRAIN_RUN = "transferlab.pretrain_run"
ERROR = "transferlab.error"
MODEL_URI = "transferlab.model_uri"  # the MLflow model, for users; transferlab never loads it
WEIGHTS_PATH = "weights/model.safetensors"  # the artifact transferlab loads: tensors only
WEIGHTS_DIGEST = "transferlab.weights_sha256"  # set once the weights are uploaded whole
MANIFEST_DIGEST = "transferlab.manifest_digest"
DEFAULT_EXPERIMENT = "transferlab"
# Without this tag MLflow 3's UI opens a GenAI overview instead of the training-runs table and metric charts.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
DATASET_DIGEST_CHARS = 32  # MLflow caps dataset digests at 36 characters; the full manifest digest is an input tag and a param
RESUMABLE = ("RUNNING", "KILLED")  # left by a killed process or Ctrl-C; a FAILED run is kept as a record and not resumed,
RESUMABLE_FAILURE = "transferlab.resumable"  # unless it failed for a cause outside training (a full disk): then this tag says so
PARAM_CHARS = 6000  # MLflow's limit on a param value
SUPERSEDED_BY = "transferlab.superseded_by"  # on a stopped run that a new run replaced (it is never resumed again)
SUPERSEDED_BECAUSE = "transferlab.superseded_because"
RESUMED_AFTER = "transferlab.resumed_after"  # on a resumed run: why it had stopped (the error it had, or its gone owner)
WAIT_POLL_S = 5.0  # how often a run owned by a live process is looked at while waiting for it
OUTAGE_RETRY_S = 15.0  # while the store is unreachable, how often training tries it again
TRACKING_WAIT_ENV, DEFAULT_TRACKING_WAIT_S = "TRANSFERLAB_TRACKING_WAIT", 300.0  # how long a finished training waits for the store
STORE_CHECK_TIMEOUT_S = 10  # the one request that checks a tracking server at start
STORE_PROBLEMS = ("Connection refused", "timed out", "Name or service not known", "No route to host", "Temporary failure in name resolution",
                  "certificate verify failed", "Max retries exceeded", "Connection aborted", "Connection reset",
                  "RemoteDisconnected")  # named instead of the whole exception text, when it holds one
# MLflow retries a failed HTTP request 7 times with a doubling backoff and a 120 s timeout: over 15 silent minutes per call
# when a server goes away. These bound one call to about 10 s (refused) or 80 s (hanging); the user's own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
for _name, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

console = Console(stderr=True)


def client() -> MlflowClient:
    """A client of the current tracking store (`MLFLOW_TRACKING_URI`, default `sqlite:///mlflow.db`)."""
    return MlflowClient()


def project_run_id() -> str | None:
    """The run that asks: the one `mlflow run` created for this process (read before any run ends: MLflow then unsets
    it), else the caller's active fluent run (`with mlflow.start_run(): ...` in a notebook or script), else None."""
    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    active_run = mlflow.active_run()
    return active_run.info.run_id if active_run else None


def check_store() -> None:
    """Fail fast, in one line, when the tracking store cannot be reached (one request, short timeout; names the URI) or
    TRANSFERLAB_STALE_AFTER or TRANSFERLAB_TRACKING_WAIT is malformed: before any run exists."""
    stale_after()
    tracking_wait()
    uri = mlflow.get_tracking_uri()
    remote = uri.startswith(("http://", "https://"))
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(STORE_CHECK_TIMEOUT_S)} if remote else {}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        with first_open(uri):
            client().search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, or a connection error from below it
        raise TransferlabError(f"cannot reach the MLflow tracking store {uri} (MLFLOW_TRACKING_URI): {store_problem(exc)}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def first_open(uri: str) -> Iterator[None]:
    """Around the first request to a SQLite store: hold a lock beside the database file, so that processes opening a new
    store at once do not race in MLflow's table creation and migration ('Online migration expected to match one row')."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///").split("?")[0]).expanduser()
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f".{database.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def experiment_id(name: str | None = None) -> str:
    """Experiment `name`, else the one `mlflow run` or `MLFLOW_EXPERIMENT_*` chose, else 'transferlab'; tagged for the UI."""
    c = client()
    if name is None and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        experiment = c.get_experiment(os.environ["MLFLOW_EXPERIMENT_ID"])
    else:
        name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = c.get_experiment_by_name(name)
        if experiment is None:
            try:
                return c.create_experiment(name, tags=EXPERIMENT_TAGS)
            except mlflow.MlflowException:  # created meanwhile by a parallel worker
                experiment = c.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        raise TransferlabError(f"MLflow experiment '{experiment.name}' is deleted; restore it (mlflow experiments restore) or choose another")
    tag_experiment(experiment)
    return experiment.experiment_id


def tag_experiment(experiment) -> None:
    """Give an experiment (e.g. the one `mlflow run` chose) the tags that make the UI show training runs."""
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) != value:
            client().set_experiment_tag(experiment.experiment_id, key, value)


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


def create_run(experiment: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
    """A new run owned by this process, nested under `parent` explicitly (inside `mlflow run`, a plain start_run would
    reuse the project's run)."""
    tags = dict(tags) | owner_tags() | {MLFLOW_RUN_NAME: name[:250]} | ({MLFLOW_PARENT_RUN_ID: parent} if parent else {})
    return client().create_run(experiment, tags=resolve_tags(tags), run_name=name[:250]).info.run_id


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


def run_status(exc: BaseException) -> str:
    """How an exception ends a run: KILLED (resumable) on Ctrl-C or for errors that say so (`run_status`), else FAILED."""
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    return getattr(exc, "run_status", "FAILED")


def store_failure(exc: BaseException) -> bool:
    """Whether `exc` is the tracking store failing (unreachable, timing out), not the work: nothing of the work is lost."""
    if isinstance(exc, TrackingUnavailable):
        return True
    module = type(exc).__module__.split(".")[0]
    return module in ("mlflow", "requests", "urllib3") and any(p.lower() in str(exc).lower() for p in STORE_PROBLEMS)


def resumable(exc: BaseException) -> bool:
    """Whether a run stopped by `exc` is continued by the next request from its checkpoint: Ctrl-C, errors that say so
    (a full disk: `resumable = True`), and failures of the tracking store."""
    return run_status(exc) == "KILLED" or getattr(exc, "resumable", False) or store_failure(exc)


class TrackingUnavailable(TransferlabError):
    """The tracking store stayed unreachable: the work is kept (a checkpoint) and is recorded by the next request."""

    resumable = True


@contextlib.contextmanager
def recorded(run_id: str, *, end: bool = True) -> Iterator[None]:
    """Record an exception on the run (tag and `error.txt`), ending it as `run_status` says (FAILED; KILLED on Ctrl-C);
    else end it FINISHED."""
    c = client()
    try:
        yield
    except BaseException as exc:
        status = run_status(exc)
        with contextlib.suppress(Exception):  # the original error matters more than a failure to record it
            c.set_tag(run_id, ERROR, f"{type(exc).__name__}: {exc}"[:5000])
            if status == "FAILED" and resumable(exc):
                c.set_tag(run_id, RESUMABLE_FAILURE, "true")
            c.log_text(run_id, "".join(traceback.format_exception(exc)), "error.txt")
        with contextlib.suppress(Exception):
            if end:
                c.set_terminated(run_id, status)
        raise
    if end:
        c.set_terminated(run_id, "FINISHED")


@contextlib.contextmanager
def active(run_id: str, *, system_metrics: bool = False) -> Iterator[None]:
    """Make `run_id` MLflow's active run (resuming it if it was stopped; nested above the caller's active run, if any),
    owned by this process with a heartbeat, with system metrics if asked; end it as `recorded` does. A failure to start
    it ends it FAILED too, so no run is left RUNNING."""
    with recorded(run_id):
        set_tags(run_id, owner_tags())
        mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics, nested=True)
        try:
            with heartbeats(run_id):
                yield
        except BaseException as exc:
            with contextlib.suppress(Exception):
                mlflow.end_run(run_status(exc))
            raise
        mlflow.end_run("FINISHED")


def log_params(run_id: str, params: dict[str, Any]) -> None:
    """Log params as text (MLflow keeps at most 6000 characters of a value)."""
    client().log_batch(run_id, params=[Param(k, str(v)[:PARAM_CHARS]) for k, v in params.items()])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Log metrics to any run, active or not (summaries copied to parent runs)."""
    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


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
        """Note an outage, saying so once."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            console.print(f"[yellow]tracking store {mlflow.get_tracking_uri()} unreachable[/] ({store_problem(exc)}): training goes on, "
                          f"its evaluations wait in the checkpoint; retrying every {OUTAGE_RETRY_S:.0f} s")

    def flush(self) -> None:
        """Send what waits, waiting up to tracking_wait() seconds for the store; TrackingUnavailable if it stays away."""
        deadline = time.monotonic() + tracking_wait()
        while self.waiting or self.down_since is not None:
            try:
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


def tracking_wait() -> float:
    """Seconds a finished training waits for an unreachable tracking store ($TRANSFERLAB_TRACKING_WAIT, default 300)."""
    text = os.environ.get(TRACKING_WAIT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TRACKING_WAIT_S
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise TransferlabError(f"{TRACKING_WAIT_ENV} must be a number of seconds >= 0, got {text!r}")
    return seconds


def store_problem(exc: BaseException) -> str:
    """The recognisable cause in a store failure's text ('Connection refused'), else its first line."""
    text = str(exc).strip() or type(exc).__name__
    return next((r for r in STORE_PROBLEMS if r.lower() in text.lower()), text.splitlines()[0][:200])


def logged_steps(run_id: str, metric: str) -> set[int]:
    """The steps at which a run has recorded `metric`."""
    return {m.step for m in client().get_metric_history(run_id, metric)}


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    """Set several tags on a run."""
    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def copy_inputs(source_run: str, run_id: str) -> None:
    """Log another run's dataset inputs (its manifest) on `run_id` too, unless it has them already."""
    c = client()
    have = {(d.dataset.name, d.dataset.digest) for d in c.get_run(run_id).inputs.dataset_inputs}
    new = [d for d in c.get_run(source_run).inputs.dataset_inputs if (d.dataset.name, d.dataset.digest) not in have]
    if new:
        c.log_inputs(run_id, datasets=new)


class ManifestSource(DatasetSource):
    """Where a subset manifest lives: the `manifest` artifact folder of a pretraining run (`runs:/<id>/manifest`)."""

    def __init__(self, uri: str, source: str = "", fingerprint: str = ""):
        self.uri, self.source, self.fingerprint = uri, source, fingerprint

    @staticmethod
    def _get_source_type() -> str:
        return "transferlab_manifest"

    def load(self) -> Manifest:
        """Download and read the manifest (its digest is checked)."""
        return Manifest.load(mlflow.artifacts.download_artifacts(self.uri))

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("runs:/") and raw_source.rstrip("/").endswith("/manifest")

    @classmethod
    def _resolve(cls, raw_source: str) -> "ManifestSource":
        return cls(raw_source)

    def to_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "source": self.source, "source_fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, source_dict: dict[str, str]) -> "ManifestSource":
        return cls(source_dict["uri"], source_dict.get("source", ""), source_dict.get("source_fingerprint", ""))


def log_manifest(manifest: Manifest, name: str) -> None:
    """Log the manifest to the active run as the `manifest` artifact and as a training dataset input with its digest."""
    run_id = mlflow.active_run().info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        manifest.save(tmp)
        mlflow.log_artifacts(tmp, "manifest")
    source = ManifestSource(f"runs:/{run_id}/manifest", manifest.source, manifest.source_fingerprint)
    dataset = mlflow.data.from_numpy(manifest.samples, source=source, targets=manifest.labels, name=name[:500],
                                     digest=manifest.digest[:DATASET_DIGEST_CHARS])
    mlflow.log_input(dataset, context="training", tags={MANIFEST_DIGEST: manifest.digest})


def log_model(model, requirements: list[str]) -> str:
    """Log the trained network to the active run: its weights as safetensors (what transferlab loads, see `load_weights`),
    then, for users, an MLflow model (`mlflow.pytorch.log_model`); returns the MLflow model's URI. A model a killed
    attempt left PENDING is marked FAILED first, so the run holds one READY model."""
    model = getattr(model, "_orig_mod", model)  # the module under torch.compile
    run_id = mlflow.active_run().info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(WEIGHTS_PATH).name
        safetensors.torch.save_model(model, str(path))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        mlflow.log_artifact(str(path), str(Path(WEIGHTS_PATH).parent))
    set_tags(run_id, {WEIGHTS_DIGEST: digest})  # after the upload: a run with the tag has the whole file
    fail_pending_models(run_id)
    # pickle keeps the timm module (features, heads) for users; transferlab itself never unpickles it (see load_weights).
    with quiet("mlflow.pytorch"):  # its warning about pickles concerns models from strangers
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle", pip_requirements=requirements)
    mlflow.set_tag(MODEL_URI, info.model_uri)
    return info.model_uri


def fail_pending_models(run_id: str) -> None:
    """Mark FAILED the logged models of a run that are still PENDING (their upload was cut short by a kill)."""
    c = client()
    experiment = c.get_run(run_id).info.experiment_id
    for model in c.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'"):
        if model.status == LoggedModelStatus.PENDING:
            c.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Hide a logger's warnings for the duration of the block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def load_weights(run: Run, model) -> None:
    """Load a pretraining run's logged weights into `model`, a network rebuilt from the run's specs: tensors only
    (safetensors), checked against the digest the run recorded. Nothing read from the tracking store is unpickled, so a
    run planted on a shared server cannot run code here; a run without such weights is an error, not a fallback."""
    run_id, digest = run.info.run_id, run.data.tags.get(WEIGHTS_DIGEST)
    if not digest:
        raise TransferlabError(f"run {run_id} has no transferlab weights (tag {WEIGHTS_DIGEST}): it is unfinished, was made by a "
                               "transferlab before recipe 3, or not by transferlab; its pickled MLflow model is never loaded. "
                               "Delete the run (or use another experiment) and rerun to train afresh")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=WEIGHTS_PATH, dst_path=tmp))
        except (mlflow.MlflowException, OSError) as exc:
            raise TransferlabError(f"cannot download the weights of run {run_id} ({WEIGHTS_PATH}): {str(exc).splitlines()[0][:200]}") from None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise TransferlabError(f"the weights of run {run_id} ({WEIGHTS_PATH}) do not match the digest the run recorded; "
                                   "the artifact is damaged or was replaced")
        try:
            missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
        except Exception as exc:  # safetensors raises several types for malformed files and mismatched shapes
            raise TransferlabError(f"the weights of run {run_id} do not fit the network its specs describe ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if missing or unexpected:
        raise TransferlabError(f"the weights of run {run_id} do not fit the network its specs describe: missing {sorted(missing)[:5]}, "
                               f"unexpected {sorted(unexpected)[:5]}")


def get_run(run_id: str) -> Run:
    """The run, or a clear error if the id is unknown to the tracking store."""
    try:
        return client().get_run(run_id)
    except mlflow.MlflowException:
        raise TransferlabError(f"no MLflow run {run_id!r} in the tracking store {mlflow.get_tracking_uri()}") from None



register_dataset_source(ManifestSource)  # so that mlflow.data.get_source(dataset_input) gives a ManifestSource back
