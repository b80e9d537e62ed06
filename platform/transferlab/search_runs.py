"""Searches over data allocations: Optuna proposes, every trial is a real pretraining + transfer tracked in MLflow.

Runs: one search run (kind=search) per search name and storage, joined again by a rerun (which continues the Optuna
study) or by workers on other machines; under it one trial run (kind=trial) per Optuna trial, keyed by the search and
the trial number, cross-linked (trial user attr `mlflow_run_id`, run tag transferlab.trial). A trial's pretraining is an
ordinary keyed pretraining run, so an allocation already trained (by this search, a study or `transferlab run`) is
reused. Trials are scored on the target's val split only (`TransferContext(holdout='val')`); the best are measured once
on test at the end, in ordinary transfer runs, and reported apart. With one objective a pruner stops weak trials from
a kNN score on target val after each pretraining evaluation: the trial ends PRUNED in Optuna, its run KILLED with
transferlab.trial_state=PRUNED, its pretraining run KILLED with transferlab.pruned_at_step (resumable: the same
allocation continues it later).
"""

import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
from rich.console import Console

from . import policies as parse_policies
from . import runs, tracking
from . import source as parse_source
from .backbones import Backbone
from .cache import cache_key
from .errors import SpecError, TransferlabError
from .pipeline import RECIPE_VERSION, PretrainedRecipe, PretrainSpec, TransferSpec, experiment_of, parse_training, train
from .plugins import get_registry
from .search_space import Allocation, SearchSpace, SpaceContext
from .search_storage import DEFAULT_STORAGE, check_storage, heartbeat_s, open_storage, redacted
from .sources import Source
from .specs import excerpt
from .studies import images_seen
from .subset import seed_value
from .tasks import Task, TransferContext
from .training_spec import Training

SEARCH_RUN = "transferlab.search_run"  # tag of a trial run (and of the run that asked): its search run
TRIAL = "transferlab.trial"  # tag of a trial run: its Optuna trial number
TRIAL_STATE = "transferlab.trial_state"  # tag of a trial run: COMPLETE, PRUNED or FAIL, as Optuna has it
PRUNED_AT = "transferlab.pruned_at_step"  # tag of a pretraining run the pruner stopped
RUN_ATTR = "mlflow_run_id"  # Optuna user attr of a trial (and of the study: the search run)
ALLOCATION_ATTR, OUTCOME_ATTR = "allocation", "outcome"  # user attrs of a trial: its proposal; its images seen, seconds, runs
ERROR_ATTR = "error"  # user attr of a trial whose own work raised: it counts as done (FAIL), unlike a killed worker's
PLAN_ATTR = "transferlab.plan"  # study user attr: the settings a rerun must share
OBJECTIVES = {"score": "maximize", "images_seen": "minimize", "seconds": "minimize"}
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")
MAX_TRIALS, MAX_WORKERS, MAX_BEST = 100_000, 64, 100
MEDIAN_STARTUP = 4  # trials the median pruner lets finish before it compares
PROGRESS_SCALE = 1000  # a trial's intermediate values are reported at per mille of its training done

console = Console(stderr=True)


class Pruned(TransferlabError):
    """The pruner stopped the trial: its runs end KILLED, never FINISHED-as-success; the pretraining stays resumable."""

    run_status = "KILLED"

    def __init__(self, step: int, score: float, seen: int, full: int):
        super().__init__(f"pruned at step {step}: kNN val top-1 {score:.2f} is below what other trials had by then")
        self.step, self.score, self.seen, self.full = step, score, seen, full


class TrialFailed(Exception):
    """A trial's own work raised: recorded FAILED on its run and trial (user attr `error`); the search goes on."""


@dataclasses.dataclass(frozen=True)
class SearchArgs:
    """A search as given: the spec strings and numbers a worker process parses again."""

    name: str
    source: str
    target: str
    budget: int
    trials: int
    space: str = "allocation"
    backbone: str = "timm(model='resnet18')"
    training: str = "train(steps=200)"
    task: str = "knn"
    objective: str = "score"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    storage: str = DEFAULT_STORAGE
    workers: int = 1
    best: int = 3


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """A search, every spec parsed and checked (source, target, space on this budget, storage) before any run exists."""

    args: SearchArgs
    source: Source
    target: TransferSpec
    space: SearchSpace
    backbone: Backbone
    training: Training
    objectives: tuple[str, ...]

    @classmethod
    def parse(cls, args: SearchArgs) -> "SearchPlan":
        """Parse and check everything; any mistake raises a one-line error here."""
        if not args.name.strip() or len(args.name) > 200:
            raise SpecError(f"--name must be 1..200 characters, got {excerpt(args.name)}")
        for what, value, top in (("--trials", args.trials, MAX_TRIALS), ("--workers", args.workers, MAX_WORKERS), ("--best", args.best, MAX_BEST)):
            if not 1 <= value <= top:
                raise SpecError(f"{what} must lie in 1..{top}, got {value}")
        if args.budget < 1:
            raise SpecError(f"--budget must be at least 1 image, got {args.budget}")
        objectives = tuple(o.strip() for o in args.objective.split(","))
        if not objectives or objectives[0] != "score" or len(set(objectives)) != len(objectives) or not set(objectives) <= set(OBJECTIVES):
            raise SpecError(f"--objective is 'score' optionally followed by costs to minimise, from {', '.join(OBJECTIVES)} "
                            f"(e.g. score,images_seen), got {excerpt(args.objective)}")
        if args.sampler not in SAMPLERS or args.pruner not in PRUNERS:
            raise SpecError(f"--sampler is one of {', '.join(SAMPLERS)} and --pruner one of {', '.join(PRUNERS)}; "
                            f"got {excerpt(args.sampler)}, {excerpt(args.pruner)}")
        if len(objectives) > 1 and args.pruner != "none":
            raise SpecError("pruning needs one objective (Optuna cannot prune multi-objective trials): pass --pruner none "
                            f"with --objective {args.objective}")
        seed_value(args.seed)
        check_storage(args.storage, args.workers)
        target = TransferSpec.parse(args.target, args.task)
        if len(target.tasks) != 1:
            raise SpecError(f"--task is the one transfer task that scores a trial (e.g. knn or linear), got {excerpt(args.task)}")
        plan = cls(args, parse_source(args.source), target, get_registry().parse("space", args.space),
                   get_registry().parse("backbone", args.backbone), parse_training(args.training), objectives)
        plan.space.check(plan.context)
        target.check()
        return plan

    @property
    def context(self) -> SpaceContext:
        """What the space proposes for."""
        return SpaceContext(self.source, self.args.budget, self.training)

    @property
    def task(self) -> Task:
        """The transfer task that scores a trial."""
        return self.target.tasks[0]

    @property
    def prunes(self) -> bool:
        """Whether weak trials are stopped early."""
        return self.args.pruner != "none"

    def identity(self) -> dict[str, str]:
        """What a rerun (or another machine's worker) must share to continue this search."""
        return {"source": self.source.spec(), "target": self.target.target.spec(), "task": self.task.spec(), "budget": str(self.args.budget),
                "space": self.space.spec(), "backbone": self.backbone.spec(), "training": self.training.spec(),
                "objective": ",".join(self.objectives), "seed": str(self.args.seed), "recipe": str(RECIPE_VERSION)}

    def key(self) -> str:
        """The search run's key: its name and storage (the Optuna study it records)."""
        return cache_key("search", self.args.name, redacted(self.args.storage))

    def params(self) -> dict[str, str]:
        """What the search run records."""
        a = self.args
        return {"search": a.name, **self.identity(), "trials": str(a.trials), "sampler": a.sampler, "pruner": a.pruner,
                "storage": redacted(a.storage), **self.space.flat_params("space"), "transferlab.recipe": str(RECIPE_VERSION)}

    def pretrain_spec(self, allocation: Allocation) -> PretrainSpec:
        """The pretraining a trial's allocation asks for."""
        return PretrainSpec(self.source, tuple(parse_policies(allocation.policy)), self.backbone, allocation.training, self.args.seed)


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search produced: its run, the Optuna study's name and storage, and the report files."""

    search_run: str
    study: str
    storage: str
    report: tuple[Path, ...]


def run_search(plan: SearchPlan, experiment: str | None = None, *, out: Path | None = None) -> SearchResult:
    """Run the search to `trials` finished trials (a rerun continues it), then measure the best on test and report."""
    tracking.check_store()
    if plan.args.workers > 1 and not mlflow.get_tracking_uri().startswith(("http://", "https://")):
        raise SpecError(f"--workers {plan.args.workers} write MLflow runs in parallel: point MLFLOW_TRACKING_URI at a tracking server "
                        f"(`mlflow server --backend-store-uri sqlite:///mlflow.db`, then http://127.0.0.1:5000), not the file "
                        f"{mlflow.get_tracking_uri()}")
    study = load_study(plan)
    parent = tracking.project_run_id()
    experiment_id = experiment_of(parent, experiment or f"{plan.args.name} search")
    search_run = join_search_run(plan, experiment_id, parent)
    if study.user_attrs.get(RUN_ATTR) != search_run:
        study.set_user_attr(RUN_ATTR, search_run)
    with runs.owned_run(search_run):
        runs.end_dead_runs(experiment_id, search_run)
        drive(plan, study, experiment_id, search_run)
        mark_stale_trial_runs(study)
        from .search_report import measure_best, write_search_report

        measure_best(plan, study, search_run)
        files = write_search_report(plan, study, search_run, out)
    if parent:
        tracking.set_tags(parent, {SEARCH_RUN: search_run})
    return SearchResult(search_run, plan.args.name, redacted(plan.args.storage), files)


def load_study(plan: SearchPlan):
    """The Optuna study of the search (created, or continued when its settings match); `work` gives it its sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(plan.args.storage)
    directions = [OBJECTIVES[o] for o in plan.objectives]
    study = optuna.create_study(storage=storage, study_name=plan.args.name, directions=directions, load_if_exists=True,
                                sampler=sampler(plan, 0), pruner=pruner(plan))
    if [d.name.lower() for d in study.directions] != directions:
        raise SpecError(f"search {plan.args.name!r} in {redacted(plan.args.storage)} has objectives "
                        f"{[d.name.lower() for d in study.directions]}, not {directions}; pass another --name")
    settings = study.user_attrs.get(PLAN_ATTR)
    if settings is None:
        study.set_user_attr(PLAN_ATTR, plan.identity())
    elif settings != plan.identity():
        changed = ", ".join(f"{k} {settings.get(k)!r} → {v!r}" for k, v in plan.identity().items() if settings.get(k) != v)
        raise SpecError(f"search {plan.args.name!r} in {redacted(plan.args.storage)} was started with other settings ({changed[:600]}); "
                        "pass another --name to start a new search")
    return study


def sampler(plan: SearchPlan, offset: int):
    """The sampler of one worker: seeded from --seed and the worker, so parallel workers do not propose alike."""
    import optuna

    seed = (plan.args.seed * 1_000_003 + offset) % 2**32
    if plan.args.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if plan.args.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # running trials count as pending, for parallel workers


def pruner(plan: SearchPlan):
    """The pruner: median of the other trials at the same step, Hyperband's brackets, or none."""
    import optuna

    if plan.args.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP)
    if plan.args.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=PROGRESS_SCALE, reduction_factor=3)
    return optuna.pruners.NopPruner()


def join_search_run(plan: SearchPlan, experiment: str, parent: str | None) -> str:
    """The search's run: the one with its key (reopened if it had ended, so a rerun continues in it), else a new one."""
    key = plan.key()
    with runs.key_lock(key):
        found = sorted(runs.keyed_runs(experiment, key), key=runs.claim_order)
        if found:
            run = found[0]
            if run.info.status != "RUNNING":
                tracking.client().update_run(run.info.run_id, status="RUNNING")
                runs.clear_error(run)
            return run.info.run_id
        run_id = tracking.create_run(experiment, f"search {plan.args.name} · {plan.source.label()} · budget {plan.args.budget}",
                                     {tracking.KIND: "search", tracking.KEY: key}, parent)
        tracking.log_params(run_id, plan.params())
        first = sorted(runs.keyed_runs(experiment, key), key=runs.claim_order)[0]
        if first.info.run_id != run_id:  # a worker on another machine made it at the same moment: join that one
            tracking.client().delete_run(run_id)
        return first.info.run_id


def tally(study) -> tuple[int, int]:
    """(trials done, trials running): done are COMPLETE, PRUNED, or FAIL by their own error; a killed worker's trial
    (FAIL by heartbeat or Ctrl-C) is not done: it is retried or replaced."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs)
               for t in trials)
    return done, sum(t.state == TrialState.RUNNING for t in trials)


def drive(plan: SearchPlan, study, experiment: str, search_run: str) -> None:
    """Start trials until `trials` are done: in this process, or split over `workers` processes; running trials of other
    machines are waited for, and a dead worker's trial is failed by its stale heartbeat, then retried."""
    import optuna

    stalled = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        done, running = tally(study)
        asks = plan.args.trials - done - running
        if asks <= 0:
            if not running:
                return
            console.print(f"{running} trial(s) running elsewhere or in a stopped worker: waiting for them ({done}/{plan.args.trials} done)")
            time.sleep(heartbeat_s())
            continue
        console.print(f"search {plan.args.name}: {done}/{plan.args.trials} trials done, starting {asks}"
                      + (f" over {plan.args.workers} workers" if plan.args.workers > 1 else ""))
        if plan.args.workers == 1:
            work(plan, study, experiment, search_run, asks)
        else:
            spawn_workers(plan, experiment, search_run, asks)
        stalled = stalled + 1 if tally(study)[0] == done else 0
        if stalled >= 2:
            raise TransferlabError(f"search {plan.args.name}: two rounds of trials finished none; see the workers' errors above")


def spawn_workers(plan: SearchPlan, experiment: str, search_run: str, asks: int) -> None:
    """Run `asks` trials over the plan's worker processes (shares differ by at most one) and wait for them."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch or HTTP state
    count = min(plan.args.workers, asks)
    shares = [asks // count + (i < asks % count) for i in range(count)]
    workers = [context.Process(target=worker_main, args=(plan.args, experiment, search_run, share, i + 1), name=f"search-worker-{i}")
               for i, share in enumerate(shares)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join()
    except KeyboardInterrupt:
        for w in workers:
            w.join(60)  # each got Ctrl-C too: it marks its trial failed and ends its runs KILLED
        raise
    dead = [f"{w.name} (exit {w.exitcode})" for w in workers if w.exitcode]
    if dead:
        console.print(f"[yellow]worker(s) stopped early: {', '.join(dead)}[/]; their trials are retried or replaced")


def worker_main(args: SearchArgs, experiment: str, search_run: str, asks: int, worker: int) -> None:
    """A worker process: parse the search again, then run its share of trials."""
    plan = SearchPlan.parse(args)
    work(plan, load_study(plan), experiment, search_run, asks, worker)


def work(plan: SearchPlan, study, experiment: str, search_run: str, asks: int, worker: int = 0) -> None:
    """Run `asks` trials of the study in this process (Optuna's loop: heartbeats, stale trials failed and retried)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    busy = any(t.state == TrialState.RUNNING for t in trials)
    # seeded by --seed, the trials so far and the worker (a new search in one process is reproducible; a rerun does not
    # replay its first proposals); with other workers at work, by this process too, so no two propose in lockstep
    study.sampler = sampler(plan, len(trials) * 7919 + worker + (os.getpid() if busy else 0))
    study.optimize(lambda trial: objective(plan, trial, experiment, search_run), n_trials=asks, catch=(TrialFailed,),
                   callbacks=[stop_when_enough(plan.args.trials)])


def stop_when_enough(trials: int):
    """An Optuna callback that stops this worker once the search has `trials` done or running (workers on other
    machines take trials too: each stops after its current trial, so the search overshoots by at most one per worker)."""

    def callback(study, trial) -> None:
        done, running = tally(study)
        if done + running >= trials:
            study.stop()

    return callback


def objective(plan: SearchPlan, trial, experiment: str, search_run: str) -> tuple[float, ...]:
    """One trial: its allocation pretrained (or reused), scored on the target's val split, in its own trial run."""
    import optuna

    allocation = plan.space.suggest(trial, plan.context)
    trial.set_user_attr(ALLOCATION_ATTR, allocation.values | {"policy": allocation.policy})  # one write: each is a transaction
    tags = {SEARCH_RUN: search_run, TRIAL: str(trial.number)}
    name = f"trial {trial.number} · {allocation.policy}"
    try:
        with runs.keyed_run(experiment, cache_key("trial", plan.key(), trial.number), "trial", name, parent=search_run, tags=tags,
                            what=f"trial run {trial.number}", recorded_if=lambda run: "policy" in run.data.params) as run:
            trial.set_user_attr(RUN_ATTR, run.run_id)
            if run.fresh:
                tracking.log_params(run.run_id, {"policy": allocation.policy, "train": allocation.training.spec(),
                                                 **{f"trial.{k}": str(v) for k, v in trial.params.items()},
                                                 **{f"allocation.{k}": str(v) for k, v in allocation.values.items()}})
            with trial_state(run.run_id):
                values, outcome = run_trial(plan, trial, allocation, run.run_id, experiment)
    except Pruned as exc:
        trial.set_user_attr(OUTCOME_ATTR, {"images_seen": exc.seen, "full_images_seen": exc.full, "pruned_at_step": exc.step})
        console.print(f"trial {trial.number} [yellow]pruned[/] at step {exc.step} (kNN val top-1 {exc.score:.1f}): {allocation.policy}",
                      soft_wrap=True)
        raise optuna.TrialPruned(str(exc)) from None
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        raise
    except Exception as exc:
        if tracking.resumable(exc):  # the store or a disk failed, not the trial: stop, and the rerun continues
            raise
        trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {exc}"[:2000])
        console.print(f"[red]trial {trial.number} failed[/]: {type(exc).__name__}: {excerpt(str(exc), 300)}")
        raise TrialFailed(str(exc)) from exc
    trial.set_user_attr(OUTCOME_ATTR, outcome)
    console.print(f"trial {trial.number}: val score {values['score']:.2f}, {values['images_seen']:,.0f} images seen, "
                  f"{values['seconds']:.0f} s: {allocation.policy}", soft_wrap=True)
    return tuple(values[o] for o in plan.objectives)


@contextlib.contextmanager
def trial_state(run_id: str) -> Iterator[None]:
    """Tag the trial run with how its trial ends in Optuna (COMPLETE, PRUNED, FAIL)."""
    try:
        yield
    except Pruned:
        tracking.set_tags(run_id, {TRIAL_STATE: "PRUNED"})
        raise
    except KeyboardInterrupt:
        tracking.set_tags(run_id, {TRIAL_STATE: "FAIL"})
        raise
    except Exception as exc:
        if not tracking.store_failure(exc):
            tracking.set_tags(run_id, {TRIAL_STATE: "FAIL"})
        raise
    tracking.set_tags(run_id, {TRIAL_STATE: "COMPLETE"})


def run_trial(plan: SearchPlan, trial, allocation: Allocation, run_id: str, experiment: str) -> tuple[dict[str, float], dict]:
    """Pretrain the allocation (pruned early if weak), score it on target val: (the values by objective, the outcome)."""
    spec = plan.pretrain_spec(allocation)
    manifest = spec.prepare()
    batch, total = min(spec.training.batch_size, len(manifest.samples)), spec.training.total_steps(len(manifest.samples))
    probe = Probe(plan, spec) if plan.prunes else None

    def evaluated(pretrain_id: str, model, step: int) -> None:
        score = probe.score(model)
        # reported at the share of its training done (per mille), so trials of different lengths are compared at the
        # same point of their schedules, not after the same number of steps
        trial.report(score, round(PROGRESS_SCALE * step / total))
        tracking.log_metrics(run_id, {"search.probe_val_top1": score}, step)
        if trial.should_prune():
            tracking.set_tags(pretrain_id, {PRUNED_AT: str(step)})
            raise Pruned(step, score, step * batch, total * batch)

    started, wall = time.perf_counter(), time.time()
    pretrain_id = train(spec, manifest, experiment, run_id, evaluated=evaluated if probe else None)
    pretrain = tracking.get_run(pretrain_id)
    if PRUNED_AT in pretrain.data.tags:  # a pruned pretraining a later trial resumed and finished
        tracking.client().delete_tag(pretrain_id, PRUNED_AT)
    reused = pretrain.info.end_time is not None and pretrain.info.end_time < wall * 1000
    seconds = (pretrain.info.end_time - pretrain.info.start_time) / 1000 if reused else time.perf_counter() - started
    metrics = val_scores(plan, pretrain_id)
    values = {"score": metrics[f"search.{plan.task.name}.val_top1"], "images_seen": float(images_seen(len(manifest.samples), spec.training)),
              "seconds": float(seconds)}
    pretrain_val = tracking.run_metrics(pretrain).get("pretrain.val_top1")
    tracking.log_metrics(run_id, metrics | {f"search.{k}": v for k, v in values.items()}
                         | ({"pretrain.val_top1": pretrain_val} if pretrain_val is not None else {}), tags={tracking.PRETRAIN_RUN: pretrain_id})
    # full_images_seen: what a trial sees unpruned, the measure of what pruning saves
    outcome = {"images_seen": values["images_seen"], "full_images_seen": total * batch, "seconds": values["seconds"],
               "pretrain_run": pretrain_id, "reused": reused}
    return values, outcome


def val_scores(plan: SearchPlan, pretrain_id: str) -> dict[str, float]:
    """The scoring task on the target with its val split as the held-out part (test untouched): `search.<task>.val_*`."""
    recipe = PretrainedRecipe.of(tracking.get_run(pretrain_id))
    context = TransferContext(plan.target.target, recipe.backbone, recipe.network(), recipe.training.resolution,
                              device=recipe.training.device, seed=recipe.seed, holdout="val")
    results = plan.task.run(context)  # its test_* are scores on the target's val; its val_* on a carve of train, dropped
    return {f"search.{plan.task.name}.val_{k[5:]}": float(v) for k, v in results.items() if k.startswith("test_")}


class Probe:
    """The pruner's cheap score: kNN top-1 on the target's val split with the model as trained so far (not cached)."""

    def __init__(self, plan: SearchPlan, spec: PretrainSpec):
        self.plan, self.spec = plan, spec
        self.knn = get_registry().parse("task", "knn")

    def score(self, model) -> float:
        """kNN val top-1 of the current weights; the model is left in train mode."""
        training = self.spec.training
        context = TransferContext(self.plan.target.target, self.spec.backbone, model, training.resolution, device=training.device,
                                  seed=self.spec.seed, holdout="val", cache_features=False)
        try:
            return float(self.knn.run(context)["test_top1"])
        finally:
            model.train()


def mark_stale_trial_runs(study) -> None:
    """Give the trial runs of trials Optuna failed for a stale heartbeat (a killed worker) their state, and end them."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get(RUN_ATTR)
        if not run_id:
            continue
        run = tracking.get_run(run_id)
        if run.data.tags.get(TRIAL_STATE) != "FAIL":
            tracking.set_tags(run_id, {TRIAL_STATE: "FAIL"})
        if run.info.status == "RUNNING":
            tracking.set_tags(run_id, {tracking.ERROR: "its worker stopped (heartbeat stale): the trial was failed in Optuna and retried"})
            tracking.client().set_terminated(run_id, "KILLED")
