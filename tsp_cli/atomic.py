"""Write a file under its final name only once it is complete.

Every output of ``tsp`` (features, merged HDF5 files, CSVs, re-encoded videos) is written to a
temporary file in the same folder and renamed when done, so that an interrupted run never leaves
a half-written file that a later run would take for a finished one.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Part of every temporary name, so that readers of an output folder can skip them.
TEMP_MARKER = ".tsp-tmp-"
#: ``os.link`` errors meaning "this file system has no hard links", not "the name exists".
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK})
_TEMP_NAME = re.compile(re.escape(TEMP_MARKER) + r"(?P<host>.+)-(?P<pid>\d+)$")


def temp_path_for(final: Path) -> Path:
    """``<final name>.tsp-tmp-<host>-<pid>``: unique per writer, even on a shared file system."""
    return final.with_name(f"{final.name}{TEMP_MARKER}{socket.gethostname()}-{os.getpid()}")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``final`` on success, remove it on any error.

    The temporary file sits next to ``final`` so that the rename stays on one file system and is
    atomic. The caller must have closed the file when the ``with`` block ends.
    """
    final = Path(final)
    temp = temp_path_for(final)
    try:
        yield temp
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created (or written) here, or ``None``; nothing is created to find out.

    So a command can refuse a bad output path before any work, and leave nothing behind.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def os_error_reason(error: OSError) -> str:
    """An ``OSError`` in words for a one-sentence message; h5py's carry only text, their errno inside."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error):
        return "the disk is full"
    if error.strerror:
        return error.strerror
    if error.errno:
        return os.strerror(error.errno)
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def process_is_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` runs (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temp_files(folder: Path, final_name: str | None = None) -> list[Path]:
    """Remove the temporary files that dead processes of this host left in ``folder``.

    ``final_name`` limits it to the temporary files of that one output (a merged file in a
    folder of other things). A live process's file is never touched, nor one of another host:
    from here we cannot tell whether its writer still runs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    prefix = f"{final_name}{TEMP_MARKER}" if final_name is not None else ""
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMP_NAME.search(entry.name)
            if not match or not entry.name.startswith(prefix) or match["host"] != host:
                continue
            if not process_is_alive(int(match["pid"])):
                path = folder / entry.name
                path.unlink(missing_ok=True)
                removed.append(path)
    return sorted(removed)


def link_new_name(source: Path, final: Path) -> bool | None:
    """Give the complete file ``source`` the name ``final`` too, unless ``final`` exists.

    ``True``: linked (this caller's file is the one); ``False``: the name was taken (another
    process's file is); ``None``: this file system has no hard links (the caller falls back).
    ``link`` is atomic and refuses an existing name on NFS, Lustre and GPFS alike, unlike a
    rename, which silently replaces. Over NFS a retried link can answer "exists" for the link it
    made itself, so a link count of 2 on ``source`` also means ``True``.
    """
    try:
        os.link(source, final)
    except FileExistsError:
        return os.stat(source).st_nlink == 2
    except OSError as error:
        if error.errno in NO_HARD_LINKS:
            return None
        raise
    return True
