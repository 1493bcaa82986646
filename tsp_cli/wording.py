"""Wording shared by the core's messages and the CLI's lines: a number with its noun in the right number."""

from __future__ import annotations


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 video``, ``2 videos``; ``plural`` where adding an ``s`` is wrong (``video has``/``videos have``)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
