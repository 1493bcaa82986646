"""The metadata CSV of the reference's data step 4: ``filename,video-duration,fps,video-frames``.

Researchers already hold such CSVs for ActivityNet and THUMOS14 and feed them to the reference
extractor; ours must carry the same values so that either can be used with ``tsp extract
--metadata`` and compared line by line. Values come from :func:`tsp_cli.pipeline.video.probe`: ``fps`` is
the video stream's average rate, ``video-frames`` the frames counted in the video stream, and
``video-duration`` is ``video-frames / fps``, exactly as the reference computed it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tsp_cli.atomic import atomic_path, folder_problem
from tsp_cli.data.progress import Failure, Progress, ProgressCallback
from tsp_cli.errors import TspError, UsageError
from tsp_cli.parallel import map_isolating_crashes
from tsp_cli.pipeline.inputs import METADATA_COLUMNS, VideoFile, output_name, read_metadata_rows
from tsp_cli.pipeline.video import probe


@dataclass(frozen=True)
class MetadataRow:
    """One line of the metadata CSV."""

    filename: str
    duration: float
    fps: float
    frames: int


def probe_row(video: VideoFile) -> MetadataRow:
    """The CSV line of one video, computed as the reference's generator did."""
    info = probe(video.path)
    return MetadataRow(
        filename=video.filename, duration=info.num_frames / info.fps, fps=info.fps, frames=info.num_frames
    )


def _probe_or_fail(video: VideoFile) -> MetadataRow | Failure:
    """Run in a worker: a broken video becomes a :class:`Failure` instead of stopping the others."""
    try:
        return probe_row(video)
    except TspError as error:
        return Failure(video.filename, str(error))


def _crashed(video: VideoFile) -> Failure:
    return Failure(video.filename, f"{video.path} crashed the process reading it (a damaged file?).")


def collect_metadata(
    videos: list[VideoFile], *, workers: int = 0, on_progress: ProgressCallback | None = None
) -> tuple[list[MetadataRow], list[Failure]]:
    """Probe every video (``workers`` processes, 0 = in this process); rows and failures by filename."""
    results: list[MetadataRow | Failure] = []

    def record(result: MetadataRow | Failure) -> None:
        results.append(result)
        if on_progress is not None:
            on_progress(Progress(len(results), len(videos), result.filename))

    for _, result in map_isolating_crashes(
        _probe_or_fail, videos, workers=workers if len(videos) > 1 else 0, on_crash=_crashed
    ):
        record(result)
    rows = sorted((r for r in results if isinstance(r, MetadataRow)), key=lambda row: row.filename)
    failures = sorted((r for r in results if isinstance(r, Failure)), key=lambda failure: failure.filename)
    return rows, failures


def check_csv_output(output: Path, *, overwrite: bool = False) -> None:
    """Refuse a CSV path that cannot be written, or an existing CSV unless ``overwrite``; before any probing."""
    output = Path(output)
    if output.is_dir():
        raise UsageError(
            f"{output} is a folder; give the path of the CSV file to write, such as {output / 'metadata.csv'}."
        )
    problem = folder_problem(output.parent)
    if problem is not None:
        raise UsageError(f"Cannot write the CSV {output} ({problem}); give another path.")
    if output.exists() and not overwrite:
        raise UsageError(f"{output} already exists; pass `overwrite` to replace it.", parameter="overwrite")


def write_metadata_csv(rows: Iterable[MetadataRow], output: Path, *, overwrite: bool = False) -> None:
    """Write the CSV atomically; floats as Python's shortest repr, like the reference's pandas."""
    output = Path(output)
    check_csv_output(output, overwrite=overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temp, temp.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        writer.writerows((row.filename, row.duration, row.fps, row.frames) for row in rows)


@dataclass(frozen=True)
class VideoTiming:
    """What maps feature rows to time: the video's frame rate and frame count."""

    fps: float
    num_frames: int


def read_metadata_csv(path: Path) -> dict[str, VideoTiming | None]:
    """Video name → its timing from a metadata CSV (ours or the reference's); ``None`` where unknown."""
    try:
        return {
            output_name(Path(row["filename"])): _timing(row) for row in read_metadata_rows(path, required=["filename"])
        }
    except OSError as error:
        raise UsageError(f"{path} cannot be read ({error.strerror or error}).") from None


def _timing(row: dict[str, str]) -> VideoTiming | None:
    try:
        return VideoTiming(fps=float(row["fps"]), num_frames=int(float(row["video-frames"])))
    except (KeyError, TypeError, ValueError):
        return None
