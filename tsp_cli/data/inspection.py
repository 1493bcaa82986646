"""``tsp inspect``: a look inside a merged file or an extraction folder, one video at a time.

A merged file may hold 650k videos, so nothing here holds them all: the summary keeps counts,
totals, the videos at both ends and the few that hold NaN or do not belong, and ``--all``
streams every video to a callback as it is read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from tsp_cli.data.progress import Progress, ProgressCallback
from tsp_cli.data.readers import (
    _first_line,
    non_finite_rows,
    open_hdf5,
    plain_attributes,
    read_extraction,
    read_features,
    scan_feature_files,
)
from tsp_cli.errors import UsageError

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
    notes: list[str] = field(default_factory=list)
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
    try:
        return _read_hdf5(path, on_video, on_progress)
    except OSError as error:  # a file cut short opens, then fails at the first dataset it lost
        raise UsageError(
            f"{path} cannot be read to the end ({_first_line(error)}): it is damaged or cut short; "
            "merge the features again."
        ) from None


def _read_hdf5(path: Path, on_video: VideoCallback | None, on_progress: ProgressCallback | None) -> FeatureSummary:
    with open_hdf5(path) as h5:
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


def _inspect_folder(
    folder: Path, on_video: VideoCallback | None, on_progress: ProgressCallback | None
) -> FeatureSummary:
    names = scan_feature_files(folder)
    if not names:
        raise UsageError(
            f"{folder} holds no feature files (.npy or .pkl); give the `out_dir` folder of tsp extract or a merged file."
        )
    extraction = read_extraction(folder, timings_only=True)
    summary = FeatureSummary(folder, "folder", extraction.file_attributes(), notes=extraction.notes)
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
