"""Turning the user's VIDEOS arguments (and an optional metadata CSV) into an ordered job list.

At Kinetics scale (650k videos over 1,000 shards) every task plans only its own share: the CSV
is read row by row, the shard's rows are cut with the reference's boundaries, and only those
become jobs whose files are checked. A folder scan must list everything to know the order, so
it uses ``os.scandir`` (no ``stat`` per regular file) and builds paths for the shard only.
"""

from __future__ import annotations

import csv
import math
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tsp_cli.errors import UsageError
from tsp_cli.pipeline.sharding import Shard
from tsp_cli.pipeline.video import VIDEO_SUFFIXES

METADATA_COLUMNS = ("filename", "video-duration", "fps", "video-frames")


@dataclass(frozen=True)
class VideoJob:
    """One video to extract. ``fps``/``num_frames`` come from a metadata CSV, else they are probed."""

    path: Path
    name: str
    fps: float | None = None
    num_frames: int | None = None


def output_name(path: Path | str) -> str:
    """The file name without its last extension: ``a.b.mp4`` -> ``a.b`` (the reference kept only ``a``)."""
    name = os.path.basename(path)
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


@dataclass(frozen=True)
class VideoFile:
    """A video found in the inputs, and the name it goes by in a CSV: its path relative to the folder given."""

    path: Path
    filename: str

    @property
    def video(self) -> str:
        """The name of its features: the file name without its last extension."""
        return output_name(self.filename)


def _list_some(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ---- folder scans ---------------------------------------------------------------------------


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class SkippedPath:
    """A path under a VIDEOS folder that the scan could not follow, named in the plan instead of dropped in silence."""

    path: str
    reason: str  # a key of _SKIP_REASONS


#: Why a path was skipped: the reason's key, and how :func:`skipped_notes` words one and several.
_SKIP_REASONS = {
    "dangling": ("symbolic link whose target does not exist", "symbolic links whose targets do not exist"),
    "loop": ("symbolic link to a folder above it (a loop)", "symbolic links to a folder above them (loops)"),
    "unreadable": ("folder that cannot be read", "folders that cannot be read"),
}


def _walk_videos(root: str, skipped: list[SkippedPath]) -> Iterator[tuple[str, str | None]]:
    """``(relative posix path, real path or None)`` of every video file under ``root``, in no
    particular order; what cannot be followed is added to ``skipped``.

    Symbolic links are followed, to files and to folders, as ``find -L`` does. A file reached
    through a link (itself, or a folder above it) comes with its real path, so that the caller
    keeps each real file once; one reached without any link comes with ``None``. A link to a
    folder that holds it (a loop) is not entered. Hidden files and folders (a name starting
    with a dot) are passed over. ``DirEntry`` answers "is it a folder? a file? a link?" from
    the directory listing itself, so a regular file costs no ``stat`` call; only a symbolic
    link is followed (one ``stat``, and a ``realpath`` for a folder or a video).

    Each folder to list carries its real path, built from its parent's without a system call,
    and the real paths of the folders whose links led to it: a link whose target holds any of
    those would walk in a circle.
    """
    # (relative prefix, path to list, its real path, reached through a link, real paths of the links' folders)
    folders: list[tuple[str, str, str, bool, tuple[str, ...]]] = [("", root, os.path.realpath(root), False, ())]
    while folders:
        prefix, folder, real, linked, above = folders.pop()
        try:
            entries = os.scandir(folder)
        except PermissionError:  # passed over, as rglob did, but named
            skipped.append(SkippedPath(folder, "unreadable"))
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):  # macOS ``._x.mp4`` resource forks, ``.Trash``, editors' copies
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append((prefix + name + "/", entry.path, real + os.sep + name, linked, above))
                elif not entry.is_symlink():
                    if _is_video_name(name) and entry.is_file(follow_symlinks=False):
                        yield prefix + name, real + os.sep + name if linked else None
                else:
                    try:
                        mode = entry.stat().st_mode  # follows the link
                    except OSError:  # its target is missing, or links point at each other
                        skipped.append(SkippedPath(entry.path, "dangling"))
                        continue
                    if stat.S_ISDIR(mode):
                        target = os.path.realpath(entry.path)
                        if any(_holds(target, path) for path in (real, *above)):
                            skipped.append(SkippedPath(entry.path, "loop"))
                        else:
                            folders.append((prefix + name + "/", entry.path, target, True, (*above, real)))
                    elif stat.S_ISREG(mode) and _is_video_name(name):
                        yield prefix + name, os.path.realpath(entry.path)


def _holds(folder: str, path: str) -> bool:
    """Whether real path ``path`` is ``folder`` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def skipped_notes(skipped: Sequence[SkippedPath]) -> list[str]:
    """One sentence per kind of skipped path, naming the first few, for the plan's notes."""
    notes = []
    for reason, (one, several) in _SKIP_REASONS.items():
        paths = sorted(item.path for item in skipped if item.reason == reason)
        if paths:
            notes.append(f"Skipped {len(paths)} {one if len(paths) == 1 else several}: {_list_some(paths, 5)}.")
    return notes


#: A video found: ``(folder given, path relative to it)``, or ``(None, file given)``. Paths are
#: joined only for the shard's videos: 650k joined paths would double the scan's memory.
_Found = tuple[str | None, str]


def _path(found: _Found) -> str:
    base, relative = found
    return relative if base is None else os.path.join(base, relative)


def _filename(found: _Found) -> str:
    base, relative = found
    return os.path.basename(relative) if base is None else relative


def _scan(paths: Sequence[Path], skipped: list[SkippedPath]) -> list[_Found]:
    """Every video in the given folders and files, in order, each file once; what the walk could
    not follow (a dangling link, a loop, an unreadable folder) is added to ``skipped``.

    Folders come out sorted by relative path; a file reached twice (given twice, through two
    folders, or through a symbolic link) is kept where it first appears, as ``Path.resolve``
    tells. A folder's regular files (reached without a link) resolve to the resolved folder plus their relative path, so
    only symbolic links cost a ``realpath``, and one folder without links needs no bookkeeping.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{_list_some(missing)} does not exist; check the VIDEOS paths.")
    seen: set[str] = set()
    found: list[_Found] = []
    for root in paths:
        if not root.is_dir():
            if (key := os.path.realpath(root)) not in seen:
                seen.add(key)
                found.append((None, str(root)))
            continue
        base, real_root = str(root), os.path.realpath(root)
        listed = sorted(_walk_videos(base, skipped))
        alone = len(paths) == 1 and all(target is None for _, target in listed)
        for relative, target in listed:
            if not alone:  # regular files of one folder cannot be one file; links and other inputs can
                key = target or os.path.join(real_root, relative)
                if key in seen:
                    continue
                seen.add(key)
            found.append((base, relative))
    return found


def _refuse_duplicates_found(videos: Sequence[_Found], names: Sequence[str]) -> None:
    """:func:`refuse_duplicate_names` for a scan, joining paths only when some name repeats."""
    if len(set(names)) != len(names):
        refuse_duplicate_names(zip(names, map(_path, videos), strict=True))


def _scan_some(paths: Sequence[Path], skipped: list[SkippedPath]) -> list[_Found]:
    """:func:`_scan`, refusing inputs that hold no video at all (and saying what was skipped)."""
    videos = _scan(paths, skipped)
    if not videos:
        notes = "".join(f" {note}" for note in skipped_notes(skipped))
        raise UsageError(
            f"No video files found in {_list_some([str(p) for p in paths])} "
            f"(looked for {', '.join(sorted(s[1:] for s in VIDEO_SUFFIXES))}).{notes}"
        )
    return videos


def find_videos(paths: Iterable[Path]) -> list[VideoFile]:
    """Every video under the given folders (recursively, by file ending, sorted by relative path)
    plus the files given (whatever their ending), each once. Hidden files and folders under a
    folder given are skipped (macOS ``._*`` files are no videos); a hidden file named itself is kept.

    A path that does not exist is a :class:`UsageError`: a typo must not silently shorten a run.
    """
    found = _scan([Path(p) for p in paths], [])
    return [VideoFile(Path(_path(video)), _filename(video)) for video in found]


def _jobs_from_paths(inputs: Sequence[Path], shard: Shard) -> ShardPlan:
    """The shard's part of every video in the given folders and files (see :func:`find_videos`).

    The whole list is needed for the order, and names clash across shards, so duplicate names
    are refused over the whole list; paths are built for the shard only.
    """
    skipped: list[SkippedPath] = []
    videos = _scan_some(inputs, skipped)
    _refuse_duplicates_found(videos, [output_name(_filename(found)) for found in videos])
    start, stop = shard.bounds(len(videos))
    jobs = [VideoJob(path=Path(_path(found)), name=output_name(_filename(found))) for found in videos[start:stop]]
    return ShardPlan(jobs, tuple(skipped))


# ---- metadata CSVs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _CsvRows:
    """What one cheap pass over a metadata CSV learns: the header, how many rows, whether quoted."""

    header: list[str]
    rows: int
    quoted: bool


def _is_blank(fields: Sequence[str]) -> bool:
    """A line with nothing but white space on it, which pandas skipped (``skip_blank_lines``) and so do we."""
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _count_rows(csv_path: Path) -> _CsvRows:
    """The header and the number of data rows, without parsing the rows.

    Without quote characters every non-blank line is one row, which a byte scan counts in a
    fraction of a second for 650k rows; with quotes (a file name holding a comma or a line
    break) the csv module counts them.
    """
    rows, quoted, header_line = 0, False, None
    with csv_path.open("rb") as file:
        for line in file:
            if not line.strip():
                continue
            if header_line is None:
                header_line = line
            else:
                rows += 1
            quoted = quoted or b'"' in line
    if header_line is None:
        raise UsageError(f"Metadata file {csv_path} is empty; expected the columns {','.join(METADATA_COLUMNS)}.")
    if quoted:
        with _open_text(csv_path) as file:
            records = (fields for fields in csv.reader(file) if not _is_blank(fields))
            header = next(records)
            rows = sum(1 for _ in records)
        return _CsvRows(header, rows, True)
    return _CsvRows(next(csv.reader([_decode(header_line, csv_path)])), rows, False)


def _open_text(csv_path: Path):
    return csv_path.open(newline="", encoding="utf-8-sig")


def _decode(line: bytes, csv_path: Path) -> str:
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"Metadata file {csv_path} is not a readable CSV ({error}).") from None


def _csv_rows(csv_path: Path, layout: _CsvRows, start: int, stop: int) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of data rows ``start`` to ``stop``, one at a time; reading stops at ``stop``."""
    if start >= stop:
        return
    if layout.quoted:
        with _open_text(csv_path) as file:
            reader = csv.reader(file)
            row = -1  # the header
            for fields in reader:
                if _is_blank(fields):
                    continue
                if start <= row < stop:
                    yield reader.line_num, fields
                row += 1
                if row >= stop:
                    return
        return
    with csv_path.open("rb") as file:
        row = -1
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            if start <= row < stop:
                yield number, next(csv.reader([_decode(line, csv_path)]))
            row += 1
            if row >= stop:
                return


def _read_layout(csv_path: Path, required: Sequence[str] = METADATA_COLUMNS) -> _CsvRows:
    """The CSV's header and row count, refusing a file without the ``required`` columns."""
    if not csv_path.is_file():
        raise UsageError(f"Metadata file {csv_path} does not exist.")
    layout = _count_rows(csv_path)
    absent = [c for c in required if c not in layout.header]
    if absent:
        raise UsageError(
            f"Metadata file {csv_path} lacks the column(s) {', '.join(absent)}; expected {','.join(METADATA_COLUMNS)}."
        )
    return layout


def read_metadata_rows(csv_path: Path | str, *, required: Sequence[str] = METADATA_COLUMNS) -> Iterator[dict[str, str]]:
    """Every data row of a metadata CSV as column -> text, one at a time.

    The one CSV reader of the project: planning reads its shard's rows with the same rules
    (blank lines skipped, a byte-order mark allowed, quoted names), so every command agrees on
    what a metadata file says.
    """
    csv_path = Path(csv_path)
    layout = _read_layout(csv_path, required)
    for _, fields in _csv_rows(csv_path, layout, 0, layout.rows):
        yield dict(zip(layout.header, fields, strict=False))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _jobs_from_metadata(csv_path: Path, inputs: Sequence[Path], shard: Shard) -> list[VideoJob]:
    """The shard's rows of the CSV, in its order, with its fps and frame counts.

    Only the shard's rows are parsed, checked and looked up in the folder: the rows of other
    shards are their own tasks' business (``tsp status`` sees the whole list).
    """
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise UsageError(
            "`metadata` needs exactly one VIDEOS folder, the one its file names are relative to.", parameter="metadata"
        )
    folder = Path(inputs[0])
    layout = _read_layout(csv_path)
    column = {name: layout.header.index(name) for name in ("filename", "fps", "video-frames")}
    start, stop = shard.bounds(layout.rows)
    rows: list[tuple[int, str, float, float]] = []
    for line, fields in _csv_rows(csv_path, layout, start, stop):
        if len(fields) > len(layout.header):
            raise UsageError(
                f"Metadata file {csv_path} is not a readable CSV (line {line} has {len(fields)} fields, "
                f"the header {len(layout.header)})."
            )
        fields += [""] * (len(layout.header) - len(fields))
        rows.append(
            (line, fields[column["filename"]], _number(fields[column["fps"]]), _number(fields[column["video-frames"]]))
        )
    bad = [
        f"line {line} ({name})"
        for line, name, fps, frames in rows
        if not (fps > 0 and math.isfinite(fps) and math.isfinite(frames) and frames >= 0 and frames == round(frames))
    ]
    if bad:
        raise UsageError(
            f"Metadata file {csv_path} has no usable fps or video-frames on {_list_some(bad)}; fix or remove those rows."
        )
    jobs = [
        VideoJob(path=folder / name, name=output_name(name), fps=fps, num_frames=int(frames))
        for _, name, fps, frames in rows
    ]
    missing = [str(job.path.relative_to(folder)) for job in jobs if not job.path.is_file()]
    if missing:
        listed = (
            f"{len(missing)} video listed in {csv_path} is"
            if len(missing) == 1
            else f"{len(missing)} videos listed in {csv_path} are"
        )
        raise UsageError(f"{listed} not in {folder}: {_list_some(missing)}.")
    refuse_duplicate_names((job.name, str(job.path)) for job in jobs)
    return jobs


# ---- the job list ---------------------------------------------------------------------------------


def refuse_duplicate_names(named_paths: Iterable[tuple[str, str]]) -> None:
    """Two inputs that would write the same ``<name>.npy`` are refused before any work."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for name, path in named_paths:
        by_name[name].append(path)
    clashes = [f"{name} ({' and '.join(paths[:2])})" for name, paths in by_name.items() if len(paths) > 1]
    if clashes:
        raise UsageError(
            f"Several videos would write the same feature file: {_list_some(clashes)}; rename or separate them."
        )


@dataclass(frozen=True)
class ShardPlan:
    """A shard's ordered jobs, and the paths of a folder scan that could not be followed."""

    jobs: list[VideoJob]
    skipped: tuple[SkippedPath, ...] = ()

    @property
    def notes(self) -> list[str]:
        """The skipped paths in sentences, for the run's notes: nothing under VIDEOS is dropped in silence."""
        return skipped_notes(self.skipped)


def plan_shard(inputs: Sequence[Path | str], metadata: Path | str | None = None, shard: Shard = Shard()) -> ShardPlan:
    """The ordered jobs of ``shard`` for ``tsp extract``: the same as cutting the whole list, at a
    cost that grows with the shard (a CSV) or with a directory listing (folders), not with jobs."""
    if not inputs:
        raise UsageError("Give at least one VIDEOS folder or file.")
    paths = [Path(p) for p in inputs]
    if metadata:
        return ShardPlan(_jobs_from_metadata(Path(metadata), paths, shard))
    return _jobs_from_paths(paths, shard)


def plan_shard_jobs(
    inputs: Sequence[Path | str], metadata: Path | str | None = None, shard: Shard = Shard()
) -> list[VideoJob]:
    """:func:`plan_shard`'s jobs alone."""
    return plan_shard(inputs, metadata, shard).jobs


def listed_names(inputs: Sequence[Path | str], metadata: Path | str | None = None) -> list[str]:
    """The ordered feature names of every shard together, as ``tsp extract`` would list them, without
    building jobs or checking files: what ``tsp status`` needs to see the whole picture.

    With a metadata CSV its rows are the list (VIDEOS are not needed); duplicates are refused.
    """
    if metadata:
        csv_path = Path(metadata)
        layout = _read_layout(csv_path)
        column = layout.header.index("filename")
        names = [
            output_name(fields[column]) if column < len(fields) else ""
            for _, fields in _csv_rows(csv_path, layout, 0, layout.rows)
        ]
        refuse_duplicate_names((name, name) for name in names)
        return names
    if not inputs:
        raise UsageError("Give at least one VIDEOS folder or file.")
    videos = _scan_some([Path(p) for p in inputs], [])
    names = [output_name(_filename(found)) for found in videos]
    _refuse_duplicates_found(videos, names)
    return names


def collect_jobs(inputs: Sequence[Path], metadata: Path | None = None) -> list[VideoJob]:
    """The ordered, duplicate-free job list for ``tsp extract`` (every shard together)."""
    return plan_shard_jobs(inputs, metadata, Shard())
