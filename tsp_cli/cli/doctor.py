"""``tsp doctor``: render the machine check of :mod:`tsp_cli.doctor` (or print it as JSON).

Exit 0 when this machine reproduces the known answer, 1 when it does not, 2 when the device
cannot be used.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from tsp_cli.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, JsonOption, err, handles_errors, out, precision_option


@handles_errors
def doctor(
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu).", show_default=False
        ),
    ] = None,
    precision: Annotated[str, precision_option("The precision to check and time besides fp32.")] = "fp32",
    throughput: Annotated[
        bool,
        typer.Option("--throughput/--no-throughput", help="Time decoding and the network (about 30 s on 2 cores)."),
    ] = True,
    json_output: JsonOption = False,
) -> None:
    """Check this machine: versions, the device, a known answer (exit 1 if not reproduced), speed, suggested settings.

    Run it first on a new machine or cluster node, and attach its --json output to a bug report.
    """
    from tsp_cli.doctor import run_doctor

    if not json_output:
        err.print("Checking the known answer" + (" and timing this machine…" if throughput else "…"))
    report = run_doctor(device, precision, measure_throughput=throughput)
    if json_output:
        out.out(json.dumps(report, indent=2), highlight=False)
    else:
        _render(report)
    raise typer.Exit(EXIT_OK if report["ok"] else EXIT_ITEMS_FAILED)


def _render(report: dict[str, Any]) -> None:
    versions, device = report["versions"], report["device"]
    out.print("[bold]Versions[/]")
    out.print(
        f"  tsp {versions['tsp']} · Python {versions['python']} · torch {versions['torch']} "
        f"(CUDA {versions['cuda']}, cuDNN {versions['cudnn']}) · torchvision {versions['torchvision']} · h5py {versions['h5py']}"
    )
    out.print(f"  PyAV {versions['av']} with FFmpeg {escape(versions['ffmpeg'])} ({versions['ffmpeg_libraries']})")
    out.print("[bold]Device[/]")
    memory = f"{device['memory_gib']} GiB" if device.get("memory_gib") is not None else "memory unknown"
    capability = f", compute capability {device['compute_capability']}" if "compute_capability" in device else ""
    out.print(f"  {device['device']}: {escape(str(device['name']))}, {memory}{capability}")
    out.print(
        f"  CPU: {escape(device['cpu'])}, {device['cores_available']} cores available, torch kernels {device['cpu_kernels']}"
    )
    out.print(f"  Memory freed by a CPU batch: {escape(device['freed_memory'])}")
    flags = report["cpu_flags"]
    if all(value is None for value in flags.values()):
        out.print("  CPU flags: unknown here (no /proc/cpuinfo)")
    else:
        out.print("  CPU flags: " + ", ".join(f"{name} {'yes' if value else 'no'}" for name, value in flags.items()))
    tf32 = report["tf32"]
    out.print(
        f"  --precision {report['precision']}: float32 convolutions {tf32['convolutions']}, matmuls {tf32['matmuls']} "
        "(ieee: full float32; tf32: 10-bit mantissa on GPU tensor cores)"
    )
    _render_known_answer(report["known_answer"])
    if "throughput" in report:
        _render_throughput(report["throughput"], report["suggestions"])
    verdict = "[green]OK[/]" if report["ok"] else "[bold red]MISMATCH[/]"
    out.print(f"{verdict} · {report['seconds']} s")


def _render_known_answer(results: list[dict[str, Any]]) -> None:
    out.print("[bold]Known answer[/]")
    for result in results:
        head = (
            f"  {result['precision']}: {result['clips']} clips of {result['video']} with a seeded {result['backbone']}"
        )
        if result["error"] is None:
            out.print(f"{head}: [bold red]failed[/]: {escape(result['problem'])}")
            continue
        verdict = "[green]matches[/]" if result["ok"] else "[bold red]does NOT match[/]"
        out.print(
            f"{head}: deviation {result['error']:.1e} (tolerance {result['bound']:g}) {verdict} ({result['seconds']} s)"
        )
    if not all(result["ok"] for result in results):
        err.print(
            "This machine does not reproduce the shipped features: attach `tsp doctor --json` to a bug report, "
            "with how torch and PyAV were installed."
        )


def _render_throughput(throughput: dict[str, Any], suggested: dict[str, Any]) -> None:
    out.print("[bold]Decoding[/] (one worker: decode, RGB, resize and crop; stride 16 from 30 fps)")
    for row in throughput["decoding"]:
        out.print(
            f"  {row['size']}: {row['frames_per_second']:.0f} frames/s, {row['clips_per_second']:.1f} clips/s per worker"
        )
    network = throughput["network"]
    gflop = network["gflop_per_clip"]
    first = network["rows"][0]
    out.print(
        f"[bold]Network alone[/] (timed: {first['backbone']}, batch {network['batch_size']}; "
        "other backbones estimated from its GFLOP/s)"
    )
    for row in network["rows"]:
        estimates = ", ".join(
            f"{name} ~{clips:.1f}"
            for name, clips in row["estimated_clips_per_second"].items()
            if name != row["backbone"]
        )
        out.print(
            f"  {row['precision']} {row['memory_format']}: {row['clips_per_second']:.2f} clips/s, "
            f"{row['gflops']:.0f} GFLOP/s = {row['share_of_peak']:.0%} of the {row['matmul_peak_gflops']:.0f} GFLOP/s "
            f"matmul peak · estimated clips/s: {estimates}"
        )
    out.print("  GFLOP per clip: " + ", ".join(f"{name} {value:.0f}" for name, value in gflop.items()))
    out.print("[bold]Suggested[/]")
    bounds = ", ".join(f"{size}: {side}" for size, side in suggested["bound_by"].items())
    shared = " (on a CPU both share the cores)" if suggested["shares_cores"] else ""
    out.print(
        f"  With {suggested['default_workers']} workers (the default) and {suggested['backbone']} at "
        f"~{suggested['network_clips_per_second']:.1f} clips/s, the run is bound by: {bounds}{shared}"
    )
    workers = ", ".join(f"{size}: {count}" for size, count in suggested["workers"].items())
    speed = f" ({suggested['precision_speedup']:.1f}x fp32; fp32 is exact)" if suggested["precision"] != "fp32" else ""
    out.print(
        f"  --workers ({workers}) · --batch-size {suggested['batch_size']} · --precision {suggested['precision']}{speed}"
    )
