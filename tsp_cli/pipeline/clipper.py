"""One video (or one segment of it) in, a stream of chunks out: frames' taps and the clips made of them.

This runs in the decoding workers. It decodes the video once, in order, and keeps only the
frames that a clip still to come can use (a window of about ``clip_len / frame_rate`` seconds),
so memory does not grow with the video. A frame is converted to RGB and its taps gathered
(:meth:`FrameTransform.gather`: the uint8 source values of the recipe's resize and crop) only
when a clip first selects it, and then never again however many overlapping clips share it;
each frame's taps are sent to the main process once, which blends them into the network's
input on its device, and clips are sent as lists of frame ids.

A long video may be split into segments (``tsp_cli.pipeline.segments``): the worker that
probes it decodes the first and posts the others for any worker; each is decoded in one pass
from a keyframe and sent as its own stream of chunks (frame ids count per segment).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import av
import torch

from tsp_cli.errors import VideoError
from tsp_cli.models.recipe import Recipe
from tsp_cli.pipeline.handoff import LocalFrames, PostedSegment, SlabRef
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.sampling import ClipSettings, ClipWindow, clip_windows, window_positions
from tsp_cli.pipeline.segments import Segment, whole_video
from tsp_cli.pipeline.transform import taps_per_frame, transform_for
from tsp_cli.pipeline.video import OpenVideo, SeekMissed, VideoInfo, decode_frames, open_probed


@dataclass(frozen=True)
class VideoHeader:
    """The video was probed: ``num_clips`` clips will follow, in ``segments`` streams of chunks."""

    fps: float
    num_frames: int
    num_clips: int
    segments: int = 1
    pixel_format: str = ""


@dataclass
class FrameChunk:
    """New frames (``frame_ids[i]`` is row ``i`` of ``frames``) and the clips now complete.

    One message type for everything a worker says, so that a short video is one message:
    ``header`` rides on the first chunk of a video (segment 0), ``last`` marks the end of
    a segment, and ``error`` says why the video failed (its earlier clips are void);
    ``retryable``: whether trying again may help. A :class:`VideoError` is the file itself (not a
    video, no stream, breaks at the same frame every time), so it is not; anything unexpected is.
    ``frames``: each frame's uint8 taps (:func:`~tsp_cli.pipeline.transform.taps_per_frame`), in a tensor or, by a
    :class:`SlabRef`, in shared memory; ``frame_sizes[i]`` is the (height, width) they were
    gathered from, which says how to blend them (:func:`tsp_cli.pipeline.transform.blend_frames`).
    ``keep_from``: frames of this segment with a smaller id will never be used again.
    """

    job: int
    segment: int = 0
    frame_ids: list[int] = field(default_factory=list)
    frames: torch.Tensor | SlabRef | None = None
    frame_sizes: list[tuple[int, int]] = field(default_factory=list)
    clips: list[tuple[int, list[int]]] = field(default_factory=list)
    keep_from: int = 0
    header: VideoHeader | None = None
    last: bool = False
    error: str | None = None
    retryable: bool = True

    def pin_memory(self) -> FrameChunk:
        """Called by the DataLoader's pinning thread so that copies to the GPU can overlap compute."""
        if isinstance(self.frames, torch.Tensor):
            self.frames = self.frames.pin_memory()
        return self


Message = FrameChunk


class FrameSink(Protocol):
    """Where frames' taps are written: plain tensors, or slabs shared with the main process."""

    def buffer(self, capacity: int) -> tuple[torch.Tensor, SlabRef | None]: ...

    def release(self, ref: SlabRef) -> None: ...


@dataclass
class _Buffered:
    pts: int
    id: int
    frame: av.VideoFrame | None  # the decoded frame, dropped once its taps are gathered
    gathered: bool = False


@dataclass
class _ClipAssembler:
    """The single-pass state for one video: the frame buffer and what is waiting to be sent."""

    job: int
    info: VideoInfo
    windows: list[ClipWindow]
    positions: list[int]
    clip_len: int
    frames_per_chunk: int
    recipe: Recipe
    sink: FrameSink
    segment: int = 0
    header: VideoHeader | None = None  # sent with the first chunk
    buffer: list[_Buffered] = field(default_factory=list)
    next_clip: int = 0
    next_id: int = 0
    new_ids: list[int] = field(default_factory=list)
    new_sizes: list[tuple[int, int]] = field(default_factory=list)
    new_frames: torch.Tensor | None = None
    slab: SlabRef | None = None  # the slab ``new_frames`` lives in, if any
    ready_clips: list[tuple[int, list[int]]] = field(default_factory=list)

    def add(self, pts: int, frame: av.VideoFrame) -> None:
        """Add a decoded frame; frames sharing a pts keep only the last one, as the reference's dict does."""
        entry = _Buffered(pts=pts, id=self.next_id, frame=frame)
        self.next_id += 1
        if not self.buffer or pts > self.buffer[-1].pts:
            self.buffer.append(entry)
        else:
            at = bisect.bisect_left([b.pts for b in self.buffer], pts)
            if at < len(self.buffer) and self.buffer[at].pts == pts:
                self.buffer[at] = entry
            else:
                self.buffer.insert(at, entry)
        self._complete_clips_before(pts)
        self._drop_unneeded()

    def finish(self) -> None:
        """End of stream: every remaining clip is as complete as it will ever be."""
        self._complete_clips_before(None)

    def _complete_clips_before(self, pts: int | None) -> None:
        while self.next_clip < len(self.windows) and (pts is None or pts > self.windows[self.next_clip].end_pts):
            self._emit_clip(self.windows[self.next_clip])
            self.next_clip += 1

    def _emit_clip(self, window: ClipWindow) -> None:
        pts_list = [b.pts for b in self.buffer]
        start = bisect.bisect_left(pts_list, window.start_pts)
        stop = bisect.bisect_right(pts_list, window.end_pts)
        frames = self.buffer[start:stop]
        starts_exactly = start < len(self.buffer) and self.buffer[start].pts == window.start_pts
        if window.start_pts > 0 and not starts_exactly and start > 0:
            frames = [self.buffer[start - 1], *frames]
        if self.positions[-1] >= len(frames):
            raise VideoError(
                f"{self.info.path}: clip {window.index} at {window.start_time:.2f} s has {len(frames)} frames in its "
                f"window, fewer than the {self.positions[-1] + 1} its {self.clip_len} frames need at {self.info.fps:g} fps; "
                "the video is truncated or damaged, has a variable frame rate, or does not start at time 0 "
                "(`tsp standardize` re-times it to a constant rate from 0)."
            )
        chosen = [frames[p] for p in self.positions]
        for entry in chosen:
            self._gather(entry)
        self.ready_clips.append((window.index, [entry.id for entry in chosen]))

    def _gather(self, entry: _Buffered) -> None:
        """Gather a frame's taps into the next slot of the chunk being filled, once ever."""
        if entry.gathered:
            return
        if self.new_frames is None:
            self.new_frames, self.slab = self.sink.buffer(self.frames_per_chunk)
        elif len(self.new_ids) == len(self.new_frames):  # one frame completed many clips at once
            grown, slab = self.sink.buffer(2 * len(self.new_frames))
            grown[: len(self.new_ids)] = self.new_frames
            if self.slab is not None:
                self.sink.release(self.slab)
            self.new_frames, self.slab = grown, slab
        assert entry.frame is not None  # a frame is dropped only once gathered
        # swscale's own threads (threads=0, PyAV's default) only compete with the other workers.
        rgb = entry.frame.to_ndarray(format="rgb24", threads=1)
        size = (rgb.shape[0], rgb.shape[1])
        transform_for(*size, self.recipe).gather(rgb, out=self.new_frames[len(self.new_ids)])
        entry.frame, entry.gathered = None, True
        self.new_ids.append(entry.id)
        self.new_sizes.append(size)

    def _drop_unneeded(self) -> None:
        """Keep only frames a later clip can use: from the last one before its window start on."""
        if self.next_clip >= len(self.windows):
            self.buffer.clear()
            return
        next_start = self.windows[self.next_clip].start_pts
        keep = 0
        while keep + 1 < len(self.buffer) and self.buffer[keep + 1].pts < next_start:
            keep += 1
        if keep:
            del self.buffer[:keep]

    def take_chunk(self, *, last: bool = False) -> FrameChunk:
        keep_from = self.buffer[0].id if self.buffer else self.next_id
        count = len(self.new_ids)
        frames: torch.Tensor | SlabRef | None = None
        if self.slab is not None:
            frames = SlabRef(worker=self.slab.worker, slab=self.slab.slab, count=count)
        elif self.new_frames is not None:  # the filled part of this chunk's own buffer
            frames = self.new_frames[:count]
        chunk = FrameChunk(
            job=self.job,
            segment=self.segment,
            frame_ids=self.new_ids,
            frames=frames,
            frame_sizes=self.new_sizes,
            clips=self.ready_clips,
            keep_from=keep_from,
            header=self.header,
            last=last,
        )
        self.new_ids, self.new_sizes, self.ready_clips, self.new_frames, self.slab = [], [], [], None, None
        self.header = None
        return chunk


#: A chunk goes out once it holds this many new frames (about 10 MB of taps).
FRAMES_PER_CHUNK = 64
#: Segments shorter than this (in video time) are not worth a seek and a GOP's lead-in.
MIN_SEGMENT_SECONDS = 10.0


@dataclass(frozen=True)
class Decoding:
    """How the worker that probed a video decodes it: ``segment`` of ``segments`` in all, with ``threads`` FFmpeg threads."""

    segment: Segment
    segments: int = 1
    threads: int = 1


class Scheduler(Protocol):
    """What a worker asks once it has probed a video: how to share it with the other workers.

    :meth:`share` is called exactly once per video, unless the video fails first; it may post
    segments after the first for other workers (:func:`segment_messages` decodes them) and
    returns this worker's part.
    """

    def share(self, info: VideoInfo, windows: list[ClipWindow]) -> Decoding: ...


class DecodeAlone:
    """No other worker to share with: the whole video, one FFmpeg thread."""

    def share(self, info: VideoInfo, windows: list[ClipWindow]) -> Decoding:
        return Decoding(segment=whole_video(len(windows)))


def video_messages(
    job_index: int,
    job: VideoJob,
    settings: ClipSettings,
    *,
    clips_per_chunk: int = 32,
    sink: FrameSink | None = None,
    scheduler: Scheduler | None = None,
) -> Iterator[FrameChunk]:
    """Decode one video (its first segment, if split) and yield its chunks; a failure ends it with ``error``.

    ``scheduler`` (:class:`DecodeAlone` by default) decides, once the video is probed, whether
    other workers take segments of it and how many FFmpeg threads this worker's part gets.
    A chunk goes out once it holds ``FRAMES_PER_CHUNK`` new frames or ``clips_per_chunk`` complete clips: few enough messages that passing them costs
    little (dense strides make a clip per frame), soon enough that batches fill without
    waiting for whole videos.
    """
    try:
        with open_probed(job.path, num_frames=job.num_frames, fps=job.fps) as (info, opened):
            windows = clip_windows(info.fps, info.num_frames, info.time_base, settings)
            decoding = (scheduler or DecodeAlone()).share(info, windows)
            header = VideoHeader(
                fps=info.fps,
                num_frames=info.num_frames,
                num_clips=len(windows),
                segments=decoding.segments,
                pixel_format=info.pixel_format,
            )
            yield from _segment_chunks(
                job_index,
                info,
                windows,
                decoding.segment,
                settings,
                clips_per_chunk,
                sink or LocalFrames(taps_per_frame(settings.recipe)),
                header,
                opened,
                threads=decoding.threads,
            )
    except VideoError as error:
        yield FrameChunk(job=job_index, error=str(error), last=True, retryable=False)
    except Exception as error:  # a damaged file must never stop the other videos
        yield FrameChunk(job=job_index, error=f"{job.path}: {type(error).__name__}: {error}", last=True)


def segment_messages(
    job: VideoJob, posted: PostedSegment, settings: ClipSettings, *, clips_per_chunk: int = 32, sink: FrameSink
) -> Iterator[FrameChunk]:
    """Decode a segment another worker posted and yield its chunks (``segment`` set; no header).

    The posting carries the video's probed facts, so the file is opened once, to decode, and
    not probed again.
    """
    segment = posted.segment
    try:
        windows = clip_windows(posted.info.fps, posted.info.num_frames, posted.info.time_base, settings)
        yield from _segment_chunks(posted.job, posted.info, windows, segment, settings, clips_per_chunk, sink, None)
    except VideoError as error:
        yield FrameChunk(job=posted.job, segment=segment.index, error=str(error), last=True, retryable=False)
    except Exception as error:
        yield FrameChunk(
            job=posted.job, segment=segment.index, error=f"{job.path}: {type(error).__name__}: {error}", last=True
        )


def _segment_chunks(
    job_index: int,
    info: VideoInfo,
    all_windows: list[ClipWindow],
    segment: Segment,
    settings: ClipSettings,
    clips_per_chunk: int,
    sink: FrameSink,
    header: VideoHeader | None,
    opened: OpenVideo | None = None,
    *,
    threads: int = 1,
) -> Iterator[FrameChunk]:
    windows = all_windows[segment.first_clip : segment.stop_clip]
    if not windows:
        yield FrameChunk(job=job_index, segment=segment.index, header=header, last=True)
        return
    assembler = _ClipAssembler(
        job=job_index,
        info=info,
        windows=windows,
        positions=[int(p) for p in window_positions(info.fps, settings)],
        clip_len=settings.clip_len,
        frames_per_chunk=min(FRAMES_PER_CHUNK + settings.clip_len, len(windows) * settings.clip_len),
        segment=segment.index,
        recipe=settings.recipe,
        sink=sink,
        header=header,
    )
    try:
        try:
            frames = decode_frames(info, from_keyframe=segment.seek_pts, opened=opened, threads=threads)
            first = next(frames, None)
        except SeekMissed:  # the container cannot enter there: decode from the start, still exact
            frames = decode_frames(info, threads=threads)
            first = next(frames, None)
        for pts, frame in itertools.chain([first] if first else [], frames):
            assembler.add(pts, frame)
            if assembler.next_clip >= len(windows):
                break
            if len(assembler.ready_clips) >= clips_per_chunk or len(assembler.new_ids) >= FRAMES_PER_CHUNK:
                yield assembler.take_chunk()
        assembler.finish()
    except BaseException:
        if assembler.slab is not None:  # never sent: free it for the next chunk
            sink.release(assembler.slab)
        raise
    yield assembler.take_chunk(last=True)
