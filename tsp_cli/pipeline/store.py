"""The output folder of ``tsp extract``: per-video feature files, the run manifest, and two logs.

Layout of ``OUT_DIR``::

    <name>.npy          float32, clips x 512, written atomically (temp file + rename)
    tsp-manifest.json   the settings that change features, and tool versions for the record
    videos.jsonl        one line per finished video: fps, frame count, clips (for merge/status)
    failures.jsonl      one line per failed attempt: video and error

A finished ``.npy`` is never rewritten, so a rerun skips it; a video that failed has no
``.npy`` and is simply tried again. Lines are appended with single ``O_APPEND`` writes, which
keeps the logs whole when several processes share the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tsp_cli.atomic import TEMP_MARKER, atomic_path
from tsp_cli.errors import UsageError

FEATURE_SUFFIX = ".npy"
MANIFEST_NAME = "tsp-manifest.json"
RECORDS_NAME = "videos.jsonl"
FAILURES_NAME = "failures.jsonl"
LOCK_NAME = "tsp-manifest.lock"

#: The manifest entries that change features; a rerun must agree on all of them.
FEATURE_SETTINGS = ("checkpoint_sha256", "backbone", "clip_len", "frame_rate", "stride", "precision")

_TEMP_NAME = re.compile(re.escape(TEMP_MARKER) + r"(?P<host>.+)-(?P<pid>\d+)$")


def feature_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{name}{FEATURE_SUFFIX}"


def finished_names(out_dir: Path) -> set[str]:
    """Names of videos whose features are complete (only whole files ever carry the final name)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return set()
    return {path.name[: -len(FEATURE_SUFFIX)] for path in out_dir.iterdir() if path.name.endswith(FEATURE_SUFFIX)}


def save_features(out_dir: Path, name: str, features: np.ndarray) -> Path:
    """Write ``features`` as ``<name>.npy`` atomically and durably."""
    final = feature_path(out_dir, name)
    with atomic_path(final) as temp, open(temp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return final


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Remove temporary files left by dead processes of this host; never those of a live one.

    A temporary file of another host is left alone: from here we cannot tell whether its
    writer still runs.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for path in out_dir.iterdir():
        match = _TEMP_NAME.search(path.name)
        if match and match["host"] == host and not _process_is_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write, so concurrent writers never interleave."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every whole JSON line of ``path`` (a line cut short by a crash is skipped)."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_video_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest ``videos.jsonl`` record of each video, by name."""
    return {record["video"]: record for record in read_jsonl(Path(out_dir) / RECORDS_NAME) if "video" in record}


def read_failures(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest failure of each video that still has no features (``failed_at`` also for older records' ``time``)."""
    finished = finished_names(out_dir)
    failures = {r["video"]: _with_failed_at(r) for r in read_jsonl(Path(out_dir) / FAILURES_NAME) if "video" in r}
    return {name: record for name, record in failures.items() if name not in finished}


def _with_failed_at(record: dict[str, Any]) -> dict[str, Any]:
    """Failure records written before ``failed_at`` called it ``time``; folders of either kind still resume."""
    if "failed_at" not in record and "time" in record:
        return {**record, "failed_at": record["time"]}
    return record


# Every time in the records and the manifest is ``<event>_at``, in Unix epoch seconds.


def record_video(out_dir: Path, record: dict[str, Any]) -> None:
    append_jsonl(Path(out_dir) / RECORDS_NAME, {**record, "finished_at": time.time()})


def record_failure(out_dir: Path, video: str, path: str, error: str, **extra: Any) -> None:
    append_jsonl(
        Path(out_dir) / FAILURES_NAME,
        {"video": video, "path": path, "error": error, "failed_at": time.time(), **extra},
    )


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{path} is not valid JSON; remove it if the folder holds no features yet.") from None


@contextmanager
def _folder_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``tsp-manifest.lock``, so that shards starting together agree on one manifest."""
    with open(Path(out_dir) / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_output_folder(out_dir: Path, settings: dict[str, Any], versions: dict[str, str]) -> list[str]:
    """Create the manifest, or check that the folder's features were made with these settings.

    Returns notes for the user (tool versions that differ from the recorded ones). Mixed
    features in one folder are refused, also between processes starting at the same moment.
    """
    with _folder_lock(out_dir):
        return _claim(Path(out_dir), settings, versions)


def _difference(key: str, recorded: dict[str, Any], settings: dict[str, Any]) -> str:
    """One differing setting in words; checkpoints by file name, with enough of the hash to tell them apart."""
    if key == "checkpoint_sha256":

        def checkpoint(values: dict[str, Any]) -> str:
            digest = str(values.get("checkpoint_sha256") or "")[:12]
            return f"{values.get('checkpoint', 'a checkpoint')} (SHA-256 {digest}…)"

        return f"checkpoint {checkpoint(recorded)} there vs {checkpoint(settings)} now"
    return f"{key} {recorded.get(key)!r} there vs {settings.get(key)!r} now"


def _claim(out_dir: Path, settings: dict[str, Any], versions: dict[str, str]) -> list[str]:
    existing = read_manifest(out_dir)
    if existing is None:
        now = time.time()
        manifest = {
            "settings": settings,
            "versions": versions,
            "created_at": now,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),  # for people reading the file
        }
        with atomic_path(out_dir / MANIFEST_NAME) as temp:
            temp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return []
    recorded = existing.get("settings", {})
    differing = [key for key in FEATURE_SETTINGS if recorded.get(key) != settings.get(key)]
    if differing:
        details = ", ".join(_difference(key, recorded, settings) for key in differing)
        raise UsageError(
            f"{out_dir} holds features made with other settings ({details}); use another `out_dir` folder."
        )
    old_versions = existing.get("versions", {})
    return [
        f"{tool} is {version} now, {old_versions[tool]} when this folder was started."
        for tool, version in versions.items()
        if tool in old_versions and old_versions[tool] != version
    ]
