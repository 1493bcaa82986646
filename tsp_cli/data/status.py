"""``tsp status``: what an output folder holds against the videos it should hold.

A user with 64 array tasks wants to see at a glance what is left, and which shards to
resubmit. Everything here is read from the folder itself (feature files and every process's
record files, see pipeline/records.py), so it works while the shards still run, and from any
machine that sees the folder. A feature file counts as done only when it passes the same cheap
check a rerun makes (pipeline/resume.py); one that fails is "bad", and a rerun redoes it. Without the list of videos, it reports what the records hold (done and failed).

At Kinetics scale (650k videos, 1,000 shards) everything here is linear in the videos: the
shards are counted from one pass over the list and cumulative sums, never by copying it per shard.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tsp_cli.errors import UsageError
from tsp_cli.pipeline import resume, store
from tsp_cli.pipeline.inputs import listed_names
from tsp_cli.pipeline.sharding import parse_shard, shard_edges

#: "Recent progress" is the speed over the last this many seconds of finished videos.
RECENT_WINDOW_SECONDS = 600.0
#: Videos finishing within this many seconds of the window's first one came out of the same batches:
#: the time they took was spent before the window began, so the window's clock starts after them.
SAME_BATCH_SECONDS = 1.0


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
    """``listed`` is False when no list of videos was given: then ``videos`` counts only what the
    records name, and which videos are missing is not known (``missing`` stays empty).

    ``bad`` maps videos whose feature file failed the resume check to why (a rerun redoes them);
    ``truncated`` maps done videos whose file declared more seconds than it decoded to those two
    lengths (their features cover what decoded); ``notes`` are warnings about the folder
    (unreadable record lines), each said once."""

    out_dir: Path
    videos: int
    done: list[str]
    failed: dict[str, dict[str, Any]]
    missing: list[str]
    listed: bool = True
    shard_count: int | None = None
    shard_count_source: str | None = None
    shards: list[ShardStatus] = field(default_factory=list)
    recent: RecentSpeed | None = None
    bad: dict[str, str] = field(default_factory=dict)
    truncated: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every video is done, 1 when any is missing, failed or bad."""
        return 1 if self.failed or self.missing or self.bad else 0

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
        """Plain JSON; ``videos`` and ``missing`` are ``null`` when no list of videos was given."""
        return {
            "out_dir": str(self.out_dir),
            "videos": self.videos if self.listed else None,
            "done": len(self.done),
            "failed": len(self.failed),
            "bad": len(self.bad),
            "missing": len(self.missing) if self.listed else None,
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
            "bad_videos": [{"video": name, "problem": why} for name, why in self.bad.items()],
            "truncated_videos": [
                {"video": name, "declared_seconds": declared, "decoded_seconds": decoded}
                for name, (declared, decoded) in self.truncated.items()
            ],
            "missing_videos": self.missing if self.listed else None,
            "notes": self.notes,
            "recent": vars(self.recent) if self.recent else None,
            "eta_seconds": self.eta_seconds,
        }


def expected_videos(videos: Sequence[Path], metadata: Path | None) -> list[str] | None:
    """The ordered names ``tsp extract`` would build from the same VIDEOS and ``--metadata``;
    ``None`` when neither is given (status then reports what the records hold).

    A metadata CSV alone is enough: its rows, in order, are the job list. No file is checked:
    which videos exist is extract's business, which are done is status's.
    """
    if metadata is None and not videos:
        return None
    return listed_names(list(videos), metadata)


def folder_status(
    out_dir: Path, names: Sequence[str] | None, *, shards: int | None = None, now: float | None = None
) -> FolderStatus:
    """Done, failed and missing videos of ``names`` in ``out_dir``, per shard and with recent speed.

    ``shards`` splits ``names`` as ``tsp extract --shard i/shards`` does; without it, the
    shard count is taken from the records when they all agree on one. ``names=None`` reports the
    done and failed videos the folder and its records know of, per recorded shard.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a folder; give the `out_dir` folder of tsp extract.")
    if shards is not None and shards < 1:
        raise UsageError("`shards` must be at least 1.", parameter="shards")
    if shards is not None and names is None:
        raise UsageError(
            "`shards` splits the list of videos; give `videos` or `metadata` with it.",
            parameter="shards",
        )
    if not store.is_output_folder(out_dir):
        raise UsageError(
            f"{out_dir} is not a `tsp extract` output folder (no manifest, records or feature files); "
            "give the `out_dir` folder of tsp extract."
        )
    check = resume.check_outputs(out_dir, names)
    known = check.records
    present = check.present
    failures = {name: record for name, record in known.failures.items() if name not in present}
    now = time.time() if now is None else now
    recent = recent_speed(known.all_videos, now=now)
    if names is None:
        finished = sorted(check.finished)
        status = FolderStatus(
            out_dir,
            len(finished) + len(failures) + len(check.bad),
            done=finished,
            failed={name: failures[name] for name in sorted(failures)},
            missing=[],
            listed=False,
            recent=recent,
            bad=dict(sorted(check.bad.items())),
        )
        expected: set[str] | None = None
    else:
        expected = set(names)
        finished_set = check.finished & expected
        status = FolderStatus(
            out_dir,
            len(names),
            done=[n for n in names if n in finished_set],
            failed={n: failures[n] for n in names if n in failures},
            missing=[n for n in names if n not in finished_set and n not in failures and n not in check.bad],
            recent=recent,
            bad={n: check.bad[n] for n in names if n in check.bad},
        )
    status.notes = [note for note in [known.damage_note()] if note]
    records = {name: record for name, record in known.videos.items() if expected is None or name in expected}
    status.truncated = {
        name: (float(records[name]["declared_seconds"]), float(records[name]["decoded_seconds"]))
        for name in status.done
        if name in records and records[name].get("truncated")
    }
    recorded_shards = {
        name: str(record["shard"]) for name, record in {**records, **status.failed}.items() if "shard" in record
    }
    if shards is not None:
        status.shard_count, status.shard_count_source = shards, "--shards"
    elif names is not None:
        status.shard_count = _agreed_shard_count(recorded_shards.values())
        status.shard_count_source = "records" if status.shard_count is not None else None
    if names is not None and status.shard_count is not None:
        status.shards = _counted_shards(names, status, status.shard_count)
    else:
        status.shards = _recorded_shards(status, recorded_shards)
    return status


def recent_speed(records: Iterable[dict[str, Any]], *, now: float) -> RecentSpeed | None:
    """Clips and videos per second over the last :data:`RECENT_WINDOW_SECONDS` of finished videos.

    The window ends at the last finished video, not now, so a folder whose run stopped still
    shows the speed it had; ``last_finished_ago_seconds`` tells whether it is still moving. Its
    clock starts when the first batch of the window ended: videos that finish together (one batch
    of one shard) say nothing of how long they took, so they are not counted, and a window that
    holds nothing else has no measured speed (``None``), rather than thousands of clips per second.
    """
    finished = sorted((float(r["finished_at"]), int(r.get("clips") or 0)) for r in records if "finished_at" in r)
    if not finished:
        return None
    last = finished[-1][0]
    window = [(at, clips) for at, clips in finished if at >= last - RECENT_WINDOW_SECONDS]
    start = max(at for at, _ in window if at <= window[0][0] + SAME_BATCH_SECONDS)
    counted = [clips for at, clips in window if at > start]
    if not counted:
        return None
    seconds = last - start
    return RecentSpeed(
        clips_per_second=sum(counted) / seconds,
        videos_per_second=len(counted) / seconds,
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


def _counted_shards(names: Sequence[str], status: FolderStatus, count: int) -> list[ShardStatus]:
    """Every shard's counts from one pass over ``names``: cumulative sums cut at the shard edges."""
    done, failed = set(status.done), set(status.failed)
    done_before = np.zeros(len(names) + 1, dtype=np.int64)
    failed_before = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((name in done for name in names), bool, len(names)), out=done_before[1:])
    np.cumsum(np.fromiter((name in failed for name in names), bool, len(names)), out=failed_before[1:])
    edges = shard_edges(len(names), count)
    rows = []
    for index, (start, stop) in enumerate(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)):
        done_here = int(done_before[stop] - done_before[start])
        failed_here = int(failed_before[stop] - failed_before[start])
        rows.append(
            ShardStatus(
                f"{index}/{count}", stop - start, done_here, failed_here, stop - start - done_here - failed_here
            )
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
