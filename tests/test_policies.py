"""Built-in subset policies: counts, nesting, errors, manifests and digests."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_index
from transferlab import (
    Manifest,
    Policy,
    PolicyError,
    Source,
    SpecError,
    Subset,
    get_registry,
    make_manifest,
    policies,
)
from transferlab.data_index import DataIndex
from transferlab_subsets.budget import water_fill

COUNTS = [30, 25, 40, 12, 30, 30, 18, 50, 30, 22]


@dataclasses.dataclass(frozen=True)
class Tiny(Source):
    """An in-memory source for policy tests."""

    name = "tiny"
    counts: tuple[int, ...] = tuple(COUNTS)

    def build_index(self) -> DataIndex:
        return make_index(list(self.counts), val=3)


def run(policy: str, seed: int = 0, source: Source = Tiny()) -> Manifest:
    return make_manifest(source, policies(policy), seed)


def sample_set(m: Manifest) -> set[int]:
    return set(m.samples.tolist())


def test_all_keeps_the_training_split():
    m = run("all")
    assert m.class_counts().tolist() == COUNTS
    assert m.classes == Tiny().index.classes
    assert (np.diff(m.samples) > 0).all()


def test_images_per_class_counts_and_nesting():
    small, large = run("images_per_class(n=5)"), run("images_per_class(n=10)")
    assert small.class_counts().tolist() == [5] * 10 and large.class_counts().tolist() == [10] * 10
    assert sample_set(small) < sample_set(large)
    assert sample_set(run("images_per_class(n=10)", seed=1)) != sample_set(large)


def test_images_per_class_names_short_classes():
    with pytest.raises(PolicyError) as info:
        run("images_per_class(n=20)")
    message = str(info.value)
    assert "name03 (c03) has 12" in message and "name06 (c06) has 18" in message and "take='available'" in message
    assert "name00" not in message
    assert run("images_per_class(n=20, take='available')").class_counts().tolist() == [min(c, 20) for c in COUNTS]


def test_fraction_is_per_class_and_nested():
    half, tenth = run("fraction(p=0.5)"), run("fraction(p=0.1)")
    assert half.class_counts().tolist() == [c // 2 for c in COUNTS]
    assert tenth.class_counts().tolist() == [max(1, c // 10) for c in COUNTS]
    assert sample_set(tenth) < sample_set(half)
    with pytest.raises(SpecError, match="p must lie in"):
        policies("fraction(p=0)")


def test_random_classes_nested_and_renumbered():
    three, six = run("random_classes(k=3)"), run("random_classes(k=6)")
    assert three.num_classes == 3 and set(three.classes) < set(six.classes)
    assert list(three.classes) == sorted(three.classes)
    assert three.class_counts().tolist() == [COUNTS[int(c[1:])] for c in three.classes]
    assert set(run("random_classes(k=3)", seed=5).classes) != set(three.classes) or set(run("random_classes(k=3)", seed=6).classes) != set(three.classes)
    with pytest.raises(PolicyError, match="asks for 11 classes, but only 10"):
        run("random_classes(k=11)")


def test_class_choice_does_not_depend_on_other_classes():
    after_exclude = run("exclude(classes=['c05']) | images_per_class(n=5)")
    plain = run("images_per_class(n=5)")
    kept = np.isin(plain.samples, after_exclude.samples)
    assert kept.sum() == 45 and set(plain.samples[~kept].tolist()) <= set(Tiny().index.split_samples("train")[Tiny().index.labels[Tiny().index.split_samples("train")] == 5].tolist())


def test_fixed_budget_spends_exactly_the_budget():
    m = run("fixed_budget(images=63, classes=5)")
    counts = m.class_counts()
    assert counts.sum() == 63 and m.num_classes == 5 and sorted(counts.tolist()) == [12, 12, 13, 13, 13]
    assert set(m.classes) == set(run("random_classes(k=5)").classes)
    with pytest.raises(PolicyError, match="name03 \\(c03\\) has 12"):
        run("fixed_budget(images=130, classes=10)")
    assert run("fixed_budget(images=130, classes=10, take='available')").class_counts().sum() == 12 + 9 * 13
    with pytest.raises(SpecError, match="classes <= images"):
        policies("fixed_budget(images=3, classes=5)")


@pytest.mark.parametrize("images", [50, 121, 200, 257, 287])
def test_fixed_budget_redistribute_spends_exactly_the_budget(images):
    m = run(f"fixed_budget(images={images}, classes=10, take='redistribute')")
    counts = m.class_counts()
    assert counts.sum() == images and (counts <= COUNTS).all()
    if -(-images // 10) <= min(COUNTS):  # nobody short: the same even split as take='exact'
        assert sample_set(m) == sample_set(run(f"fixed_budget(images={images}, classes=10)"))
    full = counts == np.array(COUNTS)  # short classes give all they have, the others share the rest evenly
    if not full.all():
        assert counts[~full].max() - counts[~full].min() <= 1 and (counts[full] <= counts[~full].max()).all()
    assert run("fixed_budget(images=300, classes=10, take='available')").class_counts().sum() == 257  # why it exists


def test_fixed_budget_redistribute_is_nested_in_images():
    previous = set()
    for images in range(10, 288, 7):
        kept = sample_set(run(f"fixed_budget(images={images}, classes=10, take='redistribute')", seed=3))
        assert len(kept) == images and previous <= kept
        previous = kept
    with pytest.raises(PolicyError, match="hold only 287"):
        run("fixed_budget(images=288, classes=10, take='redistribute')")
    with pytest.raises(PolicyError, match="take='redistribute'"):
        run("fixed_budget(images=300, classes=10)")


def test_water_fill_levels_and_tie_order():
    assert water_fill(np.array([5, 1, 5, 2]), np.array([3, 2, 1, 0]), 10).tolist() == [3, 1, 4, 2]  # class 2 comes before class 0
    assert water_fill(np.array([5, 1, 5, 2]), np.array([3, 2, 1, 0]), 9).tolist() == [3, 1, 3, 2]
    assert water_fill(np.array([5, 1, 5, 2]), np.array([3, 2, 1, 0]), 99).tolist() == [5, 1, 5, 2]


def test_exclude_by_id_name_or_number():
    m = run("exclude(classes=['c01', 'name02', 7])")
    assert m.classes == tuple(f"c{c:02d}" for c in (0, 3, 4, 5, 6, 8, 9))
    assert m.class_map.tolist() == [0, -1, -1, 1, 2, 3, 4, -1, 5, 6]
    assert m.summary()["class_map"]["c03"] == "c03" and "c01" not in m.summary()["class_map"]
    with pytest.raises(PolicyError, match="no current class named 'cat'"):
        run("exclude(classes=['cat'])")


def test_exclude_numbers_are_source_labels_not_current_indices():
    m = run("exclude(classes=['c00']) | exclude(classes=[1])")  # source class 1 (c01) is current class 0 by now
    assert m.classes == tuple(f"c{c:02d}" for c in range(2, 10))
    with pytest.raises(PolicyError, match="no current class named 0"):
        run("exclude(classes=['c00']) | exclude(classes=[0])")


@dataclasses.dataclass(frozen=True)
class Folders(Source):
    """Nested folders as image_folder names them: id = path, name = last part (names repeat)."""

    name = "folders"

    def build_index(self) -> DataIndex:
        ids = ("cat", "dog", "toys/dog", "wild/cat", "a/fox", "b/fox")
        return DataIndex(np.repeat(np.arange(6), 2), np.zeros(12), ids, tuple(i.rsplit("/", 1)[-1] for i in ids))


def test_exclude_matches_ids_before_names_and_rejects_ambiguous_names():
    src = Folders()
    assert run("exclude(classes=['cat'])", source=src).classes == ("dog", "toys/dog", "wild/cat", "a/fox", "b/fox")
    assert run("exclude(classes=['dog', 'wild/cat'])", source=src).classes == ("cat", "toys/dog", "a/fox", "b/fox")
    with pytest.raises(PolicyError, match="'fox' is shared by 2 classes.*'a/fox', 'b/fox'"):
        run("exclude(classes=['fox'])", source=src)
    assert run("exclude(classes=['name04'])").num_classes == 9  # a unique name still works


def test_keep_classes_rejects_indices_outside_the_current_classes():
    subset = Subset.full(Tiny().index)
    for bad in ([-1], [0, 10]):
        with pytest.raises(PolicyError, match=r"outside 0\.\.9"):
            subset.keep_classes(bad)
    assert subset.keep_classes([9, 0]).classes == ("c09", "c00")


def test_drop_source_classes_thins_merged_classes():
    subset = Subset.full(Tiny().index)
    merged = subset.relabel(np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2]), ["g0", "g1", "g2"], ["G0", "G1", "G2"])
    thinned = merged.drop_source_classes([1, 3, 4])  # part of g0, all of g1
    assert thinned.classes == ("g0", "g2") and thinned.class_map.tolist() == [0, -1, 0, -1, -1, 1, 1, 1, 1, 1]
    assert thinned.class_counts().tolist() == [COUNTS[0] + COUNTS[2], sum(COUNTS[5:])]
    assert not np.isin(Tiny().index.labels[thinned.samples], [1, 3, 4]).any()
    with pytest.raises(PolicyError, match="outside"):
        merged.drop_source_classes([10])


@dataclasses.dataclass(frozen=True)
class Sloppy(Policy):
    """A plugin policy that slips: returns samples it should not (bypassing keep_samples)."""

    name = "sloppy"
    slip: str = "val"

    def apply(self, subset, tree, seeds):
        index = subset.index
        extra = {
            "val": index.split_samples("val")[:1],
            "dropped": np.flatnonzero(index.labels == 0)[:1],  # class c00 was excluded before
            "twice": subset.samples[:1],
            "outside": np.array([len(index)]),
        }[self.slip]
        samples = np.sort(np.concatenate([subset.samples, extra]))
        return dataclasses.replace(subset, samples=samples)


@pytest.mark.parametrize("slip", ["val", "dropped", "twice", "outside"])
def test_make_manifest_rejects_a_policy_that_keeps_foreign_samples(slip):
    chain = [*policies("exclude(classes=['c00'])"), Sloppy(slip)]
    with pytest.raises(PolicyError, match=rf"policy sloppy\(slip='{slip}'\)"):
        make_manifest(Tiny(), chain)
    assert make_manifest(Tiny(), chain[:1]).num_classes == 9


def test_split_halves_partition_the_classes():
    a, b = run("split(part='A')"), run("split(part='B')")
    assert a.num_classes == 5 and b.num_classes == 5
    assert set(a.classes).isdisjoint(b.classes) and set(a.classes) | set(b.classes) == set(Tiny().index.classes)
    odd = Tiny(counts=(5, 5, 5))
    assert (run("split(part='A')", source=odd).num_classes, run("split(part='B')", source=odd).num_classes) == (2, 1)


def test_chain_applies_left_to_right():
    first = run("random_classes(k=4)").classes[0]
    m = run(f"random_classes(k=4) | images_per_class(n=7) | exclude(classes=['{first}'])")
    assert m.num_classes == 3 and first not in m.classes and set(m.class_counts().tolist()) == {7}
    assert m.policy == f"random_classes(k=4) | images_per_class(n=7, take='exact') | exclude(classes=['{first}'])"
    with pytest.raises(PolicyError, match=f"no current class named '{first}'"):
        run(f"exclude(classes=['{first}']) | exclude(classes=['{first}'])")


def test_digest_is_reproducible_and_sensitive():
    spec = "random_classes(k=6) | images_per_class(n=8)"
    assert run(spec).digest == run(spec).digest
    assert run(spec, seed=1).digest != run(spec).digest
    assert run("images_per_class(n=12)").digest != run("all").digest
    assert run("fraction(p=1.0)").digest == run("all").digest  # same images and labels, same digest
    assert make_manifest(Tiny(counts=tuple(COUNTS[:-1]) + (23,)), policies("images_per_class(n=5)")).digest != run("images_per_class(n=5)").digest


def test_manifest_save_load_round_trip(tmp_path):
    m = run("random_classes(k=4) | images_per_class(n=9)", seed=3)
    m.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded.digest == m.digest and (loaded.samples == m.samples).all() and loaded.classes == m.classes
    text = (tmp_path / "manifest.json").read_text().replace('"count": 9', '"count": 8', 1)
    data = np.load(tmp_path / "manifest.npz")
    np.savez(tmp_path / "manifest.npz", samples=data["samples"][:-1], labels=data["labels"][:-1], class_map=data["class_map"])
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(Exception, match="corrupt"):
        Manifest.load(tmp_path)


def test_val_split_follows_the_kept_classes():
    m = run("exclude(classes=['c00']) | images_per_class(n=5)")
    samples, labels = m.split(Tiny().index, "val")
    assert len(samples) == 9 * 3 and (Tiny().index.splits[samples] == 1).all()
    assert [m.classes[l] for l in labels] == [Tiny().index.classes[c] for c in Tiny().index.labels[samples]]


def test_registered_policies_are_the_documented_ones():
    names = {e.name for e in get_registry().entries("policy")}
    assert {"all", "images_per_class", "fraction", "random_classes", "fixed_budget", "exclude", "split"} <= names


@settings(max_examples=40, deadline=None)
@given(n1=st.integers(1, 12), n2=st.integers(1, 12), k1=st.integers(1, 10), k2=st.integers(1, 10), seed=st.integers(0, 2**31))
def test_nesting_holds_for_any_sizes(n1, n2, k1, k2, seed):
    (n1, n2), (k1, k2) = sorted((n1, n2)), sorted((k1, k2))
    small = run(f"random_classes(k={k1}) | images_per_class(n={n1})", seed)
    large = run(f"random_classes(k={k2}) | images_per_class(n={n2})", seed)
    assert sample_set(small) <= sample_set(large)


@dataclasses.dataclass(frozen=True)
class LongNames(Source):
    """300 classes with WordNet-like ids and long names; class c has 5 + c % 7 training images."""

    name = "long_names"

    def build_index(self) -> DataIndex:
        index = make_index([5 + c % 7 for c in range(300)], val=1)
        names = tuple(f"a class with a long name, synonym {c}, another synonym, and more" for c in range(300))
        return DataIndex(index.labels, index.splits, tuple(f"n{c:08d}" for c in range(300)), names)


def test_too_few_images_names_the_worst_few_classes_once_in_one_short_line():
    with pytest.raises(PolicyError) as info:
        run("images_per_class(n=11)", source=LongNames())
    message = str(info.value)
    assert len(message) < 400 and len(message.splitlines()) == 1, message
    assert "but 258 of 300 classes have fewer, the worst: " in message and message.count(" has 5") == 3
    assert "n00000000" in message and message.count("n00000000") == 1  # the worst class, named once
    assert "a class with a long name, synonym 0, an… (n00000000) has 5" in message  # long names are cut


def test_a_misspelt_class_to_exclude_gets_a_did_you_mean():
    with pytest.raises(PolicyError) as info:
        run("exclude(classes=['c01', 'nmae02', 'zebra'])")
    message = str(info.value)
    assert message.startswith("no current class named 'nmae02', 'zebra'; for 'nmae02', did you mean 'name02'")
    assert len(message.splitlines()) == 1
