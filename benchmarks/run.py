"""``make bench``: measure ``tsp extract`` against the decoding floor, the reference's per-clip
approach, its own memory on a short and a long video, and the network alone; print one table.

    python -m benchmarks.run                      # everything (about 10 minutes on 2 cores)
    python -m benchmarks.run --quick              # short videos, one repeat: a smoke run
    python -m benchmarks.run --only floor,dryrun  # parts: floor, dryrun, baseline, memory, e2e, network
    python -m benchmarks.run --sets small         # video sets: small (4 x 320x240), hd (1280x720)

Timings are medians over ``--repeat`` rounds, run round-robin (floor, start-up, dry runs, then
again) so that a burst of load from other processes spreads over all of them. The per-clip
baseline and the end-to-end runs are long and run ``--baseline-repeat``/``--e2e-repeat`` times.
Results: the table on stdout, ``OUT/results.json`` (every raw number) and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import torch

from benchmarks import baseline, e2e, floor, memory, network, pipeline, videos
from benchmarks.report import Row, as_markdown, as_text, at_least, at_most
from tsp_cli.parallel import available_cores
from tsp_cli.pipeline.sampling import ClipSettings, resampled_indices
from tsp_cli.pipeline.video import probe

PARTS = ("floor", "dryrun", "baseline", "memory", "e2e", "network", "onevideo", "pervideo")
SETS = ("small", "hd")
#: The targets for the 320x240 set (issue 5); the 720p set is reported, not targeted.
TARGETS = {
    16: {"vs_floor": 1.6, "speedup": 6.0},
    1: {"vs_floor": 3.0, "speedup": 50.0},
    "memory": 1.25,
    "e2e": 1.15,
    "hd": 1.3,
    "onevideo": 0.6,
    "pervideo_ms": 3.0,
}


@dataclass
class Config:
    quick: bool
    parts: tuple[str, ...]
    sets: tuple[str, ...]
    repeat: int
    baseline_repeat: int
    e2e_repeat: int
    workers: int
    out: Path
    strides: tuple[int, ...]
    memory_strides: tuple[int, ...]
    seconds: float
    memory_seconds: tuple[float, float]
    baseline_limits: dict[tuple[str, int], int | None]
    e2e_clips: int
    batch_size: int
    backbone: str


def parse(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="10 s videos (60 s for the long memory video), one repeat, few clips"
    )
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument(
        "--sets",
        default=",".join(SETS),
        help="comma-separated video sets: small (4 x 320x240, targeted), hd (1280x720, reported)",
    )
    parser.add_argument(
        "--repeat", type=int, help="rounds of floor, start-up and dry-run timings (median); default 3, 1 with --quick"
    )
    parser.add_argument("--baseline-repeat", type=int, default=1)
    parser.add_argument(
        "--e2e-repeat",
        type=int,
        help="runs of the end-to-end and network-alone timings (median); default 3, 1 with --quick",
    )
    parser.add_argument("--workers", type=int, default=2, help="decoding processes for every measurement (default 2)")
    parser.add_argument(
        "--baseline-clips",
        type=int,
        help="stride-1 baseline: clips actually run, evenly spaced, scaled to all (default 480 for 320x240, 48 for 720p)",
    )
    parser.add_argument("--e2e-clips", type=int, help="clips of the end-to-end run (default 64, 16 with --quick)")
    parser.add_argument(
        "--memory-strides",
        default="16",
        help="strides of the memory runs (default 16; 16,1 adds the slower dense runs)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    options = parser.parse_args(argv)
    parts = tuple(p for p in options.only.split(",") if p)
    sets = tuple(s for s in options.sets.split(",") if s)
    for name, given, known in (("--only", parts, PARTS), ("--sets", sets, SETS)):
        unknown = set(given) - set(known)
        if unknown:
            parser.error(f"{name}: unknown {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
    quick = options.quick
    small_limit = options.baseline_clips or (64 if quick else 480)
    hd_limit = options.baseline_clips or (16 if quick else 48)
    return Config(
        quick=quick,
        parts=parts,
        sets=sets,
        repeat=options.repeat or (1 if quick else 3),
        baseline_repeat=options.baseline_repeat,
        e2e_repeat=options.e2e_repeat or (1 if quick else 3),
        workers=options.workers,
        out=options.out,
        strides=(16, 1),
        memory_strides=tuple(int(x) for x in options.memory_strides.split(",") if x),
        seconds=10 if quick else 60,
        memory_seconds=(6, 60) if quick else (60, 600),
        baseline_limits={("small", 16): None, ("small", 1): small_limit, ("hd", 16): None, ("hd", 1): hd_limit},
        e2e_clips=options.e2e_clips or (16 if quick else 64),
        batch_size=32,
        backbone="r3d_18",
    )


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except (OSError, IndexError, ValueError):
        memory_gib = float("nan")
    return {
        "cpu": model,
        "cores_available": available_cores(),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "av": av.__version__,
        "platform": platform.platform(),
    }


def engine_revision() -> str:
    """Which engine was measured: the git commit of the ``tsp_cli`` imported, and its uncommitted files.

    A copy outside git (``git archive REV tsp_cli``, to measure a fixed commit while the tree
    changes) may carry its revision in an ``ENGINE_REVISION`` file beside ``tsp_cli/``.
    """
    import subprocess

    import tsp_cli

    root = Path(tsp_cli.__file__).resolve().parents[1]
    marker = root / "ENGINE_REVISION"
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "tsp_cli"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return f"{root} (not a git checkout)"
    changed = [line[3:] for line in changed if line.strip()]
    return f"{head}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else " (clean)")


def median(values: list[float]) -> float:
    return statistics.median(values)


class Series:
    """Repeated timings (dicts with ``seconds`` and maybe ``cpu_seconds``): their median and minimum."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __bool__(self) -> bool:
        return bool(self.samples)

    @property
    def median(self) -> float:
        return median([s["seconds"] for s in self.samples])

    @property
    def minimum(self) -> float:
        return min(s["seconds"] for s in self.samples)

    @property
    def cpu(self) -> float:
        values = [s["cpu_seconds"] for s in self.samples if s.get("cpu_seconds") is not None]
        return median(values) if values else float("nan")

    def text(self) -> str:
        return f"{self.median:.2f} s (min {self.minimum:.2f})"


class Bench:
    def __init__(self, config: Config):
        self.config = config
        self.folder = config.out / "videos"
        self.raw: dict = {}
        self.rows: list[Row | str] = []
        #: The torch threads the network parts must run with: no earlier part may leave fewer behind.
        self.torch_threads = torch.get_num_threads()

    # ---- inputs -------------------------------------------------------------------------
    def video_sets(self) -> dict[str, list[Path]]:
        c = self.config
        sets = {}
        if "small" in c.sets:
            sets["small"] = [videos.ensure(s, self.folder, log) for s in videos.small_set(c.seconds)]
        if "hd" in c.sets:
            sets["hd"] = [videos.ensure(s, self.folder, log) for s in videos.hd_videos(c.seconds / 3)]
        return sets

    def entry(self, name: str, paths: list[Path]) -> dict:
        """The raw results of one video set, created with its videos and frame count."""
        if name not in self.raw:
            self.raw[name] = {"videos": [p.name for p in paths], "frames": sum(probe(p).num_frames for p in paths)}
        return self.raw[name]

    def startup_set(self, count: int) -> list[Path]:
        return [videos.ensure(s, self.folder, log) for s in videos.startup_videos(count)]

    # ---- timing rounds: floor, start-up and dry runs -------------------------------------
    def timing_rounds(self, sets: dict[str, list[Path]]) -> None:
        c = self.config
        for name, paths in sets.items():
            self.entry(name, paths).update(
                {"floor": [], "startup": [], "dryrun": {s: [] for s in c.strides}, "clips": {}}
            )
        for round_ in range(c.repeat):
            for name, paths in sets.items():
                entry = self.raw[name]
                tag = f"{name}, round {round_ + 1}/{c.repeat}"
                if "floor" in c.parts:
                    seconds, frames, cpu = floor.measure_floor(paths, c.workers)
                    entry["floor"].append({"seconds": seconds, "cpu_seconds": cpu, "frames": frames})
                    log(f"{tag}: floor {seconds:.2f} s, CPU {cpu:.2f} s ({frames} frames)")
                    seconds, _, cpu = floor.measure_floor(paths, c.workers, with_pixels=True)
                    entry.setdefault("pixels", []).append({"seconds": seconds, "cpu_seconds": cpu})
                    log(f"{tag}: floor with the used frames' pixel work {seconds:.2f} s, CPU {cpu:.2f} s")
                if "dryrun" in c.parts:
                    starters = self.startup_set(min(len(paths), c.workers))
                    started = pipeline.run_extract(starters, stride=16, workers=c.workers)
                    started.pop("stdout")
                    entry["startup"].append(started)
                    log(f"{tag}: start-up {started['seconds']:.2f} s, CPU {started['cpu_seconds']:.2f} s")
                    split = pipeline.run_in_process(paths, stride=16, workers=c.workers)
                    entry.setdefault("split", []).append(split)
                    log(
                        f"{tag}: in-process stride 16: workers' CPU {split['workers_cpu_seconds']:.2f} s, "
                        f"main process's {split['main_cpu_seconds']:.2f} s"
                    )
                    for stride in c.strides:
                        run = pipeline.run_extract(paths, stride=stride, workers=c.workers)
                        run.pop("stdout")
                        entry["dryrun"][stride].append(run)
                        entry["clips"][stride] = run["engine_clips"]
                        log(
                            f"{tag}: dry run stride {stride} {run['seconds']:.2f} s, CPU {run['cpu_seconds']:.2f} s "
                            f"(engine: {run['engine_clips']} clips in {run['engine_seconds']} s)"
                        )

    def baselines(self, sets: dict[str, list[Path]]) -> None:
        c = self.config
        for name, paths in sets.items():
            entry = self.entry(name, paths).setdefault("baseline", {})
            for stride in c.strides:
                entry[stride] = []
                for _ in range(c.baseline_repeat):
                    result = baseline.measure_baseline(
                        paths,
                        ClipSettings(stride=stride),
                        workers=c.workers,
                        batch_size=c.batch_size,
                        limit=c.baseline_limits[name, stride],
                    )
                    entry[stride].append(result)
                    log(
                        f"{name}: per-clip baseline stride {stride}: {result['seconds']:.2f} s, CPU {result['cpu_seconds']:.2f} s "
                        f"for {result['clips_run']} of {result['clips_total']} clips -> {result['scaled_seconds']:.1f} s for all"
                    )

    # ---- memory ---------------------------------------------------------------------------
    def memory(self) -> None:
        c = self.config
        specs = videos.memory_pair(*c.memory_seconds)
        paths = [videos.ensure(s, self.folder, log) for s in specs]
        entry = self.raw.setdefault("memory", {"videos": [p.name for p in paths], "seconds": list(c.memory_seconds)})
        with tempfile.TemporaryDirectory(prefix="tsp-bench-") as out_dir:
            command = pipeline.tsp_command(self.startup_set(1), Path(out_dir), stride=16, workers=c.workers)
            entry["startup"] = memory.measure_peak(command, env=pipeline.child_env())
        log(
            f"memory, start-up only: peak RSS sum {entry['startup']['peak_rss_mib']:.0f} MiB, PSS sum {entry['startup']['peak_pss_mib']:.0f} MiB"
        )
        for stride in c.memory_strides:
            entry[stride] = {}
            for label, path in zip(("short", "long"), paths, strict=True):
                with tempfile.TemporaryDirectory(prefix="tsp-bench-") as out_dir:
                    command = pipeline.tsp_command([path], Path(out_dir), stride=stride, workers=c.workers)
                    result = memory.measure_peak(command, env=pipeline.child_env())
                entry[stride][label] = result
                log(
                    f"memory stride {stride}, {path.name}: peak RSS sum {result['peak_rss_mib']:.0f} MiB, "
                    f"PSS sum {result['peak_pss_mib']:.0f} MiB, {result['processes']} processes, {result['seconds']:.1f} s"
                )

    # ---- end to end ---------------------------------------------------------------------------
    def end_to_end(self) -> None:
        c = self.config
        spec = videos.small_set(c.seconds, count=1)[0]
        path = videos.ensure(spec, self.folder, log)
        info = probe(path)
        settings = ClipSettings()
        resampled = len(resampled_indices(info.fps, info.num_frames, settings.frame_rate))
        stride = e2e.stride_for_clips(resampled, settings.clip_len, c.e2e_clips)
        checkpoint = e2e.write_checkpoint(c.out / "checkpoints" / f"{c.backbone}-bench.pth", c.backbone)
        extra = ["--local", str(checkpoint), "--backbone", c.backbone, "--batch-size", str(c.batch_size)]
        starters = self.startup_set(1)
        entry = self.raw.setdefault(
            "e2e",
            {
                "video": path.name,
                "stride": stride,
                "backbone": c.backbone,
                "batch_size": c.batch_size,
                "workers": c.workers,
                "extract": [],
                "startup": [],
                "model_alone": [],
            },
        )
        for round_ in range(c.e2e_repeat):
            started = pipeline.run_extract(starters, stride=stride, workers=c.workers, extra=extra)
            started.pop("stdout")
            entry["startup"].append(started)
            run = pipeline.run_extract([path], stride=stride, workers=c.workers, extra=extra)
            run.pop("stdout")
            entry["extract"].append(run)
            entry["clips"] = run["engine_clips"]
            alone = e2e.model_alone_subprocess(checkpoint, c.backbone, run["engine_clips"], c.batch_size)
            entry["model_alone"].append(alone)
            entry["threads"] = alone["threads"]
            log(
                f"e2e round {round_ + 1}/{c.e2e_repeat}: extract {run['seconds']:.1f} s, CPU {run['cpu_seconds']:.1f} s "
                f"(start-up {started['seconds']:.1f} s, engine {run['engine_seconds']} s) for {run['engine_clips']} clips; "
                f"network alone {alone['seconds']:.1f} s, CPU {alone['cpu_seconds']:.1f} s"
            )

    # ---- the network alone per backbone, precision and layout; end to end against it (issue 18) ----
    def network(self) -> None:
        c = self.config
        if torch.get_num_threads() != self.torch_threads:
            raise RuntimeError(
                f"an earlier part left torch on {torch.get_num_threads()} thread(s) instead of {self.torch_threads}: "
                "the network rows would measure that, not this machine"
            )
        backbones = ["r3d_18"] if c.quick else ["r2plus1d_34", "r3d_18"]
        precisions = ["fp32", "bf16"]
        rows = network.network_rows(
            torch.device("cpu"), backbones, precisions, ["ncdhw", "channels_last_3d"], 8, c.e2e_repeat
        )
        log(
            "network alone: "
            + ", ".join(
                f"{r['backbone']} {r['precision']} {r['memory_format']} {r['clips_per_second']:.2f} clips/s"
                for r in rows
            )
        )
        runs = [
            network.end_to_end(
                "cpu",
                backbones[0],
                precision,
                clips=4 if c.quick else 16,
                batch_size=8,
                workers=c.workers,
                folder=c.out,
                repeats=c.e2e_repeat,
            )
            for precision in precisions
        ]
        log("end to end: " + ", ".join(f"{r['precision']} {r['clips_per_second']:.2f} clips/s" for r in runs))
        self.raw["network"] = {"rows": rows, "e2e": runs}

    # ---- one video over the workers, and the per-video overhead ---------------------------------
    def one_video(self) -> None:
        """One 120 s video, dry run at stride 16, with 1 worker and with ``workers`` (start-up subtracted)."""
        c = self.config
        path = videos.ensure(videos.long_video(c.seconds * 2), self.folder, log)
        entry = self.raw.setdefault("onevideo", {"video": path.name, "runs": {1: [], c.workers: []}, "startup": {}})
        for round_ in range(c.repeat):
            for workers in (1, c.workers):
                started = pipeline.run_extract(self.startup_set(1), stride=16, workers=workers)
                run = pipeline.run_extract([path], stride=16, workers=workers)
                run.pop("stdout"), started.pop("stdout")
                entry["startup"].setdefault(workers, []).append(started)
                entry["runs"][workers].append(run)
                log(
                    f"one video, round {round_ + 1}: {workers} worker(s) {run['seconds']:.2f} s, CPU {run['cpu_seconds']:.2f} s "
                    f"(start-up {started['seconds']:.2f} s)"
                )

    def per_video(self) -> None:
        """``count`` one-clip videos: the dry run's time beyond the floor on the same files, per video."""
        c = self.config
        count = 200 if c.quick else 2000
        paths = videos.tiny_copies(count, self.folder, log)
        entry = self.raw.setdefault(
            "pervideo", {"videos": count, "floor": [], "pixels": [], "dryrun": [], "startup": []}
        )
        for round_ in range(c.repeat):
            seconds, frames, cpu = floor.measure_floor(paths, c.workers)
            entry["floor"].append({"seconds": seconds, "cpu_seconds": cpu, "frames": frames})
            pixel_seconds, _, pixel_cpu = floor.measure_floor(paths, c.workers, with_pixels=True)
            entry["pixels"].append({"seconds": pixel_seconds, "cpu_seconds": pixel_cpu, "frames": frames})
            started = pipeline.run_extract(self.startup_set(c.workers), stride=16, workers=c.workers)
            started.pop("stdout")
            entry["startup"].append(started)
            with tempfile.TemporaryDirectory(prefix="tsp-bench-") as folder:
                listing = Path(folder) / "videos"
                listing.mkdir()
                for path in paths:  # one folder argument instead of 2,000 on the command line
                    (listing / path.name).symlink_to(path.resolve())
                run = pipeline.run_extract([listing], stride=16, workers=c.workers)
            run.pop("stdout")
            entry["dryrun"].append(run)
            log(
                f"per video, round {round_ + 1}: floor {seconds:.2f} s (CPU {cpu:.2f}), with the used frames' RGB and "
                f"transform {pixel_seconds:.2f} s (CPU {pixel_cpu:.2f}), dry run {run['seconds']:.2f} s "
                f"(CPU {run['cpu_seconds']:.2f}), start-up {started['seconds']:.2f} s (CPU {started['cpu_seconds']:.2f})"
            )

    def _one_video_rows(self, entry: dict) -> None:
        c = self.config
        self.rows.append(f"one {c.seconds * 2:g} s 320x240 video, stride 16, dry run, start-up subtracted")
        less = {}
        for workers, runs in entry["runs"].items():
            runs_s, start = Series(runs), Series(entry["startup"][workers])
            less[workers] = runs_s.median - start.median
            self.rows.append(
                Row(
                    f"{workers} worker(s)",
                    f"{less[workers]:.2f} s (min {runs_s.minimum - start.minimum:.2f})",
                    f"{runs_s.cpu - start.cpu:.2f} s",
                )
            )
        one, many = list(less)
        ratio = less[many] / less[one]
        text, target, result = at_most(ratio, TARGETS["onevideo"])
        self.rows.append(
            Row(
                f"{many} workers vs 1",
                f"{less[many]:.2f} s",
                "",
                f"1 worker {less[one]:.2f} s",
                text,
                target,
                result,
                ratio,
                TARGETS["onevideo"],
            )
        )

    def _per_video_rows(self, entry: dict) -> None:
        count = entry["videos"]
        floor_s, runs, start = Series(entry["floor"]), Series(entry["dryrun"]), Series(entry["startup"])
        self.rows.append(
            f"{count} one-clip videos (copies of one file: 17 frames of 320x240 at 15 fps), {self.config.workers} workers"
        )
        self.rows.append(Row("floor: decode every frame once", floor_s.text(), f"{floor_s.cpu:.2f} s"))
        less = runs.median - start.median
        cpu_less = runs.cpu - start.cpu
        self.rows.append(Row("dry run, less start-up", f"{less:.2f} s", f"{cpu_less:.2f} s"))
        self.rows.append(
            Row(
                "cost per video beyond decoding (CPU, includes the used frames' RGB + transform)",
                f"{(less - floor_s.median) / count * 1000:.2f} ms wall",
                f"{(cpu_less - floor_s.cpu) / count * 1000:.2f} ms",
            )
        )
        if not entry.get("pixels"):  # results from before the pixel floor existed
            return
        pixels_s = Series(entry["pixels"])
        self.rows.append(
            Row(
                "floor + the recipe's RGB and transform of the frames clips use",
                pixels_s.text(),
                f"{pixels_s.cpu:.2f} s",
            )
        )
        floor_s = pixels_s
        per_video = (cpu_less - floor_s.cpu) / count * 1000
        _, _, result = at_most(per_video, TARGETS["pervideo_ms"])
        text, target = f"{per_video:.2f} ms", f"<= {TARGETS['pervideo_ms']:g} ms"
        self.rows.append(
            Row(
                "fixed cost per video beyond decoding and pixels (CPU, workers + main)",
                f"{(less - floor_s.median) / count * 1000:.2f} ms wall",
                f"{per_video:.2f} ms",
                "",
                text,
                target,
                result,
                per_video,
                TARGETS["pervideo_ms"],
            )
        )

    # ---- the table ----------------------------------------------------------------------------
    def build_rows(self) -> None:
        for name in ("small", "hd"):
            if self.raw.get(name):
                self._set_rows(name, self.raw[name])
        if self.raw.get("memory"):
            self._memory_rows(self.raw["memory"])
        if self.raw.get("e2e"):
            self._e2e_rows(self.raw["e2e"])
        if self.raw.get("network"):
            self.rows += network.table_rows(self.raw["network"]["rows"], self.raw["network"]["e2e"])
        if self.raw.get("onevideo"):
            self._one_video_rows(self.raw["onevideo"])
        if self.raw.get("pervideo"):
            self._per_video_rows(self.raw["pervideo"])

    def _set_rows(self, name: str, entry: dict) -> None:
        c = self.config
        targeted = name == "small"
        count = len(entry["videos"])
        what = f"{count} x 320x240" if targeted else f"{count} x 1280x720"
        seconds = c.seconds if targeted else c.seconds / 3
        self.rows.append(
            f"{what}, {seconds:g} s each at 30 fps, {entry['frames']} frames, {c.workers} workers"
            + ("" if targeted else " (stride 16 targeted)")
        )
        floor_s = Series(entry.get("floor", []))
        startup = Series(entry.get("startup", []))
        if floor_s:
            self.rows.append(
                Row(
                    f"floor: decode every frame once, {min(c.workers, count)} process(es), 1 thread each",
                    floor_s.text(),
                    cpu=f"{floor_s.cpu:.2f} s",
                )
            )
        pixels = Series(entry.get("pixels", []))
        if floor_s and pixels:
            self.rows.append(
                Row(
                    "floor + the recipe's RGB, gather and blend of the frames clips use (stride 16)",
                    pixels.text(),
                    f"{pixels.cpu:.2f} s ({pixels.cpu / floor_s.cpu:.1f}x)",
                    f"floor {floor_s.median:.2f} s",
                    f"{pixels.median / floor_s.median:.2f}x",
                    ratio_value=pixels.median / floor_s.median,
                )
            )
        if startup:
            self.rows.append(
                Row(
                    "tsp start-up (same command on videos shorter than a clip)",
                    startup.text(),
                    cpu=f"{startup.cpu:.2f} s",
                )
            )
        for stride in c.strides:
            runs = Series(entry.get("dryrun", {}).get(stride, []))
            pipeline_s = pipeline_cpu = None
            if runs:
                clips = entry["clips"].get(stride)
                pipeline_s = runs.median - startup.median if startup else runs.median
                pipeline_min = runs.minimum - startup.minimum if startup else runs.minimum
                pipeline_cpu = runs.cpu - startup.cpu if startup else runs.cpu
                label = (
                    f"dry run, stride {stride} ({clips} clips), less start-up"
                    if startup
                    else f"dry run, stride {stride} ({clips} clips)"
                )
                value = f"{pipeline_s:.2f} s (min {pipeline_min:.2f})"
                if floor_s:
                    ratio = pipeline_s / floor_s.median
                    cpu = f"{pipeline_cpu:.2f} s ({pipeline_cpu / floor_s.cpu:.1f}x)"
                    if targeted:
                        limit = TARGETS[stride]["vs_floor"]
                        text, target, result = at_most(ratio, limit)
                        self.rows.append(
                            Row(label, value, cpu, f"floor {floor_s.median:.2f} s", text, target, result, ratio, limit)
                        )
                    elif stride == 16:
                        text, target, result = at_most(ratio, TARGETS["hd"])
                        self.rows.append(
                            Row(
                                label,
                                value,
                                cpu,
                                f"floor {floor_s.median:.2f} s",
                                text,
                                target,
                                result,
                                ratio,
                                TARGETS["hd"],
                            )
                        )
                    else:
                        self.rows.append(
                            Row(label, value, cpu, f"floor {floor_s.median:.2f} s", f"{ratio:.2f}x", ratio_value=ratio)
                        )
                    if stride == 16 and pixels:
                        self.rows.append(
                            Row(
                                "dry run, stride 16, less start-up, against the floor with the pixel work",
                                f"{pipeline_s:.2f} s",
                                f"{pipeline_cpu / pixels.cpu:.2f}x",
                                f"floor + pixels {pixels.median:.2f} s",
                                f"{pipeline_s / pixels.median:.2f}x",
                                ratio_value=pipeline_s / pixels.median,
                            )
                        )
                    self.rows.append(
                        Row(
                            f"dry run, stride {stride}, with start-up",
                            runs.text(),
                            f"{runs.cpu:.2f} s",
                            f"floor {floor_s.median:.2f} s",
                            f"{runs.median / floor_s.median:.2f}x",
                            ratio_value=runs.median / floor_s.median,
                        )
                    )
                    own = Series(
                        [
                            {"seconds": r["engine_seconds"]}
                            for r in entry["dryrun"][stride]
                            if r.get("engine_seconds") is not None
                        ]
                    )
                    if own:
                        self.rows.append(
                            Row(
                                f"dry run, stride {stride}, the engine's own clock (run_jobs)",
                                own.text(),
                                "",
                                f"floor {floor_s.median:.2f} s",
                                f"{own.median / floor_s.median:.2f}x",
                                ratio_value=own.median / floor_s.median,
                            )
                        )
                else:
                    self.rows.append(Row(label, value, f"{pipeline_cpu:.2f} s"))
            base = entry.get("baseline", {}).get(stride)
            if base:
                scaled = Series(
                    [{"seconds": b["scaled_seconds"], "cpu_seconds": b["scaled_cpu_seconds"]} for b in base]
                )
                first = base[0]
                note = (
                    "all clips"
                    if first["clips_run"] == first["clips_total"]
                    else (
                        f"{first['clips_run']} of {first['clips_total']} clips evenly spaced, scaled x{first['clips_total'] / first['clips_run']:.2f}"
                    )
                )
                cpu = f"{scaled.cpu:.1f} s" + (f" ({scaled.cpu / floor_s.cpu:.0f}x)" if floor_s else "")
                self.rows.append(Row(f"per-clip baseline, stride {stride} ({note})", scaled.text(), cpu))
                if pipeline_s:
                    speedup = scaled.median / pipeline_s
                    label = f"dry run stride {stride} speed-up over per-clip"
                    cpu = f"{scaled.cpu / pipeline_cpu:.1f}x less" if pipeline_cpu else ""
                    if targeted:
                        limit = TARGETS[stride]["speedup"]
                        text, target, result = at_least(speedup, limit)
                        self.rows.append(
                            Row(
                                label,
                                f"{pipeline_s:.2f} s",
                                cpu,
                                f"baseline {scaled.median:.2f} s",
                                text,
                                target,
                                result,
                                speedup,
                                limit,
                            )
                        )
                    else:
                        self.rows.append(
                            Row(
                                label,
                                f"{pipeline_s:.2f} s",
                                cpu,
                                f"baseline {scaled.median:.2f} s",
                                f"{speedup:.1f}x faster",
                                ratio_value=speedup,
                            )
                        )
        self._split_rows(entry, floor_s)

    def _split_rows(self, entry: dict, floor_s: Series) -> None:
        """Stride 16 run in-process: what the decoding workers spend, apart from the main process."""
        split = entry.get("split")
        if not split:
            return
        workers_cpu = median([s["workers_cpu_seconds"] for s in split])
        main_cpu = median([s["main_cpu_seconds"] for s in split])
        versus = f" ({workers_cpu / floor_s.cpu:.2f}x)" if floor_s else ""
        self.rows.append(
            Row(
                "stride 16 in-process (run_jobs): decoding workers' CPU (decode, RGB, gather taps)",
                "",
                f"{workers_cpu:.2f} s{versus}",
                f"floor CPU {floor_s.cpu:.2f} s" if floor_s else "",
                f"{workers_cpu / floor_s.cpu:.2f}x" if floor_s else "",
            )
        )
        self.rows.append(
            Row(
                "stride 16 in-process: main process's CPU (blend taps, batches; the GPU's work in a real run)",
                "",
                f"{main_cpu:.2f} s",
            )
        )

    def _memory_rows(self, mem: dict) -> None:
        c = self.config
        short_s, long_s = mem["seconds"]
        self.rows.append(
            f"peak memory of tsp extract --dry-run, 320x240, {c.workers} workers: RSS summed over the process tree (PSS sum)"
        )
        if "startup" in mem:
            base = mem["startup"]
            self.rows.append(
                Row(
                    "start-up only (a video shorter than a clip): imports, 1 worker",
                    f"{base['peak_rss_mib']:.0f} MiB (PSS {base['peak_pss_mib']:.0f})",
                )
            )
        for stride in c.memory_strides:
            if stride not in mem:
                continue
            short, long = mem[stride]["short"], mem[stride]["long"]
            self.rows.append(
                Row(
                    f"stride {stride}, {short_s:g} s video",
                    f"{short['peak_rss_mib']:.0f} MiB (PSS {short['peak_pss_mib']:.0f})",
                )
            )
            ratio = long["peak_rss_mib"] / short["peak_rss_mib"]
            text, target, result = at_most(ratio, TARGETS["memory"])
            self.rows.append(
                Row(
                    f"stride {stride}, {long_s:g} s video",
                    f"{long['peak_rss_mib']:.0f} MiB (PSS {long['peak_pss_mib']:.0f})",
                    "",
                    f"{short_s:g} s video",
                    text,
                    target,
                    result,
                    ratio,
                    TARGETS["memory"],
                )
            )

    def _e2e_rows(self, run: dict) -> None:
        alone = Series(run["model_alone"])
        startup = Series(run["startup"])
        extract = Series(run["extract"])
        self.rows.append(
            f"end to end on CPU: {run['backbone']}, {run['clips']} clips (stride {run['stride']}), batch {run['batch_size']}, "
            f"{run['workers']} workers, {run['threads']} torch threads"
        )
        self.rows.append(Row("network alone: same batches, random input", alone.text(), f"{alone.cpu:.1f} s"))
        # Each round runs start-up, extraction and the network alone back to back; the ratio is the
        # median of the rounds' own ratios, which a burst of load in one round moves less.
        paired = median(
            [
                (e["seconds"] - s["seconds"]) / a["seconds"]
                for e, s, a in zip(run["extract"], run["startup"], run["model_alone"], strict=True)
            ]
        )
        less = extract.median - startup.median
        text, target, result = at_most(paired, TARGETS["e2e"])
        cpu = extract.cpu - startup.cpu
        self.rows.append(
            Row(
                "tsp extract, less start-up (ratio: median of paired rounds)",
                f"{less:.2f} s (min {extract.minimum - startup.minimum:.2f})",
                f"{cpu:.1f} s ({cpu / alone.cpu:.2f}x)",
                f"network alone {alone.median:.2f} s",
                text,
                target,
                result,
                paired,
                TARGETS["e2e"],
            )
        )
        self.rows.append(
            Row(
                "tsp extract, with start-up",
                extract.text(),
                f"{extract.cpu:.1f} s",
                f"network alone {alone.median:.2f} s",
                f"{extract.median / alone.median:.2f}x",
                ratio_value=extract.median / alone.median,
            )
        )

    def notes(self, started: float, load_before: tuple, load_after: tuple) -> list[str]:
        c = self.config
        notes = [
            f"Timings: median (and minimum) of {c.repeat} round-robin rounds (floor, start-up, dry runs); per-clip baseline: {c.baseline_repeat} run(s); "
            f"end to end and network alone: {c.e2e_repeat} run(s).",
            "Start-up is the same `python -m tsp_cli extract ...` command on videos shorter than one clip (as many as the run starts "
            "workers for): interpreter, imports, worker start and shutdown; 'less start-up' subtracts its median.",
            "The floor decodes with one FFmpeg thread per process (as tsp's workers do while all are busy) and no colour conversion; the per-clip baseline re-creates "
            "torchvision's read_video per clip (seek, decode, to RGB) and the reference's float transform, in a DataLoader with "
            f"{c.workers} workers and batch {c.batch_size}.",
            "CPU: user + system seconds of the whole process tree (from the rusage of reaped children), which other load on the "
            "machine hardly changes, unlike wall time; '(Nx)' is its ratio to the floor's CPU seconds (end to end: to the "
            "network's own CPU seconds).",
            "Memory: VmRSS summed over the process and its children, polled every 20 ms (shared library pages counted once per process); "
            "PSS (shared pages split) in brackets.",
            f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
            f"{', '.join(f'{x:.2f}' for x in load_after)}. Whole run: {time.perf_counter() - started:.0f} s.",
        ]
        if c.quick:
            notes.insert(0, "QUICK RUN: short videos, one repeat: a smoke run, not the figures to quote.")
        return notes


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()
    config.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(config)
    info = machine()
    info["engine"] = engine_revision()
    log(f"machine: {info['cpu']}, {info['cores_available']} cores, {info['memory_gib']} GiB; load {load_before[0]:.2f}")
    sets = bench.video_sets() if {"floor", "dryrun", "baseline"} & set(config.parts) else {}
    if {"floor", "dryrun"} & set(config.parts):
        bench.timing_rounds(sets)
    if "baseline" in config.parts:
        bench.baselines(sets)
    if "memory" in config.parts:
        bench.memory()
    if "e2e" in config.parts:
        bench.end_to_end()
    if "network" in config.parts:
        bench.network()
    if "onevideo" in config.parts:
        bench.one_video()
    if "pervideo" in config.parts:
        bench.per_video()
    bench.build_rows()
    load_after = os.getloadavg()
    notes = bench.notes(started, load_before, load_after)
    header = (
        f"Machine: {info['cpu']}, {info['cores_available']} cores available, {info['memory_gib']} GiB; Python {info['python']}, "
        f"torch {info['torch']} ({info['torch_threads']} threads), PyAV {info['av']}. Engine: tsp_cli at {info['engine']}."
    )
    print()
    print(header)
    print(as_text(bench.rows))
    print()
    for note in notes:
        print(f"- {note}")
    (config.out / "results.md").write_text(
        f"{header}\n\n{as_markdown(bench.rows)}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n", encoding="utf-8"
    )
    results = {
        "machine": info,
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items() if k != "baseline_limits"
        },
        "baseline_limits": {f"{k[0]}/stride{k[1]}": v for k, v in config.baseline_limits.items()},
        "load_average": {"before": load_before, "after": load_after},
        "raw": bench.raw,
        "rows": [r.as_dict() if isinstance(r, Row) else {"section": r} for r in bench.rows],
        "notes": notes,
    }
    (config.out / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    log(f"wrote {config.out / 'results.json'} and {config.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
