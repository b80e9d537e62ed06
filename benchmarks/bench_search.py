"""Benchmark: what `transferlab search` adds per tiny trial, and what pruning saved on the committed search.

1. Overhead. Arm "search": `run_search` in this process (random sampler, --pruner none, N tiny trials whose allocations
   differ): Optuna's SQLite storage (schema created, N ask/tell rounds with params and user attrs), the search run and N
   trial runs in MLflow (keyed lookups, params, tags, metrics), and inside each trial the library calls the direct arm
   makes too. Its end (the best trial measured on test, trials CSV, plots) is timed apart and excluded. Arm "direct":
   the same N allocations (rebuilt from the trials' params), each `PretrainSpec.prepare` + `pipeline.train` (the keyed
   pretraining run with its reuse lookup, as `transferlab run` makes it) + `search_trials.val_scores`: no Optuna, no search
   or trial runs. Each arm gets a fresh MLflow SQLite store (opened before its clock starts) and a fresh cache (images,
   features), so both start cold alike; a thrown-away warm-up runs first (imports, torch kernels, plotting), and the arms
   run in alternating order (search, direct, direct, search); the fastest round of each arm counts. Two measures of the
   overhead per trial: search arm - direct arm, and (robust to the load of a shared machine, which drifts between arms)
   search arm - the wall of its own trials' library calls, timed in the same run. The larger, divided by the trial wall,
   must be <= 5%.
2. Pruning. From docs/results/search/*/trials.csv (the committed search): images seen by its trials as run, as they
   would have been unpruned (each pruned trial run to its full steps), and the share saved (`search_report.pruning_saving`).
   Target >= 30%; a missing CSV is reported and skipped.

Prints a table and PASS/FAIL per target; exits 1 when a target is missed. Runs on one torch thread (~3-5 minutes).
"""

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "synthetic(branching=[2, 2, 4], train=30, val=10, test=10)"  # 16 classes
TARGET = "synthetic(branching=[2, 2, 4], part='heldout', train=30, val=10, test=10)"
BACKBONE = "timm(model='resnet10t')"
TRAINING = "train(steps=8, batch_size=16, resolution=16)"
SPACE = "allocation(steps=(6, 8, 12))"
BUDGET, TRIALS, SEED = 60, 8, 3
ROUNDS = (("search", "direct"), ("direct", "search"))  # alternating order: neither arm always runs on a warmer machine
OVERHEAD_TARGET, SAVING_TARGET = 0.05, 0.30


@contextlib.contextmanager
def fresh_store(folder: Path):
    """This process's MLflow store and cache moved to an empty `folder` (the store opened before any clock starts)."""
    import mlflow

    from transferlab import tracking

    saved, cwd = os.environ.get("TRANSFERLAB_CACHE"), Path.cwd()
    os.environ["TRANSFERLAB_CACHE"] = str(folder / "cache")
    os.chdir(folder)  # the SQLite store's artifacts go to ./mlruns
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    tracking.check_store()
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.pop("TRANSFERLAB_CACHE") if saved is None else os.environ.__setitem__("TRANSFERLAB_CACHE", saved)


def plan_for(folder: Path, name: str, trials: int = TRIALS):
    """The benchmark's search, its Optuna storage in `folder`."""
    from transferlab.search_plan import SearchArgs, SearchPlan

    return SearchPlan.parse(SearchArgs(name, SOURCE, TARGET, BUDGET, trials, SPACE, BACKBONE, TRAINING, sampler="random", pruner="none",
                                       seed=SEED, storage=f"sqlite:///{folder / 'optuna.db'}", best=1))


@dataclasses.dataclass
class Clock:
    """Wall and this process's CPU seconds, added up over what it timed."""

    wall: float = 0.0
    cpu: float = 0.0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu

    @contextlib.contextmanager
    def patched(self, owner, name: str) -> Iterator[None]:
        """Within the block, every call of `owner.name` is timed on this clock."""
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            with self.timing():
                return fn(*args, **kwargs)

        setattr(owner, name, timed)
        try:
            yield
        finally:
            setattr(owner, name, fn)


@dataclasses.dataclass
class Arm:
    """One arm's clocks: all of it but a search's end; the search's end; the library calls inside the search's trials."""

    total: Clock
    end: Clock
    inner: Clock


def search_arm(folder: Path, trials: int = TRIALS) -> tuple[Arm, list]:
    """The search in a fresh store, and its allocations in trial order."""
    from transferlab import pipeline, search_report, search_runs, search_trials

    plan = plan_for(folder, "bench", trials)
    arm = Arm(Clock(), Clock(), Clock())
    with contextlib.ExitStack() as stack:
        for name in ("measure_best", "write_search_report"):  # run_search imports them at call time
            stack.enter_context(arm.end.patched(search_report, name))
        for owner, name in ((search_trials, "train"), (search_trials, "val_scores"), (pipeline.PretrainSpec, "prepare")):
            stack.enter_context(arm.inner.patched(owner, name))
        stack.enter_context(fresh_store(folder))
        with arm.total.timing():
            search_runs.run_search(plan, "bench search", out=folder / "report")
    arm.total.wall -= arm.end.wall
    arm.total.cpu -= arm.end.cpu
    return arm, allocations(plan, search_runs.load_study(plan))


def allocations(plan, study) -> list:
    """The allocations of the study's trials, in trial order, rebuilt from their parameters (no storage touched)."""
    from optuna.trial import FixedTrial

    return [plan.space.suggest(FixedTrial(t.params), plan.context) for t in sorted(study.trials, key=lambda t: t.number)]


def direct_arm(folder: Path, chosen: list) -> Arm:
    """Pretraining + val scoring of each allocation directly, in a fresh store."""
    from transferlab import tracking
    from transferlab.pipeline import train
    from transferlab.search_trials import val_scores

    plan = plan_for(folder, "direct")
    arm = Arm(Clock(), Clock(), Clock())
    with fresh_store(folder), arm.total.timing():
        experiment = tracking.experiment_id("bench direct")
        for allocation in chosen:
            spec = plan.pretrain_spec(allocation)
            val_scores(plan, train(spec, spec.prepare(), experiment))
    return arm


def saving_row() -> tuple[str, float, float, float] | None:
    """(csv, images seen, images seen unpruned, saved share) of the committed search, or None without one."""
    import pandas as pd

    from transferlab.search_report import pruning_saving

    found = sorted((ROOT / "docs" / "results" / "search").glob("*/trials.csv"))
    if not found:
        return None
    frame = pd.read_csv(found[0])
    seen, saved = pruning_saving(frame)  # over the trials that trained (one that reused a finished run trained nothing)
    return str(found[0].relative_to(ROOT)), seen, seen / (1 - saved) if saved < 1 else float("inf"), saved


def measure(trials: int = TRIALS, rounds: tuple = ROUNDS, warm: bool = True) -> dict:
    """Both arms' timings per round, the overhead ratio (the larger of both measures) and its parts."""
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "plugins")]
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: one thread keeps both arms' timings comparable
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    search, direct, chosen = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        folders = (Path(tempfile.mkdtemp(dir=tmp)) for _ in range(100))
        if warm:
            _, warmed = search_arm(next(folders), 2)  # warm-up, thrown away: imports, torch kernels, plotting
            direct_arm(next(folders), warmed[:1])
        for order in rounds:
            for arm in order:
                if arm == "search":
                    got, allocated = search_arm(next(folders), trials)
                    if chosen and [a.policy for a in allocated] != [a.policy for a in chosen]:
                        raise SystemExit("the seeded search proposed other allocations in another round")
                    search.append(got)
                    chosen = allocated
                else:
                    direct.append(direct_arm(next(folders), chosen))
    fastest_search, fastest_direct = min(search, key=lambda a: a.total.wall), min(direct, key=lambda a: a.total.wall)
    trial_s = fastest_direct.total.wall / trials
    between = (fastest_search.total.wall - fastest_direct.total.wall) / trials
    within = (fastest_search.total.wall - fastest_search.inner.wall) / trials
    within_trial_s = fastest_search.inner.wall / trials
    cpu = (min(a.total.cpu for a in search) - min(a.total.cpu for a in direct)) / trials
    return {"search": search, "direct": direct, "chosen": chosen, "fastest_search": fastest_search, "trial_s": trial_s, "between": between,
            "within": within, "within_trial_s": within_trial_s, "cpu": cpu, "ratio": max(between / trial_s, within / within_trial_s),
            "saving": saving_row()}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows: overhead per trial (at --tiny 2 trials, one round each, no warm-up) and the committed search's pruning saving."""
    from benchmarks.suite import row

    m = measure(2, (("search", "direct"),), warm=False) if tiny else measure()
    out = [row("search", f"search overhead per tiny trial ÷ trial wall ({len(m['chosen'])} trials)", m["ratio"], "×", f"≤ {OVERHEAD_TARGET}",
               m["ratio"] <= OVERHEAD_TARGET)]
    if m["saving"]:
        out.append(row("search", f"pruning saved, images seen ({m['saving'][0]})", 100 * m["saving"][3], "%", f"≥ {SAVING_TARGET:.0%}",
                       m["saving"][3] >= SAVING_TARGET))
    return out


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    m = measure()
    search, direct, chosen, fastest_search = m["search"], m["direct"], m["chosen"], m["fastest_search"]
    trial_s, between, within, within_trial_s, cpu, ratio = m["trial_s"], m["between"], m["within"], m["within_trial_s"], m["cpu"], m["ratio"]
    distinct = len({(a.policy, a.training.spec()) for a in chosen})
    table = Table("what (fastest round of each arm)", "seconds", "÷ trial wall",
                  title=f"search overhead: {TRIALS} tiny trials ({distinct} distinct allocations), {len(ROUNDS)} rounds")
    for i, (one, other) in enumerate(zip(search, direct)):
        table.add_row(f"round {i + 1}: search arm / direct arm (search end, apart)", f"{one.total.wall:.1f} / {other.total.wall:.1f} ({one.end.wall:.1f})", "")
    table.add_row("trial wall: direct arm per trial", f"{trial_s:.2f}", "1")
    table.add_row("overhead per trial: search arm - direct arm", f"{between:.3f}", f"{between / trial_s:.3f}")
    table.add_row("trial wall: the search's own library calls per trial", f"{within_trial_s:.2f}", "1")
    table.add_row("overhead per trial: search arm - its library calls", f"{within:.3f}", f"{within / within_trial_s:.3f}")
    table.add_row("CPU overhead per trial: search arm - direct arm", f"{cpu:.3f}", f"{cpu / trial_s:.3f}")
    table.add_row("search end (best on test, report), excluded", f"{fastest_search.end.wall:.2f}", "")
    saving = m["saving"]
    if saving:
        csv, run, full, saved = saving
        table.add_row(f"images trained on with pruning ({csv})", f"{run:,.0f}", "")
        table.add_row("images they would have trained on unpruned", f"{full:,.0f}", "")
        table.add_row("pruning saved", f"{saved:.1%}", "")
    Console(width=120).print(table)
    ok = ratio <= OVERHEAD_TARGET
    print(f"RESULT search overhead per trial {ratio:.3f} of trial wall, the larger of both measures (target <= {OVERHEAD_TARGET}): "
          f"{'PASS' if ok else 'FAIL'}")
    if saving:
        ok &= saving[3] >= SAVING_TARGET
        print(f"RESULT pruning saved {saving[3]:.1%} of images seen (target >= {SAVING_TARGET:.0%}): "
              f"{'PASS' if saving[3] >= SAVING_TARGET else 'FAIL'}")
    else:
        print("RESULT pruning saving: no docs/results/search/*/trials.csv committed yet: skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
