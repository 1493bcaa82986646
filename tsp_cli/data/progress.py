"""What the data steps (metadata, standardize, merge, inspect, export) report about their items.

One definition for all of them, so the CLI renders every step with the same progress code:
a :class:`Progress` event after each item, and a :class:`Failure` for each item that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Reported after each item: how many of ``total`` are done, and which one just finished."""

    done: int
    total: int
    item: str


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Failure:
    """A file that could not be processed, with the one-sentence reason."""

    filename: str
    error: str
