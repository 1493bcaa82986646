"""The reference's data step 2: re-encode videos to a constant frame rate, with PyAV only.

The reference ran ``ffmpeg -i IN -filter:v fps=fps=30 OUT.mp4`` on every video before extracting
features, so the published features were computed on 30 fps H.264 files. To reproduce them from
the original downloads, the same step must come first. It runs FFmpeg's own ``fps`` filter (through
``av.filter.Graph``), so frames are duplicated or dropped by timestamp exactly as the ``ffmpeg``
command did (rounding to the nearest output slot, duration kept), then encodes H.264 (libx264,
FFmpeg's defaults: CRF 23, preset medium) in yuv420p.

yuv420p needs even dimensions; a video of odd width or height loses its last column or row
(cropped, not scaled, so no pixel is resampled or invented). Audio is not copied: features use
frames only. Each output is written to a temporary file and renamed, so finished outputs can be
skipped when a run is repeated.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from tsp_cli.atomic import atomic_path, folder_problem
from tsp_cli.data.progress import Failure, Progress, ProgressCallback
from tsp_cli.errors import TspError, UsageError, VideoError
from tsp_cli.parallel import map_isolating_crashes
from tsp_cli.pipeline.inputs import SkippedPath, find_videos
from tsp_cli.pipeline.video import describe_av_error, open_video_stream

DEFAULT_FPS = Fraction(30)
ENCODER = "libx264"
PIXEL_FORMAT = "yuv420p"


@dataclass(frozen=True)
class Job:
    """One video to re-encode, and where its result goes."""

    source: Path
    target: Path


@dataclass
class StandardizeResult:
    """Outputs written, outputs already there, and videos that failed (with the reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def parse_fps(text: str) -> Fraction:
    """``30``, ``29.97`` or ``30000/1001`` as an exact positive rate, as the ``fps`` filter reads it."""
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        rate = Fraction(0)
    if rate <= 0:
        raise UsageError(f"`fps` must be a positive number such as 30 or 30000/1001, not {text!r}.", parameter="fps")
    return rate


def describe_fps(rate: Fraction) -> str:
    """A rate as a user wrote it: ``30``, ``29.97``, or ``30000/1001`` where no short decimal is exact."""
    if rate.denominator == 1:
        return str(rate.numerator)
    decimal = f"{float(rate):.6g}"
    return decimal if Fraction(decimal) == rate else f"{rate.numerator}/{rate.denominator}"


def plan_jobs(source: Path, out_dir: Path, skipped: list[SkippedPath] | None = None) -> list[Job]:
    """``OUT/<name>.mp4`` for every video in ``source`` (a folder, recursively, or one file); links
    and folders that cannot be followed are added to ``skipped``.

    Two inputs with the same name (``a.mkv`` and ``a.mp4``) would write the same output, and an
    output that is its own input would be skipped as finished: both are refused up front.
    """
    problem = folder_problem(Path(out_dir))
    if problem is not None:
        raise UsageError(
            f"Cannot write the videos into {out_dir} ({problem}); give another `out_dir`.", parameter="out_dir"
        )
    videos = find_videos([source], skipped)
    if not videos:
        raise UsageError(f"{source} holds no videos.")
    jobs: dict[Path, Job] = {}
    for video in videos:
        target = Path(out_dir) / f"{video.video}.mp4"
        if target in jobs:
            raise UsageError(f"{jobs[target].source} and {video.path} would both become {target}; rename one.")
        if target.resolve() == video.path.resolve():
            raise UsageError(f"{video.path} would be overwritten by its own output; choose another OUT folder.")
        jobs[target] = Job(video.path, target)
    return list(jobs.values())


def standardize_video(source: Path, target: Path, fps: Fraction = DEFAULT_FPS) -> int:
    """Re-encode ``source`` into ``target`` (MP4, H.264, constant ``fps``); returns the frames written."""
    try:
        with atomic_path(target) as temp:
            return _encode(source, temp, fps)
    except av.FFmpegError as error:
        raise VideoError(f"{source} cannot be re-encoded ({describe_av_error(error)}).", path=source) from None


def _encode(source: Path, temp: Path, fps: Fraction) -> int:
    written = 0
    with open_video_stream(source) as (input_container, input_stream):
        input_stream.thread_type = "AUTO"
        with av.open(os.fspath(temp), "w", format="mp4") as output:
            encoder: av.video.stream.VideoStream | None = None
            time_base = input_stream.time_base
            if time_base is None:
                raise VideoError(
                    f"{source} has a video stream without a time base; it cannot be re-timed.", path=source
                )
            for frame in _constant_rate_frames(input_container.decode(input_stream), time_base, fps):
                if encoder is None:
                    encoder = _add_encoder(output, frame, fps)
                frame.pts, frame.time_base = written, encoder.codec_context.time_base
                output.mux(encoder.encode(frame))
                written += 1
            if encoder is None:
                raise VideoError(f"{source} has no decodable frames.", path=source)
            output.mux(encoder.encode(None))
    return written


def _constant_rate_frames(
    frames: Iterator[av.VideoFrame], time_base: Fraction, fps: Fraction
) -> Iterator[av.VideoFrame]:
    """The decoded frames through FFmpeg's ``fps`` filter (and an even-size crop), in output order."""
    graph: av.filter.Graph | None = None
    for frame in frames:
        if graph is None:
            graph = _build_graph(frame, time_base, fps)
        graph.vpush(frame)
        yield from _drain(graph)
    if graph is not None:
        graph.vpush(None)
        yield from _drain(graph)


def _build_graph(first: av.VideoFrame, time_base: Fraction, fps: Fraction) -> av.filter.Graph:
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(width=first.width, height=first.height, format=first.format, time_base=time_base)]
    nodes.append(graph.add("fps", f"fps={fps}"))
    even_width, even_height = first.width - first.width % 2, first.height - first.height % 2
    if (even_width, even_height) != (first.width, first.height):
        nodes.append(graph.add("crop", f"w={even_width}:h={even_height}:x=0:y=0"))
    nodes.append(graph.add("format", PIXEL_FORMAT))
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


def _drain(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    """Every frame the graph can give now; it asks for more input (EAGAIN) or has ended (EOF)."""
    while True:
        try:
            yield graph.vpull()
        except (av.BlockingIOError, av.EOFError):
            return


def _add_encoder(
    output: av.container.OutputContainer, frame: av.VideoFrame, fps: Fraction
) -> av.video.stream.VideoStream:
    stream: av.video.stream.VideoStream = output.add_stream(ENCODER, rate=fps)  # type: ignore[assignment]
    stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, PIXEL_FORMAT
    stream.codec_context.time_base = 1 / fps
    return stream


def _standardize_or_fail(job: Job, fps: Fraction) -> Path | Failure:
    """Run in a worker: a broken video becomes a :class:`Failure` instead of stopping the others."""
    try:
        standardize_video(job.source, job.target, fps)
        return job.target
    except TspError as error:
        return Failure(str(job.source), str(error))


def _crashed(job: Job) -> Failure:
    return Failure(str(job.source), f"{job.source} crashed the process re-encoding it (a damaged file?).")


def _output_rate(target: Path) -> Fraction | None:
    try:
        with open_video_stream(target) as (_, stream):
            return Fraction(stream.average_rate) if stream.average_rate else None
    except VideoError:
        return None


def _refuse_other_rates(existing: list[Path], fps: Fraction) -> None:
    """Refuse outputs already there that were made at another frame rate (or cannot be read)."""
    other = [(target, _output_rate(target)) for target in existing]
    other = [(target, rate) for target, rate in other if rate != fps]
    if not other:
        return
    target, rate = other[0]
    made = f"made at {describe_fps(rate)} fps" if rate is not None else "unreadable"
    more = f" (and {len(other) - 1} more)" if len(other) > 1 else ""
    raise UsageError(
        f"{target} is already there, {made}, not {describe_fps(fps)} fps{more}; "
        "give another output folder, or delete those files to re-encode them."
    )


def standardize_all(
    jobs: list[Job], *, fps: Fraction = DEFAULT_FPS, workers: int = 0, on_progress: ProgressCallback | None = None
) -> StandardizeResult:
    """Re-encode every job whose output is not there yet, ``workers`` at a time (0 = here).

    Outputs already there are kept when they have the asked frame rate; one made at another rate
    refuses the whole run before any work, as ``tsp extract`` refuses a folder made with other settings.
    """
    _refuse_other_rates([job.target for job in jobs if job.target.exists()], fps)
    result = StandardizeResult(skipped=[job.target for job in jobs if job.target.exists()])
    pending = [job for job in jobs if not job.target.exists()]
    for job in pending:
        job.target.parent.mkdir(parents=True, exist_ok=True)

    def record(outcome: Path | Failure, name: str) -> None:
        if isinstance(outcome, Failure):
            result.failures.append(outcome)
        else:
            result.written.append(outcome)
        if on_progress is not None:
            on_progress(Progress(len(result.written) + len(result.failures), len(pending), name))

    convert = functools.partial(_standardize_or_fail, fps=fps)
    for job, outcome in map_isolating_crashes(
        convert, pending, workers=workers if len(pending) > 1 else 0, on_crash=_crashed
    ):
        record(outcome, job.source.name)
    result.failures.sort(key=lambda failure: failure.filename)
    return result
