"""PyAV access to videos: probing the video stream, and streaming its frames once, in order."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av

from tsp_cli.errors import VideoError
from tsp_cli.pipeline.truncation import Truncation, check_truncation, declared_seconds

#: File endings taken as videos when a folder is given.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".ogv"}
)


@dataclass(frozen=True)
class Keyframe:
    """A packet flagged as a keyframe: decoding can start there.

    ``leading``: packets after it in decode order are shown before it (an open GOP: x265 by
    default, x264 with ``open_gop``). Those leading pictures reference the previous GOP, so a
    decoder started here shows them wrong (or drops them); only frames from ``pts`` on are exact,
    and only if no later frame references them, which is why a seek goes one keyframe further back.
    """

    pts: int
    leading: bool = False


@dataclass(frozen=True)
class VideoInfo:
    """What the recipe needs to know of a video before decoding it.

    ``keyframes``: the keyframes in decode order, collected by the pass that counts frames;
    ``None`` when the frames were not counted (a metadata CSV gave them) or some packet had no
    pts (a stream that cannot be entered in the middle exactly).
    """

    path: Path
    stream_index: int
    fps: float
    num_frames: int
    time_base: Fraction
    width: int
    height: int
    keyframes: tuple[Keyframe, ...] | None = None
    #: FFmpeg's name of the decoded frames' pixel format, e.g. ``yuv420p`` or ``yuv420p10le``.
    pixel_format: str = ""
    #: Set when the file declares a longer video than its packets hold (counted frames only).
    truncated: Truncation | None = None


def describe_av_error(error: Exception) -> str:
    """A short, single-line description of a PyAV/FFmpeg error."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


@contextmanager
def open_video_stream(path: Path | str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and yield its first video stream, whatever its index; errors become :class:`VideoError`."""
    path = Path(path)
    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        # FFmpeg calls an empty file "Invalid data found when processing input": say what it is.
        reason = "it is empty: 0 bytes" if _is_empty(path) else describe_av_error(error)
        raise VideoError(f"{path} cannot be opened as a video ({reason}).", path=path) from None
    try:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream.", path=path)
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
    raise VideoError(f"{path} declares no frame rate; re-encode it with `tsp standardize` first.", path=path)


def scan_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> tuple[int, tuple[Keyframe, ...] | None]:
    """Demux the stream once: the packets that carry a frame, and its keyframes (``None`` if any pts is missing)."""
    count, keyframes, _, _ = _scan(container, stream)
    return count, keyframes


def _scan(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> tuple[int, tuple[Keyframe, ...] | None, tuple[int | None, int | None, int | None], tuple[int | None, int | None]]:
    """:func:`scan_packets`, the first packet's (pts, dts, position) to recognise it after a rewind,
    and the span of the packets' times (the earliest pts, the latest pts plus its duration)."""
    count = 0
    keyframes: list[Keyframe] = []
    complete = True
    first: tuple[int | None, int | None, int | None] = (None, None, None)
    earliest: int | None = None
    end: int | None = None
    for packet in container.demux(stream):
        if packet.size <= 0:
            continue
        if not count:
            first = (packet.pts, packet.dts, packet.pos)
        count += 1
        pts = packet.pts
        if pts is not None:
            earliest = pts if earliest is None else min(earliest, pts)
            packet_end = pts + (packet.duration or 0)
            end = packet_end if end is None else max(end, packet_end)
        if pts is None:
            complete = False
        elif packet.is_keyframe:
            keyframes.append(Keyframe(pts))
        elif keyframes and pts < keyframes[-1].pts and not keyframes[-1].leading:
            keyframes[-1] = Keyframe(keyframes[-1].pts, leading=True)
    return count, tuple(keyframes) if complete else None, first, (earliest, end)


def _rewound(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    first: tuple[int | None, int | None, int | None],
) -> Iterator[av.Packet] | None:
    """The stream's packets from its very first one again, or ``None`` if a seek cannot promise that."""
    try:
        container.seek(0, backward=True, any_frame=False)
        packets = container.demux(stream)
        packet = next((p for p in packets if p.size > 0), None)
    except (av.FFmpegError, OSError):
        return None
    if packet is None or (packet.pts, packet.dts, packet.pos) != first:
        return None
    return itertools.chain([packet], packets)


@dataclass
class OpenVideo:
    """A video file left open by :func:`open_probed`; ``packets``, if set, runs from the stream's start."""

    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    packets: Iterator[av.Packet] | None


def with_keyframes(info: VideoInfo) -> VideoInfo:
    """``info`` with its keyframes, demuxing the stream once if they were not collected yet."""
    if info.keyframes is not None:
        return info
    with open_video_stream(info.path) as (container, stream):
        try:
            _, keyframes = scan_packets(container, stream)
        except av.FFmpegError as error:
            raise VideoError(
                f"{info.path} cannot be read to the end ({describe_av_error(error)}).", path=info.path
            ) from None
    return replace(info, keyframes=keyframes)


def probe(path: Path | str, *, num_frames: int | None = None, fps: float | None = None) -> VideoInfo:
    """Describe the video stream of ``path``.

    ``fps`` and ``num_frames`` given (from a metadata CSV, as the reference reads them) are
    used as they are; otherwise the stream's rate is read and its frames are counted.
    """
    with open_probed(path, num_frames=num_frames, fps=fps) as (info, _):
        return info


@contextmanager
def open_probed(
    path: Path | str, *, num_frames: int | None = None, fps: float | None = None
) -> Iterator[tuple[VideoInfo, OpenVideo]]:
    """:func:`probe`, and the open file for :func:`decode_frames`: one open per video instead of two.

    After counting, the demuxer is rewound to the start, and the first packet checked to be
    the very one counted first; if it is not (a container that cannot seek exactly),
    decoding reads from a fresh open, as before.
    """
    path = Path(path)
    with open_video_stream(path) as (container, stream):
        fps = float(fps) if fps else stream_fps(stream, path)
        if stream.time_base is None:
            raise VideoError(
                f"{path} has no time base on its video stream; re-encode it with `tsp standardize`.", path=path
            )
        keyframes, truncated = None, None
        packets: Iterator[av.Packet] | None = None
        if num_frames is None:
            try:
                num_frames, keyframes, first, span = _scan(container, stream)
            except av.FFmpegError as error:
                raise VideoError(f"{path} cannot be read to the end ({describe_av_error(error)}).", path=path) from None
            truncated = check_truncation(declared_seconds(container, stream), *span, Fraction(stream.time_base))
            packets = _rewound(container, stream, first)
        else:
            packets = container.demux(stream)
        assert num_frames is not None
        info = VideoInfo(
            path=path,
            stream_index=stream.index,
            fps=fps,
            num_frames=int(num_frames),
            time_base=Fraction(stream.time_base),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            keyframes=keyframes,
            pixel_format=stream.codec_context.pix_fmt or "",
            truncated=truncated,
        )
        yield info, OpenVideo(container, stream, packets)


@contextmanager
def _opened(
    info: VideoInfo, opened: OpenVideo | None
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    if opened is None:
        with open_video_stream(info.path) as pair:
            yield pair
    else:
        yield opened.container, opened.stream


class SeekMissed(Exception):
    """A seek did not land on a keyframe at or before the one asked for; decode from the start instead."""


def _packets_from(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, keyframe_pts: int | None
) -> Iterator[av.Packet]:
    """The stream's packets, from the start or from the keyframe at ``keyframe_pts`` (or an earlier one)."""
    packets = container.demux(stream)
    if keyframe_pts is None:
        yield from packets
        return
    container.seek(keyframe_pts, stream=stream, backward=True, any_frame=False)
    packets = container.demux(stream)
    for packet in packets:
        if packet.size <= 0 and packet.pts is None:
            continue
        if not packet.is_keyframe or packet.pts is None or packet.pts > keyframe_pts:
            raise SeekMissed(f"landed on pts {packet.pts} (keyframe: {packet.is_keyframe}) for {keyframe_pts}")
        yield packet
        break
    yield from packets


def decode_frames(
    info: VideoInfo, *, from_keyframe: int | None = None, opened: OpenVideo | None = None, threads: int = 1
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(pts, frame)`` for every frame of the video stream, decoded once, in presentation order.

    ``from_keyframe``: start at the keyframe with this pts instead of the beginning; frames from
    there on decode exactly as in a whole pass (closed GOP), and so do all frames from the next
    keyframe on (open GOP). Raises :class:`SeekMissed` if the container cannot seek there.
    A frame without a pts is placed one nominal frame after the previous one, which is where a
    constant-rate stream would have it. ``opened``: the file already open (:func:`open_probed`),
    used once.

    ``threads``: FFmpeg's decoding threads (its slice threading; the frames are the same
    whatever the count). One by default: when every core has a decoding worker, FFmpeg's own
    threads only compete with them (measured: a 320x240 H.264 video costs 45% more CPU with
    them); more only where cores would otherwise sit idle; 0 lets FFmpeg choose (one per core).
    """
    start = opened.packets if opened is not None and from_keyframe is None else None
    if opened is not None and from_keyframe is None and start is None:
        opened = None  # read to its end by the count and not rewound: open anew
    if opened is not None:
        opened.packets = None
    with _opened(info, opened) as (container, stream):
        stream.codec_context.thread_count = threads
        ticks_per_frame = 1 / (info.time_base * Fraction(info.fps).limit_denominator(1_000_000))
        previous_pts: int | None = None
        decoded = 0
        try:
            if start is None:
                start = _packets_from(container, stream, from_keyframe)
            for packet in start:
                for frame in stream.decode(packet):
                    pts = frame.pts
                    if pts is None:
                        pts = 0 if previous_pts is None else round(previous_pts + ticks_per_frame)
                    previous_pts = pts
                    decoded += 1
                    yield pts, frame
        except av.FFmpegError as error:
            raise VideoError(
                f"{info.path} breaks after {decoded} decoded frames ({describe_av_error(error)}).",
                path=info.path,
            ) from None
