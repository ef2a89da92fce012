"""Scales: the one parser and validator of upscaling factors, and the one ``MAX_SCALE``.

Two kinds of scale exist. An *upscaling factor* (``sruc up -s 2.5``) is any
number in (1, :data:`MAX_SCALE`]. A *protocol scale* (``sruc bench``,
``sruc train``) is a whole number from 2 to :data:`MAX_SCALE`, because the
papers' protocol crops the ground truth to a multiple of the scale and makes
the low-resolution image by an integer factor.

The CLI turns text into numbers here (:func:`parse_scale_list`); the library's
entry points check the values once (:func:`check_scale`,
:func:`check_protocol_scales`) and pass them on as trusted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sruc.errors import UsageError

#: The largest upscaling factor accepted anywhere (an 8x output has 64x the pixels).
MAX_SCALE = 8


def check_scale(scale: float) -> float:
    """An upscaling factor: a finite number in (1, MAX_SCALE], returned as float.

    Raises:
        UsageError: not a number, not above 1, or above MAX_SCALE.
    """
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise UsageError(f"scale must be a number, got {scale!r}")
    if scale <= 1:
        raise UsageError(f"scale must be greater than 1 (got {_show(scale)}); sruc only enlarges")
    if scale > MAX_SCALE:
        raise UsageError(f"scale {_show(scale)} is too large: at most {MAX_SCALE}")
    return float(scale)


def _show(value: float) -> str:
    """The value as given: ``8.0000001`` stays so (``:g`` would print 8)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def check_protocol_scales(scales: Iterable[float], purpose: str = "the protocol") -> list[int]:
    """Whole-number scales in 2..MAX_SCALE; duplicates dropped, order kept.

    Args:
        scales: the scales as numbers.
        purpose: who needs whole numbers, for the message ("training", "the benchmark").

    Raises:
        UsageError: no scales, a fractional one, or one out of range.
    """
    out: list[int] = []
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
            raise UsageError(f"scale must be a whole number, got {s!r}")
        if s != int(s):
            raise UsageError(
                f"scale {s:g} is not a whole number: {purpose} takes whole-number scales from "
                f"2 to {MAX_SCALE} (the papers' protocol makes low-resolution images by integer "
                "factors); a multi-scale model trained on 2,3,4 upscales by any factor between"
            )
        if not 2 <= s <= MAX_SCALE:
            size = "too large" if s > MAX_SCALE else "too small"
            raise UsageError(
                f"scale {s:g} is out of range ({size}): {purpose} takes whole numbers from 2 "
                f"to {MAX_SCALE}"
            )
        if int(s) not in out:
            out.append(int(s))
    if not out:
        raise UsageError("give at least one scale, such as 2,3,4")
    return out


def parse_scale_list(text: str, option: str = "--scale") -> list[float]:
    """``"2,3,4"`` as numbers (not yet checked for range).

    Raises:
        UsageError: an empty list, an empty item, or an item that is not a number.
    """
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise UsageError(
            f"{option} must be comma-separated whole numbers such as 2,3,4, got {text!r}"
        )
    numbers = []
    for p in parts:
        try:
            numbers.append(float(p))
        except ValueError:
            raise UsageError(
                f"{option} {p!r} is not a number: give comma-separated whole numbers such as 2,3,4"
            ) from None
    return numbers


@dataclass(frozen=True)
class TargetSize:
    """An output size asked for instead of a scale (``--width``, ``--height``, ``--fit``).

    With one side the other follows the aspect ratio, as MATLAB's
    ``imresize(A, [NaN W])`` does (``ceil`` of the other side times the scale);
    with both, the image fits inside ``width x height`` with its aspect ratio
    kept, touching at least one side. Either way the scale is what sruc runs at
    (see :meth:`resolve`).
    """

    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.width is None and self.height is None:
            raise UsageError("give a width, a height or both")
        for name, value in (("width", self.width), ("height", self.height)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(
                    f"--{name} must be a whole number of pixels above 0, got {value!r}"
                )

    def resolve(self, in_w: int, in_h: int) -> tuple[float, int, int]:
        """``(scale, out_w, out_h)`` for an ``in_w x in_h`` image.

        Raises:
            UsageError: the size would shrink the image, or needs more than MAX_SCALE.
        """
        ratios = []
        if self.width is not None:
            ratios.append((self.width / in_w, "width", self.width, in_w))
        if self.height is not None:
            ratios.append((self.height / in_h, "height", self.height, in_h))
        scale, side, want, have = min(ratios)
        if scale <= 1:
            raise UsageError(
                f"--{side} {want} is not larger than the image ({in_w}x{in_h}); sruc only enlarges"
            )
        if scale > MAX_SCALE:
            raise UsageError(
                f"--{side} {want} needs x{scale:.4g} of the image's {have}-pixel {side} "
                f"({in_w}x{in_h}): at most x{MAX_SCALE}"
            )
        if side == "width":
            return scale, want, _side(in_h, scale)
        return scale, _side(in_w, scale), want

    def label(self) -> str:
        """For file names: ``1920w``, ``1080h`` or ``1920x1080``."""
        if self.height is None:
            return f"{self.width}w"
        if self.width is None:
            return f"{self.height}h"
        return f"{self.width}x{self.height}"


def _side(length: int, scale: float) -> int:
    from sruc.core.resize import output_size

    return output_size(length, scale)


def parse_size(text: str, option: str = "--fit") -> TargetSize:
    """``"1920x1080"`` as a :class:`TargetSize`.

    Raises:
        UsageError: not two whole numbers above 0 joined by ``x``.
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise UsageError(
            f"{option} must be WIDTHxHEIGHT in pixels, such as 1920x1080, got {text!r}"
        ) from None
    if w < 1 or h < 1:
        raise UsageError(f"{option} must be two whole numbers above 0, got {text!r}")
    return TargetSize(w, h)


def nearest_scale(scales: Sequence[float], scale: float) -> float:
    """The one of ``scales`` nearest ``scale`` (the larger on a tie: the final
    resize then shrinks, which keeps detail, rather than enlarges)."""
    return min(scales, key=lambda s: (abs(s - scale), -s))


__all__ = [
    "MAX_SCALE",
    "TargetSize",
    "check_protocol_scales",
    "check_scale",
    "nearest_scale",
    "parse_scale_list",
    "parse_size",
]
