"""``tsp merge``: one HDF5 file of per-video features.

Downstream loaders (the temporal localisation code bases that use TSP features) open the merged
file and iterate its root keys, taking each as a video name mapped to an N × D float32 array.
So the root holds one dataset per video and nothing else; what a user needs to interpret the
rows (settings, frame rate, clip start times) travels as HDF5 attributes.

The merge reads one video at a time, so its memory does not depend on the folder's size, and
writes to a temporary file renamed at the end, so an interrupted merge leaves nothing behind
(and the temporary file of a merge that was killed is removed by the next one). The folder is
read through data/readers.py, as ``inspect`` and ``export`` read it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from tsp_cli.atomic import atomic_path, folder_problem, os_error_reason, remove_dead_temp_files
from tsp_cli.data.metadata import VideoTiming
from tsp_cli.data.progress import Progress, ProgressCallback
from tsp_cli.data.readers import (
    Extraction,
    FeatureFile,
    find_feature_files,
    non_finite_rows,
    read_extraction,
    read_features,
)
from tsp_cli.data.readers import plain_attributes as plain_attributes  # export reads it from here
from tsp_cli.errors import FeatureFileError, MissingVideosError, UsageError

#: Float features barely compress (about 10-15 %, the same at every level), so the fastest level
#: wins: about 6 ms per ActivityNet-sized video, against 10 ms at h5py's default 4 (docs/data-steps.md).
DEFAULT_COMPRESSION_LEVEL = 1
#: 512 rows of 512 float32 make 1 MiB chunks: a typical video is one chunk, read in one go.
MAX_CHUNK_ROWS = 512
#: The oldest HDF5 format the file may use: 1.8 (2008) stores large attributes outside the object
#: header (whose 64 KiB held only ~8,000 start times), so every video gets its ``clip_start_times``.
HDF5_LIBVER = ("v108", "latest")


@dataclass(frozen=True)
class MergeResult:
    """What was written: the file, its videos, total rows and feature width; videos left out;
    ``notes``: warnings about the folder (unreadable record lines), each said once."""

    output: Path
    videos: int
    rows: int
    width: int
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
    problem = folder_problem(Path(output).parent)
    if problem:
        raise UsageError(f"Cannot write {output}: {problem}; choose another place for the merged file.")


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
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temp_files(output.parent, output.name)
        with atomic_path(output) as temp, h5py.File(temp, "w", libver=HDF5_LIBVER) as h5:
            h5.attrs.update(extraction.file_attributes())
            width, rows = _write_videos(h5, files, extraction, timings, compression_level, on_progress)
    except OSError as error:
        raise UsageError(f"Cannot write {output} ({os_error_reason(error)}); nothing was written.") from None
    return MergeResult(
        output=output, videos=len(files), rows=rows, width=width, missing=missing, notes=extraction.notes
    )


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
                "features of different widths cannot share one file.",
                path=feature_file.path,
            )
        bad_rows = non_finite_rows(features)
        if bad_rows:
            raise FeatureFileError(
                f"{feature_file.path} has {bad_rows} rows with NaN or infinite values; extract this video again.",
                path=feature_file.path,
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
