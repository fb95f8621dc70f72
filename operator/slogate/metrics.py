"""The operator's own metrics, served on ``/metrics`` for Prometheus to scrape.

Per-SLO series carry ``namespace``, ``name`` and ``service`` labels so a dashboard can group by
team or service; they are removed when the SLO is deleted.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slogate.core.status import condition
from slogate.core.timetext import parse_rfc3339_or_none

REGISTRY = CollectorRegistry(auto_describe=True)
_SLO = ("namespace", "name", "service")
RISKS = ("SAFE", "OBSERVE", "DANGER", "FREEZE", "UNKNOWN")

# Per-SLO families: name, help, extra label.
_BUDGET = (
    "slogate_slo_error_budget_remaining",
    "Error budget remaining as a fraction (negative when overspent).",
)
_SLI = ("slogate_slo_sli", "Fraction of good events over the compliance window.")
_TARGET = ("slogate_slo_target", "Objective as a fraction.")
_BURN = ("slogate_slo_burn_rate", "Burn rate per window.")
_RISK = ("slogate_slo_risk", "1 for the SLO's current risk level, 0 for the others.")
_EXHAUSTION = (
    "slogate_slo_forecast_exhaustion_seconds",
    "Seconds until the error budget is forecast to run out (absent when never).",
)
_READY = ("slogate_slo_ready", "1 when the last evaluation succeeded.")
_FIRING = ("slogate_slo_firing", "1 while a burn-rate rule fires.")


class _Slo:
    """One SLO's exported numbers (None = series absent)."""

    __slots__ = (
        "burn",
        "exhaustion",
        "firing",
        "labels",
        "ready",
        "remaining",
        "risk",
        "sli",
        "target",
    )

    def __init__(
        self,
        labels: tuple[str, str, str],
        target: float,
        remaining: float | None,
        sli: float | None,
        burn: tuple[tuple[str, float], ...],
        risk: str,
        exhaustion: float | None,
        ready: bool,
        firing: tuple[tuple[str, bool], ...],
    ) -> None:
        self.labels = labels
        self.target = target
        self.remaining = remaining
        self.sli = sli
        self.burn = burn
        self.risk = risk
        self.exhaustion = exhaustion
        self.ready = ready
        self.firing = firing


class SloSeries(Collector):
    """The per-SLO gauges, kept as one small record per SLO and rendered at scrape time.

    One labelled ``Gauge`` child per series cost ~600 bytes (a child object, its lock and value
    holder, the label tuple): ~17 series an SLO made this 50 MB at 5,000 SLOs. The exposition
    is the same: the families exist (empty) without SLOs, a value that is unknown has no series,
    a rule that fired once keeps a 0 series until the SLO is deleted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slos: dict[tuple[str, str], _Slo] = {}

    def record(
        self,
        namespace: str,
        name: str,
        service: str,
        target_percent: float,
        status: dict[str, Any],
    ) -> None:
        key = (namespace, name)
        old = self._slos.get(key)
        same = old is not None and old.labels[2] == service
        # A rule that fired keeps its (0) series; a new service label starts afresh.
        known_rules = tuple(rule for rule, _ in old.firing) if old is not None and same else ()
        now_firing = {sys.intern(str(r)) for r in status.get("firing") or []}
        rules = [*known_rules, *sorted(now_firing.difference(known_rules))]
        burn = tuple(
            (sys.intern(str(window)), float(value))
            for window, value in (status.get("burnRates") or {}).items()
            if value is not None
        )
        record = _Slo(
            labels=old.labels if old is not None and same else (namespace, name, service),
            target=target_percent / 100.0,
            remaining=_float((status.get("errorBudget") or {}).get("remaining")),
            sli=_float(status.get("sli")),
            burn=burn,
            risk=status.get("risk") or "UNKNOWN",
            exhaustion=_exhaustion(status.get("forecast") or {}),
            ready=(condition(status, "Ready") or {}).get("status") == "True",
            firing=tuple((rule, rule in now_firing) for rule in rules),
        )
        with self._lock:
            self._slos[key] = record

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._slos.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._slos)

    def describe(self) -> Iterable[Metric]:
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            slos = list(self._slos.values())
        return self._families(slos)

    @staticmethod
    def _families(slos: list[_Slo]) -> Iterator[Metric]:
        remaining = GaugeMetricFamily(*_BUDGET, labels=_SLO)
        sli = GaugeMetricFamily(*_SLI, labels=_SLO)
        target = GaugeMetricFamily(*_TARGET, labels=_SLO)
        burn = GaugeMetricFamily(*_BURN, labels=(*_SLO, "window"))
        risk = GaugeMetricFamily(*_RISK, labels=(*_SLO, "risk"))
        exhaustion = GaugeMetricFamily(*_EXHAUSTION, labels=_SLO)
        ready = GaugeMetricFamily(*_READY, labels=_SLO)
        firing = GaugeMetricFamily(*_FIRING, labels=(*_SLO, "rule"))
        for slo in slos:
            labels = list(slo.labels)
            target.add_metric(labels, slo.target)
            if slo.remaining is not None:
                remaining.add_metric(labels, slo.remaining)
            if slo.sli is not None:
                sli.add_metric(labels, slo.sli)
            for window, value in slo.burn:
                burn.add_metric([*labels, window], value)
            for level in RISKS:
                risk.add_metric([*labels, level], 1.0 if level == slo.risk else 0.0)
            if slo.exhaustion is not None:
                exhaustion.add_metric(labels, slo.exhaustion)
            ready.add_metric(labels, 1.0 if slo.ready else 0.0)
            for rule, on in slo.firing:
                firing.add_metric([*labels, rule], 1.0 if on else 0.0)
        yield from (remaining, sli, target, burn, risk, exhaustion, ready, firing)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _exhaustion(forecast: dict[str, Any]) -> float | None:
    when = forecast.get("exhaustionTime")
    if forecast.get("exhaustsIn") == "exhausted":
        return 0.0
    if not when:
        return None
    moment = parse_rfc3339_or_none(when)
    return None if moment is None else max(moment - time.time(), 0.0)


SLO_SERIES = SloSeries()
REGISTRY.register(SLO_SERIES)

controller_active = Gauge(
    "slogate_controller_active",
    "1 on the controller replica that evaluates (kopf peering), 0 on a standby.",
    registry=REGISTRY,
)
evaluation_duration = Histogram(
    "slogate_evaluation_duration_seconds",
    "Wall time of one evaluation unit (the SLOs of one namespace on one backend, or one SLO "
    "that runs alone).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
evaluated_slos = Counter("slogate_evaluations_total", "SLO evaluations.", registry=REGISTRY)
evaluation_failures = Counter(
    "slogate_evaluation_failures_total",
    "SLO evaluations that ended Ready=False, by the condition's reason.",
    ("reason",),
    registry=REGISTRY,
)
evaluation_overruns = Counter(
    "slogate_evaluation_overruns_total",
    "Evaluation units that finished after their SLOs were due again (a slow backend).",
    registry=REGISTRY,
)
evaluation_units = Gauge(
    "slogate_evaluation_units_running",
    "Evaluation units in flight.",
    registry=REGISTRY,
)
status_writes = Counter(
    "slogate_status_writes_total",
    "Status patches sent to the API server.",
    ("kind",),
    registry=REGISTRY,
)
rule_writes = Counter(
    "slogate_prometheus_rule_writes_total",
    "PrometheusRule objects created or updated (only when their content changed).",
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


def record_slo(
    namespace: str, name: str, service: str, target_percent: float, status: dict[str, Any]
) -> None:
    """Export the numbers of ``status`` (the last evaluation) for one SLO."""
    SLO_SERIES.record(namespace, name, service, target_percent, status)


def forget_slo(namespace: str, name: str) -> None:
    """Remove every series of one SLO."""
    SLO_SERIES.forget(namespace, name)


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
