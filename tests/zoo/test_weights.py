"""Pretrained weights: the registry, the cache, verified downloads, offline use.

Nothing here touches the network. Downloads come from a :class:`FileServer` on
127.0.0.1 started by the test (``tests/http_server.py``), serving small real
sruc checkpoints registered into the registry with monkeypatch, so the tests
do not depend on the real (still empty) table. Timeouts and backoff are shrunk
so that every fault costs well under a second.

After every fault the cache holds the good file or nothing: no temporary file,
no lock file; the one exception by design is ``NAME.part`` after a transfer
that broke off mid-body, which the next pull resumes and verifies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import pytest
import requests
import torch
from PIL import Image

import sruc
from helpers import Run, run_cli, smooth_rgb
from http_server import FileServer, Reply
from sruc.archs.srcnn import SRCNN
from sruc.archs.vdsr import VDSR
from sruc.errors import ModelError, SrucWarning, UsageError
from sruc.zoo import checkpoint, download, hub, registry

PACKAGE = Path(hub.__file__).resolve().parent
BASE = "/weights-v1/"  # where the test server publishes, like a release folder
SHA_A = "ab" * 32

# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Ckpt:
    """A real sruc checkpoint's bytes and what its registry row must say."""

    data: bytes
    arch: str
    config: dict[str, Any]
    scales: tuple[float, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def row(self, name: str, group: str | None = None) -> registry.Weights:
        return registry.Weights(
            name=name,
            group=group or name,
            arch=self.arch,
            config=self.config,
            scales=self.scales,
            file=f"{name}.pt",
            size=len(self.data),
            sha256=self.sha256,
            url=f"{name}.pt",
        )


def make_ckpt(folder: Path, model: torch.nn.Module, scales: list[float]) -> Ckpt:
    path = folder / f"{len(list(folder.iterdir()))}.pt"
    checkpoint.save(checkpoint.from_model(model, scales), path)
    arch = type(model).__name__.lower()
    return Ckpt(path.read_bytes(), arch, dict(model.config), tuple(float(s) for s in scales))


def one_error_line(run: Run, code: int, *needles: str) -> str:
    """Exit ``code``, and exactly one stderr line, ``error: ...``, holding ``needles``."""
    assert "Traceback" not in run.err, run.err
    lines = run.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr: {run.err!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "unexpected" not in lines[0], lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    assert run.code == code, (run.code, lines[0])
    return lines[0]


def listing(folder: Path) -> set[str]:
    """Every name in ``folder``, hidden ones included (empty if it does not exist)."""
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ckpt]:
    folder = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    return {
        "vdsr": make_ckpt(folder, VDSR(depth=3, width=4), [2, 3, 4]),
        "srcnn-x2": make_ckpt(folder, SRCNN(n1=4, n2=4), [2]),
        "srcnn-x3": make_ckpt(folder, SRCNN(n1=4, n2=4), [3]),
    }


@pytest.fixture(autouse=True)
def package_untouched() -> Any:
    """No test may leave weights, partial downloads or lock files in the package."""

    def stray() -> set[str]:
        return {
            p.relative_to(PACKAGE).as_posix()
            for p in PACKAGE.rglob("*")
            if "__pycache__" not in p.parts
            and (p.suffix in (".pt", ".part", ".lock") or p.name.startswith("."))
        }

    before = stray()
    yield
    assert stray() == before


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated environment: cache in tmp_path, no bundled weights, fast timeouts."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SRUC_CACHE_DIR", str(folder))
    for name in ("SRUC_OFFLINE", "SRUC_WEIGHTS_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):  # a proxy in the environment must not see 127.0.0.1
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.setattr(download, "CONNECT_TIMEOUT_S", 2.0)
    monkeypatch.setattr(download, "READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    monkeypatch.setattr(download, "ATTEMPTS", 3)
    # Small network reads, so that the bytes before a cut reach the .part file
    # (a read that breaks off loses what it had buffered; see download.READ_BYTES).
    monkeypatch.setattr(download, "READ_BYTES", 256)
    monkeypatch.setattr(registry, "PRETRAINED", ())
    return folder


@pytest.fixture
def server() -> Any:
    with FileServer() as s:
        yield s


@pytest.fixture
def vdsr(
    cache: Path, server: FileServer, ckpts: dict[str, Ckpt], monkeypatch: pytest.MonkeyPatch
) -> registry.Weights:
    """A registered ``vdsr`` whose file the test server publishes."""
    row = ckpts["vdsr"].row("vdsr")
    server.serve(BASE + row.file, ckpts["vdsr"].data)
    monkeypatch.setenv("SRUC_WEIGHTS_URL", server.url(BASE))
    monkeypatch.setattr(registry, "PRETRAINED", (row,))
    return row


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every attempt to open a connection."""
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(repr(args[:3]))
        raise AssertionError("the network was used")

    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


@pytest.fixture
def photo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_rgb(24, 32)).save(path)
    return path


# --------------------------------------------------------------------------- settings


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app, appauthor=None: f"/pd/{app}")
    env = {"SRUC_CACHE_DIR": str(tmp_path / "env")}
    assert hub.cache_dir(tmp_path / "arg", env) == tmp_path / "arg"  # argument first
    assert hub.cache_dir(None, env) == tmp_path / "env"  # then the environment
    assert hub.cache_dir(None, {}) == Path("/pd/sruc")  # then platformdirs
    assert hub.cache_dir(None, {"SRUC_CACHE_DIR": ""}) == Path("/pd/sruc")  # empty: unset
    assert hub.cache_dir("~/w", {}) == Path.home() / "w"
    assert listing(tmp_path) == set()  # deciding creates nothing


def test_offline_and_base_url_settings() -> None:
    assert not hub.is_offline(None, {})
    assert hub.is_offline(None, {"SRUC_OFFLINE": "1"})
    assert hub.is_offline(None, {"SRUC_OFFLINE": "Yes"})
    assert not hub.is_offline(None, {"SRUC_OFFLINE": "0"})
    assert not hub.is_offline(False, {"SRUC_OFFLINE": "1"})  # the argument wins
    assert hub.base_url({}) == hub.DEFAULT_BASE_URL
    assert hub.weights_url("vdsr.pt", {}) == hub.DEFAULT_BASE_URL + "vdsr.pt"
    mirror = {"SRUC_WEIGHTS_URL": "http://mirror.lan/sruc/w1"}
    assert hub.weights_url("vdsr.pt", mirror) == "http://mirror.lan/sruc/w1/vdsr.pt"
    with pytest.raises(UsageError, match="SRUC_WEIGHTS_URL"):
        hub.base_url({"SRUC_WEIGHTS_URL": "/srv/weights"})


def test_url_file_names_never_collide_and_carry_their_hash() -> None:
    sha_b = "cd" * 32
    a = hub.url_file_name("https://one.org/runs/best.pt?token=x", SHA_A)
    assert a == f"best-{SHA_A[:12]}.pt"
    assert hub.url_file_name("https://two.org/best.pt", sha_b) != a
    assert hub.url_file_name("https://h.org/", SHA_A) == f"weights-{SHA_A[:12]}.pt"
    assert hub.url_file_name("https://h.org/my%20run/../x y", SHA_A) == f"x_y-{SHA_A[:12]}.pt"
    assert hub.url_file_hash_prefix(a) == SHA_A[:12]
    assert hub.url_file_hash_prefix("vdsr.pt") is None


def test_import_stays_light() -> None:
    code = "import sys, sruc.zoo.hub, sruc.cli.models; assert 'requests' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- the table


def test_real_table_is_sound_and_honest(capsys: pytest.CaptureFixture[str]) -> None:
    assert registry.check_table(registry.PRETRAINED) == []
    for w in registry.PRETRAINED:  # a row ships with its file, or is reachable
        bundled = hub.BUNDLED_DIR / w.file
        if bundled.is_file():
            assert bundled.stat().st_size == w.size
            assert hub.file_sha256(bundled) == w.sha256
    if not registry.PRETRAINED:
        assert registry.known_names() == ["bicubic"]
        run = run_cli(capsys, "models")
        assert run.code == 0 and run.err == ""
        assert "no pretrained weights are released yet" in run.out.lower()
        assert "--model bicubic" in run.out and "--model PATH" in run.out


def test_check_table_finds_mistakes(ckpts: dict[str, Ckpt]) -> None:
    good = (
        ckpts["srcnn-x2"].row("srcnn-x2", "srcnn"),
        ckpts["srcnn-x3"].row("srcnn-x3", "srcnn"),
        ckpts["vdsr"].row("vdsr"),
    )
    assert registry.check_table(good) == []
    clash = ckpts["srcnn-x3"].row("srcnn-x3b", "srcnn")  # a second x3
    problems = registry.check_table((*good, clash))
    assert any("same scale" in p for p in problems), problems
    two_vdsr = (good[2], ckpts["vdsr"].row("vdsr-b", "vdsr"))
    assert any("one file" in p for p in registry.check_table(two_vdsr))
    bad = registry.Weights(
        "x", "bicubic", "nope", {}, (), "x.bin", 0, "XYZ", "https://elsewhere/x.pt"
    )
    assert len(registry.check_table((bad,))) >= 6


def test_srcnn_group_picks_the_file_for_the_scale(
    cache: Path, server: FileServer, ckpts: dict[str, Ckpt], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = tuple(ckpts[n].row(n, "srcnn") for n in ("srcnn-x2", "srcnn-x3"))
    for n in ("srcnn-x2", "srcnn-x3"):
        server.serve(BASE + f"{n}.pt", ckpts[n].data)
    monkeypatch.setenv("SRUC_WEIGHTS_URL", server.url(BASE))
    monkeypatch.setattr(registry, "PRETRAINED", rows)
    assert registry.known_names() == ["bicubic", "srcnn"]
    lm = registry.load_model("srcnn", scale=3)
    assert (lm.name, lm.arch, lm.scales) == ("srcnn-x3", "srcnn", [3.0])
    assert [h.path for h in server.hits()] == [BASE + "srcnn-x3.pt"]  # only that file
    with pytest.raises(ModelError, match=r"x2/3 only, not x2\.5"):
        registry.load_model("srcnn", scale=2.5)
    with pytest.raises(ModelError, match="one weights file per scale"):
        registry.load_model("srcnn")
    assert registry.load_model("srcnn-x2").scales == [2.0]  # a file's own name works too
    assert len(server.hits()) == 2  # the refusals asked nothing
    # The library entry points pass the scale on, so a group name works there too.
    im = sruc.upscale(Image.new("RGB", (6, 5)), 3, model="srcnn", device="cpu")
    assert im.size == (18, 15)


# --------------------------------------------------------------------------- resolution


def test_first_use_downloads_then_the_cache_answers(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    lm = registry.load_model("vdsr", scale=3, progress=lambda d, t: seen.append((d, t)))
    assert (lm.name, lm.arch, lm.scales) == ("vdsr", "vdsr", [2.0, 3.0, 4.0])
    assert len(server.hits()) == 1
    assert listing(cache) == {"vdsr.pt"}  # no .part, no lock left behind
    assert hub.file_sha256(cache / "vdsr.pt") == vdsr.sha256
    assert seen[-1] == (vdsr.size, vdsr.size)
    assert registry.load_model("vdsr", scale=2.5).arch == "vdsr"
    assert len(server.hits()) == 1  # the second use made no request


def test_explicit_cache_dir_beats_the_environment(
    vdsr: registry.Weights, server: FileServer, cache: Path, tmp_path: Path
) -> None:
    registry.load_model("vdsr", cache_dir=tmp_path / "mine")
    assert listing(tmp_path / "mine") == {"vdsr.pt"} and listing(cache) == set()


def test_refuses_a_cache_inside_the_package(vdsr: registry.Weights) -> None:
    with pytest.raises(UsageError, match="inside the sruc package"):
        registry.load_model("vdsr", cache_dir=PACKAGE / "weights-cache")
    assert not (PACKAGE / "weights-cache").exists()


def test_bundled_weights_are_the_offline_default(
    vdsr: registry.Weights, ckpts: dict[str, Ckpt], cache: Path, no_network: list[str]
) -> None:
    hub.BUNDLED_DIR.mkdir()
    (hub.BUNDLED_DIR / vdsr.file).write_bytes(ckpts["vdsr"].data)
    located = registry.fetch(vdsr, offline=True)
    assert located == hub.Located(hub.BUNDLED_DIR / vdsr.file, "bundled")
    assert registry.load_model("vdsr", offline=True).arch == "vdsr"
    assert registry.where(vdsr) == "bundled"
    assert not cache.exists()  # a bundled file is used in place, never copied
    # A damaged bundled copy is never used: a warning, then the offline error.
    (hub.BUNDLED_DIR / vdsr.file).write_bytes(b"x" * vdsr.size)
    with pytest.warns(SrucWarning, match="bundled .* damaged"), pytest.raises(hub.DownloadError):
        registry.fetch(vdsr, offline=True)
    assert no_network == []


def test_cache_comes_before_bundled(
    vdsr: registry.Weights, ckpts: dict[str, Ckpt], cache: Path, no_network: list[str]
) -> None:
    for folder in (cache, hub.BUNDLED_DIR):
        folder.mkdir()
        (folder / vdsr.file).write_bytes(ckpts["vdsr"].data)
    assert registry.fetch(vdsr).origin == "cache"
    assert no_network == []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_never_connects(
    how: str,
    vdsr: registry.Weights,
    server: FileServer,
    cache: Path,
    ckpts: dict[str, Ckpt],
    photo: Path,
    no_network: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flag = ["--offline"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("SRUC_OFFLINE", "1")
    args = ["up", "photo.png", "-s", "3", "--model", "vdsr", "-o", "out.png", "-q", *flag]
    run = run_cli(capsys, *args)
    url = server.url(BASE + "vdsr.pt")
    one_error_line(run, 1, "offline", url, str(cache / "vdsr.pt"))
    assert not Path("out.png").exists() and listing(cache) == set()
    # The file put there by hand, as the message says: now it works, still offline.
    cache.mkdir()
    (cache / "vdsr.pt").write_bytes(ckpts["vdsr"].data)
    run = run_cli(capsys, *args)
    assert run.code == 0, run.err
    assert Image.open("out.png").size == (96, 72)
    assert no_network == [] and server.hits() == []


# --------------------------------------------------------------------------- faults


def test_http_404_is_not_retried(vdsr: registry.Weights, server: FileServer, cache: Path) -> None:
    server.then(BASE + "vdsr.pt", Reply(status=404))
    with pytest.raises(hub.DownloadError, match="HTTP 404") as e:
        registry.load_model("vdsr")
    assert server.url(BASE + "vdsr.pt") in str(e.value) and "\n" not in str(e.value)
    assert len(server.hits()) == 1
    assert listing(cache) == set()


def test_http_500_is_retried(vdsr: registry.Weights, server: FileServer, cache: Path) -> None:
    server.then(BASE + "vdsr.pt", Reply(status=500), Reply(status=503))
    assert registry.load_model("vdsr").arch == "vdsr"
    assert len(server.hits()) == 3
    assert listing(cache) == {"vdsr.pt"}


def test_http_500_every_time_gives_up(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    server.then(BASE + "vdsr.pt", *[Reply(status=500)] * 3)
    with pytest.raises(hub.DownloadError, match="after 3 attempts: HTTP 500"):
        registry.load_model("vdsr")
    assert len(server.hits()) == 3
    assert listing(cache) == set()


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_body_cut_short_is_resumed_or_restarted(
    ranges: bool, vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    server.then(BASE + "vdsr.pt", Reply(cut_after=1024, ranges=ranges), Reply(ranges=ranges))
    registry.load_model("vdsr")
    assert [h.range for h in server.hits()] == [None, "bytes=1024-"]
    assert listing(cache) == {"vdsr.pt"}
    assert hub.file_sha256(cache / "vdsr.pt") == vdsr.sha256


def test_a_broken_transfer_keeps_its_part_for_the_next_pull(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    server.then(BASE + "vdsr.pt", *[Reply(cut_after=512)] * 3)
    with pytest.raises(hub.DownloadError, match=r"broke during the transfer .* kept"):
        registry.load_model("vdsr")
    assert listing(cache) == {"vdsr.pt.part"}  # the only leftover, by design
    assert (cache / "vdsr.pt.part").stat().st_size == 3 * 512  # three resumed pieces
    registry.load_model("vdsr")  # the next pull resumes where it stopped
    assert server.hits()[-1].range == "bytes=1536-"
    assert listing(cache) == {"vdsr.pt"}


def test_wrong_hash_is_deleted_and_explained(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    portal = b"<html>Welcome to the hotel wifi</html>"
    server.then(BASE + "vdsr.pt", Reply(body=portal))
    with pytest.raises(hub.ChecksumError) as e:
        registry.load_model("vdsr")
    message = str(e.value)
    got = hashlib.sha256(portal).hexdigest()
    assert f"expected sha256 {vdsr.sha256}, got {got}" in message
    assert "captive portal" in message and "changed upstream" in message
    assert listing(cache) == set()


def test_a_body_larger_than_the_pinned_size_is_cut_off(
    vdsr: registry.Weights, server: FileServer, cache: Path, ckpts: dict[str, Ckpt]
) -> None:
    server.then(BASE + "vdsr.pt", Reply(body=ckpts["vdsr"].data + bytes(100_000)))
    with pytest.raises(hub.ChecksumError, match=f"larger than its pinned size of {vdsr.size}"):
        registry.load_model("vdsr")
    assert listing(cache) == set()


def test_server_too_slow_times_out(
    vdsr: registry.Weights, server: FileServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "ATTEMPTS", 2)
    server.then(BASE + "vdsr.pt", *[Reply(delay_s=10)] * 2)
    # The error names the 0.5 s read timeout, not the 10 s the server waits.
    with pytest.raises(hub.DownloadError, match=r"sent nothing for 0\.5 s"):
        registry.load_model("vdsr")
    assert len(server.hits()) == 2 and listing(cache) == set()


def test_server_stalling_mid_body_is_resumed(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    server.then(BASE + "vdsr.pt", Reply(cut_after=1024, stall_s=10))
    registry.load_model("vdsr")  # the stall hits the read timeout; the rest is resumed
    assert [h.range for h in server.hits()] == [None, "bytes=1024-"]
    assert listing(cache) == {"vdsr.pt"}


@pytest.mark.parametrize(
    ("part", "ranges", "requests_sent"),
    [
        pytest.param("prefix", True, ["bytes=700-"], id="resumed-with-range"),
        pytest.param("prefix", False, ["bytes=700-"], id="server-ignores-range"),
        pytest.param("garbage", True, ["bytes=700-", None], id="bad-part-restarted"),
        pytest.param("complete", True, [], id="complete-part-verified"),
        pytest.param("too-long", True, [None], id="too-long-part-restarted"),
    ],
)
def test_partial_file_left_by_a_killed_download(
    part: str,
    ranges: bool,
    requests_sent: list[str | None],
    vdsr: registry.Weights,
    ckpts: dict[str, Ckpt],
    server: FileServer,
    cache: Path,
) -> None:
    data = ckpts["vdsr"].data
    content = {
        "prefix": data[:700],
        "garbage": bytes(700),
        "complete": data,
        "too-long": data + b"junk",
    }[part]
    cache.mkdir()
    (cache / "vdsr.pt.part").write_bytes(content)
    server.then(BASE + "vdsr.pt", Reply(ranges=ranges), Reply(ranges=ranges))
    registry.load_model("vdsr")
    assert [h.range for h in server.hits()] == requests_sent
    assert listing(cache) == {"vdsr.pt"}
    assert hub.file_sha256(cache / "vdsr.pt") == vdsr.sha256


def test_damaged_cached_file_is_fetched_again(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    cache.mkdir()
    (cache / "vdsr.pt").write_bytes(b"bit rot" * 100)
    with pytest.warns(
        SrucWarning, match=f"cached .*vdsr.pt is damaged .*expected sha256 {vdsr.sha256}"
    ):
        registry.load_model("vdsr")
    assert len(server.hits()) == 1
    assert hub.file_sha256(cache / "vdsr.pt") == vdsr.sha256 and listing(cache) == {"vdsr.pt"}


def test_a_file_that_is_not_a_sruc_checkpoint(
    vdsr: registry.Weights,
    server: FileServer,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.save({"model": 1}, tmp_path / "foreign.pt")
    data = (tmp_path / "foreign.pt").read_bytes()
    row = registry.Weights(
        "vdsr", "vdsr", "vdsr", vdsr.config, vdsr.scales, "vdsr.pt", len(data),
        hashlib.sha256(data).hexdigest(), "vdsr.pt",
    )  # fmt: skip
    monkeypatch.setattr(registry, "PRETRAINED", (row,))
    server.serve(BASE + "vdsr.pt", data)
    with pytest.raises(ModelError, match="not a sruc checkpoint"):
        registry.load_model("vdsr")


def test_registry_row_must_describe_its_file(
    vdsr: registry.Weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = registry.Weights(**{**vdsr.__dict__, "config": {"depth": 20}})
    monkeypatch.setattr(registry, "PRETRAINED", (wrong,))
    with pytest.raises(ModelError, match="does not describe"):
        registry.load_model("vdsr")


# --------------------------------------------------------------------------- concurrency


@pytest.mark.filterwarnings("ignore:waiting for another download")
def test_two_threads_pulling_at_once(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    server.then(BASE + "vdsr.pt", Reply(chunk_delay_s=0.1))  # about half a second
    results: list[Any] = []

    def pull() -> None:
        try:
            results.append(registry.fetch(vdsr))
        except Exception as e:  # pragma: no cover - reported by the asserts below
            results.append(e)

    first = threading.Thread(target=pull)
    first.start()
    assert server.first_hit.wait(5)  # the first download is under way...
    second = threading.Thread(target=pull)
    second.start()  # ...when the second one starts
    first.join(10)
    second.join(10)
    assert results == [hub.Located(cache / "vdsr.pt", "download")] * 2
    assert len(server.hits()) == 1  # the second waited for the lock, then found the file
    assert listing(cache) == {"vdsr.pt"} and hub.file_sha256(cache / "vdsr.pt") == vdsr.sha256


def test_two_processes_pulling_at_once(
    vdsr: registry.Weights, server: FileServer, cache: Path
) -> None:
    server.then(BASE + "vdsr.pt", *[Reply(chunk_delay_s=0.1)] * 2)
    url = server.url(BASE + "vdsr.pt")
    code = (
        "import sys; from sruc.zoo import hub; "
        "hub.download(sys.argv[1], sys.argv[2], sys.argv[3]); print('done')"
    )
    args = [sys.executable, "-c", code, url, str(cache / "vdsr.pt"), vdsr.sha256]
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == ["done\n"] * 2
    assert len(server.hits()) == 1
    assert listing(cache) == {"vdsr.pt"} and hub.file_sha256(cache / "vdsr.pt") == vdsr.sha256


# --------------------------------------------------------------------------- the CLI


def test_cli_up_with_a_registry_name(
    vdsr: registry.Weights,
    server: FileServer,
    cache: Path,
    photo: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = run_cli(capsys, "up", "photo.png", "-s", "3", "--model", "vdsr", "-o", "out.png")
    assert run.code == 0, run.err
    assert "vdsr x3" in run.err and run.out == ""
    assert Image.open("out.png").size == (96, 72) and listing(cache) == {"vdsr.pt"}
    up = ["up", "photo.png", "-s", "2", "--model", "vdsr", "-o", "b.png", "-q"]
    assert run_cli(capsys, *up, "--cache-dir", "mine").code == 0
    assert listing(Path("mine")) == {"vdsr.pt"} and len(server.hits()) == 2


def test_cli_up_checks_the_output_before_downloading(
    vdsr: registry.Weights,
    server: FileServer,
    cache: Path,
    photo: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("out.png").write_bytes(b"keep me")
    run = run_cli(capsys, "up", "photo.png", "-s", "3", "--model", "vdsr", "-o", "out.png")
    one_error_line(run, 1, "already exists")
    assert server.hits() == [] and listing(cache) == set()


def test_cli_model_by_url(
    server: FileServer,
    cache: Path,
    ckpts: dict[str, Ckpt],
    photo: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = ckpts["vdsr"]
    server.serve("/runs/7/best.pt", good.data)
    url = server.url("/runs/7/best.pt")
    up = ["up", "photo.png", "-s", "2", "--model", url, "-q"]
    one_error_line(run_cli(capsys, *up, "-o", "a.png"), 2, "--sha256", url)
    one_error_line(run_cli(capsys, *up, "-o", "a.png", "--sha256", "12ab"), 2, "64 hex")
    wrong = hashlib.sha256(b"other").hexdigest()
    run = run_cli(capsys, *up, "-o", "a.png", "--sha256", wrong)
    one_error_line(run, 1, f"expected sha256 {wrong}, got {good.sha256}")
    assert listing(cache) == set()
    run = run_cli(capsys, *up, "-o", "b.png", "--sha256", good.sha256.upper())
    assert run.code == 0, run.err
    assert listing(cache) == {f"best-{good.sha256[:12]}.pt"}
    assert run_cli(capsys, *up, "-o", "c.png", "--sha256", good.sha256).code == 0
    assert len(server.hits()) == 2  # the bad pin, the good one; the third came from the cache


def test_cli_local_checkpoint_with_sha256(
    cache: Path, ckpts: dict[str, Ckpt], photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("mine.pt").write_bytes(ckpts["vdsr"].data)
    up = ["up", "photo.png", "-s", "2", "--model", "./mine.pt", "-q"]
    one_error_line(run_cli(capsys, *up, "-o", "a.png", "--sha256", SHA_A), 1, "expected", SHA_A)
    assert run_cli(capsys, *up, "-o", "a.png", "--sha256", ckpts["vdsr"].sha256).code == 0
    assert not cache.exists()  # a local file is used in place


def test_cli_download_failures_are_one_line(
    vdsr: registry.Weights,
    server: FileServer,
    cache: Path,
    photo: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    up = ["up", "photo.png", "-s", "2", "--model", "vdsr", "-o", "out.png", "-q"]
    server.then(BASE + "vdsr.pt", Reply(status=404))
    one_error_line(run_cli(capsys, *up), 1, "HTTP 404", server.url(BASE + "vdsr.pt"))
    server.then(BASE + "vdsr.pt", Reply(body=b"not it"))
    one_error_line(run_cli(capsys, *up), 1, "expected sha256", "captive portal")
    assert listing(cache) == set() and not Path("out.png").exists()


def test_cli_models_list_pull_path_verify(
    vdsr: registry.Weights,
    server: FileServer,
    cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = run_cli(capsys, "models")
    assert run.code == 0
    table = run.out.splitlines()
    assert table[0].split() == [
        "NAME", "FILE", "ARCH", "SCALES", "SIZE", "WHERE", "SET5", "Y-PSNR", "(dB)"
    ]  # fmt: skip
    assert table[-1].split()[:4] == ["vdsr", "vdsr.pt", "VDSR", "x2/3/4"]
    assert table[-1].split()[-1] == "remote"
    assert run_cli(capsys, "models", "--offline").out.splitlines()[-1].endswith("missing")

    run = run_cli(capsys, "models", "pull", "vdsr")
    assert run.code == 0 and run.out == f"vdsr.pt: downloaded: {cache / 'vdsr.pt'}\n"
    run = run_cli(capsys, "models", "pull", "--all")
    assert run.out == f"vdsr.pt: already cached: {cache / 'vdsr.pt'}\n"
    assert run_cli(capsys, "models").out.splitlines()[-1].endswith("cached")
    assert run_cli(capsys, "models", "path").out == f"{cache}\n"
    assert run_cli(capsys, "models", "path", "vdsr").out == f"{cache / 'vdsr.pt'}\n"

    run = run_cli(capsys, "models", "verify")
    assert run.code == 0 and run.out.split()[:3] == ["ok", "cache", str(cache / "vdsr.pt")]

    (cache / "vdsr.pt").write_bytes(b"\0" * vdsr.size)  # same size, wrong bytes
    run = run_cli(capsys, "models", "verify")
    one_error_line(run, 1, "1 weights file failed verification", "vdsr.pt", "pull")
    assert run.out.startswith("damaged  cache") and f"expected sha256 {vdsr.sha256}" in run.out

    run = run_cli(capsys, "models", "pull", "vdsr")  # replaces it, and says so
    assert run.code == 0 and run.err.startswith("warning: cached ")
    assert "downloaded" in run.out and hub.file_sha256(cache / "vdsr.pt") == vdsr.sha256
    assert len(server.hits()) == 2


def test_cli_models_usage_and_offline_errors(
    vdsr: registry.Weights,
    server: FileServer,
    cache: Path,
    no_network: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    one_error_line(run_cli(capsys, "models", "pull"), 2, "NAME or --all")
    one_error_line(run_cli(capsys, "models", "pull", "vdsr", "--all"), 2, "NAME or --all")
    one_error_line(run_cli(capsys, "models", "pull", "vdsr9"), 1, "vdsr9", "bicubic", "vdsr")
    run = run_cli(capsys, "models", "pull", "--all", "--offline")
    one_error_line(run, 1, server.url(BASE + "vdsr.pt"), str(cache / "vdsr.pt"))
    assert no_network == [] and listing(cache) == set()


def test_models_verify_reports_partial_and_url_files(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "No weights files to verify" in run_cli(capsys, "models", "verify").out
    cache.mkdir()
    (cache / hub.url_file_name("https://h/x.pt", SHA_A)).write_bytes(b"not matching")
    (cache / "vdsr.pt.part").write_bytes(b"half")
    run = run_cli(capsys, "models", "verify")
    assert run.code == 1 and "x-abababababab.pt" in run.err
    assert "partial" in run.out and "resumes" in run.out


def test_cli_warnings_and_errors_in_the_library_are_silent(
    vdsr: registry.Weights, server: FileServer, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The library itself prints nothing (warnings go through the warnings module)."""
    cache.mkdir()
    (cache / "vdsr.pt").write_bytes(b"rot")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load_model("vdsr")
    assert [w.category for w in caught] == [SrucWarning]
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------- locks


def test_a_lock_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    from sruc.zoo import cache as cache_mod

    (tmp_path / ".vdsr.pt.lock").mkdir()
    folder = pytest.raises(hub.DownloadError, match="is a folder where sruc keeps a lock file")
    with folder, cache_mod.locked(tmp_path / ".vdsr.pt.lock"):
        pass


@contextlib.contextmanager
def lock_held_elsewhere(lock: Path) -> Iterator[None]:
    """Another process holds the flock on ``lock`` while inside (as a download would)."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_held_lock_is_announced_and_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from sruc.zoo import cache as cache_mod

    lock = tmp_path / ".vdsr.pt.lock"
    with lock_held_elsewhere(lock):
        monkeypatch.setattr(cache_mod, "LOCK_WAIT_S", 0.5)
        said = pytest.warns(SrucWarning, match="waiting for another download of vdsr.pt")
        gave_up = pytest.raises(hub.DownloadError, match="another process has held")
        with said, gave_up, cache_mod.locked(lock):
            pass
    with cache_mod.locked(lock):  # free again: taken at once
        assert lock.exists()


def _damaged_cache_and_bundled(cache: Path, vdsr: registry.Weights, good: bytes) -> Path:
    """A damaged cached file (another process holds its lock to replace it) and a good
    bundled copy; returns the lock."""
    cache.mkdir()
    (cache / vdsr.file).write_bytes(b"rot")
    hub.BUNDLED_DIR.mkdir()
    (hub.BUNDLED_DIR / vdsr.file).write_bytes(good)
    return cache / f".{vdsr.file}.lock"


def test_a_busy_lock_uses_the_bundled_copy_at_once(
    vdsr: registry.Weights,
    ckpts: dict[str, Ckpt],
    cache: Path,
    no_network: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sruc.zoo import cache as cache_mod

    lock = _damaged_cache_and_bundled(cache, vdsr, ckpts["vdsr"].data)
    monkeypatch.setattr(cache_mod, "LOCK_WAIT_S", 0.0)  # any wait would fail at once
    with lock_held_elsewhere(lock), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        located = registry.fetch(vdsr)
    assert located == hub.Located(hub.BUNDLED_DIR / vdsr.file, "bundled")
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "using the bundled copy" in said[0] and str(lock) in said[0]
    assert (cache / vdsr.file).read_bytes() == b"rot"  # left to the lock's holder
    assert no_network == []


def test_a_busy_lock_with_no_bundled_copy_is_waited_for(
    vdsr: registry.Weights, cache: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.zoo import cache as cache_mod

    cache.mkdir()
    (cache / vdsr.file).write_bytes(b"rot")
    monkeypatch.setattr(cache_mod, "LOCK_WAIT_S", 0.3)
    said = pytest.warns(SrucWarning, match="waiting for another download of vdsr.pt")
    gave_up = pytest.raises(hub.DownloadError, match="another process has held")
    with lock_held_elsewhere(cache / f".{vdsr.file}.lock"), said, gave_up:
        registry.fetch(vdsr)
    assert no_network == []


def test_up_with_a_busy_lock_warns_once_and_writes_the_same_image(
    vdsr: registry.Weights,
    ckpts: dict[str, Ckpt],
    cache: Path,
    photo: Path,
    no_network: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sruc.zoo import cache as cache_mod

    lock = _damaged_cache_and_bundled(cache, vdsr, ckpts["vdsr"].data)
    monkeypatch.setattr(cache_mod, "LOCK_WAIT_S", 0.0)
    with lock_held_elsewhere(lock):
        run = run_cli(capsys, "up", photo, "-s", "2", "-o", "busy.png", "--precision", "fp32")
    assert run.code == 0, run.err
    warned = [line for line in run.err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "using the bundled copy" in warned[0], run.err
    # The same weights by the ordinary way: the same pixels.
    (cache / vdsr.file).unlink()
    run = run_cli(capsys, "up", photo, "-s", "2", "-o", "plain.png", "--precision", "fp32", "-q")
    assert run.code == 0, run.err
    assert (photo.parent / "busy.png").read_bytes() == (photo.parent / "plain.png").read_bytes()
