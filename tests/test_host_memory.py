"""glibc keeps the blocks a CPU forward pass frees, so the next batch does not fault them in again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tsp_cli.pipeline import host_memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")

#: Allocate, touch and free a 64 MB block; print how much free memory glibc's heap then holds.
_HEAP_AFTER_A_FREED_BLOCK = """
import ctypes, json, sys
import numpy as np
from tsp_cli.pipeline.host_memory import keep_freed_memory, release_kept_memory
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Mallinfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
np.ones(16 * 2**20, np.float32)
free_in_heap = mallinfo2().fordblks
released = release_kept_memory()
print(json.dumps({"kept": kept, "free_in_heap": free_in_heap, "released": released, "after_release": mallinfo2().fordblks}))
"""


def _heap_after_a_freed_block(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _HEAP_AFTER_A_FREED_BLOCK, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@linux_only
def test_a_freed_block_stays_in_the_heap_for_the_next_batch() -> None:
    default, kept = _heap_after_a_freed_block("default"), _heap_after_a_freed_block("keep")
    block = 64 * 2**20
    assert kept["kept"] is True
    assert default["free_in_heap"] < block  # glibc gave the block back to the kernel: the next one faults in
    assert kept["free_in_heap"] >= block  # kept: the next batch's block of that size is served from it
    # Before workers fork, the kept memory goes back, so that no kept page is shared copy-on-write.
    assert (default["released"], kept["released"]) == (False, True)
    assert kept["after_release"] < block


def test_the_kept_memory_is_released_before_decoding_workers_fork(
    tmp_path: Path, tiny_network, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.videos import make_video
    from tsp_cli.pipeline import batcher
    from tsp_cli.pipeline.inputs import collect_jobs

    make_video(tmp_path / "videos" / "a.mp4", frames=40, fps=15)
    releases: list[int] = []
    monkeypatch.setattr(batcher, "release_kept_memory", lambda: releases.append(1) or True)
    jobs = collect_jobs([tmp_path / "videos"])
    batcher.run_jobs(jobs, tmp_path / "in-process", tiny_network, workers=0)
    assert releases == []  # no fork, nothing to release
    summary = batcher.run_jobs(jobs, tmp_path / "workers", tiny_network, workers=1)
    assert releases == [1] and summary.done == 1


@linux_only
@pytest.mark.parametrize("setting", host_memory.USER_ALLOCATOR_SETTINGS)
def test_a_user_who_chose_the_allocator_is_left_alone(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_memory, "_kept", False)
    assert host_memory.keep_freed_memory({setting: "anything"}) is False
    assert host_memory._kept is False


def test_off_linux_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_memory, "_kept", False)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert host_memory.keep_freed_memory({}) is False


def test_a_cpu_network_asks_for_it_and_a_dry_run_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch import nn

    from tsp_cli.pipeline.network import Network

    asked: list[bool] = []
    monkeypatch.setattr("tsp_cli.pipeline.network.keep_freed_memory", lambda: asked.append(True) or True)
    assert Network(None, batch_size=1, clip_len=1).keeps_freed_memory is False
    assert asked == []
    assert Network(nn.Identity(), batch_size=1, clip_len=1).keeps_freed_memory is True
    assert asked == [True]


def test_doctor_says_how_freed_memory_is_handled() -> None:
    assert host_memory.allocator_state({"LD_PRELOAD": "libjemalloc.so"}) == "as the user set it (LD_PRELOAD)"
    if sys.platform.startswith("linux"):
        assert host_memory.allocator_state({}) == "kept for the next batch (glibc thresholds raised)"
