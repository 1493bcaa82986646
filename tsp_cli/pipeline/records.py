"""The record files of an output folder: one writer per file, any number of readers.

Every finished video gets one JSON line (fps, frame count, clips, shard) and every failed
attempt one line (video, error). On a cluster, hundreds of processes on many machines finish
videos in one folder at once, and appending to one shared file is only safe on a local disk:
NFS clients simulate ``O_APPEND`` (read the size, write there), so two nodes appending at once
can overwrite each other's line. So no file here ever has two writers: each process writes its
own pair of files, named after its host, process id and a random token::

    tsp-records/videos-<host>-<pid>-<token>.jsonl     written only by that process
    tsp-records/failures-<host>-<pid>-<token>.jsonl   created on its first failure

One file per run of a shard (not per video) keeps the count at a few thousand for 1,000 shards.
Readers merge every file, and the single shared ``videos.jsonl`` / ``failures.jsonl`` of folders
written by earlier versions, keeping each video's latest record. A line that cannot be read
(cut short by a crash, damaged bytes, not UTF-8) is skipped and counted, so that the caller can
say so once instead of failing or staying silent.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The folder of per-process record files, inside the output folder.
RECORDS_DIR = "tsp-records"
#: The record files of folders written before one-writer-per-file (still read, never written).
LEGACY_RECORDS_NAME = "videos.jsonl"
LEGACY_FAILURES_NAME = "failures.jsonl"
VIDEOS, FAILURES = "videos", "failures"
_LEGACY_NAMES = {VIDEOS: LEGACY_RECORDS_NAME, FAILURES: LEGACY_FAILURES_NAME}
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Records:
    """What the record files say: each video's latest record and latest failure, and the damage seen.

    ``all_videos`` keeps every readable video record (the speed of a run needs them all).
    ``damaged`` maps a file (relative to the folder) to its number of unreadable lines.
    """

    videos: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    all_videos: list[dict[str, Any]] = field(default_factory=list)
    damaged: dict[str, int] = field(default_factory=dict)

    def damage_note(self) -> str | None:
        """One sentence naming the unreadable lines, or ``None`` when every line was read."""
        if not self.damaged:
            return None
        lines = sum(self.damaged.values())
        files = ", ".join(f"{name} ({count})" for name, count in sorted(self.damaged.items())[:3])
        more = f" and {len(self.damaged) - 3} more files" if len(self.damaged) > 3 else ""
        return (
            f"Skipped {lines} unreadable record line{'s' if lines != 1 else ''} in {files}{more} "
            "(cut short by a crash, or damaged); their videos are checked as if unrecorded."
        )


def record_files(out_dir: Path, kind: str) -> list[Path]:
    """Every file holding records of ``kind`` (``videos`` or ``failures``): the legacy one first."""
    out_dir = Path(out_dir)
    found = [out_dir / _LEGACY_NAMES[kind]]
    folder = out_dir / RECORDS_DIR
    if folder.is_dir():
        prefix = f"{kind}-"
        with os.scandir(folder) as entries:
            found += sorted(
                folder / entry.name
                for entry in entries
                if entry.name.startswith(prefix) and entry.name.endswith(".jsonl")
            )
    return [path for path in found if path.is_file()]


def has_records(out_dir: Path) -> bool:
    """Whether the folder holds any record file (of this layout or the legacy one)."""
    return bool(record_files(out_dir, VIDEOS) or record_files(out_dir, FAILURES))


def parse_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of ``data``, one a line, and how many non-empty lines were unreadable."""
    records, damaged = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            damaged += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged += 1
    return records, damaged


def read_kind(out_dir: Path, kind: str, damaged: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every readable record of ``kind`` in the folder, file by file; unreadable lines counted in ``damaged``."""
    out_dir = Path(out_dir)
    records: list[dict[str, Any]] = []
    for path in record_files(out_dir, kind):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        found, bad = parse_lines(data)
        records += found
        if bad and damaged is not None:
            damaged[str(path.relative_to(out_dir))] = bad
    return records


def read_records(out_dir: Path) -> Records:
    """The latest record and failure of each video, from every record file of the folder."""
    result = Records()
    result.all_videos = [r for r in read_kind(out_dir, VIDEOS, result.damaged) if "video" in r]
    result.videos = _latest(result.all_videos, "finished_at")
    failures = [_with_failed_at(r) for r in read_kind(out_dir, FAILURES, result.damaged) if "video" in r]
    result.failures = _latest(failures, "failed_at")
    return result


def _latest(records: list[dict[str, Any]], time_key: str) -> dict[str, dict[str, Any]]:
    """Each video's record with the latest time (files have no order between them); ties: the later read."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        name = record["video"]
        known = latest.get(name)
        if known is None or _time_of(record, time_key) >= _time_of(known, time_key):
            latest[name] = record
    return latest


def _time_of(record: dict[str, Any], key: str) -> float:
    try:
        return float(record.get(key, float("-inf")))
    except (TypeError, ValueError):
        return float("-inf")


def _with_failed_at(record: dict[str, Any]) -> dict[str, Any]:
    """Failure records written before ``failed_at`` called it ``time``; folders of either kind still resume."""
    if "failed_at" not in record and "time" in record:
        return {**record, "failed_at": record["time"]}
    return record


# --- Writing -----------------------------------------------------------------------------------


class _Writer:
    """This process's record files; a new process (even a forked one) gets new files."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        host = _UNSAFE_IN_NAMES.sub("_", socket.gethostname()) or "host"
        self.tag = f"{host}-{self.pid}-{uuid.uuid4().hex[:8]}"
        self.lock = threading.Lock()

    def path(self, out_dir: Path, kind: str) -> Path:
        return Path(out_dir) / RECORDS_DIR / f"{kind}-{self.tag}.jsonl"


_writer: _Writer | None = None


def _this_process() -> _Writer:
    global _writer
    if _writer is None or _writer.pid != os.getpid():
        _writer = _Writer()
    return _writer


def append_record(out_dir: Path, kind: str, record: dict[str, Any]) -> Path:
    """Append one record to this process's file of ``kind``; returns that file.

    Only this process writes the file, so the append is safe on any file system. A file whose
    last line is unfinished (never the case for a file of our own, but cheap to rule out) first
    gets a newline, so that a new record is never glued onto a broken one.
    """
    writer = _this_process()
    path = writer.path(out_dir, kind)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with writer.lock:
        path.parent.mkdir(exist_ok=True)
        append_line(path, line)
    return path


def append_line(path: Path, line: bytes) -> None:
    """Append ``line`` with one write, after a newline if the file ends in an unfinished line."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)


def now() -> float:
    """Every time in the records and the manifest is ``<event>_at``, in Unix epoch seconds."""
    return time.time()


# --- Following a run ---------------------------------------------------------------------------


class FileFollower:
    """Reads the records appended to one JSON-lines file since it was first seen.

    Only whole lines are taken; a line still being written is read on the next call.
    """

    def __init__(self, path: Path, *, from_end: bool) -> None:
        self.path = path
        self.offset = path.stat().st_size if from_end and path.is_file() else 0
        self.partial = b""

    def new_records(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = self.partial + handle.read()
            self.offset = handle.tell()
        whole, _, self.partial = data.rpartition(b"\n")
        yield from parse_lines(whole)[0]
