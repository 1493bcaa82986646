"""``make bench-gpu``: the network per precision and memory format, the input pipeline with 4/8/16
workers, and end to end, on one device, in one table (under 8 minutes on a GPU node).

    python -m benchmarks.gpu                       # --device cuda
    python -m benchmarks.gpu --device cpu --tiny   # the smoke test `make test` runs (seconds)

Network alone: ``benchmarks.network`` (R(2+1)D-34 and R3D-18, batch 32, every precision, both
layouts; the share of a matmul peak measured in the same run). Input pipeline: dry runs
(``run_jobs`` with no model: decode, hand-off, blend on the device, batch assembly) over four
60 s 320x240 videos and two 20 s 1280x720 ones at stride 16, by the engine's own clock. End to end:
``extract_features`` with R(2+1)D-34 at fp32 and bf16 over the 320x240 set, against the network
alone at the same precision: near 1.0x, the input side is hidden behind the network.
Results: the table on stdout and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import network, videos
from benchmarks.e2e import write_checkpoint
from benchmarks.report import Row, as_text
from tsp_cli.doctor.throughput import timed_precisions
from tsp_cli.pipeline.sampling import ClipSettings


@dataclass(frozen=True)
class Plan:
    backbones: tuple[str, ...]
    precisions: tuple[str, ...]
    batch_size: int
    repeats: int
    workers: tuple[int, ...]
    sets: dict[str, list[videos.VideoSpec]]
    e2e_backbone: str
    e2e_precisions: tuple[str, ...]
    matmul_size: int = 4096


def plan_for(device: torch.device, tiny: bool) -> Plan:
    if tiny:  # seconds on a CPU: every part runs, on the least work that exercises it
        spec = videos.VideoSpec("gpu-smoke", 160, 120, 2.4, preset="ultrafast", grain=False, seed=5)
        return Plan(("r3d_18",), ("fp32",), 1, 1, (1,), {"160x120": [spec]}, "r3d_18", ("fp32",), matmul_size=256)
    return Plan(
        ("r2plus1d_34", "r3d_18"),
        tuple(timed_precisions(device)),
        32,
        3,
        (4, 8, 16),
        {"320x240": videos.small_set(60), "1280x720": videos.hd_videos(20)},
        "r2plus1d_34",
        ("fp32", "bf16"),
    )


def input_pipeline(paths: list[Path], device: torch.device, workers: int, batch_size: int) -> dict:
    """A dry run on ``device`` with ``workers`` decoding processes: clips/s by the engine's own clock."""
    from tsp_cli.pipeline.batcher import run_jobs
    from tsp_cli.pipeline.inputs import VideoJob

    jobs = [VideoJob(path, path.stem) for path in paths]
    with tempfile.TemporaryDirectory(prefix="tsp-bench-gpu-") as scratch:
        summary = run_jobs(
            jobs, Path(scratch), None, ClipSettings(), device=device, batch_size=batch_size, workers=workers
        )
    if summary.failed:
        raise RuntimeError(f"dry run failed: {summary.failures}")
    return {
        "workers": workers,
        "clips": summary.clips,
        "seconds": summary.wall_seconds,
        "clips_per_second": summary.clips_per_second,
    }


def end_to_end(
    paths: list[Path], device: str, backbone: str, precision: str, workers: int, batch_size: int, folder: Path
) -> dict:
    checkpoint = write_checkpoint(folder / "checkpoints" / f"{backbone}.pth", backbone)
    summary = network.timed_extraction(
        paths, checkpoint, device=device, precision=precision, workers=workers, batch_size=batch_size
    )
    return {
        "backbone": backbone,
        "precision": precision,
        "workers": workers,
        "clips": summary.clips,
        "seconds": summary.wall_seconds,
        "clips_per_second": summary.clips_per_second,
        "data_wait_share": summary.data_wait_share,
    }


def rows_for(results: dict) -> list[Row | str]:
    rows = network.table_rows(results["network"], [])
    for size, runs in results["input"].items():
        rows.append(f"input pipeline: dry run, {size}, stride 16 (decode, hand-off, blend on the device, batches)")
        for run in runs:
            rows.append(
                Row(f"{run['workers']} workers", f"{run['clips_per_second']:.1f} clips/s", f"{run['seconds']:.1f} s")
            )
    for run in results["e2e"]:
        alone = [
            r for r in results["network"] if r["backbone"] == run["backbone"] and r["precision"] == run["precision"]
        ]
        fastest = max(alone, key=lambda r: r["clips_per_second"]) if alone else None
        ratio = run["clips_per_second"] / fastest["clips_per_second"] if fastest else None
        rows.append(
            Row(
                f"end to end {run['backbone']} {run['precision']}, {run['clips']} clips, {run['workers']} workers",
                f"{run['clips_per_second']:.1f} clips/s",
                f"waited for frames {run['data_wait_share']:.0%}",
                f"network alone {fastest['clips_per_second']:.1f}" if fastest else "",
                f"{ratio:.2f}x" if ratio else "",
                ratio_value=ratio,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the smallest run of every part: a smoke test")
    parser.add_argument("--out", type=Path, default=Path("bench-gpu-out"))
    options = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(options.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as tsp extract sets it
    plan = plan_for(device, options.tiny)
    options.out.mkdir(parents=True, exist_ok=True)
    sets = {size: [videos.ensure(spec, options.out / "videos") for spec in specs] for size, specs in plan.sets.items()}
    results: dict = {"device": str(device), "tiny": options.tiny}
    parts = results["part_seconds"] = {}
    results["network"] = network.network_rows(
        device,
        list(plan.backbones),
        list(plan.precisions),
        ["ncdhw", "channels_last_3d"],
        plan.batch_size,
        plan.repeats,
        plan.matmul_size,
    )
    parts["network"] = time.perf_counter() - started
    results["input"] = {
        size: [input_pipeline(paths, device, workers, plan.batch_size) for workers in plan.workers]
        for size, paths in sets.items()
    }
    parts["input"] = time.perf_counter() - started - sum(parts.values())
    first_set = next(iter(sets.values()))
    with tempfile.TemporaryDirectory(prefix="tsp-bench-gpu-") as scratch:
        results["e2e"] = [
            end_to_end(
                first_set, str(device), plan.e2e_backbone, precision, max(plan.workers), plan.batch_size, Path(scratch)
            )
            for precision in plan.e2e_precisions
        ]
    parts["e2e"] = time.perf_counter() - started - sum(parts.values())
    results["seconds"] = time.perf_counter() - started
    print(as_text(rows_for(results)))
    spent = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in parts.items())
    print(f"device {device}, {results['seconds']:.0f} s ({spent}; videos made or found first)")
    (options.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
