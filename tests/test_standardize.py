"""``tsp standardize``: constant frame rate by timestamp, as ``ffmpeg -filter:v fps=fps=30``."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from tests.helpers import said
from tests.videos import frame_index, make_video
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.cli.app import app
from tsp_cli.data.standardize import standardize_video

runner = CliRunner()
HEVC = "libx265" if "libx265" in av.codecs_available else "libx264"


def decoded(path: Path) -> tuple[av.video.stream.VideoStream, list[int], list[int]]:
    """The video stream, its frames' pts, and the source frame index drawn in each."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return stream, [f.pts for f in frames], [frame_index(f.to_ndarray(format="rgb24")) for f in frames]


def assert_constant_rate(path: Path, fps: int, frames: int) -> list[int]:
    """``frames`` frames, H.264, evenly spaced at ``fps``; returns which source frame each shows."""
    stream, pts, picked = decoded(path)
    assert stream.codec_context.name == "h264" and stream.average_rate == fps
    assert len(pts) == frames
    assert {b - a for a, b in itertools.pairwise(pts)} == {int(1 / (stream.time_base * fps))}
    assert pts[0] == 0
    return picked


def nearest_slot_selection(timestamps: list[float], fps: int, slots: int) -> list[int]:
    """The fps filter's choice: slot n shows the last frame whose time, rounded to a slot, is <= n."""
    rounded = [math.floor(t * fps + 0.5) for t in timestamps]
    return [max(i for i, slot in enumerate(rounded) if slot <= n) for n in range(slots)]


def test_variable_frame_rate_becomes_constant_with_frames_chosen_by_timestamp(tmp_path):
    # 20 frames every 50 ms, then 50 frames every 20 ms: 2 seconds in all.
    timestamps = [i * 0.05 for i in range(20)] + [1.0 + i * 0.02 for i in range(50)]
    source = make_video(tmp_path / "vfr.mp4", timestamps=timestamps)
    written = standardize_video(source, tmp_path / "out.mp4")
    assert written == 60
    picked = assert_constant_rate(tmp_path / "out.mp4", 30, 60)
    assert picked == nearest_slot_selection(timestamps, 30, 60)  # duplicates, then drops


@pytest.mark.parametrize(
    ("name", "codec", "extra"),
    [
        ("vp9.webm", "libvpx-vp9", {}),
        ("hevc.mkv", HEVC, {}),
        ("mpeg4.avi", "mpeg4", {}),
        ("audio_first.mp4", "libx264", {"audio_first": True}),
    ],
)
def test_other_containers_and_codecs_become_30_fps_with_duration_kept(tmp_path, name, codec, extra):
    source = make_video(tmp_path / name, frames=50, fps=25, codec=codec, **extra)  # 2 seconds
    result = runner.invoke(app, ["standardize", str(source), str(tmp_path / "out"), "-j", "0"])
    assert result.exit_code == 0, result.output
    picked = assert_constant_rate(tmp_path / "out" / f"{Path(name).stem}.mp4", 30, 60)
    assert picked == nearest_slot_selection([i / 25 for i in range(50)], 30, 60)


def test_odd_sizes_lose_their_last_column_and_row(tmp_path):
    source = make_video(tmp_path / "odd.mp4", frames=10, fps=30, size=(63, 47), pix_fmt="yuv444p")
    standardize_video(source, tmp_path / "out.mp4")
    stream, _, picked = decoded(tmp_path / "out.mp4")
    assert (stream.width, stream.height, stream.format.name) == (62, 46, "yuv420p")
    assert picked == list(range(10))


def test_folder_run_lists_failures_skips_finished_and_leaves_no_temp(tmp_path):
    videos = tmp_path / "videos"
    make_video(videos / "a.mp4", frames=15, fps=15)
    make_video(videos / "sub" / "b.mkv", frames=12, fps=Fraction(24))
    (videos / "broken.mp4").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    result = runner.invoke(app, ["standardize", str(videos), str(out), "--fps", "25", "-j", "2"])
    assert result.exit_code == 1
    assert "1 video could not be re-encoded" in said(result) and "broken.mp4" in said(result)
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4"]
    assert assert_constant_rate(out / "a.mp4", 25, 25) == nearest_slot_selection([i / 15 for i in range(15)], 25, 25)

    (videos / "broken.mp4").unlink()
    finished = (out / "a.mp4").stat().st_mtime_ns
    result = runner.invoke(app, ["standardize", str(videos), str(out), "--fps", "25", "-j", "0"])
    assert result.exit_code == 0, result.output
    assert "Re-encoded 0 videos to 25 fps" in said(result) and "2 were already there" in said(result)
    assert (out / "a.mp4").stat().st_mtime_ns == finished
    assert not any(TEMP_MARKER in p.name for p in out.iterdir())


@pytest.mark.parametrize(
    ("setup", "arguments", "message"),
    [
        (lambda d: make_video(d / "in" / "x.mp4", frames=3), ["--fps", "0"], "--fps must be a positive number"),
        (lambda d: make_video(d / "in" / "x.mp4", frames=3), ["--fps", "abc"], "--fps must be a positive number"),
        (
            lambda d: (make_video(d / "in" / "x.mp4", frames=3), make_video(d / "in" / "x.mkv", frames=3)),
            [],
            "would both become",
        ),
        (lambda d: (d / "in").mkdir(), [], "holds no videos"),
    ],
    ids=["zero-fps", "text-fps", "same-name", "no-videos"],
)
def test_bad_invocations_cannot_start(tmp_path, setup, arguments, message):
    setup(tmp_path)
    result = runner.invoke(app, ["standardize", str(tmp_path / "in"), str(tmp_path / "out"), *arguments])
    assert result.exit_code == 2 and message in said(result)
    assert not (tmp_path / "out").exists()


def test_output_may_not_replace_its_own_input(tmp_path):
    make_video(tmp_path / "x.mp4", frames=3)
    result = runner.invoke(app, ["standardize", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2 and "overwritten by its own output" in said(result)


def test_outputs_made_at_another_rate_are_refused_and_a_decimal_rate_is_said_as_given(tmp_path):
    make_video(tmp_path / "in" / "v25.mp4", frames=20, fps=25)
    first = runner.invoke(
        app, ["standardize", str(tmp_path / "in"), str(tmp_path / "std"), "--fps", "29.97", "-j", "0"]
    )
    assert first.exit_code == 0 and "Re-encoded 1 video to 29.97 fps" in said(first), first.output
    again = runner.invoke(
        app, ["standardize", str(tmp_path / "in"), str(tmp_path / "std"), "--fps", "29.97", "-j", "0"]
    )
    assert "Re-encoded 0 videos to 29.97 fps" in said(again) and "1 was already there" in said(again)
    other = runner.invoke(app, ["standardize", str(tmp_path / "in"), str(tmp_path / "std"), "--fps", "25", "-j", "0"])
    assert other.exit_code == 2
    assert "v25.mp4 is already there, made at 29.97 fps, not 25 fps; give another output folder" in said(other)
    with av.open(str(tmp_path / "std" / "v25.mp4")) as container:
        assert container.streams.video[0].average_rate == Fraction(2997, 100)  # kept, not replaced


def test_an_output_folder_that_is_a_file_is_one_sentence(tmp_path):
    make_video(tmp_path / "v.mp4", frames=3)
    (tmp_path / "afile.txt").write_text("x")
    for out in (tmp_path / "afile.txt", tmp_path / "afile.txt" / "sub"):
        result = runner.invoke(app, ["standardize", str(tmp_path / "v.mp4"), str(out)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"Cannot write the videos into {out} ({tmp_path / 'afile.txt'} is a file, not a folder)" in said(result)


def test_rates_are_said_as_users_write_them() -> None:
    from tsp_cli.data.standardize import describe_fps

    assert [describe_fps(Fraction(r)) for r in ("30", "29.97", "30000/1001", "12.5")] == [
        "30",
        "29.97",
        "30000/1001",
        "12.5",
    ]
