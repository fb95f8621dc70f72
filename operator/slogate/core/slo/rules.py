"""Multiwindow, multi-burn-rate alerting rules (Google SRE Workbook, ch. 5, "Alerting on SLOs").

A rule fires when the burn rate over both its long and its short window exceeds its factor. The
long window makes the alert significant (enough budget has gone), the short window makes it
reset quickly once the problem is fixed.

The Workbook's table 5-8 is written for a 30-day window as *shares of the budget* spent within
the long window: 2% in 1h (page), 5% in 6h (page), 10% in 3d (ticket). Sloth adds a fourth row,
10% in 1d (ticket), which slogate's default keeps. A burn rate ``r`` sustained over a window
``w`` consumes ``r * w / P`` of a budget defined over ``P``, so the factor that spends ``share``
in ``w`` is ``share * P / w``. That is 14.4, 6, 3 and 1 for 30 days and 13.44, 5.6, 2.8 and
0.933... for 28 days, the factors Sloth uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from slogate.core.durations import format_duration
from slogate.core.slo.inputs import Thresholds

Severity = Literal["page", "ticket"]

MINUTE = 60
HOUR = 3600
DAY = 86400

#: Windows the default rules read, shortest first: 5m, 30m, 1h, 2h, 6h, 1d, 3d.
STANDARD_WINDOWS_S: tuple[int, ...] = (
    5 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    6 * HOUR,
    DAY,
    3 * DAY,
)


@dataclass(frozen=True)
class BurnRule:
    """Fires when the burn rate over ``long_s`` and over ``short_s`` both exceed ``burn_rate``."""

    name: str
    long_s: int
    short_s: int
    burn_rate: float
    severity: Severity

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a burn-rate rule needs a name")
        if self.short_s <= 0 or self.long_s <= 0:
            raise ValueError(f"rule {self.name}: windows must be positive")
        if self.short_s >= self.long_s:
            raise ValueError(
                f"rule {self.name}: the short window ({format_duration(self.short_s)}) must be "
                f"shorter than the long window ({format_duration(self.long_s)})"
            )
        if not self.burn_rate > 0:
            raise ValueError(f"rule {self.name}: burnRate must be positive")
        if self.severity not in ("page", "ticket"):
            raise ValueError(f"rule {self.name}: severity must be page or ticket")

    def budget_share(self, window_s: float) -> float:
        """Fraction of a ``window_s`` budget this rule lets go before firing."""
        return self.burn_rate * self.long_s / window_s


@dataclass(frozen=True)
class _TableRow:
    name: str
    long_s: int
    short_s: int
    # Per mille, so that share * window / long stays an exact integer ratio before the one
    # final float division (30d gives 14.4, not 14.399999999999999).
    share_permille: int
    severity: Severity


# SRE Workbook ch. 5, table 5-8 ("recommended parameters for a 99.9% SLO alerting
# configuration") plus Sloth's 1d/2h ticket row, as budget shares so it scales to any window.
_WORKBOOK_TABLE: tuple[_TableRow, ...] = (
    _TableRow("page-fast", HOUR, 5 * MINUTE, 20, "page"),
    _TableRow("page-slow", 6 * HOUR, 30 * MINUTE, 50, "page"),
    _TableRow("ticket-fast", DAY, 2 * HOUR, 100, "ticket"),
    _TableRow("ticket-slow", 3 * DAY, 6 * HOUR, 100, "ticket"),
)


def default_rules(window_s: int) -> tuple[BurnRule, ...]:
    """The Workbook's four rules with factors scaled to a ``window_s`` compliance window.

    A rule whose long window is longer than the compliance window is left out: it would measure
    errors the budget no longer counts (a 1d window has no use for a 3d rule).
    """
    if window_s <= 0:
        raise ValueError("the compliance window must be positive")
    return tuple(
        BurnRule(
            name=row.name,
            long_s=row.long_s,
            short_s=row.short_s,
            burn_rate=(row.share_permille * window_s) / (1000 * row.long_s),
            severity=row.severity,
        )
        for row in _WORKBOOK_TABLE
        if row.long_s <= window_s
    )


def rule_windows(rules: Iterable[BurnRule]) -> tuple[int, ...]:
    """Every window (seconds) the rules read, shortest first, without repeats."""
    return tuple(sorted({w for rule in rules for w in (rule.long_s, rule.short_s)}))


def long_windows(rules: Iterable[BurnRule]) -> tuple[int, ...]:
    """The rules' long windows, shortest first (used for the OBSERVE risk level)."""
    return tuple(sorted({rule.long_s for rule in rules}))


def check_rules(rules: Sequence[BurnRule]) -> None:
    """Raise ValueError when two rules share a name: ``firing`` lists names, so they must differ."""
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ValueError(f"two burn-rate rules are named {rule.name!r}")
        seen.add(rule.name)


def query_windows(
    rules: Iterable[BurnRule], thresholds: Thresholds | None = None
) -> tuple[int, ...]:
    """Windows to measure for a rule set: the rules' own plus those the forecast and trend read
    (the current window and the two trend spans). For the default rules these add nothing."""
    th = thresholds or Thresholds()
    extra = {th.current_window_s, th.trend_recent_s, th.trend_baseline_s}
    return tuple(sorted(set(rule_windows(rules)) | extra))
