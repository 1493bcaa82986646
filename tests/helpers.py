"""Helpers the test modules share: reading what a command printed, whatever Rich's wrapping."""

from __future__ import annotations


def said(result) -> str:
    """Everything a ``CliRunner`` result printed, with Rich's line wrapping undone (runs of whitespace folded)."""
    return " ".join(result.output.split())


def squeezed(text: str) -> str:
    """``text`` without any whitespace: Rich may wrap long messages mid-phrase at 80 columns in tests."""
    return "".join(text.split())
