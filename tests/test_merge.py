"""``tsp merge`` and ``tsp inspect``: exact values, root layout, attributes, safety, atomicity."""

from __future__ import annotations

import json
import os
import pickle
import struct

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.helpers import said
from tsp_cli.atomic import TEMP_MARKER, atomic_path
from tsp_cli.cli.app import app
from tsp_cli.data import inspection, merge
from tsp_cli.data.legacy import UnsafePickleError, load_legacy_features
from tsp_cli.pipeline.sampling import clip_start_times

runner = CliRunner()


MANIFEST = {
    "settings": {
        "checkpoint": "r2plus1d_34-tsp_on_activitynet",
        "checkpoint_sha256": None,
        "backbone": "r2plus1d_34",
        "clip_len": 16,
        "frame_rate": 15.0,
        "stride": 16,
        "precision": "fp32",
    },
    "versions": {"tsp": "0.1.0", "torch": "2.14.1", "torchvision": "0.29.1", "av": "18.1.0", "ffmpeg": "8.1.2"},
    "created": "2025-01-01T12:00:00+00:00",
}


def features(rows: int, seed: int, width: int = 512) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, width), dtype=np.float32)


@pytest.fixture
def extraction(tmp_path):
    """A ``tsp extract`` output folder: two videos (one with 0 clips), its logs and leftovers."""
    folder = tmp_path / "out"
    folder.mkdir()
    np.save(folder / "a.b.npy", features(5, 1))  # "a.b.mp4": the name keeps its inner dot
    np.save(folder / "short.npy", np.zeros((0, 512), np.float32))
    (folder / "tsp-manifest.json").write_text(json.dumps(MANIFEST))
    records = [
        {"video": "a.b", "path": "/v/a.b.mp4", "fps": 25.0, "num_frames": 999, "clips": 1},  # superseded
        {"video": "a.b", "path": "/v/a.b.mp4", "fps": 30.0, "num_frames": 160, "clips": 5},
        {"video": "short", "path": "/v/short.mp4", "fps": 30.0, "num_frames": 20, "clips": 0},
    ]
    (folder / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "failures.jsonl").write_text(json.dumps({"video": "bad", "error": "broken"}) + "\n")
    np.save(folder / f"c.npy{TEMP_MARKER}host-1.npy", features(2, 3))
    (folder / "c.npy.lock").write_text("")
    return folder


def test_merge_writes_one_exact_dataset_per_video_and_nothing_else_at_the_root(extraction, tmp_path):
    output = tmp_path / "features.h5"
    result = runner.invoke(app, ["merge", str(extraction), str(output)])
    assert result.exit_code == 1, result.output  # "bad" failed in extraction: said, not hidden behind exit 0
    assert "Merged 2 videos (5 rows × 512)" in said(result)
    assert "1 video failed in extraction and is not in the file: bad (see failures.jsonl;" in said(result)
    with h5py.File(output) as h5:
        assert sorted(h5.keys()) == ["a.b", "short"]
        assert h5["a.b"].dtype == np.float32
        np.testing.assert_array_equal(h5["a.b"][()], features(5, 1))
        assert h5["short"].shape == (0, 512)
        assert h5["a.b"].compression == "gzip" and h5["a.b"].chunks is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5", "out"]


def test_merge_attributes_describe_the_extraction_and_map_rows_to_time(extraction, tmp_path):
    output = tmp_path / "features.h5"
    merge.merge_features(extraction, output)
    with h5py.File(output) as h5:
        attributes = dict(h5.attrs)
        assert attributes["backbone"] == "r2plus1d_34"
        assert attributes["checkpoint"] == "r2plus1d_34-tsp_on_activitynet"
        assert (attributes["clip_len"], attributes["frame_rate"], attributes["stride"]) == (16, 15.0, 16)
        assert attributes["tsp_version"] == "0.1.0" and attributes["torch_version"] == "2.14.1"
        assert "checkpoint_sha256" not in attributes  # unknown values are left out, not faked
        video = dict(h5["a.b"].attrs)
        assert video["fps"] == 30.0 and video["num_frames"] == 160 and video["stride"] == 16
        np.testing.assert_array_equal(video["clip_start_times"], clip_start_times(30.0, 160))
        np.testing.assert_allclose(video["clip_start_times"], np.arange(5) * 16 / 15)
        assert len(h5["short"].attrs["clip_start_times"]) == 0


def reference_pickle(array: np.ndarray, protocol: int | None = None) -> bytes:
    """A pickle as the reference extractor wrote it: ``pkl.dump(np.stack(rows), f)``."""
    return pickle.dumps(np.stack(list(array)), protocol=protocol)


def as_numpy1_pickle(data: bytes) -> bytes:
    """The same pickle as NumPy 1 wrote it (``numpy.core`` instead of ``numpy._core``)."""
    renamed = data
    for new, old in (
        (b"numpy.core.multiarray", b"numpy._core.multiarray"),
        (b"numpy.core.numeric", b"numpy._core.numeric"),
    ):
        renamed = renamed.replace(b"\x8c" + bytes([len(old)]) + old, b"\x8c" + bytes([len(new)]) + new)
        renamed = renamed.replace(old + b"\n", new + b"\n")
    shrunk = len(data) - len(renamed)
    if shrunk and renamed[2:3] == b"\x95":  # protocol 4+: the first frame's length shrinks too
        (length,) = struct.unpack("<Q", renamed[3:11])
        renamed = renamed[:3] + struct.pack("<Q", length - shrunk) + renamed[11:]
    return renamed


@pytest.mark.parametrize("protocol", [None, 2, 3, 5])
@pytest.mark.parametrize("numpy1", [False, True], ids=["numpy2-names", "numpy1-names"])
def test_legacy_pickles_merge_with_exact_values(tmp_path, protocol, numpy1):
    folder = tmp_path / "legacy"
    folder.mkdir()
    expected = {"v_one": features(7, 1), "v_two": features(1, 2)}
    for name, array in expected.items():
        data = reference_pickle(array, protocol)
        (folder / f"{name}.pkl").write_bytes(as_numpy1_pickle(data) if numpy1 else data)
    output = tmp_path / "features.h5"
    merge.merge_features(folder, output)
    with h5py.File(output) as h5:
        assert sorted(h5.keys()) == sorted(expected)
        for name, array in expected.items():
            np.testing.assert_array_equal(h5[name][()], array)
        assert dict(h5.attrs) == {}  # a legacy folder has no manifest: nothing is invented


def test_numpy1_pickle_helper_really_renames(tmp_path):
    data = as_numpy1_pickle(reference_pickle(features(2, 1), 4))
    assert b"numpy.core.multiarray" in data and b"numpy._core" not in data


class _RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    """Hidden after a genuine array in a list: the array is rebuilt, then ``eval`` is refused."""

    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "evil.pkl").write_bytes(pickle.dumps(_RunsShellCommand(marker)))
    np.save(folder / "good.npy", features(2, 1))
    output = tmp_path / "features.h5"
    result = runner.invoke(app, ["merge", str(folder), str(output)])
    assert result.exit_code == 1
    assert not marker.exists()
    assert "evil.pkl was refused" in said(result) and "nothing in it was run" in said(result)
    assert "Traceback" not in said(result)
    assert not output.exists()
    path = tmp_path / "eval.pkl"
    path.write_bytes(pickle.dumps([np.zeros((1, 2), np.float32), _CallsEval()]))
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval is not part of a NumPy array"):
        load_legacy_features(path)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (np.arange(6, dtype=np.float32), "1-D float32"),
        (np.zeros((2, 3), dtype=np.int64), "2-D int64"),
        ({"features": 1}, "dict"),
    ],
)
def test_legacy_pickle_that_is_not_a_2d_float_array_is_refused(tmp_path, payload, reason):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match=reason):
        load_legacy_features(path)


def test_legacy_pickle_with_foreign_codec_is_refused(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(UnsafePickleError, match="rot13"):
        load_legacy_features(path)


def write_metadata_csv(path, names):
    rows = "".join(f"{name}.mp4,5.0,30.0,150\n" for name in names)
    path.write_text("filename,video-duration,fps,video-frames\n" + rows)
    return path


def test_missing_videos_are_listed_and_exit_1(extraction, tmp_path):
    csv = write_metadata_csv(tmp_path / "meta.csv", ["a.b", "short", "gone", "lost"])
    output = tmp_path / "features.h5"
    result = runner.invoke(app, ["merge", str(extraction), str(output), "--metadata", str(csv)])
    assert result.exit_code == 1
    assert "2 of 4 expected videos have no features" in said(result)
    assert "gone\nlost\n" in result.stdout
    assert not output.exists()

    result = runner.invoke(app, ["merge", str(extraction), str(output), "--metadata", str(csv), "--allow-missing"])
    assert result.exit_code == 0, result.output
    assert "gone" in result.stdout and "Merged 2 videos" in result.stdout
    assert output.exists()


def test_videos_folder_completeness_check(extraction, tmp_path):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    for name in ("a.b.mp4", "short.webm", "sub/extra.mkv", "notes.txt"):
        (videos / name).write_bytes(b"")
    result = runner.invoke(app, ["merge", str(extraction), str(tmp_path / "f.h5"), "--videos", str(videos)])
    assert result.exit_code == 1
    assert "1 of 3 expected videos" in said(result) and "extra" in result.stdout


def test_metadata_csv_gives_timing_to_legacy_features(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "v.pkl").write_bytes(reference_pickle(features(3, 1)))
    csv = write_metadata_csv(tmp_path / "meta.csv", ["v"])
    result = runner.invoke(app, ["merge", str(folder), str(tmp_path / "g.h5"), "--metadata", str(csv)])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "g.h5") as h5:
        assert dict(h5["v"].attrs) == {"fps": 30.0, "num_frames": 150}  # no stride known: no start times


def test_interrupted_merge_leaves_neither_output_nor_temp_file(extraction, tmp_path, monkeypatch):
    real_read = merge.read_features
    calls = []

    def failing_read(path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_read(path)

    monkeypatch.setattr(merge, "read_features", failing_read)
    output = tmp_path / "features.h5"
    with pytest.raises(KeyboardInterrupt):
        merge.merge_features(extraction, output)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_existing_output_is_kept_unless_overwrite(extraction, tmp_path):
    output = tmp_path / "features.h5"
    output.write_text("precious")
    result = runner.invoke(app, ["merge", str(extraction), str(output)])
    assert result.exit_code == 2 and "already exists; pass --overwrite" in said(result)
    assert output.read_text() == "precious"
    result = runner.invoke(
        app, ["merge", str(extraction), str(output), "--overwrite", "--compression-level", "9", "--allow-missing"]
    )
    assert result.exit_code == 0, result.output  # the failed video is allowed to be missing: a note, exit 0
    assert "1 video failed in extraction and is not in the file: bad" in said(result)
    with h5py.File(output) as h5:
        assert h5["a.b"].compression_opts == 9


@pytest.mark.parametrize(
    ("make_folder", "code", "message"),
    [
        (lambda d: None, 2, "holds no feature files"),
        (
            lambda d: (np.save(d / "a.npy", features(2, 1)), np.save(d / "b.npy", features(2, 1, width=256))),
            1,
            "has 256 columns but",
        ),
        (
            lambda d: np.save(d / "a.npy", np.array([[1.0, np.nan], [1.0, 2.0]], np.float32)),
            1,
            "has 1 rows with NaN or infinite values",
        ),
        (lambda d: np.save(d / "a.npy", np.array([[1.0, np.inf]], np.float32)), 1, "NaN or infinite"),
        (lambda d: np.save(d / "a.npy", np.arange(4)), 1, "not rows of float features"),
        (lambda d: np.save(d / "a.npy", np.array([{"x": 1}], dtype=object)), 1, "cannot be read as a NumPy"),
        (
            lambda d: (np.save(d / "a.npy", features(2, 1)), (d / "a.pkl").write_bytes(b"")),
            1,
            "both hold features of video a",
        ),
    ],
    ids=["empty", "widths", "nan", "inf", "integers", "object-npy", "duplicate"],
)
def test_bad_folders_are_clear_errors(tmp_path, make_folder, code, message):
    folder = tmp_path / "out"
    folder.mkdir()
    make_folder(folder)
    output = tmp_path / "f.h5"
    result = runner.invoke(app, ["merge", str(folder), str(output)])
    assert result.exit_code == code, result.output
    assert message in said(result) and "Traceback" not in said(result)
    assert not output.exists()


def test_inspect_reports_videos_rows_width_and_attributes_as_json(extraction, tmp_path):
    output = tmp_path / "features.h5"
    merge.merge_features(extraction, output)
    result = runner.invoke(app, ["inspect", str(output), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # without --all: one summary object
    assert (report["videos"], report["rows"], report["widths"], report["dtypes"]) == (2, 5, [512], ["float32"])
    assert (report["record"], report["min_rows"], report["mean_rows"], report["max_rows"]) == ("summary", 0, 2.5, 5)
    assert report["attributes"]["backbone"] == "r2plus1d_34"
    assert report["videos_with_non_finite"] == [] and report["unexpected"] == []
    per_video = {video["video"]: video for video in report["first"] + report["last"]}
    assert per_video["a.b"]["attributes"]["fps"] == 30.0
    assert per_video["short"]["rows"] == 0

    table = runner.invoke(app, ["inspect", str(output)])
    assert table.exit_code == 0 and "r2plus1d_34" in table.stdout and "a.b" in table.stdout


def test_inspect_folder_matches_merged_file(extraction, tmp_path):
    output = tmp_path / "features.h5"
    merge.merge_features(extraction, output)
    from_file = inspection.inspect_features(output).to_json()
    from_folder = inspection.inspect_features(extraction).to_json()
    for key in ("videos", "rows", "widths", "dtypes", "attributes", "first", "last"):
        assert from_file[key] == from_folder[key], key


def test_inspect_flags_nan_and_foreign_root_items(tmp_path):
    path = tmp_path / "features.h5"
    with h5py.File(path, "w") as h5:
        h5["ok"] = features(2, 1)
        h5["bad"] = np.array([[np.nan, 1.0], [0.0, 1.0]], np.float32)
        h5.create_group("extra")
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["videos_with_non_finite"] == ["bad"] and report["unexpected"] == ["extra"]
    assert "NaN or infinite values in 1 video;" in said(result)


def test_inspect_refuses_what_is_not_features(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("hello")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "neither an HDF5 file nor a folder" in said(result)


def test_inspect_of_a_path_that_does_not_exist_says_so(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nosuch.h5")])
    assert result.exit_code == 2
    assert "nosuch.h5 does not exist; give a merged HDF5 file or a folder of feature files." in said(result)
    assert "neither" not in said(result)


def test_inspect_of_a_folder_without_features_is_refused(extraction, tmp_path):
    for path in extraction.glob("*.npy"):
        path.unlink()
    result = runner.invoke(app, ["inspect", str(extraction)])
    assert result.exit_code == 2 and "holds no feature files (.npy or .pkl)" in said(result)


def test_inspect_of_an_hdf5_file_without_videos_exits_1(tmp_path):
    path = tmp_path / "empty.h5"
    h5py.File(path, "w").close()
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1 and "Problem: it holds no videos." in said(result)


@pytest.fixture
def many(tmp_path):
    """A merged file of 25 small videos, v00 (0 rows) to v24 (24 rows), with fps attributes."""
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as h5:
        for i in range(25):
            h5[f"v{i:02d}"] = features(i, i, width=4)
            h5[f"v{i:02d}"].attrs["fps"] = 30.0
    return path


def test_inspect_json_all_streams_one_line_per_video_then_the_summary(many):
    result = runner.invoke(app, ["inspect", str(many), "--json", "--all"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 26 and [line["record"] for line in lines] == ["video"] * 25 + ["summary"]
    assert [(line["video"], line["rows"], line["width"]) for line in lines[:25]] == [
        (f"v{i:02d}", i, 4) for i in range(25)
    ]
    assert lines[3]["attributes"] == {"fps": 30.0}
    summary = lines[-1]
    assert (summary["videos"], summary["rows"], summary["min_rows"], summary["max_rows"]) == (25, 300, 0, 24)
    assert [v["video"] for v in summary["first"]] == [f"v{i:02d}" for i in range(10)]
    assert [v["video"] for v in summary["last"]] == [f"v{i:02d}" for i in range(15, 25)]
    assert summary["last"][-1]["attributes"] == {"fps": 30.0}


def test_inspect_shows_the_ends_of_a_large_file_and_all_of_it_with_all(many):
    text = said(runner.invoke(app, ["inspect", str(many)]))
    assert "v09" in text and "… 5 more" in text and "v15" in text and "v24" in text
    assert "v10" not in text and "v14" not in text
    assert "25 videos; the first and last 10 shown (--all lists every one)" in text
    assert "300 (min 0, mean 12.0, max 24)" in text
    every = runner.invoke(app, ["inspect", str(many), "--all"])
    lines = every.stdout.splitlines()
    assert lines[0].startswith("video\trows\twidth") and lines[11].split("\t")[:3] == ["v10", "10", "4"]
    assert [line.split("\t")[0] for line in lines[1:26]] == [f"v{i:02d}" for i in range(25)]


def test_inspect_memory_does_not_grow_with_the_videos(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(
        inspection, "NAMES_PER_READ", 100
    )  # names are read 4,096 at a time; fewer here, to see the bound
    peaks = {}
    for count in (200, 2000):
        path = tmp_path / f"f{count}.h5"
        with h5py.File(path, "w") as h5:
            for i in range(count):
                h5[f"v{i:05d}"] = np.ones((3, 8), np.float32)
                h5[f"v{i:05d}"].attrs["clip_start_times"] = np.arange(3.0)
        tracemalloc.start()
        try:
            summary = inspection.inspect_features(path)
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (summary.videos, summary.rows) == (count, 3 * count)
    assert peaks[2000] < peaks[200] + 100_000, peaks  # it was ~1 KB more per video


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    final = tmp_path / "x.txt"
    with atomic_path(final) as temp:
        assert TEMP_MARKER in temp.name and temp.parent == tmp_path
        temp.write_text("done")
    assert final.read_text() == "done"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "y.txt") as temp:
        temp.write_text("half")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_legacy_files_named_by_the_reference_count_for_dotted_videos(tmp_path):
    """The reference wrote ``a.b.mp4``'s features to ``a.pkl``; a completeness check must not call it missing."""
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "a.pkl").write_bytes(reference_pickle(features(3, 1)))
    csv = write_metadata_csv(tmp_path / "meta.csv", ["a.b", "c.d"])
    result = runner.invoke(app, ["merge", str(folder), str(tmp_path / "g.h5"), "--metadata", str(csv)])
    assert result.exit_code == 1
    assert "1 of 2 expected videos have no features" in said(result)
    assert "c.d" in result.stdout and "a.b" not in result.stdout


def test_a_merge_into_a_name_of_another_format_is_refused(tmp_path) -> None:
    from typer.testing import CliRunner

    from tsp_cli.cli.app import app

    (tmp_path / "out").mkdir()
    np.save(tmp_path / "out" / "a.npy", np.zeros((2, 512), np.float32))
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "out"), str(tmp_path / "m.npy")])
    assert result.exit_code == 2 and "m.npy ends in .npy, but merge writes one HDF5 file; name it m.h5" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "m.npy").exists()


def test_a_video_of_many_thousand_clips_keeps_every_start_time(tmp_path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    # 3 h at 30 fps, dense stride: 161,985 clips, far past the ~8,000 an object header holds
    num_frames = 3 * 3600 * 30
    manifest = {**MANIFEST, "settings": {**MANIFEST["settings"], "stride": 1}}
    starts = clip_start_times(30.0, num_frames, clip_len=16, frame_rate=15.0, stride=1)
    np.save(folder / "long.npy", np.zeros((len(starts), 4), np.float32))
    (folder / "tsp-manifest.json").write_text(json.dumps(manifest))
    (folder / "videos.jsonl").write_text(json.dumps({"video": "long", "fps": 30.0, "num_frames": num_frames}) + "\n")
    merge.merge_features(folder, tmp_path / "f.h5")
    with h5py.File(tmp_path / "f.h5") as h5:
        assert len(starts) > 100_000
        np.testing.assert_array_equal(h5["long"].attrs["clip_start_times"], starts)
