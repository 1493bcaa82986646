"""``tsp merge`` and ``tsp inspect``: one HDF5 file of per-video features, and a look inside one.

Downstream loaders (the temporal localisation code bases that use TSP features) open the merged
file and iterate its root keys, taking each as a video name mapped to an N × D float32 array.
So the root holds one dataset per video and nothing else; what a user needs to interpret the
rows (settings, frame rate, clip start times) travels as HDF5 attributes.

The merge reads one video at a time, so its memory does not depend on the folder's size, and
writes to a temporary file renamed at the end, so an interrupted merge leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tsp_cli.atomic import TEMP_MARKER, atomic_path
from tsp_cli.data.legacy import load_legacy_features
from tsp_cli.data.metadata import VideoTiming
from tsp_cli.data.progress import Progress, ProgressCallback
from tsp_cli.errors import FeatureFileError, MissingVideosError, UsageError
from tsp_cli.pipeline import store
from tsp_cli.pipeline.sampling import clip_start_times

FEATURE_SUFFIXES = (".npy", ".pkl")
#: Float features barely compress (about 10-15 %, the same at every level), so the fastest level
#: wins: about 6 ms per ActivityNet-sized video, against 10 ms at h5py's default 4 (docs/data-steps.md).
DEFAULT_COMPRESSION_LEVEL = 1
#: 512 rows of 512 float32 make 1 MiB chunks: a typical video is one chunk, read in one go.
MAX_CHUNK_ROWS = 512
#: The oldest HDF5 format the file may use: 1.8 (2008) stores large attributes outside the object
#: header (whose 64 KiB held only ~8,000 start times), so every video gets its ``clip_start_times``.
HDF5_LIBVER = ("v108", "latest")
#: The manifest settings that describe how rows were computed, copied to the file's attributes.
CLIP_SETTINGS = ("clip_len", "frame_rate", "stride")


@dataclass(frozen=True)
class FeatureFile:
    """One video's feature file in an extraction folder."""

    video: str
    path: Path


@dataclass(frozen=True)
class Extraction:
    """What an extraction folder says about its features: the run manifest and per-video records."""

    manifest: dict[str, Any] | None
    records: dict[str, dict[str, Any]]

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


@dataclass(frozen=True)
class MergeResult:
    """What was written: the file, its videos, total rows and feature width; videos left out."""

    output: Path
    videos: int
    rows: int
    width: int
    missing: list[str] = field(default_factory=list)


def find_feature_files(folder: Path) -> list[FeatureFile]:
    """Every ``.npy``/``.pkl`` feature file in ``folder``, by video name; temporary files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of feature files.")
    found: dict[str, FeatureFile] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in FEATURE_SUFFIXES or TEMP_MARKER in path.name or not path.is_file():
            continue
        if path.stem in found:
            raise FeatureFileError(
                f"{found[path.stem].path.name} and {path.name} both hold features of video {path.stem}; "
                "remove one of them."
            )
        found[path.stem] = FeatureFile(path.stem, path)
    return sorted(found.values(), key=lambda feature_file: feature_file.video)


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


def read_extraction(folder: Path) -> Extraction:
    """The manifest and per-video records of a ``tsp extract`` folder; empty for legacy folders."""
    return Extraction(manifest=store.read_manifest(folder), records=store.read_video_records(folder))


#: File endings that name an HDF5 file; a merge into another ending (``m.npy``) is refused.
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def check_output(output: Path, *, overwrite: bool) -> None:
    """Refuse to replace an existing file unless asked: a merged file may take long to rebuild."""
    if Path(output).is_dir():
        raise UsageError(f"{output} is a folder; give the path of the HDF5 file to write.")
    suffix = Path(output).suffix.lower()
    if suffix and suffix not in HDF5_SUFFIXES:
        raise UsageError(
            f"{output} ends in {suffix}, but merge writes one HDF5 file; name it {Path(output).with_suffix('.h5').name}."
        )
    if Path(output).exists() and not overwrite:
        raise UsageError(f"{output} already exists; pass --overwrite to replace it.")


def missing_videos(files: list[FeatureFile], expected: Collection[str]) -> list[str]:
    """Expected video names with no feature file, sorted.

    The reference extractor named its ``.pkl`` files ``basename.split('.')[0]``, so ``a.b.mp4``
    left ``a.pkl``: for legacy files that shortened name counts as present too.
    """
    present = {feature_file.video for feature_file in files}
    legacy = {f.video for f in files if f.path.suffix == ".pkl"}
    return sorted(name for name in set(expected) - present if name.split(".")[0] not in legacy)


def merge_features(
    folder: Path,
    output: Path,
    *,
    expected: Mapping[str, VideoTiming | None] | Collection[str] | None = None,
    allow_missing: bool = False,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> MergeResult:
    """Merge every feature file of ``folder`` into the HDF5 file ``output``.

    ``expected`` (video names, or a metadata CSV's name → timing) turns on the completeness
    check: missing videos raise :class:`MissingVideosError` before anything is written, unless
    ``allow_missing``. A bad file stops the merge with :class:`FeatureFileError`, leaving no output.
    """
    output = Path(output)
    check_output(output, overwrite=overwrite)
    if not 0 <= compression_level <= 9:
        raise UsageError(f"The compression level must be between 0 and 9, not {compression_level}.")
    files = find_feature_files(folder)
    if not files:
        raise UsageError(f"{folder} holds no feature files (.npy or .pkl).")
    missing = missing_videos(files, expected) if expected is not None else []
    if missing and not allow_missing:
        raise MissingVideosError(
            f"{len(missing)} of {len(expected or ())} expected videos have no features in {folder}; "
            "extract them, or pass --allow-missing to merge without them.",
            missing,
        )
    timings = expected if isinstance(expected, Mapping) else {}
    extraction = read_extraction(folder)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temp, h5py.File(temp, "w", libver=HDF5_LIBVER) as h5:
        h5.attrs.update(extraction.file_attributes())
        width, rows = _write_videos(h5, files, extraction, timings, compression_level, on_progress)
    return MergeResult(output=output, videos=len(files), rows=rows, width=width, missing=missing)


def _write_videos(
    h5: h5py.File,
    files: list[FeatureFile],
    extraction: Extraction,
    timings: Mapping[str, VideoTiming | None],
    compression_level: int,
    on_progress: ProgressCallback | None,
) -> tuple[int, int]:
    """Write one dataset per video, one video in memory at a time; returns (width, total rows)."""
    first: FeatureFile | None = None
    width = total_rows = 0
    for done, feature_file in enumerate(files, start=1):
        features = read_features(feature_file.path)
        if first is None:
            first, width = feature_file, features.shape[1]
        elif features.shape[1] != width:
            raise FeatureFileError(
                f"{feature_file.path} has {features.shape[1]} columns but {first.path} has {width}; "
                "features of different widths cannot share one file."
            )
        bad_rows = non_finite_rows(features)
        if bad_rows:
            raise FeatureFileError(
                f"{feature_file.path} has {bad_rows} rows with NaN or infinite values; extract this video again."
            )
        dataset = _create_dataset(h5, feature_file.video, features, compression_level)
        dataset.attrs.update(
            extraction.video_attributes(feature_file.video, len(features), timings.get(feature_file.video))
        )
        total_rows += len(features)
        if on_progress is not None:
            on_progress(Progress(done, len(files), feature_file.video))
    return width, total_rows


def _create_dataset(h5: h5py.File, name: str, features: np.ndarray, compression_level: int) -> h5py.Dataset:
    """A gzip-compressed, chunked dataset; resizable along rows so that 0-row videos can be chunked."""
    rows, width = features.shape
    return h5.create_dataset(
        name,
        data=features,
        dtype=np.float32,
        chunks=(min(max(rows, 1), MAX_CHUNK_ROWS), max(width, 1)),
        maxshape=(None, width),
        compression="gzip",
        compression_opts=compression_level,
    )


# --- tsp inspect -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSummary:
    """One video as ``tsp inspect`` reports it."""

    video: str
    rows: int
    width: int
    dtype: str
    non_finite_rows: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class FeatureSummary:
    """A merged file or an extraction folder: its attributes, videos, and anything that does not belong."""

    path: Path
    kind: str
    attributes: dict[str, Any]
    videos: list[VideoSummary]
    unexpected: list[str]

    @property
    def rows(self) -> int:
        return sum(video.rows for video in self.videos)

    @property
    def widths(self) -> list[int]:
        return sorted({video.width for video in self.videos})

    @property
    def dtypes(self) -> list[str]:
        return sorted({video.dtype for video in self.videos})

    @property
    def videos_with_non_finite(self) -> list[str]:
        return [video.video for video in self.videos if video.non_finite_rows]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only, for ``--json``."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "videos": len(self.videos),
            "rows": self.rows,
            "widths": self.widths,
            "dtypes": self.dtypes,
            "attributes": plain_attributes(self.attributes),
            "videos_with_non_finite": self.videos_with_non_finite,
            "unexpected": self.unexpected,
            "per_video": [
                {
                    "video": video.video,
                    "rows": video.rows,
                    "width": video.width,
                    "dtype": video.dtype,
                    "non_finite_rows": video.non_finite_rows,
                    "attributes": plain_attributes(video.attributes),
                }
                for video in self.videos
            ],
        }


def inspect_features(path: Path, *, on_progress: ProgressCallback | None = None) -> FeatureSummary:
    """Summarise a merged HDF5 file or a folder of feature files, reading one video at a time."""
    path = Path(path)
    if path.is_dir():
        return _inspect_folder(path, on_progress)
    if path.is_file() and h5py.is_hdf5(path):
        return _inspect_hdf5(path, on_progress)
    raise UsageError(f"{path} is neither an HDF5 file nor a folder of feature files.")


def _inspect_hdf5(path: Path, on_progress: ProgressCallback | None) -> FeatureSummary:
    videos, unexpected = [], []
    with h5py.File(path, "r") as h5:
        names = sorted(h5.keys())
        for done, name in enumerate(names, start=1):
            item = h5[name]
            if isinstance(item, h5py.Dataset) and item.ndim == 2:
                features = item[()]
                videos.append(
                    VideoSummary(
                        name,
                        features.shape[0],
                        features.shape[1],
                        str(features.dtype),
                        non_finite_rows(features),
                        dict(item.attrs),
                    )
                )
            else:
                unexpected.append(name)
            if on_progress is not None:
                on_progress(Progress(done, len(names), name))
        attributes = dict(h5.attrs)
    return FeatureSummary(path, "hdf5", attributes, videos, unexpected)


def _inspect_folder(folder: Path, on_progress: ProgressCallback | None) -> FeatureSummary:
    extraction = read_extraction(folder)
    files = find_feature_files(folder)
    videos = []
    for done, feature_file in enumerate(files, start=1):
        features = read_features(feature_file.path)
        videos.append(
            VideoSummary(
                feature_file.video,
                features.shape[0],
                features.shape[1],
                str(features.dtype),
                non_finite_rows(features),
                extraction.video_attributes(feature_file.video, len(features)),
            )
        )
        if on_progress is not None:
            on_progress(Progress(done, len(files), feature_file.video))
    return FeatureSummary(folder, "folder", extraction.file_attributes(), videos, [])


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
