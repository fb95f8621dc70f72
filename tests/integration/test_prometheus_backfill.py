"""The real Prometheus answers PromQL over backfilled history with the numbers we wrote."""

from __future__ import annotations

import random
import time

import pytest

from localenv.prometheus import PrometheusServer, Series, counter, openmetrics_text

pytestmark = pytest.mark.prometheus

STEP = 300  # one sample every 5 minutes: plenty for windows of an hour or more
DAYS = 30


def test_openmetrics_rendering_escapes_and_terminates() -> None:
    text = openmetrics_text([Series("x_total", {"path": 'a"b\\c'}, [1.0, 2.0], [0.0, 3.0])])
    assert text.splitlines() == [
        "# TYPE x_total unknown",
        'x_total{path="a\\"b\\\\c"} 0.0 1.000',
        'x_total{path="a\\"b\\\\c"} 3.0 2.000',
        "# EOF",
    ]


def test_backfilled_30_days_answer_increase_exactly(prometheus: PrometheusServer) -> None:
    rng = random.Random(20261122)
    n = DAYS * 86400 // STEP + 24  # a little more than 30 days, so the window is fully covered
    end = (time.time() // STEP) * STEP - STEP
    start = end - n * STEP
    total_inc = [float(rng.randint(50, 150)) for _ in range(n)]
    error_inc = [float(rng.randint(0, 3)) if rng.random() < 0.1 else 0.0 for _ in range(n)]
    labels = {"job": "backfill-test"}
    prometheus.backfill(
        [
            counter("bf_requests_total", {**labels, "code": "500"}, start, STEP, error_inc),
            counter(
                "bf_requests_total",
                {**labels, "code": "200"},
                start,
                STEP,
                [t - e for t, e in zip(total_inc, error_inc, strict=True)],
            ),
        ]
    )
    window = DAYS * 86400 // STEP
    expected_errors = sum(error_inc[-window:])
    expected_total = sum(total_inc[-window:])
    assert expected_errors > 0

    errors = prometheus.scalar('sum(increase(bf_requests_total{code="500"}[30d]))', at=end)
    total = prometheus.scalar("sum(increase(bf_requests_total[30d]))", at=end)
    assert errors == pytest.approx(expected_errors, rel=1e-9)
    assert total == pytest.approx(expected_total, rel=1e-9)
    # A shorter window answers from the same history, too.
    day = 86400 // STEP
    one_day = prometheus.scalar('sum(increase(bf_requests_total{code="500"}[1d]))', at=end)
    assert one_day == pytest.approx(sum(error_inc[-day:]), rel=1e-9)


def test_counter_reset_is_handled_by_increase(prometheus: PrometheusServer) -> None:
    end = (time.time() // STEP) * STEP - STEP
    start = end - 288 * STEP  # one day: samples at start + i*STEP for i = 0..288
    # Up to i = 144 the counter stands at 1000 + 10i; then the process restarts and the
    # counter begins again from 0, counting 7 per step: 7 at i = 145 ... 1008 at i = 288.
    values = [1000.0 + 10 * i for i in range(145)] + [7.0 * (i - 144) for i in range(145, 289)]
    timestamps = [start + STEP * i for i in range(289)]
    prometheus.backfill([Series("reset_total", {"job": "reset-test"}, timestamps, values)])
    got = prometheus.scalar('increase(reset_total{job="reset-test"}[1d])', at=end)
    assert got == pytest.approx(144 * 10 + 144 * 7, rel=1e-9)
