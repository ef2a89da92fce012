"""16-bit-per-channel PNG and TIFF input and output without an 8-bit detour.

Pillow holds 16-bit gray (mode ``"I;16"``) at full depth, but opens 16-bit RGB
and RGBA PNG/TIFF as 8-bit and cannot write 16-bit colour. So each layout goes
to a library that keeps every bit: gray PNG and TIFF to Pillow; gray+alpha,
RGB and RGBA PNG to imagecodecs (libpng) when the ``codecs`` extra is
installed, else to pypng (pure Python: reads ~20x slower, writes no row
filters); RGB(A) TIFF to tifffile (pure Python for none, Deflate, PackBits and
LZMA; LZW, JPEG and the rest need imagecodecs, and :class:`InputError` names
the extra where it is missing).

:func:`read_high_depth` reads PNG colour types 0, 4, 2 and 6, interlaced or
not, a ``tRNS`` colour key becoming alpha (0 where the pixel equals the key,
65535 elsewhere); and TIFF gray (Photometric 1, and 0 "min-is-white", inverted
here), RGB and RGB plus one extra sample (unassociated alpha; associated alpha,
un-premultiplied here; unspecified, dropped as Pillow drops it), either byte
order, strips or tiles, chunky or planar, any compression and predictor, with
the Orientation tag applied as Pillow's own load applies it. Everything else
(not 16 bits per sample, signed or float samples, CMYK, YCbCr, Lab, palette,
other formats) returns None, and the caller decodes it with Pillow at 8 bits.

:func:`write_png16` and :func:`write_tiff16` write uint16 (H, W, C) arrays,
C in 1..4, with an optional ICC profile (PNG ``iCCP``, TIFF tag 34675) and, in
PNG only, EXIF (``eXIf``): in TIFF it would need its own IFD with every offset
inside the blob rebased.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import png
from PIL import Image

from sruc.errors import InputError, OutputError

__all__ = ["HighDepth", "read_high_depth", "write_png16", "write_tiff16"]

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
#: What to install for LZW (and other imagecodecs-only) TIFF and fast PNG.
CODECS_HINT = "pip install 'sruc[codecs]'"
# zlib level for PNG IDAT and TIFF strips. Noisy 16-bit data (the low byte of
# a photograph is close to random) makes levels >= 5 several times slower for
# about 1 % smaller files (a 4000x3000 RGB image: ~3 s at level 4 on two cores).
_ZLIB_LEVEL = 4
_WORKERS = max(1, min(8, os.cpu_count() or 1))  # tifffile's threads per image
_TIFF_STRIP_BYTES = 256 << 10  # uncompressed bytes per TIFF strip
# Modes Pillow gives 16-bit unsigned gray; older Pillow versions used "I" for PNG.
_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# What Pillow and the codecs raise on damaged data (imagecodecs' errors are
# RuntimeErrors); tifffile's TiffFileError is caught where tifffile is imported.
_DECODE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, LookupError, RuntimeError)
_DECODE_ERRORS += (struct.error, zlib.error, png.Error)


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


def _codecs() -> Any | None:
    """The imagecodecs module of the ``codecs`` extra, or None where it is not installed."""
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs


# tifffile and imagecodecs report what they decode anyway (libpng's advice on
# interlacing, an odd tag) through logging, which prints on stderr where the
# application set no logging up; the library never prints, so their records
# are dropped while this thread is inside _muted().
_MUTED = threading.local()


def _unless_muted(record: logging.LogRecord) -> bool:
    return not getattr(_MUTED, "depth", 0)


for _name in ("tifffile", "imagecodecs"):
    logging.getLogger(_name).addFilter(_unless_muted)


@contextlib.contextmanager
def _muted() -> Iterator[None]:
    _MUTED.depth = getattr(_MUTED, "depth", 0) + 1
    try:
        yield
    finally:
        _MUTED.depth -= 1


# --------------------------------------------------------------------------- reading


def read_high_depth(open_image: Callable[[], Image.Image]) -> HighDepth | None:
    """Decode a 16-bit-per-sample PNG or TIFF at full depth, or return None.

    ``open_image`` returns a fresh, unloaded image on its first frame, e.g.
    ``lambda: Image.open(path)``, and is called once; the colour decoders read
    the file Pillow opened from its start. It is released as a ``with``
    statement does (a file object the caller passed in stays open). None means
    the file is not a 16-bit variant of the module docstring: decode it with Pillow.

    Raises:
        InputError: the pixel data is damaged or truncated, or needs the extra.
        ValueError: ``open_image`` returned an image that was already loaded.
    """
    with open_image() as im:
        if im.format not in ("PNG", "TIFF"):
            return None
        # Pillow empties the tile list once the image is loaded.
        if not getattr(im, "tile", None):
            raise ValueError("open_image must return a freshly opened, not yet loaded image")
        name = getattr(im, "filename", "") or "the input image"
        try:
            with _muted():
                out = _read_png(im) if im.format == "PNG" else _read_tiff(im, name)
        except InputError:
            raise
        except _DECODE_ERRORS as exc:
            raise _damaged(name, exc) from exc
    return None if out is None else HighDepth(np.ascontiguousarray(out))


def _damaged(name: str, exc: BaseException) -> InputError:
    return InputError(
        f"cannot decode the 16-bit pixel data of {name}: {_first_line(exc)}; "
        "the file is damaged or truncated"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _from_start(im: Image.Image) -> BinaryIO:
    """The file Pillow reads ``im`` from, rewound to its first byte."""
    im.fp.seek(0)  # type: ignore[union-attr]
    return im.fp  # type: ignore[return-value]


def _read_png(im: Image.Image) -> np.ndarray | None:
    if im.mode in _GRAY_MODES:
        gray = _pillow_gray(im)
        key = im.info.get("transparency")
        return _key_to_alpha(gray, key) if isinstance(key, int) else gray
    # Pillow gives 16-bit colour the modes of 8-bit; IHDR, which the PNG
    # specification puts first, has the bit depth and colour type at bytes 24-25.
    if tuple(_from_start(im).read(26)[24:]) not in ((16, 2), (16, 4), (16, 6)):
        return None
    codecs = _codecs()
    if codecs is not None:
        # libpng turns a tRNS colour key into an alpha channel itself.
        samples = codecs.png_decode(_from_start(im).read())
        return samples.reshape(*samples.shape[:2], -1)
    reader = png.Reader(file=_from_start(im))
    width, height, rows, _ = reader.read()
    samples = np.vstack([np.frombuffer(row, dtype=np.uint16) for row in rows])
    samples = samples.reshape(height, width, -1)
    # pypng's asDirect() would add the tRNS alpha, but it also rescales by an
    # sBIT chunk, which libpng and Pillow do not; so the key is applied here.
    key = getattr(reader, "transparent", None)
    return _key_to_alpha(samples, key) if isinstance(key, tuple) else samples


def _pillow_gray(im: Image.Image) -> np.ndarray:
    """Pillow's own full-depth decoding of a 16-bit gray image, as (H, W, 1) uint16."""
    im.load()
    samples = np.asarray(im)
    if samples.ndim != 2 or samples.dtype.kind not in "ui":
        raise InputError(f"expected 16-bit gray, Pillow decoded {samples.dtype} {samples.shape}")
    if samples.min() < 0 or samples.max() > 0xFFFF:
        raise InputError("16-bit gray samples are out of range; the file is damaged")
    return samples.astype(np.uint16)[..., None]


def _read_tiff(im: Image.Image, name: str) -> np.ndarray | None:
    tags = im.tag_v2  # type: ignore[attr-defined]
    bits, photometric = np.atleast_1d(tags.get(258, 1)), tags.get(262)
    if not bits.size or (bits != 16).any() or (np.atleast_1d(tags.get(339, 1)) != 1).any():
        return None  # not 16 bits, or signed or float samples
    if photometric in (0, 1) and bits.size == 1 and im.mode in _GRAY_MODES:
        gray = _pillow_gray(im)
        return 0xFFFF - gray if photometric == 0 else gray  # 0: min-is-white
    return _tifffile_colour(_from_start(im), name) if photometric == 2 else None


def _tiff_decodable(compression: int) -> bool:
    """Whether tifffile can decompress ``compression`` here (some need imagecodecs)."""
    import tifffile

    return compression in tifffile.TIFF.DECOMPRESSORS


def _tifffile_colour(fp: BinaryIO, name: str) -> np.ndarray | None:
    """RGB or RGB plus one extra sample of the first TIFF page, straight alpha, oriented."""
    import tifffile

    try:
        with tifffile.TiffFile(fp) as tif:
            page = tif.pages[0]
            extras = tuple(int(e) for e in page.extrasamples)
            if len(extras) > 1 or page.samplesperpixel != 3 + len(extras):
                return None
            compression = tifffile.COMPRESSION(page.compression)
            if not _tiff_decodable(compression):
                raise InputError(
                    f"{name} is a 16-bit colour TIFF with {compression.name} compression, "
                    f"which needs imagecodecs: {CODECS_HINT}"
                )
            samples = page.asarray(maxworkers=_WORKERS)
            if page.axes.startswith("S"):  # planar configuration 2: one plane per sample
                samples = np.moveaxis(samples, 0, -1)
            orientation = page.tags.valueof(274, 1)
    except tifffile.TiffFileError as exc:
        raise _damaged(name, exc) from exc
    samples = samples.astype(np.uint16, copy=False)
    if extras == (0,):
        samples = samples[..., :3]  # an unspecified extra sample, as Pillow drops it
    elif extras == (1,):
        samples = _unpremultiply(samples)
    return _orient(samples, orientation)


def _orient(samples: np.ndarray, orientation: Any) -> np.ndarray:
    """Apply a TIFF Orientation value as Pillow's TIFF load transposes the image.

    Pillow's transposes need a Pillow image, which cannot hold 16-bit colour,
    hence numpy: 5-8 swap the axes, then 3, 4, 7, 8 flip the rows and 2, 3, 6,
    7 the columns (6 is Pillow's ROTATE_270, 8 its ROTATE_90).
    """
    if orientation not in range(2, 9):
        return samples
    if orientation >= 5:
        samples = samples.transpose(1, 0, 2)
    rows, columns = orientation in (3, 4, 7, 8), orientation in (2, 3, 6, 7)
    return samples[:: -1 if rows else 1, :: -1 if columns else 1]


def _unpremultiply(rgba: np.ndarray) -> np.ndarray:
    """Straight alpha from associated alpha, rounding to nearest, clipped.

    Neither tifffile nor Pillow un-premultiplies 16-bit samples, hence numpy.
    Integer rounding division (c * 65535 + a / 2) // a stays exact in uint64;
    pixels with alpha 0 carry no colour, so they become black.
    """
    alpha = rgba[..., 3:].astype(np.uint64)
    safe = np.maximum(alpha, 1)
    straight = (rgba[..., :3].astype(np.uint64) * 0xFFFF + safe // 2) // safe
    straight = np.where(alpha == 0, 0, np.minimum(straight, 0xFFFF))
    return np.concatenate([straight.astype(np.uint16), rgba[..., 3:]], axis=-1)


def _key_to_alpha(samples: np.ndarray, key: int | tuple[int, ...]) -> np.ndarray:
    """Append an alpha channel that is 0 exactly where the pixel equals ``key``."""
    key_arr = np.asarray(key if isinstance(key, tuple) else (key,), dtype=np.int64)
    if key_arr.size != samples.shape[2]:
        return samples
    alpha = np.where(np.all(samples == key_arr, axis=-1), 0, 0xFFFF).astype(np.uint16)
    return np.concatenate([samples, alpha[..., None]], axis=-1)


# --------------------------------------------------------------------------- writing


def _check_array(array: np.ndarray, what: str) -> np.ndarray:
    """Validate a uint16 image array and return it as native, contiguous (H, W, C)."""
    if not isinstance(array, np.ndarray) or array.dtype.kind != "u" or array.dtype.itemsize != 2:
        got = getattr(array, "dtype", type(array).__name__)
        raise OutputError(f"cannot write a 16-bit {what} from {got} data; pass a uint16 array")
    array = np.ascontiguousarray(array.astype(np.uint16, copy=False))  # either byte order
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
    if icc_profile is not None and (
        not isinstance(icc_profile, (bytes, bytearray)) or len(icc_profile) == 0
    ):
        raise OutputError("the ICC profile to embed must be non-empty bytes; pass None for none")
    return None if icc_profile is None else bytes(icc_profile)


def write_png16(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write a 16-bit-per-sample PNG to exactly ``path``, creating nothing else.

    Colour type 0, 4, 2 or 6 for 1 to 4 channels, not interlaced, zlib level 4;
    encoded by libpng (adaptive row filters) with the ``codecs`` extra, else by
    pypng (no row filters, so larger files). ``exif`` is a TIFF-structured
    blob (``II*\\0`` or ``MM\\0*``); a leading ``Exif\\0\\0`` (Pillow's
    ``info["exif"]``) is removed, as the PNG specification forbids it.

    Raises:
        OutputError: the array (uint16 (H, W, C), C in 1..4, or (H, W)), ICC
            profile or EXIF is unusable, or the file cannot be written.
    """
    array = _check_array(array, "PNG")
    extra = _png_metadata(icc_profile, exif)
    with _muted():
        chunks = list(png.Reader(bytes=_encode_png(array)).chunks())
    with _open_for_writing(path) as fp:
        png.write_chunks(fp, [chunks[0], *extra, *chunks[1:]])


def _png_metadata(icc_profile: bytes | None, exif: bytes | None) -> list[tuple[bytes, bytes]]:
    """The iCCP and eXIf chunks. Neither encoder writes them, so they are spliced in
    after IHDR (the specification wants both before IDAT) with pypng's chunk API;
    the iCCP body is a profile name, a NUL, method 0 and the zlib stream."""
    icc = _check_icc(icc_profile)
    extra = [(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))] if icc is not None else []
    exif_data = _png_exif(exif)
    if exif_data is not None:
        extra.append((b"eXIf", exif_data))
    return extra


#: PNG colour types by channel count: gray, gray + alpha, RGB, RGBA.
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
#: Rows filtered and compressed at a time, and the IDAT chunk size streamed out.
_ROWS_AT_ONCE = 64
_IDAT_BYTES = 1 << 20


def stream_png(
    fp: BinaryIO,
    array: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write ``array`` (uint8 or uint16 ``(H, W, C)``, C in 1..4) to ``fp`` as a PNG,
    a few rows at a time: beside the array, memory holds those rows and one
    compressed chunk. Every row gets the Paeth filter (the specification's
    best single filter for photographs), computed with numpy; zlib level 4.
    For outputs too large to encode in memory (the banded pipeline's)."""
    if array.dtype not in (np.uint8, np.uint16) or array.ndim != 3 or array.shape[2] not in _MODES:
        raise OutputError(f"cannot stream a PNG from {array.dtype} data of shape {array.shape}")
    height, width, channels = array.shape
    depth = array.dtype.itemsize * 8
    fp.write(b"\x89PNG\r\n\x1a\n")
    header = struct.pack(">IIBBBBB", width, height, depth, _COLOUR_TYPES[channels], 0, 0, 0)
    png.write_chunk(fp, b"IHDR", header)
    for tag, body in _png_metadata(icc_profile, exif):
        png.write_chunk(fp, tag, body)
    zlib_stream = zlib.compressobj(_ZLIB_LEVEL)
    pending = bytearray()
    previous = np.zeros(width * channels * array.dtype.itemsize, np.uint8)
    for y0 in range(0, height, _ROWS_AT_ONCE):
        rows = _as_bytes(array[y0 : y0 + _ROWS_AT_ONCE])
        pending += zlib_stream.compress(_paeth(rows, previous, channels * array.dtype.itemsize))
        previous = rows[-1]
        while len(pending) >= _IDAT_BYTES:
            png.write_chunk(fp, b"IDAT", bytes(pending[:_IDAT_BYTES]))
            del pending[:_IDAT_BYTES]
    pending += zlib_stream.flush()
    png.write_chunk(fp, b"IDAT", bytes(pending))
    png.write_chunk(fp, b"IEND")


def _as_bytes(rows: np.ndarray) -> np.ndarray:
    """``(n, W, C)`` samples as ``(n, W * C * itemsize)`` bytes, big-endian as PNG wants."""
    samples = np.ascontiguousarray(rows, dtype=">u2" if rows.dtype == np.uint16 else np.uint8)
    return samples.view(np.uint8).reshape(rows.shape[0], -1)


def _paeth(rows: np.ndarray, previous: np.ndarray, bpp: int) -> bytes:
    """``rows`` (bytes of each row) Paeth-filtered, each behind its filter-type byte 4.

    The filter predicts a byte from the raw bytes left (a), above (b) and
    above-left (c) of it, so a whole block of rows filters at once."""
    up = np.concatenate([previous[None], rows[:-1]]).astype(np.int16)
    x = rows.astype(np.int16)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    corner = np.zeros_like(up)
    corner[:, bpp:] = up[:, :-bpp]
    p = left + up - corner
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - corner)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (x - pred).astype(np.uint8)  # modulo 256, as the specification says
    return out.tobytes()


def _encode_png(array: np.ndarray) -> bytes:
    """A complete PNG of ``array`` (H, W, C), without ancillary chunks."""
    height, width, channels = array.shape
    codecs = _codecs()
    if codecs is not None:
        return bytes(codecs.png_encode(array if channels > 1 else array[..., 0], level=_ZLIB_LEVEL))
    layout = {"greyscale": channels < 3, "alpha": channels in (2, 4)}
    writer = png.Writer(width, height, bitdepth=16, compression=_ZLIB_LEVEL, **layout)
    rows = array.astype(">u2").reshape(height, -1)  # PNG samples are big-endian
    buffer = io.BytesIO()
    writer.write_packed(buffer, (row.tobytes() for row in rows))
    return buffer.getvalue()


def _png_exif(exif: bytes | None) -> bytes | None:
    if exif is None:
        return None
    if not isinstance(exif, (bytes, bytearray)):
        raise OutputError("EXIF data to embed must be bytes; pass None for none")
    data = bytes(exif)[6:] if exif.startswith(b"Exif\0\0") else bytes(exif)
    if not data.startswith((b"II*\0", b"MM\0*")):
        raise OutputError(
            "EXIF data must start with a TIFF header (II*\\0 or MM\\0*); pass None to drop it"
        )
    return data


@contextlib.contextmanager
def _open_for_writing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing, turning OSError into OutputError; a file
    object (``io.BytesIO``) is written as it is."""
    if hasattr(path, "write"):
        yield path  # type: ignore[misc]
        return
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


def write_tiff16(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write a 16-bit baseline TIFF to exactly ``path``, with tifffile; EXIF is ignored.

    Little-endian, chunky (PlanarConfiguration 1, left out for gray as TIFF 6.0
    allows), Adobe Deflate (8) at zlib level 4 with the horizontal predictor
    (2), strips of about 256 KiB, 72 dpi, Photometric 1 for gray(+alpha) and 2
    for RGB(A), alpha unassociated (ExtraSamples 2), ICC profile in tag 34675.
    Pillow cannot open 16-bit gray+alpha TIFF (libtiff and most readers can).

    Raises:
        OutputError: the array (uint16 (H, W, C), C in 1..4, or (H, W)) or ICC
            profile is unusable, or the file cannot be written.
    """
    import tifffile

    del exif  # documented as not written
    array = _check_array(array, "TIFF")
    icc = _check_icc(icc_profile)
    height, width, channels = array.shape
    layout = {
        "photometric": "minisblack" if channels < 3 else "rgb",
        "extrasamples": ["unassalpha"] if channels in (2, 4) else None,
        "rowsperstrip": max(1, min(height, _TIFF_STRIP_BYTES // (width * channels * 2))),
        # Tag 34675 (InterColorProfile, UNDEFINED), as tifffile's iccprofile=
        # writes it, which tifffile 2024.2.12 (the floor) lacks.
        "extratags": [(34675, 7, len(icc), icc, True)] if icc is not None else None,
    }
    with _open_for_writing(path) as fp, _muted():
        try:
            tifffile.imwrite(
                fp,
                array if channels > 1 else array[..., 0],
                byteorder="<",
                bigtiff=False,
                planarconfig="contig",
                compression="adobe_deflate",
                compressionargs={"level": _ZLIB_LEVEL},
                predictor="horizontal",
                resolution=(72, 72),
                resolutionunit="inch",
                metadata=None,
                software=False,
                maxworkers=_WORKERS,
                **layout,
            )
        except ValueError as exc:  # e.g. data over the 4 GiB of a classic TIFF
            raise OutputError(
                f"cannot write {os.fspath(path)} as TIFF: {_first_line(exc)}; write a PNG instead"
            ) from exc
