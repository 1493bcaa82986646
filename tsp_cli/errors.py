"""The errors a user can cause, each carrying one sentence that says what to do.

The CLI catches :class:`TspError` at the edge, prints its message and exits with its
``exit_code``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TspError(Exception):
    """A problem the user can act on; ``str(error)`` is the whole message."""

    #: 2: the invocation cannot start; 1: the command ran but some items failed.
    exit_code = 2


class UsageError(TspError):
    """Bad options or inputs found before any work started."""


class CheckpointError(TspError):
    """A checkpoint that cannot be read, or does not fit the requested backbone."""


class ModelNotFoundError(TspError):
    """A model name that is neither released nor declared in the models file."""


class DownloadError(TspError):
    """A download that failed (network, HTTP status, disk)."""

    exit_code = 1


class HashMismatchError(DownloadError):
    """A file whose SHA-256 does not match the published one."""


class VideoError(TspError):
    """One video that cannot be decoded as the recipe needs; it never stops the others."""

    exit_code = 1


class DeviceError(TspError):
    """A ``--device`` that does not exist on this machine."""


class ModelsFileError(UsageError):
    """A ``TSP_MODELS_FILE`` that cannot be read, or an entry in it with a bad field."""


class OfflineError(DownloadError):
    """A checkpoint that must be downloaded while offline mode forbids the network."""


class CachedFileCorruptError(HashMismatchError):
    """A cached checkpoint whose bytes no longer match its hash (truncated or edited)."""


class OutputError(TspError):
    """The output folder cannot be written mid-run (disk full, permissions changed); finished videos are kept."""

    exit_code = 1
