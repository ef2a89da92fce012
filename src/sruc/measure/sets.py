"""The ground truth ``sruc bench`` scores against: folders of 8-bit images.

:func:`find_images` lists a set's images, :func:`check_image` checks each
header before any work (readable, 8-bit, large enough for every scale) and
:func:`read_ground_truth` decodes one as the protocol measures it
(``docs/PROTOCOL.md``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from sruc.core.metrics import SSIM_WINDOW
from sruc.errors import InputError
from sruc.files import discovery


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The images directly in ``folder`` (not in sub-folders), sorted by name.

    Files are recognised by extension (:data:`sruc.files.discovery.IMAGE_EXTENSIONS`);
    other files and hidden files (such as macOS ``._name.png`` companions,
    which are not images) are skipped.

    Raises:
        InputError: the folder is missing, not a folder, unreadable, empty, or
            holds no images.
    """
    path = Path(folder)
    if not path.exists():
        raise InputError(f"{path}: no such folder")
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a folder; sruc bench measures folders of images")
    try:
        entries = sorted(path.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise InputError(f"cannot list folder {path}: {e.strerror or e}") from None
    found = [p for p in discovery.walk(path, recursive=False) if discovery.claims_image(p)]
    if not found:
        if not entries:
            raise InputError(f"{path} is empty: there are no images to measure")
        raise InputError(
            f"{path} has no images (png, jpg, bmp, tif, webp, ...) directly inside it; "
            f"{len(entries)} other entr{'y' if len(entries) == 1 else 'ies'} skipped"
        )
    return found


def min_side(scale: int) -> int:
    """The smallest image side (after modcrop) that can be scored at ``scale``.

    ``scale`` pixels are shaved from each border and what is left must hold one
    11x11 SSIM window (kept with ``with_ssim=False`` too, so that a set's
    images do not change with the option).
    """
    return 2 * scale + SSIM_WINDOW


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise InputError(
            f"{path} is not an image sruc can read (unknown or damaged format)"
        ) from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _is_high_depth(im: Image.Image) -> bool:
    """True for images with more than 8 bits per sample.

    Pillow opens 16-bit RGB PNG/TIFF as mode ``RGB`` keeping the high byte
    only; the decoder's raw mode (``RGB;16B``) still tells.
    """
    if im.mode.startswith(("I", "F")):
        return True
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def check_image(path: Path, scales: Sequence[int]) -> None:
    """Check from its header that ``path`` can be scored at every scale.

    Raises:
        InputError: not a readable image, more than 8 bits per sample, or too
            small for a scale.
    """
    with _open(path) as im:
        w, h = im.size
        if _is_high_depth(im):
            raise _high_depth_error(path)
    for s in scales:
        need = min_side(s)
        # The smaller side bounds both dimensions, so EXIF rotation cannot matter.
        if min(w, h) // s * s < need:
            raise InputError(
                f"{path} is {w}x{h}, too small for x{s}: after cropping to a multiple of {s} "
                f"and shaving {s} px per border, SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window needs "
                f"sides of at least {need} px; remove the image or drop x{s}"
            )


def _high_depth_error(path: Path) -> InputError:
    return InputError(
        f"{path} has more than 8 bits per sample; the papers' protocol measures 8-bit "
        "ground truth, so convert it to 8-bit first"
    )


def read_ground_truth(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode an 8-bit ground-truth image to a float64 ``(C, H, W)`` tensor on 0..255.

    Gray stays one channel (it is its own Y); everything else becomes RGB.
    Alpha is dropped: quality is measured on colour, as ``sruc psnr`` does.
    The EXIF orientation is applied, as :func:`sruc.files.images.read_image` does,
    so every sruc command sees the same pixels (benchmark sets carry none).

    Raises:
        InputError: unreadable, damaged, or more than 8 bits per sample.
    """
    path = Path(path)
    with _open(path) as im:
        if _is_high_depth(im):
            raise _high_depth_error(path)
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
            gray = im.mode in ("1", "L", "LA", "La")
            arr = np.array(im.convert("L" if gray else "RGB"), dtype=np.float64)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            # Pillow reports truncated or corrupt data as OSError/SyntaxError.
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise InputError(f"{path} is damaged or truncated ({first})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


__all__ = ["check_image", "find_images", "min_side", "read_ground_truth"]
