"""The extraction engine: workers decode, the main process batches clips and runs the network.

Each video is decoded once, in order, by one worker process (``clipper``), or, when workers
would otherwise sit idle, in keyframe-aligned segments by several (``segments``); a worker sends
each used frame once, as the uint8 taps of the recipe's resize and crop, through reused
shared-memory slabs (``handoff``), and clips as lists of frame ids. The main process blends the
taps into frames on its device (``transform.blend_frames``), keeps the frames of
each video that clips still need, fills batches with clips from whichever videos are ready
(so batches mix videos and the network is never fed half-empty batches mid-run), runs the
network, and writes each video's features atomically as soon as its last clip is done.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tsp_cli import __version__
from tsp_cli.atomic import folder_problem
from tsp_cli.errors import OutputError, UsageError
from tsp_cli.models.registry import FEATURE_DIM
from tsp_cli.parallel import default_workers, one_torch_thread
from tsp_cli.pipeline import store
from tsp_cli.pipeline.clipper import (
    FRAMES_PER_CHUNK,
    MIN_SEGMENT_SECONDS,
    FrameChunk,
    FrameSink,
    Message,
    segment_messages,
    video_messages,
)
from tsp_cli.pipeline.devices import resolve_device
from tsp_cli.pipeline.handoff import LocalFrames, PostedSegment, SlabPool, SlabRef, WorkList
from tsp_cli.pipeline.inputs import VideoJob, plan_shard_jobs
from tsp_cli.pipeline.precision import PRECISIONS, autocast_dtype, float32_math
from tsp_cli.pipeline.sampling import ClipSettings
from tsp_cli.pipeline.sharding import Shard
from tsp_cli.pipeline.transform import CROP_SIZE, blend_frames
from tsp_cli.pipeline.video import VideoInfo


def is_high_bit_depth(pixel_format: str) -> bool:
    """More than 8 bits per sample (10-bit HEVC, for example): swscale converts those to RGB by
    another path, whose results differ between FFmpeg builds (8-bit ones are bit-identical)."""
    import av

    try:
        return max(component.bits for component in av.VideoFormat(pixel_format).components) > 8
    except (ValueError, av.FFmpegError):
        return False


# ---- events the engine reports (the CLI renders them; the core never prints) -------------


@dataclass(frozen=True)
class RunStarted:
    videos: int
    to_do: int
    skipped: int
    workers: int
    device: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VideoBegan:
    name: str
    clips: int


@dataclass(frozen=True)
class ClipsComputed:
    count: int


@dataclass(frozen=True)
class VideoEnded:
    name: str
    outcome: str  # "done", "no clips" or "failed"
    clips: int
    error: str | None = None


@dataclass(frozen=True)
class ClipProgress:
    """Where the run stands in clips, sent after every change (a video probed, a batch computed, a video ended).

    ``expected`` counts the clips of the videos probed so far (computed ones included; those a
    failed video will never get are taken off); the clips of the ``unprobed`` videos are not
    known yet. :attr:`estimated_total` extrapolates them from the probed videos.
    """

    computed: int
    expected: int
    probed: int
    unprobed: int

    @property
    def estimated_total(self) -> int:
        if not self.unprobed:
            return self.expected
        if not self.probed:
            return max(self.expected, self.computed)
        return self.expected + round(self.unprobed * self.expected / self.probed)


Event = RunStarted | VideoBegan | ClipsComputed | VideoEnded | ClipProgress


@dataclass
class RunSummary:
    """What a run did; ``exit_code`` is 1 when any video failed."""

    videos: int = 0
    done: int = 0
    skipped: int = 0
    no_clips: int = 0
    failed: int = 0
    clips: int = 0
    wall_seconds: float = 0.0
    data_wait_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: How many of the failures another attempt may cure (a crash, an unexpected error); the others are the files'.
    retryable_failures: int = 0
    #: Names of the videos shorter than one clip (0 x 512 arrays).
    no_clips_names: list[str] = field(default_factory=list)
    #: ``(name, pixel format)`` of videos with more than 8 bits per sample, whose features depend on the FFmpeg build.
    high_bit_depth: list[tuple[str, str]] = field(default_factory=list)

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def data_wait_share(self) -> float:
        """Share of the run the main process (and so the network) spent waiting for decoded clips."""
        return self.data_wait_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---- the decoding side -------------------------------------------------------------------

#: Slabs per worker: the DataLoader's prefetch (messages in flight) plus the one being filled.
PREFETCH = 4
SLABS_PER_WORKER = PREFETCH + 2
#: Frames at least this large (640x360) decode faster with FFmpeg's threads on cores that are idle.
THREADED_DECODE_MIN_PIXELS = 640 * 360


class _WorkerSide(IterableDataset):
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
        sink: FrameSink = LocalFrames()
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
        posted = False

        def post(segments: list[PostedSegment]) -> bool:
            nonlocal posted
            posted = True
            return self.work.post(segments)

        try:
            yield from video_messages(
                job,
                self.jobs[job],
                self.settings,
                clips_per_chunk=self.clips_per_chunk,
                sink=sink,
                split=self._segments_for,
                post=post,
                decoder_threads=self._decoder_threads,
            )
        finally:
            if not posted:  # it failed before deciding: other workers must not wait for its segments
                self.work.post([])

    def _segments_for(self, info: VideoInfo, clips: int) -> int:
        """Split a video only when some worker would otherwise sit idle, into segments of 10 s or more."""
        idle = self.work.idle_workers()
        if idle == 0 or clips < 2:
            return 1
        seconds = info.num_frames / info.fps
        return max(1, min(2 * (idle + 1), int(seconds // MIN_SEGMENT_SECONDS)))

    def _decoder_threads(self, info: VideoInfo, segments: int) -> int:
        """FFmpeg threads for a video: one while every worker has work, idle workers' cores for a large frame.

        A split video already spreads over the idle workers, so only a video too short to split
        (the last ones of a shard) may take FFmpeg's slice threads. Measured alone on 2 cores,
        H.264, 1 thread vs 2: 1280x720 0.82 s vs 1.31 s, 640x360 0.19-0.23 s vs 0.26-0.28 s,
        480x360 and 320x240 no faster (and 45% more CPU at 320x240).
        """
        if segments > 1 or info.width * info.height < THREADED_DECODE_MIN_PIXELS:
            return 1
        return 1 + self.work.idle_workers()


def _worker_died(error: RuntimeError) -> bool:
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


def _messages(dataset: _WorkerSide, *, workers: int, pin_memory: bool) -> Iterator[Message]:
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


# ---- the network side --------------------------------------------------------------------


@dataclass
class _Video:
    job: VideoJob
    features: np.ndarray
    remaining: int
    fps: float
    num_frames: int
    segments_left: int
    pixel_format: str = ""
    frames: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # per segment, by frame id


@contextmanager
def _writing(out_dir: Path, name: str) -> Iterator[None]:
    """A failed write (disk full, permissions) stops the run with one sentence; finished videos stay."""
    try:
        yield
    except OSError as error:
        raise OutputError(
            f"Cannot write the output of {name} in {out_dir} ({error.strerror or error}); "
            "make room or fix the folder, then run the same command again to resume."
        ) from None


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
        self.model = model
        self.settings = settings
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.autocast_dtype = autocast_dtype(precision)
        self.dry_run = model is None
        self.emit = emit
        self.slabs: SlabPool | None = None  # the current decoding group's shared frame slabs
        self.videos: dict[int, _Video] = {}
        self.early: dict[int, list[tuple[FrameChunk, torch.Tensor | None]]] = {}
        self.ended: set[int] = set()
        self.probed: set[int] = set()
        #: Jobs probed or ended, so that the unprobed count is O(1) per progress event, not O(jobs).
        self.known: set[int] = set()
        self.clips_expected = 0
        self.pending: list[tuple[int, int, list[torch.Tensor]]] = []
        # One batch tensor reused for every batch: allocating ~77 MB per batch costs more in
        # page faults than filling it does.
        self.batch_buffer = torch.empty(
            (batch_size, 3, settings.clip_len, CROP_SIZE, CROP_SIZE), dtype=torch.float32, device=device
        )
        self.summary = RunSummary()

    def handle(self, chunk: Message) -> None:
        frames = self._receive_frames(chunk)
        job = chunk.job
        if job in self.ended:
            return
        if chunk.error is not None:
            self.fail(job, chunk.error, retryable=chunk.retryable)
            return
        if chunk.header is not None:
            header = chunk.header
            self.videos[job] = _Video(
                self.jobs[job],
                np.zeros((header.num_clips, FEATURE_DIM), np.float32),
                header.num_clips,
                header.fps,
                header.num_frames,
                header.segments,
                header.pixel_format,
            )
            self.probed.add(job)
            self.known.add(job)
            self.clips_expected += header.num_clips
            self.emit(VideoBegan(self.jobs[job].name, header.num_clips))
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
        if taps.device.type != "cpu":
            return blend_frames(taps, chunk.frame_sizes)
        with one_torch_thread():  # the decoding workers have the cores
            return blend_frames(taps, chunk.frame_sizes)

    def _add_chunk(self, video: _Video, chunk: FrameChunk, frames: torch.Tensor | None) -> None:
        job = chunk.job
        store = video.frames.setdefault(chunk.segment, {})
        if chunk.frame_ids:
            assert frames is not None
            store.update(zip(chunk.frame_ids, frames, strict=True))
        for clip_index, frame_ids in chunk.clips:
            self.pending.append((job, clip_index, [store[i] for i in frame_ids]))
        for stale in [i for i in store if i < chunk.keep_from]:
            del store[stale]
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
        batch = self.batch_buffer[: len(clips)]
        if batch.device.type == "cpu":
            # numpy copies on this thread alone: torch's intra-op threads would compete with the
            # decoding workers for the same cores and wait on each other (measured 40 ms a clip).
            rows = batch.numpy()
            for row, (_, _, frames) in zip(rows, clips, strict=True):
                np.stack([frame.numpy() for frame in frames], axis=1, out=row)
        else:
            for row, (_, _, frames) in zip(batch, clips, strict=True):
                torch.stack(frames, dim=1, out=row)
        if self.model is None:
            rows = np.zeros((len(clips), FEATURE_DIM), np.float32)
        else:
            with (
                torch.inference_mode(),
                torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None),
                float32_math(self.precision),
            ):
                rows = self.model(batch).float().cpu().numpy()
        touched = set()
        for (job, clip_index, _), row in zip(clips, rows, strict=True):
            video = self.videos[job]
            video.features[clip_index] = row
            video.remaining -= 1
            touched.add(job)
        self.summary.clips += len(clips)
        self.emit(ClipsComputed(len(clips)))
        self._emit_progress()
        for job in touched:
            self._finish_if_complete(job)

    def _emit_progress(self) -> None:
        unprobed = len(self.jobs) - len(self.known)
        self.emit(ClipProgress(self.summary.clips, self.clips_expected, len(self.probed), unprobed))

    def _finish_if_complete(self, job: int) -> None:
        video = self.videos[job]
        if video.segments_left > 0 or video.remaining > 0:
            return
        del self.videos[job]
        self.ended.add(job)
        self.known.add(job)
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
                    },
                )
        if clips:
            self.summary.done += 1
        else:
            self.summary.no_clips += 1
            self.summary.no_clips_names.append(name)
        if is_high_bit_depth(video.pixel_format):
            self.summary.high_bit_depth.append((name, video.pixel_format))
        self.emit(VideoEnded(name, "done" if clips else "no clips", clips))
        self._emit_progress()

    def fully_received(self, job: int) -> bool:
        """Whether every message of the video arrived (it ended, or only waits for its clips' batches)."""
        return job in self.ended or (job in self.videos and self.videos[job].segments_left == 0)

    def forget(self, job: int) -> None:
        """Drop what was received of a video whose decoding will start again (or never finish)."""
        video = self.videos.pop(job, None)
        self.early.pop(job, None)
        if video is not None:
            self.clips_expected -= video.remaining  # its clips not computed yet; a restart counts them again
        self.pending = [clip for clip in self.pending if clip[0] != job]

    def fail(self, job: int, error: str, *, retryable: bool = True) -> None:
        self.forget(job)
        self.ended.add(job)
        self.known.add(job)
        name = self.jobs[job].name
        if not self.dry_run:
            with _writing(self.out_dir, name):
                store.record_failure(
                    self.out_dir, name, str(self.jobs[job].path), error, shard=str(self.shard), retryable=retryable
                )
        self.summary.failed += 1
        self.summary.failures.append((name, error))
        self.summary.retryable_failures += retryable
        self.emit(VideoEnded(name, "failed", 0, error))
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
        work = WorkList(order, max(group_workers, 1))
        slabs = (
            SlabPool(group_workers, SLABS_PER_WORKER, FRAMES_PER_CHUNK + settings.clip_len) if group_workers else None
        )
        dataset = _WorkerSide(
            jobs=engine.jobs, work=work, settings=settings, clips_per_chunk=clips_per_chunk, slabs=slabs
        )
        engine.slabs = slabs
        messages = _messages(dataset, workers=group_workers, pin_memory=device.type == "cuda")
        try:
            while True:
                before = time.perf_counter()
                message = next(messages, None)
                waited += time.perf_counter() - before
                if message is None:
                    break
                engine.handle(message)
        except RuntimeError as error:
            if not _worker_died(error):
                raise
            crash = str(error).splitlines()[0]
            # Videos whose messages all arrived are not in flight: their clips may still wait for a batch.
            in_flight = [job for job in work.claimed() if not engine.fully_received(job)]
            for job in in_flight:
                engine.forget(job)
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
    summary.wall_seconds = time.perf_counter() - started
    summary.data_wait_seconds = waited
    return summary


# ---- the public entry point -------------------------------------------------------------------


def tool_versions() -> dict[str, str]:
    """Versions recorded in the manifest, for the record (they do not block a rerun)."""
    import av
    import torchvision

    return {
        "tsp": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "av": av.__version__,
        "ffmpeg": str(getattr(av, "ffmpeg_version_info", "unknown")),
    }


@dataclass(frozen=True)
class ExtractionPlan:
    """A validated request: the shard's ordered jobs, the device and the clip settings.

    Planning checks everything a user can get wrong cheaply (paths, metadata CSV, shard,
    device, output folder) before anything slow happens, such as downloading a checkpoint.
    """

    jobs: list[VideoJob]
    out_dir: Path
    device: torch.device
    settings: ClipSettings
    shard: Shard


def _check_output_folder(out_dir: Path) -> None:
    """Refuse an output folder that cannot be written, without creating it: a refused command leaves nothing behind."""
    problem = folder_problem(out_dir)
    if problem is not None:
        raise UsageError(
            f"Cannot use the output folder {out_dir} ({problem}); give another `out_dir`.", parameter="out_dir"
        )


def _create_output_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"Cannot create the output folder {out_dir} ({error.strerror}); give another `out_dir`.",
            parameter="out_dir",
        ) from None


def plan_extraction(
    videos: Sequence[Path | str],
    out_dir: Path | str,
    *,
    stride: int = 16,
    clip_len: int = 16,
    frame_rate: float = 15.0,
    metadata: Path | str | None = None,
    shard: Shard = Shard(),
    device: str | None = None,
) -> ExtractionPlan:
    """Validate a request and list the shard's videos, in the reference's order."""
    if stride < 1 or clip_len < 1 or not frame_rate > 0:
        raise UsageError("--stride and --clip-len must be at least 1, and --frame-rate positive.")
    out_dir = Path(out_dir)
    _check_output_folder(out_dir)
    jobs = plan_shard_jobs(videos, metadata, shard)  # only the shard's rows are read, checked and built
    settings = ClipSettings(clip_len=clip_len, frame_rate=frame_rate, stride=stride)
    return ExtractionPlan(jobs, out_dir, resolve_device(device), settings, shard)


def run_extraction(
    plan: ExtractionPlan,
    *,
    checkpoint: Path | str | None = None,
    backbone: str | None = None,
    checkpoint_name: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    precision: str = "fp32",
    dry_run: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> RunSummary:
    """Load the checkpoint, create and claim the output folder, skip finished videos and run the rest.

    A dry run writes nothing (no folder, no features, no records).
    """
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    workers = default_workers() if workers is None else workers
    model, notes = None, []
    if plan.device.type == "cuda" and plan.device.index is not None:
        torch.cuda.set_device(plan.device)  # pinned memory and cuDNN state then live on this GPU, not cuda:0
    if not dry_run:
        from tsp_cli.models.cache import file_sha256
        from tsp_cli.models.loading import load_backbone  # torchvision: ~1 s a dry run need not pay

        if checkpoint is None:
            raise UsageError("Give a checkpoint: --checkpoint NAME or --local PATH.")
        model, backbone = load_backbone(Path(checkpoint), backbone)
        model = model.to(plan.device)
        if plan.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        settings = plan.settings
        _create_output_folder(plan.out_dir)
        notes += store.claim_output_folder(
            plan.out_dir,
            {
                "checkpoint": checkpoint_name or Path(checkpoint).name,
                "checkpoint_sha256": file_sha256(Path(checkpoint)),
                "backbone": backbone,
                "clip_len": settings.clip_len,
                "frame_rate": settings.frame_rate,
                "stride": settings.stride,
                "precision": precision,
            },
            tool_versions(),
        )
        removed = store.remove_stale_temp_files(plan.out_dir)
        if removed:
            notes.append(f"Removed {len(removed)} temporary file(s) left by an interrupted run.")
    finished = set() if dry_run else store.finished_names(plan.out_dir)
    to_do = [job for job in plan.jobs if job.name not in finished]
    skipped = len(plan.jobs) - len(to_do)
    if on_event:
        on_event(
            RunStarted(len(plan.jobs), len(to_do), skipped, workers if to_do else 0, str(plan.device), tuple(notes))
        )
    summary = run_jobs(
        to_do,
        plan.out_dir,
        model,
        plan.settings,
        device=plan.device,
        batch_size=batch_size,
        workers=workers,
        precision=precision,
        shard=plan.shard,
        on_event=on_event,
    )
    summary.videos, summary.skipped = len(plan.jobs), skipped
    return summary


def extract_features(
    videos: Sequence[Path | str],
    out_dir: Path | str,
    *,
    checkpoint: Path | str | None = None,
    backbone: str | None = None,
    checkpoint_name: str | None = None,
    stride: int = 16,
    clip_len: int = 16,
    frame_rate: float = 15.0,
    metadata: Path | str | None = None,
    shard: Shard = Shard(),
    device: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    precision: str = "fp32",
    dry_run: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> RunSummary:
    """Extract TSP features of ``videos`` (folders and/or files) into ``out_dir/<name>.npy``.

    ``checkpoint`` is a local checkpoint file (for a released one, get its path with
    ``tsp_cli.models.cache.fetch(name)``); ``backbone`` is detected from it when left out. Finished
    videos are skipped, so a killed run resumes where it stopped. ``dry_run`` decodes and
    assembles every batch but loads no checkpoint, runs no network and writes nothing.
    ``precision`` is ``fp32`` (full float32, TF32 off: the reference's numbers), ``tf32``, ``fp16``
    or ``bf16``; the TF32 switches it sets are restored when the run ends.
    """
    plan = plan_extraction(
        videos,
        out_dir,
        stride=stride,
        clip_len=clip_len,
        frame_rate=frame_rate,
        metadata=metadata,
        shard=shard,
        device=device,
    )
    return run_extraction(
        plan,
        checkpoint=checkpoint,
        backbone=backbone,
        checkpoint_name=checkpoint_name,
        batch_size=batch_size,
        workers=workers,
        precision=precision,
        dry_run=dry_run,
        on_event=on_event,
    )
