"""MLflow records: experiments shown as training runs, run keys, reuse/resume (owners in run_owners), params, manifests, models, errors."""

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import safetensors.torch
import torch
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.entities import LoggedModelStatus, Metric, Param, Run, RunTag
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils import name_utils
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_PROJECT_ENTRY_POINT, MLFLOW_RUN_NAME
from rich.console import Console

from .errors import SpecError, TransferlabError
from .manifest import Manifest
from .metric_names import canonical, stored
from .run_owners import heartbeats, owner_tags, stale_after

KIND = "transferlab.kind"  # pretrain | transfer | main
KEY = "transferlab.key"
PRETRAIN_RUN = "transferlab.pretrain_run"
ERROR = "transferlab.error"
MODEL_URI = "transferlab.model_uri"  # the MLflow model, for users; transferlab never loads it
WEIGHTS_PATH = "weights/model.safetensors"  # the artifact transferlab loads: tensors only
WEIGHTS_DIGEST = "transferlab.weights_sha256"  # set once the weights are uploaded whole
MANIFEST_DIGEST = "transferlab.manifest_digest"
DEFAULT_EXPERIMENT = "transferlab"
MLFLOW_DEFAULT_EXPERIMENT = "0"  # MLflow's 'Default': where `mlflow run` puts its run when no experiment is named
NOTE = "mlflow.note.content"  # an experiment's description in the UI
EXPERIMENT_NOTE = (
    "transferlab runs. Each pretraining run (tag transferlab.kind=pretrain; named policy · source · backbone) holds its params, "
    "the subset's manifest (a dataset input), figures/ (learning curve, contact sheet of the subset), the trained weights and, "
    "copied from its child transfer runs, every transfer result: one row per pretrained network. The run that asked (kind=main, "
    "or the run of `mlflow run`) parents it and carries the key metrics. Compare in the Chart view: accuracies by section, "
    "diagnostics (throughput, learning rate, probe regularisation) in their own sections.")
DEFAULT_EXPERIMENT_NOTE = (
    f"Runs of `mlflow run` that named no experiment. transferlab keeps their work in the '{DEFAULT_EXPERIMENT}' experiment, shared "
    f"with `transferlab run`; each run here links to its pretraining run there (tag transferlab.pretrain_run) and carries its key "
    "metrics. `mlflow run --experiment-name NAME` keeps everything in NAME.")
EXPERIMENT_NAME_CHARS = 500  # beyond this MLflow's stores refuse or truncate names
# Without this tag MLflow 3's UI opens a GenAI overview instead of the training-runs table and metric charts.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
DATASET_DIGEST_CHARS = 32  # MLflow caps dataset digests at 36 characters; the full manifest digest is an input tag and a param
RESUMABLE_FAILURE = "transferlab.resumable"  # on a FAILED run whose cause lay outside the work (a full disk): resume it
PARAM_CHARS = 6000  # MLflow's limit on a param value
TRACKING_WAIT_ENV, DEFAULT_TRACKING_WAIT_S = "TRANSFERLAB_TRACKING_WAIT", 300.0  # how long a finished training waits for the store
STORE_CHECK_TIMEOUT_S = 10  # the one request that checks a tracking server at start
STORE_PROBLEMS = ("Connection refused", "timed out", "Name or service not known", "No route to host", "Temporary failure in name resolution",
                  "certificate verify failed", "Connection broken", "Connection aborted", "Connection reset", "RemoteDisconnected",
                  "Max retries exceeded", "API request to")  # named instead of the whole text; the last is how MLflow words any transport failure
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
    try:
        with quick_requests(STORE_CHECK_TIMEOUT_S), first_open(uri):
            client().search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, or a connection error from below it
        raise TransferlabError(f"cannot reach the MLflow tracking store {uri} (MLFLOW_TRACKING_URI): {store_problem(exc)}") from None


@contextlib.contextmanager
def quick_requests(timeout_s: float) -> Iterator[None]:
    """Within the block, a request to a tracking server is tried once with a short timeout (MLflow reads these settings
    at every request): for a check at start, and for probing a store that is away without stalling training."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s))}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        yield
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
        check_experiment_name(name)
        experiment = c.get_experiment_by_name(name)
        if experiment is None:
            try:
                return c.create_experiment(name, tags=EXPERIMENT_TAGS | {NOTE: EXPERIMENT_NOTE})
            except mlflow.MlflowException as exc:  # created meanwhile by a parallel worker, or refused by the store
                experiment = c.get_experiment_by_name(name)
                if experiment is None:
                    raise TransferlabError(f"cannot create MLflow experiment {name[:80]!r}: {str(exc).splitlines()[0][:200]}") from None
    if experiment.lifecycle_stage != "active":
        raise TransferlabError(f"MLflow experiment '{experiment.name}' is deleted; restore it (mlflow experiments restore) or choose another")
    tag_experiment(experiment)
    return experiment.experiment_id


def check_experiment_name(name: str) -> None:
    """A SpecError unless `name` can name an MLflow experiment: text of at most EXPERIMENT_NAME_CHARS, UTF-8."""
    if not name.strip() or len(name) > EXPERIMENT_NAME_CHARS:
        raise SpecError(f"an experiment name needs 1 to {EXPERIMENT_NAME_CHARS} characters, got {len(name)}")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise SpecError(f"experiment name {name.encode(errors='backslashreplace').decode()[:80]!r} is not valid UTF-8") from None


def tag_experiment(experiment, note: str = EXPERIMENT_NOTE) -> None:
    """Give an experiment (e.g. the one `mlflow run` chose) the tags that make the UI show training runs, and `note` as its
    description unless it has one (a user's own is kept)."""
    for key, value in EXPERIMENT_TAGS.items() | ({} if experiment.tags.get(NOTE) else {NOTE: note}).items():
        if experiment.tags.get(key) != value:
            client().set_experiment_tag(experiment.experiment_id, key, value)


def name_project_run(run_id: str | None, name: str) -> None:
    """Name the run `mlflow run` made after what it does, unless it was named (`mlflow run --run-name`): only a random name
    MLflow made up (adjective-noun-number) is replaced; a caller's own fluent run keeps its name."""
    if run_id is None:
        return
    run = client().get_run(run_id)
    if MLFLOW_PROJECT_ENTRY_POINT in run.data.tags and generated_name(run.info.run_name):
        client().update_run(run_id, name=name[:250])


def generated_name(name: str) -> bool:
    """Whether `name` is one MLflow makes up for an unnamed run, e.g. 'trusting-mink-184'."""
    match = re.fullmatch(r"([a-z]+)-([a-z]+)-(\d+)", name or "")
    return bool(match) and match[1] in name_utils._GENERATOR_PREDICATES and match[2] in name_utils._GENERATOR_NOUNS


def create_run(experiment: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
    """A new run owned by this process, nested under `parent` explicitly (inside `mlflow run`, a plain start_run would
    reuse the project's run)."""
    tags = dict(tags) | owner_tags() | {MLFLOW_RUN_NAME: name[:250]} | ({MLFLOW_PARENT_RUN_ID: parent} if parent else {})
    return client().create_run(experiment, tags=resolve_tags(tags), run_name=name[:250]).info.run_id


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
        if store_failure(exc):
            raise  # the store is away: recording the error would only wait out every retry again
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
def active(run_id: str, *, system_metrics: bool = False, owned: bool = False) -> Iterator[None]:
    """Make `run_id` MLflow's active run (resuming it if it was stopped; nested above the caller's active run, if any),
    owned by this process with a heartbeat (`owned`: its owner tags are this process's already, as `create_run` made
    them), with system metrics if asked; end it as `recorded` does. A failure to start it ends it FAILED too, so no run
    is left RUNNING."""
    with recorded(run_id):
        if not owned:
            set_tags(run_id, owner_tags())
        mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics, nested=True)
        try:
            with heartbeats(run_id):
                yield
        except BaseException as exc:
            with contextlib.suppress(Exception), quick_requests(STORE_CHECK_TIMEOUT_S) if store_failure(exc) else contextlib.nullcontext():
                mlflow.end_run(run_status(exc))
            raise
        mlflow.end_run("FINISHED")


def log_params(run_id: str, params: dict[str, Any]) -> None:
    """Log params as text (MLflow keeps at most 6000 characters of a value)."""
    client().log_batch(run_id, params=[Param(k, str(v)[:PARAM_CHARS]) for k, v in params.items()])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0, tags: dict[str, str] | None = None) -> None:
    """Log metrics (and tags, in the same request) to any run, active or not (summaries copied to parent runs), under the
    names MLflow shows in sections."""
    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(stored(k), float(v), now, step) for k, v in metrics.items()],
                       tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def run_metrics(run: Run) -> dict[str, float]:
    """A run's last metric values by the names code uses (`canonical`), whichever form its records hold."""
    return {canonical(k): v for k, v in run.data.metrics.items()}


def metric_history(run_id: str, metric: str) -> list[Metric]:
    """Every recorded value of `metric` (a name as code uses it), under its sectioned name and any older dotted one."""
    return [m for name in dict.fromkeys((stored(metric), metric)) for m in client().get_metric_history(run_id, name)]


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
    return {m.step for m in metric_history(run_id, metric)}


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
    model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model  # and under DDP
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
