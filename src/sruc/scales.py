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
from collections.abc import Iterable

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


__all__ = ["MAX_SCALE", "check_protocol_scales", "check_scale", "parse_scale_list"]
