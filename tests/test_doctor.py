"""``tsp doctor``: every section, the known answer reproduced on this CPU, exit 1 when it is not, exit 2 for no device.

The throughput part is shrunk (one small clip batch, a tiny matmul, one short video); the
known-answer check runs for real (4 clips of R(2+1)D-18), so those tests are marked slow.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tsp_cli.cli.app import app
from tsp_cli.doctor import Timing, known_answer, run_doctor, throughput
from tsp_cli.pipeline import host_memory
from tsp_cli.pipeline.precision import DEVIATION_BOUNDS

TINY = partial(Timing, batch_size=1, repeats=1, matmul_size=256, matmul_repeats=2, videos=((64, 48, 40),))
SECTIONS = {"versions", "device", "precision", "tf32", "cpu_flags", "known_answer", "throughput", "suggestions", "ok"}


@pytest.fixture(scope="module")
def report() -> dict:
    """One whole doctor run on this CPU, at bf16 (so the known answer runs at fp32 and at bf16)."""
    return run_doctor("cpu", "bf16", timing=TINY())


@pytest.mark.slow
def test_the_report_has_every_section_and_this_cpu_reproduces_the_known_answer(report: dict) -> None:
    assert set(report) >= SECTIONS and report["ok"] is True
    versions = report["versions"]
    assert {"tsp", "python", "torch", "cuda", "cudnn", "torchvision", "av", "ffmpeg", "h5py"} <= set(versions)
    assert report["device"]["device"] == "cpu" and report["device"]["cores_available"] >= 1
    assert report["device"]["freed_memory"] == host_memory.allocator_state()
    assert set(report["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16"}
    assert report["tf32"] == {"convolutions": "ieee", "matmuls": "ieee"}
    fp32, bf16 = report["known_answer"]
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16") and fp32["clips"] == 4
    assert 0 <= fp32["error"] < DEVIATION_BOUNDS["fp32"] == 1e-4 and fp32["ok"]
    assert fp32["error"] < bf16["error"] <= DEVIATION_BOUNDS["bf16"] and bf16["ok"]


@pytest.mark.slow
def test_the_throughput_section_measures_decoding_the_network_and_the_matmul_peak(report: dict) -> None:
    decoding = report["throughput"]["decoding"]
    assert [row["size"] for row in decoding] == ["64x48"]
    assert decoding[0]["frames_per_second"] > 0 and decoding[0]["clips_per_second"] == pytest.approx(
        decoding[0]["frames_per_second"] / 32
    )
    network = report["throughput"]["network"]
    assert network["gflop_per_clip"]["r3d_18"] == pytest.approx(81.4, rel=0.01)
    assert network["gflop_per_clip"]["r2plus1d_34"] == pytest.approx(152.4, rel=0.01)
    rows = {row["precision"]: row for row in network["rows"]}
    assert set(rows) == {"fp32", "bf16"}  # on a CPU, TF32 is fp32 and fp16 is emulated
    for row in rows.values():
        assert row["memory_format"] == "channels_last_3d" and row["clips_per_second"] > 0
        assert row["gflops"] == pytest.approx(row["clips_per_second"] * network["gflop_per_clip"]["r3d_18"])
        assert row["share_of_peak"] == pytest.approx(row["gflops"] / row["matmul_peak_gflops"])
        estimate = row["estimated_clips_per_second"]["r2plus1d_34"]
        assert estimate == pytest.approx(row["gflops"] / network["gflop_per_clip"]["r2plus1d_34"])
    suggested = report["suggestions"]
    assert suggested["precision"] in ("fp32", "bf16") and suggested["shares_cores"] is True
    assert set(suggested["bound_by"]) == {"64x48"} and suggested["workers"]["64x48"] >= 1


def test_suggestions_pick_bf16_only_when_it_is_much_faster_and_workers_to_feed_the_network() -> None:
    def network(fp32: float, bf16: float) -> dict:
        rows = [
            {"precision": p, "memory_format": "channels_last_3d", "estimated_clips_per_second": {"r2plus1d_34": v}}
            for p, v in (("fp32", fp32), ("bf16", bf16))
        ]
        return {"rows": rows}

    decoding = [{"size": "320x240", "clips_per_second": 10.0}, {"size": "1280x720", "clips_per_second": 1.0}]
    cpu = torch.device("cpu")
    fast = throughput.suggestions(cpu, decoding, network(2.0, 6.0), workers=2, cores=8)
    assert fast["precision"] == "bf16" and fast["precision_speedup"] == pytest.approx(3.0)
    assert fast["bound_by"] == {"320x240": "network", "1280x720": "decoding"}
    assert fast["workers"] == {"320x240": 1, "1280x720": 8}  # ceil(1.2 x 6 / 1) = 8, capped at the 8 cores
    slow = throughput.suggestions(cpu, decoding, network(2.0, 2.5), workers=2, cores=4)
    assert slow["precision"] == "fp32" and slow["workers"] == {"320x240": 1, "1280x720": 3}


def test_the_seeded_checkpoint_does_not_depend_on_torchs_random_state() -> None:
    torch.manual_seed(1)
    first = known_answer.seeded_state("r3d_18", 18)
    torch.manual_seed(2)
    second = known_answer.seeded_state("r3d_18", 18)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    other = known_answer.seeded_state("r3d_18", 19)
    assert not torch.equal(first["stem.0.weight"], other["stem.0.weight"])
    bn = first["layer1.0.conv1.1.running_var"]
    assert bn.min() >= 0.8 and bn.max() < 1.6


@pytest.mark.slow
def test_the_cli_prints_json_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["doctor", "--device", "cpu", "--json", "--no-throughput"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert SECTIONS - {"throughput", "suggestions"} == set(report) - {"seconds"} and report["ok"] is True
    assert len(report["known_answer"]) == 1


@pytest.mark.slow
def test_the_table_names_every_section(report: dict, capsys: pytest.CaptureFixture) -> None:
    from tsp_cli.cli import doctor

    doctor._render(report)
    text = capsys.readouterr().out
    for heading in ("Versions", "Device", "Known answer", "Decoding", "Network alone", "Suggested", "OK"):
        assert heading in text
    assert "fp32: 4 clips of known-answer.mp4" in text and "tolerance 0.0001" in text


def corrupted_answer(tmp_path: Path, change) -> Path:
    folder = tmp_path / "answer"
    shutil.copytree(known_answer.asset_folder(), folder)
    change(folder)
    return folder


@pytest.mark.slow
def test_a_known_answer_this_machine_does_not_reproduce_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nudge(folder: Path) -> None:
        features = np.load(folder / "known-answer.npy")
        features[2, 7] += 1e-3 * np.abs(features - features.mean(axis=0)).max()  # a 1e-3 parity error
        np.save(folder / "known-answer.npy", features)

    folder = corrupted_answer(tmp_path, nudge)
    monkeypatch.setattr(known_answer, "asset_folder", lambda: folder)
    result = CliRunner().invoke(app, ["doctor", "--device", "cpu", "--no-throughput"])
    assert result.exit_code == 1, result.output
    assert "does NOT match" in result.stdout and "MISMATCH" in result.stdout
    assert "attach `tsp doctor --json` to a bug report" in result.stderr


def test_a_missing_known_answer_says_to_reinstall_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = corrupted_answer(tmp_path, lambda folder: (folder / "known-answer.npy").unlink())
    monkeypatch.setattr(known_answer, "asset_folder", lambda: folder)
    result = CliRunner().invoke(app, ["doctor", "--device", "cpu", "--no-throughput", "--json"])
    assert result.exit_code == 1
    (only,) = json.loads(result.stdout)["known_answer"]
    assert only["ok"] is False and "reinstall tsp" in only["problem"]


def test_a_device_that_is_not_there_exits_2_with_one_sentence() -> None:
    result = CliRunner().invoke(app, ["doctor", "--device", "cuda:99"])
    assert result.exit_code == 2
    assert "Error:" in result.stderr and "Traceback" not in result.output
