"""Hostile paths, metadata and option values: one clear line each, or the image
processed with a warning; never an "unexpected ... please report it"."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import smooth_rgb
from sruc.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "please report" not in err and all(w in err for w in words), err


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize(("kind", "payload", "what"), [
    (b"zTXt", b"Comment\0\0", "compressed text"),
    (b"iTXt", b"Comment\0\1\0\0\0", "text"),
    (b"iCCP", b"profile\0\0", "ICC profile"),
])  # fmt: skip
def test_a_huge_metadata_chunk_is_dropped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: bytes, payload: bytes, what: str
) -> None:
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "base.png")
    data = (tmp_path / "base.png").read_bytes()
    bomb = _chunk(kind, payload + zlib.compress(b"A" * (20 << 20)))  # 20 MB inflated
    at = data.index(b"IDAT") - 4
    (tmp_path / "in.png").write_bytes(data[:at] + bomb + data[at:])
    code, err = run(capsys, "up", tmp_path / "in.png", "--model", "bicubic", "-o",
                    tmp_path / "out.png")  # fmt: skip
    assert code == 0, err
    assert f"warning: {tmp_path / 'in.png'}: its {what}" in err and "left out" in err
    assert err.count("warning:") == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")).shape, (16, 16, 3))
    # Pillow itself, outside sruc's reads, still refuses the chunk as it always did.
    with pytest.raises(ValueError, match="too large"):
        Image.open(tmp_path / "in.png").load()


def test_special_files_are_not_regular_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "pipe")
    for src, kind in ((tmp_path / "pipe", "a FIFO"), (Path("/dev/zero"), "a character device")):
        code, err = run(capsys, "up", src, "-o", tmp_path / "out.png")
        assert code == 1
        one_error(err, "is not a regular file", kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_symlink_loop_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, err = run(capsys, "up", tmp_path / "a", "-o", tmp_path / "out.png")
    assert code == 1
    one_error(err, "cannot read", "symbolic links")
    code, err = run(capsys, "up", tmp_path / "a", "-o", tmp_path / "a")  # the output too
    assert code in (1, 2) and "please report" not in err


def test_an_output_name_at_the_length_limit_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "in.png")
    out = tmp_path / ("x" * 251 + ".png")  # 255 bytes, the usual limit
    code, err = run(capsys, "up", tmp_path / "in.png", "--model", "bicubic", "-o", out)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.png", out.name])


@pytest.mark.parametrize(("args", "words"), [
    (["-s", "8.0000001"], ("scale 8.0000001 is too large",)),
    (["--device", "cpu:1"], ("--device cpu:1", "takes no index")),
])  # fmt: skip
def test_option_values_are_shown_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: tuple[str, ...]
) -> None:
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "in.png")
    code, err = run(capsys, "up", tmp_path / "in.png", "--model", "bicubic", "-o",
                    tmp_path / "out.png", *args)  # fmt: skip
    assert code == 2
    one_error(err, *words)


def test_a_tile_smaller_than_its_margins_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_vdsr_ckpt: Path
) -> None:
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "in.png")
    code, err = run(capsys, "up", tmp_path / "in.png", "--model", tiny_vdsr_ckpt, "--tile", "1",
                    "-o", tmp_path / "out.png")  # fmt: skip
    assert code == 2
    one_error(err, "--tile 1 is too small", "overlap by 6 px", "at least 12")
    assert not (tmp_path / "out.png").exists()


def test_a_job_too_big_for_memory_is_refused_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.engine import memory, pipeline

    Image.fromarray(smooth_rgb(40, 50)).save(tmp_path / "in.png")
    monkeypatch.setattr(memory, "available_bytes", lambda: 50 * 10**6)
    monkeypatch.setattr(pipeline, "_compute", lambda *a: pytest.fail("started the work"))
    code, err = run(capsys, "up", tmp_path / "in.png", "-s", "8", "--model", "bicubic", "-o",
                    tmp_path / "out.png")  # fmt: skip
    assert code == 1
    one_error(err, "the x8 output would be 400x320", "50 MB is available", "smaller scale")
    assert not (tmp_path / "out.png").exists()
    assert memory.upscale_bytes(72000, 72000, 3) > 300 * 10**9  # the 9000x9000 x8 case


def test_an_allocation_failure_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sruc.engine import banded, pipeline

    def fail(*a: object, **kw: object) -> None:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        )

    Image.fromarray(smooth_rgb(40, 50)).save(tmp_path / "in.png")
    monkeypatch.setattr(pipeline, "_compute", fail)
    monkeypatch.setattr(banded, "upscale_banded", fail)
    code, err = run(capsys, "up", tmp_path / "in.png", "-s", "2", "--model", "bicubic", "-o",
                    tmp_path / "out.png")  # fmt: skip
    assert code == 1
    one_error(err, "out of memory upscaling 50x40 x2 to 100x80 on cpu")
