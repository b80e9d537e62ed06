"""Servers the tests start on loopback: an `mlflow server` with its own store, stopped with its process group."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` with the sqlite store and proxied artifacts in `folder`, once it answers /health."""
    log = open(folder / "server.log", "a")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError((folder / "server.log").read_text()[-3000:])
        if time.monotonic() > deadline:
            stop_server(process)
            raise AssertionError("mlflow server did not answer /health within 90 s")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)


def stop_server(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server started by `start_server` (its whole process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
