"""``--shard auto``: which launcher's variables decide the shard, as pure functions of a mapping."""

from __future__ import annotations

import pytest

from tsp_cli.cli.errors import exit_code_for
from tsp_cli.errors import UsageError
from tsp_cli.pipeline.sharding import Shard, all_shards, detect_shard, device_for_local_rank


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


@pytest.mark.parametrize(
    "environment",
    [
        slurm_array(task=3, first=1, last=5, count=3),  # --array=1,3,5
        slurm_array(task=4, first=0, last=8, step=4),  # --array=0-8:4
    ],
    ids=["gaps", "step"],
)
def test_arrays_with_gaps_or_steps_are_refused_with_a_hint(environment: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=r"consecutive task ids.*--shard \$SLURM_ARRAY_TASK_ID/N") as raised:
        detect_shard(environment)
    assert exit_code_for(raised.value) == 2


def test_no_launcher_is_a_clear_usage_error() -> None:
    with pytest.raises(UsageError, match=r"found neither a Slurm job array .* give --shard i/n instead") as raised:
        detect_shard({"HOME": "/home/me", "CUDA_VISIBLE_DEVICES": "0"})
    assert exit_code_for(raised.value) == 2


@pytest.mark.parametrize(
    "environment, problem",
    [
        ({"RANK": "0"}, "found torchrun but no WORLD_SIZE"),
        ({"RANK": "zero", "WORLD_SIZE": "2"}, "RANK='zero', which is not a whole number"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "shard 2/2 from torchrun, which is out of range"),
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
