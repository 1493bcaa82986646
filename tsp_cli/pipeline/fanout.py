"""``tsp extract --devices``: one ``tsp extract --shard i/n --device d`` child process per device.

Each child is an ordinary single-device run, so a machine with several GPUs behaves exactly
like the same number of Slurm tasks: same shards, same output folder, same resume. The parent
only starts the children, follows their progress in the folder's logs (``videos.jsonl`` and
``failures.jsonl``, whose records name their shard), and reports how each ended. A child's own
output goes to a log file outside the output folder, which holds only feature files and logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsp_cli.errors import UsageError
from tsp_cli.parallel import MAX_DEFAULT_WORKERS, available_cores
from tsp_cli.pipeline import records, store
from tsp_cli.pipeline.sharding import Shard, all_shards

#: Lines of a crashed child's log shown to the user.
LOG_TAIL_LINES = 20
#: How long a child gets to stop after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0


def parse_devices(spec: str) -> list[str]:
    """``cuda:0,cuda:1`` as given, or a count ``N`` meaning ``cuda:0`` to ``cuda:N-1``."""
    spec = spec.strip()
    if spec.isdigit():
        count = int(spec)
        if count < 1:
            raise UsageError(
                "`devices` 0 starts nothing; give a count of at least 1 or a list such as cuda:0,cuda:1.",
                parameter="devices",
            )
        return [f"cuda:{index}" for index in range(count)]
    devices = [entry.strip() for entry in spec.split(",")]
    if not all(devices):
        raise UsageError(
            f"`devices` {spec!r} has an empty entry; give a list such as cuda:0,cuda:1, or a count.",
            parameter="devices",
        )
    return devices


def default_workers_per_shard(shards: int) -> int:
    """The machine's cores shared among the shards, so that N children do not start N × 8 decoders."""
    return max(1, min(MAX_DEFAULT_WORKERS, available_cores() // shards))


def make_log_dir() -> Path:
    """A fresh folder for the children's logs: the output folder holds only features and their records."""
    return Path(tempfile.mkdtemp(prefix="tsp-extract-logs-"))


@dataclass
class ShardRun:
    """One child: its shard, device and videos, progress read from the records, and how it ended."""

    shard: Shard
    device: str
    names: frozenset[str]
    log: Path
    skipped: int = 0
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    clips: int = 0
    exit_code: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    #: The child's own counts (``tsp extract --report``), read once it exits; ``None`` if it wrote none.
    report: dict[str, Any] | None = None

    @property
    def report_path(self) -> Path:
        return self.log.with_suffix(".json")

    @property
    def videos(self) -> int:
        return len(self.names)

    @property
    def settled(self) -> int:
        """Videos that are finished or failed (failed ones are retried by the next run)."""
        return len(self.done) + len(self.failed)

    @property
    def crashed(self) -> bool:
        """Ended with an error other than "some videos failed", or without reporting its counts."""
        if self.exit_code is None or self.exit_code == 0:
            return False
        return self.exit_code != 1 or self.report is None

    def read_report(self) -> None:
        try:
            report = json.loads(self.report_path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(report, dict):
            self.report = report

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last lines of the child's log, for a crash report."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


@dataclass
class FanoutResult:
    runs: list[ShardRun]
    log_dir: Path
    wall_seconds: float

    @property
    def crashed(self) -> list[ShardRun]:
        return [run for run in self.runs if run.crashed]

    @property
    def exit_code(self) -> int:
        """The largest of the children's codes (a signal counts as 128 + its number); at least 1 on a crash."""
        codes = [_shell_code(run.exit_code or 0) for run in self.runs]
        return max([*codes, 1 if self.crashed else 0])


def child_command(extract_arguments: Sequence[str], shard: Shard, device: str, report: Path | None = None) -> list[str]:
    """The ``tsp extract`` command line of one child; ``-u`` keeps its log current up to a crash.

    ``--shard``, ``--device`` and ``--report`` come first, as ``extract_arguments`` may end with ``-- VIDEOS``.
    """
    return [
        sys.executable,
        "-u",
        "-m",
        "tsp_cli",
        "extract",
        "--shard",
        str(shard),
        "--device",
        device,
        *(["--report", str(report)] if report is not None else []),
        *extract_arguments,
    ]


def run_shards(
    extract_arguments: Sequence[str],
    devices: Sequence[str],
    job_names: Sequence[str],
    out_dir: Path,
    log_dir: Path,
    *,
    on_progress: Callable[[Sequence[ShardRun]], None] | None = None,
    poll_seconds: float = 0.5,
) -> FanoutResult:
    """Run shard ``i/len(devices)`` of ``job_names`` on ``devices[i]``, each in a child process.

    ``extract_arguments`` are the child's ``tsp extract`` arguments without ``--shard`` and
    ``--device``. ``job_names`` is the ordered job list the children will build from the same
    arguments, so that each shard's videos are known here. ``on_progress`` gets every run
    after each look at the records. Children still running when this returns (an interrupt)
    are stopped.
    """
    started = time.perf_counter()
    runs = _plan(devices, job_names, Path(out_dir), Path(log_dir))
    followers = [
        records.RecordsFollower(Path(out_dir), records.VIDEOS),
        records.RecordsFollower(Path(out_dir), records.FAILURES),
    ]
    report = on_progress or (lambda runs: None)
    try:
        for run in runs:
            run.process = _start(child_command(extract_arguments, run.shard, run.device, run.report_path), run.log)
        while _still_running(runs):
            _take_records(runs, *followers)
            report(runs)
            time.sleep(poll_seconds)
        _take_records(runs, *followers)
        for run in runs:
            run.read_report()
        report(runs)
    finally:
        _stop(runs)
    return FanoutResult(runs, Path(log_dir), time.perf_counter() - started)


def _plan(devices: Sequence[str], job_names: Sequence[str], out_dir: Path, log_dir: Path) -> list[ShardRun]:
    finished = store.finished_names(out_dir)
    runs = []
    for shard, device in zip(all_shards(len(devices)), devices, strict=True):
        names = frozenset(shard.select(list(job_names)))
        already = names & finished
        runs.append(
            ShardRun(
                shard,
                device,
                names,
                log_dir / f"shard-{shard.index}-of-{shard.count}.log",
                skipped=len(already),
                done=set(already),
            )
        )
    return runs


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)


def _still_running(runs: Sequence[ShardRun]) -> bool:
    for run in runs:
        if run.exit_code is None and run.process is not None:
            run.exit_code = run.process.poll()
    return any(run.exit_code is None for run in runs)


def _take_records(
    runs: Sequence[ShardRun], finished: records.RecordsFollower, failures: records.RecordsFollower
) -> None:
    """Count the new finished and failed videos of each shard (records name their shard)."""
    by_shard = {str(run.shard): run for run in runs}
    for record in finished.new_records():
        run = by_shard.get(str(record.get("shard")))
        if run is not None and record.get("video") in run.names and record["video"] not in run.done:
            run.done.add(record["video"])
            run.clips += int(record.get("clips") or 0)
    for record in failures.new_records():
        run = by_shard.get(str(record.get("shard")))
        if run is not None and record.get("video") in run.names:
            run.failed.add(record["video"])


def _stop(runs: Sequence[ShardRun]) -> None:
    """Terminate children that are still running (the parent was interrupted), then reap them."""
    alive = [run.process for run in runs if run.process is not None and run.process.poll() is None]
    for process in alive:
        process.terminate()
    for process in alive:
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _shell_code(code: int) -> int:
    """A child's return code as a shell reports it: killed by signal N is 128 + N."""
    return 128 - code if code < 0 else code
