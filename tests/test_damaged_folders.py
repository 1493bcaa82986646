"""Trust under faults (issue 17): a damaged output folder, a full disk or a bad destination never
gives a wrong, lost or half-explained result.

Each test takes a real output folder made by ``tsp extract`` (copied from one extraction per
module), damages it as an operator or a fault would, and asserts the exit code, the sentence,
and the bytes on disk afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.helpers import said
from tests.videos import make_two_clips_and_a_short_one
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.cli.app import app
from tsp_cli.models.synthetic import write_checkpoint
from tsp_cli.pipeline import records, resume, store

runner = CliRunner()
NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_two_clips_and_a_short_one(tmp_path_factory.mktemp("videos"))


def extract(videos: Path, out: Path, checkpoint: Path, *more: str):
    return runner.invoke(
        app, ["extract", str(videos), "-o", str(out), "--local", str(checkpoint), "--device", "cpu", "-j", "0", *more]
    )


@pytest.fixture(scope="module")
def pristine(videos: Path, r3d_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pristine") / "out"
    result = extract(videos, out, r3d_checkpoint)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def out(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the finished folder, for one test to damage."""
    copy = tmp_path / "out"
    shutil.copytree(pristine, copy)
    return copy


def feature_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / f"{name}.npy").read_bytes() for name in NAMES if (folder / f"{name}.npy").exists()}


def assert_same_features(folder: Path, reference: Path) -> None:
    """Every video's features whole and equal to the first run's (a video redone alone may batch
    differently, so equal to float rounding, as in test_scaleout)."""
    for name in NAMES:
        ours, theirs = np.load(folder / f"{name}.npy"), np.load(reference / f"{name}.npy")
        assert ours.shape == theirs.shape and ours.dtype == np.float32, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5, err_msg=name)


def record_lines(folder: Path) -> list[dict]:
    return records.read_kind(folder, records.VIDEOS)


def drop_record(folder: Path, video: str) -> None:
    """Remove ``video``'s record, as a disk that filled between the rename and the record would."""
    for path in records.record_files(folder, records.VIDEOS):
        kept = [line for line in path.read_bytes().splitlines(keepends=True) if json.loads(line)["video"] != video]
        path.write_bytes(b"".join(kept))


def to_legacy_layout(folder: Path) -> None:
    """Rewrite the records as the earlier versions kept them: one shared videos.jsonl."""
    lines = b"".join(path.read_bytes() for path in records.record_files(folder, records.VIDEOS))
    shutil.rmtree(folder / records.RECORDS_DIR)
    (folder / records.LEGACY_RECORDS_NAME).write_bytes(lines)


# ---- 1: features without a manifest ----------------------------------------------------------


def test_features_without_a_manifest_are_refused_whatever_the_checkpoint(
    out: Path, videos: Path, tmp_path: Path
) -> None:
    (out / store.MANIFEST_NAME).unlink()
    before = feature_bytes(out)
    other = write_checkpoint(tmp_path / "other.pth", "r3d_18", seed=1)
    result = extract(videos, out, other)
    assert result.exit_code == 2
    assert (
        f"{out} holds 3 feature file(s) but no tsp-manifest.json, so the settings they were made with are "
        "unknown; use another --output folder, or remove the features first." in said(result)
    )
    assert "Traceback" not in result.output
    assert feature_bytes(out) == before and not (out / store.MANIFEST_NAME).exists()


# ---- 2 and 3: a damaged file, a file without a record ----------------------------------------


def test_a_truncated_file_is_counted_bad_then_redone_with_a_note(
    out: Path, pristine: Path, videos: Path, r3d_checkpoint
) -> None:
    whole = (out / "a.npy").read_bytes()
    (out / "a.npy").write_bytes(whole[:-100])
    code, report = status_json(out, videos)
    assert (code, report["done"], report["bad"], report["missing"]) == (1, 2, 1, 0)
    assert report["bad_videos"] == [
        {"video": "a", "problem": f"it is {len(whole) - 100} bytes, not the {len(whole)} its header promises"}
    ]
    result = extract(videos, out, r3d_checkpoint)
    assert result.exit_code == 0, result.output
    assert (
        "1 finished file failed the resume check and will be extracted again "
        f"(a.npy: it is {len(whole) - 100} bytes, not the {len(whole)} its header promises)." in said(result)
    )
    assert "3 videos, 2 already done, 1 to do" in said(result)
    assert_same_features(out, pristine)
    assert status_json(out, videos)[0] == 0


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda data: data[:40], "its header cannot be read"),
        (lambda data: data.replace(b"'<f4'", b"'<f8'", 1), "it holds a (1, 512) float64 array, not rows of float32"),
        (lambda data: data.replace(b"(1, 512)", b"(2, 256)", 1), "it has 2 rows but its record says 1 clips"),
    ],
)
def test_other_damage_to_a_file_is_found_by_the_header_check(out: Path, videos: Path, damage, problem) -> None:
    (out / "b.npy").write_bytes(damage((out / "b.npy").read_bytes()))
    code, report = status_json(out, videos)
    assert code == 1 and [row["video"] for row in report["bad_videos"]] == ["b"]
    assert report["bad_videos"][0]["problem"].startswith(problem)


def test_a_file_whose_record_was_lost_is_redone_and_recorded(
    out: Path, pristine: Path, videos: Path, r3d_checkpoint: Path, tmp_path: Path
) -> None:
    drop_record(out, "b")
    code, report = status_json(out, videos)
    assert (code, report["done"], report["bad"]) == (1, 2, 1)
    assert report["bad_videos"] == [{"video": "b", "problem": "no record describes it"}]
    result = extract(videos, out, r3d_checkpoint)
    assert result.exit_code == 0, result.output
    assert "(b.npy: no record describes it)" in said(result)
    assert sorted(record["video"] for record in record_lines(out)) == NAMES
    assert_same_features(out, pristine)
    merged = tmp_path / "m.h5"
    assert runner.invoke(app, ["merge", str(out), str(merged)]).exit_code == 0
    with h5py.File(merged) as h5:
        assert h5["b"].attrs["fps"] == 25.0 and len(h5["b"].attrs["clip_start_times"]) == 1


# ---- 4 and 5: broken and non-UTF-8 record lines; folders of the earlier layout ---------------


def test_an_old_layout_folder_with_a_half_line_resumes_reports_it_once_and_keeps_new_records_whole(
    out: Path, pristine: Path, videos: Path, r3d_checkpoint: Path, tmp_path: Path
) -> None:
    to_legacy_layout(out)
    (out / "c.npy").unlink()
    legacy = out / records.LEGACY_RECORDS_NAME
    legacy.write_bytes(legacy.read_bytes() + b'{"video": "zz", "fp')  # cut short by a crash, an hour ago
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    (out / records.LEGACY_FAILURES_NAME).write_text('{"video": "c", "error": "old failure", "time": 5.0}\n')
    code, report = status_json(out, videos)
    assert (code, report["done"], report["failed"], report["missing"]) == (1, 2, 1, 0)
    assert report["failures"][0] == {"video": "c", "error": "old failure", "shard": None, "failed_at": 5.0}
    result = extract(videos, out, r3d_checkpoint)
    assert result.exit_code == 0, result.output
    text = said(result)
    assert text.count("Skipped 1 unreadable record line in videos.jsonl (1)") == 1
    assert "2 already done, 1 to do" in text
    assert_same_features(out, pristine)
    (own,) = (out / records.RECORDS_DIR).iterdir()  # c's new record, in this process's own file
    assert [json.loads(line)["video"] for line in own.read_bytes().splitlines()] == ["c"]
    assert sorted(records.read_records(out).videos) == NAMES
    store.append_jsonl(legacy, {"video": "late"})  # even the shared file never glues a record onto a broken line
    assert legacy.read_bytes().endswith(b'"fp\n{"video": "late"}\n')
    merged = tmp_path / "m.h5"
    merge = runner.invoke(app, ["merge", str(out), str(merged)])
    assert merge.exit_code == 0 and "Skipped 1 unreadable record line" in said(merge)
    with h5py.File(merged) as h5:
        assert sorted(h5) == NAMES and h5["a"].attrs["fps"] == 30.0


def test_a_line_a_live_writer_has_not_finished_is_not_reported_as_damage(tmp_path: Path) -> None:
    path = tmp_path / records.RECORDS_DIR / "videos-elsewhere-1-abcd.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"video": "a"}\n{"video": "b", "cl')
    damaged: dict[str, int] = {}
    assert [r["video"] for r in records.read_kind(tmp_path, records.VIDEOS, damaged)] == ["a"] and damaged == {}
    os.utime(path, (time.time() - 3600, time.time() - 3600))  # its writer died long ago: damage
    assert [r["video"] for r in records.read_kind(tmp_path, records.VIDEOS, damaged)] == ["a"]
    assert damaged == {f"{records.RECORDS_DIR}/{path.name}": 1}


def test_non_utf8_bytes_in_the_records_are_damaged_lines_not_a_traceback(out: Path, videos: Path, tmp_path) -> None:
    (path,) = records.record_files(out, records.VIDEOS)
    path.write_bytes(path.read_bytes() + b"\xff\xfe\x00 not text\n")
    warning = f"Skipped 1 unreadable record line in {records.RECORDS_DIR}/{path.name} (1)"
    for command in (
        ["status", str(out), str(videos)],
        ["inspect", str(out)],
        ["merge", str(out), str(tmp_path / "m.h5")],
    ):
        result = runner.invoke(app, command)
        assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
        assert said(result).count(warning) == 1, (command, result.output)
        assert result.exit_code == 0, (command, result.output)


# ---- 6 and 8: merge and inspect destinations; temp files of dead merges ----------------------


def test_merge_into_a_place_that_cannot_hold_it_is_one_sentence(out: Path, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["merge", str(out), str(blocker / "m.h5")])
    assert result.exit_code == 2
    assert f"Cannot write {blocker / 'm.h5'}: {blocker} is a file, not a folder; choose another place" in said(result)

    import h5py as h5py_module

    real_file = h5py_module.File

    def read_only(path, mode="r", *args, **kwargs):
        if mode != "r":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_file(path, mode, *args, **kwargs)

    monkeypatch.setattr(h5py_module, "File", read_only)
    result = runner.invoke(app, ["merge", str(out), str(tmp_path / "dest" / "m.h5")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Cannot write {tmp_path / 'dest' / 'm.h5'} (Permission denied); nothing was written." in said(result)
    assert [p.name for p in (tmp_path / "dest").iterdir()] == []


def test_inspect_of_a_truncated_merged_file_is_one_sentence(out: Path, tmp_path: Path) -> None:
    merged = tmp_path / "m.h5"
    assert runner.invoke(app, ["merge", str(out), str(merged)]).exit_code == 0
    data = merged.read_bytes()
    for cut in (len(data) // 2, 4096):
        merged.write_bytes(data[:cut])
        result = runner.invoke(app, ["inspect", str(merged)])
        assert result.exit_code == 2, result.output
        assert f"{merged} cannot be" in said(
            result
        ) and "it is damaged or cut short; merge the features again." in said(result)
        assert "Traceback" not in result.output


def test_the_temp_file_of_a_killed_merge_is_removed_by_the_next(out: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f"m.h5{TEMP_MARKER}{socket.gethostname()}-{dead.pid}"
    leftover.write_bytes(os.urandom(1 << 20))
    other = tmp_path / f"other.h5{TEMP_MARKER}{socket.gethostname()}-{dead.pid}"
    other.write_bytes(b"not this merge's")
    result = runner.invoke(app, ["merge", str(out), str(tmp_path / "m.h5")])
    assert result.exit_code == 0, result.output
    assert not leftover.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if TEMP_MARKER in p.name) == [other.name]


# ---- 9: status of a folder that is not an output folder --------------------------------------


def test_status_of_a_folder_of_videos_says_so_and_exits_2(videos: Path) -> None:
    result = runner.invoke(app, ["status", str(videos)])
    assert result.exit_code == 2
    assert (
        f"{videos} is not a `tsp extract` output folder (no manifest, records or feature files); give the --output folder of tsp extract."
        in said(result)
    )


# ---- 15: a disk that is still full ------------------------------------------------------------


def test_a_rerun_on_a_full_disk_fails_at_once_with_one_sentence(
    out: Path, videos: Path, r3d_checkpoint: Path, monkeypatch
) -> None:
    (out / "a.npy").unlink()
    before = sorted(p.name for p in out.iterdir())
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        if "space-probe" in str(path) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(store, "open", full_disk, raising=False)
    result = extract(videos, out, r3d_checkpoint)
    assert result.exit_code == 2
    assert (
        f"Cannot write in {out} (its disk (or your quota there) is full); free some space or give another --output."
        in said(result)
    )
    assert sorted(p.name for p in out.iterdir()) == before  # nothing computed, nothing left behind


def status_json(out: Path, videos: Path) -> tuple[int, dict]:
    result = runner.invoke(app, ["status", str(out), str(videos), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_status_and_resume_check_the_same_and_stay_quick_on_many_files(tmp_path: Path) -> None:
    """Many finished videos: the check reads a header and a size per file, and agrees with status."""
    out = tmp_path / "out"
    out.mkdir()
    store.claim_output_folder(out, {"stride": 16}, {})
    rows = np.zeros((3, 512), np.float32)
    for index in range(300):
        store.save_features(out, f"v{index:03d}", rows)
        store.record_video(out, {"video": f"v{index:03d}", "clips": 3})
    (out / "v007.npy").write_bytes((out / "v007.npy").read_bytes()[:-4])
    assert resume.check_outputs(out).finished == {f"v{index:03d}" for index in range(300)} - {"v007"}
    code = runner.invoke(app, ["status", str(out)]).exit_code
    assert code == 1
