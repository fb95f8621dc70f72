"""The operator's own metrics, served on ``/metrics`` for Prometheus to scrape.

Per-SLO series carry ``namespace``, ``name`` and ``service`` labels so a dashboard can group by
team or service; they are removed when the SLO is deleted.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
_SLO = ("namespace", "name", "service")
RISKS = ("SAFE", "OBSERVE", "DANGER", "FREEZE", "UNKNOWN")

budget_remaining = Gauge(
    "slogate_slo_error_budget_remaining",
    "Error budget remaining as a fraction (negative when overspent).",
    _SLO,
    registry=REGISTRY,
)
sli = Gauge(
    "slogate_slo_sli",
    "Fraction of good events over the compliance window.",
    _SLO,
    registry=REGISTRY,
)
target = Gauge("slogate_slo_target", "Objective as a fraction.", _SLO, registry=REGISTRY)
burn_rate = Gauge(
    "slogate_slo_burn_rate", "Burn rate per window.", (*_SLO, "window"), registry=REGISTRY
)
risk = Gauge(
    "slogate_slo_risk",
    "1 for the SLO's current risk level, 0 for the others.",
    (*_SLO, "risk"),
    registry=REGISTRY,
)
exhaustion_seconds = Gauge(
    "slogate_slo_forecast_exhaustion_seconds",
    "Seconds until the error budget is forecast to run out (absent when never).",
    _SLO,
    registry=REGISTRY,
)
ready = Gauge("slogate_slo_ready", "1 when the last evaluation succeeded.", _SLO, registry=REGISTRY)
firing = Gauge(
    "slogate_slo_firing", "1 while a burn-rate rule fires.", (*_SLO, "rule"), registry=REGISTRY
)

controller_active = Gauge(
    "slogate_controller_active",
    "1 on the controller replica that evaluates (kopf peering), 0 on a standby.",
    registry=REGISTRY,
)
evaluation_duration = Histogram(
    "slogate_evaluation_duration_seconds",
    "Wall time of one evaluation tick.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
evaluated_slos = Counter("slogate_evaluations_total", "SLO evaluations.", registry=REGISTRY)
status_writes = Counter(
    "slogate_status_writes_total",
    "Status patches sent to the API server.",
    ("kind",),
    registry=REGISTRY,
)
prometheus_requests = Counter(
    "slogate_prometheus_requests_total",
    "HTTP requests to Prometheus by outcome.",
    ("endpoint", "outcome"),
    registry=REGISTRY,
)
prometheus_latency = Histogram(
    "slogate_prometheus_request_duration_seconds",
    "Latency of Prometheus HTTP requests.",
    ("endpoint",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


def observe_prometheus(endpoint: str, outcome: str, seconds: float) -> None:
    prometheus_requests.labels(endpoint, outcome).inc()
    prometheus_latency.labels(endpoint).observe(seconds)


_known_windows: dict[tuple[str, str], set[str]] = {}
_known_rules: dict[tuple[str, str], set[str]] = {}
_services: dict[tuple[str, str], str] = {}


def record_slo(
    namespace: str, name: str, service: str, target_percent: float, status: dict[str, Any]
) -> None:
    key = (namespace, name)
    if _services.get(key, service) != service:
        forget_slo(namespace, name)
    _services[key] = service
    labels = (namespace, name, service)
    target.labels(*labels).set(target_percent / 100.0)
    _set_or_remove(budget_remaining, labels, (status.get("errorBudget") or {}).get("remaining"))
    _set_or_remove(sli, labels, status.get("sli"))
    windows = status.get("burnRates") or {}
    for window, value in windows.items():
        _set_or_remove(burn_rate, (*labels, window), value)
    for stale in _known_windows.get(key, set()) - set(windows):
        remove_series(burn_rate, (*labels, stale))
    _known_windows[key] = set(windows)
    current = status.get("risk") or "UNKNOWN"
    for level in RISKS:
        risk.labels(*labels, level).set(1.0 if level == current else 0.0)
    forecast = status.get("forecast") or {}
    _set_or_remove(exhaustion_seconds, labels, _exhaustion(forecast))
    is_ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    ready.labels(*labels).set(1.0 if is_ready else 0.0)
    now_firing = set(status.get("firing") or [])
    for rule in _known_rules.get(key, set()) | now_firing:
        firing.labels(*labels, rule).set(1.0 if rule in now_firing else 0.0)
    _known_rules[key] = _known_rules.get(key, set()) | now_firing


def _exhaustion(forecast: dict[str, Any]) -> float | None:
    import datetime as dt

    when = forecast.get("exhaustionTime")
    if forecast.get("exhaustsIn") == "exhausted":
        return 0.0
    if not when:
        return None
    moment = dt.datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    return max((moment - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def forget_slo(namespace: str, name: str) -> None:
    key = (namespace, name)
    service = _services.pop(key, None)
    if service is None:
        return
    labels = (namespace, name, service)
    for gauge in (budget_remaining, sli, target, exhaustion_seconds, ready):
        remove_series(gauge, labels)
    for window in _known_windows.pop(key, set()):
        remove_series(burn_rate, (*labels, window))
    for level in RISKS:
        remove_series(risk, (*labels, level))
    for rule in _known_rules.pop(key, set()):
        remove_series(firing, (*labels, rule))


def _set_or_remove(gauge: Gauge, labels: tuple[str, ...], value: Any) -> None:
    if value is None:
        remove_series(gauge, labels)
    else:
        gauge.labels(*labels).set(float(value))


def remove_series(gauge: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


admission_decisions = Counter(
    "slogate_admission_decisions_total",
    "Admission answers for Deployment changes: allow, warn, deny, override, rollback.",
    ("decision",),
    registry=REGISTRY,
)
admission_duration = Histogram(
    "slogate_admission_duration_seconds",
    "Time to answer one AdmissionReview in the handler.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 3),
    registry=REGISTRY,
)
gate_decision = Gauge(
    "slogate_gate_decision",
    "1 for the gate's current decision, 0 for the others.",
    ("namespace", "name", "decision"),
    registry=REGISTRY,
)
rollback_checks = Counter(
    "slogate_rollback_checks_total",
    "Rollback checks on the refusal path, by what answered: the webhook's ReplicaSet index, or "
    "a LIST of ReplicaSets from the API server when the index could not tell.",
    ("source",),
    registry=REGISTRY,
)
unrecorded_refusals = Gauge(
    "slogate_webhook_unrecorded_refusals",
    "Refusals answered but not yet written to their gate's status and Events (written in "
    "batches every second).",
    registry=REGISTRY,
)
