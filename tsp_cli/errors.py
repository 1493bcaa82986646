"""The errors a user can cause, each carrying one sentence that says what to do.

Every class subclasses :class:`TspError` and, where one fits, the builtin it refines, so that
Python callers can catch what they already know (``except ValueError``, ``except OSError``,
``except LookupError``) and the CLI can catch one base class at its edge. Each carries the
structured fields a caller needs (the parameter at fault, the path, the model name) besides
its message, which is worded in the core's own terms.

Exit codes are the CLI's business (``tsp_cli.cli.errors``), not the errors'.
"""

from __future__ import annotations

from pathlib import Path


class TspError(Exception):
    """A problem the user can act on; ``str(error)`` is the whole message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _AboutAFile(TspError):
    """An error about one file, named in ``path`` (``None`` when no single file is at fault)."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class UsageError(TspError, ValueError):
    """Bad options or inputs found before any work started.

    ``parameter`` names the argument at fault in the Python API (``batch_size``, ``shard``),
    so that the CLI can tell the user which flag to change.
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class DeviceError(UsageError):
    """A device that does not exist on this machine.

    ``device`` is the device as given; ``reason`` what is wrong with it, without the device's
    name (``"asks for CUDA, but no CUDA GPU is available here"``), for a caller that words the
    sentence its own way.
    """

    def __init__(
        self, message: str, *, device: str | None = None, reason: str | None = None, parameter: str = "device"
    ) -> None:
        super().__init__(message, parameter=parameter)
        self.device = device
        self.reason = reason


class ModelsFileError(_AboutAFile, UsageError):
    """A ``TSP_MODELS_FILE`` that cannot be read, or an entry in it with a bad field."""


class CheckpointError(_AboutAFile, ValueError):
    """A checkpoint that cannot be read, or does not fit the requested backbone."""


class ModelNotFoundError(TspError, LookupError):
    """A model name that is neither released nor declared in the models file."""

    def __init__(self, message: str, *, name: str | None = None, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.suggestions = suggestions


class DownloadError(TspError, OSError):
    """A download that failed (network, HTTP status, disk)."""

    def __init__(self, message: str, *, name: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.url = url


class HashMismatchError(DownloadError):
    """A file whose SHA-256 does not match the published one."""


class CachedFileCorruptError(HashMismatchError):
    """A cached checkpoint whose bytes no longer match its hash (truncated or edited)."""


class OfflineError(DownloadError, ConnectionError):
    """A checkpoint that must be downloaded while offline mode forbids the network."""


class VideoError(_AboutAFile, ValueError):
    """One video that cannot be decoded as the recipe needs; it never stops the others."""


class UnsafePickleError(_AboutAFile, ValueError):
    """A legacy ``.pkl`` file that is not a plain NumPy array of features; nothing from it was run."""


class FeatureFileError(_AboutAFile, ValueError):
    """A feature file that cannot go into a merged file as it is (unreadable, wrong shape, NaN)."""


class MissingVideosError(TspError, LookupError):
    """Videos of the expected list with no feature file; ``missing`` holds all their names."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


class OutputError(_AboutAFile, OSError):
    """The output folder cannot be written mid-run (disk full, permissions changed); finished videos are kept."""


class MemoryExhaustedError(TspError, MemoryError):
    """Not even one clip fits in memory mid-run (a batch that does not fit is split first); finished videos are kept."""
