"""Long windows from per-interval increases, so 30 days are never re-scanned every tick.

The controller keeps, per SLO, the increases of bad and total events over fixed intervals
("buckets", aligned to multiples of the step since the epoch) and asks Prometheus only for the
short windows and the *tail*: the increase since the last bucket boundary. A window of length w
ending now is then

    tail + the newest whole buckets + a fraction of the bucket the window starts in,

the fraction being the part of that bucket inside the window (events are assumed evenly spread
inside one bucket; with hourly buckets the error is bounded by one hour's events x the fraction).
Unknown buckets (NaN) count as no events; a window with no known bucket and no tail is unknown.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def bucket_end(now: float, step_s: int) -> float:
    """The most recent bucket boundary at or before ``now``."""
    return float(np.floor(now / step_s) * step_s)


def window_sums(
    buckets: npt.NDArray[np.floating[Any]],
    tail: FloatArray,
    tail_s: float,
    step_s: int,
    windows_s: npt.ArrayLike,
) -> FloatArray:
    """Events in each window ending now: ``[N, W]`` from ``buckets [N, T]`` and ``tail [N]``.

    ``buckets`` may be stored as float32; the sums are float64.

    ``windows_s`` is ``[W]`` (the same windows for every row) or ``[N, W]``; each window must
    be at least ``tail_s`` long.

    ``buckets[:, -1]`` is the bucket ending at the last boundary, ``tail_s`` seconds before now.
    Windows longer than the history are cut at its start. NaN where nothing is known.
    """
    buckets = np.asarray(buckets, dtype=np.float64)
    n, t = buckets.shape
    # [N, W]: one row of windows shared by all SLOs, or a window per SLO (calendar periods).
    given = np.atleast_2d(np.asarray(windows_s, dtype=np.float64))
    windows = np.broadcast_to(given, (n, given.shape[1]))
    known = ~np.isnan(buckets)
    newest_first = np.where(known, buckets, 0.0)[:, ::-1]
    known_newest_first = known[:, ::-1]
    # cum[:, k] = sum of the newest k buckets
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(newest_first, axis=1)], axis=1)
    kcount = np.concatenate([np.zeros((n, 1)), np.cumsum(known_newest_first, axis=1)], axis=1)
    span = np.clip((windows - tail_s) / step_s, 0.0, float(t))  # buckets covered, fractional
    whole = np.floor(span).astype(np.int64)
    frac = np.where(whole < t, span - whole, 0.0)
    start_idx = np.minimum(whole, t - 1)  # the bucket the window starts in (from the end)
    partial = np.take_along_axis(newest_first, start_idx, axis=1) * frac
    partial_known = np.take_along_axis(known_newest_first, start_idx, axis=1) & (frac > 0)
    sums = np.take_along_axis(cum, whole, axis=1) + partial
    tail = np.asarray(tail, dtype=np.float64)
    tail_known = ~np.isnan(tail)
    sums = sums + np.where(tail_known, tail, 0.0)[:, None]
    any_known = (np.take_along_axis(kcount, whole, axis=1) > 0) | partial_known
    any_known |= tail_known[:, None]
    out: FloatArray = np.where(any_known, sums, np.nan)
    return out
