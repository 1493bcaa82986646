"""The decoding side of the engine: each worker claims a video (or a posted segment of one) and sends its chunks.

Every failure of a video becomes an error chunk; what stops a worker is its process dying, which
the main process notices through the DataLoader (:func:`worker_died`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tsp_cli.pipeline.clipper import (
    MIN_SEGMENT_SECONDS,
    Decoding,
    FrameSink,
    Message,
    segment_messages,
    video_messages,
)
from tsp_cli.pipeline.handoff import LocalFrames, PostedSegment, SlabPool, WorkList
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.sampling import ClipSettings, ClipWindow
from tsp_cli.pipeline.segments import split_video, whole_video
from tsp_cli.pipeline.transform import taps_per_frame
from tsp_cli.pipeline.video import VideoInfo

#: Slabs per worker: the DataLoader's prefetch (messages in flight) plus the one being filled.
PREFETCH = 4
SLABS_PER_WORKER = PREFETCH + 2
#: Frames at least this large (640x360) decode faster with FFmpeg's threads on cores that are idle.
THREADED_DECODE_MIN_PIXELS = 640 * 360


class WorkerSide(IterableDataset):
    """The chunks of the jobs in ``work``; each worker claims the next posted segment or unclaimed job.

    Every failure of a video becomes an error chunk; what stops a worker is its process dying.
    """

    def __init__(
        self,
        *,
        jobs: Sequence[VideoJob],
        work: WorkList,
        settings: ClipSettings,
        clips_per_chunk: int,
        slabs: SlabPool | None,
    ):
        self.jobs = jobs
        self.work = work
        self.settings = settings
        self.clips_per_chunk = clips_per_chunk
        self.slabs = slabs

    def __iter__(self) -> Iterator[Message]:
        sink: FrameSink = LocalFrames(taps_per_frame(self.settings.recipe))
        worker = get_worker_info()
        if worker is not None:
            torch.set_num_threads(1)
            if self.slabs is not None:
                self.slabs.worker = worker.id
                sink = self.slabs
        while (item := self.work.claim()) is not None:
            if isinstance(item, PostedSegment):
                yield from segment_messages(
                    self.jobs[item.job], item, self.settings, clips_per_chunk=self.clips_per_chunk, sink=sink
                )
            else:
                yield from self._video(item, sink)

    def _video(self, job: int, sink: FrameSink) -> Iterator[Message]:
        scheduler = SharedScheduler(self.work, job)
        try:
            yield from video_messages(
                job,
                self.jobs[job],
                self.settings,
                clips_per_chunk=self.clips_per_chunk,
                sink=sink,
                scheduler=scheduler,
            )
        finally:
            if not scheduler.decided:  # it failed before deciding: other workers must not wait for its segments
                self.work.post_nothing()


class SharedScheduler:
    """How a probed video shares the workers: split over idle ones, or decoded with FFmpeg threads on idle cores."""

    def __init__(self, work: WorkList, job: int):
        self.work = work
        self.job = job
        self.decided = False

    def share(self, info: VideoInfo, windows: list[ClipWindow]) -> Decoding:
        """Post the segments after the first for other workers (all of it stays here if the list is full)."""
        self.decided = True
        segments = split_video(info, windows, self.segments_for(info, len(windows)))
        if not self.work.post(self.job, info, segments[1:]):
            segments = [whole_video(len(windows))]
        return Decoding(segment=segments[0], segments=len(segments), threads=self.decoder_threads(info, len(segments)))

    def segments_for(self, info: VideoInfo, clips: int) -> int:
        """Split a video only when some worker would otherwise sit idle, into segments of 10 s or more."""
        idle = self.work.idle_workers()
        if idle == 0 or clips < 2:
            return 1
        seconds = info.num_frames / info.fps
        return max(1, min(2 * (idle + 1), int(seconds // MIN_SEGMENT_SECONDS)))

    def decoder_threads(self, info: VideoInfo, segments: int) -> int:
        """FFmpeg threads for a video: one while every worker has work, idle workers' cores for a large frame.

        A split video already spreads over the idle workers, so only a video too short to split
        (the last ones of a shard) may take FFmpeg's slice threads. Measured alone on 2 cores,
        H.264, 1 thread vs 2: 1280x720 0.82 s vs 1.31 s, 640x360 0.19-0.23 s vs 0.26-0.28 s,
        480x360 and 320x240 no faster (and 45% more CPU at 320x240).
        """
        if segments > 1 or info.width * info.height < THREADED_DECODE_MIN_PIXELS:
            return 1
        return 1 + self.work.idle_workers()


def worker_died(error: RuntimeError) -> bool:
    """Whether ``error`` is the DataLoader reporting a dead worker (FFmpeg can crash outright on a damaged file).

    torch raises a plain ``RuntimeError`` for it, from its loader or from its SIGCHLD handler
    (which can interrupt the main process anywhere), with no type of its own; so we look at
    where it was raised: inside ``torch.utils.data``. The workers' own code never raises.
    """
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and str(traceback.tb_frame.f_globals.get("__name__", "")).startswith(
        "torch.utils.data"
    )


def _without_sigchld_handler(loader: DataLoader) -> Iterator[Message]:
    """Iterate ``loader`` with torch's SIGCHLD handler taken out again.

    That handler raises in the main thread wherever it happens to be, in the middle of a forward
    pass or a feature write, as soon as a worker dies. Without it, the loader notices the death
    inside its own ``next`` (within its 5 s status check), after every message already received,
    so a crash only ever costs the videos that were really in flight.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGCHLD) if in_main_thread else None
    iterator = iter(loader)
    if in_main_thread:
        signal.signal(signal.SIGCHLD, before)
    yield from iterator


def decoded_messages(dataset: WorkerSide, *, workers: int, pin_memory: bool) -> Iterator[Message]:
    if workers == 0:
        yield from dataset
        return
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        in_order=False,
        prefetch_factor=PREFETCH,
    )
    yield from _without_sigchld_handler(loader)
