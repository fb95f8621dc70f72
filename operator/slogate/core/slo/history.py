"""One pass over the per-interval history: ageing-out projection, trend spans, daily SLIs.

The history is the only large input ([N, T], 7.2 million cells for 10,000 SLOs at 30d/1h), so it
is read in row blocks small enough to stay in the CPU cache, with as few passes as the model
allows, and reduced to a few numbers per SLO. Everything else works on [N] or [N, W] arrays.

Per-interval values are not clipped (bad may exceed total by scrape jitter): the history only
gives the *shape* of the window, rescaled to the compliance counts below, and every ratio derived
from it (trend spans, daily SLIs) is clipped where it is formed.

Rolling-window projection (see ``forecast`` for the model): the window holds the last
``n = round(P / step)`` intervals. After k more steps the oldest k intervals have left it and k
steps of new traffic have arrived, so the *slack* (bad events the window can still take)

    S_k = S_0 - sum_{j<k} (b * total_j - bad_j) + k * g

where ``S_0 = b * total_P - bad_P`` and ``g`` is the slack that one step of new traffic adds
(negative when the current burn is above 1). ``remaining = S / (b * total)``, so the budget is
spent exactly when S drops below zero. S is linear between steps, so the crossing found on the
step grid and interpolated inside its step is exact.

The history and the compliance counts come from different queries (hourly increases vs one
``increase(...[30d])``), and intervals can be unknown. The history is therefore used for its
*shape* only: unknown intervals and any part of the window older than the history take the mean
of the known intervals, and the result is scaled so that its sums equal the compliance counts.
Then ``S`` starts exactly at the reported budget and ends, once the whole window has aged out,
exactly at the steady state of the new traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from slogate.core.slo.inputs import BoolArray, FloatArray, IntArray

#: Rows per block: [256, 720] float64 is 1.5 MB, which keeps a block's temporaries in L2/L3.
BLOCK_ROWS = 256


@dataclass(frozen=True, eq=False)
class HistorySummary:
    """Per-SLO reductions of the history ([N] unless noted; NaN = unknown)."""

    usable: BoolArray  # the history can drive the rolling forecast
    coverage: FloatArray  # known fraction of the window's intervals
    exhaustion_s: FloatArray  # seconds until S < 0 under the projection; NaN = not in window
    recent_bad: FloatArray  # trend spans: the most recent span ...
    recent_total: FloatArray
    base_bad: FloatArray  # ... and the span just before it
    base_total: FloatArray
    daily_bad: FloatArray  # [N, D] per day, newest last (days count back from now)
    daily_total: FloatArray  # [N, D]
    daily_known: FloatArray  # [N, D] known fraction of each day's intervals


@dataclass(frozen=True, eq=False)
class HistoryParams:
    """Per-row inputs of the scan ([N])."""

    ratio_only: BoolArray
    n_cols: IntArray  # window length in intervals, >= 1
    comp_bad: FloatArray  # compliance counts (pseudo-counts for ratio rows)
    comp_total: FloatArray
    b: FloatArray
    new_slack_per_step: FloatArray  # g above; 0 when no current traffic is known
    tol: FloatArray  # slack tolerance (S < -tol counts as spent)


def scan(
    hist_bad: FloatArray,
    hist_total: FloatArray,
    params: HistoryParams,
    *,
    step_s: float,
    recent_cols: int,
    base_cols: int,
    day_cols: int,
    n_days: int,
) -> HistorySummary:
    """Reduce the [N, T] history to per-SLO numbers (module doc), block by block.

    Blocks are views of the caller's arrays; only ratio-only rows (which need converting) and
    rows with unknown intervals are copied, so a healthy fleet is never copied.
    """
    n, t = hist_bad.shape
    days = min(n_days, t // day_cols) if day_cols >= 1 else 0
    out = _empty_summary(n, days)
    if t == 0 or n == 0:
        return out
    # Scratch space reused by every block: fresh multi-megabyte temporaries per block would
    # cost a page fault per 4 KiB on first touch.
    scratch = _Scratch(
        np.empty((BLOCK_ROWS, t)), np.empty((BLOCK_ROWS, t)), np.empty((BLOCK_ROWS, t), bool)
    )
    layout = _Layout(step_s, recent_cols, base_cols, day_cols, days, scratch)
    for lo in range(0, n, BLOCK_ROWS):
        block = slice(lo, lo + BLOCK_ROWS)
        rows = np.arange(lo, min(n, lo + BLOCK_ROWS))
        _scan_block(hist_bad[block], hist_total[block], rows, params, out, layout)
    ratio_rows = np.flatnonzero(params.ratio_only)
    if ratio_rows.size:
        # The pass above read these rows' (ratio, 1) pairs as counts; redo them converted.
        hb, ht = _ratio_to_counts(hist_bad[ratio_rows], hist_total[ratio_rows], step_s)
        for lo in range(0, ratio_rows.size, BLOCK_ROWS):
            block = slice(lo, lo + BLOCK_ROWS)
            _scan_block(hb[block], ht[block], ratio_rows[block], params, out, layout)
    return out


class _Scratch(NamedTuple):
    drop: FloatArray
    product: FloatArray
    crossed: BoolArray


class _Layout(NamedTuple):
    step_s: float
    recent_cols: int
    base_cols: int
    day_cols: int
    days: int
    scratch: _Scratch


def _empty_summary(n: int, days: int) -> HistorySummary:
    def nan(*shape: int) -> FloatArray:
        return np.full(shape, np.nan, dtype=np.float64)

    return HistorySummary(
        usable=np.zeros(n, dtype=np.bool_),
        coverage=np.zeros(n, dtype=np.float64),
        exhaustion_s=nan(n),
        recent_bad=nan(n),
        recent_total=nan(n),
        base_bad=nan(n),
        base_total=nan(n),
        daily_bad=nan(n, days),
        daily_total=nan(n, days),
        daily_known=np.zeros((n, days), dtype=np.float64),
    )


def _ratio_to_counts(
    hb: FloatArray, ht: FloatArray, step_s: float
) -> tuple[FloatArray, FloatArray]:
    """Ratio rows carry (ratio, 1) per interval: make them (ratio * step, step)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ok = np.isfinite(hb) & np.isfinite(ht) & (ht > 0)
        ratio = np.clip(hb / np.where(ok, ht, 1.0), 0.0, 1.0)
        return np.where(ok, ratio * step_s, np.nan), np.where(ok, step_s, np.nan)


def _day_sums(x: FloatArray, lo: int, days: int, day_cols: int) -> FloatArray:
    # einsum reduces the short last axis several times faster than .sum(axis=2).
    sums: FloatArray = np.einsum("ijk->ij", x[:, lo:].reshape(x.shape[0], days, day_cols))
    return sums


def _scan_block(
    hb: FloatArray,
    ht: FloatArray,
    rows: IntArray,
    p: HistoryParams,
    out: HistorySummary,
    layout: _Layout,
) -> None:
    step_s, recent_cols, base_cols, day_cols, days, scratch = layout
    m, t = hb.shape
    n_cols = p.n_cols[rows]
    # Window start as a column of this history; a window longer than the history starts
    # ``uncovered`` intervals before it.
    start = np.maximum(t - n_cols, 0)
    uncovered = np.maximum(n_cols - t, 0)
    cut_starts = np.unique(start[start > 0]).tolist()
    lo = t - days * day_cols
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # Sums first: a row's sum is finite exactly when all its intervals are, so only the
        # rows with gaps pay for masks.
        if days:
            day_b = _day_sums(hb, lo, days, day_cols)
            day_t = _day_sums(ht, lo, days, day_cols)
            sum_b = day_b.sum(axis=1) + hb[:, :lo].sum(axis=1)
            sum_t = day_t.sum(axis=1) + ht[:, :lo].sum(axis=1)
            day_known = np.ones((m, days))
        else:
            sum_b = hb.sum(axis=1)
            sum_t = ht.sum(axis=1)
        for cut in cut_starts:
            short = np.flatnonzero(start == cut)
            sum_b[short] -= hb[short, :cut].sum(axis=1)
            sum_t[short] -= ht[short, :cut].sum(axis=1)
        n_known = n_cols - uncovered
        gaps = np.flatnonzero(~(np.isfinite(sum_b) & np.isfinite(sum_t)))
        known_g = np.empty((0, t), dtype=np.bool_)
        if gaps.size:
            gb = hb[gaps]
            gt = ht[gaps]
            known_g = np.isfinite(gb) & np.isfinite(gt)
            gb0 = np.where(known_g, gb, 0.0)
            gt0 = np.where(known_g, gt, 0.0)
            in_window = np.arange(t)[None, :] >= start[gaps][:, None]
            n_known[gaps] = (known_g & in_window).sum(axis=1)
            sum_b[gaps] = np.where(in_window, gb0, 0.0).sum(axis=1)
            sum_t[gaps] = np.where(in_window, gt0, 0.0).sum(axis=1)
            if days:
                day_b[gaps] = _day_sums(gb0, lo, days, day_cols)
                day_t[gaps] = _day_sums(gt0, lo, days, day_cols)
                day_known[gaps] = _day_sums(known_g.astype(np.float64), lo, days, day_cols)
                day_known[gaps] /= day_cols

        b = p.b[rows]
        comp_b = p.comp_bad[rows]
        comp_t = p.comp_total[rows]
        g = p.new_slack_per_step[rows]
        usable = (n_known > 0) & (sum_t > 0) & np.isfinite(comp_b) & (comp_t > 0)
        mean_b = np.where(usable, sum_b / np.maximum(n_known, 1), 0.0)
        mean_t = np.where(usable, sum_t / np.maximum(n_known, 1), 0.0)
        filled_b = mean_b * n_cols
        filled_t = mean_t * n_cols
        slack0 = b * comp_t - comp_b
        # Scale the history's shape to the compliance counts. Without any bad interval in the
        # history, spread the window's bad events in proportion to traffic instead.
        has_bad = filled_b > 0
        coef_t = np.where(has_bad, b * comp_t, slack0) / np.where(usable, filled_t, 1.0)
        coef_b = np.where(has_bad, comp_b / np.where(has_bad, filled_b, 1.0), 0.0)
        usable &= np.isfinite(coef_t) & np.isfinite(coef_b)
        coef_t = np.where(usable, coef_t, 0.0)
        coef_b = np.where(usable, coef_b, 0.0)
        # Slack lost per step while an unknown (mean) interval ages out.
        fill = coef_t * mean_t - coef_b * mean_b - g

        drop = np.multiply(ht, coef_t[:, None], out=scratch.drop[:m])
        drop -= np.multiply(hb, coef_b[:, None], out=scratch.product[:m])
        drop -= g[:, None]
        if gaps.size:
            drop[gaps] = np.where(known_g, drop[gaps], fill[gaps][:, None])
        for cut in cut_starts:
            drop[np.flatnonzero(start == cut), :cut] = 0.0
        offset = uncovered * fill
        drop[:, 0] += offset
        np.cumsum(drop, axis=1, out=drop)
        # drop[:, j] is now S_0 - S once the window start has moved past interval j.
        threshold = slack0 + p.tol[rows]
        crossed = np.greater(drop, threshold[:, None], out=scratch.crossed[:m])
        first = crossed.argmax(axis=1)
        at = np.arange(m)
        hit = crossed[at, first] & usable
        s_after = slack0 - drop[at, first]
        s_before = slack0 - np.where(first > 0, drop[at, np.maximum(first - 1, 0)], offset)
        frac = np.clip(s_before / (s_before - s_after), 0.0, 1.0)
        steps = uncovered + (first - start) + frac
        # Spent while the uncovered (pre-history) part ages out: a straight line.
        early = (uncovered > 0) & (fill > 0) & (offset > threshold)
        steps = np.where(early, slack0 / np.where(early, fill, 1.0), steps)
        out.exhaustion_s[rows] = np.where(hit, steps * step_s, np.nan)
        out.usable[rows] = usable
        out.coverage[rows] = n_known / n_cols

        recent = min(recent_cols, t)
        base = min(base_cols, t - recent)
        out.recent_bad[rows], out.recent_total[rows] = _span_sums(hb, ht, t - recent, t)
        if base > 0:
            span = _span_sums(hb, ht, t - recent - base, t - recent)
            out.base_bad[rows], out.base_total[rows] = span
        if days:
            out.daily_bad[rows] = day_b
            out.daily_total[rows] = day_t
            out.daily_known[rows] = day_known


def _span_sums(hb: FloatArray, ht: FloatArray, lo: int, hi: int) -> tuple[FloatArray, FloatArray]:
    """Sums over intervals ``lo:hi`` that are known in both arrays (a few columns only)."""
    b = hb[:, lo:hi]
    t = ht[:, lo:hi]
    known = np.isfinite(b) & np.isfinite(t)
    return np.where(known, b, 0.0).sum(axis=1), np.where(known, t, 0.0).sum(axis=1)
