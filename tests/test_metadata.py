"""``tsp metadata``: the reference's metadata CSV, value for value."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import said
from tests.videos import make_video
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.cli.app import app
from tsp_cli.data.metadata import VideoTiming, read_metadata_csv

runner = CliRunner()
PARITY = Path(__file__).parents[1] / ".." / "shared" / "parity"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return sorted(csv.DictReader(file), key=lambda row: row["filename"])


@pytest.mark.skipif(not (PARITY / "metadata.csv").is_file(), reason="parity fixtures absent (../shared/parity)")
def test_csv_equals_the_reference_generators_for_the_parity_videos(tmp_path):
    output = tmp_path / "metadata.csv"
    result = runner.invoke(app, ["metadata", str(PARITY / "videos"), "-o", str(output), "-j", "2"])
    assert result.exit_code == 0, result.output
    ours, reference = output.read_text().splitlines(), (PARITY / "metadata.csv").read_text().splitlines()
    assert ours[0] == reference[0] == "filename,video-duration,fps,video-frames"
    assert sorted(ours[1:]) == sorted(reference[1:])  # same text, so the same floats


def test_values_relative_names_and_audio_first_files(tmp_path):
    videos = tmp_path / "videos"
    make_video(videos / "sub" / "audio_first.mp4", frames=24, fps=24, audio_first=True)
    make_video(videos / "ntsc.mkv", frames=40, fps=Fraction(30000, 1001))
    make_video(videos / "a.b.webm", frames=25, fps=25, codec="libvpx-vp9")
    (videos / "notes.txt").write_text("not a video")
    output = tmp_path / "meta" / "metadata.csv"
    result = runner.invoke(app, ["metadata", str(videos), "-o", str(output), "-j", "0"])
    assert result.exit_code == 0, result.output
    rows = {row["filename"]: row for row in read_rows(output)}
    assert sorted(rows) == ["a.b.webm", "ntsc.mkv", "sub/audio_first.mp4"]
    assert rows["sub/audio_first.mp4"] == {
        "filename": "sub/audio_first.mp4",
        "video-duration": "1.0",
        "fps": "24.0",
        "video-frames": "24",
    }
    ntsc = rows["ntsc.mkv"]
    assert float(ntsc["fps"]) == pytest.approx(30000 / 1001, rel=1e-3) and ntsc["video-frames"] == "40"
    assert float(ntsc["video-duration"]) == 40 / float(ntsc["fps"])
    assert read_metadata_csv(output)["a.b"] == VideoTiming(fps=25.0, num_frames=25)
    assert [p.name for p in output.parent.iterdir()] == ["metadata.csv"]


def test_unreadable_files_are_listed_and_exit_1(tmp_path):
    videos = tmp_path / "videos"
    make_video(videos / "good.mp4", frames=10)
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    single = make_video(tmp_path / "single.avi", frames=6, codec="mpeg4")
    output = tmp_path / "metadata.csv"
    result = runner.invoke(app, ["metadata", str(videos), str(single), "-o", str(output), "-j", "2"])
    assert result.exit_code == 1
    assert "1 video could not be read" in said(result) and "broken.mp4" in said(result)
    assert "Traceback" not in result.output
    assert [row["filename"] for row in read_rows(output)] == ["good.mp4", "single.avi"]
    assert not any(TEMP_MARKER in p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize(("arguments", "message"), [(["missing"], "does not exist"), ([], "No videos found")])
def test_nothing_to_read_cannot_start(tmp_path, arguments, message):
    (tmp_path / "empty").mkdir()
    paths = [str(tmp_path / a) for a in arguments] or [str(tmp_path / "empty")]
    result = runner.invoke(app, ["metadata", *paths, "-o", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and message in said(result)
    assert not (tmp_path / "m.csv").exists()


def test_output_paths_that_cannot_be_a_csv_and_an_existing_csv_are_refused_before_probing(tmp_path):
    video = make_video(tmp_path / "v" / "walk.mp4", frames=5)
    (tmp_path / "afile.txt").write_text("x")
    folder = runner.invoke(app, ["metadata", str(video), "-o", str(tmp_path / "v")])
    assert folder.exit_code == 2 and "is a folder; give the path of the CSV file to write" in folder.output
    under_file = runner.invoke(app, ["metadata", str(video), "-o", str(tmp_path / "afile.txt" / "x.csv")])
    assert under_file.exit_code == 2 and "is a file, not a folder" in under_file.output
    csv = tmp_path / "m.csv"
    csv.write_text("keep me\n")
    kept = runner.invoke(app, ["metadata", str(video), "-o", str(csv)])
    assert kept.exit_code == 2 and "already exists; pass --overwrite to replace it" in " ".join(kept.output.split())
    assert csv.read_text() == "keep me\n"
    replaced = runner.invoke(app, ["metadata", str(video), "-o", str(csv), "--overwrite", "-j", "0"])
    assert replaced.exit_code == 0 and "Wrote 1 video to" in replaced.output
    assert csv.read_text().startswith("filename,")
    assert all("Traceback" not in r.output for r in (folder, under_file, kept, replaced))
