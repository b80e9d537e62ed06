"""Where transferlab caches derived data, and how it writes files so a kill never leaves half of one."""

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "TRANSFERLAB_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache folder (`$TRANSFERLAB_CACHE`, default `~/.cache/transferlab`), created on demand."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "transferlab")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(*items: object) -> str:
    """Short stable hash of the given items' text."""
    return hashlib.sha256("\x1f".join(map(str, items)).encode()).hexdigest()[:20]


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
