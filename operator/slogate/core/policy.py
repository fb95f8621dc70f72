"""Which burn-rate rules and windows an SLO spec implies: one answer for the controller's
evaluation, the generated Prometheus rules and the CLI.
"""

from __future__ import annotations

import functools

from slogate.core.durations import parse_duration
from slogate.core.objective import SloSpec
from slogate.core.slo.rules import BurnRule, default_rules

#: Burn rates shown in status even when no rule reads them: the 5m ... 3d that
#: ``docs/concepts.md`` ("Burn rate") promises.
DISPLAY_WINDOWS_S = (300, 1800, 3600, 7200, 21600, 86400, 3 * 86400)
NOMINAL_PERIOD_S = {"week": 7 * 86400, "month": 30 * 86400, "quarter": 91 * 86400}
MAX_PERIOD_S = {"week": 7 * 86400, "month": 31 * 86400, "quarter": 92 * 86400}


def rules_for(spec: SloSpec) -> tuple[BurnRule, ...]:
    """The spec's own burn-rate rules, else the Workbook's table scaled to its window."""
    if spec.alerting is not None and spec.alerting.rules:
        return tuple(
            BurnRule(
                name=r.name,
                long_s=parse_duration(r.long),
                short_s=parse_duration(r.short),
                burn_rate=r.burn_rate,
                severity=r.severity,
            )
            for r in spec.alerting.rules
        )
    return _default_rules(nominal_window_s(spec))


@functools.lru_cache(maxsize=64)
def _default_rules(window_s: int) -> tuple[BurnRule, ...]:
    # One shared (immutable) tuple per window length rather than one per SLO.
    return default_rules(window_s)


def nominal_window_s(spec: SloSpec) -> int:
    """The window the burn-rate factors are scaled to: the rolling window or the period."""
    if spec.calendar is not None:
        return NOMINAL_PERIOD_S[spec.calendar.period]
    return spec.window_seconds


def history_span_s(spec: SloSpec) -> int:
    """How far back the per-interval history must reach for this SLO."""
    if spec.calendar is not None:
        return MAX_PERIOD_S[spec.calendar.period]
    return spec.window_seconds


def windows_for(spec: SloSpec, rules: tuple[BurnRule, ...]) -> tuple[int, ...]:
    """Every burn window evaluated (the display windows within the span, plus the rules'),
    shortest first."""
    span = history_span_s(spec)
    wanted = {w for w in DISPLAY_WINDOWS_S if w <= span}
    for rule in rules:
        wanted.update((rule.long_s, rule.short_s))
    return tuple(sorted(wanted))
