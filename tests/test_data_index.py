"""DataIndex arrays, validation, persistence; Subset sample selection; ClassTree constructions and queries."""

import dataclasses

import numpy as np
import pytest

from conftest import make_index
from transferlab import ClassTree, DataError, DataIndex
from transferlab.errors import PolicyError
from transferlab.subset import Subset


def test_index_counts_splits_and_round_trip(tmp_path):
    index = make_index([4, 6, 5], val=2, test=1)
    assert len(index) == 15 + 6 + 3
    assert index.class_counts("train").tolist() == [4, 6, 5]
    assert index.class_counts("val").tolist() == [2, 2, 2]
    assert (index.splits[index.split_samples("test")] == 2).all()
    index.save(tmp_path / "index.npz")
    again = DataIndex.load(tmp_path / "index.npz")
    assert again.fingerprint() == index.fingerprint()
    assert again.labels.dtype == np.int32 and again.classes == index.classes


def test_index_with_files_resolves_paths(tmp_path):
    files = np.array([b"a.jpg", b"b.jpg", b"c.png"])
    index = DataIndex(np.array([0, 0, 1]), np.zeros(3), ("cat", "dog"), ("cat", "dog"), files, np.array([0, 0, 1]), ("train/cat", "train/dog"))
    assert [index.path(i) for i in range(3)] == ["train/cat/a.jpg", "train/cat/b.jpg", "train/dog/c.png"]
    index.save(tmp_path / "i.npz")
    assert DataIndex.load(tmp_path / "i.npz").path(2) == "train/dog/c.png"
    with pytest.raises(DataError, match="no files"):
        make_index([1]).path(0)


def test_fingerprint_changes_with_content():
    assert make_index([4, 6]).fingerprint() != make_index([4, 7]).fingerprint()
    assert make_index([4, 6]).fingerprint() == make_index([4, 6]).fingerprint()


def test_content_digest_is_saved_and_part_of_the_fingerprint(tmp_path):
    index = make_index([4, 6])
    stamped = dataclasses.replace(index, content="abc123")
    assert index.content == "" and stamped.fingerprint() != index.fingerprint()
    assert dataclasses.replace(index, content="abc124").fingerprint() != stamped.fingerprint()
    stamped.save(tmp_path / "index.npz")
    again = DataIndex.load(tmp_path / "index.npz")
    assert again.content == "abc123" and again.fingerprint() == stamped.fingerprint()


def test_keep_samples_refuses_samples_the_subset_does_not_keep():
    index = make_index([3, 3], val=2, test=1)  # train rows 0-5, val 6-9, test 10-11
    subset = Subset.full(index)
    assert subset.keep_samples(np.array([4, 0])).samples.tolist() == [0, 4]
    with pytest.raises(PolicyError, match="3 samples the subset does not keep .* such as 6, 7, 10"):
        subset.keep_samples(np.flatnonzero(index.labels == 0))  # class 0 of every split: val and test rows leak
    dropped = subset.keep_classes([1])
    with pytest.raises(PolicyError, match="such as 0, 1, 2"):
        dropped.keep_samples(np.arange(6))  # class 0 was dropped: its rows would get label -1
    with pytest.raises(PolicyError, match="twice"):
        subset.keep_samples(np.array([1, 1]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=np.array([0, 2]), splits=np.zeros(2)), "labels must lie in"),
    (dict(labels=np.array([0, 1]), splits=np.zeros(3)), "split codes"),
    (dict(labels=np.array([0, 1]), splits=np.array([0, 3])), "split codes must lie"),
])
def test_index_rejects_inconsistent_arrays(kwargs, message):
    with pytest.raises(DataError, match=message):
        DataIndex(classes=("a", "b"), class_names=("a", "b"), **kwargs)


def test_index_of_imagenet_size_is_small():
    n = 1_281_167
    labels = np.repeat(np.arange(1000), n // 1000 + 1)[:n]
    files = np.array([f"n01440764_{i}.JPEG".encode() for i in range(n)])
    index = DataIndex(labels, np.zeros(n), tuple(f"n{c:08d}" for c in range(1000)), tuple(map(str, range(1000))), files, labels, tuple(f"train/n{c:08d}" for c in range(1000)))
    assert index.nbytes < 50e6


def test_tree_from_paths_has_levels_and_subtrees():
    tree = ClassTree.from_paths([("animal", "cat"), ("animal", "dog"), ("vehicle", "car"), ("vehicle", "boat", "canoe")])
    assert tree.num_classes == 4 and tree.height == 3
    assert tree.nodes[0] == "/" and tree.names[0] == "root" and tree.names[tree.node("vehicle/boat/canoe")] == "canoe"
    assert tree.classes_under(tree.node("animal")).tolist() == [0, 1]
    assert tree.classes_under(tree.node("vehicle")).tolist() == [2, 3]
    assert [tree.nodes[a] for a in tree.ancestors(int(tree.class_nodes[3]))] == ["vehicle/boat", "vehicle", "/"]
    assert tree.depths[tree.class_nodes].tolist() == [2, 2, 2, 3]


def test_tree_from_parents_and_coarse_labels():
    tree = ClassTree.from_parents({"cat": "mammal", "dog": "mammal", "mammal": "animal", "trout": "animal"}, ["cat", "dog", "trout"])
    assert tree.nodes[0] == "animal" and tree.height == 2
    coarse = ClassTree.from_coarse_labels(["apple", "pear", "bus"], [0, 0, 1], ["fruit", "vehicle"])
    assert coarse.classes_under(coarse.node("coarse/fruit")).tolist() == [0, 1]
    assert coarse.names[coarse.node("coarse/vehicle")] == "vehicle"
    flat = ClassTree.flat(["a", "b"], root="src")
    assert flat.height == 1 and flat.nodes == ("/", "a", "b") and flat.names[0] == "src"
    clash = ClassTree.from_paths([("root", "a"), ("/x",)])  # folder names never collide with the root id
    assert clash.num_classes == 2 and clash.height == 2


def test_tree_rejects_inner_classes_and_cycles():
    with pytest.raises(DataError, match="must be leaves"):
        ClassTree.from_parents({"cat": "animal", "animal": None}, ["cat", "animal"])
    with pytest.raises(DataError, match="cycle"):
        ClassTree.from_parents({"a": "b", "b": "a", "c": None}, ["c"])
    assert ClassTree.from_paths([("x", "y")]).fingerprint() != ClassTree.from_paths([("x", "z")]).fingerprint()
