"""Sources labelled by WordNet ids, on small files written in the real formats (ImageNet, Tiny-ImageNet, CIFAR-100),
and the hand-made CIFAR-100 and Fashion-MNIST synset maps checked against WordNet 3.0."""

import os
import pickle
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import scipy.io
from PIL import Image

import transferlab
from transferlab.errors import DataError, SpecError
from transferlab.image_cache import cache_path
from transferlab_sources.cifar import CIFAR100
from transferlab_sources.idx import FashionMNIST
from transferlab_sources.imagenet import ImageNet
from transferlab_sources.tiny_imagenet import TinyImageNet
from transferlab_sources.wnid_maps import CIFAR100_SYNSETS, FASHION_MNIST_SYNSETS
from transferlab_wordnet.hierarchy import all_ancestors, resolve, synset

TENCH, GOLDFISH, BRAMBLING = "n01440764", "n01443537", "n01530575"  # sorted, as class ids are
FISH = "n02512053"  # fish.n.01: an inner synset, not an ILSVRC-2012 class
OLD_NS = 1_600_000_000 * 10**9


def write_jpeg(path: Path, color=(200, 40, 40), size=(20, 16)) -> Path:
    """A solid-colour JPEG, its path as its comment (no two files are byte-identical copies, which an index keeps once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG", comment=str(path).encode("utf-8", "surrogateescape"))
    return path


def age_folders(root: Path) -> None:
    """Set every folder's mtime to a fixed past time, so that any later change shows."""
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, ns=(OLD_NS, OLD_NS))


# ImageNet ILSVRC-2012

def write_imagenet_train(root: Path, counts=None) -> Path:
    """train/<wnid>/<wnid>_<i>.JPEG, as in ILSVRC2012_img_train.tar."""
    for wnid, n in (counts or {TENCH: 4, GOLDFISH: 3, BRAMBLING: 2}).items():
        for i in range(n):
            write_jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG")
    return root


def write_devkit(root: Path, truth: list[int]) -> Path:
    """The devkit's data/meta.mat (a 'synsets' struct array, leaves and one inner synset) and the val ground truth."""
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    rows = [(1, TENCH, "tench, Tinca tinca", "freshwater fish", 0, np.zeros(0), 0, 1300),
            (2, GOLDFISH, "goldfish, Carassius auratus", "small fish", 0, np.zeros(0), 0, 1300),
            (3, BRAMBLING, "brambling, Fringilla montifringilla", "finch", 0, np.zeros(0), 0, 1300),
            (1001, FISH, "fish", "any of various vertebrates", 2, np.array([1.0, 2.0]), 1, 0)]
    scipy.io.savemat(data / "meta.mat", {"synsets": np.array(rows, dtype=[(f, object) for f in fields])})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{t}\n" for t in truth))
    return data


def write_flat_val(root: Path, truth: list[int]) -> None:
    """val/ILSVRC2012_val_<k>.JPEG for k = 1..len(truth), labelled by the devkit."""
    for k in range(1, len(truth) + 1):
        write_jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG")
    write_devkit(root, truth)


@pytest.mark.usefixtures("loaded_wordnet")
def test_imagenet_flat_val_is_labelled_by_the_devkit_and_becomes_the_test_split(tmp_path):
    root = write_imagenet_train(tmp_path / "imagenet")
    write_flat_val(root, [2, 1, 3, 3, 1, 2])
    (root / "ILSVRC2012_img_val.tar").write_bytes(b"archives beside the folders are ignored")
    src = ImageNet(str(root))
    index = src.index
    assert index.classes == (TENCH, GOLDFISH, BRAMBLING) and index.class_names == ("tench", "goldfish", "brambling")
    assert index.class_counts("train").tolist() == [4, 3, 2] and index.class_counts("val").sum() == 0
    assert index.class_counts("test").tolist() == [2, 2, 2]
    label_of = {index.path(i): index.classes[index.labels[i]] for i in index.split_samples("test")}
    assert label_of["val/ILSVRC2012_val_00000001.JPEG"] == GOLDFISH and label_of["val/ILSVRC2012_val_00000003.JPEG"] == BRAMBLING
    assert index.path(0) == f"train/{TENCH}/{TENCH}_0.JPEG"
    tree = src.tree
    assert sorted(tree.nodes[n] for n in tree.class_nodes) == sorted(index.classes) and tree.nodes[0] == "n00001740"
    assert tree.classes_under(tree.node(FISH)).tolist() == [0, 1]
    assert tree.names[tree.class_nodes[2]] == "brambling"
    pixels = src.load(index.split_samples("test")[:2], size=8)
    assert pixels.shape == (2, 8, 8, 3) and np.abs(pixels.astype(int) - (200, 40, 40)).max() <= 8


def test_imagenet_val_in_wnid_folders_and_val_carved_from_train(tmp_path):
    root = write_imagenet_train(tmp_path / "imagenet")
    for k, wnid in enumerate([TENCH, TENCH, BRAMBLING], start=1):
        write_jpeg(root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG")
    src = transferlab.source(f"imagenet(root={str(root)!r}, val_fraction=0.5)")
    index = src.index
    assert index.class_counts("train").tolist() == [2, 1, 1] and index.class_counts("val").tolist() == [2, 2, 1]
    assert index.class_counts("test").tolist() == [2, 0, 1]
    paths = [index.path(i) for i in range(len(index))]
    assert paths == sorted(paths)  # rows in listing order (train/ then val/), whatever val_fraction carves
    assert ImageNet(str(root), val_fraction=0.5).fingerprint == src.fingerprint != ImageNet(str(root)).fingerprint


def test_imagenet_missing_folders_name_the_paths_and_how_torchvision_prepares_them(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        ImageNet(str(tmp_path / "nowhere"))
    assert "torchvision.datasets.ImageNet" in str(err.value) and str(tmp_path / "nowhere") in str(err.value)
    write_imagenet_train(tmp_path)
    with pytest.raises(DataError, match="no folder") as err:
        ImageNet(str(tmp_path))
    assert str(tmp_path / "val") in str(err.value)
    with pytest.raises(SpecError, match="val_fraction"):
        ImageNet(str(tmp_path), val_fraction=1.5)


def test_imagenet_class_folders_must_be_wnids(tmp_path):
    root = write_imagenet_train(tmp_path, {TENCH: 1, "cats": 1, "n99999999": 1})
    (root / "val").mkdir()
    with pytest.raises(DataError, match="must be named by ImageNet wnids") as err:
        ImageNet(str(root)).index
    assert "cats, n99999999" in str(err.value)


def test_imagenet_flat_val_without_the_devkit_names_the_missing_file(tmp_path):
    root = write_imagenet_train(tmp_path)
    write_jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match="unpack ILSVRC2012_devkit_t12.tar.gz") as err:
        ImageNet(str(root)).index
    assert str(root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat") in str(err.value)
    assert "LOC_val_solution.csv (in the root or up to three folders above it)" in str(err.value)


def write_kaggle(top: Path, wnids: list[str]) -> Path:
    """Kaggle's ILSVRC archive: ILSVRC/Data/CLS-LOC/{train,val,test} and LOC_val_solution.csv at the top; the root."""
    root = write_imagenet_train(top / "ILSVRC" / "Data" / "CLS-LOC")
    for k in range(1, len(wnids) + 1):
        write_jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG")
    write_jpeg(root / "test" / "ILSVRC2012_test_00000001.JPEG")
    rows = "".join(f"ILSVRC2012_val_{k:08d},{wnid} 10 20 30 40 {wnid} 1 2 3 4 \n" for k, wnid in enumerate(wnids, 1))
    (top / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    return root


def test_imagenet_flat_val_from_kaggle_is_labelled_by_loc_val_solution(tmp_path):
    root = write_kaggle(tmp_path, [GOLDFISH, TENCH, BRAMBLING, GOLDFISH])
    index = ImageNet(str(root)).index
    assert index.class_counts("train").tolist() == [4, 3, 2] and index.class_counts("test").tolist() == [1, 2, 1]
    label_of = {index.path(i): index.classes[index.labels[i]] for i in index.split_samples("test")}
    assert label_of["val/ILSVRC2012_val_00000002.JPEG"] == TENCH and label_of["val/ILSVRC2012_val_00000003.JPEG"] == BRAMBLING
    age_folders(tmp_path)
    ImageNet(str(root)).index  # cached from here on while nothing changes
    (tmp_path / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{TENCH} 1 2 3 4\n")
    with pytest.raises(DataError, match="cannot label 3 images") as err:
        ImageNet(str(root)).index  # the edited solution file is read again, not the cached index
    assert "LOC_val_solution.csv has no row for ILSVRC2012_val_00000002" in str(err.value)
    assert str(tmp_path / "LOC_val_solution.csv") in str(err.value)


def test_imagenet_kaggle_solution_file_with_a_bad_line_is_named(tmp_path):
    root = write_kaggle(tmp_path, [GOLDFISH])
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,\n")  # the nearest one wins
    with pytest.raises(DataError, match="line 2 is 'ILSVRC2012_val_00000001,', not ImageId,<wnid> <boxes>"):
        ImageNet(str(root)).index


def test_imagenet_broken_devkit_files_are_named(tmp_path):
    root = write_imagenet_train(tmp_path)
    write_flat_val(root, [1, 2])
    meta = root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat"
    truth = meta.with_name("ILSVRC2012_validation_ground_truth.txt")
    truth.write_text("1\ntwo\n")
    with pytest.raises(DataError, match="line 2 is 'two', not an ILSVRC2012_ID") as err:
        ImageNet(str(root)).index
    assert str(truth) in str(err.value)
    meta.write_bytes(b"MATLAB 5.0 MAT-file, but then nothing")
    with pytest.raises(DataError, match="as a MATLAB file") as err:
        ImageNet(str(root)).index
    assert str(meta) in str(err.value)
    scipy.io.savemat(meta, {"classes": np.arange(3)})
    with pytest.raises(DataError, match="no 'synsets' struct array"):
        ImageNet(str(root)).index


def test_imagenet_val_files_the_devkit_cannot_label_are_all_listed(tmp_path):
    root = write_imagenet_train(tmp_path, {TENCH: 2, GOLDFISH: 2})
    write_flat_val(root, [1, 1001, 3])
    write_jpeg(root / "val" / "ILSVRC2012_val_00000009.JPEG")
    write_jpeg(root / "val" / "holiday.jpg")
    with pytest.raises(DataError, match="cannot label 4 images") as err:
        ImageNet(str(root)).index
    message = str(err.value)
    assert "ILSVRC2012_val_00000002.JPEG: its ILSVRC2012_ID 1001 is no leaf synset" in message
    assert f"ILSVRC2012_val_00000003.JPEG: its class {BRAMBLING} has no folder in train/" in message
    assert "ILSVRC2012_val_00000009.JPEG: the ground truth has 3 lines, none for image 9" in message
    assert "holiday.jpg: not named ILSVRC2012_val_<8 digits>.JPEG" in message


def test_imagenet_corrupt_images_are_listed_or_skipped(tmp_path):
    root = write_imagenet_train(tmp_path)
    (root / "val").mkdir()
    bad = root / "train" / GOLDFISH / f"{GOLDFISH}_9.JPEG"
    bad.write_bytes(b"not a JPEG")
    with pytest.raises(DataError, match="1 unreadable image files") as err:
        ImageNet(str(root)).index
    assert f"train/{GOLDFISH}/{GOLDFISH}_9.JPEG" in str(err.value)
    index = ImageNet(str(root), corrupt="skip").index
    assert index.skipped == (f"train/{GOLDFISH}/{GOLDFISH}_9.JPEG",) and index.class_counts("train").tolist() == [4, 3, 2]


def test_imagenet_index_reloads_from_the_cache_until_a_class_folder_changes(tmp_path, monkeypatch):
    root = write_imagenet_train(tmp_path)
    write_flat_val(root, [1, 2, 3])
    age_folders(root)
    first = ImageNet(str(root)).index
    with monkeypatch.context() as patch:
        patch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("the cached index reopened an image"))
        start = time.perf_counter()
        again = ImageNet(str(root)).index
    assert time.perf_counter() - start < 0.2 and again.fingerprint() == first.fingerprint()
    write_jpeg(root / "train" / BRAMBLING / "extra.JPEG")
    assert ImageNet(str(root)).index.class_counts("train").tolist() == [4, 3, 3]


# Tiny-ImageNet

def write_tiny(root: Path, val: dict[str, str] | None = None) -> Path:
    """Tiny-ImageNet-200's layout with two classes: lists, train/<wnid>/images, val/images + annotations, unlabelled test/."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text(f"{GOLDFISH}\n{TENCH}\n")
    (root / "words.txt").write_text(f"n00001740\tentity\n{TENCH}\ttench, Tinca tinca\n{GOLDFISH}\tgoldfish, Carassius auratus\n")
    for wnid in (TENCH, GOLDFISH):
        for i in range(4):
            write_jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", size=(64, 64))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    val = val or {"val_0.JPEG": GOLDFISH, "val_1.JPEG": TENCH, "val_2.JPEG": GOLDFISH}
    for name in val:
        write_jpeg(root / "val" / "images" / name, size=(64, 64))
    (root / "val" / "val_annotations.txt").write_text("".join(f"{name}\t{wnid}\t1\t2\t60\t61\n" for name, wnid in val.items()))
    write_jpeg(root / "test" / "images" / "test_0.JPEG", size=(64, 64))
    return root


@pytest.mark.usefixtures("loaded_wordnet")
def test_tiny_imagenet_val_annotations_become_the_test_split(tmp_path):
    src = TinyImageNet(str(write_tiny(tmp_path / "tiny-imagenet-200")), val_fraction=0.25)
    index = src.index
    assert index.classes == (TENCH, GOLDFISH) and index.class_names == ("tench", "goldfish")
    assert index.class_counts("train").tolist() == [3, 3] and index.class_counts("val").tolist() == [1, 1]
    assert index.class_counts("test").tolist() == [1, 2] and len(index) == 11  # test/ has no labels: ignored
    label_of = {index.path(i): index.classes[index.labels[i]] for i in index.split_samples("test")}
    assert label_of == {"val/images/val_0.JPEG": GOLDFISH, "val/images/val_1.JPEG": TENCH, "val/images/val_2.JPEG": GOLDFISH}
    assert sorted(src.tree.nodes[n] for n in src.tree.class_nodes) == [TENCH, GOLDFISH]
    assert src.load(index.split_samples("test")).shape == (3, 64, 64, 3)


def test_tiny_imagenet_annotation_problems_are_all_listed(tmp_path):
    root = write_tiny(tmp_path / "tiny")
    annotations = root / "val" / "val_annotations.txt"
    write_jpeg(root / "val" / "images" / "val_3.JPEG")
    annotations.write_text(f"val_0.JPEG\t{TENCH}\t0\t0\t1\t1\nval_1.JPEG\tn02084071\t0\t0\t1\t1\ngarbage\nval_7.JPEG\t{TENCH}\n")
    with pytest.raises(DataError, match="problems") as err:
        TinyImageNet(str(root)).index
    message = str(err.value)
    assert str(annotations) in message and "line 2: n02084071 is not in wnids.txt" in message
    assert "line 3: 'garbage' is not file<TAB>wnid<TAB>box" in message
    assert "val/images/val_7.JPEG: annotated, but there is no such image" in message
    assert "val/images/val_2.JPEG: has no annotation" in message and "val/images/val_3.JPEG: has no annotation" in message


def test_tiny_imagenet_missing_pieces_are_named(tmp_path):
    root = write_tiny(tmp_path / "tiny")
    (root / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match="tiny-imagenet-200.zip") as err:
        TinyImageNet(str(root))
    assert str(root / "val" / "val_annotations.txt") in str(err.value)
    root = write_tiny(tmp_path / "words")
    (root / "words.txt").write_text(f"{TENCH}\ttench\n")
    with pytest.raises(DataError, match=f"has no line for {GOLDFISH}") as err:
        TinyImageNet(str(root)).index
    assert str(root / "words.txt") in str(err.value)
    root = write_tiny(tmp_path / "extra")
    write_jpeg(root / "train" / BRAMBLING / "images" / "b.JPEG")
    for path in (root / "train" / TENCH / "images").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=f"no images in train/{TENCH}/images; folders of classes not in wnids.txt: {BRAMBLING}"):
        TinyImageNet(str(root)).index


# CIFAR-100

SUPERCLASSES = {  # CIFAR-100's 20 superclasses and their 5 classes each
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
FINE = sorted(name for names in SUPERCLASSES.values() for name in names)  # CIFAR's label order is alphabetical
COARSE = sorted(SUPERCLASSES)
COARSE_OF = {fine: COARSE.index(coarse) for coarse, names in SUPERCLASSES.items() for fine in names}


def cifar_split(per_class: int, seed: int) -> dict:
    """A pickle dict as in cifar-100-python/train and /test: per_class images of every class, classes cycling."""
    fine = [i % 100 for i in range(100 * per_class)]
    return {b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))], b"batch_label": b"training batch 1 of 1",
            b"fine_labels": fine, b"coarse_labels": [COARSE_OF[FINE[f]] for f in fine],
            b"data": np.random.default_rng(seed).integers(0, 256, (len(fine), 3072), dtype=np.uint8)}


def write_cifar(root: Path, protocol: int = pickle.DEFAULT_PROTOCOL, **replace) -> dict:
    """train, test and meta pickles in root/cifar-100-python; `replace` overrides whole files; the dicts written."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train": cifar_split(2, 0), "test": cifar_split(1, 1),
             "meta": {b"fine_label_names": [n.encode() for n in FINE], b"coarse_label_names": [n.encode() for n in COARSE]}}
    files.update(replace)
    for name, data in files.items():
        blob = pickle.dumps(data, protocol=protocol)
        (folder / name).write_bytes(blob.replace(b"numpy._core.", b"numpy.core.") if protocol <= 2 else blob)  # as numpy 1 wrote
    return files


def test_cifar100_classes_are_wnids_named_by_cifar_under_twenty_superclasses(tmp_path):
    files = write_cifar(tmp_path)
    src = transferlab.source(f"cifar100(root={str(tmp_path)!r}, val_fraction=0.5)")
    index = src.index
    assert index.class_names == tuple(FINE) and index.classes == tuple(CIFAR100_SYNSETS[n][0] for n in FINE)
    assert index.classes[FINE.index("apple")] == "n07739125"
    assert index.class_counts("train").tolist() == [1] * 100 and index.class_counts("val").tolist() == [1] * 100
    assert index.class_counts("test").tolist() == [1] * 100 and len(index) == 300
    assert index.labels[200 + 7] == files["test"][b"fine_labels"][7] == 7
    tree = src.tree
    assert tree.height == 2 and sorted(tree.names[n] for n in tree.children[0]) == COARSE
    people = tree.classes_under(tree.node("coarse/people")).tolist()
    assert [index.class_names[c] for c in people] == ["baby", "boy", "girl", "man", "woman"]
    assert tree.names[tree.class_nodes[FINE.index("maple_tree")]] == "maple_tree"


@pytest.mark.parametrize("protocol", [2, 5])  # the published files are protocol 2, written by numpy 1
def test_cifar100_pixels_are_the_channels_first_rows_as_hwc(tmp_path, protocol):
    files = write_cifar(tmp_path, protocol)
    src = CIFAR100(str(tmp_path), val_fraction=0.0)
    pixels = src.load(np.array([0, 250]))
    assert pixels.shape == (2, 32, 32, 3) and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    assert (pixels[0] == files["train"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)).all()
    assert (pixels[1] == files["test"][b"data"][50].reshape(3, 32, 32).transpose(1, 2, 0)).all()
    assert src.load(np.arange(3), size=16).shape == (3, 16, 16, 3)


def test_cifar100_fingerprint_covers_the_pixels_and_the_image_cache_ignores_val_fraction(tmp_path):
    write_cifar(tmp_path / "one")
    write_cifar(tmp_path / "same")
    write_cifar(tmp_path / "other", train=cifar_split(2, seed=5))  # the same labels over other pixels
    one = CIFAR100(str(tmp_path / "one"))
    assert CIFAR100(str(tmp_path / "same")).fingerprint == one.fingerprint
    other = CIFAR100(str(tmp_path / "other"))
    assert other.index.labels.tolist() == one.index.labels.tolist()
    assert other.fingerprint != one.fingerprint and cache_path(other, 8) != cache_path(one, 8)
    other_val = CIFAR100(str(tmp_path / "one"), val_fraction=0.5)
    assert other_val.fingerprint != one.fingerprint and cache_path(other_val, 8) == cache_path(one, 8)


def test_cifar100_missing_files_name_the_paths_and_download(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match="download=True") as err:
        CIFAR100(str(tmp_path))
    assert str(tmp_path / "cifar-100-python" / "meta") in str(err.value)


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar100_unpickles_only_plain_data(tmp_path):
    marker = tmp_path / "ran"
    write_cifar(tmp_path, meta={b"fine_label_names": RunsCode(marker)})
    with pytest.raises(DataError, match="not a CIFAR python pickle: it names posix.system") as err:
        CIFAR100(str(tmp_path)).index
    assert str(tmp_path / "cifar-100-python" / "meta") in str(err.value) and not marker.exists()


def test_cifar100_broken_pickles_name_the_file_and_the_problem(tmp_path):
    write_cifar(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:1000])
    with pytest.raises(DataError, match="not a CIFAR python pickle") as err:
        CIFAR100(str(tmp_path)).index
    assert str(train) in str(err.value)
    split = cifar_split(1, 0)
    write_cifar(tmp_path, train=split | {b"data": split[b"data"][:, :1024]})
    with pytest.raises(DataError, match=r"b'data' is uint8 \[100, 1024\]; expected uint8 \[N, 3072\]"):
        CIFAR100(str(tmp_path)).index
    write_cifar(tmp_path, train={k: v for k, v in split.items() if k != b"fine_labels"})
    with pytest.raises(DataError, match="has no b'fine_labels' entry"):
        CIFAR100(str(tmp_path)).index
    write_cifar(tmp_path, test=split | {b"coarse_labels": [20] * 100})
    with pytest.raises(DataError, match=r"b'coarse_labels' must lie in 0..19"):
        CIFAR100(str(tmp_path)).index
    write_cifar(tmp_path, test=split | {b"coarse_labels": [0] * 100})
    with pytest.raises(DataError, match="exactly one superclass; these do not: apple .2 superclasses."):
        CIFAR100(str(tmp_path)).index
    meta = {b"fine_label_names": [b"unicorn"] + [n.encode() for n in FINE[1:]], b"coarse_label_names": [n.encode() for n in COARSE]}
    write_cifar(tmp_path, meta=meta)
    with pytest.raises(DataError, match="no WordNet synset is known for the fine classes 'unicorn'"):
        CIFAR100(str(tmp_path)).index


# the synset maps

SUPERCLASS_UNDER = {  # synsets every class of a superclass lies under (any one of them)
    "aquatic_mammals": ["aquatic_mammal.n.01", "rodent.n.01", "musteline_mammal.n.01"], "fish": ["fish.n.01"],
    "flowers": ["plant.n.02"], "food_containers": ["container.n.01", "tableware.n.01"], "fruit_and_vegetables": ["produce.n.01"],
    "household_electrical_devices": ["instrumentality.n.03"], "household_furniture": ["furniture.n.01"],
    "insects": ["insect.n.01", "larva.n.01"], "large_carnivores": ["carnivore.n.01"],
    "large_man-made_outdoor_things": ["structure.n.01", "way.n.06"], "large_omnivores_and_herbivores": ["mammal.n.01"],
    "medium_mammals": ["mammal.n.01"], "non-insect_invertebrates": ["invertebrate.n.01"], "people": ["person.n.01"],
    "reptiles": ["reptile.n.01"], "small_mammals": ["mammal.n.01"], "trees": ["tree.n.01"],
    "vehicles_1": ["conveyance.n.03"], "vehicles_2": ["conveyance.n.03"],
}
ANIMALS = ["aquatic_mammals", "fish", "insects", "large_carnivores", "large_omnivores_and_herbivores", "medium_mammals",
           "non-insect_invertebrates", "reptiles", "small_mammals"]


def under(wnid: str, *names: str) -> bool:
    """Whether a synset lies under any of the named synsets (any hypernym path)."""
    return any(resolve(n) in all_ancestors(wnid) for n in names)


@pytest.mark.usefixtures("loaded_wordnet")
def test_cifar100_synsets_exist_and_fit_their_classes():
    assert list(CIFAR100_SYNSETS) == FINE
    wnids = [wnid for wnid, _ in CIFAR100_SYNSETS.values()]
    assert len(set(wnids)) == 100
    for name, (wnid, synset_name) in CIFAR100_SYNSETS.items():
        assert resolve(synset_name) == wnid, name
        lemmas = {lemma.lower() for lemma in synset(wnid).lemma_names()}
        if name == "aquarium_fish":  # WordNet has no aquarium-fish synset: goldfish
            assert "aquarium" in synset(wnid).definition()
        else:
            assert name in lemmas or name.removesuffix("_tree") in lemmas, (name, lemmas)


@pytest.mark.usefixtures("loaded_wordnet")
def test_cifar100_synsets_lie_under_their_superclasses():
    for coarse, names in SUPERCLASSES.items():
        for name in names:
            wnid = CIFAR100_SYNSETS[name][0]
            if name == "lawn_mower":  # WordNet files it as a garden tool
                assert under(wnid, "garden_tool.n.01") and not under(wnid, "conveyance.n.03")
            elif coarse == "large_natural_outdoor_scenes":
                assert not under(wnid, "artifact.n.01", "living_thing.n.01"), name
            else:
                assert under(wnid, *SUPERCLASS_UNDER[coarse]), (coarse, name)
            assert under(wnid, "animal.n.01") == (coarse in ANIMALS), name
    ancestry = [(a, b) for a, (wa, _) in CIFAR100_SYNSETS.items() for b, (wb, _) in CIFAR100_SYNSETS.items()
                if a != b and wa in all_ancestors(wb)]
    assert ancestry == [("whale", "dolphin")]


@pytest.mark.usefixtures("loaded_wordnet")
def test_fashion_mnist_synsets_exist_and_fit_their_classes():
    expected_lemma = {"T-shirt/top": "T-shirt", "Trouser": "trouser", "Pullover": "pullover", "Dress": "dress", "Coat": "coat",
                      "Sandal": "sandal", "Shirt": "shirt", "Sneaker": "sneaker", "Bag": "bag", "Ankle boot": "boot"}
    assert list(FASHION_MNIST_SYNSETS) == list(expected_lemma) == list(FashionMNIST.class_labels)
    assert FashionMNIST.class_ids == tuple(w for w, _ in FASHION_MNIST_SYNSETS.values()) and len(set(FashionMNIST.class_ids)) == 10
    for name, (wnid, synset_name) in FASHION_MNIST_SYNSETS.items():
        assert resolve(synset_name) == wnid and expected_lemma[name] in synset(wnid).lemma_names(), name
        kind = "container.n.01" if name == "Bag" else "footwear.n.02" if name in ("Sandal", "Sneaker", "Ankle boot") else "clothing.n.01"
        assert under(wnid, kind), name
