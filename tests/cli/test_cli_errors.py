"""The CLI facing bad input the way a user meets it.

Every failure must be one line on stderr starting with ``error: `` that names
the problem, exit 1 (runtime) or 2 (usage), print nothing on stdout, show no
traceback, leave no output or ``.{stem}.*.part`` temporary behind, and never
touch an input file. Most cases run in-process through :func:`sruc.cli.main`;
a few run as a real ``python -m sruc`` process.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from helpers import Run, run_cli, smooth_rgb
from sruc.files import atomic as fsutil

# --------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``, hidden ones included, with its bytes (None: a folder)."""
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def assert_one_line_error(run: Run, code: int, *needles: str) -> str:
    """Exit ``code``, empty stdout, one ``error: `` line on stderr containing ``needles``."""
    assert "Traceback" not in run.out + run.err, run
    assert run.out == "", run
    lines = run.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {run.err!r}"
    line = lines[0]
    assert line.startswith("error: ") and line[len("error: ") :].strip(), line
    # The catch-all for bugs says "unexpected ... please report it": never for a known case.
    assert "unexpected" not in line and "SRUC_DEBUG" not in line, line
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    assert run.code == code, f"exit {run.code}, expected {code}: {line!r}"
    return line


def check_fails(
    capsys: pytest.CaptureFixture[str],
    root: Path,
    args: list[str],
    code: int,
    needles: tuple[str, ...],
) -> str:
    """Run a failing command; nothing under ``root`` may be created, removed or changed."""
    before = snapshot(root)
    line = assert_one_line_error(run_cli(capsys, *args), code, *needles)
    after = snapshot(root)
    assert sorted(after) == sorted(before), f"files changed: {set(after) ^ set(before)}"
    assert after == before, "an existing file was modified"
    return line


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def write_png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    Image.fromarray(smooth_rgb(h, w, seed)).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that declares ``width`` x ``height`` RGB pixels but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = zlib.compress(b"\x00" * (1 + 3 * 8))  # one short row
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def work(tmp_path: Path, rgb_png: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the current folder, holding photo.png (32x24) and an empty out/."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    assert rgb_png == tmp_path / "photo.png"
    return tmp_path


OUT = "out/result.png"

# --------------------------------------------------------------------------- bad inputs


def _missing(d: Path) -> str:
    return "missing.png"


def _folder(d: Path) -> str:
    (d / "album").mkdir()
    return "album"


def _text_as_jpg(d: Path) -> str:
    (d / "photo.jpg").write_text("this is a text file, not a JPEG\n")
    return "photo.jpg"


def _truncated_png(d: Path) -> str:
    data = (d / "photo.png").read_bytes()
    (d / "half.png").write_bytes(data[: len(data) // 2])
    return "half.png"


def _truncated_jpeg(d: Path) -> str:
    Image.fromarray(smooth_rgb(24, 32)).save(d / "full.jpg", quality=90)
    data = (d / "full.jpg").read_bytes()
    (d / "half.jpg").write_bytes(data[: len(data) // 2])
    return "half.jpg"


def _zero_bytes(d: Path) -> str:
    (d / "empty.png").touch()
    return "empty.png"


def _small(d: Path) -> str:
    write_png(d / "small.png", 20, 20)
    return "small.png"


def _huge_header(d: Path) -> str:
    png_header_only(d / "huge.png", 20000, 20000)
    return "huge.png"


@pytest.mark.parametrize(
    ("make", "extra", "needles"),
    [
        pytest.param(_missing, [], ("missing.png", "no such file"), id="missing"),
        pytest.param(_folder, [], ("album", "folder"), id="directory"),
        pytest.param(_text_as_jpg, [], ("photo.jpg", "not an image"), id="text-named-jpg"),
        pytest.param(_truncated_png, [], ("half.png", "truncated"), id="truncated-png"),
        pytest.param(_truncated_jpeg, [], ("half.jpg", "truncated"), id="truncated-jpeg"),
        pytest.param(_zero_bytes, [], ("empty.png", "empty"), id="zero-bytes"),
        pytest.param(
            _small,
            ["--max-pixels", "100"],
            ("small.png", "20x20", "100", "--max-pixels"),
            id="over-max-pixels",
        ),
        pytest.param(
            _small,
            ["--max-pixels", "399"],
            ("small.png", "400", "399", "--max-pixels"),
            id="one-over-max-pixels",
        ),
        pytest.param(
            _huge_header, [], ("huge.png", "20000x20000", "--max-pixels"), id="bomb-default-limit"
        ),
    ],
)
def test_bad_input_file(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    make: Callable[[Path], str],
    extra: list[str],
    needles: tuple[str, ...],
) -> None:
    src = make(work)
    check_fails(capsys, work, ["up", src, "-o", OUT, *extra], 1, needles)


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (10000, 9000)])
def test_declared_bomb_fails_fast_without_decoding(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
    width: int,
    height: int,
) -> None:
    """Over Pillow's own limits (2x and 1x): sruc's message, from the header alone."""
    png_header_only(work / "bomb.png", width, height)
    assert (work / "bomb.png").stat().st_size < 200
    decoded: list[object] = []
    original_load = ImageFile.ImageFile.load

    def spy_load(self: ImageFile.ImageFile) -> Any:
        decoded.append(self)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    check_fails(
        capsys,
        work,
        ["up", "bomb.png", "-o", OUT],
        1,
        ("bomb.png", f"{width}x{height}", "--max-pixels"),
    )
    assert decoded == [], "the pixels were decoded before the size check"


def test_raising_max_pixels_lets_the_image_through(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    write_png(work / "small.png", 20, 20)
    check_fails(
        capsys, work, ["up", "small.png", "-o", OUT, "--max-pixels", "100"], 1, ("--max-pixels",)
    )
    # The limit bounds the output too: 400 admits the input, not its 40x40 output.
    check_fails(capsys, work, ["up", "small.png", "-o", OUT, "--max-pixels", "400"], 1, ("40x40",))
    run = run_cli(capsys, "up", "small.png", "-o", OUT, "--max-pixels", "1600", "-q")
    assert (run.code, run.out, run.err) == (0, "", "")
    assert png_size(work / OUT) == (40, 40)


@pytest.mark.parametrize(
    ("scale", "model", "size"),
    [
        ("2", "bicubic", (2, 2)),
        ("1.5", "bicubic", (2, 2)),
        ("3", "vdsr", (3, 3)),
        ("3", "srcnn", (3, 3)),
    ],
)
def test_one_pixel_image_is_upscaled(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    tiny_vdsr_ckpt: Path,
    tiny_srcnn_ckpt: Path,
    scale: str,
    model: str,
    size: tuple[int, int],
) -> None:
    """A 1x1 image is a valid image: it is upscaled, not refused."""
    Image.new("RGB", (1, 1), (10, 200, 30)).save(work / "dot.png")
    before = (work / "dot.png").read_bytes()
    spec = {"bicubic": "bicubic", "vdsr": str(tiny_vdsr_ckpt), "srcnn": str(tiny_srcnn_ckpt)}[model]
    run = run_cli(capsys, "up", "dot.png", "-s", scale, "--model", spec, "-o", OUT, "-q")
    assert (run.code, run.out, run.err) == (0, "", "")
    assert png_size(work / OUT) == size
    assert (work / "dot.png").read_bytes() == before
    assert sorted(p.name for p in (work / "out").iterdir()) == ["result.png"]


# --------------------------------------------------------------------------- usage errors (exit 2)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        pytest.param(["-s", "0"], ("scale", "greater than 1", "0"), id="scale-0"),
        pytest.param(["-s", "1"], ("scale", "greater than 1", "1"), id="scale-1"),
        pytest.param(["-s", "-2"], ("scale", "greater than 1", "-2"), id="scale-minus-2"),
        pytest.param(["-s", "100"], ("scale", "100", "at most 8"), id="scale-100"),
        pytest.param(["-s", "abc"], ("scale", "abc"), id="scale-not-a-number"),
        pytest.param(["-s", "nan"], ("scale", "nan"), id="scale-nan"),
        pytest.param(["-s", "inf"], ("scale", "inf"), id="scale-inf"),
        pytest.param(
            ["-o", "out/result.xyz"], ("result.xyz", ".xyz", ".png"), id="unknown-extension"
        ),
        pytest.param(["-o", "out/result"], ("result", "no extension"), id="no-extension"),
        pytest.param(["--device", "banana"], ("banana", "device"), id="unknown-device"),
        pytest.param(["--quality", "0"], ("--quality", "0"), id="quality-0"),
        pytest.param(["--tile", "-1"], ("--tile", "-1"), id="tile-negative"),
        pytest.param(["--max-pixels", "0"], ("--max-pixels", "0"), id="max-pixels-0"),
        pytest.param(["--bogus"], ("--bogus",), id="unknown-option"),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], work: Path, args: list[str], needles: tuple[str, ...]
) -> None:
    opts = args if "-o" in args else [*args, "-o", OUT]
    check_fails(capsys, work, ["up", "photo.png", *opts], 2, needles)


def test_missing_input_argument(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    check_fails(capsys, work, ["up"], 2, ("missing argument", "INPUT"))


# --------------------------------------------------------------------------- outputs


def _same(d: Path) -> str:
    return "photo.png"


def _dotdot(d: Path) -> str:
    (d / "sub").mkdir()
    return "./sub/../photo.png"


def _absolute(d: Path) -> str:
    return str(d / "photo.png")


def _symlink(d: Path) -> str:
    (d / "link.png").symlink_to(d / "photo.png")
    return "link.png"


def _hardlink(d: Path) -> str:
    os.link(d / "photo.png", d / "twin.png")
    return "twin.png"


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(_same, id="same-path"),
        pytest.param(_dotdot, id="dot-dot-spelling"),
        pytest.param(_absolute, id="absolute-spelling"),
        pytest.param(
            _symlink, id="symlink", marks=pytest.mark.skipif(os.name == "nt", reason="POSIX links")
        ),
        pytest.param(
            _hardlink,
            id="hardlink",
            marks=pytest.mark.skipif(os.name == "nt", reason="POSIX links"),
        ),
    ],
)
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_output_is_the_input(
    capsys: pytest.CaptureFixture[str], work: Path, spell: Callable[[Path], str], overwrite: bool
) -> None:
    dst = spell(work)
    flags = ["--overwrite"] if overwrite else []
    check_fails(capsys, work, ["up", "photo.png", "-o", dst, *flags], 2, ("is the input",))


def _notes_file(d: Path) -> str:
    (d / "notes.txt").write_text("a file, not a folder\n")
    return "notes.txt/result.png"


def _folder_named_png(d: Path) -> str:
    (d / "out" / "result.png").mkdir()
    return "out/result.png"


def _existing(d: Path) -> str:
    write_png(d / "out" / "result.png", 5, 7, seed=3)
    return "out/result.png"


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        pytest.param(
            lambda d: "nowhere/result.png", ("nowhere", "does not exist"), id="missing-folder"
        ),
        pytest.param(_notes_file, ("notes.txt", "not a folder"), id="parent-is-a-file"),
        pytest.param(_folder_named_png, ("result.png", "is a folder"), id="output-is-a-folder"),
        pytest.param(
            _existing, ("result.png", "already exists", "--overwrite"), id="exists-no-overwrite"
        ),
    ],
)
def test_bad_output_path(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    make: Callable[[Path], str],
    needles: tuple[str, ...],
) -> None:
    dst = make(work)
    check_fails(capsys, work, ["up", "photo.png", "-o", dst], 1, needles)


def test_existing_output_is_replaced_with_overwrite(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    old = _existing(work)
    before_input = (work / "photo.png").read_bytes()
    run = run_cli(capsys, "up", "photo.png", "-o", old, "--overwrite", "-q")
    assert (run.code, run.out, run.err) == (0, "", "")
    assert png_size(work / old) == (64, 48)
    assert (work / "photo.png").read_bytes() == before_input
    assert sorted(p.name for p in (work / "out").iterdir()) == ["result.png"]


def test_unwritable_folder_is_refused_before_work(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores permissions, so the check itself is told the folder is read-only."""
    real_access = os.access
    locked = (work / "out").resolve()

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and Path(path).resolve() == locked:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    check_fails(capsys, work, ["up", "photo.png", "-o", OUT], 1, ("out", "permission denied"))


def test_temporary_file_cannot_be_created(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder looks writable but creating the file there fails (after the upscale)."""
    real_mkstemp = tempfile.mkstemp
    locked = (work / "out").resolve()

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        where = kwargs.get("dir")
        if where is not None and Path(where).resolve() == locked:
            raise PermissionError(13, "Permission denied", str(where))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", mkstemp)
    check_fails(capsys, work, ["up", "photo.png", "-o", OUT], 1, ("out", "permission denied"))


def test_disk_full_while_writing_leaves_nothing(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.files import atomic

    written: list[int] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if written:  # the first chunk lands, then the disk is full
            raise OSError(28, "No space left on device")
        written.append(real_write(fd, bytes(data[:100])))
        return written[-1]

    monkeypatch.setattr(atomic.os, "write", write)
    check_fails(
        capsys, work, ["up", "photo.png", "-o", OUT], 1, ("result.png", "no space left on device")
    )
    assert len(written) == 1 and written[0] > 0  # part of the file was on disk, then removed


def test_disk_full_with_overwrite_keeps_the_old_output(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.files import atomic

    _existing(work)

    def write(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", write)
    check_fails(
        capsys, work, ["up", "photo.png", "-o", OUT, "--overwrite"], 1, ("no space left on device",)
    )


def test_rename_into_place_fails(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == "result.png":
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    check_fails(
        capsys, work, ["up", "photo.png", "-o", OUT], 1, ("result.png", "permission denied")
    )


# --------------------------------------------------------------------------- models and devices


def _bare_state_dict(d: Path, vdsr: Path, srcnn: Path) -> str:
    from sruc.archs.vdsr import VDSR

    torch.save(VDSR(depth=3, width=4).state_dict(), d / "bare.pt")
    return "bare.pt"


def _foreign_dict(d: Path, vdsr: Path, srcnn: Path) -> str:
    torch.save({"model": 1}, d / "foreign.pt")
    return "foreign.pt"


def _random_bytes(d: Path, vdsr: Path, srcnn: Path) -> str:
    (d / "random.pt").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    )
    return "random.pt"


def _truncated_ckpt(d: Path, vdsr: Path, srcnn: Path) -> str:
    data = vdsr.read_bytes()
    (d / "cut.pt").write_bytes(data[: len(data) // 2])
    return "cut.pt"


def _zeroed_ckpt(d: Path, vdsr: Path, srcnn: Path) -> str:
    data = vdsr.read_bytes()  # the zip directory survives, the members do not
    (d / "zeroed.pt").write_bytes(data[:200] + bytes(len(data) - 400) + data[-200:])
    return "zeroed.pt"


@pytest.mark.parametrize(
    ("make", "scale", "needles"),
    [
        pytest.param(
            lambda d, v, s: "superres9000", "2", ("superres9000", "bicubic"), id="unknown-name"
        ),
        pytest.param(
            lambda d, v, s: "srcnn",
            "5",
            ("srcnn", "x2/3/4 only", "VDSR"),
            id="scale-without-weights",
        ),
        pytest.param(
            lambda d, v, s: "nothere.pt", "2", ("nothere.pt", "does not exist"), id="missing-ckpt"
        ),
        pytest.param(
            _bare_state_dict,
            "2",
            ("bare.pt", "not a sruc checkpoint", "state_dict"),
            id="bare-state-dict",
        ),
        pytest.param(
            _foreign_dict, "2", ("foreign.pt", "not a sruc checkpoint"), id="foreign-dict"
        ),
        pytest.param(_random_bytes, "2", ("random.pt", "corrupt"), id="random-bytes"),
        pytest.param(_truncated_ckpt, "2", ("cut.pt", "corrupt"), id="truncated-ckpt"),
        pytest.param(_zeroed_ckpt, "2", ("zeroed.pt", "corrupt"), id="zeroed-ckpt"),
        pytest.param(lambda d, v, s: s.name, "2", ("x3", "x2", "srcnn"), id="srcnn-x3-at-x2"),
    ],
)
def test_bad_model(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    tiny_vdsr_ckpt: Path,
    tiny_srcnn_ckpt: Path,
    make: Callable[[Path, Path, Path], str],
    scale: str,
    needles: tuple[str, ...],
) -> None:
    spec = make(work, tiny_vdsr_ckpt, tiny_srcnn_ckpt)
    check_fails(
        capsys, work, ["up", "photo.png", "-s", scale, "--model", spec, "-o", OUT], 1, needles
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_requested_without_cuda(
    capsys: pytest.CaptureFixture[str], work: Path, device: str
) -> None:
    line = check_fails(
        capsys,
        work,
        ["up", "photo.png", "--device", device, "-o", OUT],
        1,
        (device, "--device cpu"),
    )
    assert "no cuda support" in line.lower() or "no nvidia gpu" in line.lower(), line


# --------------------------------------------------------------------------- psnr


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        pytest.param(
            ["photo.png", "narrow.png"],
            1,
            ("photo.png", "32x24", "narrow.png", "30x24"),
            id="sizes-differ",
        ),
        pytest.param(
            ["photo.png", "nope.png"], 1, ("nope.png", "no such file"), id="second-missing"
        ),
        pytest.param(
            ["nope.png", "photo.png"], 1, ("nope.png", "no such file"), id="first-missing"
        ),
        pytest.param(
            ["photo.png", "notes.png"], 1, ("notes.png", "not an image"), id="not-an-image"
        ),
        pytest.param(
            ["photo.png", "photo.png", "--shave", "20"],
            1,
            ("shave", "20", "32x24"),
            id="shave-too-big",
        ),
        pytest.param(
            ["photo.png", "photo.png", "--shave", "12"], 1, ("shave", "12"), id="shave-everything"
        ),
        pytest.param(
            ["photo.png", "photo.png", "--shave", "-1"], 2, ("--shave", "-1"), id="shave-negative"
        ),
        pytest.param(["photo.png"], 2, ("missing argument",), id="one-file"),
    ],
)
def test_psnr_errors(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    args: list[str],
    code: int,
    needles: tuple[str, ...],
) -> None:
    write_png(work / "narrow.png", 24, 30, seed=1)
    (work / "notes.png").write_text("not a picture\n")
    check_fails(capsys, work, ["psnr", *args], code, needles)


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"),
    ],
    ids=["python", "torch"],
)
def test_out_of_memory_anywhere_is_an_expected_fault(
    capsys: pytest.CaptureFixture[str],
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    import sruc.measure.quality as quality

    def fails(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(quality, "compare", fails)
    monkeypatch.delenv("SRUC_DEBUG", raising=False)
    write_png(work / "a.png", 24, 30, seed=1)
    check_fails(capsys, work, ["psnr", "a.png", "a.png"], 1, ("out of memory", "free some"))


def test_a_bug_is_reported_as_unexpected(
    capsys: pytest.CaptureFixture[str], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sruc.measure.quality as quality

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("index 3 is out of bounds")

    monkeypatch.setattr(quality, "compare", fails)
    monkeypatch.delenv("SRUC_DEBUG", raising=False)
    write_png(work / "a.png", 24, 30, seed=1)
    r = run_cli(capsys, "psnr", "a.png", "a.png")
    assert r.code == 1 and r.out == ""
    assert r.err.strip() == (
        "error: unexpected RuntimeError: index 3 is out of bounds "
        "(set SRUC_DEBUG=1 for a traceback, and please report it)"
    )


# --------------------------------------------------------------------------- good paths


def test_up_writes_the_output_quietly_on_stdout(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    before = snapshot(work)
    run = run_cli(capsys, "up", "photo.png", "-s", "2", "-o", "out.png")
    assert run.code == 0, run
    assert run.out == ""
    assert "error" not in run.err and "Traceback" not in run.err
    assert png_size(work / "out.png") == (64, 48)
    after = snapshot(work)
    assert set(after) - set(before) == {"out.png"}
    assert all(after[k] == v for k, v in before.items())


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_output_file_gets_the_usual_permissions(
    capsys: pytest.CaptureFixture[str], work: Path
) -> None:
    """A new output is readable like any file the user creates (umask applies), not 0600."""
    umask = os.umask(0o022)
    try:
        run = run_cli(capsys, "up", "photo.png", "-o", OUT, "-q")
    finally:
        os.umask(umask)
    assert run.code == 0, run
    mode = stat.S_IMODE((work / OUT).stat().st_mode)
    assert mode == 0o644, f"output written with mode {mode:o}, expected 644"


def test_psnr_identical_is_inf(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    run = run_cli(capsys, "psnr", "photo.png", "photo.png")
    assert (run.code, run.out, run.err) == (0, "inf\n", "")


def test_psnr_json(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    write_png(work / "other.png", 24, 32, seed=5)
    run = run_cli(capsys, "psnr", "photo.png", "other.png", "--json")
    assert (run.code, run.err) == (0, "")
    assert run.out.count("\n") == 1
    data = json.loads(run.out)
    assert isinstance(data["psnr"], float) and 0 < data["psnr"] < 100


# --------------------------------------------------------------------------- real processes


@pytest.mark.parametrize(
    ("args", "code", "stdout", "needles"),
    [
        pytest.param(
            ["up", "missing.png", "-o", OUT],
            1,
            "",
            ("missing.png", "no such file"),
            id="missing-input",
        ),
        pytest.param(
            ["up", "photo.png", "-s", "100", "-o", OUT], 2, "", ("scale", "100"), id="scale-100"
        ),
        pytest.param(
            ["psnr", "photo.png", "narrow.png"], 1, "", ("32x24", "30x24"), id="psnr-sizes"
        ),
        pytest.param(["psnr", "photo.png", "photo.png"], 0, "inf\n", (), id="psnr-inf"),
    ],
)
def test_real_process(
    work: Path, args: list[str], code: int, stdout: str, needles: tuple[str, ...]
) -> None:
    write_png(work / "narrow.png", 24, 30, seed=1)
    before = snapshot(work)
    proc = subprocess.run(
        [sys.executable, "-m", "sruc", *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SRUC_DEBUG"},
        check=False,
    )
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    if code == 0:
        assert (run.code, run.out, run.err) == (0, stdout, ""), run
    else:
        assert_one_line_error(run, code, *needles)
    assert snapshot(work) == before
