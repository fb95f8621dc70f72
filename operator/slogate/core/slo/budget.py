"""Error ratios, burn rates and the error budget, from exact event counts.

Definitions (``docs/math.md``, "Definitions"; SRE Workbook ch. 5):

- budget fraction ``b = 1 - target/100`` (99.9% gives 0.001);
- error ratio over a window ``e_w = bad_w / total_w``;
- burn rate ``r_w = e_w / b``: 1 spends exactly the whole budget over the compliance window;
- ``consumed = e_P / b`` over the compliance window P, ``remaining = 1 - consumed`` (negative
  when overspent), ``sli = 1 - e_P``.

``consumed`` comes from the window's exact counts, never from an average of short-window ratios:
a quiet night and a busy day weigh by their traffic, not equally.

No data is NaN inside the math (and null outside): a window without events, with fewer than
``min_events``, or whose query failed. Each window is computed from its own counts, so a missing
5m window cannot touch the 1h value, and a missing history interval cannot touch the budget.

Ratio-only rows (raw-query indicators report an error ratio, not counts) are turned into
*pseudo-counts* so that everything downstream is one code path: a ratio ``e`` over a span of
``L`` seconds becomes ``bad = e * L`` and ``total = L``, i.e. traffic is assumed uniform in time.
``min_events`` does not apply to them: there is no event count to compare with.
"""

from __future__ import annotations

import numpy as np

from slogate.core.slo.inputs import BoolArray, FloatArray

#: A budget within this fraction of zero counts as spent; absorbs float noise in "exactly 1x".
EXHAUSTED_EPS = 1e-9


def budget_fraction(target_percent: FloatArray) -> FloatArray:
    """``b = 1 - target/100`` per SLO."""
    return 1.0 - np.asarray(target_percent, dtype=np.float64) / 100.0


def has_data(
    bad: FloatArray, total: FloatArray, min_events: FloatArray, ratio_only: BoolArray
) -> BoolArray:
    """Where a window holds a usable measurement (``min_events`` broadcasts along rows)."""
    me = min_events if bad.ndim == 1 else min_events[:, None]
    ro = ratio_only if bad.ndim == 1 else ratio_only[:, None]
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(bad) & np.isfinite(total) & (total > 0)
        return ok & ((total >= me) | ro)


def error_ratio(bad: FloatArray, total: FloatArray, valid: BoolArray) -> FloatArray:
    """``bad / total`` clipped to [0, 1]; NaN where ``valid`` is False.

    Errors and totals come from separate queries evaluated a few milliseconds apart, so a window
    can report slightly more errors than requests, or a tiny negative ``total - good``: clipping
    keeps such jitter from producing a burn above 1/b or below 0.
    """
    out = np.full(np.shape(bad), np.nan, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        np.divide(bad, total, out=out, where=valid)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def burn_rates(ratio: FloatArray, b: FloatArray) -> FloatArray:
    """``r_w = e_w / b`` for an [N, W] ratio matrix (NaN stays NaN)."""
    return ratio / b[:, None]
