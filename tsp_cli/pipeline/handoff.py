"""What decoding workers share with the main process: frame buffers and the list of work.

**Frame slabs.** A chunk of frames' taps (up to ~80 x 150 KB) used to be a fresh tensor
that the DataLoader moved to a new shared-memory file per chunk: the file's creation, its pages
first touched in the worker (~0.3 s of a 60 s 320x240 video, half the decoding floor) and its
descriptor passed over a socket. Instead, each worker owns a few slabs of one shared-memory
block made before the workers start; it transforms frames straight into a free slab and sends
only ``SlabRef(worker, slab, count)``. The main process blends the frames out of it (on its
device) and frees the slab at once, so a worker needs only as many slabs as messages can be in flight (the DataLoader's
prefetch) plus the one it fills. Pages are touched once and then reused.

**Work.** Workers claim videos in order from a shared counter; a worker that splits a long
video into segments (``tsp_cli.pipeline.segments``) posts the other segments in a shared list,
which every worker serves before claiming a new video.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from tsp_cli.pipeline.segments import Segment
from tsp_cli.pipeline.video import VideoInfo

#: A frame in a slab or chunk is its uint8 taps (``FrameTransform.gather``), ``taps_per_frame(recipe)`` of them.
FRAME_DTYPE = torch.uint8


@dataclass(frozen=True)
class SlabRef:
    """``count`` frames in slab ``slab`` of worker ``worker``."""

    worker: int
    slab: int
    count: int


class LocalFrames:
    """Frame buffers of ``taps`` values a frame for decoding in the main process: plain tensors, nothing to hand over."""

    def __init__(self, taps: int):
        self.taps = taps

    def buffer(self, capacity: int) -> tuple[torch.Tensor, SlabRef | None]:
        return torch.empty(capacity, self.taps, dtype=FRAME_DTYPE), None

    def release(self, ref: SlabRef) -> None:  # pragma: no cover - never handed out
        raise AssertionError("local buffers are not slabs")


class SlabPool:
    """``slabs`` reusable shared-memory buffers of ``frames`` frames (``taps`` values each) for each of ``workers`` workers.

    Made in the main process before the workers start, inherited by them (fork); the memory is
    reserved, not touched, until a worker writes a slab.
    """

    def __init__(self, workers: int, slabs: int, frames: int, taps: int):
        self.shape = (workers, slabs, frames, taps)
        storage = torch.UntypedStorage._new_shared(workers * slabs * frames * taps)
        self.frames = torch.empty(0, dtype=FRAME_DTYPE).set_(storage, 0, self.shape)  # type: ignore[call-overload]
        self.busy: Any = multiprocessing.RawArray("b", workers * slabs)
        self.worker: int | None = None  # set in each worker process

    @property
    def frames_per_slab(self) -> int:
        return self.shape[2]

    def buffer(self, capacity: int) -> tuple[torch.Tensor, SlabRef | None]:
        """A free slab of this worker, or a fresh tensor if none is free or ``capacity`` exceeds a slab."""
        assert self.worker is not None, "SlabPool.buffer is for worker processes"
        if capacity <= self.frames_per_slab:
            slabs = self.shape[1]
            first = self.worker * slabs
            for _ in range(200):  # the main process frees a slab as soon as it reads it
                for slab in range(slabs):
                    if not self.busy[first + slab]:
                        self.busy[first + slab] = 1
                        return self.frames[self.worker, slab, :capacity], SlabRef(
                            worker=self.worker, slab=slab, count=0
                        )
                time.sleep(0.001)
        return torch.empty(capacity, self.shape[3], dtype=FRAME_DTYPE), None

    def view(self, ref: SlabRef) -> torch.Tensor:
        return self.frames[ref.worker, ref.slab, : ref.count]

    def release(self, ref: SlabRef) -> None:
        self.busy[ref.worker * self.shape[1] + ref.slab] = 0


@dataclass(frozen=True)
class PostedSegment:
    """A segment of job ``job`` posted for any worker, with its video's probed ``info``: no second probe.

    ``info`` has no keyframes and no pixel format (only the first segment's header reports it).
    """

    job: int
    segment: Segment
    info: VideoInfo


#: Integers of a posted segment: job, index, first clip, stop clip, has a seek point, seek pts,
#: and the video's frames, stream index, time base (numerator, denominator), width and height.
_FIELDS = 12


class WorkList:
    """The order of jobs to claim, and segments of split videos, shared by every worker (fork).

    ``paths[job]`` is each job's file, so that a posted segment comes back with its video's info.
    """

    CAPACITY = 4096

    def __init__(self, order: list[int], workers: int, paths: Sequence[Path]):
        self.order = order
        self.paths = paths
        self.workers = workers
        self.next_position: Any = multiprocessing.Value("i", 0)
        self._ints: Any = multiprocessing.RawArray("q", self.CAPACITY * _FIELDS)
        self._fps: Any = multiprocessing.RawArray("d", self.CAPACITY)
        self._head: Any = multiprocessing.RawValue("i", 0)
        self._tail: Any = multiprocessing.RawValue("i", 0)
        self._probing: Any = multiprocessing.RawValue("i", 0)  # claimed jobs not yet split (or not)

    def claimed(self) -> list[int]:
        """Jobs some worker has started (or finished) so far."""
        return self.order[: min(self.next_position.value, len(self.order))]

    def claim(self) -> int | PostedSegment | None:
        """A posted segment if there is one, else the next job, else ``None`` once no video can post more.

        A worker that claims a job must call :meth:`post` once (with no segments if it splits
        nothing): until then, a worker finding nothing to claim waits, as segments may come.
        """
        while True:
            with self.next_position.get_lock():
                if self._head.value < self._tail.value:
                    slot = self._head.value % self.CAPACITY
                    self._head.value += 1
                    return self._posted(slot)
                position = self.next_position.value
                if position < len(self.order):
                    self.next_position.value += 1
                    self._probing.value += 1
                    return self.order[position]
                if not self._probing.value:
                    return None
            time.sleep(0.002)

    def _posted(self, slot: int) -> PostedSegment:
        job, index, first, stop, has_seek, seek, frames, stream, tb_num, tb_den, width, height = self._ints[
            slot * _FIELDS : (slot + 1) * _FIELDS
        ]
        info = VideoInfo(
            path=self.paths[job],
            stream_index=stream,
            fps=self._fps[slot],
            num_frames=frames,
            time_base=Fraction(tb_num, tb_den),
            width=width,
            height=height,
        )
        segment = Segment(index=index, first_clip=first, stop_clip=stop, seek_pts=seek if has_seek else None)
        return PostedSegment(job=job, segment=segment, info=info)

    def idle_workers(self) -> int:
        """Workers (besides the caller) that would find nothing to claim now."""
        with self.next_position.get_lock():
            waiting = max(0, len(self.order) - self.next_position.value) + self._tail.value - self._head.value
        return max(0, self.workers - 1 - waiting)

    def post_nothing(self) -> None:
        """What a claimed job that failed before deciding posts: no segments, so no worker waits for them."""
        with self.next_position.get_lock():
            self._probing.value -= 1

    def post(self, job: int, info: VideoInfo, segments: Sequence[Segment]) -> bool:
        """Post segments of claimed ``job`` (probed as ``info``) for other workers; ``False`` (nothing posted) if the list is full.

        Called once per claimed job (with no segments if it is not split), or :meth:`post_nothing`.
        """
        with self.next_position.get_lock():
            self._probing.value -= 1
            if self._tail.value - self._head.value + len(segments) > self.CAPACITY:
                return False
            for segment in segments:
                slot = self._tail.value % self.CAPACITY
                seek = segment.seek_pts
                time_base = Fraction(info.time_base)
                self._ints[slot * _FIELDS : (slot + 1) * _FIELDS] = [
                    job,
                    segment.index,
                    segment.first_clip,
                    segment.stop_clip,
                    int(seek is not None),
                    seek or 0,
                    info.num_frames,
                    info.stream_index,
                    time_base.numerator,
                    time_base.denominator,
                    info.width,
                    info.height,
                ]
                self._fps[slot] = info.fps
                self._tail.value += 1
        return True
