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

from tests.videos import make_video
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.pipeline import store

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
