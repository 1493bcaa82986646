"""``tsp merge`` and ``tsp inspect``: one HDF5 file of per-video features, and a look inside one.

Downstream loaders (the temporal localisation code bases that use TSP features) open the merged
file and iterate its root keys, taking each as a video name mapped to an N × D float32 array.
So the root holds one dataset per video and nothing else; what a user needs to interpret the
rows (settings, frame rate, clip start times) travels as HDF5 attributes.

The merge reads one video at a time, so its memory does not depend on the folder's size, and
writes to a temporary file renamed at the end, so an interrupted merge leaves nothing behind.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
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
        raise UsageError(f"{output} already exists; pass `overwrite` to replace it.")


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
            "extract them, or pass `allow_missing` to merge without them.",
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

#: ``tsp inspect`` keeps this many videos from each end of the file to show; ``--all`` streams every one.
INSPECT_ENDS = 10
#: Names read from an HDF5 group per call, so that 650k names never sit in memory together.
NAMES_PER_READ = 4096
#: The most HDF5 may keep of a file's metadata (object headers, chunk indexes) while inspecting it.
METADATA_CACHE_BYTES = 4 << 20


@dataclass(frozen=True)
class VideoSummary:
    """One video as ``tsp inspect`` reports it."""

    video: str
    rows: int
    width: int
    dtype: str
    non_finite_rows: int
    attributes: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """One JSON Lines record of ``tsp inspect --json --all``."""
        return {
            "record": "video",
            "video": self.video,
            "rows": self.rows,
            "width": self.width,
            "dtype": self.dtype,
            "non_finite_rows": self.non_finite_rows,
            "attributes": plain_attributes(self.attributes),
        }


@dataclass
class FeatureSummary:
    """A merged file or an extraction folder, summed up one video at a time: counts, totals, shapes,
    the first and last :data:`INSPECT_ENDS` videos, and anything that does not belong.

    Its size does not grow with the videos (only with the videos holding NaN and the foreign root
    items it names), so a 650k-video file is inspected in the memory of a 20-video one.
    """

    path: Path
    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)
    videos: int = 0
    rows: int = 0
    min_rows: int | None = None
    max_rows: int | None = None
    width_set: set[int] = field(default_factory=set)
    dtype_set: set[str] = field(default_factory=set)
    videos_with_non_finite: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    first: list[VideoSummary] = field(default_factory=list)
    last: deque[VideoSummary] = field(default_factory=lambda: deque(maxlen=INSPECT_ENDS))

    def add(self, video: VideoSummary) -> None:
        self.videos += 1
        self.rows += video.rows
        self.min_rows = video.rows if self.min_rows is None else min(self.min_rows, video.rows)
        self.max_rows = video.rows if self.max_rows is None else max(self.max_rows, video.rows)
        self.width_set.add(video.width)
        self.dtype_set.add(video.dtype)
        if video.non_finite_rows:
            self.videos_with_non_finite.append(video.video)
        if len(self.first) < INSPECT_ENDS:
            self.first.append(video)
        else:
            self.last.append(video)

    @property
    def widths(self) -> list[int]:
        return sorted(self.width_set)

    @property
    def dtypes(self) -> list[str]:
        return sorted(self.dtype_set)

    @property
    def mean_rows(self) -> float | None:
        return self.rows / self.videos if self.videos else None

    @property
    def hidden(self) -> int:
        """Videos between the first and the last few, which only ``--all`` lists."""
        return self.videos - len(self.first) - len(self.last)

    def to_json(self) -> dict[str, Any]:
        """The summary record: plain JSON types only; the last line of ``--json``."""
        return {
            "record": "summary",
            "path": str(self.path),
            "kind": self.kind,
            "videos": self.videos,
            "rows": self.rows,
            "min_rows": self.min_rows,
            "mean_rows": self.mean_rows,
            "max_rows": self.max_rows,
            "widths": self.widths,
            "dtypes": self.dtypes,
            "attributes": plain_attributes(self.attributes),
            "videos_with_non_finite": self.videos_with_non_finite,
            "unexpected": self.unexpected,
            "first": [video.to_json() for video in self.first],
            "last": [video.to_json() for video in self.last],
        }


VideoCallback = Callable[[VideoSummary], None]


def inspect_features(
    path: Path, *, on_video: VideoCallback | None = None, on_progress: ProgressCallback | None = None
) -> FeatureSummary:
    """Summarise a merged HDF5 file or a folder of feature files, reading one video at a time.

    ``on_video`` receives every video in name order as it is read (``--all``); the summary keeps
    only counts and the videos at both ends.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give a merged HDF5 file or a folder of feature files.")
    if path.is_dir():
        return _inspect_folder(path, on_video, on_progress)
    if path.is_file() and h5py.is_hdf5(path):
        return _inspect_hdf5(path, on_video, on_progress)
    raise UsageError(f"{path} is neither an HDF5 file nor a folder of feature files.")


def _root_names(h5: h5py.File) -> Iterator[str]:
    """The root's link names in name order, :data:`NAMES_PER_READ` at a time.

    h5py's ``for name in h5`` asks for each name by its index, and ``sorted(h5.keys())`` holds
    every name at once; HDF5's own iteration, resumed where each read stopped, does neither.
    """
    batch: list[bytes] = []

    def take(name: bytes) -> bool | None:
        batch.append(name)
        return True if len(batch) >= NAMES_PER_READ else None  # True stops this read

    position, total = 0, len(h5)
    while position < total:  # HDF5 refuses to start an iteration at the end
        batch.clear()
        _, position = h5.id.links.iterate(take, idx_type=h5py.h5.INDEX_NAME, order=h5py.h5.ITER_INC, idx=position)
        yield from [name.decode("utf-8", "surrogateescape") for name in batch]


def _hdf5_video(h5: h5py.File, name: str, *, attributes: bool) -> VideoSummary | None:
    """One root item as a video, or ``None`` when it is not a 2-D dataset."""
    item = h5[name]
    if not (isinstance(item, h5py.Dataset) and item.ndim == 2):
        return None
    features = item[()]
    return VideoSummary(
        name,
        features.shape[0],
        features.shape[1],
        str(features.dtype),
        non_finite_rows(features) if features.dtype.kind == "f" else 0,
        dict(item.attrs) if attributes else {},
    )


def _bounded_metadata_cache(h5: h5py.File) -> None:
    """Keep HDF5's metadata cache at a few MB: read once each, 20k dataset headers and chunk
    indexes otherwise grew the process by ~300 MB (120 MB in all with the cap, measured)."""
    config = h5.id.get_mdc_config()
    config.set_initial_size = True
    config.initial_size, config.min_size, config.max_size = METADATA_CACHE_BYTES // 2, 1 << 20, METADATA_CACHE_BYTES
    h5.id.set_mdc_config(config)


def _inspect_hdf5(path: Path, on_video: VideoCallback | None, on_progress: ProgressCallback | None) -> FeatureSummary:
    with h5py.File(path, "r") as h5:
        _bounded_metadata_cache(h5)
        summary = FeatureSummary(path, "hdf5", dict(h5.attrs))
        total = len(h5)
        for done, name in enumerate(_root_names(h5), start=1):
            # Attributes are read where they are shown: for every video with --all, else for the ends.
            video = _hdf5_video(h5, name, attributes=on_video is not None or summary.videos < INSPECT_ENDS)
            if video is None:
                summary.unexpected.append(name)
            else:
                summary.add(video)
                if on_video is not None:
                    on_video(video)
            if on_progress is not None:
                on_progress(Progress(done, total, name))
        if on_video is None:  # the last few, with their attributes, by name
            last = [_hdf5_video(h5, video.video, attributes=True) for video in summary.last]
            summary.last = deque((video for video in last if video is not None), maxlen=INSPECT_ENDS)
    return summary


def _feature_names(folder: Path) -> list[tuple[str, str]]:
    """``(video, file name)`` of every feature file in ``folder``, sorted, as plain strings."""
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


def _timings(folder: Path) -> dict[str, dict[str, Any]]:
    """What ``videos.jsonl`` says of each video's timing, and nothing else of its records."""
    return {
        name: {key: record[key] for key in ("fps", "num_frames") if key in record}
        for name, record in store.read_video_records(folder).items()
    }


def _inspect_folder(
    folder: Path, on_video: VideoCallback | None, on_progress: ProgressCallback | None
) -> FeatureSummary:
    names = _feature_names(folder)
    if not names:
        raise UsageError(
            f"{folder} holds no feature files (.npy or .pkl); give the `out_dir` folder of tsp extract or a merged file."
        )
    extraction = Extraction(manifest=store.read_manifest(folder), records=_timings(folder))
    summary = FeatureSummary(folder, "folder", extraction.file_attributes())
    for done, (name, file_name) in enumerate(names, start=1):
        features = read_features(folder / file_name)
        video = VideoSummary(
            name,
            features.shape[0],
            features.shape[1],
            str(features.dtype),
            non_finite_rows(features),
            extraction.video_attributes(name, len(features)),
        )
        summary.add(video)
        if on_video is not None:
            on_video(video)
        if on_progress is not None:
            on_progress(Progress(done, len(names), name))
    return summary


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
