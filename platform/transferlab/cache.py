"""Where transferlab caches derived data, and how it writes files so a kill never leaves half of one."""

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import CacheError, StorageError
from .specs import excerpt

CACHE_ENV = "TRANSFERLAB_CACHE"
# What each cache folder holds. The clearable ones are rebuilt on demand; the others are kept: a checkpoint is how a
# killed run resumes, a lock guards a running one, and the WordNet copy is staged once from Debian's files.
CLEARABLE = {"images": "decoded image caches", "features": "frozen features of pretrained models",
             "synthetic": "generated synthetic sources", "index": "folder indexes of image sources"}
KEPT = {"checkpoints": "checkpoints of unfinished runs (kept)", "locks": "run and build locks (kept)",
        "nltk_data": "WordNet staged for nltk (kept)"}


NO_ROOM = {errno.ENOSPC, errno.EDQUOT}  # a full disk or quota
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}  # a read-only disk, or a folder this user may not write to
# A temporary of a writer on another host (or of an older transferlab, whose names carry no pid) counts as abandoned
# after this long: no write of transferlab's takes a day, and a live writer elsewhere cannot be asked.
STALE_AFTER = 24 * 3600
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # in temporary names, with the pid: whose they are


def cache_dir(*parts: str) -> Path:
    """The cache folder (`$TRANSFERLAB_CACHE`, default `~/.cache/transferlab`), created on demand."""
    path = cache_root().joinpath(*parts)
    with storage(path, "the cache folder"):
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


def check_clearable(kind: str, clearable: Iterable[str] = tuple(CLEARABLE)) -> None:
    """A CacheError unless `kind` is one of `clearable` (CLEARABLE, and the folders plugins registered)."""
    clearable = list(clearable)
    if kind not in clearable:
        raise CacheError(f"cannot clear {excerpt(kind)}: clearable caches are {', '.join(clearable)} (checkpoints and locks are kept for resuming runs)")


def clear(kind: str, clearable: Iterable[str] = tuple(CLEARABLE)) -> tuple[int, int]:
    """Delete one clearable cache folder (see check_clearable); return (files, bytes on disk) freed."""
    check_clearable(kind, clearable)
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
def atomic_path(path: str | os.PathLike, what: str | None = None, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes, and is removed otherwise.

    A full or read-only disk while the block writes raises StorageError (see `storage`; `what` and `needed`, the bytes
    it writes, go into the message); temporaries of writers that were killed are removed first."""
    path = Path(path)
    with storage(path.parent, what or path.name, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temporaries(path)
        tmp = new_temporary(path)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def new_temporary(path: Path) -> Path:
    """Create an empty, uniquely named temporary beside `path` with a plain file's permissions (0666 less the umask).

    Not tempfile.mkstemp: its files are 0600, and `os.replace` keeps that mode, so every PNG, manifest, report and cache
    file would be unreadable to the user's group and to other users (a shared cache, a served report folder)."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{HOST}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # another writer of this process drew the same name
            continue


def remove_abandoned_temporaries(path: Path) -> None:
    """Delete `atomic_path` temporaries of `path` whose writer is gone: its pid is dead on this host, or it is older than
    STALE_AFTER (a writer on another host, or a name without a pid)."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:(\d+)-([0-9a-f]{8})\.)?[a-z0-9_]+\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not (match := pattern.fullmatch(tmp.name)):
            continue
        pid, host = match.groups()
        with contextlib.suppress(FileNotFoundError):  # another writer may be removing it too
            if (host == HOST and not alive(int(pid))) or time.time() - tmp.stat().st_mtime > STALE_AFTER:
                tmp.unlink()


def alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


@contextlib.contextmanager
def storage(folder: str | os.PathLike, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn a write failure in `folder` for lack of room (ENOSPC, EDQUOT) or of write access (EROFS, EACCES, EPERM) into
    a one-line StorageError naming the folder, what was being written, the bytes `needed` and the bytes free.

    Torch reports a failed write as a RuntimeError of its own, with the OSError as its context: the whole chain is read.
    Numpy reports a short write to a file object without an errno ("N requested and M written"): with fewer than
    `needed` bytes free, that is a full disk too."""
    folder = Path(folder)
    try:
        yield
    except (OSError, RuntimeError) as exc:
        code = storage_errno(exc, folder, needed)
        if code is None:
            raise
        raise StorageError(storage_message(folder, what, needed, code)) from exc


def storage_errno(exc: BaseException, folder: Path, needed: int | None) -> int | None:
    """The errno of a full or read-only disk in the chain of `exc` (its causes and contexts), if there is one."""
    seen, link = set(), exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in NO_ROOM | NOT_WRITABLE:
            return link.errno
        link = link.__cause__ or link.__context__
    if isinstance(exc, OSError) and exc.errno is None and needed is not None and free_bytes(folder) < needed:
        return errno.ENOSPC
    return None


def storage_message(folder: Path, what: str, needed: int | None, code: int) -> str:
    """The one line of a StorageError: what failed where, the room needed and free, and what to do."""
    inside = folder == cache_root() or cache_root() in folder.parents
    if code in NOT_WRITABLE:
        where = "cache folder" if inside else "folder"
        fix = f"point {CACHE_ENV} at a writable folder" if inside else "choose a writable folder"
        return f"{where} {folder} is not writable ({os.strerror(code)}): {fix}"
    full = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
    free = size_text(free_bytes(folder))
    room = f"needs {size_text(needed)}, {free} free" if needed is not None else f"with {free} free"
    fix = f"free space or point {CACHE_ENV} elsewhere" if inside else "free space there or choose another folder"
    return f"{full} in {folder}: writing {what} {room}; {fix}, then rerun (finished work is kept)"


def free_bytes(folder: Path) -> int:
    """Bytes free to this user on the disk of `folder` (or of its nearest parent that exists)."""
    return shutil.disk_usage(existing_ancestor(folder)).free


def existing_ancestor(folder: Path) -> Path:
    """`folder` or its nearest parent that exists (the disk it would be on)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def size_text(n: int) -> str:
    """Bytes for a person: 512 B, 3.0 kB, 45.1 MB, 1.2 GB (powers of 1000, as df -H)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
