"""Gate decisions: a pure function of a ReleaseGate's spec and its SLOs' statuses.

The controller writes the decision into the gate's status; the webhook computes the same
decision from its own index at admission time (never from Prometheus), so a rollout is judged on
the SLO statuses as they are, not on a gate status that may lag a tick behind.

An objective is *unknown* when its SLO does not exist, has no status yet, reports no data
(risk UNKNOWN), is marked Stale, or its status is older than ``stale_after_s`` (the controller
stopped). Unknown objectives follow the gate's ``onUnknown``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slogate.core.releasegate import Decision, GateSpec
from slogate.core.slo.message import format_burn, format_percent

RANK: dict[str, int] = {"ALLOW": 0, "WARN": 1, "BLOCK": 2}
DEFAULT_STALE_AFTER_S = 15 * 60.0  # three controller heartbeats


@dataclass(frozen=True)
class SloView:
    """What an index knows about one SLO."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ObjectiveVerdict:
    namespace: str
    name: str
    risk: str | None
    remaining: float | None
    triggers: frozenset[str]  # BudgetExhausted and the risk level
    unknown: str | None  # why the objective's state is unknown, or None
    detail: str  # "error budget exhausted (-29%), burning 3.2x over 1h"

    def as_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "risk": self.risk,
            "budgetRemaining": self.remaining,
            "stale": self.unknown is not None,
        }


@dataclass(frozen=True)
class GateVerdict:
    decision: Decision
    reasons: tuple[str, ...]
    objectives: tuple[ObjectiveVerdict, ...]


def _parse_time(text: Any) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _condition(status: Mapping[str, Any], type_: str) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def _current_burn(status: Mapping[str, Any]) -> tuple[str, float] | None:
    burns = status.get("burnRates") or {}
    for window in ("1h", "5m", "30m", "2h", "6h", "1d", "3d"):
        value = burns.get(window)
        if value is not None:
            return window, float(value)
    return None


def judge_objective(
    view: SloView | None, namespace: str, name: str, now: float, stale_after_s: float
) -> ObjectiveVerdict:
    """The state of one gating SLO, as the gate policy reads it."""
    if view is None:
        return ObjectiveVerdict(
            namespace, name, None, None, frozenset(), "SLO not found", "SLO not found"
        )
    status = view.status or {}
    risk = status.get("risk")
    remaining = (status.get("errorBudget") or {}).get("remaining")
    unknown: str | None = None
    evaluated = _parse_time(status.get("lastEvaluationTime"))
    if not status:
        unknown = "no status yet"
    elif _condition(status, "Stale") == "True":
        reason = next(
            (c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Stale"),
            "Stale",
        )
        unknown = f"data is stale ({reason})"
    elif evaluated is None or now - evaluated > stale_after_s:
        unknown = "status not updated recently (is the controller running?)"
    elif risk in (None, "UNKNOWN"):
        unknown = "no data"
    triggers = set()
    if _condition(status, "BudgetExhausted") == "True":
        triggers.add("BudgetExhausted")
    if risk:
        triggers.add(str(risk))
    parts = []
    if remaining is not None:
        parts.append(
            f"error budget exhausted ({format_percent(remaining)})"
            if remaining <= 0
            else f"{format_percent(remaining)} of error budget left"
        )
    burn = _current_burn(status)
    if burn is not None:
        parts.append(f"burning {format_burn(burn[1])} over {burn[0]}")
    if status.get("firing"):
        parts.append(f"{', '.join(status['firing'])} firing")
    if unknown:
        parts.append(unknown)
    return ObjectiveVerdict(
        namespace,
        name,
        risk,
        remaining,
        frozenset(triggers),
        unknown,
        ", ".join(parts) or (risk or "unknown"),
    )


def gate_objectives(
    spec: GateSpec, gate_namespace: str, slos: Mapping[tuple[str, str], SloView]
) -> list[tuple[str, str]]:
    """The (namespace, name) of every SLO the gate reads."""
    if spec.objectives is not None:
        return [(gate_namespace, o.name) for o in spec.objectives]
    assert spec.objective_selector is not None
    return sorted(
        key
        for key, view in slos.items()
        if key[0] == gate_namespace and spec.objective_selector.matches(dict(view.labels))
    )


def judge_gate(
    spec: GateSpec,
    gate_namespace: str,
    slos: Mapping[tuple[str, str], SloView],
    now: float,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> GateVerdict:
    """ALLOW, WARN or BLOCK with one reason per objective that caused it."""
    keys = gate_objectives(spec, gate_namespace, slos)
    verdicts = tuple(
        judge_objective(slos.get(key), key[0], key[1], now, stale_after_s) for key in keys
    )
    decision: Decision = "ALLOW"
    reasons: list[str] = []
    if not verdicts:
        action = spec.policy.on_unknown.upper()
        decision = "ALLOW" if action == "ALLOW" else ("WARN" if action == "WARN" else "BLOCK")
        if decision != "ALLOW":
            reasons.append("no SLO matches objectiveSelector")
    for v in verdicts:
        this: Decision = "ALLOW"
        if v.unknown is not None:
            this = {"Allow": "ALLOW", "Warn": "WARN", "Block": "BLOCK"}[spec.policy.on_unknown]  # type: ignore[assignment]
        if v.triggers & set(spec.policy.warn_when) and RANK[this] < RANK["WARN"]:
            this = "WARN"
        if v.unknown is None and v.triggers & set(spec.policy.block_when):
            this = "BLOCK"
        if this != "ALLOW":
            reasons.append(f"{v.name}: {v.detail}")
        if RANK[this] > RANK[decision]:
            decision = this
    return GateVerdict(decision, tuple(reasons), verdicts)


def strictest(decisions: Sequence[Decision]) -> Decision:
    return max(decisions, key=lambda d: RANK[d], default="ALLOW")
