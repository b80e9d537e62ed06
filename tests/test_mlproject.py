"""The MLflow Project: entry points and defaults agree with the library, conda.yaml with pyproject, and `mlflow run` works end to end."""

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import yaml
from mlflow import MlflowClient

from transferlab import tracking
from transferlab.defaults import DEFAULTS, SEARCH_DEFAULTS, STUDY_DEFAULTS
from transferlab.search_plan import SearchArgs, SearchPlan
from transferlab.search_storage import DEFAULT_STORAGE

ROOT = Path(__file__).resolve().parents[1]
MAIN_BUDGET_S = 180  # the limit for the default main job on 2 CPU cores


def requirement_names(lines) -> set[str]:
    return {re.split(r"[<>=!~ \[]", line, maxsplit=1)[0].lower() for line in lines}


def test_entry_points_have_typed_parameters_with_the_library_defaults():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    entry = project["entry_points"]
    assert set(entry) == {"main", "pretrain", "transfer", "study", "search"}
    study = entry["study"]["parameters"]
    assert study["training"]["default"] == STUDY_DEFAULTS["training"] and float(study["seeds"]["default"]) == STUDY_DEFAULTS["seeds"]
    assert all(str(study[k]["default"]) == str(DEFAULTS[k]) for k in ("source", "target", "backbone", "tasks"))
    assert "transferlab study {study}" in entry["study"]["command"]
    search = entry["search"]["parameters"]
    assert all(str(search[k]["default"]) == str(SEARCH_DEFAULTS[k]) for k in ("training", "space", "task", "objective", "sampler", "pruner"))
    assert float(search["trials"]["default"]) == SEARCH_DEFAULTS["trials"] and search["storage"]["default"] == DEFAULT_STORAGE
    assert all(f"--{p} {{{p}}}" in entry["search"]["command"] for p in search)
    defaults = {k: v["default"] for k, v in search.items()}  # the entry point runs as it is: its defaults fit each other
    SearchPlan.parse(SearchArgs(**{k: int(v) if isinstance(v, float) else v for k, v in defaults.items()}))
    for name, keys in (("main", DEFAULTS), ("pretrain", ["source", "policy", "backbone", "training", "seed"]), ("transfer", ["target", "tasks"])):
        for key in keys:
            param = entry[name]["parameters"][key]
            assert param["type"] == ("float" if key == "seed" else "string")
            assert str(param["default"]) == str(DEFAULTS[key]), (name, key)
    assert entry["transfer"]["parameters"]["run_id"] == "string"  # required
    assert "transferlab run" in entry["main"]["command"] and "transferlab transfer {run_id}" in entry["transfer"]["command"]


def test_conda_env_lists_the_same_dependencies_as_pyproject():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requirement_names(pip) == requirement_names(pyproject["dependencies"])
    assert sorted(pip) == sorted(pyproject["dependencies"])


def fresh_clone(destination: Path) -> Path:
    """The working tree's files that git tracks or would track (what a clone of the committed tree holds)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def mlflow_run(clone: Path, cwd: Path, env: dict, *args: str) -> float:
    start = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).with_name("mlflow")), "run", str(clone), "--env-manager", "local", *args],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])
    return time.monotonic() - start, result.stdout + result.stderr


def test_mlflow_run_main_and_pretrain_entry_points_from_a_fresh_clone(tmp_path, monkeypatch):
    clone = fresh_clone(tmp_path / "clone")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    seconds, _ = mlflow_run(clone, tmp_path, env)
    sharing = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # other test workers share the cores
    assert seconds <= MAIN_BUDGET_S * sharing, f"the default main job took {seconds:.0f} s"
    client = MlflowClient()
    [project] = client.search_runs(["0"], "tags.`mlflow.project.entryPoint` = 'main'")  # no --experiment-name: MLflow's Default
    assert project.info.status == "FINISHED" and project.data.tags[tracking.KIND] == "main"
    assert project.info.run_name.startswith("main · all · synthetic · timm(") and "resnet10t" in project.info.run_name  # not MLflow's random name
    assert client.get_experiment("0").tags["mlflow.experimentKind"] == "custom_model_development"
    pretrain = client.get_run(project.data.tags[tracking.PRETRAIN_RUN])
    shared = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)  # where `transferlab run` looks, so both share runs
    assert pretrain.info.experiment_id == shared.experiment_id and tracking.NOTE in shared.tags
    assert pretrain.data.tags["mlflow.parentRunId"] == project.info.run_id and pretrain.info.status == "FINISHED"
    assert pretrain.data.params["source"].startswith("synthetic(") and pretrain.data.params["policy"] == "all"
    transfers = client.search_runs([shared.experiment_id], f"tags.`mlflow.parentRunId` = '{pretrain.info.run_id}'")
    assert sorted(r.data.params["task"].split("(")[0] for r in transfers) == ["knn", "linear"]
    for task in ("linear", "knn"):
        assert 0 <= tracking.run_metrics(project)[f"transfer.{task}.synthetic_heldout.test_top1"] <= 100
    assert "pretrain.val_top1" in tracking.run_metrics(project)

    again = subprocess.run([sys.executable, "-m", "transferlab", "run"], cwd=clone, env=env | {"PYTHONPATH": "platform:plugins"},
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and f"reusing finished pretraining run {pretrain.info.run_id}" in again.stderr, again.stderr[-3000:]

    _, output = mlflow_run(clone, tmp_path, env, "-e", "pretrain", "-P", "policy=images_per_class(n=20)")
    [entry] = client.search_runs(["0"], "tags.`mlflow.project.entryPoint` = 'pretrain'")
    subset = client.get_run(entry.data.tags[tracking.PRETRAIN_RUN])
    assert f"pretraining run {subset.info.run_id}" in output and entry.info.run_name.startswith("pretrain · images_per_class(n=20, ")
    assert subset.info.status == "FINISHED" and subset.data.params["policy.0.n"] == "20"
    assert subset.data.tags["mlflow.parentRunId"] == entry.info.run_id
    assert int(subset.data.params["manifest.num_samples"]) == 20 * int(subset.data.params["manifest.num_classes"])

    _, output = mlflow_run(clone, tmp_path, env, "-e", "transfer", "-P", f"run_id={entry.info.run_id}", "-P", "tasks=knn")  # the asking run's id
    assert f"pretraining run {subset.info.run_id}" in output
    assert "transfer.knn.synthetic_heldout.test_top1" in tracking.run_metrics(client.get_run(subset.info.run_id))
