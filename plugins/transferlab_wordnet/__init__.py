"""WordNet (nltk) hierarchy and hierarchy policies: the paper's levels, coarsen to K, removing subtrees; class lists."""

from transferlab import hookimpl

from .access import wordnet
from .class_list import ClassList
from .coarsen import Coarsen
from .exclusion import ExcludeOverlap, ExcludeUnder, overlapping
from .hierarchy import bottom_up_levels, is_wnid, top_down_levels, wordnet_tree
from .levels import WordnetDepth, WordnetLevel
from .wnid_classes import require_wnids

__all__ = ["bottom_up_levels", "is_wnid", "overlapping", "require_wnids", "top_down_levels", "wordnet", "wordnet_tree"]  # for other plugins


@hookimpl
def register_sources(register):
    register(ClassList)


@hookimpl
def register_policies(register):
    for policy in (WordnetLevel, WordnetDepth, Coarsen, ExcludeUnder, ExcludeOverlap):
        register(policy)
