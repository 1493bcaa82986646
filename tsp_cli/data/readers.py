"""Reading a folder of features, or a merged file: the one home of what merge, inspect and export read.

A ``tsp extract`` folder holds ``<video>.npy`` files, its manifest and its record files (the
reference extractor's folders hold ``<video>.pkl`` instead). Every command that reads such a
folder finds its feature files, reads them and its records the same way here, so that they
agree on which files count (temporary files never do), on the error a bad file gets, and on the
one warning that unreadable record lines get. A merged HDF5 file is opened here too, so that a
damaged one is one sentence, not a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.data.legacy import load_legacy_features
from tsp_cli.data.metadata import VideoTiming
from tsp_cli.errors import FeatureFileError, UsageError
from tsp_cli.pipeline import records, store
from tsp_cli.pipeline.sampling import clip_start_times

FEATURE_SUFFIXES = (".npy", ".pkl")
#: The manifest settings that describe how rows were computed, copied to the file's attributes.
CLIP_SETTINGS = ("clip_len", "frame_rate", "stride")


@dataclass(frozen=True)
class FeatureFile:
    """One video's feature file in an extraction folder."""

    video: str
    path: Path


@dataclass(frozen=True)
class Extraction:
    """What an extraction folder says about its features: the run manifest, per-video records, and
    ``notes`` (one warning about unreadable record lines, if any)."""

    manifest: dict[str, Any] | None
    records: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, Any]:
        """The manifest's settings; empty when there is no manifest (legacy ``.pkl`` folders)."""
        return dict((self.manifest or {}).get("settings") or {})

    def file_attributes(self) -> dict[str, Any]:
        """Settings, tool versions and creation time: the flat, known values (HDF5 has no null)."""
        manifest = self.manifest or {}
        attributes = {key: value for key, value in self.settings().items() if isinstance(value, (str, int, float))}
        for tool, version in (manifest.get("versions") or {}).items():
            if version is not None:
                attributes[f"{tool}_version"] = str(version)
        if manifest.get("created"):
            attributes["created"] = str(manifest["created"])
        return attributes

    def video_attributes(self, video: str, rows: int, timing: VideoTiming | None = None) -> dict[str, Any]:
        """What maps row k of ``video`` to time: fps, clip settings and the start time of every row.

        Row k starts at ``indices[k*stride] / fps`` seconds, where ``indices`` are the frames
        resampled to ``frame_rate`` (``k*stride/frame_rate`` when ``fps/frame_rate`` is whole).
        """
        record = self.records.get(video, {})
        fps = record.get("fps", timing.fps if timing else None)
        num_frames = record.get("num_frames", timing.num_frames if timing else None)
        known = self.settings()
        settings = {key: known[key] for key in CLIP_SETTINGS if known.get(key) is not None}
        attributes: dict[str, Any] = dict(settings)
        if fps is not None:
            attributes["fps"] = float(fps)
        if num_frames is not None:
            attributes["num_frames"] = int(num_frames)
        if fps is not None and num_frames is not None and len(settings) == len(CLIP_SETTINGS):
            starts = clip_start_times(float(fps), int(num_frames), **settings)
            if len(starts) == rows:
                attributes["clip_start_times"] = starts
        return attributes


def scan_feature_files(folder: Path) -> list[tuple[str, str]]:
    """``(video, file name)`` of every ``.npy``/``.pkl`` feature file in ``folder``, sorted, as plain strings.

    Temporary files are skipped; two files for one video are refused. Plain strings, because
    a 650k-video folder's names must not each cost a ``Path``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of feature files.")
    found: dict[str, str] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix not in FEATURE_SUFFIXES or TEMP_MARKER in entry.name or not entry.is_file():
                continue
            if stem in found:
                first, second = sorted((found[stem], entry.name))
                raise FeatureFileError(f"{first} and {second} both hold features of video {stem}; remove one of them.")
            found[stem] = entry.name
    return sorted(found.items())


def find_feature_files(folder: Path) -> list[FeatureFile]:
    """Every feature file in ``folder`` (see :func:`scan_feature_files`), by video name."""
    return [FeatureFile(video, Path(folder) / name) for video, name in scan_feature_files(folder)]


def read_features(path: Path) -> np.ndarray:
    """A video's features as float32 rows; ``.npy`` without pickles, ``.pkl`` via the safe unpickler."""
    path = Path(path)
    if path.suffix == ".pkl":
        features = load_legacy_features(path)
    else:
        try:
            features = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise FeatureFileError(f"{path} cannot be read as a NumPy feature array ({error}).") from None
    if features.ndim != 2 or features.dtype.kind != "f":
        raise FeatureFileError(f"{path} holds a {features.ndim}-D {features.dtype} array, not rows of float features.")
    return features.astype(np.float32, copy=False)


def non_finite_rows(features: np.ndarray) -> int:
    """How many rows hold a NaN or an infinity."""
    return int(np.count_nonzero(~np.isfinite(features).all(axis=1))) if features.size else 0


def read_extraction(folder: Path, *, timings_only: bool = False) -> Extraction:
    """The manifest and per-video records of a ``tsp extract`` folder; empty for legacy folders.

    ``timings_only`` keeps of each record only what maps rows to time (fps, frame count), so
    that a 650k-video folder's records stay small in memory.
    """
    known = records.read_records(folder)
    videos = known.videos
    if timings_only:
        videos = {name: {k: r[k] for k in ("fps", "num_frames") if k in r} for name, r in videos.items()}
    note = known.damage_note()
    return Extraction(manifest=store.read_manifest(folder), records=videos, notes=[note] if note else [])


@contextmanager
def open_hdf5(path: Path) -> Iterator[h5py.File]:
    """A merged file open for reading; a damaged or truncated one is a :class:`UsageError` sentence."""
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise UsageError(
            f"{path} cannot be opened as an HDF5 file ({_first_line(error)}): it is damaged or cut short; "
            "merge the features again."
        ) from None
    with h5:
        yield h5


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def plain_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """HDF5/NumPy attribute values as JSON types."""
    plain = {}
    for key, value in attributes.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        plain[key] = value
    return plain
