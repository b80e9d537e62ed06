"""What the built-in studies share: building policy specs, reading a source's class counts, tree levels and WordNet levels."""

from collections.abc import Sequence

import numpy as np

from transferlab import ClassTree, PolicyError, Source, get_registry, split_target, target_spec
from transferlab_wordnet import bottom_up_levels, is_wnid, require_wnids, top_down_levels, wordnet

MAX_LEVELS = 5  # the paper shows 5 of ImageNet's 17 bottom-up levels; more levels make more runs, not a clearer curve


def policy(name: str, **params) -> str:
    """Canonical spec of a registered policy (its parameters checked now, not when a cell runs)."""
    return get_registry().get("policy", name)(**params).spec()


def train_counts(source: Source) -> np.ndarray:
    """Training images per class of the source."""
    return source.index.class_counts("train")


def user_target(target: str) -> str:
    """The user's --target in canonical form (`SOURCE` or `SOURCE | POLICY ...`); a bad spec fails here, before any run."""
    return target_spec(*split_target(target))


def on_source(source: Source, policy_spec: str) -> str:
    """A target made of the study's own source with a policy chain, e.g. its held-out half B."""
    return f"{source.spec()} | {policy_spec}"


def targets(*specs: str) -> tuple[str, ...]:
    """Distinct target specs in order."""
    return tuple(dict.fromkeys(specs))


def is_wordnet(classes: Sequence[str]) -> bool:
    """Whether every class id is a WordNet noun id, as wordnet_level requires; WordNet is loaded only when every id has a
    wnid's form, and a missing WordNet is then an error saying how to install it (not a reason to treat wnids as names)."""
    if not classes or not all(map(is_wnid, classes)):
        return False
    wordnet()
    try:
        require_wnids(classes, "a study")
    except PolicyError:
        return False
    return True


def level_sizes(tree: ClassTree) -> list[int]:
    """The tree's natural level sizes: the number of nodes at each depth, distinct, from 2 up to one below the leaf count
    (the leaf count is the full row), largest first."""
    counts = np.bincount(tree.depths)
    return sorted({int(n) for n in counts if 2 <= n < tree.num_classes}, reverse=True)


def wordnet_levels(classes: Sequence[str]) -> dict[str, list[int]]:
    """Class counts of the paper's WordNet label sets on these classes: 'bottom_up' (every level) and 'top_down' (its rounds)."""
    return {"bottom_up": [len(set(level.values())) for level in bottom_up_levels(classes)],
            "top_down": [len(set(level.values())) for level in top_down_levels(classes)]}


def spread(sizes: Sequence[int], most: int = MAX_LEVELS) -> list[int]:
    """At most `most` of the sizes, evenly spread on a log scale and always with the largest and smallest; largest first."""
    sizes = sorted(set(sizes), reverse=True)
    if len(sizes) <= most:
        return sizes
    logs = np.log(sizes)
    picked = {sizes[int(np.argmin(abs(logs - t)))] for t in np.linspace(logs[0], logs[-1], most)}
    return sorted(picked, reverse=True)


def check_sizes(study: str, sizes: Sequence[int], num_classes: int, source: Source) -> None:
    """A PolicyError unless every size lies between 2 and one below the source's class count."""
    bad = [k for k in sizes if not 2 <= k < num_classes]
    if bad:
        raise PolicyError(f"{study}: {source.spec()} has {num_classes} classes, so class counts must lie in 2..{num_classes - 1}; "
                          f"got {', '.join(map(str, bad))}")
