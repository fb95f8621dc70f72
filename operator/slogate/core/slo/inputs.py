"""What the math reads: a batch of SLOs that share one rule set, and the tunable thresholds.

Arrays are the interface so that one evaluation covers thousands of SLOs with a handful of numpy
operations. ``SloBatch`` checks shapes once and converts everything to float64; the math never
mutates its inputs.

Shapes: N SLOs, W burn windows, T history intervals, H budget-history samples.

Missing data is NaN everywhere: a window whose query failed, an interval the controller has not
seen, a calendar bound of a rolling SLO, a missing dependency bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]


@dataclass(frozen=True)
class Thresholds:
    """Risk thresholds and forecast settings; the defaults are the ones ``docs/math.md`` states.

    - ``danger_within_s``: DANGER when the forecast exhausts the budget within this span.
    - ``observe_burn_rate``: OBSERVE when any rule's long window burns above this.
    - ``current_window_s``: which burn window is "the current burn" for the forecast and the
      message; the shortest measured window at least this long is used (see ``forecast``).
    - ``trend_recent_s`` / ``trend_baseline_s``: the trend compares the burn over the most recent
      span with the burn over the span just before it.
    - ``trend_rel_tol`` / ``trend_abs_tol``: a change smaller than
      ``max(rel_tol * larger burn, abs_tol)`` is "stable".
    - ``fit_lookback_s`` / ``fit_min_points``: the least-squares fallback fits budget samples this
      recent, and needs at least this many.
    - ``min_budget_events``: a current window that allows fewer bad events than this (``b x
      total``) is too small for a confident forecast (one error moves the burn a lot).
    - ``recommend_percentile``: the low percentile of daily SLIs used for the recommendation.
    """

    danger_within_s: float = 3 * 86400.0
    observe_burn_rate: float = 1.0
    current_window_s: int = 3600
    trend_recent_s: int = 6 * 3600
    trend_baseline_s: int = 86400
    trend_rel_tol: float = 0.25
    trend_abs_tol: float = 0.1
    fit_lookback_s: float = 86400.0
    fit_min_points: int = 3
    min_budget_events: float = 10.0
    recommend_percentile: float = 10.0

    def __post_init__(self) -> None:
        if not self.danger_within_s >= 0:
            raise ValueError("danger_within_s must not be negative")
        if self.current_window_s <= 0 or self.trend_recent_s <= 0 or self.trend_baseline_s <= 0:
            raise ValueError("forecast windows must be positive")
        if not 0 <= self.recommend_percentile <= 100:
            raise ValueError("recommend_percentile must be within 0..100")
        if self.fit_min_points < 2:
            raise ValueError("a least-squares fit needs at least 2 points")


def _floats(value: object, shape: tuple[int, ...], name: str) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    return array


def _empty() -> FloatArray:
    return np.empty(0, dtype=np.float64)


def _given(value: object) -> bool:
    return value is not None and np.size(value) > 0  # type: ignore[arg-type]


def _fill(value: object, shape: tuple[int, ...], default: float, name: str) -> FloatArray:
    if not _given(value):
        return np.full(shape, default, dtype=np.float64)
    return _floats(value, shape, name)


@dataclass(frozen=True, eq=False)
class SloBatch:
    """N SLOs evaluated together. All percentages are percent (99.9), all times epoch seconds.

    Required:
    - ``target`` [N]: objective in percent, 0 < target < 100.
    - ``windows_s`` [W]: burn windows in seconds (the columns of ``bad``/``total``); must contain
      every window of the rule set the batch is evaluated with.
    - ``bad``, ``total`` [N, W]: event increases per burn window (bad = total - good for "good"
      indicators); for ``ratio_only`` rows, ``bad`` is the error ratio and ``total`` 1.
    - ``compliance_bad``, ``compliance_total`` [N]: exact increases over the compliance window
      (rolling) or since the calendar period start; ratio and 1 for ``ratio_only`` rows.
    - ``window_s`` [N]: rolling window length; for calendar rows the nominal period length (used
      as the recommendation's look-back).
    - ``now``: evaluation time; the last history column ends here.

    Optional (an empty array, the default, means "not given"; after construction every field has
    its full shape):
    - ``min_events`` [N] (default 1): fewer events in a window means "no data" for that window.
    - ``ratio_only`` [N] (default False): the row only has error ratios (raw-query indicators).
    - ``period_start``, ``period_end`` [N] (default NaN): calendar bounds; NaN for rolling rows.
    - ``hist_bad``, ``hist_total`` [N, T] (default T = 0): per-interval increases, oldest first,
      ``step_s`` seconds each, the last one ending at ``now``.
    - ``budget_times`` [H], ``budget_consumed`` [N, H] (default H = 0): past ``consumed`` values
      for the least-squares fallback.
    - ``dependency_bound`` [N] (default NaN): product of the ``dependsOn`` targets, percent.
    - ``longest_window_s`` (default NaN: the longest ``window_s`` of this batch): how far back
      the daily SLIs reach. A caller that evaluates a large fleet in row chunks passes the
      fleet's longest window, so that every row's result is exactly that of one batch.
    """

    target: FloatArray
    windows_s: IntArray
    bad: FloatArray
    total: FloatArray
    compliance_bad: FloatArray
    compliance_total: FloatArray
    window_s: FloatArray
    now: float
    min_events: FloatArray = field(default_factory=_empty)
    ratio_only: BoolArray = field(default_factory=lambda: np.empty(0, dtype=np.bool_))
    period_start: FloatArray = field(default_factory=_empty)
    period_end: FloatArray = field(default_factory=_empty)
    hist_bad: FloatArray = field(default_factory=_empty)
    hist_total: FloatArray = field(default_factory=_empty)
    step_s: float = 3600.0
    budget_times: FloatArray = field(default_factory=_empty)
    budget_consumed: FloatArray = field(default_factory=_empty)
    dependency_bound: FloatArray = field(default_factory=_empty)
    longest_window_s: float = math.nan

    def __post_init__(self) -> None:
        target = np.atleast_1d(np.asarray(self.target, dtype=np.float64))
        if target.ndim != 1:
            raise ValueError("target must be one-dimensional")
        n = target.shape[0]
        valid_target = (target > 0) & (target < 100)
        if not np.all(valid_target):
            rows = np.flatnonzero(~valid_target)[:5].tolist()
            raise ValueError(f"targets must be within (0, 100) percent; bad rows {rows}")
        windows = np.asarray(self.windows_s, dtype=np.int64).reshape(-1)
        if np.any(windows <= 0) or len(set(windows.tolist())) != windows.size:
            raise ValueError("windows_s must be distinct positive seconds")
        w = windows.shape[0]
        if not math.isfinite(self.now):
            raise ValueError("now must be a finite epoch timestamp")
        if not self.step_s > 0:
            raise ValueError("step_s must be positive")
        # Frozen for callers; normalising the fields once here is the only mutation.
        set_ = object.__setattr__
        set_(self, "target", target)
        set_(self, "windows_s", windows)
        set_(self, "bad", _floats(self.bad, (n, w), "bad"))
        set_(self, "total", _floats(self.total, (n, w), "total"))
        set_(self, "compliance_bad", _floats(self.compliance_bad, (n,), "compliance_bad"))
        set_(self, "compliance_total", _floats(self.compliance_total, (n,), "compliance_total"))
        window_s = _floats(self.window_s, (n,), "window_s")
        if not np.all(window_s > 0):
            raise ValueError("window_s must be positive")
        set_(self, "window_s", window_s)
        set_(self, "now", float(self.now))
        set_(self, "step_s", float(self.step_s))
        set_(self, "min_events", _fill(self.min_events, (n,), 1.0, "min_events"))
        if _given(self.ratio_only):
            ratio_only = np.asarray(self.ratio_only, dtype=np.bool_)
            if ratio_only.shape != (n,):
                raise ValueError(f"ratio_only has shape {ratio_only.shape}, expected {(n,)}")
        else:
            ratio_only = np.zeros(n, dtype=np.bool_)
        set_(self, "ratio_only", ratio_only)
        set_(self, "period_start", _fill(self.period_start, (n,), math.nan, "period_start"))
        set_(self, "period_end", _fill(self.period_end, (n,), math.nan, "period_end"))
        if np.any(np.isfinite(self.period_start) != np.isfinite(self.period_end)):
            raise ValueError("calendar rows need both period_start and period_end")
        if _given(self.hist_bad) or _given(self.hist_total):
            hb = np.asarray(self.hist_bad, dtype=np.float64)
            if hb.ndim != 2 or hb.shape[0] != n:
                raise ValueError(f"hist_bad has shape {hb.shape}, expected ({n}, T)")
            set_(self, "hist_bad", hb)
            set_(self, "hist_total", _floats(self.hist_total, hb.shape, "hist_total"))
        else:
            set_(self, "hist_bad", np.empty((n, 0), dtype=np.float64))
            set_(self, "hist_total", np.empty((n, 0), dtype=np.float64))
        if _given(self.budget_times):
            times = np.asarray(self.budget_times, dtype=np.float64).reshape(-1)
            set_(self, "budget_times", times)
            consumed = _floats(self.budget_consumed, (n, times.shape[0]), "budget_consumed")
            set_(self, "budget_consumed", consumed)
        else:
            set_(self, "budget_times", _empty())
            set_(self, "budget_consumed", np.empty((n, 0), dtype=np.float64))
        set_(self, "dependency_bound", _fill(self.dependency_bound, (n,), math.nan, "bound"))
        longest = float(window_s.max(initial=0.0))
        if math.isfinite(self.longest_window_s):
            longest = max(longest, float(self.longest_window_s))
        set_(self, "longest_window_s", longest)

    @property
    def n(self) -> int:
        """Number of SLOs."""
        return int(self.target.shape[0])

    @property
    def calendar(self) -> BoolArray:
        """Rows with a calendar period (finite period bounds)."""
        return np.isfinite(self.period_end)

    def window_index(self, window_s: int) -> int:
        """Column of ``window_s`` in ``bad``/``total``; ValueError when it was not measured."""
        hits = np.flatnonzero(self.windows_s == window_s)
        if hits.size == 0:
            raise ValueError(f"burn window {window_s}s is not among the batch's windows")
        return int(hits[0])


@dataclass(frozen=True)
class SloInput:
    """One SLO in plain Python, for callers that assemble a batch row by row (and for tests).

    ``bad``/``total`` map window seconds to increases; history lists may differ in length
    between SLOs (shorter ones are padded with unknown intervals on the old side).
    """

    target: float
    window_s: float
    bad: dict[int, float]
    total: dict[int, float]
    compliance_bad: float
    compliance_total: float
    min_events: float = 1.0
    ratio_only: bool = False
    period_start: float = math.nan
    period_end: float = math.nan
    hist_bad: Sequence[float] = ()
    hist_total: Sequence[float] = ()
    budget_consumed: Sequence[float] = ()
    dependency_bound: float = math.nan


def stack(
    inputs: Sequence[SloInput],
    windows_s: Sequence[int],
    now: float,
    step_s: float = 3600.0,
    budget_times: Sequence[float] = (),
) -> SloBatch:
    """Build an ``SloBatch`` from per-SLO inputs; windows an input lacks become NaN."""
    n = len(inputs)
    w = len(windows_s)
    bad = np.full((n, w), math.nan)
    total = np.full((n, w), math.nan)
    for i, slo in enumerate(inputs):
        for j, window in enumerate(windows_s):
            bad[i, j] = slo.bad.get(window, math.nan)
            total[i, j] = slo.total.get(window, math.nan)
    t = max((len(slo.hist_total) for slo in inputs), default=0)
    hist_bad = np.empty((n, 0))
    hist_total = np.empty((n, 0))
    if t:
        hist_bad = np.full((n, t), math.nan)
        hist_total = np.full((n, t), math.nan)
        for i, slo in enumerate(inputs):
            if len(slo.hist_bad) != len(slo.hist_total):
                raise ValueError(f"input {i}: hist_bad and hist_total differ in length")
            k = len(slo.hist_total)
            if k:
                hist_bad[i, t - k :] = slo.hist_bad
                hist_total[i, t - k :] = slo.hist_total
    times = np.empty(0)
    consumed = np.empty((n, 0))
    if budget_times:
        times = np.asarray(budget_times, dtype=np.float64)
        consumed = np.full((n, times.shape[0]), math.nan)
        for i, slo in enumerate(inputs):
            if slo.budget_consumed:
                if len(slo.budget_consumed) != times.shape[0]:
                    raise ValueError(f"input {i}: budget_consumed does not match budget_times")
                consumed[i] = slo.budget_consumed
    return SloBatch(
        target=np.array([s.target for s in inputs], dtype=np.float64),
        windows_s=np.asarray(windows_s, dtype=np.int64),
        bad=bad,
        total=total,
        compliance_bad=np.array([s.compliance_bad for s in inputs], dtype=np.float64),
        compliance_total=np.array([s.compliance_total for s in inputs], dtype=np.float64),
        window_s=np.array([s.window_s for s in inputs], dtype=np.float64),
        now=now,
        min_events=np.array([s.min_events for s in inputs], dtype=np.float64),
        ratio_only=np.array([s.ratio_only for s in inputs], dtype=np.bool_),
        period_start=np.array([s.period_start for s in inputs], dtype=np.float64),
        period_end=np.array([s.period_end for s in inputs], dtype=np.float64),
        hist_bad=hist_bad,
        hist_total=hist_total,
        step_s=step_s,
        budget_times=times,
        budget_consumed=consumed,
        dependency_bound=np.array([s.dependency_bound for s in inputs], dtype=np.float64),
    )
