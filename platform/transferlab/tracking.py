"""MLflow records: experiments shown as training runs, run keys, reuse/resume (owners in run_owners), params, manifests, models, errors."""

import contextlib
import fcntl
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from rich.console import Console

from .cache import cache_dir
from .errors import TransferlabError
from .manifest import Manifest
from .run_owners import HOST, PID, STALE_ENV, heartbeats, live_owner, owner_tags, stale_after

KIND = "transferlab.kind"  # pretrain | transfer | main
KEY = "transferlab.key"
PRETRAIN_RUN = "transferlab.pretrain_run"
ERROR = "transferlab.error"
MODEL_URI = "transferlab.model_uri"
MANIFEST_DIGEST = "transferlab.manifest_digest"
DEFAULT_EXPERIMENT = "transferlab"
# Without this tag MLflow 3's UI opens a GenAI overview instead of the training-runs table and metric charts.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
DATASET_DIGEST_CHARS = 32  # MLflow caps dataset digests at 36 characters; the full manifest digest is an input tag and a param
RESUMABLE = ("RUNNING", "KILLED")  # left by a killed process or Ctrl-C; a FAILED run is kept as a record and not resumed
PARAM_CHARS = 6000  # MLflow's limit on a param value
SUPERSEDED_BY = "transferlab.superseded_by"  # on a stopped run that a new run replaced (it is never resumed again)
SUPERSEDED_BECAUSE = "transferlab.superseded_because"
RESUMED_AFTER = "transferlab.resumed_after"  # on a resumed run: why it had stopped (the error it had, or its gone owner)
WAIT_POLL_S = 5.0  # how often a run owned by a live process is looked at while waiting for it
STORE_CHECK_TIMEOUT_S = 10  # the one request that checks a tracking server at start
STORE_PROBLEMS = ("Connection refused", "timed out", "Name or service not known", "No route to host", "Temporary failure in name resolution",
                  "certificate verify failed")  # named instead of the whole exception text, when it holds one

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
    TRANSFERLAB_STALE_AFTER is malformed: before any run exists."""
    stale_after()
    uri = mlflow.get_tracking_uri()
    remote = uri.startswith(("http://", "https://"))
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(STORE_CHECK_TIMEOUT_S)} if remote else {}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        client().search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, or a connection error from below it
        text = str(exc).strip() or type(exc).__name__
        reason = next((r for r in STORE_PROBLEMS if r.lower() in text.lower()), text.splitlines()[0][:200])
        raise TransferlabError(f"cannot reach the MLflow tracking store {uri} (MLFLOW_TRACKING_URI): {reason}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


def find_run(experiment: str, key: str, statuses: tuple[str, ...]) -> Run | None:
    """The newest non-deleted run of the experiment with run key `key` and one of `statuses` (superseded runs excluded)."""
    runs = client().search_runs([experiment], f"tags.`{KEY}` = '{key}'", order_by=["attributes.start_time DESC"])
    return next((r for r in runs if r.info.status in statuses and SUPERSEDED_BY not in r.data.tags), None)


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
    with open(cache_dir("locks") / f"{key}.lock", "w") as f:
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
    """Log the trained network to the active run with `mlflow.pytorch.log_model`; returns the model URI."""
    model = getattr(model, "_orig_mod", model)  # the module under torch.compile
    # pickle keeps the timm module (features, heads) for transfer; pt2 would need tracing every architecture.
    with quiet("mlflow.pytorch"):  # its warning about pickles concerns models from strangers
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle", pip_requirements=requirements)
    mlflow.set_tag(MODEL_URI, info.model_uri)
    return info.model_uri


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


def load_model(run: Run, device):
    """The network a pretraining run logged, on `device`."""
    uri = run.data.tags.get(MODEL_URI)
    if uri is None:
        raise TransferlabError(f"run {run.info.run_id} has no logged model (tag {MODEL_URI}); is it a finished pretraining run?")
    return mlflow.pytorch.load_model(uri, map_location=device)


def get_run(run_id: str) -> Run:
    """The run, or a clear error if the id is unknown to the tracking store."""
    try:
        return client().get_run(run_id)
    except mlflow.MlflowException:
        raise TransferlabError(f"no MLflow run {run_id!r} in the tracking store {mlflow.get_tracking_uri()}") from None



register_dataset_source(ManifestSource)  # so that mlflow.data.get_source(dataset_input) gives a ManifestSource back
