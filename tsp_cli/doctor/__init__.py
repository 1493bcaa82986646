"""``tsp doctor``: what a user runs first on a new machine, and what a bug report attaches.

Three parts, each its own module: the environment (versions, device, TF32 state, CPU flags),
the known-answer check (does this machine reproduce the shipped features within the parity
tolerance?) and throughput (decoding per worker, the network per precision, which side bounds
a run, suggested settings). :func:`run_doctor` gathers them into one plain dict (the CLI
renders it, or prints it as JSON); ``ok`` is false when the known answer does not match.
"""

from __future__ import annotations

import time
from typing import Any

from tsp_cli.doctor import environment, known_answer, throughput
from tsp_cli.doctor.throughput import Timing
from tsp_cli.errors import UsageError
from tsp_cli.parallel import available_cores, default_workers
from tsp_cli.pipeline.devices import resolve_device
from tsp_cli.pipeline.precision import PRECISIONS

__all__ = ["Timing", "run_doctor"]


def run_doctor(
    device: str | None = None,
    precision: str = "fp32",
    *,
    timing: Timing | None = None,
    measure_throughput: bool = True,
) -> dict[str, Any]:
    """Every section of the report for ``device`` (default: the best available) and ``precision``.

    The known answer is always checked at fp32 (the exact contract), and also at ``precision``
    when that is another one, against its own bound.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    started = time.perf_counter()
    chosen = resolve_device(device)
    report: dict[str, Any] = {
        "versions": environment.versions(),
        "device": environment.device_facts(chosen),
        "precision": precision,
        "tf32": environment.tf32_state(precision),
        "cpu_flags": environment.cpu_flags(),
    }
    precisions = ["fp32"] if precision == "fp32" else ["fp32", precision]
    report["known_answer"] = known_answer.check_known_answer(str(chosen), precisions)
    if measure_throughput:
        timing = timing or Timing(batch_size=4 if chosen.type == "cpu" else 16)
        decoding = throughput.decoding_speeds(timing)
        network = throughput.network_speeds(chosen, timing)
        report["throughput"] = {"decoding": decoding, "network": network}
        report["suggestions"] = throughput.suggestions(chosen, decoding, network, default_workers(), available_cores())
    report["ok"] = all(result["ok"] for result in report["known_answer"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
