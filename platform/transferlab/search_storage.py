"""Where a search's Optuna trials live: an SQLite file by default, PostgreSQL (or any SQLAlchemy database) for parallel
workers; heartbeats mark a killed worker's trial failed and retry it, so none stays RUNNING forever."""

import os

from .errors import SpecError, TransferlabError
from .specs import excerpt

DEFAULT_STORAGE = "sqlite:///optuna.db"  # beside MLflow's default mlflow.db in the working directory
HEARTBEAT_ENV = "TRANSFERLAB_SEARCH_HEARTBEAT"  # seconds between a running trial's heartbeats (tests shorten it)
HEARTBEAT_S = 10
STALE_BEATS = 3  # a trial whose heartbeat is this many beats old is failed (its worker is gone) and retried
MAX_RETRY = 2  # a trial whose worker died is retried at most this often, then counts as failed
SCHEMES = ("sqlite", "postgresql", "mysql")


def heartbeat_s() -> int:
    """Seconds between heartbeats of a running trial ($TRANSFERLAB_SEARCH_HEARTBEAT, default 10)."""
    text = os.environ.get(HEARTBEAT_ENV, str(HEARTBEAT_S))
    if not text.isdigit() or not 1 <= int(text) <= 3600:
        raise SpecError(f"${HEARTBEAT_ENV} must be whole seconds in 1..3600, got {excerpt(text)}")
    return int(text)


def check_storage(url: str, workers: int) -> str:
    """The storage URL, checked: a database URL Optuna can open, and not SQLite when several workers write at once."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SpecError(f"--storage {excerpt(url)} is not a database URL; use e.g. {DEFAULT_STORAGE} or "
                        "postgresql+psycopg2://user@host/db") from None
    if parsed.get_backend_name() not in SCHEMES:
        raise SpecError(f"--storage {excerpt(redacted(url))}: Optuna storages here are {', '.join(SCHEMES)} databases, "
                        f"not {parsed.get_backend_name()!r}")
    if workers > 1 and parsed.get_backend_name() == "sqlite":
        raise SpecError(f"--workers {workers} needs a database server: SQLite serializes writers, so parallel workers would wait "
                        "on its lock; pass --storage postgresql+psycopg2://user@host/db (pip install -e '.[postgres]')")
    return url


def redacted(url: str) -> str:
    """The URL without its password, for logs and MLflow params."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats and retries of trials whose worker died; one line if it cannot be opened."""
    import warnings

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are Optuna's own, if new
    beat = heartbeat_s()
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=beat,
                                          grace_period=STALE_BEATS * beat,
                                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
        if storage.engine.dialect.name == "sqlite":
            fast_sqlite(storage.engine)
        return storage
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageUnavailable(f"cannot open the Optuna storage {redacted(url)}: {type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0][:300]}") from None


def fast_sqlite(engine) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints: a commit then costs well under a millisecond instead of an
    fsync each (a trial makes dozens); a power loss can lose the last commits, never corrupt the file."""
    from sqlalchemy import event, text

    def on_connect(connection, _record) -> None:
        connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while Optuna made its tables get the pragma on their next use
    with engine.connect() as connection:
        connection.execute(text("PRAGMA journal_mode=WAL"))  # stored in the file: every later process gets it too


class StorageUnavailable(TransferlabError):
    """The search's Optuna storage cannot be opened (a database server away, a missing driver, a bad URL)."""
