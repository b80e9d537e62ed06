"""The main job as a library: pretrain a backbone on a subset (reused or resumed by run key), then measure transfer.

Runs and how they link (MLflow):
- a pretraining run (tag transferlab.kind=pretrain) is keyed by its data, backbone, recipe, seed and transferlab version;
  a finished run with the same key in the experiment is reused, a RUNNING or KILLED one (a killed process, Ctrl-C) is
  resumed from its checkpoint, a FAILED one stays as a record and a new run trains;
- every transfer task on a target is a child run of the pretraining run it measures (kind=transfer), also keyed and
  reused; its metrics are copied onto the pretraining run, so one row per pretraining run holds all its results;
- the run that asked (`mlflow run`'s run, or the main run `transferlab run` creates; kind=main for the main job) is the
  parent of a newly trained pretraining run, links to it with transferlab.pretrain_run and carries the key metrics.
"""

import contextlib
import dataclasses
from collections.abc import Iterator

import mlflow
import numpy as np
import timm
import torch
from rich.console import Console

from . import __version__, tracking
from . import policies as parse_policies
from . import source as parse_source
from .backbones import Backbone
from .cache import cache_dir, cache_key
from .components import signature
from .defaults import DEFAULTS
from .errors import SpecError, TransferlabError
from .image_cache import image_cache
from .manifest import Manifest
from .plugins import get_registry
from .policies import Policy, chain_spec, make_manifest
from .sources import Source
from .specs import parse_one
from .tasks import Task, TransferContext
from .training import pretrain
from .training_spec import Training

REQUIREMENTS = [f"{m.__name__}=={m.__version__.split('+')[0]}" for m in (torch, timm, mlflow, np)]  # pip's names; no local build tag

console = Console(stderr=True)


def parse_training(text: str) -> Training:
    """The training recipe from a spec string, e.g. `train(epochs=5, lr=0.05)`."""
    call = parse_one(text)
    if call.name != Training.name:
        raise SpecError(f"unknown training recipe '{call.name}': expected {signature(Training)}")
    names = [f.name for f in dataclasses.fields(Training)]
    if len(call.args) > len(names):
        raise SpecError(f"train takes {len(names)} parameters, got {len(call.args)} positional; expected {signature(Training)}")
    return Training.from_params(dict(zip(names, call.args)) | dict(call.kwargs))


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
    """Everything that defines a pretraining run, parsed and validated before any work starts."""

    source: Source
    policies: tuple[Policy, ...]
    backbone: Backbone
    training: Training
    seed: int

    @classmethod
    def parse(cls, source: str, policy: str, backbone: str, training: str, seed: int) -> "PretrainSpec":
        """Parse every spec string; any mistake raises SpecError here."""
        if not isinstance(seed, int) or seed < 0:
            raise SpecError(f"seed must be an integer >= 0, got {seed!r}")
        return cls(parse_source(source), tuple(parse_policies(policy)), get_registry().parse("backbone", backbone), parse_training(training), seed)

    def params(self, manifest: Manifest) -> dict[str, str]:
        """Every field of every component under stable flat names, the specs themselves, and the manifest's size and digest."""
        params = {"source": self.source.spec(), **self.source.flat_params("source"), "policy": chain_spec(self.policies)}
        for i, policy in enumerate(self.policies):
            params |= {f"policy.{i}": policy.spec(), **policy.flat_params(f"policy.{i}")}
        params |= {"backbone": self.backbone.spec(), **self.backbone.flat_params("backbone")}
        params |= {"train": self.training.spec(), **self.training.flat_params("train"), "train.length": self.training.length}
        return params | {"seed": str(self.seed), "manifest.digest": manifest.digest, "manifest.num_samples": str(len(manifest.samples)),
                         "manifest.num_classes": str(manifest.num_classes), "transferlab.version": __version__}

    def key(self, manifest: Manifest) -> str:
        """The run key: equal keys mean the same data, network, recipe, seed and code version."""
        return cache_key("pretrain", self.source.fingerprint, manifest.digest, self.backbone.spec(), self.training.spec(), self.seed, __version__)

    def run_name(self) -> str:
        """Short readable name for the runs table."""
        return f"{self.backbone.spec()} on {self.source.label()}: {chain_spec(self.policies)}"


@dataclasses.dataclass(frozen=True)
class TransferSpec:
    """A target source and the tasks to run on it, parsed before any work."""

    target: Source
    tasks: tuple[Task, ...]

    @classmethod
    def parse(cls, target: str, tasks: str) -> "TransferSpec":
        """Parse the target and the `|`-chain of tasks."""
        return cls(parse_source(target), tuple(get_registry().parse_chain("task", tasks)))


def checkpoint_path(run_id: str):
    """Where a pretraining run keeps its resumable checkpoint while it trains."""
    return cache_dir("checkpoints") / f"{run_id}.pt"


def train(spec: PretrainSpec, experiment: str, parent: str | None = None) -> str:
    """Id of the finished pretraining run for `spec`: reused, resumed, or trained now."""
    manifest = make_manifest(spec.source, spec.policies, spec.seed)
    key = spec.key(manifest)
    with tracking.key_lock(key):
        done = tracking.find_run(experiment, key, ("FINISHED",))
        if done is not None:
            console.print(f"[green]reusing finished pretraining run[/] {done.info.run_id} (same key {key})")
            return done.info.run_id
        stopped = tracking.find_run(experiment, key, tracking.RESUMABLE)
        if stopped is not None:
            run_id = stopped.info.run_id
            console.print(f"[yellow]resuming pretraining run[/] {run_id} from its last checkpoint")
        else:
            run_id = tracking.create_run(experiment, spec.run_name(), {tracking.KIND: "pretrain", tracking.KEY: key}, parent)
        checkpoint = checkpoint_path(run_id)
        with tracking.active(run_id, system_metrics=True):
            if stopped is None or "manifest.digest" not in stopped.data.params:
                tracking.log_manifest(manifest, f"{spec.source.label()}: {manifest.policy}")
                tracking.log_params(run_id, spec.params(manifest))
            model = spec.backbone.build(manifest.num_classes, spec.training.resolution)
            images = image_cache(spec.source, spec.training.resolution)
            val = manifest.split(spec.source.index, "val")
            pretrain(spec.backbone, model, images, manifest, val, spec.training, checkpoint,
                     lambda metrics, step: mlflow.log_metrics(metrics, step=step), seed=spec.seed)
            tracking.log_model(model.cpu(), REQUIREMENTS)
        checkpoint.unlink(missing_ok=True)
    return run_id


def measure(pretrain_run: str, spec: TransferSpec) -> dict[str, float]:
    """Run every task on the target as a child run of the pretraining run (reusing finished ones); all metrics, prefixed."""
    run = tracking.get_run(pretrain_run)
    if run.data.tags.get(tracking.KIND) != "pretrain" or run.info.status != "FINISHED":
        raise TransferlabError(f"run {pretrain_run} is not a finished pretraining run (kind {run.data.tags.get(tracking.KIND)!r}, status {run.info.status})")
    experiment, params = run.info.experiment_id, run.data.params
    context = None
    results = {}
    for task in spec.tasks:
        prefix = f"transfer.{task.name}.{spec.target.label()}."
        key = cache_key("transfer", pretrain_run, spec.target.fingerprint, task.spec(), __version__)
        with tracking.key_lock(key):
            done = tracking.find_run(experiment, key, ("FINISHED",))
            if done is not None:
                console.print(f"[green]reusing finished transfer run[/] {done.info.run_id} ({task.name} on {spec.target.label()})")
                metrics = {k: v for k, v in done.data.metrics.items() if k.startswith(prefix)}
            else:
                stopped = tracking.find_run(experiment, key, tracking.RESUMABLE)
                run_id = stopped.info.run_id if stopped else tracking.create_run(
                    experiment, f"{task.name} on {spec.target.label()}",
                    {tracking.KIND: "transfer", tracking.KEY: key, tracking.PRETRAIN_RUN: pretrain_run}, parent=pretrain_run)
                with tracking.active(run_id):
                    if stopped is None:
                        mlflow.log_params({"task": task.spec(), **task.flat_params("task"), "target": spec.target.spec(),
                                           **spec.target.flat_params("target"), "pretrain_run": pretrain_run})
                    if context is None:
                        backbone = get_registry().parse("backbone", params["backbone"])
                        training = parse_training(params["train"])
                        context = TransferContext(spec.target, backbone, tracking.load_model(run, "cpu"), training.resolution,
                                                  device=training.device, seed=int(params["seed"]))
                    metrics = {prefix + k: float(v) for k, v in task.run(context).items()}
                    mlflow.log_metrics(metrics)
        tracking.log_metrics(pretrain_run, metrics)
        results |= metrics
    return results


@contextlib.contextmanager
def request(experiment: str | None, kind: str | None = None, name: str = "", params: dict[str, str] | None = None) -> Iterator[tuple[str, str | None]]:
    """(experiment id, id of the run that asked): `mlflow run`'s run, else a new run of `kind` if given, else none.

    The asking run records an error on failure; a run made here is also ended here (`mlflow run` ends its own).
    """
    parent = tracking.project_run_id()
    if parent is not None:
        experiment_id = tracking.get_run(parent).info.experiment_id
        tracking.tag_experiment(tracking.client().get_experiment(experiment_id))
    else:
        experiment_id = tracking.experiment_id(experiment)
        if kind is None:
            yield experiment_id, None
            return
    own = parent is None
    if own:
        parent = tracking.create_run(experiment_id, name, {tracking.KIND: kind})
        tracking.log_params(parent, params or {})
    elif kind is not None:
        tracking.set_tags(parent, {tracking.KIND: kind})
    with tracking.recorded(parent, end=own):
        yield experiment_id, parent


def pretrain_metrics(run_id: str) -> dict[str, float]:
    """The last value of every pretraining metric of a run."""
    return {k: v for k, v in tracking.get_run(run_id).data.metrics.items() if k.startswith("pretrain.")}


def pretrain_run(source: str = DEFAULTS["source"], policy: str = DEFAULTS["policy"], backbone: str = DEFAULTS["backbone"],
                 training: str = DEFAULTS["training"], seed: int = DEFAULTS["seed"], experiment: str | None = None) -> str:
    """Pretrain (or reuse, or resume) and return the pretraining run's id."""
    spec = PretrainSpec.parse(source, policy, backbone, training, seed)
    with request(experiment) as (experiment_id, parent):
        run_id = train(spec, experiment_id, parent)
        if parent:
            tracking.set_tags(parent, {tracking.PRETRAIN_RUN: run_id})
            tracking.log_metrics(parent, pretrain_metrics(run_id))
    return run_id


def transfer_run(pretrain_run_id: str, target: str = DEFAULTS["target"], tasks: str = DEFAULTS["tasks"]) -> dict[str, float]:
    """Measure a pretraining run's transfer: metrics `transfer.<task>.<target>.<metric>`."""
    spec = TransferSpec.parse(target, tasks)
    with request(None) as (_, parent):
        metrics = measure(pretrain_run_id, spec)
        if parent:
            tracking.set_tags(parent, {tracking.PRETRAIN_RUN: pretrain_run_id})
            tracking.log_metrics(parent, metrics)
    return metrics


@dataclasses.dataclass(frozen=True)
class MainResult:
    """What the main job produced: its own run, the pretraining run, and the key metrics."""

    main_run: str
    pretrain_run: str
    metrics: dict[str, float]


def main_run(source: str = DEFAULTS["source"], policy: str = DEFAULTS["policy"], backbone: str = DEFAULTS["backbone"],
             training: str = DEFAULTS["training"], seed: int = DEFAULTS["seed"], target: str = DEFAULTS["target"],
             tasks: str = DEFAULTS["tasks"], experiment: str | None = None) -> MainResult:
    """Pretrain, then measure transfer; the main run (kind=main) parents a new pretraining run and carries the key metrics."""
    spec = PretrainSpec.parse(source, policy, backbone, training, seed)
    transfer = TransferSpec.parse(target, tasks)
    request_params = {"source": source, "policy": policy, "backbone": backbone, "training": training, "seed": str(seed), "target": target, "tasks": tasks}
    with request(experiment, "main", f"main: {spec.run_name()}", request_params) as (experiment_id, parent):
        pretrain_id = train(spec, experiment_id, parent)
        tracking.set_tags(parent, {tracking.PRETRAIN_RUN: pretrain_id})
        metrics = pretrain_metrics(pretrain_id) | measure(pretrain_id, transfer)
        tracking.log_metrics(parent, metrics)
    return MainResult(parent, pretrain_id, metrics)
