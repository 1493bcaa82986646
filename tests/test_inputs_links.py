"""Symbolic links in VIDEOS folders (issue 17 rows 10 and 11): followed as ``find -L`` does, each
real file once, loops not entered, and what cannot be followed named in the plan."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.videos import make_video
from tsp_cli.cli.app import app
from tsp_cli.pipeline.inputs import find_videos, plan_shard, skipped_notes
from tsp_cli.pipeline.video import VIDEO_SUFFIXES


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_a_folder_of_links_to_folders_is_searched(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    _touch(store / "kinetics" / "a.mp4", store / "kinetics" / "deep" / "b.mkv", store / "other" / "c.webm")
    data.mkdir()
    (data / "kinetics").symlink_to(store / "kinetics", target_is_directory=True)
    (data / "more").symlink_to(Path("..") / "store" / "other")  # a relative link
    videos = find_videos([data])
    assert [video.filename for video in videos] == ["kinetics/a.mp4", "kinetics/deep/b.mkv", "more/c.webm"]
    assert [video.path for video in videos] == [
        data / "kinetics/a.mp4",
        data / "kinetics/deep/b.mkv",
        data / "more/c.webm",
    ]
    assert plan_shard([data]).notes == []


def test_each_real_file_is_listed_once_under_the_first_name_in_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _touch(data / "b" / "x.mp4", data / "b" / "y.mp4")
    (data / "c").symlink_to(data / "b")  # the same files again, later in order: left out
    (data / "a").symlink_to(data / "b")  # earlier in order: these names are kept
    (data / "b" / "z.mp4").symlink_to(data / "b" / "x.mp4")
    assert [video.filename for video in find_videos([data])] == ["a/x.mp4", "a/y.mp4"]
    assert [video.filename for video in find_videos([data / "b", data])] == ["x.mp4", "y.mp4"]


@pytest.mark.parametrize("given", ["data", "a link to data"])
def test_loops_are_not_entered_and_are_named(tmp_path: Path, given: str) -> None:
    data = tmp_path / "data"
    _touch(data / "one" / "a.mp4", data / "two" / "b.mp4")
    (data / "one" / "up").symlink_to(data)  # to a folder above it
    (data / "self").symlink_to(".")  # to the folder itself
    (data / "one" / "to-two").symlink_to(data / "two")  # one -> two -> one: a loop only through both links
    (data / "two" / "to-one").symlink_to(data / "one")
    root = data
    if given == "a link to data":
        root = tmp_path / "link"
        root.symlink_to(data)
    plan = plan_shard([root])
    assert [job.path.relative_to(root).as_posix() for job in plan.jobs] == ["one/a.mp4", "one/to-two/b.mp4"]
    assert plan.notes == [
        "Skipped 5 symbolic links to a folder above them (loops): "
        f"{root}/one/to-two/to-one, {root}/one/up, {root}/self, {root}/two/to-one/to-two, {root}/two/to-one/up."
    ]


def test_dangling_links_are_named_as_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_video(data / "ok.mp4", frames=5)
    (data / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    (data / "unmounted").symlink_to(tmp_path / "no-such-disk" / "videos")  # a folder of videos, perhaps
    (data / "ping.mp4").symlink_to(data / "pong.mp4")  # two links pointing at each other
    (data / "pong.mp4").symlink_to(data / "ping.mp4")
    (data / ".hidden.mp4").symlink_to(tmp_path / "deleted.mp4")  # hidden: passed over, as every hidden name
    plan = plan_shard([data])
    assert [job.name for job in plan.jobs] == ["ok"]
    assert plan.notes == [
        f"Skipped 4 symbolic links whose targets do not exist: {data}/gone.mp4, {data}/ping.mp4, "
        f"{data}/pong.mp4, {data}/unmounted."
    ]
    skipped: list = []
    assert [video.filename for video in find_videos([data], skipped)] == ["ok.mp4"]
    assert skipped_notes(skipped) == plan.notes
    alone = tmp_path / "only-dangling"
    alone.mkdir()
    (alone / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    plan = plan_shard([data / "ok.mp4", alone])
    assert plan.notes == [f"Skipped 1 symbolic link whose target does not exist: {alone}/gone.mp4."]


def test_a_folder_of_dangling_links_alone_is_refused_naming_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    result = CliRunner().invoke(app, ["extract", str(data), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 2
    assert "No video files found in" in result.output
    assert "Skipped 1 symbolic link whose target does not exist:" in result.output
    assert "gone.mp4" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("find") is None, reason="compares with find -L")
def test_the_scan_finds_the_real_files_find_dash_L_finds(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    _touch(
        data / "a" / "1.mp4",
        data / "a" / "b" / "2.MKV",
        data / "c" / "3.avi",
        data / "notes.txt",
        store / "4.mp4",
        store / "sub" / "5.webm",
    )
    (data / "a" / "b" / "to-c").symlink_to(data / "c")
    (data / "a" / "b" / "up").symlink_to(data / "a")
    (data / "linked-store").symlink_to(store)
    (data / "c" / "again.mp4").symlink_to(store / "sub" / "5.webm")
    (data / "gone").symlink_to(tmp_path / "nothing")
    listing = subprocess.run(["find", "-L", str(data), "-type", "f"], capture_output=True, text=True).stdout
    expected = {
        os.path.realpath(line) for line in listing.splitlines() if os.path.splitext(line)[1].lower() in VIDEO_SUFFIXES
    }
    found = [os.path.realpath(video.path) for video in find_videos([data])]
    assert len(found) == len(set(found)) == 5
    assert set(found) == expected


def test_extract_names_the_skipped_links_before_it_starts_and_searches_linked_folders(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    make_video(data / "a.mp4", frames=40)
    make_video(store / "b.mp4", frames=40)
    (data / "linked").symlink_to(store)
    (data / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    result = CliRunner().invoke(app, ["extract", str(data), "-o", str(tmp_path / "out"), "--dry-run", "-j", "0"])
    assert result.exit_code == 0, result.output
    assert f"Note: Skipped 1 symbolic link whose target does not exist: {data}/gone.mp4." in result.output
    assert "extract: 2 videos, 0 already done, 2 to do" in result.output
    assert "2 checked (dry run)" in result.output


@pytest.mark.parametrize("command", ["metadata", "standardize"])
def test_the_data_steps_name_the_links_they_skip_as_extract_does(tmp_path: Path, command: str) -> None:
    data = tmp_path / "data"
    make_video(data / "ok.mp4", frames=5)
    (data / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    target = ["-o", str(tmp_path / "meta.csv")] if command == "metadata" else [str(tmp_path / "cfr")]
    result = CliRunner().invoke(app, [command, str(data), *target, "--workers", "1"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"Note: Skipped 1 symbolic link whose target does not exist: {data}/gone.mp4." in result.output
