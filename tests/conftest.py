"""Shared fixtures: every test gets its own cache folder and a fresh plugin registry."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported; see transferlab/__init__.py

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from transferlab import DataIndex, plugins  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one thread per worker: 2 workers × 2 threads on 2 cores slows small ops many times over


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Private cache folder and plugin state per test."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("TRANSFERLAB_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


def make_index(counts, val=2, test=0) -> DataIndex:
    """An index with `counts[c]` training images of class c (ids c00, c01, ...; names name00, ...) plus val/test per class."""
    labels, splits = [], []
    for split, per_class in ((0, counts), (1, [val] * len(counts)), (2, [test] * len(counts))):
        for c, n in enumerate(per_class):
            labels += [c] * n
            splits += [split] * n
    classes = tuple(f"c{c:02d}" for c in range(len(counts)))
    return DataIndex(np.array(labels), np.array(splits), classes, tuple(f"name{c:02d}" for c in range(len(counts))))
