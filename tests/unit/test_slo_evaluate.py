"""Risk levels, the message, the recommendation and the status document."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slogate.core.increments import window_sums
from slogate.core.slo import (
    LADDER,
    STANDARD_WINDOWS_S,
    SloInput,
    Thresholds,
    default_rules,
    dependency_bound,
    evaluate,
    round_down_to_ladder,
    stack,
)
from slogate.core.slo.forecast import Outlook
from slogate.core.slo.message import compose, format_burn, format_percent

HOUR = 3600
DAY = 86400
P30 = 30 * DAY
NOW = 1_750_000_000.0
RULES = default_rules(P30)
Q = 100_000.0  # requests per hour: plenty, so confidence is not about thin traffic
B = 0.001


def slo(
    burns: np.ndarray, *, target: float = 99.9, per_hour: float = Q, **extra: object
) -> SloInput:
    """An SLO with constant traffic whose hour ``i`` burns at ``burns[i]`` (oldest first)."""
    b = (100 - target) / 100
    ht = np.full(burns.size, per_hour)
    hb = burns * b * per_hour
    bad = window_sums(hb[None], np.zeros(1), 0.0, HOUR, np.asarray(STANDARD_WINDOWS_S))
    total = window_sums(ht[None], np.zeros(1), 0.0, HOUR, np.asarray(STANDARD_WINDOWS_S))
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
        **extra,  # type: ignore[arg-type]
    )


def burns(background: float, *recent: tuple[int, float]) -> np.ndarray:
    """720 hourly burn rates: ``background``, then (hours, burn) pieces ending now."""
    out = np.full(720, background)
    end = 720
    for hours, burn in reversed(recent):
        out[end - hours : end] = burn
        end -= hours
    return out


def evaluate_one(s: SloInput, thresholds: Thresholds | None = None):
    return evaluate(stack([s], STANDARD_WINDOWS_S, NOW), RULES, thresholds).row(0)


def test_safe():
    row = evaluate_one(slo(burns(0.5)))
    assert row.risk == "SAFE"
    assert row.remaining == pytest.approx(0.5)
    assert row.forecast.exhausts_in == "never"
    assert row.forecast.confidence == "high"
    assert row.forecast.trend == "stable"
    assert row.message == "Budget 50% left; burning 0.5x over 1h."


def test_observe_when_a_long_window_burns_above_one():
    row = evaluate_one(slo(burns(0.5, (24, 1.5))))
    assert row.firing == ()
    assert row.burn_rates["1d"] == pytest.approx(1.5)
    # Steady 1.5x while 0.5x hours age out: 336 hours until the slack is gone.
    assert row.forecast.exhaustion_in_s == pytest.approx(336 * HOUR, rel=1e-9)
    assert row.risk == "OBSERVE"


def test_danger_when_a_ticket_rule_fires():
    row = evaluate_one(slo(burns(0.2, (24, 3.5))))
    assert row.firing == ("ticket-fast", "ticket-slow")  # 3d burns 1.3x too
    assert row.forecast.exhaustion_in_s > 3 * DAY
    assert row.risk == "DANGER"


def test_danger_when_the_forecast_is_within_three_days():
    b = burns(0.6, (12, 2.5))
    b[360] += 0.95 * 720 - b.sum()  # an incident 15 days ago left 5% of the budget
    row = evaluate_one(slo(b))
    assert row.remaining == pytest.approx(0.05)
    assert row.firing == ()
    assert row.forecast.exhaustion_in_s < 3 * DAY
    assert row.risk == "DANGER"
    relaxed = evaluate_one(slo(b), Thresholds(danger_within_s=3600))
    assert relaxed.risk == "OBSERVE"


def test_freeze_when_a_page_rule_fires():
    row = evaluate_one(slo(burns(0.1, (1, 20.0))))
    assert row.firing == ("page-fast",)
    assert row.risk == "FREEZE"
    assert row.remaining == pytest.approx(1 - (719 * 0.1 + 20) / 720)


def test_freeze_when_the_budget_is_spent():
    row = evaluate_one(slo(burns(1.2)))
    assert row.remaining == pytest.approx(-0.2)
    assert row.firing == ("ticket-slow",)
    assert row.risk == "FREEZE"
    assert row.forecast.exhausts_in == "exhausted"
    assert row.forecast.exhaustion_in_s == 0.0
    assert row.forecast.exhaustion_time is None
    assert row.forecast.confidence == "high"
    assert row.message == "Budget overspent (-20%); burning 1.2x over 1h; ticket-slow firing."


def test_the_design_example_message():
    text = compose(
        remaining=-0.29,
        window_label="30d",
        calendar=False,
        current_burn=3.2,
        current_label="1h",
        firing=["page-fast"],
        outlook=Outlook.EXHAUSTED,
        exhaustion_in_s=0.0,
    )
    assert text == "Budget overspent (-29%); burning 3.2x over 1h; page-fast firing."


def test_message_with_a_forecast():
    row = evaluate_one(slo(burns(0.0, (1, 14.4))))
    assert row.message == "Budget 98% left; burning 14.4x over 1h; exhausts in 2d 1h."


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (-0.29, "-29%"),
        (0.714, "71%"),
        (1.0, "100%"),
        (0.05, "5%"),
        (0.053, "5.3%"),
        (0.0004, "<0.1%"),
        (0.0, "0%"),
        (-0.0004, ">-0.1%"),
    ],
)
def test_format_percent(fraction, text):
    assert format_percent(fraction) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [(14.4, "14.4x"), (3.2, "3.2x"), (1.0, "1x"), (0.25, "0.25x"), (0.0, "0x"), (120.3, "120x")],
)
def test_format_burn(rate, text):
    assert format_burn(rate) == text


def test_ladder_rounding_is_down_and_float_safe():
    values = np.array([99.9, 99.89999999999, 99.8999, 99.95, 100.0, 85.3, 0.5, math.nan])
    got = round_down_to_ladder(values)
    assert got[:6].tolist() == [99.9, 99.9, 99.5, 99.95, 99.999, 85.0]
    assert math.isnan(got[6]) and math.isnan(got[7])
    assert list(LADDER) == sorted(LADDER)


def test_dependency_bound_multiplies_availabilities():
    assert dependency_bound([99.9, 99.95]) == pytest.approx(99.85005)
    assert dependency_bound([99.9]) == pytest.approx(99.9)
    assert math.isnan(dependency_bound([]))
    with pytest.raises(ValueError, match="dependency target"):
        dependency_bound([0.0])


def daily_burns(bad_days: int, day_burn: float, background: float = 0.1) -> np.ndarray:
    b = np.full(720, background)
    for d in range(bad_days):
        b[24 * (3 + 7 * d) : 24 * (4 + 7 * d)] = day_burn
    return b


def test_recommendation_uses_a_low_percentile_of_daily_slis():
    # 99.9% target; 3 of 30 days at a 3x burn (99.7% that day), the rest at 99.99%.
    three = evaluate_one(slo(daily_burns(3, 3.0))).recommendation
    assert three.achieved == pytest.approx(100 * (1 - 0.001 * (27 * 0.1 + 3 * 3.0) / 30))
    assert three.target == 99.5  # the 10th percentile day is one of the 99.7% days
    two = evaluate_one(slo(daily_burns(2, 3.0))).recommendation
    assert two.target == 99.95  # the window achieved 99.97%, the 10th percentile day 99.99%
    assert (two.dependency_bound, two.achievable) == (None, None)


def test_recommendation_is_capped_by_dependencies():
    s = slo(burns(0.0), dependency_bound=dependency_bound([99.9, 99.95]))
    rec = evaluate_one(s).recommendation
    assert rec.achieved == 100.0
    assert rec.dependency_bound == pytest.approx(99.85005)
    assert rec.target == 99.5
    assert rec.achievable is False
    ok = evaluate_one(slo(burns(0.0), target=99.5, dependency_bound=99.85)).recommendation
    assert ok.achievable is True


def test_status_document_uses_the_design_names():
    row = evaluate_one(slo(burns(0.0, (1, 14.4))))
    status = row.to_status()
    assert set(status) == {
        "sli",
        "errorBudget",
        "burnRates",
        "firing",
        "risk",
        "forecast",
        "recommendation",
        "message",
    }
    assert status["errorBudget"] == {"remaining": 0.98, "consumed": 0.02}
    assert list(status["burnRates"]) == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    assert status["burnRates"]["1h"] == 14.4
    assert status["forecast"]["exhaustionTime"] == "2025-06-17T16:06:40Z"
    assert status["forecast"]["exhaustsIn"] == "2d 1h"
    assert set(status["recommendation"]) == {"target", "achieved", "dependencyBound", "achievable"}


def test_rules_with_other_windows_and_custom_thresholds():
    custom = [
        default_rules(P30)[0],
        type(default_rules(P30)[0])("slow-burn", 3 * DAY, 6 * HOUR, 0.5, "ticket"),
    ]
    row = evaluate(stack([slo(burns(0.6))], STANDARD_WINDOWS_S, NOW), custom).row(0)
    assert row.firing == ("slow-burn",)
    assert row.risk == "DANGER"
    calm = Thresholds(observe_burn_rate=0.7)
    row = evaluate(stack([slo(burns(0.6))], STANDARD_WINDOWS_S, NOW), [], calm).row(0)
    assert row.risk == "SAFE"


def test_results_iterates_every_row_in_order():
    slos = [slo(burns(x)) for x in (0.1, 0.5, 1.2)]
    result = evaluate(stack(slos, STANDARD_WINDOWS_S, NOW), RULES)
    assert len(result) == 3
    assert [r.risk for r in result.results()] == ["SAFE", "SAFE", "FREEZE"]
    assert [r.remaining for r in result.results()] == pytest.approx([0.9, 0.5, -0.2])


def test_empty_batch_and_no_windows():
    empty = stack([], STANDARD_WINDOWS_S, NOW)
    assert list(evaluate(empty, RULES).results()) == []
    bare = SloInput(
        target=99.9,
        window_s=DAY,
        bad={},
        total={},
        compliance_bad=1.0,
        compliance_total=10_000.0,
    )
    row = evaluate(stack([bare], [], NOW), []).row(0)
    assert row.burn_rates == {}
    assert row.consumed == pytest.approx(0.1)
    # Nothing is known about current traffic: old events age out, nothing new arrives; the
    # window empties without ever being overspent.
    assert row.forecast.method == "steady-rate"
    assert row.forecast.exhausts_in == "never"
    assert row.forecast.confidence == "low"
    assert row.message == "Budget 90% left."
