"""Scale-out: torchrun, Slurm arrays and ``--devices`` give every video exactly once, and never corrupt a folder."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.videos import make_two_clips_and_a_short_one, make_video
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.cli import fanout
from tsp_cli.cli.app import app
from tsp_cli.cli.fanout import FanoutResult, ShardRun
from tsp_cli.errors import UsageError
from tsp_cli.pipeline import records, store
from tsp_cli.pipeline.events import ClipProgress, RunStarted, RunSummary, VideoEnded
from tsp_cli.pipeline.extraction import extract_features
from tsp_cli.pipeline.sharding import Shard

runner = CliRunner()
BIN = Path(sys.executable).parent
#: What an output folder may hold: features, the manifest, and the records' folder.
OUTPUT_SUFFIXES = {".npy", ".json", ""}


def clean_environment(**extra: str) -> dict[str, str]:
    """The test's environment (launcher variables already removed by conftest) for a child process."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_two_clips_and_a_short_one(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven videos too short for a clip: they exercise every path but the network, in milliseconds."""
    folder = tmp_path_factory.mktemp("short")
    for index in range(7):
        make_video(folder / f"s{index}.mp4", frames=10, fps=30)
    return folder


def records_by_video(out: Path) -> dict[str, list[dict]]:
    by_video: dict[str, list[dict]] = {}
    for record in records.read_kind(out, records.VIDEOS):
        by_video.setdefault(record["video"], []).append(record)
    return by_video


def assert_folder_is_clean(out: Path) -> None:
    """Only whole outputs: no temporary files, no logs, every line of every record file valid JSON."""
    names = [path.name for path in out.iterdir()]
    assert not [name for name in names if TEMP_MARKER in name], names
    assert {Path(name).suffix for name in names} <= OUTPUT_SUFFIXES, names
    assert [name for name in names if not Path(name).suffix] in ([], [records.RECORDS_DIR]), names
    json.loads((out / store.MANIFEST_NAME).read_text())
    for path in (out / records.RECORDS_DIR).glob("*"):
        assert path.suffix == ".jsonl", path
        for line in path.read_text().splitlines():
            json.loads(line)


# ---- torchrun and Slurm --------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_gives_every_video_once_with_the_features_of_one_process(
    videos: Path, r3d_checkpoint: Path, tmp_path: Path
) -> None:
    single, ranked = tmp_path / "single", tmp_path / "torchrun"
    extract_features([videos], single, checkpoint=r3d_checkpoint, device="cpu", workers=0)
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc-per-node",
        "2",
        "--no-python",
        "--",
        str(BIN / "tsp"),
        "extract",
        str(videos),
        "-o",
        str(ranked),
        "--local",
        str(r3d_checkpoint),
        "--shard",
        "auto",
        "--device",
        "cpu",
        "--workers",
        "0",
    ]
    result = subprocess.run(command, check=False, env=clean_environment(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Using shard 0/2 from torchrun." in result.stderr and "Using shard 1/2 from torchrun." in result.stderr
    records = records_by_video(ranked)
    assert {name: [r["shard"] for r in rs] for name, rs in records.items()} == {
        "a": ["0/2"],
        "b": ["1/2"],
        "c": ["1/2"],
    }
    for name in "abc":
        ours, reference = np.load(ranked / f"{name}.npy"), np.load(single / f"{name}.npy")
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    assert_folder_is_clean(ranked)


def slurm_array_task(task: int, count: int) -> dict[str, str]:
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": str(count - 1),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_STEP": "1",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
    }


@pytest.mark.slow
def test_a_slurm_array_of_three_tasks_covers_every_video_exactly_once(
    short_videos: Path, r3d_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    for task in range(3):
        result = runner.invoke(
            app,
            [
                "extract",
                str(short_videos),
                "-o",
                str(out),
                "--local",
                str(r3d_checkpoint),
                "--shard",
                "auto",
                "--device",
                "cpu",
                "-j",
                "0",
            ],
            env=slurm_array_task(task, 3),
        )
        assert result.exit_code == 0, result.output
        assert f"Using shard {task}/3 from the Slurm job array." in result.output
    records = records_by_video(out)
    assert sorted(records) == [f"s{i}" for i in range(7)]
    assert all(len(rs) == 1 for rs in records.values())
    # linspace(0, 7, 4).astype(int) = 0, 2, 4, 7
    assert {name: rs[0]["shard"] for name, rs in records.items()} == {
        "s0": "0/3",
        "s1": "0/3",
        "s2": "1/3",
        "s3": "1/3",
        "s4": "2/3",
        "s5": "2/3",
        "s6": "2/3",
    }


def test_shard_auto_without_a_launcher_cannot_start(short_videos: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["extract", str(short_videos), "-o", str(tmp_path / "out"), "--shard", "auto", "--dry-run"]
    )
    assert result.exit_code == 2
    assert "Error: --shard auto found neither a Slurm job array" in result.output
    assert "Traceback" not in result.output


def test_an_explicit_shard_wins_over_the_launcher(short_videos: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["extract", str(short_videos), "-o", str(tmp_path / "out"), "--shard", "1/4", "--dry-run", "-j", "0"],
        env=slurm_array_task(0, 3),
    )
    assert result.exit_code == 0, result.output
    assert "from the Slurm job array" not in result.output
    assert "shard 1/4: 2 videos" in result.output  # linspace(0, 7, 5).astype(int) = 0, 1, 3, 5, 7


def test_under_torchrun_failed_videos_exit_0_so_that_the_other_ranks_go_on(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    arguments = [
        "extract",
        str(tmp_path / "videos"),
        "-o",
        str(tmp_path / "out"),
        "--shard",
        "auto",
        "--dry-run",
        "-j",
        "0",
        "--device",
        "cpu",
    ]
    ranked = runner.invoke(app, arguments, env={"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    assert ranked.exit_code == 0, ranked.output
    assert "1 failed" in ranked.output and "torchrun stops every other rank" in " ".join(ranked.output.split())
    arrayed = runner.invoke(app, arguments, env=slurm_array_task(0, 1))
    assert arrayed.exit_code == 1, arrayed.output


# ---- --devices ----------------------------------------------------------------------------


@pytest.mark.slow
def test_devices_run_one_shard_per_device_into_one_folder(
    short_videos: Path, r3d_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "extract",
            str(short_videos),
            "-o",
            str(out),
            "--local",
            str(r3d_checkpoint),
            "--devices",
            "cpu,cpu",
            "-j",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Running 2 shards on cpu, cpu" in result.output
    assert "0 done, 0 skipped, 7 with no clips, 0 failed" in result.output
    records = records_by_video(out)
    assert sorted(records) == [f"s{i}" for i in range(7)] and all(len(rs) == 1 for rs in records.values())
    assert sorted(rs[0]["shard"] for rs in records.values()) == ["0/2"] * 3 + ["1/2"] * 4
    assert_folder_is_clean(out)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--devices", "cpu,cpu", "--shard", "0/2"], "Give --devices or --shard, not both"),
        (["--devices", "cpu,cpu", "--device", "cpu"], "Give --devices or --device, not both"),
        (["--devices", "0"], "--devices 0 starts nothing"),
        (["--devices", "cpu,,cpu"], "has an empty entry"),
        (["--devices", "cpu,tpu"], "--devices cpu,tpu cannot run here: tpu is not a device"),
        (["--devices", "2"], "--devices 2 (that is cuda:0, cuda:1) cannot run here: cuda:0 asks for CUDA"),
    ],
)
def test_devices_that_cannot_work_are_refused_before_anything_starts(
    short_videos: Path, tmp_path: Path, options, message
) -> None:
    result = runner.invoke(app, ["extract", str(short_videos), "-o", str(tmp_path / "out"), "--dry-run", *options])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_a_dry_run_on_devices_totals_what_its_shards_checked_and_calls_a_failed_video_no_crash(
    short_videos: Path, tmp_path: Path
) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(short_videos, videos)
    make_video(videos / "long.mp4", frames=64, fps=30)  # 2 clips at stride 16
    (videos / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["extract", str(videos), "-o", str(out), "--dry-run", "--devices", "cpu,cpu", "-j", "0"]
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    # as one device says it: the combined summary, the failed video named with its reason
    assert "all devices: 9 videos, 0 already done, 9 to do on cpu, cpu with 0 decoding workers." in text
    assert "1 checked (dry run), 0 skipped, 7 with no clips, 1 failed · 2 clips in" in text
    assert "✗ broken: " in text and "○ s0: shorter than one clip, would be saved as 0 clips" in text
    assert "Shorter than one clip (would be saved as 0 clips): s0, s1, s2, s3, s4, s5, s6" in text
    assert "stopped" not in text and "could not start" not in text
    assert "1 video failed, listed above. It cannot be decoded as it is" in text
    assert not out.exists()


def test_a_count_of_devices_means_the_first_cuda_devices() -> None:
    assert fanout.parse_devices("3") == ["cuda:0", "cuda:1", "cuda:2"]
    assert fanout.parse_devices(" cuda:1, cpu ") == ["cuda:1", "cpu"]


def test_a_crashing_shard_is_reported_with_its_log_and_sets_the_exit_code(tmp_path: Path) -> None:
    result = fanout.run_shards(["--no-such-option"], ["cpu", "cpu"], tmp_path, poll_seconds=0.05)
    assert [run.exit_code for run in result.runs] == [2, 2]
    assert result.crashed == result.runs and result.exit_code == 2 and result.summaries == []
    assert any("No such option" in line for line in result.runs[0].log_tail())


def shard_run(exit_code: int | None, reported: bool = True) -> ShardRun:
    summary = RunSummary(failures=[("v", "broken")] * int(exit_code == 1)) if reported else None
    return ShardRun(Shard(0, 2), "cpu", Path("log"), exit_code=exit_code, summary=summary)


@pytest.mark.parametrize(
    "codes, reported, crashed, exit_code",
    [
        ([0, 0], True, 0, 0),
        ([0, 1], True, 0, 1),  # a video failed, and the child said so in its report: not a crash
        ([0, 1], False, 1, 1),  # exit 1 without a report: a traceback
        ([1, -9], True, 1, 137),  # killed by SIGKILL
        ([0, 2], True, 1, 2),
    ],
)
def test_the_exit_code_is_the_worst_childs_and_at_least_1_on_a_crash(codes, reported, crashed, exit_code) -> None:
    result = FanoutResult([shard_run(code, reported) for code in codes], Path("logs"), 1.0)
    assert (len(result.crashed), result.exit_code) == (crashed, exit_code)


def test_a_childs_events_and_summary_come_back_as_the_same_typed_values(tmp_path: Path) -> None:
    clock = [0.0]
    report = fanout.ChildReport(tmp_path / "r.jsonl", clock=lambda: clock[0])
    started = RunStarted(videos=3, to_do=2, skipped=1, workers=2, device="cpu", notes=("a note",))
    summary = RunSummary(videos=3, done=1, clips=7, failures=[("b", "no stream")], retryable_failures=0)
    summary.high_bit_depth.append(("c", "yuv420p10le"))
    report(started)
    report(ClipProgress(computed=0, expected=4, probed=1, unprobed=1))
    report(ClipProgress(computed=4, expected=4, probed=1, unprobed=1))  # within half a second: held back
    report(VideoEnded("b", "failed", 0, "no stream"))  # ... and written before the video's end
    report.finish(summary)
    written = list(records.FileFollower(tmp_path / "r.jsonl", from_end=False).new_records())
    events = [fanout.read_event(record) for record in written]
    assert events == [
        started,
        ClipProgress(0, 4, 1, 1),
        ClipProgress(4, 4, 1, 1),
        VideoEnded("b", "failed", 0, "no stream"),
        summary,
    ]
    assert fanout.read_event({"type": "os.system", "command": "x"}) is None


def test_shard_summaries_combine_into_one_runs() -> None:
    first = RunSummary(videos=3, done=2, clips=10, wall_seconds=9.0, data_wait_seconds=1.0)
    first.no_clips_names.append("s")
    second = RunSummary(videos=2, done=1, clips=4, wall_seconds=5.0, data_wait_seconds=3.0)
    second.failures.append(("b", "no stream"))
    combined = fanout.combine_summaries([first, second], wall_seconds=10.0)
    assert (combined.videos, combined.done, combined.no_clips, combined.failed, combined.clips) == (5, 3, 1, 1, 14)
    assert combined.failures == [("b", "no stream")] and combined.no_clips_names == ["s"]
    assert combined.wall_seconds == 10.0 and combined.clips_per_second == 1.4
    assert combined.data_wait_share == pytest.approx(0.2)  # the shards' average wait: 2 s of 10


def test_the_shards_events_read_as_one_runs() -> None:
    seen: list = []
    events = fanout.ShardEvents(2, seen.append)
    events.take(0, RunStarted(videos=3, to_do=3, skipped=0, workers=1, device="cpu"))
    events.take(0, VideoEnded("a", "no clips", 0))
    assert seen == []  # not until every shard has started: then the held events follow
    events.take(1, RunStarted(videos=2, to_do=1, skipped=1, workers=1, device="cuda:1", notes=("n",)))
    assert seen == [
        RunStarted(videos=5, to_do=4, skipped=1, workers=2, device="cpu, cuda:1", notes=("n",)),
        VideoEnded("a", "no clips", 0),
    ]
    events.take(0, ClipProgress(computed=32, expected=40, probed=2, unprobed=1))
    assert seen[-1] == ClipProgress(computed=32, expected=40, probed=2, unprobed=2)  # + shard 1's one to do
    assert seen[-1].estimated_total == 40 + 2 * 20
    events.take(1, ClipProgress(computed=8, expected=10, probed=1, unprobed=0))
    assert seen[-1] == ClipProgress(computed=40, expected=50, probed=3, unprobed=1)
    events.take(1, VideoEnded("b", "failed", 0, "no stream"))
    assert seen[-1] == VideoEnded("b", "failed", 0, "no stream")


def test_progress_is_read_from_whole_record_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "videos-host-1-abc.jsonl"
    path.write_text('{"video": "old"}\n')
    follower = records.FileFollower(path, from_end=True)  # what was there before is not new
    with path.open("a") as handle:
        handle.write('{"video": "a", "shard": "0/2"}\n{"video": "b", "sh')
    assert [r["video"] for r in follower.new_records()] == ["a"]
    with path.open("a") as handle:
        handle.write('ard": "1/2"}\n')
    assert [r["video"] for r in follower.new_records()] == ["b"]
    assert list(follower.new_records()) == []
    assert [r["video"] for r in records.FileFollower(path, from_end=False).new_records()] == ["old", "a", "b"]


# ---- several writers in one folder ------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_on_the_same_shard_at_once_leave_whole_identical_files(
    videos: Path, r3d_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "tsp_cli",
        "extract",
        str(videos),
        "-o",
        str(out),
        "--local",
        str(r3d_checkpoint),
        "--shard",
        "0/1",
        "--device",
        "cpu",
        "-j",
        "0",
    ]
    processes = [
        subprocess.Popen(command, env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=180)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert_folder_is_clean(out)
    assert {name: np.load(out / f"{name}.npy").shape for name in "abc"} == {"a": (1, 512), "b": (1, 512), "c": (0, 512)}
    assert set(records_by_video(out)) == {"a", "b", "c"}


def _claim_at_the_barrier(folder: str, barrier, results) -> None:
    barrier.wait()
    try:
        store.claim_output_folder(Path(folder), {"checkpoint_sha256": "abc", "stride": 16}, {"tsp": "1"})
        results.put("ok")
    except UsageError as error:
        results.put(str(error))


def test_two_processes_creating_the_manifest_at_the_same_moment_both_go_on(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        folder = tmp_path / f"out{attempt}"
        folder.mkdir()
        barrier, results = context.Barrier(2), context.Queue()
        racers = [context.Process(target=_claim_at_the_barrier, args=(str(folder), barrier, results)) for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=30)
        assert [results.get(timeout=5), results.get(timeout=5)] == ["ok", "ok"]
        assert json.loads((folder / store.MANIFEST_NAME).read_text())["settings"]["stride"] == 16
        assert [p.name for p in folder.iterdir()] == [store.MANIFEST_NAME]


def test_without_hard_links_the_manifest_is_created_exclusively_and_compared(tmp_path: Path, monkeypatch) -> None:
    """A file system that refuses ``link`` (EPERM): an exclusive create decides, the loser compares."""
    import errno

    def no_links(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    assert store.claim_output_folder(tmp_path, {"stride": 16}, {"tsp": "1"}) == []
    assert store.claim_output_folder(tmp_path, {"stride": 16}, {"tsp": "2"}) == [
        "tsp is 2 now, 1 when this folder was started."
    ]
    with pytest.raises(UsageError, match="stride 16 there vs 4 now"):
        store.claim_output_folder(tmp_path, {"stride": 4}, {"tsp": "1"})
    assert [p.name for p in tmp_path.iterdir()] == [store.MANIFEST_NAME]
