"""Studies: the Cell/Study contract, each built-in study's grid on a tiny synthetic source and on ImageNet-1k's class list
(cells, labels, roles, policies that build nested manifests, targets), the dry-run grid and estimates, plugin studies."""

import dataclasses
import io

import numpy as np
import pytest
from rich.console import Console

import transferlab
from test_plugins import install_plugin
from tiny_specs import SOURCE, TARGET
from transferlab import Cell, PluginError, PolicyError, SpecError, Study, get_registry, make_manifest, plugins, policies, source
from transferlab.studies import estimate, images_seen, pretraining_runs, split_target, target_spec
from transferlab.study_grid import grid, grid_table
from transferlab.training_spec import Training
from transferlab_sources.synthetic import Synthetic

IMAGENET = "class_list(dataset='imagenet-1k')"
IMAGENET_R = "class_list(dataset='imagenet-r')"
BUILTIN = {"images_per_class", "num_classes", "coarse_to_fine", "fixed_budget", "target_removed", "class_split"}


@pytest.fixture(scope="module")
def tiny():
    return source(SOURCE)


@pytest.fixture(scope="module")
def target():
    return source(TARGET).spec()


def study(spec: str) -> Study:
    return get_registry().parse("study", spec)


def cells_of(spec: str, src, tgt) -> list[Cell]:
    return study(spec).checked_cells(src, tgt)


def manifest(src, cell: Cell, seed: int = 0):
    return make_manifest(src, policies(cell.policy), seed)


def source_classes(m) -> set[int]:
    """Source class numbers a manifest keeps."""
    return set(np.flatnonzero(m.class_map >= 0).tolist())


def check_references(cells: list[Cell]) -> None:
    """The floor first and the full row last, both policy 'all', measured on every target the cells use."""
    floor, *middle, full = cells
    assert (floor.role, floor.label, floor.policy, floor.value) == ("floor", "random init", "all", None)
    assert (full.role, full.policy, full.value) == ("full", "all", None)
    assert {c.role for c in middle} == {"cell"}
    used = tuple(dict.fromkeys(t for c in middle for t in c.targets))
    assert floor.targets == full.targets == used


def test_contract_is_public_and_cells_are_frozen():
    assert {"Study", "Cell"} <= set(transferlab.__all__) and Study.kind == "study"
    cell = Cell("x", "all", ["a", "b"])
    assert cell.targets == ("a", "b") and cell.role == "cell" and cell.trains and not Cell("f", "all", ("a",), role="floor").trains
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.label = "y"
    with pytest.raises(PluginError, match="role 'ceiling'"):
        Cell("x", "all", ("a",), role="ceiling")


def test_builtin_studies_are_registered_with_axes_and_one_line_docstrings():
    entries = {e.name: e for e in get_registry().entries("study")}
    assert BUILTIN <= set(entries) and {entries[n].plugin for n in BUILTIN} == {"transferlab_studies"}
    for name in BUILTIN:
        cls = entries[name].cls
        assert cls.axis and "\n\n" not in cls.__doc__.strip(), name


def test_images_per_class_cells_are_the_papers_fractions_and_nest(tiny, target):
    cells = cells_of("images_per_class", tiny, target)
    check_references(cells)
    # median 20 per class: 20 × 500/1300 = 7.7 → 8, 3.8 → 4, 1.9 → 2, 0.77 → 1, 0.38 → 1 (one cell)
    assert [c.label for c in cells] == ["random init", "8 per class", "4 per class", "2 per class", "1 per class", "all (20 per class)"]
    assert [c.value for c in cells[1:-1]] == [8, 4, 2, 1]
    assert cells[1].policy == "images_per_class(n=8, take='exact')"
    assert all(c.targets == (target,) for c in cells)
    for seed in (0, 1):
        kept = [set(manifest(tiny, c, seed).samples.tolist()) for c in cells[1:-1]]
        assert all(small < large for large, small in zip(kept, kept[1:]))  # nested, strictly
        for c in cells[1:-1]:
            assert manifest(tiny, c, seed).class_counts().tolist() == [c.value] * 4
    assert [c.label for c in cells_of("images_per_class(fractions=[0.5], per_class=10)", tiny, target)[1:-1]] == ["5 per class"]


def test_images_per_class_errors(tiny, target):
    with pytest.raises(SpecError, match=r"fractions must be .* in \(0, 1\)"):
        study("images_per_class(fractions=[1.5])")
    with pytest.raises(PolicyError, match="at most 1 training images per class"):
        cells_of("images_per_class", source("synthetic(branching=[2, 2, 2], train=1, val=1, test=1)"), target)


def test_num_classes_on_a_tree_coarsens_at_its_levels(tiny, target):
    cells = cells_of("num_classes", tiny, target)
    check_references(cells)
    assert [(c.label, c.policy, c.value, c.group) for c in cells[1:-1]] == [("2 classes", "coarsen(k=2)", 2, "coarsen")]
    assert cells[-1].label == "all 4 classes"
    m = manifest(tiny, cells[1])
    assert m.num_classes == 2 and len(m.samples) == 80  # all images kept
    deeper = source("synthetic(branching=[2, 3, 4], train=2, val=1, test=1)")  # 18 classes: 2 shapes, 6 shape/hues
    assert [c.value for c in cells_of("num_classes", deeper, target)[1:-1]] == [6, 2]
    assert [c.policy for c in cells_of("num_classes(classes=[3])", tiny, target)[1:-1]] == ["coarsen(k=3)"]


def test_num_classes_errors(tiny, target):
    with pytest.raises(PolicyError, match=r"class counts must lie in 2\.\.3; got 4"):
        cells_of("num_classes(classes=[4])", tiny, target)
    with pytest.raises(SpecError, match="top_down needs a WordNet-labelled source"):
        cells_of("num_classes(top_down=[2])", tiny, target)
    with pytest.raises(PolicyError, match="it is flat"):
        cells_of("num_classes", source("synthetic(branching=[5], train=2, val=1, test=1)"), target)


def test_num_classes_on_imagenet_are_the_papers_wordnet_levels(loaded_wordnet):
    imagenet = source(IMAGENET)
    cells = cells_of("num_classes", imagenet, IMAGENET_R)
    check_references(cells)
    middle = cells[1:-1]
    assert [(c.value, c.group) for c in middle] == [(k, "bottom_up") for k in (918, 753, 486, 79, 9)] + [(127, "top_down")]
    assert middle[0].policy == "wordnet_level(classes=918, method='bottom_up')" and middle[0].label == "918 classes (bottom-up)"
    for c in middle:
        m = manifest(imagenet, c)
        assert m.num_classes == c.value and len(m.samples) == 1000
    with pytest.raises(PolicyError, match="no WordNet level with 100 classes; its levels"):
        cells_of("num_classes(classes=[100])", imagenet, IMAGENET_R)


def test_coarse_to_fine_measures_fine_and_coarse_labels_of_the_source(tiny, target):
    cells = cells_of("coarse_to_fine", tiny, target)
    check_references(cells)
    coarse, fine = cells[1:-1]
    assert (coarse.group, coarse.policy, coarse.value, fine.group, fine.policy, fine.value) == ("coarse", "coarsen(k=2)", 2, "fine", "all", 4)
    assert coarse.targets == fine.targets == (tiny.spec(), f"{tiny.spec()} | coarsen(k=2)", target)
    fine_target, coarse_target = (split_target(t) for t in coarse.targets[:2])
    assert fine_target[0] == tiny and not fine_target[1]
    assert coarse_target[0] == tiny and coarse_target[1] == policies("coarsen(k=2)")
    assert manifest(tiny, coarse).num_classes == 2
    with pytest.raises(PolicyError, match="it is flat"):
        cells_of("coarse_to_fine", source("synthetic(branching=[5], train=2, val=1, test=1)"), target)


def test_coarse_to_fine_on_imagenet_uses_the_top_down_127(loaded_wordnet):
    imagenet = source(IMAGENET)
    coarse = cells_of("coarse_to_fine", imagenet, IMAGENET_R)[1]
    assert coarse.policy == "wordnet_level(classes=127, method='top_down')" and coarse.label == "coarse (127 classes)"
    assert coarse.targets == (imagenet.spec(), f"{imagenet.spec()} | {coarse.policy}", IMAGENET_R)
    assert cells_of("coarse_to_fine(classes=79)", imagenet, IMAGENET_R)[1].policy == "wordnet_level(classes=79, method='bottom_up')"
    with pytest.raises(PolicyError, match="no WordNet level with 100 classes"):
        cells_of("coarse_to_fine(classes=100)", imagenet, IMAGENET_R)


def test_fixed_budget_splits_one_budget(tiny, target):
    cells = cells_of("fixed_budget", tiny, target)
    check_references(cells)
    # the default budget: 2 classes (the fewest) × 20 (the smallest class) = 40 images
    assert [(c.label, c.value) for c in cells[1:-1]] == [("4 classes × 10", 4), ("2 classes × 20", 2)]
    assert cells[1].policy == "fixed_budget(classes=4, images=40, take='redistribute')"
    for c in cells[1:-1]:
        m = manifest(tiny, c)
        assert len(m.samples) == 40 and m.num_classes == c.value
    short = cells_of("fixed_budget(images=42, take='available')", tiny, target)
    assert [len(manifest(tiny, c).samples) for c in short[1:-1]] == [42, 40]  # 2 classes hold only 40


def test_fixed_budget_errors(tiny, target):
    with pytest.raises(PolicyError, match="2 smallest classes hold 40 images, less than the budget of 42"):
        cells_of("fixed_budget(images=42)", tiny, target)
    with pytest.raises(PolicyError, match="cannot give each of 4 classes an image"):
        cells_of("fixed_budget(images=3)", tiny, target)
    with pytest.raises(PolicyError, match="at least two class counts"):
        cells_of("fixed_budget(classes=[4])", tiny, target)
    with pytest.raises(PolicyError, match="at least two class counts within 1..4"):
        cells_of("fixed_budget(classes=[8, 2])", tiny, target)


def test_target_removed_by_class_names_vs_as_many_random(tiny):
    overlapping = source("synthetic(branching=[1, 2, 2], train=2, val=1, test=1)").spec()  # circle/red/solid, circle/cyan/solid
    cells = cells_of("target_removed", tiny, overlapping)
    check_references(cells)
    removed, random = cells[1:-1]
    assert (removed.group, removed.value, random.group, random.value) == ("overlap", 2, "random", 2)
    assert removed.policy == "exclude(classes=['circle/red/solid', 'circle/cyan/solid'])"
    assert random.policy == "random_classes(k=2)" and removed.label == "target's 2 classes removed"
    assert set(manifest(tiny, removed).classes) == {"square/red/solid", "square/cyan/solid"}
    assert manifest(tiny, random, seed=1).num_classes == 2
    assert all(c.targets == (overlapping,) for c in cells)


def test_target_removed_says_when_nothing_or_everything_overlaps(tiny, target):
    with pytest.raises(PolicyError, match="no class of .* overlaps the target .* there is nothing to remove"):
        cells_of("target_removed", tiny, target)
    with pytest.raises(PolicyError, match="every class of .* overlaps the target"):
        cells_of("target_removed", tiny, SOURCE)


def test_target_removed_on_imagenet_uses_wordnet(loaded_wordnet):
    imagenet = source(IMAGENET)
    removed, random = cells_of("target_removed", imagenet, IMAGENET_R)[1:-1]
    assert removed.policy == f"exclude_overlap(target={IMAGENET_R!r})" and random.policy == "random_classes(k=800)"
    assert manifest(imagenet, removed).num_classes == 800 == removed.value
    # a target chosen by a policy: the overlap is decided on the classes it keeps, then listed explicitly
    chosen = f"{IMAGENET} | random_classes(k=10)"
    removed = cells_of("target_removed", imagenet, chosen)[1]
    picked = make_manifest(imagenet, policies("random_classes(k=10)")).classes
    assert removed.policy.startswith("exclude(classes=[") and not set(picked) & set(manifest(imagenet, removed).classes)


def test_class_split_measures_on_the_held_out_half(tiny, target):
    cells = cells_of("class_split", tiny, target)
    check_references(cells)
    for cell, how in zip(cells[1:-1], ("random", "min_overlap")):
        assert (cell.group, cell.policy, cell.value) == (how, f"split(how={how!r}, part='A')", 2)
        assert cell.targets == (f"{tiny.spec()} | split(how={how!r}, part='B')", target)
        half_b_source, half_b = split_target(cell.targets[0])
        assert half_b_source == tiny
        for seed in (0, 1):
            a, b = source_classes(manifest(tiny, cell, seed)), source_classes(make_manifest(tiny, half_b, seed))
            assert not a & b and a | b == set(range(4))
    assert [c.group for c in cells_of("class_split(how=['min_overlap'])", tiny, target)[1:-1]] == ["min_overlap"]
    with pytest.raises(SpecError, match="how must name at least one"):
        study("class_split(how=[])")
    with pytest.raises(PolicyError, match="has 1 class; halves need at least 2"):
        cells_of("class_split", source("synthetic(branching=[2], train=2, val=1, test=1)"), target)


def test_every_target_parses_and_the_users_target_is_in_every_study(tiny, target):
    overlapping = "synthetic(branching=[1, 2, 2], train=2, val=1, test=1)"
    for name in sorted(BUILTIN):
        tgt = source(overlapping).spec() if name == "target_removed" else target
        cells = cells_of(name, tiny, tgt)
        assert all(tgt in c.targets for c in cells), name
        for spec in {t for c in cells for t in c.targets}:
            assert target_spec(*split_target(spec)) == spec  # canonical, and parses: a source then policies
    with pytest.raises(SpecError, match="unknown source 'nope'"):
        cells_of("images_per_class", tiny, "nope(k=1)")


def test_estimate_counts_images_and_images_seen_like_the_training_loop(tiny, target):
    cells = cells_of("images_per_class", tiny, target)
    by_steps = estimate(cells, tiny, Training(steps=10, batch_size=16))
    assert [(e.images, e.steps, e.images_seen) for e in by_steps] == [
        (80, 0, 0), (32, 10, 160), (16, 10, 160), (8, 10, 80), (4, 10, 40), (80, 10, 160)]  # a subset under a batch is one batch
    by_epochs = estimate(cells, tiny, Training(epochs=2, batch_size=16))
    assert [(e.steps, e.images_seen) for e in by_epochs] == [(0, 0), (4, 64), (2, 32), (2, 16), (2, 8), (10, 160)]  # whole batches only
    assert images_seen(40, Training(epochs=3, batch_size=16)) == 3 * 2 * 16  # 40 images: 2 whole batches an epoch
    assert pretraining_runs(cells, 3) == 15


def test_grid_table_lists_cells_and_runs_without_touching_images(tiny, target, monkeypatch):
    def no_pixels(*args, **kwargs):
        raise AssertionError("a dry run read pixels")

    monkeypatch.setattr(Synthetic, "load", no_pixels)
    monkeypatch.setattr(Synthetic, "pixels", property(no_pixels))
    fresh = source(SOURCE)
    table = grid_table(study("images_per_class"), fresh, target, Training(steps=10, batch_size=16), seeds=2)
    out = io.StringIO()
    Console(file=out, width=400).print(table)
    text = out.getvalue()
    assert "10 pretraining runs (5 rows × 2 seeds; the random-init floor trains nothing); 10 steps of batch 16" in text
    for header in ("group", "label", "policy", "classes", "images", "images seen", "targets"):
        assert header in text
    assert "images_per_class(n=8, take='exact')" in text and "part='heldout'" in text
    assert [row.images for row in grid(study("class_split"), fresh, target, Training(epochs=1))] == [80, 40, 40, 80]


@dataclasses.dataclass(frozen=True)
class Broken(Study):
    """A study whose cells break the contract in the way `mode` says."""

    name = "broken"
    mode: str = "no_floor"

    def cells(self, source, target):
        cells = [Cell("one", "images_per_class(n=2)", (target,), value=2), Cell("two", "images_per_class(n=1)", (target,), value=1)]
        if self.mode == "no_floor":
            return cells
        if self.mode == "same_label":
            cells[1] = dataclasses.replace(cells[1], label="one")
        if self.mode == "bad_policy":
            cells[1] = dataclasses.replace(cells[1], policy="images_per_klass(n=1)")
        if self.mode == "no_targets":
            cells[1] = dataclasses.replace(cells[1], targets=())
        return self.with_references(cells)


@pytest.mark.parametrize("mode, error, match", [
    ("no_floor", PluginError, "exactly one floor and one full row"),
    ("same_label", PluginError, "two cells share the label 'one'"),
    ("bad_policy", SpecError, "cell 'two' has an unusable policy: unknown policy 'images_per_klass'"),
    ("no_targets", PluginError, "cells 'two' list no targets"),
])
def test_checked_cells_refuses_broken_grids(tiny, target, mode, error, match):
    with pytest.raises(error, match=match):
        Broken(mode=mode).checked_cells(tiny, target)


THIRD_PARTY = '''
"""A third-party plugin: a study of k random classes."""
import dataclasses
from transferlab import Cell, Study, hookimpl


@dataclasses.dataclass(frozen=True)
class FewClasses(Study):
    """How few classes will do? k random classes."""

    name = "few_classes"
    axis = "number of classes"
    k: int = 2

    def cells(self, source, target):
        return self.with_references([Cell(f"{self.k} classes", f"random_classes(k={self.k})", (target,), value=self.k)])


@hookimpl
def register_studies(register):
    register(FewClasses)
'''


def test_a_plugin_can_add_a_study(tmp_path, monkeypatch, tiny, target):
    site = tmp_path / "site"
    install_plugin(site, "tl_few_classes", "tl_few_classes", THIRD_PARTY, "few-classes")
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    try:
        entry = {e.name: e for e in get_registry().entries("study")}["few_classes"]
        assert entry.plugin == "few-classes"
        rows = grid(study("few_classes(k=3)"), tiny, target, Training(steps=5, batch_size=16))
        assert [(r.cell.label, r.classes, r.images) for r in rows] == [("random init", 4, 80), ("3 classes", 3, 60), ("full source", 4, 80)]
    finally:
        monkeypatch.undo()
        plugins.reset()
    assert "few_classes" not in {e.name for e in get_registry().entries("study")}


def test_other_wordnet_sources_use_their_own_levels(loaded_wordnet, tmp_path, target):
    from transferlab_sources.idx import FashionMNIST

    wnids = tmp_path / "fashion.txt"
    wnids.write_text("\n".join(FashionMNIST.class_ids))
    fashion = source(f"class_list(dataset={str(wnids)!r})")  # Fashion-MNIST's classes, without its images
    cells = cells_of("num_classes", fashion, target)[1:-1]
    assert [(c.value, c.group) for c in cells] == [(9, "bottom_up"), (6, "bottom_up"), (4, "bottom_up"), (3, "bottom_up"), (4, "top_down")]
    assert cells_of("coarse_to_fine", fashion, target)[1].policy == "wordnet_level(classes=4, method='top_down')"
