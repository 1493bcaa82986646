"""``--shard auto``: which launcher's variables decide the shard, as pure functions of a mapping; and
shard-local planning, which must cut exactly the slice that cutting the whole list gave."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsp_cli.cli.errors import exit_code_for, message_for
from tsp_cli.errors import UsageError
from tsp_cli.pipeline.inputs import VideoJob, find_videos, output_name, plan_shard_jobs
from tsp_cli.pipeline.sharding import Shard, all_shards, detect_shard, device_for_local_rank
from tsp_cli.pipeline.video import VIDEO_SUFFIXES


def slurm_array(task: int, first: int = 0, last: int = 7, count: int | None = None, step: int = 1) -> dict[str, str]:
    """The variables Slurm sets in one task of ``--array=first-last[:step]``, with its SLURM_PROCID of 0."""
    count = (last - first) // step + 1 if count is None else count
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_STEP": str(step),
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_ID": "1234",
    }


def torchrun(rank: int, world_size: int, local_rank: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": "4"}


def test_a_slurm_array_task_is_its_offset_from_the_first_task() -> None:
    found = detect_shard(slurm_array(task=5, first=3, last=10))
    assert found.shard == Shard(2, 8)
    assert found.describe() == "shard 2/8 from the Slurm job array"
    assert found.local_rank is None


def test_the_array_beats_slurm_procid_which_every_array_task_also_carries() -> None:
    assert detect_shard(slurm_array(task=6)).shard == Shard(6, 8)


def test_the_array_beats_torchrun_inside_an_array_task() -> None:
    found = detect_shard({**slurm_array(task=1, last=3), **torchrun(rank=1, world_size=2, local_rank=1)})
    assert (found.shard, found.source) == (Shard(1, 4), "the Slurm job array")


def test_torchrun_rank_beats_slurm_procid_when_torchrun_runs_under_srun() -> None:
    environment = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", **torchrun(rank=6, world_size=8, local_rank=2)}
    found = detect_shard(environment)
    assert found.shard == Shard(6, 8)
    assert found.describe() == "shard 6/8 from torchrun"
    assert found.local_rank == 2


def test_slurm_tasks_are_used_when_nothing_more_specific_is_there() -> None:
    found = detect_shard({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"})
    assert found.describe() == "shard 3/4 from the Slurm tasks"


def test_google_batch_tasks_give_the_shard() -> None:
    found = detect_shard({"BATCH_TASK_INDEX": "2", "BATCH_TASK_COUNT": "5", "BATCH_JOB_UID": "j-1"})
    assert found.shard == Shard(2, 5) and found.describe() == "shard 2/5 from the Google Batch job"
    assert found.local_rank is None
    # torchrun across the job's tasks numbers every process: its RANK wins
    found = detect_shard(
        {"BATCH_TASK_INDEX": "1", "BATCH_TASK_COUNT": "2", **torchrun(rank=5, world_size=8, local_rank=1)}
    )
    assert found.shard == Shard(5, 8) and found.source == "torchrun"


def test_the_tasks_of_a_google_batch_job_select_every_video_exactly_once() -> None:
    videos = [f"video{i}" for i in range(11)]
    shards = [detect_shard({"BATCH_TASK_INDEX": str(i), "BATCH_TASK_COUNT": "4"}).shard for i in range(4)]
    assert [name for shard in shards for name in shard.select(videos)] == videos


@pytest.mark.parametrize(
    "environment",
    [
        slurm_array(task=3, first=1, last=5, count=3),  # --array=1,3,5
        slurm_array(task=4, first=0, last=8, step=4),  # --array=0-8:4
    ],
    ids=["gaps", "step"],
)
def test_arrays_with_gaps_or_steps_are_refused_with_a_hint(environment: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=r"consecutive task ids.*`shard` \$SLURM_ARRAY_TASK_ID/N") as raised:
        detect_shard(environment)
    assert exit_code_for(raised.value) == 2
    assert "use --shard $SLURM_ARRAY_TASK_ID/N" in message_for(raised.value)  # what the CLI prints


def test_no_launcher_is_a_clear_usage_error() -> None:
    with pytest.raises(
        UsageError,
        match=r"found neither a Slurm job array .*Google Batch job \(BATCH_TASK_INDEX, BATCH_TASK_COUNT\).* give `shard` i/n",
    ) as raised:
        detect_shard({"HOME": "/home/me", "CUDA_VISIBLE_DEVICES": "0"})
    assert exit_code_for(raised.value) == 2


@pytest.mark.parametrize(
    "environment, problem",
    [
        ({"RANK": "0"}, "found torchrun but no WORLD_SIZE"),
        ({"RANK": "zero", "WORLD_SIZE": "2"}, "RANK='zero', which is not a whole number"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "shard 2/2 from torchrun, which is out of range"),
        ({"BATCH_TASK_INDEX": "0"}, "found the Google Batch job but no BATCH_TASK_COUNT"),
        (
            {"BATCH_TASK_INDEX": "4", "BATCH_TASK_COUNT": "4"},
            "shard 4/4 from the Google Batch job, which is out of range",
        ),
        (
            {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1"},
            "no SLURM_ARRAY_TASK_COUNT",
        ),
    ],
)
def test_incomplete_or_garbled_variables_are_usage_errors(environment: dict[str, str], problem: str) -> None:
    with pytest.raises(UsageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        detect_shard(environment)


def test_the_tasks_of_an_array_select_every_video_exactly_once() -> None:
    videos = [f"video{i}" for i in range(23)]
    tasks = [detect_shard(slurm_array(task=task, first=10, last=16)).shard for task in range(10, 17)]
    selected = [name for shard in tasks for name in shard.select(videos)]
    assert selected == videos
    assert tasks == all_shards(7)


@pytest.mark.parametrize(
    "device, cuda_available, expected",
    [
        (None, True, "cuda:2"),
        ("auto", True, "cuda:2"),
        ("cuda", False, "cuda:2"),  # explicit cuda: the local rank picks the GPU (resolve_device then checks it)
        (None, False, None),  # no CUDA here: the default device stays the default
        ("cpu", True, "cpu"),
        ("cuda:0", True, "cuda:0"),  # an explicit index is the user's choice
    ],
)
def test_torchruns_local_rank_picks_the_gpu_only_for_cuda_or_the_default(device, cuda_available, expected) -> None:
    assert device_for_local_rank(device, 2, cuda_available) == expected


def test_without_a_local_rank_the_device_is_untouched() -> None:
    assert device_for_local_rank(None, None, True) is None
    assert device_for_local_rank("cuda", None, True) == "cuda"


# ---- shard-local planning: each task reads, checks and builds only its own share -------------

HEADER = "filename,video-duration,fps,video-frames"


def reference_planning(csv_path: Path, folder: Path, shard: Shard) -> list[VideoJob]:
    """What planning did before it became shard-local: every row through pandas, then the linspace cut."""
    table = pd.read_csv(csv_path)
    jobs = [
        VideoJob(folder / str(name), output_name(str(name)), float(rate), int(count))
        for name, rate, count in zip(table["filename"], table["fps"], table["video-frames"], strict=True)
    ]
    bounds = np.linspace(0, len(jobs), shard.count + 1).astype(int)
    return jobs[bounds[shard.index] : bounds[shard.index + 1]]


def write_csv(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


@pytest.fixture
def listed(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder with 53 (empty) videos in class folders; planning only checks that they exist."""
    folder = tmp_path / "videos"
    names = [f"class {i % 4}/v{i:03d}.{('mp4', 'mkv', 'a.webm')[i % 3]}" for i in range(52)] + ["odd, name.mp4"]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    return folder, names


@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_shard_local_planning_equals_cutting_the_whole_list_for_every_shard(tmp_path, listed, quoted, newline):
    folder, names = listed
    rows = [f"{name},{i / 7},{25 + i % 6}.0,{30 * i}" for i, name in enumerate(names[:-1])]
    lines = ["extra," + HEADER] + [f"x{i}," + row for i, row in enumerate(rows)]
    if quoted:  # a name with a comma must be quoted; the blank lines are skipped, as pandas skips them
        lines[20:20] = ["", f'xq,"{names[-1]}",1.0,30.0,30', "   "]
    csv_path = write_csv(tmp_path / "meta.csv", lines, newline)
    for count in (1, 2, 3, 7, 16, 53, 64):
        for index in range(count):
            shard = Shard(index, count)
            assert plan_shard_jobs([folder], csv_path, shard) == reference_planning(csv_path, folder, shard), shard
    assert sum(len(plan_shard_jobs([folder], csv_path, Shard(i, 5))) for i in range(5)) == len(names) - 1 + quoted


def test_rows_of_other_shards_are_neither_checked_nor_looked_up(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    rows = [f"v{i}.mp4,1.0,30.0,30" for i in range(40)]
    rows[30] = "v30.mp4,1.0,thirty,30"  # shard 3/4 holds rows 30-39; no file exists beyond row 9
    rows[31] = "v31.mp4,1.0,30.0,inf"
    for i in range(10):
        (folder / f"v{i}.mp4").touch()
    csv_path = write_csv(tmp_path / "meta.csv", [HEADER, *rows])
    assert [job.name for job in plan_shard_jobs([folder], csv_path, Shard(0, 4))] == [f"v{i}" for i in range(10)]
    with pytest.raises(UsageError, match=r"10 videos listed .* are not in"):
        plan_shard_jobs([folder], csv_path, Shard(1, 4))
    with pytest.raises(UsageError, match=r"no usable fps or video-frames on line 32 \(v30.mp4\), line 33 \(v31.mp4\)"):
        plan_shard_jobs([folder], csv_path, Shard(3, 4))


def test_planning_one_shard_holds_memory_for_its_rows_only(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(20):
        (folder / f"v{i:06d}.mp4").touch()
    csv_path = write_csv(tmp_path / "meta.csv", [HEADER] + [f"v{i:06d}.mp4,10.0,30.0,300" for i in range(20_000)])
    tracemalloc.start()
    try:
        jobs = plan_shard_jobs([folder], csv_path, Shard(0, 1000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [job.name for job in jobs] == [f"v{i:06d}" for i in range(20)]
    assert peak < 200_000  # the whole list as pandas rows and jobs took ~10 MB here


def rglob_reference(paths: list[Path]) -> list[tuple[Path, str]]:
    """The folder scan as it was, with Path.rglob and Path.resolve: what the faster scan must reproduce.

    Hidden files and folders inside a folder (``._x.mp4`` from macOS, ``.Trash``) are not videos."""
    videos: dict[Path, tuple[Path, str]] = {}
    for root in paths:
        if root.is_dir():
            found = [
                p
                for p in root.rglob("*")
                if p.suffix.lower() in VIDEO_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
                and p.is_file()
            ]
            for path in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
                videos.setdefault(path.resolve(), (path, path.relative_to(root).as_posix()))
        else:
            videos.setdefault(root.resolve(), (root, root.name))
    return list(videos.values())


def test_the_scandir_scan_finds_what_rglob_found(tmp_path):
    data = tmp_path / "data"
    for name in [
        "b/x.webm",
        "a/z.mp4",
        "a/y.MKV",
        "c.avi",
        "notes.txt",
        "a/deep/er/w.ts",
        ".hidden.mp4",
        "._z.mp4",
        ".Trash/t.mp4",
        "dir.mp4/in.mp4",
    ]:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(b"")
    (data / "link-to-z.mp4").symlink_to(data / "a" / "z.mp4")  # the same file twice: kept once, first by order
    # Followed now (as find -L), but its x.webm is b/x.webm again, kept once; so rglob's list still holds.
    (data / "linked-folder").symlink_to(data / "b", target_is_directory=True)
    (data / "dangling.mp4").symlink_to(data / "nowhere.mp4")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"")
    (data / "q.mov").symlink_to(outside)
    inputs = [data / "a", data, outside, data / "c.avi"]
    expected = rglob_reference(inputs)
    assert [(video.path, video.filename) for video in find_videos(inputs)] == expected
    assert [filename for _, filename in expected] == [
        "deep/er/w.ts",
        "y.MKV",
        "z.mp4",
        "b/x.webm",
        "c.avi",
        "dir.mp4/in.mp4",
        "q.mov",
    ]


def test_a_folder_scan_builds_jobs_for_its_shard_and_refuses_clashes_anywhere(tmp_path):
    for i in range(10):
        (tmp_path / "v" / f"v{i}.mp4").parent.mkdir(exist_ok=True)
        (tmp_path / "v" / f"v{i}.mp4").touch()
    assert [job.name for job in plan_shard_jobs([tmp_path / "v"], None, Shard(2, 3))] == ["v6", "v7", "v8", "v9"]
    (tmp_path / "v" / "v9.mkv").touch()
    with pytest.raises(UsageError, match="same feature file: v9"):
        plan_shard_jobs([tmp_path / "v"], None, Shard(0, 3))
