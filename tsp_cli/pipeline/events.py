"""What an extraction reports while it runs (the CLI renders the events; the core never prints) and what it did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


def is_high_bit_depth(pixel_format: str) -> bool:
    """More than 8 bits per sample (10-bit HEVC, for example): swscale converts those to RGB by
    another path, whose results differ between FFmpeg builds (8-bit ones are bit-identical)."""
    import av

    try:
        return max(component.bits for component in av.VideoFormat(pixel_format).components) > 8
    except (ValueError, av.FFmpegError):
        return False


# ---- events the engine reports (the CLI renders them; the core never prints) -------------


@dataclass(frozen=True)
class RunStarted:
    videos: int
    to_do: int
    skipped: int
    workers: int
    device: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VideoBegan:
    name: str
    clips: int


@dataclass(frozen=True)
class ClipsComputed:
    count: int


@dataclass(frozen=True)
class VideoEnded:
    name: str
    outcome: str  # "done", "no clips" or "failed"
    clips: int
    error: str | None = None


@dataclass(frozen=True)
class ClipProgress:
    """Where the run stands in clips, sent after every change (a video probed, a batch computed, a video ended).

    ``expected`` counts the clips of the videos probed so far (computed ones included; those a
    failed video will never get are taken off); the clips of the ``unprobed`` videos are not
    known yet. :attr:`estimated_total` extrapolates them from the probed videos.
    """

    computed: int
    expected: int
    probed: int
    unprobed: int

    @property
    def estimated_total(self) -> int:
        if not self.unprobed:
            return self.expected
        if not self.probed:
            return max(self.expected, self.computed)
        return self.expected + round(self.unprobed * self.expected / self.probed)


Event = RunStarted | VideoBegan | ClipsComputed | VideoEnded | ClipProgress


@dataclass
class RunSummary:
    """What a run did; ``exit_code`` is 1 when any video failed.

    ``failed`` and ``no_clips`` are counted from the lists that name those videos, so they can
    never disagree with them.
    """

    videos: int = 0
    done: int = 0
    skipped: int = 0
    clips: int = 0
    wall_seconds: float = 0.0
    data_wait_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: How many of the failures another attempt may cure (a crash, an unexpected error); the others are the files'.
    retryable_failures: int = 0
    #: Names of the videos shorter than one clip (0 x 512 arrays).
    no_clips_names: list[str] = field(default_factory=list)
    #: ``(name, pixel format)`` of videos with more than 8 bits per sample, whose features depend on the FFmpeg build.
    high_bit_depth: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def no_clips(self) -> int:
        return len(self.no_clips_names)

    def counts(self) -> dict[str, object]:
        """Every field and count as plain JSON-ready values (``dataclasses.asdict`` leaves out the derived counts)."""
        return {**asdict(self), "failed": self.failed, "no_clips": self.no_clips, "exit_code": self.exit_code}

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def data_wait_share(self) -> float:
        """Share of the run the main process (and so the network) spent waiting for decoded clips."""
        return self.data_wait_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0
