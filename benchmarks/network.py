"""The network alone per backbone, precision and memory format, and end to end against it.

    python -m benchmarks.network                        # R(2+1)D-34 and R3D-18 on the CPU, the issue-18 targets
    python -m benchmarks.network --backbones r3d_18 --precisions fp32 --clips 8 --repeat 1

Network alone: random clips through the run's own ``Network`` (``tsp_cli.pipeline.network``),
one warm-up batch, then the best of ``--repeat`` timed batches; GFLOP/s from the backbone's
GFLOP per clip (``torch.utils.flop_counter``, 2 per multiply-add) and its share of a matmul peak
measured in the same run, in the precision's dtype. "Today's" network is the model as it ran
before issue 18: fp32, NCDHW, called directly (no ``Network``), in a fresh interpreter whose
allocator is left as glibc sets it (``Network`` makes glibc keep freed memory for the rest of its
process, ``tsp_cli.pipeline.host_memory``). End to end: ``extract_features`` on a generated 320x240 video
at a stride that gives ``--clips`` clips, with a seeded checkpoint, timed by the engine's own
clock (``RunSummary.wall_seconds``: decoding, batching and the network, no interpreter start-up),
best of ``--repeat``.
"""

from __future__ import annotations

import os

# As the CLI runs (``tsp_cli.cli.app.main``), before torch starts its OpenMP threads: idle ones sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks import videos
from benchmarks.e2e import stride_for_clips, write_checkpoint
from benchmarks.report import Row, as_text, at_least
from tsp_cli.doctor.throughput import (
    Timing,
    best_seconds,
    gflop_per_clip,
    matmul_peak,
    network_clips_per_second,
    timed_precisions,
)
from tsp_cli.models.backbones import build_backbone
from tsp_cli.pipeline.events import RunSummary
from tsp_cli.pipeline.sampling import resampled_indices
from tsp_cli.pipeline.video import probe

#: The issue-18 targets on the CPU: fp32 end to end over today's network alone; bf16 over today's fp32.
TARGETS = {"e2e_fp32": 1.2, "bf16": 3.0}
TODAY = ("fp32", "ncdhw")


def network_rows(
    device: torch.device,
    backbones: list[str],
    precisions: list[str],
    formats: list[str],
    batch_size: int,
    repeats: int,
    matmul_size: int = Timing.matmul_size,
) -> list[dict]:
    """Clips/s, GFLOP/s and the share of the matmul peak for every backbone x precision x memory format."""
    timing = Timing(batch_size=batch_size, repeats=repeats, matmul_size=matmul_size)
    peaks = {p: matmul_peak(device, p, timing.matmul_size, timing.matmul_repeats) for p in precisions}
    rows = []
    for backbone in backbones:
        torch.manual_seed(0)
        model = build_backbone(backbone).eval()
        gflop = gflop_per_clip(backbone)
        for precision in precisions:
            for memory_format in formats:
                if (precision, memory_format) == TODAY and device.type == "cpu":
                    clips = today_clips_per_second(backbone, batch_size, repeats)
                else:
                    clips = network_clips_per_second(model, device, precision, memory_format, timing)
                rows.append(
                    {
                        "backbone": backbone,
                        "precision": precision,
                        "memory_format": memory_format,
                        "batch_size": batch_size,
                        "clips_per_second": clips,
                        "gflop_per_clip": gflop,
                        "gflops": clips * gflop,
                        "matmul_peak_gflops": peaks[precision],
                        "share_of_peak": clips * gflop / peaks[precision],
                    }
                )
    return rows


def today_clips_per_second(backbone: str, batch_size: int, repeats: int) -> float:
    """Today's network alone (fp32, NCDHW, the model called directly) in a fresh interpreter, as it ran
    before issue 18: one warm-up batch, then the best of ``repeats``."""
    command = [sys.executable, "-m", "benchmarks.network", "--today-only", backbone, "--batch-size", str(batch_size)]
    command += ["--repeat", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"today's network-alone run failed:\n{done.stdout}\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["clips_per_second"])


def _today_in_this_process(backbone: str, batch_size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_backbone(backbone).eval()
    batch = torch.randn(batch_size, 3, 16, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        seconds = best_seconds(lambda: model(batch).float().numpy(), torch.device("cpu"), repeats)
    return {"backbone": backbone, "clips_per_second": batch_size / seconds}


def timed_extraction(
    paths: list[Path], checkpoint: Path, *, device: str, precision: str, workers: int, batch_size: int, stride: int = 16
) -> RunSummary:
    """``extract_features`` into a fresh temporary folder; a failed video stops the benchmark."""
    from tsp_cli.pipeline.extraction import extract_features

    with tempfile.TemporaryDirectory(prefix="tsp-bench-network-") as out:
        summary = extract_features(
            paths,
            Path(out),
            checkpoint=checkpoint,
            stride=stride,
            device=device,
            precision=precision,
            workers=workers,
            batch_size=batch_size,
        )
    if summary.failed:
        raise RuntimeError(f"end-to-end run failed: {summary.failures}")
    return summary


def prepared_run(backbone: str, clips: int, folder: Path) -> tuple[Path, int, Path]:
    """A 320x240 video, the stride giving it at least ``clips`` clips, and a seeded checkpoint (made once, in ``folder``)."""
    video = videos.ensure(videos.small_set(max(10, clips * 16 * 2 / 30 + 2), count=1)[0], folder / "videos", print)
    info = probe(video)
    stride = stride_for_clips(len(resampled_indices(info.fps, info.num_frames, 15.0)), 16, clips)
    return video, stride, write_checkpoint(folder / "checkpoints" / f"{backbone}.pth", backbone)


def _e2e_result(summary: RunSummary, backbone: str, precision: str, workers: int, batch_size: int) -> dict:
    return {
        "backbone": backbone,
        "precision": precision,
        "workers": workers,
        "batch_size": batch_size,
        "clips": summary.clips,
        "seconds": summary.wall_seconds,
        "clips_per_second": summary.clips_per_second,
    }


def end_to_end(
    device: str, backbone: str, precision: str, *, clips: int, batch_size: int, workers: int, folder: Path, repeats: int
) -> dict:
    """The best clips/s of ``repeats`` runs of ``tsp extract``'s pipeline on one 320x240 video giving ``clips`` clips."""
    video, stride, checkpoint = prepared_run(backbone, clips, folder)
    runs = [
        timed_extraction(
            [video],
            checkpoint,
            device=device,
            precision=precision,
            workers=workers,
            batch_size=batch_size,
            stride=stride,
        )
        for _ in range(repeats)
    ]
    return _e2e_result(max(runs, key=lambda s: s.clips_per_second), backbone, precision, workers, batch_size)


def targets(backbone: str, *, clips: int, batch_size: int, workers: int, folder: Path, repeats: int) -> dict:
    """The issue-18 targets on the CPU: ``tsp extract`` end to end at fp32 and at bf16 on the same clips, in
    interleaved rounds, the best of ``repeats`` of each; against today's network alone (fp32, NCDHW, eager,
    the same batch sizes), the best of ``repeats`` runs in one fresh interpreter with glibc's allocator as
    it comes (``benchmarks.e2e.model_alone_subprocess``)."""
    from benchmarks.e2e import model_alone_subprocess

    video, stride, checkpoint = prepared_run(backbone, clips, folder)
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for precision in ("fp32", "bf16"):
            summary = timed_extraction(
                [video],
                checkpoint,
                device="cpu",
                precision=precision,
                workers=workers,
                batch_size=batch_size,
                stride=stride,
            )
            result = _e2e_result(summary, backbone, precision, workers, batch_size)
            if precision not in best or result["clips_per_second"] > best[precision]["clips_per_second"]:
                best[precision] = result
    alone = model_alone_subprocess(checkpoint, backbone, best["fp32"]["clips"], batch_size, repeats)
    best["today"] = {
        "clips": alone["clips"],
        "seconds": alone["seconds"],
        "clips_per_second": alone["clips"] / alone["seconds"],
    }
    base = best["today"]["clips_per_second"]
    return {
        **best,
        "e2e_fp32_vs_today": best["fp32"]["clips_per_second"] / base,
        "e2e_bf16_vs_today": best["bf16"]["clips_per_second"] / base,
    }


def table_rows(network: list[dict], e2e: list[dict]) -> list[Row | str]:
    """Rows for the table: each measurement against today's fp32 NCDHW network of its backbone, and the targets."""
    rows: list[Row | str] = []
    today = {r["backbone"]: r for r in network if (r["precision"], r["memory_format"]) == TODAY}
    for backbone in dict.fromkeys(r["backbone"] for r in network):
        rows.append(f"network alone: {backbone}, batch {network[0]['batch_size']}, random clips")
        base = today.get(backbone)
        for r in (r for r in network if r["backbone"] == backbone):
            ratio, target, result, ratio_value, limit = "", "", "", None, None
            if base:
                ratio_value = r["clips_per_second"] / base["clips_per_second"]
                ratio = f"{ratio_value:.2f}x"
                if r["precision"] == "bf16" and r["memory_format"] == "channels_last_3d":
                    limit = TARGETS["bf16"]
                    ratio, target, result = at_least(ratio_value, limit)
            rows.append(
                Row(
                    f"{r['precision']} {r['memory_format']}",
                    f"{r['clips_per_second']:.2f} clips/s",
                    f"{r['gflops']:.0f} GFLOP/s, {r['share_of_peak']:.0%} of {r['matmul_peak_gflops']:.0f}",
                    "fp32 NCDHW (today)" if base else "",
                    ratio,
                    target,
                    result,
                    ratio_value,
                    limit,
                )
            )
        for e in (e for e in e2e if e["backbone"] == backbone):
            alone = [r for r in network if r["backbone"] == backbone and r["precision"] == e["precision"]]
            fastest = max(alone, key=lambda r: r["clips_per_second"]) if alone else None
            ratio_value = e["clips_per_second"] / base["clips_per_second"] if base else None
            text, target, result, limit = (f"{ratio_value:.2f}x" if ratio_value else ""), "", "", None
            if ratio_value is not None and e["precision"] == "fp32":
                limit = TARGETS["e2e_fp32"]
                text, target, result = at_least(ratio_value, limit)
            versus = f"; network alone {fastest['clips_per_second']:.2f}" if fastest else ""
            rows.append(
                Row(
                    f"end to end {e['precision']}: tsp extract, {e['clips']} clips, {e['workers']} workers",
                    f"{e['clips_per_second']:.2f} clips/s",
                    f"{e['seconds']:.1f} s{versus}",
                    "fp32 NCDHW network alone (today)" if base else "",
                    text,
                    target,
                    result,
                    ratio_value,
                    limit,
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.network", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", default="r2plus1d_34,r3d_18")
    parser.add_argument("--precisions", help="comma-separated (default: those worth timing on the device)")
    parser.add_argument("--formats", default="ncdhw,channels_last_3d")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed batches (network) and runs (end to end); best kept"
    )
    parser.add_argument("--clips", type=int, default=16, help="clips of each end-to-end run (0: none)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--e2e-backbones", default="r2plus1d_34")
    parser.add_argument("--out", type=Path, help="also write the raw results here as JSON")
    parser.add_argument(
        "--targets", action="store_true", help="only the issue-18 targets: interleaved rounds, --e2e-backbones' first"
    )
    parser.add_argument("--today-only", metavar="BACKBONE", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.today_only:
        print(json.dumps(_today_in_this_process(options.today_only, options.batch_size, options.repeat)))
        return 0
    if options.targets:
        with tempfile.TemporaryDirectory(prefix="tsp-bench-network-") as scratch:
            result = targets(
                options.e2e_backbones.split(",")[0],
                clips=options.clips,
                batch_size=options.batch_size,
                workers=options.workers,
                folder=Path(scratch),
                repeats=options.repeat,
            )
        print(json.dumps(result, indent=2))
        return 0
    device = torch.device(options.device)
    precisions = options.precisions.split(",") if options.precisions else timed_precisions(device)
    network = network_rows(
        device,
        options.backbones.split(","),
        precisions,
        options.formats.split(","),
        options.batch_size,
        options.repeat,
    )
    e2e = []
    if options.clips:
        with tempfile.TemporaryDirectory(prefix="tsp-bench-network-") as scratch:
            for backbone in options.e2e_backbones.split(","):
                for precision in precisions:
                    e2e.append(
                        end_to_end(
                            options.device,
                            backbone,
                            precision,
                            clips=options.clips,
                            batch_size=options.batch_size,
                            workers=options.workers,
                            folder=Path(scratch),
                            repeats=options.repeat,
                        )
                    )
    print(as_text(table_rows(network, e2e)))
    if options.out:
        options.out.write_text(json.dumps({"network": network, "e2e": e2e}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
