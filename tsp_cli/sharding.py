"""Splitting the ordered video list into shards, exactly as the reference extractor does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np

from tsp_cli.errors import UsageError

T = TypeVar("T")

_SHARD_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, items: Sequence[T]) -> list[T]:
        """The reference's contiguous split: boundaries ``linspace(0, len, count+1).astype(int)``."""
        bounds = np.linspace(0, len(items), self.count + 1).astype(int)
        return list(items[bounds[self.index] : bounds[self.index + 1]])


def parse_shard(spec: str) -> Shard:
    """Parse ``i/n`` with ``0 <= i < n``."""
    match = _SHARD_SPEC.match(spec)
    if not match:
        raise UsageError(f"--shard {spec!r} is not of the form i/n (for example 0/4).")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise UsageError(f"--shard {spec!r} is out of range: it needs 0 <= i < n (for example 0/{max(count, 1)}).")
    return Shard(index, count)
