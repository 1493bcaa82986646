"""The floor: every frame of every video decoded once with PyAV, nothing else.

No colour conversion, no transform, no clip logic: the least work any extractor that decodes
must do. The decoder keeps PyAV's defaults, as ``tsp_cli.pipeline.video.decode_frames`` does (slice
threading, which these single-slice H.264 files do not use, so one core per video). Videos are
spread over a pool of the same number of processes as the pipeline's decoding workers.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import av


def decode_all(path: Path | str) -> int:
    """Decode every frame of the first video stream of ``path``; returns how many."""
    count = 0
    with av.open(os.fspath(path), metadata_errors="ignore") as container:
        for _ in container.decode(container.streams.video[0]):
            count += 1
    return count


def measure_floor(paths: Sequence[Path], processes: int) -> tuple[float, int, float]:
    """Decode all ``paths`` with a pool of ``processes``: wall seconds (pool start excluded), frames, CPU seconds.

    CPU seconds are the pool processes' user + system time (they are reaped before it is read).
    """
    processes = max(1, min(processes, len(paths)))
    context = multiprocessing.get_context("fork")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool = context.Pool(processes)
    try:
        pool.map(int, range(processes))  # the workers are up before the clock starts
        started = time.perf_counter()
        frames = sum(pool.imap_unordered(decode_all, [os.fspath(p) for p in paths], chunksize=1))
        seconds = time.perf_counter() - started
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, frames, cpu
