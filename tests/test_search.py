"""`transferlab search` in one process: the search run and its trial runs, the val-only objective, pruning, reuse,
continuing a search, failing trials, the Pareto mode, and bad input refused before any run."""

import csv
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from tiny_specs import BACKBONE, SOURCE, TARGET
from transferlab import SpecError, pipeline, search_report, search_runs, search_trials, tracking
from transferlab.cli import cli
from transferlab.errors import DivergedError
from transferlab.pipeline import PretrainedRecipe
from transferlab.search_plan import SearchArgs, SearchPlan
from transferlab.search_runs import run_search
from transferlab.search_trials import PRUNED_AT, RUN_ATTR, SEARCH_RUN, TRIAL, TRIAL_STATE
from transferlab.tasks import TransferContext
from transferlab_probes.knn import knn_predict

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store
BUDGET = 40  # the tiny source's 4 classes hold 20 training images each: k ranges over 2..4
TRAINING = "train(steps=4, batch_size=16, resolution=16)"  # evaluated (and reported to the pruner) at steps 2 and 4
SPACE = "allocation(steps=(2, 4))"
STORAGE = "sqlite:///optuna.db"  # the default, in the store fixture's working directory
CLI_ARGS = ["search", "--source", SOURCE, "--target", TARGET, "--budget", str(BUDGET), "--backbone", BACKBONE, "--training", TRAINING,
            "--space", SPACE]


def args(name: str = "s", trials: int = 3, **fields) -> SearchArgs:
    budget = fields.pop("budget", BUDGET)
    return SearchArgs(name, SOURCE, TARGET, budget, trials, **{"space": SPACE, "backbone": BACKBONE, "training": TRAINING, **fields})


def search(a: SearchArgs):
    return run_search(SearchPlan.parse(a), "search", out=Path("report"))


def allocation(classes: int, selection: str = "random", steps: int = 4) -> dict:
    return {"classes": classes, "selection": selection, "label_fraction": 1.0, "steps": steps}


def enqueue(name: str, *params: dict, directions=("maximize",)) -> None:
    """Create the search's study and queue these allocations as its first trials (known allocations, fixed tests)."""
    study = optuna.create_study(storage=STORAGE, study_name=name, directions=list(directions))
    for p in params:
        study.enqueue_trial(p)


def study_of(name: str = "s"):
    return optuna.load_study(study_name=name, storage=STORAGE)


def all_runs(kind: str | None = None) -> list:
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, f"tags.`{tracking.KIND}` = '{kind}'" if kind else "", max_results=1000)
    return sorted(found, key=lambda r: r.info.start_time)


def children(run_id: str, kind: str) -> list:
    return [r for r in all_runs(kind) if r.data.tags.get("mlflow.parentRunId") == run_id]


def count_trainings(monkeypatch) -> list:
    """(run id, fresh) of every pretraining trained from here on, training for real."""
    trained, real = [], pipeline.run_pretraining

    def counted(spec, manifest, run_id, checkpoint, fresh, evaluated=None):
        trained.append((run_id, fresh))
        return real(spec, manifest, run_id, checkpoint, fresh, evaluated)

    monkeypatch.setattr(pipeline, "run_pretraining", counted)
    return trained


def record_reads(monkeypatch) -> list:
    """(phase, sample indices) of every split a transfer context reads; the phase turns 'best' when measure_best starts."""
    reads, phase, real_samples, real_best = [], ["trials"], TransferContext.samples, search_report.measure_best

    def samples(self, split):
        indices = real_samples(self, split)
        reads.append((phase[0], self.target.spec(), set(indices.tolist())))
        return indices

    def measure_best(*a, **k):
        phase[0] = "best"
        return real_best(*a, **k)

    monkeypatch.setattr(TransferContext, "samples", samples)
    monkeypatch.setattr(search_report, "measure_best", measure_best)
    return reads


def knn_top1(pretrain_run: str, bank_splits: tuple[str, ...], query_split: str) -> float:
    """kNN top-1 (the knn task's k and temperature) of a pretraining on target splits, computed here from its features."""
    recipe = PretrainedRecipe.of(tracking.get_run(pretrain_run))
    target = SearchPlan.parse(args()).target.target
    ctx = TransferContext(target, recipe.backbone, recipe.network(), recipe.training.resolution, device="cpu", cache_features=False)
    bank = [ctx.features(s) for s in bank_splits]
    x, y = torch.from_numpy(np.concatenate([b[0] for b in bank])), torch.from_numpy(np.concatenate([b[1] for b in bank]))
    qx, qy = ctx.features(query_split)
    predicted = knn_predict(x, y, torch.from_numpy(qx), ctx.num_classes, 20, 0.07)
    return 100 * float((predicted.numpy() == qy).mean())


def test_a_search_nests_one_linked_trial_run_per_trial_scored_on_val_only(store, monkeypatch):
    reads = record_reads(monkeypatch)
    result = search(args(trials=4))
    client, study = MlflowClient(), study_of()
    (search_run,) = all_runs("search")
    assert search_run.info.run_id == result.search_run and search_run.info.status == "FINISHED"
    assert study.user_attrs[RUN_ATTR] == result.search_run and search_run.data.params["trials"] == "4"
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3] and {t.state for t in trials} == {TrialState.COMPLETE}  # the median pruner waits 4
    trial_runs = {r.info.run_id: r for r in all_runs("trial")}
    assert len(trial_runs) == 4 and {r.data.tags["mlflow.parentRunId"] for r in trial_runs.values()} == {result.search_run}
    for t in trials:
        run = trial_runs[t.user_attrs[RUN_ATTR]]
        assert run.data.tags[TRIAL] == str(t.number) and run.data.tags[TRIAL_STATE] == t.state.name == "COMPLETE"
        assert run.info.status == "FINISHED" and run.data.tags[SEARCH_RUN] == result.search_run
        assert run.data.tags[tracking.PRETRAIN_RUN] == t.user_attrs["outcome"]["pretrain_run"] and run.data.params["policy"] == t.user_attrs["allocation"]["policy"]
        assert run.data.metrics["search.score"] == t.values[0] and run.data.metrics["search.images_seen"] == 16 * t.params["steps"]
        # the pruner heard of every evaluation of a pretraining trained here (steps 2 and 4), none of a reused one
        # reported at per mille of the trial's training done (its steps 2 and 4 of 4 are 500 and 1000)
        steps = [] if t.user_attrs["outcome"]["reused"] else [2, 4][:t.params["steps"] // 2]
        assert sorted(t.intermediate_values) == [1000 * s // t.params["steps"] for s in steps]
        probes = client.get_metric_history(run.info.run_id, "search.probe_val_top1")
        assert {1000 * m.step // t.params["steps"]: m.value for m in probes} == pytest.approx(t.intermediate_values)
        # a trial's score is kNN on the target's val split with all of train as the bank
        assert t.values[0] == pytest.approx(knn_top1(t.user_attrs["outcome"]["pretrain_run"], ("train",), "val"))

    target = SearchPlan.parse(args()).target.target
    test, val = set(target.index.split_samples("test").tolist()), set(target.index.split_samples("val").tolist())
    during = [indices for phase, spec, indices in reads if phase == "trials" and spec == target.spec()]
    assert during and not any(indices & test for indices in during)  # trials (probes included) never read the test split
    assert val in during  # ... but score on val
    assert any(phase == "best" and indices == test for phase, _, indices in reads)  # test is read once the trials are done

    best = max(trials, key=lambda t: (t.values[0], -t.number))
    metrics = client.get_run(result.search_run).data.metrics
    assert metrics["best.1.val_score"] == best.values[0] and metrics["best.1.trial"] == best.number
    assert metrics["best.1.test_score"] == pytest.approx(knn_top1(best.user_attrs["outcome"]["pretrain_run"], ("train", "val"), "test"))
    assert metrics["best.1.test_score"] == trial_runs[best.user_attrs[RUN_ATTR]].data.metrics["search.test_score"]
    assert metrics["search.trials_complete"] == 4 and metrics["search.trials_pruned"] == 0
    logged = {a.path for a in client.list_artifacts(result.search_run, "search")}
    assert {"search/trials.csv", "search/pareto.csv", "search/pareto.png", "search/history.png", "search/search.md"} <= logged
    with open("report/trials.csv") as f:
        rows = list(csv.DictReader(f))
    expected = [(t.number, t.values[0], t.user_attrs[RUN_ATTR]) for t in trials]
    assert [(int(r["number"]), float(r["val_score"]), r["run_id"]) for r in rows] == expected
    assert sum(r["test_score"] != "" for r in rows) == min(3, len(trials))


class PruneTrials(optuna.pruners.BasePruner):
    """Prunes the given trials at their first report."""

    def __init__(self, numbers):
        self.numbers = numbers

    def prune(self, study, trial) -> bool:
        return trial.number in self.numbers


def test_pruned_trials_end_killed_and_their_pretraining_resumes_for_the_same_allocation(store, monkeypatch):
    monkeypatch.setattr(search_runs, "pruner", lambda plan: PruneTrials({1, 2}))
    enqueue("s", allocation(4), allocation(2, "spread"), allocation(3, "clustered"), allocation(2, "spread"))
    trained = count_trainings(monkeypatch)
    result = search(args(trials=4))
    study, client = study_of(), MlflowClient()
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.COMPLETE]
    for t in trials[1:3]:
        at = 1000 * 2 // t.params["steps"]  # pruned at its first evaluation, step 2: reported at per mille of its training
        assert t.intermediate_values == {at: pytest.approx(t.intermediate_values[at])} and t.user_attrs["outcome"]["images_seen"] == 2 * 16
        run = client.get_run(t.user_attrs[RUN_ATTR])
        assert run.info.status == "KILLED" and run.data.tags[TRIAL_STATE] == "PRUNED"
        assert [m.value for m in client.get_metric_history(run.info.run_id, "search.probe_val_top1")] == [t.intermediate_values[at]]
    (stays_pruned,) = children(trials[2].user_attrs[RUN_ATTR], "pretrain")
    assert stays_pruned.info.status == "KILLED" and stays_pruned.data.tags[PRUNED_AT] == "2"
    # trial 3 asks for trial 1's allocation: it continues that pretraining from its step-2 checkpoint and finishes it
    assert [fresh for _, fresh in trained] == [True, True, True, False] and trained[3][0] == trained[1][0]
    resumed = client.get_run(trained[1][0])  # now nested under trial 3's run, which finished it
    assert client.get_run(trials[3].user_attrs[RUN_ATTR]).data.tags[tracking.PRETRAIN_RUN] == resumed.info.run_id
    assert resumed.info.status == "FINISHED" and PRUNED_AT not in resumed.data.tags and trials[3].user_attrs["outcome"]["reused"] is False
    assert sorted(trials[3].intermediate_values) == [1000]  # resumed at step 2 of 4: only its last evaluation is new
    assert not any(r.info.status == "FINISHED" for r in all_runs("trial") if r.data.tags[TRIAL_STATE] == "PRUNED")
    metrics = client.get_run(result.search_run).data.metrics
    assert (metrics["search.trials_complete"], metrics["search.trials_pruned"]) == (2, 2)
    # seen 64 + 32 + 32 + 64 images of the 4 × 64 the trials would have seen unpruned
    assert metrics["search.images_seen"] == 192 and metrics["search.pruning_saved_fraction"] == pytest.approx(0.25)


def test_a_trial_of_an_allocation_already_trained_reuses_its_pretraining(store, monkeypatch):
    enqueue("s", allocation(3, "spread"), allocation(3, "spread"))
    trained = count_trainings(monkeypatch)
    search(args(trials=2))
    first, second = study_of().get_trials()
    assert len(trained) == 1 and len(all_runs("pretrain")) == 1
    assert first.user_attrs["outcome"]["pretrain_run"] == second.user_attrs["outcome"]["pretrain_run"] == trained[0][0]
    assert [first.user_attrs["outcome"]["reused"], second.user_attrs["outcome"]["reused"]] == [False, True]
    assert second.values == first.values and second.intermediate_values == {}
    for t in (first, second):
        assert MlflowClient().get_run(t.user_attrs[RUN_ATTR]).data.tags[tracking.PRETRAIN_RUN] == trained[0][0]


def test_a_rerun_with_the_same_name_continues_and_other_settings_are_refused(store):
    first = CliRunner().invoke(cli, [*CLI_ARGS, "--trials", "3", "--name", "go", "--sampler", "random"])
    assert first.exit_code == 0, first.output
    before = {t.number: (t.values, t.datetime_complete, t.user_attrs[RUN_ATTR]) for t in study_of("go").get_trials()}
    assert len(before) == 3
    again = CliRunner().invoke(cli, [*CLI_ARGS, "--trials", "5", "--name", "go", "--sampler", "random"])
    assert again.exit_code == 0, again.output
    trials = study_of("go").get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and all(t.state != TrialState.RUNNING for t in trials)
    assert {t.number: (t.values, t.datetime_complete, t.user_attrs[RUN_ATTR]) for t in trials[:3]} == before
    (search_run,) = all_runs("search")
    assert len(all_runs("trial")) == 5 and {r.data.tags["mlflow.parentRunId"] for r in all_runs("trial")} == {search_run.info.run_id}
    metrics = search_run.data.metrics
    assert search_run.info.status == "FINISHED" and metrics["search.trials_complete"] + metrics["search.trials_pruned"] == 5

    recorded = len(all_runs())
    for flag, value, change in (("--budget", "30", "budget '40' → '30'"), ("--source", TARGET, "source"),
                                ("--sampler", "tpe", "sampler 'random' → 'tpe'")):
        changed = [*CLI_ARGS, "--trials", "6", "--name", "go", "--sampler", "random"]
        changed[changed.index(flag) + 1] = value
        if flag == "--source":
            changed[changed.index("--target") + 1] = SOURCE
        out = CliRunner().invoke(cli, changed)
        assert out.exit_code == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("Error: search 'go'"), out.output
        assert "was started with other settings" in out.stderr and change in out.stderr
    assert len(all_runs()) == recorded and len(study_of("go").get_trials()) == 5
    with pytest.raises(SpecError, match="other settings"):
        search(args("go", trials=6, budget=30, sampler="random"))


def test_a_trial_that_raises_is_failed_with_its_error_and_the_search_goes_on(store, monkeypatch):
    enqueue("s", allocation(4), allocation(2, "spread"), allocation(3, "clustered"))
    calls, real = [], search_trials.train

    def diverging_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise DivergedError("pretraining loss is nan at step 1")
        return real(*a, **k)

    monkeypatch.setattr(search_trials, "train", diverging_second)
    result = search(args(trials=3))
    trials = study_of().get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed = trials[1]
    assert failed.user_attrs["error"] == "DivergedError: pretraining loss is nan at step 1" and failed.values is None
    run = MlflowClient().get_run(failed.user_attrs[RUN_ATTR])
    assert run.info.status == "FAILED" and run.data.tags[TRIAL_STATE] == "FAIL" and "loss is nan" in run.data.tags[tracking.ERROR]
    search_run = MlflowClient().get_run(result.search_run)
    assert search_run.info.status == "FINISHED" and search_run.data.metrics["search.trials_failed"] == 1
    assert search_run.data.metrics["search.trials_complete"] == 2 and "best.3.val_score" not in search_run.data.metrics
    with open("report/trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE"] and rows[1]["error"].startswith("DivergedError")


def test_a_search_whose_every_trial_fails_still_ends_with_its_report(store, monkeypatch):
    def diverging(*a, **k):
        raise DivergedError("pretraining loss is nan at step 1")

    monkeypatch.setattr(search_trials, "train", diverging)
    result = search(args(trials=2))
    assert [t.state for t in study_of().get_trials()] == [TrialState.FAIL, TrialState.FAIL]
    search_run = MlflowClient().get_run(result.search_run)
    assert search_run.info.status == "FINISHED" and search_run.data.metrics["search.trials_failed"] == 2
    assert {p.name for p in result.report} >= {"trials.csv", "pareto.png", "tradeoff.png", "history.png", "search.md"}
    assert "best.1.val_score" not in search_run.data.metrics


def test_a_pareto_search_of_score_against_images_seen(store):
    enqueue("p", allocation(4, steps=2), allocation(4, steps=4), allocation(2, "spread", 2), allocation(3, "clustered", 4),
            directions=("maximize", "minimize"))
    result = search(args("p", trials=4, objective="score,images_seen", pruner="none"))
    study = study_of("p")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    points = {(t.values[1], t.values[0]) for t in study.get_trials()}
    assert {seen for seen, _ in points} == {32, 64}
    dominated = {(seen, score) for seen, score in points for n2, s2 in points if s2 >= score and n2 <= seen and (n2, s2) != (seen, score)}
    front = points - dominated
    with open("report/pareto.csv") as f:
        logged = {(float(r["images_seen"]), float(r["val_score"])) for r in csv.DictReader(f)}
    assert logged == front == {(t.values[1], t.values[0]) for t in study.best_trials}
    metrics = MlflowClient().get_run(result.search_run).data.metrics
    assert metrics["best.1.val_score"] == max(score for _, score in front)
    assert {a.path for a in MlflowClient().list_artifacts(result.search_run, "search")} >= {"search/pareto.csv", "search/pareto.png"}


@pytest.mark.parametrize("extra, message", [
    (["--space", "nope"], "unknown space 'nope'"),
    (["--budget", "1000"], "the budget of 1000 images is more than"),
    (["--workers", "2"], "--workers 2 needs a database server"),
    (["--workers", "2", "--storage", "postgresql://u@127.0.0.1:9/db"], "--workers 2 write MLflow runs in parallel"),
    (["--objective", "images_seen"], "--objective is 'score' optionally followed by costs"),
    (["--objective", "score,images_seen"], "pruning needs one objective"),
    (["--storage", "not a url"], "is not a database URL"),
    (["--storage", "redis://127.0.0.1/0"], "not 'redis'"),
    (["--name", "two\nlines"], "--name must be 1..200 printable characters"),
])
def test_bad_input_is_one_line_before_any_run(store, extra, message):
    command = list(CLI_ARGS)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in command:
            command[command.index(flag) + 1] = value
        else:
            command += [flag, value]
    out = CliRunner().invoke(cli, [*command, "--trials", "2"])
    assert out.exit_code == 2 and out.stderr.startswith("Error: ") and out.stderr.count("\n") == 1, out.output
    assert message in out.stderr
    assert all_runs() == [] and not Path("optuna.db").exists() and not Path("reports").exists()


def test_dry_run_prints_the_space_and_creates_nothing(store, monkeypatch):
    from rich.console import Console

    from transferlab import cli as cli_module

    monkeypatch.setattr(cli_module, "console", Console(width=200))
    out = CliRunner().invoke(cli, [*CLI_ARGS, "--trials", "7", "--dry-run"])
    assert out.exit_code == 0, out.output
    lines = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if line.count("│") >= 3}
    assert "2..4, log scale" in lines["classes"] and "random | spread | clustered" in lines["selection"]
    assert "0.25..1, log scale" in lines["label_fraction"] and "2 | 4" in lines["steps"]
    assert "7 trials" in out.stdout and "pruner median" in out.stdout
    assert all_runs() == [] and not Path("optuna.db").exists() and not Path("reports").exists()
