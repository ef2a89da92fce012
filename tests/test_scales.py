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
