"""The one progress module: extract's bar and log lines in clips, the closing summary's wording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.videos import make_video
from tsp_cli.cli import progress as progress_module
from tsp_cli.cli.app import app
from tsp_cli.cli.progress import ExtractProgress, StepProgress
from tsp_cli.data.progress import Progress as StepEvent
from tsp_cli.pipeline.events import ClipProgress, RunStarted, VideoEnded


def invoke(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def every_line(monkeypatch):
    """Print a log line on every event (logs normally get one per LOG_INTERVAL_SECONDS)."""
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_SECONDS", 0.0)


def test_every_command_logs_at_the_same_interval() -> None:
    assert progress_module.LOG_INTERVAL_SECONDS == 30.0
    source = "".join(p.read_text() for p in Path(progress_module.__file__).parent.glob("*.py"))
    assert source.count("LOG_INTERVAL_SECONDS =") == 1 and "PLAIN_PROGRESS_SECONDS" not in source


def test_extract_log_lines_count_clips_with_an_estimate_for_unprobed_videos(every_line, capsys) -> None:
    now = [0.0]
    with ExtractProgress("extract", clock=lambda: now[0]) as view:
        view(RunStarted(videos=4, to_do=4, skipped=0, workers=1, device="cpu"))
        now[0] = 10.0  # one video of 10 clips probed, three to go: 10 + 3 x 10 expected
        view(ClipProgress(computed=5, expected=10, probed=1, unprobed=3))
        now[0] = 20.0
        view(ClipProgress(computed=10, expected=10, probed=1, unprobed=3))
        view(VideoEnded("a", "done", 10))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "extract: 4 videos, 0 already done, 4 to do on cpu with 1 decoding worker."
    # 5 clips in 10 s: 35 more at 0.5 clips/s is 70 s
    assert lines[1] == "extract: 5/40 clips, 4 videos to go, 0.5 clips/s, ETA 0:01:10"
    assert lines[2] == "extract: 10/40 clips, 4 videos to go, 0.5 clips/s, ETA 0:01:00"
    assert lines[3] == "extract: 10/40 clips, 3 videos to go, 0.5 clips/s, ETA 0:01:00"


def test_a_failed_video_and_a_video_without_clips_are_named_as_they_end(capsys) -> None:
    with ExtractProgress("extract") as view:
        view(RunStarted(videos=2, to_do=2, skipped=0, workers=2, device="cpu"))
        view(VideoEnded("short", "no clips", 0))
        view(VideoEnded("bad", "failed", 0, "bad.mp4 cannot be opened as a video (Invalid data)."))
    err = capsys.readouterr().err
    assert "short: shorter than one clip, saved as 0 clips" in err
    assert "bad: bad.mp4 cannot be opened as a video (Invalid data)." in err


def test_data_steps_print_their_first_and_last_item_in_logs(capsys) -> None:
    with StepProgress("Probing") as on_progress:
        for done in (1, 2, 3):
            on_progress(StepEvent(done, 3, f"v{done}.mp4"))
    assert capsys.readouterr().err.splitlines() == ["Probing 3/3 (v3.mp4)"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("progress-videos")
    make_video(folder / "clip.mp4", frames=34, fps=30)
    make_video(folder / "short.mp4", frames=10, fps=30)
    (folder / "empty.mp4").write_bytes(b"")
    return folder


def test_a_dry_run_summary_names_clipless_videos_and_says_nothing_of_a_model_or_the_records(
    videos: Path, tmp_path: Path
) -> None:
    result = invoke("extract", videos, "-o", tmp_path / "out", "--dry-run", "--device", "cpu", "-j", "0")
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "1 checked (dry run), 0 skipped, 1 with no clips, 1 failed · 1 clip in" in text
    assert "Shorter than one clip (would be saved as 0 clips): short" in text  # a dry run writes nothing
    assert "short: shorter than one clip, would be saved as 0 clips" in text
    assert "waited" not in text and "network" not in text
    # an empty file never decodes: no advice to rerun, and no failures.jsonl in a dry run
    assert "1 video failed, listed above. It cannot be decoded as it is (see the reason)." in text
    assert "cannot be opened as a video (it is empty: 0 bytes)." in text
    assert "Rerun" not in text and "tsp status" not in text


@pytest.mark.slow
def test_a_real_run_says_how_long_the_model_waited_for_frames(videos: Path, r3d_checkpoint: Path, tmp_path) -> None:
    clip = tmp_path / "in" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes((videos / "clip.mp4").read_bytes())
    result = invoke("extract", clip.parent, "-o", tmp_path / "out", "--local", r3d_checkpoint, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "1 done, 0 skipped, 0 with no clips, 0 failed · 1 clip in" in result.output
    assert "the model waited for decoded frames" in result.output


def test_help_and_models_list_import_neither_torch_nor_the_data_libraries() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tsp_cli.cli.app import app\n"
        "for args in (['--help'], ['extract', '--help'], ['merge', '--help'], ['models', 'list']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = sorted({'torch', 'torchvision', 'av', 'h5py', 'pandas', 'rich.progress'} & set(sys.modules))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


COMMANDS = [
    [],
    ["extract"],
    ["status"],
    ["merge"],
    ["inspect"],
    ["metadata"],
    ["standardize"],
    ["export"],
    ["models"],
    ["models", "list"],
    ["models", "download"],
    ["models", "path"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tsp")
def test_every_command_takes_h_and_its_help_at_80_columns_cuts_nothing(command) -> None:
    """Click's plain help: flags without ``<bool>``, every paragraph re-wrapped, no value cut with ``…``."""
    import re

    short, long = invoke(*command, "-h", env={"COLUMNS": "80"}), invoke(*command, "--help", env={"COLUMNS": "80"})
    assert short.exit_code == 0 and short.output == long.output
    assert "<bool>" not in short.output
    assert "…" not in short.output.replace(", …", "")  # an ellipsis of ours ("30, 25, 30000/1001, …") is kept
    assert max(len(line) for line in short.output.splitlines()) <= 80
    usage = next(line for line in short.output.splitlines() if "Usage:" in line)
    assert not re.search(r"\{[a-z]", usage) and "...}" not in usage, usage


def test_extract_help_names_the_default_checkpoint_whole_and_wraps_its_paragraphs() -> None:
    from tsp_cli.models.registry import DEFAULT_CHECKPOINT

    text = invoke("extract", "-h", env={"COLUMNS": "80"}).output
    assert DEFAULT_CHECKPOINT in text
    paragraph = text.split("Resumes:")[1].split("Arguments:")[0]
    assert all(len(line) > 60 for line in paragraph.strip().splitlines()[:-1])  # full lines, not ragged


def test_the_precisions_the_cli_offers_are_the_ones_the_core_knows() -> None:
    from tsp_cli.cli.common import PRECISION_NAMES
    from tsp_cli.pipeline.precision import PRECISIONS

    assert tuple(PRECISIONS) == PRECISION_NAMES


def test_no_typer_internals_are_used() -> None:
    source = "".join(p.read_text() for p in (Path(progress_module.__file__).parents[1]).rglob("*.py"))
    assert "typer._" not in source and "TyperOption" not in source


def test_extract_help_says_how_resume_and_failures_work() -> None:
    text = " ".join(invoke("extract", "-h").output.split())
    assert "skipped" in text and "run again" in text and "tsp status" in text


@pytest.mark.parametrize("columns", [80, 100, 104, 120, 200])
def test_models_list_fits_the_terminal_without_cutting_a_word(columns: int, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "COLUMNS": str(columns), "TSP_CACHE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "tsp_cli", "models", "list"], capture_output=True, text=True, env=env, check=True
    )
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines) and "…" not in result.stdout
    assert any(line.split()[:2] == ["r2plus1d_34-tsp_on_activitynet", "r2plus1d_34"] for line in lines if line.strip())
    assert ("ActivityNet" in result.stdout) == (columns >= 104)
    assert "~254 MB" in result.stdout  # nothing is cached: the sizes are estimates


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--backbone", "resnet50"], "'resnet50' is not one of 'r2plus1d_34', 'r2plus1d_18', 'r3d_18'."),
        (["--stride", "0"], "Invalid value for '--stride': must be at least 1."),
        (["--stride", "x"], "Invalid value for '--stride': must be a whole number."),
    ],
)
def test_a_bad_option_value_is_refused_in_plain_words_not_pydantics(option, message, tmp_path: Path) -> None:
    result = invoke("extract", tmp_path, "-o", tmp_path / "out", *option)
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and message in text, result.output
    assert "Value error" not in text and "Input should be" not in text


def test_the_live_eta_appears_after_the_first_batch_however_slow() -> None:
    """Rich's own ETA keeps a 30 s window of speed samples, longer than a CPU batch takes to come:
    it showed -:--:-- for a whole CPU run. Ours is the average since the start: one batch is enough."""
    from rich.progress import Progress

    now = [0.0]
    rate, eta = progress_module._rate_and_eta_columns(lambda: now[0])
    display = Progress(rate, eta, auto_refresh=False, disable=True)
    task = display.add_task("extract", total=None, started=0.0)
    assert eta.render(display.tasks[0]).plain == "ETA ?"
    now[0] = 45.0  # the first batch of 32 clips, 45 s in (0.7 clips/s); 711 clips estimated in all
    display.update(task, completed=32, total=711)
    assert rate.render(display.tasks[0]).plain == "0.7 clips/s"
    assert eta.render(display.tasks[0]).plain == "ETA 0:15:55"  # 679 clips at 32/45 clips/s: 955 s
    now[0] = 60.0  # between batches the ETA keeps moving with the clock
    assert eta.render(display.tasks[0]).plain == "ETA 0:21:13"


def test_workers_beyond_the_cores_are_capped_with_one_plain_note(videos: Path, tmp_path: Path) -> None:
    """No 100 processes on 2 cores, and none of torch's own UserWarning about it."""
    from tsp_cli.parallel import available_cores

    cores = available_cores()
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"}
    command = ["extract", str(videos / "clip.mp4"), "-o", str(tmp_path / "o"), "--dry-run", "--device", "cpu"]
    result = subprocess.run(
        [sys.executable, "-m", "tsp_cli", *command, "--workers", str(cores + 98)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    note = f"Note: --workers {cores + 98} is more than the {cores} core"
    assert result.stderr.count(note) == 1 and f"using {cores}." in result.stderr
    assert f"with {cores} decoding worker" in result.stderr
    assert "UserWarning" not in result.stderr and "Warning" not in result.stderr


def test_inspect_at_80_columns_folds_long_names_and_never_cuts_two_apart(tmp_path: Path) -> None:
    import numpy as np

    long_name = "a_rather_long_video_name_that_goes_on_and_on"
    for name in ("cfr30_a", "cfr30_b", long_name):
        np.save(tmp_path / f"{name}.npy", np.zeros((3, 512), np.float32))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin", "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "tsp_cli", "inspect", str(tmp_path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "cfr30_a" in result.stdout and "cfr30_b" in result.stdout and "…" not in result.stdout
    folded = "".join(line.split("│")[1].strip() for line in result.stdout.splitlines() if line.count("│") > 2)
    assert long_name in folded
