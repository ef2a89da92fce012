"""Reading and writing image files without losing what users care about.

Decoding applies the EXIF orientation, keeps alpha as its own channel, keeps
gray images gray (one channel) and 16-bit images 16-bit, converts palette,
CMYK and other modes sensibly, and remembers the ICC profile and EXIF so they
can be written back. Writing goes to a temporary file in the output folder and
is renamed into place, so an output is either complete or absent.

This module and the CLI are the only parts of sruc that touch files.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, UnidentifiedImageError

from sruc.errors import InputError, OutputError, SrucWarning, UsageError
from sruc.files import heif, highdepth
from sruc.files.atomic import atomic_stream, check_still_free, output_errors, write_output
from sruc.files.metadata import dropping_oversized_chunks

#: Default limit on input pixels, Pillow's own decompression-bomb threshold
#: (about 89.5 megapixels, a 128 MB 24-bit image); --max-pixels raises it.
DEFAULT_MAX_PIXELS = 89_478_485
#: zlib level of 8-bit PNG outputs (16-bit ones use the same in sruc.files.highdepth).
#: Measured on Set5 photos upscaled to 432 and 768 px: level 4 makes files
#: 0.5-2% larger than Pillow's default 6 in half the time (27 vs 54 ms, 96 vs
#: 184 ms), which matters in `sruc batch` where encoding shares the CPU with
#: the model; level 1 would be 4x faster but 16% larger.
PNG_COMPRESS_LEVEL = 4

#: Default JPEG/WebP quality.
DEFAULT_QUALITY = 95
_EXIF_ORIENTATION = 0x0112

#: Output extensions -> Pillow format names.
FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".avif": "AVIF",
    ".heic": "HEIF",
    ".heif": "HEIF",
}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
#: Formats with transparency (GIF's is one palette entry: alpha under half is transparent).
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "BMP", "AVIF", "HEIF", "GIF"}
#: Formats that carry EXIF and an ICC profile through Pillow.
_EXIF_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"}


@dataclass
class Picture:
    """A decoded image, ready for the pipeline.

    Attributes:
        color: float32 ``(C, H, W)`` in [0, 1], C = 1 (gray) or 3 (RGB).
        alpha: float32 ``(1, H, W)`` in [0, 1], or None.
        bits: bits per sample of the source, 8 or 16 (outputs keep it).
        icc_profile: the ICC profile bytes, or None.
        exif: EXIF bytes with the orientation reset to normal, or None.
        frames: frames of the animation this picture is a frame of (1: a still).
        raster: the pixels already quantised, ``(H, W, C)`` uint8 or uint16,
            colour then alpha, or None. The banded pipeline stores its output
            so (:func:`from_raster`): ``color`` and ``alpha`` are then integer
            views of it, for their shapes; :meth:`to_array` gives it back.
    """

    color: torch.Tensor
    alpha: torch.Tensor | None = None
    bits: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None
    info: dict[str, object] = field(default_factory=dict)
    frames: int = 1
    raster: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.color.shape[-2])

    @property
    def width(self) -> int:
        return int(self.color.shape[-1])

    @property
    def is_gray(self) -> bool:
        return int(self.color.shape[0]) == 1

    def with_pixels(self, color: torch.Tensor, alpha: torch.Tensor | None) -> Picture:
        return replace(self, color=color, alpha=alpha, raster=None)

    def without_alpha(self) -> Picture:
        """The picture with its alpha channel dropped (a view where it is a raster)."""
        if self.raster is None:
            return self.with_pixels(self.color, None)
        return from_raster(self.raster[..., : self.color.shape[0]], self)

    def to_array(self, bits: int | None = None) -> np.ndarray:
        """Quantise to an ``(H, W, C)`` uint8/uint16 array, alpha last if present
        (a raster picture of that depth gives its own array, no copy)."""
        bits = bits or self.bits
        if self.raster is not None:
            if raster_bits(self.raster) == bits:
                return self.raster
            x = torch.from_numpy(self.raster.astype(np.float32) / _peak(raster_bits(self.raster)))
            return quantise(x.permute(2, 0, 1), bits)
        planes = [self.color] if self.alpha is None else [self.color, self.alpha]
        return quantise(torch.cat(planes, dim=0), bits)

    def to_pil(self) -> Image.Image:
        """As a Pillow image. Pillow has no 16-bit RGB mode: such images become 8-bit here
        (write them with :func:`write_image` to keep 16 bits). ICC and EXIF go in ``info``."""
        channels = int(self.color.shape[0]) + (self.alpha is not None)
        if self.bits == 16 and channels == 1:
            im = Image.fromarray(self.to_array(16)[:, :, 0])  # mode I;16
        else:
            arr = self.to_array(8)
            # (H, W) -> L, (H, W, 2) -> LA, (H, W, 3) -> RGB, (H, W, 4) -> RGBA
            im = Image.fromarray(arr[:, :, 0] if channels == 1 else arr)
        if self.icc_profile:
            im.info["icc_profile"] = self.icc_profile
        if self.exif:
            im.info["exif"] = self.exif
        return im


def _peak(bits: int) -> float:
    return 255.0 if bits == 8 else 65535.0


def quantise(x: torch.Tensor, bits: int) -> np.ndarray:
    """Float ``(C, H, W)`` in [0, 1] to an ``(H, W, C)`` uint8/uint16 array (clamped, rounded).

    The one rounding rule of every output, whole or made band by band."""
    q = torch.round(x.float().clamp(0, 1) * _peak(bits)).permute(1, 2, 0).contiguous()
    return q.numpy().astype(np.uint8 if bits == 8 else np.uint16)


def raster_bits(raster: np.ndarray) -> int:
    """8 or 16: the depth of a raster's samples."""
    return 8 if raster.dtype == np.uint8 else 16


def from_raster(raster: np.ndarray, like: Picture) -> Picture:
    """A picture of quantised pixels ``(H, W, C)``, with ``like``'s metadata and bits.

    ``C`` is ``like``'s colour channels, plus one for alpha if there are more."""
    colours = int(like.color.shape[0])
    planes = torch.from_numpy(raster).permute(2, 0, 1)
    alpha = planes[colours:] if raster.shape[2] > colours else None
    return replace(like, color=planes[:colours], alpha=alpha, raster=raster)


def output_bits(pic: Picture, path: str | os.PathLike[str] | None) -> int:
    """The bits per sample :func:`write_image` writes ``pic`` with (``path`` None:
    the depth :meth:`Picture.to_pil` gives)."""
    if path is None:
        gray16 = pic.bits == 16 and pic.is_gray and pic.alpha is None
        return 16 if gray16 else 8
    return _bits_for(pic.bits, output_format(path))


def encoded_copies(path: str | os.PathLike[str] | None) -> int:
    """Copies of an output's pixels held while it is encoded, beside the pixels
    themselves: none for a PNG of a raster picture (its rows are streamed), a
    Pillow image and the encoded bytes for other files, a Pillow image for
    ``path`` None (:meth:`Picture.to_pil`). For the memory estimate."""
    if path is None:
        return 1
    return 0 if output_format(path) == "PNG" else 2


# --------------------------------------------------------------------------- decoding


def read_image(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Picture:
    """Decode an image file into a :class:`Picture`.

    Raises:
        InputError: missing, a directory, empty, not an image, truncated, or
            over ``max_pixels`` (None: no limit).
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:  # ELOOP: a symlink loop; EACCES on a parent folder...
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a folder, not an image (use `sruc batch` for folders)")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(
            f"{path} is not a regular file ({_file_kind(st.st_mode)}); give an image file"
        )
    if st.st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    with dropping_oversized_chunks() as dropped:
        pic = _decode(lambda: _open(path), str(path), max_pixels)
    for what in dict.fromkeys(dropped):  # once each, though the file is opened twice
        warnings.warn(
            f"{path}: its {what} is too large to unpack and was left out", SrucWarning, stacklevel=2
        )
    return pic


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a file")


def check_input_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an input over ``max_pixels`` (``--max-pixels``; None: no limit), from its
    header, before decoding.

    Raises:
        InputError: the image has more pixels than allowed.
    """
    n = width * height
    if max_pixels is not None and n > max_pixels:
        raise InputError(
            f"{name} is {width}x{height} = {n:,} pixels, over the limit of {max_pixels:,} "
            "(a guard against decompression bombs); pass --max-pixels to allow it"
        )


def check_output_pixels(
    width: int, height: int, max_pixels: int | None, source: tuple[int, int], scale: float
) -> None:
    """Refuse an output of ``width x height`` over ``max_pixels`` (``--max-pixels`` where
    the user gave it; None: no limit but memory), before any work.

    Raises:
        InputError: the output would have more pixels than allowed.
    """
    n = width * height
    if max_pixels is not None and n > max_pixels:
        raise InputError(
            f"the x{scale:g} output of this {source[0]}x{source[1]} image would be "
            f"{width}x{height} = {n:,} pixels, over --max-pixels {max_pixels:,}; "
            "use a smaller scale or a larger --max-pixels"
        )


def from_pil(im: Image.Image, max_pixels: int | None = None, *, name: str = "image") -> Picture:
    """A :class:`Picture` from an in-memory Pillow image (orientation applied); ``name``
    is what error messages call it."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{name} is damaged or truncated ({_first_line(e)})") from None
    return _decode(lambda: im, name, max_pixels, reopenable=False)


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open (not decode) an image file with Pillow, for its header and frames.

    Raises:
        InputError: not an image, damaged, or HEIC/HEIF without pillow-heif.
    """
    return _open(Path(path))


def _open(path: Path) -> Image.Image:
    iso = _sniff(path)
    if iso == "HEIF" and not heif.available():
        raise InputError(
            f"{path} is a HEIC/HEIF image; reading it needs pillow-heif: {heif.HEIF_EXTRA}"
        )
    if iso == "AVIF" and not heif.avif_available():
        raise InputError(
            f"{path} is an AVIF image and this Pillow cannot read AVIF; {heif.AVIF_HINT}"
        )
    try:
        # Pillow refuses images over twice its limit inside open(); sruc checks
        # the size itself against --max-pixels, so the message can say so.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except UnidentifiedImageError:
        if iso == "GIF":
            raise InputError(f"{path} is a GIF with no frames, or a damaged one") from None
        if iso is not None:  # its header says HEIF/AVIF, but the decoder refused it
            raise InputError(f"{path} is a damaged or truncated {iso} file") from None
        raise InputError(
            f"{path} is not an image sruc can read (unknown or damaged format)"
        ) from None
    except OSError as e:
        if e.errno is not None:  # a real I/O error: permissions, a device gone
            raise InputError(f"{path}: cannot read ({e.strerror})") from None
        raise InputError(f"{path} is damaged or truncated ({_first_line(e)})") from None


def _sniff(path: Path) -> str | None:
    """``"GIF"``, or ``"HEIF"``/``"AVIF"`` from the ``ftyp`` box (see :mod:`.heif`), by the
    file's first bytes; None for anything else (Pillow tells the rest)."""
    try:
        with open(path, "rb") as f:
            head = f.read(heif.HEAD_BYTES)
    except OSError:
        return None  # Image.open reports it
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return heif.kind(head)


def _decode(
    open_image: Callable[[], Image.Image],
    name: str,
    max_pixels: int | None,
    reopenable: bool = True,
) -> Picture:
    im = open_image()
    w, h = im.size
    check_input_pixels(name, w, h, max_pixels)
    if w * h == 0:
        raise InputError(f"{name} has no pixels ({w}x{h})")
    icc = im.info.get("icc_profile") or None
    orientation, exif = _exif_reset_orientation(im)
    try:
        deep = highdepth.read_high_depth(open_image) if reopenable else None
        if deep is not None:
            arr = deep.array
            bits = 16
            peak = 65535.0
        else:
            im, icc = _to_standard_mode(im, icc, name)
            im.load()
            arr = np.asarray(im)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            bits = 16 if arr.dtype == np.uint16 else 8
            peak = 65535.0 if bits == 16 else 255.0
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated or corrupt data as OSError/SyntaxError.
        raise InputError(f"{name} is damaged or truncated ({_first_line(e)})") from None
    t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32) / peak).permute(2, 0, 1)
    t = apply_orientation(t, orientation).contiguous()
    c = t.shape[0]
    color, alpha = (t[:-1], t[-1:]) if c in (2, 4) else (t, None)
    return Picture(color=color.contiguous(), alpha=alpha, bits=bits, icc_profile=icc, exif=exif)


def _to_standard_mode(
    im: Image.Image, icc: bytes | None, name: str
) -> tuple[Image.Image, bytes | None]:
    """Convert to L, LA, RGB, RGBA or I;16 (gray 16-bit); return the ICC that applies."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im, icc
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im).astype(np.uint16)
        return Image.fromarray(arr), icc  # uint16 array -> read back as such
    if mode == "I":
        arr = np.asarray(im)
        if arr.min() >= 0 and arr.max() <= 65535:
            return Image.fromarray(arr.astype(np.uint16)), icc
        raise InputError(f"{name}: 32-bit integer images are not supported; convert to 16-bit")
    if mode == "1":
        return im.convert("L"), icc
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if has_alpha else "RGB"), icc
    if mode == "La":
        return im.convert("LA"), icc
    if mode in ("RGBa", "RGBX"):
        return im.convert("RGBA" if mode == "RGBa" else "RGB"), icc
    if mode == "CMYK":
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
                out = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
                assert out is not None
                return out, srgb.tobytes()
            except (ImageCms.PyCMSError, OSError):
                pass
        # No usable profile: Pillow's naive conversion, and no profile, since
        # the CMYK one no longer describes the pixels.
        return im.convert("RGB"), None
    if mode == "F":
        raise InputError(f"{name}: floating-point images are not supported; convert to 16-bit")
    try:
        return im.convert("RGB"), None
    except (ValueError, OSError):
        raise InputError(f"{name}: images of mode {mode} are not supported") from None


def _exif_reset_orientation(im: Image.Image) -> tuple[int, bytes | None]:
    """The EXIF orientation (1..8) and the EXIF bytes with it set to 1 (normal)."""
    try:
        exif = im.getexif()
    except Exception:
        return 1, None
    if not exif:
        return 1, None
    orientation = exif.get(_EXIF_ORIENTATION, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    if _EXIF_ORIENTATION in exif:
        exif[_EXIF_ORIENTATION] = 1
    try:
        return orientation, exif.tobytes()
    except Exception:
        return orientation, None


def apply_orientation(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply EXIF orientation 1..8 to a ``(C, H, W)`` tensor, as Pillow's exif_transpose."""
    h, w = -2, -1
    ops: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
        1: lambda x: x,
        2: lambda x: x.flip(w),
        3: lambda x: x.flip(h, w),
        4: lambda x: x.flip(h),
        5: lambda x: x.transpose(h, w),
        6: lambda x: torch.rot90(x, -1, (h, w)),
        7: lambda x: x.flip(h, w).transpose(h, w),
        8: lambda x: torch.rot90(x, 1, (h, w)),
    }
    return ops.get(orientation, ops[1])(t)


# --------------------------------------------------------------------------- encoding


def output_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format name for an output path's extension."""
    ext = Path(path).suffix.lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        known = ", ".join(sorted({e for e in FORMATS if e != ".jpeg"}))
        what = f"'{ext}'" if ext else "no extension"
        raise UsageError(
            f"cannot tell the output format from {Path(path).name} ({what}); use {known}"
        )
    return fmt


def check_writable_format(fmt: str) -> None:
    """Refuse a format this installation cannot encode (HEIF without pillow-heif, AVIF
    with a Pillow built without it).

    Raises:
        OutputError: naming the extra to install.
    """
    if fmt == "HEIF" and not heif.available():
        raise OutputError(f"writing HEIC/HEIF needs pillow-heif: {heif.HEIF_EXTRA}")
    if fmt == "AVIF" and not heif.avif_available():
        raise OutputError(f"this Pillow cannot write AVIF; {heif.AVIF_HINT}")


def check_output(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    inputs: tuple[str | os.PathLike[str], ...] = (),
) -> Path:
    """Check, before any work, that ``path`` can be written; returns it.

    Raises:
        UsageError: unknown extension, or the output is one of the inputs.
        OutputError: the folder is missing or not writable, or the file exists
            and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = output_format(path)
    check_writable_format(fmt)
    for src in inputs:
        if _same_file(Path(src), path):
            raise UsageError(f"output {path} is the input file; sruc never overwrites an input")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} is not a folder")
    if path.is_dir():
        example = path / "upscaled.png"
        raise OutputError(f"output {path} is a folder; give a file name, e.g. {example}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to folder {parent}: permission denied")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop: then they are not the same file
        return False


def write_image(
    pic: Picture,
    path: str | os.PathLike[str],
    *,
    quality: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Encode ``pic`` to ``path`` atomically (temporary file, then rename).

    The format comes from the extension. 16-bit pictures stay 16-bit in PNG and
    TIFF; JPEG/WebP/BMP are 8-bit. Alpha is kept where the format has it
    (JPEG has none: dropped with a warning). ICC and EXIF are carried over.
    """
    path = Path(path)
    fmt = output_format(path)
    check_writable_format(fmt)
    if pic.alpha is not None and fmt not in _ALPHA_FORMATS:
        warnings.warn(
            f"{fmt} has no transparency: the alpha channel is dropped", SrucWarning, stacklevel=2
        )
        pic = pic.without_alpha()
    if pic.bits == 16 and fmt not in _SIXTEEN_BIT_FORMATS:
        warnings.warn(
            f"{fmt} holds 8 bits per channel: the 16-bit image is reduced",
            SrucWarning,
            stacklevel=2,
        )
    if pic.raster is not None and fmt == "PNG":
        with output_errors(path):
            _stream_png(pic, path, overwrite)
        return path
    # Encoded in memory, then written once and checked: an encoder writing to a file
    # itself may leave a short file on a full disk and report success.
    with output_errors(path):
        data = _encode(pic, fmt, quality)
    return write_output(path, data, overwrite=overwrite)


def _stream_png(pic: Picture, path: Path, overwrite: bool) -> None:
    """A raster picture (a banded, very large output) as a PNG written row by row into
    the checked temporary file: no Pillow copy of the pixels, no encoded copy in memory."""
    check_still_free(path, overwrite)
    array = pic.to_array(_bits_for(pic.bits, "PNG"))
    with atomic_stream(path) as f:
        highdepth.stream_png(f, array, icc_profile=pic.icc_profile, exif=pic.exif)  # type: ignore[arg-type]


def _bits_for(bits: int, fmt: str) -> int:
    return 16 if bits == 16 and fmt in _SIXTEEN_BIT_FORMATS else 8


def _encode(pic: Picture, fmt: str, quality: int | None) -> bytes:
    """The encoded file, in memory."""
    buffer = io.BytesIO()
    channels = int(pic.color.shape[0]) + (pic.alpha is not None)
    if pic.bits == 16 and fmt in _SIXTEEN_BIT_FORMATS and channels > 1:
        # Pillow cannot hold 16-bit colour; highdepth writes these (pypng or libpng, tifffile).
        writer = highdepth.write_png16 if fmt == "PNG" else highdepth.write_tiff16
        writer(buffer, pic.to_array(16), icc_profile=pic.icc_profile, exif=pic.exif)  # type: ignore[arg-type]
        return buffer.getvalue()
    if fmt == "GIF":  # one frame, through the animation's palette quantiser
        from sruc.files import gif

        return gif.encode([pic.to_array(8)], [], loop=None)
    bits = _bits_for(pic.bits, fmt)
    pic8 = replace(pic, bits=bits)
    im = pic8.to_pil()
    kwargs: dict[str, object] = {}
    if pic.icc_profile and fmt != "BMP":
        kwargs["icc_profile"] = pic.icc_profile
    if pic.exif and fmt in _EXIF_FORMATS:
        kwargs["exif"] = pic.exif
    if fmt == "JPEG":
        # 4:4:4 chroma: subsampling would throw away much of what was upscaled.
        kwargs.update(quality=quality or DEFAULT_QUALITY, subsampling=0, optimize=True)
    elif fmt == "WEBP":
        kwargs.update(quality=quality or DEFAULT_QUALITY, method=4)
    elif fmt in ("AVIF", "HEIF"):
        kwargs.update(quality=quality or DEFAULT_QUALITY)
    elif fmt == "PNG":
        kwargs.update(compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_deflate")
    im.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _first_line(e: BaseException, limit: int = 120) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
