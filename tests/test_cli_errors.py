"""The CLI's error edge: core errors in parameter terms become flags, error types become exit codes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.videos import make_video
from tsp_cli.cli.app import app
from tsp_cli.cli.errors import FLAGS, exit_code_for, message_for
from tsp_cli.errors import (
    CheckpointError,
    DeviceError,
    DownloadError,
    HashMismatchError,
    ModelNotFoundError,
    OfflineError,
    UsageError,
    VideoError,
)
from tsp_cli.pipeline.devices import resolve_device


def test_errors_refine_the_builtins_a_python_caller_already_catches() -> None:
    assert issubclass(UsageError, ValueError) and issubclass(DeviceError, UsageError)
    assert issubclass(DownloadError, OSError) and issubclass(OfflineError, ConnectionError)
    assert issubclass(ModelNotFoundError, LookupError) and issubclass(CheckpointError, ValueError)


def test_the_core_names_parameters_and_the_cli_names_flags() -> None:
    with pytest.raises(DeviceError) as raised:
        resolve_device("tpu")
    error = raised.value
    assert (error.parameter, error.device) == ("device", "tpu")
    assert str(error) == "`device` 'tpu' is not a device; use cpu, cuda, cuda:N or mps."
    assert message_for(error) == "--device 'tpu' is not a device; use cpu, cuda, cuda:N or mps."


def test_only_known_parameters_in_backticks_are_rewritten() -> None:
    error = UsageError("`batch_size` must be at least 1; see `tsp extract --help` or `nosuch`.")
    assert message_for(error) == "--batch-size must be at least 1; see `tsp extract --help` or `nosuch`."
    assert all(flag.startswith("--") or flag.isupper() for flag in FLAGS.values())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), 2),
        (CheckpointError("x"), 2),
        (ModelNotFoundError("x"), 2),
        (DeviceError("x"), 2),
        (VideoError("x"), 1),
        (DownloadError("x"), 1),
        (HashMismatchError("x"), 1),
    ],
)
def test_exit_codes_come_from_the_error_type(error, code: int) -> None:
    assert exit_code_for(error) == code


def test_a_command_may_override_the_exit_code_of_a_kind_of_error() -> None:
    assert exit_code_for(OfflineError("x"), {DownloadError: 2}) == 2
    assert exit_code_for(VideoError("x"), {DownloadError: 2}) == 1


def test_the_user_reads_the_flag_in_one_sentence(tmp_path, r3d_checkpoint) -> None:
    make_video(tmp_path / "v" / "a.mp4", frames=20)
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(tmp_path / "v"),
            "-o",
            str(tmp_path / "o"),
            "--device",
            "tpu",
        ],
    )
    assert result.exit_code == 2
    assert "--device 'tpu' is not a device" in " ".join(result.output.split())
    assert "Traceback" not in result.output
