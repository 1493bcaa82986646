"""The one place the core reads environment variables.

Keeping every ``os.environ`` look-up here means a user (or a test) can see at a glance what
changes the tool's behaviour, and every other module stays a pure function of its arguments.
Each function reads the environment when called, never at import time, so a change made after
import (``monkeypatch.setenv`` in tests, a wrapper script) is honoured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CACHE_DIR_VARIABLE = "TSP_CACHE_DIR"
BASE_URL_VARIABLE = "TSP_BASE_URL"
MODELS_FILE_VARIABLE = "TSP_MODELS_FILE"
OFFLINE_VARIABLE = "TSP_OFFLINE"

_TRUE_WORDS = frozenset({"1", "true", "yes"})


def _variable(name: str) -> str | None:
    """The variable's value with surrounding blanks removed; ``None`` when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def cache_dir() -> Path:
    """Where downloaded checkpoints live: ``TSP_CACHE_DIR``, else the platform's cache folder."""
    configured = _variable(CACHE_DIR_VARIABLE)
    if configured is not None:
        return Path(configured).expanduser()
    import pooch  # pulls in requests and http machinery: only when the cache is looked at

    return Path(pooch.os_cache("tsp"))


def base_url() -> str | None:
    """A mirror of the released files (``TSP_BASE_URL``), always ending in ``/``; ``None`` if unset.

    Users write it with or without the trailing slash; normalising here lets callers simply
    append a file name.
    """
    configured = _variable(BASE_URL_VARIABLE)
    if configured is None:
        return None
    return configured.rstrip("/") + "/"


def models_file() -> Path | None:
    """The user's TOML file of extra checkpoints (``TSP_MODELS_FILE``); ``None`` if unset."""
    configured = _variable(MODELS_FILE_VARIABLE)
    return Path(configured).expanduser() if configured is not None else None


def offline() -> bool:
    """Whether ``TSP_OFFLINE`` forbids network access (``1``, ``true`` or ``yes``, any case)."""
    return (_variable(OFFLINE_VARIABLE) or "").lower() in _TRUE_WORDS


def launcher_environment() -> Mapping[str, str]:
    """The variables through which Slurm, torchrun and Google Batch tell a process its place in a job.

    ``--shard auto`` reads them (``tsp_cli.pipeline.sharding.detect_shard``); handing over the mapping
    keeps that detection a pure function that tests feed with a plain dict.
    """
    return os.environ
