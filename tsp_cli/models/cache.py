"""Checkpoint files in the local cache: download them with pooch, check their SHA-256, find them.

Invariant: a file sits in the cache under its real name only after its hash was checked. Every
download goes to a hidden staging name next to it, unique to its host and process, and is
linked into place (atomically, on the same file system) once verified, so an interrupted,
truncated or tampered download never looks like a good checkpoint, and ``--force`` keeps the old
file until the new one has passed.

A cache on a shared file system may see 64 array tasks start at once with nothing cached: each
downloads to its own staging file, and the first verified file to be linked under the real name
stays; the others find the name taken and use that file. A file in place is never replaced
(except by ``--force``), so no task ever reads a file that another one is swapping under it
(NFS answers ``ESTALE`` to a reader whose file was renamed over from another machine).

Cached files are checked again before each use. Hashing a 250 MB checkpoint costs about a
second, so the digest is remembered in a small hidden sidecar file together with the size and
modification time it was computed for; any change to the file invalidates it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from tsp_cli import settings
from tsp_cli.atomic import link_new_name
from tsp_cli.atomic import process_is_alive as _process_is_alive
from tsp_cli.errors import (
    CachedFileCorruptError,
    DownloadError,
    HashMismatchError,
    OfflineError,
    TspError,
)
from tsp_cli.models import registry
from tsp_cli.models.registry import Checkpoint

#: Seconds to wait for a connection, then for each piece of data (requests' ``timeout``).
DOWNLOAD_TIMEOUT_S: tuple[float, float] = (10.0, 60.0)
#: Bytes written (and reported to the progress bar) at a time; pooch's default of 1 KiB makes
#: a 250 MB download needlessly slow.
CHUNK_SIZE = 1 << 20
#: The coarsest mtime clock we allow for (FAT's 2 s), see :func:`_remember_digest`.
_MTIME_RESOLUTION_NS = 2_000_000_000
_NOT_KEPT = ", so it was not kept"
_HOST = re.sub(r"[^A-Za-z0-9._-]+", "_", socket.gethostname()) or "host"

if TYPE_CHECKING:  # pooch and requests load only when a download starts: `tsp models list` needs neither
    import requests


class ProgressBar(Protocol):
    """What pooch's downloaders drive: a settable ``total`` plus ``update``, ``reset``, ``close``."""

    total: int

    def update(self, advance: int) -> object: ...

    def reset(self) -> object: ...

    def close(self) -> object: ...


def local_path(name: str) -> Path:
    """Where the checkpoint called ``name`` is (or would be) kept in the cache folder."""
    return _local_path(registry.get(name))


def cached_path(name: str) -> Path | None:
    """The cached file of ``name`` if it is there and still matches its hash, else ``None``.

    Cheap when the sidecar digest is current; never touches the network.
    """
    checkpoint = registry.get(name)
    path = _local_path(checkpoint)
    if not path.is_file():
        return None
    try:
        _check_cached(checkpoint, path)
    except DownloadError:  # damaged or unreadable: either way not usable as it is
        return None
    return path


def fetch(name: str, *, offline: bool = False, force: bool = False, progress: ProgressBar | None = None) -> Path:
    """The verified local file of checkpoint ``name``, downloading it first if needed.

    ``offline`` (or ``TSP_OFFLINE``) forbids the network; ``force`` downloads again even when a
    good copy is cached; ``progress`` is a pooch-compatible progress bar (see :class:`ProgressBar`).
    """
    checkpoint = registry.get(name)
    path = _local_path(checkpoint)
    if path.exists() and not force:
        _check_cached(checkpoint, path)
        return path
    if offline or settings.offline():
        raise OfflineError(_offline_message(checkpoint, path, already_cached=path.exists()))
    _download(checkpoint, path, progress, replace=force)
    return path


def verify(path: Path, expected_hash: str) -> str:
    """Raise :class:`HashMismatchError` unless ``path``'s SHA-256 starts with ``expected_hash``.

    ``expected_hash`` is the full hex digest or a prefix of it (8 digits at least, or any file
    would pass); returns the full digest.
    """
    if len(expected_hash) < registry.MIN_HASH_PREFIX:
        raise ValueError(f"expected_hash needs at least {registry.MIN_HASH_PREFIX} hex digits, not {expected_hash!r}")
    digest = _sha256_of(path)
    _require_match(str(path), expected_hash.lower(), digest)
    return digest


# --- Locations ---------------------------------------------------------------------------------


def _local_path(checkpoint: Checkpoint) -> Path:
    return settings.cache_dir() / checkpoint.cache_relpath


def _staging_path(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this host and process: same file system (atomic
    rename and link), no clash between processes on any machine downloading the same checkpoint."""
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.part")


def _remove_dead_staging_files(path: Path) -> None:
    """Staging files of ``path`` that killed downloads of this host left; others' are not ours to judge."""
    pattern = re.compile(re.escape(f".{path.name}.{_HOST}-") + r"(?P<pid>\d+)-[0-9a-f]+\.part$")
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            match = pattern.match(entry.name)
            if match and not _process_is_alive(int(match["pid"])):
                Path(entry.path).unlink(missing_ok=True)


def _put_in_place(staging: Path, path: Path, *, replace: bool) -> None:
    """Give the verified ``staging`` file its real name, unless another process's verified file has it.

    ``link`` fails when the name exists, so the first of many tasks wins and a file in use is
    never swapped; ``replace`` (``--force``) renames over the old file on purpose. A file
    system without hard links gets a rename, which is still atomic.
    """
    if replace or link_new_name(staging, path) is None:
        os.replace(staging, path)
    # else linked, or the name is another task's file, verified before it got it: use that one


def _sidecar_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256.json")


# --- Hashes ------------------------------------------------------------------------------------


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of any file; for a cache file already checked, the digest remembered beside it.

    ``tsp extract --checkpoint NAME`` records the checkpoint's hash in its manifest right after
    :func:`fetch` checked it, so this spares a second read of a 250 MB file.
    """
    path = Path(path)
    return _remembered_digest(path, path.stat()) or _sha256_of(path)


def _describe_expected(expected_hash: str) -> str:
    return expected_hash if len(expected_hash) == 64 else f"{expected_hash}… (published prefix)"


def _require_match(source: str, expected_hash: str, digest: str, *, outcome: str = "") -> None:
    """Raise :class:`HashMismatchError` naming ``source``, both hashes, and ``outcome`` if given."""
    if not digest.startswith(expected_hash):
        raise HashMismatchError(
            f"{source} has SHA-256 {digest}, not the expected {_describe_expected(expected_hash)}{outcome}."
        )


def _check_cached(checkpoint: Checkpoint, path: Path) -> None:
    """Refuse a cached file whose bytes changed since it was downloaded (truncated or edited)."""
    try:
        status = path.stat()
        digest = _remembered_digest(path, status)
        if digest is None:
            hashing_started_ns = time.time_ns()
            digest = _sha256_of(path)
            _remember_digest(path, digest, status, hashing_started_ns)
    except OSError as error:
        raise DownloadError(f"Cannot read the cached file {path}: {error.strerror or error}.") from None
    if not digest.startswith(checkpoint.sha256):
        raise CachedFileCorruptError(
            f"The cached file {path} has SHA-256 {digest}, not the expected"
            f" {_describe_expected(checkpoint.sha256)}; run `tsp models download {checkpoint.name} --force`"
            " to download it again."
        )


def _remembered_digest(path: Path, status: os.stat_result) -> str | None:
    """The digest stored beside ``path`` if it was computed for this very size and mtime."""
    try:
        record = json.loads(_sidecar_path(path).read_text())
        if record["size"] == status.st_size and record["mtime_ns"] == status.st_mtime_ns:
            return str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _remember_digest(path: Path, digest: str, status: os.stat_result, hashing_started_ns: int) -> None:
    """Store ``digest`` beside ``path``, keyed by the size and mtime it was computed for.

    File systems stamp mtimes with a coarse clock (a few ms; 2 s on FAT), so a file modified
    soon after its last write can keep the same mtime. As git does for its index, a file whose
    mtime is that close to the hashing is not remembered: it is simply hashed again next time.
    A read-only cache likewise just means hashing again.
    """
    if status.st_mtime_ns > hashing_started_ns - _MTIME_RESOLUTION_NS:
        return
    record = {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": digest}
    sidecar = _sidecar_path(path)
    staging = _staging_path(sidecar)
    try:
        staging.write_text(json.dumps(record))
        os.replace(staging, sidecar)
    except OSError:
        staging.unlink(missing_ok=True)


# --- Downloads ---------------------------------------------------------------------------------


def _download(checkpoint: Checkpoint, path: Path, progress: ProgressBar | None, *, replace: bool) -> None:
    """Fetch into a staging file, verify it, then put it into place; never leave a partial file."""
    with _as_download_error(checkpoint, path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging_files(path)
        staging = _staging_path(path)
        try:
            if registry.is_remote(checkpoint.url):
                _download_over_http(checkpoint, staging, progress)
            else:
                _copy_local_file(checkpoint, staging, progress)
            _put_in_place(staging, path, replace=replace)
        finally:
            staging.unlink(missing_ok=True)


def _download_over_http(checkpoint: Checkpoint, staging: Path, progress: ProgressBar | None) -> None:
    """pooch downloads (with its progress protocol); we hash the staged file, whole digest or published prefix."""
    import pooch

    # pooch logs every download at INFO level; the CLI draws its own progress, so only warnings.
    pooch.get_logger().setLevel(logging.WARNING)
    downloader = pooch.HTTPDownloader(
        progressbar=progress if progress is not None else False, chunk_size=CHUNK_SIZE, timeout=DOWNLOAD_TIMEOUT_S
    )
    downloader(checkpoint.url, str(staging), None)
    _require_match(
        f"{checkpoint.filename} from {checkpoint.url}", checkpoint.sha256, _sha256_of(staging), outcome=_NOT_KEPT
    )


def _copy_local_file(checkpoint: Checkpoint, staging: Path, progress: ProgressBar | None) -> None:
    """``file://`` and plain-path entries, which pooch has no downloader for: copy and hash at once."""
    source = registry.local_source_path(checkpoint.url)
    if not source.is_file():
        raise DownloadError(f"Cannot copy {checkpoint.name}: {source} is not a file.")
    hasher = hashlib.sha256()
    if progress is not None:
        progress.total = source.stat().st_size
    with source.open("rb") as reader, staging.open("wb") as writer:
        while chunk := reader.read(CHUNK_SIZE):
            writer.write(chunk)
            hasher.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    if progress is not None:
        progress.close()
    _require_match(str(source), checkpoint.sha256, hasher.hexdigest(), outcome=_NOT_KEPT)


@contextlib.contextmanager
def _as_download_error(checkpoint: Checkpoint, folder: Path) -> Iterator[None]:
    """Turn what requests and the file system raise into one-sentence :class:`DownloadError`\\ s."""
    import requests.exceptions

    host = urlsplit(checkpoint.url).netloc or checkpoint.url
    try:
        yield
    except TspError:
        raise
    except requests.exceptions.HTTPError as error:
        status = error.response.status_code if error.response is not None else "an error"
        reason = f" ({error.response.reason})" if error.response is not None and error.response.reason else ""
        raise DownloadError(
            f"Downloading {checkpoint.name} failed: {checkpoint.url} answered HTTP {status}{reason}{_mirror_hint(checkpoint)}."
        ) from None
    except requests.exceptions.RequestException as error:  # before OSError: it subclasses IOError
        raise DownloadError(_connection_message(checkpoint, host, error)) from None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DownloadError(
                f"The disk is full: no room in {folder} for {checkpoint.name}; free some space or set TSP_CACHE_DIR to another folder."
            ) from None
        raise DownloadError(f"Cannot write {checkpoint.name} into {folder}: {error.strerror or error}.") from None


def _connection_message(checkpoint: Checkpoint, host: str, error: requests.exceptions.RequestException) -> str:
    import requests.exceptions

    causes = _causes(error)
    if isinstance(error, requests.exceptions.Timeout) or any(isinstance(cause, TimeoutError) for cause in causes):
        connect_s, read_s = DOWNLOAD_TIMEOUT_S
        return (
            f"Downloading {checkpoint.name} timed out: {host} sent nothing for {read_s:g} s"
            f" (or did not connect within {connect_s:g} s); try again later{_mirror_hint(checkpoint)}."
        )
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return f"Cannot download {checkpoint.name}: {host} refused the connection{_mirror_hint(checkpoint)}."
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        return f"Cannot download {checkpoint.name}: the host {host} was not found; check the network{_mirror_hint(checkpoint)}."
    return f"Downloading {checkpoint.name} from {host} failed ({type(error).__name__}); try again{_mirror_hint(checkpoint)}."


def _causes(error: BaseException) -> list[BaseException]:
    """Every exception behind ``error``: requests wraps urllib3's, which wraps the socket's (as args or ``reason``)."""
    found: list[BaseException] = []
    pending: list[object] = [error]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        pending.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return found


def _mirror_hint(checkpoint: Checkpoint) -> str:
    """Point at ``TSP_BASE_URL`` when a failing released file came from a mirror the user set."""
    return "; check the mirror set by TSP_BASE_URL" if checkpoint.released and settings.base_url() else ""


def _offline_message(checkpoint: Checkpoint, path: Path, *, already_cached: bool) -> str:
    if already_cached:
        return f"Offline mode forbids downloading {checkpoint.name} again; drop `offline` (TSP_OFFLINE) to use `force`."
    return (
        f"{checkpoint.name} is not in the cache ({path} is missing) and offline mode forbids downloading it;"
        f" run `tsp models download {checkpoint.name}` where the network is reachable."
    )
