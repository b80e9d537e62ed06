"""Current classes as WordNet synsets: checking that their ids are wnids, and relabelling them to other synsets."""

from collections.abc import Mapping, Sequence

import numpy as np

from transferlab import DataError, PolicyError, Subset

from .hierarchy import lemma_name, synset


def require_wnids(ids: Sequence[str], what: str) -> list[str]:
    """The ids, or a PolicyError naming those that are not WordNet 3.0 noun ids."""
    bad = []
    for wnid in ids:
        try:
            synset(wnid)
        except DataError:
            bad.append(wnid)
    if bad:
        listed = ", ".join(map(repr, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise PolicyError(f"{what} needs classes whose ids are WordNet noun ids (wnids such as 'n01440764'); these are not: {listed}")
    return list(ids)


def relabel_to_synsets(subset: Subset, label_of: Mapping[str, str]) -> Subset:
    """Map every current class (by id) to a synset; new classes are those synsets in order of first use, named by lemma."""
    labels = [label_of[c] for c in subset.classes]
    new_classes = list(dict.fromkeys(labels))
    position = {wnid: i for i, wnid in enumerate(new_classes)}
    return subset.relabel(np.array([position[w] for w in labels]), new_classes, [lemma_name(w) for w in new_classes])
