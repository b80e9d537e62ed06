"""One trial of a search: its allocation pretrained (reused, resumed, or pruned early) and scored on the target's val
split, in its own trial run (kind=trial) nested under the search run.

A trial's pretraining is an ordinary keyed pretraining run, so an allocation already trained (by this search, a study or
`transferlab run`) is reused. The score never reads the target's test split (`TransferContext(holdout='val')`). With one
objective a pruner stops weak trials from a kNN score on target val after each pretraining evaluation: the trial ends
PRUNED in Optuna, its run KILLED with transferlab.trial_state=PRUNED, its pretraining run KILLED with
transferlab.pruned_at_step (resumable: the same allocation continues it later).
"""

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console

from . import runs, tracking
from .cache import cache_key
from .errors import TransferlabError
from .pipeline import PretrainedRecipe, PretrainSpec, train
from .plugins import get_registry
from .search_plan import SearchPlan
from .search_space import Allocation
from .specs import excerpt
from .studies import images_seen
from .tasks import TransferContext

SEARCH_RUN = "transferlab.search_run"  # tag of a trial run (and of the run that asked): its search run
TRIAL = "transferlab.trial"  # tag of a trial run: its Optuna trial number
TRIAL_STATE = "transferlab.trial_state"  # tag of a trial run: COMPLETE, PRUNED or FAIL, as Optuna has it
PRUNED_AT = "transferlab.pruned_at_step"  # tag of a pretraining run the pruner stopped
RUN_ATTR = "mlflow_run_id"  # Optuna user attr of a trial (and of the study: the search run)
ALLOCATION_ATTR, OUTCOME_ATTR = "allocation", "outcome"  # user attrs of a trial: its proposal; its images seen, seconds, runs
INTERRUPTED_ATTR = "interrupted"  # user attr of a trial Ctrl-C stopped: a rerun queues its allocation again
ERROR_ATTR = "error"  # user attr of a trial whose own work raised: it counts as done (FAIL), unlike a killed worker's
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
        trial.set_user_attr(INTERRUPTED_ATTR, True)
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
    """Tag the trial run with how its trial ends in Optuna when it fails (PRUNED, FAIL); `run_trial` tags COMPLETE with
    its metrics, in the same request."""
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
                         | ({"pretrain.val_top1": pretrain_val} if pretrain_val is not None else {}), tags={tracking.PRETRAIN_RUN: pretrain_id, TRIAL_STATE: "COMPLETE"})
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
