"""Shared fixtures: every test gets its own cache folder and a fresh plugin registry; WordNet for those that ask."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported; see transferlab/__init__.py

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from transferlab import DataError, DataIndex, plugins  # noqa: E402
from transferlab.devices import resolve_device  # noqa: E402
from transferlab_wordnet.access import wordnet  # noqa: E402

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


@pytest.fixture(scope="session")
def loaded_wordnet(tmp_path_factory):
    """WordNet 3.0 for the tests that need it (they ask for this fixture), loaded once per process into a session folder.

    Missing WordNet fails each of them with one line, never skips them: the README's test command sets WordNet up.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERLAB_CACHE", str(tmp_path_factory.mktemp("wordnet-cache")))  # the per-test cache folders come later
        try:
            return wordnet()
        except DataError as error:
            missing = str(error)
    # Failing outside `except` prints no chained traceback: the message alone.
    pytest.fail(f"{missing}. `bash tests/setup.sh` (the README's test command) sets it up", pytrace=False)


def make_index(counts, val=2, test=0) -> DataIndex:
    """An index with `counts[c]` training images of class c (ids c00, c01, ...; names name00, ...) plus val/test per class."""
    labels, splits = [], []
    for split, per_class in ((0, counts), (1, [val] * len(counts)), (2, [test] * len(counts))):
        for c, n in enumerate(per_class):
            labels += [c] * n
            splits += [split] * n
    classes = tuple(f"c{c:02d}" for c in range(len(counts)))
    return DataIndex(np.array(labels), np.array(splits), classes, tuple(f"name{c:02d}" for c in range(len(counts))))


# ---- devices --------------------------------------------------------------------------------------------------
# Tests that take the `device` fixture run once per device: ids [cpu] and [cuda]; the cuda case is skipped on machines
# without CUDA. Every cuda case, and every test of test_devices.py, carries the `device` marker, so the GPU check
# (benchmarks/gpu_check.sh) selects exactly them with `-m device` (or the cuda cases alone with `-k cuda`).

DEVICE_MARKER = "device: a device check, run by benchmarks/gpu_check.sh on a GPU machine (the [cuda] cases and tests/test_devices.py)"


def pytest_configure(config):
    config.addinivalue_line("markers", DEVICE_MARKER)


REQUIRE_CUDA = "TRANSFERLAB_REQUIRE_CUDA"  # set (as gpu_check.sh does on a GPU machine): a [cuda] case fails, not skips, without CUDA


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.device)])
def device(request) -> torch.device:
    """The device a test runs on: the CPU, then CUDA (skipped without a CUDA device); as tensors report it ('cuda:0')."""
    if request.param == "cuda" and not torch.cuda.is_available():
        if os.environ.get(REQUIRE_CUDA):
            pytest.fail(f"{REQUIRE_CUDA} is set, but torch {torch.__version__} sees no CUDA device")
        pytest.skip("no CUDA device on this machine (runs on the GPU machine: benchmarks/gpu_check.sh)")
    return torch.empty(0, device=resolve_device(request.param)).device
