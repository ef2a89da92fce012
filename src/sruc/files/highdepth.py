"""16-bit-per-channel PNG and TIFF input and output without an 8-bit detour.

Pillow holds 16-bit *gray* images (mode ``"I;16"``) at full depth, but opens
16-bit RGB and RGBA PNG/TIFF files as 8-bit ``"RGB"``/``"RGBA"`` (its unpacker
keeps only the high byte of each sample) and cannot write 16-bit colour at all.
This module fills that gap with numpy, Pillow, :mod:`zlib` and :mod:`struct`
only.

Reading (:func:`read_high_depth`) lets Pillow do all the parsing and
decompression, then loads the image a second time with the tile's raw mode
swapped to the opposite byte order (``"RGB;16B"`` becomes ``"RGB;16L"``): the
decoder still works on the real 48- or 64-bit pixel size, so PNG un-filtering,
interlacing, TIFF strips, tiles, predictors and libtiff codecs all behave as in
the first load, but the unpacker now keeps the *low* byte of every sample. The
value is ``high * 256 + low``. 16-bit gray+alpha PNG is read in one load with the
raw mode ``"RGBA"``, which copies the four bytes of each pixel verbatim.

Read at full 16-bit depth:

* PNG colour types 0 (gray), 4 (gray+alpha), 2 (RGB) and 6 (RGBA), interlaced
  or not, any filter types; a ``tRNS`` colour key on a gray or RGB image becomes
  an alpha channel (0 where the pixel equals the key, 65535 elsewhere), as the
  PNG specification defines it.
* TIFF gray (Photometric 1, and 0 "min-is-white", which is inverted here),
  RGB and RGB plus one extra sample (unassociated alpha, associated alpha which
  is un-premultiplied here, or an unspecified extra sample which is dropped as
  Pillow drops it), little- or big-endian, uncompressed (Pillow's ``"raw"``
  codec, strips or tiles) or compressed through libtiff (Deflate, LZW,
  PackBits, ..., with or without a horizontal predictor), planar configuration
  1 (chunky) only. The array has the orientation Pillow gives the image, i.e.
  TIFF Orientation tags are already applied, as Pillow's own load applies them.

Everything else returns None, so the caller falls back to Pillow's 8-bit
decoding: images that are not 16 bits per sample, TIFF with signed or float
samples, planar configuration 2 (separate planes), CMYK, YCbCr, Lab or palette
photometrics, and formats other than PNG and TIFF. 16-bit gray+alpha TIFF and a
few other rare layouts are not opened by Pillow at all, so they never reach
this module.

Writing: :func:`write_png16` and :func:`write_tiff16` write uint16 arrays of
shape (H, W, C), C in 1..4, with optional ICC profile (PNG ``iCCP``, TIFF tag
34675) and, for PNG only, EXIF (``eXIf`` chunk). EXIF is not written to TIFF:
it would need a separate EXIF IFD with every offset inside the blob rebased.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from sruc.errors import InputError, OutputError

__all__ = ["HighDepth", "read_high_depth", "write_png16", "write_tiff16"]

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

# zlib level for PNG IDAT and TIFF strips. Noisy 16-bit data (the low byte of
# a photograph is close to random) makes levels >= 5 several times slower for
# about 1 % smaller files (a 4000x3000 RGB image: ~3 s at level 4 on two cores).
_ZLIB_LEVEL = 4
# Threads for filtering and compressing; more than a handful gains little.
_WORKERS = max(1, min(8, os.cpu_count() or 1))
# Uncompressed bytes per PNG work block (bounds memory: the five candidate
# filters of a block are held at once) and per TIFF strip.
_PNG_BLOCK_BYTES = 1 << 20
_TIFF_STRIP_BYTES = 256 << 10

# Pillow's raw modes for 16-bit colour samples, minus the ";16L"/";16B"/";16N"
# suffix, mapped to the raw mode used for both loads. "RGBa" (associated
# alpha) is read as plain "RGBA" because Pillow's un-premultiplication happens
# in the unpacker on 8-bit values and would make the low byte meaningless; the
# division is redone here on the full 16-bit values. "RGBX" (an unspecified
# extra sample) decodes to a 3-channel "RGB" image, as in Pillow.
_SPLIT_BASES = {"RGB": "RGB", "RGBA": "RGBA", "RGBa": "RGBA", "RGBX": "RGBX"}

# Modes Pillow gives 16-bit unsigned gray; older Pillow versions used "I" for PNG.
_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True, eq=False)
class HighDepth:
    """A decoded 16-bit image.

    Attributes:
        array: uint16 samples shaped (H, W, C) with C = 1 (gray), 2 (gray and
            alpha), 3 (RGB) or 4 (RGBA); alpha is unassociated (straight).
    """

    array: np.ndarray

    def __post_init__(self) -> None:
        a = self.array
        if not isinstance(a, np.ndarray) or a.dtype != np.uint16:
            raise ValueError(f"HighDepth needs a uint16 array, got {getattr(a, 'dtype', type(a))}")
        if a.ndim != 3 or a.shape[2] not in _MODES:
            raise ValueError(f"HighDepth needs shape (H, W, C) with C in 1..4, got {a.shape}")

    @property
    def mode(self) -> str:
        """The Pillow-style name of the channel layout: "L", "LA", "RGB" or "RGBA"."""
        return _MODES[self.array.shape[2]]


@dataclass(frozen=True)
class _Plan:
    """How to decode one 16-bit file.

    Attributes:
        kind: "gray" (one plain load), "la" (one load with raw mode "RGBA"), or
            "split" (a high-byte load and a low-byte load).
        rawmodes: the raw mode for each load; None keeps Pillow's own.
        premultiplied: the colour samples are premultiplied by alpha.
        invert: the gray samples are "min-is-white" and need inverting.
        key: a tRNS colour key (an int for gray, a 3-tuple for RGB), or None.
    """

    kind: str
    rawmodes: tuple[str | None, ...]
    premultiplied: bool = False
    invert: bool = False
    key: int | tuple[int, ...] | None = None


def read_high_depth(open_image: Callable[[], Image.Image]) -> HighDepth | None:
    """Decode a 16-bit-per-sample PNG or TIFF at full depth.

    The decoding needs up to two independent loads of the same file, so this
    takes a way to open it rather than an opened image: ``open_image`` must
    return a fresh, unloaded image each call, positioned on the first frame,
    e.g. ``lambda: Image.open(path)`` or ``lambda: Image.open(file_obj)`` (Pillow
    rewinds a file object itself). Each image is released as a ``with``
    statement does: a file Pillow opened by path is closed, a file object the
    caller passed in is left open. Files are never reopened by name here.

    Args:
        open_image: returns a new, unloaded :class:`PIL.Image.Image` of the
            file each time it is called (it is called once or twice).

    Returns:
        The full-depth samples, or None when the file is not one of the 16-bit
        variants listed in the module docstring (8-bit, palette, JPEG, ...);
        the caller then decodes it with Pillow as usual.

    Raises:
        InputError: the file is damaged or truncated so that Pillow cannot
            decode its pixel data.
        ValueError: ``open_image`` returned an image that was already loaded.
    """
    with open_image() as im:
        plan = _plan(im)
        if plan is None:
            return None
        size = im.size
        first = _load(im, plan.rawmodes[0])
    if plan.kind == "gray":
        out = _gray(first, plan)
    elif plan.kind == "la":
        # Raw mode "RGBA" copied the big-endian bytes L_hi, L_lo, A_hi, A_lo.
        b = first.astype(np.uint16)
        out = np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], axis=-1)
    else:
        with open_image() as im2:
            if im2.size != size or _plan(im2) != plan:
                raise InputError(
                    "the image changed between two reads; make sure nothing writes to the "
                    "input file while sruc reads it"
                )
            second = _load(im2, plan.rawmodes[1])
        out = (first.astype(np.uint16) << 8) | second.astype(np.uint16)
        if plan.premultiplied:
            out = _unpremultiply(out)
    if plan.key is not None:
        out = _key_to_alpha(out, plan.key)
    return HighDepth(np.ascontiguousarray(out))


def _plan(im: Image.Image) -> _Plan | None:
    """Decide how to decode ``im`` at 16 bits, or None if it is not supported."""
    if im.format not in ("PNG", "TIFF"):
        return None
    # Pillow empties the tile list once the image is loaded.
    tiles = getattr(im, "tile", None)
    if not tiles:
        raise ValueError("open_image must return a freshly opened, not yet loaded image")
    if im.format == "PNG":
        return _plan_png(im, tiles)
    return _plan_tiff(im, tiles)


def _plan_png(im: Image.Image, tiles: list[Any]) -> _Plan | None:
    # Pillow derives the raw mode from the IHDR bit depth and colour type, so
    # it is an exact statement of "16 bits per sample" and of the layout.
    if any(t[0] != "zip" for t in tiles):
        return None
    rawmodes = {t[3] for t in tiles}
    if len(rawmodes) != 1:
        return None
    rawmode = rawmodes.pop()
    key = im.info.get("transparency")
    if rawmode == "I;16B":
        return _Plan("gray", (None,), key=key if isinstance(key, int) else None)
    if rawmode == "LA;16B":
        return _Plan("la", ("RGBA",))
    if rawmode == "RGB;16B":
        ok_key = isinstance(key, tuple) and len(key) == 3
        return _Plan("split", ("RGB;16B", "RGB;16L"), key=key if ok_key else None)
    if rawmode == "RGBA;16B":
        return _Plan("split", ("RGBA;16B", "RGBA;16L"))
    return None


def _plan_tiff(im: Image.Image, tiles: list[Any]) -> _Plan | None:
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    bits = _as_tuple(tags.get(258, 1))
    sample_format = _as_tuple(tags.get(339, 1))
    photometric = tags.get(262)
    if not bits or any(b != 16 for b in bits) or any(f != 1 for f in sample_format):
        return None
    if tags.get(284, 1) != 1 or photometric not in (0, 1, 2):
        return None
    if any(t[0] not in ("raw", "libtiff") for t in tiles):
        return None
    rawmodes = {t[3][0] if isinstance(t[3], tuple) else t[3] for t in tiles}
    if len(rawmodes) != 1:
        return None
    rawmode = rawmodes.pop()
    if photometric in (0, 1):
        if len(bits) != 1 or im.mode not in _GRAY_MODES:
            return None
        return _Plan("gray", (None,), invert=photometric == 0)
    base, sep, order = rawmode.rpartition(";16")
    if sep != ";16" or base not in _SPLIT_BASES or order not in ("L", "B", "N"):
        return None
    read_as = _SPLIT_BASES[base]
    return _Plan(
        "split",
        (f"{read_as};16{order}", f"{read_as};16{_other_byte_order(order)}"),
        premultiplied=base == "RGBa",
    )


def _other_byte_order(order: str) -> str:
    """The raw-mode byte-order letter that picks the other byte of each sample."""
    if order == "N":
        # libtiff hands Pillow samples in the machine's byte order.
        order = "L" if sys.byteorder == "little" else "B"
    return "B" if order == "L" else "L"


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    """A copy of one Pillow tile descriptor with its raw mode replaced."""
    args = tile[3]
    new_args = (rawmode, *args[1:]) if isinstance(args, tuple) else rawmode
    if hasattr(tile, "_replace"):  # Pillow >= 11: ImageFile._Tile named tuple
        return tile._replace(args=new_args)
    return (tile[0], tile[1], tile[2], new_args)


def _load(im: Image.Image, rawmode: str | None) -> np.ndarray:
    """Load ``im`` (with the tile raw mode replaced if given) into an array."""
    if rawmode is not None:
        im.tile = [_with_rawmode(t, rawmode) for t in im.tile]
    try:
        im.load()
        return np.array(im)
    except (OSError, ValueError, SyntaxError, struct.error, zlib.error) as exc:
        name = getattr(im, "filename", "") or "the input image"
        raise InputError(
            f"cannot decode the 16-bit pixel data of {name}: {exc}; "
            "the file is damaged or truncated"
        ) from exc


def _gray(samples: np.ndarray, plan: _Plan) -> np.ndarray:
    if samples.ndim != 2:
        raise InputError(f"expected one gray channel, Pillow decoded shape {samples.shape}")
    if samples.dtype.kind not in "ui" or samples.min() < 0 or samples.max() > 0xFFFF:
        raise InputError("16-bit gray samples are out of range; the file is damaged")
    out = samples.astype(np.uint16)[..., None]
    if plan.invert:
        out = 0xFFFF - out
    return out


def _unpremultiply(rgba: np.ndarray) -> np.ndarray:
    """Straight alpha from associated alpha, rounding to nearest, clipped."""
    alpha = rgba[..., 3:].astype(np.uint64)
    colour = rgba[..., :3].astype(np.uint64)
    # Integer rounding division (c * 65535 + a / 2) // a stays exact in uint64;
    # pixels with alpha 0 carry no colour, so they become black.
    safe = np.maximum(alpha, 1)
    straight = (colour * 0xFFFF + safe // 2) // safe
    straight = np.where(alpha == 0, 0, np.minimum(straight, 0xFFFF))
    return np.concatenate([straight.astype(np.uint16), rgba[..., 3:]], axis=-1)


def _key_to_alpha(samples: np.ndarray, key: int | tuple[int, ...]) -> np.ndarray:
    """Append an alpha channel that is 0 exactly where the pixel equals ``key``."""
    key_arr = np.asarray(key if isinstance(key, tuple) else (key,), dtype=np.int64)
    if key_arr.size != samples.shape[2]:
        return samples
    transparent = np.all(samples == key_arr, axis=-1)
    alpha = np.where(transparent, 0, 0xFFFF).astype(np.uint16)
    return np.concatenate([samples, alpha[..., None]], axis=-1)


# --------------------------------------------------------------------------- writing


def _check_array(array: np.ndarray, what: str) -> np.ndarray:
    """Validate a uint16 image array and return it as (H, W, C)."""
    if not isinstance(array, np.ndarray) or array.dtype.kind != "u" or array.dtype.itemsize != 2:
        got = getattr(array, "dtype", type(array).__name__)
        raise OutputError(f"cannot write a 16-bit {what} from {got} data; pass a uint16 array")
    # Either byte order is accepted; the writers work on native uint16.
    array = array.astype(np.uint16, copy=False)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in _MODES:
        raise OutputError(
            f"cannot write a 16-bit {what} from an array of shape {array.shape}; "
            "expected (H, W, C) with C in 1..4"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise OutputError(f"cannot write an empty {what} of shape {array.shape}")
    if max(array.shape[:2]) > 0x7FFFFFFF:
        raise OutputError(f"cannot write a {what} wider or taller than 2**31 - 1 pixels")
    return array


def _check_icc(icc_profile: bytes | None) -> bytes | None:
    if icc_profile is None:
        return None
    if not isinstance(icc_profile, (bytes, bytearray)) or len(icc_profile) == 0:
        raise OutputError("the ICC profile to embed must be non-empty bytes; pass None for none")
    return bytes(icc_profile)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_filter_candidates(raw: np.ndarray, up: np.ndarray, bpp: int) -> list[np.ndarray]:
    """The five PNG filters (None, Sub, Up, Average, Paeth) of whole rows at once.

    Args:
        raw: unfiltered scanline bytes, one row per line, uint8.
        up: the unfiltered bytes of the row above each row (zeros above the first).
        bpp: bytes per complete pixel, the distance to the "left" byte.

    Returns:
        Five uint8 arrays shaped like ``raw``, indexed by PNG filter type. Every
        filter predicts from *unfiltered* neighbours, which is what makes this
        vectorisable; uint8 arithmetic wraps modulo 256 as the filters define.
    """
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up_left = np.zeros_like(raw)
    up_left[:, bpp:] = up[:, :-bpp]
    # Paeth: the neighbour closest to left + up - up_left, ties to left, then up.
    a, b, c = (x.astype(np.int16) for x in (left, up, up_left))
    pa = np.abs(b - c)
    pb = np.abs(a - c)
    pc = np.abs(a + b - 2 * c)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    # floor((left + up) / 2) without leaving uint8.
    average = (left >> 1) + (up >> 1) + (left & up & 1)
    return [raw, raw - left, raw - up, raw - average, raw - paeth]


def _png_filter_block(array: np.ndarray, y0: int, rows: int) -> bytes:
    """Filtered scanlines (filter-type byte + residuals) of rows y0..y0+rows-1.

    Each row gets the filter with the smallest sum of absolute signed
    residuals, the heuristic the PNG specification recommends and libpng uses.
    """
    width, channels = array.shape[1], array.shape[2]
    bpp = 2 * channels
    start = max(0, y0 - 1)
    # PNG stores samples big-endian; the row above the block is the Up predictor.
    data = array[start : y0 + rows].astype(">u2").view(np.uint8).reshape(-1, width * bpp)
    raw = data[y0 - start :]
    up = data[:-1] if y0 > 0 else np.concatenate([np.zeros_like(raw[:1]), raw[:-1]])
    candidates = _png_filter_candidates(raw, up, bpp)
    # |int8| viewed as uint8 maps -128 to 128, which is the right magnitude.
    costs = np.stack(
        [np.abs(f.view(np.int8)).view(np.uint8).sum(axis=1, dtype=np.uint32) for f in candidates]
    )
    choice = np.argmin(costs, axis=0)
    out = np.empty((raw.shape[0], 1 + width * bpp), dtype=np.uint8)
    out[:, 0] = choice
    for kind, filtered in enumerate(candidates):
        rows_of_kind = choice == kind
        if rows_of_kind.any():
            out[rows_of_kind, 1:] = filtered[rows_of_kind]
    return out.tobytes()


def _deflate_piece(data: bytes, last: bool) -> bytes:
    """Raw deflate of one piece of a longer stream, ending on a byte boundary.

    A sync flush ends each piece with an empty, non-final stored block, so the
    pieces concatenate into one valid deflate stream; only the last is final.
    """
    compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, -15)
    mode = zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    return compressor.compress(data) + compressor.flush(mode)


def _png_zlib_stream(array: np.ndarray) -> Iterator[bytes]:
    """Yield the zlib stream of the filtered image, in pieces.

    Blocks of rows are filtered and deflated independently on a thread pool
    (numpy and zlib release the GIL) and concatenated in order; the zlib
    header and Adler-32 trailer are written here around them. Starting each
    block with an empty dictionary costs a negligible amount of compression.
    """
    height, width, channels = array.shape
    rows_per_block = max(1, _PNG_BLOCK_BYTES // (width * 2 * channels))
    starts = list(range(0, height, rows_per_block))

    def work(y0: int) -> tuple[bytes, bytes]:
        filtered = _png_filter_block(array, y0, min(rows_per_block, height - y0))
        return filtered, _deflate_piece(filtered, last=y0 == starts[-1])

    yield b"\x78\x9c"  # deflate, 32 KiB window, default-level flag; header check bits
    adler = 1
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        queue = iter(starts)
        # A bounded window of blocks in flight keeps memory bounded.
        pending: deque[Future[tuple[bytes, bytes]]] = deque(
            pool.submit(work, y0) for y0 in itertools.islice(queue, 2 * _WORKERS)
        )
        while pending:
            filtered, compressed = pending.popleft().result()
            next_start = next(queue, None)
            if next_start is not None:
                pending.append(pool.submit(work, next_start))
            adler = zlib.adler32(filtered, adler)
            yield compressed
    yield struct.pack(">I", adler)


def write_png16(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write a 16-bit-per-sample PNG.

    Colour type follows the channel count: 1 gray (0), 2 gray+alpha (4),
    3 RGB (2), 4 RGBA (6); not interlaced. The file is written to exactly
    ``path`` and nothing else is created.

    Args:
        path: the file to create or overwrite.
        array: uint16 samples shaped (H, W, C), C in 1..4, or (H, W) for gray;
            alpha is straight (unassociated).
        icc_profile: an ICC profile to embed in an ``iCCP`` chunk.
        exif: EXIF data for an ``eXIf`` chunk: a TIFF-structured blob starting
            with ``II*\\0`` or ``MM\\0*``; a leading ``Exif\\0\\0`` (as in JPEG
            APP1 and Pillow's ``info["exif"]``) is removed, since the PNG
            specification forbids it.

    Raises:
        OutputError: the array, ICC profile or EXIF data is unusable, or the
            file cannot be written.
    """
    array = _check_array(array, "PNG")
    icc = _check_icc(icc_profile)
    exif_data = _png_exif(exif)
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    with _open_for_writing(path) as fp:
        fp.write(b"\x89PNG\r\n\x1a\n")
        ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
        fp.write(_png_chunk(b"IHDR", ihdr))
        # The specification puts iCCP before PLTE and IDAT, and eXIf before IDAT.
        if icc is not None:
            fp.write(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
        if exif_data is not None:
            fp.write(_png_chunk(b"eXIf", exif_data))
        # Several IDAT chunks of bounded size, so memory does not grow
        # with the image.
        pending = b""
        for piece in _png_zlib_stream(array):
            pending += piece
            if len(pending) >= 1 << 20:
                fp.write(_png_chunk(b"IDAT", pending))
                pending = b""
        fp.write(_png_chunk(b"IDAT", pending))
        fp.write(_png_chunk(b"IEND", b""))


def _png_exif(exif: bytes | None) -> bytes | None:
    if exif is None:
        return None
    if not isinstance(exif, (bytes, bytearray)):
        raise OutputError("EXIF data to embed must be bytes; pass None for none")
    data = bytes(exif)
    if data.startswith(b"Exif\0\0"):
        data = data[6:]
    if not data.startswith((b"II*\0", b"MM\0*")):
        raise OutputError(
            "EXIF data must start with a TIFF header (II*\\0 or MM\\0*); pass None to drop it"
        )
    return data


@contextlib.contextmanager
def _open_for_writing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing, turning OSError into OutputError."""
    name = os.fspath(path)
    try:
        fp = open(path, "wb")  # noqa: SIM115 - closed by the with statement below
    except OSError as exc:
        raise OutputError(
            f"cannot create {name}: {exc.strerror or exc}; check the folder exists and is writable"
        ) from exc
    try:
        with fp:
            yield fp
    except OSError as exc:
        raise OutputError(f"cannot write {name}: {exc.strerror or exc}") from exc


# TIFF field types used here.
_SHORT, _LONG, _RATIONAL, _UNDEFINED = 3, 4, 5, 7


def write_tiff16(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write a 16-bit-per-sample baseline TIFF.

    Little-endian, chunky (PlanarConfiguration 1), Adobe Deflate compression
    (8) with the horizontal-differencing predictor (2), strips of about
    256 KiB uncompressed, 72 dpi. Photometric is 1 (min-is-black) for gray and
    gray+alpha and 2 for RGB and RGBA; alpha is marked as unassociated
    (ExtraSamples 2). The file is written to exactly ``path``.

    Note that Pillow cannot open 16-bit gray+alpha TIFF files (libtiff and
    most other readers can), so :func:`read_high_depth` cannot read that
    variant back.

    Args:
        path: the file to create or overwrite.
        array: uint16 samples shaped (H, W, C), C in 1..4, or (H, W) for gray;
            alpha is straight (unassociated).
        icc_profile: an ICC profile to embed (tag 34675, InterColorProfile).
        exif: accepted for symmetry with :func:`write_png16` and ignored:
            EXIF in TIFF lives in its own IFD whose internal offsets would all
            need rebasing, which this writer does not do.

    Raises:
        OutputError: the array or ICC profile is unusable, or the file cannot
            be written.
    """
    del exif  # documented as not written; see the docstring
    array = _check_array(array, "TIFF")
    icc = _check_icc(icc_profile)
    height, width, channels = array.shape
    row_bytes = width * channels * 2
    rows_per_strip = max(1, min(height, _TIFF_STRIP_BYTES // row_bytes))

    def strip(y0: int) -> bytes:
        rows = array[y0 : y0 + rows_per_strip]
        # Predictor 2: each sample minus the same channel's sample to its
        # left, modulo 2**16 (uint16 arithmetic wraps as TIFF defines it).
        diff = rows.astype("<u2", copy=True)
        diff[:, 1:] = rows[:, 1:] - rows[:, :-1]
        return zlib.compress(diff.tobytes(), _ZLIB_LEVEL)

    # Strips are independent zlib streams; zlib releases the GIL, so threads help.
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        strips = list(pool.map(strip, range(0, height, rows_per_strip)))

    photometric = 1 if channels < 3 else 2
    has_alpha = channels in (2, 4)
    entries: list[tuple[int, int, int, bytes]] = []

    def add(tag: int, kind: int, values: list[int] | bytes) -> None:
        if kind == _UNDEFINED:
            assert isinstance(values, bytes)
            entries.append((tag, kind, len(values), values))
            return
        assert isinstance(values, list)
        fmt = {_SHORT: "H", _LONG: "I", _RATIONAL: "I"}[kind]
        count = len(values) // 2 if kind == _RATIONAL else len(values)
        entries.append((tag, kind, count, struct.pack(f"<{len(values)}{fmt}", *values)))

    offsets_placeholder = [0] * len(strips)
    add(256, _LONG, [width])
    add(257, _LONG, [height])
    add(258, _SHORT, [16] * channels)
    add(259, _SHORT, [8])  # Adobe Deflate
    add(262, _SHORT, [photometric])
    add(273, _LONG, offsets_placeholder)
    add(277, _SHORT, [channels])
    add(278, _LONG, [rows_per_strip])
    add(279, _LONG, [len(s) for s in strips])
    add(282, _RATIONAL, [72, 1])
    add(283, _RATIONAL, [72, 1])
    add(284, _SHORT, [1])
    add(296, _SHORT, [2])  # inches
    add(317, _SHORT, [2])  # horizontal differencing
    if has_alpha:
        add(338, _SHORT, [2])  # unassociated alpha
    add(339, _SHORT, [1] * channels)  # unsigned integers
    if icc is not None:
        add(34675, _UNDEFINED, icc)

    # Layout: header, IFD, out-of-line values (word aligned), then strips.
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    value_offset = ifd_offset + ifd_size
    out_of_line = sum(_aligned(len(v)) for _, _, _, v in entries if len(v) > 4)
    strip_offset = value_offset + out_of_line
    offsets = []
    for s in strips:
        offsets.append(strip_offset)
        strip_offset += _aligned(len(s))
    if strip_offset > 0xFFFFFFFF:
        raise OutputError("the image is too large for a classic TIFF (4 GiB); write a PNG instead")
    entries = [
        (t, k, c, struct.pack(f"<{len(offsets)}I", *offsets) if t == 273 else v)
        for t, k, c, v in entries
    ]

    ifd = [struct.pack("<H", len(entries))]
    values = []
    for tag, kind, count, data in entries:
        if len(data) <= 4:
            ifd.append(struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\0"))
        else:
            ifd.append(struct.pack("<HHII", tag, kind, count, value_offset))
            values.append(data.ljust(_aligned(len(data)), b"\0"))
            value_offset += _aligned(len(data))
    ifd.append(struct.pack("<I", 0))  # no further IFDs

    with _open_for_writing(path) as fp:
        fp.write(b"II*\0" + struct.pack("<I", ifd_offset))
        fp.write(b"".join(ifd))
        fp.write(b"".join(values))
        for s in strips:
            fp.write(s.ljust(_aligned(len(s)), b"\0"))


def _aligned(n: int) -> int:
    """``n`` rounded up to an even number: TIFF offsets should be word aligned."""
    return n + (n & 1)
