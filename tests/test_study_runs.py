"""Studies as MLflow runs: a study run with one nested cell run per cell and seed, reuse, resume after an interruption,
every built-in study end to end on a tiny source, reports, and the `study` / `report` commands."""

import csv

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from tiny_specs import BACKBONE, SOURCE, TARGET
from transferlab import pipeline, study_runs, tracking
from transferlab.cli import cli
from transferlab.study_runs import StudyPlan, run_study

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store
TRAINING = "train(steps=2, batch_size=16, resolution=16)"
OVERLAPPING = f"{SOURCE} | split(part='B')"  # a target sharing half the source's classes (for target_removed)


def plan(study: str, seeds: int = 2, targets=(TARGET,)) -> StudyPlan:
    return StudyPlan.parse(study, SOURCE, tuple(targets), BACKBONE, TRAINING, seeds, "knn")


def runs_of(experiment: str, kind: str) -> list:
    return MlflowClient().search_runs([experiment], f"tags.`{tracking.KIND}` = '{kind}'")


def count_trainings(monkeypatch) -> list:
    """Pretraining runs trained from here on (their ids), training for real."""
    trained, real = [], pipeline.run_pretraining

    def counted(spec, manifest, run_id, checkpoint, fresh, **kwargs):
        trained.append(run_id)
        return real(spec, manifest, run_id, checkpoint, fresh, **kwargs)

    monkeypatch.setattr(pipeline, "run_pretraining", counted)
    return trained


def test_a_study_nests_a_cell_run_per_cell_and_seed_and_a_rerun_trains_nothing(store, tmp_path, monkeypatch):
    grid = plan("images_per_class")
    trained = count_trainings(monkeypatch)
    result = run_study(grid, "s", out=tmp_path / "report")
    study = MlflowClient().get_run(result.study_run)
    assert study.info.status == "FINISHED" and study.data.tags[tracking.KIND] == "study"
    assert study.data.params["seeds"] == "2" and study.data.params["train.length"] == "steps"
    cells = runs_of(study.info.experiment_id, "cell")
    rows = len(grid.jobs) // 2
    assert len(cells) == len(grid.jobs) == len(result.cell_runs) and rows == len({j.cell.label for j in grid.jobs}) == 6  # floor, 4 sizes, full
    assert {c.data.tags["mlflow.parentRunId"] for c in cells} == {result.study_run}
    assert {c.data.tags[study_runs.STUDY_RUN] for c in cells} == {result.study_run}
    assert sorted(int(c.data.params["seed"]) for c in cells) == [0] * rows + [1] * rows
    pretraining = {r.info.run_id: r for r in runs_of(study.info.experiment_id, "pretrain")}
    assert len(trained) == len(pretraining) == len(grid.jobs)  # every cell × seed trained once
    for cell in cells:
        linked = pretraining[cell.data.tags[tracking.PRETRAIN_RUN]]
        assert linked.data.tags["mlflow.parentRunId"] == cell.info.run_id  # newly trained: nested under its cell
        assert "pretrain.val_top1" in tracking.run_metrics(cell) and any(k.startswith("transfer.knn.") for k in tracking.run_metrics(cell))
        floor = cell.data.params["cell.role"] == "floor"
        assert (linked.data.params["train.steps"] == "0") == floor  # the random-init floor trains nothing
    names = {p.name for p in result.report}
    assert names == {"images_per_class.md", "images_per_class-results.csv", "images_per_class-scores.csv", "images_per_class.png",
                     "images_per_class-relative.png"}
    with open(tmp_path / "report" / "images_per_class-scores.csv") as f:
        scores = list(csv.DictReader(f))
    assert {(r["label"], r["seed"]) for r in scores} == {(c.data.params["cell.label"], c.data.params["seed"]) for c in cells}
    logged = {a.path for a in MlflowClient().list_artifacts(result.study_run, "report")}
    assert {f"report/{n}" for n in names} == logged

    monkeypatch.setattr(pipeline, "pretrain", lambda *a, **k: pytest.fail("trained again"))
    again = run_study(plan("images_per_class"), "s", out=tmp_path / "again")
    assert again.study_run == result.study_run and set(again.cell_runs) == set(result.cell_runs)
    assert len(runs_of(study.info.experiment_id, "cell")) == len(grid.jobs) and len(trained) == len(grid.jobs)


def test_an_interrupted_study_resumes_and_finished_cells_are_not_trained_again(store, tmp_path, monkeypatch):
    grid = plan("images_per_class", seeds=1)
    trained, real, started = count_trainings(monkeypatch), study_runs.run_cell, []

    def ctrl_c_at_the_third_cell(*args, **kwargs):
        started.append(args[1].name)
        if len(started) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(study_runs, "run_cell", ctrl_c_at_the_third_cell)
    with pytest.raises(KeyboardInterrupt):
        run_study(grid, "s", out=tmp_path)
    [study] = runs_of(tracking.experiment_id("s"), "study")
    assert study.info.status == "KILLED" and len(trained) == 2

    monkeypatch.setattr(study_runs, "run_cell", real)
    result = run_study(plan("images_per_class", seeds=1), "s", out=tmp_path)
    assert result.study_run == study.info.run_id and MlflowClient().get_run(result.study_run).info.status == "FINISHED"
    assert len(trained) == len(grid.jobs)  # the two finished cells were reused, the rest trained once each
    assert len(runs_of(study.info.experiment_id, "cell")) == len(grid.jobs)


@pytest.mark.parametrize("name, targets", [("num_classes", (TARGET,)), ("coarse_to_fine", (TARGET,)), ("fixed_budget", (TARGET,)),
                                           ("target_removed", (OVERLAPPING, TARGET)), ("class_split", (TARGET,))])
def test_every_built_in_study_runs_end_to_end_on_a_tiny_source(store, tmp_path, name, targets):
    grid = plan(name, seeds=1, targets=targets)
    result = run_study(grid, "all", out=tmp_path)
    cells = [MlflowClient().get_run(r) for r in result.cell_runs]
    assert len(cells) == len(grid.jobs) and all(c.info.status == "FINISHED" for c in cells)
    assert {c.data.params["cell.role"] for c in cells} == {"floor", "full", "cell"}
    for cell, job in zip(cells, grid.jobs):
        measured = {k.split(".")[2] for k in tracking.run_metrics(cell) if k.startswith("transfer.")}
        assert len(measured) == len(job.targets)  # every target the cell lists, each under its own label
    table = (tmp_path / f"{name}.md").read_text()
    assert all(f"| {job.cell.label} |" in table for job in grid.jobs)


def test_two_studies_reuse_one_pretraining_run_and_each_keeps_its_own_cells(store, tmp_path):
    first = run_study(plan("images_per_class", seeds=1), "shared", out=tmp_path / "a")
    second = run_study(plan("coarse_to_fine", seeds=1), "shared", out=tmp_path / "b")
    experiment = tracking.experiment_id("shared")
    cells = {r.info.run_id: r for r in runs_of(experiment, "cell")}
    assert set(first.cell_runs) | set(second.cell_runs) == set(cells) and not set(first.cell_runs) & set(second.cell_runs)
    full = [cells[r] for r in first.cell_runs + second.cell_runs if cells[r].data.params["cell.role"] == "full"]
    assert len(full) == 2 and full[0].data.tags[tracking.PRETRAIN_RUN] == full[1].data.tags[tracking.PRETRAIN_RUN]  # trained once
    assert {full[0].data.tags[study_runs.STUDY_RUN], full[1].data.tags[study_runs.STUDY_RUN]} == {first.study_run, second.study_run}
    assert tracking.PRETRAIN_RUN not in MlflowClient().get_run(first.study_run).data.tags  # no shared parent link to overwrite


def test_the_study_and_report_commands(store, tmp_path):
    args = ["study", "fixed_budget", "--source", SOURCE, "--target", TARGET, "--backbone", BACKBONE, "--training", TRAINING,
            "--seeds", "1", "--tasks", "knn", "--experiment", "cli"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0 and "fixed_budget" in dry.output and "pretraining runs" in dry.output
    assert MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()]) == []  # a dry run makes none
    done = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "r")], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    [study] = runs_of(tracking.experiment_id("cli"), "study")
    assert study.info.run_id in done.output and (tmp_path / "r" / "fixed_budget.md").exists()
    again = CliRunner().invoke(cli, ["report", study.info.run_id, "--out", str(tmp_path / "again")], catch_exceptions=False)
    assert again.exit_code == 0 and (tmp_path / "again" / "fixed_budget-results.csv").exists()
    bad = CliRunner().invoke(cli, ["report", runs_of(study.info.experiment_id, "cell")[0].info.run_id])
    assert bad.exit_code == 2 and "is not a study run" in bad.stderr


def test_a_study_checks_every_cell_before_any_run(store):
    with pytest.raises(tracking.TransferlabError, match="nothing to remove"):
        plan("target_removed")  # the held-out target shares no class with the source
    with pytest.raises(tracking.TransferlabError, match="--seeds must lie in 1..100"):
        plan("images_per_class", seeds=0)
    assert MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()]) == []
