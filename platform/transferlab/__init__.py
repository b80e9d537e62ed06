"""transferlab: which pretraining data makes visual features transfer well?"""

import os

# OpenMP threads that spin while waiting make torch many times slower when another process shares the cores;
# this must be set before torch is first imported, and nothing above this line imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .class_tree import ClassTree
from .components import Component
from .data_index import DataIndex
from .errors import DataError, PluginError, PolicyError, SpecError, TransferlabError
from .hookspecs import hookimpl
from .manifest import Manifest
from .plugins import get_registry
from .policies import Policy, make_manifest
from .search_space import Allocation, SearchSpace, SpaceContext
from .sources import Source
from .studies import Cell, Study
from .subset import Seeds, Subset

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"  # in a source tree: platform/transferlab/ → the root


def package_version() -> str:
    """The version from the source tree's pyproject.toml when running from one (`mlflow run .` puts platform/ on
    PYTHONPATH without installing), else from the installed package's metadata; '0+unknown' if neither says."""
    try:
        project = tomllib.loads(PYPROJECT.read_text())["project"]
        if project.get("name") == "transferlab" and "version" in project:
            return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return version("transferlab")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = package_version()


def source(spec: str) -> Source:
    """A source from a spec string, e.g. `synthetic(seed=1)`, or `synthetic | split(part='B')` (a `subset` source)."""
    return get_registry().parse("source", spec)


def policies(spec: str) -> list[Policy]:
    """A policy chain from a spec string, e.g. `random_classes(k=10) | images_per_class(n=25)`."""
    return get_registry().parse_chain("policy", spec)


def select(source_spec: str, policy_spec: str = "all", seed: int = 0) -> Manifest:
    """Parse both specs (all errors before any data is touched), then build the manifest."""
    chain = policies(policy_spec)
    return make_manifest(source(source_spec), chain, seed)


__all__ = [
    "Allocation", "Cell", "ClassTree", "Component", "DataError", "DataIndex", "Manifest", "PluginError", "Policy", "PolicyError", "SearchSpace", "Seeds",
    "Source", "SpaceContext", "SpecError", "Study", "Subset", "TransferlabError", "get_registry", "hookimpl", "make_manifest", "policies",
    "select", "source",
]
