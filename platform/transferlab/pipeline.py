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
from pathlib import Path

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
from .registry import build
from .sources import Source
from .specs import parse_one
from .tasks import Task, TransferContext
from .training import pretrain
from .training_spec import Training

REQUIREMENTS = [f"{m.__name__}=={m.__version__.split('+')[0]}" for m in (torch, timm, mlflow, np)]  # pip's names; no local build tag

SUMMARY_METRICS = ("pretrain.val_top1", "pretrain.train_loss", "pretrain.images_per_s")  # copied onto the asking run

console = Console(stderr=True)


def parse_training(text: str) -> Training:
    """The training recipe from a spec string, e.g. `train(epochs=5, lr=0.05)`."""
    call = parse_one(text)
    if call.name != Training.name:
        raise SpecError(f"unknown training recipe '{call.name}': expected {signature(Training)}")
    return build(Training, call)


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
        return f"{chain_spec(self.policies)} · {self.source.label()} · {self.backbone.spec()}"


@dataclasses.dataclass(frozen=True)
class TransferSpec:
    """A target source and the tasks to run on it, parsed before any work."""

    target: Source
    tasks: tuple[Task, ...]

    @classmethod
    def parse(cls, target: str, tasks: str) -> "TransferSpec":
        """Parse the target and the `|`-chain of tasks."""
        return cls(parse_source(target), tuple(get_registry().parse_chain("task", tasks)))


def checkpoint_path(run_id: str) -> Path:
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
        try:
            run_pretraining(spec, manifest, run_id, checkpoint, fresh=stopped is None or "manifest.digest" not in stopped.data.params)
        except Exception:
            checkpoint.unlink(missing_ok=True)  # the run ended FAILED and is not resumed; Ctrl-C (KILLED) keeps it
            raise
        checkpoint.unlink(missing_ok=True)
    return run_id


def run_pretraining(spec: PretrainSpec, manifest: Manifest, run_id: str, checkpoint: Path, fresh: bool) -> None:
    """Record and run the pretraining in run `run_id` (params and manifest only when `fresh`), ending the run."""
    with tracking.active(run_id, system_metrics=True):
        if fresh:
            tracking.log_manifest(manifest, f"{spec.source.label()}: {manifest.policy}")
            tracking.log_params(run_id, spec.params(manifest))
        model = spec.backbone.build(manifest.num_classes, spec.training.resolution)
        val = manifest.split(spec.source.index, "val")
        images = image_cache(spec.source, spec.training.resolution, rows=np.concatenate([manifest.samples, val[0]]))
        pretrain(spec.backbone, model, images, manifest, val, spec.training, checkpoint,
                 lambda metrics, step: mlflow.log_metrics(metrics, step=step), seed=spec.seed,
                 logged=tracking.logged_steps(run_id, "pretrain.epoch"))
        tracking.log_model(model.cpu(), REQUIREMENTS)


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
                        tracking.log_params(run_id, {"task": task.spec(), **task.flat_params("task"), "target": spec.target.spec(),
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
def asked_by(parent: str | None) -> Iterator[None]:
    """Record an error on the run that asked, if any, without ending it (`mlflow run` ends its own run)."""
    if parent is None:
        yield
        return
    with tracking.recorded(parent, end=False):
        yield


def experiment_of(parent: str | None, experiment: str | None) -> str:
    """The experiment of the asking run (`mlflow run` chose it), else `experiment`, else the default one."""
    if parent is None:
        return tracking.experiment_id(experiment)
    experiment_id = tracking.get_run(parent).info.experiment_id
    tracking.tag_experiment(tracking.client().get_experiment(experiment_id))
    return experiment_id


def pretrain_metrics(run_id: str) -> dict[str, float]:
    """The key pretraining metrics of a run (last values): held-out val top-1, train loss, throughput."""
    return {k: v for k, v in tracking.get_run(run_id).data.metrics.items() if k in SUMMARY_METRICS}


def link(parent: str, pretrain_run: str, metrics: dict[str, float]) -> None:
    """Point the asking run at its pretraining run, give it that run's dataset (the manifest) and the key metrics."""
    tracking.set_tags(parent, {tracking.PRETRAIN_RUN: pretrain_run})
    tracking.copy_inputs(pretrain_run, parent)
    tracking.log_metrics(parent, metrics)


def pretrain_run(source: str = DEFAULTS["source"], policy: str = DEFAULTS["policy"], backbone: str = DEFAULTS["backbone"],
                 training: str = DEFAULTS["training"], seed: int = DEFAULTS["seed"], experiment: str | None = None) -> str:
    """Pretrain (or reuse, or resume) and return the pretraining run's id."""
    spec = PretrainSpec.parse(source, policy, backbone, training, seed)
    parent = tracking.project_run_id()
    with asked_by(parent):
        run_id = train(spec, experiment_of(parent, experiment), parent)
        if parent:
            link(parent, run_id, pretrain_metrics(run_id))
    return run_id


def transfer_run(pretrain_run_id: str, target: str = DEFAULTS["target"], tasks: str = DEFAULTS["tasks"]) -> dict[str, float]:
    """Measure a pretraining run's transfer: metrics `transfer.<task>.<target>.<metric>`."""
    spec = TransferSpec.parse(target, tasks)
    parent = tracking.project_run_id()
    with asked_by(parent):
        metrics = measure(pretrain_run_id, spec)
        if parent:
            link(parent, pretrain_run_id, metrics)
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
    """Pretrain, then measure transfer. The main run (kind=main: `mlflow run`'s run, else one made and ended here) parents a
    new pretraining run and carries the key metrics."""
    spec = PretrainSpec.parse(source, policy, backbone, training, seed)
    transfer = TransferSpec.parse(target, tasks)
    parent = tracking.project_run_id()
    experiment_id = experiment_of(parent, experiment)
    if parent is None:
        parent = tracking.create_run(experiment_id, f"main · {spec.run_name()}", {tracking.KIND: "main"})
        tracking.log_params(parent, {"source": source, "policy": policy, "backbone": backbone, "training": training, "seed": seed,
                                     "target": target, "tasks": tasks})  # as `mlflow run` logs the MLproject parameters
        ending = tracking.recorded(parent)
    else:
        tracking.set_tags(parent, {tracking.KIND: "main"})
        ending = asked_by(parent)
    with ending:
        pretrain_id = train(spec, experiment_id, parent)
        metrics = pretrain_metrics(pretrain_id) | measure(pretrain_id, transfer)
        link(parent, pretrain_id, metrics)
    return MainResult(parent, pretrain_id, metrics)
