"""Peak memory of a whole process tree (a command and every process it starts), by polling /proc.

Every ``interval`` seconds the tree is walked (``/proc/PID/task/*/children``, falling back to
scanning ``/proc/*/stat`` for parent ids) and the resident set sizes (``VmRSS``) of all its
processes are summed; the peak of that sum is the result. RSS counts shared pages (the Python
and torch libraries, pages a forked worker still shares with its parent) once per process, so
the sum overstates what the tree really holds; the proportional set size (``Pss`` from
``smaps_rollup``, shared pages split between their users) is summed too, less often because
it is costlier to read, as a truer second figure. Linux only.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            return _children_by_scan(pid)
    return found


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += _children(current)
    return pids


def _status_kib(pid: int, key: str = "VmRSS:") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure_peak(
    command: Sequence[str], *, env: dict[str, str] | None = None, interval: float = 0.02, pss_every: int = 5
) -> dict:
    """Run ``command`` and poll its tree; peak summed RSS and PSS (MiB), wall seconds, most processes seen."""
    output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed below). Not a pipe: a chatty child never blocks on it.
    started = time.perf_counter()
    process = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, env=env, text=True)
    peak_rss = peak_pss = peak_main = 0
    most = samples = 0
    try:
        while process.poll() is None:
            pids = tree(process.pid)
            rss = [_status_kib(p) for p in pids]
            peak_rss = max(peak_rss, sum(rss))
            peak_main = max(peak_main, rss[0])
            if samples % pss_every == 0:
                peak_pss = max(peak_pss, sum(_pss_kib(p) for p in pids))
            most = max(most, len(pids))
            samples += 1
            time.sleep(interval)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output.seek(0)
    text = output.read()
    output.close()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{text}")
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mib": peak_rss / 1024,
        "peak_pss_mib": peak_pss / 1024,
        "peak_main_rss_mib": peak_main / 1024,
        "processes": most,
        "samples": samples,
    }
