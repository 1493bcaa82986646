"""Every command's progress display: one module, one log interval, one way to render.

On a terminal a Rich live display on stderr; without one (cluster logs, pipes) a plain line at
most every :data:`LOG_INTERVAL_SECONDS`, plus the last one. Displays:

- :class:`StepProgress`: the data steps (merge, inspect, metadata, standardize), items done of a total;
- :class:`ExtractProgress`: ``tsp extract``'s engine events, in clips (known once a video is probed),
  on one device or, summed by ``tsp_cli.cli.fanout.ShardEvents``, on several (``--devices``);
- :class:`DownloadBar` and :func:`download_progress`: checkpoint downloads, in bytes.

Rich is imported here and only when a display is made, so that ``tsp --help`` does not pay for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tsp_cli.cli.common import count, err, is_interactive, print_notes

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from tsp_cli.data.progress import Progress as StepEvent
    from tsp_cli.pipeline.events import ClipProgress, Event, RunStarted, VideoEnded

#: Without a terminal, one progress line at most this often (plus the last one), for every command.
LOG_INTERVAL_SECONDS = 30.0


class _Display:
    """A Rich ``Progress`` on a terminal (with :meth:`columns`), or plain lines at most every interval."""

    transient = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.live = is_interactive()
        self.progress: Progress | None = None
        self.clock = clock
        self._last_line = clock()

    def columns(self) -> tuple[Any, ...]:
        return ()

    def __enter__(self):
        if self.live:
            from rich.progress import Progress

            self.progress = Progress(*self.columns(), console=err, transient=self.transient)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line_due(self, *, last: bool = False) -> bool:
        """In logs: whether to print a progress line now (always for the ``last`` one)."""
        if self.live:
            return False
        if not last and self.clock() - self._last_line < LOG_INTERVAL_SECONDS:
            return False
        self._last_line = self.clock()
        return True


def _eta(remaining: float, rate: float) -> str:
    """``H:MM:SS`` left at ``rate`` (as Rich writes the time elapsed beside it), or ``?`` while nothing
    has been computed yet."""
    if rate <= 0 or remaining < 0:
        return "?"
    seconds = round(remaining / rate)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _rate_and_eta_columns(clock: Callable[[], float]) -> tuple[Any, Any]:
    """Rich columns for clips/s and the ETA, from the run's average rate since its start.

    Rich's own speed keeps a 30-second window of samples, shorter than one batch on a CPU
    (32 clips at 0.7 clips/s take 45 s), so its ETA stays ``-:--:--`` for a whole CPU run; the
    average since the start moves with every batch and needs only the first one.
    """
    from rich.progress import ProgressColumn
    from rich.text import Text

    def rate(task: Any) -> float:
        elapsed = clock() - task.fields["started"]
        return task.completed / elapsed if elapsed > 0 else 0.0

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{rate(task):.1f} clips/s")

    class EtaColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            remaining = task.total - task.completed if task.total is not None else -1
            return Text(f"ETA {_eta(remaining, rate(task))}", style="progress.remaining")

    return RateColumn(), EtaColumn()


# ---- the data steps ----------------------------------------------------------------------------


class StepProgress(_Display):
    """Items done of a total for a data step; a callback for the core's ``on_progress``."""

    transient = True

    def __init__(self, description: str) -> None:
        super().__init__()
        self.description = description
        self.task: TaskID | None = None

    def columns(self) -> tuple[Any, ...]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )

    def __call__(self, event: StepEvent) -> None:
        from rich.markup import escape

        if self.progress is not None:
            if self.task is None:
                self.task = self.progress.add_task(self.description, total=None)
            self.progress.update(self.task, completed=event.done, total=event.total)
        elif self.line_due(last=event.done == event.total):
            err.print(f"{self.description} {event.done}/{event.total} ({escape(event.item)})")


# ---- tsp extract -----------------------------------------------------------------------------


class ExtractProgress(_Display):
    """Renders the engine's events: a bar in clips with rate and ETA, failures and clip-less videos as they happen.

    The total is the clips of the videos probed so far plus an estimate for the others (their
    average), so the ETA neither counts failed videos as work done nor waits for a long video
    to end before moving.
    """

    def __init__(self, label: str, clock: Callable[[], float] = time.monotonic, *, dry_run: bool = False) -> None:
        super().__init__(clock)
        self.label = label
        #: A dry run writes nothing: a clip-less video "would be" saved as 0 clips.
        self.saved = "would be saved as 0 clips" if dry_run else "saved as 0 clips"
        self.task: TaskID | None = None
        self.started = clock()
        self.clips = 0
        self.total: int | None = None
        self.videos_left = 0
        self._handlers: dict[type, Callable[[Any], None]] = {}

    def columns(self) -> tuple[Any, ...]:
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

        rate, eta = _rate_and_eta_columns(self.clock)
        return (
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("clips · {task.fields[to_go]} to go ·"),
            rate,
            TimeElapsedColumn(),
            eta,
        )

    def __call__(self, event: Event) -> None:
        if not self._handlers:
            from tsp_cli.pipeline.events import ClipProgress, RunStarted, VideoEnded

            self._handlers = {
                RunStarted: self.on_run_started,
                ClipProgress: self.on_clip_progress,
                VideoEnded: self.on_video_ended,
            }
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def on_run_started(self, event: RunStarted) -> None:
        from rich.markup import escape

        print_notes(event.notes)
        err.print(
            f"{escape(self.label)}: {count(event.videos, 'video')}, {event.skipped} already done, {event.to_do} to do "
            f"on {event.device} with {count(event.workers, 'decoding worker')}."
        )
        self.videos_left = event.to_do
        self.started = self.clock()
        if self.progress is not None:
            self.task = self.progress.add_task(
                escape(self.label), total=None, to_go=count(event.to_do, "video"), started=self.started
            )

    def on_clip_progress(self, event: ClipProgress) -> None:
        self.clips, self.total = event.computed, event.estimated_total
        self._refresh()

    def on_video_ended(self, event: VideoEnded) -> None:
        from rich.markup import escape

        self.videos_left -= 1
        if event.outcome == "failed":
            err.print(f"[red]✗[/] {escape(event.name)}: {escape(event.error or '')}")
        elif event.outcome == "no clips":
            err.print(f"[yellow]○[/] {escape(event.name)}: shorter than one clip, {self.saved}")
        self._refresh(last=self.videos_left == 0)

    def _refresh(self, *, last: bool = False) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task, completed=self.clips, total=self.total, to_go=count(self.videos_left, "video")
            )
        elif self.line_due(last=last):
            elapsed = self.clock() - self.started
            rate = self.clips / elapsed if elapsed > 0 else 0.0
            total = "?" if self.total is None else str(self.total)
            remaining = (self.total - self.clips) if self.total is not None else -1
            err.print(
                f"{self.label}: {self.clips}/{total} clips, {count(self.videos_left, 'video')} to go, "
                f"{rate:.1f} clips/s, ETA {_eta(remaining, rate)}",
                highlight=False,
            )


# ---- checkpoint downloads ----------------------------------------------------------------------


class DownloadBar:
    """pooch's progress-bar protocol (``total``, ``update``, ``reset``, ``close``) on a Rich task.

    The task is added only once a transfer starts, so a checkpoint that is already cached
    draws no empty bar.
    """

    def __init__(self, progress: Progress, description: str) -> None:
        self._progress = progress
        self._description = description
        self._task: TaskID | None = None
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, size: int) -> None:
        # 0 means the server sent no Content-Length: keep Rich's indeterminate bar.
        self._total = size
        self._progress.update(self._ensure_task(), total=size or None)

    def update(self, advance: int) -> None:
        self._progress.advance(self._ensure_task(), advance)

    def reset(self) -> None:
        # pooch calls reset() then update(total) to fill the bar exactly; with no known total
        # there is nothing to correct, and resetting would wipe the bytes counted so far.
        if self._total:
            self._progress.update(self._ensure_task(), completed=0)

    def close(self) -> None:
        self._progress.stop_task(self._ensure_task())

    def _ensure_task(self) -> TaskID:
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=None)
        return self._task


def download_progress(*, transient: bool) -> Progress:
    """Bytes, speed and ETA on stderr; nothing at all when stderr is not a terminal (logs)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
        disable=not is_interactive(),
    )
