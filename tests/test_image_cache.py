"""The image cache: decoded once per (source, resolution), shared by every subset, never used half-built."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import transferlab as tl
from transferlab import image_cache as ic
from transferlab_sources.synthetic import Synthetic

SPEC = "synthetic(branching=(2, 3), train=20, val=4, test=4)"  # 4 pretraining classes, 112 images


@pytest.fixture
def small_chunks(monkeypatch):
    """Eight images per decoding job, so that a small source takes many jobs."""
    monkeypatch.setattr(ic, "CHUNK", 8)


class Flaky(Synthetic):
    """The synthetic source of the same spec (so the same cache file) whose `load` fails from image `fail_from` on and counts images."""

    def __init__(self, *args, fail_from: int = -1, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "fail_from", fail_from)
        object.__setattr__(self, "calls", [])

    def load(self, samples, size=None):
        self.calls.append(len(samples))
        if 0 <= self.fail_from <= int(np.max(samples)):
            raise OSError("disk vanished")
        return super().load(samples, size)


def flaky(fail_from=-1) -> Flaky:
    """The source of SPEC, instrumented."""
    return Flaky(branching=(2, 3), train=20, val=4, test=4, fail_from=fail_from)


def test_cache_holds_every_sample_resized_and_is_built_once(small_chunks):
    counting = flaky()
    images = ic.image_cache(counting, 16)
    assert images.shape == (len(counting.index), 16, 16, 3) and images.dtype == np.uint8
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert sum(counting.calls) == len(counting.index) and max(counting.calls) == 8
    src = tl.source(SPEC)
    np.testing.assert_array_equal(images, src.load(np.arange(len(src.index)), size=16))
    again = ic.image_cache(src, 16)  # another object of the same spec finds the same file
    assert Path(again.filename) == Path(images.filename) == ic.cache_path(src, 16)
    ic.image_cache(counting, 16)
    assert sum(counting.calls) == len(counting.index)  # nothing decoded twice


def test_every_subset_indexes_into_one_cache_per_resolution(small_chunks):
    src = tl.source(SPEC)
    small, other = tl.select(SPEC, "images_per_class(n=5)"), tl.select(SPEC, "random_classes(k=2)")
    images = ic.image_cache(src, 16)
    for manifest in (small, other):
        np.testing.assert_array_equal(images[manifest.samples], src.load(manifest.samples, size=16))
    assert ic.cache_path(tl.source(SPEC), 16) == ic.cache_path(src, 16)  # keyed by fingerprint and resolution only
    assert ic.cache_path(src, 24) != ic.cache_path(src, 16)
    assert len(list(ic.cache_path(src, 16).parent.glob("*.npy"))) == 1


def test_a_build_that_dies_halfway_leaves_nothing_and_the_next_call_rebuilds(small_chunks):
    failing = flaky(fail_from=40)
    with pytest.raises(OSError, match="disk vanished"):
        ic.image_cache(failing, 16)
    path = ic.cache_path(failing, 16)
    assert not path.exists() and not list(path.parent.glob("*.tmp"))
    healthy = flaky()
    assert ic.cache_path(healthy, 16) == path  # same data, same cache file
    images = ic.image_cache(healthy, 16)
    np.testing.assert_array_equal(images, healthy.load(np.arange(len(healthy.index)), size=16))


def test_a_truncated_or_foreign_cache_file_is_rebuilt_not_used(small_chunks):
    src = tl.source(SPEC)
    path = ic.cache_path(src, 16)
    expected = np.asarray(ic.image_cache(src, 16)).copy()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as if a copy stopped halfway
    np.testing.assert_array_equal(ic.image_cache(src, 16), expected)
    np.save(path, np.zeros((3, 16, 16, 3), np.uint8))  # a well-formed file of the wrong shape
    np.testing.assert_array_equal(ic.image_cache(src, 16), expected)


def test_source_returning_wrong_shape_is_reported():
    class Wrong(Synthetic):
        def load(self, samples, size=None):
            return super().load(samples, None)  # ignores the size

    with pytest.raises(tl.DataError, match=r"expected uint8 \(.*, 16, 16, 3\)"):
        ic.image_cache(Wrong(branching=(2, 3), train=20, val=4, test=4), 16)


SLOW_BUILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from transferlab import image_cache as ic
    from test_image_cache import Flaky

    class Slow(Flaky):
        def load(self, samples, size=None):
            if samples[0] > 0:
                print("decoding", flush=True)
                time.sleep(60)
            return super().load(samples, size)

    ic.CHUNK = 8
    ic.image_cache(Slow(branching=(2, 3), train=20, val=4, test=4), 16, workers=1)
""")


def test_kill_9_during_a_build_leaves_a_temporary_that_the_next_build_removes(tmp_path):
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD.format(tests=str(Path(__file__).parent))], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "decoding"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    healthy = flaky()
    path = ic.cache_path(healthy, 16)
    assert not path.exists() and len(list(path.parent.glob(f".{path.name}.*.tmp"))) == 1
    start = time.perf_counter()
    images = ic.image_cache(healthy, 16)  # the dead builder's lock is gone: no waiting
    assert time.perf_counter() - start < 30
    np.testing.assert_array_equal(images, healthy.load(np.arange(len(healthy.index)), size=16))
    assert not list(path.parent.glob("*.tmp"))
