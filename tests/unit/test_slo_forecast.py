"""Forecast: ageing-out projection, its fallbacks, calendar caps, trend and confidence."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from slogate.core.increments import window_sums
from slogate.core.slo import (
    STANDARD_WINDOWS_S,
    SloInput,
    Thresholds,
    calendar_period,
    default_rules,
    evaluate,
    stack,
)

HOUR = 3600
DAY = 86400
P30 = 30 * DAY
NOW = 1_750_000_000.0
RULES = default_rules(P30)


def from_history(
    hb: Sequence[float],
    ht: Sequence[float],
    *,
    target: float = 99.9,
    window_s: float = P30,
    history: bool = True,
    **extra: object,
) -> SloInput:
    """An SLO whose burn windows and compliance counts are exactly its hourly history."""
    hb_a = np.asarray(hb, dtype=float)
    ht_a = np.asarray(ht, dtype=float)
    windows = np.asarray(STANDARD_WINDOWS_S)
    bad = window_sums(hb_a[None], np.zeros(1), 0.0, HOUR, windows)
    total = window_sums(ht_a[None], np.zeros(1), 0.0, HOUR, windows)
    for j, w in enumerate(STANDARD_WINDOWS_S):
        if w < HOUR:  # sub-hour windows: their share of the last hour
            bad[0, j] = hb_a[-1] * w / HOUR
            total[0, j] = ht_a[-1] * w / HOUR
    n_cols = round(window_s / HOUR)
    return SloInput(
        target=target,
        window_s=window_s,
        bad=dict(zip(STANDARD_WINDOWS_S, bad[0].tolist(), strict=True)),
        total=dict(zip(STANDARD_WINDOWS_S, total[0].tolist(), strict=True)),
        compliance_bad=float(np.nansum(hb_a[-n_cols:])),
        compliance_total=float(np.nansum(ht_a[-n_cols:])),
        hist_bad=hb_a.tolist() if history else [],
        hist_total=ht_a.tolist() if history else [],
        **extra,  # type: ignore[arg-type]
    )


def run(*slos: SloInput, thresholds: Thresholds | None = None, budget_times=()):
    batch = stack(list(slos), STANDARD_WINDOWS_S, NOW, budget_times=budget_times)
    return evaluate(batch, RULES, thresholds)


def burst_history(burn: float, hours: int, *, per_hour: float = 1000.0, b: float = 0.001):
    ht = np.full(720, per_hour)
    hb = np.zeros(720)
    hb[-hours:] = burn * b * per_hour
    return hb, ht


def test_a_full_budget_lasts_fifty_hours_at_14_4x():
    # Burning at 14.4x started an hour ago: 2% is gone, 49 hours remain.
    row = run(from_history(*burst_history(14.4, 1))).row(0)
    assert row.forecast.method == "history"
    assert row.forecast.exhaustion_in_s + HOUR == pytest.approx(50 * HOUR, rel=1e-9)
    assert row.forecast.exhausts_in == "2d 1h"
    assert row.forecast.exhaustion_time == pytest.approx(NOW + 49 * HOUR)
    assert row.risk == "DANGER"  # within 3 days; page-fast needs > 14.4


def test_steady_rate_fallback_gives_fifty_hours_too():
    # No history at all: a full budget and a 14.4x burn, assumed to continue.
    hb, ht = burst_history(14.4, 1)
    slo = from_history(hb, ht, history=False)
    full = SloInput(**{**slo.__dict__, "compliance_bad": 0.0})
    row = run(full).row(0)
    assert row.forecast.method == "steady-rate"
    assert row.forecast.exhaustion_in_s == pytest.approx(50 * HOUR, rel=1e-9)
    # An approximation (medium) on a burn that just started (trend increasing) and on one bad
    # request per hour of allowance (thin): low.
    assert row.forecast.confidence == "low"


@settings(max_examples=200)
@given(
    target=st.sampled_from([99.0, 99.5, 99.9, 99.95, 99.99]),
    burn=st.floats(min_value=1.01, max_value=200.0),
    per_hour=st.floats(min_value=50.0, max_value=1e7),
    hours=st.integers(min_value=1, max_value=700),
)
def test_constant_burn_without_ageing_out_is_remaining_times_window_over_burn(
    target, burn, per_hour, hours
):
    b = (100 - target) / 100
    assume(burn * b <= 1.0)
    assume(burn * hours < 700)  # some budget left
    hb, ht = burst_history(burn, hours, per_hour=per_hour, b=b)
    row = run(from_history(hb, ht, target=target)).row(0)
    # The oldest (720 - hours) hours are clean, and the budget runs out before the first bad
    # hour leaves: nothing that matters ages out, so the textbook formula holds.
    expected = row.remaining * P30 / burn
    assert expected <= (720 - hours) * HOUR
    assert row.forecast.exhaustion_in_s == pytest.approx(expected, rel=1e-6)
    assert row.forecast.exhaustion_in_s == pytest.approx((720 / burn - hours) * HOUR, rel=1e-6)


def recovering_slo(**extra: object) -> tuple[np.ndarray, np.ndarray]:
    # 1000 requests/hour at 99.9%: one bad request per hour is a burn of 1.
    ht = np.full(720, 1000.0)
    hb = np.full(720, 0.5)  # background burn 0.5 (50% of the budget over 30 days)
    hb[5] += 200.0  # an incident 715 hours ago: 27.8% of the budget, leaves in ~5 hours
    hb[672] += 100.0  # one 48 hours ago: 13.9%
    return hb, ht


def test_old_incident_ages_out_and_the_budget_recovers():
    hb, ht = recovering_slo()
    row = run(from_history(hb, ht)).row(0)
    assert row.remaining == pytest.approx(60 / 720)
    burn = row.burn_rates["1h"]
    assert burn == pytest.approx(0.5)
    # The naive projection (nothing ever leaves the window) spends it in 5 days ...
    naive = row.remaining * P30 / burn
    assert naive == pytest.approx(120 * HOUR)
    # ... the projection that knows the 715-hour-old incident leaves first says never.
    assert row.forecast.method == "history"
    assert row.forecast.exhaustion_in_s is None
    assert row.forecast.exhausts_in == "never"
    assert row.risk != "DANGER"


def test_least_squares_fallback_extrapolates_the_recent_slope():
    # Same SLO without an event history: the budget history rose by 13.9% two days ago.
    hb, ht = recovering_slo()
    times = [NOW - HOUR * k for k in range(71, -1, -1)]
    consumed = [(560 if t < NOW - 48 * HOUR else 660) / 720 for t in times]
    slo = from_history(hb, ht, history=False, budget_consumed=consumed)
    row = run(slo, budget_times=times, thresholds=Thresholds(fit_lookback_s=3 * DAY)).row(0)
    assert row.forecast.method == "least-squares"
    assert row.forecast.exhaustion_in_s is not None
    assert row.forecast.exhaustion_in_s < 7 * DAY
    # A flat budget history has nothing to extrapolate.
    flat = from_history(hb, ht, history=False, budget_consumed=[660 / 720] * 72)
    row = run(flat, budget_times=times).row(0)
    assert (row.forecast.method, row.forecast.exhausts_in) == ("least-squares", "never")


def test_least_squares_slope_matches_a_straight_line():
    hb, ht = burst_history(0.5, 720)
    times = [NOW - HOUR * k for k in range(23, -1, -1)]
    rate = 0.01 / HOUR  # 1% of the budget per hour
    consumed = [0.5 - rate * (NOW - t) for t in times]
    row = run(from_history(hb, ht, history=False, budget_consumed=consumed), budget_times=times)
    r = row.row(0)
    assert r.forecast.exhaustion_in_s == pytest.approx(r.remaining / rate, rel=1e-9)


def test_forecast_matches_a_brute_force_simulation_of_the_window():
    rng = np.random.default_rng(3)
    for _ in range(30):
        ht = rng.uniform(100, 5000, 720)
        ratio = rng.uniform(0, 0.002, 720)
        spikes = rng.random(720) < 0.02
        ratio[spikes] = rng.uniform(0.005, 0.05, spikes.sum())
        hb = ht * ratio
        slo = from_history(hb, ht)
        row = run(slo).row(0)
        if row.remaining <= 0:
            continue
        expected = simulate(hb, ht, 0.001, hb[-1], ht[-1])
        if expected is None:
            assert row.forecast.exhaustion_in_s is None
        else:
            assert row.forecast.exhaustion_in_s == pytest.approx(expected, rel=1e-6, abs=1e-3)


@settings(max_examples=60, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.data())
def test_forecast_matches_brute_force_property(data):
    n = data.draw(st.integers(min_value=24, max_value=200))
    ht = np.array(data.draw(st.lists(st.floats(1, 1e4), min_size=n, max_size=n)))
    ratio = np.array(data.draw(st.lists(st.floats(0, 0.012), min_size=n, max_size=n)))
    hb = ht * ratio
    slo = from_history(hb, ht, target=99.0, window_s=n * HOUR)
    row = evaluate(stack([slo], STANDARD_WINDOWS_S, NOW), default_rules(n * HOUR)).row(0)
    assume(row.remaining is not None and row.remaining > 1e-6)
    expected = simulate(hb, ht, 0.01, hb[-1], ht[-1])
    got = row.forecast.exhaustion_in_s
    if expected is None or got is None:
        # Only a grazing touch of zero (within the tolerance) may disagree.
        assert (expected is None and got is None) or _grazes(hb, ht, 0.01)
    else:
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-3)


def simulate(hb, ht, b, new_bad, new_total):
    """Slide the window hour by hour with explicit sums; first time the slack is below zero."""
    n = len(hb)
    slack = []
    for k in range(n + 1):
        bad = hb[k:].sum() + k * new_bad
        total = ht[k:].sum() + k * new_total
        slack.append(b * total - bad)
    tol = 1e-9 * b * ht.sum()
    for k in range(1, n + 1):
        if slack[k] < -tol:
            frac = min(max(slack[k - 1] / (slack[k - 1] - slack[k]), 0.0), 1.0)
            return (k - 1 + frac) * HOUR
    return None


def _grazes(hb, ht, b):
    slack = [b * (ht[k:].sum() + k * ht[-1]) - (hb[k:].sum() + k * hb[-1]) for k in range(len(hb))]
    return min(slack) > -1e-6 * b * ht.sum()


def test_window_longer_than_the_history_fills_the_gap_with_the_mean():
    hb, ht = burst_history(0.4, 720)
    hb[-3:] = 20 * 0.001 * 1000  # a 20x burn for the last three hours
    # Make the part older than the short history look like that history's mean, so that the
    # filled-in window is exactly the real one.
    hb[:480] = hb[480:].mean()
    full = run(from_history(hb, ht)).row(0)
    short = from_history(hb, ht)
    short = SloInput(
        **{**short.__dict__, "hist_bad": hb[-240:].tolist(), "hist_total": ht[-240:].tolist()}
    )
    partial = run(short).row(0)
    assert full.forecast.exhaustion_in_s is not None
    assert partial.forecast.method == "history"
    assert partial.forecast.exhaustion_in_s == pytest.approx(
        full.forecast.exhaustion_in_s, rel=1e-9
    )
    # A third of the window known (two levels down) on a rising burn: low.
    assert partial.forecast.confidence == "low"


def test_gaps_in_the_history_lower_confidence_but_keep_the_forecast():
    hb, ht = burst_history(0.5, 720, per_hour=100_000)
    hb[-2:] = 5 * 0.001 * 100_000  # burning 5x for the last two hours
    clean = run(from_history(hb, ht)).row(0)
    holes = hb.copy()
    holes[100:300] = math.nan  # 72% of the window known
    # The compliance counts come from Prometheus and stay exact; only the history has holes.
    gappy_slo = SloInput(**{**from_history(hb, ht).__dict__, "hist_bad": holes.tolist()})
    gappy = run(gappy_slo).row(0)
    assert clean.forecast.method == gappy.forecast.method == "history"
    assert clean.forecast.trend == "increasing"
    assert (clean.forecast.confidence, gappy.forecast.confidence) == ("medium", "low")
    # The unknown hours take the known hours' mean (a little higher than the truth, because the
    # recent burst is among the known hours): close to the clean answer, and on the safe side.
    assert gappy.remaining == clean.remaining
    clean_s = clean.forecast.exhaustion_in_s
    assert 0.95 * clean_s < gappy.forecast.exhaustion_in_s <= clean_s


def test_calendar_forecast_stops_at_the_period_end():
    start, end = calendar_period(NOW, "month", "Europe/Berlin")
    elapsed = NOW - start
    per_s = 1000 / HOUR
    total = per_s * elapsed
    b = 0.001

    def month(burn_now: float) -> SloInput:
        return SloInput(
            target=99.9,
            window_s=30 * DAY,
            bad={HOUR: burn_now * b * 1000, DAY: burn_now * b * 24000},
            total={HOUR: 1000.0, DAY: 24000.0},
            compliance_bad=0.5 * b * total,  # half the budget spent so far
            compliance_total=total,
            period_start=start,
            period_end=end,
        )

    # Slack 0.5 * b * total shrinks by (e - b) * rate per second: at burn r it is gone after
    # 0.5 * elapsed / (r - 1). Pick one burn that gets there before the period ends and one
    # that would only get there after it.
    left = end - NOW
    fast_burn = 1 + 0.5 * elapsed / (0.5 * left)
    slow_burn = 1 + 0.5 * elapsed / (2 * left)
    months = [month(fast_burn), month(slow_burn), month(0.5)]
    result = evaluate(stack(months, [HOUR, DAY], NOW), [])
    fast, slow, calm = result.row(0), result.row(1), result.row(2)
    assert fast.forecast.method == "calendar"
    assert fast.forecast.exhaustion_in_s == pytest.approx(0.5 * left, rel=1e-9)
    assert slow.forecast.exhaustion_in_s is None
    assert slow.forecast.exhausts_in == "after period end"
    assert calm.forecast.exhausts_in == "never"


def test_calendar_budget_starts_fresh_at_the_period_start():
    start, end = calendar_period(NOW, "week", "UTC")
    fresh = SloInput(
        target=99.9,
        window_s=7 * DAY,
        bad={HOUR: 0.0},
        total={HOUR: 0.0},
        compliance_bad=0.0,
        compliance_total=0.0,
        period_start=NOW,
        period_end=NOW + 7 * DAY,
    )
    row = evaluate(stack([fresh], [HOUR], NOW), []).row(0)
    assert row.risk == "UNKNOWN"
    assert row.message == "No data since the period start: the error budget is unknown."
    assert start <= NOW < end


@pytest.mark.parametrize(
    ("recent", "before", "trend"),
    [
        (3.0, 1.0, "increasing"),
        (0.2, 1.0, "decreasing"),
        (1.05, 1.0, "stable"),
        (0.0, 0.05, "stable"),
    ],
)
def test_trend_compares_the_last_six_hours_with_the_day_before(recent, before, trend):
    ht = np.full(720, 1000.0)
    hb = np.full(720, before)
    hb[-6:] = recent
    assert run(from_history(hb, ht)).row(0).forecast.trend == trend


def test_trend_falls_back_to_the_history_without_trend_windows():
    ht = np.full(720, 1000.0)
    hb = np.full(720, 1.0)
    hb[-6:] = 3.0
    slo = from_history(hb, ht)
    only_fast = {w: v for w, v in slo.bad.items() if w <= HOUR}
    slo = SloInput(
        **{**slo.__dict__, "bad": only_fast, "total": {w: slo.total[w] for w in only_fast}}
    )
    rules = [default_rules(P30)[0]]
    row = evaluate(stack([slo], [300, HOUR], NOW), rules).row(0)
    assert row.forecast.trend == "increasing"


def test_thin_traffic_lowers_confidence():
    # 10 requests/hour at 99.9%: the current hour allows 0.01 bad requests.
    ht = np.full(720, 10.0)
    hb = np.zeros(720)
    row = run(from_history(hb, ht)).row(0)
    assert row.forecast.exhausts_in == "never"
    assert row.forecast.confidence == "medium"
    busy = run(from_history(hb, ht * 10_000)).row(0)
    assert busy.forecast.confidence == "high"


def test_rows_are_independent_of_the_batch_they_are_in():
    # More rows than one scan block, mixing every kind of row: each row's result must not
    # depend on its neighbours, its block, or the other window lengths in the batch.
    rng = np.random.default_rng(11)
    start, end = calendar_period(NOW, "month", "UTC")
    slos = []
    for k in range(600):
        ht = rng.uniform(10, 1e4, 720)
        hb = ht * rng.uniform(0, 0.003, 720)
        if k % 3 == 0:
            hb[rng.integers(0, 720, 20)] = math.nan
        window = [P30, 28 * DAY, 7 * DAY, 45 * DAY][k % 4]
        extra: dict[str, object] = {}
        if k % 5 == 0:
            extra = {"period_start": start, "period_end": end}
        slo = from_history(hb, ht, window_s=window, **extra)
        if k % 7 == 0:
            slo = SloInput(**{**slo.__dict__, "hist_bad": [], "hist_total": []})
        slos.append(slo)
    together = list(run(*slos).results())
    for i in [*range(0, 600, 7), 255, 256, 257, 511, 512, 599]:
        assert together[i] == run(slos[i]).row(0), i


def test_spent_while_the_part_older_than_the_history_ages_out():
    # Only 48 hours of history, all burning 5x; 1% of the budget left. The 672 older hours
    # are unknown, so they take the mean, and the window runs dry while they age out: the same
    # straight line as the steady-rate model, S(t) = S0 * (1 - t / P) + g * t.
    hb, ht = burst_history(5.0, 48)
    slo = from_history(hb, ht)
    left = 0.01 * 0.001 * slo.compliance_total
    slo = SloInput(
        **{
            **slo.__dict__,
            "compliance_bad": 0.001 * slo.compliance_total - left,
            "hist_bad": hb[-48:].tolist(),
            "hist_total": ht[-48:].tolist(),
        }
    )
    row = run(slo).row(0)
    assert row.remaining == pytest.approx(0.01)
    g = (0.001 - 0.005) * 1000 / HOUR  # slack per second from a 5x burn at 1000/h
    expected = left / (left / P30 - g)
    assert row.forecast.method == "history"
    assert row.forecast.exhaustion_in_s == pytest.approx(expected, rel=1e-9)


def test_ratio_only_rows():
    ratios = SloInput(
        target=99.0,
        window_s=P30,
        bad={HOUR: 0.02, 6 * HOUR: 0.02, DAY: 0.02},
        total={HOUR: 1.0, 6 * HOUR: 1.0, DAY: 1.0},
        compliance_bad=0.005,
        compliance_total=1.0,
        ratio_only=True,
    )
    result = evaluate(stack([ratios], [HOUR, 6 * HOUR, DAY], NOW), [])
    row = result.row(0)
    assert row.consumed == pytest.approx(0.5)
    assert row.burn_rates["1h"] == pytest.approx(2.0)
    # Uniform traffic, the leaving part at the window's average: remaining * P / (r - consumed).
    assert row.forecast.method == "steady-rate"
    assert row.forecast.exhaustion_in_s == pytest.approx(0.5 * P30 / (2.0 - 0.5), rel=1e-9)
    assert row.forecast.trend == "stable"


def test_ratio_history_behaves_like_uniform_traffic():
    rng = np.random.default_rng(5)
    ratio = rng.uniform(0, 0.012, 720)
    ratio[-24:] = 0.03  # a 3x burn for the last day
    counts = from_history(ratio * 500.0, np.full(720, 500.0), target=99.0)
    as_ratio = SloInput(
        target=99.0,
        window_s=P30,
        bad={w: v / counts.total[w] for w, v in counts.bad.items()},
        total=dict.fromkeys(counts.bad, 1.0),
        compliance_bad=counts.compliance_bad / counts.compliance_total,
        compliance_total=1.0,
        ratio_only=True,
        hist_bad=ratio.tolist(),
        hist_total=[1.0] * 720,
    )
    a, b = run(counts, as_ratio).results()
    assert b.forecast.method == "history"
    assert b.consumed == pytest.approx(a.consumed)
    assert a.forecast.exhaustion_in_s is not None
    assert b.forecast.exhaustion_in_s == pytest.approx(a.forecast.exhaustion_in_s, rel=1e-6)
    assert b.recommendation.target == a.recommendation.target
