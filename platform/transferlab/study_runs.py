"""Studies as MLflow runs: every cell × seed of a study pretrained (reused, resumed) and measured on its targets, each in a
cell run nested under one study run, then the study's report.

Runs: the study run (kind=study) is keyed by the study, source, targets, backbone, recipe, seeds and tasks, so running
the same study again reuses it, and an interrupted one resumes. Under it, one cell run (kind=cell) per cell and seed,
keyed the same way, carries the cell's params (label, group, role, axis value, seed, policy), a link to its pretraining
run (transferlab.pretrain_run) and that run's key metrics plus every transfer metric. A pretraining run is keyed as
always, so a cell that another study (or `transferlab run`) already trained is reused: it stays nested where it was
first trained, and the cell run links to it.
"""

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from . import policies as parse_policies
from . import progress, runs, tracking
from . import source as parse_source
from .cache import cache_key
from .errors import SpecError
from .manifest import Manifest
from .pipeline import RECIPE_VERSION, PretrainSpec, TransferSpec, experiment_of, measure, parse_training, pretrain_metrics, train
from .plugins import get_registry
from .studies import Cell, Study, images_seen
from .subset_source import with_seed

STUDY_RUN = "transferlab.study_run"  # tag of a cell run and of the run that asked: the study run
MAX_SEEDS = 100

console = Console(stderr=True)


@dataclasses.dataclass(frozen=True)
class Job:
    """One cell at one seed, parsed and checked: what to pretrain (the manifest built) and where to measure it."""

    cell: Cell
    seed: int
    pretrain: PretrainSpec
    manifest: Manifest
    targets: tuple[TransferSpec, ...]

    @property
    def name(self) -> str:
        """The cell run's name in the runs table."""
        return f"{self.cell.group + ' · ' if self.cell.group else ''}{self.cell.label} · seed {self.seed}"

    @property
    def images_seen(self) -> int:
        """Training images the pretraining draws (optimizer steps × batch, as the loop counts steps)."""
        return images_seen(len(self.manifest.samples), self.pretrain.training)


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """A study's whole grid, every spec parsed and every manifest and target checked before any run exists."""

    study: Study
    source: str
    targets: tuple[str, ...]
    backbone: str
    training: str
    seeds: int
    tasks: str
    jobs: tuple[Job, ...]

    @classmethod
    def parse(cls, study: str, source: str, targets: str | tuple[str, ...], backbone: str, training: str, seeds: int,
              tasks: str) -> "StudyPlan":
        """Parse the study and every cell's pretraining and targets (the study's own, then every user target after the
        first); any mistake raises before any work."""
        chosen = get_registry().parse("study", study)
        if not 1 <= seeds <= MAX_SEEDS:
            raise SpecError(f"--seeds must lie in 1..{MAX_SEEDS} (mean ± std needs 2 or more), got {seeds}")
        users = (targets,) if isinstance(targets, str) else tuple(targets)
        if not users:
            raise SpecError("a study needs at least one --target")
        src, net, recipe = parse_source(source), get_registry().parse("backbone", backbone), parse_training(training)
        src.check()  # before the study's cells read its index
        for text in users:
            TransferSpec.parse(text, tasks)  # the user's targets and tasks, checked once before the cells
        cells = [dataclasses.replace(c, targets=tuple(dict.fromkeys(c.targets + users[1:]))) for c in chosen.checked_cells(src, users[0])]
        targets: dict[str, TransferSpec] = {}
        jobs = []
        for cell in cells:
            chain = tuple(parse_policies(cell.policy))
            cell_recipe = dataclasses.replace(recipe, epochs=None, steps=0) if cell.role == "floor" else recipe
            for seed in range(seeds):
                spec = PretrainSpec(src, chain, net, cell_recipe, seed)
                for text in (with_seed(t, seed) for t in cell.targets):
                    if text not in targets:
                        targets[text] = TransferSpec.parse(text, tasks)
                        targets[text].check()
                jobs.append(Job(cell, seed, spec, spec.prepare(), tuple(targets[with_seed(t, seed)] for t in cell.targets)))
        return cls(chosen, src.spec(), users, net.spec(), recipe.spec(), seeds, tasks, tuple(jobs))

    def key(self) -> str:
        """The study run's key: the same study on the same data, network, recipe, seeds and tasks is the same run."""
        source = self.jobs[0].pretrain.source
        targets = sorted({t.target.fingerprint for job in self.jobs for t in job.targets})
        return cache_key("study", self.study.spec(), source.fingerprint, *self.targets, *targets, self.backbone, self.training, self.seeds,
                         " | ".join(t.spec() for t in self.jobs[0].targets[0].tasks), f"recipe{RECIPE_VERSION}")

    def cell_key(self, job: Job) -> str:
        """A cell run's key: its study, cell and seed."""
        return cache_key("cell", self.key(), job.cell.group, job.cell.label, job.cell.policy, job.cell.role, job.seed)

    def params(self) -> dict[str, str]:
        """What the study run records: the study's fields and every spec it ran with."""
        length = self.jobs[0].pretrain.training.length if self.jobs else ""
        trained = next((j.pretrain.training for j in self.jobs if j.cell.role != "floor"), None)
        return {"study": self.study.spec(), **self.study.flat_params("study"), "source": self.source, "target": " ; ".join(self.targets),
                "targets": " ; ".join(sorted({t.target.spec() for j in self.jobs for t in j.targets}))[:tracking.PARAM_CHARS],
                "backbone": self.backbone, "train": self.training, "train.length": trained.length if trained else length,
                "seeds": str(self.seeds), "tasks": self.tasks, "cells": str(len(self.jobs) // self.seeds),
                "study.axis": self.study.axis, "study.log_axis": str(self.study.log_axis), "transferlab.recipe": str(RECIPE_VERSION)}


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """What a study produced: its run, its cell runs in grid order, and the report files."""

    study_run: str
    cell_runs: tuple[str, ...]
    report: tuple[Path, ...]


def run_study(plan: StudyPlan, experiment: str | None = None, *, out: Path | None = None, wait: bool = True,
              report: Callable[[str, Path | None], tuple[Path, ...]] | None = None) -> StudyResult:
    """Run (or reuse, or resume) every cell of the plan under one study run, then write and log its report."""
    tracking.check_store()
    parent = tracking.project_run_id()
    experiment_id = experiment_of(parent, experiment or f"{plan.study.name} study")
    runs.end_dead_runs(experiment_id, parent)
    name = f"study {plan.study.spec()} · {plan.jobs[0].pretrain.source.label()} · {plan.backbone}"
    cell_runs = []
    with runs.keyed_run(experiment_id, plan.key(), "study", name, parent=parent, wait=wait, what="study run",
                        recorded_if=lambda run: "study" in run.data.params) as study_run:
        if not study_run.done:
            if study_run.fresh:
                tracking.log_params(study_run.run_id, plan.params())
            with cells_progress(len(plan.jobs)) as advance:
                for i, job in enumerate(plan.jobs):
                    advance(f"cell {i + 1}/{len(plan.jobs)}: {job.name}")
                    cell_runs.append(run_cell(plan, job, experiment_id, study_run.run_id, wait=wait))
    if parent:
        tracking.set_tags(parent, {STUDY_RUN: study_run.run_id})
    if not cell_runs:
        cell_runs = [r.info.run_id for r in study_cells(study_run.run_id)]
    files = (report or write_study_report)(study_run.run_id, out)
    return StudyResult(study_run.run_id, tuple(cell_runs), tuple(files))


def run_cell(plan: StudyPlan, job: Job, experiment: str, study_run: str, *, wait: bool = True) -> str:
    """The cell run of one job: its pretraining (reused or trained, nested under it when new) and every target measured."""
    tags = {STUDY_RUN: study_run}
    with runs.keyed_run(experiment, plan.cell_key(job), "cell", job.name, parent=study_run, tags=tags, wait=wait, what="cell run",
                        recorded_if=lambda run: "cell.label" in run.data.params) as cell:
        if cell.done:
            return cell.run_id
        if cell.fresh:
            value = "" if job.cell.value is None else repr(float(job.cell.value))
            tracking.log_params(cell.run_id, {"cell.label": job.cell.label, "cell.group": job.cell.group, "cell.role": job.cell.role,
                                              "cell.value": value, "seed": str(job.seed), "policy": job.cell.policy,
                                              "targets": " ; ".join(t.target.spec() for t in job.targets)[:tracking.PARAM_CHARS],
                                              "manifest.num_classes": str(job.manifest.num_classes),
                                              "manifest.num_samples": str(len(job.manifest.samples)),
                                              "images_seen": str(job.images_seen)})
        pretrain_id = train(job.pretrain, job.manifest, experiment, cell.run_id, wait=wait)
        tracking.set_tags(cell.run_id, {tracking.PRETRAIN_RUN: pretrain_id})
        metrics = pretrain_metrics(pretrain_id) | {"pretrain.images_seen": float(job.images_seen)}
        for target in job.targets:
            metrics |= measure(pretrain_id, target, wait=wait)
        tracking.log_metrics(cell.run_id, metrics)
    return cell.run_id


def study_cells(study_run: str) -> list:
    """The cell runs nested under a study run (every status), oldest first."""
    experiment = tracking.get_run(study_run).info.experiment_id
    found = tracking.client().search_runs([experiment], f"tags.`{STUDY_RUN}` = '{study_run}' and tags.`{tracking.KIND}` = 'cell'",
                                          order_by=["attributes.start_time ASC"])
    return [r for r in found if runs.SUPERSEDED_BY not in r.data.tags]


def study_records(study_run: str) -> list[dict]:
    """Per finished cell run: label, group, role, value, seed and metrics (what the report reads)."""
    records = []
    for run in study_cells(study_run):
        if run.info.status != "FINISHED":
            continue
        p = run.data.params
        value = float(p["cell.value"]) if p.get("cell.value") else None
        records.append({"label": p["cell.label"], "group": p.get("cell.group", ""), "role": p["cell.role"], "value": value,
                        "seed": int(p["seed"]), "metrics": tracking.run_metrics(run)})
    return records


def write_study_report(study_run: str, out: Path | None = None) -> tuple[Path, ...]:
    """Write the report of a study run (CSV, Markdown, PNGs) into `out` (default ./reports/<study>-<run id>), log the files
    as the study run's `report/` artifacts, and return their paths."""
    from .report import results_frame, write_report

    run = tracking.get_run(study_run)
    if run.data.tags.get(tracking.KIND) != "study":
        raise tracking.TransferlabError(f"run {study_run} is not a study run (kind {run.data.tags.get(tracking.KIND)!r})")
    p = run.data.params
    study = p.get("study", "study").split("(")[0]
    out = Path(out or Path("reports") / f"{study}-{study_run[:8]}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"study": study, "spec": p.get("study", ""), "axis": p.get("study.axis", ""), "log_axis": p.get("study.log_axis") == "True",
            "source": p.get("source", ""), "targets": p.get("targets", ""), "tasks": p.get("tasks", ""), "backbone": p.get("backbone", ""),
            "training": p.get("train", ""), "length": p.get("train.length", ""), "seeds": int(p.get("seeds", "0") or 0),
            "run_id": study_run}
    records = study_records(study_run)
    if not records:
        raise tracking.TransferlabError(f"study run {study_run} has no finished cell runs to report")
    files = tuple(write_report(results_frame(records), meta, out))
    client = tracking.client()
    for path in files:
        client.log_artifact(study_run, str(path), "report")
    return files


@contextlib.contextmanager
def cells_progress(total: int) -> Iterator[Callable[[str], None]]:
    """A display of cells done / total and the current cell; yields `start(description)`, called as each cell begins.
    Where stderr is no terminal (a log file), a plain line per cell instead."""
    with progress.step("study", total, unit="cells") as bar:
        started = []

        def start(description: str) -> None:
            if started:
                bar.advance()
            started.append(description)
            bar.relabel(description)

        yield start
        if started:
            bar.advance()
