"""transferlab: which pretraining data makes visual features transfer well?"""

import os

# OpenMP threads that spin while waiting make torch many times slower when another process shares the cores;
# this must be set before torch is first imported, and nothing above this line imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from importlib.metadata import PackageNotFoundError, version

from .class_tree import ClassTree
from .components import Component
from .data_index import DataIndex
from .errors import DataError, PluginError, PolicyError, SpecError, TransferlabError
from .hookspecs import hookimpl
from .manifest import Manifest
from .plugins import get_registry
from .policies import Policy, make_manifest
from .sources import Source
from .subset import Seeds, Subset

try:
    __version__ = version("transferlab")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"


def source(spec: str) -> Source:
    """A source from a spec string, e.g. `synthetic(seed=1)`."""
    return get_registry().parse("source", spec)


def policies(spec: str) -> list[Policy]:
    """A policy chain from a spec string, e.g. `random_classes(k=10) | images_per_class(n=25)`."""
    return get_registry().parse_chain("policy", spec)


def select(source_spec: str, policy_spec: str = "all", seed: int = 0) -> Manifest:
    """Parse both specs (all errors before any data is touched), then build the manifest."""
    chain = policies(policy_spec)
    return make_manifest(source(source_spec), chain, seed)


__all__ = [
    "ClassTree", "Component", "DataError", "DataIndex", "Manifest", "PluginError", "Policy", "PolicyError", "Seeds",
    "Source", "SpecError", "Subset", "TransferlabError", "get_registry", "hookimpl", "make_manifest", "policies",
    "select", "source",
]
