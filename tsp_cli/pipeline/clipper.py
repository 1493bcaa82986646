"""One video in, a stream of messages out: transformed frames and the clips made of them.

This runs in the decoding workers. It decodes the video once, in order, and keeps only the
frames that a clip still to come can use (a window of about ``clip_len / frame_rate`` seconds),
so memory does not grow with the video. A frame is converted to RGB and transformed only when
a clip first selects it, and then never again however many overlapping clips share it; each
transformed frame is sent to the main process once, and clips are sent as lists of frame ids.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import av
import torch

from tsp_cli.errors import VideoError
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.sampling import ClipSettings, ClipWindow, clip_windows, window_positions
from tsp_cli.pipeline.transform import CROP_SIZE, FrameTransform
from tsp_cli.pipeline.video import VideoInfo, decode_frames, probe


@dataclass
class VideoStarted:
    """The video was probed; ``num_clips`` clips will follow (none for a video shorter than a clip)."""

    job: int
    fps: float
    num_frames: int
    num_clips: int
    pixel_format: str = ""


@dataclass
class FrameChunk:
    """New transformed frames (``frame_ids[i]`` is ``frames[i]``) and the clips that are now complete.

    ``keep_from``: frames with a smaller id will never be used again and can be dropped.
    """

    job: int
    frame_ids: list[int]
    frames: torch.Tensor
    clips: list[tuple[int, list[int]]]
    keep_from: int

    def pin_memory(self) -> FrameChunk:
        """Called by the DataLoader's pinning thread so that copies to the GPU can overlap compute."""
        self.frames = self.frames.pin_memory()
        return self


@dataclass
class VideoFinished:
    """The video is done; ``error`` says why it failed, if it did (its earlier clips are void).

    ``retryable``: whether trying again may help. A :class:`VideoError` is the file itself (not a
    video, no stream, breaks at the same frame every time), so it is not; anything unexpected is.
    """

    job: int
    error: str | None = None
    retryable: bool = True
    decoded_frames: int = 0


Message = VideoStarted | FrameChunk | VideoFinished


@dataclass
class _Buffered:
    pts: int
    id: int
    frame: av.VideoFrame | None  # the decoded frame, dropped once transformed
    transformed: bool = False


@lru_cache(maxsize=8)
def _transform_for(height: int, width: int) -> FrameTransform:
    return FrameTransform.for_size(height, width)


@dataclass
class _ClipAssembler:
    """The single-pass state for one video: the frame buffer and what is waiting to be sent."""

    job: int
    info: VideoInfo
    windows: list[ClipWindow]
    positions: list[int]
    clip_len: int
    frames_per_chunk: int
    buffer: list[_Buffered] = field(default_factory=list)
    next_clip: int = 0
    next_id: int = 0
    new_ids: list[int] = field(default_factory=list)
    new_frames: torch.Tensor | None = None
    ready_clips: list[tuple[int, list[int]]] = field(default_factory=list)

    def add(self, pts: int, frame: av.VideoFrame) -> None:
        """Add a decoded frame; frames sharing a pts keep only the last one, as the reference's dict does."""
        entry = _Buffered(pts, self.next_id, frame)
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
            self._transform(entry)
        self.ready_clips.append((window.index, [entry.id for entry in chosen]))

    def _transform(self, entry: _Buffered) -> None:
        """Transform a frame into the next slot of the chunk being filled, once ever."""
        if entry.transformed:
            return
        if self.new_frames is None:
            self.new_frames = torch.empty(self.frames_per_chunk, 3, CROP_SIZE, CROP_SIZE)
        elif len(self.new_ids) == len(self.new_frames):  # one frame completed many clips at once
            grown = torch.empty(2 * len(self.new_frames), 3, CROP_SIZE, CROP_SIZE)
            grown[: len(self.new_ids)] = self.new_frames
            self.new_frames = grown
        assert entry.frame is not None  # a frame is dropped only once transformed
        rgb = entry.frame.to_ndarray(format="rgb24")
        _transform_for(rgb.shape[0], rgb.shape[1])(rgb, out=self.new_frames[len(self.new_ids)])
        entry.frame, entry.transformed = None, True
        self.new_ids.append(entry.id)

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

    def take_chunk(self) -> FrameChunk:
        keep_from = self.buffer[0].id if self.buffer else self.next_id
        if self.new_frames is None:
            frames = torch.empty(0, 3, CROP_SIZE, CROP_SIZE)
        else:  # a copy of just the new frames; the working buffer is reused for the next chunk
            frames = self.new_frames[: len(self.new_ids)].clone()
        chunk = FrameChunk(self.job, self.new_ids, frames, self.ready_clips, keep_from)
        self.new_ids, self.ready_clips = [], []
        return chunk


#: A chunk goes out once it holds this many new frames (about 10 MB of float32 pixels).
FRAMES_PER_CHUNK = 64


def video_messages(
    job_index: int, job: VideoJob, settings: ClipSettings, *, clips_per_chunk: int = 32
) -> Iterator[Message]:
    """Decode one video and yield its messages; any failure ends it with ``VideoFinished(error=...)``.

    A chunk goes out once it holds ``FRAMES_PER_CHUNK`` new frames or ``clips_per_chunk``
    complete clips: few enough messages that passing them costs little (dense strides make
    a clip per frame), soon enough that batches fill without waiting for whole videos.
    """
    decoded = 0
    try:
        info = probe(job.path, num_frames=job.num_frames, fps=job.fps)
        windows = clip_windows(info.fps, info.num_frames, info.time_base, settings)
        yield VideoStarted(job_index, info.fps, info.num_frames, len(windows), info.pixel_format)
        if windows:
            assembler = _ClipAssembler(
                job_index,
                info,
                windows,
                [int(p) for p in window_positions(info.fps, settings)],
                settings.clip_len,
                frames_per_chunk=FRAMES_PER_CHUNK + settings.clip_len,
            )
            for pts, frame in decode_frames(info):
                decoded += 1
                assembler.add(pts, frame)
                if len(assembler.ready_clips) >= clips_per_chunk or len(assembler.new_ids) >= FRAMES_PER_CHUNK:
                    yield assembler.take_chunk()
                if assembler.next_clip >= len(windows):
                    break
            assembler.finish()
            yield assembler.take_chunk()
        yield VideoFinished(job_index, decoded_frames=decoded)
    except VideoError as error:
        yield VideoFinished(job_index, error=str(error), retryable=False, decoded_frames=decoded)
    except Exception as error:  # a damaged file must never stop the other videos
        yield VideoFinished(job_index, error=f"{job.path}: {type(error).__name__}: {error}", decoded_frames=decoded)
