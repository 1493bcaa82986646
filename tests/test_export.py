"""``tsp export``: each layout read back the way its code base's loader reads it, resizing, edge cases.

The readers below follow the loaders' code (cited in docs/downstream.md), not our writer:
ActionFormer opens ``feat_folder/file_prefix + id + file_ext`` for annotation ids without ``v_``;
OpenTAD skips the keys listed in ``block_list`` and ``LoadFeats`` opens
``data_path/prefix + key + suffix.npy``; G-TAD takes ``h5[video_name][()]``; BMN
``pandas.read_csv(feature_path + "csv_mean_" + str(temporal_scale) + "/" + video_name + ".csv").values``;
PDVC ``os.path.join(folder, key[0:13] + '.npy')``; TSP's training (GVF) ``h5[key]`` with
``key = os.path.basename(filename).split('.')[0]``.
"""

from __future__ import annotations

import json
import os
import pickle
import runpy
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import said
from tsp_cli.atomic import TEMP_MARKER
from tsp_cli.cli.app import app
from tsp_cli.data import export as exporting
from tsp_cli.errors import UsageError
from tsp_cli.pipeline import store

from .test_merge import MANIFEST

runner = CliRunner()

#: The settings of a default extraction, as test_merge's manifest has them.
SETTINGS = MANIFEST["settings"]
#: ActivityNet-style names (``v_`` + id), one with dots and a space, one 0-clip and one 1-clip video.
CLIPS = {"v_abcdefghijk": 7, "v_a.b c": 5, "v_lmnopqrstuv": 130, "v_short": 0, "v_one": 1}


def features(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 512)).astype(np.float32)


def make_extraction(folder: Path, clips: dict[str, int]) -> dict[str, np.ndarray]:
    """A ``tsp extract`` output folder written with the store's own helpers; returns the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    store.claim_output_folder(folder, SETTINGS, {"tsp": "0.1.0", "torch": torch.__version__})
    arrays = {}
    for seed, (name, rows) in enumerate(clips.items()):
        arrays[name] = features(rows, seed)
        store.save_features(folder, name, arrays[name])
        store.record_video(folder, {"video": name, "fps": 30.0, "num_frames": 32 * rows + 31, "clips": rows})
    return arrays


@pytest.fixture
def extraction(tmp_path):
    folder = tmp_path / "features"
    return folder, make_extraction(folder, CLIPS)


def export(*args: str):
    return runner.invoke(app, ["export", *map(str, args)])


def reference_resize(x: np.ndarray, size: int) -> np.ndarray:
    """``align_corners=False`` linear resampling written out: output row i samples the input at
    ``(i + 0.5) * T / size - 0.5``, clamped to the first and last rows, each column on its own."""
    positions = np.clip((np.arange(size) + 0.5) * len(x) / size - 0.5, 0, len(x) - 1)
    return np.stack([np.interp(positions, np.arange(len(x)), column) for column in x.T.astype(np.float64)], axis=1)


# --- resizing --------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2, 3, 100, 1000])
def test_resize_is_the_authors_interpolate_call_along_time_only(length):
    x = features(length, length)
    resized = exporting.resize_features(x, 100)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x).T.unsqueeze(0), size=100, mode="linear", align_corners=False
    )[0].T.numpy()
    assert resized.dtype == np.float32 and resized.shape == (100, 512)
    np.testing.assert_array_equal(resized, expected)
    np.testing.assert_allclose(resized, reference_resize(x, 100), rtol=0, atol=2e-6)
    if length == 100:
        np.testing.assert_array_equal(resized, x)


def test_resize_never_mixes_channels():
    x = np.zeros((37, 512), np.float32)
    x[:, 3] = 7.0
    resized = exporting.resize_features(x, 100)
    assert np.all(resized[:, 3] == 7.0) and np.count_nonzero(np.delete(resized, 3, axis=1)) == 0


@pytest.mark.parametrize("rows", [0, 1])
def test_fewer_than_two_clips_cannot_be_resized(rows):
    with pytest.raises(ValueError, match="cannot be interpolated"):
        exporting.resize_features(features(rows, 0), 100)


# --- per target: read back as the code base does ---------------------------------------------


def read_actionformer_yaml(path: Path) -> dict:
    """The ``dataset:`` block (JSON-spelled scalars, which YAML reads the same way)."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "dataset:"
    return {key.strip(): json.loads(value) for key, value in (line.split(":", 1) for line in lines[1:])}


def test_actionformer_files_open_by_file_prefix_and_annotation_id(extraction, tmp_path):
    folder, arrays = extraction
    out = tmp_path / "af"
    result = export(folder, out, "--to", "actionformer")
    assert result.exit_code == 1, result.output  # v_short has no clips
    dataset = read_actionformer_yaml(out / "actionformer.yaml")
    assert dataset == {
        "feat_folder": str(out.resolve()),
        "file_prefix": "v_",
        "file_ext": ".npy",
        "input_dim": 512,
        "feat_stride": 16,
        "num_frames": 16,
        "default_fps": 15,
    }
    for video, array in arrays.items():
        annotation_id = video[2:]  # ActivityNet annotation keys carry no v_
        filename = os.path.join(dataset["feat_folder"], dataset["file_prefix"] + annotation_id + dataset["file_ext"])
        if len(array) == 0:
            assert not os.path.exists(filename)  # thumos14.py skips ids whose file does not exist
            continue
        feats = np.load(filename).astype(np.float32)
        feats = torch.from_numpy(np.ascontiguousarray(feats.transpose()))  # T x C -> C x T
        assert feats.shape == (dataset["input_dim"], len(array))
        np.testing.assert_array_equal(feats.numpy().T, array)


def test_actionformer_without_common_prefix_and_with_resize(tmp_path):
    arrays = make_extraction(tmp_path / "features", {"video_1": 40, "v_2": 9})
    out = tmp_path / "af"
    assert export(tmp_path / "features", out, "--to", "actionformer", "--resize", "64").exit_code == 0
    dataset = read_actionformer_yaml(out / "actionformer.yaml")
    assert dataset["file_prefix"] is None  # anet.py: None -> ''
    assert (dataset["feat_stride"], dataset["max_seq_len"], dataset["num_frames"]) == (-1, 64, 1)
    for video, array in arrays.items():
        feats = np.load(os.path.join(dataset["feat_folder"], "" + video + dataset["file_ext"]))
        np.testing.assert_array_equal(feats, exporting.resize_features(array, 64))


def test_opentad_blocks_missing_keys_without_prefix_and_loads_the_rest(extraction, tmp_path):
    folder, arrays = extraction
    csv = tmp_path / "meta.csv"
    names = [*arrays, "v_neverextracted"]
    csv.write_text("filename,video-duration,fps,video-frames\n" + "".join(f"{n}.mp4,1.0,30.0,30\n" for n in names))
    out = tmp_path / "ot"
    result = export(folder, out, "--to", "opentad", "--metadata", csv)
    assert result.exit_code == 1 and "v_neverextracted: no features" in said(result)
    config = runpy.run_path(str(out / "opentad.py"))
    load_feats, train = config["load_feats"], config["dataset"]["train"]
    assert load_feats == {"type": "LoadFeats", "feat_format": "npy", "prefix": "v_"}
    assert {key: train[key] for key in ("feature_stride", "sample_stride", "offset_frames", "fps")} == {
        "feature_stride": 16,
        "sample_stride": 1,
        "offset_frames": 8,
        "fps": 15,
    }
    with open(train["block_list"]) as f:  # padding_dataset.py
        blocked_videos = [line.rstrip("\n") for line in f]
    assert sorted(blocked_videos) == ["neverextracted", "short"]
    annotation_keys = [name[2:] for name in names]
    loaded = []
    for video_name in annotation_keys:
        if video_name in blocked_videos:
            continue
        suffix = ""
        file_path = os.path.join(train["data_path"], f"{load_feats['prefix']}{video_name}{suffix}.npy")
        feats = np.load(file_path).astype(np.float32)
        np.testing.assert_array_equal(feats, arrays["v_" + video_name])
        loaded.append(video_name)
    assert sorted(loaded) == ["a.b c", "abcdefghijk", "lmnopqrstuv", "one"]


#: The keyword arguments of OpenTAD's dataset classes (opentad/datasets/base/padding_dataset.py, resize_dataset.py).
OPENTAD_PADDING_ARGUMENTS = {
    *("ann_file", "subset_name", "data_path", "pipeline", "class_map", "filter_gt", "class_agnostic"),
    *("block_list", "test_mode", "feature_stride", "sample_stride", "offset_frames", "fps", "logger"),
}
OPENTAD_RESIZE_ARGUMENTS = {
    *("ann_file", "subset_name", "data_path", "pipeline", "class_map", "filter_gt", "class_agnostic"),
    *("block_list", "test_mode", "resize_length", "sample_stride", "logger"),
}


@pytest.mark.parametrize(("resize", "accepted"), [(0, OPENTAD_PADDING_ARGUMENTS), (128, OPENTAD_RESIZE_ARGUMENTS)])
def test_opentad_keys_are_arguments_its_dataset_class_takes(extraction, tmp_path, resize, accepted):
    folder, _ = extraction
    out = tmp_path / "ot"
    assert export(folder, out, "--to", "opentad", "--resize", resize).exit_code == 1
    config = runpy.run_path(str(out / "opentad.py"))
    for split in ("train", "val", "test"):
        assert set(config["dataset"][split]) <= accepted
    assert config["dataset"]["train"].get("resize_length") == (resize or None)


def test_reference_pickles_export_with_unknown_settings_left_to_the_user(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    array = features(4, 0)
    (folder / "v_x.pkl").write_bytes(pickle.dumps(array))
    assert export(folder, tmp_path / "af", "--to", "actionformer").exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "af" / "v_x.npy"), array)
    dataset = read_actionformer_yaml(tmp_path / "af" / "actionformer.yaml")
    assert (dataset["feat_stride"], dataset["num_frames"], dataset["default_fps"]) == (None, None, None)
    assert "set it by hand" in (tmp_path / "af" / "actionformer.yaml").read_text()
    assert export(folder, tmp_path / "ot", "--to", "opentad").exit_code == 0
    config = runpy.run_path(str(tmp_path / "ot" / "opentad.py"))
    assert config["dataset"]["train"]["feature_stride"] is None
    assert "set it by hand" in (tmp_path / "ot" / "opentad.py").read_text()


def test_gtad_single_file_keyed_by_video_name_with_100_rows(extraction, tmp_path):
    folder, arrays = extraction
    out = tmp_path / "gtad"
    threads = torch.get_num_threads()
    result = export(folder, out, "--to", "gtad")
    assert result.exit_code == 1, result.output
    assert torch.get_num_threads() == threads  # resized on one thread, then given back
    record = json.loads((out / "export.json").read_text())
    feature_path, temporal_scale = record["config"]["feature_path"], record["config"]["temporal_scale"]
    assert temporal_scale == 100 and record["resize"] == 100
    with h5py.File(feature_path, "r") as features_h5:
        assert sorted(features_h5.keys()) == ["v_a.b c", "v_abcdefghijk", "v_lmnopqrstuv"]
        for video_name in features_h5:
            video_data = torch.Tensor(features_h5[video_name][()]).transpose(0, 1)
            assert video_data.shape == (512, temporal_scale)
            np.testing.assert_array_equal(video_data.T.numpy(), exporting.resize_features(arrays[video_name], 100))
    reasons = {item["video"]: item["reason"] for item in record["left_out"]}
    assert reasons == {
        "v_one": "1 clip cannot be interpolated to 100 rows",
        "v_short": "no clips (the video is shorter than one clip)",
    }


def test_bmn_csv_with_header_read_by_pandas(extraction, tmp_path):
    folder, arrays = extraction
    out = tmp_path / "bmn"
    assert export(folder, out, "--to", "bmn").exit_code == 1
    feature_path, temporal_scale = str(out) + "/", 100
    for video_name, array in arrays.items():
        path = feature_path + "csv_mean_" + str(temporal_scale) + "/" + video_name + ".csv"
        if len(array) < 2:
            assert not os.path.exists(path)  # never zero-filled
            continue
        video_df = pd.read_csv(path)
        assert list(video_df.columns) == [f"f{i}" for i in range(512)]
        video_data = torch.Tensor(video_df.values[:, :])
        assert video_data.shape == (temporal_scale, 512)
        np.testing.assert_array_equal(video_data.numpy(), exporting.resize_features(array, 100))


def test_bmn_needs_a_fixed_length(extraction, tmp_path):
    folder, _ = extraction
    result = export(folder, tmp_path / "bmn", "--to", "bmn", "--resize", "0")
    assert result.exit_code == 2 and "give --resize N" in said(result)
    with pytest.raises(UsageError, match="give `resize` N") as raised:  # the Python API speaks in parameters
        exporting.export_features(folder, tmp_path / "bmn", target="bmn", resize=0)
    assert raised.value.parameter == "resize" and not (tmp_path / "bmn").exists()


def test_pdvc_opens_first_13_characters_and_warns_about_long_and_colliding_names(tmp_path):
    clips = {"v_abcdefghijk": 4, "v_bcdefghijkl_trimmed": 6, "v_collidingid1": 3, "v_collidingid2": 3}
    arrays = make_extraction(tmp_path / "features", clips)
    out = tmp_path / "pdvc"
    result = export(tmp_path / "features", out, "--to", "pdvc")
    assert result.exit_code == 1
    text = said(result)
    assert "v_bcdefghijkl_trimmed -> v_bcdefghijkl.npy" in text
    assert "left out, since PDVC cannot tell them apart: v_collidingid1, v_collidingid2" in text
    for key in ("v_abcdefghijk", "v_bcdefghijkl_trimmed"):
        path = os.path.join(str(out), key[0:13] + ".npy")
        feats = np.load(path)
        assert feats.shape[1] == 512
        np.testing.assert_array_equal(feats, arrays[key])
    assert not os.path.exists(os.path.join(str(out), "v_collidingid1"[0:13] + ".npy"))
    record = json.loads((out / "export.json").read_text())
    assert [item["video"] for item in record["left_out"]] == ["v_collidingid1", "v_collidingid2"]
    assert len(record["warnings"]) == 2


def tsp_reads_gvf(h5_path: Path, filename: str) -> np.ndarray:
    """As TSP's ``untrimmed_video_dataset.py`` looks up a video's global feature: by the file name
    cut at its first dot."""
    key = os.path.basename(filename).split(".")[0]
    with h5py.File(h5_path, "r") as h5:
        return h5[key][()]


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_tsp_gvf_is_one_pooled_vector_per_video_keyed_as_tsp_reads_it(tmp_path, pool):
    clips = {"v_abcdefghijk": 4, "video_2.trimmed": 6, "clip": 3}
    arrays = make_extraction(tmp_path / "features", clips)
    out = tmp_path / "gvf.h5"
    result = export(tmp_path / "features", out, "--to", "TSP-GVF", *(["--pool", pool] if pool != "max" else []))
    assert result.exit_code == 0, result.output
    assert f"Exported 3 videos (one {pool}-pooled row each) for tsp-gvf" in said(result)
    assert "video_2.trimmed -> video_2" in said(result)  # its annotations must use the shorter key
    for name, rows in arrays.items():
        gvf = tsp_reads_gvf(out, f"/data/videos/{name}.mp4")
        expected = rows.max(axis=0) if pool == "max" else rows.astype(np.float64).mean(axis=0).astype(np.float32)
        assert gvf.shape == (512,) and gvf.dtype == np.float32
        np.testing.assert_array_equal(gvf, expected)
    with h5py.File(out, "r") as h5:
        assert sorted(h5) == ["clip", "v_abcdefghijk", "video_2"] and h5.attrs["gvf_pool"] == pool
    record = json.loads((tmp_path / "gvf.h5.export.json").read_text())
    assert record["pool"] == pool and record["files"] == ["gvf.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "gvf.h5", "gvf.h5.export.json"]


def test_tsp_gvf_refuses_videos_whose_keys_collide_by_name_and_overwrites_only_when_asked(tmp_path):
    arrays = make_extraction(tmp_path / "features", {"a.left": 3, "a.right": 4, "b": 2})
    out = tmp_path / "gvf.h5"
    result = export(tmp_path / "features", out, "--to", "tsp-gvf")
    assert result.exit_code == 1
    text = said(result)
    assert "2 videos would be read under the same name as another video and were left out" in text
    assert "a.left: TSP would read it as a (each file name up to its first dot), as a.right" in text
    with h5py.File(out, "r") as h5:
        assert sorted(h5) == ["b"]  # neither a.left nor a.right under "a": TSP would train on the wrong one
        np.testing.assert_array_equal(h5["b"][()], arrays["b"].max(axis=0))
    again = export(tmp_path / "features", out, "--to", "tsp-gvf")
    assert again.exit_code == 2 and "gvf.h5 exists; pass --overwrite to replace it" in said(again)
    assert export(tmp_path / "features", out, "--to", "tsp-gvf", "--overwrite").exit_code == 1


def test_pool_and_resize_are_refused_where_they_do_not_apply(extraction, tmp_path):
    folder, _ = extraction
    result = export(folder, tmp_path / "o", "--to", "gtad", "--pool", "avg")
    assert result.exit_code == 2 and "--pool applies to tsp-gvf only, not to gtad" in said(result)
    result = export(folder, tmp_path / "g.h5", "--to", "tsp-gvf", "--resize", "100")
    assert result.exit_code == 2 and "tsp-gvf pools each video into one row, so it takes no --resize" in said(result)
    result = export(folder, tmp_path / "o", "--to", "gtad", "--resize", "1")
    assert result.exit_code == 2 and "--resize must be 0 (keep every clip) or a number of rows of at least 2" in said(
        result
    )
    result = export(folder, tmp_path / "o", "--to", "tsp-gvf", "--pool", "median")
    assert result.exit_code == 2 and "'median' is not one of 'max', 'avg'." in said(result)
    assert not (tmp_path / "o").exists() and not (tmp_path / "g.h5").exists()


@pytest.mark.parametrize("name", ["tridet", "TriDet", "ActionFormer", "ACTIONFORMER"])
def test_tridet_and_any_case_mean_actionformers_layout(extraction, tmp_path, name):
    folder, _ = extraction
    result = export(folder, tmp_path / "o", "--to", name)
    assert result.exit_code == 1, result.output  # v_short and v_one are left out as for actionformer
    assert "for actionformer into" in said(result) and (tmp_path / "o" / "actionformer.yaml").is_file()


def test_one_row_resize_says_row_in_the_singular_and_counts_agree(extraction, tmp_path):
    folder, _ = extraction
    result = export(folder, tmp_path / "o", "--to", "gtad", "--resize", "2")
    assert "(2 rows each)" in said(result)
    clips = {"v_abcdefghijk": 4, "v_bcdefghijkl_trimmed": 6}
    make_extraction(tmp_path / "f2", clips)
    result = export(tmp_path / "f2", tmp_path / "p", "--to", "pdvc")
    assert "1 video has a longer name and was written under that" in said(result)


# --- sources, record, safety -----------------------------------------------------------------


@pytest.mark.parametrize("target", exporting.TARGETS)
def test_folder_and_merged_file_export_the_same_bytes(extraction, tmp_path, target):
    folder, _ = extraction
    merged = tmp_path / "features.h5"
    assert runner.invoke(app, ["merge", str(folder), str(merged)]).exit_code == 0
    from_folder, from_file = tmp_path / "a", tmp_path / "b"
    if exporting.TARGETS[target].writes_one_file:  # OUT is the file: compare it whole
        assert export(folder, tmp_path / "a.h5", "--to", target).exit_code == 1
        assert export(merged, tmp_path / "b.h5", "--to", target).exit_code == 1
        assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
        return
    assert export(folder, from_folder, "--to", target).exit_code == 1
    assert export(merged, from_file, "--to", target).exit_code == 1
    files = sorted(p.relative_to(from_folder) for p in from_folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(from_file) for p in from_file.rglob("*") if p.is_file())
    for relative in files:
        if relative.name == "export.json":
            a, b = (json.loads((root / relative).read_text()) for root in (from_folder, from_file))
            assert (a["features_kind"], b["features_kind"]) == ("folder", "hdf5")
            assert a["extraction"] == b["extraction"] and a["extraction"]["settings"]["stride"] == 16
            assert a["left_out"] == b["left_out"] and a["files"] == b["files"]
        else:
            data_a, data_b = (from_folder / relative).read_bytes(), (from_file / relative).read_bytes()
            if relative.suffix in (".yaml", ".py"):
                data_b = data_b.replace(str(from_file.resolve()).encode(), str(from_folder.resolve()).encode())
            assert data_a == data_b, relative


def test_non_empty_out_is_refused_without_overwrite_and_stale_files_go_with_it(extraction, tmp_path, monkeypatch):
    folder, _ = extraction
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = export(folder, out, "--to", "pdvc")
    assert result.exit_code == 2 and "is not empty; pass --overwrite" in said(result)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert export(folder, out, "--to", "pdvc", "--overwrite").exit_code == 1
    assert (out / "v_a.b c.npy").is_file()

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporting, "_write_videos", killed)
    with pytest.raises(KeyboardInterrupt):
        exporting.export_features(folder, out, target="pdvc", overwrite=True)
    assert not (out / "export.json").exists()  # an interrupted re-export does not look finished
    monkeypatch.undo()
    assert export(folder, out, "--to", "pdvc", "--overwrite").exit_code == 1
    (folder / "v_a.b c.npy").unlink()
    assert export(folder, out, "--to", "pdvc", "--overwrite").exit_code == 1
    assert not (out / "v_a.b c.npy").exists()  # listed in the previous export.json, not written again
    assert (out / "notes.txt").read_text() == "mine"  # not ours: kept
    assert export(folder, folder, "--to", "pdvc", "--overwrite").exit_code == 2


@pytest.mark.parametrize("target", ["opentad", "gtad", "bmn"])
def test_interrupted_export_leaves_only_whole_files(extraction, tmp_path, monkeypatch, target):
    folder, _ = extraction
    real_resize, real_save = exporting.resize_features, store.save_features
    calls = []

    def interrupt_second_video(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return (real_resize if target != "opentad" else real_save)(*args)

    monkeypatch.setattr(exporting, "resize_features", interrupt_second_video)
    monkeypatch.setattr(store, "save_features", interrupt_second_video if target == "opentad" else real_save)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        exporting.export_features(folder, out, target=target)
    left = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in left if TEMP_MARKER in p.name]
    assert not (out / "export.json").exists() and not (out / "features.h5").exists()
    for path in left:  # what carries a final name is whole
        data = np.load(path) if path.suffix == ".npy" else pd.read_csv(path).to_numpy(np.float32)
        assert data.shape[1] == 512


def test_videos_option_and_exit_codes(extraction, tmp_path):
    folder, _ = extraction
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("v_abcdefghijk", "v_a.b c", "v_lmnopqrstuv"):
        (videos / f"{name}.mp4").write_bytes(b"")
    result = export(folder, tmp_path / "o1", "--to", "opentad", "--videos", videos)
    assert result.exit_code == 1  # v_short (0 clips) is still in the folder
    assert (tmp_path / "o1" / "missing_files.txt").read_text() == "short\n"
    complete = tmp_path / "complete"
    make_extraction(complete, {"v_abcdefghijk": 3, "v_lmnopqrstuv": 2})
    result = export(complete, tmp_path / "o2", "--to", "gtad", "--videos", videos)
    assert result.exit_code == 1 and "v_a.b c: no features" in said(result)
    result = export(complete, tmp_path / "o3", "--to", "actionformer")
    assert result.exit_code == 0 and "Exported 2 videos (5 rows)" in said(result)
    assert "Exporting 2/2" in result.output  # plain progress lines without a terminal
    csv = tmp_path / "m.csv"
    csv.write_text("filename\nv_abcdefghijk.mp4\n")
    result = export(complete, tmp_path / "o4", "--to", "pdvc", "--metadata", csv, "--videos", videos)
    assert result.exit_code == 2 and "either --metadata or --videos" in said(result)
    result = export(tmp_path / "nothing", tmp_path / "o5", "--to", "pdvc")
    assert result.exit_code == 2 and "neither a tsp extract folder nor an HDF5 file" in said(result)


def test_the_targets_write_the_stores_feature_suffix() -> None:
    from tsp_cli.data.export_targets import FEATURE_SUFFIX

    assert store.FEATURE_SUFFIX == FEATURE_SUFFIX


def test_a_truncated_merged_file_or_an_unwritable_destination_is_one_sentence(extraction, tmp_path):
    folder, _ = extraction
    merged = tmp_path / "features.h5"
    assert runner.invoke(app, ["merge", str(folder), str(merged)]).exit_code == 0
    cut = tmp_path / "cut.h5"
    cut.write_bytes(merged.read_bytes()[: merged.stat().st_size // 2])
    result = export(cut, tmp_path / "af", "--to", "actionformer")
    assert result.exit_code == 2 and "damaged or cut short" in said(result) and "Traceback" not in result.output
    assert not (tmp_path / "af").exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = export(merged, blocked / "gvf.h5", "--to", "tsp-gvf")
    assert result.exit_code == 2 and "is a file, not a folder" in said(result)
    assert blocked.read_text() == "not a folder"
