"""``make bench-scale``: what the steps around extraction cost at Kinetics scale (issue 13).

    python -m benchmarks.scale                                  # N = 2k and 20k; planning from a 650k-row CSV
    python -m benchmarks.scale --sizes 2000 --plan-rows 20000   # a quick run
    python -m benchmarks.scale --before /tmp/tsp-before         # the same figures for another tree, side by side
    python -m benchmarks.scale --only hdf5 --hdf5-sizes 100000,650000   # HDF5 root groups at scale (long)

Everything is generated under ``--work`` (reused between runs): a tree of empty video files in
400 class folders with its metadata CSV (planning only lists and checks files, so they need not
decode), and fake finished output folders (tiny ``.npy`` features, ``videos.jsonl`` records of
1,000 shards). Each figure comes from a separate process, so each has its own CPU time (user +
system, from ``wait4``) and peak memory (maximum RSS); other processes on the machine share the
cores, so CPU time is the steadier figure. Parts:

- ``plan``: ``plan_extraction`` of shard 0/1000 and 999/1000 from the ``--plan-rows`` CSV, timed
  inside the process (planning only, start-up excluded), with its memory growth and the
  ``stat``-family system calls it makes (``strace -c``, start-up subtracted) when strace works.
- ``scan``: the same for a folder of N videos without a CSV.
- ``status``: ``tsp status OUT --metadata CSV --shards 1000`` over N videos (a tenth missing).
- ``inspect``: ``tsp inspect`` of a folder and of the merged file, ``--json`` and ``--json --all``.
- ``merge``: ``tsp merge`` of N tiny feature files.
- ``hdf5``: N datasets in one root group written as ``tsp merge`` writes them (without reading
  files), for the default and the newest (``libver="latest"``) file format: write time, file
  size, open time, reads of 2,000 random videos by name (after asking the kernel to drop the file
  from its page cache, ``POSIX_FADV_DONTNEED``), and iterating the root.

``--before TREE`` runs the same commands with another source tree first on ``PYTHONPATH`` (for
example ``git archive <commit> | tar -x -C /tmp/tsp-before``); options it lacks are skipped.
Results: the table on stdout and ``WORK/results-scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
PARTS = ("plan", "scan", "status", "inspect", "merge", "hdf5")
CLASSES = 400
SHARDS = 1000
STAT_CALLS = "stat,lstat,newfstatat,statx,fstatat64"


@dataclass
class Figure:
    part: str
    what: str
    tree: str
    videos: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    extra: dict

    def line(self) -> str:
        extra = " ".join(f"{key}={value}" for key, value in self.extra.items())
        return (
            f"| {self.part} | {self.what} | {self.tree} | {self.videos} | {self.wall_s:.2f} | {self.cpu_s:.2f} | "
            f"{self.max_rss_mb:.0f} | {extra} |"
        )


TABLE_HEADER = (
    "| part | measurement | tree | videos | wall s | CPU s | max RSS MB | other |\n|---|---|---|---|---|---|---|---|"
)


def report(figure: Figure) -> Figure:
    """Print each figure as soon as it is measured, on stderr: a long run shows its progress."""
    print(figure.line(), file=sys.stderr, flush=True)
    return figure


def measured(command: list[str], tree: Path, *, stdout=subprocess.DEVNULL) -> tuple[float, float, float, int]:
    """(wall s, CPU s, max RSS MB, exit code) of one process run with ``tree`` first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}
    started = time.perf_counter()
    # The working folder goes first on sys.path (python -c / -m): never a source tree's own folder.
    process = subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {error[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode


def tsp(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "tsp_cli", *map(str, arguments)]


# ---- generated inputs -------------------------------------------------------------------------


def video_tree(work: Path, rows: int) -> tuple[Path, Path]:
    """``rows`` empty video files in class folders and their metadata CSV (made once, then reused)."""
    folder, csv_path = work / f"videos-{rows}", work / f"videos-{rows}.csv"
    if csv_path.is_file():
        return folder, csv_path
    shutil.rmtree(folder, ignore_errors=True)
    lines = ["filename,video-duration,fps,video-frames"]
    for klass in range(CLASSES):
        (folder / f"class_{klass:03d}").mkdir(parents=True)
    for index in range(rows):
        name = f"class_{index % CLASSES:03d}/{index:07d}_000010_000020.mp4"
        os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))
        lines.append(f"{name},10.0,30.0,300")
    temp = csv_path.with_suffix(".tmp")
    temp.write_text("\n".join(lines) + "\n")
    temp.rename(csv_path)
    return folder, csv_path


def finished_folder(work: Path, count: int) -> tuple[Path, Path]:
    """An output folder of ``count`` finished videos of 1,000 shards (4 x 512 features each) and a
    CSV listing 10 % more videos, which are missing."""
    out, csv_path = work / f"out-{count}", work / f"out-{count}.csv"
    if csv_path.is_file():
        return out, csv_path
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    listed = count + count // 10
    edges = np.linspace(0, listed, SHARDS + 1).astype(int)
    shard_of = np.searchsorted(edges, np.arange(listed), side="right") - 1
    features = np.random.default_rng(0).random((4, 512), dtype=np.float32)
    now = time.time() - 3600
    records = []
    for index in range(count):
        name = f"v{index:07d}"
        np.save(out / f"{name}.npy", features)
        record = {"video": name, "clips": 4, "fps": 30.0, "num_frames": 64, "shard": f"{shard_of[index]}/{SHARDS}"}
        records.append(json.dumps({**record, "finished_at": now + index * 0.01}))
    (out / "videos.jsonl").write_text("\n".join(records) + "\n")
    manifest = {"settings": {"clip_len": 16, "frame_rate": 15.0, "stride": 16, "backbone": "r2plus1d_34"}}
    (out / "tsp-manifest.json").write_text(json.dumps(manifest))
    rows = [f"v{index:07d}.mp4,2.1,30.0,64" for index in range(listed)]
    csv_path.write_text("filename,video-duration,fps,video-frames\n" + "\n".join(rows) + "\n")
    return out, csv_path


# ---- planning ---------------------------------------------------------------------------------

PLAN_SNIPPET = r"""
import json, os, resource, sys, time
from tsp_cli.pipeline.extraction import ExtractionOptions, plan_extraction
from tsp_cli.pipeline.sharding import Shard
videos, out, metadata, index, count, plan = sys.argv[1:7]
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before, cpu, wall = rss_mb(), time.process_time(), time.perf_counter()
if plan == "0":  # the fixed costs only (device, output folder): one video, no CSV
    videos, metadata, index, count = os.path.join(os.path.dirname(out), "one-video"), "", "0", "1"
options = ExtractionOptions(metadata=metadata or None, shard=Shard(int(index), int(count)), device="cpu")
jobs = len(plan_extraction([videos], out, options).jobs)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"jobs": jobs, "cpu": cpu, "wall": wall, "growth_mb": max(0.0, peak - before)}))
"""


def stat_calls(arguments: list[str], tree: Path) -> int | None:
    """``stat``-family system calls of the planning snippet, minus those of planning one video."""
    if shutil.which("strace") is None:
        return None
    counts = []
    for plan in ("1", "0"):
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as trace:
            command = ["strace", "-f", "-c", "-o", trace.name, "-e", f"trace={STAT_CALLS}"]
            command += [sys.executable, "-c", PLAN_SNIPPET, *arguments[:-1], plan]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            if subprocess.run(command, env=env, capture_output=True, cwd=tempfile.gettempdir()).returncode != 0:
                return None
            total = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)", trace.read(), re.M)
            counts.append(int(total.group(1)) if total else 0)
    return counts[0] - counts[1]


def plan_figure(part: str, what: str, tree_name: str, tree: Path, arguments: list[str], videos: int) -> Figure:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    best = None
    for _ in range(3):  # best of three: planning is short, and other processes share the cores
        command = [sys.executable, "-c", PLAN_SNIPPET, *arguments]
        result = subprocess.run(command, env=env, capture_output=True, cwd=tempfile.gettempdir())
        if result.returncode != 0:
            raise RuntimeError(result.stderr.decode()[-2000:])
        figures = json.loads(result.stdout.decode().strip().splitlines()[-1])
        best = figures if best is None or figures["cpu"] < best["cpu"] else best
    extra = {"jobs": best["jobs"], "stat_calls": stat_calls(arguments, tree)}
    return report(Figure(part, what, tree_name, videos, best["wall"], best["cpu"], best["growth_mb"], extra))


def plan_part(work: Path, rows: int, trees: dict[str, Path]) -> list[Figure]:
    folder, csv_path = video_tree(work, rows)
    out = work / "plan-out"
    figures = []
    for index in (0, SHARDS - 1):
        for name, tree in trees.items():
            arguments = [str(folder), str(out), str(csv_path), str(index), str(SHARDS), "1"]
            what = f"plan shard {index}/{SHARDS} from a CSV (planning only; RSS = growth)"
            figures.append(plan_figure("plan", what, name, tree, arguments, rows))
    return figures


def scan_part(work: Path, sizes: list[int], trees: dict[str, Path]) -> list[Figure]:
    figures = []
    for size in sizes:
        folder, _ = video_tree(work, size)
        for name, tree in trees.items():
            arguments = [str(folder), str(work / "plan-out"), "", "0", str(SHARDS), "1"]
            what = f"plan shard 0/{SHARDS} from a folder scan (planning only; RSS = growth)"
            figures.append(plan_figure("scan", what, name, tree, arguments, size))
    return figures


# ---- status, inspect, merge -----------------------------------------------------------------


def command_figure(part: str, what: str, tree_name: str, tree: Path, command: list[str], videos: int) -> Figure:
    with tempfile.TemporaryFile() as output:
        wall, cpu, rss, code = measured(command, tree, stdout=output)
        size = output.tell()
    return report(
        Figure(part, what, tree_name, videos, wall, cpu, rss, {"exit": code, "stdout_kb": round(size / 1024)})
    )


def supports(tree: Path, command: str, option: str) -> bool:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        tsp(command, "--help"), env=environment, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    return option in result.stdout


def cli_parts(work: Path, sizes: list[int], trees: dict[str, Path], parts: set[str]) -> list[Figure]:
    figures = []
    for size in sizes:
        out, csv_path = finished_folder(work, size)
        merged = work / f"merged-{size}.h5"
        if "status" in parts:
            for name, tree in trees.items():
                command = tsp("status", out, "--metadata", csv_path, "--shards", SHARDS)
                figures.append(command_figure("status", f"status --shards {SHARDS}", name, tree, command, size))
        if "merge" in parts or not merged.exists():
            for name, tree in trees.items():
                command = tsp("merge", out, merged, "--overwrite")
                figures.append(command_figure("merge", "merge (4 x 512 per video)", name, tree, command, size))
        if "inspect" in parts:
            for name, tree in trees.items():
                runs = [("inspect folder", [out]), ("inspect h5", [merged]), ("inspect h5 --json", [merged, "--json"])]
                if supports(tree, "inspect", "--all"):
                    runs.append(("inspect h5 --json --all", [merged, "--json", "--all"]))
                for what, arguments in runs:
                    figures.append(command_figure("inspect", what, name, tree, tsp("inspect", *arguments), size))
    return figures


# ---- HDF5 root groups -------------------------------------------------------------------------

HDF5_SNIPPET = r"""
import json, os, random, resource, sys, time
import h5py, numpy as np
from tsp_cli.data.merge import _create_dataset
path, count, layout = sys.argv[1], int(sys.argv[2]), sys.argv[3]
options = {} if layout == "default" else {"libver": "latest"}
features = np.random.default_rng(0).random((4, 512), dtype=np.float32)
attributes = {"fps": 30.0, "num_frames": 64, "clip_len": 16, "frame_rate": 15.0, "stride": 16,
              "clip_start_times": np.arange(4) * 16 / 15}
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
wall, used = time.perf_counter(), cpu()
with h5py.File(path, "w", **options) as h5:
    for index in range(count):
        _create_dataset(h5, f"v{index:07d}", features, 1).attrs.update(attributes)
write = (time.perf_counter() - wall, cpu() - used)
names = [f"v{index:07d}" for index in random.Random(1).sample(range(count), min(count, 2000))]
os.posix_fadvise(os.open(path, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
wall, used = time.perf_counter(), cpu()
with h5py.File(path, "r") as h5:
    opened = time.perf_counter() - wall
    for name in names:
        h5[name][()]
read = (time.perf_counter() - wall, cpu() - used)
wall = time.perf_counter()
with h5py.File(path, "r") as h5:
    iterated = sum(1 for _ in h5)
iterate = time.perf_counter() - wall
print(json.dumps({"write_wall": write[0], "write_cpu": write[1], "size_mb": os.path.getsize(path) / 1e6,
                  "open_ms": opened * 1e3, "read_ms_each": read[0] / len(names) * 1e3,
                  "read_cpu_ms_each": read[1] / len(names) * 1e3, "iterate_s": iterate, "iterated": iterated}))
"""


def hdf5_part(work: Path, sizes: list[int], layouts: list[str], tree: Path) -> list[Figure]:
    figures = []
    for size in sizes:
        for layout in layouts:
            path = work / f"root-{layout}-{size}.h5"
            env = {**os.environ, "PYTHONPATH": str(tree)}
            command = [sys.executable, "-c", HDF5_SNIPPET, str(path), str(size), layout]
            with tempfile.TemporaryFile() as output:
                started = time.perf_counter()
                process = subprocess.Popen(command, env=env, stdout=output, cwd=tempfile.gettempdir())
                _, status, usage = os.wait4(process.pid, 0)
                if os.waitstatus_to_exitcode(status) != 0:
                    raise RuntimeError(f"the HDF5 measurement of {size} datasets failed")
                output.seek(0)
                result = json.loads(output.read().decode().strip().splitlines()[-1])
            path.unlink()
            extra = {
                "write_ms_per_video": round(result["write_wall"] / size * 1e3, 2),
                "write_cpu_ms_per_video": round(result["write_cpu"] / size * 1e3, 2),
                "size_mb": round(result["size_mb"]),
                "open_ms": round(result["open_ms"], 1),
                "read_ms_each": round(result["read_ms_each"], 2),
                "read_cpu_ms_each": round(result["read_cpu_ms_each"], 2),
                "iterate_s": round(result["iterate_s"], 2),
            }
            wall = time.perf_counter() - started
            cpu = usage.ru_utime + usage.ru_stime
            what = f"root group, {layout} format"
            figures.append(report(Figure("hdf5", what, "this", size, wall, cpu, usage.ru_maxrss / 1024, extra)))
    return figures


# ---- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,20000", help="videos in the status/inspect/merge/scan parts")
    parser.add_argument("--plan-rows", type=int, default=650_000, help="rows of the CSV of the plan part")
    parser.add_argument("--hdf5-sizes", default="2000,20000", help="datasets in the hdf5 part")
    parser.add_argument("--hdf5-layouts", default="default,latest", help="file formats of the hdf5 part")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--before", type=Path, help="another source tree to measure first (the 'before')")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tsp-bench-scale")
    options = parser.parse_args(argv)
    parts = set(options.only.split(","))
    sizes = [int(size) for size in options.sizes.split(",") if size]
    trees = {"before": options.before.resolve()} if options.before else {}
    trees["this"] = HERE
    options.work.mkdir(parents=True, exist_ok=True)
    (options.work / "one-video").mkdir(exist_ok=True)
    (options.work / "one-video" / "x.mp4").touch()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; work folder {options.work}")
    figures: list[Figure] = []
    if "plan" in parts:
        figures += plan_part(options.work, options.plan_rows, trees)
    if "scan" in parts:
        figures += scan_part(options.work, sizes, trees)
    if parts & {"status", "inspect", "merge"}:
        figures += cli_parts(options.work, sizes, trees, parts)
    if "hdf5" in parts:
        hdf5_sizes = [int(size) for size in options.hdf5_sizes.split(",") if size]
        figures += hdf5_part(options.work, hdf5_sizes, options.hdf5_layouts.split(","), HERE)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(TABLE_HEADER)
    for figure in figures:
        print(figure.line())
    (options.work / "results-scale.json").write_text(json.dumps([asdict(f) for f in figures], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
