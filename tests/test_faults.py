"""Faults injected into real runs (issue 17): signals, damaged videos, dead workers, too little memory.

Each test injects the fault and asserts what a user sees and keeps: the exit code, the
sentence, and the bytes on disk.
"""

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
from torch import nn
from typer.testing import CliRunner

from tests.conftest import TinyNetwork
from tests.videos import make_video
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.cli.app import app
from tsp_cli.data.status import folder_status
from tsp_cli.pipeline import store
from tsp_cli.pipeline.batcher import run_jobs
from tsp_cli.pipeline.inputs import collect_jobs
from tsp_cli.pipeline.sampling import ClipSettings
from tsp_cli.pipeline.video import probe

REPO = Path(__file__).resolve().parents[1]

#: ``tsp`` itself, with the checkpoint's network replaced by a slow stand-in, so that a signal
#: lands mid-run whatever the machine's speed.
SLOW_TSP = textwrap.dedent(
    """
    import sys, time
    import tsp_cli.models.loading as loading
    from tests.conftest import TinyNetwork

    class Slow(TinyNetwork):
        def forward(self, clips):
            time.sleep(0.2)
            return super().forward(clips)

    loading.load_backbone = lambda path, backbone=None: (Slow().eval(), "r3d_18")
    from tsp_cli.cli.app import app
    sys.argv = ["tsp", *sys.argv[1:]]
    app()
    """
)


def _live_processes_in_group(group: int) -> list[str]:
    """``pid command`` of every process of a process group that still runs (zombies are not running)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == group and fields[0] != "Z":
            alive.append(f"{stat.parent.name} {text.split(' ', 2)[1]}")
    return alive


@pytest.fixture(scope="module")
def four_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for i in range(4):
        make_video(folder / f"v{i}.mp4", frames=60, fps=30)
    return folder


def _slow_extract(tmp_path: Path, videos: Path, out: Path) -> list[str]:
    script = tmp_path / "slow_tsp.py"
    script.write_text(SLOW_TSP)
    checkpoint = tmp_path / "stand-in.pth"
    checkpoint.write_bytes(b"the stand-in network ignores this file")
    options = ["--local", str(checkpoint), "--device", "cpu", "--workers", "2", "--batch-size", "2", "--stride", "4"]
    return [sys.executable, str(script), "extract", str(videos), "-o", str(out), *options]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.parametrize(
    "target", ["the main process", pytest.param("the whole job (as Slurm does)", marks=pytest.mark.slow)]
)
def test_sigterm_stops_like_ctrl_c_ends_every_worker_keeps_finished_files_and_exits_143(
    tmp_path: Path, four_videos: Path, target: str
) -> None:
    out = tmp_path / "out"
    command = _slow_extract(tmp_path, four_videos, out)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 90
    while not list(out.glob("*.npy")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert len(_live_processes_in_group(process.pid)) >= 3, "the main process and its two decoding workers"
    if target == "the main process":
        os.kill(process.pid, signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    left = _live_processes_in_group(process.pid)

    assert process.returncode == 143, stderr
    assert "Interrupted (SIGTERM). Run the same command again to resume." in stderr
    assert "Traceback" not in stderr
    assert left == [], "no decoding worker outlives the run"
    finished = sorted(out.glob("*.npy"))
    assert 1 <= len(finished) < 4, "the signal should land mid-run"
    assert [p.name for p in out.iterdir() if TEMP_MARKER in p.name] == []
    recorded = {name: record["clips"] for name, record in store.read_video_records(out).items()}
    kept = {}
    for path in finished:
        features = np.load(path)
        assert features.dtype == np.float32 and features.shape == (recorded[path.stem], 512)
        kept[path.name] = path.read_bytes()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} already done, {4 - len(finished)} to do" in rerun.stderr
    assert sorted(p.name for p in out.glob("*.npy")) == [f"v{i}.npy" for i in range(4)]
    assert {name: (out / name).read_bytes() for name in kept} == kept


# ---- row 12: a file whose end is missing ---------------------------------------------------------


def _cut_off(path: Path, keep: float = 0.4) -> Path:
    """A 20 s Matroska file of which only the first ``keep`` of the bytes remain: its header still says 20 s."""
    make_video(path, frames=300, fps=15, gop=15)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


@pytest.mark.parametrize(
    "kind",
    ["mkv", "mkv with audio", "mp4", "mp4 with audio", "webm", "avi", "variable frame rate", "one long GOP", "ts"],
)
def test_whole_files_are_never_taken_for_truncated(tmp_path: Path, kind: str) -> None:
    options: dict = {"frames": 90, "fps": 30}
    suffix = {"webm": ".webm", "avi": ".avi", "ts": ".ts"}.get(kind, ".mkv" if "mkv" in kind else ".mp4")
    if "audio" in kind:
        options["audio_first"] = True
    if kind == "webm":
        options["codec"] = "libvpx-vp9"
    if kind == "avi":
        options["codec"] = "mpeg4"
    if kind == "variable frame rate":
        options = {"timestamps": [i * 0.033 + (0.02 if i % 3 else 0) for i in range(90)]}
    if kind == "one long GOP":
        options["gop"] = 300
    info = probe(make_video(tmp_path / f"whole{suffix}", **options))
    assert info.truncated is None


def test_a_cut_off_file_is_recorded_as_truncated_with_both_durations(tmp_path: Path, tiny_network) -> None:
    videos = tmp_path / "videos"
    _cut_off(videos / "cut_off.mkv")
    make_video(videos / "whole.mkv", frames=300, fps=15, gop=15)
    truncated = probe(videos / "cut_off.mkv").truncated
    assert truncated is not None and truncated.declared_seconds == 20.0
    assert 5.0 < truncated.decoded_seconds < 10.0, "the packets of the first 40% of the bytes"

    out = tmp_path / "out"
    summary = run_jobs(collect_jobs([videos]), out, tiny_network, workers=1)
    records = store.read_video_records(out)
    assert records["cut_off"]["truncated"] is True
    assert records["cut_off"]["declared_seconds"] == 20.0
    assert records["cut_off"]["decoded_seconds"] == round(truncated.decoded_seconds, 3)
    assert records["cut_off"]["clips"] == len(np.load(out / "cut_off.npy")) > 0
    assert not {"truncated", "declared_seconds", "decoded_seconds"} & set(records["whole"])
    assert summary.truncated == [("cut_off", 20.0, truncated.decoded_seconds)]
    assert (summary.done, summary.failed) == (2, 0)

    status = folder_status(out, None)
    assert status.truncated == {"cut_off": (20.0, round(truncated.decoded_seconds, 3))}
    assert status.to_json()["truncated_videos"] == [
        {"video": "cut_off", "declared_seconds": 20.0, "decoded_seconds": round(truncated.decoded_seconds, 3)}
    ]
    shown = CliRunner().invoke(app, ["status", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert (
        f"Possibly truncated (done; the features cover what decoded): cut_off (20.0 s declared, "
        f"{truncated.decoded_seconds:.1f} s decoded)" in shown.output
    )


def test_extract_names_a_possibly_truncated_video_in_its_summary(tmp_path: Path) -> None:
    _cut_off(tmp_path / "videos" / "cut_off.mkv")
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "videos"), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        "Note: possibly truncated (the file declares more than decodes, and the features cover what decodes): "
        in result.output
    )
    assert (
        "cut_off (20.0 s declared, 7.5 s decoded). Fetch it again, delete its .npy and rerun to redo it."
        in result.output
    )


# ---- row 14: a decoding worker killed mid-run ------------------------------------------------------


@pytest.mark.skipif(
    __import__("multiprocessing").get_start_method() != "fork", reason="the patch reaches workers only through fork"
)
def test_clips_of_a_video_redone_after_its_worker_was_killed_are_counted_once(
    tmp_path: Path, tiny_network, monkeypatch
) -> None:
    from tsp_cli.pipeline import batcher, workers
    from tsp_cli.pipeline.events import ClipProgress

    videos = tmp_path / "videos"
    for name in ("a", "b"):
        make_video(videos / f"{name}.mp4", frames=150, fps=30)
    real_messages, real_run_batch = workers.video_messages, batcher._Engine.run_batch
    computed_of_b, killed = tmp_path / "computed-of-b", tmp_path / "killed"

    def run_batch(self):  # in the main process: say once some of b's clips are computed
        real_run_batch(self)
        if any(
            self.jobs[job].name == "b" and video.remaining < len(video.features) for job, video in self.videos.items()
        ):
            computed_of_b.touch()

    def killed_halfway(index, job, settings, **kwargs):  # in a worker: die (once) in the middle of b
        for sent, chunk in enumerate(real_messages(index, job, settings, **kwargs)):
            yield chunk
            if job.name == "b" and sent == 1 and not killed.exists():
                deadline = time.monotonic() + 60
                while not computed_of_b.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                killed.touch()
                os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(workers, "video_messages", killed_halfway)
    monkeypatch.setattr(batcher._Engine, "run_batch", run_batch)
    events: list = []
    out = tmp_path / "out"
    summary = run_jobs(
        collect_jobs([videos]),
        out,
        tiny_network,
        ClipSettings(stride=2),
        workers=2,
        batch_size=1,
        on_event=events.append,
    )
    assert killed.exists(), "the worker decoding b was killed"
    written = {path.stem: len(np.load(path)) for path in out.glob("*.npy")}
    assert written == {"a": 30, "b": 30} and (summary.done, summary.failed) == (2, 0)
    assert summary.clips == 60, "each clip written is counted once, however often it was computed"
    last = [event for event in events if isinstance(event, ClipProgress)][-1]
    assert last.computed == last.expected == summary.clips

    monkeypatch.undo()
    again = run_jobs(
        collect_jobs([videos]), tmp_path / "again", tiny_network, ClipSettings(stride=2), workers=2, batch_size=1
    )
    assert again.clips == 60
    np.testing.assert_array_equal(np.load(out / "b.npy"), np.load(tmp_path / "again" / "b.npy"))


# ---- row 7: out of memory --------------------------------------------------------------------------

#: What each allocator raises when it runs out (torch 2.x messages).
ALLOCATOR_ERRORS = {
    "CUDA": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "CPU": lambda: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 4816896000 bytes. Error code 12 (Cannot allocate memory)"
    ),
    "MPS": lambda: RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB, max allowed: 9.07 GB)."),
    "numpy": lambda: MemoryError("Unable to allocate 2.00 GiB for an array"),
}


class Cramped(nn.Module):
    """The tiny network run clip by clip (so a clip's features never depend on its batch), on a
    device where more than ``fits`` clips at once cannot be allocated, or nothing once ``room`` clips were computed."""

    def __init__(self, fits: int | None = None, room: int | None = None, error=ALLOCATOR_ERRORS["CUDA"]) -> None:
        super().__init__()
        self.inner, self.fits, self.room, self.error = TinyNetwork().eval(), fits, room, error
        self.computed, self.passes = 0, []

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if (self.fits is not None and len(clips) > self.fits) or (self.room is not None and self.computed >= self.room):
            raise self.error()
        self.computed += len(clips)
        self.passes.append(len(clips))
        return torch.cat([self.inner(clip[None]) for clip in clips])


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("three")
    for name, frames in (("a", 60), ("b", 90), ("c", 45)):
        make_video(folder / f"{name}.mp4", frames=frames, fps=30)
    return folder


@pytest.mark.parametrize("allocator", list(ALLOCATOR_ERRORS))
def test_a_batch_that_does_not_fit_is_split_and_writes_the_same_features(
    tmp_path: Path, three_videos: Path, allocator: str
) -> None:
    settings = ClipSettings(stride=2)
    fitting = run_jobs(collect_jobs([three_videos]), tmp_path / "fitting", Cramped(), settings, batch_size=8)
    cramped = Cramped(fits=3, error=ALLOCATOR_ERRORS[allocator])
    split = run_jobs(collect_jobs([three_videos]), tmp_path / "split", cramped, settings, batch_size=8)
    assert max(cramped.passes) == 2 and split.batch_split_to == 2, "8 halved to 4, then to 2, kept for later batches"
    assert (split.done, split.failed, split.clips) == (3, 0, fitting.clips) == (3, 0, 8 + 15 + 4)
    for name in "abc":
        np.testing.assert_array_equal(
            np.load(tmp_path / "split" / f"{name}.npy"), np.load(tmp_path / "fitting" / f"{name}.npy")
        )
    assert fitting.batch_split_to == 0


def test_errors_that_are_not_out_of_memory_are_not_retried(tmp_path: Path, three_videos: Path) -> None:
    wrong = Cramped(fits=3, error=lambda: RuntimeError("Given groups=1, weight of size [64, 3], expected input[8, 4]"))
    with pytest.raises(RuntimeError, match="Given groups=1"):
        run_jobs(collect_jobs([three_videos]), tmp_path / "out", wrong, ClipSettings(stride=2), batch_size=8)
    assert wrong.passes == []


def test_when_not_even_one_clip_fits_extract_says_so_keeps_finished_files_and_exits_1(
    tmp_path: Path, three_videos: Path, monkeypatch
) -> None:
    import tsp_cli.models.loading as loading

    cramped = Cramped(room=8)  # a's 8 clips fit; then nothing does
    monkeypatch.setattr(loading, "load_backbone", lambda path, backbone=None: (cramped, "r3d_18"))
    checkpoint = tmp_path / "stand-in.pth"
    checkpoint.write_bytes(b"the stand-in network ignores this file")
    out = tmp_path / "out"
    arguments = ["extract", str(three_videos), "-o", str(out), "--local", str(checkpoint), "--device", "cpu"]
    result = CliRunner().invoke(app, [*arguments, "--stride", "2", "--batch-size", "7", "--workers", "0"])
    assert result.exit_code == 1, result.output
    assert (
        "Error: Out of memory on cpu even for one clip at a time; lower --batch-size (its buffers are allocated ahead) "
        "or --workers (each decoding worker holds frames), or free memory, then run the same command again to "
        "resume: finished videos are kept." in result.output
    )
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(result.exception, SystemExit)
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy"] and np.load(out / "a.npy").shape == (8, 512)
    assert list(store.read_video_records(out)) == ["a"]
    assert [p.name for p in out.iterdir() if TEMP_MARKER in p.name] == []


def _cpu_refuses(clips: int) -> bool:
    try:
        torch.empty((clips, 3, 16, 112, 112), dtype=torch.float32)
    except RuntimeError:
        return True
    return False


HUGE_BATCH = 10**7  # a 24 TB batch buffer


@pytest.mark.skipif(not _cpu_refuses(HUGE_BATCH), reason="this machine's allocator promises 24 TB (overcommit)")
def test_a_batch_size_whose_buffer_cannot_be_allocated_is_split_by_the_real_allocator(
    tmp_path: Path, three_videos: Path
) -> None:
    settings = ClipSettings(stride=2)
    run_jobs(collect_jobs([three_videos]), tmp_path / "fitting", Cramped(), settings, batch_size=8)
    huge = run_jobs(collect_jobs([three_videos]), tmp_path / "huge", Cramped(), settings, batch_size=HUGE_BATCH)
    assert (huge.done, huge.failed, huge.clips) == (3, 0, 27) and 0 < huge.batch_split_to <= 27
    for name in "abc":
        np.testing.assert_array_equal(
            np.load(tmp_path / "huge" / f"{name}.npy"), np.load(tmp_path / "fitting" / f"{name}.npy")
        )
