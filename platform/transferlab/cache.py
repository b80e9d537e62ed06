"""Where transferlab caches derived data, and how it writes files so a kill never leaves half of one."""

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import CacheError

CACHE_ENV = "TRANSFERLAB_CACHE"
# What each cache folder holds. The clearable ones are rebuilt on demand; the others are kept: a checkpoint is how a
# killed run resumes, a lock guards a running one, and the WordNet copy is staged once from Debian's files.
CLEARABLE = {"images": "decoded image caches", "features": "frozen features of pretrained models",
             "synthetic": "generated synthetic sources", "index": "folder indexes of image sources"}
KEPT = {"checkpoints": "checkpoints of unfinished runs (kept)", "locks": "run and build locks (kept)",
        "nltk_data": "WordNet staged for nltk (kept)"}


def cache_dir(*parts: str) -> Path:
    """The cache folder (`$TRANSFERLAB_CACHE`, default `~/.cache/transferlab`), created on demand."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_root() -> Path:
    """The cache folder itself, without creating it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "transferlab")


def usage(folder: Path) -> tuple[int, int, int]:
    """(files, bytes on disk, apparent bytes) under `folder`; sparse image caches take less disk than their size."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    stats = [p.stat() for p in files]
    return len(files), sum(getattr(s, "st_blocks", s.st_size // 512) * 512 for s in stats), sum(s.st_size for s in stats)


def clear(kind: str) -> tuple[int, int]:
    """Delete one clearable cache folder; return (files, bytes on disk) freed."""
    if kind not in CLEARABLE:
        raise CacheError(f"cannot clear {kind!r}: clearable caches are {', '.join(CLEARABLE)} (checkpoints and locks are kept for resuming runs)")
    folder = cache_root() / kind
    with contextlib.ExitStack() as held:
        for lock in sorted(folder.glob("*.lock")):  # a build in progress holds its lock: refuse rather than pull its files away
            f = held.enter_context(open(lock, "a"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CacheError(f"cannot clear {kind!r} now: another process is building {lock.name.removesuffix('.lock')}; try again when it is done") from None
        files, on_disk, _ = usage(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return files, on_disk


def cache_key(*items: object) -> str:
    """Short stable hash of the given items' text."""
    return hashlib.sha256(text_bytes("\x1f".join(map(str, items)))).hexdigest()[:20]


def text_bytes(text: str) -> bytes:
    """UTF-8 bytes of text to hash; the surrogates that stand for undecodable file-name bytes are kept, never an error."""
    return text.encode("utf-8", "surrogatepass")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
