"""docs/plugins.md's examples, run: each code block is installed as its own entry-point distribution and driven by the CLI."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab import plugins, tracking

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r'^```(\w+)(?: title="([^"]+)")?\n(.*?)^```$', re.MULTILINE | re.DOTALL)
CLASSES = {"animal/cat": (220, 40, 40), "animal/dog": (40, 200, 40), "plant": (40, 40, 220)}  # label → colour of its images
PER_CLASS = 10
SYNTHETIC = "synthetic(branching=[2, 2], heldout=0, train=12, val=2, test=2)"  # 4 classes × 12 training images


def blocks() -> dict[str, tuple[str, str]]:
    """(language, code) of every titled code block of the doc, by title."""
    return {title: (lang, code) for lang, title, code in BLOCK.findall(DOC.read_text()) if title}


def examples() -> dict[str, str]:
    """The Python examples: module name → code."""
    return {Path(title).stem: code for title, (lang, code) in blocks().items() if lang == "python"}


def install(site: Path, module: str, code: str) -> None:
    """Lay out `module` as pip would install it from the doc's pyproject.toml with its names: module and dist-info."""
    project = tomllib.loads(blocks()["pyproject.toml"][1].replace(project_name(), module))["project"]
    (site / f"{module}.py").write_text(code)
    info = site / f"{project['name']}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entries = "".join(f"{name} = {target}\n" for name, target in project["entry-points"]["transferlab"].items())
    (info / "entry_points.txt").write_text(f"[transferlab]\n{entries}")


def project_name() -> str:
    """The distribution name of the doc's pyproject.toml (one of the examples)."""
    return tomllib.loads(blocks()["pyproject.toml"][1])["project"]["name"]


@pytest.fixture
def site(tmp_path) -> Path:
    """Every example of the doc installed as its own distribution in one site folder."""
    site = tmp_path / "site"
    site.mkdir()
    for module, code in examples().items():
        install(site, module, code)
    return site


def cli(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`transferlab ARGS` in a subprocess that sees the examples, only them of third-party plugins allowed."""
    env = os.environ | {"COLUMNS": "250", "PYTHONPATH": os.pathsep.join([str(site), *sys.path]), "TRANSFERLAB_PLUGINS": ",".join(examples())}
    return subprocess.run([sys.executable, "-m", "transferlab", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def ok(done: subprocess.CompletedProcess) -> str:
    """stdout of a command that must succeed."""
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def pictures(tmp_path) -> Path:
    """A csv_images root: PER_CLASS small PNGs per class, each filled with its class's colour, listed in labels.csv."""
    root = tmp_path / "pictures"
    root.mkdir()
    rows = []
    for c, (label, colour) in enumerate(CLASSES.items()):
        for i in range(PER_CLASS):
            name = f"{c}-{i}.png"
            Image.new("RGB", (12 + i, 10), colour).save(root / name)
            rows.append(f"{name},{label}\n")
    (root / "labels.csv").write_text("".join(rows))
    return root


def test_every_code_block_is_an_example_that_is_run():
    langs = [lang for lang, _, _ in BLOCK.findall(DOC.read_text())]
    titled = blocks()
    assert langs.count("python") == len(examples()) >= 6, "every Python block has a title naming its module"
    assert set(examples()) == {"csv_images", "thin", "small_cnn", "centroid", "caps", "class_count"}  # each one tested below
    assert project_name() in examples() and titled["pyproject.toml"][0] == "toml"
    for module, code in examples().items():
        compile(code, f"{module}.py", "exec")
        imported = re.findall(r"^\s*(?:from|import) (\S+)", code, re.MULTILINE)
        assert all(m.split(".")[0] in {"transferlab", "csv", "dataclasses", "json", "os", "functools", "numpy", "torch"} for m in imported), imported


def test_the_examples_register_one_component_each_kind(site):
    rows = {(r["kind"], r["name"]): r for r in json.loads(ok(cli(site, "plugins", "--json")))}
    expected = {("source", "csv_images"): "csv_images", ("policy", "thin"): "thin", ("policy", "min_images"): "thin",
                ("backbone", "small_cnn"): "small_cnn", ("task", "centroid"): "centroid", ("study", "image_caps"): "caps",
                ("space", "class_count"): "class_count"}
    assert {key: rows[key]["plugin"] for key in expected} == expected
    assert rows[("policy", "thin")]["signature"] == "thin(fraction: float)"
    assert rows[("source", "csv_images")]["doc"].startswith("Images listed in root/labels.csv")


def test_source_example_index_tree_pixels_and_identity(site, pictures, tmp_path, monkeypatch):
    spec = f"csv_images(root={str(pictures)!r})"
    summary = json.loads(ok(cli(site, "subset", "--source", spec, "--json")))
    assert summary["num_classes"] == 3 and [c["count"] for c in summary["classes"]] == [8, 8, 8]  # 2 of 10 per class held out as test
    assert [c["name"] for c in summary["classes"]] == ["cat", "dog", "plant"]
    tree = ok(cli(site, "tree", "--source", spec))
    assert "animal" in tree and "cat" in tree and "plant" in tree
    moved = tmp_path / "elsewhere"
    shutil.copytree(pictures, moved)  # copy2 keeps sizes and mtimes: the same content digest
    again = json.loads(ok(cli(site, "subset", "--source", f"csv_images(root={str(moved)!r})", "--json")))
    assert again["digest"] == summary["digest"]  # the root is a location parameter: not part of the fingerprint
    held = json.loads(ok(cli(site, "subset", "--source", f"csv_images(root={str(pictures)!r}, test_fraction=0.5)", "--json")))
    assert held["num_samples"] == 15 and held["digest"] != summary["digest"]
    missing = cli(site, "subset", "--source", f"csv_images(root={str(tmp_path / 'none')!r})")
    assert missing.returncode == 2 and "does not exist; it should hold labels.csv" in missing.stderr and "Traceback" not in missing.stderr
    folders = {f["folder"]: f for f in json.loads(ok(cli(site, "cache", "--json")))["folders"]}
    assert folders["csv_images_rows"]["holds"] == "labels.csv files read by csv_images (plugin csv_images)"
    assert folders["csv_images_rows"]["files"] == 2  # one per labels.csv path: pictures (both fractions) and its copy
    assert "cleared csv_images_rows: 2 files" in ok(cli(site, "cache", "--clear", "csv_images_rows"))
    assert json.loads(ok(cli(site, "subset", "--source", spec, "--json")))["digest"] == summary["digest"]  # rebuilt on demand

    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    import transferlab

    source = transferlab.source(spec)
    pixels = source.load(np.array([0, 10, 29]), 8)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 8, 8, 3)
    assert [tuple(p[4, 4]) for p in pixels] == list(CLASSES.values())
    assert source.tree.nodes[source.tree.parents[source.tree.class_nodes[0]]] == "animal"
    assert source.pixels_key == transferlab.source(f"csv_images(root={str(moved)!r})").pixels_key != source.fingerprint
    assert transferlab.source(f"csv_images(root={str(pictures)!r}, test_fraction=0.5)").pixels_key == source.pixels_key  # one image cache


def test_policy_example_changes_the_manifest(site, monkeypatch):
    source = SYNTHETIC
    half = json.loads(ok(cli(site, "subset", "--source", source, "--policy", "thin(fraction=0.5)", "--json")))
    assert half["num_samples"] == 24 and {c["count"] for c in half["classes"]} == {6}
    assert half["policy"] == "thin(fraction=0.5)"
    chained = json.loads(ok(cli(site, "subset", "--source", source, "--policy", "images_per_class(n=3) | min_images(n=3)", "--json")))
    assert chained["num_classes"] == 4 and chained["num_samples"] == 12
    bad = cli(site, "subset", "--source", source, "--policy", "thin(fraction=2)")
    assert bad.returncode == 2 and "thin: fraction must lie in (0, 1], got 2.0" in bad.stderr
    none = cli(site, "subset", "--source", source, "--policy", "images_per_class(n=3) | min_images(n=4)")
    assert none.returncode == 2 and "min_images: no class has 4 images; the largest has 3" in none.stderr

    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    import transferlab

    quarter, most = (transferlab.select(source, f"thin(fraction={f})", seed=3) for f in (0.25, 0.75))
    assert len(quarter.samples) == 12 and set(quarter.samples) < set(most.samples)  # nested: seeded keys, not random draws
    dropped = transferlab.select(source, "images_per_class(n=5) | min_images(n=5)")
    assert dropped.num_classes == 4


def test_backbone_task_and_source_examples_in_one_run(site, pictures, store, tmp_path):
    root = f"csv_images(root={str(pictures)!r})"
    done = cli(site, "run", "--source", root, "--policy", "thin(fraction=0.5)", "--backbone", "small_cnn(width=8)",
               "--training", "train(steps=2, batch_size=8, resolution=16)", "--target", root, "--tasks", "centroid", "--experiment", "docs",
               cwd=tmp_path)
    ok(done)
    client = tracking.client()
    runs = {r.data.tags[tracking.KIND]: r for r in client.search_runs([client.get_experiment_by_name("docs").experiment_id])}
    pretrain, transfer = runs["pretrain"], runs["transfer"]
    assert pretrain.data.params["backbone"] == "small_cnn(width=8)" and pretrain.data.params["manifest.num_samples"] == "12"
    assert pretrain.data.params["source.root"] == repr(str(pictures))
    metric = f"transfer.centroid.csv_images_{pictures.name}.test_top1"
    assert 0 <= tracking.run_metrics(transfer)[metric] <= 100
    assert metric in tracking.run_metrics(pretrain)


def test_task_example_precondition_and_api_version(site, pictures, store, tmp_path, monkeypatch):
    single = tmp_path / "single"
    shutil.copytree(pictures, single)
    (single / "labels.csv").write_text("".join(line + "\n" for line in (pictures / "labels.csv").read_text().splitlines() if "cat" in line))
    target = f"csv_images(root={str(single)!r})"
    refused = cli(site, "run", "--source", SYNTHETIC, "--backbone", "small_cnn(width=8)", "--training", "train(steps=2, batch_size=8, resolution=16)",
                  "--target", target, "--tasks", "centroid", "--experiment", "docs", cwd=tmp_path)  # checked before any run
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.strip() == f"Error: centroid: target {target[:-1]}, test_fraction=0.2, val_fraction=0.0) has 1 class; nearest class mean needs two or more"
    client = tracking.client()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []

    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    import centroid

    import transferlab

    assert centroid.TRANSFERLAB_API == transferlab.API_VERSION == "1.0"
    (site / "centroid.py").write_text(examples()["centroid"].replace('TRANSFERLAB_API = "1.0"', 'TRANSFERLAB_API = "2.0"'))
    newer = cli(site, "plugins")
    assert newer.returncode == 2 and newer.stderr.strip() == ("Error: plugin 'centroid' (distribution centroid) needs transferlab plugin API 2.0, "
                                                              "but this transferlab provides API 1.0: upgrade transferlab, or leave the plugin out "
                                                              "with TRANSFERLAB_PLUGINS")


def test_study_example_dry_run_lists_its_cells(site, monkeypatch):
    out = ok(cli(site, "study", "image_caps(caps=[6, 3])", "--source", SYNTHETIC,
                 "--target", "synthetic(branching=[2, 2], part='heldout', train=12, val=2, test=2)", "--dry-run"))
    for label in ("random init", "6 per class", "3 per class", "full source"):
        assert label in out
    assert "images_per_class(n=3, take='available')" in out

    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    import transferlab

    with pytest.raises(transferlab.SpecError, match=re.escape("image_caps: caps must be at least one count >= 1, got []")):
        transferlab.get_registry().parse("study", "image_caps(caps=[])")
    study = transferlab.get_registry().parse("study", "image_caps")
    cells = study.checked_cells(transferlab.source(SYNTHETIC), "synthetic(part='heldout')")
    assert [(c.label, c.role, c.value) for c in cells] == [("random init", "floor", None), ("8 per class", "cell", 8),
                                                           ("4 per class", "cell", 4), ("full source", "full", None)]
    assert {c.targets for c in cells} == {(transferlab.source("synthetic(part='heldout')").spec(),)}


def test_search_space_example(site, tmp_path, monkeypatch):
    source = SYNTHETIC
    args = ["search", "--source", source, "--target", "synthetic(branching=[2, 2], part='heldout', train=12, val=2, test=2)",
            "--space", "class_count", "--budget", "24", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--dry-run"]
    out = ok(cli(site, *args, cwd=tmp_path))
    assert "2..4" in out and "k random classes × 24/k images each" in out

    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    import optuna

    import transferlab

    space = transferlab.get_registry().parse("space", "class_count")
    ctx = transferlab.SpaceContext(transferlab.source(source), 24, transferlab.Training())
    allocation = space.suggest(optuna.trial.FixedTrial({"classes": 3}), ctx)
    assert allocation.values == {"classes": 3, "images per class": 8}
    assert len(transferlab.select(source, allocation.policy).samples) == 24
