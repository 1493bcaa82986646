"""Turning the user's VIDEOS arguments (and an optional metadata CSV) into an ordered job list."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsp_cli.errors import UsageError
from tsp_cli.pipeline.video import VIDEO_SUFFIXES

METADATA_COLUMNS = ("filename", "video-duration", "fps", "video-frames")


@dataclass(frozen=True)
class VideoJob:
    """One video to extract. ``fps``/``num_frames`` come from a metadata CSV, else they are probed."""

    path: Path
    name: str
    fps: float | None = None
    num_frames: int | None = None


def output_name(path: Path) -> str:
    """The file name without its last extension: ``a.b.mp4`` -> ``a.b`` (the reference kept only ``a``)."""
    name = Path(path).name
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


@dataclass(frozen=True)
class VideoFile:
    """A video found in the inputs, and the name it goes by in a CSV: its path relative to the folder given."""

    path: Path
    filename: str

    @property
    def video(self) -> str:
        """The name of its features: the file name without its last extension."""
        return output_name(Path(self.filename))


def _list_some(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _is_hidden(relative: Path) -> bool:
    """A dot file or one in a dot folder: macOS ``._x.mp4`` resource forks, ``.Trash``, editors' copies."""
    return any(part.startswith(".") for part in relative.parts)


def find_videos(paths: Iterable[Path]) -> list[VideoFile]:
    """Every video under the given folders (recursively, by file ending, sorted by relative path)
    plus the files given (whatever their ending), each once. Hidden files and folders under a
    folder given are skipped (macOS ``._*`` files are no videos); a hidden file named itself is kept.

    A path that does not exist is a :class:`UsageError`: a typo must not silently shorten a run.
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{_list_some(missing)} does not exist; check the VIDEOS paths.")
    videos: dict[Path, VideoFile] = {}
    for root in paths:
        if root.is_dir():
            found = [
                p
                for p in root.rglob("*")
                if p.suffix.lower() in VIDEO_SUFFIXES and not _is_hidden(p.relative_to(root)) and p.is_file()
            ]
            for path in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
                videos.setdefault(path.resolve(), VideoFile(path, path.relative_to(root).as_posix()))
        else:
            videos.setdefault(root.resolve(), VideoFile(root, root.name))
    return list(videos.values())


def jobs_from_paths(inputs: Sequence[Path]) -> list[VideoJob]:
    """Every video in the given folders and files, in order (see :func:`find_videos`)."""
    videos = find_videos(inputs)
    if not videos:
        raise UsageError(
            f"No video files found in {_list_some([str(p) for p in inputs])} "
            f"(looked for {', '.join(sorted(s[1:] for s in VIDEO_SUFFIXES))})."
        )
    return [VideoJob(path=video.path, name=video.video) for video in videos]


def jobs_from_metadata(csv_path: Path, inputs: Sequence[Path]) -> list[VideoJob]:
    """The CSV's videos in its row order, with its fps and frame counts, as the reference reads them."""
    csv_path = Path(csv_path)
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise UsageError("--metadata needs exactly one VIDEOS folder, the one its file names are relative to.")
    folder = Path(inputs[0])
    if not csv_path.is_file():
        raise UsageError(f"Metadata file {csv_path} does not exist.")
    try:
        table = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UsageError(f"Metadata file {csv_path} is not a readable CSV ({str(error).strip()}).") from None
    absent = [c for c in METADATA_COLUMNS if c not in table.columns]
    if absent:
        raise UsageError(
            f"Metadata file {csv_path} lacks the column(s) {', '.join(absent)}; expected {','.join(METADATA_COLUMNS)}."
        )
    fps = pd.to_numeric(table["fps"], errors="coerce")
    frames = pd.to_numeric(table["video-frames"], errors="coerce")
    bad = ~((fps > 0) & np.isfinite(fps) & (frames >= 0) & (frames == frames.round()))
    if bad.any():
        rows = [f"line {i + 2} ({table['filename'].iloc[i]})" for i in np.flatnonzero(bad.to_numpy())]
        raise UsageError(
            f"Metadata file {csv_path} has no usable fps or video-frames on {_list_some(rows)}; fix or remove those rows."
        )
    jobs = [
        VideoJob(path=folder / str(name), name=output_name(Path(str(name))), fps=float(rate), num_frames=int(count))
        for name, rate, count in zip(table["filename"], fps, frames, strict=True)
    ]
    missing = [str(job.path.relative_to(folder)) for job in jobs if not job.path.is_file()]
    if missing:
        listed = (
            f"{len(missing)} video listed in {csv_path} is"
            if len(missing) == 1
            else f"{len(missing)} videos listed in {csv_path} are"
        )
        raise UsageError(f"{listed} not in {folder}: {_list_some(missing)}.")
    return jobs


def refuse_duplicate_names(jobs: Sequence[VideoJob]) -> None:
    """Two inputs that would write the same ``<name>.npy`` are refused before any work."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        by_name[job.name].append(str(job.path))
    clashes = [f"{name} ({' and '.join(paths[:2])})" for name, paths in by_name.items() if len(paths) > 1]
    if clashes:
        raise UsageError(
            f"Several videos would write the same feature file: {_list_some(clashes)}; rename or separate them."
        )


def collect_jobs(inputs: Sequence[Path], metadata: Path | None = None) -> list[VideoJob]:
    """The ordered, duplicate-free job list for ``tsp extract``."""
    if not inputs:
        raise UsageError("Give at least one VIDEOS folder or file.")
    jobs = jobs_from_metadata(metadata, inputs) if metadata else jobs_from_paths(inputs)
    refuse_duplicate_names(jobs)
    return jobs
