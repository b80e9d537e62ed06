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
