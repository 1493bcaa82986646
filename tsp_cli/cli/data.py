"""``tsp merge``, ``tsp inspect``, ``tsp metadata``, ``tsp standardize``: the data steps around extraction."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tsp_cli.cli.common import (
    EXIT_ITEMS_FAILED,
    WorkersOption,
    count,
    err,
    handles_errors,
    out,
    print_notes,
    whole_number,
)
from tsp_cli.cli.progress import StepProgress
from tsp_cli.errors import MissingVideosError, UsageError

if TYPE_CHECKING:  # the data steps import h5py and PyAV: only when a command runs
    from rich.table import Table

    from tsp_cli.data import inspection
    from tsp_cli.data.metadata import VideoTiming
    from tsp_cli.data.progress import Failure
    from tsp_cli.pipeline.inputs import SkippedPath
#: ``tsp inspect`` names at most this many videos with NaN (or foreign root items) in its summary table.
INSPECT_TABLE_ROWS = 20


def _report_failures(heading: str, failures: list[Failure]) -> None:
    """One line per failed item on stderr, then exit 1: failures are never silently dropped."""
    err.print(f"[bold red]{heading}[/]")
    for failure in failures:
        err.print(f"  {escape(failure.error)}")
    raise typer.Exit(EXIT_ITEMS_FAILED)


def _workers(workers: int | None) -> int:
    from tsp_cli.parallel import default_workers

    return default_workers() if workers is None else workers


# --- tsp merge ---------------------------------------------------------------------------------


@handles_errors
def merge(
    out_dir: Annotated[
        Path,
        typer.Argument(
            metavar="OUT_DIR", help="Folder of per-video features: .npy from tsp extract, or the reference's .pkl."
        ),
    ],
    output: Annotated[Path, typer.Argument(metavar="FEATURES_H5", help="The HDF5 file to write.")],
    metadata: Annotated[
        Path | None, typer.Option("--metadata", help="Metadata CSV listing the videos that must all be present.")
    ] = None,
    videos: Annotated[
        Path | None, typer.Option("--videos", help="Folder of the videos that must all be present.")
    ] = None,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Merge even if listed videos have no features.")
    ] = False,
    compression_level: Annotated[
        int | None,
        typer.Option(
            "--compression-level",
            parser=whole_number(0, 9),
            help="gzip level: 1 (the default) is fastest, 9 smallest.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace FEATURES_H5 if it exists.")] = False,
) -> None:
    """Merge per-video features into one HDF5 file: one dataset per video at the root, as the reference's."""
    from tsp_cli.data import merge as merging

    expected = _expected_videos(metadata, videos)
    level = {} if compression_level is None else {"compression_level": compression_level}
    with StepProgress("Merging") as on_progress:
        try:
            result = merging.merge_features(
                out_dir,
                output,
                expected=expected,
                allow_missing=allow_missing,
                overwrite=overwrite,
                on_progress=on_progress,
                **level,
            )
        except MissingVideosError as error:
            _list_missing(error.missing)
            raise
    _warn(result.notes)
    if result.missing:
        _list_missing(result.missing)
        err.print(f"[yellow]Merged without {count(len(result.missing), 'missing video')} (--allow-missing).[/]")
    out.print(
        f"Merged {count(result.videos, 'video')} ({count(result.rows, 'row')} × {result.width}) "
        f"into {escape(str(result.output))}."
    )
    _say_failed_videos_left_out(out_dir, allowed=allow_missing)


def _say_failed_videos_left_out(out_dir: Path, *, allowed: bool) -> None:
    """A folder whose failure records name videos with no features: they are not in the file, so say so
    and exit 1 (0 with ``--allow-missing``), as extract does for the same videos."""
    from tsp_cli.pipeline import store

    failed = sorted(store.read_failures(out_dir))
    if not failed:
        return
    shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
    err.print(
        f"[{'yellow' if allowed else 'red'}]{count(len(failed), 'video')} failed in extraction and {'is' if len(failed) == 1 else 'are'} not in "
        f"the file: {escape(shown)} (`tsp status {escape(str(out_dir))}` lists why).[/]"
    )
    if not allowed:
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _warn(notes: list[str]) -> None:
    """Warnings about the folder read (unreadable record lines), each once, on stderr."""
    for note in notes:
        err.print(f"[yellow]Warning:[/] {escape(note)}")


def _expected_videos(metadata: Path | None, videos: Path | None) -> dict[str, VideoTiming | None] | None:
    """The videos a complete merge must hold, with their timing where a metadata CSV gives it."""
    from tsp_cli.data.metadata import read_metadata_csv
    from tsp_cli.pipeline.inputs import find_videos

    if metadata is None and videos is None:
        return None
    expected: dict[str, VideoTiming | None] = {}
    if videos is not None:
        if not videos.is_dir():
            raise UsageError(f"--videos {videos} is not a folder.")
        expected.update((video.video, None) for video in find_videos([videos]))
    if metadata is not None:
        expected.update(read_metadata_csv(metadata))
    return expected


def _list_missing(missing: list[str]) -> None:
    """The missing video names on stdout, one per line, so that a script can re-extract them."""
    err.print(f"Videos without features ({len(missing)}):")
    for name in missing:
        out.out(name, highlight=False)


# --- tsp inspect -------------------------------------------------------------------------------


@handles_errors
def inspect(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="A merged HDF5 file, or a folder of .npy/.pkl feature files.")
    ],
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON Lines for scripts: with --all one object per video, then always one summary object.",
        ),
    ] = False,
    all_videos: Annotated[
        bool,
        typer.Option("--all", help="List every video (streamed), not only the first and last few."),
    ] = False,
) -> None:
    """Show the videos, rows, width, dtype, attributes and any NaN/inf of a feature file or folder.

    Reads one video at a time, so memory does not grow with the file: by default the totals and
    the first and last few videos, with --all every video as it is read. Exits 1 if a video holds
    NaN or infinite values, if the HDF5 file holds no videos, or if its root holds anything but
    per-video datasets (downstream loaders iterate the root).
    """
    from tsp_cli.data import inspection

    on_video = None
    if all_videos:
        on_video = _json_line if json_output else _VideoLines()
    with StepProgress("Reading") as on_progress:
        summary = inspection.inspect_features(path, on_video=on_video, on_progress=on_progress)
    _warn(summary.notes)
    if json_output:
        _json_line(summary)
    else:
        out.print(_summary_table(summary))
        if summary.videos and not all_videos:
            out.print(_videos_table(summary))
    problems = []
    if summary.videos_with_non_finite:
        problems.append(f"NaN or infinite values in {count(len(summary.videos_with_non_finite), 'video')}")
    if summary.unexpected:
        problems.append(
            f"the root holds {count(len(summary.unexpected), 'item')} that {'is' if len(summary.unexpected) == 1 else 'are'} "
            "not per-video feature datasets"
        )
    if not summary.videos:
        problems.append("it holds no videos")
    if problems:
        err.print(f"[bold red]Problem:[/] {'; '.join(problems)}.")
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _json_line(record: inspection.VideoSummary | inspection.FeatureSummary) -> None:
    """One JSON object on one line, straight to stdout (no Rich rendering per video)."""
    sys.stdout.write(json.dumps(record.to_json()) + "\n")


class _VideoLines:
    """``--all`` as text: one tab-separated line per video as it is read, under one header line."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, video: inspection.VideoSummary) -> None:
        if not self.started:
            sys.stdout.write("video\trows\twidth\tdtype\tfps\tframes\tclip starts (s)\tNaN/inf rows\n")
            self.started = True
        sys.stdout.write("\t".join(_video_fields(video)) + "\n")


def _video_fields(video: inspection.VideoSummary) -> tuple[str, ...]:
    """A video's row: name, rows, width, dtype, fps, frames, first clip starts, NaN/inf rows."""
    attributes = video.attributes
    return (
        video.video,
        str(video.rows),
        str(video.width),
        video.dtype,
        _number(attributes.get("fps")),
        _number(attributes.get("num_frames")),
        _starts(attributes.get("clip_start_times")),
        str(video.non_finite_rows),
    )


def _summary_table(summary: inspection.FeatureSummary) -> Table:
    from rich.table import Table

    table = Table(title=f"{escape(str(summary.path))} ({summary.kind})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("videos", str(summary.videos))
    spread = (
        f" (min {summary.min_rows}, mean {summary.mean_rows:.1f}, max {summary.max_rows})" if summary.videos else ""
    )
    table.add_row("rows", f"{summary.rows}{spread}")
    table.add_row("width", ", ".join(map(str, summary.widths)) or "-")
    table.add_row("dtype", ", ".join(summary.dtypes) or "-")
    for key, value in sorted(summary.attributes.items()):
        table.add_row(f"@{escape(key)}", escape(_short(value)))
    table.add_row("NaN/inf", escape(_some(summary.videos_with_non_finite)) or "none")
    if summary.unexpected:
        table.add_row("not videos", escape(_some(summary.unexpected)))
    return table


def _some(names: list[str], limit: int = INSPECT_TABLE_ROWS) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" … and {more} more" if more > 0 else "")


def _videos_table(summary: inspection.FeatureSummary) -> Table:
    from rich.table import Column, Table

    from tsp_cli.data import inspection

    shown = [*summary.first, *summary.last]
    caption = f"{summary.videos} videos; the first and last {inspection.INSPECT_ENDS} shown (--all lists every one)"
    # A narrow terminal folds a long name onto a second line, never cuts it: cfr30_a and cfr30_b stay apart.
    longest = max((len(_video_fields(row)[0]) for row in shown), default=5)
    name_column = Column("video", overflow="fold", min_width=min(longest, 20))
    table = Table(name_column, "rows", "width", "dtype", "fps", "frames", caption=caption if summary.hidden else None)
    table.add_column("clip starts (s)", no_wrap=True)
    table.add_column("NaN/inf")
    for position, video in enumerate(shown):
        if summary.hidden and position == len(summary.first):
            table.add_row(f"… {summary.hidden} more", *[""] * 7)
        name, *fields = _video_fields(video)
        table.add_row(escape(name), *fields)
    return table


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):g}"


def _starts(starts: Any) -> str:
    """The first clip start times, enough to see the spacing."""
    if starts is None:
        return "-"
    shown = ", ".join(f"{float(start):.3g}" for start in starts[:3])
    return shown + (", …" if len(starts) > 3 else "")


def _short(value: Any) -> str:
    """An attribute value on one line; long arrays by their length."""
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) and len(value) > 8:
        return f"[{len(value)} values]"
    return value.decode() if isinstance(value, bytes) else str(value)


# --- tsp metadata ------------------------------------------------------------------------------


@handles_errors
def metadata(
    videos: Annotated[
        list[Path], typer.Argument(metavar="VIDEOS", help="Video folders (searched recursively) and/or files.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The CSV to write.")],
    workers: WorkersOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the CSV if it exists.")] = False,
) -> None:
    """Write the metadata CSV of the reference's data step 4: filename,video-duration,fps,video-frames."""
    from tsp_cli.data import metadata as metadata_csv
    from tsp_cli.pipeline.inputs import find_videos, skipped_notes

    metadata_csv.check_csv_output(output, overwrite=overwrite)  # before probing: a refusal costs nothing
    unfollowed: list[SkippedPath] = []
    found = find_videos(videos, unfollowed)
    print_notes(skipped_notes(unfollowed))  # links and folders it could not follow, as extract says them
    if not found:
        raise UsageError(f"No videos found in {', '.join(map(str, videos))}.")
    with StepProgress("Probing") as on_progress:
        rows, failures = metadata_csv.collect_metadata(found, workers=_workers(workers), on_progress=on_progress)
    metadata_csv.write_metadata_csv(rows, output, overwrite=overwrite)
    out.print(f"Wrote {count(len(rows), 'video')} to {escape(str(output))}.")
    if failures:
        heading = f"{count(len(failures), 'video')} could not be read and {'is' if len(failures) == 1 else 'are'} not in the CSV:"
        _report_failures(heading, failures)


# --- tsp standardize ---------------------------------------------------------------------------


@handles_errors
def standardize(
    source: Annotated[
        Path, typer.Argument(metavar="IN", help="A folder of videos (searched recursively) or one video.")
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder for the re-encoded OUT/<name>.mp4 files.")],
    fps: Annotated[str, typer.Option("--fps", help="Output frame rate: 30, 25, 30000/1001, …")] = "30",
    workers: WorkersOption = None,
) -> None:
    """Re-encode videos to constant-frame-rate H.264 MP4, as the reference's data step 2 (ffmpeg fps filter)."""
    from tsp_cli.data import standardize as standardizing
    from tsp_cli.pipeline.inputs import skipped_notes

    rate = standardizing.parse_fps(fps)
    unfollowed: list[SkippedPath] = []
    jobs = standardizing.plan_jobs(source, out_dir, unfollowed)
    print_notes(skipped_notes(unfollowed))
    with StepProgress("Re-encoding") as on_progress:
        result = standardizing.standardize_all(jobs, fps=rate, workers=_workers(workers), on_progress=on_progress)
    skipped = len(result.skipped)
    already = f"; {skipped} {'was' if skipped == 1 else 'were'} already there" if skipped else ""
    out.print(
        f"Re-encoded {count(len(result.written), 'video')} to {standardizing.describe_fps(rate)} fps "
        f"in {escape(str(out_dir))}{already}."
    )
    if result.failures:
        _report_failures(f"{count(len(result.failures), 'video')} could not be re-encoded:", result.failures)
