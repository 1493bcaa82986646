"""PyAV access to videos: probing the video stream, and streaming its frames once, in order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from tsp_cli.errors import VideoError

#: File endings taken as videos when a folder is given.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".ogv"}
)


@dataclass(frozen=True)
class VideoInfo:
    """What the recipe needs to know of a video before decoding it."""

    path: Path
    stream_index: int
    fps: float
    num_frames: int
    time_base: Fraction
    width: int
    height: int
    #: FFmpeg's name of the decoded frames' pixel format, e.g. ``yuv420p`` or ``yuv420p10le``.
    pixel_format: str = ""


def describe_av_error(error: Exception) -> str:
    """A short, single-line description of a PyAV/FFmpeg error."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


@contextmanager
def open_video_stream(path: Path | str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and yield its first video stream, whatever its index; errors become :class:`VideoError`."""
    path = Path(path)
    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoError(f"{path} cannot be opened as a video ({describe_av_error(error)}).") from None
    try:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream.")
        yield container, container.streams.video[0]
    finally:
        container.close()


#: A time base this coarse is one tick per frame, so its inverse is the frame rate.
_MAX_TIME_BASE_FPS = 240


def stream_fps(stream: av.video.stream.VideoStream, path: Path) -> float:
    """The stream's average frame rate, falling back to FFmpeg's guessed rate, then the time base."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate:
            return float(rate)
    if stream.time_base and 1 <= 1 / stream.time_base <= _MAX_TIME_BASE_FPS:
        return float(1 / stream.time_base)
    raise VideoError(f"{path} declares no frame rate; re-encode it with `tsp standardize` first.")


def count_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Count the stream's packets that carry a frame, demuxing only (no decoding)."""
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def probe(path: Path | str, *, num_frames: int | None = None, fps: float | None = None) -> VideoInfo:
    """Describe the video stream of ``path``.

    ``fps`` and ``num_frames`` given (from a metadata CSV, as the reference reads them) are
    used as they are; otherwise the stream's rate is read and its frames are counted.
    """
    path = Path(path)
    with open_video_stream(path) as (container, stream):
        fps = float(fps) if fps else stream_fps(stream, path)
        if stream.time_base is None:
            raise VideoError(f"{path} has no time base on its video stream; re-encode it with `tsp standardize`.")
        if num_frames is None:
            try:
                num_frames = count_frames(container, stream)
            except av.FFmpegError as error:
                raise VideoError(f"{path} cannot be read to the end ({describe_av_error(error)}).") from None
        return VideoInfo(
            path=path,
            stream_index=stream.index,
            fps=fps,
            num_frames=int(num_frames),
            time_base=Fraction(stream.time_base),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            pixel_format=stream.codec_context.pix_fmt or "",
        )


def decode_frames(info: VideoInfo) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(pts, frame)`` for every frame of the video stream, decoded once, in presentation order.

    A frame without a pts is placed one nominal frame after the previous one, which is where a
    constant-rate stream would have it.
    """
    with open_video_stream(info.path) as (container, stream):
        ticks_per_frame = 1 / (info.time_base * Fraction(info.fps).limit_denominator(1_000_000))
        previous_pts: int | None = None
        decoded = 0
        try:
            for frame in container.decode(stream):
                pts = frame.pts
                if pts is None:
                    pts = 0 if previous_pts is None else round(previous_pts + ticks_per_frame)
                previous_pts = pts
                decoded += 1
                yield pts, frame
        except av.FFmpegError as error:
            raise VideoError(
                f"{info.path} breaks after {decoded} decoded frames ({describe_av_error(error)})."
            ) from None
