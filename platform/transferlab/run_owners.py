"""Who owns a run: its host, process and heartbeat, and whether that owner is provably gone.

Every run transferlab creates or resumes carries its owner (tags transferlab.host, transferlab.pid,
transferlab.pid_started) and a heartbeat (transferlab.heartbeat, unix seconds) refreshed while the run is active. A
RUNNING run is taken over only when its owner is provably gone: a process of this host that no longer exists, or a
heartbeat older than TRANSFERLAB_STALE_AFTER seconds (default 30 minutes; a live owner on another host keeps it fresh).
"""

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import psutil
from mlflow import MlflowClient
from mlflow.entities import Run

from .errors import TransferlabError

HOST, PID, PID_STARTED, HEARTBEAT = "transferlab.host", "transferlab.pid", "transferlab.pid_started", "transferlab.heartbeat"
STALE_ENV = "TRANSFERLAB_STALE_AFTER"  # seconds without a heartbeat after which a RUNNING run's owner counts as gone
DEFAULT_STALE_AFTER_S = 1800.0
HEARTBEAT_EVERY_S = 60.0  # at most; a quarter of the stale threshold when that is shorter


def stale_after() -> float:
    """Seconds without a heartbeat after which a RUNNING run's owner counts as gone ($TRANSFERLAB_STALE_AFTER)."""
    text = os.environ.get(STALE_ENV, "").strip()
    if not text:
        return DEFAULT_STALE_AFTER_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise TransferlabError(f"{STALE_ENV} must be a number of seconds > 0, got {text!r}")
    return seconds


def process_started(pid: int) -> float | None:
    """When process `pid` of this host started (unix seconds), or None if there is no such live process (zombies are gone)."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except (psutil.Error, ValueError):
        return None


def owner_tags() -> dict[str, str]:
    """This process as a run's owner, with a fresh heartbeat."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()), PID_STARTED: f"{process_started(os.getpid()) or 0:.3f}",
            HEARTBEAT: f"{time.time():.3f}"}


def is_mine(run: Run) -> bool:
    """Whether this process is the run's recorded owner."""
    return run.data.tags.get(HOST) == socket.gethostname() and run.data.tags.get(PID) == str(os.getpid())


def live_owner(run: Run) -> str | None:
    """Who is running `run` now ('host H pid P, heartbeat N s ago'), or None when it is not RUNNING or its owner is provably
    gone: a process of this host that no longer exists (or is this one, which holds the run's key lock), or a stale heartbeat."""
    if run.info.status != "RUNNING":
        return None
    tags = run.data.tags
    host, pid, started = tags.get(HOST), tags.get(PID), tags.get(PID_STARTED)
    try:
        beat = float(tags[HEARTBEAT])
    except (KeyError, ValueError):
        beat = run.info.start_time / 1000  # a run without owner records: only staleness can tell
    age = time.time() - beat
    if age > stale_after():
        return None
    if host == socket.gethostname() and pid and pid.isdigit():
        if int(pid) == os.getpid():
            return None
        alive_since = process_started(int(pid))
        if alive_since is None or (started and abs(alive_since - float(started)) > 1.0):  # gone, or its pid now names another process
            return None
    return f"host {host or '?'} pid {pid or '?'} (heartbeat {max(age, 0):.0f} s ago)"


def heartbeat(run_id: str) -> None:
    """Refresh a run's heartbeat (its owner is alive)."""
    with contextlib.suppress(Exception):  # a missed beat is harmless; the next one comes
        MlflowClient().set_tag(run_id, HEARTBEAT, f"{time.time():.3f}")


@contextlib.contextmanager
def heartbeats(run_id: str) -> Iterator[None]:
    """Refresh the run's heartbeat in the background while the block runs; none lands after the block ends."""
    stop, beating = threading.Event(), threading.Lock()
    every = max(0.5, min(HEARTBEAT_EVERY_S, stale_after() / 4))

    def beat():
        while not stop.wait(every):
            with beating:
                if not stop.is_set():
                    heartbeat(run_id)

    thread = threading.Thread(target=beat, name=f"transferlab-heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with beating:  # waits for a beat in flight, then no other starts
            stop.set()
        thread.join()
