"""The first-hypernym hierarchy over WordNet noun ids (wnids) and the paper's label sets built from it.

A wnid such as "n01440764" is the WordNet 3.0 noun offset 01440764. A synset's *first hypernym* is the hypernym
whose synset name sorts first (older nltk sorted `hypernyms()` by name; the authors' label sets depend on it); a
synset with no hypernym but an instance hypernym (a few ImageNet-21k classes) uses its first instance hypernym, so
every chain ends at entity.n.01.
"""

import re
import warnings
from collections.abc import Sequence
from functools import cache

from transferlab import ClassTree, DataError

from .access import wordnet

ROOT = "n00001740"  # entity.n.01
WNID = re.compile(r"n\d{8}")
TOP_DOWN_ROUNDS = 3  # the paper's top-down label sets: 127, 10 and 2 classes on ImageNet-1k
CLASS_LEAF = "/self"  # node id suffix of a class that is also the ancestor of another class: "n02084071/self"


def is_wnid(text: str) -> bool:
    """Whether `text` has the form of a wnid ('n' and eight digits)."""
    return bool(WNID.fullmatch(text))


@cache
def synset(wnid: str):
    """The nltk Synset of a wnid; DataError if it is not a WordNet 3.0 noun."""
    found = None
    if is_wnid(wnid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns, then returns None, for an offset that starts no synset
            found = wordnet().synset_from_pos_and_offset("n", int(wnid[1:]))
    if found is None:
        raise DataError(f"{wnid!r} is not a WordNet 3.0 noun id (a wnid such as 'n01440764')")
    return found


def wnid_of(syn) -> str:
    """The wnid of a noun Synset."""
    return f"n{syn.offset():08d}"


@cache
def lemma_name(wnid: str) -> str:
    """First lemma of a synset, with spaces, e.g. 'great white shark'."""
    return synset(wnid).lemmas()[0].name().replace("_", " ")


@cache
def first_hypernym(wnid: str) -> str | None:
    """The hypernym whose synset name sorts first (instance hypernyms only when there is no hypernym); None at the root."""
    syn = synset(wnid)
    parents = syn.hypernyms() or syn.instance_hypernyms()
    return wnid_of(min(parents, key=lambda s: s.name())) if parents else None


@cache
def chain(wnid: str) -> tuple[str, ...]:
    """First-hypernym chain from the root down to `wnid` (both included); its depth is len - 1."""
    parent = first_hypernym(wnid)
    return (wnid,) if parent is None else chain(parent) + (wnid,)


@cache
def all_ancestors(wnid: str) -> frozenset[str]:
    """Every synset on any path to the root through hypernyms and instance hypernyms, `wnid` included."""
    syn = synset(wnid)
    found = {wnid}
    for parent in syn.hypernyms() + syn.instance_hypernyms():
        found |= all_ancestors(wnid_of(parent))
    return frozenset(found)


def resolve(name: str) -> str:
    """The wnid of a wnid or a synset name such as 'dog.n.01'; DataError if WordNet has no such noun."""
    if is_wnid(name):
        synset(name)
        return name
    reader = wordnet()
    from nltk.corpus.reader.wordnet import WordNetError  # nltk is imported on first use (see access.py)

    try:
        syn = reader.synset(name)
    except (WordNetError, ValueError) as exc:
        raise DataError(f"{name!r} is neither a wnid nor a WordNet noun synset name such as 'dog.n.01' ({exc})") from None
    if syn.pos() != "n":
        raise DataError(f"{name!r} is a {syn.lexname()} synset, not a noun")
    return wnid_of(syn)


def depth_level(wnids: Sequence[str], depth: int) -> dict[str, str]:
    """Each wnid's first-hypernym ancestor at `depth` (root 0); wnids above that depth keep themselves."""
    return {w: chain(w)[min(depth, len(chain(w)) - 1)] for w in wnids}


def bottom_up_levels(wnids: Sequence[str]) -> list[dict[str, str]]:
    """The paper's bottom-up label sets: with D the deepest chain, move every label at depth D to its first hypernym,
    then D -= 1; entry i is the mapping after i + 1 moves (the wnids themselves are not an entry), the last is the root."""
    deepest = max(len(chain(w)) - 1 for w in wnids)
    return [depth_level(wnids, d) for d in range(deepest - 1, -1, -1)]


def top_down_levels(wnids: Sequence[str], rounds: int = TOP_DOWN_ROUNDS) -> list[dict[str, str]]:
    """The paper's top-down label sets: each round lifts every label to its first hypernym, then every label that lies
    on the first-hypernym chain below another current label is absorbed into it; entry i is the mapping after round i + 1.

    The authors absorb in class order, one label at a time; the outcome does not depend on that order: each label
    ends at the highest of the round's lifted labels on its chain, which is what is computed here.
    """
    labels = {w: w for w in wnids}
    levels = []
    for _ in range(rounds):
        lifted = {w: first_hypernym(label) or label for w, label in labels.items()}
        present = set(lifted.values())
        top = {label: next(a for a in chain(label) if a in present) for label in present}
        labels = {w: top[label] for w, label in lifted.items()}
        levels.append(labels)
    return levels


def wordnet_tree(wnids: Sequence[str]) -> ClassTree:
    """The first-hypernym tree over `wnids`, rooted at entity (n00001740); node ids are wnids, names first lemmas.

    Classes must be leaves: a class that is also an ancestor of another class (ImageNet-21k has thousands) sits on its
    own leaf `<wnid>/self` under its synset's node `<wnid>`, with the same name.
    """
    wnids = list(wnids)
    parents: dict[str, str | None] = {}
    for w in wnids:
        path = chain(w)
        parents.setdefault(path[0], None)
        parents.update(zip(path[1:], path[:-1]))
    inner = {p for p in parents.values() if p is not None}
    leaves = [w + CLASS_LEAF if w in inner else w for w in wnids]
    parents.update({leaf: w for w, leaf in zip(wnids, leaves) if leaf != w})
    names = {node: lemma_name(node.removesuffix(CLASS_LEAF)) for node in parents}
    return ClassTree.from_parents(parents, leaves, names)
