"""A long video split into segments decoded apart gives exactly the clips of one whole pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tsp_cli.pipeline.workers as workers_module
from tests.videos import make_video
from tsp_cli.models.recipe import TSP_RECIPE
from tsp_cli.pipeline.batcher import run_jobs
from tsp_cli.pipeline.clipper import Decoding, FrameChunk, segment_messages, video_messages
from tsp_cli.pipeline.handoff import LocalFrames, PostedSegment
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.sampling import ClipSettings, clip_windows
from tsp_cli.pipeline.segments import Segment, plan_segments, seek_point, split_video
from tsp_cli.pipeline.transform import taps_per_frame
from tsp_cli.pipeline.video import Keyframe, probe

REPO = Path(__file__).resolve().parents[1]

OPEN_GOP = {
    "x264 open_gop": ("o.mp4", "libx264", {"x264-params": "open-gop=1:keyint=30:min-keyint=30:scenecut=0:bframes=3"}),
    "x265 (open by default)": (
        "h.mkv",
        "libx265",
        {"preset": "ultrafast", "x265-params": "log-level=error:keyint=30:min-keyint=30:scenecut=0:bframes=3"},
    ),
}


def clips_from(chunks: list[FrameChunk]) -> dict[int, torch.Tensor]:
    """Every clip (index -> its frames' taps, TAPS x T) that a stream of chunks of possibly several segments carries."""
    frames: dict[tuple[int, int], torch.Tensor] = {}
    clips = {}
    for chunk in chunks:
        assert chunk.error is None, chunk.error
        if chunk.frame_ids:
            assert isinstance(chunk.frames, torch.Tensor)
            frames.update({(chunk.segment, i): f for i, f in zip(chunk.frame_ids, chunk.frames, strict=True)})
        for index, ids in chunk.clips:
            assert index not in clips, "a clip was sent twice"
            clips[index] = torch.stack([frames[chunk.segment, i] for i in ids], dim=1)
    return clips


class SplitInto:
    """A scheduler that splits every video into ``parts`` and keeps the segments other workers would get."""

    def __init__(self, parts: int):
        self.parts = parts
        self.posted: list[PostedSegment] = []

    def share(self, info, windows) -> Decoding:
        segments = split_video(info, windows, self.parts)
        self.posted += [PostedSegment(job=0, segment=segment, info=info) for segment in segments[1:]]
        return Decoding(segment=segments[0], segments=len(segments))


def whole_and_split(path: Path, settings: ClipSettings, parts: int) -> tuple[dict, dict, list[Segment]]:
    job = VideoJob(path, path.stem)
    whole = clips_from(list(video_messages(0, job, settings)))
    scheduler = SplitInto(parts)
    chunks = list(video_messages(0, job, settings, scheduler=scheduler))
    for posted in reversed(scheduler.posted):  # any order: each segment stands alone
        chunks += segment_messages(job, posted, settings, sink=LocalFrames(taps_per_frame(TSP_RECIPE)))
    return whole, clips_from(chunks), [posted.segment for posted in scheduler.posted]


def test_a_posted_segment_opens_its_file_once_and_never_probes_it(tmp_path: Path, monkeypatch) -> None:
    import tsp_cli.pipeline.clipper as clipper_module
    import tsp_cli.pipeline.video as video_module

    video = make_video(tmp_path / "v.mp4", frames=180, fps=30, gop=15)
    job = VideoJob(video, "v")
    scheduler = SplitInto(3)
    list(video_messages(0, job, ClipSettings(stride=2), scheduler=scheduler))
    assert len(scheduler.posted) == 2
    opens = []
    real_open = video_module.open_video_stream

    def counting_open(path):
        opens.append(path)
        return real_open(path)

    def no_probe(*args, **kwargs):
        raise AssertionError("a posted segment probed its video again")

    monkeypatch.setattr(video_module, "open_video_stream", counting_open)
    monkeypatch.setattr(clipper_module, "open_probed", no_probe)
    for posted in scheduler.posted:
        chunks = list(
            segment_messages(job, posted, ClipSettings(stride=2), sink=LocalFrames(taps_per_frame(TSP_RECIPE)))
        )
        assert chunks[-1].last and chunks[-1].error is None and chunks[-1].segment == posted.segment.index
    assert opens == [video, video]  # one open per segment, to decode


def assert_equal_clips(whole: dict, split: dict) -> None:
    assert sorted(split) == sorted(whole) and len(whole) > 4
    for index, clip in whole.items():
        assert torch.equal(split[index], clip), f"clip {index} differs"


@pytest.mark.parametrize("stride", [1, 16])
def test_closed_gop_segments_equal_a_whole_pass(tmp_path: Path, stride: int) -> None:
    video = make_video(tmp_path / "c.mp4", frames=240, fps=30, gop=24)  # B-frames, closed GOP
    whole, split, posted = whole_and_split(video, ClipSettings(stride=stride), parts=4)
    assert len(posted) >= 2 and all(p.seek_pts is not None for p in posted), "the segments must seek"
    assert_equal_clips(whole, split)


@pytest.mark.parametrize("name", list(OPEN_GOP))
def test_open_gop_segments_start_a_gop_earlier_and_equal_a_whole_pass(tmp_path: Path, name: str) -> None:
    filename, codec, options = OPEN_GOP[name]
    video = make_video(tmp_path / filename, frames=240, fps=30, codec=codec, codec_options=options)
    info = probe(video)
    assert info.keyframes is not None and any(k.leading for k in info.keyframes), "the encoder made no open GOP"
    whole, split, posted = whole_and_split(video, ClipSettings(stride=2), parts=4)
    assert posted and all(p.seek_pts is not None for p in posted)
    assert_equal_clips(whole, split)


def test_variable_frame_rate_segments_equal_a_whole_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    timestamps = np.arange(300) / 30 + rng.uniform(-0.006, 0.006, 300)
    timestamps[0] = 0
    video = make_video(tmp_path / "vfr.mkv", timestamps=timestamps.tolist(), gop=20)
    whole, split, posted = whole_and_split(video, ClipSettings(stride=3), parts=3)
    assert posted
    assert_equal_clips(whole, split)


def test_seek_points_pass_over_keyframes_with_leading_pictures() -> None:
    keyframes = [Keyframe(0), Keyframe(100), Keyframe(200, leading=True), Keyframe(300)]
    assert seek_point(keyframes, 250) == 100  # 200 is open: its GOP needs the one before
    assert seek_point(keyframes, 200) == 100
    assert seek_point(keyframes, 310) == 300
    assert seek_point(keyframes, 150) == 100
    assert seek_point(keyframes, 50) is None  # from the start


def test_boundaries_sit_just_after_keyframes(tmp_path: Path) -> None:
    video = make_video(tmp_path / "c.mp4", frames=600, fps=30, gop=60)
    info = probe(video)
    assert info.keyframes is not None
    windows = clip_windows(info.fps, info.num_frames, info.time_base, ClipSettings(stride=1))
    segments = plan_segments(windows, info.keyframes, 4)
    assert [s.first_clip for s in segments] == sorted({s.first_clip for s in segments})
    assert segments[0].first_clip == 0 and segments[-1].stop_clip == len(windows)
    for segment in segments[1:]:
        lead_in = windows[segment.first_clip].start_pts - segment.seek_pts
        assert 0 <= lead_in <= 512 * 2, "a boundary wasted more than two frames on the lead-in"  # 512 ticks a frame


@pytest.fixture
def split_small_videos(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the engine split videos of a few seconds (forked workers inherit it)."""
    monkeypatch.setattr(workers_module, "MIN_SEGMENT_SECONDS", 0.5)


def test_engine_splits_one_video_over_workers_with_equal_features(
    tmp_path: Path, tiny_network, split_small_videos, monkeypatch
) -> None:
    video = make_video(tmp_path / "long.mp4", frames=180, fps=30, gop=15)
    log = tmp_path / "segments.log"
    real = workers_module.segment_messages

    def logged(job, posted, settings, **kwargs):
        with open(log, "a") as file:
            file.write(f"{posted.segment.index}\n")
        yield from real(job, posted, settings, **kwargs)

    monkeypatch.setattr(workers_module, "segment_messages", logged)
    settings = ClipSettings(stride=2)
    job = [VideoJob(video, "long")]
    run_jobs(job, tmp_path / "whole", tiny_network, settings, workers=0, batch_size=5)
    summary = run_jobs(job, tmp_path / "split", tiny_network, settings, workers=2, batch_size=5)
    assert summary.done == 1 and summary.failed == 0
    assert len(log.read_text().split()) >= 2, "the video was not split"
    whole, split = np.load(tmp_path / "whole" / "long.npy"), np.load(tmp_path / "split" / "long.npy")
    assert whole.shape == split.shape
    assert np.abs(split - whole).max() <= 1e-6 * np.abs(whole).max()  # batches differ; the clips do not


def test_a_video_failing_in_a_later_segment_fails_alone(tmp_path: Path, tiny_network, split_small_videos) -> None:
    broken = make_video(tmp_path / "broken.mp4", frames=150, fps=30, gop=15)
    fine = make_video(tmp_path / "fine.mp4", frames=60, fps=30)
    # The metadata claims twice the frames: the clips past the real end fail in the last segment.
    jobs = [VideoJob(broken, "broken", fps=30.0, num_frames=300), VideoJob(fine, "fine")]
    summary = run_jobs(jobs, tmp_path / "out", tiny_network, ClipSettings(stride=2), workers=2)
    assert (summary.done, summary.failed) == (1, 1)
    assert summary.failures[0][0] == "broken" and "truncated" in summary.failures[0][1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["fine.npy"]


KILLABLE_SPLIT_RUN = textwrap.dedent(
    """
    import sys, time
    import tsp_cli.pipeline.workers as workers
    from tsp_cli.pipeline.batcher import run_jobs
    from tsp_cli.pipeline.inputs import collect_jobs
    from tsp_cli.pipeline.sampling import ClipSettings
    from tests.conftest import TinyNetwork

    class Slow(TinyNetwork):
        def forward(self, clips):
            time.sleep(0.1)
            return super().forward(clips)

    workers.MIN_SEGMENT_SECONDS = 0.5
    sys.exit(run_jobs(collect_jobs([sys.argv[1]]), sys.argv[2], Slow().eval(), ClipSettings(stride=2),
                             workers=2, batch_size=4).exit_code)
    """
)


def test_a_run_killed_during_a_split_video_resumes_to_identical_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    make_video(folder / "a_short.mp4", frames=45, fps=30)
    make_video(folder / "b_long.mp4", frames=240, fps=30, gop=15)
    script = tmp_path / "run.py"
    script.write_text(KILLABLE_SPLIT_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    uninterrupted, resumed = tmp_path / "full", tmp_path / "resumed"
    subprocess.run([sys.executable, str(script), folder, uninterrupted], check=True, env=env, timeout=180)
    process = subprocess.Popen([sys.executable, str(script), folder, resumed], env=env, start_new_session=True)
    deadline = time.monotonic() + 90
    while not (resumed / "a_short.npy").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "b_long.npy").exists(), "the kill should land while the long video is running"
    subprocess.run([sys.executable, str(script), folder, resumed], check=True, env=env, timeout=180)
    assert sorted(p.name for p in resumed.iterdir() if ".tsp-tmp-" in p.name) == []
    for path in uninterrupted.glob("*.npy"):
        # Which clips share a batch depends on which worker's segment arrives first, and the
        # network's float sums on the batch size: equal to float32 rounding, not bit for bit.
        ours, reference = np.load(resumed / path.name), np.load(path)
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() <= 1e-6 * np.abs(reference).max()
    assert sorted(p.name for p in resumed.glob("*.npy")) == ["a_short.npy", "b_long.npy"]


def test_the_work_list_hands_back_a_posted_segment_with_its_videos_probed_info(tmp_path: Path) -> None:
    from dataclasses import replace

    from tsp_cli.pipeline.handoff import WorkList

    video = make_video(tmp_path / "v.mp4", frames=60, fps=30, gop=15)
    info = replace(probe(video), keyframes=None, pixel_format="")
    segment = Segment(index=2, first_clip=5, stop_clip=9, seek_pts=7680)
    work = WorkList([0], workers=2, paths=[video])
    assert work.claim() == 0
    assert work.post(0, probe(video), [segment])
    assert work.claim() == PostedSegment(job=0, segment=segment, info=info)
