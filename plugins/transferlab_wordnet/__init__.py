"""WordNet (nltk) hierarchy and hierarchy policies: the paper's levels, coarsen to K, removing subtrees; class lists."""

from transferlab import hookimpl

from .class_list import ClassList
from .coarsen import Coarsen
from .exclusion import ExcludeOverlap, ExcludeUnder
from .levels import WordnetDepth, WordnetLevel


@hookimpl
def register_sources(register):
    register(ClassList)


@hookimpl
def register_policies(register):
    for policy in (WordnetLevel, WordnetDepth, Coarsen, ExcludeUnder, ExcludeOverlap):
        register(policy)
