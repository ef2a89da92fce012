"""Tests for sruc.files.highdepth: 16-bit PNG/TIFF reading and writing.

Every full-depth check compares against an independent source of truth:
files built here byte by byte (with a deliberately simple, loop-based PNG
filter and TIFF layout, LZW and PackBits encoders), files written by Pillow
where Pillow can write them (16-bit gray), Pillow's 8-bit decoding of the same
files, and small reference decoders here for the writers' output.

The PNG tests run with both colour backends: imagecodecs (libpng, the
``codecs`` extra; skipped where it is not installed) and pypng (pure Python).
"""

from __future__ import annotations

import io
import logging
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, features

from sruc.errors import InputError, OutputError
from sruc.files import highdepth
from sruc.files.highdepth import HighDepth, read_high_depth, write_png16, write_tiff16

HAS_LIBTIFF = features.check("libtiff")
needs_libtiff = pytest.mark.skipif(not HAS_LIBTIFF, reason="Pillow built without libtiff")
HAS_CODECS = highdepth._codecs() is not None
needs_codecs = pytest.mark.skipif(not HAS_CODECS, reason="imagecodecs (sruc[codecs]) missing")

COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
ICC = b"not a real profile, but bytes are bytes " * 7
# A minimal little-endian TIFF-structured EXIF block: one IFD with no entries.
EXIF = b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"


def _random(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, size=shape, dtype=np.uint16)


def _read(path: Path) -> HighDepth | None:
    return read_high_depth(lambda: Image.open(path))


@pytest.fixture(params=[pytest.param("codecs", marks=needs_codecs), "pypng"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The PNG colour codec under test: imagecodecs where installed, then pypng."""
    if request.param == "pypng":
        monkeypatch.setattr(highdepth, "_codecs", lambda: None)
    return str(request.param)


# --------------------------------------------------------------------------- reference PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _predict(kind: int, a: int, b: int, c: int) -> int:
    return (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]


def _filter_rows(image: np.ndarray, kinds: Sequence[int]) -> bytes:
    """Scanlines of ``image``, row y with filter type kinds[y], one byte at a time."""
    height, width, channels = image.shape
    bpp = 2 * channels
    prior = bytes(width * bpp)
    out = bytearray()
    for y in range(height):
        row = image[y].astype(">u2").tobytes()
        kind = kinds[y]
        out.append(kind)
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            c = prior[i - bpp] if i >= bpp else 0
            out.append((x - _predict(kind, a, prior[i], c)) & 0xFF)
        prior = row
    return bytes(out)


def _cycle(first: int, rows: int) -> list[int]:
    """Filter types cycling through all five, starting at ``first``."""
    return [(first + y) % 5 for y in range(rows)]


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)


def _png_file(
    image: np.ndarray, *, interlace: bool = False, extra_chunks: Sequence[bytes] = ()
) -> bytes:
    """A 16-bit PNG built by hand, every row using a different filter type."""
    height, width, channels = image.shape
    if interlace:
        raw = b"".join(
            _filter_rows(image[y0::dy, x0::dx], _cycle(n, len(image[y0::dy])))
            for n, (x0, y0, dx, dy) in enumerate(ADAM7)
            if image[y0::dy, x0::dx].size
        )
    else:
        raw = _filter_rows(image, _cycle(0, height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, COLOUR_TYPE[channels], 0, 0, int(interlace))
    idat = zlib.compress(raw)
    half = len(idat) // 2  # two IDAT chunks, as real encoders often write
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(extra_chunks)
        + _chunk(b"IDAT", idat[:half])
        + _chunk(b"IDAT", idat[half:])
        + _chunk(b"IEND", b"")
    )


def _decode_png(data: bytes) -> tuple[list[bytes], np.ndarray]:
    """Chunk names and samples of a non-interlaced 16-bit PNG, decoded naively."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names, idat = 8, [], b""
    width = height = colour_type = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        names.append(kind)
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (16, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = {v: k for k, v in COLOUR_TYPE.items()}[colour_type]
    bpp, stride = 2 * channels, width * 2 * channels
    raw = zlib.decompress(idat)
    assert len(raw) == height * (stride + 1)
    prior = bytearray(stride)
    rows = bytearray()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        assert kind <= 4
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            c = prior[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + _predict(kind, a, prior[i], c)) & 0xFF
        rows += line
        prior = line
    samples = np.frombuffer(bytes(rows), dtype=">u2").reshape(height, width, channels)
    return names, samples.astype(np.uint16)


# --------------------------------------------------------------------------- reference TIFF


def _lzw(data: bytes) -> bytes:
    """TIFF LZW of ``data`` using literal codes only: 9-bit codes, MSB first.

    A ClearCode (256) every 250 literals keeps the decoder's table below 511
    entries, so the code width never grows; EndOfInformation (257) closes it.
    """
    codes: list[int] = []
    for start in range(0, len(data), 250):
        codes.append(256)
        codes.extend(data[start : start + 250])
    codes.append(257)
    bits = "".join(f"{code:09b}" for code in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _packbits(data: bytes) -> bytes:
    """PackBits with literal runs only: a header byte n - 1, then n bytes (n <= 128)."""
    return b"".join(
        bytes([len(data[i : i + 128]) - 1]) + data[i : i + 128] for i in range(0, len(data), 128)
    )


def _tiff_file(
    image: np.ndarray,
    *,
    order: str = "<",
    compression: int = 1,
    predictor: int = 1,
    extra: int | None = None,
    photometric: int | None = None,
    tile: int | None = None,
    rows_per_strip: int = 3,
    planar: bool = False,
    more_tags: Sequence[tuple[int, int, list[int]]] = (),
) -> bytes:
    """A 16-bit TIFF built by hand: strips or tiles, either byte order, chunky or planar."""
    height, width, channels = image.shape

    def encode(block: np.ndarray) -> bytes:
        samples = block.astype(np.int64)
        if predictor == 2:
            samples[:, 1:] -= block[:, :-1].astype(np.int64)
        data = (samples % 65536).astype(order + "u2").tobytes()
        coders = {8: zlib.compress, 5: _lzw, 32773: _packbits}
        return coders[compression](data) if compression in coders else data

    if tile:
        # Tiles cover the image on a grid and are padded at the right/bottom.
        padded = np.zeros((-(-height // tile) * tile, -(-width // tile) * tile, channels))
        padded[:height, :width] = image
        blocks = [
            encode(padded[y : y + tile, x : x + tile].astype(np.uint16))
            for y in range(0, padded.shape[0], tile)
            for x in range(0, padded.shape[1], tile)
        ]
        layout = [(322, 3, [tile]), (323, 3, [tile]), (324, 4, None), (325, 4, None)]
    else:
        # Planar configuration 2: all strips of the first sample, then the next.
        planes = [image[..., c : c + 1] for c in range(channels)] if planar else [image]
        blocks = [
            encode(plane[y : y + rows_per_strip])
            for plane in planes
            for y in range(0, height, rows_per_strip)
        ]
        layout = [(273, 4, None), (278, 3, [rows_per_strip]), (279, 4, None)]
    tags = [
        (256, 3, [width]),
        (257, 3, [height]),
        (258, 3, [16] * channels),
        (259, 3, [compression]),
        (262, 3, [photometric if photometric is not None else (1 if channels < 3 else 2)]),
        (277, 3, [channels]),
        (284, 3, [2 if planar else 1]),
        *layout,
        *more_tags,
    ]
    if predictor != 1:
        tags.append((317, 3, [predictor]))
    if extra is not None:
        tags.append((338, 3, [extra]))
    tags.sort()

    def pack(kind: int, values: list[int]) -> bytes:
        return struct.pack(f"{order}{len(values)}{'H' if kind == 3 else 'I'}", *values)

    ifd_end = 8 + 2 + 12 * len(tags) + 4
    big = sum(len(pack(k, v or [0] * len(blocks))) for _, k, v in tags)
    data_start = ifd_end + big
    offsets = list(np.cumsum([data_start] + [len(b) for b in blocks[:-1]]))
    entries, values, pos = [], b"", ifd_end
    for tag, kind, vals in tags:
        if vals is None:
            vals = offsets if tag in (273, 324) else [len(b) for b in blocks]
        packed = pack(kind, [int(v) for v in vals])
        if len(packed) <= 4:
            entries.append(
                struct.pack(f"{order}HHI", tag, kind, len(vals)) + packed.ljust(4, b"\0")
            )
        else:
            entries.append(struct.pack(f"{order}HHII", tag, kind, len(vals), pos))
            values += packed
            pos += len(packed)
    # Every value placed above is counted in ``big``; pad to where the data starts.
    values = values.ljust(big, b"\0")
    header = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(f"{order}I", 8)
    ifd = struct.pack(f"{order}H", len(tags)) + b"".join(entries) + struct.pack(f"{order}I", 0)
    return header + ifd + values + b"".join(blocks)


def _decode_tiff(data: bytes) -> tuple[dict[int, Any], np.ndarray]:
    """Tags and samples of a chunky, striped 16-bit TIFF, decoded naively."""
    order = {b"II": "<", b"MM": ">"}[data[:2]]
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    sizes = {3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 7: ("B", 1)}
    tags: dict[int, Any] = {}
    for n in range(count):
        tag, kind, num, field = struct.unpack(
            order + "HHI4s", data[ifd + 2 + 12 * n : ifd + 14 + 12 * n]
        )
        fmt, size = sizes[kind]
        raw = field if num * size <= 4 else data[struct.unpack(order + "I", field)[0] :]
        raw = raw[: num * size]
        tags[tag] = raw if kind == 7 else list(struct.unpack(order + fmt * num, raw))
    width, height, channels = tags[256][0], tags[257][0], tags[277][0]
    strips = [data[o : o + c] for o, c in zip(tags[273], tags[279], strict=True)]
    if tags[259] == [8]:
        strips = [zlib.decompress(s) for s in strips]
    samples = np.frombuffer(b"".join(strips), dtype=order + "u2").astype(np.int64)
    samples = samples.reshape(height, width, channels)
    if tags.get(317) == [2]:
        samples = np.cumsum(samples, axis=1) % 65536
    return tags, samples.astype(np.uint16)


# --------------------------------------------------------------------------- reading PNG


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_png_all_filter_types_read_exactly(
    tmp_path: Path, channels: int, interlace: bool, backend: str
) -> None:
    image = _random((11, 13, channels), seed=channels)
    path = tmp_path / "in.png"
    path.write_bytes(_png_file(image, interlace=interlace))

    result = _read(path)

    assert result is not None
    assert result.array.dtype == np.uint16
    np.testing.assert_array_equal(result.array, image)
    assert result.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    if channels in (3, 4):
        # Pillow's own 8-bit decoding of the same file agrees on the high byte.
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), image >> 8)


def test_png_smooth_image_with_every_filter(tmp_path: Path, backend: str) -> None:
    # Random data hides little; a gradient makes each filter's prediction matter.
    y, x = np.mgrid[0:9, 0:10]
    image = np.stack([x * 6000 + y, y * 7000 + x, (x * y * 911) % 65536], axis=-1)
    image = image.astype(np.uint16)
    path = tmp_path / "smooth.png"
    path.write_bytes(_png_file(image))
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image)


def test_png_gray_written_by_pillow(tmp_path: Path) -> None:
    image = _random((7, 9))
    path = tmp_path / "gray.png"
    Image.fromarray(image).save(path)  # Pillow writes 16-bit gray PNG natively
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array[..., 0], image)


def test_png_trns_colour_key_becomes_alpha(tmp_path: Path, backend: str) -> None:
    image = _random((5, 6, 3), seed=3)
    key = image[2, 3].copy()
    image[4, 0] = key
    path = tmp_path / "key.png"
    trns = _chunk(b"tRNS", key.astype(">u2").tobytes())
    path.write_bytes(_png_file(image, extra_chunks=[trns]))

    result = _read(path)

    assert result is not None
    assert result.array.shape == (5, 6, 4)
    np.testing.assert_array_equal(result.array[..., :3], image)
    expected_alpha = np.full((5, 6), 65535, dtype=np.uint16)
    expected_alpha[2, 3] = expected_alpha[4, 0] = 0
    np.testing.assert_array_equal(result.array[..., 3], expected_alpha)


def test_png_gray_trns_becomes_alpha(tmp_path: Path) -> None:
    image = _random((4, 5, 1), seed=4)
    path = tmp_path / "graykey.png"
    trns = _chunk(b"tRNS", struct.pack(">H", int(image[1, 1, 0])))
    path.write_bytes(_png_file(image, extra_chunks=[trns]))
    result = _read(path)
    assert result is not None
    assert result.array.shape == (4, 5, 2)
    assert result.array[1, 1, 1] == 0
    assert (result.array[..., 1] == 0).sum() == (image[..., 0] == image[1, 1, 0]).sum()


# --------------------------------------------------------------------------- reading TIFF

TIFF_CODINGS = [
    pytest.param(1, 1, id="raw"),
    pytest.param(8, 1, id="deflate", marks=needs_libtiff),
    pytest.param(8, 2, id="deflate-predictor", marks=needs_libtiff),
    pytest.param(32773, 1, id="packbits", marks=needs_libtiff),
    pytest.param(5, 1, id="lzw", marks=[needs_libtiff, needs_codecs]),
    pytest.param(5, 2, id="lzw-predictor", marks=[needs_libtiff, needs_codecs]),
]


@pytest.mark.parametrize(("compression", "predictor"), TIFF_CODINGS)
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("channels", "extra"), [(1, None), (3, None), (4, 2)])
def test_tiff_variants_read_exactly(
    tmp_path: Path, compression: int, predictor: int, order: str, channels: int, extra: int | None
) -> None:
    image = _random((7, 10, channels), seed=channels)
    path = tmp_path / "in.tif"
    path.write_bytes(
        _tiff_file(image, order=order, compression=compression, predictor=predictor, extra=extra)
    )

    result = _read(path)

    assert result is not None
    np.testing.assert_array_equal(result.array, image)
    if channels > 1:
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), image >> 8)


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_tiled_raw(tmp_path: Path, order: str) -> None:
    image = _random((20, 35, 3), seed=5)
    path = tmp_path / "tiled.tif"
    path.write_bytes(_tiff_file(image, order=order, tile=16))
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image)


@pytest.mark.parametrize(("compression", "predictor"), TIFF_CODINGS)
def test_tiff_associated_alpha_is_unpremultiplied(
    tmp_path: Path, compression: int, predictor: int
) -> None:
    image = _random((6, 8, 4), seed=6)
    image[0, 0, 3] = 0
    alpha = image[..., 3:].astype(np.int64)
    premultiplied = image.copy()
    premultiplied[..., :3] = (image[..., :3] * alpha + 32767) // 65535
    path = tmp_path / "assoc.tif"
    path.write_bytes(
        _tiff_file(premultiplied, compression=compression, predictor=predictor, extra=1)
    )

    result = _read(path)

    assert result is not None
    colour = premultiplied[..., :3].astype(np.int64)
    expected = np.where(
        alpha == 0, 0, np.minimum((colour * 65535 + alpha // 2) // np.maximum(alpha, 1), 65535)
    )
    np.testing.assert_array_equal(result.array[..., :3], expected)
    np.testing.assert_array_equal(result.array[..., 3], image[..., 3])
    # Un-premultiplying restores the straight colour to within the rounding.
    visible = alpha[..., 0] > 2000
    error = np.abs(result.array[..., :3].astype(np.int64) - image[..., :3])[visible]
    assert error.max() <= 65535 // 4000


def test_tiff_unspecified_extra_sample_is_dropped(tmp_path: Path) -> None:
    image = _random((5, 6, 4), seed=7)
    path = tmp_path / "rgbx.tif"
    path.write_bytes(_tiff_file(image, extra=0))
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image[..., :3])


def test_tiff_min_is_white_is_inverted(tmp_path: Path) -> None:
    image = _random((5, 6, 1), seed=8)
    path = tmp_path / "white.tif"
    path.write_bytes(_tiff_file(image, photometric=0))
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, 65535 - image)


def test_tiff_orientation_is_applied_like_pillow(tmp_path: Path) -> None:
    image = _random((5, 7, 3), seed=9)
    path = tmp_path / "rotated.tif"
    path.write_bytes(_tiff_file(image, more_tags=[(274, 3, [3])]))  # rotated 180 degrees
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image[::-1, ::-1])
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), result.array >> 8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_tiff_orientation_is_applied_like_pillow(tmp_path: Path, orientation: int) -> None:
    image = _random((5, 7, 4), seed=orientation)
    path = tmp_path / "oriented.tif"
    path.write_bytes(_tiff_file(image, extra=2, more_tags=[(274, 3, [orientation])]))
    result = _read(path)
    assert result is not None
    assert result.array.shape == ((7, 5, 4) if orientation >= 5 else (5, 7, 4))
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), result.array >> 8)


@pytest.mark.parametrize("channels", [3, 4])
def test_tiff_planar_configuration_2(tmp_path: Path, channels: int) -> None:
    image = _random((7, 9, channels), seed=20 + channels)
    path = tmp_path / "planar.tif"
    path.write_bytes(_tiff_file(image, planar=True, extra=2 if channels == 4 else None))
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image)


@needs_libtiff
def test_lzw_without_codecs_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(highdepth, "_tiff_decodable", lambda compression: compression != 5)
    colour = tmp_path / "colour.tif"
    colour.write_bytes(_tiff_file(_random((4, 5, 3)), compression=5))
    with pytest.raises(InputError, match=r"LZW .*pip install 'sruc\[codecs\]'"):
        _read(colour)
    # Gray goes through Pillow's libtiff, which needs no extra.
    gray_image = _random((4, 5, 1), seed=2)
    gray = tmp_path / "gray.tif"
    gray.write_bytes(_tiff_file(gray_image, compression=5, photometric=0))
    result = _read(gray)
    assert result is not None
    np.testing.assert_array_equal(result.array, 65535 - gray_image)


@pytest.mark.parametrize(
    "compression",
    [
        "raw",
        pytest.param("tiff_deflate", marks=needs_libtiff),
        pytest.param("tiff_lzw", marks=needs_libtiff),
    ],
)
def test_tiff_gray_written_by_pillow(tmp_path: Path, compression: str) -> None:
    image = _random((6, 9), seed=10)
    path = tmp_path / "gray.tif"
    Image.fromarray(image).save(path, compression=compression)
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array[..., 0], image)


# --------------------------------------------------------------------------- fallbacks


def test_not_16_bit_returns_none(tmp_path: Path) -> None:
    rgb8 = Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8))
    cases = {
        "rgb8.png": rgb8,
        "rgb8.tif": rgb8,
        "rgb8.jpg": rgb8,
        "palette.png": rgb8.convert("P"),
        "gray8.png": rgb8.convert("L"),
        "rgb8.bmp": rgb8,
        "rgb8.gif": rgb8,
    }
    if features.check("webp"):
        cases["rgb8.webp"] = rgb8
    for name, im in cases.items():
        im.save(tmp_path / name)
        assert _read(tmp_path / name) is None, name


def test_signed_16_bit_tiff_returns_none(tmp_path: Path) -> None:
    image = _random((4, 5, 1)) // 2
    path = tmp_path / "signed.tif"
    path.write_bytes(_tiff_file(image, more_tags=[(339, 3, [2])]))
    assert _read(path) is None


def test_file_object_is_left_open(tmp_path: Path, backend: str) -> None:
    image = _random((4, 6, 3), seed=11)
    data = _png_file(image)
    stream = io.BytesIO(data)
    result = read_high_depth(lambda: Image.open(stream))
    assert result is not None
    np.testing.assert_array_equal(result.array, image)
    assert not stream.closed

    path = tmp_path / "in.png"
    path.write_bytes(data)
    with path.open("rb") as fp:
        result = read_high_depth(lambda: Image.open(fp))
        assert not fp.closed
    assert result is not None
    np.testing.assert_array_equal(result.array, image)


def test_loaded_image_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(_png_file(_random((3, 3, 3))))
    im = Image.open(path)
    im.load()
    with pytest.raises(ValueError, match="not yet loaded"):
        read_high_depth(lambda: im)


@pytest.mark.parametrize(
    ("compression", "tile"),
    [(1, None), (1, 16), pytest.param(8, None, marks=needs_libtiff)],
)
def test_truncated_tiff_raises_input_error(
    tmp_path: Path, compression: int, tile: int | None
) -> None:
    data = _tiff_file(_random((40, 40, 3), seed=13), compression=compression, tile=tile)
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(InputError, match="damaged or truncated") as caught:
        _read(path)
    assert "\n" not in str(caught.value)


def test_tiff_file_object_is_left_open(tmp_path: Path) -> None:
    image = _random((4, 6, 4), seed=14)
    stream = io.BytesIO(_tiff_file(image, extra=2))
    result = read_high_depth(lambda: Image.open(stream))
    assert result is not None
    np.testing.assert_array_equal(result.array, image)
    assert not stream.closed


@needs_codecs
def test_codec_log_records_are_muted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # libpng advises on interlaced files through imagecodecs' logger; the
    # library must not print, and logging's last-resort handler would.
    path = tmp_path / "interlaced.png"
    path.write_bytes(_png_file(_random((9, 9, 3)), interlace=True))
    with caplog.at_level(logging.DEBUG):
        assert _read(path) is not None
    assert [r for r in caplog.records if r.name.startswith(("imagecodecs", "tifffile"))] == []


def test_truncated_png_raises_input_error(tmp_path: Path, backend: str) -> None:
    data = _png_file(_random((40, 40, 3), seed=12))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        _read(path)


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (9, 14)])
def test_write_png16_round_trip(
    tmp_path: Path, channels: int, shape: tuple[int, int], backend: str
) -> None:
    image = _random((*shape, channels), seed=channels)
    path = tmp_path / "out.png"

    write_png16(path, image, icc_profile=ICC, exif=EXIF)

    names, decoded = _decode_png(path.read_bytes())
    assert names[:3] == [b"IHDR", b"iCCP", b"eXIf"]
    assert set(names[3:-1]) == {b"IDAT"} and names[-1] == b"IEND"
    np.testing.assert_array_equal(decoded, image)
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image)
    with Image.open(path) as im:
        assert im.info["icc_profile"] == ICC
        assert im.info["exif"] == b"Exif\x00\x00" + EXIF
        pillow = np.asarray(im)
    if channels == 1:
        np.testing.assert_array_equal(pillow, image[..., 0])  # Pillow reads gray at 16 bits
    elif channels == 2:
        np.testing.assert_array_equal(pillow[..., 0], image[..., 0] >> 8)
        np.testing.assert_array_equal(pillow[..., 3], image[..., 1] >> 8)
    else:
        np.testing.assert_array_equal(pillow, image >> 8)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@needs_codecs
def test_write_png16_uses_filters_and_compresses_smooth_data(tmp_path: Path) -> None:
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x * 1000, y * 1000, (x + y) * 500], axis=-1).astype(np.uint16)
    path = tmp_path / "smooth.png"
    write_png16(path, image)
    _, decoded = _decode_png(path.read_bytes())
    np.testing.assert_array_equal(decoded, image)
    # Without prediction the gradient's bytes barely repeat; with it they do.
    assert path.stat().st_size < len(zlib.compress(image.astype(">u2").tobytes(), 6)) / 4


def test_write_png16_smooth_gray_alpha(tmp_path: Path, backend: str) -> None:
    y, x = np.mgrid[0:23, 0:10]
    image = np.stack([x * 3000 + y * 5, y * 2000 + x], axis=-1).astype(np.uint16)
    path = tmp_path / "blocks.png"
    write_png16(path, image)
    _, decoded = _decode_png(path.read_bytes())
    np.testing.assert_array_equal(decoded, image)
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image)


def test_write_png16_accepts_2d_and_big_endian(tmp_path: Path, backend: str) -> None:
    image = _random((5, 4))
    path = tmp_path / "gray.png"
    write_png16(path, image.astype(">u2"))
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array[..., 0], image)


def test_write_png16_strips_exif_header_and_rejects_garbage(tmp_path: Path, backend: str) -> None:
    image = _random((2, 2, 3))
    path = tmp_path / "exif.png"
    write_png16(path, image, exif=b"Exif\x00\x00" + EXIF)
    with Image.open(path) as im:
        assert im.info["exif"] == b"Exif\x00\x00" + EXIF
    with pytest.raises(OutputError, match="TIFF header"):
        write_png16(path, image, exif=b"not exif")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_write_tiff16_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int
) -> None:
    monkeypatch.setattr(highdepth, "_TIFF_STRIP_BYTES", 200)  # several strips
    image = _random((13, 11, channels), seed=channels)
    path = tmp_path / "out.tif"

    write_tiff16(path, image, icc_profile=ICC)

    tags, decoded = _decode_tiff(path.read_bytes())
    np.testing.assert_array_equal(decoded, image)
    assert len(tags[273]) > 1
    assert tags[258] == [16] * channels
    # PlanarConfiguration "need not be included" for one sample (TIFF 6.0).
    assert (tags[259], tags.get(284, [1]), tags[317]) == ([8], [1], [2])
    assert tags[262] == [1 if channels < 3 else 2]
    assert tags.get(338) == ([2] if channels in (2, 4) else None)
    assert tags[34675] == ICC
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    if channels == 2 or not HAS_LIBTIFF:
        return  # Pillow opens neither 16-bit gray+alpha TIFF nor Deflate without libtiff
    result = _read(path)
    assert result is not None
    np.testing.assert_array_equal(result.array, image)
    with Image.open(path) as im:
        assert im.info["icc_profile"] == ICC
        expected = image[..., 0] if channels == 1 else image >> 8
        np.testing.assert_array_equal(np.asarray(im), expected)


@pytest.mark.parametrize("writer", [write_png16, write_tiff16])
def test_writers_reject_bad_input(tmp_path: Path, writer: object) -> None:
    assert callable(writer)
    path = tmp_path / "bad"
    bad_arrays = [
        np.zeros((2, 2, 3), dtype=np.float32),
        np.zeros((2, 2, 5), dtype=np.uint16),
        np.zeros((0, 2, 3), dtype=np.uint16),
        np.zeros((2, 2, 2, 2), dtype=np.uint16),
    ]
    for array in bad_arrays:
        with pytest.raises(OutputError):
            writer(path, array)
    with pytest.raises(OutputError, match="ICC"):
        writer(path, np.zeros((2, 2, 3), dtype=np.uint16), icc_profile=b"")
    with pytest.raises(OutputError, match="cannot create"):
        writer(tmp_path / "missing" / "out", np.zeros((2, 2, 3), dtype=np.uint16))
    assert not path.exists()


# A plain `pip install sruc`: imagecodecs cannot be imported, so tifffile uses
# its own zlib and numpy codecs and PNG goes through pypng.
PURE_SCRIPT = """
import sys
sys.modules["imagecodecs"] = None
import numpy as np
import tifffile
from PIL import Image
from sruc.files import highdepth
assert highdepth._codecs() is None and not highdepth._tiff_decodable(5)
folder = sys.argv[1]
image = np.load(folder + "/image.npy")
highdepth.write_tiff16(folder + "/pure.tif", image, icc_profile=b"icc")
highdepth.write_png16(folder + "/pure.png", image, icc_profile=b"icc")
for name in ("pure.tif", "pure.png", "given.tif"):
    deep = highdepth.read_high_depth(lambda: Image.open(folder + "/" + name))
    np.save(folder + "/" + name + ".npy", deep.array)
"""


@needs_libtiff
def test_codecs_without_imagecodecs(tmp_path: Path) -> None:
    image = _random((9, 14, 4), seed=15)
    np.save(tmp_path / "image.npy", image)
    given = _tiff_file(image, compression=8, predictor=2, extra=2)
    (tmp_path / "given.tif").write_bytes(given)

    subprocess.run([sys.executable, "-c", PURE_SCRIPT, str(tmp_path)], check=True)

    _, tiff_samples = _decode_tiff((tmp_path / "pure.tif").read_bytes())
    np.testing.assert_array_equal(tiff_samples, image)
    names, png_samples = _decode_png((tmp_path / "pure.png").read_bytes())
    np.testing.assert_array_equal(png_samples, image)
    assert names[:2] == [b"IHDR", b"iCCP"]
    for name in ("pure.tif", "pure.png", "given.tif"):
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), image)


def test_high_depth_validates_its_array() -> None:
    with pytest.raises(ValueError, match="uint16"):
        HighDepth(np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        HighDepth(np.zeros((2, 2), dtype=np.uint16))
