"""Studies of the label set: num_classes (coarser classes, all images kept) and coarse_to_fine (coarse labels, fine features?)."""

import dataclasses

from transferlab import Cell, PolicyError, Source, SpecError, Study

from .common import check_sizes, is_wordnet, level_sizes, on_source, policy, spread, targets, user_target, wordnet_levels

PAPER_BOTTOM_UP = (918, 753, 486, 79, 9)  # the paper's bottom-up ImageNet-1k levels (Figure 5)
PAPER_TOP_DOWN = (127,)  # and its top-down one


def wordnet_policy(study: str, source: Source, k: int, levels: dict[str, list[int]], methods: tuple[str, ...]) -> tuple[str, str]:
    """(method, wordnet_level spec) for the first method whose levels have k classes, else a PolicyError listing them."""
    for method in methods:
        if k in levels[method]:
            return method, policy("wordnet_level", classes=k, method=method)
    listed = "; ".join(f"{m}: {', '.join(map(str, levels[m]))}" for m in methods)
    raise PolicyError(f"{study}: {source.spec()} has no WordNet level with {k} classes; its levels ({listed})")


@dataclasses.dataclass(frozen=True)
class NumClasses(Study):
    """Are more classes better? The classes merged along the source's tree into fewer, coarser ones, every image kept."""

    name = "num_classes"
    axis = "number of classes"
    classes: tuple[int, ...] | None = None  # bottom-up WordNet level sizes, or coarsen sizes on other trees; None: see cells()
    top_down: tuple[int, ...] | None = None  # top-down WordNet level sizes (WordNet-labelled sources only); None: see cells()

    def cells(self, source: Source, target: str) -> list[Cell]:
        """On a WordNet-labelled source (every class id a wnid, as wordnet_level needs): wordnet_level cells, group
        'bottom_up' at `classes` (default: the paper's 918/753/486/79/9 where the source has all of them, as ImageNet-1k
        does, else up to 5 of its own levels spread on a log scale) and group 'top_down' at `top_down` (default: the paper's
        127 where it exists, else the first top-down round). On any other source: coarsen(k) cells, group 'coarsen', at
        `classes` (default: the tree's level sizes, nodes per depth)."""
        n = source.index.num_classes
        target = user_target(target)
        if not is_wordnet(source.index.classes):
            if self.top_down is not None:
                raise SpecError(f"num_classes: top_down needs a WordNet-labelled source; the classes of {source.spec()} are not wnids")
            sizes = sorted(set(self.classes), reverse=True) if self.classes else spread(level_sizes(source.tree))
            if not sizes:
                raise PolicyError(f"num_classes: the class tree of {source.spec()} has no level between 2 and {n - 1} classes "
                                  f"(it is flat); pass classes=[...] to coarsen it to chosen counts")
            check_sizes(self.name, sizes, n, source)
            cells = [Cell(f"{k} classes", policy("coarsen", k=k), (target,), value=k, group="coarsen") for k in sizes]
            return self.with_references(cells, f"all {n} classes")
        levels = wordnet_levels(source.index.classes)
        inner = {m: [k for k in counts if 2 <= k < n] for m, counts in levels.items()}
        bottom_up = self.classes or (PAPER_BOTTOM_UP if set(PAPER_BOTTOM_UP) <= set(inner["bottom_up"]) else spread(inner["bottom_up"]))
        top_down = self.top_down if self.top_down is not None else (
            PAPER_TOP_DOWN if set(PAPER_TOP_DOWN) <= set(inner["top_down"]) else tuple(inner["top_down"][:1]))
        cells = []
        for method, sizes in (("bottom_up", bottom_up), ("top_down", top_down)):
            check_sizes(self.name, sizes, n, source)
            for k in sorted(set(sizes), reverse=True):
                _, spec = wordnet_policy(self.name, source, k, levels, (method,))
                cells.append(Cell(f"{k} classes ({method.replace('_', '-')})", spec, (target,), value=k, group=method))
        if not cells:
            raise PolicyError(f"num_classes: {source.spec()} has no WordNet level between 2 and {n - 1} classes")
        return self.with_references(cells, f"all {n} classes")


@dataclasses.dataclass(frozen=True)
class CoarseToFine(Study):
    """Do coarse labels give fine features? Pretrain on a coarse level vs the fine labels; measure both on the source's fine
    labels and its coarse ones (its held-out test images), and on --target."""

    name = "coarse_to_fine"
    axis = "number of pretraining classes"
    classes: int | None = None  # the coarse level's class count; None: see cells()

    def cells(self, source: Source, target: str) -> list[Cell]:
        """Group 'coarse' pretrains on the coarse level: on a WordNet-labelled source a wordnet_level (default: the first
        top-down round, the paper's 127 on ImageNet-1k), else coarsen (default: the tree's finest level below the leaves);
        group 'fine' pretrains on every class. Both, and the floor and full rows, are measured on the source itself (fine),
        on `SOURCE | <the coarse policy>` (fine → coarse) and on the user's target."""
        n = source.index.num_classes
        target = user_target(target)
        if is_wordnet(source.index.classes):
            levels = wordnet_levels(source.index.classes)
            inner = [k for k in levels["top_down"] if 2 <= k < n]
            if self.classes is None and not inner:
                raise PolicyError(f"coarse_to_fine: {source.spec()} has no top-down WordNet level between 2 and {n - 1} classes; "
                                  f"pass classes= (its bottom-up levels: {', '.join(map(str, levels['bottom_up']))})")
            k = inner[0] if self.classes is None else self.classes
            check_sizes(self.name, [k], n, source)
            _, coarse = wordnet_policy(self.name, source, k, levels, ("top_down", "bottom_up"))
        else:
            sizes = level_sizes(source.tree)
            if self.classes is None and not sizes:
                raise PolicyError(f"coarse_to_fine: the class tree of {source.spec()} has no level between 2 and {n - 1} classes "
                                  f"(it is flat); pass classes= to coarsen it")
            k = sizes[0] if self.classes is None else self.classes
            check_sizes(self.name, [k], n, source)
            coarse = policy("coarsen", k=k)
        measured = targets(source.spec(), on_source(source, coarse), target)
        cells = [Cell(f"coarse ({k} classes)", coarse, measured, value=k, group="coarse"),
                 Cell(f"fine ({n} classes)", "all", measured, value=n, group="fine")]
        return self.with_references(cells, f"all {n} classes")
