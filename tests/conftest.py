"""Shared fixtures: the parity folder, checkpoints made once per run, a tiny stand-in network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tsp_cli.models.synthetic import write_checkpoint

PARITY_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "parity"
#: Variables through which torchrun tells a process its place in a job (Slurm's all start with SLURM_).
TORCHRUN_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test starts with no TSP_*, Slurm or torchrun variable from the developer's shell or job,
    and with a checkpoint cache of its own, so no test reads or fills the user's real cache."""
    for name in list(os.environ):
        if name.startswith(("TSP_", "SLURM_", "TORCHELASTIC_")) or name in TORCHRUN_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("TSP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "checkpoint-cache"))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not (PARITY_DIR / "make_checkpoint.py").is_file():
        pytest.skip("../shared/parity is absent (a user's clone): parity checks skipped")
    return PARITY_DIR


@pytest.fixture(scope="session")
def parity_checkpoint(parity_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``parity_checkpoint("r3d_18")``: the seeded checkpoint behind the reference features, made once."""
    made: dict[tuple[str, int], Path] = {}
    folder = tmp_path_factory.mktemp("parity-checkpoints")

    def make(backbone: str, heads: int = 2) -> Path:
        if (backbone, heads) not in made:
            path = folder / f"{backbone}-h{heads}.pth"
            subprocess.run(
                [
                    sys.executable,
                    str(parity_dir / "make_checkpoint.py"),
                    backbone,
                    str(path),
                    "--seed",
                    "7",
                    "--heads",
                    str(heads),
                ],
                check=True,
                capture_output=True,
            )
            made[backbone, heads] = path
        return made[backbone, heads]

    return make


@pytest.fixture(scope="session")
def r3d_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real checkpoint of our own generator (R3D-18), for CLI and checkpoint tests."""
    return write_checkpoint(tmp_path_factory.mktemp("checkpoints") / "r3d_18-test.pth", "r3d_18")


class TinyNetwork(nn.Module):
    """Stand-in for a backbone in plumbing tests: a 512-d feature that depends on every input pixel.

    Row k of its output is a fixed random projection of the clip's per-frame channel means, so
    two runs agree exactly when, and only when, they fed the same frames in the same order.
    """

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.projection = nn.Parameter(torch.randn(3 * 16, 512, generator=generator), requires_grad=False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        per_frame = clips.mean(dim=(3, 4))  # B x 3 x T
        return per_frame.flatten(1) @ self.projection


@pytest.fixture
def tiny_network() -> nn.Module:
    return TinyNetwork().eval()
