"""SLO math: budgets, burn rates, firing rules, risk, forecast and recommendation, vectorized.

Pure functions over numpy arrays: no I/O, no clock, no Kubernetes. The controller groups SLOs
by rule set (most share the defaults), builds one ``SloBatch`` per group and calls ``evaluate``.
``docs/math.md`` is the specification and explains the model.

Interface
---------
Rules (``rules``)
    ``BurnRule(name, long_s, short_s, burn_rate, severity)``; ``default_rules(window_s)`` is the
    SRE Workbook table scaled to the window (page-fast, page-slow, ticket-fast, ticket-slow);
    ``STANDARD_WINDOWS_S`` are the windows it reads; ``rule_windows(rules)`` lists a rule set's;
    ``query_windows(rules, thresholds)`` adds the ones the forecast and trend read.
Calendar (``calendar``)
    ``calendar_period(now, "week" | "month" | "quarter", tz) -> (start_epoch, end_epoch)``.
Inputs (``inputs``)
    ``SloBatch`` ([N] targets, [N, W] window counts, [N] compliance counts, optional [N, T]
    history, [N, H] budget history, calendar bounds, dependency bounds; see its docstring),
    ``SloInput`` + ``stack(...)`` to build one from per-SLO values, ``Thresholds``.
Evaluation (``evaluate``)
    ``evaluate(batch, rules, thresholds=None) -> BatchResult``: arrays for the batch;
    ``result.row(i)`` / ``result.results()`` give ``SloResult`` (sli, consumed, remaining,
    burn_rates by window label, firing, risk, ``Forecast``, ``Recommendation``, message) with
    plain floats/str and None for anything unknown; ``SloResult.to_status()`` gives the status
    fields with the names ``docs/reference.md`` lists.
Helpers
    ``dependency_bound(targets_percent)`` (product, percent, NaN for none),
    ``round_down_to_ladder``, ``budget_fraction``; ``message.format_percent`` /
    ``format_burn`` (the status's number style).

Conventions: targets and recommendations in percent (99.9), budgets as fractions (0.71 left),
times as epoch seconds, windows as whole seconds. Inside, unknown is NaN; outside, None.
"""

from slogate.core.slo.budget import budget_fraction
from slogate.core.slo.calendar import PERIODS, Period, calendar_period
from slogate.core.slo.evaluate import (
    BatchResult,
    Forecast,
    Recommendation,
    SloResult,
    evaluate,
)
from slogate.core.slo.forecast import Confidence, Method, Outlook, Trend
from slogate.core.slo.inputs import SloBatch, SloInput, Thresholds, stack
from slogate.core.slo.recommend import LADDER, dependency_bound, round_down_to_ladder
from slogate.core.slo.risk import Risk
from slogate.core.slo.rules import (
    STANDARD_WINDOWS_S,
    BurnRule,
    default_rules,
    long_windows,
    query_windows,
    rule_windows,
)

__all__ = [
    "LADDER",
    "PERIODS",
    "STANDARD_WINDOWS_S",
    "BatchResult",
    "BurnRule",
    "Confidence",
    "Forecast",
    "Method",
    "Outlook",
    "Period",
    "Recommendation",
    "Risk",
    "SloBatch",
    "SloInput",
    "SloResult",
    "Thresholds",
    "Trend",
    "budget_fraction",
    "calendar_period",
    "default_rules",
    "dependency_bound",
    "evaluate",
    "long_windows",
    "query_windows",
    "round_down_to_ladder",
    "rule_windows",
    "stack",
]
