"""How many processes to run by default: one per CPU core we may use, at most 8.

Past 8, decoding and probing are usually bound by the disk rather than the cores.
"""

from __future__ import annotations

import os

MAX_DEFAULT_WORKERS = 8


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a Slurm allocation), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def default_workers() -> int:
    return max(1, min(available_cores(), MAX_DEFAULT_WORKERS))
