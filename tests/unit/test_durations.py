import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slogate.core.durations import (
    DURATION_PATTERN,
    format_duration,
    humanize_seconds,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h", 3600), ("30d", 2_592_000), ("28d", 2_419_200), ("2w", 1_209_600)],
)
def test_parse_known_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30x", "0d", "1h30m", "-5m", "", "1.5h", "d", "05m", " 5m"])
def test_refuses_what_the_crd_pattern_refuses(text: str) -> None:
    assert not re.match(DURATION_PATTERN, text)
    with pytest.raises(ValueError, match="whole number and one unit"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**6))
def test_format_then_parse_round_trips(seconds: int) -> None:
    text = format_duration(seconds)
    if re.match(DURATION_PATTERN, text):
        assert parse_duration(text) == seconds
    else:  # very large second counts exceed the 6-digit pattern, and parsing says so
        with pytest.raises(ValueError, match="whole number and one unit"):
            parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "<1m"), (90, "1m"), (3600, "1h"), (5400, "1h 30m"), (180000, "2d 2h"), (86400, "1d")],
)
def test_humanize(seconds: float, text: str) -> None:
    assert humanize_seconds(seconds) == text
