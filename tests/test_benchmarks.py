"""Smoke test of the benchmark harness (``benchmarks/``) on tiny generated videos, so it cannot rot.

The per-clip baseline must compute the very clips the engine feeds its network (else the
speed-up it reports compares different work), the floor must decode every frame, the memory
poller must see a process's memory, and the CLI's summary line must still parse.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from benchmarks import baseline, floor, memory, pipeline
from benchmarks.report import Row, as_markdown, as_text, at_least, at_most
from benchmarks.videos import VideoSpec, generate
from tsp_cli.cli.app import app
from tsp_cli.pipeline.batcher import run_jobs
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.sampling import ClipSettings


class RecordingNetwork(nn.Module):
    """Keeps every batch it is fed; its 512-d output is a fixed projection of per-frame channel means."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.projection = nn.Parameter(torch.randn(3 * 16, 512, generator=generator), requires_grad=False)
        self.batches: list[torch.Tensor] = []

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        self.batches.append(clips.clone())
        return clips.mean(dim=(3, 4)).flatten(1) @ self.projection


@pytest.mark.parametrize("fps", [30, 25], ids=["30fps", "25fps"])
def test_baseline_clips_equal_the_engines_and_floor_decodes_every_frame(tmp_path, fps):
    # 2 s, keyframes every 25 frames and B-frames, so per-clip reads seek back and reorder.
    spec = VideoSpec("tiny", 96, 72, 2, fps=fps, gop=25, preset="medium", seed=3)
    video = generate(spec, tmp_path / spec.filename)
    settings = ClipSettings(stride=2)

    network = RecordingNetwork().eval()
    summary = run_jobs([VideoJob(video, "tiny")], tmp_path / "out", network, settings, workers=0, batch_size=3)
    engine_clips = torch.cat(network.batches)
    features = np.load(tmp_path / "out" / "tiny.npy")

    plan = baseline.plan_clips([video], settings)
    reference = torch.stack([baseline.read_clip(clip) for clip in plan])
    assert summary.failed == 0 and len(plan) == summary.clips == len(features) >= 5
    assert reference.shape == engine_clips.shape == (len(plan), 3, 16, 112, 112)
    torch.testing.assert_close(engine_clips, reference, atol=3e-5, rtol=0)
    with torch.inference_mode():
        expected = (reference.mean(dim=(3, 4)).flatten(1) @ network.projection).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-3, rtol=1e-5)

    # the harness's measuring functions run and count what they should
    assert floor.decode_all(video) == spec.frames
    seconds, frames, cpu = floor.measure_floor([video, video], processes=2)
    assert frames == 2 * spec.frames and seconds > 0 and cpu > 0
    threads = torch.get_num_threads()
    floor.measure_floor([video], processes=1, with_pixels=True)
    assert torch.get_num_threads() == threads, "the floor's one-thread setting belongs to its pool, not to the bench"
    result = baseline.measure_baseline([video], settings, workers=0, batch_size=4, limit=3)
    assert result["clips_total"] == len(plan) and 0 < result["clips_run"] <= 3
    assert result["scaled_seconds"] == pytest.approx(result["seconds"] * len(plan) / result["clips_run"])


def test_the_cli_summary_line_still_parses(tmp_path):
    video = generate(VideoSpec("tiny", 64, 48, 1.2, gop=25, preset="ultrafast"), tmp_path / "tiny.mp4")
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(video),
            "-o",
            str(tmp_path / "out"),
            "--dry-run",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--stride",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    found = pipeline._SUMMARY.search(result.output)
    assert found and int(found.group(1)) == 3, result.output


def test_memory_poller_sees_a_process_tree():
    # the parent holds 40 MB and starts a child that holds 60 MB (touched, so resident): the sum must see both
    script = (
        "import subprocess, sys, time\n"
        "held = b'x' * 40_000_000\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; held = b\"x\" * 60_000_000; time.sleep(0.6)'])\n"
        "child.wait()\n"
    )
    result = memory.measure_peak([sys.executable, "-c", script], interval=0.02)
    assert result["processes"] >= 2
    assert result["peak_rss_mib"] > 95 and result["peak_pss_mib"] > 80


def test_report_renders_rows():
    ratio, target, outcome = at_most(1.5, 2.0)
    rows = [
        "a set",
        Row("dry run", "1.50 s", "3 s", "floor 1.00 s", ratio, target, outcome),
        Row("x", "1 s", "", "", *at_least(3.0, 5.0)),
    ]
    text, markdown = as_text(rows), as_markdown(rows)
    assert "1.50x" in text and "pass" in text and "MISS" in text and "[a set]" in text
    assert markdown.count("\n") == 4 and "| 3 s |" in markdown and re.search(r"\| dry run \| 1\.50 s \|", markdown)


def test_bench_gpu_runs_every_part_on_the_cpu_as_a_smoke_test(tmp_path, capsys):
    """``make bench-gpu`` on the CPU, tiny: the network in both layouts, a dry run, an end-to-end run, one table."""
    from benchmarks import gpu

    assert gpu.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    layouts = {(row["precision"], row["memory_format"]) for row in results["network"]}
    assert layouts == {("fp32", "ncdhw"), ("fp32", "channels_last_3d")}
    assert all(row["clips_per_second"] > 0 and row["share_of_peak"] > 0 for row in results["network"])
    (dry_run,) = results["input"]["160x120"]
    (e2e,) = results["e2e"]
    assert dry_run["clips"] == e2e["clips"] == 2 and e2e["precision"] == "fp32"
    table = capsys.readouterr().out
    for heading in ("network alone: r3d_18", "input pipeline: dry run, 160x120", "end to end r3d_18 fp32, 2 clips"):
        assert heading in table
