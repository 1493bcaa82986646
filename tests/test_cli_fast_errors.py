"""Usage mistakes are answered before torch is imported (issue 20 item 1): at once, as pip or git do.

Timing is too noisy on a shared machine to assert; what makes the answer fast is that nothing
slow was imported when it was given, and that is asserted exactly: each command runs in a fresh
interpreter that reports, as it exits, whether torch had been imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tsp_cli.pipeline.devices import refuse_absent_device

REPO = Path(__file__).resolve().parents[1]

#: Runs ``tsp`` with sys.argv[1:] and prints, last thing on stderr, whether torch was imported.
_REPORTING_TORCH = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
    "sys.argv[0] = 'tsp'\n"
    "from tsp_cli.cli.app import main\n"
    "main()\n"
)


def run_tsp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", _REPORTING_TORCH, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["extract", "missing/", "-o", "x"], "Invalid value for 'VIDEOS': path 'missing/' does not exist."),
        (["extract", "v.mp4", "-o", "x", "--shard", "5/4"], "--shard '5/4' is out of range"),
        (["extract", "v.mp4", "-o", "x", "--local", "missing.pth"], "file 'missing.pth' does not exist."),
        (["extract", "v.mp4", "-o", "x", "--metadata", "missing.csv"], "file 'missing.csv' does not exist."),
        (["extract", "v.mp4", "-o", "x", "--stride", "0"], "Invalid value for '--stride': must be at least 1."),
        (["extract", "v.mp4", "-o", "x", "--device", "mps"], "--device mps asks for Apple MPS"),
    ],
)
def test_a_usage_mistake_exits_2_before_torch_is_imported(arguments, message, tmp_path: Path) -> None:
    (tmp_path / "v.mp4").touch()
    result = run_tsp(*arguments, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())
    assert result.stderr.strip().endswith("torch imported: False")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the driver files looked for are Linux's")
def test_cuda_without_a_gpu_driver_is_refused_without_torch(tmp_path: Path, monkeypatch) -> None:
    import tsp_cli.pipeline.devices as devices

    monkeypatch.setattr(devices, "_GPU_DEVICE_FILES", (str(tmp_path / "nvidia*"),))
    monkeypatch.setattr(devices.os.path, "exists", lambda path: False)
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(devices.DeviceError, match=f"`device` {spec} asks for CUDA, but no CUDA GPU"):
            refuse_absent_device(spec)
    refuse_absent_device("cpu")  # anything else is left to torch
    refuse_absent_device(None)
    (tmp_path / "nvidia0").touch()  # a driver: torch decides
    refuse_absent_device("cuda")


def test_cuda_without_a_gpu_exits_2_before_torch_is_imported_here(tmp_path: Path) -> None:
    if (
        any(Path("/dev").glob("nvidia*"))
        or Path("/proc/driver/nvidia").exists()
        or not sys.platform.startswith("linux")
    ):
        pytest.skip("this machine has a GPU driver: torch is asked")
    (tmp_path / "v.mp4").touch()
    result = run_tsp("extract", "v.mp4", "-o", "x", "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2 and "--device cuda asks for CUDA, but no CUDA GPU is available" in result.stderr
    assert result.stderr.strip().endswith("torch imported: False")
