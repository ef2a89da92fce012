"""sruc.scales: the one parser and validator of scales."""

from __future__ import annotations

import pytest

from sruc.errors import UsageError
from sruc.scales import MAX_SCALE, check_protocol_scales, check_scale, parse_scale_list


def test_upscaling_factors() -> None:
    assert check_scale(2) == 2.0 and check_scale(2.5) == 2.5 and check_scale(MAX_SCALE) == 8.0
    for bad, words in [(1, "greater than 1"), (0.5, "greater than 1"), (8.01, "at most 8"),
                       (float("nan"), "must be a number"), (True, "must be a number"),
                       ("3", "must be a number")]:  # fmt: skip
        with pytest.raises(UsageError, match=words):
            check_scale(bad)  # type: ignore[arg-type]


def test_protocol_scales_are_whole_and_in_range() -> None:
    assert check_protocol_scales(parse_scale_list(" 4, 2,4 ")) == [4, 2]
    assert check_protocol_scales([2.0, 3.0]) == [2, 3]
    for bad, words in [([2.5], "whole-number scales"), ([9], "too large"), ([1], "too small"),
                       ([], "at least one")]:  # fmt: skip
        with pytest.raises(UsageError, match=words):
            check_protocol_scales(bad, "training")


@pytest.mark.parametrize("text", ["", "2,,3", "x2", "two"])
def test_scale_lists_must_be_comma_separated_numbers(text: str) -> None:
    with pytest.raises(UsageError, match="comma-separated whole numbers"):
        parse_scale_list(text)


# --------------------------------------------------------------------------- target sizes


def test_target_width_keeps_the_aspect_ratio_as_matlab() -> None:
    from sruc.scales import TargetSize

    # imresize(A, [NaN 100]) of a 30-wide, 37-high image: ceil(37 * 100/30) rows.
    assert TargetSize(width=100).resolve(30, 37) == (100 / 30, 100, 124)
    assert TargetSize(height=74).resolve(30, 37) == (2.0, 60, 74)
    # Both sides: fit inside, touching the side that binds.
    scale, w, h = TargetSize(100, 100).resolve(30, 37)
    assert (w, h) == (82, 100) and scale == 100 / 37
    assert TargetSize(60, 1000).resolve(30, 37) == (2.0, 60, 74)


def test_target_size_refuses_what_cannot_work() -> None:
    from sruc.scales import TargetSize, parse_size

    with pytest.raises(UsageError, match="only enlarges"):
        TargetSize(width=30).resolve(30, 37)
    with pytest.raises(UsageError, match=r"--width 100000 needs x3333 .* at most x8"):
        TargetSize(width=100000).resolve(30, 37)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(UsageError, match="whole number of pixels"):
            TargetSize(width=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        TargetSize()
    assert parse_size("1920x1080") == TargetSize(1920, 1080)
    assert parse_size("640X480") == TargetSize(640, 480)
    for bad in ("12", "axb", "0x10", "1x2x3", ""):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_nearest_scale_prefers_the_larger_on_a_tie() -> None:
    from sruc.scales import nearest_scale

    assert nearest_scale([2, 3, 4], 2.4) == 2
    assert nearest_scale([2, 3, 4], 2.5) == 3
    assert nearest_scale([2, 3, 4], 7.9) == 4
