"""Targets with policies: the `subset` source (`SOURCE | POLICY ...`), its splits, labels, tree, pixels, label and seed."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from stores import pretrained_store
from tiny_specs import SOURCE, TINY
from transferlab import get_registry, make_manifest, metric_names, pipeline, policies, source, tracking
from transferlab.cli import cli
from transferlab.data_index import split_code
from transferlab.errors import SpecError
from transferlab.image_cache import cache_path, image_cache
from transferlab.subset_source import SubsetSource, with_seed

pytest_plugins = ["mlflow_store"]  # fixture: empty_store
BASE_LABEL = "synthetic_branching_2_2_2_test5_train20_val5"  # SOURCE's own metric label: 4 classes, 20/5/5 images each
TARGET_B = f"{SOURCE} | split(part='B')"


def base_rows(target: SubsetSource, split: str) -> np.ndarray:
    """The base source's sample indices of one split of the target."""
    return target.rows[target.index.split_samples(split)]


def test_split_B_keeps_the_classes_of_half_B_with_every_split_and_the_manifest_labels():
    base, target = source(SOURCE), source(TARGET_B)
    assert isinstance(target, SubsetSource) and target.base == base
    manifest = make_manifest(base, policies("split(part='B')"))
    assert target.index.classes == manifest.classes and target.index.num_classes == 2
    assert [len(target.index.split_samples(s)) for s in ("train", "val", "test")] == [40, 10, 10]
    assert base_rows(target, "train").tolist() == manifest.samples.tolist()
    assert target.index.labels[target.index.split_samples("train")].tolist() == manifest.labels.tolist()
    for split in ("val", "test"):
        rows = base_rows(target, split)
        assert (base.index.splits[rows] == split_code(split)).all()
        wanted = np.flatnonzero((base.index.splits == split_code(split)) & (manifest.class_map[base.index.labels] >= 0))
        assert rows.tolist() == wanted.tolist()  # every val/test image of a kept class, none other
        assert target.index.labels[target.index.split_samples(split)].tolist() == manifest.class_map[base.index.labels[rows]].tolist()
    assert target.tree.num_classes == 2 and set(target.tree.nodes) < set(base.tree.nodes)  # the base's tree, cut down
    assert [target.tree.nodes[n] for n in target.tree.class_nodes] == list(manifest.classes)


def test_coarsen_keeps_every_image_under_two_merged_classes():
    base, target = source(SOURCE), source(f"{SOURCE} | coarsen(k=2)")
    assert target.index.classes == ("circle", "square") and len(target.index) == len(base.index) == 120
    assert target.rows.tolist() == list(range(120))
    assert target.index.class_counts("train").tolist() == [40, 40] and target.index.class_counts("test").tolist() == [10, 10]
    shapes = [base.index.classes[c].split("/")[0] for c in base.index.labels]
    assert [target.index.classes[c] for c in target.index.labels] == shapes
    assert target.tree.nodes == ("/", "circle", "square")


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("how", ["random", "min_overlap"])
def test_half_B_is_the_complement_of_the_pretraining_half_A_with_the_same_seed(seed, how):
    base = source("synthetic(branching=[3, 2, 3], train=4, val=1, test=1)")  # 12 pretraining classes
    pretraining = make_manifest(base, policies(f"split(part='A', how={how!r})"), seed)
    target = source(with_seed(f"{base.spec()} | split(part='B', how={how!r})", seed))
    assert target.seed == seed and target.manifest.seed == seed
    a, b = set(pretraining.classes), set(target.index.classes)
    assert not a & b and a | b == set(base.index.classes)
    assert not set(base.index.labels[target.rows]) & set(np.flatnonzero(pretraining.class_map >= 0))


PRETRAIN_AND_TARGET = [  # (pretraining chain, target chain), one pair per built-in policy that selects classes
    ("split(part='A')", "split(part='B')"),
    ("split(part='A', how='min_overlap')", "split(part='B', how='min_overlap')"),
    ("random_classes(k=2)", "random_classes(k=2)"),
    ("coarsen(k=2)", "coarsen(k=2)"),
    ("exclude(classes=[0])", "exclude(classes=[0])"),
    ("all", "exclude(classes=['circle/red/solid']) | split(part='B')"),
]


@pytest.mark.parametrize("pretrain_chain, target_chain", PRETRAIN_AND_TARGET)
@pytest.mark.parametrize("seed", [0, 3])
def test_the_targets_test_images_are_never_in_the_pretraining_subset(pretrain_chain, target_chain, seed):
    base = source(SOURCE)
    pretraining = make_manifest(base, policies(pretrain_chain), seed)
    target = source(with_seed(f"{SOURCE} | {target_chain}", seed))
    test, val = base_rows(target, "test"), base_rows(target, "val")
    assert len(test) and len(val)
    assert not np.isin(test, pretraining.samples).any() and not np.isin(val, pretraining.samples).any()
    assert (base.index.splits[test] == split_code("test")).all()
    pretrain_rows = np.concatenate([pretraining.samples, pretraining.split(base.index, "val")[0]])  # what pretraining decodes
    assert not np.isin(test, pretrain_rows).any()
    assert base_rows(target, "train").tolist() == make_manifest(base, policies(target_chain), seed).samples.tolist()


def test_pixels_come_from_the_base_rows_and_the_image_cache_holds_them():
    base, target = source(SOURCE), source(TARGET_B)
    rows = np.array([0, 17, len(target.index) - 1])
    assert (target.load(rows) == base.load(target.rows[rows])).all()
    assert (target.load(rows, size=8) == base.load(target.rows[rows], size=8)).all()
    cached = image_cache(target, 16)
    assert cached.shape == (60, 16, 16, 3) and (cached == base.load(target.rows, size=16)).all()
    assert cache_path(target, 16) != cache_path(base, 16)
    assert cache_path(source(f"{SOURCE} | split(part='A')"), 16) != cache_path(target, 16)  # other rows, other pixels
    again = source(TARGET_B)
    assert len(again.index) == 60 and again.pixels_key == target.pixels_key
    again.__dict__["base"] = None  # decoding again would have to read the base: the cache must answer alone
    assert (image_cache(again, 16) == cached).all()


def test_the_sugar_is_the_canonical_subset_spec_and_round_trips():
    sugar = source(f"{SOURCE} | random_classes(k=3) | images_per_class(n=10)")
    spelled = source(f"subset(source={SOURCE!r}, policy='random_classes(3) | images_per_class(10)', seed=0)")
    assert sugar == spelled and sugar.spec() == spelled.spec() and sugar.fingerprint == spelled.fingerprint
    assert sugar.source == source(SOURCE).spec() and sugar.policy == "random_classes(k=3) | images_per_class(n=10, take='exact')"
    assert source(sugar.spec()) == sugar
    assert get_registry().parse("source", TARGET_B) == source(TARGET_B)
    nested = source(f"{source(TARGET_B).spec()} | images_per_class(n=5)")  # a subset of a subset
    assert isinstance(nested.base, SubsetSource) and nested.index.class_counts("train").tolist() == [5, 5]
    assert len(sugar.index.split_samples("train")) == 30 and len(sugar.index.split_samples("test")) == 15


def test_with_seed_sets_the_seed_of_a_subset_and_leaves_other_sources_alone():
    assert with_seed(TARGET_B, 5) == source(TARGET_B).spec().replace("seed=0, source=", "seed=5, source=")
    assert source(with_seed(with_seed(TARGET_B, 5), 0)) == source(TARGET_B)
    assert with_seed(SOURCE, 5) == source(SOURCE).spec()
    with pytest.raises(SpecError, match="seed must be a whole number"):
        with_seed(TARGET_B, -1)


@pytest.mark.parametrize("spec, message", [
    ("synthetic | nope", "unknown policy 'nope'"),
    ("nope | split(part='B')", "unknown source 'nope'"),
    ("synthetic | split(part='C')", "parameter 'part' expects 'A'|'B'"),
    ("synthetic(bogus=1) | all", "source 'synthetic' has no parameter 'bogus'"),
    ("synthetic | split(part='B'", "malformed spec"),
    ("subset(source='synthetic', policy='split(part=B)')", "is not a Python literal"),
    ("subset(source='synthetic', policy='all', seed=-1)", "seed must be a whole number"),
])
def test_mistakes_in_either_part_keep_their_own_messages(spec, message):
    with pytest.raises(SpecError, match=None) as info:
        source(spec)
    assert message in str(info.value)


def test_the_metric_label_names_the_base_and_the_chain_but_not_the_seed():
    assert metric_names.source_label(source(TARGET_B)) == f"{BASE_LABEL}_split_part_B"
    assert metric_names.source_label(source(with_seed(TARGET_B, 9))) == f"{BASE_LABEL}_split_part_B"
    assert metric_names.source_label(source("synthetic | coarsen(k=4)")) == "synthetic_coarsen_k4"
    chain = "images_per_class(n=15, take='available') | " * 3 + "split(part='B')"
    long = [source(with_seed(f"{SOURCE} | {chain}", s)) for s in (0, 1)]
    labels = {metric_names.source_label(t) for t in long}
    assert len(labels) == 1 and len(labels.pop()) <= metric_names.LABEL_CHARS  # bounded, and still one name for every seed


def test_the_fingerprint_is_the_data_not_the_spelling():
    target = source(TARGET_B)
    assert target.fingerprint == source(f"{SOURCE} | split(part='B') | all").fingerprint  # same rows, labels and classes
    seeds = [source(with_seed(TARGET_B, s)) for s in range(1, 9)]
    assert {t.fingerprint for t in seeds if t.index.classes == target.index.classes} == {target.fingerprint}  # same half B
    others = {t.fingerprint for t in seeds if t.index.classes != target.index.classes}  # the other half B
    assert others and target.fingerprint not in others
    assert target.fingerprint != source(f"{SOURCE} | split(part='A')").fingerprint
    assert target.fingerprint != source(TARGET_B.replace("train=20", "train=19")).fingerprint


def test_the_cli_reads_the_sugar_as_a_source():
    result = CliRunner().invoke(cli, ["subset", "--source", "synthetic | random_classes(k=4)", "--policy", "images_per_class(n=7)", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["num_classes"] == 4 and summary["num_samples"] == 28 and summary["source"].startswith("subset(policy='random_classes(k=4)'")
    failed = CliRunner().invoke(cli, ["subset", "--source", "synthetic | nope"])
    assert failed.exit_code == 2 and failed.stderr.startswith("Error: unknown policy 'nope'") and len(failed.stderr.splitlines()) == 1


@pytest.fixture(scope="module")
def pretrained(empty_store, tmp_path_factory):
    """A tiny finished pretraining run on SOURCE half A in its own store: (tracking URI, run id)."""
    return pretrained_store(empty_store, tmp_path_factory.mktemp("pretrained"), "targets", **(TINY | {"policy": "split(part='A')"}))


@pytest.fixture
def shared(pretrained, monkeypatch):
    uri, run_id = pretrained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return run_id


def test_a_transfer_run_measures_half_B(shared):
    metrics = pipeline.transfer_run(shared, "synthetic(branching=[2,2,2], train=20, val=5, test=5) | split(part='B')", "knn")
    prefix = f"transfer.knn.{BASE_LABEL}_split_part_B."
    assert set(metrics) == {prefix + m for m in ("test_top1", "test_mean_class_acc", "val_top1")}
    assert 0 <= metrics[prefix + "test_top1"] <= 100
    run = MlflowClient().get_run(shared)
    child = MlflowClient().search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{shared}'")[0]
    assert child.data.params["target"] == source(TARGET_B).spec() and child.data.params["target.seed"] == "0"
    assert tracking.run_metrics(run)[prefix + "test_top1"] == metrics[prefix + "test_top1"]
    assert pipeline.transfer_run(shared, TARGET_B, "knn") == metrics  # reused


def test_digits_is_a_transfer_target(shared):
    metrics = pipeline.transfer_run(shared, "digits", "knn")
    assert set(metrics) == {f"transfer.knn.digits.{m}" for m in ("test_top1", "test_mean_class_acc", "val_top1")}
    assert 10 < metrics["transfer.knn.digits.test_top1"] <= 100  # above chance even from a tiny network
