"""Studies of which classes: target_removed (the source without the target's classes) and class_split (transfer to unseen classes)."""

import dataclasses
from typing import Literal

from transferlab import Cell, PolicyError, Source, SpecError, Study, get_registry, make_manifest, split_target
from transferlab_wordnet import overlapping

from .common import is_wordnet, on_source, policy, targets, user_target


def removal(source: Source, target: str) -> tuple[str, int, str]:
    """The policy removing the source classes that overlap the target, how many it removes, and how overlap was decided.

    Both WordNet-labelled: a source class overlaps when it lies under a target class or above one in WordNet (the rule of
    exclude_overlap, which a plain target spec uses). Otherwise: when its id or name equals, ignoring case, a target class's.
    """
    target_source, chain = split_target(target)
    if chain:  # the classes the chain makes; one choosing at random is read with seed 0, as the target of a seed-0 cell
        manifest = make_manifest(target_source, chain, 0)
        ids, names = manifest.classes, manifest.class_names
    else:
        ids, names = target_source.index.classes, target_source.index.class_names
    if is_wordnet(source.index.classes) and is_wordnet(ids):
        rule = "WordNet: source classes under or above a target class"
        if not chain:
            spec = policy("exclude_overlap", target=target)
            return spec, source.index.num_classes - make_manifest(source, get_registry().parse_chain("policy", spec)).num_classes, rule
        hits = overlapping(source.index.classes, set(ids))
    else:
        rule = "equal class ids or names, ignoring case"
        wanted = {t.casefold() for t in (*ids, *names)}
        hits = [c.casefold() in wanted or n.casefold() in wanted for c, n in zip(source.index.classes, source.index.class_names)]
    removed = [c for c, hit in zip(source.index.classes, hits) if hit]
    return (policy("exclude", classes=removed) if removed else ""), len(removed), rule


@dataclasses.dataclass(frozen=True)
class TargetRemoved(Study):
    """Does transfer need the target's classes? The source without the classes overlapping --target, vs as many random
    classes removed (the paper's PASCAL-removed ImageNet, for any target)."""

    name = "target_removed"
    axis = "number of pretraining classes"
    log_axis = False

    def cells(self, source: Source, target: str) -> list[Cell]:
        """Group 'overlap' removes the overlapping classes (see `removal` for the rule), group 'random' keeps as many random
        classes (random_classes(k=N - removed), seeded); both are measured on the user's target."""
        target = user_target(target)
        spec, removed, rule = removal(source, target)
        n = source.index.num_classes
        if removed == 0:
            raise PolicyError(f"target_removed: no class of {source.spec()} overlaps the target {target} ({rule}); "
                              f"there is nothing to remove")
        if removed == n:
            raise PolicyError(f"target_removed: every class of {source.spec()} overlaps the target {target} ({rule}); nothing would be left")
        kept = n - removed
        cells = [Cell(f"target's {removed} classes removed", spec, (target,), value=kept, group="overlap"),
                 Cell(f"{removed} random classes removed", policy("random_classes", k=kept), (target,), value=kept, group="random")]
        return self.with_references(cells, f"all {n} classes")


@dataclasses.dataclass(frozen=True)
class ClassSplit(Study):
    """Do features transfer to unseen classes? Pretrain on half A of the classes, measure on the held-out half B (random vs
    minimal-overlap halves of the class tree) and on --target."""

    name = "class_split"
    axis = "number of pretraining classes"
    log_axis = False
    how: tuple[Literal["random", "min_overlap"], ...] = ("random", "min_overlap")

    def validate(self):
        if not self.how:
            raise SpecError("class_split: how must name at least one way of halving: 'random', 'min_overlap'")

    def cells(self, source: Source, target: str) -> list[Cell]:
        """One cell per way of halving, group = `how`: split(part='A') pretrains, `SOURCE | split(part='B')` (the complement
        for the same seed) and the user's target are measured; the value is the number of classes in half A."""
        n = source.index.num_classes
        if n < 2:
            raise PolicyError(f"class_split: {source.spec()} has {n} class; halves need at least 2")
        target = user_target(target)
        cells = []
        for how in dict.fromkeys(self.how):
            half_a = policy("split", part="A", how=how)
            classes = make_manifest(source, get_registry().parse_chain("policy", half_a)).num_classes
            cells.append(Cell(f"half A, {how.replace('_', ' ')} ({classes} classes)", half_a,
                              targets(on_source(source, policy("split", part="B", how=how)), target), value=classes, group=how))
        return self.with_references(cells, f"all {n} classes")
