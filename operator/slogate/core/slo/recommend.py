"""Which target could the service promise? Achieved level, dependency bound, recommendation.

- ``achieved`` is the SLI over the compliance window, in percent: what the service delivered.
- A *robust* level is a low percentile (``Thresholds.recommend_percentile``, default 10th) of the
  daily SLIs over the window: a target the service met on almost every day, not just on average
  (a month with a few bad days averages out fine but would have paged repeatedly).
- The ``dependency_bound`` caps both: with serial dependencies, availabilities multiply, so a
  service needing a 99.9% database and a 99.95% cache cannot promise more than
  99.9% x 99.95% = 99.85% (Treynor et al., "The Calculus of Service Availability", ACM Queue
  15(2), 2017).
- The recommended target is the minimum of the three, rounded *down* to the ladder of targets
  people actually write (``LADDER``); below 90% it rounds down to a whole percent.
- ``achievable`` is False when the SLO's own target is above its dependency bound, None without
  dependencies (nothing to check).

Daily SLIs are computed over consecutive 24-hour spans counted back from ``now`` (not calendar
days): the history is aligned to ``now``, and the percentile only needs equal-length samples.
A day counts when at least half of its intervals are known and it holds ``min_events`` events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from slogate.core.slo.inputs import BoolArray, FloatArray

#: The usual targets, ascending: recommendations round down onto these.
LADDER: tuple[float, ...] = (90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999)

# Percent values are compared with this slack so 99.9 computed as 99.89999999999999 stays 99.9.
_PERCENT_EPS = 1e-9


def dependency_bound(targets_percent: Sequence[float]) -> float:
    """Product of dependency targets, in percent; NaN without dependencies."""
    if not targets_percent:
        return math.nan
    fraction = 1.0
    for target in targets_percent:
        if not 0 < target <= 100:
            raise ValueError(f"a dependency target must be within (0, 100], got {target}")
        fraction *= target / 100.0
    return fraction * 100.0


def round_down_to_ladder(percent: FloatArray) -> FloatArray:
    """Largest ladder value not above ``percent``; whole percents below the ladder; NaN below 1%."""
    value = np.asarray(percent, dtype=np.float64) + _PERCENT_EPS
    ladder = np.asarray(LADDER)
    idx = np.searchsorted(ladder, value, side="right") - 1
    on_ladder = ladder[np.clip(idx, 0, ladder.size - 1)]
    with np.errstate(invalid="ignore"):
        below = np.floor(value)
        result = np.where(idx >= 0, on_ladder, np.where(below >= 1, below, np.nan))
    return np.where(np.isfinite(value), result, np.nan)


def low_percentile(values: FloatArray, percentile: float) -> FloatArray:
    """Per-row percentile of the finite values ("lower" method); NaN for rows without any.

    ``np.nanpercentile`` loops over rows in Python for 2-D input; sorting once (NaN sorts last)
    and picking one index per row keeps this vectorized.
    """
    n, d = values.shape
    if d == 0:
        return np.full(n, np.nan)
    ordered = np.sort(values, axis=1)
    count = np.isfinite(values).sum(axis=1)
    idx = np.floor(percentile / 100.0 * np.maximum(count - 1, 0)).astype(np.int64)
    picked = ordered[np.arange(n), np.clip(idx, 0, d - 1)]
    return np.where(count > 0, picked, np.nan)


def daily_sli(
    daily_bad: FloatArray,
    daily_total: FloatArray,
    daily_known: FloatArray,
    days_in_window: FloatArray,
    min_events: FloatArray,
    ratio_only: BoolArray,
) -> FloatArray:
    """[N, D] daily SLIs (fractions), NaN for days outside the window or without data."""
    d = daily_bad.shape[1]
    age = np.arange(d)[::-1][None, :]  # 0 = the most recent day
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (age < days_in_window[:, None]) & (daily_known >= 0.5) & (daily_total > 0)
        ok &= (daily_total >= min_events[:, None]) | ratio_only[:, None]
        ratio = np.clip(daily_bad / np.where(ok, daily_total, 1.0), 0.0, 1.0)
    return np.where(ok, 1.0 - ratio, np.nan)


def recommend(
    *,
    sli: FloatArray,
    daily: FloatArray,
    bound: FloatArray,
    target: FloatArray,
    percentile: float,
) -> tuple[FloatArray, FloatArray, BoolArray, BoolArray]:
    """(recommended target %, achieved %, achievable, achievable-known) per SLO."""
    achieved = sli * 100.0
    robust = low_percentile(daily, percentile) * 100.0
    cap = np.fmin(np.fmin(achieved, robust), bound)
    recommended = np.where(np.isfinite(achieved), round_down_to_ladder(cap), np.nan)
    has_bound = np.isfinite(bound)
    with np.errstate(invalid="ignore"):
        achievable = target <= bound + _PERCENT_EPS
    return recommended, achieved, achievable & has_bound, has_bound
