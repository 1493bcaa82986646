"""``tsp extract`` through the CLI: exit codes, one-sentence errors, checkpoint resolution."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.videos import make_video
from tsp_cli.cli.app import app


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    """The one ``Error:`` sentence; a path refused while parsing (answered before torch loads) comes
    after Click's two usage lines, as every mistake in the command line does."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    if lines and lines[0].startswith("Usage: ") and "Invalid value for" in result.output:
        assert len(lines) == 3 and lines[1].startswith("Try "), result.output
        lines = lines[2:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-videos")
    make_video(folder / "clip.mp4", frames=34, fps=30)  # one clip at stride 16
    return folder


@pytest.mark.parametrize(
    "args,message",
    [
        (["/does/not/exist"], "does not exist"),
        (["{videos}", "--shard", "4/4"], "--shard '4/4' is out of range"),
        (["{videos}", "--shard", "a/b"], "is not of the form i/n"),
        (
            ["{videos}", "--local", "{ckpt}", "--checkpoint", "r3d_18-tac_on_kinetics"],
            "either --local PATH or --checkpoint NAME",
        ),
        (["{videos}", "--local", "{ckpt}", "--backbone", "r2plus1d_34"], "holds a r3d_18 backbone, not r2plus1d_34"),
        (["{videos}", "--local", "{videos}/missing.pth"], "does not exist"),
        (["{videos}", "--local", "{videos}"], "Invalid value for '--local': file '{videos}' is a directory."),
        (["{videos}", "--local", "{videos}/clip.mp4"], "is not a PyTorch checkpoint"),
        (["{videos}", "--checkpoint", "r3d_18-tsp_on_activitynett"], "r3d_18-tsp_on_activitynet"),
        (["{videos}", "--local", "{ckpt}", "--device", "cuda:0"], "no CUDA GPU is available"),
        (["{videos}", "--local", "{ckpt}", "--device", "tpu"], "not a device"),
    ],
)
def test_bad_invocations_exit_2_with_one_sentence(video_folder, r3d_checkpoint, tmp_path, args, message) -> None:
    filled = [a.format(videos=video_folder, ckpt=r3d_checkpoint) for a in args]
    result = invoke("extract", *filled, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message.format(videos=video_folder) in one_line_error(result)
    assert not (tmp_path / "out").exists()  # validated first: a refused command leaves no folder behind


@pytest.mark.slow
def test_extract_runs_and_a_broken_video_exits_1_without_stopping_the_others(
    video_folder, r3d_checkpoint, tmp_path
) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "clip.mp4").write_bytes((video_folder / "clip.mp4").read_bytes())
    (mixed / "broken.mp4").write_bytes(b"not a video at all")
    result = invoke("extract", mixed, "-o", tmp_path / "out", "--local", r3d_checkpoint, "--device", "cpu", "-j", "1")
    assert result.exit_code == 1, result.output
    assert "1 done, 0 skipped, 0 with no clips, 1 failed" in result.output
    assert "broken" in result.output and "Traceback" not in result.output
    assert np.load(tmp_path / "out" / "clip.npy").shape == (1, 512)


@pytest.mark.slow
def test_extract_checkpoint_by_name_equals_extract_local(video_folder, r3d_checkpoint, tmp_path, monkeypatch) -> None:
    sha = hashlib.sha256(r3d_checkpoint.read_bytes()).hexdigest()
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models.my-r3d]\nbackbone = "r3d_18"\nurl = "{r3d_checkpoint}"\nsha256 = "{sha}"\ndescription = "test"\n'
    )
    monkeypatch.setenv("TSP_MODELS_FILE", str(models))
    monkeypatch.setenv("TSP_CACHE_DIR", str(tmp_path / "cache"))
    by_name = invoke(
        "extract", video_folder, "-o", tmp_path / "named", "--checkpoint", "my-r3d", "--device", "cpu", "-j", "0"
    )
    local = invoke(
        "extract", video_folder, "-o", tmp_path / "local", "--local", r3d_checkpoint, "--device", "cpu", "-j", "0"
    )
    assert by_name.exit_code == 0 and local.exit_code == 0, by_name.output + local.output
    np.testing.assert_array_equal(np.load(tmp_path / "named" / "clip.npy"), np.load(tmp_path / "local" / "clip.npy"))


def test_dry_run_never_resolves_a_checkpoint(video_folder, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TSP_OFFLINE", "1")
    monkeypatch.setenv("TSP_CACHE_DIR", str(tmp_path / "empty-cache"))
    result = invoke("extract", video_folder, "-o", tmp_path / "out", "--dry-run", "--device", "cpu", "-j", "0")
    assert result.exit_code == 0, result.output
    assert "1 checked (dry run)" in result.output
    assert not (tmp_path / "out" / "tsp-manifest.json").exists()


def test_offline_default_checkpoint_missing_says_which_file(video_folder, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TSP_CACHE_DIR", str(tmp_path / "empty-cache"))
    result = invoke("extract", video_folder, "-o", tmp_path / "out", "--offline", "--device", "cpu")
    assert result.exit_code != 0
    assert "r2plus1d_34-tsp_on_activitynet" in one_line_error(result)


def test_version_and_help() -> None:
    import av
    import torch

    from tsp_cli import __version__

    lines = invoke("--version").output.splitlines()
    assert lines[0] == f"tsp {__version__}"
    assert lines[1].startswith(f"torch {torch.__version__} (CUDA ")
    assert f"av {av.__version__}" in lines and any(line.startswith("ffmpeg ") for line in lines)
    for command in (
        ["--help"],
        ["extract", "--help"],
        ["models", "--help"],
        ["merge", "--help"],
        ["metadata", "--help"],
        ["standardize", "--help"],
    ):
        result = invoke(*command)
        assert result.exit_code == 0 and "Usage" in result.output


def test_the_python_api_is_importable_from_the_package_without_torch_for_the_cli() -> None:
    import subprocess
    import sys

    code = "import sys, tsp_cli.cli.app; assert 'torch' not in sys.modules; from tsp_cli import extract_features, fetch, Shard; print(extract_features.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "extract_features"


def test_a_checkpoint_that_cannot_be_downloaded_stops_extract_with_2_as_nothing_started(
    video_folder, tmp_path, monkeypatch
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        '[models.unreachable]\nbackbone = "r3d_18"\nurl = "http://127.0.0.1:9/r3d.pth"\n'
        f'sha256 = "{"0" * 64}"\ndescription = "test"\n'
    )
    monkeypatch.setenv("TSP_MODELS_FILE", str(models))
    monkeypatch.setenv("TSP_CACHE_DIR", str(tmp_path / "cache"))
    result = invoke("extract", video_folder, "-o", tmp_path / "out", "--checkpoint", "unreachable", "--device", "cpu")
    assert result.exit_code == 2, result.output
    one_line_error(result)
    assert not (tmp_path / "out").exists()
