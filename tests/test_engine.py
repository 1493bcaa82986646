"""The engine's plumbing through the Python API, with a tiny stand-in network for speed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import crash_this_process
from tests.videos import make_video
from tsp_cli.errors import UsageError
from tsp_cli.pipeline import store
from tsp_cli.pipeline.batcher import run_jobs
from tsp_cli.pipeline.events import VideoEnded
from tsp_cli.pipeline.extraction import extract_features
from tsp_cli.pipeline.inputs import VideoJob, collect_jobs, output_name
from tsp_cli.pipeline.sampling import ClipSettings
from tsp_cli.pipeline.sharding import Shard, parse_shard

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small videos: 30 fps, 25 fps (non-whole step), a dotted name, and one too short for a clip."""
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "a.mp4", frames=70, fps=30, gop=10)
    make_video(folder / "b.mkv", frames=60, fps=25)
    make_video(folder / "sub" / "c.d.mp4", frames=50, fps=30)
    make_video(folder / "short.mp4", frames=12, fps=30)
    return folder


def run(jobs, out, network, **kwargs):
    return run_jobs(jobs, out, network, ClipSettings(stride=kwargs.pop("stride", 4)), **kwargs)


def jobs_of(folder: Path) -> list[VideoJob]:
    return collect_jobs([folder])


def test_outputs_are_clips_by_512_float32_named_without_the_last_extension(
    videos: Path, tmp_path: Path, tiny_network
) -> None:
    summary = run(jobs_of(videos), tmp_path, tiny_network, workers=2, batch_size=3)
    assert (summary.done, summary.no_clips, summary.failed) == (3, 1, 0)
    shapes = {p.name: np.load(p).shape for p in tmp_path.glob("*.npy")}
    # a: 35 resampled frames -> clips at 0, 4, ..., 16 (5); b: int(60*15/25) = 36 -> 6; c.d: 25 -> 3
    assert shapes == {"a.npy": (5, 512), "b.npy": (6, 512), "c.d.npy": (3, 512), "short.npy": (0, 512)}
    assert all(np.load(p).dtype == np.float32 for p in tmp_path.glob("*.npy"))
    assert summary.clips == 14


def test_workers_batches_and_in_process_decoding_agree_exactly(videos: Path, tmp_path: Path, tiny_network) -> None:
    one = run(jobs_of(videos), tmp_path / "one", tiny_network, workers=0, batch_size=1)
    two = run(jobs_of(videos), tmp_path / "two", tiny_network, workers=2, batch_size=7)
    assert (one.done, one.clips) == (two.done, two.clips) == (3, 14)
    names = sorted(path.name for path in (tmp_path / "one").glob("*.npy"))
    assert names == sorted(path.name for path in (tmp_path / "two").glob("*.npy"))
    assert names == ["a.npy", "b.npy", "c.d.npy", "short.npy"]
    for name in names:
        np.testing.assert_allclose(
            np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name), rtol=1e-5, atol=1e-6
        )


def test_batches_mix_clips_of_several_videos(videos: Path, tmp_path: Path) -> None:
    seen_batches = []

    class Recorder(__import__("torch").nn.Module):
        def forward(self, clips):
            seen_batches.append(clips.shape[0])
            return clips.new_zeros(clips.shape[0], 512)

    run(jobs_of(videos), tmp_path, Recorder(), workers=0, batch_size=4)
    # 14 clips over 3 videos in batches of 4: full batches cross video boundaries
    assert seen_batches == [4, 4, 4, 2]


def test_broken_empty_and_streamless_files_fail_alone_and_are_logged(
    videos: Path, tmp_path: Path, tiny_network
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.mp4").write_bytes(os.urandom(5000))
    (bad / "empty.mp4").write_bytes(b"")
    data = (videos / "a.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 2])
    make_video(bad / "good.mp4", frames=40, fps=30)
    out = tmp_path / "out"
    events = []
    summary = run(jobs_of(bad), out, tiny_network, workers=2, batch_size=2, on_event=events.append)
    assert summary.done == 1 and summary.failed == 3 and summary.exit_code == 1
    assert sorted(p.name for p in out.glob("*.npy")) == ["good.npy"]
    failures = list(store.read_failures(out).values())
    assert sorted(f["video"] for f in failures) == ["empty", "garbage", "truncated"]
    assert all(f["error"] and "Traceback" not in f["error"] for f in failures)
    assert {e.name for e in events if isinstance(e, VideoEnded) and e.outcome == "failed"} == {
        "empty",
        "garbage",
        "truncated",
    }


def test_a_video_with_no_video_stream_fails_clearly(tmp_path: Path, tiny_network) -> None:
    import av

    audio_only = tmp_path / "in" / "audio.mka"
    audio_only.parent.mkdir()
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    summary = run([VideoJob(audio_only, "audio")], tmp_path / "out", tiny_network)
    assert summary.failures == [("audio", f"{audio_only} has no video stream.")]


def test_rerun_skips_finished_videos_and_retries_failed_ones(
    videos: Path, tmp_path: Path, tiny_network, monkeypatch
) -> None:
    kwargs = dict(checkpoint=None, stride=16, device="cpu", workers=0)
    monkeypatch.setattr("tsp_cli.models.loading.load_backbone", lambda path, backbone: (tiny_network, "r3d_18"))
    checkpoint = tmp_path / "fake.pth"
    checkpoint.write_bytes(b"weights")
    kwargs["checkpoint"] = checkpoint
    first = extract_features([videos], tmp_path / "out", **kwargs)
    assert first.done == 3
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.npy")}
    (tmp_path / "out" / "b.npy").unlink()
    second = extract_features([videos], tmp_path / "out", **kwargs)
    assert (second.skipped, second.done) == (3, 1)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.npy")}
    assert {n for n in after if after[n] != before.get(n)} == {"b.npy"}


def test_other_feature_settings_are_refused_and_a_new_tool_version_only_noted(
    videos: Path, tmp_path: Path, tiny_network, monkeypatch
) -> None:
    monkeypatch.setattr("tsp_cli.models.loading.load_backbone", lambda path, backbone: (tiny_network, "r3d_18"))
    checkpoint = tmp_path / "fake.pth"
    checkpoint.write_bytes(b"weights")
    out = tmp_path / "out"
    extract_features([videos / "a.mp4"], out, checkpoint=checkpoint, workers=0, device="cpu")
    with pytest.raises(UsageError, match="stride 16 there vs 4 now"):
        extract_features([videos / "a.mp4"], out, checkpoint=checkpoint, stride=4, workers=0, device="cpu")
    other = tmp_path / "other.pth"
    other.write_bytes(b"other weights")
    import hashlib

    old_hash, new_hash = (hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in (checkpoint, other))
    with pytest.raises(UsageError) as refused:
        extract_features([videos / "a.mp4"], out, checkpoint=other, workers=0, device="cpu")
    assert f"checkpoint fake.pth (SHA-256 {old_hash}…) there vs other.pth (SHA-256 {new_hash}…) now" in str(
        refused.value
    )
    manifest = json.loads((out / "tsp-manifest.json").read_text())
    manifest["versions"]["torch"] = "1.0"
    (out / "tsp-manifest.json").write_text(json.dumps(manifest))
    notes = []
    extract_features(
        [videos / "a.mp4"],
        out,
        checkpoint=checkpoint,
        workers=0,
        device="cpu",
        on_event=lambda e: notes.extend(getattr(e, "notes", ())),
    )
    assert any("torch is" in note and "1.0 when" in note for note in notes)


def test_stale_temp_files_of_dead_processes_are_removed_but_not_live_ones(tmp_path: Path) -> None:
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"x.npy.tsp-tmp-{host}-{dead.pid}"
    live = tmp_path / f"y.npy.tsp-tmp-{host}-{os.getpid()}"
    foreign = tmp_path / f"z.npy.tsp-tmp-otherhost-{dead.pid}"
    for path in (stale, live, foreign):
        path.write_bytes(b"partial")
    assert store.remove_stale_temp_files(tmp_path) == [stale]
    assert live.exists() and foreign.exists()


KILLABLE_RUN = textwrap.dedent(
    """
    import sys, time, torch
    from tsp_cli.pipeline.batcher import run_jobs
    from tsp_cli.pipeline.inputs import collect_jobs
    from tsp_cli.pipeline.sampling import ClipSettings
    from tests.conftest import TinyNetwork

    class Slow(TinyNetwork):
        def forward(self, clips):
            time.sleep(0.15)
            return super().forward(clips)

    sys.exit(run_jobs(collect_jobs([sys.argv[1]]), sys.argv[2], Slow().eval(), ClipSettings(stride=4),
                      workers=1, batch_size=2).exit_code)
    """
)


def test_killed_run_resumes_to_identical_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    for i in range(4):
        make_video(folder / f"v{i}.mp4", frames=60, fps=30)
    script = tmp_path / "run.py"
    script.write_text(KILLABLE_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    uninterrupted, resumed = tmp_path / "full", tmp_path / "resumed"
    subprocess.run([sys.executable, str(script), folder, uninterrupted], check=True, env=env, timeout=120)
    process = subprocess.Popen([sys.executable, str(script), folder, resumed], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(resumed.glob("*.npy")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(resumed.glob("*.npy")))
    assert 1 <= done_before < 4, "the kill should land mid-run"
    subprocess.run([sys.executable, str(script), folder, resumed], check=True, env=env, timeout=120)
    assert sorted(p.name for p in resumed.iterdir() if ".tsp-tmp-" in p.name) == []
    for path in uninterrupted.glob("*.npy"):
        np.testing.assert_array_equal(np.load(path), np.load(resumed / path.name))
    assert len(list(resumed.glob("*.npy"))) == 4


def test_hidden_files_and_macos_resource_forks_are_not_taken_for_videos(tmp_path: Path) -> None:
    make_video(tmp_path / "v" / "a.mp4", frames=5)
    (tmp_path / "v" / "._a.mp4").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (tmp_path / "v" / ".hidden.mp4").write_bytes(b"")
    (tmp_path / "v" / ".Trash").mkdir()
    (tmp_path / "v" / ".Trash" / "old.mp4").write_bytes(b"")
    assert [job.name for job in collect_jobs([tmp_path / "v"])] == ["a"]
    assert [job.name for job in collect_jobs([tmp_path / "v" / "._a.mp4"])] == ["._a"]  # named itself: kept


def test_names_with_dots_keep_all_but_the_last_extension() -> None:
    assert output_name(Path("a.b.mp4")) == "a.b"
    assert output_name(Path("v_x.y.z.webm")) == "v_x.y.z"
    assert output_name(Path("plain")) == "plain"


def test_two_inputs_with_the_same_name_are_refused(tmp_path: Path) -> None:
    make_video(tmp_path / "one" / "same.mp4", frames=5)
    make_video(tmp_path / "two" / "same.mkv", frames=5)
    with pytest.raises(UsageError, match="same feature file: same"):
        collect_jobs([tmp_path / "one", tmp_path / "two"])


def test_folder_order_is_by_relative_path_and_finds_every_container(tmp_path: Path) -> None:
    for name in ["b/x.webm", "a/z.mp4", "a/y.MKV", "c.avi", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [j.path.relative_to(tmp_path).as_posix() for j in collect_jobs([tmp_path])] == [
        "a/y.MKV",
        "a/z.mp4",
        "b/x.webm",
        "c.avi",
    ]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_are_the_reference_linspace_split(count: int) -> None:
    items = list(range(10))
    parts = [Shard(i, count).select(items) for i in range(count)]
    bounds = np.linspace(0, 10, count + 1).astype(int)
    assert parts == [items[bounds[i] : bounds[i + 1]] for i in range(count)]
    assert [item for part in parts for item in part] == items


@pytest.mark.parametrize("spec", ["4/4", "-1/2", "a/b", "1/0", "3", ""])
def test_malformed_shard_specs_are_refused(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_shard(spec)


def test_metadata_csv_order_and_problems(tmp_path: Path) -> None:
    make_video(tmp_path / "v" / "x.mp4", frames=5)
    make_video(tmp_path / "v" / "y.mp4", frames=5)
    good = tmp_path / "good.csv"
    good.write_text("filename,video-duration,fps,video-frames\ny.mp4,1.0,30.0,30\nx.mp4,1.0,25.0,25\n")
    jobs = collect_jobs([tmp_path / "v"], good)
    assert [(j.name, j.fps, j.num_frames) for j in jobs] == [("y", 30.0, 30), ("x", 25.0, 25)]
    bad_columns = tmp_path / "cols.csv"
    bad_columns.write_text("filename,fps\nx.mp4,30\n")
    with pytest.raises(UsageError, match=r"lacks the column.*video-duration, video-frames"):
        collect_jobs([tmp_path / "v"], bad_columns)
    missing = tmp_path / "missing.csv"
    missing.write_text("filename,video-duration,fps,video-frames\n" + "".join(f"m{i}.mp4,1,30,30\n" for i in range(5)))
    with pytest.raises(UsageError, match=r"5 videos listed .* are not in .* m0.mp4, m1.mp4, m2.mp4 and 2 more"):
        collect_jobs([tmp_path / "v"], missing)


def test_dry_run_assembles_every_batch_but_writes_nothing_not_even_the_folder_or_failures(
    videos: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.mp4").write_bytes(b"not a video")
    summary = extract_features([videos, inputs], tmp_path / "out", stride=4, dry_run=True, workers=2, device="cpu")
    assert summary.clips == 14 and summary.done == 3 and summary.no_clips == 1 and summary.failed == 1
    assert summary.no_clips_names == ["short"]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    __import__("multiprocessing").get_start_method() != "fork", reason="the patch reaches workers only through fork"
)
def test_a_decoder_that_crashes_its_process_fails_only_that_video(
    videos: Path, tmp_path: Path, tiny_network, monkeypatch
) -> None:
    import tsp_cli.pipeline.workers as workers_module

    real_messages = workers_module.video_messages

    def crashing_messages(index, job, settings, **kwargs):
        if job.name == "b":
            crash_this_process()  # what FFmpeg does on some damaged files
        yield from real_messages(index, job, settings, **kwargs)

    monkeypatch.setattr(workers_module, "video_messages", crashing_messages)  # inherited by forked workers
    summary = run(jobs_of(videos), tmp_path, tiny_network, workers=2, batch_size=3)
    assert (summary.done, summary.no_clips, summary.failed) == (2, 1, 1)
    assert summary.failures[0][0] == "b" and "decoder crashed" in summary.failures[0][1]
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["a.npy", "c.d.npy", "short.npy"]


@pytest.mark.skipif(
    __import__("multiprocessing").get_start_method() != "fork", reason="the patch reaches workers only through fork"
)
@pytest.mark.parametrize("batch_size", [1, 4], ids=["written", "clips-waiting-for-a-batch"])
def test_a_video_retried_alone_whose_worker_dies_after_sending_all_of_it_is_done_not_failed(
    videos: Path, tmp_path: Path, tiny_network, monkeypatch, batch_size: int
) -> None:
    import tsp_cli.pipeline.batcher as batcher_module
    import tsp_cli.pipeline.workers as workers_module

    real_messages, real_handle = workers_module.video_messages, batcher_module._Engine.handle
    attempts, received = tmp_path / "attempts", tmp_path / "b-received"
    attempts.mkdir()

    def handle(self, message):  # in the main process: say when b's last message arrived
        real_handle(self, message)
        if message.last and self.jobs[message.job].name == "b":
            received.touch()

    def crashing_messages(index, job, settings, **kwargs):
        if job.name != "b":
            yield from real_messages(index, job, settings, **kwargs)
            return
        first = not any(attempts.iterdir())
        (attempts / str(os.getpid())).touch()
        if first:  # crash mid-group: b is then decoded again alone, in a group of its own
            crash_this_process()
        yield from real_messages(index, job, settings, **kwargs)
        deadline = time.monotonic() + 60
        while not received.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        crash_this_process()  # all of b was sent: the crash is not b's

    monkeypatch.setattr(workers_module, "video_messages", crashing_messages)
    monkeypatch.setattr(batcher_module._Engine, "handle", handle)
    summary = run(jobs_of(videos), tmp_path / "out", tiny_network, workers=2, batch_size=batch_size)
    assert len(list(attempts.iterdir())) == 2
    assert summary.failures == [] and (summary.done, summary.no_clips, summary.failed) == (3, 1, 0)
    assert np.load(tmp_path / "out" / "b.npy").shape == (6, 512)
    assert not (tmp_path / "out" / store.FAILURES_NAME).exists()


@pytest.mark.skipif(
    __import__("multiprocessing").get_start_method() != "fork", reason="the patch reaches workers only through fork"
)
def test_a_worker_dying_during_a_forward_pass_fails_its_video_instead_of_interrupting_the_pass(
    videos: Path, tmp_path: Path, monkeypatch
) -> None:
    import torch

    import tsp_cli.pipeline.workers as workers_module

    real_messages = workers_module.video_messages
    in_forward = tmp_path / "in-forward"

    class SlowNetwork(torch.nn.Module):
        def forward(self, clips):
            if not in_forward.exists():
                in_forward.touch()
                time.sleep(2.0)  # the worker dies now, while the main process is in here
            return clips.new_zeros(clips.shape[0], 512)

    def crashing_messages(index, job, settings, **kwargs):
        if job.name == "b":
            deadline = time.monotonic() + 60
            while not in_forward.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            crash_this_process()
        yield from real_messages(index, job, settings, **kwargs)

    monkeypatch.setattr(workers_module, "video_messages", crashing_messages)
    summary = run(jobs_of(videos), tmp_path / "out", SlowNetwork(), workers=2, batch_size=1)
    assert (summary.done, summary.no_clips, summary.failed) == (2, 1, 1)
    assert summary.failures[0][0] == "b"


def test_progress_counts_clips_known_once_probed_and_takes_off_those_a_failed_video_never_gets(
    videos: Path, tmp_path: Path, tiny_network
) -> None:
    from tsp_cli.pipeline.events import ClipProgress

    broken = tmp_path / "in" / "z.mp4"
    make_video(broken, frames=90, fps=30)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size * 2 // 3])  # breaks mid-stream
    events = []
    jobs = [*jobs_of(videos), VideoJob(broken, "z")]
    summary = run(jobs, tmp_path / "out", tiny_network, workers=0, batch_size=2, on_event=events.append)
    progress = [e for e in events if isinstance(e, ClipProgress)]
    # in-process decoding probes a, then b, ...: before any probe the four others are unknown
    assert progress[0].probed == 1 and progress[0].unprobed == 4 and progress[0].expected == 5
    assert progress[0].estimated_total == 5 + 4 * 5
    # computed clips rise batch by batch, never past what is expected
    computed = [p.computed for p in progress]
    assert computed == sorted(computed) and all(p.computed <= p.expected for p in progress)
    last = progress[-1]
    assert last.unprobed == 0 and last.computed == last.expected == last.estimated_total == summary.clips
    assert summary.failed == 1 and summary.clips >= 14


def test_each_record_holds_the_pixel_format_and_high_bit_depth_videos_are_listed(tmp_path: Path, tiny_network) -> None:
    eight = make_video(tmp_path / "in" / "eight.mp4", frames=40)
    ten = make_video(tmp_path / "in" / "ten.mkv", frames=40, codec="ffv1", pix_fmt="yuv420p10le")
    summary = run([VideoJob(eight, "eight"), VideoJob(ten, "ten")], tmp_path / "out", tiny_network)
    records = store.read_video_records(tmp_path / "out")
    assert {name: record["pixel_format"] for name, record in records.items()} == {
        "eight": "yuv420p",
        "ten": "yuv420p10le",
    }
    assert summary.high_bit_depth == [("ten", "yuv420p10le")]


def test_a_video_that_starts_late_fails_with_a_hint_as_its_pts_windows_imply(tmp_path: Path, tiny_network) -> None:
    # frames from 0.5 s on: clip 0's window [0, 1.07 s] holds 17 frames, fewer than the 31 it needs
    late = make_video(tmp_path / "late.mp4", timestamps=[0.5 + i / 30 for i in range(90)])
    summary = run([VideoJob(late, "late")], tmp_path / "out", tiny_network)
    assert summary.failed == 1 and "does not start at time 0" in summary.failures[0][1]


def test_two_processes_claiming_a_folder_with_different_settings_cannot_both_win(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from tsp_cli.pipeline import store
        from tsp_cli.errors import UsageError
        time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
        try:
            store.claim_output_folder(sys.argv[1], {"stride": int(sys.argv[2])}, {})
            print("claimed")
        except UsageError:
            print("refused")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        start = str(time.time() + 1.0)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(out), str(stride), start], env=env, stdout=subprocess.PIPE, text=True
            )
            for stride in (4, 16)
        ]
        answers = sorted(p.communicate()[0].strip() for p in processes)
        assert answers == ["claimed", "refused"]


def test_a_full_disk_stops_the_run_with_one_sentence_and_keeps_finished_videos(
    videos: Path, tmp_path: Path, tiny_network, monkeypatch
) -> None:
    import errno

    from tsp_cli.errors import OutputError

    real_save = store.save_features
    saved = []

    def save_until_full(out_dir, name, features):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(name)
        return real_save(out_dir, name, features)

    monkeypatch.setattr(store, "save_features", save_until_full)
    with pytest.raises(OutputError, match=r"Cannot write the output of .* \(No space left on device\); make room"):
        run(jobs_of(videos), tmp_path, tiny_network, workers=0, batch_size=1)
    assert [p.stem for p in tmp_path.glob("*.npy")] == saved
    # the features are written before the record, so no record claims the video whose write failed
    assert list(store.read_video_records(tmp_path)) == saved


def test_an_output_folder_that_cannot_be_created_is_refused_before_any_work(videos: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match=r"Cannot use the output folder .* is a file, not a folder"):
        extract_features([videos], blocker / "out", dry_run=True, device="cpu")


def test_a_refused_request_leaves_no_output_folder_behind(videos: Path, tmp_path: Path) -> None:
    from tsp_cli.errors import CheckpointError
    from tsp_cli.pipeline.extraction import ExtractionOptions, plan_extraction

    with pytest.raises(CheckpointError):
        extract_features([videos], tmp_path / "a" / "out", checkpoint=tmp_path / "missing.pth", device="cpu")
    with pytest.raises(UsageError):
        plan_extraction([tmp_path / "no-such-videos"], tmp_path / "b" / "out", ExtractionOptions(device="cpu"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stride", 0, "`stride` must be at least 1, not 0."),
        ("clip_len", 0, "`clip_len` must be at least 1, not 0."),
        ("frame_rate", 0.0, "`frame_rate` must be positive, not 0.0."),
        ("batch_size", 0, "`batch_size` must be at least 1, not 0."),
        ("workers", -1, "`workers` must be 0 or more, not -1."),
        ("precision", "fp8", "`precision` 'fp8' is not one of fp32, tf32, fp16, bf16."),
    ],
)
def test_planning_refuses_every_bad_number_naming_its_parameter(
    videos: Path, tmp_path: Path, field: str, value: object, message: str
) -> None:
    from tsp_cli.pipeline.extraction import ExtractionOptions, plan_extraction

    with pytest.raises(UsageError) as refused:
        plan_extraction([videos], tmp_path / "out", ExtractionOptions(device="cpu", **{field: value}))
    assert str(refused.value) == message and refused.value.parameter == field
    assert not (tmp_path / "out").exists()


def test_metadata_rows_without_a_usable_fps_or_frame_count_are_named(tmp_path: Path) -> None:
    make_video(tmp_path / "v" / "x.mp4", frames=5)
    csv = tmp_path / "bad.csv"
    csv.write_text(
        "filename,video-duration,fps,video-frames\nx.mp4,1.0,30.0,30\nx.mp4,1.0,,30\nx.mp4,1.0,thirty,30\nx.mp4,1,30,2.5\n"
    )
    with pytest.raises(
        UsageError, match=r"no usable fps or video-frames on line 3 \(x.mp4\), line 4 \(x.mp4\), line 5 \(x.mp4\)"
    ):
        collect_jobs([tmp_path / "v"], csv)


def test_records_and_manifest_name_their_times_alike_and_old_failure_records_still_read(
    videos: Path, tmp_path: Path, tiny_network
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    store.claim_output_folder(out, {"stride": 4}, {})
    store.record_video(out, {"video": "a"})
    store.record_failure(out, "b", "b.mp4", "broken")
    store.append_jsonl(out / store.FAILURES_NAME, {"video": "c", "path": "c.mp4", "error": "old", "time": 12.5})
    manifest = store.read_manifest(out)
    assert manifest is not None and isinstance(manifest["created_at"], float)
    assert isinstance(store.read_video_records(out)["a"]["finished_at"], float)
    failures = store.read_failures(out)
    assert isinstance(failures["b"]["failed_at"], float) and "time" not in failures["b"]
    assert failures["c"]["failed_at"] == 12.5  # written before the rename: still understood


def test_ffmpeg_threads_only_for_large_unsplit_videos_when_a_worker_would_idle() -> None:
    from fractions import Fraction

    from tsp_cli.pipeline.handoff import WorkList
    from tsp_cli.pipeline.video import VideoInfo
    from tsp_cli.pipeline.workers import SharedScheduler

    def info(width: int, height: int) -> VideoInfo:
        return VideoInfo(
            path=Path("v.mp4"),
            stream_index=0,
            fps=30.0,
            num_frames=300,
            time_base=Fraction(1, 30),
            width=width,
            height=height,
        )

    work = WorkList([0, 1], workers=2, paths=[Path("a.mp4"), Path("b.mp4")])
    scheduler = SharedScheduler(work, job=0)
    assert work.claim() == 0  # the other worker still has video 1 to claim: nobody idles
    assert scheduler.decoder_threads(info(1280, 720), segments=1) == 1
    assert work.claim() == 1  # the last video: one worker will find nothing to do
    assert scheduler.decoder_threads(info(1280, 720), segments=1) == 2
    assert scheduler.decoder_threads(info(640, 360), segments=1) == 2
    assert scheduler.decoder_threads(info(480, 360), segments=1) == 1  # measured no faster
    assert scheduler.decoder_threads(info(1280, 720), segments=3) == 1  # split: the idle worker takes segments
