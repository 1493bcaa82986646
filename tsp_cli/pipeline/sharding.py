"""Splitting the ordered video list into shards, and finding this process's shard in its launcher.

``--shard auto`` rides the launchers our users already run, so no scheduler of ours is needed:
a Slurm job array, torchrun, a Google Cloud Batch job, or plain Slurm tasks (``srun``) each tell
a process its index and the number of its peers through environment variables. (A Kubernetes
Indexed Job and an AWS Batch array job give the index only: ``--shard $INDEX/N``, see
docs/cluster.md.) Every shard selects a contiguous,
disjoint part of the same ordered list, so together they cover each video exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tsp_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")

_SHARD_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

#: The source torchrun's shards are said to come from; its agent stops every rank when one fails.
TORCHRUN = "torchrun"
#: What ``--shard auto`` looks for, in this order, for the message when none is there.
_LAUNCHERS_LOOKED_FOR = (
    "a Slurm job array (SLURM_ARRAY_TASK_ID), torchrun (RANK, WORLD_SIZE), a Google Batch job "
    "(BATCH_TASK_INDEX, BATCH_TASK_COUNT) or Slurm tasks (SLURM_PROCID, SLURM_NTASKS)"
)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def bounds(self, total: int) -> tuple[int, int]:
        """``(start, stop)`` of this shard among ``total`` items, so that a shard can be cut from a list
        it never builds (a metadata CSV read row by row)."""
        edges = shard_edges(total, self.count)
        return int(edges[self.index]), int(edges[self.index + 1])

    def select(self, items: Sequence[T]) -> list[T]:
        """The reference's contiguous split: boundaries ``linspace(0, len, count+1).astype(int)``."""
        start, stop = self.bounds(len(items))
        return list(items[start:stop])


def shard_edges(total: int, count: int) -> np.ndarray:
    """The reference's shard boundaries, ``linspace(0, total, count+1).astype(int)``: shard i is
    ``[edges[i], edges[i+1])``. One array for all shards, so that counting every shard is linear."""
    import numpy as np  # here, so that a mistyped --shard is answered without waiting for NumPy

    return np.linspace(0, total, count + 1).astype(int)


def parse_shard(spec: str) -> Shard:
    """Parse ``i/n`` with ``0 <= i < n``."""
    match = _SHARD_SPEC.match(spec)
    if not match:
        raise UsageError(f"`shard` {spec!r} is not of the form i/n (for example 0/4).", parameter="shard")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise UsageError(
            f"`shard` {spec!r} is out of range: it needs 0 <= i < n (for example 0/{max(count, 1)}).", parameter="shard"
        )
    return Shard(index, count)


def all_shards(count: int) -> list[Shard]:
    """Shards ``0/count`` to ``count-1/count``: together they select every item exactly once."""
    return [Shard(index, count) for index in range(count)]


# ---- --shard auto ------------------------------------------------------------------------


@dataclass(frozen=True)
class LauncherShard:
    """The shard a launcher gave this process, where it came from, and torchrun's local rank."""

    shard: Shard
    source: str
    local_rank: int | None = None

    def describe(self) -> str:
        """What the user is told, so that a log shows which launcher decided the shard."""
        return f"shard {self.shard} from {self.source}"


def detect_shard(environment: Mapping[str, str]) -> LauncherShard:
    """This process's shard from the launcher's variables in ``environment``.

    Order matters: a Slurm array task also carries ``SLURM_PROCID`` (always 0), and torchrun
    started by ``srun`` carries the Slurm task variables of its one task per node, so the more
    specific launcher is asked first. torchrun across the tasks of a Google Batch job numbers
    every process of the job (``RANK``), where ``BATCH_TASK_INDEX`` numbers only the tasks.
    """
    for detect in (_from_slurm_array, _from_torchrun, _from_google_batch, _from_slurm_tasks):
        found = detect(environment)
        if found is not None:
            return found
    raise UsageError(
        f"`shard` auto found neither {_LAUNCHERS_LOOKED_FOR} in the environment; give `shard` i/n instead."
    )


def device_for_local_rank(device: str | None, local_rank: int | None, cuda_available: bool) -> str | None:
    """``cuda:LOCAL_RANK`` when torchrun gave a local rank and the device is CUDA or left to default.

    torchrun starts one process per GPU of a node without telling each which GPU to take; the
    local rank is the convention. An explicit ``cuda:N``, ``cpu`` or ``mps`` is kept as given.
    """
    if local_rank is None:
        return device
    if device == "cuda" or (device in (None, "auto") and cuda_available):
        return f"cuda:{local_rank}"
    return device


def _from_slurm_array(environment: Mapping[str, str]) -> LauncherShard | None:
    if "SLURM_ARRAY_TASK_ID" not in environment:
        return None
    source = "the Slurm job array"
    task = _integer(environment, "SLURM_ARRAY_TASK_ID", source)
    first = _integer(environment, "SLURM_ARRAY_TASK_MIN", source)
    last = _integer(environment, "SLURM_ARRAY_TASK_MAX", source)
    count = _integer(environment, "SLURM_ARRAY_TASK_COUNT", source)
    step = _integer(environment, "SLURM_ARRAY_TASK_STEP", source) if "SLURM_ARRAY_TASK_STEP" in environment else 1
    if step != 1 or last - first + 1 != count:
        raise UsageError(
            f"`shard` auto needs a Slurm array of consecutive task ids, but this one has {count} tasks from {first} "
            f"to {last} in steps of {step}; use `shard` $SLURM_ARRAY_TASK_ID/N with N the number of shards instead."
        )
    return LauncherShard(_checked(task - first, count, source), source)


def _from_torchrun(environment: Mapping[str, str]) -> LauncherShard | None:
    if "RANK" not in environment:
        return None
    source = TORCHRUN
    rank = _integer(environment, "RANK", source)
    world_size = _integer(environment, "WORLD_SIZE", source)
    local_rank = _integer(environment, "LOCAL_RANK", source) if "LOCAL_RANK" in environment else None
    return LauncherShard(_checked(rank, world_size, source), source, local_rank)


def _from_google_batch(environment: Mapping[str, str]) -> LauncherShard | None:
    if "BATCH_TASK_INDEX" not in environment:
        return None
    source = "the Google Batch job"
    index = _integer(environment, "BATCH_TASK_INDEX", source)
    return LauncherShard(_checked(index, _integer(environment, "BATCH_TASK_COUNT", source), source), source)


def _from_slurm_tasks(environment: Mapping[str, str]) -> LauncherShard | None:
    if "SLURM_PROCID" not in environment:
        return None
    source = "the Slurm tasks"
    return LauncherShard(
        _checked(_integer(environment, "SLURM_PROCID", source), _integer(environment, "SLURM_NTASKS", source), source),
        source,
    )


def _integer(environment: Mapping[str, str], name: str, source: str) -> int:
    """A launcher variable as a whole number; a missing or garbled one is a usage error."""
    value = environment.get(name)
    if value is None:
        raise UsageError(
            f"`shard` auto found {source} but no {name} in the environment; give `shard` i/n instead.",
            parameter="shard",
        )
    try:
        return int(value.strip())
    except ValueError:
        raise UsageError(
            f"`shard` auto found {name}={value!r}, which is not a whole number; give `shard` i/n instead."
        ) from None


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise UsageError(
            f"`shard` auto read shard {index}/{count} from {source}, which is out of range; give `shard` i/n instead."
        )
    return Shard(index, count)
