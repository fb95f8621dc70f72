"""Calendar compliance periods (week, month, quarter) in a time zone.

A calendar SLO's budget resets at the start of each period, and the period's edges are local
midnights: a team in Berlin expects "this month" to start at 00:00 Berlin time on the 1st, not
at 00:00 UTC. Periods are therefore computed as local wall-clock dates turned into instants with
``zoneinfo``, which makes them DST-correct: March in Europe/Berlin is 31 days minus one hour long,
October 31 days plus one hour.

When a local midnight does not exist (a few zones, e.g. Asia/Tehran until 2022, moved their
clocks at 00:00), the period starts at the first instant of that local day: ``fold=0`` resolves a
missing wall time with the offset in force before the jump, which lands just after the gap.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["week", "month", "quarter"]
PERIODS: tuple[Period, ...] = ("week", "month", "quarter")


def _local_midnight(day: date, zone: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def _first_of_next_month(day: date, months: int) -> date:
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def calendar_period(now: datetime | float, period: Period, tz: str) -> tuple[float, float]:
    """Start and end (epoch seconds, end exclusive) of the ``period`` containing ``now`` in ``tz``.

    ``now`` is an epoch timestamp or a time-zone-aware datetime. Weeks start on Monday (ISO 8601).
    Raises ValueError for a naive datetime, an unknown period or an unknown time zone.
    """
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("calendar_period needs an aware datetime (or epoch seconds)")
        instant = now
    else:
        # Period edges fall on whole seconds (zone offsets are whole seconds), so flooring is
        # exact, whereas fromtimestamp() rounds to microseconds and can jump into the next period.
        instant = datetime.fromtimestamp(math.floor(now), tz=UTC)
    try:
        zone = ZoneInfo(tz)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc
    local = instant.astimezone(zone).date()
    if period == "week":
        start = local - timedelta(days=local.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = local.replace(day=1)
        end = _first_of_next_month(start, 1)
    elif period == "quarter":
        start = date(local.year, 3 * ((local.month - 1) // 3) + 1, 1)
        end = _first_of_next_month(start, 3)
    else:
        raise ValueError(f"unknown calendar period {period!r}: use one of {', '.join(PERIODS)}")
    return _local_midnight(start, zone), _local_midnight(end, zone)
