"""Single-pass clip assembly picks exactly the frames of the reference's per-clip reads.

The reference reads each clip separately (seek, decode the pts window, resample); the clipper
decodes once. Test videos carry their frame index in their pixels, so we compare which source
frames make every clip against a plain re-statement of the reference's per-clip read.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import tsp_cli.pipeline.clipper as clipper
from tests.videos import frame_index, make_video
from tsp_cli.models.recipe import TSP_RECIPE
from tsp_cli.pipeline.clipper import FrameChunk, video_messages
from tsp_cli.pipeline.handoff import LocalFrames
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.sampling import ClipSettings, resampled_indices
from tsp_cli.pipeline.transform import taps_per_frame
from tsp_cli.pipeline.video import decode_frames, probe


def reference_clip_frames(path: Path, settings: ClipSettings) -> list[list[int]]:
    """Which source frames the reference's per-clip ``read_video`` calls put in each clip."""
    info = probe(path)
    frames: dict[int, int] = {}
    for pts, frame in decode_frames(info):
        frames[pts] = frame_index(frame.to_ndarray(format="rgb24"))  # a dict, like torchvision's reader
    ticks = float(1 / info.time_base)
    step = info.fps / settings.frame_rate
    indices = resampled_indices(info.fps, info.num_frames, settings.frame_rate)
    clips = []
    for k in range(0, len(indices) - settings.clip_len + 1, settings.stride):
        start = int(indices[k]) / info.fps
        so, eo = math.floor(start * ticks), math.ceil((start + settings.clip_len / settings.frame_rate) * ticks)
        window = [frames[p] for p in sorted(frames) if so <= p <= eo]
        before = [p for p in frames if p < so]
        if so > 0 and so not in frames and before:
            window.insert(0, frames[max(before)])
        if float(step).is_integer():
            chosen = window[:: int(step)][: settings.clip_len]
        else:
            chosen = [window[i] for i in (torch.arange(settings.clip_len, dtype=torch.float32) * step).floor().long()]
        assert len(chosen) == settings.clip_len, "the reference would batch a short clip here"
        clips.append(chosen)
    return clips


@pytest.fixture
def labelled_frames(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the clipper's gather send each frame's index (two bytes) as its taps, and log every gather."""
    calls: list[int] = []

    class Labeller:
        def gather(self, rgb: np.ndarray, out: torch.Tensor) -> torch.Tensor:
            index = frame_index(rgb)
            calls.append(index)
            out.zero_()
            out[0], out[1] = index % 256, index // 256
            return out

    monkeypatch.setattr(clipper, "transform_for", lambda height, width, recipe: Labeller())
    return calls


def frame_label(taps: torch.Tensor) -> int:
    return int(taps[0]) + 256 * int(taps[1])


def clipper_clip_frames(path: Path, settings: ClipSettings) -> tuple[list[list[int]], list]:
    frames: dict[int, int] = {}
    clips: dict[int, list[int]] = {}
    messages = list(video_messages(0, VideoJob(path, path.stem), settings, clips_per_chunk=3))
    for message in messages:
        if isinstance(message, FrameChunk):
            assert not set(message.frame_ids) & set(frames), "a frame was sent twice"
            frames.update({i: frame_label(t) for i, t in zip(message.frame_ids, message.frames, strict=True)})
            clips.update({k: [frames[i] for i in ids] for k, ids in message.clips})
    return [clips[k] for k in sorted(clips)], messages


@pytest.mark.parametrize("fps", [30, 25, Fraction(30000, 1001)], ids=["30", "25", "29.97"])
@pytest.mark.parametrize("stride", [1, 4, 16])
def test_clips_hold_the_reference_frames(tmp_path: Path, labelled_frames: list[int], fps, stride: int) -> None:
    video = make_video(tmp_path / "v.mp4", frames=100, fps=fps, gop=12)
    settings = ClipSettings(stride=stride)
    ours, messages = clipper_clip_frames(video, settings)
    expected = reference_clip_frames(video, settings)
    assert len(expected) > 1
    assert ours == expected
    assert messages[-1].last and messages[-1].error is None
    assert len(labelled_frames) == len(set(labelled_frames)), "a frame was transformed twice"
    assert set(labelled_frames) == {i for clip in expected for i in clip}, "an unsampled frame was transformed"


def test_jittered_timestamps_follow_the_pts_windows(tmp_path: Path, labelled_frames: list[int]) -> None:
    rng = np.random.default_rng(3)
    timestamps = np.arange(120) / 30 + rng.uniform(-0.006, 0.006, 120)
    timestamps[0] = 0
    video = make_video(tmp_path / "jitter.mkv", timestamps=timestamps.tolist())
    settings = ClipSettings(stride=4)
    ours, _ = clipper_clip_frames(video, settings)
    assert len(ours) == 12
    assert ours == reference_clip_frames(video, settings)


def test_sparse_variable_frame_rate_fails_that_video_and_points_to_standardize(tmp_path: Path, labelled_frames) -> None:
    timestamps = np.cumsum(np.random.default_rng(3).uniform(0.02, 0.05, 120)) - 0.02
    video = make_video(tmp_path / "vfr.mkv", timestamps=timestamps.tolist())
    messages = list(video_messages(0, VideoJob(video, "vfr"), ClipSettings(stride=4)))
    assert "variable frame rate" in messages[-1].error and "tsp standardize" in messages[-1].error


def test_each_frame_is_decoded_once_and_decoding_stops_after_the_last_clip(
    tmp_path: Path, labelled_frames, monkeypatch
) -> None:
    video = make_video(tmp_path / "v.mp4", frames=200, fps=30)
    opened = []
    real_decode = clipper.decode_frames

    def counting_decode(info, **kwargs):
        opened.append(info.path)
        for decoded in real_decode(info, **kwargs):
            opened.append(decoded[0])
            yield decoded

    monkeypatch.setattr(clipper, "decode_frames", counting_decode)
    _, messages = clipper_clip_frames(video, ClipSettings(stride=1))
    assert opened[0] == video and video not in opened[1:]
    # 85 clips at stride 1: the last reads up to frame 200 - 1; nothing is decoded twice
    assert len(opened) - 1 <= 200 and len(set(opened[1:])) == len(opened) - 1
    assert messages[0].header is not None and messages[0].header.num_clips == 85


def test_memory_is_a_window_of_frames_not_the_video(tmp_path: Path, labelled_frames) -> None:
    video = make_video(tmp_path / "long.mp4", frames=600, fps=30, gop=250)
    alive_peak = 0
    alive: set[int] = set()
    for message in video_messages(0, VideoJob(video, "long"), ClipSettings(stride=1), clips_per_chunk=4):
        if isinstance(message, FrameChunk):
            alive |= set(message.frame_ids)
            alive = {i for i in alive if i >= message.keep_from}
            alive_peak = max(alive_peak, len(alive))
    # a stride-1 clip spans 31 frames at 30 fps; the main process never needs to hold many more
    assert alive_peak <= 40


class FakeFrame:
    def __init__(self, label: int) -> None:
        self.label = label

    def to_ndarray(self, format: str, threads: int | None = None) -> np.ndarray:
        image = np.zeros((48, 64, 3), dtype=np.uint8)
        image[0, 0, 0] = self.label
        return image


def stub_assembler(monkeypatch, name: str, windows: list, *, frames_per_chunk: int) -> clipper._ClipAssembler:
    """A clip assembler over a fake video whose frames are labelled stubs: 3-frame clips from frame positions 0, 1, 2."""
    monkeypatch.setattr(clipper, "transform_for", lambda h, w, recipe: FrameTransformStub())
    info = type("Info", (), {"path": Path(name)})()
    return clipper._ClipAssembler(
        job=0,
        info=info,
        windows=windows,
        positions=[0, 1, 2],
        clip_len=3,
        frames_per_chunk=frames_per_chunk,
        recipe=TSP_RECIPE,
        sink=LocalFrames(taps_per_frame(TSP_RECIPE)),
    )


def test_duplicate_pts_keep_the_last_frame_and_missing_start_takes_the_previous(monkeypatch) -> None:
    windows = [clipper.ClipWindow(0, 0.0, 0, 30), clipper.ClipWindow(1, 0.5, 25, 60)]
    assembler = stub_assembler(monkeypatch, "fake.mp4", windows, frames_per_chunk=48)
    # pts 20 twice (the second wins); no frame at pts 25, so clip 1 starts with the frame at 20
    for label, pts in enumerate([0, 10, 20, 20, 30, 40, 50, 61]):
        assembler.add(pts, FakeFrame(label))
    chunk = assembler.take_chunk()
    values = dict(zip(chunk.frame_ids, (frame_label(t) for t in chunk.frames), strict=True))
    assert [[values[i] for i in ids] for _, ids in chunk.clips] == [[0, 1, 3], [3, 4, 5]]


def test_a_truncated_window_fails_the_video_with_a_clear_message(tmp_path: Path, labelled_frames) -> None:
    video = make_video(tmp_path / "short.mp4", frames=40, fps=30)
    # The metadata claims 100 frames: clips past the real end cannot be filled.
    messages = list(video_messages(0, VideoJob(video, "short", fps=30.0, num_frames=100), ClipSettings(stride=4)))
    assert messages[-1].last and messages[-1].error is not None
    assert "truncated" in messages[-1].error and "short.mp4" in messages[-1].error


def test_a_frame_that_completes_more_clips_than_a_chunk_holds_grows_the_chunk(monkeypatch) -> None:
    windows = [clipper.ClipWindow(k, k * 0.1, k * 10, k * 10 + 30) for k in range(6)]
    assembler = stub_assembler(monkeypatch, "gap.mp4", windows, frames_per_chunk=2)
    for label, pts in enumerate(range(0, 90, 5)):
        assembler.add(pts, FakeFrame(label))
    assembler.add(1000, FakeFrame(99))  # completes every clip at once
    chunk = assembler.take_chunk()
    values = dict(zip(chunk.frame_ids, (frame_label(t) for t in chunk.frames), strict=True))
    assert [[values[i] for i in ids] for _, ids in chunk.clips] == [[2 * k, 2 * k + 1, 2 * k + 2] for k in range(6)]


class FrameTransformStub:
    def gather(self, rgb, out):
        out.zero_()
        out[0] = int(rgb[0, 0, 0])
        return out


@pytest.mark.parametrize(
    "name,options",
    [("a.mp4", {}), ("b.mkv", {}), ("c.webm", {"codec": "libvpx-vp9"}), ("d.avi", {"codec": "mpeg4"})],
)
def test_one_open_per_video_decodes_what_a_fresh_open_does(tmp_path: Path, name: str, options: dict) -> None:
    from tsp_cli.pipeline.video import open_probed

    video = make_video(tmp_path / name, frames=40, fps=30, gop=12, **options)
    with open_probed(video) as (info, opened):
        assert opened.packets is not None, "the counted file was not rewound"
        reused = [(pts, frame.to_ndarray(format="rgb24")) for pts, frame in decode_frames(info, opened=opened)]
    fresh = [(pts, frame.to_ndarray(format="rgb24")) for pts, frame in decode_frames(info)]
    assert [pts for pts, _ in reused] == [pts for pts, _ in fresh] and len(fresh) == 40
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(reused, fresh, strict=True))


def test_ffmpeg_threads_decode_the_same_frames_as_one_thread(tmp_path: Path) -> None:
    # Four slices per frame, so that FFmpeg's slice threads really split the work.
    video = make_video(
        tmp_path / "sliced.mp4", frames=30, size=(160, 128), gop=10, codec_options={"x264-params": "slices=4"}
    )
    info = probe(video)
    one = [(pts, frame.to_ndarray(format="rgb24")) for pts, frame in decode_frames(info, threads=1)]
    three = [(pts, frame.to_ndarray(format="rgb24")) for pts, frame in decode_frames(info, threads=3)]
    assert [pts for pts, _ in three] == [pts for pts, _ in one] and len(one) == 30
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, three, strict=True))
