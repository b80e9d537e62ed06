"""Full disks and read-only caches: one StorageError line naming the folder and the room, nothing half-written kept.

Each fault is faked (an OSError with ENOSPC or EROFS where the write happens), so these run everywhere; where this
process may mount a tmpfs (root on Linux), the same faults also happen for real on a tiny or read-only tmpfs."""

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import transferlab as tl
from transferlab import training
from transferlab.cache import HOST, STALE_AFTER, atomic_path, cache_dir, cache_root, storage
from transferlab.cli import cli
from transferlab.errors import StorageError, TransferlabError
from transferlab.features import cached_features
from transferlab.image_cache import image_cache
from transferlab.training import pretrain
from transferlab.training_spec import Training
from transferlab_sources.synthetic import Synthetic
from transferlab_wordnet.access import DEBIAN_DIR, stage_wordnet

SMALL = dict(branching=(2, 2, 3), train=6, val=2, test=2)  # 8 pretraining classes, 80 images
TINY = "synthetic(branching=(2, 2, 3), train=10, val=4, test=0)"  # 8 classes, 80 training images: 5 steps of 16 per epoch
SPEC = Training(epochs=2, batch_size=16, resolution=16)
ROOT = Path(__file__).resolve().parents[1]


def no_room(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def read_only(folder: Path) -> str:
    """The StorageError line of a read-only cache folder."""
    return f"cache folder {folder} is not writable (Read-only file system): point TRANSFERLAB_CACHE at a writable folder"


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size, read_only=False): a tmpfs at tmp_path/name, unmounted after the test; skips where mounting is not allowed."""
    mounted = []

    def mount(name: str, size: str, read_only: bool = False) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root on Linux")
        options = f"size={size}" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
            pytest.skip("this machine does not allow mounting a tmpfs")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # lazily: a memmap of the test may still be open


def tiny_run(checkpoint: Path, spec: Training = SPEC) -> dict[str, float]:
    source = tl.source(TINY)
    manifest = tl.select(TINY)
    backbone = tl.get_registry().parse("backbone", "timm('test_resnet')")
    model = backbone.build_seeded(manifest.num_classes, spec.resolution, seed=0)
    images = image_cache(source, spec.resolution)
    return pretrain(backbone, model, images, manifest, manifest.split(source.index, "val"), spec, checkpoint, lambda m, s: None,
                    progress=False)


# ---- the one helper -------------------------------------------------------------------------------------------


def test_storage_turns_a_full_or_read_only_disk_into_one_line_and_lets_other_errors_through(tmp_path):
    folder = tmp_path / "x"
    with pytest.raises(StorageError) as full, storage(folder, "a 45.1 MB checkpoint", 45_100_000):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    message = str(full.value)
    assert message.startswith(f"no space left in {folder}: writing a 45.1 MB checkpoint needs 45.1 MB, ") and "\n" not in message
    assert " free; free space there or choose another folder, then rerun" in message
    assert full.value.resumable is True and isinstance(full.value, TransferlabError)

    with pytest.raises(StorageError, match=f"^disk quota exceeded in {folder}: writing a file with .* free;"), storage(folder, "a file"):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    inside = cache_root() / "images"
    with pytest.raises(StorageError) as not_writable, storage(inside, "a file"):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert str(not_writable.value) == read_only(inside)

    with pytest.raises(StorageError, match="no space left"), storage(folder, "a checkpoint"):  # torch's own error on a full disk
        try:
            no_room()
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    with pytest.raises(StorageError, match="no space left"), storage(tmp_path, "features", 10 ** 18):  # numpy's short write
        raise OSError("1000000 requested and 16352 written")
    for other in (FileNotFoundError(errno.ENOENT, "No such file or directory"), RuntimeError("CUDA error"), OSError("short read")):
        with pytest.raises(type(other)), storage(tmp_path, "a file", 1):
            raise other


# ---- checkpoints ----------------------------------------------------------------------------------------------


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    checkpoint = tmp_path / "run.pt"
    opened = []

    def full_after_one_checkpoint(path, mode="r", *args, **kwargs):  # the second checkpoint finds the disk full after 1 kB
        f = open(path, mode, *args, **kwargs)
        opened.append(path)
        if len(opened) > 1:
            write = f.write
            f.write = lambda data: no_room() if f.tell() + len(data) > 1000 else write(data)
        return f

    monkeypatch.setattr(training, "open", full_after_one_checkpoint, raising=False)
    with pytest.raises(StorageError) as failed:
        tiny_run(checkpoint)
    assert str(failed.value).startswith(f"no space left in {tmp_path}: writing a 3.0 MB checkpoint needs 3.0 MB, ")
    assert torch.load(checkpoint, weights_only=True)["step"] == 5  # the first epoch's checkpoint, whole
    assert temporaries(tmp_path) == []


def test_on_a_real_disk_with_room_for_one_checkpoint_the_second_fails_and_the_first_is_kept(tmpfs):
    disk = tmpfs("disk", "4500k")  # a checkpoint takes 3.0 MB; replacing it atomically needs room for two
    checkpoint = disk / "run.pt"
    with pytest.raises(StorageError, match=f"^no space left in {disk}: writing a 3.0 MB checkpoint needs 3.0 MB, "):
        tiny_run(checkpoint)
    assert torch.load(checkpoint, weights_only=True)["step"] == 5
    assert temporaries(disk) == []


# ---- synthetic sources, image and feature caches ----------------------------------------------------------------


def test_synthetic_generation_on_a_full_disk_is_a_storage_error_and_leaves_nothing(monkeypatch):
    src = Synthetic(**SMALL)
    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(StorageError) as full:
        src.load(np.arange(3))
    folder = cache_root() / "synthetic"
    assert str(full.value).startswith(f"no space left in {folder}: writing the images of {src.spec()} needs 245.8 kB, ")
    assert list(folder.iterdir()) == []
    monkeypatch.undo()
    assert Synthetic(**SMALL).load(np.arange(3)).shape == (3, 32, 32, 3)


def test_synthetic_generation_on_a_real_full_disk_is_one_error_line_not_sigbus(tmpfs):
    disk = tmpfs("disk", "1m")  # the images take 2.6 MB
    spec = "synthetic(branching=[2, 2, 2], train=200, val=5, test=5)"
    env = os.environ | {"TRANSFERLAB_CACHE": str(disk / "cache"), "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'plugins'}"}
    done = subprocess.run([sys.executable, "-m", "transferlab", "show", spec, "--out", str(disk.parent / "sheet.png")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]  # the old code died of SIGBUS (returncode -7)
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Error: no space left in {disk / 'cache' / 'synthetic'}: writing the images of ") and "needs 2.6 MB" in line
    assert temporaries(disk / "cache" / "synthetic") == []


def test_the_image_cache_on_a_full_disk_is_a_storage_error_and_records_no_row(monkeypatch):
    src = Synthetic(**SMALL)
    src.load(np.arange(1))  # the source's own pixels are on disk already
    monkeypatch.setattr(os, "pwrite", no_room)
    with pytest.raises(StorageError) as full:
        image_cache(src, 16)
    assert str(full.value).startswith(f"no space left in {cache_root() / 'images'}: writing the decoded images needs 61.4 kB, ")
    monkeypatch.undo()
    images = image_cache(src, 16)  # nothing was marked decoded: every row is decoded now
    assert images[len(images) - 1].any() and temporaries(cache_root() / "images") == []


def test_the_image_cache_on_a_real_full_disk_is_a_storage_error(tmpfs, monkeypatch):
    src = Synthetic(**SMALL)
    src.load(np.arange(1))  # generated in the roomy cache; its memmap stays open
    disk = tmpfs("disk", "64k")  # 80 images at 32 px take 246 kB
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(disk))
    with pytest.raises(StorageError, match=f"^no space left in {disk / 'images'}: writing the decoded images needs 245.8 kB, "):
        image_cache(src, 32)
    assert temporaries(disk / "images") == []


def test_the_feature_cache_on_a_full_disk_is_a_storage_error_and_leaves_no_temporary(monkeypatch):
    monkeypatch.setattr(np, "save", no_room)
    with pytest.raises(StorageError) as full:
        cached_features(("key",), lambda: np.ones((1000, 64), np.float32))
    folder = cache_dir("features")
    assert str(full.value).startswith(f"no space left in {folder}: writing 256.0 kB of frozen features needs 256.0 kB, ")
    assert temporaries(folder) == []


def test_the_feature_cache_on_a_real_full_disk_is_a_storage_error(tmpfs, monkeypatch):
    disk = tmpfs("disk", "64k")  # numpy reports this short write without an errno
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(disk))
    with pytest.raises(StorageError, match=f"^no space left in {disk / 'features'}: writing 256.0 kB of frozen features needs 256.0 kB, "):
        cached_features(("key",), lambda: np.ones((1000, 64), np.float32))
    assert temporaries(disk / "features") == []


def test_staging_wordnet_on_a_full_disk_is_a_storage_error_and_leaves_no_half_copy(monkeypatch):
    if not (Path(DEBIAN_DIR) / "index.sense").is_file():
        pytest.skip(f"needs WordNet 3.0 in {DEBIAN_DIR}")
    monkeypatch.setattr(shutil, "copyfile", no_room)
    with pytest.raises(StorageError, match=f"^no space left in {cache_root() / 'nltk_data'}: writing a copy of WordNet needs .* MB, "):
        stage_wordnet(Path(DEBIAN_DIR))
    assert list((cache_root() / "nltk_data" / "corpora").iterdir()) == []


# ---- read-only caches -----------------------------------------------------------------------------------------


def test_a_read_only_cache_is_one_error_line_from_the_cli(tmp_path, monkeypatch):
    real = os.mkdir

    def mkdir_on_a_read_only_disk(path, *args, **kwargs):
        if Path(path).is_relative_to(cache_root()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir_on_a_read_only_disk)
    spec = "synthetic(branching=[2, 2, 3], train=6, val=2, test=2)"
    result = CliRunner().invoke(cli, ["show", spec, "--out", str(tmp_path / "sheet.png")])
    assert result.exit_code == 2 and result.output.splitlines() == [f"Error: {read_only(cache_root() / 'synthetic')}"]


def test_a_real_read_only_cache_is_one_error_line_whether_its_folders_exist_or_not(tmpfs, tmp_path, monkeypatch):
    disk = tmpfs("disk", "1m")
    (disk / "cache" / "synthetic").mkdir(parents=True)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    runner, spec, sheet = CliRunner(), "synthetic(branching=[2, 2, 3], train=6, val=2, test=2)", str(tmp_path / "sheet.png")
    for cache, folder in ((disk / "cache", disk / "cache" / "synthetic"), (disk / "missing", disk / "missing" / "synthetic")):
        monkeypatch.setenv("TRANSFERLAB_CACHE", str(cache))
        result = runner.invoke(cli, ["show", spec, "--out", sheet])
        assert result.exit_code == 2 and result.output.splitlines() == [f"Error: {read_only(folder)}"]
        assert runner.invoke(cli, ["subset", "--source", spec]).exit_code == 0  # reading a subset needs no cache
    result = runner.invoke(cli, ["subset", "--source", spec, "--save", str(disk / "manifest")])
    assert result.exit_code == 2 and result.output.splitlines() == [
        f"Error: folder {disk / 'manifest'} is not writable (Read-only file system): choose a writable folder"]


# ---- temporaries of killed writers ------------------------------------------------------------------------------


def test_temporaries_of_writers_that_are_gone_are_removed_at_the_next_write_and_live_ones_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    target = tmp_path / "x.npy"
    old = time.time() - STALE_AFTER - 60
    names = {
        f".x.npy.{gone.pid}-{HOST}.abc123_x.tmp": False,  # its writer is dead on this host
        f".x.npy.{os.getpid()}-{HOST}.abc123_x.tmp": True,  # a writer that is alive
        ".x.npy.abc123_x.tmp": True,  # no pid (an older transferlab) and recent
        ".x.npy.old123_x.tmp": False,  # no pid and older than STALE_AFTER
        f".x.npy.{gone.pid}-00000000.abc123_x.tmp": True,  # another host's, recent
        f".x.npy.{gone.pid}-00000000.old123_x.tmp": False,  # another host's, older than STALE_AFTER
        f".x.npy.filled.{gone.pid}-{HOST}.abc123_x.tmp": True,  # another file's
    }
    for name in names:
        (tmp_path / name).write_bytes(b"half")
        if "old" in name:
            os.utime(tmp_path / name, (old, old))
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert temporaries(tmp_path) == sorted(name for name, kept in names.items() if kept)


def test_the_temporary_of_a_writer_killed_by_kill_9_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "checkpoint.pt"
    code = ("import os, sys\nfrom transferlab.cache import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half')\n    os.kill(os.getpid(), 9)\n")
    env = os.environ | {"PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'plugins'}"}
    killed = subprocess.run([sys.executable, "-c", code, str(target)], env=env, capture_output=True, timeout=60)
    assert killed.returncode == -9 and len(temporaries(tmp_path)) == 1
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and temporaries(tmp_path) == []
