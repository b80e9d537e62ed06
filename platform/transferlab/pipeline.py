"""The main job as a library: pretrain a backbone on a subset (reused or resumed by run key), then measure transfer.

Runs and how they link (MLflow):
- a pretraining run (tag transferlab.kind=pretrain) is keyed by its data, backbone, recipe, seed and RECIPE_VERSION;
  a finished run with the same key in the experiment is reused; a KILLED one (Ctrl-C), or a RUNNING one whose owner is
  gone (see tracking), is resumed from its checkpoint, or, without a checkpoint on this machine, replaced by a new run
  (the old one ends KILLED with transferlab.superseded_by); a RUNNING one whose owner is alive is waited for; a FAILED
  one stays as a record and a new run trains;
- every transfer task on a target is a child run of the pretraining run it measures (kind=transfer), also keyed and
  reused; its metrics (`transfer.<task label>.<target label>.<metric>`) are copied onto the pretraining run, so one row
  per pretraining run holds all its results;
- the run that asked (`mlflow run`'s run, or the main run `transferlab run` creates; kind=main for the main job) is the
  parent of a newly trained pretraining run, links to it with transferlab.pretrain_run and carries the key metrics.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import timm
import torch
from rich.console import Console

from . import __version__, distributed, progress, runs, tracking
from . import policies as parse_policies
from . import source as parse_source
from .backbones import Backbone
from .cache import cache_dir, cache_key
from .components import signature
from .defaults import DEFAULTS
from .devices import resolve_device
from .errors import CheckpointError, DataError, SpecError, TasksFailed, TransferlabError
from .image_cache import image_cache
from .manifest import Manifest
from .metric_names import component_label, source_label
from .plugins import get_registry
from .policy import Policy, chain_spec, make_manifest
from .registry import build
from .run_figures import log_figures
from .sources import Source
from .specs import excerpt, parse_one
from .subset import seed_value
from .tasks import Task, TransferContext
from .training import pretrain
from .training_spec import Training

REQUIREMENTS = [f"{m.__name__}=={m.__version__.split('+')[0]}" for m in (torch, timm, mlflow, np)]  # pip's names; no local build tag

SUMMARY_METRICS = ("pretrain.val_top1", "pretrain.train_loss", "pretrain.images_per_s")  # copied onto the asking run
# Part of every run key instead of the package version: bump it whenever a change alters what training or a transfer
# task computes (so old runs are not reused), and only then. 2: seeded weight init, decay groups, probe and loop fixes.
# 3: weights logged as safetensors, the only form transferlab loads (recipe-2 runs hold just a pickled MLflow model).
RECIPE_VERSION = 3
MAX_CLASSES = 1_000_000  # a run's recorded class count is untrusted input: ImageNet-21k has 21,841
TARGET_LABEL, TARGET_FINGERPRINT = "transferlab.target_label", "transferlab.target_fingerprint"  # tags of transfer runs
WORLD_SIZE = "transferlab.world_size"  # on a pretraining run: how many processes trained it last (torchrun)

console = Console(stderr=True)
Evaluated = Callable[[str, torch.nn.Module, int], None]  # (pretraining run id, the model being trained, optimizer steps done)


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
        return cls(parse_source(source), tuple(parse_policies(policy)), get_registry().parse("backbone", backbone), parse_training(training),
                   seed_value(seed))

    def params(self, manifest: Manifest) -> dict[str, str]:
        """Every field of every component under stable flat names, the specs themselves, and the manifest's size and digest."""
        params = {"source": self.source.spec(), **self.source.flat_params("source"), "policy": chain_spec(self.policies)}
        for i, policy in enumerate(self.policies):
            params |= {f"policy.{i}": policy.spec(), **policy.flat_params(f"policy.{i}")}
        params |= {"backbone": self.backbone.spec(), **self.backbone.flat_params("backbone")}
        params |= {"train": self.training.spec(), **self.training.flat_params("train"), "train.length": self.training.length}
        return params | {"seed": str(self.seed), "manifest.digest": manifest.digest, "manifest.num_samples": str(len(manifest.samples)),
                         "manifest.num_classes": str(manifest.num_classes), "transferlab.version": __version__,
                         "transferlab.recipe": str(RECIPE_VERSION)}

    def key(self, manifest: Manifest) -> str:
        """The run key: equal keys mean the same data, network, recipe, seed and RECIPE_VERSION (not the package version:
        an installed and a source-tree copy of one recipe share runs). The number of processes (torchrun) is part of it
        only for a network that trains differently on several (`distributed.reproducible`): otherwise 1 and N processes
        compute the same run, up to rounding, and share it."""
        world = distributed.world()
        ranks = () if world == 1 or same_on_any_world(self.backbone, manifest.num_classes, self.training.resolution) else (f"world{world}",)
        return cache_key("pretrain", self.source.fingerprint, manifest.digest, self.backbone.spec(), self.training.spec(), self.seed,
                         f"recipe{RECIPE_VERSION}", *ranks)

    def prepare(self) -> Manifest:
        """What can fail before any run exists: the source's own check (`Source.check`), the manifest (policy errors), the
        training device (e.g. 'cuda' on a CPU machine) and the backbone's check of the recipe (`Backbone.check`)."""
        self.source.check()
        manifest = make_manifest(self.source, self.policies, self.seed)
        distributed.check_batch(self.training.batch_size, len(manifest.samples))
        resolve_device(self.training.device)
        self.backbone.check(self.training)
        return manifest

    def run_name(self) -> str:
        """Short readable name for the runs table."""
        return f"{chain_spec(self.policies)} · {self.source.label()} · {self.backbone.spec()}"

    def order(self, manifest: Manifest) -> list:
        """What rank 0 tells the other ranks to train (plain data): the specs, and the manifest digest they must arrive at."""
        return ["train", self.source.spec(), chain_spec(self.policies), self.backbone.spec(), self.training.spec(), self.seed, manifest.digest]


@functools.cache
def same_on_any_world(backbone: Backbone, num_classes: int, resolution: int) -> bool:
    """Whether the network trains the same on any number of processes (`distributed.reproducible`), built once to look."""
    return distributed.reproducible(backbone.build(num_classes, resolution))


@dataclasses.dataclass(frozen=True)
class TransferSpec:
    """A target source and the tasks to run on it, parsed before any work."""

    target: Source
    tasks: tuple[Task, ...]

    @classmethod
    def parse(cls, target: str, tasks: str) -> "TransferSpec":
        """Parse the target and the `|`-chain of tasks; two tasks with the same metric names are refused."""
        spec = cls(parse_source(target), tuple(get_registry().parse_chain("task", tasks)))
        seen: dict[str, Task] = {}
        for task in spec.tasks:
            other = seen.setdefault(component_label(task), task)
            if other is not task:
                same = "twice" if other == task else f"and {other.spec()} (same metric names)"
                raise SpecError(f"tasks '{tasks}' holds {task.spec()} {same}; give each task once")
        return spec

    def check(self) -> None:
        """The target can be measured: its own check passes (`Source.check`), its index builds, with training and test
        images (val is carved from train if missing), and every task's own preconditions hold (`Task.check`). Done before
        any pretraining or run, so a bad target costs nothing."""
        self.target.check()
        index = self.target.index
        for split, why in (("train", "to fit the transfer tasks"), ("test", "transfer reports accuracy on held-out test images")):
            if not len(index.split_samples(split)):
                hint = "; pass test_fraction=0.2 (say) to hold out a share of its images" if split == "test" and "test_fraction" in self.target.params() else ""
                raise DataError(f"target {self.target.spec()} has no {split} split: {why}{hint}")
        for task in self.tasks:
            task.check(self.target)

    def target_label(self) -> str:
        """The target's part of metric names (see `source_label`)."""
        return source_label(self.target)


def checkpoint_path(run_id: str) -> Path:
    """Where a pretraining run keeps its resumable checkpoint while it trains."""
    return cache_dir("checkpoints") / f"{run_id}.pt"


def train(spec: PretrainSpec, manifest: Manifest, experiment: str, parent: str | None = None, *, wait: bool = True,
          evaluated: Evaluated | None = None) -> str:
    """Id of the finished pretraining run for `spec`: reused, resumed from its checkpoint, waited for, or trained now
    (the rules are `runs.keyed_run`'s). `evaluated(run_id, model, step)` runs after each evaluation of a training done
    here (a search's pruner)."""
    with runs.keyed_run(experiment, spec.key(manifest), "pretrain", spec.run_name(), parent=parent, wait=wait, what="pretraining run",
                        checkpoint=checkpoint_path, recorded_if=lambda run: "manifest.digest" in run.data.params,
                        system_metrics=True) as run:
        if not run.done:
            run_pretraining(spec, manifest, run.run_id, checkpoint_path(run.run_id), fresh=run.fresh, evaluated=evaluated)
    return run.run_id


def run_pretraining(spec: PretrainSpec, manifest: Manifest, run_id: str, checkpoint: Path, fresh: bool,
                    evaluated: Evaluated | None = None) -> None:
    """Record and run the pretraining in the active run `run_id` (params and manifest only when `fresh`)."""
    if fresh:
        tracking.log_manifest(manifest, f"{spec.source.label()}: {manifest.policy}")
        tracking.log_params(run_id, spec.params(manifest))
    model = spec.backbone.build_seeded(manifest.num_classes, spec.training.resolution, spec.seed)
    val = manifest.split(spec.source.index, "val")
    images = image_cache(spec.source, spec.training.resolution, rows=np.concatenate([manifest.samples, val[0]]))
    if distributed.active():  # the image cache is built: the other ranks read it and train alongside
        tracking.set_tags(run_id, {WORLD_SIZE: str(distributed.world())})
        distributed.shared(spec.order(manifest))
    log = runs.TrainingLog(run_id, spec.key(manifest))
    try:
        pretrain(spec.backbone, model, images, manifest, val, spec.training, checkpoint, log, seed=spec.seed,
                 logged=tracking.logged_steps(run_id, "pretrain.epoch"),
                 evaluated=None if evaluated is None else lambda step: evaluated(run_id, model, step))
    except CheckpointError as exc:
        raise CheckpointError(f"cannot resume pretraining run {run_id}: {exc}. The checkpoint and the run (ended KILLED) are "
                              "kept; move or delete the checkpoint and rerun to train afresh in a new run") from exc
    log.flush()
    tracking.log_model(model.cpu(), REQUIREMENTS)
    log_figures(run_id, spec)


def follow() -> None:
    """What the ranks other than 0 do under torchrun: train alongside rank 0 each time it trains (its order names the
    specs), until it says the command is done. They record nothing: no run, checkpoint, heartbeat or figure."""
    while (order := distributed.shared())[0] == "train":
        _, source, policy, backbone, training, seed, digest = order
        spec = PretrainSpec.parse(source, policy, backbone, training, seed)
        manifest = spec.prepare()
        if manifest.digest != digest:
            raise DataError(f"rank {distributed.rank()} selects other training images than rank 0 (manifest {manifest.digest[:12]}, rank 0 "
                            f"{digest[:12]}): every machine of the job needs the same copy of {spec.source.spec()}")
        model = spec.backbone.build_seeded(manifest.num_classes, spec.training.resolution, spec.seed)
        val = manifest.split(spec.source.index, "val")
        images = image_cache(spec.source, spec.training.resolution, rows=np.concatenate([manifest.samples, val[0]]))
        pretrain(spec.backbone, model, images, manifest, val, spec.training, None, lambda metrics, step: None, seed=spec.seed, progress=False)


def measure(pretrain_run: str, spec: TransferSpec, *, wait: bool = True) -> dict[str, float]:
    """Run every task on the target as a child run of the pretraining run (reusing finished ones); all metrics, prefixed
    `transfer.<task label>.<target label>.` (labels name non-default parameters: `transfer.knn_k1.synthetic_heldout.`).
    A task that fails ends its run FAILED and the others still run; then TasksFailed carries the results of those that
    did not fail (already recorded on the pretraining run)."""
    run = tracking.get_run(pretrain_run)
    if (kind := run.data.tags.get(tracking.KIND)) != "pretrain":
        raise TransferlabError(f"run {pretrain_run} is {f'a {kind} run' if kind else 'not a transferlab run'}, not a pretraining run, and "
                               f"names none ({tracking.PRETRAIN_RUN}): pass the id of a pretraining run or of a run that asked for one")
    if run.info.status != "FINISHED":
        raise TransferlabError(f"pretraining run {pretrain_run} is {run.info.status}, not FINISHED: rerun its pretraining (same specs) to "
                               "finish it, then measure it")
    experiment, recipe = run.info.experiment_id, PretrainedRecipe.of(run)  # a run that lies fails here, before any child run
    context: list[TransferContext] = []  # made once, by the first task that runs here
    results, failed = {}, []
    target = distinct_target_label(experiment, pretrain_run, spec)
    for number, task in enumerate(spec.tasks, 1):
        name = f"{component_label(task)} on {target}"
        try:
            metrics = measure_task(pretrain_run, spec, task, target, experiment, recipe, context, wait, f"transfer {number}/{len(spec.tasks)} {name}")
        except Exception as exc:
            if tracking.resumable(exc) or len(spec.tasks) == 1:  # the store or a disk failed, not the task: stop, a rerun continues
                raise
            failed.append((name, exc))
            progress.line(f"transfer {number}/{len(spec.tasks)} {name} failed: {type(exc).__name__}: {excerpt(str(exc), 300)}")
            continue
        tracking.log_metrics(pretrain_run, metrics)
        results |= metrics
    if failed:
        raise TasksFailed(failed, results, pretrain_run) from failed[0][1]
    return results


def measure_task(pretrain_run: str, spec: TransferSpec, task: Task, target: str, experiment: str, recipe: "PretrainedRecipe",
                 context: list[TransferContext], wait: bool, what: str) -> dict[str, float]:
    """One task of `measure` in its keyed child run (reused when finished): its prefixed metrics."""
    name = f"{component_label(task)} on {target}"
    prefix = f"transfer.{component_label(task)}.{target}."
    key = cache_key("transfer", pretrain_run, spec.target.fingerprint, task.spec(), prefix, f"recipe{RECIPE_VERSION}")
    tags = {tracking.PRETRAIN_RUN: pretrain_run, TARGET_LABEL: target, TARGET_FINGERPRINT: spec.target.fingerprint}
    with runs.keyed_run(experiment, key, "transfer", name, parent=pretrain_run, tags=tags, wait=wait, what=f"transfer run ({name})",
                        recorded_if=lambda run: "task" in run.data.params) as child:
        if child.done:
            return {k: v for k, v in tracking.run_metrics(tracking.get_run(child.run_id)).items() if k.startswith(prefix)}
        if child.fresh:
            tracking.log_params(child.run_id, {"task": task.spec(), **task.flat_params("task"), "target": spec.target.spec(),
                                               **spec.target.flat_params("target"), "pretrain_run": pretrain_run})
        with progress.step(what, announce=True) as shown:
            if not context:
                context.append(TransferContext(spec.target, recipe.backbone, recipe.network(), recipe.training.resolution,
                                               device=recipe.training.device, seed=recipe.seed))
            metrics = task.run(context[0])
            shown.finish(", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) + f" ({shown.seconds():.1f} s)")
        metrics = {prefix + k: float(v) for k, v in metrics.items()}
        tracking.log_metrics(child.run_id, metrics)
    return metrics


@dataclasses.dataclass(frozen=True)
class PretrainedRecipe:
    """What a finished pretraining run says it is, read from its params and checked (the store is untrusted input)."""

    run_id: str
    backbone: Backbone
    training: Training
    num_classes: int
    seed: int

    @classmethod
    def of(cls, run) -> "PretrainedRecipe":
        """The run's recipe, or one line saying why transferlab cannot rebuild its network."""
        params = run.data.params
        try:
            recipe = cls(run.info.run_id, get_registry().parse("backbone", params["backbone"]), parse_training(params["train"]),
                         int(params["manifest.num_classes"]), seed_value(params["seed"]))
            if not 1 <= recipe.num_classes <= MAX_CLASSES:
                raise ValueError(f"manifest.num_classes {recipe.num_classes} outside 1..{MAX_CLASSES}")
        except (KeyError, ValueError, SpecError) as exc:
            raise TransferlabError(f"run {run.info.run_id} does not describe a network transferlab can rebuild ({type(exc).__name__}: {exc})") from None
        return recipe

    def network(self) -> torch.nn.Module:
        """The network rebuilt from the specs, its weights loaded as tensors (never unpickled)."""
        model = self.backbone.build(self.num_classes, self.training.resolution)
        tracking.load_weights(tracking.get_run(self.run_id), model)
        return model


def distinct_target_label(experiment: str, pretrain_run: str, spec: TransferSpec) -> str:
    """The target's metric label, with a digest of its fingerprint appended when another target of the same label (other
    data in a folder of the same name, say) was already measured on this pretraining run, so neither overwrites the other."""
    label = spec.target_label()
    measured = tracking.client().search_runs(
        [experiment], f"tags.`{tracking.PRETRAIN_RUN}` = '{pretrain_run}' and tags.`{TARGET_LABEL}` = '{label}'")
    if any(r.data.tags.get(TARGET_FINGERPRINT) != spec.target.fingerprint for r in measured):
        return f"{label}_{spec.target.fingerprint[:8]}"
    return label


@contextlib.contextmanager
def asked_by(parent: str | None) -> Iterator[None]:
    """Record an error on the run that asked, if any, without ending it (`mlflow run` ends its own run)."""
    if parent is None:
        yield
        return
    with tracking.recorded(parent, end=False):
        yield


def experiment_of(parent: str | None, experiment: str | None) -> str:
    """The experiment of the asking run (`mlflow run --experiment-name` chose it), else `experiment`, else the default one.
    MLflow's 'Default' counts as none chosen (`mlflow run` falls back to it), so that `mlflow run .` and `transferlab run`
    share finished runs: the work goes where `transferlab` would put it, and the asking run in 'Default' links to it."""
    if parent is None:
        return tracking.experiment_id(experiment)
    experiment_id = tracking.get_run(parent).info.experiment_id
    if experiment_id == tracking.MLFLOW_DEFAULT_EXPERIMENT:
        tracking.tag_experiment(tracking.client().get_experiment(experiment_id), tracking.DEFAULT_EXPERIMENT_NOTE)
        return tracking.experiment_id(experiment or tracking.DEFAULT_EXPERIMENT)
    tracking.tag_experiment(tracking.client().get_experiment(experiment_id))
    return experiment_id


def pretraining_run_of(run_id: str) -> str:
    """`run_id`, or the pretraining run it names (transferlab.pretrain_run): the run of `mlflow run -e pretrain`, a main
    run and a transfer run each stand for the network they asked for or measured."""
    tags = tracking.get_run(run_id).data.tags
    return tags[tracking.PRETRAIN_RUN] if tags.get(tracking.KIND) != "pretrain" and tags.get(tracking.PRETRAIN_RUN) else run_id


def pretrain_metrics(run_id: str) -> dict[str, float]:
    """The key pretraining metrics of a run (last values): held-out val top-1, train loss, throughput."""
    return {k: v for k, v in tracking.run_metrics(tracking.get_run(run_id)).items() if k in SUMMARY_METRICS}


def link(parent: str, pretrain_run: str, metrics: dict[str, float]) -> None:
    """Point the asking run at its pretraining run, give it that run's dataset (the manifest) and the key metrics."""
    tracking.set_tags(parent, {tracking.PRETRAIN_RUN: pretrain_run})
    tracking.copy_inputs(pretrain_run, parent)
    tracking.log_metrics(parent, metrics)


@contextlib.contextmanager
def kept(parent: str | None, pretrain_run: str, with_pretrain: bool = False) -> Iterator[None]:
    """When some transfer tasks fail, give the asking run the other tasks' results (and the key pretraining metrics) anyway."""
    try:
        yield
    except TasksFailed as exc:
        exc.results = (pretrain_metrics(pretrain_run) if with_pretrain else {}) | exc.results
        if parent:
            link(parent, pretrain_run, exc.results)
        raise


def pretrain_run(source: str = DEFAULTS["source"], policy: str = DEFAULTS["policy"], backbone: str = DEFAULTS["backbone"],
                 training: str = DEFAULTS["training"], seed: int = DEFAULTS["seed"], experiment: str | None = None, *,
                 wait: bool = True) -> str:
    """Pretrain (or reuse, or resume) and return the pretraining run's id; `wait=False` fails instead of waiting for a
    process that is running the same pretraining."""
    spec = PretrainSpec.parse(source, policy, backbone, training, seed)
    tracking.check_store()
    parent = tracking.project_run_id()
    with asked_by(parent):
        manifest = spec.prepare()
        experiment_id = experiment_of(parent, experiment)
        tracking.name_project_run(parent, f"pretrain · {spec.run_name()}")
        runs.end_dead_runs(experiment_id, parent)
        run_id = train(spec, manifest, experiment_id, parent, wait=wait)
        if parent:
            link(parent, run_id, pretrain_metrics(run_id))
    return run_id


def transfer_run(pretrain_run_id: str, target: str = DEFAULTS["target"], tasks: str = DEFAULTS["tasks"], *,
                 wait: bool = True) -> dict[str, float]:
    """Measure a pretraining run's transfer (`pretrain_run_id` may be the id of the run that asked for it: see
    `pretraining_run_of`): metrics `transfer.<task label>.<target label>.<metric>`."""
    spec = TransferSpec.parse(target, tasks)
    tracking.check_store()
    spec.check()
    parent = tracking.project_run_id()
    with asked_by(parent):
        pretrain_run_id = pretraining_run_of(pretrain_run_id)
        tracking.name_project_run(parent, f"transfer · {' | '.join(component_label(t) for t in spec.tasks)} on {spec.target_label()} · "
                                          f"{tracking.get_run(pretrain_run_id).info.run_name}")
        runs.end_dead_runs(tracking.get_run(pretrain_run_id).info.experiment_id, parent)
        with kept(parent, pretrain_run_id):
            metrics = measure(pretrain_run_id, spec, wait=wait)
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
             tasks: str = DEFAULTS["tasks"], experiment: str | None = None, *, wait: bool = True) -> MainResult:
    """Pretrain, then measure transfer. The main run (kind=main: `mlflow run`'s run, else one made and ended here) parents a
    new pretraining run and carries the key metrics. Every check that needs no training (specs, the store, the subset,
    the device, the target's splits) comes before any run is made."""
    spec = PretrainSpec.parse(source, policy, backbone, training, seed)
    transfer = TransferSpec.parse(target, tasks)
    tracking.check_store()
    manifest = spec.prepare()
    transfer.check()
    parent = tracking.project_run_id()
    experiment_id = experiment_of(parent, experiment)
    made = parent is None
    if made:
        parent = tracking.create_run(experiment_id, f"main · {spec.run_name()}", {tracking.KIND: "main"})
        tracking.log_params(parent, {"source": source, "policy": policy, "backbone": backbone, "training": training, "seed": seed,
                                     "target": target, "tasks": tasks})  # as `mlflow run` logs the MLproject parameters
    else:
        tracking.set_tags(parent, {tracking.KIND: "main"})
        tracking.name_project_run(parent, f"main · {spec.run_name()}")
    with runs.owned_run(parent, end=made):  # this process answers for it now; `mlflow run` ends its own run
        runs.end_dead_runs(experiment_id, parent)
        pretrain_id = train(spec, manifest, experiment_id, parent, wait=wait)
        with kept(parent, pretrain_id, with_pretrain=True):
            metrics = pretrain_metrics(pretrain_id) | measure(pretrain_id, transfer, wait=wait)
        link(parent, pretrain_id, metrics)
    return MainResult(parent, pretrain_id, metrics)
