"""The image cache: rows decoded once per (source, resolution) as they are asked for, shared by every subset, never trusted half-written."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transferlab as tl
import transferlab_sources.image_folder as image_folder
from transferlab import image_cache as ic
from transferlab import images
from transferlab_sources.synthetic import Synthetic

SPEC = "synthetic(branching=(2, 3), train=20, val=4, test=4)"  # 4 pretraining classes, 112 images
N = 112


@pytest.fixture
def small_chunks(monkeypatch):
    """Eight images per decoding job, so that a small source takes many jobs."""
    monkeypatch.setattr(ic, "CHUNK", 8)


class Flaky(Synthetic):
    """The synthetic source of the same spec (so the same cache file) whose `load` raises `error` from image `fail_from` on and counts images."""

    def __init__(self, *args, fail_from: int = -1, error: BaseException = OSError("disk vanished"), **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "fail_from", fail_from)
        object.__setattr__(self, "error", error)
        object.__setattr__(self, "calls", [])

    def load(self, samples, size=None):
        self.calls.append(len(samples))
        if 0 <= self.fail_from <= int(np.max(samples)):
            raise self.error
        return super().load(samples, size)


def flaky(fail_from=-1, error=OSError("disk vanished")) -> Flaky:
    """The source of SPEC, instrumented."""
    return Flaky(branching=(2, 3), train=20, val=4, test=4, fail_from=fail_from, error=error)


def decoded(source: Flaky) -> int:
    """Images the source was asked to load so far."""
    return sum(source.calls)


def filled(source) -> np.ndarray:
    """The rows the record of SPEC at 16 px marks decoded."""
    return ic.read_record(ic.record_path(ic.cache_path(source, 16)), N)


def test_asking_for_rows_decodes_exactly_those_and_rows_none_completes_the_rest(small_chunks):
    counting = flaky()
    rows = np.arange(3, N, 11)  # 10 scattered rows
    images = ic.image_cache(counting, 16, rows)
    assert images.shape == (N, 16, 16, 3) and images.dtype == np.uint8
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert decoded(counting) == 10 and counting.calls == [8, 2]
    np.testing.assert_array_equal(images[rows], counting.load(rows, 16))
    assert np.flatnonzero(filled(counting)).tolist() == rows.tolist()
    counting.calls.clear()
    more = np.concatenate([rows[:5], np.arange(60, 67)])  # 5 decoded rows and 7 new ones
    ic.image_cache(counting, 16, more)
    assert decoded(counting) == 7
    counting.calls.clear()
    everything = ic.image_cache(counting, 16)
    assert decoded(counting) == N - 17 and filled(counting).all()
    np.testing.assert_array_equal(everything, counting.load(np.arange(N), 16))
    counting.calls.clear()
    ic.image_cache(counting, 16)
    ic.image_cache(counting, 16, rows)
    assert counting.calls == []  # nothing decoded twice


def test_readers_whose_rows_are_filled_take_no_lock(small_chunks, monkeypatch):
    counting = flaky()
    ic.image_cache(counting, 16, [1, 2, 3])

    def no_lock(path):
        raise AssertionError("took the build lock")

    monkeypatch.setattr(ic, "build_lock", no_lock)
    counting.calls.clear()
    np.testing.assert_array_equal(ic.image_cache(counting, 16, [3, 1])[[1, 3]], counting.load(np.array([1, 3]), 16))
    assert counting.calls == [2]  # the comparison's own load: the cache decoded nothing
    with pytest.raises(AssertionError, match="took the build lock"):
        ic.image_cache(counting, 16, [4])  # a missing row needs the lock


def test_a_memmap_opened_earlier_sees_rows_filled_later(small_chunks):
    src = tl.source(SPEC)
    early = ic.image_cache(src, 16, [0])
    assert not early[50:60].any()  # sparse zeros until decoded
    ic.image_cache(tl.source(SPEC), 16, np.arange(50, 60))
    np.testing.assert_array_equal(early[50:60], src.load(np.arange(50, 60), 16))


def test_every_subset_indexes_into_one_cache_per_resolution(small_chunks):
    small, other = tl.select(SPEC, "images_per_class(n=5)"), tl.select(SPEC, "random_classes(k=2)")
    first, second = flaky(), flaky()  # two objects of the same spec
    images = ic.image_cache(first, 16, small.samples)
    assert decoded(first) == len(small.samples) == 20
    again = ic.image_cache(second, 16, other.samples)
    assert decoded(second) == len(np.setdiff1d(other.samples, small.samples)) == 30  # 10 of the 40 were decoded for `small`
    assert Path(again.filename) == Path(images.filename) == ic.cache_path(tl.source(SPEC), 16)
    for manifest in (small, other):
        np.testing.assert_array_equal(again[manifest.samples], first.load(manifest.samples, size=16))
    assert ic.cache_path(first, 24) != ic.cache_path(first, 16)
    assert [p.name for p in ic.cache_path(first, 16).parent.glob("*.npy")] == [ic.cache_path(first, 16).name]


@pytest.mark.parametrize("error", [OSError("disk vanished"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_build_that_stops_halfway_keeps_finished_jobs_and_the_next_call_decodes_the_rest(small_chunks, error):
    failing = flaky(fail_from=40, error=error)  # jobs of rows 0-7, ..., 32-39 succeed; every later job fails
    with pytest.raises(type(error)):
        ic.image_cache(failing, 16, workers=2)
    assert np.flatnonzero(filled(failing)).tolist() == list(range(40))
    path = ic.cache_path(failing, 16)
    assert not list(path.parent.glob("*.tmp"))
    healthy = flaky()
    images = ic.image_cache(healthy, 16)
    assert decoded(healthy) == N - 40
    np.testing.assert_array_equal(images, healthy.load(np.arange(N), size=16))


def test_the_record_is_rewritten_at_most_every_save_every_seconds_and_at_the_end(small_chunks, monkeypatch):
    writes = []
    write = ic.write_record
    monkeypatch.setattr(ic, "write_record", lambda path, rows: (writes.append(int(rows.sum())), write(path, rows)))
    ic.image_cache(flaky(), 16)  # 14 jobs, well under SAVE_EVERY = 1 s: one write, at the end
    assert writes == [N]
    writes.clear()
    monkeypatch.setattr(ic, "SAVE_EVERY", 0)
    ic.image_cache(flaky(), 24)  # a write after every finished job that brought new rows
    assert len(writes) > 1 and writes == sorted(set(writes)) and writes[-1] == N and all(n % 8 == 0 for n in writes)


def test_a_truncated_or_foreign_cache_file_or_record_is_rebuilt_not_used(small_chunks):
    expected = flaky().load(np.arange(N), 16)
    path = ic.cache_path(flaky(), 16)
    record = ic.record_path(path)

    def rebuilt() -> int:
        counting = flaky()
        np.testing.assert_array_equal(ic.image_cache(counting, 16), expected)
        return decoded(counting)

    assert rebuilt() == N
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as if a copy stopped halfway; the record still says "all filled"
    assert rebuilt() == N
    np.save(path, np.zeros((3, 16, 16, 3), np.uint8))  # a well-formed file of the wrong shape
    assert rebuilt() == N
    np.save(path, np.zeros((N, 16, 16, 3), np.float32))  # the wrong dtype
    assert rebuilt() == N
    with open(record, "wb") as f:
        np.save(f, np.full(3, 255, np.uint8))  # a record of another length
    assert rebuilt() == N
    record.write_bytes(b"not a record")
    assert rebuilt() == N
    path.unlink()  # the record alone says nothing
    assert rebuilt() == N
    assert rebuilt() == 0


def test_decoding_files_runs_at_most_one_decode_per_cpu(tmp_path, small_chunks, monkeypatch):
    for k, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        for i in range(48):
            Image.new("RGB", (8, 8), (k, i, 0)).save(tmp_path / folder / f"{i}.png")  # no two alike: copies are indexed once
    active, peak, lock = 0, 0, threading.Lock()
    decode = images.decode_image

    def counting(path, size=None, cap=None):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            time.sleep(0.005)  # stands in for decoding a large image
            return decode(path, size, cap)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(images, "decode_image", counting)
    monkeypatch.setattr(images, "usable_cpus", lambda: 3)
    monkeypatch.setattr(images, "PROCESS_FROM", 1000)  # in threads of this process, where the counting decode runs
    src = image_folder.ImageFolder(str(tmp_path), val_fraction=0.0)
    assert ic.image_cache(src, 8, workers=3).shape == (96, 8, 8, 3)
    assert 1 < peak <= 3  # in parallel, one level of threads: not 3 jobs × a pool each
    peak = 0
    assert src.load(np.arange(96)).shape == (96, 8, 8, 3)  # called directly: a pool of its own, one thread per CPU
    assert 1 < peak <= 3


def test_rows_outside_the_source_are_an_index_error():
    with pytest.raises(IndexError, match=r"0\.\.111, got rows from 100 to 112"):
        ic.image_cache(tl.source(SPEC), 16, [100, 112])


def test_source_returning_wrong_shape_is_reported():
    class Wrong(Synthetic):
        def load(self, samples, size=None):
            return super().load(samples, None)  # ignores the size

    with pytest.raises(tl.DataError, match=r"synthetic\(.*\) returned uint8 \(.*, 32, 32, 3\).* expected uint8 \(.*, 16, 16, 3\)"):
        ic.image_cache(Wrong(branching=(2, 3), train=20, val=4, test=4), 16)


SLOW_BUILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from transferlab import image_cache as ic
    from test_image_cache import Flaky, filled

    class Slow(Flaky):
        def load(self, samples, size=None):
            if samples[0] >= 40:  # the jobs of rows 0-39 finish; later ones wait until those are on record, then hang
                while filled(self).sum() < 40:
                    time.sleep(0.01)
                print("decoding", flush=True)
                time.sleep(60)
            return super().load(samples, size)

    ic.CHUNK, ic.SAVE_EVERY = 8, 0
    ic.image_cache(Slow(branching=(2, 3), train=20, val=4, test=4), 16, workers=1)
""")


def test_kill_9_during_a_build_keeps_finished_rows_and_the_next_build_decodes_only_the_rest(small_chunks):
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD.format(tests=str(Path(__file__).parent))], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "decoding"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    healthy = flaky()
    assert np.flatnonzero(filled(healthy)).tolist() == list(range(40))
    start = time.perf_counter()
    images = ic.image_cache(healthy, 16)  # the dead builder's lock is gone: no waiting
    assert time.perf_counter() - start < 30
    assert decoded(healthy) == N - 40
    np.testing.assert_array_equal(images, healthy.load(np.arange(N), size=16))
    assert not list(ic.cache_path(healthy, 16).parent.glob("*.tmp"))


def test_rows_of_the_memory_mapped_cache_read_with_preadv_equal_fancy_indexing(monkeypatch):
    source = tl.source(SPEC)
    images = ic.image_cache(source, 16)
    assert ic.whole_file(images) and not ic.whole_file(images[1:]) and not ic.whole_file(np.asarray(images))
    rows = np.random.default_rng(0).integers(0, N, 300)  # unsorted, repeated, runs of consecutive rows among them
    rows[:40] = np.arange(30, 70)
    monkeypatch.setattr(ic, "IOV_MAX", 7)  # runs longer than one call fills
    for array in (images, images[1:], np.array(images)):
        picked = rows[rows < len(array)]
        np.testing.assert_array_equal(ic.take_rows(array, picked), array[picked])
    out = np.zeros((len(rows), 16, 16, 3), np.uint8)
    assert ic.take_rows(images, rows, out) is out and (out == images[rows]).all()
    assert ic.take_rows(images, np.zeros(0, np.int64)).shape == (0, 16, 16, 3)
