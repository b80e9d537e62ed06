"""MLflow records: experiments shown as training runs, run keys, reuse and resume, params, manifests, models, errors."""

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
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from .cache import cache_dir
from .errors import TransferlabError
from .manifest import Manifest

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


def client() -> MlflowClient:
    """A client of the current tracking store (`MLFLOW_TRACKING_URI`, default `sqlite:///mlflow.db`)."""
    return MlflowClient()


def project_run_id() -> str | None:
    """The run `mlflow run` created for this process, if any (read before any run ends: MLflow then unsets it)."""
    return os.environ.get("MLFLOW_RUN_ID") or None


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
    """The newest non-deleted run of the experiment with run key `key` and one of `statuses`."""
    runs = client().search_runs([experiment], f"tags.`{KEY}` = '{key}'", order_by=["attributes.start_time DESC"])
    return next((r for r in runs if r.info.status in statuses), None)


@contextlib.contextmanager
def key_lock(key: str) -> Iterator[None]:
    """Hold an exclusive lock on a run key (on this host) while a run with that key is found, trained and ended."""
    with open(cache_dir("locks") / f"{key}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransferlabError(f"another transferlab process is running the run with key {key}; wait for it to finish") from None
        yield


def create_run(experiment: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
    """A new run, nested under `parent` explicitly (inside `mlflow run`, a plain start_run would reuse the project's run)."""
    tags = dict(tags) | {MLFLOW_RUN_NAME: name[:250]} | ({MLFLOW_PARENT_RUN_ID: parent} if parent else {})
    return client().create_run(experiment, tags=resolve_tags(tags), run_name=name[:250]).info.run_id


@contextlib.contextmanager
def recorded(run_id: str, *, end: bool = True) -> Iterator[None]:
    """Record an exception on the run (tag and `error.txt`), ending it FAILED (KILLED on Ctrl-C); else end it FINISHED."""
    c = client()
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
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
    """Make `run_id` MLflow's active run (resuming it if it was stopped), with system metrics if asked; end it as `recorded`."""
    mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    try:
        with recorded(run_id, end=False):
            yield
    except BaseException as exc:
        mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
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

