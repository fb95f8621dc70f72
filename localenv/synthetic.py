"""Synthetic service histories with known numbers of good and bad events.

A story is a list of phases, each with a request rate and an error ratio, laid out minute by
minute back from an end time. The per-minute event counts are the ground truth: tests compute
expected budgets and burn rates from them directly, and the counters written to Prometheus are
their running sums, sampled every 5 minutes for old data and every minute for recent data
(enough for windows from 5 minutes up, at a tenth of the backfill cost of 1-minute samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from localenv.prometheus import Series

MINUTE = 60
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Phase:
    """``minutes`` of traffic at ``rate`` requests per minute with ``error_ratio`` bad."""

    minutes: int
    rate: float
    error_ratio: float


@dataclass(frozen=True)
class Story:
    """Per-minute events; minute ``i`` covers ``[start + 60 i, start + 60 (i + 1))``."""

    start: float
    total: FloatArray
    bad: FloatArray

    @property
    def end(self) -> float:
        return self.start + MINUTE * len(self.total)

    def _cum(self, series: FloatArray, at: float) -> float:
        """Events from ``start`` to ``at``, linear inside a minute."""
        pos = min(max((at - self.start) / MINUTE, 0.0), float(len(series)))
        whole = int(pos)
        done = float(series[:whole].sum())
        if whole < len(series):
            done += float(series[whole]) * (pos - whole)
        return done

    def events(self, start: float, end: float) -> tuple[float, float]:
        """(bad, total) events in ``[start, end]``: the exact answer for ``increase()``."""
        return (
            self._cum(self.bad, end) - self._cum(self.bad, start),
            self._cum(self.total, end) - self._cum(self.total, start),
        )

    def burn(self, window_s: float, at: float, target: float) -> float:
        bad, total = self.events(at - window_s, at)
        return (bad / total) / (1 - target / 100)

    def consumed(self, window_s: float, at: float, target: float) -> float:
        return self.burn(window_s, at, target)


def story(phases: Sequence[Phase], end: float) -> Story:
    """Phases oldest first; the last phase ends at ``end`` (rounded down to a minute)."""
    end = float(np.floor(end / MINUTE) * MINUTE)
    total = np.concatenate([np.full(p.minutes, p.rate, dtype=np.float64) for p in phases])
    bad = np.concatenate(
        [np.full(p.minutes, p.rate * p.error_ratio, dtype=np.float64) for p in phases]
    )
    return Story(end - MINUTE * len(total), total, bad)


def sample_times(s: Story, fine_minutes: int = 8 * 60) -> npt.NDArray[np.int64]:
    """Minute indices to sample: every 5 minutes, then every minute for the last part."""
    n = len(s.total)
    coarse = np.arange(0, max(n - fine_minutes, 0), 5)
    fine = np.arange(max(n - fine_minutes, 0), n + 1)
    return np.unique(np.concatenate([coarse, fine]))


def counters(
    s: Story,
    name: str,
    labels: dict[str, str],
    *,
    error_labels: dict[str, str],
    ok_labels: dict[str, str],
    fine_minutes: int = 8 * 60,
) -> list[Series]:
    """Two counters of the story: bad events and good events, split by a label (sampled every
    minute for the last ``fine_minutes``, every 5 minutes before)."""
    idx = sample_times(s, fine_minutes)
    times = [s.start + MINUTE * int(i) for i in idx]
    cum_bad = np.concatenate([[0.0], np.cumsum(s.bad)])[idx]
    cum_good = np.concatenate([[0.0], np.cumsum(s.total - s.bad)])[idx]
    return [
        Series(name, {**labels, **error_labels}, times, cum_bad.tolist()),
        Series(name, {**labels, **ok_labels}, times, cum_good.tolist()),
    ]


def histogram(
    s: Story,
    name: str,
    labels: dict[str, str],
    bounds: Sequence[str],
    threshold_le: str,
    fine_minutes: int = 8 * 60,
) -> list[Series]:
    """A classic histogram where "bad" requests are slower than ``threshold_le``.

    Fast (good) requests fill the threshold bucket and every bucket above it, half of them also
    the buckets below; slow (bad) requests only fill buckets above the threshold, half of them
    the finite ones. ``bounds`` are written verbatim as ``le`` label values, so a test can write
    ``"0.30"`` where the SLO says ``0.3``.
    """
    idx = sample_times(s, fine_minutes)
    times = [s.start + MINUTE * int(i) for i in idx]
    cum_total = np.concatenate([[0.0], np.cumsum(s.total)])[idx]
    cum_good = np.concatenate([[0.0], np.cumsum(s.total - s.bad)])[idx]
    cum_bad = cum_total - cum_good
    out: list[Series] = []
    threshold = float(threshold_le)
    for le in [*bounds, "+Inf"]:
        bound = float(le)
        if bound < threshold:
            values = cum_good * 0.5
        elif bound == threshold:
            values = cum_good
        elif bound < float("inf"):
            values = cum_good + cum_bad * 0.5
        else:
            values = cum_total
        out.append(Series(f"{name}_bucket", {**labels, "le": le}, times, values.tolist()))
    out.append(Series(f"{name}_count", labels, times, cum_total.tolist()))
    return out
