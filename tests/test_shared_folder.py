"""Many shards writing one folder on a file system that is not a local disk (issue 21).

These machines have no NFS or Lustre, so a faithful stand-in is built here: a shim loaded with
``LD_PRELOAD`` that makes ``flock`` fail with ``ENOSYS`` (Lustre mounted without ``-o flock``),
and turns every ``O_APPEND`` write into what an NFS client does: read the file's size, then
write at that offset, with a short sleep between the two to widen the race. Several shards run
at once through it into one folder; every video must end with the features of a single-process
run and exactly one readable record, next to one manifest. The shim is compiled with ``gcc`` at
test time; without a compiler the tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.videos import make_video
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.pipeline import records, store
from tsp_cli.pipeline.extraction import extract_features

pytestmark = pytest.mark.slow

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Lustre without -o flock: the call exists but is "not implemented". */
int flock(int fd, int operation) { (void)fd; (void)operation; errno = ENOSYS; return -1; }

/* An NFS client's append: find the end, then write there; another writer may get there first. */
ssize_t write(int fd, const void *buffer, size_t count) {
    static ssize_t (*real_write)(int, const void *, size_t);
    if (!real_write) real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    int flags = fcntl(fd, F_GETFL);
    struct stat status;
    if (flags == -1 || !(flags & O_APPEND) || fstat(fd, &status) != 0 || !S_ISREG(status.st_mode))
        return real_write(fd, buffer, count);
    off_t end = status.st_size;
    usleep(3000);
    fcntl(fd, F_SETFL, flags & ~O_APPEND); /* Linux's pwrite would append on an O_APPEND file */
    ssize_t written = pwrite(fd, buffer, count, end);
    int saved = errno;
    fcntl(fd, F_SETFL, flags);
    errno = saved;
    return written;
}
"""

SHARDS = 3


@pytest.fixture(scope="module")
def nfs_like_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc")
    if compiler is None:
        pytest.skip("gcc is not installed: the LD_PRELOAD stand-in for NFS/Lustre cannot be built")
    folder = tmp_path_factory.mktemp("shim")
    (folder / "nfs_like.c").write_text(SHIM_SOURCE)
    built = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(folder / "nfs_like.so"), str(folder / "nfs_like.c"), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"the LD_PRELOAD stand-in does not build here: {built.stderr.strip()[:200]}")
    return folder / "nfs_like.so"


def through_shim(shim: Path) -> dict[str, str]:
    return {**os.environ, "LD_PRELOAD": str(shim), "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four videos of one clip and fourteen too short for one: many records at once, little network time."""
    folder = tmp_path_factory.mktemp("videos")
    for index in range(4):
        make_video(folder / f"clip{index}.mp4", frames=40, fps=30)
    for index in range(14):
        make_video(folder / f"short{index:02d}.mp4", frames=10, fps=30)
    return folder


def test_the_stand_in_really_loses_appended_lines_and_refuses_flock(nfs_like_shim: Path, tmp_path: Path) -> None:
    """The control: two processes appending to one file through the shim lose lines, and flock is ENOSYS."""
    shared = tmp_path / "shared.jsonl"
    script = (
        "import fcntl, os, sys\n"
        "try:\n    fcntl.flock(sys.stdout, fcntl.LOCK_EX); print('locked')\n"
        "except OSError as error:\n    print('errno', error.errno)\n"
        "for i in range(60):\n"
        "    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
        "    os.write(fd, b'%s %d\\n' % (sys.argv[2].encode(), i)); os.close(fd)\n"
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(shared), name], env=through_shim(nfs_like_shim), stdout=subprocess.PIPE
        )
        for name in ("a", "b")
    ]
    said = [writer.communicate(timeout=60)[0].decode().strip() for writer in writers]
    assert said == [f"errno {__import__('errno').ENOSYS}"] * 2
    assert len(shared.read_bytes().splitlines()) < 120  # lines overwrote each other, as over NFS


def test_concurrent_shards_through_an_nfs_like_file_system_give_one_record_per_video_and_one_manifest(
    nfs_like_shim: Path, many_videos: Path, r3d_checkpoint: Path, tmp_path: Path
) -> None:
    single, shared = tmp_path / "single", tmp_path / "shared"
    extract_features([many_videos], single, checkpoint=r3d_checkpoint, device="cpu", workers=0)
    command = [sys.executable, "-m", "tsp_cli", "extract", str(many_videos), "-o", str(shared)]
    command += ["--local", str(r3d_checkpoint), "--device", "cpu", "-j", "0"]
    shards = [
        subprocess.Popen(
            [*command, "--shard", f"{index}/{SHARDS}"],
            env=through_shim(nfs_like_shim),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for index in range(SHARDS)
    ]
    logs = [shard.communicate(timeout=300)[0].decode() for shard in shards]
    assert [shard.returncode for shard in shards] == [0] * SHARDS, logs
    names = sorted(path.stem for path in many_videos.iterdir())
    for name in names:
        ours, reference = np.load(shared / f"{name}.npy"), np.load(single / f"{name}.npy")
        assert ours.shape == reference.shape and ours.dtype == np.float32, name
        assert np.array_equal(ours, reference), name  # the same bytes as one process made
    damaged: dict[str, int] = {}
    written = records.read_kind(shared, records.VIDEOS, damaged)
    assert damaged == {}
    assert sorted(record["video"] for record in written) == names  # exactly one record each
    assert {record["video"]: record["shard"] for record in written if record["video"] == "clip0"} == {"clip0": "0/3"}
    assert records.read_kind(shared, records.FAILURES) == []
    top = sorted(path.name for path in shared.iterdir())
    assert top == sorted([*(f"{name}.npy" for name in names), store.MANIFEST_NAME, records.RECORDS_DIR])
    assert not [name for name in top if TEMP_MARKER in name]
    manifest = json.loads((shared / store.MANIFEST_NAME).read_text())
    assert manifest["settings"] == json.loads((single / store.MANIFEST_NAME).read_text())["settings"]
    assert len(list((shared / records.RECORDS_DIR).iterdir())) == SHARDS  # one file per process, no failures file
    # and a rerun through the shim trusts every file: nothing is redone
    rerun = subprocess.run(
        [*command, "--shard", f"0/{SHARDS}"],
        env=through_shim(nfs_like_shim),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "failed the resume check" not in rerun.stdout + rerun.stderr
    assert len(records.read_kind(shared, records.VIDEOS)) == len(names)
