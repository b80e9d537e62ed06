"""Real file sources on small files written in the real formats: ImageFolder (+ its index cache), MNIST, Fashion-MNIST."""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from PIL import Image

from crafted_images import pixelless_files
from transferlab import pipeline
from transferlab.cli import cli
from transferlab.errors import DataError, SpecError
from transferlab.image_cache import cache_path, image_cache
from transferlab.images import decode_image
from transferlab.manifest import Manifest
from transferlab_sources.idx import MNIST, FashionMNIST
from transferlab_sources.image_folder import ImageFolder, duplicates_of

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
OLD_NS = 1_600_000_000 * 10**9  # a fixed past mtime, so that any later change to a folder shows


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A private transferlab cache per test."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_image(path: Path, color=RED, size=(12, 10)) -> Path:
    """A solid-colour image in the format its suffix names, its path written into PNG and JPEG files (as a text chunk or
    comment) so that no two files are byte-identical copies, which an index keeps once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image, tag = Image.new("RGB", size, color), str(path).encode("utf-8", "surrogateescape")
    if path.suffix.lower() == ".png":
        info = PIL.PngImagePlugin.PngInfo()
        info.add_text("path", tag.decode("latin-1"))
        image.save(path, pnginfo=info)
    elif path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, comment=tag)
    else:
        image.save(path)
    return path


def make_tree(root: Path, counts: dict[str, int], suffix=".png") -> Path:
    """`counts[folder]` solid images in each folder (folders may be nested, e.g. 'animal/cat')."""
    for folder, n in counts.items():
        for i in range(n):
            write_image(root / folder / f"img{i:03d}{suffix}")
    return root


def age_folders(root: Path) -> None:
    """Set every folder's mtime to a fixed past time."""
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, ns=(OLD_NS, OLD_NS))


def counts_by_name(index, split=None) -> dict[str, int]:
    """Samples per class id, in one split or overall."""
    return dict(zip(index.classes, index.class_counts(split).tolist()))


# ImageFolder layouts

def test_flat_folders_are_classes_and_other_files_are_ignored(tmp_path):
    root = make_tree(tmp_path / "data", {"cat": 4, "dog": 3, "eel": 2})
    write_image(root / "dog" / "UPPER.JPG")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    src = ImageFolder(str(root), val_fraction=0.0)
    assert src.index.classes == ("cat", "dog", "eel") == src.index.class_names
    assert counts_by_name(src.index, "train") == {"cat": 4, "dog": 4, "eel": 2}
    assert src.index.path(4) == "dog/UPPER.JPG" and src.index.path(0) == "cat/img000.png"
    assert src.index.files.dtype.kind == "S" and src.index.folders == ("cat", "dog", "eel")
    assert src.tree.height == 1 and src.tree.num_classes == 3


def test_nested_folders_make_a_class_tree(tmp_path):
    root = make_tree(tmp_path / "data", {"animal/cat": 2, "animal/dog": 3, "vehicle/car": 1, "vehicle/boat/sail": 2})
    src = ImageFolder(str(root), val_fraction=0.0)
    assert src.index.classes == ("animal/cat", "animal/dog", "vehicle/boat/sail", "vehicle/car")
    assert src.index.class_names == ("cat", "dog", "sail", "car")
    assert src.index.class_counts().tolist() == [2, 3, 2, 1]
    tree = src.tree
    assert tree.height == 3
    assert tree.names[tree.node("vehicle/boat")] == "boat"
    assert tree.classes_under(tree.node("vehicle")).tolist() == [2, 3]
    assert tree.classes_under(tree.node("animal")).tolist() == [0, 1]


def test_an_inner_folders_own_images_form_a_class_under_it_or_are_skipped_or_refused(tmp_path):
    root = make_tree(tmp_path / "data", {"animal": 1, "animal/cat": 2, "animal/bird": 3, "animal/bird/owl": 1, "plant": 1})
    src = ImageFolder(str(root))  # as Debian's openclipart-png: 40 folders hold clip art beside their subfolders
    assert src.index.classes == ("animal/(own)", "animal/bird/(own)", "animal/bird/owl", "animal/cat", "plant")
    assert src.index.class_names == ("animal", "bird", "owl", "cat", "plant")
    assert counts_by_name(src.index) == {"animal/(own)": 1, "animal/bird/(own)": 3, "animal/bird/owl": 1, "animal/cat": 2, "plant": 1}
    assert [len(src.tree.children[src.tree.node(node)]) for node in ("animal", "animal/bird")] == [3, 2]
    skipped = ImageFolder(str(root), mixed="skip")
    assert skipped.index.classes == ("animal/bird/owl", "animal/cat", "plant") and len(skipped.index) == 4
    assert src.fingerprint != skipped.fingerprint and "mixed" in src.data_params()
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="both images and subfolders: animal, animal/bird .*mixed='class'") as err:
        ImageFolder(str(root), mixed="error").index
    assert "without any image file: empty" in str(err.value)
    with pytest.raises(SpecError, match="parameter 'mixed' expects 'class'|'skip'|'error', got 'own'"):
        ImageFolder(str(root), mixed="own")


def test_images_in_the_top_folder_are_refused_unless_skipped_and_a_plain_tree_keeps_its_fingerprint(tmp_path):
    root = make_tree(tmp_path / "data", {"cat": 2, "dog": 2})
    plain = ImageFolder(str(root))
    assert "mixed" not in plain.data_params()  # `mixed` shapes no tree without mixed folders: fingerprints as before it
    write_image(root / "stray.png")
    with pytest.raises(DataError, match=r"both images and subfolders: \."):
        ImageFolder(str(root)).index
    assert ImageFolder(str(root), mixed="skip").index.classes == ("cat", "dog")
    clash = make_tree(tmp_path / "clash", {"a": 1, "a/(own)": 1})
    with pytest.raises(DataError, match=r"a/\(own\) is named \(own\), the class of its parent folder's own images"):
        ImageFolder(str(clash)).index


def test_files_reached_twice_are_indexed_once_before_the_splits_are_carved(tmp_path):
    root = make_tree(tmp_path / "data", {"cat": 6, "dog": 6})
    (root / "dog" / "link.png").symlink_to(root / "cat" / "img000.png")  # a symlink, a hard link and a copy, across classes too
    os.link(root / "cat" / "img001.png", root / "cat" / "hard.png")
    shutil.copy(root / "dog" / "img002.png", root / "dog" / "copy.png")
    src = ImageFolder(str(root), val_fraction=0.5)
    index = src.index
    assert len(index) == 12 and counts_by_name(index) == {"cat": 6, "dog": 6}
    assert index.duplicates == ("cat/img001.png = cat/hard.png", "dog/img002.png = dog/copy.png", "dog/link.png = cat/img000.png")
    contents = {}
    for i in range(len(index)):
        contents.setdefault((root / index.path(i)).read_bytes(), set()).add(int(index.splits[i]))
    assert all(len(splits) == 1 for splits in contents.values()) and len(contents) == 12
    assert ImageFolder(str(root), val_fraction=0.5).fingerprint == src.fingerprint  # reloaded from the cache with them
    out = CliRunner().invoke(cli, ["subset", "--source", f"image_folder(root='{root}')"])
    assert out.exit_code == 0 and "dropped 3 duplicate files" in out.output, out.output
    split = make_tree(tmp_path / "split", {"train/cat": 3, "train/dog": 3, "test/cat": 1, "test/dog": 1})
    shutil.copy(split / "train" / "cat" / "img000.png", split / "test" / "dog" / "leak.png")  # in train as a cat, in test as a dog
    index = ImageFolder(str(split)).index
    assert index.duplicates == ("test/dog/leak.png = train/cat/img000.png",) and index.class_counts("test").tolist() == [1, 1]
    (root / "bird").mkdir()
    (root / "bird" / "alias.png").symlink_to(root / "cat" / "img003.png")
    assert ImageFolder(str(root)).index.classes == ("cat", "dog")  # the file, not the link; a class left without files goes


def test_files_alike_in_size_and_head_but_not_in_bytes_are_kept(tmp_path):
    head = bytes(range(256)) * 32  # HEAD_BYTES alike
    paths = []
    for name, tail in (("a", b"1"), ("b", b"2"), ("c", b"1")):
        (tmp_path / name).write_bytes(head + tail)
        paths.append(name)
    probes = [(os.stat(tmp_path / p).st_size, 0, 0, i, hashlib.blake2b(head).digest(), False) for i, p in enumerate(paths)]
    assert duplicates_of(tmp_path, paths, probes) == [None, None, 0]
    linked = probes[0][:5] + (True,)  # the same inode under a symlink's name, before the file's own name
    assert duplicates_of(tmp_path, paths, [linked, None, probes[0]]) == [2, None, None]


def test_split_layout_uses_the_split_folders(tmp_path):
    root = make_tree(tmp_path / "data", {"train/a": 5, "train/b/x": 4, "val/a": 2, "val/b/x": 1, "test/b/x": 3})
    index = ImageFolder(str(root), val_fraction=0.5).index
    assert index.classes == ("a", "b/x") and index.class_names == ("a", "x")
    assert counts_by_name(index, "train") == {"a": 5, "b/x": 4}  # a val folder exists: nothing is carved
    assert counts_by_name(index, "val") == {"a": 2, "b/x": 1}
    assert counts_by_name(index, "test") == {"a": 0, "b/x": 3}
    assert index.splits.tolist() == sorted(index.splits.tolist())
    assert index.path(len(index) - 1) == "test/b/x/img002.png"


def test_split_layout_classes_missing_from_train_are_named(tmp_path):
    root = make_tree(tmp_path / "data", {"train/a": 2, "val/a": 1, "val/zebra": 1, "test/yak": 1})
    with pytest.raises(DataError, match="missing from train") as err:
        ImageFolder(str(root)).index
    assert "val: zebra" in str(err.value) and "test: yak" in str(err.value)


def test_split_layout_without_train_is_an_error(tmp_path):
    root = make_tree(tmp_path / "data", {"val/a": 1, "test/a": 1})
    with pytest.raises(DataError, match="no train folder"):
        ImageFolder(str(root)).index


@pytest.mark.parametrize("val_folder", ["valid", "validation"])
def test_valid_and_validation_folders_are_the_val_split(tmp_path, val_folder):
    root = make_tree(tmp_path / "data", {"train/cat": 4, "train/dog": 4, f"{val_folder}/cat": 2, f"{val_folder}/dog": 1, "test/dog": 3})
    index = ImageFolder(str(root), val_fraction=0.5).index
    assert index.classes == ("cat", "dog")
    assert counts_by_name(index, "train") == {"cat": 4, "dog": 4}  # a val folder exists: nothing is carved
    assert counts_by_name(index, "val") == {"cat": 2, "dog": 1} and counts_by_name(index, "test") == {"cat": 0, "dog": 3}


def test_classes_named_like_splits_in_a_flat_folder_are_classes(tmp_path):
    root = make_tree(tmp_path / "data", {"bus": 2, "car": 2, "train": 2, "test": 2})  # CIFAR-100 and VOC have a train class
    index = ImageFolder(str(root), val_fraction=0.0).index
    assert index.classes == ("bus", "car", "test", "train") and counts_by_name(index, "train") == dict.fromkeys(index.classes, 2)
    assert ImageFolder(str(root), val_fraction=0.5).index.class_counts("val").tolist() == [1, 1, 1, 1]  # val is carved


@pytest.mark.parametrize("counts, message", [
    ({"train/cat": 2, "val/cat": 1, "docs/cat": 1, "extra/x": 1}, "other folders beside them: docs, extra"),
    ({"train/cat": 2, "cats/x": 1}, "other folders beside them: cats"),  # a train folder of class folders is a split
    ({"train/cat": 2, "val/cat": 1, "valid/cat": 1}, "val and valid folders; keep one val folder"),
    ({"valid/cat": 1, "test/cat": 1}, "no train folder"),
])
def test_a_split_layout_with_other_folders_or_two_val_folders_is_an_error(tmp_path, counts, message):
    root = make_tree(tmp_path / "data", counts)
    with pytest.raises(DataError, match=message):
        ImageFolder(str(root)).index


def test_missing_root_and_bad_val_fraction_fail_at_construction(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        ImageFolder(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(SpecError, match="val_fraction"):
        ImageFolder(str(tmp_path), val_fraction=1.0)
    with pytest.raises(SpecError, match="corrupt"):
        ImageFolder(str(tmp_path), corrupt="ignore")


def test_val_is_carved_per_class_by_file_path_and_is_a_property_of_the_files(tmp_path, cache):
    root = make_tree(tmp_path / "data", {"a": 20, "b": 10, "c": 1})
    index = ImageFolder(str(root), val_fraction=0.25).index
    assert counts_by_name(index, "val") == {"a": 5, "b": 3, "c": 0}  # round(0.25·n); a class keeps one train image
    assert counts_by_name(index, "train") == {"a": 15, "b": 7, "c": 1}
    val = {index.path(i) for i in index.split_samples("val")}
    shutil.rmtree(cache)
    again = ImageFolder(str(root), val_fraction=0.25).index
    assert {again.path(i) for i in again.split_samples("val")} == val
    nested = tmp_path / "elsewhere" / "train"  # the same files in the split layout carve the same val images
    shutil.copytree(root, nested)
    moved = ImageFolder(str(nested.parent), val_fraction=0.25).index
    assert {moved.path(i).removeprefix("train/") for i in moved.split_samples("val")} == val
    assert ImageFolder(str(root), val_fraction=0.0).index.class_counts("val").sum() == 0


def test_val_fraction_changes_neither_the_rows_nor_the_image_cache(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data", {"a": 6, "b": 6})
    none, half = ImageFolder(str(root), val_fraction=0.0), ImageFolder(str(root), val_fraction=0.5)
    assert none.index.files.tolist() == half.index.files.tolist() and none.index.folder_ids.tolist() == half.index.folder_ids.tolist()
    assert none.index.class_counts("val").sum() == 0 and half.index.class_counts("val").tolist() == [3, 3]
    assert none.fingerprint != half.fingerprint and cache_path(none, 8) == cache_path(half, 8)
    first = image_cache(none, 8)
    opens = count_opens(monkeypatch)
    np.testing.assert_array_equal(image_cache(half, 8), first)
    assert opens == []  # nothing decoded again
    split = make_tree(tmp_path / "split", {"train/a": 3, "val/a": 1})
    assert ImageFolder(str(split), val_fraction=0.1).fingerprint == ImageFolder(str(split), val_fraction=0.3).fingerprint


def test_test_fraction_holds_out_nested_test_images_before_val_without_touching_pixels(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data", {"a": 20, "b": 10, "c": 1})
    index = ImageFolder(str(root), val_fraction=0.1, test_fraction=0.2).index
    assert counts_by_name(index, "test") == {"a": 4, "b": 2, "c": 0}  # round(0.2·n) of each class; one image stays in train
    assert counts_by_name(index, "val") == {"a": 2, "b": 1, "c": 0}  # round(0.1·n) of the class
    assert counts_by_name(index, "train") == {"a": 14, "b": 7, "c": 1}
    paths = {split: {index.path(i) for i in index.split_samples(split)} for split in ("train", "val", "test")}
    larger = ImageFolder(str(root), val_fraction=0.1, test_fraction=0.3).index
    assert paths["test"] < {larger.path(i) for i in larger.split_samples("test")}  # nested in the fraction
    assert paths["val"] == {larger.path(i) for i in larger.split_samples("val")}  # and val stays where it was
    no_test = ImageFolder(str(root), val_fraction=0.1).index
    assert paths["val"] == {no_test.path(i) for i in no_test.split_samples("val")}
    plain = ImageFolder(str(root), val_fraction=0.1)
    assert plain.index.files.tolist() == index.files.tolist() and cache_path(plain, 8) == cache_path(ImageFolder(str(root), test_fraction=0.2), 8)
    split = make_tree(tmp_path / "split", {"train/a": 3, "test/a": 1})  # a test folder makes test_fraction moot
    assert ImageFolder(str(split), test_fraction=0.2).fingerprint == ImageFolder(str(split), test_fraction=0.0).fingerprint
    with pytest.raises(SpecError, match="test_fraction must lie in"):
        ImageFolder(str(root), test_fraction=1.0)
    with pytest.raises(SpecError, match=r"val_fraction \+ test_fraction must lie in"):
        ImageFolder(str(root), val_fraction=0.5, test_fraction=0.5)


def test_file_names_that_are_not_utf8_are_indexed_and_loaded(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 2, "b": 2})
    os.rename(root / "a" / "img000.png", os.fsencode(root / "a") + b"/caf\xe9.png")  # a Latin-1 name
    src = ImageFolder(str(root), val_fraction=0.5)  # val is carved by file name
    assert len(src.index) == 4 and "a/caf\udce9.png" in {src.index.path(i) for i in range(4)}
    assert (src.load(np.arange(4)) == RED).all()


def test_a_class_folder_not_in_utf8_is_indexed_cached_and_pretrained(tmp_path, store):
    root = tmp_path / "data"
    cafe = os.fsencode(root) + b"/caf\xe9"  # a Latin-1 folder name, and file names that are no UTF-8 either
    os.makedirs(cafe)
    for i in range(8):
        Image.new("RGB", (12, 10), RED).save(cafe + b"/img%d\xff.png" % i, format="PNG")
    make_tree(root, {"plain": 8})
    src = ImageFolder(str(root))
    assert src.index.classes == ("caf\udce9", "plain") and src.index.path(0) == "caf\udce9/img0\udcff.png"
    assert len(src.fingerprint) == len(src.pixels_key) == 64
    assert (image_cache(src, 8)[src.index.labels == 0] == RED).all()
    assert ImageFolder(str(root)).index.fingerprint() == src.index.fingerprint()  # reloaded from the index cache
    run_id = pipeline.pretrain_run(source=f"image_folder(root={str(root)!r})", policy="all", backbone="timm(model='resnet10t')",
                                   training="train(epochs=1, batch_size=8, resolution=16)")
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["manifest.num_classes"] == "2"
    folder = Path(download_artifacts(run_id=run_id, artifact_path="manifest", dst_path=str(tmp_path / "artifacts")))
    assert '"caf\\udce9"' in (folder / "manifest.json").read_text()  # JSON escapes the undecodable byte
    assert Manifest.load(folder).classes == ("caf\udce9", "plain")


# corrupt files

def write_corrupt_files(root: Path) -> list[str]:
    """Three bad files: empty, truncated header, text with an image name; their relative paths."""
    (root / "a" / "empty.jpg").write_bytes(b"")
    png = (write_image(root / "a" / "good.png")).read_bytes()
    (root / "b" / "cut.png").write_bytes(png[:20])
    (root / "b" / "fake.jpg").write_text("hello, I am not a JPEG")
    return ["a/empty.jpg", "b/cut.png", "b/fake.jpg"]


def test_corrupt_files_are_all_listed_in_one_error(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 2, "b": 2})
    bad = write_corrupt_files(root)
    with pytest.raises(DataError, match="3 unreadable image files") as err:
        ImageFolder(str(root)).index
    message = str(err.value)
    assert all(name in message for name in bad)
    assert "empty file" in message and "corrupt='skip'" in message


def test_many_corrupt_files_list_twenty_and_count_the_rest(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 1})
    for i in range(25):
        (root / "a" / f"bad{i:02d}.png").write_bytes(b"")
    with pytest.raises(DataError, match="and 5 more") as err:
        ImageFolder(str(root)).index
    assert "bad19.png" in str(err.value) and "bad20.png" not in str(err.value)


def test_skip_leaves_corrupt_files_out_and_records_them(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 2, "b": 2})
    bad = write_corrupt_files(root)
    index = ImageFolder(str(root), corrupt="skip", val_fraction=0.0).index
    assert index.skipped == tuple(bad)
    assert counts_by_name(index) == {"a": 3, "b": 2}
    assert not set(bad) & {index.path(i) for i in range(len(index))}


def write_noise(root: Path, names) -> None:
    """A 64×64 noise image per name, each other noise (no two files are copies), in the format its suffix names."""
    for seed, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / name)


def test_truncated_files_are_reported_or_skipped_at_index_time(tmp_path):
    root = tmp_path / "data"
    write_noise(root, ("a/half.png", "a/half.jpg", "a/whole.png", "a/whole.jpg"))
    for name in ("a/half.png", "a/half.jpg"):
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])  # headers intact, the rest cut off
    with pytest.raises(DataError, match="2 unreadable image files") as err:
        ImageFolder(str(root), val_fraction=0.0).index
    assert "a/half.png: unreadable" in str(err.value) and "a/half.jpg: unreadable" in str(err.value)
    src = ImageFolder(str(root), val_fraction=0.0, corrupt="skip")
    assert src.index.skipped == ("a/half.jpg", "a/half.png") and len(src.index) == 2
    assert src.load(np.arange(2)).shape == (2, 64, 64, 3)


def test_images_whose_pixels_are_missing_are_caught_at_index_time_before_any_run(tmp_path, store):
    root = make_tree(tmp_path / "data", {"a": 2, "b": 2})
    bad = [f"b/{name}" for name in pixelless_files(root / "b")]
    spec = f"image_folder(root={str(root)!r}, val_fraction=0.0)"
    with pytest.raises(DataError, match=f"{len(bad)} unreadable image files") as err:
        pipeline.pretrain_run(source=spec, policy="all", backbone="timm(model='resnet10t')", training="train(epochs=1, resolution=16)")
    assert all(f"  {name}: " in str(err.value) for name in bad)
    assert MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()]) == []
    index = ImageFolder(str(root), val_fraction=0.0, corrupt="skip").index
    assert index.skipped == tuple(bad) and counts_by_name(index) == {"a": 2, "b": 2}


def test_broken_and_looping_links_are_skipped_or_named_and_folder_loops_are_entered_once(tmp_path):
    root = make_tree(tmp_path / "data", {"animal/cat": 2, "animal/dog": 2, "plant": 2})
    os.symlink("self.png", root / "plant" / "self.png")  # ln -s x x
    os.symlink("missing.png", root / "plant" / "gone.png")
    os.symlink("loop", root / "plant" / "loop")  # a looping link without an image name is no image: ignored
    os.symlink("..", root / "animal" / "cat" / "up")  # to an ancestor: would recurse forever
    os.symlink(root / "animal", root / "animal" / "dog" / "again")
    os.symlink(root / "animal" / "dog", root / "zoo")  # a second name of a folder already met
    with pytest.raises(DataError, match="2 unreadable image files") as err:
        ImageFolder(str(root), val_fraction=0.0).index
    assert "plant/gone.png: cannot read" in str(err.value) and "plant/self.png: cannot read" in str(err.value)
    index = ImageFolder(str(root), val_fraction=0.0, corrupt="skip").index
    assert index.skipped == ("plant/gone.png", "plant/self.png")
    assert counts_by_name(index) == {"animal/cat": 2, "animal/dog": 2, "plant": 2}


def refuse_listing(monkeypatch, folder: Path) -> None:
    """os.scandir(folder) raises PermissionError, as for a folder without read permission (which root may read anyway)."""
    real = os.scandir
    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)


def check_unlistable(root: Path) -> None:
    """root/locked cannot be listed: named in one DataError, or skipped and recorded with corrupt='skip'."""
    with pytest.raises(DataError, match=r"1 folders under .* cannot be listed \(pass corrupt='skip'") as err:
        ImageFolder(str(root)).index
    assert "  locked: cannot list folder (Permission denied)" in str(err.value)
    index = ImageFolder(str(root), corrupt="skip").index
    assert index.skipped == ("locked/",) and counts_by_name(index) == {"a": 2, "b": 2}


def test_a_folder_that_cannot_be_listed_is_named_or_skipped(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data", {"a": 2, "b": 2, "locked": 2})
    refuse_listing(monkeypatch, root / "locked")
    check_unlistable(root)


def test_a_folder_without_read_permission_is_named_or_skipped(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 2, "b": 2, "locked": 2})
    (root / "locked").chmod(0)
    try:
        try:
            os.listdir(root / "locked")
            pytest.skip("this process lists folders whatever their permissions (root, or CAP_DAC_READ_SEARCH)")
        except PermissionError:
            check_unlistable(root)
    finally:
        (root / "locked").chmod(0o755)


def test_images_above_the_pixel_cap_are_named_or_skipped_and_the_cap_keys_the_index(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_image(root / "small" / "s.png", size=(8, 8))
    write_image(root / "large" / "l.bmp", size=(12, 10))  # a format without a reduced decode (a PNG decodes in bands)
    write_image(root / "large" / "l.png", size=(12, 10))
    monkeypatch.setenv("TRANSFERLAB_MAX_PIXELS", "100")
    with pytest.raises(DataError, match="1 unreadable image files") as err:
        ImageFolder(str(root), val_fraction=0.0).index
    assert "large/l.bmp: 12×10 pixels to decode, above the cap of 100" in str(err.value) and "TRANSFERLAB_MAX_PIXELS" in str(err.value)
    src = ImageFolder(str(root), val_fraction=0.0, corrupt="skip")
    assert src.index.skipped == ("large/l.bmp",) and src.load(src.index.split_samples("train"), size=2).shape == (2, 2, 2, 3)
    monkeypatch.setenv("TRANSFERLAB_MAX_PIXELS", "1_000")
    index = ImageFolder(str(root), val_fraction=0.0, corrupt="skip").index
    assert index.skipped == () and len(index) == 3
    monkeypatch.setenv("TRANSFERLAB_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="TRANSFERLAB_MAX_PIXELS must be a positive whole number of pixels, got 'lots'"):
        ImageFolder(str(root), val_fraction=0.0).index


def test_data_corrupt_inside_a_complete_file_fails_at_load_naming_every_file(tmp_path):
    root = tmp_path / "data"
    write_noise(root, ("a/bad1.png", "a/bad2.png", "a/whole.png"))
    for name in ("a/bad1.png", "a/bad2.png"):
        data = bytearray((root / name).read_bytes())
        data[200:400] = bytes(200)  # compressed pixels zeroed; header and IEND intact
        (root / name).write_bytes(bytes(data))
    src = ImageFolder(str(root), val_fraction=0.0)
    assert len(src.index) == 3  # the probe decodes only files whose end is missing
    with pytest.raises(DataError, match="could not decode 2 of 3") as err:
        src.load(np.arange(3))
    assert "a/bad1.png" in str(err.value) and "a/bad2.png" in str(err.value)
    assert src.load(np.array([2])).shape == (1, 64, 64, 3)


# pixels

def test_load_returns_the_pixels_at_native_size_or_resized(tmp_path):
    root = tmp_path / "data"
    write_image(root / "red" / "r.png", RED, (12, 10))
    write_image(root / "blue" / "b.png", BLUE, (12, 10))
    write_image(root / "green" / "g.jpg", GREEN, (40, 30))
    src = ImageFolder(str(root), val_fraction=0.0)
    blue, green, red = range(3)
    native = src.load(np.array([red, blue]))
    assert native.shape == (2, 10, 12, 3) and native.dtype == np.uint8
    assert (native[0] == RED).all() and (native[1] == BLUE).all()
    small = src.load(np.array([red, green, blue]), size=8)
    assert small.shape == (3, 8, 8, 3)
    assert (small[0] == RED).all() and (small[2] == BLUE).all()
    assert np.abs(small[1].astype(int) - GREEN).max() <= 3  # JPEG
    with pytest.raises(DataError, match="pass size=N") as err:
        src.load(np.array([red, green]))
    assert "green/g.jpg is 40×30" in str(err.value)
    assert src.load(np.array([], dtype=np.int64), size=8).shape == (0, 8, 8, 3)


def test_decode_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    bands = np.zeros((10, 30, 3), dtype=np.uint8)
    bands[:, :10], bands[:, 10:20], bands[:, 20:] = RED, GREEN, BLUE
    Image.fromarray(bands).save(tmp_path / "bands.png")
    assert (decode_image(tmp_path / "bands.png", size=10) == GREEN).all()
    assert decode_image(tmp_path / "bands.png", size=5).shape == (5, 5, 3)
    gray = tmp_path / "gray.png"
    Image.new("L", (6, 6), 77).save(gray)
    assert (decode_image(gray) == 77).all() and decode_image(gray).shape == (6, 6, 3)


def test_the_same_names_over_other_files_are_other_data(tmp_path, cache):
    clean, noisy = (make_tree(tmp_path / name, {"a": 2, "b": 2}) for name in ("clean", "noisy"))
    for path in noisy.rglob("*.png"):
        write_image(path, BLUE)
        os.utime(path, ns=(OLD_NS, OLD_NS))  # other files: another mtime, even where the size is the same
    a, b = ImageFolder(str(clean)), ImageFolder(str(noisy))
    assert [a.index.path(i) for i in range(4)] == [b.index.path(i) for i in range(4)]
    assert a.index.content != b.index.content and a.fingerprint != b.fingerprint and cache_path(a, 8) != cache_path(b, 8)
    assert (image_cache(a, 8) == RED).all() and (image_cache(b, 8) == BLUE).all()
    write_image(noisy / "a" / "img000.png", GREEN)  # rewritten in place: no folder's mtime changes
    assert ImageFolder(str(noisy)).fingerprint == b.fingerprint  # the cached index stands (README: cache --clear index)
    shutil.rmtree(cache / "index")
    assert ImageFolder(str(noisy)).fingerprint != b.fingerprint


def test_fingerprint_ignores_the_location_but_not_the_data(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 4, "b": 4})
    shutil.copytree(root, tmp_path / "moved")
    fingerprint = ImageFolder(str(root)).fingerprint
    assert ImageFolder(str(tmp_path / "moved")).fingerprint == fingerprint
    assert ImageFolder(str(root), val_fraction=0.5).fingerprint != fingerprint
    write_image(tmp_path / "moved" / "b" / "extra.png")
    assert ImageFolder(str(tmp_path / "moved")).fingerprint != fingerprint


# the folder index cache

def count_opens(monkeypatch) -> list:
    """Record every PIL.Image.open call."""
    calls, real_open = [], PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    return calls


def test_folder_index_reloads_from_the_cache_without_opening_images(tmp_path, cache, monkeypatch):
    root = make_tree(tmp_path / "data", {f"c{i}": 100 for i in range(8)})
    age_folders(root)
    start = time.perf_counter()
    first = ImageFolder(str(root)).index
    build_s = time.perf_counter() - start
    assert len(list((cache / "index").glob("*.npz"))) == 1
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("the cached index reopened an image"))
    start = time.perf_counter()
    second = ImageFolder(str(root)).index
    reload_s = time.perf_counter() - start
    assert second.fingerprint() == first.fingerprint() and len(second) == 800
    assert reload_s < 0.2 and reload_s < build_s


def test_changed_folders_rebuild_the_index(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data", {"a": 3, "b": 3})
    age_folders(root)
    assert len(ImageFolder(str(root), val_fraction=0.0).index) == 6
    opens = count_opens(monkeypatch)
    write_image(root / "a" / "new.png")
    assert counts_by_name(ImageFolder(str(root), val_fraction=0.0).index) == {"a": 4, "b": 3}
    assert len(opens) == 7
    (root / "b" / "img000.png").unlink()
    assert counts_by_name(ImageFolder(str(root), val_fraction=0.0).index) == {"a": 4, "b": 2}
    os.utime(root / "a", ns=(OLD_NS, OLD_NS))  # only the mtime changes: still rebuilt
    opens.clear()
    ImageFolder(str(root), val_fraction=0.0).index
    assert len(opens) == 6
    opens.clear()
    ImageFolder(str(root), val_fraction=0.0).index
    ImageFolder(str(root), val_fraction=0.5).index  # another parameter, another cache entry
    assert len(opens) == 6


# IDX files (MNIST, Fashion-MNIST)

def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic 0x0000 08 <ndim>, big-endian dimensions, uint8 data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(root: Path, folder="MNIST", n_train=50, n_test=20, gz=False, shape=(4, 5)) -> dict[str, np.ndarray]:
    """Random images and cycling labels in torchvision's layout (root itself with folder=None); the arrays written, by split."""
    rng = np.random.default_rng(1)
    raw = root if folder is None else root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = rng.integers(0, 256, (n, *shape), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)
        for name, array in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = idx_bytes(array)
            (raw / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        arrays[split] = (x, y)
    return arrays


def test_mnist_reads_idx_files_and_round_trips_the_pixels(tmp_path):
    arrays = write_idx_set(tmp_path)
    src = MNIST(str(tmp_path), val_fraction=0.2)
    index = src.index
    assert index.classes == tuple("0123456789") and len(index) == 70
    assert index.class_counts("train").tolist() == [4] * 10 and index.class_counts("val").tolist() == [1] * 10
    assert index.class_counts("test").tolist() == [2] * 10
    test = index.split_samples("test")
    assert (index.labels[test] == arrays["test"][1]).all()
    pixels = src.load(test)
    assert pixels.shape == (20, 4, 5, 3)
    assert (pixels == arrays["test"][0][..., None]).all()
    assert (src.load(np.arange(50)) == arrays["train"][0][..., None]).all()
    assert src.load(test[:3], size=6).shape == (3, 6, 6, 3)
    assert MNIST(str(tmp_path), val_fraction=0.2).index.splits.tolist() == index.splits.tolist()


def test_idx_fingerprint_covers_the_pixels_and_the_image_cache_ignores_val_fraction(tmp_path):
    write_idx_set(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    images = tmp_path / "two" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF  # one pixel of one test image
    one, copy = MNIST(str(tmp_path / "one")), MNIST(str(tmp_path / "two"))
    assert one.fingerprint == copy.fingerprint
    images.write_bytes(bytes(data))
    changed = MNIST(str(tmp_path / "two"))
    assert changed.fingerprint != one.fingerprint and cache_path(changed, 8) != cache_path(one, 8)
    other_val = MNIST(str(tmp_path / "one"), val_fraction=0.5)
    assert other_val.fingerprint != one.fingerprint and cache_path(other_val, 8) == cache_path(one, 8)


def test_fashion_mnist_reads_gz_files_with_official_class_names(tmp_path):
    arrays = write_idx_set(tmp_path, folder="FashionMNIST", gz=True)
    src = FashionMNIST(str(tmp_path), val_fraction=0.0)
    assert src.index.class_names[0] == "T-shirt/top" and src.index.class_names[9] == "Ankle boot"
    assert src.index.classes[0] == "n03595614" and src.index.classes[9] == "n02872752"  # WordNet: jersey.n.03, boot.n.01
    assert (src.load(np.arange(50))[..., 1] == arrays["train"][0]).all()
    assert src.tree.names[src.tree.node("n02872752")] == "Ankle boot"


def test_idx_with_a_bad_magic_number_names_the_file(tmp_path):
    write_idx_set(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
    with pytest.raises(DataError, match="magic number is 0x00000803, expected 0x00000801") as err:
        MNIST(str(tmp_path)).index
    assert str(labels) in str(err.value)


def test_idx_whose_data_does_not_match_its_header_names_the_file(tmp_path):
    write_idx_set(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"shape \(50, 4, 5\) \(1000 bytes of data\) but the file has 993") as err:
        MNIST(str(tmp_path)).index
    assert str(images) in str(err.value)


def test_idx_label_count_mismatch_is_an_error(tmp_path):
    write_idx_set(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(49, dtype=np.uint8)))
    with pytest.raises(DataError, match="has 50 images but .* has 49 labels"):
        MNIST(str(tmp_path)).index


def test_missing_idx_files_name_the_expected_paths_and_download(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="download=True") as err:
        MNIST(str(tmp_path))
    assert str(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte") in str(err.value)
    with pytest.raises(DataError, match="FashionMNIST/raw/train-images-idx3-ubyte"):
        FashionMNIST(str(tmp_path))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
def test_idx_files_in_a_flat_folder_are_read_as_in_torchvisions_layout(tmp_path, cls, gz):
    arrays = write_idx_set(tmp_path / "flat", folder=None, gz=gz)  # as Debian's dataset-fashion-mnist installs them
    write_idx_set(tmp_path / "torchvision", folder=cls.folder, gz=not gz)
    flat, torchvision = cls(str(tmp_path / "flat")), cls(str(tmp_path / "torchvision"))
    assert flat.raw == tmp_path / "flat" and torchvision.raw == tmp_path / "torchvision" / cls.folder / "raw"
    assert len(flat.index) == 70 and flat.index.class_counts("test").tolist() == [2] * 10
    assert (flat.load(flat.index.split_samples("test"))[..., 0] == arrays["test"][0]).all()
    assert flat.fingerprint == torchvision.fingerprint and cache_path(flat, 8) == cache_path(torchvision, 8)  # same data


def test_a_flat_folder_missing_a_file_names_it_there(tmp_path):
    write_idx_set(tmp_path, folder=None, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="download=True") as err:
        FashionMNIST(str(tmp_path))
    assert f"missing IDX files {tmp_path / 'train-labels-idx1-ubyte'} " in str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(err.value)  # the other layout it looked in


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's package dataset-fashion-mnist


# Needs the real data: `bash benchmarks/get-fashion-mnist.sh` installs it (as root on Debian); skipped without it.
@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (benchmarks/get-fashion-mnist.sh installs it)")
def test_real_fashion_mnist_from_debians_flat_folder():
    src = FashionMNIST(str(DEBIAN_FASHION_MNIST))
    index = src.index
    assert len(index) == 70_000 and src.raw == DEBIAN_FASHION_MNIST
    assert (index.class_counts("train") + index.class_counts("val")).tolist() == [6000] * 10
    assert index.class_counts("test").tolist() == [1000] * 10
    pixels = src.load(index.split_samples("test")[:4], size=32)
    assert pixels.shape == (4, 32, 32, 3) and 0 < pixels.mean() < 255


GET_FASHION_MNIST = Path(__file__).resolve().parents[1] / "benchmarks" / "get-fashion-mnist.sh"


def test_the_install_script_says_where_the_data_is_or_how_to_get_it(tmp_path):
    def run(folder: Path) -> subprocess.CompletedProcess:
        env = {"FASHION_MNIST_DIR": str(folder), "PATH": str(tmp_path / "no-programs")}  # builtins only: no apt-get to call
        return subprocess.run(["/bin/bash", str(GET_FASHION_MNIST)], env=env, capture_output=True, text=True, timeout=30)

    missing = run(tmp_path / "empty")
    assert missing.returncode == 1 and "apt-get install dataset-fashion-mnist" in missing.stderr and "download=True" in missing.stderr
    write_idx_set(tmp_path / "data", folder=None, gz=True)
    for _ in range(2):  # idempotent
        found = run(tmp_path / "data")
        assert found.returncode == 0 and f"fashion_mnist(root='{tmp_path / 'data'}')" in found.stdout, found.stderr
    assert FashionMNIST(str(tmp_path / "data")).index.num_classes == 10


REAL_FASHION_MNIST = Path(os.environ.get("TRANSFERLAB_TEST_DATA", "/tmp/tl-data"))


@pytest.mark.skipif(not (REAL_FASHION_MNIST / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists(),
                    reason="real Fashion-MNIST not installed (setup-offline-data.sh)")
def test_real_fashion_mnist():
    src = FashionMNIST(str(REAL_FASHION_MNIST))
    index = src.index
    assert len(index) == 70_000
    assert (index.class_counts("train") + index.class_counts("val")).tolist() == [6000] * 10
    assert index.class_counts("val").tolist() == [600] * 10 and index.class_counts("test").tolist() == [1000] * 10
    pixels = src.load(index.split_samples("test")[:4], size=32)
    assert pixels.shape == (4, 32, 32, 3) and 0 < pixels.mean() < 255


# the command line

def test_cli_subset_reports_per_class_counts(tmp_path):
    from transferlab.cli import cli

    root = make_tree(tmp_path / "data", {"animal/cat": 10, "animal/dog": 20, "car": 5})
    (root / "car" / "broken.png").write_bytes(b"")
    runner = CliRunner()
    result = runner.invoke(cli, ["subset", "--source", f"image_folder(root={str(root)!r}, corrupt='skip')", "--policy", "all", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {c["id"]: c["count"] for c in summary["classes"]} == {"animal/cat": 9, "animal/dog": 18, "car": 4}
    assert summary["num_samples"] == 31 and summary["skipped_files"] == ["car/broken.png"]
    failed = runner.invoke(cli, ["subset", "--source", f"image_folder(root={str(root)!r})", "--json"])
    assert failed.exit_code == 2 and "car/broken.png: empty file" in failed.output
