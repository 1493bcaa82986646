"""The main process's side of the engine: receive chunks, blend frames, fill batches, run the network, write.

The main process blends each chunk's taps into frames on its device (``transform.blend_frames``),
keeps the frames of each video that clips still need, fills batches with clips from whichever
videos are ready (so batches mix videos and the network is never fed half-empty batches mid-run),
runs the network, and writes each video's features atomically as soon as its last clip is done.
:func:`run_jobs` drives it, and decodes again, one at a time, the videos a crashed worker held.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tsp_cli.errors import OutputError
from tsp_cli.models.registry import FEATURE_DIM
from tsp_cli.parallel import one_torch_thread
from tsp_cli.pipeline import store
from tsp_cli.pipeline.clipper import FRAMES_PER_CHUNK, FrameChunk, Message
from tsp_cli.pipeline.events import (
    ClipProgress,
    ClipsComputed,
    Event,
    RunSummary,
    VideoBegan,
    VideoEnded,
    is_high_bit_depth,
)
from tsp_cli.pipeline.handoff import SlabPool, SlabRef, WorkList
from tsp_cli.pipeline.host_memory import release_kept_memory
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.memory import FittingForward
from tsp_cli.pipeline.network import Network
from tsp_cli.pipeline.sampling import ClipSettings
from tsp_cli.pipeline.sharding import Shard
from tsp_cli.pipeline.transform import blend_frames, taps_per_frame
from tsp_cli.pipeline.truncation import Truncation
from tsp_cli.pipeline.workers import SLABS_PER_WORKER, WorkerSide, decoded_messages, worker_died


@dataclass
class _Video:
    job: VideoJob
    features: np.ndarray
    remaining: int
    fps: float
    num_frames: int
    segments_left: int
    pixel_format: str = ""
    truncated: Truncation | None = None
    frames: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # per segment, by frame id


@contextmanager
def _writing(out_dir: Path, name: str) -> Iterator[None]:
    """A failed write (disk full, permissions) stops the run with one sentence; finished videos stay."""
    try:
        yield
    except OSError as error:
        raise OutputError(
            f"Cannot write the output of {name} in {out_dir} ({error.strerror or error}); "
            "make room or fix the folder, then run the same command again to resume.",
            path=out_dir,
        ) from None


class _Tally:
    """Which jobs were probed or ended, and the clips expected: what :class:`ClipProgress` reports, kept in one place."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.ended: set[int] = set()
        self._probed: set[int] = set()
        #: Jobs neither probed nor ended, counted as they become known: O(1) per progress event, not O(jobs).
        self._unknown = jobs
        #: Clips of the probed videos, computed ones included; a video forgotten takes off those it will not get.
        self.expected = 0

    def probed(self, job: int, clips: int) -> None:
        self._learn(job)
        self._probed.add(job)
        self.expected += clips

    def end(self, job: int) -> None:
        self._learn(job)
        self.ended.add(job)

    def _learn(self, job: int) -> None:
        if job not in self._probed and job not in self.ended:
            self._unknown -= 1

    def progress(self, computed: int) -> ClipProgress:
        return ClipProgress(computed=computed, expected=self.expected, probed=len(self._probed), unprobed=self._unknown)


class _Engine:
    """The main process's side: receives chunks, fills batches, runs the network, writes finished videos."""

    def __init__(
        self,
        *,
        jobs: list[VideoJob],
        out_dir: Path,
        model: nn.Module | None,
        settings: ClipSettings,
        device: torch.device,
        batch_size: int,
        precision: str,
        shard: Shard,
        emit: Callable[[Event], None],
    ):
        self.jobs = jobs
        self.shard = shard
        self.out_dir = out_dir
        self.settings = settings
        self.device = device
        self.batch_size = batch_size
        self.dry_run = model is None
        self.emit = emit
        self.slabs: SlabPool | None = None  # the current decoding group's shared frame slabs
        self.videos: dict[int, _Video] = {}
        self.early: dict[int, list[tuple[FrameChunk, torch.Tensor | None]]] = {}
        self.tally = _Tally(len(jobs))
        self.pending: list[tuple[int, int, list[torch.Tensor]]] = []
        # The model in the memory format its device runs fastest, and the batch buffer in the same layout.
        self.network = Network(
            model,
            device=device,
            precision=precision,
            batch_size=batch_size,
            clip_len=settings.clip_len,
            crop=settings.recipe.crop,
        )
        self.fitting = FittingForward(self._forward, batch_size, device, on_split=self.network.shrink_batches)
        self.summary = RunSummary()

    def handle(self, chunk: Message) -> None:
        frames = self._receive_frames(chunk)
        job = chunk.job
        if job in self.tally.ended:
            return
        if chunk.error is not None:
            self.fail(job, chunk.error, retryable=chunk.retryable)
            return
        if chunk.header is not None:
            header = chunk.header
            self.videos[job] = _Video(
                job=self.jobs[job],
                features=np.zeros((header.num_clips, FEATURE_DIM), np.float32),
                remaining=header.num_clips,
                fps=header.fps,
                num_frames=header.num_frames,
                segments_left=header.segments,
                pixel_format=header.pixel_format,
                truncated=header.truncated,
            )
            self.tally.probed(job, header.num_clips)
            self.emit(VideoBegan(name=self.jobs[job].name, clips=header.num_clips))
            self._emit_progress()
        video = self.videos.get(job)
        if video is None:  # a segment overtook its video's first chunk
            self.early.setdefault(job, []).append((chunk, frames))
            return
        self._add_chunk(video, chunk, frames)
        for early, early_frames in self.early.pop(job, []):
            self._add_chunk(video, early, early_frames)

    def _receive_frames(self, chunk: FrameChunk) -> torch.Tensor | None:
        """The chunk's frames, blended on the device from their taps; a slab is freed for its worker at once."""
        if isinstance(chunk.frames, SlabRef):
            assert self.slabs is not None
            try:
                return self._blend(self.slabs.view(chunk.frames).to(self.device), chunk)
            finally:
                self.slabs.release(chunk.frames)
        if chunk.frames is None:
            return None
        return self._blend(chunk.frames.to(self.device, non_blocking=True), chunk)

    def _blend(self, taps: torch.Tensor, chunk: FrameChunk) -> torch.Tensor:
        # Frames in the layout of the batches they will be copied into (the network's).
        channels_last = self.network.memory_format == "channels_last_3d"
        if taps.device.type != "cpu":
            return blend_frames(taps, chunk.frame_sizes, self.settings.recipe, channels_last=channels_last)
        with one_torch_thread():  # the decoding workers have the cores
            return blend_frames(taps, chunk.frame_sizes, self.settings.recipe, channels_last=channels_last)

    def _add_chunk(self, video: _Video, chunk: FrameChunk, frames: torch.Tensor | None) -> None:
        job = chunk.job
        kept = video.frames.setdefault(chunk.segment, {})
        if chunk.frame_ids:
            assert frames is not None
            kept.update(zip(chunk.frame_ids, frames, strict=True))
        for clip_index, frame_ids in chunk.clips:
            self.pending.append((job, clip_index, [kept[i] for i in frame_ids]))
        for stale in [i for i in kept if i < chunk.keep_from]:
            del kept[stale]
        if chunk.last:
            del video.frames[chunk.segment]
            video.segments_left -= 1
        while len(self.pending) >= self.batch_size:
            self.run_batch()
        if job in self.videos:
            self._finish_if_complete(job)

    def run_batch(self) -> None:
        clips, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        if not clips:
            return
        rows = self.fitting(clips)  # split into smaller forward passes if the batch does not fit
        touched = set()
        for (job, clip_index, _), row in zip(clips, rows, strict=True):
            video = self.videos[job]
            video.features[clip_index] = row
            video.remaining -= 1
            touched.add(job)
        self.summary.clips += len(clips)
        self.emit(ClipsComputed(count=len(clips)))
        self._emit_progress()
        for job in touched:
            self._finish_if_complete(job)

    def _forward(self, clips: Sequence[tuple[int, int, list[torch.Tensor]]]) -> np.ndarray:
        """The features of ``clips``, stacked into the batch buffer and run through the network."""
        batch = self.network.batch_buffer(len(clips))
        if batch.device.type == "cpu":
            # numpy copies on this thread alone: torch's intra-op threads would compete with the
            # decoding workers for the same cores and wait on each other (measured 40 ms a clip).
            rows = batch.numpy()
            for row, (_, _, frames) in zip(rows, clips, strict=True):
                np.stack([frame.numpy() for frame in frames], axis=1, out=row)
        else:
            for row, (_, _, frames) in zip(batch, clips, strict=True):
                torch.stack(frames, dim=1, out=row)
        return self.network.features(batch)

    def _emit_progress(self) -> None:
        self.emit(self.tally.progress(self.summary.clips))

    def _finish_if_complete(self, job: int) -> None:
        video = self.videos[job]
        if video.segments_left > 0 or video.remaining > 0:
            return
        del self.videos[job]
        self.tally.end(job)
        name, clips = video.job.name, len(video.features)
        if not self.dry_run:
            with _writing(self.out_dir, name):
                # The features first: a record never claims a video whose file is missing.
                store.save_features(self.out_dir, name, video.features)
                store.record_video(
                    self.out_dir,
                    {
                        "video": name,
                        "path": str(video.job.path),
                        "fps": video.fps,
                        "num_frames": video.num_frames,
                        "pixel_format": video.pixel_format,
                        "clips": clips,
                        "shard": str(self.shard),
                        **(video.truncated.record() if video.truncated else {}),
                    },
                )
        if clips:
            self.summary.done += 1
        else:
            self.summary.no_clips_names.append(name)
        if is_high_bit_depth(video.pixel_format):
            self.summary.high_bit_depth.append((name, video.pixel_format))
        if video.truncated:
            self.summary.truncated.append((name, video.truncated.declared_seconds, video.truncated.decoded_seconds))
        self.emit(VideoEnded(name=name, outcome="done" if clips else "no clips", clips=clips))
        self._emit_progress()

    def fully_received(self, job: int) -> bool:
        """Whether every message of the video arrived (it ended, or only waits for its clips' batches)."""
        return job in self.tally.ended or (job in self.videos and self.videos[job].segments_left == 0)

    def forget(self, job: int, *, redone: bool = False) -> None:
        """Drop what was received of a video whose decoding will start again (``redone``) or never finish.

        The clips it will never get are taken off those expected. A video decoded again counts
        all its clips again, so those computed for it so far are taken off both counts: each
        clip is counted once, however often a crash made it be computed.
        """
        video = self.videos.pop(job, None)
        self.early.pop(job, None)
        if video is not None:
            computed = len(video.features) - video.remaining
            self.tally.expected -= video.remaining + (computed if redone else 0)
            self.summary.clips -= computed if redone else 0
        self.pending = [clip for clip in self.pending if clip[0] != job]

    def fail(self, job: int, error: str, *, retryable: bool = True) -> None:
        self.forget(job)
        self.tally.end(job)
        name = self.jobs[job].name
        if not self.dry_run:
            with _writing(self.out_dir, name):
                store.record_failure(
                    self.out_dir, name, str(self.jobs[job].path), error, shard=str(self.shard), retryable=retryable
                )
        self.summary.failures.append((name, error))
        self.summary.retryable_failures += retryable
        self.emit(VideoEnded(name=name, outcome="failed", clips=0, error=error))
        self._emit_progress()


def run_jobs(
    jobs: Sequence[VideoJob],
    out_dir: Path,
    model: nn.Module | None,
    settings: ClipSettings = ClipSettings(),
    *,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 32,
    workers: int = 0,
    precision: str = "fp32",
    shard: Shard = Shard(),
    on_event: Callable[[Event], None] | None = None,
) -> RunSummary:
    """Extract ``jobs`` into ``out_dir`` with ``model`` (``None``: a dry run that only assembles batches).

    ``shard`` is only recorded with each finished or failed video, for ``tsp status``.
    """
    emit = on_event or (lambda event: None)
    if model is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    engine = _Engine(
        jobs=list(jobs),
        out_dir=Path(out_dir),
        model=model,
        settings=settings,
        device=device,
        batch_size=batch_size,
        precision=precision,
        shard=shard,
        emit=emit,
    )
    started = time.perf_counter()
    waited = 0.0
    clips_per_chunk = max(1, min(32, batch_size))
    # Groups of jobs to decode, with their worker count. After a worker crash, the videos it
    # may have been reading are decoded again one at a time, which pins the crash on one file.
    groups = deque([(list(range(len(engine.jobs))), workers)] if engine.jobs else [])
    while groups:
        order, group_workers = groups.popleft()
        work = WorkList(order, max(group_workers, 1), [job.path for job in engine.jobs])
        slabs = (
            SlabPool(
                workers=group_workers,
                slabs=SLABS_PER_WORKER,
                frames=FRAMES_PER_CHUNK + settings.clip_len,
                taps=taps_per_frame(settings.recipe),
            )
            if group_workers
            else None
        )
        dataset = WorkerSide(
            jobs=engine.jobs, work=work, settings=settings, clips_per_chunk=clips_per_chunk, slabs=slabs
        )
        engine.slabs = slabs
        if group_workers:
            release_kept_memory()  # the workers fork next: kept heap pages would be copied on write
        messages = decoded_messages(dataset, workers=group_workers, pin_memory=device.type == "cuda")
        try:
            while True:
                before = time.perf_counter()
                message = next(messages, None)
                waited += time.perf_counter() - before
                if message is None:
                    break
                engine.handle(message)
        except RuntimeError as error:
            if not worker_died(error):
                raise
            crash = str(error).splitlines()[0]
            # Videos whose messages all arrived are not in flight: their clips may still wait for a batch.
            in_flight = [job for job in work.claimed() if not engine.fully_received(job)]
            for job in in_flight:
                engine.forget(job, redone=len(order) > 1)  # a group of one is not decoded again
            if len(order) == 1:
                # Alone in its group: the crash is this video's, unless it had already finished.
                if order[0] in in_flight:
                    engine.fail(order[0], f"{engine.jobs[order[0]].path}: the decoder crashed on this file ({crash}).")
            else:
                groups.extend(([job], 1) for job in in_flight)
            unclaimed = order[len(work.claimed()) :]
            if unclaimed:
                groups.appendleft((unclaimed, group_workers))
    while engine.pending:
        engine.run_batch()
    summary = engine.summary
    summary.batch_split_to = engine.fitting.limit if engine.fitting.split else 0
    summary.wall_seconds = time.perf_counter() - started
    summary.data_wait_seconds = waited
    return summary
