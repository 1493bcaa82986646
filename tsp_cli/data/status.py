"""``tsp status``: what an output folder holds against the videos it should hold.

A user with 64 array tasks wants to see at a glance what is left, and which shards to
resubmit. Everything here is read from the folder itself (feature files, ``videos.jsonl``
and ``failures.jsonl``), so it works while the shards still run, and from any machine that
sees the folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsp_cli.data.metadata import read_metadata_csv
from tsp_cli.errors import UsageError
from tsp_cli.pipeline import store
from tsp_cli.pipeline.inputs import collect_jobs
from tsp_cli.pipeline.sharding import Shard, all_shards, parse_shard

#: "Recent progress" is the speed over the last this many seconds of finished videos.
RECENT_WINDOW_SECONDS = 600.0


@dataclass(frozen=True)
class ShardStatus:
    """One shard's counts; ``videos`` and ``missing`` are ``None`` when the shard count is unknown."""

    shard: str
    videos: int | None
    done: int
    failed: int
    missing: int | None

    @property
    def complete(self) -> bool:
        return self.failed == 0 and self.missing == 0


@dataclass(frozen=True)
class RecentSpeed:
    """Throughput of all shards together over the last finished videos."""

    clips_per_second: float
    videos_per_second: float
    window_seconds: float
    last_finished_ago_seconds: float


@dataclass
class FolderStatus:
    out_dir: Path
    videos: int
    done: list[str]
    failed: dict[str, dict[str, Any]]
    missing: list[str]
    shard_count: int | None = None
    shard_count_source: str | None = None
    shards: list[ShardStatus] = field(default_factory=list)
    recent: RecentSpeed | None = None

    @property
    def exit_code(self) -> int:
        """0 when every video is done, 1 when any is missing or failed."""
        return 1 if self.failed or self.missing else 0

    @property
    def shards_with_work_left(self) -> list[int]:
        """Indices of the shards to run again (known only with a shard count)."""
        if self.shard_count is None:
            return []
        return [parse_shard(row.shard).index for row in self.shards if not row.complete]

    @property
    def eta_seconds(self) -> float | None:
        """Time for the missing videos at the recent speed; ``None`` without a recent speed."""
        if self.recent is None or self.recent.videos_per_second <= 0 or not self.missing:
            return None
        return len(self.missing) / self.recent.videos_per_second

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "videos": self.videos,
            "done": len(self.done),
            "failed": len(self.failed),
            "missing": len(self.missing),
            "shard_count": self.shard_count,
            "shard_count_source": self.shard_count_source,
            "shards": [vars(row) for row in self.shards],
            "shards_with_work_left": self.shards_with_work_left,
            "failures": [
                {
                    "video": name,
                    "error": record.get("error"),
                    "shard": record.get("shard"),
                    "failed_at": record.get("failed_at"),
                }
                for name, record in self.failed.items()
            ],
            "missing_videos": self.missing,
            "recent": vars(self.recent) if self.recent else None,
            "eta_seconds": self.eta_seconds,
        }


def expected_videos(videos: Sequence[Path], metadata: Path | None) -> list[str]:
    """The ordered names ``tsp extract`` would build from the same VIDEOS and ``--metadata``.

    A metadata CSV alone is enough: its rows, in order, are the job list.
    """
    if metadata is not None and not videos:
        return list(read_metadata_csv(metadata))
    if not videos:
        raise UsageError(
            "Give the VIDEOS that were extracted, or --metadata CSV, so that status knows which videos belong there."
        )
    return [job.name for job in collect_jobs(list(videos), metadata)]


def folder_status(
    out_dir: Path, names: Sequence[str], *, shards: int | None = None, now: float | None = None
) -> FolderStatus:
    """Done, failed and missing videos of ``names`` in ``out_dir``, per shard and with recent speed.

    ``shards`` splits ``names`` as ``tsp extract --shard i/shards`` does; without it, the
    shard count is taken from the records when they all agree on one.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a folder; give the --output folder of tsp extract.")
    if shards is not None and shards < 1:
        raise UsageError("--shards must be at least 1.")
    expected = set(names)
    finished = store.finished_names(out_dir) & expected
    all_records = store.read_jsonl(out_dir / store.RECORDS_NAME)
    records = {record["video"]: record for record in all_records if record.get("video") in expected}
    failed = {name: record for name, record in store.read_failures(out_dir).items() if name in expected}
    status = FolderStatus(
        out_dir,
        len(names),
        done=[n for n in names if n in finished],
        failed={n: failed[n] for n in names if n in failed},
        missing=[n for n in names if n not in finished and n not in failed],
        recent=recent_speed(all_records, now=time.time() if now is None else now),
    )
    recorded_shards = {
        name: str(record["shard"]) for name, record in {**records, **status.failed}.items() if "shard" in record
    }
    if shards is not None:
        status.shard_count, status.shard_count_source = shards, "--shards"
    else:
        status.shard_count = _agreed_shard_count(recorded_shards.values())
        status.shard_count_source = "records" if status.shard_count is not None else None
    if status.shard_count is not None:
        status.shards = _counted_shards(names, status, all_shards(status.shard_count))
    else:
        status.shards = _recorded_shards(status, recorded_shards)
    return status


def recent_speed(records: Iterable[dict[str, Any]], *, now: float) -> RecentSpeed | None:
    """Clips and videos per second over the last :data:`RECENT_WINDOW_SECONDS` of finished videos.

    The window ends at the last finished video, not now, so a folder whose run stopped still
    shows the speed it had; ``last_finished_ago_seconds`` tells whether it is still moving.
    """
    finished = sorted((float(r["finished_at"]), int(r.get("clips") or 0)) for r in records if "finished_at" in r)
    if len(finished) < 2:
        return None
    last = finished[-1][0]
    window = [(at, clips) for at, clips in finished if at >= last - RECENT_WINDOW_SECONDS]
    if len(window) < 2 or last <= window[0][0]:
        return None
    seconds = last - window[0][0]
    after_first = window[1:]
    return RecentSpeed(
        clips_per_second=sum(clips for _, clips in after_first) / seconds,
        videos_per_second=len(after_first) / seconds,
        window_seconds=seconds,
        last_finished_ago_seconds=max(0.0, now - last),
    )


def slurm_array_spec(indices: Iterable[int]) -> str:
    """``3,17,40-42``: the indices as ``sbatch --array`` takes them."""
    parts: list[str] = []
    ordered = sorted(set(indices))
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        parts.append(str(ordered[start]) if start == end else f"{ordered[start]}-{ordered[end]}")
        start = end + 1
    return ",".join(parts)


def _agreed_shard_count(recorded: Iterable[str]) -> int | None:
    """The shard count all records agree on, if it splits the list (more than one shard)."""
    counts = set()
    for spec in recorded:
        try:
            counts.add(parse_shard(spec).count)
        except UsageError:
            return None
    if len(counts) != 1:
        return None
    (count,) = counts
    return count if count > 1 else None


def _counted_shards(names: Sequence[str], status: FolderStatus, shards: list[Shard]) -> list[ShardStatus]:
    done, failed = set(status.done), set(status.failed)
    rows = []
    for shard in shards:
        members = shard.select(list(names))
        done_here = sum(name in done for name in members)
        failed_here = sum(name in failed for name in members)
        rows.append(
            ShardStatus(str(shard), len(members), done_here, failed_here, len(members) - done_here - failed_here)
        )
    return rows


def _recorded_shards(status: FolderStatus, recorded_shards: dict[str, str]) -> list[ShardStatus]:
    """Per shard as the records name them; missing videos have no shard to count them under."""
    done = Counter(recorded_shards[name] for name in status.done if name in recorded_shards)
    failed = Counter(recorded_shards[name] for name in status.failed if name in recorded_shards)
    return [
        ShardStatus(shard, None, done[shard], failed[shard], None) for shard in sorted(done | failed, key=_shard_order)
    ]


def _shard_order(spec: str) -> tuple[int, int, str]:
    try:
        shard = parse_shard(spec)
    except UsageError:
        return (1 << 30, 0, spec)
    return (shard.count, shard.index, spec)
