"""Helpers the test modules share: reading what a command printed, whatever Rich's wrapping."""

from __future__ import annotations


def said(result) -> str:
    """Everything a ``CliRunner`` result printed, with Rich's line wrapping undone (runs of whitespace folded)."""
    return " ".join(result.output.split())


def squeezed(text: str) -> str:
    """``text`` without any whitespace: Rich may wrap long messages mid-phrase at 80 columns in tests."""
    return "".join(text.split())


def crash_this_process() -> None:
    """Die of SIGSEGV, as FFmpeg does on some damaged files, without a "Fatal Python error" dump.

    pytest enables :mod:`faulthandler`, and a forked worker inherits it, so every deliberate crash
    would print a stack dump of every thread. The process still dies of the same signal: only the
    dump, which would alarm anyone reading ``make test``, is left out.
    """
    import faulthandler
    import os
    import signal

    faulthandler.disable()
    os.kill(os.getpid(), signal.SIGSEGV)
