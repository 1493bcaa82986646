"""SIGTERM stops a command as Ctrl-C does.

Slurm (at a time limit, ``scancel``, a preemption) and ``tsp extract --devices`` (stopping its
children) end a process with SIGTERM. Python's default is to die on the spot: no word, temp
files left behind, and decoding workers orphaned until they notice (seconds later). Turned into
a :class:`KeyboardInterrupt`, SIGTERM takes the path every cleanup already handles for Ctrl-C:
temp files are removed, the DataLoader's workers are shut down, finished files stay.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The shell's code for a process ended by SIGTERM (128 + 15), which Slurm and scripts expect.
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: a :class:`KeyboardInterrupt`, so that code cleaning up after Ctrl-C cleans up after it too."""


def _raise_terminated(owner: int):
    def handler(signum: int, frame: FrameType | None) -> None:
        # Once: a second SIGTERM during the cleanup ends the process as SIGTERM normally does.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() != owner:  # a forked child inherited this handler: it ends as SIGTERM ends it
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    return handler


@contextmanager
def sigterm_raises_terminated() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in this process (``handles_errors``
    says "Interrupted (SIGTERM)." and exits with 143). The previous handler is restored afterwards.

    Only the main thread may install a signal handler; elsewhere (a test runner's thread) the
    block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated(os.getpid()))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
