"""How fast this machine decodes and runs the network, which side bounds a run, and the settings to use.

Everything is measured in this process, briefly: a warm-up then the best of a few timed passes.
The network is timed on one small backbone (R3D-18 by default) through the same
:class:`~tsp_cli.pipeline.network.Network` a run uses; the other backbones' speeds are
*estimated* from its GFLOP/s and their own GFLOP per clip (counted with
``torch.utils.flop_counter``, 2 per multiply-add, on meta tensors: no arithmetic), and labelled so.
Decoding is timed on generated H.264 videos (a panning random texture) through the real dry-run
pipeline in one process: decode, RGB, the recipe's resize and crop, batch assembly.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsp_cli.models.registry import BACKBONES
from tsp_cli.pipeline.network import MEMORY_FORMATS, Network, default_memory_format

#: Source frames per clip at the default recipe (stride 16 at 15 fps) from a 30 fps video.
SOURCE_FPS = 30
DEFAULT_STRIDE = 16


@dataclass(frozen=True)
class Timing:
    """How much to measure: a small backbone, a few clips, short videos (the whole doctor under a minute on 2 cores)."""

    backbone: str = "r3d_18"
    batch_size: int = 4
    repeats: int = 2
    #: The matmul peak is the best of many short products: robust to other load on the machine.
    matmul_size: int = 2048
    matmul_repeats: int = 5
    #: (width, height, frames) of the generated decoding videos, at 30 fps.
    videos: tuple[tuple[int, int, int], ...] = ((320, 240, 96), (1280, 720, 48))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(function, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls, after one untimed warm-up call."""
    function()
    best = math.inf
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        function()
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


#: The dtype of a matmul that runs the way each precision runs the network's convolutions.
MATMUL_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def matmul_peak(device: torch.device, precision: str, size: int, repeats: int = 3) -> float:
    """GFLOP/s of a square ``size`` matrix product in the precision's dtype (TF32 switched as the precision asks).

    The faster of two kernels doing the same product: ``torch.mm`` (MKL or cuBLAS), and a 1x1
    convolution in channels_last (oneDNN or cuDNN), the library the network's convolutions use;
    on AMD CPUs MKL's float32 path is the slower one (measured 150-170 GFLOP/s against oneDNN's 194).
    """
    from tsp_cli.pipeline.precision import float32_math

    generator = torch.Generator().manual_seed(0)
    dtype = MATMUL_DTYPES[precision]
    a, b = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    rows = a.t().reshape(1, size, size // 32, 32).contiguous(memory_format=torch.channels_last)
    weights = b.reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    with float32_math(precision), torch.inference_mode():
        seconds = min(
            best_seconds(lambda: torch.mm(a, b), device, repeats),
            best_seconds(lambda: torch.nn.functional.conv2d(rows, weights), device, repeats),
        )
    return 2 * size**3 / seconds / 1e9


def gflop_per_clip(backbone: str, clip_len: int = 16) -> float:
    """The backbone's GFLOP for one clip (2 per multiply-add), counted on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    from tsp_cli.models.backbones import build_backbone
    from tsp_cli.models.recipe import TSP_RECIPE

    with torch.device("meta"):
        model = build_backbone(backbone).eval()
        clip = torch.empty(1, 3, clip_len, TSP_RECIPE.crop, TSP_RECIPE.crop)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(clip)
    return counter.get_total_flops() / 1e9


def timed_precisions(device: torch.device) -> list[str]:
    """The precisions worth timing: on a CPU, TF32 is fp32 (a GPU feature) and fp16 is emulated (too slow to use)."""
    return ["fp32", "bf16"] if device.type == "cpu" else ["fp32", "tf32", "fp16", "bf16"]


def network_clips_per_second(
    model: torch.nn.Module, device: torch.device, precision: str, memory_format: str, timing: Timing
) -> float:
    """Clips/s of the network alone on random clips, through the run's own :class:`Network`."""
    network = Network(
        model, device=device, precision=precision, memory_format=memory_format, batch_size=timing.batch_size
    )
    batch = network.batch_buffer(timing.batch_size)
    batch.copy_(torch.randn(batch.shape, generator=torch.Generator().manual_seed(0)))
    return timing.batch_size / best_seconds(lambda: network.features(batch), device, timing.repeats)


def network_speeds(device: torch.device, timing: Timing) -> dict[str, Any]:
    """Per precision (and, on CUDA, per memory format): clips/s, GFLOP/s and the share of the matmul peak."""
    from tsp_cli.models.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone(timing.backbone).eval().to(device)
    gflop = {name: gflop_per_clip(name) for name in BACKBONES}
    formats = [default_memory_format(device)] if device.type != "cuda" else list(MEMORY_FORMATS)
    rows = []
    for precision in timed_precisions(device):
        peak = matmul_peak(device, precision, timing.matmul_size, timing.matmul_repeats)
        for memory_format in formats:
            clips = network_clips_per_second(model, device, precision, memory_format, timing)
            achieved = clips * gflop[timing.backbone]
            rows.append(
                {
                    "precision": precision,
                    "memory_format": memory_format,
                    "backbone": timing.backbone,
                    "clips_per_second": clips,
                    "gflops": achieved,
                    "matmul_peak_gflops": peak,
                    "share_of_peak": achieved / peak,
                    "estimated_clips_per_second": {name: achieved / gflop[name] for name in BACKBONES},
                }
            )
    return {"gflop_per_clip": gflop, "batch_size": timing.batch_size, "rows": rows}


def write_test_video(path: Path, width: int, height: int, frames: int, fps: int = SOURCE_FPS) -> Path:
    """An H.264 video of a random texture panning diagonally: detail and motion the codec must spend bits on."""
    import av

    generator = np.random.default_rng(width * height)
    blocks = generator.integers(0, 256, size=(height // 8 + frames, width // 8 + frames, 3), dtype=np.uint8)
    texture = blocks.repeat(8, axis=0).repeat(8, axis=1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.ascontiguousarray(texture[index * 2 : index * 2 + height, index * 3 : index * 3 + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decoding_speeds(timing: Timing, repeats: int = 2) -> list[dict[str, Any]]:
    """Per generated size: frames/s and clips/s (stride 16, 30 fps source) of one decoding process."""
    from tsp_cli.pipeline.batcher import run_jobs
    from tsp_cli.pipeline.inputs import VideoJob
    from tsp_cli.pipeline.sampling import ClipSettings

    rows = []
    with tempfile.TemporaryDirectory(prefix="tsp-doctor-") as scratch:
        for width, height, frames in timing.videos:
            video = write_test_video(Path(scratch) / f"{width}x{height}.mp4", width, height, frames)
            best = math.inf
            for _ in range(repeats):
                started = time.perf_counter()
                summary = run_jobs(
                    [VideoJob(video, video.stem)], Path(scratch) / "out", None, ClipSettings(), workers=0
                )
                if summary.failures:
                    raise RuntimeError(
                        f"Could not decode the generated {width}x{height} video: {summary.failures[0][1]}"
                    )
                best = min(best, time.perf_counter() - started)
            per_second = frames / best
            source_frames_per_clip = DEFAULT_STRIDE * SOURCE_FPS / 15
            rows.append(
                {
                    "size": f"{width}x{height}",
                    "frames_per_second": per_second,
                    "clips_per_second": per_second / source_frames_per_clip,
                }
            )
    return rows


def suggestions(
    device: torch.device, decoding: list[dict[str, Any]], network: dict[str, Any], workers: int, cores: int
) -> dict[str, Any]:
    """Which side bounds a run with the default ``--workers``, and the settings that fit this machine.

    Judged for R(2+1)D-34 (the released TSP model), at the fastest precision that is at least
    1.5x fp32 here, else fp32. On a CPU the decoding workers and the network share the cores, so
    the figures are each side's speed alone and the run is slower than either.
    """
    fastest: dict[str, float] = {}
    for row in network["rows"]:  # on CUDA, the faster memory format of each precision (the run measures and keeps it)
        fastest[row["precision"]] = max(
            fastest.get(row["precision"], 0.0), row["estimated_clips_per_second"]["r2plus1d_34"]
        )
    fp32 = fastest["fp32"]
    precision = max(fastest, key=lambda name: fastest[name])
    if fastest[precision] < 1.5 * fp32:
        precision = "fp32"
    network_speed = fastest[precision]
    bounds = {}
    suggested_workers = {}
    for row in decoding:
        capacity = row["clips_per_second"] * workers
        bounds[row["size"]] = "network" if network_speed <= capacity else "decoding"
        needed = math.ceil(1.2 * network_speed / row["clips_per_second"])
        suggested_workers[row["size"]] = max(1, min(needed, cores))
    batch_size = 32
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        if torch.cuda.get_device_properties(index).total_memory < 8 * 2**30:
            batch_size = 16
    return {
        "backbone": "r2plus1d_34",
        "default_workers": workers,
        "network_clips_per_second": network_speed,
        "bound_by": bounds,
        "workers": suggested_workers,
        "batch_size": batch_size,
        "precision": precision,
        "precision_speedup": network_speed / fp32,
        "shares_cores": device.type == "cpu",
    }
