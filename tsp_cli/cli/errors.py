"""The edge where core errors become one line on stderr and an exit code.

The core words its errors in its own terms: the Python parameter at fault, written in
backticks (```batch_size` must be at least 1``). This module is the one place that knows
which command-line flag each parameter is, and which exit code each kind of error gets, so
that a Python caller and a shell user each read their own vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tsp_cli.errors import (
    DownloadError,
    FeatureFileError,
    MissingVideosError,
    OutputError,
    TspError,
    UnsafePickleError,
    VideoError,
)

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_CANNOT_START = 0, 1, 2

#: Python parameter (as the core names it) -> the flag or argument a shell user types.
FLAGS: Mapping[str, str] = {
    "out_dir": "--output",
    "checkpoint": "--local",
    "checkpoint_name": "--checkpoint",
    "backbone": "--backbone",
    "stride": "--stride",
    "clip_len": "--clip-len",
    "frame_rate": "--frame-rate",
    "metadata": "--metadata",
    "shard": "--shard",
    "device": "--device",
    "devices": "--devices",
    "batch_size": "--batch-size",
    "workers": "--workers",
    "precision": "--precision",
    "fps": "--fps",
    "shards": "--shards",
    "overwrite": "--overwrite",
    "allow_missing": "--allow-missing",
    "resize": "--resize",
    "pool": "--pool",
    "target": "--to",
    "videos": "VIDEOS",
    "offline": "--offline",
    "force": "--force",
}

#: Errors raised after work started, about some of the items: exit 1. Every other
#: ``TspError`` means the invocation could not start: exit 2.
_ITEM_FAILURES: tuple[type[TspError], ...] = (
    VideoError,
    DownloadError,
    OutputError,
    UnsafePickleError,
    FeatureFileError,
    MissingVideosError,
)

_PARAMETER = re.compile(r"`([a-z_]+)`")


def exit_code_for(error: TspError, overrides: Mapping[type[TspError], int] | None = None) -> int:
    """1 when some items failed after work started, 2 when nothing could start; ``overrides`` first."""
    for kind, code in (overrides or {}).items():
        if isinstance(error, kind):
            return code
    return EXIT_ITEMS_FAILED if isinstance(error, _ITEM_FAILURES) else EXIT_CANNOT_START


def message_for(error: TspError) -> str:
    """The error's sentence with each backticked core parameter replaced by its flag."""
    return _PARAMETER.sub(lambda match: FLAGS.get(match.group(1), match.group(0)), str(error))
