"""Calendar periods: local midnights, Monday weeks, DST through zoneinfo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slogate.core.slo import calendar_period

BERLIN = "Europe/Berlin"
HOUR = 3600
DAY = 86400


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ts(*args: int) -> float:
    return utc(*args).timestamp()


def test_march_in_berlin_loses_an_hour_to_dst():
    start, end = calendar_period(utc(2025, 3, 20, 12), "month", BERLIN)
    assert start == ts(2025, 2, 28, 23)  # 1 March 00:00 CET (UTC+1)
    assert end == ts(2025, 3, 31, 22)  # 1 April 00:00 CEST (UTC+2)
    assert end - start == 31 * DAY - HOUR


def test_october_in_berlin_gains_an_hour():
    start, end = calendar_period(ts(2025, 10, 15), "month", BERLIN)
    assert start == ts(2025, 9, 30, 22)
    assert end == ts(2025, 10, 31, 23)
    assert end - start == 31 * DAY + HOUR


def test_month_boundary_is_local_not_utc():
    # 31 March 23:30 UTC is already 1 April in Berlin.
    start, _ = calendar_period(utc(2025, 3, 31, 23, 30), "month", BERLIN)
    assert start == ts(2025, 3, 31, 22)
    start_utc, _ = calendar_period(utc(2025, 3, 31, 23, 30), "month", "UTC")
    assert start_utc == ts(2025, 3, 1)


def test_quarter():
    start, end = calendar_period(utc(2025, 5, 10), "quarter", BERLIN)
    assert start == ts(2025, 3, 31, 22)  # 1 April local
    assert end == ts(2025, 6, 30, 22)  # 1 July local
    start, end = calendar_period(utc(2025, 12, 31, 12), "quarter", "UTC")
    assert (start, end) == (ts(2025, 10, 1), ts(2026, 1, 1))


def test_week_starts_monday_and_spans_dst():
    # Sunday 30 March 2025 is the DST switch in Berlin: the week is an hour short.
    start, end = calendar_period(utc(2025, 3, 30, 12), "week", BERLIN)
    local = datetime.fromtimestamp(start, ZoneInfo(BERLIN))
    assert (local.weekday(), local.hour, local.minute) == (0, 0, 0)
    assert local.date().isoformat() == "2025-03-24"
    assert end - start == 7 * DAY - HOUR


def test_monday_midnight_belongs_to_the_new_week():
    monday = datetime(2025, 6, 2, tzinfo=ZoneInfo(BERLIN))
    start, end = calendar_period(monday, "week", BERLIN)
    assert start == monday.timestamp()
    assert end == (monday + timedelta(days=7)).timestamp()
    before = calendar_period(monday.timestamp() - 1, "week", BERLIN)
    assert before[1] == start


def test_missing_local_midnight_starts_at_the_first_instant_of_the_day():
    # Iran moved clocks from 00:00 to 01:00 on Monday 22 March 2021.
    start, end = calendar_period(utc(2021, 3, 23, 12), "week", "Asia/Tehran")
    local = datetime.fromtimestamp(start, ZoneInfo("Asia/Tehran"))
    assert (local.date().isoformat(), local.hour) == ("2021-03-22", 1)
    assert end - start == 7 * DAY - HOUR


def test_epoch_and_datetime_agree():
    when = utc(2025, 8, 17, 3, 4, 5)
    assert calendar_period(when, "month", BERLIN) == calendar_period(
        when.timestamp(), "month", BERLIN
    )


@pytest.mark.parametrize(
    ("now", "period", "tz", "message"),
    [
        (datetime(2025, 1, 1), "month", BERLIN, "aware"),
        (0.0, "year", BERLIN, "period"),
        (0.0, "month", "Mars/Olympus", "time zone"),
    ],
)
def test_bad_arguments(now, period, tz, message):
    with pytest.raises(ValueError, match=message):
        calendar_period(now, period, tz)


@given(
    st.floats(min_value=ts(1990, 1, 1), max_value=ts(2090, 1, 1)),
    st.sampled_from(["week", "month", "quarter"]),
    st.sampled_from([BERLIN, "UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
)
def test_period_contains_now_and_tiles_time(now, period, tz):
    start, end = calendar_period(now, period, tz)
    assert start <= now < end
    # The next period starts where this one ends.
    assert calendar_period(end, period, tz)[0] == end
    assert calendar_period(start - 1, period, tz)[1] == start
