"""The checkpoint cache on a shared file system: many tasks starting together with nothing cached.

A Slurm array of 64 tasks with ``TSP_CACHE_DIR`` on NFS and ``--offline`` off all find the
cache empty and download at once. Every one must end with the checked file, none may fail or
read a half-written file, and the cache must hold one checkpoint (no staging files left).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest

from tests.helpers_http import FileServer
from tsp_cli.models import cache as model_cache

TASKS = 64
#: 1 MiB of bytes that differ everywhere: a torn or half-written copy cannot hash right.
WEIGHTS = hashlib.sha256(b"seed").digest() * (1 << 15)


def _fetch_at_the_barrier(name: str, barrier, results) -> None:
    barrier.wait()
    try:
        path = model_cache.fetch(name)
        results.put(("ok", str(path), hashlib.sha256(path.read_bytes()).hexdigest()))
    except Exception as error:  # the test reports any failure of any task
        results.put(("failed", type(error).__name__, str(error)))


def test_64_tasks_starting_together_on_an_empty_cache_end_with_one_checked_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir, models = tmp_path / "cache", tmp_path / "models.toml"
    monkeypatch.setenv("TSP_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("TSP_MODELS_FILE", str(models))
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    context = multiprocessing.get_context("fork")
    with FileServer() as server:
        url = server.serve("shared.pth", WEIGHTS)
        entry = {"backbone": "r2plus1d_18", "url": url, "sha256": digest, "description": "shared"}
        models.write_text("[models.shared]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items()))
        barrier, results = context.Barrier(TASKS), context.Queue()
        tasks = [context.Process(target=_fetch_at_the_barrier, args=("shared", barrier, results)) for _ in range(TASKS)]
        for task in tasks:
            task.start()
        outcomes = [results.get(timeout=120) for _ in tasks]
        for task in tasks:
            task.join(timeout=30)
    assert [outcome for outcome in outcomes if outcome[0] != "ok"] == []
    final = model_cache.local_path("shared")
    assert {outcome[1:] for outcome in outcomes} == {(str(final), digest)}
    assert [task.exitcode for task in tasks] == [0] * TASKS
    left = sorted(path.name for path in final.parent.iterdir())
    assert [name for name in left if not name.endswith(".sha256.json")] == ["shared.pth"], left
    assert 1 <= len(server.requests) <= TASKS


def test_a_killed_download_of_this_host_leaves_no_staging_file_for_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir, models = tmp_path / "cache", tmp_path / "models.toml"
    monkeypatch.setenv("TSP_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("TSP_MODELS_FILE", str(models))
    source = tmp_path / "weights.pth"
    source.write_bytes(WEIGHTS)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    models.write_text(
        f'[models.local]\nbackbone = "r2plus1d_18"\nurl = "{source.as_uri()}"\nsha256 = "{digest}"\n'
        'description = "local"\n'
    )
    folder = model_cache.local_path("local").parent
    folder.mkdir(parents=True)
    dead = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    host = socket.gethostname()
    stale = folder / f".weights.pth.{host}-{dead.pid}-0123abcd.part"
    live = folder / f".weights.pth.{host}-{os.getpid()}-4567abcd.part"
    other_host = folder / f".weights.pth.elsewhere-{dead.pid}-89abcdef.part"
    for path in (stale, live, other_host):
        path.write_bytes(b"half")
    assert model_cache.fetch("local").read_bytes() == WEIGHTS
    assert not stale.exists() and live.exists() and other_host.exists()
