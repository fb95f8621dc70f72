"""Prometheus recording and alerting rules for one SLO: pure data, no I/O.

The same group serves the controller's ``PrometheusRule`` (Prometheus Operator) and
``slogate rules`` (a plain rule file for Prometheus, Thanos Ruler or the Mimir ruler).

Per window the group records events and errors per second and the burn rate; one alert per
burn-rate rule fires when the burn rate over both its windows exceeds the rule's factor (with
the same tolerance ``status.firing`` uses), so a page and the gate's FREEZE have one condition.

Short windows (up to :data:`RAW_MAX_S`) read the raw series. Longer ones (6h, 1d, 3d, the
compliance window) are *derived* from the recorded 5-minute rates, so a 30-day window reads
one recorded series per SLO instead of every raw series for 30 days: the rates averaged over
``w - 5m`` cover each minute of ``w`` once, except the newest and the oldest 5 minutes, which
they cover by half on average; half the newest and half the oldest 5-minute rate make those
up. The result is exact while traffic is steady within each of those two 5-minute edges.
Derived windows only know history recorded since their rules were loaded (docs/alerting.md
shows how to backfill it with ``promtool``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from slogate.core.durations import format_duration, parse_duration
from slogate.core.objective import SloSpec
from slogate.core.policy import nominal_window_s, rules_for
from slogate.core.promql import event_queries, le_matcher, render
from slogate.core.resources import GROUP, SLO_KIND, VERSION
from slogate.core.slo.risk import FIRING_RTOL
from slogate.core.slo.rules import BurnRule

#: Windows up to this length read the raw series; longer ones are derived from the base.
RAW_MAX_S = 2 * 3600
#: The recorded rate long windows are derived from.
BASE_WINDOW_S = 300
#: Prometheus's own default evaluation interval. Long windows read one recorded sample per
#: interval, so a longer interval makes them cheaper; a page waits at most one more interval.
RULE_INTERVAL_S = 60
ALERT_NAME = "SLOErrorBudgetBurn"
MANAGED_BY = "slogate"
HASH_ANNOTATION = "slogate.dev/rules-hash"
#: How long a generated alert must hold unless its rule says: half the short window.
MIN_FOR_S = 60


def record(metric: str, window_s: int) -> str:
    """The recorded series' name: ``slogate:burn_rate:rate1h``."""
    return f"slogate:{metric}:rate{format_duration(window_s)}"


BUDGET_RECORD = "slogate:error_budget:remaining"


@dataclass(frozen=True)
class RuleOptions:
    interval_s: int = RULE_INTERVAL_S
    raw_max_s: int = RAW_MAX_S


def inert(text: str) -> str:
    """``text`` that Prometheus's alert templating prints as written.

    Labels and annotations are Go templates evaluated by the ruler, which can run queries
    (``{{ query "..." }}``) over every tenant's series: text from a spec must not reach them
    as template code.
    """
    return text.replace("{{", '{{ "{{" }}')


def windows_of(spec: SloSpec, rules: Iterable[BurnRule]) -> tuple[int, ...]:
    """Windows the group records: every rule's two, the compliance window, and the base window
    when anything is derived from it."""
    wanted = {w for rule in rules for w in (rule.long_s, rule.short_s)}
    wanted.add(nominal_window_s(spec))
    return tuple(sorted(wanted))


def default_for_s(rule: BurnRule) -> int:
    """Half the short window in whole minutes (5m: 2m, 30m: 15m, 2h: 1h, 6h: 3h)."""
    return max(MIN_FOR_S, rule.short_s // 2 // 60 * 60)


def _matchers(namespace: str, name: str) -> str:
    return f'{{slo="{name}",namespace="{namespace}"}}'


def _min_events_guard(events_rate: str, window_s: int, min_events: int) -> str:
    # Fewer events than minEvents (and none at all) is "no data", as in status.
    op, bound = (">=", min_events) if min_events >= 1 else (">", 0)
    return f"({events_rate} * {window_s} {op} {bound})"


def _number(value: float) -> str:
    # 12 significant digits: 1 - 99.9/100 reads 0.001, not 0.0009999999999998899 (the same
    # number to 1e-13), and the firing tolerance (1e-9) still shows.
    return f"{value:.12g}"


def rule_group(
    namespace: str, name: str, spec: SloSpec, options: RuleOptions | None = None
) -> dict[str, Any]:
    """One Prometheus rule group for the SLO ``namespace/name``."""
    opts = options or RuleOptions()
    rules = rules_for(spec)
    windows = windows_of(spec, rules)
    derived = [w for w in windows if w > opts.raw_max_s]
    raw = sorted(
        {w for w in windows if w <= opts.raw_max_s} | ({BASE_WINDOW_S} if derived else set())
    )
    sel = _matchers(namespace, name)
    labels = {"slo": name, "namespace": namespace}
    budget = _number(1.0 - spec.target / 100.0)
    out: list[dict[str, Any]] = []

    def rec(metric: str, expr: str) -> None:
        out.append({"record": metric, "expr": expr, "labels": dict(labels)})

    def derive(metric: str, w: int) -> str:
        base = f"{record(metric, BASE_WINDOW_S)}{sel}"
        inner = w - BASE_WINDOW_S
        half = BASE_WINDOW_S // 2
        span = format_duration(inner)
        # The average of 5-minute rates over w - 5m weighs the newest and the oldest 5 minutes
        # of w by half on average; the newest and the oldest 5-minute rate fill those halves.
        return (
            f"(avg_over_time({base}[{span}]) * {inner} + {half} * {base}"
            f" + {half} * ({base} offset {span} or {base} * 0)) / {w}"
        )

    indicator = spec.indicator
    if indicator.query is not None:
        for w in raw:
            expr = render(f"clamp({indicator.query.error_ratio.strip()}, 0, 1)", format_duration(w))
            rec(record("error_ratio", w), expr)
        for w in derived:
            rec(record("error_ratio", w), derive("error_ratio", w))
        for w in windows:
            rec(record("burn_rate", w), f"{record('error_ratio', w)}{sel} / {budget}")
        compliance = nominal_window_s(spec)
        rec(BUDGET_RECORD, f"1 - {record('error_ratio', compliance)}{sel} / {budget}")
    else:
        matcher = le_matcher(indicator.latency.threshold) if indicator.latency else None
        queries = event_queries(indicator, func="rate", le_matcher=matcher)
        assert queries.total is not None
        for w in raw:
            rec(record("events", w), render(queries.total, format_duration(w)))
            rec(record("errors", w), render(queries.bad, format_duration(w)))
        for w in derived:
            rec(record("events", w), derive("events", w))
            rec(record("errors", w), derive("errors", w))
        min_events = spec.evaluation.min_events
        for w in windows:
            events, errors = f"{record('events', w)}{sel}", f"{record('errors', w)}{sel}"
            ratio = f"clamp({errors} / {events}, 0, 1)"
            guard = _min_events_guard(events, w, min_events)
            rec(record("burn_rate", w), f"{ratio} / {budget} and {guard}")
        compliance = nominal_window_s(spec)
        events, errors = (
            f"{record('events', compliance)}{sel}",
            f"{record('errors', compliance)}{sel}",
        )
        guard = _min_events_guard(events, compliance, min_events)
        rec(BUDGET_RECORD, f"1 - clamp({errors} / {events}, 0, 1) / {budget} and {guard}")

    out.extend(_alerts(namespace, name, spec, rules, sel))
    return {
        "name": f"slogate/{namespace}/{name}",
        "interval": format_duration(opts.interval_s),
        "rules": out,
    }


def _alerts(
    namespace: str, name: str, spec: SloSpec, rules: Sequence[BurnRule], sel: str
) -> list[dict[str, Any]]:
    alerting = spec.alerting
    fors = {r.name: r.for_ for r in (alerting.rules or ())} if alerting else {}
    window = format_duration(nominal_window_s(spec))
    period = spec.calendar.period if spec.calendar is not None else None
    span = f"the {period}" if period else window
    base_labels: dict[str, str] = {"slo": name, "namespace": namespace}
    base_labels["service"] = inert(spec.service)
    if spec.owner:
        base_labels["owner"] = inert(spec.owner)
    if spec.tier is not None:
        base_labels["tier"] = str(spec.tier)
    extra_labels = {k: inert(v) for k, v in (alerting.labels if alerting else {}).items()}
    extra_annotations = {k: inert(v) for k, v in (alerting.annotations if alerting else {}).items()}
    budget_left = (
        '{{ with printf "' + BUDGET_RECORD + '{slo=%q,namespace=%q}" $labels.slo '
        "$labels.namespace | query }}{{ . | first | value | humanizePercentage }}"
        "{{ else }}unknown{{ end }}"
    )
    out: list[dict[str, Any]] = []
    for rule in rules:
        bar = _number(rule.burn_rate * (1.0 + FIRING_RTOL))
        long_w, short_w = format_duration(rule.long_s), format_duration(rule.short_s)
        given = fors.get(rule.name)
        hold = parse_duration(given) if given else default_for_s(rule)
        share = rule.budget_share(nominal_window_s(spec)) * 100
        annotations = {
            "summary": (
                f"SLO {namespace}/{name} ({inert(spec.service)}) burns its error budget "
                '{{ printf "%.1f" $value }}x as fast as it may'
            ),
            "description": (
                f"Errors over the last {long_w} are "
                '{{ printf "%.1f" $value }}x'
                f" what the {spec.target:g}% target allows over {span}, and above "
                f"{rule.burn_rate:g}x over {short_w} too: at this pace {share:.3g}% of the "
                f"budget goes every {long_w}. Budget left over {window}: {budget_left}."
            ),
            "kubectl": f"kubectl describe slo {name} -n {namespace}",
        }
        if alerting is not None and alerting.runbook_url:
            annotations["runbook_url"] = inert(alerting.runbook_url)
        annotations.update(extra_annotations)
        out.append(
            {
                "alert": ALERT_NAME,
                "expr": (
                    f"{record('burn_rate', rule.long_s)}{sel} > {bar}"
                    f" and {record('burn_rate', rule.short_s)}{sel} > {bar}"
                ),
                "for": format_duration(hold),
                "labels": {
                    "severity": rule.severity,
                    "rule": rule.name,
                    **base_labels,
                    **extra_labels,
                },
                "annotations": annotations,
            }
        )
    return out


def backfill_group(
    namespace: str, name: str, spec: SloSpec, options: RuleOptions | None = None
) -> dict[str, Any]:
    """Only the 5-minute records that derived windows read, for ``promtool tsdb
    create-blocks-from rules`` (it cannot backfill rules that read other recorded rules)."""
    group = rule_group(namespace, name, spec, options)
    base = {record(m, BASE_WINDOW_S) for m in ("events", "errors", "error_ratio")}
    return {**group, "rules": [r for r in group["rules"] if r.get("record") in base]}


def wanted(spec: SloSpec) -> bool:
    """Does the SLO want rules at all (``spec.alerting.disabled`` turns them off)?"""
    return spec.alerting is None or not spec.alerting.disabled


def rule_file(groups: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A plain Prometheus rule file."""
    return {"groups": list(groups)}


def rule_object_name(slo_name: str) -> str:
    """The PrometheusRule's name: ``slogate-<slo>``, shortened with a hash past 253."""
    name = f"slogate-{slo_name}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(slo_name.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


def content_hash(spec: dict[str, Any], labels: dict[str, str]) -> str:
    """What decides whether a stored PrometheusRule needs a write."""
    text = json.dumps({"spec": spec, "labels": labels}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prometheus_rule(
    namespace: str,
    name: str,
    uid: str,
    spec: SloSpec,
    *,
    labels: dict[str, str] | None = None,
    options: RuleOptions | None = None,
) -> dict[str, Any]:
    """A ``monitoring.coreos.com/v1`` PrometheusRule owned by the SLO (garbage collected with
    it), labelled for a Prometheus Operator ``ruleSelector``."""
    body_spec = {"groups": [rule_group(namespace, name, spec, options)]}
    all_labels = {
        **(labels or {}),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "slogate.dev/slo": name if len(name) <= 63 else content_hash({}, {"n": name}),
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": rule_object_name(name),
            "namespace": namespace,
            "labels": all_labels,
            "annotations": {HASH_ANNOTATION: content_hash(body_spec, all_labels)},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": SLO_KIND.kind,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": body_spec,
    }
