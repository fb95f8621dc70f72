"""Burn-rate rules: the SRE Workbook table, scaled like Sloth, and the windows it reads."""

from __future__ import annotations

import pytest

from slogate.core.slo import (
    STANDARD_WINDOWS_S,
    BurnRule,
    Thresholds,
    default_rules,
    query_windows,
    rule_windows,
)
from slogate.core.slo.rules import check_rules, long_windows

MIN = 60
HOUR = 3600
DAY = 86400


def test_thirty_day_table_is_the_workbooks():
    rules = default_rules(30 * DAY)
    assert [(r.name, r.long_s, r.short_s, r.burn_rate, r.severity) for r in rules] == [
        ("page-fast", HOUR, 5 * MIN, 14.4, "page"),
        ("page-slow", 6 * HOUR, 30 * MIN, 6.0, "page"),
        ("ticket-fast", DAY, 2 * HOUR, 3.0, "ticket"),
        ("ticket-slow", 3 * DAY, 6 * HOUR, 1.0, "ticket"),
    ]


def test_budget_shares_of_the_thirty_day_table():
    # 14.4x for 1h spends 2%, 6x for 6h 5%, 3x for 1d and 1x for 3d 10% each.
    shares = [r.budget_share(30 * DAY) for r in default_rules(30 * DAY)]
    assert shares == pytest.approx([0.02, 0.05, 0.10, 0.10])


def test_twenty_eight_day_factors_are_sloths():
    factors = [r.burn_rate for r in default_rules(28 * DAY)]
    assert factors == pytest.approx([13.44, 5.6, 2.8, 0.9333333333333333])


@pytest.mark.parametrize("days", [7, 14, 28, 30, 90])
def test_scaled_rules_keep_their_budget_share(days):
    for rule in default_rules(days * DAY):
        expected = {"page-fast": 0.02, "page-slow": 0.05}.get(rule.name, 0.10)
        assert rule.budget_share(days * DAY) == pytest.approx(expected)


def test_rules_longer_than_the_window_are_left_out():
    assert [r.name for r in default_rules(2 * DAY)] == ["page-fast", "page-slow", "ticket-fast"]
    assert [r.name for r in default_rules(3 * DAY)][-1] == "ticket-slow"


def test_standard_windows_are_what_the_default_rules_read():
    assert rule_windows(default_rules(30 * DAY)) == STANDARD_WINDOWS_S
    assert STANDARD_WINDOWS_S == (300, 1800, 3600, 7200, 21600, 86400, 259200)
    assert long_windows(default_rules(30 * DAY)) == (HOUR, 6 * HOUR, DAY, 3 * DAY)


def test_query_windows_add_what_forecast_and_trend_read():
    assert query_windows(default_rules(30 * DAY)) == STANDARD_WINDOWS_S
    custom = [BurnRule("fast", 2 * HOUR, 10 * MIN, 10.0, "page")]
    assert query_windows(custom) == (10 * MIN, HOUR, 2 * HOUR, 6 * HOUR, DAY)
    assert query_windows(custom, Thresholds(current_window_s=2 * HOUR)) == (
        10 * MIN,
        2 * HOUR,
        6 * HOUR,
        DAY,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"long_s": 300, "short_s": 3600}, "shorter than the long window"),
        ({"long_s": 3600, "short_s": 0}, "positive"),
        ({"burn_rate": 0.0}, "burnRate"),
        ({"severity": "email"}, "severity"),
        ({"name": ""}, "name"),
    ],
)
def test_invalid_rules_are_refused(kwargs, message):
    fields = {"name": "r", "long_s": 3600, "short_s": 300, "burn_rate": 14.4, "severity": "page"}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        BurnRule(**fields)  # type: ignore[arg-type]


def test_duplicate_rule_names_are_refused():
    rule = default_rules(30 * DAY)[0]
    with pytest.raises(ValueError, match="page-fast"):
        check_rules([rule, rule])


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        default_rules(0)
