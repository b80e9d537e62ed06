"""Errors a user can act on: the CLI prints them without a traceback and exits with code 2."""


class TransferlabError(Exception):
    """Base of every error caused by input the user can fix."""


class SpecError(TransferlabError):
    """A spec string or component parameter is malformed, unknown or of the wrong type."""


class PluginError(TransferlabError):
    """Plugins could not be loaded or registered consistently."""


class DataError(TransferlabError):
    """A source's files are missing, unreadable or inconsistent."""


class PolicyError(TransferlabError):
    """A subset policy cannot be applied to the data it was given."""


class CacheError(TransferlabError):
    """A cache operation that cannot be done."""


class CheckpointError(TransferlabError):
    """A run's checkpoint cannot be read or belongs elsewhere; the run stays resumable (KILLED) and the file is kept."""

    run_status = "KILLED"  # how the run ends (see tracking.run_status): not a training failure


class StorageError(TransferlabError):
    """A disk under transferlab's cache is full or read-only: nothing half-written is kept; fix it and rerun."""

    resumable = True  # the run's last checkpoint is kept; the next request resumes it


class DivergedError(TransferlabError):
    """Training produced a non-finite loss; the run ends FAILED and is never reused."""


class TasksFailed(TransferlabError):
    """Transfer tasks failed after the others ran: `results` holds the others' metrics (recorded, and printed by the CLI)."""

    def __init__(self, failed: list[tuple[str, BaseException]], results: dict[str, float], pretrain_run: str):
        self.results, self.runs = results, {"pretraining run": pretrain_run}
        name, exc = failed[0]
        why = str(exc) if isinstance(exc, TransferlabError) else f"{type(exc).__name__}: {exc}; the traceback is in its run's error.txt"
        more = f" ({len(failed) - 1} more failed: {', '.join(n for n, _ in failed[1:])})" if len(failed) > 1 else ""
        kept = (f"the {len(results)} metrics of the other tasks are kept (printed above, recorded on run {pretrain_run}); "
                if results else "")
        super().__init__(f"transfer task {name} failed: {' '.join(why.split())[:500]}{more}; {kept}"
                         "fix it and rerun: finished tasks are reused")
