"""When does the budget run out? Forecast, trend and confidence.

The model
---------
Everything is expressed as the window's *slack*: ``S = b * total - bad``, the bad events the
window can still take. ``remaining = S / (b * total)``, so the budget is spent exactly when S
drops below zero, and an exactly balanced budget (S reaching 0 and staying there, as a
sustained burn of exactly 1 does) is not "exhausted in the future". Future traffic arrives at the
*current* rate: per second ``q = total_c / c`` events with error ratio ``e = bad_c / total_c``,
read from the current burn window ``c``. Each second of it adds ``g = b * q - e * q`` slack
(negative when the current burn ``e / b`` is above 1).

The *current* window is the shortest measured window at least ``Thresholds.current_window_s``
long (default 1h, the BURN-1H column and the page-fast long window): long enough not to jump
with every scrape, short enough that a fix or a new incident shows within the hour. When no
window that long has data, the longest shorter one is used; with no data at all, no new traffic
is assumed (q = 0): old events still age out.

Paths, chosen per SLO (``Method``):

``history`` (rolling window, event history known)
    The oldest intervals leave the window as time passes, taking their bad *and* good events
    with them, while new traffic arrives at the current rate. The stored per-interval increases
    say exactly what leaves when, so ``S`` is projected step by step over one window length
    (after that every current event has left and S settles at the new traffic's steady state).
    The first crossing below zero is the exhaustion time; none means "never". This is what makes
    a budget *recover*: a 29-day-old incident stops counting tomorrow, which a straight-line
    projection cannot see. With constant traffic and no bad events in the part that ages out, it
    reduces to the textbook ``remaining * P / r`` (a full budget lasts 50h at 14.4x over 30d).
``calendar`` (calendar window)
    Nothing ages out before the period ends and everything resets at its start, so S is a
    straight line ``S_0 + g * t``, cut at the period end ("after period end" when it would
    cross later).
``least-squares`` (rolling window, no event history, a budget history)
    A least-squares line through the recent ``consumed`` samples (``Thresholds.fit_lookback_s``),
    anchored at the current value: ``remaining - slope * t``. Ratio-only indicators usually end
    here. Only crossings within one window length count: a slope that needs longer than the
    window to spend what is left corresponds to a steady burn below 1.
``steady-rate`` (rolling window, neither history)
    The part of the window that ages out is assumed to look like the window's average (uniform
    traffic, average error ratio), so ``S(t) = S_0 * (1 - t / P) + g * t``; it crosses zero
    within the window exactly when the current burn is above 1, at
    ``remaining * P / (r - consumed)`` for uniform traffic.

An already spent budget is ``exhausted``; an SLO without data over its window has no forecast.

Trend
-----
Compares the burn over the most recent span (``trend_recent_s``, default 6h) with the burn over
the span just before it (``trend_baseline_s``, default the preceding day). Both spans come from
the burn windows' exact counts when they are measured (the 1d window minus the 6h window is the
18h before it), otherwise from the history's last intervals. The difference counts when it
exceeds ``max(trend_rel_tol * the larger burn, trend_abs_tol)`` (25% or 0.1x by default), so
noise around zero stays "stable". Missing either span gives no trend.

Confidence
----------
Starts at ``high`` for the history and calendar paths (they follow the measured events) and
``medium`` for the least-squares and steady-rate approximations, then drops one level for each:

- history path: less than 90% of the window's intervals known (two levels below 50%);
- least-squares path: fewer than twice ``fit_min_points`` samples;
- no current window, or a current window that allows fewer than ``min_budget_events`` bad
  events (``b * total_c``), where a single error moves the burn rate a lot;
- a trend that is not stable: the forecast assumes the current rate continues.

An already exhausted budget is a measurement, not a forecast: ``high``.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

import numpy as np

from slogate.core.slo.inputs import BoolArray, FloatArray, Int8Array, IntArray


class Method(IntEnum):
    """How a row's forecast was made (``str(method)`` is the name shown to users)."""

    NONE = 0
    EXHAUSTED = 1
    HISTORY = 2
    CALENDAR = 3
    LEAST_SQUARES = 4
    STEADY_RATE = 5

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


class Outlook(IntEnum):
    """Where the projection ends up."""

    UNKNOWN = 0
    EXHAUSTED = 1  # already spent
    WITHIN = 2  # crosses zero in ``exhaustion_in_s``
    NEVER = 3  # does not cross within the horizon
    AFTER_PERIOD_END = 4  # calendar: would cross, but the period ends (and resets) first


class Trend(StrEnum):
    INCREASING = "increasing"
    STABLE = "stable"
    DECREASING = "decreasing"


class Confidence(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


#: Trend codes in result arrays: index into this tuple (0 = unknown).
TREND_BY_CODE: tuple[Trend | None, ...] = (None, Trend.DECREASING, Trend.STABLE, Trend.INCREASING)
#: Confidence codes in result arrays: index + 1 into this tuple (-1 = unknown).
CONFIDENCE_BY_LEVEL: tuple[Confidence, ...] = (Confidence.LOW, Confidence.MEDIUM, Confidence.HIGH)


def pick_current(windows_s: IntArray, valid: BoolArray, current_window_s: int) -> IntArray:
    """Column of each row's current window (see module doc); -1 when no window has data."""
    order_up = [j for j in np.argsort(windows_s).tolist() if windows_s[j] >= current_window_s]
    order_down = [
        j for j in np.argsort(windows_s)[::-1].tolist() if windows_s[j] < current_window_s
    ]
    order = np.asarray(order_up + order_down, dtype=np.int64)
    n = valid.shape[0]
    if order.size == 0:
        return np.full(n, -1, dtype=np.int64)
    ranked = valid[:, order]
    first = ranked.argmax(axis=1)
    found = ranked[np.arange(n), first]
    return np.where(found, order[first], -1)


def linear_crossing(
    slack0: FloatArray, slope: FloatArray, horizon: FloatArray
) -> tuple[FloatArray, BoolArray, BoolArray]:
    """For ``S(t) = slack0 + slope * t`` with ``slack0 > 0``: the zero crossing time, whether it
    falls within ``horizon``, and whether it falls after it. NaN time where it never crosses."""
    with np.errstate(invalid="ignore", divide="ignore"):
        falling = slope < 0
        tau = np.where(falling, slack0 / np.where(falling, -slope, 1.0), np.nan)
        within = falling & (tau <= horizon)
        later = falling & ~within
    return tau, within, later


def least_squares_slope(
    times: FloatArray,
    consumed: FloatArray,
    now: float,
    lookback_s: float,
    min_points: int,
) -> tuple[FloatArray, IntArray]:
    """Slope (budget fraction per second) of ``consumed`` over recent samples, and point count.

    Ordinary least squares per row over the finite samples no older than ``lookback_s``;
    NaN slope where fewer than ``min_points`` remain or all share one time.
    """
    n = consumed.shape[0]
    if times.size == 0:
        return np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    recent = (times >= now - lookback_s) & (times <= now) & np.isfinite(times)
    x = np.where(recent, times - now, 0.0)[None, :]
    mask = np.isfinite(consumed) & recent[None, :]
    count = mask.sum(axis=1)
    y = np.where(mask, consumed, 0.0)
    w = mask.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(axis=1) / count
        my = y.sum(axis=1) / count
        dx = np.where(mask, x - mx[:, None], 0.0)
        sxx = (dx * dx).sum(axis=1)
        sxy = (dx * (y - my[:, None]) * w).sum(axis=1)
        slope = np.where((count >= min_points) & (sxx > 0), sxy / sxx, np.nan)
    return slope, count


def burn_between(
    bad_long: FloatArray,
    total_long: FloatArray,
    bad_short: FloatArray,
    total_short: FloatArray,
    b: FloatArray,
    min_events: FloatArray,
    ratio_only: BoolArray,
) -> FloatArray:
    """Burn rate over the part of a long window not covered by a shorter, nested one."""
    with np.errstate(invalid="ignore", divide="ignore"):
        bad = bad_long - bad_short
        total = total_long - total_short
        ok = np.isfinite(bad) & np.isfinite(total) & (total > 0)
        ok &= (total >= min_events) | ratio_only
        ratio = np.clip(np.where(ok, bad / np.where(ok, total, 1.0), np.nan), 0.0, 1.0)
    return ratio / b


def classify_trend(
    recent: FloatArray, base: FloatArray, rel_tol: float, abs_tol: float
) -> Int8Array:
    """Trend codes (see ``TREND_BY_CODE``) from two burn rates."""
    with np.errstate(invalid="ignore"):
        diff = recent - base
        band = np.maximum(rel_tol * np.maximum(recent, base), abs_tol)
        code = np.where(diff > band, 3, np.where(diff < -band, 1, 2))
        known = np.isfinite(recent) & np.isfinite(base)
    return np.where(known, code, 0).astype(np.int8)
