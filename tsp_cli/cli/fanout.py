"""``tsp extract --devices``: one ``tsp extract --shard i/n --device d`` child process per device.

Each child is an ordinary single-device run, so a machine with several GPUs behaves exactly
like the same number of Slurm tasks: same shards, same output folder, same resume. The parent
builds the children's command lines, starts them, and follows each one's typed events (the
engine's own ``RunStarted``, ``ClipProgress`` and ``VideoEnded``, then its ``RunSummary``),
which a child appends as JSON lines to its ``--report`` file. :class:`ShardEvents` turns them
into the events of one run, so the single-device display and summary show ``--devices`` as they
show one device: clips, rate, ETA, and each failed video by name. A child's own output goes to
a log file outside the output folder, which holds only feature files and logs.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsp_cli.errors import UsageError
from tsp_cli.parallel import MAX_DEFAULT_WORKERS, available_cores
from tsp_cli.pipeline.records import FileFollower
from tsp_cli.pipeline.sharding import Shard, all_shards

if TYPE_CHECKING:
    from tsp_cli.cli.extract import _Request
    from tsp_cli.pipeline.events import ClipProgress, Event, RunSummary

#: Lines of a crashed child's log shown to the user.
LOG_TAIL_LINES = 20
#: How long a child gets to stop after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0
#: A child writes its progress at most this often (every video's end and its summary at once).
PROGRESS_INTERVAL_SECONDS = 0.5


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


def child_command(extract_arguments: Sequence[str], shard: Shard, device: str, report: Path) -> list[str]:
    """The ``tsp extract`` command line of one child; ``-u`` keeps its log current up to a crash.

    ``--shard``, ``--device`` and ``--report`` come first, as ``extract_arguments`` may end with ``-- VIDEOS``.
    """
    return [
        sys.executable,
        "-u",
        "-m",
        "tsp_cli",
        "extract",
        *("--shard", str(shard), "--device", device, "--report", str(report)),
        *extract_arguments,
    ]


# ---- typed events, one JSON line each -----------------------------------------------------------


def _event_types() -> dict[str, type]:
    from tsp_cli.pipeline.events import ClipProgress, RunStarted, RunSummary, VideoEnded

    return {kind.__name__: kind for kind in (RunStarted, ClipProgress, VideoEnded, RunSummary)}


def event_line(event: Any) -> str:
    """One event or summary as a JSON line that names its type."""
    return json.dumps({"type": type(event).__name__, **dataclasses.asdict(event)}) + "\n"


def read_event(record: dict[str, Any]) -> Any | None:
    """The event or summary a JSON line holds, as its own dataclass; ``None`` for any other line.

    Only the fields the dataclass takes are passed (so a field the engine derives instead of
    storing is recomputed), and JSON's lists become tuples where the dataclass keeps tuples.
    """
    kind = _event_types().get(str(record.get("type")))
    if kind is None:
        return None
    values = {}
    for item in dataclasses.fields(kind):
        if item.init and item.name in record:
            values[item.name] = _from_json(record[item.name], as_tuple=isinstance(item.default, tuple))
    return kind(**values)


def _from_json(value: Any, *, as_tuple: bool) -> Any:
    if not isinstance(value, list):
        return value
    items = [tuple(entry) if isinstance(entry, list) else entry for entry in value]
    return tuple(items) if as_tuple else items


class ChildReport:
    """The child's side of ``--report PATH``: its events as JSON lines, progress at most twice a second.

    An ``on_event`` callback beside the display; :meth:`finish` adds the run's summary last.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.written_at = -PROGRESS_INTERVAL_SECONDS
        self.pending: ClipProgress | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, event: Event) -> None:
        from tsp_cli.pipeline.events import ClipProgress, RunStarted, VideoEnded

        if isinstance(event, ClipProgress):
            self.pending = event
            if self.clock() - self.written_at >= PROGRESS_INTERVAL_SECONDS:
                self._write_pending()
        elif isinstance(event, RunStarted | VideoEnded):
            self._write_pending()
            self._append(event)

    def finish(self, summary: RunSummary) -> None:
        self._write_pending()
        self._append(summary)

    def _write_pending(self) -> None:
        if self.pending is not None:
            self._append(self.pending)
            self.pending = None
            self.written_at = self.clock()

    def _append(self, event: Any) -> None:
        with self.path.open("a") as handle:
            handle.write(event_line(event))


class ShardEvents:
    """The children's events as the events of one run, for the single-device display.

    ``RunStarted`` once every child has started (its counts summed, its devices listed),
    ``ClipProgress`` summed over the shards' latest, ``VideoEnded`` as each arrives.
    """

    def __init__(self, shards: int, on_event: Callable[[Event], None]) -> None:
        self.shards = shards
        self.on_event = on_event
        self.started: dict[int, Any] = {}
        self.progress: dict[int, ClipProgress] = {}
        #: Events of shards that started before the others, held until the run as a whole has.
        self.held: list[tuple[int, Any]] = []

    def take(self, shard: int, event: Any) -> None:
        from tsp_cli.pipeline.events import ClipProgress, RunStarted, VideoEnded

        if isinstance(event, RunStarted):
            self.started[shard] = event
            if len(self.started) == self.shards:
                self.on_event(_all_started([self.started[index] for index in sorted(self.started)]))
                for held in self.held:
                    self.take(*held)
                self.held.clear()
        elif len(self.started) < self.shards:
            self.held.append((shard, event))
        elif isinstance(event, ClipProgress):
            self.progress[shard] = event
            silent = [started for index, started in self.started.items() if index not in self.progress]
            self.on_event(_summed_progress(list(self.progress.values()), sum(started.to_do for started in silent)))
        elif isinstance(event, VideoEnded):
            self.on_event(event)


def _all_started(started: Sequence[Any]) -> Any:
    from tsp_cli.pipeline.events import RunStarted

    notes = tuple(dict.fromkeys(note for event in started for note in event.notes))
    return RunStarted(
        videos=sum(event.videos for event in started),
        to_do=sum(event.to_do for event in started),
        skipped=sum(event.skipped for event in started),
        workers=sum(event.workers for event in started),
        device=", ".join(event.device for event in started),
        notes=notes,
    )


def _summed_progress(latest: Sequence[ClipProgress], silent_videos: int) -> ClipProgress:
    """The shards' progress added up; the videos of a shard not heard from yet count as unprobed."""
    from tsp_cli.pipeline.events import ClipProgress

    return ClipProgress(
        computed=sum(progress.computed for progress in latest),
        expected=sum(progress.expected for progress in latest),
        probed=sum(progress.probed for progress in latest),
        unprobed=sum(progress.unprobed for progress in latest) + silent_videos,
    )


def combine_summaries(summaries: Sequence[RunSummary], wall_seconds: float) -> RunSummary:
    """The shards' summaries as one run's: counts added, lists joined, the parent's wall time.

    The time the network waited for frames is the shards' average, so that its share of the
    wall time reads as one device's does.
    """
    from tsp_cli.pipeline.events import RunSummary

    values: dict[str, Any] = {}
    for item in dataclasses.fields(RunSummary):
        if not item.init:
            continue
        parts = [getattr(summary, item.name) for summary in summaries]
        if item.name == "wall_seconds":
            values[item.name] = wall_seconds
        elif item.name == "data_wait_seconds":
            values[item.name] = sum(parts) / len(parts) if parts else 0.0
        elif parts and isinstance(parts[0], list):
            values[item.name] = [entry for part in parts for entry in part]
        elif parts and isinstance(parts[0], int | float):
            values[item.name] = sum(parts)
    return RunSummary(**values)


# ---- the children ------------------------------------------------------------------------------


@dataclass
class ShardRun:
    """One child: its shard, device and log, the summary it reported, and how it ended."""

    shard: Shard
    device: str
    log: Path
    exit_code: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    summary: RunSummary | None = None

    @property
    def report_path(self) -> Path:
        return self.log.with_suffix(".jsonl")

    @property
    def crashed(self) -> bool:
        """Ended with an error other than "some videos failed", or without reporting its summary."""
        if self.exit_code is None or self.exit_code == 0:
            return False
        return self.exit_code != 1 or self.summary is None

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
    def summaries(self) -> list[RunSummary]:
        return [run.summary for run in self.runs if run.summary is not None]

    @property
    def exit_code(self) -> int:
        """The largest of the children's codes (a signal counts as 128 + its number); at least 1 on a crash."""
        codes = [_shell_code(run.exit_code or 0) for run in self.runs]
        return max([*codes, 1 if self.crashed else 0])


def run_shards(
    extract_arguments: Sequence[str],
    devices: Sequence[str],
    log_dir: Path,
    *,
    on_event: Callable[[Event], None] | None = None,
    poll_seconds: float = 0.5,
) -> FanoutResult:
    """Run shard ``i/len(devices)`` on ``devices[i]``, each in a child process, and follow their events.

    ``extract_arguments`` are the child's ``tsp extract`` arguments without ``--shard``,
    ``--device`` and ``--report``. ``on_event`` gets the events of the whole run (see
    :class:`ShardEvents`). Children still running when this returns (an interrupt) are stopped.
    """
    started = time.perf_counter()
    runs = [
        ShardRun(shard, device, Path(log_dir) / f"shard-{shard.index}-of-{shard.count}.log")
        for shard, device in zip(all_shards(len(devices)), devices, strict=True)
    ]
    events = ShardEvents(len(runs), on_event or (lambda event: None))
    try:
        for run in runs:
            run.report_path.write_text("")
            run.process = _start(child_command(extract_arguments, run.shard, run.device, run.report_path), run.log)
        followers = [FileFollower(run.report_path, from_end=False) for run in runs]
        while _still_running(runs):
            _take_events(runs, followers, events)
            time.sleep(poll_seconds)
        _take_events(runs, followers, events)
    finally:
        _stop(runs)
    return FanoutResult(runs, Path(log_dir), time.perf_counter() - started)


def _take_events(runs: Sequence[ShardRun], followers: Sequence[FileFollower], events: ShardEvents) -> None:
    from tsp_cli.pipeline.events import RunSummary

    for run, follower in zip(runs, followers, strict=True):
        for record in follower.new_records():
            event = read_event(record)
            if isinstance(event, RunSummary):
                run.summary = event
            elif event is not None:
                events.take(run.shard.index, event)


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)


def _still_running(runs: Sequence[ShardRun]) -> bool:
    for run in runs:
        if run.exit_code is None and run.process is not None:
            run.exit_code = run.process.poll()
    return any(run.exit_code is None for run in runs)


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


def shared_arguments(request: _Request, shards: int) -> list[str]:
    """Every child's ``tsp extract`` options other than the checkpoint, ``--shard``, ``--device``
    and ``--report``, ending with ``-- VIDEOS``; the decoders are shared out among the shards."""
    workers = default_workers_per_shard(shards) if request.workers is None else request.workers
    arguments = [
        *("--output", str(request.output), "--stride", str(request.stride)),
        *("--batch-size", str(request.batch_size), "--workers", str(workers)),
        *("--precision", request.precision),
    ]
    if request.clip_len is not None:  # else each child takes the checkpoint's recipe, as this process would
        arguments += ["--clip-len", str(request.clip_len)]
    if request.frame_rate is not None:
        arguments += ["--frame-rate", repr(request.frame_rate)]
    if request.metadata is not None:
        arguments += ["--metadata", str(request.metadata)]
    if request.dry_run:
        arguments.append("--dry-run")
    return [*arguments, "--", *map(str, request.videos)]
