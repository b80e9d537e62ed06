"""`transferlab tree` and `transferlab classes`: class trees and class mappings without images."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from transferlab.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_tree_prints_levels_with_class_counts_and_writes_an_image(tmp_path):
    out = invoke("tree", "--source", "synthetic(train=2, val=0, test=0)", "--depth", "1", "--out", str(tmp_path / "t.png"))
    assert out.exit_code == 0, out.output
    assert "synthetic (/, 64 classes)" in out.output and "circle (circle, 16 classes)" in out.output
    assert "circle/red" not in out.output  # below --depth
    full = invoke("tree", "--source", "synthetic(train=3, val=1, test=1)")
    assert "stripes (circle/red/stripes, 5 images)" in full.output and full.output.count(" 5 images)") == 64  # every split counts
    with Image.open(tmp_path / "t.png") as image:
        assert image.width > 1000 and image.height > 100


def test_tree_and_classes_need_exactly_one_of_classes_or_source():
    out = invoke("tree")
    assert out.exit_code == 2 and "exactly one of --classes" in out.output


def test_classes_maps_synthetic_leaves_through_a_policy():
    out = invoke("classes", "--source", "synthetic(train=2, val=0, test=0)", "--policy", "exclude(classes=['circle/red/solid'])", "--json")
    data = json.loads(out.output)
    assert data["num_classes"] == 63 and len(data["mapping"]) == 63
    assert "circle/red/solid" not in data["mapping"] and data["mapping"]["star/lime/dots"] == "star/lime/dots"


@pytest.mark.usefixtures("loaded_wordnet")
def test_imagenet_top_down_127_mapping_without_images():
    out = invoke("classes", "--classes", "imagenet-1k", "--policy", "wordnet_level(classes=127, method='top_down')", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["num_classes"] == 127 and len(data["mapping"]) == 1000
    groups = {}
    for new in data["mapping"].values():
        groups[new] = groups.get(new, 0) + 1
    largest = sorted(groups.items(), key=lambda kv: -kv[1])[:3]
    assert [(data["names"][wnid], n) for wnid, n in largest] == [("mammal", 218), ("device", 124), ("container", 92)]
    assert data["names"]["n01440764"] == "tench"
    table = invoke("classes", "--classes", "imagenet-1k", "--policy", "wordnet_level(classes=127, method='top_down')")
    assert "1000 → 127 classes" in table.output and "218" in table.output


@pytest.mark.usefixtures("loaded_wordnet")
def test_imagenet_tree_follows_first_hypernyms(tmp_path):
    out = invoke("tree", "--classes", "imagenet-1k", "--depth", "4", "--out", str(tmp_path / "in1k.png"))
    assert out.exit_code == 0, out.output
    assert "entity (n00001740, 1000 classes)" in out.output
    assert "artifact (n00021939, 522 classes)" in out.output and "living thing (n00004258, 407 classes)" in out.output
    assert " image)" not in out.output and " images)" not in out.output  # a class list has no images to count
    assert "(n09443453, 1 class)" in out.output
    assert (tmp_path / "in1k.png").stat().st_size > 10_000
