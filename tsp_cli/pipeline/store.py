"""The output folder of ``tsp extract``: per-video feature files, the run manifest, and the records.

Layout of ``OUT_DIR``::

    <name>.npy          float32, clips x 512, written atomically (temp file + rename)
    tsp-manifest.json   the settings that change features, and tool versions for the record
    tsp-records/        each process's own record files: finished videos (fps, frame count,
                        clips, for merge/status) and failed attempts (see records.py)

A finished ``.npy`` is checked cheaply before a rerun skips it (its header, dtype, shape and
size against its record, see resume.py); a video that failed, or whose file is damaged or has
no record, is simply done again. Folders of earlier versions, with one shared ``videos.jsonl``
and ``failures.jsonl``, are read the same way.

What this needs of the file system is only what NFS, Lustre and GPFS all give (docs/cluster.md):
a rename within one folder is atomic, and ``os.link`` fails when the name exists. No file is
ever appended to by two processes, and no lock is taken.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tsp_cli.atomic import atomic_path, link_new_name, remove_dead_temp_files, temp_path_for
from tsp_cli.errors import UsageError
from tsp_cli.pipeline import records, resume
from tsp_cli.pipeline.resume import FEATURE_SUFFIX, feature_path

__all__ = ["FEATURE_SUFFIX", "feature_path"]

MANIFEST_NAME = "tsp-manifest.json"
#: The shared record files of folders written by earlier versions; still read, no longer written.
RECORDS_NAME = records.LEGACY_RECORDS_NAME
FAILURES_NAME = records.LEGACY_FAILURES_NAME

#: The manifest entries that change features; a rerun must agree on all of them.
FEATURE_SETTINGS = ("checkpoint_sha256", "backbone", "clip_len", "frame_rate", "stride", "precision")
#: Recipe settings compared only where the folder's manifest records them (manifests before the recipe drove extraction did not).
RECIPE_SETTINGS = ("resize", "crop", "mean", "std")
#: A run first writes this much (then removes it), so that a full disk fails at once, not after minutes.
PROBE_BYTES = 1 << 20
#: How long a shard waits for the manifest another shard is still writing (only without ``os.link``).
_MANIFEST_WAIT_S = 5.0


def save_features(out_dir: Path, name: str, features: np.ndarray) -> Path:
    """Write ``features`` as ``<name>.npy`` atomically and durably."""
    final = feature_path(out_dir, name)
    with atomic_path(final) as temp, open(temp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return final


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Remove temporary files left by dead processes of this host; never those of a live one."""
    return remove_dead_temp_files(Path(out_dir))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` (a file only this process writes), never onto a broken last line."""
    records.append_line(Path(path), (json.dumps(record, sort_keys=True) + "\n").encode())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every readable JSON line of one file (a line cut short by a crash, or damaged, is skipped)."""
    try:
        return records.parse_lines(Path(path).read_bytes())[0]
    except FileNotFoundError:
        return []


def read_video_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest record of each finished video, from every record file of the folder."""
    return records.read_records(out_dir).videos


def read_failures(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest failure of each video that still has no features (``failed_at`` also for older records' ``time``)."""
    out_dir = Path(out_dir)
    present = resume.feature_names(out_dir)
    return {name: r for name, r in records.read_records(out_dir).failures.items() if name not in present}


def record_video(out_dir: Path, record: dict[str, Any]) -> None:
    records.append_record(out_dir, records.VIDEOS, {**record, "finished_at": records.now()})


def record_failure(out_dir: Path, video: str, path: str, error: str, **extra: Any) -> None:
    records.append_record(
        out_dir,
        records.FAILURES,
        {"video": video, "path": path, "error": error, "failed_at": records.now(), **extra},
    )


def is_output_folder(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds anything ``tsp extract`` writes: a manifest, records or feature files."""
    out_dir = Path(out_dir)
    return (out_dir / MANIFEST_NAME).is_file() or records.has_records(out_dir) or bool(resume.feature_names(out_dir))


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UsageError(f"Cannot read {path} ({error.strerror or error}).") from None
    try:
        manifest = json.loads(data.decode("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        raise UsageError(f"{path} is not valid JSON; remove it if the folder holds no features yet.") from None
    return manifest


def claim_output_folder(
    out_dir: Path, settings: dict[str, Any], versions: dict[str, str], *, check: resume.OutputCheck | None = None
) -> list[str]:
    """Create the manifest, or check that the folder's features were made with these settings.

    Returns notes for the user: tool versions that differ from the recorded ones, finished files
    found damaged (they are done again), unreadable record lines. Mixed features in one folder
    are refused, also between processes on many machines starting at the same moment: the
    first complete manifest to be linked into place wins, and every later process compares
    against it. Features without a manifest are refused (their settings are unknown). A folder
    that cannot hold a small write (a full disk) is refused before any work. ``check``: the
    folder's outputs checked by the caller just before (``resume.check_outputs``, limited to the
    videos it will run, whose finished ones it then skips); by default every file is checked here.
    """
    out_dir = Path(out_dir)
    # The files first, the manifest second: a shard that publishes its manifest and finishes a
    # video in between cannot make this one believe its features have no manifest.
    if check is None:
        check = resume.check_outputs(out_dir)
    existing = read_manifest(out_dir)
    if existing is None and check.present:
        raise UsageError(
            f"{out_dir} holds {len(check.present)} feature file(s) but no {MANIFEST_NAME}, so the settings they "
            "were made with are unknown; use another `out_dir` folder, or remove the features first."
        )
    _probe_free_space(out_dir)
    if existing is None and _publish_manifest(out_dir, settings, versions):
        notes: list[str] = []
    else:
        notes = _compare(out_dir, existing or _winning_manifest(out_dir), settings, versions)
    return notes + check.notes()


def _probe_free_space(out_dir: Path) -> None:
    """Write and remove :data:`PROBE_BYTES`, so that a disk still full is one sentence now, not after the first video."""
    probe = temp_path_for(out_dir / ".tsp-space-probe")
    try:
        with open(probe, "wb") as handle:
            handle.write(bytes(PROBE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "its disk (or your quota there) is full"
        else:
            reason = error.strerror or str(error)
        raise UsageError(
            f"Cannot write in {out_dir} ({reason}); free some space or give another `out_dir`.", parameter="out_dir"
        ) from None
    finally:
        probe.unlink(missing_ok=True)


def _publish_manifest(out_dir: Path, settings: dict[str, Any], versions: dict[str, str]) -> bool:
    """Put a complete manifest in place unless one exists; ``True`` when this process's is the one.

    A whole temporary file is linked to the final name: ``link`` fails if the name exists (a
    rename would silently replace another process's manifest).
    """
    created_at = time.time()
    manifest = {
        "settings": settings,
        "versions": versions,
        "created_at": created_at,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(created_at)),  # for people reading the file
    }
    text = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    final = out_dir / MANIFEST_NAME
    temp = temp_path_for(final)
    try:
        with open(temp, "wb") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        linked = link_new_name(temp, final)
        return _create_exclusively(final, text) if linked is None else linked
    finally:
        temp.unlink(missing_ok=True)


def _create_exclusively(final: Path, text: bytes) -> bool:
    """Where hard links are not allowed: ``O_EXCL`` creation (atomic on NFSv3+, Lustre, GPFS), then the content."""
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _winning_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest another process put in place (waiting briefly if it is still being filled)."""
    deadline = time.monotonic() + _MANIFEST_WAIT_S
    while True:
        try:
            manifest = read_manifest(out_dir)
        except UsageError:
            if time.monotonic() > deadline:
                raise
            manifest = None
        if manifest is not None:
            return manifest
        if time.monotonic() > deadline:
            raise UsageError(f"{out_dir / MANIFEST_NAME} vanished while this run started; run it again.")
        time.sleep(0.05)


def _difference(key: str, recorded: dict[str, Any], settings: dict[str, Any]) -> str:
    """One differing setting in words; checkpoints by file name, with enough of the hash to tell them apart."""
    if key == "checkpoint_sha256":

        def checkpoint(values: dict[str, Any]) -> str:
            digest = str(values.get("checkpoint_sha256") or "")[:12]
            return f"{values.get('checkpoint', 'a checkpoint')} (SHA-256 {digest}…)"

        return f"checkpoint {checkpoint(recorded)} there vs {checkpoint(settings)} now"
    return f"{key} {recorded.get(key)!r} there vs {settings.get(key)!r} now"


def _compare(out_dir: Path, existing: dict[str, Any], settings: dict[str, Any], versions: dict[str, str]) -> list[str]:
    recorded = existing.get("settings", {})
    # A setting an older manifest never recorded (the recipe's resize, crop, mean, std) had
    # TSP's value then, which is the only one those versions could use.
    differing = [
        key
        for key in (*FEATURE_SETTINGS, *RECIPE_SETTINGS)
        if (key in recorded or key in FEATURE_SETTINGS) and recorded.get(key) != settings.get(key)
    ]
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
