"""transferlab: which pretraining data makes visual features transfer well?"""

import os

# OpenMP threads that spin while waiting make torch many times slower when another process shares the cores;
# this must be set before torch is first imported, and nothing above this line imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import progress
from .api_version import API_VERSION
from .backbones import Backbone
from .cache import atomic_path, cache_dir, cache_key, storage, text_bytes
from .class_tree import ROOT, ClassTree
from .components import Component, format_value
from .data_index import SPLITS, DataIndex, split_code
from .errors import CacheError, DataError, DivergedError, PluginError, PolicyError, SpecError, StorageError, TransferlabError
from .file_source import (
    MAX_LISTED,
    DownloadableSource,
    FileSource,
    arrays_digest,
    carve,
    check_val_fraction,
    listing,
    row_splits,
    stamps_digest,
    text_keys,
)
from .hookspecs import hookimpl
from .images import decode_files, decode_image, fit, is_image_file, max_pixels, probe_image
from .manifest import Manifest
from .plugins import get_registry
from .policy import Policy, make_manifest
from .search_space import Allocation, SearchSpace, SpaceContext
from .sources import Source
from .specs import excerpt
from .studies import Cell, Study, split_target, target_spec
from .subset import Seeds, Subset, ranks_within_class
from .subset_source import SubsetSource
from .tasks import Task, TransferContext
from .training_spec import MAX_LR, MAX_WEIGHT_DECAY, Training

LAZY = {  # public names whose modules import torch: loaded on first use, so that light commands start without it
    "autocast": "devices", "seeded": "devices",
    "augment": "loader", "batches": "loader", "epoch_generator": "loader", "fits_on_device": "loader", "normalize": "loader",
    "to_device": "loader",
    "decay_groups": "training", "scheduled_rate": "training",
}


def __getattr__(name: str):
    """The torch-backed public names (LAZY), imported when first asked for."""
    if name not in LAZY:
        raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


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


__all__ = [  # the public surface: everything a plugin needs (docs/plugins.md); built-in plugins import nothing else of ours
    # components and what they receive
    "Allocation", "Backbone", "Cell", "ClassTree", "Component", "DataIndex", "DownloadableSource", "FileSource", "Manifest", "Policy",
    "ROOT", "SPLITS", "SearchSpace", "Seeds", "Source", "SpaceContext", "Study", "Subset", "SubsetSource", "Task", "Training",
    "TransferContext",
    # plugin hooks, the API's version and errors
    "API_VERSION", "CacheError", "DataError", "DivergedError", "PluginError", "PolicyError", "SpecError", "StorageError", "TransferlabError", "hookimpl",
    # building components from specs
    "get_registry", "make_manifest", "policies", "select", "source",
    # helpers the built-in plugins use
    "MAX_LISTED", "MAX_LR", "MAX_WEIGHT_DECAY", "arrays_digest", "atomic_path", "augment", "autocast", "batches", "cache_dir", "cache_key", "carve",
    "check_val_fraction", "decay_groups", "decode_files", "decode_image", "epoch_generator", "excerpt", "fit", "fits_on_device", "format_value",
    "is_image_file", "listing", "max_pixels", "normalize", "probe_image", "progress", "ranks_within_class", "row_splits",
    "scheduled_rate", "seeded", "split_code", "split_target", "stamps_digest", "storage", "target_spec", "text_bytes", "text_keys",
    "to_device",
]
