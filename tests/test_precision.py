"""--precision: which float32 math each precision asks of cuDNN and CUDA matmuls, and that it is put back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.videos import make_video
from tsp_cli.pipeline.batcher import run_jobs
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.network import MEMORY_FORMATS, TRIAL_ORDER, Network, memory_format_of
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


# ---- the Network: memory format, batch layout, the measured choice -----------------------------


class SmallConvNet(nn.Module):
    """Two 3-D convolutions and a pooled projection: enough for oneDNN to pick layout-specific kernels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv3d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv3d(16, 32, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(32, 512)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(clips).mean(dim=(2, 3, 4)))


def filled(network: Network, count: int, seed: int = 0) -> torch.Tensor:
    batch = network.batch_buffer(count)
    batch.copy_(torch.randn(batch.shape, generator=torch.Generator().manual_seed(seed)))
    return batch


def test_on_the_cpu_the_weights_and_the_batch_buffer_are_channels_last_3d() -> None:
    network = Network(SmallConvNet(), batch_size=3, clip_len=4)
    batch = network.batch_buffer(2)
    assert network.memory_format == "channels_last_3d" == memory_format_of(batch)
    assert batch.shape == (2, 3, 4, 112, 112) and batch.dtype == torch.float32
    assert network.model is not None and network.model.body[0].weight.is_contiguous(
        memory_format=torch.channels_last_3d
    )
    forced = Network(SmallConvNet(), batch_size=3, clip_len=4, memory_format="ncdhw")
    assert memory_format_of(forced.batch_buffer(3)) == "ncdhw" and forced.batch_buffer(3).is_contiguous()


def test_channels_last_3d_changes_fp32_features_only_by_summation_order() -> None:
    channels_last = Network(SmallConvNet(), batch_size=2, clip_len=4)
    ncdhw = Network(SmallConvNet(), batch_size=2, clip_len=4, memory_format="ncdhw")
    ours, reference = channels_last.features(filled(channels_last, 2)), ncdhw.features(filled(ncdhw, 2))
    assert ours.dtype == np.float32 and ours.shape == (2, 512)
    assert np.abs(ours - reference).max() / np.abs(reference).max() < 1e-6


def test_a_dry_runs_network_gives_zero_rows_in_the_cpu_layout() -> None:
    network = Network(None, batch_size=4, clip_len=16)
    assert memory_format_of(network.batch_buffer(4)) == "channels_last_3d"
    assert np.array_equal(network.features(network.batch_buffer(3)), np.zeros((3, 512), np.float32))


@pytest.mark.parametrize(("faster", "slower"), [("channels_last_3d", "ncdhw"), ("ncdhw", "channels_last_3d")])
def test_the_measured_choice_keeps_the_format_whose_timed_batch_was_faster(faster: str, slower: str) -> None:
    """Warm-up in each format, then one timed batch in each; the faster format stays for the rest of the run."""
    seconds = {faster: 1.0, slower: 3.0}
    ticks = iter(range(1000))
    times: list[float] = []
    network_holder: list[Network] = []

    def clock() -> float:  # each batch takes its format's time; the clock is read before and after
        if len(times) % 2 == 1:
            times.append(times[-1] + seconds[network_holder[0].memory_format])
        else:
            times.append(float(next(ticks)) * 100)
        return times[-1]

    network = Network(SmallConvNet(), batch_size=2, clip_len=4, memory_format="measure", clock=clock)
    network_holder.append(network)
    reference = Network(SmallConvNet(), batch_size=2, clip_len=4, memory_format="ncdhw")
    layouts = []
    for index in range(6):
        batch = filled(network, 2, seed=index)
        layouts.append(memory_format_of(batch))
        rows = network.features(batch)
        expected = reference.features(filled(reference, 2, seed=index))
        np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert layouts[:4] == list(TRIAL_ORDER)
    assert layouts[4:] == [faster, faster] and network.trial is None and network.memory_format == faster
    assert network.model is not None and network.model.body[0].weight.is_contiguous(
        memory_format=MEMORY_FORMATS[faster]
    )


def test_a_smaller_last_batch_is_not_timed_and_runs_in_the_current_format() -> None:
    network = Network(SmallConvNet(), batch_size=2, clip_len=4, memory_format="measure")
    before = list(network.trial.order) if network.trial else []
    network.features(filled(network, 1))
    assert network.trial is not None and network.trial.order == before


def test_the_engine_feeds_the_network_batches_in_its_layout(tmp_path: Path) -> None:
    layouts = []

    class Recorder(nn.Module):
        def forward(self, clips: torch.Tensor) -> torch.Tensor:
            layouts.append(memory_format_of(clips))
            return clips.new_zeros(clips.shape[0], 512)

    video = make_video(tmp_path / "v.mp4", frames=60)
    run_jobs([VideoJob(video, "v")], tmp_path / "out", Recorder(), ClipSettings(stride=4), batch_size=2)
    assert len(layouts) >= 2 and set(layouts) == {"channels_last_3d"}


def test_reduced_precisions_fold_batch_norms_and_fp32_keeps_them() -> None:
    from tsp_cli.models.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone("r3d_18").eval()
    for module in model.modules():  # batch norms that do something, as trained ones do
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    fp32 = Network(model, precision="fp32", batch_size=2, clip_len=4)
    bf16 = Network(model, precision="bf16", batch_size=2, clip_len=4)
    assert any(isinstance(m, nn.BatchNorm3d) for m in fp32.model.modules())
    assert not any(isinstance(m, nn.BatchNorm3d) for m in bf16.model.modules())
    reference = fp32.features(filled(fp32, 2))
    folded = bf16.features(filled(bf16, 2))
    assert np.abs(folded - reference).max() / np.abs(reference).max() < 2e-2  # bf16's own rounding, no more
