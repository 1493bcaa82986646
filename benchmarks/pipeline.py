"""``tsp extract`` run as users run it, as a subprocess, timed from outside.

``python -m tsp_cli extract VIDEOS -o DIR --dry-run --workers W --stride S --device cpu`` (a dry
run decodes, transforms and assembles every batch, and runs no network). Start-up is measured
apart with the very same command on a video shorter than one clip: imports, option parsing,
worker start and shutdown, no clip. The pipeline's own time is the run's time less that.
The engine's own account (``N clips in X s``, printed by the CLI) is kept too.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

_SUMMARY = re.compile(r"(\d+) clips in ([0-9.]+) s")


class CommandFailed(RuntimeError):
    pass


def tsp_command(
    videos: Sequence[Path], out_dir: Path, *, stride: int, workers: int, extra: Sequence[str] = ("--dry-run",)
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tsp_cli",
        "extract",
        *map(os.fspath, videos),
        "-o",
        os.fspath(out_dir),
        "--workers",
        str(workers),
        "--stride",
        str(stride),
        "--device",
        "cpu",
        *extra,
    ]


def child_env() -> dict[str, str]:
    """The environment for the CLI: no colour codes, no hints of a terminal, offline."""
    env = dict(os.environ)
    env.update({"NO_COLOR": "1", "TERM": "dumb", "TSP_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run_timed(command: Sequence[str], *, cwd: Path | None = None) -> dict:
    """Run ``command``: wall seconds, CPU seconds of its whole tree, output, and the engine's own clip count and time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(list(command), capture_output=True, text=True, env=child_env(), cwd=cwd)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    found = _SUMMARY.search(done.stdout)
    return {
        "seconds": seconds,
        # user + system time of the command and every descendant it waited for (its decoding workers)
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "engine_clips": int(found.group(1)) if found else None,
        "engine_seconds": float(found.group(2)) if found else None,
        "stdout": done.stdout.strip(),
    }


def run_extract(videos: Sequence[Path], *, stride: int, workers: int, extra: Sequence[str] = ("--dry-run",)) -> dict:
    """One ``tsp extract`` run into a fresh temporary output folder (so nothing is skipped as done)."""
    with tempfile.TemporaryDirectory(prefix="tsp-bench-") as out_dir:
        return run_timed(tsp_command(videos, Path(out_dir), stride=stride, workers=workers, extra=extra))


def run_in_process(videos: Sequence[Path], *, stride: int, workers: int) -> dict:
    """``run_jobs`` as a dry run in this process: the decoding workers' CPU apart from the main process's.

    On a GPU node the workers set the pace and the main process's share (blending taps into
    frames, batch assembly) runs on the GPU, so the workers' CPU is the figure that matters
    there. Children's CPU counts the workers once they are reaped, which ``run_jobs`` does
    before it returns.
    """
    from tsp_cli.pipeline.batcher import run_jobs
    from tsp_cli.pipeline.inputs import VideoJob
    from tsp_cli.pipeline.sampling import ClipSettings

    jobs = [VideoJob(Path(p), Path(p).stem) for p in videos]
    with tempfile.TemporaryDirectory(prefix="tsp-bench-") as out_dir:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        summary = run_jobs(jobs, Path(out_dir), None, ClipSettings(stride=stride), workers=workers)
        seconds = time.perf_counter() - started
        own_after, children_after = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    return {
        "seconds": seconds,
        "workers_cpu_seconds": _cpu(children_after) - _cpu(children),
        "main_cpu_seconds": _cpu(own_after) - _cpu(own),
        "clips": summary.clips,
    }


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime
