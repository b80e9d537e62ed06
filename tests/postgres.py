"""Fixtures for tests that need a real PostgreSQL server (load with `pytest_plugins`): one server per test module, a fresh database per test."""

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

from servers import free_port

USER = "transferlab"  # the server's superuser; trust auth on loopback, so no password
SETUP = "run `bash tests/setup.sh` as root on Debian (it installs postgresql)"


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs: the newest /usr/lib/postgresql/*/bin (Debian keeps them off PATH), else PATH's."""
    pattern = os.environ.get("TRANSFERLAB_POSTGRES_BIN", "/usr/lib/postgresql/*/bin")
    found = sorted((Path(d) for d in glob.glob(pattern) if (Path(d) / "initdb").exists()), key=lambda d: _version(d))
    if found:
        return found[-1]
    if on_path := shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    pytest.fail(f"PostgreSQL's initdb is neither in {pattern} nor on PATH: {SETUP}", pytrace=False)


def _version(folder: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in folder.parent.name.split("."))


def as_server_user() -> list[str]:
    """The command prefix that runs PostgreSQL's programs: they refuse to run as root, so root runs them as `postgres`."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"PostgreSQL refuses to run as root and there is no `postgres` user to run it as: {SETUP}", pytrace=False)
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Postgres:
    """A running server on 127.0.0.1:`port`, its data, socket and log in `folder`."""

    folder: Path
    port: int
    names: itertools.count = field(default_factory=itertools.count)  # the databases' names: test_0, test_1, ...

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"test_{next(self.names)}"
        with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres")) as connection:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def run(command: list[str], folder: Path) -> None:
    """Run a PostgreSQL program as the server's user; fail with its output and the server log's tail when it fails."""
    done = subprocess.run(as_server_user() + command, cwd=folder, capture_output=True, text=True, timeout=120)
    if done.returncode:
        log = folder / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}{tail}")


def start_postgres(folder: Path) -> Postgres:
    """initdb into `folder`/data and start it on a free loopback port (retried: another worker may take the port first)."""
    bin_dir = postgres_bin()
    run([str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"], folder)
    for attempt in range(3):
        port = free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off"
        try:
            run([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60",
                 "start"], folder)
            return Postgres(folder, port)
        except AssertionError:
            if attempt == 2 or "already in use" not in (folder / "server.log").read_text():
                raise


def stop_postgres(folder: Path) -> None:
    """Stop the server whose data is in `folder`/data (fast: it rolls back open transactions), killing it if it will not stop."""
    data = folder / "data"
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    done = subprocess.run(as_server_user() + [str(postgres_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
                          cwd=folder, capture_output=True, timeout=60)
    if done.returncode:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgreSQL server for this test module (startup takes a second or two), stopped and deleted afterwards.

    Its folder is a short one under /tmp, not pytest's: the unix socket's path has a length limit, and when root runs the
    tests the `postgres` user owns the folder, which it could not reach inside pytest's root-only temporary folders.
    """
    folder = Path(tempfile.mkdtemp(prefix="transferlab-pg-"))
    if os.geteuid() == 0:
        as_server_user()  # fails clearly when there is no `postgres` user
        shutil.chown(folder, "postgres", "postgres")
    try:
        yield start_postgres(folder)
    finally:
        stop_postgres(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The SQLAlchemy URL of a fresh database on this module's PostgreSQL server."""
    return postgres_server.create_database()
