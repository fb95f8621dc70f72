"""Long windows summed from per-interval history plus the tail since the last boundary."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slogate.core.increments import bucket_end, window_sums

HOUR = 3600


def test_bucket_end() -> None:
    assert bucket_end(7300.0, HOUR) == 7200.0
    assert bucket_end(7200.0, HOUR) == 7200.0


def test_whole_and_fractional_buckets_plus_tail() -> None:
    buckets = np.array([[10.0, 20.0, 30.0, 40.0]])  # oldest first, last ends 15 min ago
    tail = np.array([5.0])
    sums = window_sums(buckets, tail, 900, HOUR, [HOUR, 2 * HOUR, 4 * HOUR + 900])
    # 1h = tail (15m) + 45 min of the newest bucket: 5 + 0.75 * 40
    assert sums[0, 0] == pytest.approx(5 + 30)
    # 2h = tail + newest bucket + 0.75 of the one before
    assert sums[0, 1] == pytest.approx(5 + 40 + 22.5)
    # exactly the whole history plus the tail
    assert sums[0, 2] == pytest.approx(105)


def test_longer_than_history_is_cut_at_its_start() -> None:
    sums = window_sums(np.array([[1.0, 2.0]]), np.array([0.0]), 0, HOUR, [30 * 86400])
    assert sums[0, 0] == 3.0


def test_unknown_buckets_count_nothing_and_all_unknown_is_nan() -> None:
    buckets = np.array([[np.nan, 2.0], [np.nan, np.nan]])
    sums = window_sums(buckets, np.array([1.0, np.nan]), 60, HOUR, [2 * HOUR])
    assert sums[0, 0] == pytest.approx(3.0)
    assert np.isnan(sums[1, 0])


def test_per_row_windows() -> None:
    buckets = np.ones((2, 48))
    sums = window_sums(buckets, np.zeros(2), 0, HOUR, np.array([[HOUR], [24 * HOUR]]))
    assert sums[:, 0].tolist() == [1.0, 24.0]


@given(
    st.lists(st.floats(0, 1e6), min_size=2, max_size=50),
    st.integers(0, HOUR - 1),
    st.floats(0, 1e6),
)
def test_window_covering_everything_is_the_total(
    values: list[float], tail_s: int, tail: float
) -> None:
    buckets = np.array([values])
    span = len(values) * HOUR + tail_s
    got = window_sums(buckets, np.array([tail]), tail_s, HOUR, [span])[0, 0]
    assert got == pytest.approx(sum(values) + tail, rel=1e-9, abs=1e-6)
