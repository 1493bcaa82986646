"""``tsp status``: done, failed and missing videos of a folder, per shard, with the recent speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.helpers import said
from tsp_cli.cli.app import app
from tsp_cli.data.status import RECENT_WINDOW_SECONDS, folder_status, recent_speed, slurm_array_spec
from tsp_cli.pipeline import records, store
from tsp_cli.pipeline.sharding import Shard

runner = CliRunner()
NAMES = [f"v{i}" for i in range(9)]


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    """Nine video files; status only lists them, so empty files do."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in NAMES:
        (folder / f"{name}.mp4").touch()
    return folder


def finish(out: Path, name: str, shard: str, finished_at: float, clips: int = 5) -> None:
    records.append_record(
        out, records.VIDEOS, {"video": name, "clips": clips, "shard": shard, "finished_at": finished_at}
    )
    store.save_features(out, name, np.zeros((clips, 512), np.float32))


@pytest.fixture
def half_done(tmp_path: Path) -> Path:
    """Shards of 3 (v0-v2, v3-v5, v6-v8): shard 0 done; v3 done, v4 failed; v5-v8 missing.

    Four videos finished 10 s apart with 5 clips each: 15 clips in 30 s after the first.
    """
    out = tmp_path / "out"
    out.mkdir()
    started = time.time() - 100
    for index, (name, shard) in enumerate([("v0", "0/3"), ("v1", "0/3"), ("v2", "0/3"), ("v3", "1/3")]):
        finish(out, name, shard, started + 10 * index)
    store.record_failure(out, "v4", "videos/v4.mp4", "v4.mp4 cannot be opened as a video (Invalid data).", shard="1/3")
    return out


def status_json(*arguments: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["status", *arguments, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_a_half_finished_folder_per_shard(half_done: Path, videos: Path) -> None:
    code, report = status_json(str(half_done), str(videos), "--shards", "3")
    assert code == 1
    assert (report["videos"], report["done"], report["failed"], report["missing"]) == (9, 4, 1, 4)
    assert report["shards"] == [
        {"shard": "0/3", "videos": 3, "done": 3, "failed": 0, "missing": 0},
        {"shard": "1/3", "videos": 3, "done": 1, "failed": 1, "missing": 1},
        {"shard": "2/3", "videos": 3, "done": 0, "failed": 0, "missing": 3},
    ]
    assert report["shards_with_work_left"] == [1, 2]
    assert report["failures"][0]["video"] == "v4" and "cannot be opened" in report["failures"][0]["error"]
    assert report["missing_videos"] == ["v5", "v6", "v7", "v8"]
    assert report["recent"]["clips_per_second"] == pytest.approx(0.5)
    assert report["recent"]["videos_per_second"] == pytest.approx(0.1)
    assert report["eta_seconds"] == pytest.approx(40)


def test_the_table_shows_what_is_left_and_how_to_rerun_it(half_done: Path, videos: Path) -> None:
    result = runner.invoke(app, ["status", str(half_done), str(videos), "--shards", "3"])
    assert result.exit_code == 1
    text = said(result)
    assert "9 videos · 4 done · 1 failed · 4 missing" in text
    assert "Shards with work left: 2 of 3 (from --shards)" in text
    assert "sbatch --array=1-2 with --shard $SLURM_ARRAY_TASK_ID/3" in text
    assert "cannot be opened as a video" in text
    assert "Missing: v5, v6, v7, v8" in text
    assert "Recent speed: 0.5 clips/s, 0.10 videos/s over 30 s" in text


def test_the_shard_count_comes_from_the_records_when_they_agree(half_done: Path, videos: Path) -> None:
    code, report = status_json(str(half_done), str(videos))
    assert code == 1
    assert (report["shard_count"], report["shard_count_source"]) == (3, "records")
    assert report["shards_with_work_left"] == [1, 2]


def test_records_of_mixed_shard_counts_are_shown_as_recorded(half_done: Path, videos: Path) -> None:
    finish(half_done, "v8", "0/1", time.time())
    _, report = status_json(str(half_done), str(videos))
    assert report["shard_count"] is None
    assert [(row["shard"], row["done"], row["failed"]) for row in report["shards"]] == [
        ("0/1", 1, 0),
        ("0/3", 3, 0),
        ("1/3", 1, 1),
    ]


def test_a_metadata_csv_alone_lists_the_videos_in_its_order(half_done: Path, tmp_path: Path) -> None:
    csv = tmp_path / "metadata.csv"
    csv.write_text(
        "filename,video-duration,fps,video-frames\n" + "".join(f"{n}.mp4,1.0,30.0,30\n" for n in reversed(NAMES))
    )
    code, report = status_json(str(half_done), "--metadata", str(csv), "--shards", "3")
    assert code == 1 and (report["done"], report["failed"], report["missing"]) == (4, 1, 4)
    # reversed order: shard 0 is v8, v7, v6, all missing; shard 2 is v2, v1, v0, all done
    assert [row["missing"] for row in report["shards"]] == [3, 1, 0]


def test_everything_done_exits_0(tmp_path: Path, videos: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in NAMES:
        finish(out, name, "0/1", time.time(), clips=0)
    result = runner.invoke(app, ["status", str(out), str(videos), "--shards", "3"])
    assert result.exit_code == 0, result.output
    assert "9 done · 0 failed · 0 missing" in said(result)
    assert "All 3 shards (from --shards) are complete." in said(result)


def test_a_video_that_failed_and_then_finished_is_done(half_done: Path, videos: Path) -> None:
    finish(half_done, "v4", "1/3", time.time())
    code, report = status_json(str(half_done), str(videos))
    assert (code, report["done"], report["failed"]) == (1, 5, 0)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--shards", "3"], "--shards splits the list of videos; give VIDEOS or --metadata with it."),
        (["{videos}", "--shards", "0"], "Invalid value for '--shards'"),
    ],
)
def test_a_status_that_cannot_start_exits_2(half_done: Path, videos: Path, arguments, message) -> None:
    result = runner.invoke(app, ["status", str(half_done), *[a.format(videos=videos) for a in arguments]])
    assert result.exit_code == 2
    assert message in said(result)


def test_an_output_folder_that_does_not_exist_exits_2(tmp_path: Path, videos: Path) -> None:
    result = runner.invoke(app, ["status", str(tmp_path / "nowhere"), str(videos)])
    assert result.exit_code == 2
    assert "is not a folder; give the --output folder of tsp extract" in said(result)


def test_recent_speed_looks_only_at_the_last_window() -> None:
    old = [{"finished_at": 0.0, "clips": 1000}]
    recent = [{"finished_at": 5000.0 + 2 * i, "clips": 4} for i in range(6)]
    speed = recent_speed(old + recent, now=5020.0)
    assert RECENT_WINDOW_SECONDS < 5000.0 - 0.0
    assert speed.clips_per_second == pytest.approx(20 / 10)
    assert speed.last_finished_ago_seconds == pytest.approx(10)
    assert recent_speed(recent[:1], now=5020.0) is None


def test_folder_status_needs_no_records_at_all(tmp_path: Path) -> None:
    store.claim_output_folder(tmp_path, {"stride": 16}, {})
    status = folder_status(tmp_path, ["a", "b"])
    assert (status.missing, status.recent, status.shards, status.exit_code) == (["a", "b"], None, [], 1)


def test_shard_indices_become_an_sbatch_array() -> None:
    assert slurm_array_spec([17, 3, 40, 41, 42, 4]) == "3-4,17,40-42"
    assert slurm_array_spec([]) == ""


def test_videos_that_finished_in_one_batch_give_no_speed_and_no_eta(tmp_path: Path, videos: Path) -> None:
    """A shard whose four videos ended within one batch: their time was never measured (it was 3275 clips/s)."""
    out = tmp_path / "out"
    out.mkdir()
    batch_end = time.time() - 30
    for index, name in enumerate(["v0", "v1", "v2", "v3"]):
        finish(out, name, "0/1", batch_end + 0.001 * index)
    code, report = status_json(str(out), str(videos))
    assert (code, report["done"], report["missing"], report["recent"], report["eta_seconds"]) == (1, 4, 5, None, None)
    text = said(runner.invoke(app, ["status", str(out), str(videos)]))
    assert "Recent speed" not in text and "take about" not in text
    assert "Speed: not measured yet (the recorded videos finished together, in one batch)." in text


def test_the_speed_counts_only_the_batches_after_the_first(tmp_path: Path) -> None:
    # batch 1: 4 videos of 1 clip ending at t=100 (within 3 ms); batch 2: 4 more at t=104: 4 clips in 4 s.
    first = [{"finished_at": 100.0 + 0.001 * i, "clips": 1} for i in range(4)]
    second = [{"finished_at": 104.0 + 0.001 * i, "clips": 1} for i in range(4)]
    speed = recent_speed(first + second, now=110.0)
    assert (speed.window_seconds, speed.clips_per_second) == (pytest.approx(4.0), pytest.approx(1.0))
    assert speed.videos_per_second == pytest.approx(1.0)
    assert recent_speed(first, now=110.0) is None


def test_without_videos_status_reports_what_the_records_hold(half_done: Path) -> None:
    code, report = status_json(str(half_done))
    assert code == 1  # a failed video
    assert (report["done"], report["failed"], report["videos"], report["missing"]) == (4, 1, None, None)
    assert report["failures"][0]["video"] == "v4" and report["missing_videos"] is None
    assert [(row["shard"], row["done"], row["failed"]) for row in report["shards"]] == [("0/3", 3, 0), ("1/3", 1, 1)]
    text = said(runner.invoke(app, ["status", str(half_done)]))
    assert "4 done · 1 failed (from its records; give the VIDEOS or --metadata CSV" in text


def test_without_videos_and_without_failures_status_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    finish(out, "a", "0/1", time.time())
    assert runner.invoke(app, ["status", str(out)]).exit_code == 0


@pytest.mark.parametrize("count", [1, 2, 7, 64, 1000])
def test_per_shard_counts_equal_counting_each_shards_own_slice(tmp_path: Path, count: int) -> None:
    names = [f"v{i}" for i in range(301)]
    out = tmp_path / "out"
    out.mkdir()
    for name in names[::3]:
        store.save_features(out, name, np.zeros((0, 512), np.float32))
        store.record_video(out, {"video": name, "clips": 0})
    for name in names[1::7]:
        store.record_failure(out, name, name, "broken")
    status = folder_status(out, names, shards=count)
    done, failed = set(status.done), set(status.failed)
    expected = []
    for index in range(count):
        members = Shard(index, count).select(names)
        here = (sum(n in done for n in members), sum(n in failed for n in members))
        expected.append((f"{index}/{count}", len(members), *here, len(members) - sum(here)))
    assert [(r.shard, r.videos, r.done, r.failed, r.missing) for r in status.shards] == expected
