"""Searches over data allocations: Optuna proposes, every trial is a real pretraining + transfer tracked in MLflow.

Runs: one search run (kind=search) per search name and storage, joined again by a rerun (which continues the Optuna
study) or by workers on other machines; under it one trial run per Optuna trial (see search_trials), keyed by the
search and the trial number, cross-linked (trial user attr `mlflow_run_id`, run tag transferlab.trial). Trials run in
this process or in `--workers` processes; the best are measured once on test at the end, in ordinary transfer runs,
and reported apart (search_report).
"""

import dataclasses
import multiprocessing
import os
import time
from pathlib import Path

import mlflow
from rich.console import Console

from . import runs, tracking
from .errors import SpecError, TransferlabError
from .pipeline import experiment_of
from .search_plan import OBJECTIVES, SearchArgs, SearchPlan
from .search_storage import heartbeat_s, open_storage, redacted
from .search_trials import ERROR_ATTR, INTERRUPTED_ATTR, PROGRESS_SCALE, RUN_ATTR, SEARCH_RUN, TRIAL_STATE, TrialFailed, objective

REQUEUED_ATTR = "transferlab.requeued"  # study user attr: the trials stopped by Ctrl-C whose allocation was queued again
PLAN_ATTR = "transferlab.plan"  # study user attr: the settings a rerun must share
MEDIAN_STARTUP = 4  # trials the median pruner lets finish before it compares

console = Console(stderr=True)


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

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is one line of ours, not Optuna's traceback
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

    requeued = requeue_interrupted(study)
    if requeued:
        console.print(f"search {plan.args.name}: {requeued} trial(s) stopped by Ctrl-C queued again with the same allocation "
                      "(their pretraining resumes from its checkpoint)")
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


def requeue_interrupted(study) -> int:
    """Queue again, once, the allocation of every trial Ctrl-C stopped, so that a rerun continues it (its pretraining
    resumes from its checkpoint); the stopped trial itself stays FAIL. The number queued."""
    from optuna.trial import TrialState

    queued = set(study.user_attrs.get(REQUEUED_ATTR, []))
    stopped = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
               if t.user_attrs.get(INTERRUPTED_ATTR) and t.number not in queued]
    for t in stopped:
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    if stopped:
        study.set_user_attr(REQUEUED_ATTR, sorted(queued | {t.number for t in stopped}))
    return len(stopped)


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
