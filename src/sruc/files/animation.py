"""Animated GIF, WebP and PNG (APNG): reading frames one at a time, writing them back.

:func:`probe` tells an animation from a still by its header (and, for GIF, a
scan of the frame headers that decodes no pixels) and refuses one whose frames
hold more pixels in all than ``max_pixels``, before any frame is decoded.
:func:`read_frames` then yields the frames one by one as :class:`Frame`\\ s:
the picture as a viewer shows it at that moment (Pillow composes each frame
onto the canvas by the file's disposal and blending), its duration and its
disposal. :func:`write_animation` takes such frames (upscaled) one by one,
keeps each only as 8 bits (never as float), and encodes them with their
durations, disposal and loop count, through :mod:`sruc.files.atomic`.

Frames are written whole (each the full canvas); the encoders crop each to what
changed. APNG frames replace the canvas (blend "source"), so transparency comes
out as it went in; GIF frames are re-quantised to one shared palette
(:mod:`sruc.files.gif`). Identical consecutive frames are merged by the GIF and
APNG encoders, their durations added, so the timing is kept.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sruc.errors import InputError, SrucWarning, UsageError
from sruc.files import gif, images
from sruc.files.atomic import write_output
from sruc.files.images import Picture
from sruc.files.metadata import dropping_oversized_chunks

#: Pillow formats sruc reads and writes as animations.
ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
#: Formats whose frames are an animation when there are several (AVIF sequences are
#: read; written only as GIF, WebP or APNG). Other multi-frame files are not
#: animations: a multi-page TIFF, an MPO (a camera JPEG with a preview), a HEIC
#: burst give their first (primary) image, as before.
_READ_ANIMATED = ANIMATED_FORMATS | {"AVIF"}
#: Frame duration used when a file gives none, in milliseconds (what browsers show).
DEFAULT_DURATION_MS = 100
#: APNG disposal codes (``dispose_op``) by name.
_APNG_DISPOSAL = {"none": 0, "background": 1, "previous": 2}
_APNG_NAMES = {v: k for k, v in _APNG_DISPOSAL.items()}
#: GIF disposal codes: 0 (unspecified) and 1 leave the frame in place.
_GIF_NAMES = {0: "none", 1: "none", 2: "background", 3: "previous"}


@dataclass(frozen=True)
class Animation:
    """What :func:`probe` learnt of an animated file from its header.

    Attributes:
        path: the file.
        format: Pillow's format name (``GIF``, ``WEBP``, ``PNG``).
        width, height: the canvas, in pixels.
        frames: how many frames.
        loop: how many times it plays as stored (0: forever), or None when the
            file stores no count (a GIF without one plays once).
        alpha: whether frames may be transparent.
    """

    path: Path
    format: str
    width: int
    height: int
    frames: int
    loop: int | None
    alpha: bool


@dataclass
class Frame:
    """One frame: the picture as shown, for ``duration`` ms; then ``disposal`` (``none``,
    ``background`` or ``previous``) says what the canvas becomes before the next."""

    picture: Picture
    duration: int = DEFAULT_DURATION_MS
    disposal: str = "none"


def probe(
    path: str | os.PathLike[str], max_pixels: int | None = images.DEFAULT_MAX_PIXELS
) -> Animation | None:
    """The :class:`Animation` in ``path``, or None for a still image (or not an image
    Pillow opens: :func:`sruc.files.images.read_image` then says what is wrong).

    Raises:
        InputError: an animation whose frames hold more than ``max_pixels`` pixels
            in all (None: no limit), a GIF with no frames, HEIC without pillow-heif.
    """
    path = Path(path)
    if not path.is_file():
        return None  # read_image words missing files, folders and devices
    # What oversized metadata is dropped, read_image (a still) or read_frames warns of.
    with dropping_oversized_chunks():
        return _probe(path, max_pixels)


def _probe(path: Path, max_pixels: int | None) -> Animation | None:
    im = images.open_image(path)
    try:
        if im.format not in _READ_ANIMATED or not getattr(im, "is_animated", False):
            return None
        try:
            n = int(getattr(im, "n_frames", 1))
        except (OSError, EOFError, SyntaxError, ValueError) as e:
            raise InputError(f"{path} is damaged or truncated ({e})") from None
        if n <= 1:
            return None
        w, h = im.size
        if max_pixels is not None and w * h * n > max_pixels:
            raise InputError(
                f"{path} has {n:,} frames of {w}x{h} = {w * h * n:,} pixels in all, over "
                f"the limit of {max_pixels:,} (a guard against decompression bombs); "
                "pass --max-pixels to allow it"
            )
        loop = im.info.get("loop")
        alpha = (
            im.format == "GIF"
            or im.mode in ("RGBA", "LA", "PA", "La", "RGBa")
            or ("transparency" in im.info)
        )
        return Animation(
            path=path,
            format=str(im.format),
            width=w,
            height=h,
            frames=n,
            loop=int(loop) if isinstance(loop, int) else None,
            alpha=bool(alpha),
        )
    finally:
        im.close()


def check_output_format(anim: Animation, fmt: str) -> None:
    """Refuse to write an animation to a format that holds one image.

    Raises:
        UsageError: naming the formats that keep it.
    """
    if fmt not in ANIMATED_FORMATS:
        raise UsageError(
            f"{anim.path.name} is animated ({anim.frames} frames) and sruc writes {fmt} as "
            "one image; write .gif, .webp or .png (APNG) to keep the animation"
        )


def read_frames(anim: Animation) -> Iterator[Frame]:
    """The frames of ``anim``, decoded one at a time (a frame is decoded when asked for).

    Raises:
        InputError: a frame is damaged or truncated (names the frame).
    """
    with dropping_oversized_chunks() as dropped:
        yield from _frames(anim)
    for what in dict.fromkeys(dropped):
        warnings.warn(
            f"{anim.path}: its {what} is too large to unpack and was left out",
            SrucWarning,
            stacklevel=2,
        )


def _frames(anim: Animation) -> Iterator[Frame]:
    im = images.open_image(anim.path)
    try:
        for i in range(anim.frames):
            name = f"{anim.path} frame {i + 1} of {anim.frames}"
            try:
                im.seek(i)
            except (OSError, EOFError, SyntaxError, ValueError) as e:
                raise InputError(f"{name} is damaged or truncated ({e})") from None
            pic = images.from_pil(im, None, name=name)
            pic.frames = anim.frames
            yield Frame(pic, _duration(im), _disposal(im))
    finally:
        im.close()


def _duration(im: Image.Image) -> int:
    d = im.info.get("duration")
    return round(d) if isinstance(d, int | float) and d > 0 else DEFAULT_DURATION_MS


def _disposal(im: Image.Image) -> str:
    if im.format == "GIF":
        return _GIF_NAMES.get(int(getattr(im, "disposal_method", 0) or 0), "none")
    if im.format == "PNG":
        return _APNG_NAMES.get(int(im.info.get("disposal", 0) or 0), "none")
    return "none"  # WebP: Pillow gives composed frames and no disposal


def write_animation(
    frames: Iterable[Frame],
    path: str | os.PathLike[str],
    *,
    loop: int | None = 0,
    alpha: bool = True,
    quality: int | None = None,
    lossless: bool = False,
    overwrite: bool = False,
) -> Path:
    """Encode ``frames`` to ``path`` (GIF, WebP or PNG by its extension), atomically.

    Each frame is reduced to 8 bits as it arrives, so its float picture can be
    freed: at most the 8-bit frames are held until the encoder has them all.

    Args:
        loop: loop count to store (0: forever; None: none stored, plays once).
        alpha: keep transparency (RGBA frames); False writes RGB.
        quality: WebP quality, 1-100 (default 95); GIF and PNG are lossless.
        lossless: lossless WebP.
        overwrite: replace an existing ``path``.

    Raises:
        UsageError: the extension is not an animated format.
        InputError: no frames.
        OutputError: the file cannot be written.
    """
    path = Path(path)
    fmt = images.output_format(path)
    if fmt not in ANIMATED_FORMATS:
        raise UsageError(f"{path.name}: animations are written as .gif, .webp or .png (APNG)")
    arrays: list[np.ndarray] = []
    durations: list[int] = []
    disposals: list[str] = []
    icc = exif = None
    for i, frame in enumerate(frames):
        pic = frame.picture
        if i == 0:
            icc, exif = pic.icc_profile, pic.exif
        arrays.append(_eight_bit(pic, alpha))
        durations.append(int(frame.duration))
        disposals.append(frame.disposal)
        del frame, pic  # the float picture goes now, not with the next frame
    if not arrays:
        raise InputError(f"no frames to write to {path}")
    if any(a.shape[:2] != arrays[0].shape[:2] for a in arrays):
        raise UsageError(f"{path.name}: the frames of an animation must all be one size")
    if fmt == "GIF":
        data = gif.encode(arrays, durations, loop=loop, disposal=disposals)
    else:
        data = _encode_pillow(arrays, fmt, durations, disposals, loop, icc, exif, quality, lossless)
    return write_output(path, data, overwrite=overwrite)


def _eight_bit(pic: Picture, alpha: bool) -> np.ndarray:
    """``(H, W, 3 or 4)`` uint8 RGB(A) of ``pic`` (gray becomes RGB; alpha 255 if none)."""
    if pic.bits == 16:
        warnings.warn(
            "animations hold 8 bits per channel: the 16-bit frames are reduced",
            SrucWarning,
            stacklevel=3,
        )
    arr = pic.with_pixels(pic.color, None).to_array(8)
    if arr.shape[2] == 1:
        arr = arr.repeat(3, axis=2)
    if not alpha:
        return arr
    a = (
        pic.with_pixels(pic.alpha, None).to_array(8)
        if pic.alpha is not None
        else np.full((*arr.shape[:2], 1), 255, np.uint8)
    )
    return np.concatenate([arr, a], axis=2)


def _encode_pillow(
    arrays: list[np.ndarray],
    fmt: str,
    durations: list[int],
    disposals: list[str],
    loop: int | None,
    icc: bytes | None,
    exif: bytes | None,
    quality: int | None,
    lossless: bool,
) -> bytes:
    """WebP or APNG in memory; ``arrays`` is emptied as the frames become Pillow images
    (both encoders take a list: Pillow reads the frames more than once)."""
    rest = []
    first = Image.fromarray(arrays.pop(0))
    while arrays:
        rest.append(Image.fromarray(arrays.pop(0)))
    n = len(durations)
    kwargs: dict[str, object] = {"duration": durations}
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = exif
    if fmt == "PNG":
        # Every frame is the whole canvas and replaces it (blend 0, "source"), so
        # transparent pixels stay transparent whatever was shown before.
        kwargs.update(
            disposal=[_APNG_DISPOSAL.get(d, 0) for d in disposals],
            blend=[0] * n,
            loop=1 if loop is None else loop,  # no count stored: plays once
            compress_level=images.PNG_COMPRESS_LEVEL,
        )
    else:  # WEBP
        kwargs.update(
            loop=1 if loop is None else loop,
            lossless=lossless,
            quality=100 if lossless else (quality or images.DEFAULT_QUALITY),
            method=4,
        )
    buffer = io.BytesIO()
    first.save(buffer, format=fmt, save_all=True, append_images=rest, **kwargs)
    return buffer.getvalue()


__all__ = [
    "ANIMATED_FORMATS",
    "DEFAULT_DURATION_MS",
    "Animation",
    "Frame",
    "check_output_format",
    "probe",
    "read_frames",
    "write_animation",
]
