"""Processes for per-video work: how many by default, a pool that survives a crashing file, and
torch kept to one thread where its pool would only get in their way.

By default one per CPU core we may use, at most 8: past that, decoding and probing are usually
bound by the disk rather than the cores.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_DEFAULT_WORKERS = 8


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a Slurm allocation), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def default_workers() -> int:
    return max(1, min(available_cores(), MAX_DEFAULT_WORKERS))


def map_isolating_crashes(
    function: Callable[[T], R], items: Iterable[T], *, workers: int, on_crash: Callable[[T], R]
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, function(item))`` for every item, ``workers`` processes at a time (0: here), in any order.

    FFmpeg can crash a process outright on a damaged file, which breaks the whole pool. The items
    that were in flight are then retried one per process, so that the one that crashes its
    process alone is found and answered with ``on_crash(item)``; every other item still runs.
    ``function`` must be picklable (a module-level function).
    """
    if workers == 0:
        for item in items:
            yield item, function(item)
        return
    waiting: deque[T] = deque(items)
    suspects: deque[T] = deque()
    while waiting or suspects:
        source, size = (waiting, workers) if waiting else (deque([suspects.popleft()]), 1)
        in_flight = yield from _run_pool(function, source, size)
        if len(in_flight) == 1 and size == 1:
            yield in_flight[0], on_crash(in_flight[0])
        else:
            suspects.extend(in_flight)


def _run_pool(function: Callable[[T], R], source: deque[T], size: int) -> Generator[tuple[T, R], None, list[T]]:
    """Run items from ``source`` in a pool, keeping twice ``size`` submitted; return those in flight if it breaks."""
    with ProcessPoolExecutor(max_workers=size) as pool:
        futures: dict[Future, T] = {}
        while source or futures:
            while source and len(futures) < 2 * size:
                item = source.popleft()
                futures[pool.submit(function, item)] = item
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                item = futures.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    return [item, *futures.values()]
                yield item, result
    return []


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch's CPU ops inside on one thread, and restore the previous count afterwards.

    For small tensor work beside processes that already fill the cores: torch's intra-op pool
    would compete with them, and on a busy machine its threads' wake-ups cost more than the work.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
