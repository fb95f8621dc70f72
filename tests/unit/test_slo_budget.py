"""Budget, burn rates and "no data": the published numbers and their invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from slogate.core.increments import window_sums
from slogate.core.slo import (
    STANDARD_WINDOWS_S,
    SloBatch,
    SloInput,
    budget_fraction,
    default_rules,
    evaluate,
    stack,
)

HOUR = 3600
DAY = 86400
P30 = 30 * DAY
NOW = 1_750_000_000.0
RULES = default_rules(P30)
TARGETS = [90.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999]


def constant_slo(
    *, target: float = 99.9, per_hour: float = 1000.0, burn: float = 0.0, hours: int = 0
) -> SloInput:
    """Constant traffic over 30 days; the last ``hours`` hours burn at ``burn``, the rest clean."""
    b = (100 - target) / 100
    ht = np.full(720, per_hour)
    hb = np.zeros(720)
    if hours:
        hb[-hours:] = burn * b * per_hour
    windows = np.asarray(STANDARD_WINDOWS_S)
    bad = window_sums(hb[None], np.zeros(1), 0.0, HOUR, windows)
    total = window_sums(ht[None], np.zeros(1), 0.0, HOUR, windows)
    for j, w in enumerate(STANDARD_WINDOWS_S):
        if w < HOUR:
            bad[0, j] = hb[-1] * w / HOUR
            total[0, j] = ht[-1] * w / HOUR
    return SloInput(
        target=target,
        window_s=P30,
        bad=dict(zip(STANDARD_WINDOWS_S, bad[0].tolist(), strict=True)),
        total=dict(zip(STANDARD_WINDOWS_S, total[0].tolist(), strict=True)),
        compliance_bad=float(hb.sum()),
        compliance_total=float(ht.sum()),
        hist_bad=hb.tolist(),
        hist_total=ht.tolist(),
    )


def one(slo: SloInput):
    return evaluate(stack([slo], STANDARD_WINDOWS_S, NOW), RULES).row(0)


@pytest.mark.parametrize(
    ("burn", "hours", "window", "share"),
    [
        (14.4, 1, "1h", 0.02),  # SRE Workbook table 5-8: page, 2% of the budget
        (6.0, 6, "6h", 0.05),  # page, 5%
        (3.0, 24, "1d", 0.10),  # ticket, 10%
        (1.0, 72, "3d", 0.10),  # ticket, 10%
    ],
)
def test_published_budget_consumption(burn, hours, window, share):
    row = one(constant_slo(burn=burn, hours=hours))
    assert row.burn_rates[window] == pytest.approx(burn)
    assert row.consumed == pytest.approx(share)
    assert row.remaining == pytest.approx(1 - share)
    assert row.sli == pytest.approx(1 - share * 0.001)


def test_exactly_at_a_rules_factor_does_not_fire_just_above_does():
    assert one(constant_slo(burn=14.4, hours=1)).firing == ()
    assert one(constant_slo(burn=14.5, hours=1)).firing == ("page-fast",)
    assert one(constant_slo(burn=6.1, hours=6)).firing == ("page-slow",)


def test_burn_one_over_the_whole_window_spends_exactly_the_budget():
    row = one(constant_slo(burn=1.0, hours=720))
    assert row.consumed == pytest.approx(1.0)
    assert row.risk == "FREEZE"
    assert row.forecast.exhausts_in == "exhausted"
    assert row.forecast.exhaustion_time is None


def test_budget_fraction():
    assert budget_fraction(np.array([99.9, 99.0, 95.0])) == pytest.approx([0.001, 0.01, 0.05])


def test_consumed_comes_from_counts_not_from_averaged_ratios():
    # A busy clean day and a quiet bad day: averaging the daily ratios would say 50% errors.
    slo = SloInput(
        target=99.0,
        window_s=2 * DAY,
        bad={DAY: 10.0},
        total={DAY: 10.0},
        compliance_bad=10.0,
        compliance_total=10_010.0,
    )
    batch = stack([slo], [DAY], NOW)
    row = evaluate(batch, []).row(0)
    assert row.sli == pytest.approx(1 - 10 / 10_010)
    assert row.consumed == pytest.approx((10 / 10_010) / 0.01)


def test_no_traffic_is_unknown_and_null_everywhere():
    slo = SloInput(
        target=99.9,
        window_s=P30,
        bad=dict.fromkeys(STANDARD_WINDOWS_S, 0.0),
        total=dict.fromkeys(STANDARD_WINDOWS_S, 0.0),
        compliance_bad=0.0,
        compliance_total=0.0,
    )
    row = one(slo)
    assert row.risk == "UNKNOWN"
    assert (row.sli, row.consumed, row.remaining) == (None, None, None)
    assert set(row.burn_rates.values()) == {None}
    assert row.firing == ()
    assert row.forecast.exhaustion_in_s is None
    assert row.forecast.exhausts_in is None
    assert row.forecast.trend is None
    assert row.forecast.confidence is None
    assert row.recommendation.target is None
    assert row.message == "No data over the 30d window: the error budget is unknown."


def test_below_min_events_is_no_data_but_ratio_only_rows_ignore_min_events():
    counts = SloInput(
        target=99.9,
        window_s=P30,
        bad={HOUR: 1.0, DAY: 2.0},
        total={HOUR: 5.0, DAY: 500.0},
        compliance_bad=3.0,
        compliance_total=9000.0,
        min_events=10.0,
    )
    ratio = SloInput(
        target=99.9,
        window_s=P30,
        bad={HOUR: 0.002, DAY: 0.0005},
        total={HOUR: 1.0, DAY: 1.0},
        compliance_bad=0.0004,
        compliance_total=1.0,
        min_events=10.0,
        ratio_only=True,
    )
    result = evaluate(stack([counts, ratio], [HOUR, DAY], NOW), [])
    c, r = result.row(0), result.row(1)
    assert c.burn_rates == {"1h": None, "1d": pytest.approx(4.0)}
    assert c.consumed == pytest.approx(3 / 9000 / 0.001)
    assert r.burn_rates == {"1h": pytest.approx(2.0), "1d": pytest.approx(0.5)}
    assert r.consumed == pytest.approx(0.4)


def test_a_missing_short_window_does_not_poison_the_others():
    slo = constant_slo(burn=20.0, hours=2)
    bad = dict(slo.bad)
    bad[300] = math.nan
    total = dict(slo.total)
    total[1800] = math.nan
    row = one(
        SloInput(
            target=slo.target,
            window_s=slo.window_s,
            bad=bad,
            total=total,
            compliance_bad=slo.compliance_bad,
            compliance_total=slo.compliance_total,
            hist_bad=[*slo.hist_bad[:-5], math.nan, *slo.hist_bad[-4:]],
            hist_total=slo.hist_total,
        )
    )
    assert row.burn_rates["5m"] is None
    assert row.burn_rates["30m"] is None
    assert row.burn_rates["1h"] == pytest.approx(20.0)
    assert row.burn_rates["2h"] == pytest.approx(20.0)
    assert row.consumed == pytest.approx(20 * 2 / 720)
    # page-fast needs its 5m window: without it, no page (but the budget math is untouched).
    assert "page-fast" not in row.firing
    assert "page-slow" not in row.firing
    assert row.risk != "UNKNOWN"


def test_jitter_beyond_total_is_clipped():
    slo = SloInput(
        target=99.0,
        window_s=DAY,
        bad={HOUR: 105.0},
        total={HOUR: 100.0},
        compliance_bad=-3.0,
        compliance_total=2400.0,
    )
    row = evaluate(stack([slo], [HOUR], NOW), []).row(0)
    assert row.burn_rates["1h"] == pytest.approx(100.0)  # ratio 1.0 / budget 0.01
    assert row.consumed == 0.0
    assert row.sli == 1.0


def test_invalid_batches_are_refused():
    good = {
        "target": np.array([99.9]),
        "windows_s": np.array([HOUR]),
        "bad": np.zeros((1, 1)),
        "total": np.ones((1, 1)),
        "compliance_bad": np.zeros(1),
        "compliance_total": np.ones(1),
        "window_s": np.array([P30]),
        "now": NOW,
    }
    SloBatch(**good)
    for change, message in [
        ({"target": np.array([100.0])}, "targets"),
        ({"bad": np.zeros((2, 1))}, "bad has shape"),
        ({"windows_s": np.array([0])}, "windows_s"),
        ({"now": math.nan}, "now"),
        ({"period_start": np.array([NOW])}, "period_start and period_end"),
        ({"hist_bad": np.zeros((1, 3))}, "hist_total"),
    ]:
        with pytest.raises(ValueError, match=message):
            SloBatch(**{**good, **change})
    with pytest.raises(ValueError, match="not among"):
        evaluate(SloBatch(**good), RULES)


counts = st.floats(min_value=0, max_value=1e9, allow_nan=False)


@given(
    target=st.sampled_from(TARGETS),
    total=st.floats(min_value=1, max_value=1e12),
    a=st.floats(min_value=0, max_value=1),
    c=st.floats(min_value=0, max_value=1),
)
def test_consumed_is_monotone_in_errors(target, total, a, c):
    low, high = sorted([a * total, c * total])
    batch = SloBatch(
        target=np.full(2, target),
        windows_s=np.array([HOUR]),
        bad=np.array([[low], [high]]),
        total=np.full((2, 1), total),
        compliance_bad=np.array([low, high]),
        compliance_total=np.full(2, total),
        window_s=np.full(2, P30),
        now=NOW,
    )
    result = evaluate(batch, [])
    assert result.consumed[0] <= result.consumed[1]
    assert result.burn[0, 0] <= result.burn[1, 0]
    assert result.remaining[0] >= result.remaining[1]


@given(target=st.sampled_from(TARGETS), per_hour=st.floats(min_value=1, max_value=1e7))
def test_burn_one_for_the_whole_window_consumes_exactly_one(target, per_hour):
    b = (100 - target) / 100
    total = per_hour * 720
    batch = SloBatch(
        target=np.array([target]),
        windows_s=np.array([P30]),
        bad=np.array([[b * total]]),
        total=np.array([[total]]),
        compliance_bad=np.array([b * total]),
        compliance_total=np.array([total]),
        window_s=np.array([P30]),
        now=NOW,
    )
    result = evaluate(batch, [])
    assert result.burn[0, 0] == pytest.approx(1.0, rel=1e-9)
    assert result.consumed[0] == pytest.approx(1.0, rel=1e-9)
    assert result.row(0).risk == "FREEZE"


@given(
    target=st.sampled_from(TARGETS),
    bad=counts,
    total=st.floats(min_value=1, max_value=1e12),
)
def test_remaining_is_one_minus_consumed(target, bad, total):
    assume(bad <= total)
    batch = SloBatch(
        target=np.array([target]),
        windows_s=np.array([HOUR]),
        bad=np.array([[bad]]),
        total=np.array([[total]]),
        compliance_bad=np.array([bad]),
        compliance_total=np.array([total]),
        window_s=np.array([P30]),
        now=NOW,
    )
    row = evaluate(batch, []).row(0)
    assert row.remaining == 1 - row.consumed
    assert row.sli == pytest.approx(1 - bad / total)


weird = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e308, 1e-308, math.nan, math.inf]),
    st.floats(min_value=0, max_value=1e6),
)


@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=4),
    t=st.integers(min_value=0, max_value=50),
    h=st.integers(min_value=0, max_value=6),
)
def test_outputs_are_finite_or_null(data, n, t, h):
    draw = data.draw
    windows = STANDARD_WINDOWS_S
    w = len(windows)

    def arr(*shape: int) -> np.ndarray:
        return np.array(
            draw(st.lists(weird, min_size=math.prod(shape), max_size=math.prod(shape)))
        ).reshape(shape)

    calendar = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    start = np.where(calendar, NOW - draw(st.floats(0, 40 * DAY)), math.nan)
    end = np.where(calendar, NOW + draw(st.floats(0, 40 * DAY)), math.nan)
    batch = SloBatch(
        target=np.array(draw(st.lists(st.sampled_from(TARGETS), min_size=n, max_size=n))),
        windows_s=np.asarray(windows),
        bad=arr(n, w),
        total=arr(n, w),
        compliance_bad=arr(n),
        compliance_total=arr(n),
        window_s=np.array(
            draw(st.lists(st.sampled_from([DAY, 7 * DAY, P30, 45 * DAY]), min_size=n, max_size=n)),
            dtype=float,
        ),
        now=NOW,
        min_events=np.array(draw(st.lists(st.floats(0, 100), min_size=n, max_size=n))),
        ratio_only=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        period_start=start,
        period_end=end,
        hist_bad=arr(n, t) if t else np.empty(0),
        hist_total=arr(n, t) if t else np.empty(0),
        budget_times=NOW - HOUR * np.arange(h, dtype=float) if h else np.empty(0),
        budget_consumed=arr(n, h) if h else np.empty(0),
        dependency_bound=np.array(
            draw(st.lists(st.sampled_from([math.nan, 99.0, 99.85]), min_size=n, max_size=n))
        ),
    )
    for row in evaluate(batch, RULES).results():
        status = row.to_status()
        json.dumps(status, allow_nan=False)  # raises on NaN or Inf anywhere
        for value in _floats(status):
            assert math.isfinite(value)
        assert row.risk in {"SAFE", "OBSERVE", "DANGER", "FREEZE", "UNKNOWN"}
        assert row.message and "nan" not in row.message.lower() and "inf" not in row.message


def _floats(value: object):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _floats(item)
