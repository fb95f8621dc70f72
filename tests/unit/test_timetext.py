"""One time-text helper: what it writes parses back, as the API server reads it."""

from __future__ import annotations

import pytest

from slogate.core.timetext import (
    NoTimeZone,
    parse_rfc3339,
    parse_rfc3339_or_none,
    rfc3339,
    rfc3339_micro,
)

WHOLE = 1_795_000_000.0  # a whole second: isoformat would leave the fraction out


def test_whole_seconds_round_and_end_in_z() -> None:
    assert rfc3339(WHOLE + 0.6) == "2026-11-18T11:06:41Z"
    assert parse_rfc3339(rfc3339(WHOLE)) == WHOLE


def test_micro_always_has_six_digits() -> None:
    assert rfc3339_micro(WHOLE) == "2026-11-18T11:06:40.000000Z"
    assert rfc3339_micro(WHOLE + 0.25) == "2026-11-18T11:06:40.250000Z"
    assert parse_rfc3339(rfc3339_micro(WHOLE + 0.25)) == WHOLE + 0.25


def test_offsets_are_honoured_and_a_missing_zone_is_refused() -> None:
    assert parse_rfc3339("2026-11-18T12:06:40+01:00") == WHOLE
    with pytest.raises(NoTimeZone):
        parse_rfc3339("2026-11-18T11:06:40")
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_rfc3339("yesterday")


@pytest.mark.parametrize("junk", [None, "", "soon", 42, "2026-11-18T11:06:40"])
def test_damaged_fields_read_as_none(junk: object) -> None:
    assert parse_rfc3339_or_none(junk) is None
