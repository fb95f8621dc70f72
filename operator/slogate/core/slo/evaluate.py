"""Evaluate a batch of SLOs: every number in ``status`` at once, then per-row views.

``evaluate(batch, rules)`` is vectorized end to end; ``BatchResult`` holds [N] / [N, W] / [N, R]
arrays (NaN and code values inside) and turns row ``i`` into an ``SloResult`` of plain Python
values with None for anything unknown, ready for JSON. No output of a row is ever NaN or Inf.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from slogate.core.durations import format_duration
from slogate.core.slo import forecast as fc
from slogate.core.slo.budget import (
    EXHAUSTED_EPS,
    budget_fraction,
    burn_rates,
    error_ratio,
    has_data,
)
from slogate.core.slo.forecast import (
    CONFIDENCE_BY_LEVEL,
    TREND_BY_CODE,
    Method,
    Outlook,
)
from slogate.core.slo.history import HistoryParams, HistorySummary, scan
from slogate.core.slo.inputs import (
    BoolArray,
    FloatArray,
    Int8Array,
    IntArray,
    SloBatch,
    Thresholds,
)
from slogate.core.slo.message import compose, exhausts_text
from slogate.core.slo.recommend import daily_sli, recommend
from slogate.core.slo.risk import RISK_BY_CODE, classify, firing
from slogate.core.slo.rules import BurnRule, check_rules
from slogate.core.timetext import rfc3339

DAY = 86400
_OUTLOOKS = tuple(Outlook)
_METHOD_NAMES = tuple(str(m) for m in Method)


@dataclass(frozen=True)
class Forecast:
    """``status.forecast``. ``exhaustion_in_s`` is 0 when already exhausted and None when the
    budget does not run out within the horizon (one window; the period end for calendars).
    ``exhaustion_time`` (epoch) is only set for a future exhaustion."""

    exhaustion_in_s: float | None
    exhausts_in: str | None
    exhaustion_time: float | None
    trend: str | None
    confidence: str | None
    method: str


@dataclass(frozen=True)
class Recommendation:
    """``status.recommendation``; percentages."""

    target: float | None
    achieved: float | None
    dependency_bound: float | None
    achievable: bool | None


@dataclass(frozen=True)
class SloResult:
    """One SLO's outputs as plain Python values (None = unknown / not applicable)."""

    sli: float | None
    consumed: float | None
    remaining: float | None
    burn_rates: dict[str, float | None]
    firing: tuple[str, ...]
    risk: str
    forecast: Forecast
    recommendation: Recommendation
    message: str

    def to_status(self) -> dict[str, Any]:
        """The status fields the math fills, named as in ``docs/reference.md`` (camelCase),
        rounded so that noise below what ``kubectl get slo`` shows does not cause status writes."""
        exhaustion_time = self.forecast.exhaustion_time
        return {
            "sli": _round(self.sli, 6),
            "errorBudget": {
                "remaining": _round(self.remaining, 4),
                "consumed": _round(self.consumed, 4),
            },
            "burnRates": {k: _round(v, 2) for k, v in self.burn_rates.items()},
            "firing": list(self.firing),
            "risk": self.risk,
            "forecast": {
                "exhaustionTime": None if exhaustion_time is None else rfc3339(exhaustion_time),
                "exhaustsIn": self.forecast.exhausts_in,
                "trend": self.forecast.trend,
                "confidence": self.forecast.confidence,
            },
            "recommendation": {
                "target": self.recommendation.target,
                "achieved": _round(self.recommendation.achieved, 3),
                "dependencyBound": _round(self.recommendation.dependency_bound, 4),
                "achievable": self.recommendation.achievable,
            },
            "message": self.message,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _opt(value: float) -> float | None:
    """NaN/Inf -> None, else a plain float."""
    return value if math.isfinite(value) else None


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Arrays for the whole batch. Codes: ``risk`` indexes ``RISK_BY_CODE``, ``outlook`` is an
    ``Outlook``, ``method`` a ``Method``, ``trend`` indexes ``TREND_BY_CODE`` (0 = unknown),
    ``confidence`` indexes ``CONFIDENCE_BY_LEVEL`` (-1 = unknown), ``current_col`` is the column
    of the current burn window (-1 = none). NaN = unknown."""

    rules: tuple[BurnRule, ...]
    windows_s: IntArray
    now: float
    window_s: FloatArray
    calendar: BoolArray
    sli: FloatArray
    consumed: FloatArray
    remaining: FloatArray
    burn: FloatArray  # [N, W]
    firing: BoolArray  # [N, R]
    risk: Int8Array
    current_col: IntArray
    outlook: Int8Array
    exhaustion_in_s: FloatArray
    exhaustion_time: FloatArray
    method: Int8Array
    trend: Int8Array
    confidence: Int8Array
    recommended: FloatArray
    achieved: FloatArray
    dependency_bound: FloatArray
    achievable: BoolArray
    achievable_known: BoolArray

    def __len__(self) -> int:
        return int(self.sli.shape[0])

    @cached_property
    def _plain(self) -> _Plain:
        # One tolist() per array beats numpy scalar access per field by an order of magnitude
        # when formatting thousands of rows.
        return _Plain(
            labels=[format_duration(int(w)) for w in self.windows_s.tolist()],
            names=[r.name for r in self.rules],
            sli=self.sli.tolist(),
            consumed=self.consumed.tolist(),
            remaining=self.remaining.tolist(),
            burn=self.burn.tolist(),
            firing=self.firing.tolist(),
            risk=self.risk.tolist(),
            current_col=self.current_col.tolist(),
            outlook=self.outlook.tolist(),
            exhaustion_in_s=self.exhaustion_in_s.tolist(),
            exhaustion_time=self.exhaustion_time.tolist(),
            method=self.method.tolist(),
            trend=self.trend.tolist(),
            confidence=self.confidence.tolist(),
            recommended=self.recommended.tolist(),
            achieved=self.achieved.tolist(),
            dependency_bound=self.dependency_bound.tolist(),
            achievable=self.achievable.tolist(),
            achievable_known=self.achievable_known.tolist(),
            window_s=self.window_s.tolist(),
            calendar=self.calendar.tolist(),
        )

    def row(self, i: int) -> SloResult:
        """Row ``i`` as plain values, with its message."""
        v = self._plain
        labels = v.labels
        burn = {label: _opt(x) for label, x in zip(labels, v.burn[i], strict=True)}
        names = tuple(name for name, on in zip(v.names, v.firing[i], strict=True) if on)
        outlook = _OUTLOOKS[v.outlook[i]]
        in_s = _opt(v.exhaustion_in_s[i])
        trend = TREND_BY_CODE[v.trend[i]]
        level = v.confidence[i]
        remaining = _opt(v.remaining[i])
        col = v.current_col[i]
        return SloResult(
            sli=_opt(v.sli[i]),
            consumed=_opt(v.consumed[i]),
            remaining=remaining,
            burn_rates=burn,
            firing=names,
            risk=RISK_BY_CODE[v.risk[i]].value,
            forecast=Forecast(
                exhaustion_in_s=in_s,
                exhausts_in=exhausts_text(outlook, v.exhaustion_in_s[i]),
                exhaustion_time=_opt(v.exhaustion_time[i]),
                trend=None if trend is None else trend.value,
                confidence=None if level < 0 else CONFIDENCE_BY_LEVEL[level].value,
                method=_METHOD_NAMES[v.method[i]],
            ),
            recommendation=Recommendation(
                target=_opt(v.recommended[i]),
                achieved=_opt(v.achieved[i]),
                dependency_bound=_opt(v.dependency_bound[i]),
                achievable=bool(v.achievable[i]) if v.achievable_known[i] else None,
            ),
            message=compose(
                remaining=remaining,
                window_label=_window_label(v.window_s[i]),
                calendar=bool(v.calendar[i]),
                current_burn=None if col < 0 else burn[labels[col]],
                current_label=None if col < 0 else labels[col],
                firing=names,
                outlook=outlook,
                exhaustion_in_s=in_s,
            ),
        )

    def results(self) -> Iterator[SloResult]:
        """Every row, in batch order."""
        for i in range(len(self)):
            yield self.row(i)


@dataclass(frozen=True)
class _Plain:
    """``BatchResult``'s arrays as Python lists, for row formatting."""

    labels: list[str]
    names: list[str]
    sli: list[float]
    consumed: list[float]
    remaining: list[float]
    burn: list[list[float]]
    firing: list[list[bool]]
    risk: list[int]
    current_col: list[int]
    outlook: list[int]
    exhaustion_in_s: list[float]
    exhaustion_time: list[float]
    method: list[int]
    trend: list[int]
    confidence: list[int]
    recommended: list[float]
    achieved: list[float]
    dependency_bound: list[float]
    achievable: list[bool]
    achievable_known: list[bool]
    window_s: list[float]
    calendar: list[bool]


def _window_label(seconds: float) -> str:
    whole = round(seconds)
    return format_duration(whole) if whole > 0 else f"{seconds}s"


def evaluate(
    batch: SloBatch,
    rules: Sequence[BurnRule],
    thresholds: Thresholds | None = None,
) -> BatchResult:
    """All outputs for every SLO in ``batch``, which shares the rule set ``rules``.

    Raises ValueError when a rule reads a window that is not among ``batch.windows_s``.
    """
    # Garbage input (overflowing counts, inf) is handled by the validity masks; numpy's
    # warnings about it would only be noise in the operator's log.
    with np.errstate(all="ignore"):
        return _evaluate(batch, rules, thresholds)


def _evaluate(
    batch: SloBatch,
    rules: Sequence[BurnRule],
    thresholds: Thresholds | None,
) -> BatchResult:
    th = thresholds or Thresholds()
    rules = tuple(rules)
    check_rules(rules)
    columns = [(batch.window_index(r.long_s), batch.window_index(r.short_s)) for r in rules]
    n = batch.n
    now = batch.now
    step = batch.step_s
    ratio_only = batch.ratio_only
    windows = batch.windows_s.astype(np.float64)
    b = budget_fraction(batch.target)

    # Burn windows.
    valid = has_data(batch.bad, batch.total, batch.min_events, ratio_only)
    ratio = error_ratio(batch.bad, batch.total, valid)
    burn = burn_rates(ratio, b)
    # Pseudo-counts (budget module doc): ratio rows become uniform traffic of 1 event/second.
    win_total = np.where(ratio_only[:, None], windows[None, :], batch.total)
    win_total = np.where(valid, win_total, np.nan)
    win_bad = ratio * win_total

    # Compliance window.
    calendar = batch.calendar
    with np.errstate(invalid="ignore"):
        span = np.where(calendar, now - batch.period_start, batch.window_s)
        comp_valid = has_data(
            batch.compliance_bad, batch.compliance_total, batch.min_events, ratio_only
        ) & (span > 0)
    e_p = error_ratio(batch.compliance_bad, batch.compliance_total, comp_valid)
    sli = 1.0 - e_p
    consumed = e_p / b
    remaining = 1.0 - consumed
    known = comp_valid
    exhausted = known & (remaining <= EXHAUSTED_EPS)
    comp_total = np.where(ratio_only, span, batch.compliance_total)
    comp_total = np.where(known, comp_total, np.nan)
    comp_bad = e_p * comp_total
    slack0 = (b - e_p) * comp_total
    tol = EXHAUSTED_EPS * b * comp_total

    # Current burn and the slack new traffic adds per second.
    cur = fc.pick_current(batch.windows_s, valid, th.current_window_s)
    has_cur = cur >= 0
    cur_ratio = _column(ratio, cur)
    cur_total = _column(win_total, cur)
    cur_w = _column(np.broadcast_to(windows, ratio.shape), cur)
    with np.errstate(invalid="ignore"):
        new_slack = np.where(has_cur, (b - cur_ratio) * cur_total / cur_w, 0.0)

    # History: projection, trend spans, daily SLIs.
    n_days = 0
    day_cols = max(round(DAY / step), 1)
    if step <= DAY and batch.hist_bad.shape[1]:
        n_days = int(min(math.ceil(batch.longest_window_s / DAY), 400))
    summary = scan(
        batch.hist_bad,
        batch.hist_total,
        HistoryParams(
            ratio_only=ratio_only,
            n_cols=np.maximum(np.rint(batch.window_s / step), 1).astype(np.int64),
            comp_bad=comp_bad,
            comp_total=comp_total,
            b=b,
            new_slack_per_step=new_slack * step,
            tol=tol,
        ),
        step_s=step,
        recent_cols=max(round(th.trend_recent_s / step), 1),
        base_cols=max(round(th.trend_baseline_s / step), 1),
        day_cols=day_cols,
        n_days=n_days,
    )

    # Forecast paths (forecast module doc).
    live = known & ~exhausted
    rolling = ~calendar
    use_hist = live & rolling & summary.usable
    rest = live & rolling & ~use_hist
    slope = np.full(n, np.nan)
    n_points = np.zeros(n, dtype=np.int64)
    if batch.budget_times.size and np.any(rest):
        sel = np.flatnonzero(rest)
        s_sel, c_sel = fc.least_squares_slope(
            batch.budget_times,
            batch.budget_consumed[sel],
            now,
            th.fit_lookback_s,
            th.fit_min_points,
        )
        slope[sel] = s_sel
        n_points[sel] = c_sel
    use_lsq = rest & np.isfinite(slope)
    use_steady = rest & ~use_lsq
    use_cal = live & calendar

    horizon_cal = batch.period_end - now
    tau_cal, in_cal, late_cal = fc.linear_crossing(slack0, new_slack, horizon_cal)
    with np.errstate(invalid="ignore", divide="ignore"):
        steady_slope = new_slack - slack0 / batch.window_s
    tau_st, in_st, _ = fc.linear_crossing(slack0, steady_slope, batch.window_s)
    # After one window only new traffic is left (slack g * P): an idle service or an exact
    # burn of 1 reaches zero there without overspending, which is not exhaustion.
    in_st &= new_slack * batch.window_s < -tol
    tau_lsq, in_lsq, _ = fc.linear_crossing(remaining, -slope, batch.window_s)
    tau_hist = summary.exhaustion_s
    in_hist = np.isfinite(tau_hist)

    method = np.zeros(n, dtype=np.int8)
    method[exhausted] = Method.EXHAUSTED
    method[use_hist] = Method.HISTORY
    method[use_cal] = Method.CALENDAR
    method[use_lsq] = Method.LEAST_SQUARES
    method[use_steady] = Method.STEADY_RATE

    within = (use_hist & in_hist) | (use_cal & in_cal) | (use_lsq & in_lsq) | (use_steady & in_st)
    tau = np.select(
        [use_hist, use_cal, use_lsq, use_steady, exhausted],
        [tau_hist, tau_cal, tau_lsq, tau_st, np.zeros(n)],
        np.nan,
    )
    tau = np.where(within | exhausted, tau, np.nan)
    outlook = np.full(n, Outlook.NEVER, dtype=np.int8)
    outlook[use_cal & late_cal] = Outlook.AFTER_PERIOD_END
    outlook[within] = Outlook.WITHIN
    outlook[exhausted] = Outlook.EXHAUSTED
    outlook[~known] = Outlook.UNKNOWN
    exhaustion_time = np.where(within, now + tau, np.nan)

    # Trend: burn windows first, history spans as fallback.
    trend = _trend(batch, th, b, win_bad, win_total, summary)
    trend[~known] = 0

    # Confidence.
    level = np.where(use_hist | use_cal, 2, 1).astype(np.int8)
    coverage = summary.coverage
    level -= (use_hist & (coverage < 0.9)).astype(np.int8)
    level -= (use_hist & (coverage < 0.5)).astype(np.int8)
    level -= (use_lsq & (n_points < 2 * th.fit_min_points)).astype(np.int8)
    with np.errstate(invalid="ignore"):
        thin = ~has_cur | (~ratio_only & (b * cur_total < th.min_budget_events))
    level -= thin.astype(np.int8)
    level -= ((trend == 1) | (trend == 3)).astype(np.int8)
    np.clip(level, 0, 2, out=level)
    level[exhausted] = 2
    level[~known] = -1

    # Rules and risk.
    fired = firing(burn, columns, rules)
    page = np.array([r.severity == "page" for r in rules], dtype=np.bool_).reshape(-1)
    page_firing: BoolArray = np.asarray(fired[:, page].any(axis=1), dtype=np.bool_)
    ticket_firing: BoolArray = np.asarray(fired[:, ~page].any(axis=1), dtype=np.bool_)
    long_cols = sorted({long_col for long_col, _ in columns})
    long_max = np.fmax.reduce(burn[:, long_cols], axis=1) if long_cols else np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        soon = within & (tau <= th.danger_within_s)
    risk = classify(
        known=known,
        exhausted=exhausted,
        page_firing=page_firing,
        ticket_firing=ticket_firing,
        exhausts_soon=soon,
        long_burn_max=long_max,
        observe_burn_rate=th.observe_burn_rate,
    )

    # Recommendation.
    daily = daily_sli(
        summary.daily_bad,
        summary.daily_total,
        summary.daily_known,
        np.floor(batch.window_s / DAY + 1e-9),
        batch.min_events,
        ratio_only,
    )
    recommended, achieved, achievable, achievable_known = recommend(
        sli=sli,
        daily=daily,
        bound=batch.dependency_bound,
        target=batch.target,
        percentile=th.recommend_percentile,
    )

    return BatchResult(
        rules=rules,
        windows_s=batch.windows_s,
        now=now,
        window_s=batch.window_s,
        calendar=calendar,
        sli=sli,
        consumed=consumed,
        remaining=remaining,
        burn=burn,
        firing=fired,
        risk=risk,
        current_col=cur,
        outlook=outlook,
        exhaustion_in_s=tau,
        exhaustion_time=exhaustion_time,
        method=method,
        trend=trend,
        confidence=level,
        recommended=recommended,
        achieved=achieved,
        dependency_bound=batch.dependency_bound,
        achievable=achievable,
        achievable_known=achievable_known,
    )


def _column(matrix: FloatArray, cols: IntArray) -> FloatArray:
    """``matrix[i, cols[i]]``, NaN where ``cols[i] < 0``."""
    n, w = matrix.shape
    if w == 0:
        return np.full(n, np.nan)
    picked = matrix[np.arange(n), np.maximum(cols, 0)]
    return np.where(cols >= 0, picked, np.nan)


def _trend(
    batch: SloBatch,
    th: Thresholds,
    b: FloatArray,
    win_bad: FloatArray,
    win_total: FloatArray,
    summary: HistorySummary,
) -> Int8Array:
    n = batch.n
    windows = batch.windows_s
    recent = np.full(n, np.nan)
    base = np.full(n, np.nan)
    longer = [int(w) for w in windows if w >= th.trend_recent_s]
    if longer:
        rw = min(longer)
        base_candidates = [int(w) for w in windows if w > rw and w >= th.trend_baseline_s]
        if base_candidates:
            rc = batch.window_index(rw)
            bc = batch.window_index(min(base_candidates))
            zeros = np.zeros(n)
            recent = fc.burn_between(
                win_bad[:, rc],
                win_total[:, rc],
                zeros,
                zeros,
                b,
                batch.min_events,
                batch.ratio_only,
            )
            base = fc.burn_between(
                win_bad[:, bc],
                win_total[:, bc],
                win_bad[:, rc],
                win_total[:, rc],
                b,
                batch.min_events,
                batch.ratio_only,
            )
    zeros = np.zeros(n)
    h_recent = fc.burn_between(
        summary.recent_bad,
        summary.recent_total,
        zeros,
        zeros,
        b,
        batch.min_events,
        batch.ratio_only,
    )
    h_base = fc.burn_between(
        summary.base_bad,
        summary.base_total,
        zeros,
        zeros,
        b,
        batch.min_events,
        batch.ratio_only,
    )
    from_windows = np.isfinite(recent) & np.isfinite(base)
    recent = np.where(from_windows, recent, h_recent)
    base = np.where(from_windows, base, h_base)
    return fc.classify_trend(recent, base, th.trend_rel_tol, th.trend_abs_tol)
