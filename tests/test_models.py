"""``tsp models list|download|path`` and the core behind them (registry, weights, settings).

Every download goes to a real HTTP server on 127.0.0.1 (tests/helpers_http.py) or to a local
file; ``TSP_BASE_URL``, ``TSP_CACHE_DIR`` and ``TSP_MODELS_FILE`` point the code at them.
Released names cannot be served with their real bytes (we only know an 8-hex prefix of their
hash), so the success path uses models-file entries and the mismatch path uses released names.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pooch.downloaders
import pytest
from typer.testing import CliRunner

from tests.helpers import squeezed
from tests.helpers_http import FileServer, unused_port
from tsp_cli.cli.app import app
from tsp_cli.errors import DownloadError
from tsp_cli.models import cache as model_cache
from tsp_cli.models import registry

pytestmark = pytest.mark.timeout(60)

RELEASED_NAME = "r3d_18-tac_on_kinetics"
RELEASED_FILE = "r3d_18-tac_on_kinetics-dcd952c6.pth"
WEIGHTS = b"not really a checkpoint, but bytes with a known hash\n" * 100


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def assert_says(result, *fragments: str) -> None:
    for fragment in fragments:
        assert squeezed(fragment) in squeezed(result.output), result.output


def files_under(folder: Path) -> list[str]:
    """Every file left in ``folder`` (hidden staging files and sidecars included)."""
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def checkpoints_under(folder: Path) -> list[str]:
    """The files a user would take for checkpoints: not hidden, not sidecars."""
    return [name for name in files_under(folder) if not Path(name).name.startswith(".")]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of the test's own (conftest already removed every other TSP_* setting)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TSP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as running:
        yield running


@pytest.fixture
def models_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path):
    """Write a TSP_MODELS_FILE from ``{name: {field: value}}`` and point the variable at it."""
    path = tmp_path / "models.toml"
    monkeypatch.setenv("TSP_MODELS_FILE", str(path))

    def write(entries: dict[str, dict[str, str]]) -> Path:
        lines = []
        for name, fields in entries.items():
            lines.append(f"[models.{name}]")
            lines += [f"{field} = {json.dumps(value)}" for field, value in fields.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


def custom_entry(url: str, sha: str, backbone: str = "r2plus1d_18") -> dict[str, str]:
    return {"backbone": backbone, "url": url, "sha256": sha, "description": "A test checkpoint"}


def run(*args: str):
    return CliRunner().invoke(app, list(args))


# --- The registry as data ----------------------------------------------------------------------


def test_the_13_released_checkpoints_are_consistent_with_their_file_names() -> None:
    released = registry.RELEASED
    assert len(released) == 13
    assert len({checkpoint.name for checkpoint in released}) == 13
    assert registry.DEFAULT_CHECKPOINT == released[0].name == "r2plus1d_34-tsp_on_activitynet"
    for checkpoint in released:
        assert checkpoint.backbone in registry.BACKBONES
        assert checkpoint.name.startswith(checkpoint.backbone + "-")
        assert checkpoint.pretraining == checkpoint.name.split("-")[1][:3].upper()
        assert checkpoint.filename.startswith(checkpoint.name)
        assert checkpoint.filename.endswith(f"-{checkpoint.sha256}.pth") and len(checkpoint.sha256) == 8
        assert checkpoint.url == registry.RELEASE_BASE_URL + checkpoint.filename


def test_unknown_name_suggests_the_closest_ones_and_exits_2(cache: Path) -> None:
    result = run("models", "download", "r2plus1d_34-tsp_activitynet")
    assert result.exit_code == 2
    assert_says(result, "Unknown model 'r2plus1d_34-tsp_activitynet'", "did you mean 'r2plus1d_34-tsp_on_activitynet'")
    assert "Traceback" not in result.output


def test_an_unknown_name_stops_before_any_download(cache: Path, server: FileServer, models_file) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})
    result = run("models", "download", "mine", "no-such-model")
    assert result.exit_code == 2
    assert server.requests == []


@pytest.mark.parametrize("args", [[], ["--all", RELEASED_NAME]])
def test_download_needs_names_or_all_but_not_both(cache: Path, args: list[str]) -> None:
    result = run("models", "download", *args)
    assert result.exit_code == 2
    assert_says(result, "--all")


# --- Downloads that succeed --------------------------------------------------------------------


@pytest.mark.parametrize("hash_length", [64, 8, 12], ids=["full-sha256", "8-hex-prefix", "12-hex-prefix"])
def test_download_verifies_the_hash_and_keeps_the_file(
    cache: Path, server: FileServer, models_file, hash_length: int
) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS)[:hash_length])})

    result = run("models", "download", "mine")

    assert result.exit_code == 0, result.output
    cached = cache / "custom" / "mine" / "mine.pth"
    assert cached.read_bytes() == WEIGHTS
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o666 & ~umask  # readable in a shared cache
    assert checkpoints_under(cache) == ["custom/mine/mine.pth"]
    assert not [name for name in files_under(cache) if name.endswith(".part") or "tmp" in name]


def test_a_cached_file_is_not_downloaded_again(cache: Path, server: FileServer, models_file) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS)[:8])})

    first = run("models", "path", "mine")
    second = run("models", "path", "mine")
    again = run("models", "download", "mine")

    assert first.exit_code == second.exit_code == again.exit_code == 0
    assert first.stdout == second.stdout == f"{cache / 'custom' / 'mine' / 'mine.pth'}\n"
    assert_says(again, "mine is already cached")
    assert server.requests == ["/mine.pth"]


def test_force_downloads_again(cache: Path, server: FileServer, models_file) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})
    assert run("models", "download", "mine").exit_code == 0

    result = run("models", "download", "mine", "--force")

    assert result.exit_code == 0
    assert server.requests == ["/mine.pth", "/mine.pth"]


def test_fetch_reports_bytes_to_a_pooch_style_progress_bar(cache: Path, server: FileServer, models_file) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})

    class RecordingBar:
        total = 0
        advanced = 0
        closed = False

        def update(self, advance: int) -> None:
            self.advanced += advance

        def reset(self) -> None:
            self.advanced = 0

        def close(self) -> None:
            self.closed = True

    bar = RecordingBar()
    path = model_cache.fetch("mine", progress=bar)

    assert path.read_bytes() == WEIGHTS
    assert bar.total == bar.advanced == len(WEIGHTS)
    assert bar.closed


def test_a_mirror_serves_released_files_by_their_names(cache: Path, server: FileServer, monkeypatch) -> None:
    for base_url in (server.base_url, server.base_url.rstrip("/")):
        monkeypatch.setenv("TSP_BASE_URL", base_url)
        assert registry.get(RELEASED_NAME).url == server.base_url + RELEASED_FILE


# --- Hash checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("trailing_slash", [True, False])
def test_a_released_file_with_the_wrong_hash_is_refused(
    cache: Path, server: FileServer, monkeypatch, trailing_slash: bool
) -> None:
    impostor = b"these bytes do not hash to dcd952c6\n"
    assert not sha256(impostor).startswith("dcd952c6")
    server.serve(RELEASED_FILE, impostor)
    monkeypatch.setenv("TSP_BASE_URL", server.base_url if trailing_slash else server.base_url.rstrip("/"))

    result = run("models", "download", RELEASED_NAME)

    assert result.exit_code == 1
    assert_says(
        result,
        RELEASED_FILE,
        f"has SHA-256 {sha256(impostor)}",
        "not the expected dcd952c6… (published prefix), so it was not kept.",
    )
    assert server.requests == ["/" + RELEASED_FILE]
    assert files_under(cache) == []


def test_a_full_hash_mismatch_is_refused_by_pooch_and_nothing_is_kept(
    cache: Path, server: FileServer, models_file
) -> None:
    expected = sha256(b"other bytes")
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), expected)})

    result = run("models", "path", "mine")

    assert result.exit_code == 1
    assert_says(
        result, "mine.pth", f"has SHA-256 {sha256(WEIGHTS)}", f"not the expected {expected}, so it was not kept."
    )
    assert result.stdout == ""
    assert files_under(cache) == []


@pytest.mark.parametrize(
    "tamper",
    [lambda path: path.write_bytes(WEIGHTS[:-1] + b"?"), lambda path: path.write_bytes(WEIGHTS[:100])],
    ids=["edited", "truncated"],
)
def test_a_tampered_cached_file_is_refused_with_the_way_out(
    cache: Path, server: FileServer, models_file, tamper
) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS)[:8])})
    path = model_cache.fetch("mine")
    tamper(path)

    refused = run("models", "path", "mine")
    listed = json.loads(run("models", "list", "--json").stdout)

    assert refused.exit_code == 1
    assert_says(refused, f"The cached file {path}", "run `tsp models download mine --force`")
    assert refused.stdout == ""
    assert model_cache.cached_path("mine") is None
    assert [(row["cached"], row["damaged"]) for row in listed if row["name"] == "mine"] == [(False, True)]

    repaired = run("models", "download", "mine", "--force")
    assert repaired.exit_code == 0
    assert path.read_bytes() == WEIGHTS


def test_a_failed_forced_download_keeps_the_good_cached_file(cache: Path, server: FileServer, models_file) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})
    path = model_cache.fetch("mine")
    server.serve("mine.pth", b"the server now sends something else")

    result = run("models", "download", "mine", "--force")

    assert result.exit_code == 1
    assert path.read_bytes() == WEIGHTS
    assert model_cache.cached_path("mine") == path


def test_verify_names_the_file_and_both_hashes(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(WEIGHTS)
    assert model_cache.verify(path, sha256(WEIGHTS)[:8].upper()) == sha256(WEIGHTS)
    with pytest.raises(DownloadError, match=f"{path.name} has SHA-256 {sha256(WEIGHTS)}, not the expected 00000000"):
        model_cache.verify(path, "00000000")
    with pytest.raises(ValueError, match="at least 8 hex digits"):
        model_cache.verify(path, "")


# --- Downloads that fail -----------------------------------------------------------------------


def test_http_404_is_one_sentence_and_exit_1(cache: Path, server: FileServer, monkeypatch) -> None:
    monkeypatch.setenv("TSP_BASE_URL", server.base_url)

    result = run("models", "download", RELEASED_NAME)

    assert result.exit_code == 1
    assert_says(result, f"{server.base_url}{RELEASED_FILE} answered HTTP 404 (Not Found)", "TSP_BASE_URL")
    assert "Traceback" not in result.output
    assert files_under(cache) == []


def test_a_dead_server_is_connection_refused(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("TSP_BASE_URL", f"http://127.0.0.1:{unused_port()}/")

    result = run("models", "path", RELEASED_NAME)

    assert result.exit_code == 1
    assert_says(result, f"Cannot download {RELEASED_NAME}", "refused the connection")
    assert files_under(cache) == []


def test_a_silent_server_times_out(cache: Path, server: FileServer, models_file, monkeypatch) -> None:
    models_file({"slow": custom_entry(server.stall("slow.pth"), sha256(WEIGHTS))})
    monkeypatch.setattr(model_cache, "DOWNLOAD_TIMEOUT_S", (2.0, 0.3))

    result = run("models", "download", "slow")

    assert result.exit_code == 1
    assert_says(result, "Downloading slow timed out")
    assert files_under(cache) == []


class FullDisk:
    """A file that accepts a few bytes, then fails as a full disk does."""

    def __init__(self, path: str, mode: str) -> None:
        self._stream = open(path, mode)  # noqa: SIM115  (closed by close())

    def write(self, data: bytes) -> int:
        self._stream.write(data[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


@pytest.mark.parametrize("hash_length", [64, 8])
def test_a_full_disk_leaves_nothing_half_written(
    cache: Path, server: FileServer, models_file, monkeypatch, hash_length
) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS)[:hash_length])})
    monkeypatch.setattr(pooch.downloaders, "open", FullDisk, raising=False)

    result = run("models", "download", "mine")

    assert result.exit_code == 1
    assert_says(result, "The disk is full", "TSP_CACHE_DIR")
    assert files_under(cache) == []


def test_download_goes_on_after_a_failure_and_exits_1(
    cache: Path, server: FileServer, models_file, monkeypatch
) -> None:
    monkeypatch.setenv("TSP_BASE_URL", server.base_url)
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})

    result = run("models", "download", RELEASED_NAME, "mine")

    assert result.exit_code == 1
    assert_says(result, "HTTP 404", "1 of 2 checkpoints failed")
    assert model_cache.cached_path("mine") is not None


# --- The models file ---------------------------------------------------------------------------


def test_file_urls_and_plain_paths_are_copied_and_checked(cache: Path, tmp_path: Path, models_file) -> None:
    source = tmp_path / "weights" / "local model.pth"
    source.parent.mkdir()
    source.write_bytes(WEIGHTS)
    models_file({
        "by-url": custom_entry(source.as_uri(), sha256(WEIGHTS)),
        "by-absolute-path": custom_entry(str(source), sha256(WEIGHTS)[:8]),
        "by-relative-path": custom_entry("weights/local model.pth", sha256(WEIGHTS)[:10]),
        "wrong-hash": custom_entry(str(source), "0" * 64),
    })  # fmt: skip

    for name in ("by-url", "by-absolute-path", "by-relative-path"):
        result = run("models", "path", name)
        assert result.exit_code == 0, result.output
        assert result.stdout == f"{cache / 'custom' / name / 'local model.pth'}\n"
        assert Path(result.stdout.strip()).read_bytes() == WEIGHTS

    refused = run("models", "download", "wrong-hash")
    assert refused.exit_code == 1
    assert_says(refused, f"{source} has SHA-256 {sha256(WEIGHTS)}")
    assert not (cache / "custom" / "wrong-hash").exists() or files_under(cache / "custom" / "wrong-hash") == []


def test_a_missing_local_file_is_a_download_error(cache: Path, tmp_path: Path, models_file) -> None:
    models_file({"gone": custom_entry(str(tmp_path / "gone.pth"), "0" * 8)})
    result = run("models", "download", "gone")
    assert result.exit_code == 1
    assert_says(result, f"Cannot copy gone: {tmp_path / 'gone.pth'} is not a file.")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"backbone": "resnet50", "url": "https://x.org/m.pth", "sha256": "0" * 8}, "entry 'bad': field 'backbone' is 'resnet50'; expected one of r2plus1d_34, r2plus1d_18, r3d_18"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth"}, "entry 'bad': field 'sha256' is missing"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "abc123"}, "entry 'bad': field 'sha256' must be the full SHA-256"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "z" * 8}, "entry 'bad': field 'sha256' must be"),
        ({"backbone": "r3d_18", "url": "ftp://x.org/m.pth", "sha256": "0" * 8}, "entry 'bad': field 'url' 'ftp://x.org/m.pth' must be an http(s) URL, a file:// URL or a plain path"),
        ({"backbone": "r3d_18", "url": "https://x.org/", "sha256": "0" * 8}, "entry 'bad': field 'url' 'https://x.org/' does not end in a file name"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "0" * 8, "sha": "0"}, "entry 'bad': unknown field 'sha'"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "0" * 8, "pretraining": "XYZ"}, "entry 'bad': field 'pretraining' is 'XYZ'"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "0" * 8, "clip_len": "8"}, "entry 'bad': field 'clip_len' must be a whole number of at least 1, not '8'"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "0" * 8, "frame_rate": 0}, "entry 'bad': field 'frame_rate' must be a positive number, not 0"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "0" * 8, "resize": [128]}, "entry 'bad': field 'resize' must be a list of 2 numbers, not [128]"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "0" * 8, "crop": 200}, "entry 'bad': field 'crop' (200) must not exceed the resized height and width (128, 171)"),
        ({"backbone": "r3d_18", "url": "https://x.org/m.pth", "sha256": "0" * 8, "std": [0.2, 0, 0.2]}, "entry 'bad': field 'std' must be a positive number, not 0"),
    ],
    ids=["backbone", "missing-sha256", "short-hash", "not-hex", "scheme", "no-file-name", "unknown-field", "pretraining",
         "clip_len-string", "frame_rate-zero", "resize-one-number", "crop-too-large", "std-zero"],
)  # fmt: skip
def test_a_malformed_entry_names_the_entry_and_the_field(cache: Path, models_file, entry: dict, message: str) -> None:
    path = models_file({"bad": entry})
    result = run("models", "list")
    assert result.exit_code == 2
    assert_says(result, f"Models file {path}, {message}")
    assert "Traceback" not in result.output


def test_a_released_name_cannot_be_redeclared(cache: Path, models_file) -> None:
    models_file({RELEASED_NAME: custom_entry("https://x.org/m.pth", "0" * 8)})
    result = run("models", "list")
    assert result.exit_code == 2
    assert_says(result, f"entry '{RELEASED_NAME}': the name is already used by a released checkpoint")


def test_invalid_toml_and_a_missing_file_are_clear_errors(cache: Path, tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[models.x\nbackbone = 1\n")
    monkeypatch.setenv("TSP_MODELS_FILE", str(broken))
    result = run("models", "list")
    assert result.exit_code == 2
    assert_says(result, f"Models file {broken} is not valid TOML")

    monkeypatch.setenv("TSP_MODELS_FILE", str(tmp_path / "absent.toml"))
    result = run("models", "list")
    assert result.exit_code == 2
    assert_says(result, f"The models file {tmp_path / 'absent.toml'} named by TSP_MODELS_FILE does not exist.")


# --- Offline mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_offline_never_touches_the_network(cache: Path, server: FileServer, models_file, monkeypatch, how: str) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})
    offline = ["--offline"] if how == "flag" else []
    if how == "environment":
        monkeypatch.setenv("TSP_OFFLINE", "1")

    missing = run("models", "path", "mine", *offline)
    assert missing.exit_code == 1
    assert_says(
        missing, "mine is not in the cache", f"{cache / 'custom' / 'mine' / 'mine.pth'} is missing", "offline mode"
    )
    assert server.requests == []

    monkeypatch.delenv("TSP_OFFLINE", raising=False)
    model_cache.fetch("mine")
    if how == "environment":
        monkeypatch.setenv("TSP_OFFLINE", "true")
    present = run("models", "path", "mine", *offline)
    assert present.exit_code == 0
    assert present.stdout.strip() == str(cache / "custom" / "mine" / "mine.pth")
    assert server.requests == ["/mine.pth"]


# --- Listing -----------------------------------------------------------------------------------


def test_list_json_describes_every_checkpoint_and_what_is_cached(
    cache: Path, server: FileServer, models_file, monkeypatch
) -> None:
    monkeypatch.setenv("TSP_BASE_URL", server.base_url)
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})
    model_cache.fetch("mine")

    result = run("models", "list", "--json")

    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert len(rows) == 14
    assert rows["mine"] == {
        "name": "mine",
        "backbone": "r2plus1d_18",
        "pretraining": None,
        "dataset": None,
        "group": "custom",
        "description": "A test checkpoint",
        "filename": "mine.pth",
        "url": server.base_url + "mine.pth",
        "sha256": sha256(WEIGHTS),
        "released": False,
        "cached": True,
        "damaged": False,
        "path": str(cache / "custom" / "mine" / "mine.pth"),
        "size_bytes": len(WEIGHTS),
        "estimated_size_bytes": registry.BACKBONE_WEIGHT_BYTES["r2plus1d_18"],
    }
    released = rows[RELEASED_NAME]
    assert (released["backbone"], released["pretraining"], released["dataset"]) == ("r3d_18", "TAC", "Kinetics")
    assert released["url"] == server.base_url + RELEASED_FILE
    assert (released["cached"], released["path"], released["size_bytes"]) == (False, None, None)
    assert released["estimated_size_bytes"] == 132_703_648
    assert server.requests == ["/mine.pth"]


def test_list_table_shows_cached_state_and_size(cache: Path, server: FileServer, models_file) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})
    model_cache.fetch("mine")

    result = run("models", "list")

    assert result.exit_code == 0
    table_row = next(line for line in result.stdout.splitlines() if "mine" in line)
    assert "yes" in table_row and f"{len(WEIGHTS) / 1000:.1f} kB" in table_row
    assert all(checkpoint.name in result.stdout for checkpoint in registry.RELEASED)
    uncached = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip().startswith("r")}
    assert uncached["r2plus1d_34-tsp_on_activitynet"].split()[-3:] == ["no", "~254", "MB"]
    assert uncached["r2plus1d_18-tac_on_kinetics"].split()[-3:] == ["no", "~125", "MB"]
    assert uncached["r3d_18-tac_on_kinetics"].split()[-3:] == ["no", "~133", "MB"]
    assert "~ Size estimated from the backbone's weights" in result.stderr


def test_estimated_sizes_are_the_backbones_float32_weights() -> None:
    import torch

    from tsp_cli.models.backbones import build_backbone

    for backbone, size in registry.BACKBONE_WEIGHT_BYTES.items():
        with torch.device("meta"):
            state = build_backbone(backbone).state_dict()
        assert size == sum(tensor.numel() * tensor.element_size() for tensor in state.values()), backbone
    assert set(registry.BACKBONE_WEIGHT_BYTES) == set(registry.BACKBONES)


def test_the_remembered_hash_is_used_only_while_the_file_is_unchanged(
    cache: Path, server: FileServer, models_file, monkeypatch
) -> None:
    models_file({"mine": custom_entry(server.serve("mine.pth", WEIGHTS), sha256(WEIGHTS))})
    path = model_cache.fetch("mine")
    an_hour_ago = path.stat().st_mtime - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))  # old enough that a later edit shows in the mtime
    hashed: list[Path] = []
    real_sha256_of = model_cache._sha256_of
    monkeypatch.setattr(model_cache, "_sha256_of", lambda file: hashed.append(file) or real_sha256_of(file))

    assert model_cache.cached_path("mine") == path
    assert model_cache.cached_path("mine") == path
    assert model_cache.fetch("mine") == path
    assert hashed == [path]

    path.write_bytes(WEIGHTS[:-1] + b"?")
    assert model_cache.cached_path("mine") is None
    assert hashed == [path, path]


def test_file_sha256_reuses_the_digest_remembered_for_a_checked_cache_file(tmp_path: Path, monkeypatch) -> None:
    file = tmp_path / "model.pth"
    file.write_bytes(b"weights")
    assert model_cache.file_sha256(file) == sha256(b"weights")  # no sidecar: hashed
    status = file.stat()
    model_cache._remember_digest(file, "f" * 64, status, status.st_mtime_ns + 10**10)
    hashed = []
    monkeypatch.setattr(model_cache, "_sha256_of", lambda path: hashed.append(path) or "0" * 64)
    assert model_cache.file_sha256(file) == "f" * 64 and hashed == []
    file.write_bytes(b"edited weights")  # another size: the remembered digest no longer applies
    assert model_cache.file_sha256(file) == "0" * 64 and hashed == [file]


def test_an_entry_declares_its_own_recipe_and_keeps_tsps_for_the_rest(cache: Path, models_file) -> None:
    from tsp_cli.models.recipe import TSP_RECIPE, Recipe

    models_file({
        "eight": {**custom_entry("https://x.org/m.pth", "0" * 8), "clip_len": 8, "mean": [0.5, 0.5, 0.5]},
        "plain": custom_entry("https://x.org/p.pth", "0" * 8),
    })  # fmt: skip
    assert registry.get("eight").recipe == Recipe(clip_len=8, mean=(0.5, 0.5, 0.5))
    assert registry.get("plain").recipe == TSP_RECIPE


@pytest.mark.timeout(300)
def test_extract_with_an_entry_of_clip_len_8_makes_8_frame_clips_and_records_them(
    cache: Path, tmp_path: Path, models_file, r3d_checkpoint: Path
) -> None:
    import av
    import numpy as np
    import torch

    import tsp_cli
    from tests.videos import make_video
    from tsp_cli.pipeline import store

    video = make_video(tmp_path / "v.mp4", frames=60, fps=30)  # 30 frames at 15 fps
    entry = custom_entry(str(r3d_checkpoint), sha256(r3d_checkpoint.read_bytes()), backbone="r3d_18")
    models_file({"eight": {**entry, "clip_len": 8}})
    common = ["extract", str(video), "-c", "eight", "--stride", "4", "--workers", "0", "--device", "cpu"]

    result = run(*common, "-o", str(tmp_path / "eight"))
    assert result.exit_code == 0, result.output
    features = np.load(tmp_path / "eight" / "v.npy")
    assert features.shape == (6, 512)  # 8-frame clips start at 0, 4, ..., 20 of the 30 frames
    manifest = store.read_manifest(tmp_path / "eight")
    assert manifest is not None and manifest["settings"]["clip_len"] == 8
    assert manifest["settings"]["checkpoint"] == "eight" and manifest["settings"]["crop"] == 112

    model = tsp_cli.load_model("eight", offline=True)
    assert model.recipe.clip_len == 8
    with av.open(str(video)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    with torch.no_grad():
        first = model(model.recipe.transform(frames[0:16:2]))  # clip 0: 8 frames at 15 fps
    np.testing.assert_allclose(features[0], first[0].numpy(), rtol=1e-4, atol=1e-5)

    overridden = run(*common, "--clip-len", "16", "-o", str(tmp_path / "sixteen"))
    assert overridden.exit_code == 0, overridden.output
    assert np.load(tmp_path / "sixteen" / "v.npy").shape == (4, 512)  # starts 0, 4, 8, 12
    manifest = store.read_manifest(tmp_path / "sixteen")
    assert manifest is not None and manifest["settings"]["clip_len"] == 16


def test_a_download_error_names_the_model_and_its_url(cache: Path, models_file) -> None:
    from tsp_cli.errors import OfflineError

    models_file({"mine": custom_entry("https://example.org/w/mine.pth", "0" * 8)})
    with pytest.raises(OfflineError) as refused:
        model_cache.fetch("mine", offline=True)
    assert (refused.value.name, refused.value.url) == ("mine", "https://example.org/w/mine.pth")
