"""--precision: which float32 math each precision asks of cuDNN and CUDA matmuls, and that it is put back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.videos import make_video
from tsp_cli.pipeline.batcher import run_jobs
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.precision import PRECISIONS, float32_math
from tsp_cli.pipeline.sampling import ClipSettings


def switches() -> tuple[str, str]:
    return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("fp32", ("ieee", "ieee")), ("tf32", ("tf32", "tf32")), ("fp16", ("ieee", "ieee")), ("bf16", ("ieee", "ieee"))],
)
def test_each_precision_sets_tf32_for_convolutions_and_matmuls_only_inside_the_block(precision, expected) -> None:
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # torch's own default for convolutions
    before = switches()
    with float32_math(precision):
        assert switches() == expected
    assert switches() == before


def test_the_switches_are_restored_when_the_block_raises() -> None:
    before = switches()
    with pytest.raises(RuntimeError), float32_math("fp32"):
        raise RuntimeError("boom")
    assert switches() == before


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
def test_the_network_runs_with_the_switches_of_its_precision_and_the_caller_keeps_its_own(
    precision: str, tmp_path: Path
) -> None:
    seen = []

    class Recorder(nn.Module):
        def forward(self, clips: torch.Tensor) -> torch.Tensor:
            seen.append((switches(), torch.is_autocast_enabled("cpu")))
            return clips.new_zeros(clips.shape[0], 512)

    video = make_video(tmp_path / "v.mp4", frames=40)
    before = switches()
    run_jobs([VideoJob(video, "v")], tmp_path / "out", Recorder(), ClipSettings(stride=8), precision=precision)
    tf32 = "tf32" if precision == "tf32" else "ieee"
    assert seen and set(seen) == {((tf32, tf32), precision in ("fp16", "bf16"))}
    assert switches() == before
